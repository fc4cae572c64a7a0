"""The seed's cluster as data: two kind worker nodes, bookinfo + sleep, two ztunnels.

Names, IPs, UIDs and veth names are the seed's (`shared/seed/000_6ed5710dbf089bea.txt`,
a 2022 kind cluster) where it gives them; everything else is derived deterministically
(`_uid`, `_veth`, `_mac`) so that two builds of the lab look the same.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field

ZTUNNEL_IMAGE = "gcr.io/istio-testing/ztunnel:0.0.0-ambient.191fe680b52c1754ee72a06b3e0d3f9d116f2e82"
BOOKINFO_IMAGE = "docker.io/istio/examples-bookinfo-{app}-{version}:1.17.0"
SLEEP_IMAGE = "curlimages/curl"

# Fixed well-known values of the legacy design (istio-datapath.md §2.2).
INBOUND_TUN, OUTBOUND_TUN = "istioin", "istioout"
INBOUND_TUN_HOST, INBOUND_TUN_ZTUNNEL = "192.168.126.1", "192.168.126.2"
OUTBOUND_TUN_HOST, OUTBOUND_TUN_ZTUNNEL = "192.168.127.1", "192.168.127.2"
TUN_PREFIX = 30
GENEVE_DPORT = 6081
IPSET = "ztunnel-pods-ips"
CLUSTER_CIDR = "10.244.0.0/16"
KIND_BRIDGE_IP = "172.18.0.1"
KIND_PREFIX = 16


def _uid(kind: str, namespace: str, name: str) -> str:
    """A uuid-looking, stable UID for objects the seed gives none for."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ambientlab://{kind}/{namespace}/{name}"))


def _veth(namespace: str, name: str) -> str:
    """kind/ptp host veth name: `veth` + 8 hex digits (stable here, random in kind)."""
    return "veth" + hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:8]


def _mac(seed: str) -> str:
    """A stable, locally administered unicast MAC."""
    b = bytearray(hashlib.sha256(seed.encode()).digest()[:6])
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


@dataclass(frozen=True)
class PodSpec:
    """One pod: identity, placement, network, and what runs in it."""

    namespace: str
    name: str
    ip: str
    app: str
    owner_kind: str  # ReplicaSet | DaemonSet
    owner_name: str
    image: str
    version: str | None = None
    ports: tuple[int, ...] = ()  # container ports
    uid: str | None = None
    veth: str | None = None  # host-side veth name
    eth0_mac: str | None = None
    ztunnel: bool = False
    comm: str | None = None  # process name of the emulated listener

    @property
    def pod_uid(self) -> str:
        """The seed's UID when it gives one, else a stable derived one."""
        return self.uid or _uid("pod", self.namespace, self.name)

    @property
    def host_veth(self) -> str:
        """The node-side veth of this pod."""
        return self.veth or _veth(self.namespace, self.name)

    @property
    def mac(self) -> str:
        """MAC of the pod's eth0."""
        return self.eth0_mac or _mac(f"{self.namespace}/{self.name}/eth0")

    @property
    def ambient(self) -> bool:
        """Enrolled in the mesh: default namespace (labelled ambient), not ztunnel itself."""
        return not self.ztunnel and self.namespace == "default"

    @property
    def labels(self) -> dict[str, str]:
        """Pod labels as the Deployment/DaemonSet templates set them."""
        labels = {"app": self.app}
        if self.version:
            labels["version"] = self.version
        if self.owner_kind == "ReplicaSet":
            labels["pod-template-hash"] = self.owner_name.rsplit("-", 1)[1]
        else:
            labels["controller-revision-hash"] = "5c9b8d5d4f"
            labels["pod-template-generation"] = "1"
            labels["sidecar.istio.io/inject"] = "false"
        return labels


@dataclass(frozen=True)
class NodeSpec:
    """One kind worker node (a docker container on the `kind` bridge in real life)."""

    name: str
    ip: str  # eth0 on the kind network
    pod_cidr: str
    pods: tuple[PodSpec, ...]
    peer_cidr: str
    peer_ip: str
    eth0_mac: str
    istioout_mac: str | None = None
    extra_macs: dict[str, str] = field(default_factory=dict)

    @property
    def host_ip(self) -> str:
        """Istio's HOST_IP: the node's address inside its podCIDR (the pods' gateway)."""
        return self.pod_cidr.rsplit(".", 1)[0] + ".1"

    @property
    def ztunnel(self) -> PodSpec:
        """This node's ztunnel pod."""
        return next(p for p in self.pods if p.ztunnel)

    @property
    def apps(self) -> tuple[PodSpec, ...]:
        """Every pod but ztunnel."""
        return tuple(p for p in self.pods if not p.ztunnel)

    def logical_host(self) -> str:
        """The model's id of this node's own netns."""
        return f"{self.name}/host"

    def logical_pod(self, pod: PodSpec) -> str:
        """The model's id of a pod's netns."""
        return f"{self.name}/pod/{pod.namespace}/{pod.name}"


