"""ztunnel's admin `config_dump` is collected, stored at `nodes/<node>/ztunnel/config_dump.json`,
and shows in the trace and in doctor (issue 4).

Unit tests pin the catalogue (read-only, allowlisted, never batched), the `--targets`
marker, and what a refused admin port becomes (skipped, not a failure). Kernel tests build
the in-pod lab, whose ztunnel pods serve a config_dump on 127.0.0.1:15000 in their own
netns, and collect it with `collect --local` and through the Kubernetes API test peer's
real port-forward protocol.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from ambientctl.bundle import layout
from ambientctl.bundle.reader import Bundle
from ambientctl.bundle.ztunnel_shared import is_split
from ambientctl.collectors import specs as specs_mod
from ambientctl.collectors.batch import CATALOGUE, is_allowed
from ambientctl.collectors.local import targets_from_document
from ambientctl.collectors.runner import Plan, Runner
from ambientctl.collectors.transport import NetnsRef
from ambientctl.errors import UsageError
from ambientctl.raw import ExecResult, RawStatus
from ambientlab.ztunnel_admin import config_dump
from tests.test_collect_local import WRITE_TOKENS

REPO = Path(__file__).resolve().parents[1]
ZT = ("istio-system", "ztunnel-8d4fh")  # the in-pod lab's ztunnel on ambient-worker2
PP = "productpage-v1-7c548b785b-w9zl6"


# --------------------------------------------------------------------------- catalogue


def test_admin_read_is_read_only_allowlisted_and_never_batched() -> None:
    argvs = specs_mod.admin_argv()
    assert argvs == [specs_mod.ZTUNNEL_ADMIN_ARGV]
    for argv in argvs:
        assert not (set(argv[1:]) & WRITE_TOKENS), argv
        assert not any("=" in t for t in argv), argv
        assert argv[-1] == "http://127.0.0.1:15000/config_dump"
        assert is_allowed(argv)  # the remote transports' choke point lets it through
        assert argv not in CATALOGUE  # one exec of its own, not a batch branch
    assert not is_allowed(("curl", "-sS", "-X", "POST", "http://127.0.0.1:15000/quitquitquit"))


def test_ztunnel_marker_in_targets_document_adds_the_config_dump_target() -> None:
    doc = {"nodes": [{"name": "n1", "host_netns": "h1", "pods": [
        {"namespace": "default", "name": "app-1", "netns": "p1"},
        {"namespace": "istio-system", "name": "ztunnel-abcde", "netns": "z1", "ztunnel": True},
    ]}]}
    targets = targets_from_document(doc, source="t.json")
    assert [t.id for t in targets] == [
        "node/n1", "pod/default/app-1", "pod/istio-system/ztunnel-abcde",
        "ztunnel/istio-system/ztunnel-abcde",
    ]
    zt = targets[-1]
    assert zt.kind == "ztunnel" and zt.netns == NetnsRef(name="z1")
    plan = Plan(tuple(targets))
    assert [s.id for s in plan.specs_for(zt)] == ["ztunnel-config-dump"]
    assert f"{zt.dir}/{plan.specs_for(zt)[0].file}" == layout.config_dump_path("n1")
    assert all(s.id != "ztunnel-config-dump" for t in targets[:-1] for s in plan.specs_for(t))
    assert zt.describe()["pod"] == {"namespace": "istio-system", "name": "ztunnel-abcde"}


@pytest.mark.parametrize("bad", ["yes", 1])
def test_ztunnel_marker_must_be_a_boolean(bad: object) -> None:
    doc = {"nodes": [{"name": "n1", "pods": [
        {"namespace": "istio-system", "name": "ztunnel-a", "netns": "z1", "ztunnel": bad}]}]}
    with pytest.raises(UsageError, match="ztunnel must be true or false"):
        targets_from_document(doc, source="t.json")


def test_two_ztunnel_pods_on_one_node_are_refused() -> None:
    pods = [{"namespace": "istio-system", "name": f"ztunnel-{x}", "netns": f"z{x}",
             "ztunnel": True} for x in "ab"]
    with pytest.raises(UsageError, match="two ztunnel pods"):
        targets_from_document({"nodes": [{"name": "n1", "pods": pods}]}, source="t.json")


class _Answer:
    """A transport whose every command ends with one fixed result."""

    name = "local"

    def __init__(self, result: ExecResult) -> None:
        self.result = result

    def run(self, argv: Sequence[str], *, netns: NetnsRef | None, timeout: float) -> ExecResult:
        return self.result

    def close(self) -> None:
        pass


def _admin_output(result: ExecResult) -> Any:
    doc = {"nodes": [{"name": "n1", "pods": [
        {"namespace": "istio-system", "name": "ztunnel-a", "netns": "z1", "ztunnel": True}]}]}
    zt = targets_from_document(doc, source="t.json")[-1]
    outs = Runner(_Answer(result)).run(Plan((zt,))).outputs
    assert len(outs) == 1 and outs[0].path == layout.config_dump_path("n1")
    return outs[0]


def test_refused_admin_port_is_recorded_skipped_with_the_reason() -> None:
    err = b"curl: (7) Failed to connect to 127.0.0.1 port 15000: Connection refused\n"
    out = _admin_output(ExecResult(7, b"", err, 3))
    assert out.status is RawStatus.SKIPPED and out.exit_code == 7 and out.stderr == err
    assert "no ztunnel admin API on 127.0.0.1:15000" in (out.note or "")


def test_http_error_and_missing_curl_are_failures_naming_another_source() -> None:
    assert _admin_output(ExecResult(22, b"", b"curl: (22) 404\n", 3)).status \
        is RawStatus.NONZERO_EXIT
    missing = _admin_output(ExecResult(None, b"", b"", 0, not_found=True))
    assert missing.status is RawStatus.NOT_FOUND
    assert "port-forward" in (missing.note or "")


def _pod(name: str, node: str, ip: str, *, ns: str = "default", ambient: bool = False,
         tunnel: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "uid": f"uid-{name}",
                            "labels": {"app": name.split("-")[0]}, "annotations": {}}
    if ambient:
        meta["annotations"]["ambient.istio.io/redirection"] = "enabled"
    if tunnel:
        meta["labels"]["networking.istio.io/tunnel"] = "http"
    return {"metadata": meta, "spec": {"nodeName": node},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}


def test_config_dump_follows_istiods_tunnel_protocol_rule() -> None:
    pods = [_pod("a-1", "n1", "10.0.0.1", ambient=True), _pod("b-1", "n2", "10.0.0.2",
            ambient=True), _pod("c-1", "n1", "10.0.0.3"), _pod("d-1", "n1", "10.0.0.4",
            tunnel=True)]
    svc = {"metadata": {"name": "a", "namespace": "default"},
           "spec": {"clusterIP": "10.96.0.1", "selector": {"app": "a"},
                    "ports": [{"port": 80, "targetPort": 8080}]}}
    dump = config_dump(pods, [svc], "n1")
    wl = {w["name"]: w for w in dump["workloads"]}
    assert {n: w["protocol"] for n, w in wl.items()} == {
        "a-1": "HBONE", "b-1": "HBONE", "c-1": "TCP", "d-1": "HBONE"}
    assert wl["a-1"]["uid"] == "Kubernetes//Pod/default/a-1"
    assert wl["a-1"]["workloadIps"] == ["10.0.0.1"] and wl["a-1"]["node"] == "n1"
    assert wl["d-1"]["nativeTunnel"] is True and "nativeTunnel" not in wl["a-1"]
    # this node's ztunnel proxies its own in-mesh pods only
    assert {k: v["state"] for k, v in dump["workloadState"].items()} == {
        "uid-a-1": "Up", "uid-d-1": "Up"}
    ep = dump["services"]["/10.96.0.1"]["endpoints"]
    assert list(ep) == ["Kubernetes//Pod/default/a-1:/10.0.0.1"]
    assert dump["services"]["/10.96.0.1"]["ports"] == {"80": 8080}


# --------------------------------------------------------------------------- kernel


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the in-pod lab builds network namespaces")


def _collect_local(lab: Any, out: Path) -> Path:
    targets = lab.write_targets(out.parent / f"{out.name}-targets.json")
    cluster = lab.write_cluster(out.parent / f"{out.name}-cluster")
    res = subprocess.run(
        [sys.executable, "-m", "ambientctl", "collect", "--local", "--targets", str(targets),
         "--cluster-dir", str(cluster), "-o", str(out), "-q"],
        capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    return out


def _trace(bundle: Path) -> dict[str, Any]:
    res = subprocess.run(
        [sys.executable, "-m", "ambientctl", "trace", "sleep", "productpage", "-o", "json",
         "--bundle", str(bundle)], capture_output=True, text=True, cwd=REPO, timeout=120,
        check=False)
    assert res.returncode in (0, 1), res.stderr
    return json.loads(res.stdout)


def _leg(doc: dict[str, Any], index: int) -> dict[str, Any]:
    return next(leg for leg in doc["legs"] if leg["index"] == index)


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    _need_root()
    from ambientlab.inpod import InpodLab

    with InpodLab() as lab:
        yield lab, _collect_local(lab, tmp_path_factory.mktemp("zt") / "healthy")


@pytest.mark.kernel
def test_collect_local_stores_each_nodes_config_dump_with_its_hash(
        healthy: tuple[Any, Path]) -> None:
    lab, bundle = healthy
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["partial"] is False
    # both ztunnels print the same workloads/services/policies: stored once
    assert len(list((bundle / "cluster" / "ztunnel-shared").glob("sha256-*.json"))) == 1
    for node in ("ambient-worker", "ambient-worker2"):
        path = layout.config_dump_path(node)
        entry = next(e for e in manifest["entries"] if e["path"] == path)
        assert entry["status"] == "ok" and entry["target"].startswith("ztunnel/istio-system/")
        assert entry["argv"] == list(specs_mod.ZTUNNEL_ADMIN_ARGV)
        data = (bundle / path).read_bytes()  # stored split (format 2): the entry says so
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["size"] == len(data)
        assert is_split(data)
        dump = json.loads(Bundle(str(bundle)).read_bytes(path))  # what ztunnel printed
        names = {w["name"]: w for w in dump["workloads"]}
        assert names[PP]["protocol"] == "HBONE" and names[PP]["node"] == "ambient-worker2"
        assert names["curl-5b7d9c7f4-q2wxz"]["protocol"] == "TCP"
        up = {s["info"]["name"] for s in dump["workloadState"].values() if s["state"] == "Up"}
        ambient = {p.name for p in lab.pod_defs if p.node == node and p.mode == "ambient"}
        assert up == ambient


@pytest.mark.kernel
def test_trace_shows_ztunnels_view_of_the_destination_from_the_dump(
        healthy: tuple[Any, Path]) -> None:
    doc = _trace(healthy[1])
    steps = _leg(doc, 2)["ztunnel"]
    views = [s for s in steps if (s.get("source") or {}).get("path", "").endswith(
        "/ztunnel/config_dump.json")]
    assert views, steps
    assert any(f"lists {PP} with protocol HBONE" in s["summary"] for s in views)
    assert "DISAGREEMENT" not in json.dumps(doc)


@pytest.mark.kernel
def test_chains_missing_is_the_61182_disagreement_in_trace_and_doctor(
        tmp_path: Path) -> None:
    _need_root()
    from ambientctl.analyzers.doctor import diagnose
    from ambientctl.loading import load_snapshot
    from ambientlab.inpod import InpodLab

    with InpodLab() as lab:
        lab.inject("chains-missing-productpage")
        bundle = _collect_local(lab, tmp_path / "b")
    doc = _trace(bundle)
    flagged = [s for leg in doc["legs"] for s in leg["ztunnel"]
               if s["summary"].startswith("DISAGREEMENT") and PP in s["summary"]]
    assert flagged, json.dumps(doc["legs"], indent=1)[:3000]
    assert "istio/istio#61182" in flagged[0]["summary"]
    report = diagnose(load_snapshot(str(bundle)))
    hits = [f for f in report.findings if f.check_id == "AMB310"]
    assert hits and any(e.path.endswith("ztunnel/config_dump.json")
                        for f in hits for e in f.evidence), [f.check_id for f in report.findings]


@pytest.mark.kernel
def test_kube_exec_only_collection_reads_the_dump_through_port_forward(
        healthy: tuple[Any, Path], tmp_path: Path) -> None:
    """Distroless ztunnel (no binary at all): exec finds nothing, port-forward reads :15000."""
    from ambientctl.collectors.live import LiveOptions, collect_live
    from tests.peers.kube_api import ExecTarget, KubeApi

    lab, local = healthy
    cluster_dir = lab.write_cluster(tmp_path / "cluster")
    docs = {f.stem: json.loads(f.read_text()) for f in cluster_dir.glob("*.json")}
    targets = {(p["namespace"], p["name"]): ExecTarget(["ip", "netns", "exec", p["netns"]],
                                                       frozenset())
               for n in lab.targets()["nodes"] for p in n["pods"]}
    with KubeApi(docs, targets) as api:
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
        opts = LiveOptions(kubeconfig=str(kubeconfig), context="peer")
        written = collect_live(opts, str(tmp_path / "kube"))
        forwards = api.forward_count
        zt = lab.netns_name("ambient-worker2/pod/istio-system/ztunnel-8d4fh")
        refused = lab.procs["ambient-worker2/pod/istio-system/ztunnel-8d4fh"]
        try:
            for p in [p for p in refused if p.role == "admin"]:
                lab.lab.stop(p.proc)
            again = collect_live(opts, str(tmp_path / "kube-refused"))
        finally:
            # the module's lab serves again for any later test
            lab.procs[f"ambient-worker2/pod/{ZT[0]}/{ZT[1]}"] = [
                p for p in refused if p.role != "admin"]
            _restart_admin(lab, zt)
    assert forwards == 2
    entries = {e["target"]: e for e in written.manifest["entries"]
               if e["target"].startswith("ztunnel/")}
    assert set(entries) == {f"ztunnel/{ZT[0]}/ztunnel-5kx2v", f"ztunnel/{ZT[0]}/{ZT[1]}"}
    for entry in entries.values():
        assert entry["status"] == "ok" and entry["transport"] == "kube"
        assert entry["wrapper"][:2] == ["kubectl", "port-forward"]
        assert (Path(written.path) / entry["path"]).read_bytes() == \
            (local / entry["path"]).read_bytes()
    # the ztunnel pod's own exec found no binary: recorded, with the source that sees it
    assert any(n["target"] == f"pod/{ZT[0]}/{ZT[1]}" for n in
               written.manifest["collection"]["not_seen"])
    entry = next(e for e in again.manifest["entries"] if e["target"] == f"ztunnel/{ZT[0]}/{ZT[1]}")
    assert entry["status"] == "skipped" and entry["path"] is None and entry["exit_code"] == 7
    assert "connection refused" in entry["stderr"] and "no ztunnel admin API" in entry["note"]


def _restart_admin(lab: Any, netns: str) -> None:
    from ambientlab import ztunnel_admin
    from ambientlab.inpod import _Proc, _wait_ready

    dump = lab.lab.workdir / "config_dump-ambient-worker2.json"
    ns = next(n for n in lab.lab.namespaces.values() if n.name == netns)
    proc = lab.lab.spawn(ns, ztunnel_admin.serve_argv(dump), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=ztunnel_admin.spawn_env())
    _wait_ready(proc, "ztunnel admin")
    lab.procs.setdefault(f"ambient-worker2/pod/{ZT[0]}/{ZT[1]}", []).append(_Proc("admin", proc))
