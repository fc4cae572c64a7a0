"""Today's in-pod ambient datapath, emulated in the real kernel from Istio's own goldens.

A kind-like cluster "ambient" (istio-datapath.md §3): two worker nodes on a bridge, pods
wired kindnet/ptp-style, kube-proxy-like Service DNAT on the nodes, and in every ambient
pod's netns exactly what istio-cni installs there (rules of a chosen golden, `ip rule 32764
fwmark 0x111/0xfff lookup 100`, `local default dev lo table 100`) plus an emulated ztunnel
listening INSIDE that netns on [::]:15001/15006/15008 and 127.0.0.1:15053 with SO_MARK
0x539. Each node's own netns gets the probe SNAT (`ISTIO_POSTRT`, 169.254.7.127) and the
probe set with the pod UIDs.

    with InpodLab(variant="redirect", mixed=True) as lab:
        lab.connect("ambient-worker/pod/default/sleep-7b85956664-z6qh7", "10.96.182.142", 9080)
        # Landing(outcome="accepted", netns=".../sleep-...", listener="[::]:15001",
        #         original_dst="10.96.182.142:9080", ...)

Variants: "redirect" (`inpod-iptables/default.golden`, DNS capture on; Istio 1.24 images),
"tproxy" (`istio-1.21.0_default.golden`: TPROXY inbound in mangle; 1.21 images, probe
set `istio-inpod-probes`), "nft" (`inpod-nftables/default.golden` and the nft hostprobe
with nft probe sets; 1.28 images). `mixed=True` adds `legacy/httpbin`, a sidecar pod with
istio-cni's sidecar rules and an emulated Envoy running as uid 1337. `ipv6=True` (redirect,
not mixed) makes the cluster dual-stack: every node/pod also gets its v6 twin (`v6_of`:
fd00:10:244:X::Y in a /64 podCIDR per node, nodes fd00:172:18::N), Services a v6 ClusterIP
(`SERVICE_IPS6`) with ip6tables kube-proxy DNAT, pods `default_ipv6.golden` (v4 + v6, the
real v6 probe address) and nodes `hostprobe_ipv6.golden`; the apps listen on [::].

Topology (`ip netns` names are `<lab id>-<suffix>`, see `ambientlab.netns`):

    kind (bridge "kind") --- ambient-worker  eth0 172.18.0.2/16, pods 10.244.2.0/24
                        \\--- ambient-worker2 eth0 172.18.0.3/16, pods 10.244.1.0/24
    pod eth0 10.244.X.Y/24 <-> node vethXXXXXXXX 10.244.X.1/32, `10.244.X.Y dev veth scope host`

Each node also has its ztunnel pod (istio-system/ztunnel-*, in the node's podCIDR, wired like
the other pods) whose netns serves ztunnel's admin API on 127.0.0.1:15000 with a
`config_dump` derived from the lab's pods (`ambientlab.ztunnel_admin`); `targets()` marks
it `"ztunnel": true`, so `collect --local --targets` reads it.

Faults (`inject`): see `FAULTS`. Everything is torn down by `teardown()` / `with`.
"""

from __future__ import annotations

import hashlib
import json
import os
import selectors
import subprocess
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ambientlab import inpod_rules, kubeproxy_nft, ztunnel_admin
from ambientlab.emulate import Landing
from ambientlab.inpod_emulate import connect_in, send_udp_in
from ambientlab.netns import Lab, LabError, Netns, repo_env
from ambientlab.rules import sep_chain, svc_chain
from ambientlab.topology import ServiceSpec

__all__ = ["FAULTS", "NODES", "PODS", "SERVICES", "VARIANTS", "InpodLab", "Landing"]

VARIANTS = ("redirect", "tproxy", "nft")
ISTIO_TAG = {"redirect": "1.24.0", "tproxy": "1.21.0", "nft": "1.28.0"}
CLUSTER_CIDR = "10.244.0.0/16"
CLUSTER_CIDR6 = "fd00:10:244::/56"  # kind's dual-stack default podSubnet (v6 half)
KUBELET_UID = 1000  # the nft hostprobe golden's kubelet uid (`meta skuid 1000`)
ENVOY_UID = 1337
INPOD_MARK = 0x539
PROBE_SNAT = "169.254.7.127"
PROBE_SNAT6 = inpod_rules.PROBE_SNAT6

FAULTS = {
    "chains-missing-productpage": "productpage's netns lost every Istio rule (istio/istio#61182)",
    "ip-rule-32764-missing": "productpage's `ip rule 32764 fwmark 0x111/0xfff lookup 100` is gone",
    "redirect-15008": "productpage's inbound capture no longer excludes 15008: HBONE is redirected to 15006",
    "probe-ipset-missing-productpage": "productpage's IP is missing from the node's probe set",
    "nft-and-iptables-both": "productpage holds the redirection in both iptables and nftables",
    "sidecar-in-ambient-namespace": "namespace legacy (sidecar httpbin) is labelled for ambient",
    "ztunnel-not-listening-productpage": "no ztunnel listener in productpage's netns (pending)",
}


