"""A node with many pods is collected through a Kubernetes exec URL of at most 8 KiB.

The batch that covers a node's netns travels in the exec request line (`command=`
parameters). The API server takes 1 MiB, but nginx in front of it (default
`large_client_header_buffers 4 8k`) and the `websockets` server of the API peer answer a
request line over 8 KiB with 414. With the catalogue of this round (the nft-tables script)
a node of 50 pods with istio-cni's netns names no longer fit in one request: every entry
of a 500 x 50 collection came back `transport-error: HTTP 414`. A batch refused so is now
sent again cut into groups that fit (`BatchingTransport._node_groups`); an API server
reached directly still gets one exec per node.

No network namespace is created: the node answers the two fixed scripts in-process
(`tests/peers/sim_cluster.py`), through the real wire protocol and the unmodified client.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.peers.kube_api import ExecTarget, KubeApi
from tests.peers.sim_cluster import SimNode, sim_cluster

REPO = Path(__file__).resolve().parents[1]
PODS = 120  # above the default max-pods of 110: several groups


def _collect(tmp_path: Path, pods: int, max_request_line: int = 8192,
             ) -> tuple[KubeApi, subprocess.CompletedProcess[str], Path]:
    docs, netns = sim_cluster(1, pods)
    node = SimNode(0, netns["sim-node-0"], b"-A KUBE-SERVICES -j ACCEPT\n" * 20,
                   b"-A ISTIO_OUTPUT -j ACCEPT\n")
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "bundle"
    with KubeApi(docs, {("istio-system", "istio-cni-node-0"): ExecTarget([], respond=node)},
                 enrich=False, max_request_line=max_request_line) as api:
        conf = api.kubeconfig(tmp_path / "kubeconfig", context="peer")
        res = subprocess.run(
            [sys.executable, "-m", "ambientctl", "collect", "--kubeconfig", str(conf),
             "--context", "peer", "-q", "-o", str(out)],
            cwd=REPO, capture_output=True, text=True, timeout=300,
            env={**os.environ, "PYTHONPATH": str(REPO)})
    return api, res, out


def test_a_node_with_more_pods_than_one_exec_url_holds_is_collected_whole(
        tmp_path: Path) -> None:
    api, res, out = _collect(tmp_path, PODS)
    assert res.returncode == 0, res.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    bad = [(e["path"], e["status"], e.get("note")) for e in manifest["entries"]
           if e["status"] != "ok"]
    assert not bad, bad[:5]
    pods = [t for t in manifest["targets"] if t["kind"] == "pod"]
    assert len(pods) == PODS
    # every pod's own outputs, from its own segment of some group
    for t in pods:
        assert (out / t["dir"] / "iptables-save.txt").read_bytes() == \
            b"-A ISTIO_OUTPUT -j ACCEPT\n"
        assert t.get("netns_inode")
    assert api.longest_request_line <= 8192
    # discovery + a few groups (the refused whole batch never reached the server's
    # handler), not one exec per netns (121 of them)
    assert 3 <= api.exec_count <= 10, api.exec_count


def _pod_files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes()
            for p in sorted(out.rglob("*")) if p.is_file() and "/pods/" in p.as_posix()}


def test_an_api_server_reached_directly_gets_one_exec_per_node(tmp_path: Path) -> None:
    direct_api, res, direct = _collect(tmp_path / "direct", PODS, max_request_line=1 << 20)
    assert res.returncode == 0, res.stderr[-2000:]
    assert direct_api.exec_count == 2  # discovery + the node's one batch
    assert direct_api.longest_request_line > 8192
    # the same files, byte for byte, as through the 8 KiB front
    _, res, cut = _collect(tmp_path / "cut", PODS)
    assert res.returncode == 0, res.stderr[-2000:]
    assert _pod_files(direct) == _pod_files(cut)


def test_a_node_whose_batch_fits_one_url_takes_one_exec(tmp_path: Path) -> None:
    api, res, out = _collect(tmp_path, 10)
    assert res.returncode == 0, res.stderr[-2000:]
    assert api.exec_count == 2  # discovery + the node's one batch
