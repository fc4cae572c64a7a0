"""A simulated cluster for the Kubernetes API peer: many nodes and pods, no namespaces.

`sim_cluster` builds the API objects (nodes, each with a hostNetwork istio-cni pod, app
pods, optionally a ztunnel pod); `SimNode` answers ambientctl's two fixed scripts on a
node (`batch.DISCOVERY_SCRIPT`, `batch.SCRIPT`) in-process, framed as the node's `sh`
frames them; `SimZtunnel` answers ztunnel's admin `config_dump` through port-forward.
Used by `benchmarks/bench_collect.py scale` and by tests that need a node with more pods
than network namespaces are worth creating (tests/test_collect_large_node.py).
"""

from __future__ import annotations

import json
from typing import Any


def netns_name(node: int, pod: int | str) -> str:
    """A netns name of the shape istio-cni's runtime gives (`cni-` + a UUID, 40 chars):
    the exec argv's length depends on it."""
    tail = f"{pod:012x}" if isinstance(pod, int) else pod.rjust(12, "0")
    return f"cni-{node:08x}-0000-4000-8000-{tail}"


class SimNode:
    """One simulated node behind its istio-cni pod: answers ambientctl's two fixed
    scripts (discovery, batch) in-process, framed exactly as the node's `sh` frames them
    (`batch.DISCOVERY_SCRIPT` / `batch.SCRIPT`), with outputs of realistic size. The
    commands' own cost on a node is not ours to measure here (it is per command and
    known per transport); what is measured is the collector: round trips, API paging,
    framing, spill, memory."""

    def __init__(self, index: int, pods: list[tuple[str, str]], host: bytes, pod: bytes) -> None:
        self.index, self.pods, self.host, self.pod = index, pods, host, pod
        self._numbers = {name: i + 1 for i, (name, _ip) in enumerate(pods)}  # 0: the node

    def _inode(self, token: str) -> int:
        """The netns inode a token's netns has: one per netns, the same in every exec
        (the collector refuses two targets read from one netns)."""
        # `@NAME`, or `%PATH` ending in the name (the node's own netns: `=`, 0)
        name = token[1:].rsplit("/", 1)[-1]
        return 4026530000 + self.index * 100_000 + self._numbers.get(name, 0)

    def __call__(self, argv: list[str]) -> tuple[bytes, bytes, int]:
        from ambientctl.collectors.batch import DISCOVERY_SCRIPT, SCRIPT

        nonce = argv[4]
        if argv[2] == DISCOVERY_SCRIPT:
            out = bytearray()
            for name, ip in self.pods:
                addr = json.dumps([{"ifname": "eth0", "addr_info": [{"local": ip}]}])
                out += f"{nonce} N {name}\n{addr}\n{nonce} E 0\n".encode()
            return bytes(out), b"", 0
        assert argv[2] == SCRIPT
        out, err = bytearray(f"{nonce} I net:[{4026530000 + self.index}]\n".encode()), bytearray()
        from ambientctl.collectors.batch import INDEX, KIND_TOKENS, batch_for
        from ambientctl.collectors.specs import VERSION_SPECS

        kinds = {tok: [str(INDEX[a]) for a in batch_for(kind)] for kind, tok in KIND_TOKENS.items()}
        # a tool's version is one short line, not a ruleset
        versions = {str(INDEX[v.argv]): f"{v.tool} v1.0\n".encode() for v in VERSION_SPECS}
        tokens = [x for token in argv[6:] for x in kinds.get(token, [token])]
        body = self.host
        for token in tokens:
            if token[0] in "=@%":
                body = self.host if token == "=" else self.pod
                inode = self._inode(token)
                out += f"{nonce} S {token} net:[{inode}]\n".encode()
                err += f"{nonce} S {token}\n".encode()
            elif token.isdigit():
                out += f"{nonce} B {token}\n".encode() + versions.get(token, body)
                out += f"\n{nonce} E {token} 0 1 0 1000000\n".encode()
                err += f"{nonce} B {token}\n\n{nonce} E {token}\n".encode()
        return bytes(out), bytes(err), 0


