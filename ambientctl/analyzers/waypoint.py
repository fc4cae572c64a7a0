"""Waypoints: which one a destination uses, where its pods are, and whether it can take
this traffic. Pure functions over the cluster objects (no I/O), read by the trace (the
HBONE target ztunnel picks), the verdict (the intended path) and doctor (AMB5xx), so the
three never disagree about a waypoint.

Facts (istio-datapath.md §4.1, Istio's waypoint/gateway templates):

* `istio.io/use-waypoint: <name>` (+ `istio.io/use-waypoint-namespace`) on a Pod, Service
  or Namespace binds it to the waypoint Gateway `<name>`; `none` opts out. Service-addressed
  traffic uses the Service's binding, else its namespace's; workload-addressed traffic
  (a pod IP) the pod's, else its namespace's.
* `istio.io/waypoint-for` on the Gateway (or the waypoint's Service) says which traffic it
  takes: `service` (the default), `workload`, `all`, `none`. istiod binds a waypoint only
  to the traffic type it is for; otherwise that traffic goes straight to the destination.
* Waypoint pods are labelled `gateway.networking.k8s.io/gateway-name: <name>` and
  `gateway.istio.io/managed: istio.io-mesh-controller`, and `istio.io/dataplane-mode: none`
  so istio-cni never captures them: Envoy in the waypoint speaks HBONE itself on 15008.
* Ingress gateways deployed by Istio's gateway controller carry
  `gateway.istio.io/managed: istio.io-gateway-controller` (the classic install `istio:
  ingressgateway`); they are not captured either and open HBONE to an ambient
  destination's 15008 themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ambientctl.istio import (
    DEFAULT_WAYPOINT_FOR,
    GATEWAY_NAME,
    INGRESS_USE_WAYPOINT,
    USE_WAYPOINT,
    WAYPOINT_FOR,
    WAYPOINT_FOR_VALUES,
    is_ingress_gateway,
    is_waypoint,
)
from ambientctl.istio import USE_WAYPOINT_NAMESPACE as USE_WAYPOINT_NS
from ambientctl.model import MeshObject, Pod, Service, Snapshot, SourceRef


@dataclass(frozen=True)
class Binding:
    """`istio.io/use-waypoint` as it applies to one destination."""

    name: str
    namespace: str
    on: str  # "pod <ns/name>" | "Service <ns/name>" | "namespace <name>"
    source: SourceRef
    level: str = "namespace"  # pod | service | namespace: where the label is

    @property
    def label(self) -> str:
        """"namespace/name" of the waypoint."""
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Waypoint:
    """A waypoint as the bundle shows it. `pods`: every pod of the Gateway; `ready`: those
    running with an address (what ztunnel can send to)."""

    name: str
    namespace: str
    gateway: MeshObject | None
    service: Service | None
    pods: tuple[Pod, ...]
    ready: tuple[Pod, ...]
    waypoint_for: str
    waypoint_for_source: str  # where `waypoint_for` was read, in words

    @property
    def found(self) -> bool:
        """Something of the waypoint exists in the bundle (Gateway, Service or pods)."""
        return self.gateway is not None or self.service is not None or bool(self.pods)

    def takes(self, addressed: str) -> bool:
        """Does this waypoint take `addressed` ("service" | "workload") traffic?"""
        return self.waypoint_for in (addressed, "all")

    @property
    def label(self) -> str:
        """"namespace/name"."""
        return f"{self.namespace}/{self.name}"


def is_waypoint_pod(pod: Pod) -> bool:
    """A waypoint's Envoy pod (`istio.is_waypoint` on the model's pod)."""
    return is_waypoint(pod.labels)


def is_ingress_gateway_pod(pod: Pod) -> bool:
    """An ingress gateway's Envoy pod (`istio.is_ingress_gateway` on the model's pod)."""
    return is_ingress_gateway(pod.labels)


def _bind(labels: Mapping[str, str], namespace: str, on: str,
          source: SourceRef, level: str) -> Binding | None | bool:
    """A binding, False for an explicit `none` opt-out, None when the label is absent."""
    value = labels.get(USE_WAYPOINT)
    if not value:
        return None
    if value == "none":
        return False
    return Binding(value, labels.get(USE_WAYPOINT_NS) or namespace, on, source, level)


def binding(snap: Snapshot, *, pod: Pod | None, service: Service | None) -> Binding | None:
    """The waypoint a destination uses. `service` set: Service-addressed traffic (the
    Service's label, else its namespace's); else workload-addressed (the pod's, else its
    namespace's)."""
    obj = service if service is not None else pod
    if obj is None:
        return None
    if service is not None:
        own = _bind(service.labels, service.namespace,
                    f"Service {service.namespace}/{service.name}", service.source, "service")
    else:
        assert pod is not None
        own = _bind(pod.labels, pod.namespace, f"pod {pod.namespace}/{pod.name}", pod.source,
                    "pod")
    if own is False:
        return None
    if own is not None:
        return own  # type: ignore[return-value]
    for ns in snap.cluster.namespaces:
        if ns.name == obj.namespace:
            b = _bind(ns.labels, ns.name, f"namespace {ns.name}", ns.source, "namespace")
            return b if isinstance(b, Binding) else None
    return None


def resolve(snap: Snapshot, name: str, namespace: str) -> Waypoint:
    """Everything the bundle says about waypoint `namespace/name`."""
    gw = next((o for o in snap.cluster.mesh_objects if o.kind == "Gateway"
               and o.namespace == namespace and o.name == name), None)
    svc = next((s for s in snap.cluster.services if s.namespace == namespace
                and s.name == name), None)
    pods = tuple(sorted((p for p in snap.cluster.pods if p.namespace == namespace
                         and p.labels.get(GATEWAY_NAME) == name), key=lambda p: p.name))
    ready = tuple(p for p in pods if p.ips and p.phase in (None, "Running")
                  and not p.host_network)
    wf, where = DEFAULT_WAYPOINT_FOR, "not set (Istio's default: service)"
    for labels, what in ((gw.labels if gw else {}, "the Gateway"),
                         (svc.labels if svc else {}, "the waypoint's Service")):
        value = labels.get(WAYPOINT_FOR)
        if value:
            wf, where = value, f"{WAYPOINT_FOR}: {value} on {what}"
            break
    return Waypoint(name, namespace, gw, svc, pods, ready, wf, where)


def gateways_collected(snap: Snapshot) -> bool:
    """Is cluster/gateways.json in the bundle (so an absent Gateway is a fact)?"""
    return "Gateway" in snap.cluster.mesh_kinds


def problem(snap: Snapshot, b: Binding, wp: Waypoint, addressed: str) -> tuple[str, str] | None:
    """(doctor check id, what is wrong) when the binding `b` of `addressed` traffic
    ("service" | "workload") is broken; None when it is not. A namespace label whose
    waypoint is for the other traffic type is ordinary (a namespace waypoint for workloads
    leaves its Services alone): only an explicit Pod / Service label, or `none`, is wrong."""
    if not wp.found or (gateways_collected(snap) and wp.gateway is None and not wp.pods):
        return "AMB501", (f"{b.on} uses waypoint {wp.label} ({USE_WAYPOINT}), but no such "
                          "waypoint exists (no Gateway, Service or pod "
                          f"{GATEWAY_NAME}={wp.name} in namespace {wp.namespace})")
    if wp.waypoint_for not in WAYPOINT_FOR_VALUES:
        return "AMB503", (f"waypoint {wp.label} has {WAYPOINT_FOR}: {wp.waypoint_for}, not one "
                          f"of {', '.join(WAYPOINT_FOR_VALUES)}")
    if not wp.takes(addressed) and (b.level != "namespace" or wp.waypoint_for == "none"):
        return "AMB503", (f"{b.on} uses waypoint {wp.label} for {addressed}-addressed traffic, "
                          f"but the waypoint is for {wp.waypoint_for} ({wp.waypoint_for_source}): "
                          f"istiod does not bind it, this traffic skips the waypoint")
    if not wp.takes(addressed):
        return None
    if not wp.ready:
        what = ("its pods are not running: " + ", ".join(f"{p.name} ({p.phase or '?'})"
                                                         for p in wp.pods)
                if wp.pods else f"no pod labelled {GATEWAY_NAME}={wp.name}")
        return "AMB502", (f"{b.on} uses waypoint {wp.label}, which has no ready endpoint: "
                          f"{what}")
    return None


def pick_pod(wp: Waypoint, node: str | None) -> Pod:
    """The waypoint pod a trace sends to: one on `node` if any (the shortest path), else
    the first by name. ztunnel load-balances over all ready pods; the trace names one."""
    return next((p for p in wp.ready if p.node == node), wp.ready[0])


def waypoint_for_traffic(snap: Snapshot, *, pod: Pod | None, service: Service | None
                         ) -> tuple[Binding, Waypoint, tuple[str, str] | None] | None:
    """The binding of this destination, its waypoint and its problem - or None when no
    waypoint is named, or only a namespace's waypoint for the other traffic type."""
    b = binding(snap, pod=pod, service=service)
    if b is None:
        return None
    addressed = "service" if service is not None else "workload"
    wp = resolve(snap, b.name, b.namespace)
    bad = problem(snap, b, wp, addressed)
    if bad is None and not wp.takes(addressed):
        return None
    return b, wp, bad


def ingress_uses_waypoint(snap: Snapshot, svc: Service) -> bool:
    """`istio.io/ingress-use-waypoint: "true"` on the Service or its namespace: an ingress
    gateway sends this Service's traffic through its waypoint too."""
    ns = next((n for n in snap.cluster.namespaces if n.name == svc.namespace), None)
    return svc.labels.get(INGRESS_USE_WAYPOINT) == "true" or \
        (ns is not None and ns.labels.get(INGRESS_USE_WAYPOINT) == "true")
