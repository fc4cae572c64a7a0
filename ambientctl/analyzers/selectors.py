"""Turn what a user types (`sleep`, `default/productpage`, `10.244.1.7`) into an endpoint.

kubectl and curl habits are accepted as typed (see `selector_syntax.parse`): `pod/NAME`,
`deploy/NAME`, `svc/NAME`, `node/NAME`, `NAME.NS`, `NAME.NS.svc[.cluster.local]`,
`HOST:PORT` and URLs, and `-n NS` scopes every name without a namespace of its own.

Untyped names are tried in this order: an IP address; `namespace/name` (a pod; then, for a
source, a workload before a Service - a client is a pod, so `default/sleep` is the sleep
Deployment's pod; for a destination the Service first); an exact pod name; (DST only) an
exact Service name; a Deployment (pods whose ReplicaSet is `NAME-<hash>`); an `app` label;
a unique pod-name prefix; (SRC only) a Service with a single backing pod. More than one
candidate is an error that lists them; no candidate is an error that repeats what was typed
and offers close matches.
"""

from __future__ import annotations

import difflib
import ipaddress
from dataclasses import dataclass, replace

from ambientctl.analyzers.derived_facts import DerivedFacts
from ambientctl.analyzers.selector_syntax import Query, parse
from ambientctl.errors import SelectorError, UsageError
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


def resolve(snap: Snapshot, text: str, *, role: str, port: int | None = None,
            namespace: str | None = None) -> Endpoint:
    """Resolve SRC or DST (`role` is "source" or "destination") as the user typed it.

    `namespace` (`-n`) scopes names that carry none of their own. A pod destination
    without a port takes its only TCP container port; a port in the text (`HOST:PORT`, a
    URL) is the port unless `port` (`--port`) names another.
    """
    q = parse(text)
    if q.whole is not None and any(p.name == q.whole for p in snap.cluster.pods):
        q = replace(q, name=q.whole, namespace=None, whole=None)  # a dotted pod name
    if q.port is not None and port is not None and q.port != port:
        raise UsageError(f"{role} {text!r} names port {q.port} but --port says {port}",
                         hint="give the port once")
    port = port if port is not None else q.port
    ns = q.namespace or namespace
    ep = _resolve(snap, q, ns, role=role, port=port)
    if role == "destination" and ep.port is None and ep.pod is not None:
        tcp = sorted({p for _n, p, proto in ep.pod.container_ports if proto.upper() == "TCP"})
        if len(tcp) == 1:
            return replace(ep, port=tcp[0])
    return ep


def _typed(q: Query, ns: str | None) -> str:
    """What the user typed (quoted), with the `-n` namespace that scoped it."""
    return repr(q.text) if ns is None or q.namespace else f"{q.text!r} in namespace {ns!r}"


def _matches(snap: Snapshot, ns: str | None, name: str, role: str) -> list[str]:
    """Close matches among pods, workloads and (for a destination) Services."""
    names: set[str] = set()
    for pod in snap.cluster.pods:
        if ns is None or pod.namespace == ns:
            names.add(pod.name)
            dep = _owner_deployment(pod)
            if dep:
                names.add(dep)
            if pod.labels.get("app"):
                names.add(pod.labels["app"])
    for svc in snap.cluster.services:
        if ns is None or svc.namespace == ns:
            names.add(svc.name)
    close = difflib.get_close_matches(name, sorted(names), n=5, cutoff=0.6)
    close += sorted(n for n in names if name and n.startswith(name[:3]) and n not in close)[:3]
    return close[:5]


def _not_found(snap: Snapshot, q: Query, ns: str | None, role: str, what: str) -> SelectorError:
    close = _matches(snap, ns, q.name, role)
    if close:
        hint = "did you mean: " + ", ".join(close)
    elif ns is not None and ns not in {p.namespace for p in snap.cluster.pods} | \
            {s.namespace for s in snap.cluster.services}:
        known = sorted({p.namespace for p in snap.cluster.pods})
        hint = f"no pod or Service in namespace {ns!r}; namespaces: {', '.join(known)}"
    elif snap.cluster.pods:
        hint = "list them: kubectl get pods -A (or the bundle's cluster/pods.json)"
    else:
        hint = "the bundle has no cluster/pods.json: use an IP address"
    return SelectorError(f"{role} {_typed(q, ns)} matches no {what} in the bundle", hint=hint)


def pods_of_service(snap: Snapshot, svc: Service) -> list[Pod]:
    """The pods `svc` selects, in the bundle's order."""
    return [p for p in snap.cluster.pods if svc.selects(p)]


