"""End to end: the seed lab collected through each live transport (docker SDK -> Engine
API peer, kubernetes client -> API peer, paramiko -> real sshd) gives the same bundle
files, the same parsed facts and the same trace as `collect --local`."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from ambientctl.bundle.reader import open_bundle
from ambientctl.collectors.live import LiveOptions, collect_live
from ambientctl.loading import load_snapshot

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[1]
SKIP_FIELDS = {"source", "tokenizer", "prebuilt", "header", "manifest", "problems"}
EXTRA_PODS = ("istio-cni-node-",)  # the kube peer's emulated istio-cni pods (not in the lab)

pytest_plugins = ["tests.peers.fixtures"]


def facts(obj: Any) -> Any:
    """A comparable view of a parsed model: no SourceRefs, no callables.

    A link's peer namespace is compared as "elsewhere or not": `ip` prints
    `link-netns NAME` only when the peer netns is listed in the /var/run/netns it sees,
    else `link-netnsid N`. `collect --local` sees every lab namespace by name; inside a
    node (kind, ssh) - as on a real node - the node's own netns and the docker bridge's
    are not listed, so the same fact comes out as a netnsid.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {
            f.name: facts(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if f.name not in SKIP_FIELDS
        }
        if "link_netnsid" in out and "link_netns" in out:
            out["peer_elsewhere"] = (
                out.pop("link_netnsid") is not None or out.pop("link_netns") is not None
            )
            out.pop("link_netns", None)
        return out
    if isinstance(obj, Mapping):
        return {str(k): facts(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [facts(x) for x in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(str(x) for x in obj)
    return obj if isinstance(obj, (int, float, bool, type(None))) else str(obj)


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two `facts` trees differ (first few), for a readable assertion."""
    if type(a) is not type(b):
        return [f"{path}: {a!r:.120} != {b!r:.120}"]
    if isinstance(a, dict):
        out = [f"{path}/{k}: only on one side" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            out += differences(a[k], b[k], f"{path}/{k}")
        return out[:10]
    if isinstance(a, list):
        out = [f"{path}: {len(a)} items != {len(b)}"] if len(a) != len(b) else []
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            out += differences(x, y, f"{path}[{i}]")
        return out[:10]
    return [] if a == b else [f"{path}: {a!r:.120} != {b!r:.120}"]


def without_cluster_lines(doc: Any) -> Any:
    """Evidence in cluster/*.json keeps its path, not its line: the bundle contract lets
    cluster files be any projection of the API objects (the lab writes its own)."""
    if isinstance(doc, dict):
        if str(doc.get("path", "")).startswith("cluster/"):
            return {k: v for k, v in doc.items() if k not in ("line", "text")}
        return {k: without_cluster_lines(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [without_cluster_lines(x) for x in doc]
    return doc


VOLATILE_SYSCTLS = {
    "net.netfilter.nf_conntrack_count"
}  # a live counter (the ssh session's own flow)


def snapshot_facts(path: str) -> dict[str, Any]:
    snap = load_snapshot(path)
    cluster = facts(snap.cluster)
    cluster["pods"] = [p for p in cluster["pods"] if not p["name"].startswith(EXTRA_PODS)]
    nodes = facts(snap.nodes)
    for node in nodes.values():
        for ns in [node["host"], *node["pods"].values()]:
            for name in VOLATILE_SYSCTLS:
                (ns.get("sysctls") or {}).pop(name, None)
    return {"cluster": cluster, "nodes": nodes}


@pytest.fixture(scope="module")
def local_bundle(seed_lab: Any, peer_dir: Path, sshd_nodes: Any) -> str:
    # After the sshds started: they listen on each node's loopback, as sshd does on a
    # real node, and both collections must see the same listeners.
    out = peer_dir / "local"
    res = seed_lab.collect(str(out))
    assert res.returncode == 0, res.stderr
    return str(out)


@pytest.fixture(scope="module")
def live_bundles(
    docker_peer: Any, kube_peer: Any, sshd_nodes: Any, peer_dir: Path
) -> dict[str, str]:
    kubeconfig = str(peer_dir / "kubeconfig")
    spec = ",".join(f"{node}=root@127.0.0.1:{s.port}" for node, s in sorted(sshd_nodes.items()))
    sources = {
        "docker": LiveOptions(
            kind="ambient", docker_host=docker_peer.base_url, kubeconfig=kubeconfig, context="peer"
        ),
        "kube": LiveOptions(kubeconfig=kubeconfig, context="peer", cni_netns_dir="/var/run/netns"),
        "ssh": LiveOptions(
            ssh=spec,
            ssh_key=str(peer_dir / "id_client"),
            ssh_known_hosts=str(peer_dir / "known_hosts"),
            kubeconfig=kubeconfig,
        ),
    }
    out = {}
    for name, opts in sources.items():
        path = str(peer_dir / f"{name}.tar.gz")
        before = {"docker": docker_peer.exec_count, "kube": kube_peer.exec_count}.get(name)
        written = collect_live(opts, path)
        assert not written.failed, written.failed
        out[name] = path
        if before is not None:
            after = {"docker": docker_peer.exec_count, "kube": kube_peer.exec_count}[name]
            ROUND_TRIPS[name] = after - before
    return out


ROUND_TRIPS: dict[str, int] = {}  # exec round trips each live collection made (peers count)


@pytest.mark.parametrize("transport", ["docker", "kube"])
def test_one_exec_round_trip_per_node_covers_its_own_and_every_pod_netns(
    transport: str, live_bundles: dict[str, str], seed_lab: Any
) -> None:
    """issue 12: per node, one discovery exec and ONE batch for the node's netns and all
    its pods' (whatever the pod count); kind reads each ztunnel's config_dump with one
    more exec (curl inside its netns), Kubernetes through port-forward (no exec)."""
    nodes = seed_lab.targets()["nodes"]
    assert sum(len(n["pods"]) for n in nodes) > 2 * len(nodes)  # batching is what keeps it
    manifest = open_bundle(live_bundles[transport]).manifest
    ztunnels = sum(1 for t in manifest["targets"] if t["kind"] == "ztunnel")
    admin_execs = ztunnels if transport == "docker" else 0
    assert ROUND_TRIPS[transport] == 2 * len(nodes) + admin_execs


@pytest.mark.parametrize("transport", ["docker", "kube", "ssh"])
def test_live_bundle_holds_the_same_files_as_collect_local(
    transport: str, local_bundle: str, live_bundles: dict[str, str]
) -> None:
    local, live = open_bundle(local_bundle), open_bundle(live_bundles[transport])
    assert set(live.paths()) == set(local.paths())
    manifest = live.manifest
    assert manifest is not None and manifest["partial"] is False
    assert {e["transport"] for e in manifest["entries"] if e["target"] != "cluster"} == {transport}
    assert manifest["collection"]["mode"] == {"docker": "kind"}.get(transport, transport)


@pytest.mark.parametrize("transport", ["docker", "kube", "ssh"])
def test_live_bundle_parses_to_the_same_facts_as_collect_local(
    transport: str, local_bundle: str, live_bundles: dict[str, str]
) -> None:
    local, live = snapshot_facts(local_bundle), snapshot_facts(live_bundles[transport])
    assert not differences(local, live), differences(local, live)


@pytest.mark.parametrize("transport", ["docker", "kube", "ssh"])
def test_live_bundle_traces_like_collect_local(
    transport: str, local_bundle: str, live_bundles: dict[str, str]
) -> None:
    try:
        import ambientctl.analyzers.trace  # noqa: F401
    except ImportError:
        pytest.skip("ambientctl.analyzers.trace (the lead's trace engine) does not exist yet")

    def trace(bundle: str) -> dict[str, Any]:
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "ambientctl",
                "trace",
                "sleep",
                "productpage",
                "--bundle",
                bundle,
                "-o",
                "json",
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
            check=False,
        )
        assert res.returncode in (0, 1), res.stderr
        doc = json.loads(res.stdout)
        doc.pop("bundle")
        return without_cluster_lines(doc)

    expected = trace(local_bundle)
    assert expected["legs"], expected
    assert trace(live_bundles[transport]) == expected


def test_trace_collects_live_through_the_source_options(
    local_bundle: str, docker_peer: Any, kube_peer: Any, peer_dir: Path
) -> None:
    try:
        import ambientctl.analyzers.trace  # noqa: F401
    except ImportError:
        pytest.skip("ambientctl.analyzers.trace (the lead's trace engine) does not exist yet")
    env = dict(
        os.environ, DOCKER_HOST=docker_peer.base_url, KUBECONFIG=str(peer_dir / "kubeconfig")
    )
    common = [sys.executable, "-m", "ambientctl", "trace", "sleep", "productpage", "-o", "json"]
    live = subprocess.run(
        [*common, "--kind", "ambient", "--context", "peer"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
        check=False,
    )
    replay = subprocess.run(
        [*common, "--bundle", local_bundle],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
        check=False,
    )
    assert live.returncode == replay.returncode, live.stderr
    a, b = json.loads(live.stdout), json.loads(replay.stdout)
    assert a.pop("bundle") != b.pop("bundle")  # a temporary bundle, removed at exit
    assert without_cluster_lines(a) == without_cluster_lines(b)


def test_no_reachable_cluster_is_one_line_pointing_at_the_example(tmp_path: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")
    }
    env["HOME"] = str(tmp_path)
    res = subprocess.run(
        [sys.executable, "-m", "ambientctl", "trace", "sleep", "productpage"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
        check=False,
    )
    assert res.returncode == 3 and res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: no cluster reachable")
    assert lines[1] == "hint: replay a bundle instead: --bundle example:seed-kind-ambient"


@pytest.mark.parametrize("transport", ["docker", "kube", "ssh"])
def test_every_live_target_records_the_inode_of_the_netns_it_was_read_from(
    transport: str, live_bundles: dict[str, str], seed_lab: Any
) -> None:
    """The batch reads `readlink /proc/self/ns/net` where its commands run: the inode
    must be the kernel's for the lab netns that target stands for."""
    want: dict[str, int] = {}
    for node in seed_lab.targets()["nodes"]:
        want[f"node/{node['name']}"] = os.stat(f"/var/run/netns/{node['host_netns']}").st_ino
        for pod in node["pods"]:
            ino = os.stat(f"/var/run/netns/{pod['netns']}").st_ino
            want[f"pod/{pod['namespace']}/{pod['name']}"] = ino
    manifest = open_bundle(live_bundles[transport]).manifest
    checked = 0
    for t in manifest["targets"]:
        if t["kind"] in ("node", "pod"):
            assert t["netns_inode"] == want[t["id"]], t["id"]
            checked += 1
    assert checked == len(want)
    assert "netns_conflicts" not in manifest["collection"]