def _uid(kind: str, ns: str, name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ambientlab-inpod://{kind}/{ns}/{name}"))


def v6_of(ip: str) -> str:
    """The dual-stack twin of a lab IPv4 address: 10.244.X.Y -> fd00:10:244:X::Y (kind's
    v6 podSubnet, one /64 per node), 172.18.0.N -> fd00:172:18::N (the node network). The
    digits are copied as they read, so the two addresses of a pod are easy to pair up."""
    a, b, c, d = ip.split(".")
    if (a, b) == ("10", "244"):
        return f"fd00:10:244:{c}::{d}"
    if (a, b, c) == ("172", "18", "0"):
        return f"fd00:172:18::{d}"
    raise ValueError(f"no IPv6 twin for {ip}")


def _veth(ns: str, name: str) -> str:
    return "veth" + hashlib.sha256(f"inpod/{ns}/{name}".encode()).hexdigest()[:8]


@dataclass(frozen=True)
class NodeDef:
    """One kind worker node."""

    name: str
    suffix: str  # netns suffix
    ip: str
    pod_cidr: str

    @property
    def gateway(self) -> str:
        """The address every host-side pod veth carries (kindnet/ptp)."""
        return self.pod_cidr.rsplit(".", 1)[0] + ".1"

    @property
    def logical(self) -> str:
        """Model id of the node's netns."""
        return f"{self.name}/host"

    @property
    def ip6(self) -> str:
        """The node's IPv6 address on the kind network (dual-stack lab)."""
        return v6_of(self.ip)

    @property
    def pod_cidr6(self) -> str:
        """The node's IPv6 podCIDR, a /64 (kind dual-stack)."""
        return v6_of(self.gateway).rsplit("::", 1)[0] + "::/64"

    @property
    def gateway6(self) -> str:
        """The IPv6 address every host-side pod veth carries (the v4 gateway's twin)."""
        return v6_of(self.gateway)


@dataclass(frozen=True)
class PodDef:
    """One pod and what runs in it."""

    namespace: str
    name: str
    ip: str
    node: str
    app: str
    mode: str  # "ambient" | "sidecar" | "none" | "waypoint" | "gateway" (Envoy, not captured)
    suffix: str
    ports: tuple[int, ...] = ()
    version: str | None = None
    image: str = "curlimages/curl:8.5.0"

    @property
    def uid(self) -> str:
        """Stable pod UID (the probe set comments carry it)."""
        return _uid("pod", self.namespace, self.name)

    @property
    def veth(self) -> str:
        """Host-side veth name."""
        return _veth(self.namespace, self.name)

    @property
    def ip6(self) -> str:
        """The pod's IPv6 address (dual-stack lab)."""
        return v6_of(self.ip)

    @property
    def owner(self) -> str:
        """ReplicaSet name (`name` minus the pod hash)."""
        return self.name.rsplit("-", 1)[0]


NODES = (
    NodeDef("ambient-worker", "w1", "172.18.0.2", "10.244.2.0/24"),
    NodeDef("ambient-worker2", "w2", "172.18.0.3", "10.244.1.0/24"),
)
_BOOKINFO = "docker.io/istio/examples-bookinfo-{}-v1:1.20.2"
PODS = (
    PodDef(
        "default",
        "sleep-7b85956664-z6qh7",
        "10.244.2.4",
        "ambient-worker",
        "sleep",
        "ambient",
        "sleep",
    ),
    PodDef(
        "default",
        "notsleep-6d6c8669b5-pngxg",
        "10.244.2.5",
        "ambient-worker",
        "notsleep",
        "ambient",
        "notsleep",
    ),
    PodDef(
        "default",
        "productpage-v1-7c548b785b-w9zl6",
        "10.244.1.7",
        "ambient-worker2",
        "productpage",
        "ambient",
        "productpage",
        (9080,),
        "v1",
        _BOOKINFO.format("productpage"),
    ),
    PodDef(
        "default",
        "reviews-v1-6494d87c7b-zrpks",
        "10.244.1.4",
        "ambient-worker2",
        "reviews",
        "ambient",
        "reviews",
        (9080,),
        "v1",
        _BOOKINFO.format("reviews"),
    ),
    PodDef(
        "legacy",
        "httpbin-6fcb98998c-k7v2x",
        "10.244.1.10",
        "ambient-worker2",
        "httpbin",
        "sidecar",
        "httpbin",
        (8000,),
        "v1",
        "docker.io/kong/httpbin:0.1.0",
    ),
    PodDef(
        "outside", "curl-5b7d9c7f4-q2wxz", "10.244.2.9", "ambient-worker", "curl", "none", "curl"
    ),
)
ZTUNNELS = (
    PodDef(
        "istio-system", "ztunnel-5kx2v", "10.244.2.3", "ambient-worker", "ztunnel", "none", "zt1"
    ),
    PodDef(
        "istio-system", "ztunnel-8d4fh", "10.244.1.2", "ambient-worker2", "ztunnel", "none", "zt2"
    ),
)
SERVICES = (
    ServiceSpec("productpage", "10.96.182.142", 9080, 9080, "productpage"),
    ServiceSpec("reviews", "10.96.47.113", 9080, 9080, "reviews"),
    ServiceSpec("httpbin", "10.96.20.20", 8000, 8000, "httpbin", namespace="legacy"),
)
# `waypoint=True`: a waypoint (Envoy, `istio.io/dataplane-mode: none`, never captured) on
# ambient-worker taking HBONE on 15008, bound to Service productpage
# (`istio.io/use-waypoint: waypoint`), and an ingress gateway pod (Envoy that speaks HBONE to
# ambient pods itself) in istio-ingress on ambient-worker.
WAYPOINT_PODS = (
    PodDef("default", "waypoint-5f9c8d7b6-x2k4p", "10.244.2.20", "ambient-worker", "waypoint",
           "waypoint", "wp1", (15008,), None, "docker.io/istio/proxyv2:1.24.0"),
    PodDef("istio-ingress", "ingress-gateway-7d9f6c5b4-h8q2n", "10.244.2.21", "ambient-worker",
           "ingress-gateway", "gateway", "gw1", (8080,), None, "docker.io/istio/proxyv2:1.24.0"),
)
WAYPOINT_SERVICES = (ServiceSpec("waypoint", "10.96.200.15", 15008, 15008, "waypoint",
                                 port_name="mesh"),)
# Cluster-object faults of the waypoint (`InpodLab(waypoint=True, waypoint_fault=...)`):
# the kernel is the same, what istiod is told differs.
WAYPOINT_FAULTS = {
    "waypoint-missing": "productpage names waypoint `waypoint`, which does not exist",
    "waypoint-not-ready": "the waypoint's only pod is Pending",
    "waypoint-for-workload": "the waypoint is `istio.io/waypoint-for: workload`, productpage "
                             "binds it as a Service",
}
ZTUNNEL_PORTS = (15001, 15006, 15008)
# Dual-stack ClusterIPs (`spec.clusterIPs[1]`), in kind's v6 serviceSubnet fd00:10:96::/112.
SERVICE_IPS6 = {
    ("default", "productpage"): "fd00:10:96::b6",
    ("default", "reviews"): "fd00:10:96::71",
    ("legacy", "httpbin"): "fd00:10:96::14",
}


def _node(name: str) -> NodeDef:
    return next(n for n in NODES if n.name == name)


def pod_logical(p: PodDef) -> str:
    """Model id of a pod's netns."""
    return f"{p.node}/pod/{p.namespace}/{p.name}"


def kube_proxy_restore(pods: Iterable[PodDef], ipv6: bool = False) -> str:
    """kube-proxy (iptables mode) Service DNAT for SERVICES, as `iptables-restore --noflush` input.

    `ipv6`: the ip6tables half of a dual-stack kube-proxy (`ip6tables-restore` input): the
    same chains (their names hash the service port, not the family), v6 ClusterIPs
    (`SERVICE_IPS6`), `/128` and `[ip]:port` endpoints.
    """
    pods = list(pods)
    cidr, host = (CLUSTER_CIDR6, "/128") if ipv6 else (CLUSTER_CIDR, "/32")

    def pod_ip(p: PodDef) -> str:
        return p.ip6 if ipv6 else p.ip

    def endpoint_of(p: PodDef, port: int) -> str:
        return f"[{p.ip6}]:{port}" if ipv6 else f"{p.ip}:{port}"

    chains = ["KUBE-SERVICES", "KUBE-MARK-MASQ", "KUBE-POSTROUTING", "KIND-MASQ-AGENT"]
    rules: list[str] = []
    for svc in (*SERVICES, *WAYPOINT_SERVICES):
        eps = sorted(
            (p for p in pods if p.app == svc.app and p.namespace == svc.namespace),
            key=lambda p: p.ip,
        )
        if not eps:
            continue
        vip = SERVICE_IPS6[(svc.namespace, svc.name)] if ipv6 else svc.cluster_ip
        name = f"{svc.namespace}/{svc.name}:{svc.port_name}"
        chain = svc_chain(svc)
        chains.append(chain)
        rules.append(
            f'-A KUBE-SERVICES -d {vip}{host} -p tcp -m comment --comment "{name} cluster IP" '
            f"-m tcp --dport {svc.port} -j {chain}"
        )
        rules.append(
            f"-A {chain} ! -s {cidr} -d {vip}{host} -p tcp -m comment --comment "
            f'"{name} cluster IP" -m tcp --dport {svc.port} -j KUBE-MARK-MASQ'
        )
        for i, pod in enumerate(eps):
            endpoint = endpoint_of(pod, svc.target_port)
            sep = sep_chain(svc, endpoint)
            chains.append(sep)
            left = len(eps) - i
            stat = (
                f" -m statistic --mode random --probability {1.0 / left:0.10f}" if left > 1 else ""
            )
            rules.append(f'-A {chain} -m comment --comment "{name} -> {endpoint}"{stat} -j {sep}')
            rules.append(f'-A {sep} -s {pod_ip(pod)}{host} -m comment --comment "{name}" -j KUBE-MARK-MASQ')
            rules.append(
                f'-A {sep} -p tcp -m comment --comment "{name}" -m tcp -j DNAT --to-destination {endpoint}'
            )
    lines = ["*nat", *(f":{c} - [0:0]" for c in chains)]
    lines += [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        '-A POSTROUTING -m addrtype ! --dst-type LOCAL -m comment --comment "kind-masq-agent: ensure nat '
        'POSTROUTING directs all non-LOCAL destination traffic to our custom KIND-MASQ-AGENT chain" -j KIND-MASQ-AGENT',
        f'-A KIND-MASQ-AGENT -d {cidr} -m comment --comment "kind-masq-agent: local traffic is not subject '
        'to MASQUERADE" -j RETURN',
        '-A KIND-MASQ-AGENT -m comment --comment "kind-masq-agent: outbound traffic is subject to MASQUERADE '
        '(must be last in chain)" -j MASQUERADE',
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
        *rules,
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"


SERVICE_CIDR = "10.96.0.0/16"  # kind's serviceSubnet
# kube-proxy nftables mode (`kube_proxy="nftables"`): NodePorts of the lab's Services, and
# one Service that only kube-proxy knows with two endpoints (a numgen fork to replay).
NODE_PORTS = {("default", "productpage"): 30080}
FORK_SERVICE = ("default", "bookinfo-any", "10.96.100.100", 9080, ("productpage", "reviews"))


def kube_proxy_nft(pods: Iterable[PodDef], node_ip: str) -> str:
    """kube-proxy (nftables mode) for SERVICES (+ FORK_SERVICE) on the node `node_ip`, as
    `nft -f` input (NodePorts answer on the node's own address: `nodeport-ips`)."""
    pods = list(pods)
    svcs = []
    for svc in SERVICES:
        eps = sorted((p for p in pods if p.app == svc.app and p.namespace == svc.namespace),
                     key=lambda p: p.ip)
        svcs.append(kubeproxy_nft.KubeProxyService(
            svc.namespace, svc.name, svc.port_name, svc.cluster_ip, svc.port,
            tuple((p.ip, svc.target_port) for p in eps),
            node_port=NODE_PORTS.get((svc.namespace, svc.name))))
    ns, name, vip, port, apps = FORK_SERVICE
    eps = sorted((p for p in pods if p.app in apps and p.namespace == ns), key=lambda p: p.ip)
    svcs.append(kubeproxy_nft.KubeProxyService(ns, name, "http", vip, port,
                                               tuple((p.ip, port) for p in eps)))
    return kubeproxy_nft.ruleset(svcs, cluster_cidr=CLUSTER_CIDR, service_cidr=SERVICE_CIDR,
                                 node_ips=[node_ip])


@dataclass
class _Proc:
    role: str  # "ztunnel" | "app" | "envoy" | "admin" (ztunnel pod's admin API)
    proc: subprocess.Popen[bytes]


@dataclass
class InpodLab:
    """The in-pod lab: build on construction (or `build()`), `teardown()` always."""

    variant: str = "redirect"
    mixed: bool = False
    # False: pods carry `ambient.istio.io/dns-capture: "false"` and the
    # `dns_pod_disabled_and_on_globally` golden (no 15053 rules, no raw table); redirect only.
    dns_capture: bool = True
    # True: dual-stack (see `_wire_ipv6`); redirect variant, DNS capture on, not `mixed`
    # (the only dual-stack in-pod golden is `default_ipv6.golden`; the sidecar golden is v4).
    ipv6: bool = False
    # "iptables" (kube-proxy's iptables mode) or "nftables" (its nftables mode, GA in 1.33:
    # table `ip kube-proxy`, `ambientlab.kubeproxy_nft`); v4 only.
    kube_proxy: str = "iptables"
    waypoint: bool = False  # see WAYPOINT_PODS
    waypoint_fault: str | None = None  # one of WAYPOINT_FAULTS (needs waypoint=True)
    lab: Lab = field(init=False)
    nodes: dict[str, Netns] = field(init=False, default_factory=dict)
    pods: dict[str, Netns] = field(init=False, default_factory=dict)  # logical id -> netns
    faults: list[str] = field(init=False, default_factory=list)
    procs: dict[str, list[_Proc]] = field(
        init=False, default_factory=dict
    )  # logical id -> processes
    _ns_labels: dict[str, dict[str, str]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, not {self.variant!r}")
        if not self.dns_capture and self.variant != "redirect":
            raise ValueError("dns_capture=False exists for the redirect variant only")
        if self.ipv6 and (self.variant != "redirect" or not self.dns_capture or self.mixed):
            raise ValueError("ipv6=True exists for the redirect variant with DNS capture on, "
                             "without mixed (no other dual-stack golden is loaded)")
        if self.kube_proxy not in ("iptables", "nftables"):
            raise ValueError(f"kube_proxy must be iptables or nftables, not {self.kube_proxy!r}")
        if self.kube_proxy == "nftables" and self.ipv6:
            raise ValueError("kube_proxy='nftables' is built for IPv4 only")
        if self.waypoint_fault is not None and (not self.waypoint or
                                                self.waypoint_fault not in WAYPOINT_FAULTS):
            raise ValueError(f"waypoint_fault must be one of {tuple(WAYPOINT_FAULTS)} with "
                             "waypoint=True")
        self.lab = Lab()
        try:
            self._build()
        except BaseException:
            self.lab.teardown()
            raise

    # ------------------------------------------------------------------ context
    def __enter__(self) -> InpodLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def teardown(self) -> None:
        """Kill every emulated process and delete every namespace (idempotent)."""
        self.lab.teardown()

    # ------------------------------------------------------------------ topology
    @property
    def pod_defs(self) -> tuple[PodDef, ...]:
        """Pods of this build (the sidecar pod only when `mixed`)."""
        return tuple(p for p in PODS if self.mixed or p.mode != "sidecar") + \
            (WAYPOINT_PODS if self.waypoint else ())

    def pod(self, name_prefix: str) -> PodDef:
        """A pod by the start of its name ("productpage")."""
        return next(p for p in self.pod_defs if p.name.startswith(name_prefix))

    def netns_names(self) -> dict[str, str]:
        """Every namespace of the lab: logical id -> real netns name (for `KernelTrace`)."""
        out = {node.logical: self.nodes[node.name].name for node in NODES}
        out.update({logical: ns.name for logical, ns in self.pods.items()})
        return out

    def netns_name(self, logical: str) -> str:
        """`ip netns` name of a logical id ("ambient-worker/host", ".../pod/default/sleep-...")."""
        for node in NODES:
            if logical == node.logical:
                return self.nodes[node.name].name
        if logical in self.pods:
            return self.pods[logical].name
        raise KeyError(f"no namespace {logical!r} in this lab")

    def _build(self) -> None:
        lab = self.lab
        bridge = lab.add_netns("kind")
        bridge.ip("link", "add", "kind", "type", "bridge")
        bridge.ip("link", "set", "kind", "up")
        for node in NODES:
            ns = lab.add_netns(node.suffix)
            self.nodes[node.name] = ns
            self._no_dad(ns)
            port = f"veth{node.suffix}"
            bridge.ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns.name)
            bridge.ip("link", "set", port, "master", "kind", "up")
            peer = next(n for n in NODES if n is not node)
            ns.ip_batch(
                [
                    f"addr add {node.ip}/16 dev eth0",
                    "link set eth0 up",
                    f"route add {peer.pod_cidr} via {peer.ip} dev eth0",
                ]
            )
            ns.sysctl([("net.ipv4.ip_forward", 1)])
            if self.ipv6:
                ns.ip_batch([
                    f"addr add {node.ip6}/64 dev eth0 nodad",
                    f"route add {peer.pod_cidr6} via {peer.ip6} dev eth0",
                ])
                ns.sysctl([("net.ipv6.conf.all.forwarding", 1)])
        for pod in (*self.pod_defs, *ZTUNNELS):
            self._add_pod(pod)
        for node in NODES:
            self._node_rules(node)
        for pod in self.pod_defs:
            self._pod_rules(pod)
            self._start_processes(pod)
        self._start_ztunnel_admins()
        self._ns_labels = {
            "default": {"istio.io/dataplane-mode": "ambient"},
            "legacy": {"istio-injection": "enabled"},
            "outside": {},
            "istio-system": {},
        }
        if self.waypoint:
            self._ns_labels["istio-ingress"] = {}

    def _add_pod(self, pod: PodDef) -> None:
        node = _node(pod.node)
        host = self.nodes[node.name]
        ns = self.lab.add_netns(pod.suffix)
        self.pods[pod_logical(pod)] = ns
        self._no_dad(ns)
        host.ip("link", "add", pod.veth, "type", "veth", "peer", "name", "eth0", "netns", ns.name)
        host.ip_batch(
            [
                f"addr add {node.gateway}/32 dev {pod.veth}",
                f"link set {pod.veth} up",
                f"route add {pod.ip} dev {pod.veth} scope host",
            ]
        )
        ns.ip_batch(
            [
                f"addr add {pod.ip}/24 dev eth0",
                "link set eth0 up",
                f"route del {node.pod_cidr} dev eth0",
                f"route add {node.gateway} dev eth0 scope link src {pod.ip}",
                f"route add {node.pod_cidr} via {node.gateway} dev eth0 src {pod.ip}",
                f"route add default via {node.gateway} dev eth0",
            ]
        )
        if self.ipv6:
            # The v4 wiring's twin: the host veth carries the node's v6 gateway (/128) and a
            # host route per pod; the pod reaches everything via that gateway (no on-link /64).
            host.ip_batch([
                f"addr add {node.gateway6}/128 dev {pod.veth} nodad",
                f"route add {pod.ip6} dev {pod.veth}",
            ])
            ns.ip_batch([
                f"addr add {pod.ip6}/64 dev eth0 nodad noprefixroute",
                f"route add {node.gateway6} dev eth0 src {pod.ip6}",
                f"route add {node.pod_cidr6} via {node.gateway6} dev eth0 src {pod.ip6}",
                f"route add ::/0 via {node.gateway6} dev eth0",
            ])

    def _no_dad(self, ns: Netns) -> None:
        """Dual-stack: no duplicate address detection in `ns` (links created from now on),
        so an address is usable at once instead of "tentative" for a second or more."""
        if self.ipv6:
            ns.sysctl([("net.ipv6.conf.all.accept_dad", 0),
                       ("net.ipv6.conf.default.accept_dad", 0)])

    def _ambient_on(self, node: NodeDef, v6: bool = False) -> list[tuple[str, str]]:
        return [(p.ip6 if v6 else p.ip, p.uid) for p in self.pod_defs
                if p.node == node.name and p.mode == "ambient"]

    def _node_rules(self, node: NodeDef) -> None:
        ns = self.nodes[node.name]
        if self.kube_proxy == "nftables":
            ns.exec("nft", "-f", "-", stdin=kube_proxy_nft(self.pod_defs, node.ip))
        else:
            ns.exec("iptables-restore", "--noflush", stdin=kube_proxy_restore(self.pod_defs))
        if self.ipv6:
            ns.exec("ip6tables-restore", "--noflush",
                    stdin=kube_proxy_restore(self.pod_defs, ipv6=True))
            probe = inpod_rules.host_probe_dual_stack(self._ambient_on(node),
                                                      self._ambient_on(node, v6=True))
        else:
            probe = inpod_rules.host_probe(self.variant, self._ambient_on(node))
        inpod_rules.apply(ns.name, probe)

    def _pod_rules(self, pod: PodDef) -> None:
        ns = self.pods[pod_logical(pod)]
        if pod.mode == "ambient":
            rules = self.variant if self.dns_capture else "nodns"
            load = (inpod_rules.pod_ambient_dual_stack() if self.ipv6
                    else inpod_rules.pod_ambient(rules))
            inpod_rules.apply(ns.name, load)
        elif pod.mode == "sidecar":
            inpod_rules.apply(ns.name, inpod_rules.sidecar_cni(pod.ip))

    # ------------------------------------------------------------------ processes
    def ztunnel_specs(self) -> list[str]:
        """ztunnel's in-pod listeners (TPROXY era: the inbound ones are IP_TRANSPARENT)."""
        specs = []
        for port in ZTUNNEL_PORTS:
            transparent = ",transparent" if self.variant == "tproxy" and port != 15001 else ""
            specs.append(f"[::]:{port},mark={INPOD_MARK:#x},reuseport{transparent}")
        specs.append(f"127.0.0.1:15053,mark={INPOD_MARK:#x},reuseport")
        return specs

    def _spawn(
        self, pod: PodDef, role: str, specs: list[str], comm: str, uid: int | None = None,
        udp: tuple[str, ...] = (),
    ) -> None:
        ns = self.pods[pod_logical(pod)]
        argv = [
            sys.executable,
            "-m",
            "ambientlab.inpod_emulate",
            "serve",
            "--id",
            pod_logical(pod),
            "--comm",
            comm,
            "--log",
            str(self.lab.workdir / "landings.jsonl"),
        ]
        if uid is not None:
            argv += ["--uid", str(uid)]
        for s in specs:
            argv += ["--listen", s]
        for s in udp:
            argv += ["--udp", s]
        env = repo_env()
        proc = self.lab.spawn(ns, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        _wait_ready(proc, f"{role} in {pod.name}")
        self.procs.setdefault(pod_logical(pod), []).append(_Proc(role, proc))

    def _start_processes(self, pod: PodDef) -> None:
        if pod.mode == "ambient":
            # ztunnel's DNS proxy also answers UDP on localhost:15053 (istio-datapath.md 3.7).
            self._spawn(pod, "ztunnel", self.ztunnel_specs(), "ztunnel",
                        udp=(f"127.0.0.1:15053,mark={INPOD_MARK:#x}",))
        if pod.mode == "sidecar":
            self._spawn(pod, "envoy", ["0.0.0.0:15001", "0.0.0.0:15006"], "envoy", uid=ENVOY_UID)
        if pod.mode in ("waypoint", "gateway"):
            # The waypoint's / gateway's Envoy (uid 1337) serves HBONE (15008) or HTTP itself.
            self._spawn(pod, "envoy", [f"0.0.0.0:{p}" for p in pod.ports], "envoy",
                        uid=ENVOY_UID)
            return
        if pod.ports:
            # Dual-stack: the app listens on [::] (both families), like ztunnel.
            any_addr = "[::]" if self.ipv6 else "0.0.0.0"
            self._spawn(pod, "app", [f"{any_addr}:{p}" for p in pod.ports], pod.app)

    def _start_ztunnel_admins(self) -> None:
        """Each ztunnel pod's admin API on its own netns's 127.0.0.1:15000, serving the
        config_dump istiod's view of this lab gives (`ambientlab.ztunnel_admin`)."""
        pods = [self._pod_json(p) for p in (*self.pod_defs, *ZTUNNELS)]
        svcs = [self._svc_json(s) for s in self._services()]
        for zt in ZTUNNELS:
            dump = self.lab.workdir / f"config_dump-{zt.node}.json"
            ztunnel_admin.write_dump(dump, ztunnel_admin.config_dump(pods, svcs, zt.node))
            ns = self.pods[pod_logical(zt)]
            argv = ztunnel_admin.serve_argv(dump)
            proc = self.lab.spawn(ns, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=ztunnel_admin.spawn_env())
            _wait_ready(proc, f"ztunnel admin in {zt.name}")
            self.procs.setdefault(pod_logical(zt), []).append(_Proc("admin", proc))

    def stop(self, logical: str, role: str) -> None:
        """Stop one emulated process (e.g. the ztunnel of a pod)."""
        for p in list(self.procs.get(logical, [])):
            if p.role == role:
                self.lab.stop(p.proc)
                self.procs[logical].remove(p)

    # ------------------------------------------------------------------ probing
    def connect(
        self,
        from_ns: str,
        dst_ip: str,
        dst_port: int,
        *,
        src_ip: str | None = None,
        mark: int | None = None,
        uid: int | None = None,
        timeout: float = 2.0,
    ) -> Landing:
        """One TCP connection from a logical namespace; where it landed (see `Landing`)."""
        return connect_in(
            self.netns_name(from_ns),
            dst_ip,
            dst_port,
            src=src_ip,
            mark=mark,
            uid=uid,
            timeout=timeout,
        )

    def collect(self, out_path: str | os.PathLike[str], *extra_args: str
                ) -> subprocess.CompletedProcess[str]:
        """Run `ambientctl collect --local --targets ... --cluster-dir ... -o OUT` (raises on
        failure), as a node operator would: the same entry point as the seed lab's."""
        work = self.lab.workdir
        targets = self.write_targets(work / "targets.json")
        cluster = self.write_cluster(work / "cluster")
        argv = [sys.executable, "-m", "ambientctl", "collect", "--local", "-q",
                "--targets", str(targets), "--cluster-dir", str(cluster), "-o", str(out_path),
                *extra_args]
        env = repo_env()
        res = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env,
                             cwd=str(Path(__file__).resolve().parents[1]), check=False)
        if res.returncode != 0:
            raise LabError(f"collect failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
        return res

    def send_udp(self, from_ns: str, dst_ip: str, dst_port: int, *, timeout: float = 2.0
                 ) -> Landing:
        """One UDP datagram from a logical namespace; which socket answered (see `Landing`)."""
        return send_udp_in(self.netns_name(from_ns), dst_ip, dst_port, timeout=timeout)

    # ------------------------------------------------------------------ faults
    def inject(self, fault: str) -> None:
        """Break the lab the way a real cluster breaks (see `FAULTS`)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        pp = self.pod("productpage")
        pp_id = pod_logical(pp)
        ns = self.pods[pp_id]
        if fault == "chains-missing-productpage":
            if self.variant == "nft":
                for t in ("nat", "mangle", "raw"):
                    ns.exec("nft", "delete", "table", "inet", f"istio-ambient-{t}")
            else:
                for t in ("mangle", "nat", "raw"):
                    ns.exec("iptables", "-t", t, "-F")
                    ns.exec("iptables", "-t", t, "-X")
        elif fault == "ip-rule-32764-missing":
            ns.ip("rule", "del", "pref", "32764")
        elif fault == "redirect-15008":
            self._redirect_15008(ns)
        elif fault == "probe-ipset-missing-productpage":
            host = self.nodes[pp.node]
            if self.variant == "nft":
                host.exec(
                    "nft",
                    "delete",
                    "element",
                    "inet",
                    "istio-ambient-nat",
                    "istio-inpod-probes-v4",
                    f"{{ {pp.ip} }}",
                )
            else:
                name = "istio-inpod-probes" if self.variant == "tproxy" else "istio-inpod-probes-v4"
                host.exec("ipset", "del", name, pp.ip)
        elif fault == "nft-and-iptables-both":
            other = "redirect" if self.variant == "nft" else "nft"
            load = inpod_rules.pod_ambient(other)
            inpod_rules.apply(ns.name, inpod_rules.RuleLoad(iptables=load.iptables, nft=load.nft))
        elif fault == "sidecar-in-ambient-namespace":
            self._ns_labels["legacy"] = {
                **self._ns_labels["legacy"],
                "istio.io/dataplane-mode": "ambient",
            }
        elif fault == "ztunnel-not-listening-productpage":
            self.stop(pp_id, "ztunnel")
        self.faults.append(fault)

    def _redirect_15008(self, ns: Netns) -> None:
        if self.variant == "redirect":
            ns.exec(
                "iptables",
                "-t",
                "nat",
                "-D",
                "ISTIO_PRERT",
                "!",
                "-d",
                "127.0.0.1/32",
                "-p",
                "tcp",
                "!",
                "--dport",
                "15008",
                "-m",
                "mark",
                "!",
                "--mark",
                "0x539/0xfff",
                "-j",
                "REDIRECT",
                "--to-ports",
                "15006",
            )
            ns.exec(
                "iptables",
                "-t",
                "nat",
                "-A",
                "ISTIO_PRERT",
                "!",
                "-d",
                "127.0.0.1/32",
                "-p",
                "tcp",
                "-m",
                "mark",
                "!",
                "--mark",
                "0x539/0xfff",
                "-j",
                "REDIRECT",
                "--to-ports",
                "15006",
            )
        elif self.variant == "tproxy":
            # 1.21: 15008 has its own TPROXY rule; without it, 15008 falls to the 15006 one.
            ns.exec(
                "iptables",
                "-t",
                "mangle",
                "-D",
                "ISTIO_PRERT",
                "-p",
                "tcp",
                "-m",
                "tcp",
                "--dport",
                "15008",
                "-m",
                "mark",
                "!",
                "--mark",
                "0x539/0xfff",
                "-j",
                "TPROXY",
                "--on-port",
                "15008",
                "--tproxy-mark",
                "0x111/0xfff",
            )
        else:
            listing = ns.exec(
                "nft", "-a", "list", "chain", "inet", "istio-ambient-nat", "istio-prerouting"
            ).stdout
            handle = next(
                ln.rsplit("# handle ", 1)[1].strip()
                for ln in listing.splitlines()
                if "dport != 15008" in ln
            )
            ns.exec(
                "nft",
                "replace",
                "rule",
                "inet",
                "istio-ambient-nat",
                "istio-prerouting",
                "handle",
                handle,
                "ip",
                "daddr",
                "!=",
                "127.0.0.1/32",
                "meta",
                "l4proto",
                "tcp",
                "meta",
                "mark",
                "and",
                "0xfff",
                "!=",
                "0x539",
                "counter",
                "redirect",
                "to",
                ":15006",
            )

    # ------------------------------------------------------------------ collection inputs
    def targets(self) -> dict[str, object]:
        """The `--targets` document of `ambientctl collect --local`."""
        nodes = []
        for node in NODES:
            pods = [
                {"namespace": p.namespace, "name": p.name, "netns": self.pods[pod_logical(p)].name}
                for p in self.pod_defs
                if p.node == node.name
            ]
            pods += [
                {
                    "namespace": z.namespace,
                    "name": z.name,
                    "netns": self.pods[pod_logical(z)].name,
                    "ztunnel": True,
                }
                for z in ZTUNNELS
                if z.node == node.name
            ]
            nodes.append(
                {"name": node.name, "host_netns": self.nodes[node.name].name, "pods": pods}
            )
        return {"nodes": nodes}

    def write_targets(self, path: str | Path) -> Path:
        """Write `targets()` as JSON."""
        out = Path(path)
        out.write_text(json.dumps(self.targets(), indent=2) + "\n")
        return out

    def write_cluster(self, directory: str | Path) -> Path:
        """Write pods.json, services.json, namespaces.json, nodes.json (kubectl -o json shape)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        docs = {
            "pods.json": [self._pod_json(p) for p in (*self.pod_defs, *ZTUNNELS)
                          if not (p.mode == "waypoint"
                                  and self.waypoint_fault == "waypoint-missing")],
            "services.json": [self._svc_json(s) for s in self._services()
                              if not (s.app == "waypoint"
                                      and self.waypoint_fault == "waypoint-missing")],
            "namespaces.json": [
                self._ns_json(n) for n in sorted(self._ns_labels) if self.mixed or n != "legacy"
            ],
            "nodes.json": [self._node_json(n) for n in NODES],
        }
        for name, items in docs.items():
            body = {
                "apiVersion": "v1",
                "items": items,
                "kind": "List",
                "metadata": {"resourceVersion": ""},
            }
            (d / name).write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
        return d

    def _services(self) -> list[ServiceSpec]:
        return [s for s in (*SERVICES, *(WAYPOINT_SERVICES if self.waypoint else ()))
                if self.mixed or s.namespace != "legacy"]

    def _image(self, what: str) -> str:
        return f"docker.io/istio/{what}:{ISTIO_TAG[self.variant]}"

    def _pod_json(self, p: PodDef) -> dict[str, object]:
        node = _node(p.node)
        labels = {"app": p.app}
        if p.version:
            labels["version"] = p.version
        annotations: dict[str, str] = {}
        containers = [
            {
                "name": p.app,
                "image": p.image,
                "ports": [{"containerPort": port, "protocol": "TCP"} for port in p.ports],
            }
        ]
        init: list[dict[str, object]] = []
        owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": p.owner, "controller": True}
        if p.app == "ztunnel":
            containers = [
                {
                    "name": "istio-proxy",
                    "image": self._image("ztunnel"),
                    "ports": [{"containerPort": 15020, "name": "ztunnel-stats", "protocol": "TCP"}],
                }
            ]
            labels = {"app": "ztunnel", "sidecar.istio.io/inject": "false"}
            owner = {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "name": "ztunnel",
                "controller": True,
            }
        elif p.mode == "waypoint":
            # Istio's waypoint template: Gateway name, the mesh controller, and never captured.
            labels = {"gateway.networking.k8s.io/gateway-name": p.app,
                      "gateway.istio.io/managed": "istio.io-mesh-controller",
                      "istio.io/dataplane-mode": "none"}
        elif p.mode == "gateway":
            labels = {"gateway.networking.k8s.io/gateway-name": p.app,
                      "gateway.istio.io/managed": "istio.io-gateway-controller",
                      "istio": "ingressgateway", "istio.io/dataplane-mode": "none"}
        elif p.mode == "ambient":
            annotations["ambient.istio.io/redirection"] = "enabled"
            if not self.dns_capture:
                annotations["ambient.istio.io/dns-capture"] = "false"
        elif p.mode == "sidecar":
            annotations["sidecar.istio.io/status"] = json.dumps(
                {
                    "initContainers": ["istio-validation"],
                    "containers": ["istio-proxy"],
                    "volumes": [
                        "workload-socket",
                        "credential-socket",
                        "workload-certs",
                        "istio-envoy",
                        "istio-data",
                        "istio-podinfo",
                        "istio-token",
                        "istiod-ca-cert",
                    ],
                    "imagePullSecrets": None,
                    "revision": "default",
                },
                separators=(",", ":"),
            )
            labels["security.istio.io/tlsMode"] = "istio"
            containers.append(
                {
                    "name": "istio-proxy",
                    "image": self._image("proxyv2"),
                    "ports": [
                        {"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}
                    ],
                }
            )
            init.append({"name": "istio-validation", "image": self._image("proxyv2")})
        spec: dict[str, object] = {
            "nodeName": p.node,
            "containers": containers,
            "hostNetwork": False,
        }
        if init:
            spec["initContainers"] = init
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": p.name,
                "namespace": p.namespace,
                "uid": p.uid,
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": [owner],
            },
            "spec": spec,
            "status": {
                "phase": "Pending" if (p.mode == "waypoint"
                                       and self.waypoint_fault == "waypoint-not-ready")
                else "Running",
                "hostIP": node.ip,
                "podIP": p.ip,
                "podIPs": [{"ip": p.ip}, *([{"ip": p.ip6}] if self.ipv6 else [])],
            },
        }

    def _svc_json(self, s: ServiceSpec) -> dict[str, object]:
        # Dual-stack Services (ipFamilyPolicy PreferDualStack): the v6 ClusterIP second.
        ips = [s.cluster_ip, *([SERVICE_IPS6[(s.namespace, s.name)]] if self.ipv6 else [])]
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": s.name,
                "namespace": s.namespace,
                "uid": _uid("service", s.namespace, s.name),
                "labels": self._svc_labels(s),
            },
            "spec": {
                "type": "ClusterIP",
                "clusterIP": s.cluster_ip,
                "clusterIPs": ips,
                "ports": [
                    {
                        "name": s.port_name,
                        "port": s.port,
                        "protocol": "TCP",
                        "targetPort": s.target_port,
                    }
                ],
                "selector": {"app": s.app},
            },
        }

    def _svc_labels(self, s: ServiceSpec) -> dict[str, str]:
        labels = {"app": s.app, "service": s.name}
        if self.waypoint and s.name == "productpage":
            labels["istio.io/use-waypoint"] = "waypoint"
        if s.app == "waypoint":
            labels["gateway.networking.k8s.io/gateway-name"] = "waypoint"
            labels["istio.io/waypoint-for"] = (
                "workload" if self.waypoint_fault == "waypoint-for-workload" else "service")
        return labels

    def _ns_json(self, name: str) -> dict[str, object]:
        labels = {"kubernetes.io/metadata.name": name, **self._ns_labels[name]}
        return {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": labels},
            "status": {"phase": "Active"},
        }

    def _node_json(self, n: NodeDef) -> dict[str, object]:
        cidrs = [n.pod_cidr, *([n.pod_cidr6] if self.ipv6 else [])]
        internal = [n.ip, *([n.ip6] if self.ipv6 else [])]
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": n.name, "labels": {"kubernetes.io/hostname": n.name}},
            "spec": {"podCIDR": n.pod_cidr, "podCIDRs": cidrs},
            "status": {
                "addresses": [
                    *({"type": "InternalIP", "address": a} for a in internal),
                    {"type": "Hostname", "address": n.name},
                ]
            },
        }


def _wait_ready(proc: subprocess.Popen[bytes], what: str, timeout: float = 10.0) -> None:
    """Wait for the emulator's "ready" line; raise with its stderr if it died."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if sel.select(timeout) and proc.stdout.readline().strip() == b"ready":
            return
    finally:
        sel.close()
    err = b""
    if proc.poll() is not None and proc.stderr is not None:
        err = proc.stderr.read()
    raise LabError(f"{what} did not start: {err.decode(errors='replace').strip()[-500:]}")