def _bookinfo(name: str, ip: str, app: str, version: str, comm: str, uid: str | None = None) -> PodSpec:
    return PodSpec(
        namespace="default",
        name=name,
        ip=ip,
        app=app,
        version=version,
        owner_kind="ReplicaSet",
        owner_name=name.rsplit("-", 1)[0],
        image=BOOKINFO_IMAGE.format(app=app, version=version),
        ports=(9080,),
        uid=uid,
        comm=comm,
    )


WORKER = NodeSpec(
    name="ambient-worker",
    ip="172.18.0.2",
    pod_cidr="10.244.2.0/24",
    peer_cidr="10.244.1.0/24",
    peer_ip="172.18.0.3",
    eth0_mac="02:42:ac:12:00:02",  # docker derives it from the IP
    pods=(
        PodSpec("default", "sleep-7b85956664-z6qh7", "10.244.2.4", "sleep", "ReplicaSet",
                "sleep-7b85956664", SLEEP_IMAGE),
        PodSpec("default", "notsleep-6d6c8669b5-pngxg", "10.244.2.5", "notsleep", "ReplicaSet",
                "notsleep-6d6c8669b5", SLEEP_IMAGE),
        PodSpec("istio-system", "ztunnel-nptf6", "10.244.2.3", "ztunnel", "DaemonSet", "ztunnel",
                ZTUNNEL_IMAGE, ztunnel=True, comm="envoy",
                eth0_mac="46:8a:46:72:1d:3b"),  # the seed's `ip a` in ztunnel-nptf6
    ),
    # The seed's ztunnel-nptf6 `ip a` shows these MACs on its tunnel ends.
    extra_macs={"pistioout": "c2:d0:18:20:3b:97", "pistioin": "7e:b2:e6:f9:a4:92"},
)

WORKER2 = NodeSpec(
    name="ambient-worker2",
    ip="172.18.0.3",
    pod_cidr="10.244.1.0/24",
    peer_cidr="10.244.2.0/24",
    peer_ip="172.18.0.2",
    eth0_mac="02:42:ac:12:00:03",
    istioout_mac="0a:ea:4e:e0:8d:26",  # the seed's `ip a` on ambient-worker2
    pods=(
        _bookinfo("productpage-v1-7c548b785b-w9zl6", "10.244.1.7", "productpage", "v1", "python"),
        _bookinfo("reviews-v1-6494d87c7b-zrpks", "10.244.1.4", "reviews", "v1", "java"),
        _bookinfo("reviews-v2-79857b95b-m4q2g", "10.244.1.5", "reviews", "v2", "java",
                  uid="0ff78312-3a13-4a02-b39d-644bfb91e861"),
        _bookinfo("reviews-v3-75f494fccb-92nq5", "10.244.1.6", "reviews", "v3", "java",
                  uid="e41edf7c-a347-45cb-a144-97492faa77bf"),
        _bookinfo("ratings-v1-85c74b6cb4-57m52", "10.244.1.8", "ratings", "v1", "node"),
        _bookinfo("details-v1-76778d6644-wn4d2", "10.244.1.9", "details", "v1", "ruby"),
        # The seed's table 101 on ambient-worker2: `10.244.1.2 dev veth5db63c11 scope link`.
        PodSpec("istio-system", "ztunnel-vxv4b", "10.244.1.2", "ztunnel", "DaemonSet", "ztunnel",
                ZTUNNEL_IMAGE, ztunnel=True, comm="envoy", veth="veth5db63c11"),
    ),
)

NODES: tuple[NodeSpec, ...] = (WORKER, WORKER2)


@dataclass(frozen=True)
class ServiceSpec:
    """A ClusterIP service with one TCP port named `http`."""

    name: str
    cluster_ip: str
    port: int
    target_port: int
    app: str
    namespace: str = "default"
    port_name: str = "http"

    @property
    def uid(self) -> str:
        """Stable UID."""
        return _uid("service", self.namespace, self.name)

    def endpoints(self) -> list[tuple[NodeSpec, PodSpec]]:
        """Pods selected by `app=<app>`, sorted by IP (kube-proxy's endpoint order)."""
        found = [(n, p) for n in NODES for p in n.pods if p.app == self.app and p.namespace == self.namespace]
        return sorted(found, key=lambda np: tuple(int(x) for x in np[1].ip.split(".")))


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("details", "10.96.13.25", 9080, 9080, "details"),
    ServiceSpec("notsleep", "10.96.101.9", 80, 80, "notsleep"),
    ServiceSpec("productpage", "10.96.182.142", 9080, 9080, "productpage"),
    ServiceSpec("ratings", "10.96.85.7", 9080, 9080, "ratings"),
    ServiceSpec("reviews", "10.96.47.113", 9080, 9080, "reviews"),
    ServiceSpec("sleep", "10.96.214.52", 80, 80, "sleep"),
)


def node(name: str) -> NodeSpec:
    """A node by name."""
    return next(n for n in NODES if n.name == name)


def find_pod(namespace: str, name: str) -> tuple[NodeSpec, PodSpec]:
    """A pod (and its node) by namespace/name."""
    for n in NODES:
        for p in n.pods:
            if p.namespace == namespace and p.name == name:
                return n, p
    raise KeyError(f"{namespace}/{name}")
