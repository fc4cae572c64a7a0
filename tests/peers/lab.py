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
    with_cni: bool = False,
    lab_targets: dict[str, Any] | None = None,
    cni_host_network: bool = True,
) -> dict[str, dict[str, Any]]:
    """The lab's cluster documents keyed by kind ("pods" -> List), optionally with
    one istio-cni-node pod per node: hostNetwork (Istio < 1.26, or the chart's
    `ambient.shareHostNetworkNamespace: true`), or with `cni_host_network=False` a pod
    of its own netns (the 1.26+ default; `hostNetwork` then absent from the spec, as the
    API server returns a false default)."""
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
                        **({"hostNetwork": True} if cni_host_network else {}),
                        "containers": [
                            {
                                "name": "install-cni",
                                "image": "istio/install-cni:1.15"
                                if cni_host_network
                                else "docker.io/istio/install-cni:1.26.0",
                            }
                        ],
                    },
                    "status": {
                        "phase": "Running",
                        "podIP": ip if cni_host_network else _agent_ip(nodes[node]),
                        "podIPs": [{"ip": ip if cni_host_network else _agent_ip(nodes[node])}],
                        "hostIP": ip,
                    },
                }
            )
    return docs


def _agent_ip(node: dict[str, Any]) -> str:
    """An address of the node's pod CIDR that no lab pod holds (the agent's own netns)."""
    import ipaddress

    net = ipaddress.ip_network(node["spec"]["podCIDR"])
    return str(net[250])


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
