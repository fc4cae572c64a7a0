"""trace is O(path): it reads only the namespaces its path crosses, and answers exactly as
it did when every namespace was classified and indexed up front.

Why: on a 200-node bundle a trace between two pods used to parse every node (issue 12).
The derived facts (`analyzers/derived_facts.py`) now answer "who holds this address" from
the cluster objects, confirmed by the candidates' `ip addr`, and classify a namespace when
the walk enters it. These tests pin both halves: what is read (a recording snapshot, and
the lazy snapshot's own probe) and that the answer equals the one over eager indices
(`path_probe.eager_world`, the old `World.build`), on a generated 10-node in-pod bundle
(pod to pod across nodes, by Service, by address) and on the 2022 example bundle.
Also: trace and doctor share one role fallback and one ztunnel-vs-kernel decision.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from ambientctl.analyzers.derived_facts import DerivedFacts, fallback_role
from ambientctl.analyzers.doctor.facts import Context
from ambientctl.analyzers.trace import Tracer
from ambientctl.loading import load_snapshot
from tests.path_probe import LINKS, path_namespaces, recording, trace_doc

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "examples"
sys.path.insert(0, str(ROOT / "benchmarks"))

import scale_bundle  # noqa: E402


@pytest.fixture(scope="module")
def bundle10(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scale_bundle.generate(tmp_path_factory.mktemp("scale") / "b10", 10)


def _productpage_ip(bundle: Path) -> str:
    pods = json.loads((bundle / "cluster" / "pods.json").read_text())["items"]
    return next(p["status"]["podIP"] for p in pods
                if p["metadata"]["name"].startswith("productpage-v1-7c548b785b-w9zl6"))


def _check_reads_only_the_path(bundle: Path, src: str, dst: str, port: int | None) -> None:
    lazy, touched = recording(load_snapshot(str(bundle)))
    doc, t = trace_doc(lazy, src, dst, port=port)
    eager, _ = trace_doc(load_snapshot(str(bundle)), src, dst, port=port, eager=True)
    assert doc == eager  # same legs, steps, citations, verdict
    assert doc["intent"]["as_intended"] is True, doc["intent"]  # doctor did not run
    path = path_namespaces(t)
    nodes = {ns.split("/")[0] for ns in path}
    deep = {ns for ns, what in touched if what not in LINKS}
    assert deep <= path, sorted(deep - path)
    # ip addr of the path's nodes only (a veth's peer is unique among its node's netns)
    assert {ns.split("/")[0] for ns, _ in touched} <= nodes


@pytest.mark.parametrize("dst,port", [("productpage", None), ("svc/productpage", None),
                                      ("IP", 9080)],
                         ids=["pod-to-pod-across-nodes", "service", "pod-address"])
def test_a_trace_on_ten_nodes_reads_only_its_path_and_answers_as_with_everything_loaded(
        bundle10: Path, dst: str, port: int | None) -> None:
    if dst == "IP":
        dst = _productpage_ip(bundle10)
    _check_reads_only_the_path(bundle10, "sleep", dst, port)


@pytest.mark.parametrize("src,dst,port", [("sleep", "productpage", None),
                                          ("notsleep", "details", None),
                                          ("sleep", "ratings", 9080)])
def test_a_trace_on_the_2022_bundle_reads_only_its_path_and_answers_as_before(
        src: str, dst: str, port: int | None) -> None:
    _check_reads_only_the_path(EX / "seed-kind-ambient", src, dst, port)


@pytest.mark.parametrize("tar", [False, True], ids=["dir", "tar.gz"])
def test_the_lazy_snapshot_parses_only_the_path_nodes_and_at_most_two_dumps(
        bundle10: Path, tmp_path: Path, tar: bool) -> None:
    where = scale_bundle.to_tar(bundle10, tmp_path / "b10.tar.gz") if tar else bundle10
    snap = load_snapshot(str(where))
    doc, t = trace_doc(snap, "sleep", "productpage")
    assert doc["intent"]["as_intended"] is True
    nodes = {ns.split("/")[0] for ns in path_namespaces(t)}
    parsed = set(snap.parsed_namespaces())  # type: ignore[attr-defined]
    assert parsed and {ns.split("/")[0] for ns in parsed} <= nodes, sorted(parsed)
    first = sorted(snap.dump_nodes())[0]  # type: ignore[attr-defined]
    assert set(snap.parsed_dumps()) <= nodes | {first}  # type: ignore[attr-defined]
    assert len(snap.nodes) == 10


def test_trace_and_doctor_fall_back_to_the_same_role_when_classification_fails(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from ambientctl.analyzers import classify

    def broken(ns: object, pod: object = None) -> object:
        raise ValueError("a rule classify cannot read")

    monkeypatch.setattr(classify, "classify", broken)
    snap = load_snapshot(str(EX / "seed-kind-ambient"))
    tracer, ctx = Tracer(snap), Context.build(snap)
    roles = {ns.id: ctx.role(ns) for ns in snap.namespaces()}
    assert roles == {ns.id: tracer.world.roles[ns.id] for ns in snap.namespaces()}
    assert roles == {ns.id: fallback_role(ns) for ns in snap.namespaces()}
    # the fallback still knows the 2022 ztunnel and node rules by their names
    assert {"legacy-ztunnel", "legacy-node"} <= set(roles.values())


def test_doctor_and_trace_share_one_facts_object_per_snapshot() -> None:
    snap = load_snapshot(str(EX / "inpod-kind-ambient"))
    assert Tracer(snap).facts is Context.build(snap).facts is DerivedFacts.of(snap)


def _pending_productpage(tmp_path: Path) -> Path:
    """The in-pod example with ztunnel's workloadState for productpage set to Pending:
    its netns still redirects, ztunnel no longer serves it (istio/istio#55968)."""
    bundle = tmp_path / "b"
    shutil.copytree(EX / "inpod-kind-ambient", bundle)
    (bundle / "manifest.json").unlink()  # a hand-edited bundle: no hashes to match
    dump = bundle / "nodes" / "ambient-worker2" / "ztunnel" / "config_dump.json"
    doc = json.loads(dump.read_text())
    for st in doc["workloadState"].values():
        if st["info"]["name"].startswith("productpage-"):
            st["state"] = "Pending"
    dump.write_text(json.dumps(doc))
    return bundle


def test_a_redirected_pod_ztunnel_does_not_serve_is_one_disagreement_in_trace_and_doctor(
        tmp_path: Path) -> None:
    from ambientctl.analyzers.doctor import diagnose

    bundle = _pending_productpage(tmp_path)
    doc, _t = trace_doc(load_snapshot(str(bundle)), "sleep", "productpage")
    flagged = [s["summary"] for leg in doc["legs"] for s in leg["ztunnel"]
               if s["summary"].startswith("DISAGREEMENT")]
    assert len(flagged) == 1 and "workloadState" in flagged[0] and "Pending" in flagged[0]
    report = diagnose(load_snapshot(str(bundle)))
    hits = [f for f in report.findings if f.check_id == "AMB310"]
    assert len(hits) == 1 and "productpage" in hits[0].message and "Pending" in hits[0].message
    # and the untouched example has neither
    healthy, _ = trace_doc(load_snapshot(str(EX / "inpod-kind-ambient")), "sleep", "productpage")
    assert "DISAGREEMENT" not in json.dumps(healthy)


@pytest.mark.parametrize("drop", ["cluster", "nodes-and-pods-disagree"])
def test_without_or_against_the_cluster_objects_addresses_come_from_every_ip_addr(
        tmp_path: Path, drop: str) -> None:
    """kind without an API server, or objects that place an address where the kernel does
    not: the index cannot decide, so every namespace's `ip addr` is read - same answer."""
    bundle = tmp_path / "b"
    shutil.copytree(EX / "seed-kind-ambient", bundle)
    (bundle / "manifest.json").unlink()
    ip = _productpage_ip(bundle)
    if drop == "cluster":
        shutil.rmtree(bundle / "cluster")
    else:  # pods.json moves productpage's address to another pod, nodes.json is gone
        pods_file = bundle / "cluster" / "pods.json"
        pods = json.loads(pods_file.read_text())
        for p in pods["items"]:
            if p["status"].get("podIP") == ip:
                p["status"]["podIP"], p["status"]["podIPs"] = "10.99.0.9", [{"ip": "10.99.0.9"}]
            elif p["metadata"]["name"].startswith("sleep-"):
                p["status"]["podIPs"] = [{"ip": p["status"]["podIP"]}, {"ip": ip}]
        pods_file.write_text(json.dumps(pods))
        (bundle / "cluster" / "nodes.json").unlink()
    lazy, _touched = recording(load_snapshot(str(bundle)))
    doc, t = trace_doc(lazy, "node/ambient-worker", ip, port=9080)
    eager, _ = trace_doc(load_snapshot(str(bundle)), "node/ambient-worker", ip, port=9080,
                         eager=True)
    assert doc == eager
    assert t.legs and t.legs[0].result.hops[-1].netns.startswith("ambient-worker2/")
    assert DerivedFacts.of(lazy)._all_owners is not None  # the full scan did run
