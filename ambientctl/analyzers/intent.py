"""What the mesh means to do with a SRC -> DST pair, from the cluster objects alone.

Enrollment is doctor's own rule (`doctor.facts.enrollment`: pod and namespace
`istio.io/dataplane-mode`, `ambient.istio.io/redirection`, sidecars, hostNetwork), so the
trace's verdict and doctor can never disagree about who is in the mesh. The destination's
PeerAuthentication mode (workload selector, then namespace, then the root namespace, as
istiod resolves it) and `istio.io/use-waypoint` (pod, Service, namespace) come from
`cluster/peerauthentications.json` and the labels; a bundle without the Istio objects
says so, and intent falls back to labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ambientctl.analyzers import waypoint as wpt
from ambientctl.analyzers.doctor.facts import Context, is_ztunnel_pod
from ambientctl.analyzers.selectors import Endpoint, pods_of_service
from ambientctl.istio import SIDECAR_STATUS
from ambientctl.layout import MESH_FILES
from ambientctl.model import MeshObject, Pod

ROOT_NAMESPACE = "istio-system"


@dataclass(frozen=True)
class Party:
    """One end as the mesh sees it. `kind`: ambient | sidecar | outside | host | ztunnel."""

    label: str
    kind: str
    why: str
    node: str | None = None
    pod: Pod | None = None


@dataclass(frozen=True)
class Intent:
    """The intended path. `path`: hbone (ztunnel to ztunnel, mTLS), passthrough (the
    source's ztunnel, then plaintext to a destination outside the mesh), inbound (a client
    outside the mesh, captured by the destination's ztunnel inbound), sidecar (a sidecar's
    Envoy is in the path), probe (a host socket on the destination's node - a kubelet
    probe - let through around ztunnel), bypass (no ztunnel by design)."""

    source: Party
    destination: Party
    path: str
    expected: str
    peer_authentication: str  # STRICT | PERMISSIVE | DISABLE | UNSET | unknown
    waypoint: str | None
    sources: tuple[str, ...]
    notes: tuple[str, ...] = ()
    # (doctor check id, message) when the named waypoint cannot take this traffic
    waypoint_problem: tuple[str, str] | None = None

    @property
    def bypass(self) -> bool:
        """No ztunnel is meant to see this traffic."""
        return self.path in ("bypass", "probe")


def _pod_party(ctx: Context, pod: Pod, node: str | None) -> Party:
    name = pod.labels.get("app") or pod.name
    if pod.host_network:
        return Party(name, "host", "hostNetwork pod (never captured)", node, pod)
    if is_ztunnel_pod(pod):
        return Party(name, "ztunnel", "ztunnel itself", node, pod)
    if wpt.is_ingress_gateway_pod(pod):
        return Party(name, "gateway", "ingress gateway (its Envoy speaks HBONE to ambient pods, "
                     "never captured)", node, pod)
    if SIDECAR_STATUS in pod.annotations:
        return Party(name, "sidecar", "has a sidecar (sidecar.istio.io/status)", node, pod)
    e = ctx.enrollment(pod)
    return Party(name, "ambient" if e.expected else "outside", e.why, node, pod)


def party(ctx: Context, ep: Endpoint, *, plaintext: bool = False,
          reached: Pod | None = None) -> Party:
    """How the mesh sees one end. `reached` is the pod the trace delivered to (the one
    endpoint of a Service the rules chose)."""
    if plaintext or ep.kind == "node":
        return Party(f"node {ep.node}" if ep.node else ep.label, "host",
                     "host-network client (never captured)", ep.node)
    if ep.pod is not None:
        return _pod_party(ctx, ep.pod, ep.node)
    if ep.service is not None:
        pods = [reached] if reached is not None else pods_of_service(ctx.snap, ep.service)
        if pods:
            p = _pod_party(ctx, pods[0], pods[0].node)
            return Party(ep.service.name, p.kind, f"Service endpoint {pods[0].name}: {p.why}",
                         p.node, p.pod)
        return Party(ep.service.name, "outside", "Service with no endpoint in the bundle")
    return Party(ep.label, "outside", "an address no pod of the bundle owns", ep.node)


def _selects(obj: MeshObject, pod: Pod) -> bool:
    sel = obj.spec.get("selector")
    labels = sel.get("matchLabels") if isinstance(sel, Mapping) else None
    if not isinstance(labels, Mapping):
        return False
    return all(pod.labels.get(str(k)) == str(v) for k, v in labels.items())


def peer_authentication(ctx: Context, pod: Pod | None) -> tuple[str, str | None]:
    """(mode, where it was set): workload > namespace > root namespace, as istiod picks."""
    if "PeerAuthentication" not in ctx.snap.cluster.mesh_kinds:
        return "unknown", None
    pas = [o for o in ctx.snap.cluster.mesh_objects if o.kind == "PeerAuthentication"]
    candidates: list[MeshObject] = []
    if pod is not None:
        candidates += [o for o in pas if o.namespace == pod.namespace and _selects(o, pod)]
        candidates += [o for o in pas if o.namespace == pod.namespace
                       and not o.spec.get("selector")]
    candidates += [o for o in pas if o.namespace == ROOT_NAMESPACE and not o.spec.get("selector")]
    for o in candidates:
        mtls = o.spec.get("mtls")
        mode = mtls.get("mode") if isinstance(mtls, Mapping) else None
        if isinstance(mode, str) and mode.upper() not in ("", "UNSET"):
            return mode.upper(), f"{o.source.path}:{o.source.line}"
    return "PERMISSIVE", None  # Istio's default


def _probe_needs_uid(ctx: Context, node: str) -> bool:
    """The nftables backend SNATs only the kubelet's own sockets (`meta skuid <uid>`,
    istio-datapath.md §3.6); iptables takes any local socket (`--socket-exists`)."""
    state = ctx.snap.nodes.get(node)  # the node's own netns only: not its NodeView
    host = state.host if state else None
    if host is None or host.rulesets is None:
        return False
    for table in host.tables():
        for chain in table.chains.values():
            texts = ([r.source.text or "" for r in chain.prebuilt] if chain.prebuilt is not None
                     else [t for _line, t in chain.raw_rules])
            if any("skuid" in t and "169.254.7.127" in t for t in texts):
                return True
    return False


def derive(ctx: Context, src: Endpoint, dst: Endpoint, *, plaintext: bool = False,
           reached: Pod | None = None, uid: int | None = None) -> Intent:
    """The intended path for SRC -> DST (see `Intent.path`)."""
    s = party(ctx, src, plaintext=plaintext)
    d = party(ctx, dst, reached=reached)
    mode, where = peer_authentication(ctx, d.pod)
    # Service-addressed traffic takes the Service's (or namespace's) waypoint, pod-addressed
    # the pod's (or namespace's), if the waypoint is for that traffic type (waypoint.py).
    bound = wpt.waypoint_for_traffic(ctx.snap, pod=dst.pod if dst.service is None else None,
                                     service=dst.service)
    waypoint = bound[1].label if bound is not None and s.kind == "ambient" else None
    wproblem = bound[2] if bound is not None and s.kind == "ambient" else None
    sources = ["pod and namespace labels (istio.io/dataplane-mode), pod annotations"]
    missing = [k for k in MESH_FILES if k not in ctx.snap.cluster.mesh_kinds]
    if missing:
        sources.append("no " + ", ".join(MESH_FILES[k] for k in missing)
                       + " in the bundle: PeerAuthentication and waypoints from labels only")
    else:
        sources.append("cluster/peerauthentications.json, authorizationpolicies.json, "
                       "gateways.json")
    notes: list[str] = []
    if where:
        notes.append(f"PeerAuthentication {mode} ({where})")
    via = f" via waypoint {waypoint}" if waypoint else ""
    if s.kind == "ambient" and d.kind == "ambient":
        path, expected = "hbone", (f"HBONE mTLS{via}: {s.label}'s ztunnel on {s.node} -> "
                                   f"{d.label}'s ztunnel on {d.node}")
    elif s.kind == "gateway" and d.kind == "ambient":
        path, expected = "hbone", (f"HBONE mTLS from ingress gateway {s.label} on {s.node} to "
                                   f"{d.label}'s ztunnel on {d.node}")
    elif s.kind == "ambient":
        path = "passthrough"
        expected = (f"{s.label}'s ztunnel on {s.node}, then plaintext to {d.label} "
                    f"({d.why})")
        if d.kind == "sidecar":
            expected = (f"{s.label}'s ztunnel on {s.node}, then to {d.label}'s sidecar (Envoy "
                        "terminates mTLS when the sidecar accepts HBONE; else plaintext)")
            path = "sidecar"
    elif d.kind == "ambient":
        if s.kind == "sidecar":
            path, expected = "sidecar", (f"{s.label}'s sidecar Envoy, then {d.label}'s ztunnel "
                                         "inbound on its node")
        else:
            path, expected = "inbound", (f"plaintext from {s.label} ({s.why}), captured by "
                                         f"{d.label}'s ztunnel inbound (15006)")
        if mode == "STRICT" and s.kind != "sidecar":
            notes.append(f"STRICT PeerAuthentication: {d.label}'s ztunnel rejects plaintext "
                         "from a client without a mesh identity")
        elif mode == "STRICT":
            notes.append(f"STRICT PeerAuthentication: {d.label}'s ztunnel accepts only HBONE "
                         "with a peer identity; a sidecar that sends plain mTLS to the pod's "
                         "port lands on 15006 and is rejected")
    elif s.kind == "sidecar" or d.kind == "sidecar":
        path, expected = "sidecar", "sidecar Envoy to peer (no ztunnel)"
    else:
        path = "bypass"
        expected = f"no ztunnel: {s.label} ({s.why}) -> {d.label} ({d.why})"
    if s.kind == "host" and d.kind != "ambient":
        path, expected = "bypass", f"no ztunnel: {s.label} ({s.why}) -> {d.label} ({d.why})"
    elif s.kind == "host" and d.kind == "ambient" and s.node is not None and \
            s.node == d.node and uid is None and _probe_needs_uid(ctx, s.node):
        notes.append(f"the probe SNAT on {s.node} matches only the kubelet's uid (nftables "
                     "backend): this host socket is not a kubelet probe; pass --uid <kubelet "
                     "uid> to trace one")
    elif s.kind == "host" and d.kind == "ambient" and s.node is not None and s.node == d.node:
        # a node's own socket to a pod on it is how kubelet probes: ambient lets it through
        # around ztunnel (in-pod: SNAT to 169.254.7.127 for probe-set members; 2022 design:
        # node-originated packets are marked and skip capture)
        path = "probe"
        expected = (f"a host socket on {s.node} (a kubelet probe) reaches {d.label} directly, "
                    "around its ztunnel")
        notes = [n for n in notes if not n.startswith("STRICT")]
    if wproblem is not None:
        notes.append(f"{wproblem[0]}: {wproblem[1]}")
    return Intent(s, d, path, expected, mode, waypoint, tuple(sources), tuple(notes),
                  wproblem)
