"""Turn what a user types (`sleep`, `default/productpage`, `10.244.1.7`) into an endpoint.

Accepted forms, tried in this order: an IP address; `node/NAME` (a node's own network
namespace, as a client outside the mesh); `namespace/name` (a pod, else a Service); an
exact pod name; (DST only) an exact Service name; a Deployment (pods whose ReplicaSet is
`NAME-<hash>`); an `app` label; a unique pod-name prefix; (SRC only) a Service with a
single backing pod. More than one candidate is an error that lists them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

from ambientctl.errors import SelectorError
from ambientctl.model import IPAddress, NetNamespace, Pod, Service, Snapshot


@dataclass(frozen=True)
class Endpoint:
    """One end of a trace."""

    kind: str  # pod | service | ip | node
    label: str  # what to print: "sleep-7b85956664-z6qh7", "default/productpage"
    ip: IPAddress | None
    port: int | None = None
    pod: Pod | None = None
    service: Service | None = None
    node: str | None = None
    netns: NetNamespace | None = None

    @property
    def short(self) -> str:
        """The name used in one-line summaries (app label, service name, or the label)."""
        if self.pod is not None:
            return self.pod.labels.get("app") or self.pod.name
        if self.service is not None:
            return self.service.name
        return self.label


def _pod_ip(pod: Pod, family: int | None = None) -> IPAddress | None:
    for ip in pod.ips:
        if family is None or ip.version == family:
            return ip
    return None


def _owner_deployment(pod: Pod) -> str | None:
    if pod.owner and pod.owner.startswith("ReplicaSet/"):
        rs = pod.owner.split("/", 1)[1]
        if "-" in rs:
            return rs.rsplit("-", 1)[0]
    return None


def _candidates_error(text: str, role: str, names: list[str]) -> SelectorError:
    listed = ", ".join(sorted(names)[:12]) + (" ..." if len(names) > 12 else "")
    return SelectorError(
        f"{role} {text!r} is ambiguous: {len(names)} candidates: {listed}",
        hint="name one with namespace/name or the full pod name",
    )


def _pod_endpoint(snap: Snapshot, pod: Pod, role: str) -> Endpoint:
    netns = snap.pod_netns(pod.ref)
    if pod.host_network and pod.node:
        state = snap.nodes.get(pod.node)
        netns = state.host if state else None
    return Endpoint("pod", pod.name, _pod_ip(pod), pod=pod, node=pod.node, netns=netns)


def _service_endpoint(svc: Service, port: int | None) -> Endpoint:
    if not svc.cluster_ips:
        raise SelectorError(
            f"Service {svc.namespace}/{svc.name} is headless (no ClusterIP)",
            hint="trace to one of its pods instead",
        )
    chosen = port
    if chosen is None:
        ports = [p.port for p in svc.ports if p.protocol.upper() == "TCP"]
        if len(ports) > 1:
            raise SelectorError(
                f"Service {svc.namespace}/{svc.name} has several ports "
                f"({', '.join(map(str, ports))})",
                hint="pick one with --port",
            )
        chosen = ports[0] if ports else None
    return Endpoint("service", f"{svc.namespace}/{svc.name}", svc.cluster_ips[0], chosen,
                    service=svc)


def resolve(snap: Snapshot, text: str, *, role: str, port: int | None = None) -> Endpoint:
    """Resolve SRC or DST (`role` is "source" or "destination").

    A pod destination without `port` takes its only TCP container port.
    """
    ep = _resolve(snap, text, role=role, port=port)
    if role == "destination" and ep.port is None and ep.pod is not None:
        tcp = sorted({p for _n, p, proto in ep.pod.container_ports if proto.upper() == "TCP"})
        if len(tcp) == 1:
            return replace(ep, port=tcp[0])
    return ep


def _resolve(snap: Snapshot, text: str, *, role: str, port: int | None = None) -> Endpoint:
    pods = snap.cluster.pods
    services = snap.cluster.services
    # 1. an IP address
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        ip = None
    if ip is not None:
        for pod in pods:
            if ip in pod.ips and not pod.host_network:
                ep = _pod_endpoint(snap, pod, role)
                return Endpoint("pod", pod.name, ip, port, pod=pod, node=pod.node,
                                netns=ep.netns)
        for svc in services:
            if ip in svc.cluster_ips:
                ep = _service_endpoint(svc, port)
                return Endpoint("service", ep.label, ip, ep.port, service=svc)
        for ns in snap.namespaces():
            if ns.owns(ip):
                return Endpoint("ip", str(ip), ip, port, node=ns.node, netns=ns)
        return Endpoint("ip", str(ip), ip, port)
    # 2. node/NAME
    if text.startswith("node/"):
        name = text.split("/", 1)[1]
        state = snap.nodes.get(name)
        if state is None or state.host is None:
            raise SelectorError(f"{role} {text!r}: no node {name!r} in the bundle",
                                hint=f"nodes in the bundle: {', '.join(sorted(snap.nodes))}")
        node_ip = next((a.interface.ip for lnk, a in state.host.addresses()
                        if lnk.name == "eth0" and a.interface.version == 4), None)
        return Endpoint("node", name, node_ip, port, node=name, netns=state.host)
    # 3. namespace/name
    if "/" in text:
        ns_name, name = text.split("/", 1)
        for pod in pods:
            if pod.namespace == ns_name and pod.name == name:
                ep = _pod_endpoint(snap, pod, role)
                return Endpoint("pod", pod.name, ep.ip, port, pod=pod, node=pod.node,
                                netns=ep.netns)
        for svc in services:
            if svc.namespace == ns_name and svc.name == name:
                return _service_endpoint(svc, port)
        text_ns: str | None = ns_name
        text = name
    else:
        text_ns = None

    def in_ns(pod_or_svc: Pod | Service) -> bool:
        return text_ns is None or pod_or_svc.namespace == text_ns

    steps: list[list[Pod] | list[Service]] = []
    exact = [p for p in pods if p.name == text and in_ns(p)]
    steps.append(exact)
    if role == "destination":
        steps.append([s for s in services if s.name == text and in_ns(s)])
    steps.append([p for p in pods if _owner_deployment(p) == text and in_ns(p)])
    steps.append([p for p in pods if p.labels.get("app") == text and in_ns(p)])
    steps.append([p for p in pods if p.name.startswith(text) and in_ns(p)])
    for found in steps:
        if not found:
            continue
        if len(found) > 1:
            raise _candidates_error(text, role, [f"{x.namespace}/{x.name}" for x in found])
        item = found[0]
        if isinstance(item, Service):
            return _service_endpoint(item, port)
        ep = _pod_endpoint(snap, item, role)
        return Endpoint("pod", item.name, ep.ip, port, pod=item, node=item.node, netns=ep.netns)
    if role == "source":
        svcs = [s for s in services if s.name == text and in_ns(s)]
        if len(svcs) == 1:
            backing = [p for p in pods if p.namespace == svcs[0].namespace and svcs[0].selector
                       and all(p.labels.get(k) == v for k, v in svcs[0].selector.items())]
            if len(backing) == 1:
                return resolve(snap, f"{backing[0].namespace}/{backing[0].name}", role=role,
                               port=port)
    known = sorted({p.name for p in pods})[:8]
    raise SelectorError(
        f"{role} {text!r} matches no pod, deployment, app label"
        + (", Service" if role == "destination" else "") + " or address in the bundle",
        hint=("pods in the bundle include: " + ", ".join(known)) if known else
        "the bundle has no cluster/pods.json: use an IP address",
    )
