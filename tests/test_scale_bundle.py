"""The generated N-node bundle (benchmarks/scale_bundle.py) is a correct input at 2 and 10 nodes.

Why: the scale benchmarks only mean something if the bundle they time is one trace and
doctor read like a real cluster: it verifies against its manifest, the trace between the
example's pods crosses the same two nodes as intended whatever the cluster size, doctor
finds nothing wrong, and the .tar.gz of the same bundle gives byte-identical answers. No
timing is asserted here (benchmarks/bench_scale.py prints the figures).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import scale_bundle  # noqa: E402


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ambientctl", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("nodes", [2, 10])
def test_generated_bundle_traces_and_doctors_the_same_as_its_tarball(tmp_path: Path,
                                                                      nodes: int) -> None:
    bundle = scale_bundle.generate(tmp_path / f"b{nodes}", nodes)
    pods = json.loads((bundle / "cluster" / "pods.json").read_text())["items"]
    per_node: dict[str, int] = {}
    for p in pods:
        per_node[p["spec"]["nodeName"]] = per_node.get(p["spec"]["nodeName"], 0) + 1
    assert len(per_node) == nodes and min(per_node.values()) >= 20
    ips = [p["status"]["podIP"] for p in pods]
    assert len(ips) == len(set(ips)), "two pods share an address"

    verify = _cli("bundle", "verify", str(bundle))
    assert verify.returncode == 0, verify.stdout + verify.stderr

    tgz = scale_bundle.to_tar(bundle, tmp_path / f"b{nodes}.tar.gz")
    outs = {}
    for where in (bundle, tgz):
        trace = _cli("trace", "sleep", "productpage", "--bundle", str(where), "-o", "json")
        doctor = _cli("doctor", "--bundle", str(where), "-o", "json")
        assert trace.returncode == 0, trace.stderr
        assert doctor.returncode == 0, doctor.stdout[-2000:] + doctor.stderr
        outs[where] = (json.loads(trace.stdout), json.loads(doctor.stdout))
    (t_dir, d_dir), (t_tar, d_tar) = outs[bundle], outs[tgz]
    # the bundle's own location is part of the output: compare everything else
    assert json.dumps(t_dir).replace(str(bundle), "B") == json.dumps(t_tar).replace(str(tgz), "B")
    assert json.dumps(d_dir).replace(str(bundle), "B") == json.dumps(d_tar).replace(str(tgz), "B")
    text = json.dumps(t_dir)
    assert "as intended" in text and "ambient-worker2" in text


def _check_by_check(snapshot: object) -> list[object]:
    """The pre-streaming schedule: each check on every node before the next check."""
    from ambientctl.analyzers.doctor import _load_areas
    from ambientctl.analyzers.doctor.facts import Context
    from ambientctl.analyzers.doctor.registry import run_check, selected

    _load_areas()
    ctx = Context.build(snapshot)  # type: ignore[arg-type]
    return [r for chk in selected() for r in run_check(ctx, chk)]


def _broken(bundle: Path) -> Path:
    """The generated bundle hand-broken on three nodes so doctor has findings, skips and
    parse problems to order: garbage sysctl (AMB103, skipped rp_filter checks), a missing
    ztunnel config_dump (AMB101, skips), a pod without its ISTIO_PRERT chain (AMB302)."""
    nodes = bundle / "nodes"
    (bundle / "manifest.json").unlink()  # the files no longer match it: a hand-made bundle
    (nodes / "ambient-worker3" / "host" / "sysctl.txt").write_text("garbage here\n")
    (nodes / "ambient-worker4" / "ztunnel" / "config_dump.json").unlink()
    pod = sorted((nodes / "ambient-worker2" / "pods" / "default").iterdir())[0]
    rules = (pod / "iptables-save.txt").read_text().splitlines()
    (pod / "iptables-save.txt").write_text(
        "\n".join(r for r in rules if "ISTIO_PRERT" not in r) + "\n")
    return bundle


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("where", ["seed-kind-ambient", "broken:5", "scale:10"])
def test_streamed_doctor_equals_the_check_by_check_run(tmp_path: Path, monkeypatch,
                                                       where: str, workers: str) -> None:
    """Node by node (and in a process pool when forced) doctor returns the very results,
    in the same order, as running each check over all nodes; the report is identical."""
    from ambientctl.analyzers.doctor import WORKERS_ENV, diagnose
    from ambientctl.bundle.load import load_snapshot

    if ":" in where:
        kind, n = where.split(":")
        location = str(scale_bundle.generate(tmp_path / "b", int(n)))
        if kind == "broken":
            location = str(_broken(Path(location)))
    else:
        location = str(ROOT / "examples" / where)
    baseline = _check_by_check(load_snapshot(location))
    if where.startswith("broken"):
        statuses = {r.status.value for r in baseline}
        assert {"passed", "failed", "skipped"} <= statuses
        assert {f.check_id for r in baseline for f in r.findings} >= {"AMB101", "AMB103"}
    monkeypatch.setenv(WORKERS_ENV, "1")
    sequential = diagnose(load_snapshot(location))
    monkeypatch.setenv(WORKERS_ENV, workers)
    streamed = diagnose(load_snapshot(location))
    assert list(streamed.results) == baseline
    assert streamed == sequential


def test_doctor_rejects_a_bad_worker_count(monkeypatch) -> None:
    from ambientctl.analyzers.doctor import WORKERS_ENV, diagnose
    from ambientctl.bundle.load import load_snapshot
    from ambientctl.errors import UsageError

    monkeypatch.setenv(WORKERS_ENV, "two")
    with pytest.raises(UsageError, match=WORKERS_ENV):
        diagnose(load_snapshot(str(ROOT / "examples" / "seed-kind-ambient")))


def test_doctor_holds_one_node_parsed_at_a_time(tmp_path: Path, monkeypatch) -> None:
    """Streaming means bounded memory: whenever doctor parses a namespace slot or a ztunnel
    dump, no other node has anything parsed (its namespaces and dump were evicted), and a
    dump read only to list its problems is not kept. Every node is parsed at some point."""
    from ambientctl.analyzers import snapshot as lazy
    from ambientctl.analyzers.doctor import WORKERS_ENV, diagnose
    from ambientctl.bundle.load import load_snapshot

    snap = load_snapshot(str(scale_bundle.generate(tmp_path / "b", 4)))
    assert isinstance(snap, lazy.LazySnapshot)
    worst: list[set[str]] = []
    touched: set[str] = set()

    def nodes_parsed() -> set[str]:
        held = {ns.node for ns in snap.namespaces()
                if isinstance(ns, lazy.LazyNetNamespace) and ns.parsed()}
        return held | set(snap.parsed_dumps())

    def watched(fn):  # type: ignore[no-untyped-def]
        def run(self, *args):  # type: ignore[no-untyped-def]
            got = fn(self, *args)
            held = nodes_parsed()
            touched.update(held)
            if len(held) > 1:
                worst.append(held)
            return got
        return run

    monkeypatch.setattr(lazy._NetnsLoader, "_first_parsed",
                        watched(lazy._NetnsLoader._first_parsed))
    monkeypatch.setattr(lazy._ZtunnelDumps, "get", watched(lazy._ZtunnelDumps.get))
    monkeypatch.setenv(WORKERS_ENV, "1")
    report = diagnose(snap)
    assert report.results and not report.findings
    assert worst == [], f"nodes parsed at once: {worst[:3]}"
    assert touched == set(snap.nodes)


def test_doctor_checks_nodes_in_one_process_unless_asked(monkeypatch) -> None:
    """The pool did not pay on the 2-core machine and multiplied memory (see `_workers`):
    without AMBIENTCTL_DOCTOR_WORKERS doctor uses one process at any size; `auto` brings
    back one worker per core for large lazy bundles; a number is taken as given."""
    import os

    from ambientctl.analyzers.doctor import POOL_MIN_NODES, WORKERS_ENV, _workers
    from ambientctl.bundle.load import load_snapshot

    snap = load_snapshot(str(ROOT / "examples" / "seed-kind-ambient"))
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    assert _workers(snap, 10 * POOL_MIN_NODES) == 1
    monkeypatch.setenv(WORKERS_ENV, "auto")
    cores = len(os.sched_getaffinity(0))
    assert _workers(snap, 10 * POOL_MIN_NODES) == (cores if cores > 1 else 1)
    assert _workers(snap, POOL_MIN_NODES - 1) == 1
    monkeypatch.setenv(WORKERS_ENV, "3")
    assert _workers(snap, 2) == 2