class SimZtunnel:
    """Every simulated ztunnel's admin listener: `GET /config_dump` answers the cluster's
    workloads (the same bytes on every node, built once) and the node's own
    `workloadState`, pretty-printed as ztunnel prints it."""

    def __init__(self, nodes: int, pods: int) -> None:
        self.pods = pods
        rows = []
        for n in range(nodes):
            for p in range(pods):
                ip = f"10.{64 + n // 256}.{n % 256}.{p + 2}"
                rows.append({
                    "uid": f"Kubernetes//Pod/bench/app-{n}-{p}", "workloadIps": [ip],
                    "protocol": "HBONE", "name": f"app-{n}-{p}", "namespace": "bench",
                    "trustDomain": "cluster.local", "serviceAccount": "default",
                    "workloadName": "app", "workloadType": "deployment",
                    "canonicalName": "app", "canonicalRevision": "latest",
                    "node": f"sim-node-{n}", "status": "Healthy", "clusterId": "Kubernetes",
                    "authorizationPolicies": [], "services": {}})
        self.workloads = json.dumps(rows, indent=2).replace("\n", "\n  ").encode()

    def answer(self, n: int) -> bytes:
        state = {f"uid-{n}-{p}": {"info": {"name": f"app-{n}-{p}", "namespace": "bench",
                                            "serviceAccount": "default"},
                                   "state": "Up", "connections": {"inbound": [], "outbound": []}}
                 for p in range(self.pods)}
        body = b"".join([b'{\n  "workloads": ', self.workloads,
                         b',\n  "services": [],\n  "policies": [],\n  "certificates": [],'
                         b'\n  "workloadState": ',
                         json.dumps(state, indent=2).replace("\n", "\n  ").encode(), b"\n}"])
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        return head + body


def sim_cluster(nodes: int, pods: int, *, ztunnel: bool = False,
                 ) -> tuple[dict[str, Any], dict[str, list[tuple[str, str]]]]:
    """API objects: `nodes` nodes, each with an istio-cni pod (hostNetwork) and `pods`
    app pods (unique IPs), and with `ztunnel` a ztunnel pod (address .1 of the node's
    pod CIDR); the netns names the simulated nodes list, per node."""
    items, node_items, netns = [], [], {}
    for n in range(nodes):
        node = f"sim-node-{n}"
        node_items.append({"metadata": {"name": node},
                           "spec": {"podCIDR": f"10.{64 + n // 256}.{n % 256}.0/24"},
                           "status": {"addresses": [{"type": "InternalIP",
                                                     "address": f"172.31.{n // 256}.{n % 256}"}]}})
        items.append({
            "metadata": {"name": f"istio-cni-node-{n}", "namespace": "istio-system",
                         "uid": f"cni-{n}", "labels": {"k8s-app": "istio-cni-node"}},
            "spec": {"nodeName": node, "hostNetwork": True,
                     "containers": [{"name": "install-cni", "image": "istio/install-cni"}]},
            "status": {"phase": "Running", "podIP": f"172.31.{n // 256}.{n % 256}"},
        })
        netns[node] = []
        if ztunnel:
            zt_ip = f"10.{64 + n // 256}.{n % 256}.1"
            items.append({
                "metadata": {"name": f"ztunnel-{n}", "namespace": "istio-system",
                             "uid": f"zt-{n}", "labels": {"app": "ztunnel"}},
                "spec": {"nodeName": node, "containers": [{"name": "istio-proxy",
                                                           "image": "istio/ztunnel"}]},
                "status": {"phase": "Running", "podIP": zt_ip, "podIPs": [{"ip": zt_ip}]},
            })
            netns[node].append((netns_name(n, "zt"), zt_ip))
        for p in range(pods):
            ip = f"10.{64 + n // 256}.{n % 256}.{p + 2}"
            items.append({
                "metadata": {"name": f"app-{n}-{p}", "namespace": "bench", "uid": f"uid-{n}-{p}"},
                "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app"}]},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
            })
            netns[node].append((netns_name(n, p), ip))

    def lst(xs: list) -> dict:
        return {"apiVersion": "v1", "kind": "List", "items": xs}

    docs = {"nodes": lst(node_items), "pods": lst(items), "services": lst([]),
            "namespaces": lst([{"metadata": {"name": "bench"}}, {"metadata": {"name": "istio-system"}}]),
            "endpointslices": lst([])}
    return docs, netns
