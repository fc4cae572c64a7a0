"""Helpers that describe the seed lab to the test peers (no fixtures: see fixtures.py).

Kept apart from `fixtures.py` so that test modules can import these while pytest loads
`fixtures.py` itself as a plugin (`pytest_plugins = ["tests.peers.fixtures"]`).
"""

from __future__ import annotations

import copy
from typing import Any

from tests.peers.kube_api import ExecTarget
from tests.peers.netns import NodeView


def lab_cluster(
    with_cni: bool = False, lab_targets: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """The lab's cluster documents keyed by kind ("pods" -> List), optionally with
    one hostNetwork istio-cni-node pod per node."""
    from ambientlab import cluster

    docs = {
        name.removesuffix(".json"): copy.deepcopy(doc) for name, doc in cluster.documents().items()
    }
    if with_cni:
        nodes = {n["metadata"]["name"]: n for n in docs["nodes"]["items"]}
        for i, node in enumerate(sorted(nodes)):
            ip = next(
                a["address"]
                for a in nodes[node]["status"]["addresses"]
                if a["type"] == "InternalIP"
            )
            docs["pods"]["items"].append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"istio-cni-node-{i}x{i}x{i}",
                        "namespace": "istio-system",
                        "labels": {"k8s-app": "istio-cni-node"},
                        "uid": f"00000000-0000-4000-8000-00000000000{i}",
                    },
                    "spec": {
                        "nodeName": node,
                        "hostNetwork": True,
                        "containers": [{"name": "install-cni", "image": "istio/install-cni:1.15"}],
                    },
                    "status": {
                        "phase": "Running",
                        "podIP": ip,
                        "podIPs": [{"ip": ip}],
                        "hostIP": ip,
                    },
                }
            )
    return docs


def cni_pod_names(docs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """node -> name of its emulated istio-cni pod."""
    return {
        p["spec"]["nodeName"]: p["metadata"]["name"]
        for p in docs["pods"]["items"]
        if p["metadata"]["name"].startswith("istio-cni-node-")
    }


def kube_exec_targets(
    lab: Any,
    views: dict[str, NodeView],
    docs: dict[str, dict[str, Any]],
    ztunnel_binaries: frozenset[str] | None = None,
) -> dict[tuple[str, str], ExecTarget]:
    """Where exec into each lab pod (and each emulated istio-cni pod) lands."""
    targets: dict[tuple[str, str], ExecTarget] = {}
    for node in lab.targets()["nodes"]:
        for pod in node["pods"]:
            binaries = ztunnel_binaries if pod["name"].startswith("ztunnel-") else None
            targets[(pod["namespace"], pod["name"])] = ExecTarget(
                ["ip", "netns", "exec", pod["netns"]], binaries
            )
    for node, name in cni_pod_names(docs).items():
        targets[("istio-system", name)] = ExecTarget(views[node].prefix())
    return targets
