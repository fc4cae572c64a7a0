"""The CLI as SREs reach for it: doctor outputs and thresholds, `doctor explain`, refusing
what is not a bundle, never PASS on nothing, the examples and docs after install, shell
completion, `--version`, the kubectl plugin name, and live commands without clients.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.example_faults import seed_without_sleep_in_ipset

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "seed-kind-ambient"
SCHEMA = json.loads((ROOT / "docs" / "schemas" / "doctor-v1.json").read_text())


def cli(*args: str, env: dict[str, str] | None = None,
        cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ambientctl", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def _broken_seed(tmp_path: Path) -> Path:
    return seed_without_sleep_in_ipset(tmp_path, 'b')


def test_doctor_line_output_is_one_line_per_finding_like_istioctl_analyze(tmp_path: Path) -> None:
    res = cli("doctor", "--bundle", str(_broken_seed(tmp_path)), "-o", "line")
    assert res.returncode == 1, res.stderr
    lines = res.stdout.splitlines()
    assert lines[-1].startswith("FAIL: ")
    findings = lines[:-1]
    assert findings and all(ln.split(" ", 1)[0] in ("Error", "Warning", "Info") for ln in findings)
    amb201 = [ln for ln in findings if "[AMB201]" in ln]
    assert amb201 and amb201[0].startswith("Error [AMB201] (node ambient-worker, pod default/sleep")


def test_doctor_yaml_is_the_json_document(tmp_path: Path) -> None:
    b = _broken_seed(tmp_path)
    as_yaml = yaml.safe_load(cli("doctor", "--bundle", str(b), "-o", "yaml").stdout)
    as_json = json.loads(cli("doctor", "--bundle", str(b), "-o", "json").stdout)
    assert as_yaml == as_json
    jsonschema.validate(as_yaml, SCHEMA, cls=jsonschema.Draft202012Validator)


def test_output_threshold_hides_lesser_findings_but_counts_them_and_still_fails(
        tmp_path: Path) -> None:
    b = _broken_seed(tmp_path)
    doc = json.loads(cli("doctor", "--bundle", str(b), "-o", "json",
                         "--output-threshold", "error").stdout)
    assert {f["severity"] for f in doc["findings"]} == {"error"}
    assert doc["summary"]["below_output_threshold"] >= 1  # AMB101 (info) at least
    assert doc["summary"]["findings"]["info"] >= 1
    # AMB201 (the error) suppressed: nothing is listed, yet the hidden AMB104 warning fails
    res = cli("doctor", "--bundle", str(b), "--output-threshold", "error", "--fail-on", "warning",
              "-S", "AMB201")
    assert res.returncode == 1 and "No findings at or above error." in res.stdout
    assert "(2 below --output-threshold error)" in res.stdout


def test_suppressions_that_match_nothing_are_warned_about(tmp_path: Path) -> None:
    res = cli("doctor", "--bundle", str(_broken_seed(tmp_path)), "-S", "AMB999",
              "-S", "AMB201=ambient-worker2", "-S", "AMB101")
    assert "warning: -S AMB999: no check has that id" in res.stderr
    assert "warning: -S AMB201=ambient-worker2 suppressed nothing" in res.stderr
    assert "AMB101 suppressed nothing" not in res.stderr
    assert "(1 suppressed)" in res.stdout


def test_doctor_explain_prints_the_checks_section() -> None:
    res = cli("doctor", "explain", "amb209")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("### AMB209 - Table 101/102 default route missing (error)")
    assert "**Fix**" in res.stdout and "### AMB210" not in res.stdout
    bad = cli("doctor", "explain", "AMB999")
    assert bad.returncode == 2 and bad.stderr.startswith("error: no check 'AMB999'")


@pytest.mark.parametrize("what", ["docs", "empty"])
def test_what_is_not_a_bundle_is_refused_with_exit_4(tmp_path: Path, what: str) -> None:
    target = ROOT / "docs" if what == "docs" else tmp_path
    for cmd in ("doctor", "trace"):
        args = [cmd, "--bundle", str(target)] + (["sleep", "productpage"] if cmd == "trace" else [])
        res = cli(*args)
        assert res.returncode == 4, (cmd, res.stdout, res.stderr)
        assert "not a bundle (no manifest.json, nodes/ or cluster/)" in res.stderr
        assert "PASS" not in res.stdout


def test_a_parent_of_bundles_lists_them() -> None:
    res = cli("doctor", "--bundle", str(ROOT / "examples"))
    assert res.returncode == 4
    assert "not a bundle, but it holds 3" in res.stderr
    assert "seed-kind-ambient" in res.stderr and "hint: pass one of them" in res.stderr


def test_doctor_on_a_bundle_without_nodes_never_passes(tmp_path: Path) -> None:
    (tmp_path / "cluster").mkdir()
    for f in (SEED / "cluster").iterdir():
        shutil.copy(f, tmp_path / "cluster" / f.name)
    res = cli("doctor", "--bundle", str(tmp_path))
    assert res.returncode == 4 and "holds no node" in res.stderr and "PASS" not in res.stdout


@pytest.mark.kernel
def test_doctor_local_on_a_node_without_ambient_says_so_not_pass(tmp_path: Path) -> None:
    from ambientlab.netns import Lab

    with Lab() as lab:
        ns = lab.add_netns("plain")
        ns.ip("link", "set", "lo", "up")
        res = subprocess.run(["ip", "netns", "exec", ns.name, sys.executable, "-m", "ambientctl",
                              "doctor", "--local", "--node-name", "plain-node", "-o", "json"],
                             capture_output=True, text=True, cwd=ROOT, timeout=300,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 1, res.stderr
    doc = json.loads(res.stdout)
    jsonschema.validate(doc, SCHEMA, cls=jsonschema.Draft202012Validator)
    assert doc["result"] == "no-ambient"
    assert [n["mode"] for n in doc["nodes"]] == ["none"]


def test_examples_ship_with_the_package_and_extract(tmp_path: Path) -> None:
    listed = cli("examples", "list").stdout.split()
    assert {"seed-kind-ambient", "inpod-kind-ambient", "mixed-kind-ambient"} <= set(listed)
    res = cli("examples", "extract", str(tmp_path / "ex"), "--name", "seed-kind-ambient")
    assert res.returncode == 0, res.stderr
    assert cli("bundle", "verify", str(tmp_path / "ex" / "seed-kind-ambient")).returncode == 0
    again = cli("examples", "extract", str(tmp_path / "ex"), "--name", "seed-kind-ambient")
    assert again.returncode == 2 and "not overwriting" in again.stderr


def test_bundle_example_scheme_replays_a_shipped_example_from_any_directory(
        tmp_path: Path) -> None:
    res = cli("trace", "sleep", "productpage", "--bundle", "example:seed", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0].endswith("(delivered)")


@pytest.mark.slow
def test_a_wheel_install_carries_examples_and_the_checks_catalogue(tmp_path: Path) -> None:
    """`pip install .` / pipx install: build the wheel, install it into a fresh venv
    (system site-packages for the dependencies, no network), and run from elsewhere."""
    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(wheel_dir), str(ROOT)], check=True, timeout=300, capture_output=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=120)
    py = venv / "bin" / "python"
    wheel = next(wheel_dir.glob("ambientctl-*.whl"))
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
                    str(wheel)], check=True, timeout=300, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = lambda *a: subprocess.run([str(venv / "bin" / a[0]), *a[1:]], capture_output=True,  # noqa: E731
                                    text=True, cwd=tmp_path, env=env, timeout=120)
    where = run("python", "-c", "import ambientctl; print(ambientctl.__file__)")
    assert str(venv) in where.stdout, where.stdout + where.stderr
    res = run("ambientctl", "trace", "sleep", "productpage", "--bundle", "example:seed")
    assert res.returncode == 0 and "(delivered)" in res.stdout, res.stderr
    assert run("ambientctl", "doctor", "explain", "AMB201").stdout.startswith("### AMB201")
    plugin = run("kubectl-ambient", "trace", "--help")
    assert plugin.returncode == 0 and plugin.stdout.startswith("Usage: kubectl ambient trace")


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_are_printed_for_each_shell(shell: str) -> None:
    res = cli("completion", shell)
    assert res.returncode == 0 and "_AMBIENTCTL_COMPLETE" in res.stdout


def test_completion_answers_subcommands_through_the_entry_point() -> None:
    res = cli(env={"_AMBIENTCTL_COMPLETE": "bash_complete", "COMP_WORDS": "ambientctl doc",
                   "COMP_CWORD": "1"})
    assert "doctor" in res.stdout


def test_version_names_python_platform_and_extras() -> None:
    out = cli("--version").stdout
    assert out.startswith("ambientctl ") and "\npython 3." in out and "\nplatform " in out
    assert "extra [live]: kubernetes" in out


def test_live_collection_without_its_client_names_the_extra(tmp_path: Path) -> None:
    """`--kind` with the docker SDK absent: one error line and the pip command, exit 3."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text("import sys\nsys.modules['docker'] = None\n")
    res = cli("trace", "sleep", "productpage", "--kind", "ambient",
              env={"PYTHONPATH": f"{shim}{os.pathsep}{ROOT}"})
    assert res.returncode == 3, res.stderr
    assert "needs the Python package docker" in res.stderr
    assert "pip install 'ambientctl[live]'" in res.stderr and "Traceback" not in res.stderr