def _one_pod(snap: Snapshot, found: list[Pod], text: str, role: str, port: int | None) -> Endpoint:
    if len(found) > 1:
        raise _candidates_error(text, role, [f"{x.namespace}/{x.name}" for x in found])
    ep = _pod_endpoint(snap, found[0], role)
    return Endpoint("pod", found[0].name, ep.ip, port, pod=found[0], node=found[0].node,
                    netns=ep.netns)


def _resolve_typed(snap: Snapshot, q: Query, ns: str | None, *, role: str,
                   port: int | None) -> Endpoint:
    """`pod/`, `deploy/`, `svc/` (and `NAME.NS.svc...`): exactly that kind, nothing else."""
    pods = snap.cluster.pods

    def in_ns(x: Pod | Service) -> bool:
        return ns is None or x.namespace == ns

    if q.kind == "pod":
        found = [p for p in pods if p.name == q.name and in_ns(p)]
        if not found:
            raise _not_found(snap, q, ns, role, "pod")
        return _one_pod(snap, found, q.text, role, port)
    if q.kind == "deployment":
        found = [p for p in pods if _owner_deployment(p) == q.name and in_ns(p)]
        if not found:
            raise _not_found(snap, q, ns, role, "Deployment")
        return _one_pod(snap, found, q.text, role, port)
    # service
    svcs = [s for s in snap.cluster.services if s.name == q.name and in_ns(s)]
    if not svcs:
        raise _not_found(snap, q, ns, role, "Service")
    if len(svcs) > 1:
        raise _candidates_error(q.text, role, [f"{s.namespace}/{s.name}" for s in svcs])
    if role == "source":
        backing = pods_of_service(snap, svcs[0])
        if not backing:
            raise SelectorError(f"source {q.text!r}: Service {svcs[0].namespace}/{svcs[0].name}"
                                " selects no pod in the bundle", hint="trace from a pod")
        return _one_pod(snap, backing, q.text, role, port)
    return _service_endpoint(svcs[0], port)


def _resolve(snap: Snapshot, q: Query, ns: str | None, *, role: str,
             port: int | None = None) -> Endpoint:
    pods = snap.cluster.pods
    services = snap.cluster.services
    # 1. an IP address
    if q.kind == "ip":
        ip = ipaddress.ip_address(q.name)
        facts = DerivedFacts.of(snap)
        pod = facts.pod_by_ip(ip)
        if pod is not None:
            ep = _pod_endpoint(snap, pod, role)
            return Endpoint("pod", pod.name, ip, port, pod=pod, node=pod.node,
                            netns=ep.netns)
        for svc in services:
            if ip in svc.cluster_ips:
                ep = _service_endpoint(svc, port)
                return Endpoint("service", ep.label, ip, ep.port, service=svc)
        # The first namespace holding the address (a node's, a host-network pod's): from
        # the cluster objects when they place it, else from every namespace's `ip addr`.
        netns = facts.owner_of(ip)
        if netns is not None:
            return Endpoint("ip", str(ip), ip, port, node=netns.node, netns=netns)
        return Endpoint("ip", str(ip), ip, port)
    # 2. node/NAME
    if q.kind == "node":
        name = q.name
        text = q.text
        state = snap.nodes.get(name)
        if state is None or state.host is None:
            close = difflib.get_close_matches(name, sorted(snap.nodes), n=3, cutoff=0.6)
            raise SelectorError(f"{role} {text!r}: no node {name!r} in the bundle",
                                hint=(f"did you mean: {', '.join(close)}; " if close else "")
                                + f"nodes in the bundle: {', '.join(sorted(snap.nodes))}")
        node_ip = next((a.interface.ip for lnk, a in state.host.addresses()
                        if lnk.name == "eth0" and a.interface.version == 4), None)
        return Endpoint("node", name, node_ip, port, node=name, netns=state.host)
    if q.kind in ("pod", "deployment", "service"):
        return _resolve_typed(snap, q, ns, role=role, port=port)
    text = q.name

    def in_ns(pod_or_svc: Pod | Service) -> bool:
        return ns is None or pod_or_svc.namespace == ns

    steps: list[list[Pod] | list[Service]] = []
    exact = [p for p in pods if p.name == text and in_ns(p)]
    steps.append(exact)
    svc_step = [s for s in services if s.name == text and in_ns(s)]
    # A destination name is a Service before a workload of the same name; a source is a
    # client pod, so its workloads come first (a Service only as a last resort, below).
    if role == "destination":
        steps.append(svc_step)
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
        if len(svc_step) == 1:
            backing = pods_of_service(snap, svc_step[0])
            if len(backing) == 1:
                return _one_pod(snap, backing, q.text, role, port)
    what = "pod, deployment, app label" + (", Service" if role == "destination" else "") + \
        " or address"
    raise _not_found(snap, q, ns, role, what)
