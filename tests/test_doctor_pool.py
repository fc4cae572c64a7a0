"""doctor's worker pool (`AMBIENTCTL_DOCTOR_WORKERS`): forked workers, one answer.

Why: the pool forks after the bundle is indexed, so workers share the parent's index
(copy-on-write) and an archive's open file: the answer must be the single process's byte
for byte, whatever the bundle's form, and a worker's failure or a Ctrl-C must end the run
the way an error or interrupt ends any command (one line, non-zero exit, no process left).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import tarfile
from pathlib import Path

import pytest

from ambientctl.analyzers import doctor as doc
from ambientctl.analyzers.doctor import WORKERS_ENV, diagnose
from ambientctl.bundle.load import load_snapshot
from ambientctl.cli import main
from ambientctl.errors import AmbientError, BundleError, ExitCode
from ambientctl.render.doctor_json import doctor_document

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import scale_bundle  # noqa: E402

pytestmark = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                                reason="the pool forks its workers")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scale_bundle.generate(tmp_path_factory.mktemp("pool") / "b", 6)


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated bundle hand-broken so that doctor has findings, skips and parse
    problems on several nodes: garbage sysctl on a node and in a pod (AMB103), a missing
    ztunnel config_dump (AMB101), a pod without its ISTIO_PRERT chain (AMB302)."""
    out = scale_bundle.generate(tmp_path_factory.mktemp("broken") / "b", 5)
    nodes = out / "nodes"
    (out / "manifest.json").unlink()  # the files no longer match it: a hand-made bundle
    (nodes / "ambient-worker3" / "host" / "sysctl.txt").write_text("garbage here\n")
    (nodes / "ambient-worker4" / "ztunnel" / "config_dump.json").unlink()
    pods = sorted((nodes / "ambient-worker2" / "pods" / "default").iterdir())
    (pods[1] / "sysctl.txt").write_text("net.ipv4.ip_forward = 1\nnot a sysctl line\n")
    rules = (pods[0] / "iptables-save.txt").read_text().splitlines()
    (pods[0] / "iptables-save.txt").write_text(
        "\n".join(r for r in rules if "ISTIO_PRERT" not in r) + "\n")
    return out


def _plain_tar(src: Path, out: Path) -> Path:
    """A .tar.gz without member index (read in one forward pass, through `GzipIndex`)."""
    with tarfile.open(out, "w:gz") as tar:
        tar.add(src, arcname=src.name)
    return out


def _json(location: str, workers: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(WORKERS_ENV, workers)
    return json.dumps(doctor_document(diagnose(load_snapshot(location))), indent=2)


@pytest.mark.parametrize("form", ["broken-dir", "indexed-tar", "plain-tar"])
def test_pool_report_is_byte_identical_to_one_process(bundle: Path, broken: Path,
                                                      tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      form: str) -> None:
    """Two and three workers (nodes dealt round-robin, results merged in node order) give
    the JSON one process gives, findings and skips included; from an archive too, where
    the workers read members through the file the parent opened (each re-opens it: a
    shared offset would mix their reads)."""
    location = {"broken-dir": lambda: broken,
                "indexed-tar": lambda: scale_bundle.to_tar(bundle, tmp_path / "i.tar.gz"),
                "plain-tar": lambda: _plain_tar(bundle, tmp_path / "p.tar.gz")}[form]()
    one = _json(str(location), "1", monkeypatch)
    got = json.loads(one)
    assert got["checks"]
    if form == "broken-dir":
        assert {"AMB101", "AMB103", "AMB302"} <= {f["id"] for f in got["findings"]}
    assert _json(str(location), "2", monkeypatch) == one
    assert _json(str(location), "3", monkeypatch) == one
    assert multiprocessing.active_children() == []


def test_pool_parent_does_not_parse_the_nodes_again(bundle: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The workers hand back the roles they classified: the parent names every node's mode
    from them instead of parsing every namespace a second time."""
    snap = load_snapshot(str(bundle))
    monkeypatch.setenv(WORKERS_ENV, "2")
    report = diagnose(snap)
    assert {n.mode for n in report.nodes} == {"inpod"}
    assert snap.parsed_namespaces() == ()


def _boom(ctx: object, only: object, names: object) -> list[object]:
    raise BundleError("nodes/x/host/iptables-save.txt cannot be read (test)", hint="a hint")


def test_an_error_in_a_worker_is_raised_by_the_parent(bundle: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A worker's exception crosses back and ends the command as it would in one process:
    the CLI prints one error line (and its hint) and exits with the error's code."""
    monkeypatch.setattr(doc, "_check_nodes", _boom)
    monkeypatch.setenv(WORKERS_ENV, "2")
    with pytest.raises(BundleError, match="cannot be read"):
        diagnose(load_snapshot(str(bundle)))
    code = main(["doctor", "--bundle", str(bundle), "-o", "json"])
    err = capsys.readouterr().err
    assert code == ExitCode.BUNDLE
    assert err.splitlines() == ["error: nodes/x/host/iptables-save.txt cannot be read (test)",
                                "hint: a hint"]
    assert multiprocessing.active_children() == []


def _die(ctx: object, only: object, names: object) -> list[object]:
    os._exit(3)


def test_a_worker_that_dies_is_an_error_naming_it(bundle: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doc, "_check_nodes", _die)
    monkeypatch.setenv(WORKERS_ENV, "2")
    with pytest.raises(AmbientError, match=r"worker process .* ended without a result "
                                           r"\(exit code 3\)") as got:
        diagnose(load_snapshot(str(bundle)))
    assert WORKERS_ENV in (got.value.hint or "")
    assert multiprocessing.active_children() == []


def _hang(ctx: object, only: object, names: object) -> list[object]:
    signal.pause()  # SIGINT is ignored in workers: only the parent can end this one
    return []


def test_ctrl_c_ends_the_workers_and_interrupts_the_command(bundle: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    """Ctrl-C reaches the parent while it waits for the workers (here: workers that never
    answer): the workers are ended, none is left behind, and the CLI says "interrupted"
    and exits 130."""
    monkeypatch.setattr(doc, "_check_nodes", _hang)
    monkeypatch.setenv(WORKERS_ENV, "2")
    previous = signal.signal(signal.SIGALRM, lambda *_: signal.raise_signal(signal.SIGINT))
    try:
        signal.setitimer(signal.ITIMER_REAL, 1.0)
        code = main(["doctor", "--bundle", str(bundle), "-o", "json"])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert code == ExitCode.INTERRUPTED
    assert [line for line in capsys.readouterr().err.splitlines() if line] == ["interrupted"]
    assert multiprocessing.active_children() == []
