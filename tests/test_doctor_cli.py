"""`ambientctl doctor` as a user and as CI run it: output, JSON contract, thresholds,
suppression and exit codes, on the committed examples (no kernel needed).

Every JSON document doctor prints here is validated against docs/schemas/doctor-v1.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

try:  # tests/ is on sys.path (rootdir conftest, no package)...
    from test_doctor_checks import INPOD, SEED, W2, chain, drop_lines, insert_after, mutate, sub
except ImportError:  # ...or a package, if tests/__init__.py appears
    from tests.test_doctor_checks import (
        INPOD,
        SEED,
        W2,
        chain,
        drop_lines,
        insert_after,
        mutate,
        sub,
    )

from ambientctl.analyzers.doctor import REGISTRY
from ambientctl.cli import main

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "docs/schemas/doctor-v1.json").read_text())
PP = "nodes/ambient-worker2/pods/default/productpage-v1-7c548b785b-w9zl6"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["doctor", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    rc, out, _err = run(capsys, *args, "-o", "json")
    doc = json.loads(out)  # stdout is one JSON document and nothing else
    jsonschema.validate(doc, SCHEMA, cls=jsonschema.Draft202012Validator)
    return rc, doc


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """In-pod example with one error (AMB303 on productpage) and one warning (AMB311)."""
    rule = {f"{PP}/ip-rule.json": lambda t: json.dumps(
        [r for r in json.loads(t) if r.get("priority") != 32764])} \
        if (INPOD / PP / "ip-rule.json").exists() else {f"{PP}/ip-rule.txt": drop_lines(r"^32764:")}
    stale = {f"{W2}/ipset.txt": chain(
        insert_after(r"^Members:", '10.244.1.66 comment "0bad0bad-0000-4000-8000-000000000000"'),
        sub(r"Number of entries: 2", "Number of entries: 3"))}
    return mutate(INPOD, tmp_path_factory.mktemp("broken"), {**rule, **stale})


@pytest.fixture(scope="module")
def warning_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mutate(INPOD, tmp_path_factory.mktemp("warn"), {f"{W2}/ipset.txt": chain(
        insert_after(r"^Members:", '10.244.1.66 comment "0bad0bad-0000-4000-8000-000000000000"'),
        sub(r"Number of entries: 2", "Number of entries: 3"))})


def test_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("bundle", [SEED, INPOD], ids=["seed", "inpod"])
def test_clean_example_exits_0_with_a_node_table(capsys: pytest.CaptureFixture[str],
                                                 bundle: Path) -> None:
    rc, out, err = run(capsys, "--bundle", str(bundle))
    assert rc == 0, out + err
    lines = out.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("NODE"))
    assert lines[header].split()[:3] == ["NODE", "MODE", "PODS"]
    assert lines[header + 1].split()[0] == "ambient-worker"
    assert "No findings." in out
    assert out.rstrip().endswith("Result: PASS (--fail-on error)")
    assert "Traceback" not in err


@pytest.mark.parametrize("bundle", [SEED, INPOD], ids=["seed", "inpod"])
def test_json_of_a_clean_example_validates_and_lists_every_check(
        capsys: pytest.CaptureFixture[str], bundle: Path) -> None:
    rc, doc = run_json(capsys, "--bundle", str(bundle))
    assert rc == 0
    assert doc["schema"] == "ambientctl.doctor/v1" and doc["result"] == "pass"
    assert doc["findings"] == []
    assert {c["id"] for c in doc["catalogue"]} == set(REGISTRY)
    assert doc["summary"]["checks"]["errored"] == 0


def test_findings_exit_1_most_severe_first(capsys: pytest.CaptureFixture[str],
                                           broken: Path) -> None:
    rc, out, _ = run(capsys, "--bundle", str(broken))
    assert rc == 1
    assert out.index("ERROR   AMB303") < out.index("WARNING AMB311")
    assert "evidence:" in out and "fix:" in out and "docs: docs/checks.md#amb303" in out
    assert "Result: FAIL" in out
    rc, doc = run_json(capsys, "--bundle", str(broken))
    assert rc == 1 and doc["result"] == "fail"
    assert [f["id"] for f in doc["findings"]] == ["AMB303", "AMB311"]
    f = doc["findings"][0]
    assert (f["node"], f["pod"], f["netns"]) == (
        "ambient-worker2", "default/productpage-v1-7c548b785b-w9zl6",
        "ambient-worker2/pod/default/productpage-v1-7c548b785b-w9zl6")
    assert f["evidence"][0]["absent"] and f["evidence"][0]["path"].startswith(PP + "/ip-rule")
    assert doc["nodes"][1]["findings"] == {"error": 1, "warning": 1, "info": 0}


@pytest.mark.parametrize("args, rc", [
    ((), 1),
    (("--fail-on", "none"), 0),
    (("--fail-on", "warning"), 1),
    (("-S", "AMB303"), 0),
    (("-S", "amb303=ambient-worker2"), 0),
    (("-S", "AMB303=ambient-worker2/productpage-v1-7c548b785b-w9zl6"), 0),
    (("-S", "AMB303=ambient-worker2/default/productpage-v1-7c548b785b-w9zl6"), 0),
    (("-S", "AMB3*=ambient-worker*"), 0),
    (("-S", "AMB303=ambient-worker"), 1),  # another node
    (("-S", "AMB303=ambient-worker2/reviews-v1-6494d87c7b-zrpks"), 1),  # another pod
    (("-S", "AMB311"), 1),  # another check
    (("-S", "AMB303", "--fail-on", "warning"), 1),  # the warning remains
    (("-S", "AMB303", "-S", "AMB311", "--fail-on", "warning"), 0),
])
def test_threshold_and_suppression_decide_the_exit_code(
        capsys: pytest.CaptureFixture[str], broken: Path, args: tuple[str, ...], rc: int) -> None:
    got, doc = run_json(capsys, "--bundle", str(broken), *args)
    assert got == rc
    shown = {f["id"] for f in doc["findings"]}
    hidden = {f["id"] for f in doc["suppressed"]}
    assert shown | hidden == {"AMB303", "AMB311"} and not shown & hidden
    assert doc["summary"]["suppressed"] == len(doc["suppressed"])


def test_warning_only_passes_by_default_and_fails_on_warning(
        capsys: pytest.CaptureFixture[str], warning_only: Path) -> None:
    assert run_json(capsys, "--bundle", str(warning_only))[0] == 0
    assert run_json(capsys, "--bundle", str(warning_only), "--fail-on", "warning")[0] == 1


def test_check_option_runs_only_those_checks(capsys: pytest.CaptureFixture[str],
                                             broken: Path) -> None:
    rc, doc = run_json(capsys, "--bundle", str(broken), "--check", "AMB311")
    assert rc == 0
    assert {c["id"] for c in doc["checks"]} == {"AMB311"}
    assert [f["id"] for f in doc["findings"]] == ["AMB311"]


def test_skipped_checks_are_listed_with_the_missing_file(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bundle = mutate(INPOD, tmp_path, {f"{PP}/ss-listen.txt": None})
    rc, out, _ = run(capsys, "--bundle", str(bundle))
    assert rc == 0
    assert "Could not check" in out
    assert f"AMB304 on pod/default/productpage-v1-7c548b785b-w9zl6: {PP}/ss-listen.txt" in out
    _, doc = run_json(capsys, "--bundle", str(bundle))
    skipped = [c for c in doc["checks"] if c["status"] == "skipped" and c["id"] == "AMB304"]
    assert skipped and "ss-listen.txt" in skipped[0]["reason"]


def test_list_checks_prints_the_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "-L")
    assert rc == 0
    assert [ln.split()[0] for ln in out.splitlines()] == sorted(REGISTRY)


@pytest.mark.parametrize("args", [
    ("-S", "=node"),
    ("-S", "AMB201="),
    ("--check", "AMB999"),
    ("--fail-on", "fatal"),
    ("--local", "--bundle", "x"),
    ("--node-name", "w1"),
])
def test_bad_usage_exits_2_with_one_error_line(capsys: pytest.CaptureFixture[str],
                                               args: tuple[str, ...]) -> None:
    rc, out, err = run(capsys, *args, *(() if "--bundle" in args else ("--bundle", str(INPOD))))
    assert rc == 2, out + err
    assert "Traceback" not in err and out == ""


def test_unreadable_bundle_exits_4(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, err = run(capsys, "--bundle", str(tmp_path / "nope"))
    assert rc == 4 and out == ""
    assert err.startswith("error: bundle not found")


def test_entry_point_runs_doctor(broken: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "ambientctl", "doctor", "--bundle", str(broken),
                          "-o", "json"], check=False, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 1, res.stderr
    jsonschema.validate(json.loads(res.stdout), SCHEMA, cls=jsonschema.Draft202012Validator)
