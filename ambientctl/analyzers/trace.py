"""The whole trace of a request: legs joined by what ztunnel does between them.

Leg 1 is the application's own connection. When a ztunnel listener takes it, ztunnel
opens the next connection, and so on until the application at the destination accepts
it or a packet dies:

    2022 node-level design (seed):   app -> ztunnel 15001 (node A, via TPROXY)
                                     ztunnel A -> dst pod IP:15008 (HBONE: mTLS + HTTP/2
                                     CONNECT) -> ztunnel 15008 (node B, via TPROXY)
                                     ztunnel B -> app, spoofing the client's address
    in-pod design (Istio >= 1.21):   app -> ztunnel 15001 in the app's own netns (REDIRECT)
                                     ztunnel, from that netns with SO_MARK 0x539 -> dst:15008
                                     -> ztunnel 15008 in the destination pod's netns
                                     ztunnel -> app over lo, SO_MARK 0x539, client's address

What ztunnel decides (which endpoint, HBONE or plaintext) is explained from the cluster
objects and the capture state of the destination, with evidence, and each decision's
connection is then simulated like any other.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from ambientctl import istio
from ambientctl.analyzers import waypoint as wpt
from ambientctl.analyzers.derived_facts import DerivedFacts, Role
from ambientctl.analyzers.fork import EndpointSelector
from ambientctl.analyzers.packet import SocketAddr
from ambientctl.analyzers.path import PathWalker, World
from ambientctl.analyzers.selectors import Endpoint
from ambientctl.analyzers.snapshot import cite
from ambientctl.analyzers.trace_result import (
    Component,
    Delivery,
    Direction,
    Disposition,
    Leg,
    LegResult,
    Step,
    StepKind,
    Trace,
)
from ambientctl.analyzers.ztunnel_view import (
    Disagreement,
    configs_in_order,
    disagreements,
    workload_at,
)
from ambientctl.istio import (
    HBONE_PORT,
    INPOD_MARK,
    LEGACY_IPSET,
    REDIRECTION,
    SIDECAR_UID,
    image_component,
)
from ambientctl.model import (
    IPAddress,
    NetNamespace,
    Pod,
    PodRef,
    Service,
    Snapshot,
    SourceRef,
    ZtunnelWorkload,
)

SIDECAR_INBOUND_SRC = ipaddress.ip_address(istio.SIDECAR_INBOUND_SRC)


@dataclass(frozen=True)
class _Next:
    direction: Direction
    opener: str
    netns: NetNamespace
    dst: IPAddress
    dport: int
    src: IPAddress | None
    mark: int
    explanation: list[Step]
    authority: SocketAddr | None = None
    uid: int | None = None


LEGACY_SOCKET_MARKS = {
    # The 2022 ztunnel marked its listeners' sockets so that answers leave through the
    # tunnel they came from (init script: PROXY_OUTBOUND_MARK / PROXY_INBOUND_MARK,
    # ip rules 20001/20002 -> tables 101/102); istio-datapath.md section 2.2.
    Component.ZTUNNEL_OUTBOUND: (0x401, "2022 ztunnel's outbound sockets, ip rule 20001 -> table 101"),
    Component.ZTUNNEL_INBOUND_HBONE: (0x402, "2022 ztunnel's inbound sockets, ip rule 20002 -> table 102"),
    Component.ZTUNNEL_INBOUND_PLAINTEXT: (0x402, "2022 ztunnel's inbound sockets, ip rule 20002 -> "
                                  "table 102"),
}


def _same_family(pod: Pod, ip: IPAddress) -> IPAddress:
    """The address ztunnel sends to: `ip` itself when the pod owns it, else the pod's first
    address of `ip`'s family (a dual-stack pod reached by a v6 ClusterIP gets v6), else its
    first address."""
    if ip in pod.ips:
        return ip
    return next((a for a in pod.ips if a.version == ip.version), pod.ips[0])


# ztunnel generations of the node-level (legacy) design, by what they do with the HBONE
# connection's source address (istio-datapath.md 1, 2.5 step 5):
#   envoy-2022: the Sept-2022 Envoy-based ztunnel (images 0.0.0-ambient.<sha>) connects from
#               its own pod address (the node marks it 0x220, connskip);
#   rust-node:  the Rust ztunnel of Istio 1.18-1.20 binds the client pod's address
#               (IP_TRANSPARENT, original source) on the HBONE connection, so the node marks
#               it 0x210 and its answer returns through connmark 0x210 -> 0x040 -> ip rule
#               102 -> table 102 -> the ztunnel veth (ztunnel netns mark 0x4d3 -> table 100).
#   in-pod:     1.21+; the connection leaves the client pod's own netns anyway.
# istio/ztunnel#1209 (1.23) removed outbound spoofing once in-pod no longer needed it.
ENVOY_2022, RUST_NODE, INPOD_GEN = "envoy-2022", "rust-node", "in-pod"

_GEN_NAMES = {ENVOY_2022: "the 2022 Envoy-based ztunnel", RUST_NODE: "the Rust ztunnel of the "
              "node-level design (Istio 1.18-1.20)", INPOD_GEN: "the in-pod Rust ztunnel "
              "(Istio 1.21+)"}


def ztunnel_generation_of_tag(tag: str) -> str | None:
    """The generation an image tag names ("0.0.0-ambient.<sha>", "1.19.3", "1.20.0-distroless")."""
    if tag.startswith("0.0.0-ambient"):
        return ENVOY_2022
    parts = tag.split("-", 1)[0].split(".")
    if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
        major, minor = int(parts[0]), int(parts[1])
        if (major, minor) < (1, 18):
            return None  # no released ambient before 1.18
        return RUST_NODE if (major, minor) <= (1, 20) else INPOD_GEN
    return None


class Tracer:
    """Builds `Trace`s over one snapshot (indices are built once)."""

    def __init__(self, snap: Snapshot, roles: dict[str, str] | None = None) -> None:
        self.snap = snap
        self.facts = DerivedFacts.of(snap)
        # Roles are classified when the walk first enters a namespace (`DerivedFacts`);
        # `roles` and the Envoy pods below override that.
        roles = dict(roles or {})
        for pod in snap.cluster.pods:  # waypoint / gateway Envoys are never captured
            ns = snap.pod_netns(pod.ref) if (wpt.is_waypoint_pod(pod) or
                                             wpt.is_ingress_gateway_pod(pod)) else None
            if ns is not None:
                roles[ns.id] = "waypoint" if wpt.is_waypoint_pod(pod) else "ingress-gateway"
        self.world = World.build(snap, roles)
        self.endpoint_choice: EndpointSelector | None = None  # `trace --endpoint`

    # ------------------------------------------------------------------ lookups
    def pod_by_ip(self, ip: IPAddress) -> Pod | None:
        """The (non host-network) pod that owns `ip`."""
        return self.facts.pod_by_ip(ip)

    def service_by_vip(self, addr: SocketAddr) -> tuple[Service, int] | None:
        """The Service whose ClusterIP:port is `addr`, with the port's index."""
        for svc in self.snap.cluster.services:
            if addr.ip in svc.cluster_ips:
                for i, port in enumerate(svc.ports):
                    if port.port == addr.port:
                        return svc, i
        return None

    def endpoints(self, svc: Service) -> list[Pod]:
        """The Service's ready endpoints, in name order (see `service_endpoints`)."""
        return self.service_endpoints(svc)[0]

    def _pod_by_ref(self, namespace: str, name: str) -> Pod | None:
        return self.facts.pods_by_ref.get(PodRef(namespace, name))

    def service_endpoints(self, svc: Service) -> tuple[list[Pod], Step]:
        """The endpoints a connection to `svc` can go to, with where that list comes from.

        Not "every pod matching the selector": ztunnel balances over the endpoints istiod
        pushed it (its config_dump's Service `endpoints`), kube-proxy over the EndpointSlices'
        ready endpoints. The selector is the last resort, and then said to be one.
        """
        for node, cfg in configs_in_order(self.snap):
            zs = next((z for z in cfg.services
                       if set(z.vips) & set(svc.cluster_ips)
                       and (z.namespace in (None, svc.namespace))), None)
            if zs is None:
                continue
            pods: list[Pod] = []
            for e in zs.endpoints:
                if (e.status or "Healthy") != "Healthy":
                    continue
                parts = e.workload_uid.split("/")
                pod = (self._pod_by_ref(parts[-2], parts[-1]) if len(parts) >= 4 and
                       parts[-3] == "Pod" else None)
                if pod is None and e.address is not None:
                    pod = self.pod_by_ip(e.address)
                if pod is not None and pod.ips and pod not in pods:
                    pods.append(pod)
            return sorted(pods, key=lambda p: p.name), Step(
                StepKind.ZTUNNEL, f"ztunnel's config_dump on {node} lists {len(pods)} healthy "
                f"endpoint(s) of {svc.namespace}/{svc.name}", zs.source)
        slices = [es for es in self.snap.cluster.endpoint_slices
                  if es.namespace == svc.namespace and es.service == svc.name]
        if slices:
            pods = []
            for es in slices:
                for ep in es.endpoints:
                    if not ep.ready:
                        continue
                    pod = (self._pod_by_ref(ep.target.namespace, ep.target.name)
                           if ep.target else None)
                    if pod is None and ep.ips:
                        pod = self.pod_by_ip(ep.ips[0])
                    if pod is not None and pod.ips and pod not in pods:
                        pods.append(pod)
            return sorted(pods, key=lambda p: p.name), Step(
                StepKind.ZTUNNEL, f"the EndpointSlices of {svc.namespace}/{svc.name} list {len(pods)} "
                "ready endpoint(s)", slices[0].source)
        if not svc.selector:
            return [], Step(StepKind.ZTUNNEL, f"{svc.namespace}/{svc.name} has no selector and no "
                            "EndpointSlice in the bundle", svc.source)
        out = [p for p in self.snap.cluster.pods
               if svc.selects(p) and p.ips and not p.host_network
               and p.phase in (None, "Running")]
        return sorted(out, key=lambda p: p.name), Step(
            StepKind.ZTUNNEL, f"no EndpointSlice nor ztunnel view of {svc.namespace}/{svc.name} in the "
            f"bundle: its endpoints are assumed to be the running pods its selector matches "
            f"({len(out)})", svc.source)

    def pick_endpoint(self, eps: list[Pod], dst_ep: Endpoint) -> tuple[Pod | None, str]:
        """The endpoint this trace follows among `eps`, and why (a random choice is a fork)."""
        want = self.endpoint_choice  # an EndpointSelector (the pod's addresses, or one IP)
        if want is not None:
            for p in eps:
                if want.text in (p.name, f"{p.namespace}/{p.name}") or \
                        any(ip in want.ips for ip in p.ips):
                    return p, f"following {p.name} as --endpoint asks"
            return None, (f"--endpoint {want.text} is not one of the ready endpoints "
                          f"({', '.join(p.name for p in eps)})")
        if dst_ep.pod is not None:
            for p in eps:
                if p.ref == dst_ep.pod.ref:
                    return p, f"following {p.name}, the destination named"
        if len(eps) > 1:
            return eps[0], f"following the first, {eps[0].name} (pass --endpoint to follow another)"
        return (eps[0] if eps else None), ""

    @staticmethod
    def target_port(svc: Service, index: int, pod: Pod) -> int | None:
        """Resolve a Service port's targetPort (a number or a named container port)."""
        tp = svc.ports[index].target_port
        if tp.isdigit():
            return int(tp)
        for name, port, _proto in pod.container_ports:
            if name == tp:
                return port
        return None

    def label_of(self, ns: NetNamespace) -> str:
        """Short name of a namespace for summaries: app label or pod name, or the node."""
        if ns.pod is None:
            return f"[{ns.node}]"
        pod = self.facts.pods_by_ref.get(ns.pod)
        return (pod.labels.get("app") or pod.name) if pod is not None else ns.pod.name

    # ------------------------------------------------------------------ capture state
    def ztunnel_view(self, ip: IPAddress) -> tuple[ZtunnelWorkload, SourceRef] | None:
        """The workload ztunnel knows at `ip`, from any readable config_dump (any generation)."""
        seen = workload_at(self.snap, ip)
        return (seen.workload, seen.source) if seen is not None else None

    def unreadable_dumps(self) -> list[Step]:
        """One step per config_dump the bundle holds but nothing could read: stated, so that
        a fallback to the pod objects is never mistaken for ztunnel's own view."""
        return [Step(StepKind.ZTUNNEL, f"{p.path} is unreadable ({p.message}): ztunnel's own view of "
                     "the mesh is not used", SourceRef(p.path, p.line))
                for p in self.snap.read_problems()
                if p.path.endswith("/ztunnel/config_dump.json") and p.severity == "error"]

    def captured(self, pod: Pod) -> tuple[bool | None, list[Step]]:
        """Does ztunnel send `pod` HBONE (is it in the mesh)? With the evidence.

        ztunnel's own view (config_dump `protocol`) wins when the bundle has it; else the
        2022 node ipset; else what istiod derives it from: the `ambient.istio.io/redirection`
        annotation, or `networking.istio.io/tunnel: http` (a sidecar that speaks HBONE).
        """
        ip = pod.ips[0] if pod.ips else None
        steps: list[Step] = []
        view = self.ztunnel_view(ip) if ip is not None else None
        if view is None:
            steps.extend(self.unreadable_dumps())
        if view is not None:
            w, ref = view
            proto = w.protocol
            steps.append(Step(StepKind.ZTUNNEL, f"ztunnel's config_dump lists {pod.name} with protocol "
                              f"{proto}" + (f", waypoint {w.waypoint}" if w.waypoint
                                            else ""), ref))
            # workloadState lists the pods of the dump's own node: the pod's node's dump.
            own = self.snap.ztunnel_configs.get(pod.node or "")
            states = own.states if own is not None else None
            steps.extend(self._disagreement(pod, proto, states))
            return proto == "HBONE", steps
        state = self.snap.nodes.get(pod.node or "")
        host = state.host if state else None
        if host is not None and host.ipsets is not None and LEGACY_IPSET in host.ipsets and ip:
            member = host.ipsets[LEGACY_IPSET].lookup(ip)
            if member is not None:
                return True, steps + [
                    Step(StepKind.ZTUNNEL, f"{pod.name} {ip} is in ipset {LEGACY_IPSET} on "
                                   f"{pod.node}: captured, in the mesh", member.source)]
            return False, steps + [
                Step(StepKind.ZTUNNEL, f"{pod.name} {ip} is NOT in ipset {LEGACY_IPSET} on "
                                f"{pod.node}: not captured", host.ipsets[LEGACY_IPSET].source)]
        ann = pod.annotations.get(REDIRECTION)
        if ann is not None:
            proto = "HBONE" if ann == "enabled" else "TCP"
            steps.append(Step(StepKind.ZTUNNEL, f"{pod.name} is annotated {REDIRECTION}: {ann} (istiod "
                              f"tells ztunnel {proto} for it)", pod.source))
            steps.extend(self._disagreement(pod, proto))
            return ann == "enabled", steps
        if pod.labels.get(istio.TUNNEL) == "http":
            return True, steps + [
                Step(StepKind.ZTUNNEL, f"{pod.name} is labelled networking.istio.io/tunnel: "
                               "http: it accepts HBONE", pod.source)]
        if istio.SIDECAR_STATUS in pod.annotations:
            return False, steps + [
                Step(StepKind.ZTUNNEL, f"{pod.name} has a sidecar (sidecar.istio.io/status) "
                                "and no HBONE tunnel label: ztunnel sends it plain TCP, its "
                                "sidecar takes it", pod.source)]
        return False, steps + [Step(StepKind.ZTUNNEL, f"{pod.name} is not enrolled (no {REDIRECTION} "
                            "annotation): plain TCP", pod.source)]

    def _disagreement(self, pod: Pod, proto: str,
                      states: Mapping[str, str] | None = None) -> list[Step]:
        """Flag where ztunnel's view and the destination's kernel state disagree
        (`ztunnel_view.disagreements`, the same decision as doctor's AMB310)."""
        ns = self.snap.pod_netns(pod.ref)
        if ns is None or proto != "HBONE":
            return []
        role = self.world.roles.get(ns.id, "")
        found = disagreements(pod, ns, Role(role, self.facts.role_of(ns).also_seen), proto,
                              states)
        out = []
        if Disagreement.HBONE_WITHOUT_RULES in found:
            out.append(Step(StepKind.ZTUNNEL, f"DISAGREEMENT: ztunnel will send HBONE to {pod.name}, "
                            f"but its netns has no in-pod redirection rules ({role}): the pod "
                            "is not captured (istio/istio#61182)",
                            SourceRef(cite(ns, "rulesets"))))
        if Disagreement.HBONE_WITHOUT_LISTENER in found:
            out.append(Step(StepKind.ZTUNNEL, f"DISAGREEMENT: ztunnel will send HBONE to {pod.name}:15008, "
                            "but nothing listens on 15008 in its netns (ztunnel is not serving "
                            "this pod)", SourceRef(f"{ns.dir}/ss-listen.txt")))
        if Disagreement.RULES_WITHOUT_PROXY in found and states is not None and pod.uid:
            state = states.get(pod.uid)
            out.append(Step(StepKind.ZTUNNEL, f"DISAGREEMENT: {pod.name}'s netns redirects to ztunnel, "
                            f"but ztunnel's workloadState for UID {pod.uid} is "
                            f"{state or 'absent'}: redirected connections have no proxy "
                            "(istio/istio#55968)", SourceRef(cite(ns, "rulesets"))))
        return out

    # ------------------------------------------------------------------ ztunnel logic
    def _generation(self, d: Delivery) -> str:
        role = self.world.roles.get(d.netns, "")
        return "legacy" if role == "legacy-ztunnel" else "inpod"

    def ztunnel_generation(self, node: str) -> tuple[str | None, Step]:
        """Which ztunnel runs on `node`, from its image tag (cluster/pods.json), else the
        manifest's single ztunnel version, else the process name of its listeners; with
        the evidence. None when nothing in the bundle tells."""
        for pod in self.snap.cluster.pods:
            if pod.node != node:
                continue
            for image in pod.images:
                known = image_component(image)
                if known is None or known[0] != "ztunnel":
                    continue
                gen = ztunnel_generation_of_tag(known[1])
                if gen is not None:
                    return gen, Step(StepKind.ZTUNNEL, f"ztunnel on {node} is {_GEN_NAMES[gen]} (image "
                                     f"{image} of pod {pod.namespace}/{pod.name})", pod.source)
        zt = self.snap.manifest.components.get("ztunnel") if self.snap.manifest else None
        if zt is not None and len(zt) == 1:
            gen = ztunnel_generation_of_tag(str(zt[0]))
            if gen is not None:
                return gen, Step(StepKind.ZTUNNEL, f"ztunnel on {node} is {_GEN_NAMES[gen]} (manifest "
                                 f"components: ztunnel {zt[0]})", SourceRef("manifest.json"))
        state = self.snap.nodes.get(node)
        for ns in (state.pods.values() if state else ()):
            if self.world.roles.get(ns.id) != "legacy-ztunnel":
                continue
            for lst in ns.listeners or ():
                proc = lst.process or ""
                if lst.port == HBONE_PORT and '"envoy"' in proc:
                    return ENVOY_2022, Step(StepKind.ZTUNNEL, f"ztunnel on {node} is "
                                            f"{_GEN_NAMES[ENVOY_2022]} (process envoy listens on "
                                            f"{HBONE_PORT})", lst.source)
                if lst.port == HBONE_PORT and '"ztunnel"' in proc:
                    return RUST_NODE, Step(StepKind.ZTUNNEL, f"ztunnel on {node} is "
                                           f"{_GEN_NAMES[RUST_NODE]} (process ztunnel listens "
                                           f"on {HBONE_PORT} in the node-level design)",
                                           lst.source)
        return None, Step(StepKind.ZTUNNEL, f"the ztunnel version on {node} is unknown (no ztunnel "
                          "image in cluster/pods.json, no ztunnel version in the manifest, no "
                          "process name on its listeners)")

    def ztunnel_next(self, d: Delivery, original: SocketAddr, client: IPAddress,
                     dst_ep: Endpoint, authority: SocketAddr | None) -> _Next | str:
        """The connection ztunnel opens after accepting `d`; a string says why none."""
        ns = self.world.by_id[d.netns]
        gen = self._generation(d)
        where = f"ztunnel ({'ztunnel pod' if gen == 'legacy' else 'in the pod netns'}) on {d.node}"
        expl: list[Step] = []
        if d.component == Component.ZTUNNEL_OUTBOUND:
            expl.append(Step(StepKind.ZTUNNEL, f"{where} takes the outbound connection; the original "
                             f"destination is {original}"
                             + (" (read with getsockname(), TPROXY)" if gen == "legacy"
                                else " (read with SO_ORIGINAL_DST, REDIRECT)")))
            target_pod: Pod | None = None
            port = original.port
            found = self.service_by_vip(original)
            if found is not None:
                svc, idx = found
                eps, why_eps = self.service_endpoints(svc)
                expl.append(why_eps)
                if not eps:
                    return f"Service {svc.namespace}/{svc.name} has no ready endpoints"
                chosen, how = self.pick_endpoint(eps, dst_ep)
                if chosen is None:
                    return how
                target_pod = chosen
                tp = self.target_port(svc, idx, target_pod)
                if tp is None:
                    return (f"Service {svc.namespace}/{svc.name} targetPort "
                            f"{svc.ports[idx].target_port} is not a port of {target_pod.name}")
                port = tp
                others = [p.name for p in eps if p is not target_pod]
                fork = (f"; ztunnel picks one of the {len(eps)} at random per connection "
                        f"(fork: {', '.join(p.name for p in eps)}): {how}" if others else "")
                expl.append(Step(
                    StepKind.ZTUNNEL, f"{original} is Service {svc.namespace}/{svc.name} port "
                    f"{svc.ports[idx].port}: ztunnel load-balances to endpoint {target_pod.name} "
                    f"{_same_family(target_pod, original.ip)}:{port}" + fork, svc.source))
            else:
                target_pod = self.pod_by_ip(original.ip)
                if target_pod is not None:
                    expl.append(Step(StepKind.ZTUNNEL, f"{original.ip} is pod {target_pod.namespace}/"
                                     f"{target_pod.name}", target_pod.source))
            if target_pod is None:
                expl.append(Step(StepKind.ZTUNNEL, f"{original} is neither a Service nor a pod of the "
                                 "cluster: ztunnel passes it through as plain TCP"))
                return _Next(Direction.PASSTHROUGH, f"ztunnel on {d.node}", ns, original.ip,
                             original.port, None, INPOD_MARK if gen == "inpod" else 0, expl)
            via = self._waypoint(found[0] if found is not None else None, target_pod,
                                 original, d.node, expl)
            if isinstance(via, str):
                return via
            if via is not None:
                return _Next(Direction.HBONE, f"ztunnel on {d.node}", ns, via.ips[0], HBONE_PORT, None,
                             INPOD_MARK if gen == "inpod" else 0, expl, original)
            # ztunnel `pick_workload_destination` (src/state.rs): the pod IP the client named,
            # else the workload IP of the original destination's family, else the first one.
            dst_ip = _same_family(target_pod, original.ip)
            inmesh, why = self.captured(target_pod)
            expl.extend(why)
            if inmesh:
                auth = SocketAddr(dst_ip, port)
                hbone_src: IPAddress | None = None
                if gen == "inpod":
                    how = ", socket marked 0x539 so the pod's own rules let it out"
                else:
                    zgen, why_gen = self.ztunnel_generation(d.node)
                    expl.append(why_gen)
                    if zgen == RUST_NODE:
                        hbone_src = client
                        how = (f", from the client's address {client} (original source, "
                               "IP_TRANSPARENT): the node marks it 0x210 and its answer returns "
                               "through connmark 0x210 -> 0x040 -> ip rule 102 -> table 102")
                    elif zgen == ENVOY_2022:
                        how = ", from the ztunnel pod's own address"
                    else:
                        expl.append(Step(StepKind.ZTUNNEL, "the HBONE connection's source address "
                                         "depends on the ztunnel generation (own address in "
                                         "2022, the client's in Istio 1.18-1.20)"))
                        return (f"ztunnel version on {d.node} unknown: whether its HBONE "
                                "connection spoofs the client's address is not known")
                expl.append(Step(StepKind.ZTUNNEL, f"HBONE: mTLS (SPIFFE identities) + HTTP/2 CONNECT to "
                                 f"{SocketAddr(dst_ip, HBONE_PORT)} with :authority {auth}"
                                 + how))
                return _Next(Direction.HBONE, f"ztunnel on {d.node}", ns, dst_ip, HBONE_PORT, hbone_src,
                             INPOD_MARK if gen == "inpod" else 0, expl, auth)
            expl.append(Step(StepKind.ZTUNNEL, f"destination not in the mesh: plain TCP to "
                             f"{SocketAddr(dst_ip, port)}"))
            return _Next(Direction.PLAINTEXT, f"ztunnel on {d.node}", ns, dst_ip, port, None,
                         INPOD_MARK if gen == "inpod" else 0, expl)
        if d.component in (Component.ZTUNNEL_INBOUND_HBONE, Component.ZTUNNEL_INBOUND_PLAINTEXT):
            if d.component == Component.ZTUNNEL_INBOUND_HBONE:
                if authority is None:
                    return "HBONE arrived without a CONNECT target this trace knows"
                target = authority
                expl.append(Step(StepKind.ZTUNNEL, f"{where} terminates mTLS, checks authorization and "
                                 f"the CONNECT :authority {target}"))
            else:
                target = original
                expl.append(Step(StepKind.ZTUNNEL, f"{where} takes plaintext for {target} (inbound "
                                 "passthrough: no peer identity, rejected under STRICT mTLS or "
                                 "allow-only policies)"))
            expl.append(Step(StepKind.ZTUNNEL, f"then connects to the application {target}, spoofing the "
                             f"client address {client}"
                             + (" with SO_MARK 0x539 (over lo)" if gen == "inpod" else
                                " (IP_TRANSPARENT)")))
            return _Next(Direction.INBOUND, f"ztunnel on {d.node}", ns, target.ip, target.port, client,
                         INPOD_MARK if gen == "inpod" else 0, expl)
        return f"{d.component} on {d.node} is not modelled"

    def _waypoint(self, svc: Service | None, target: Pod, original: SocketAddr, node: str,
                  expl: list[Step]) -> Pod | None | str:
        """The waypoint pod ztunnel sends this connection to (HBONE to its 15008, the
        :authority the original destination), None when no waypoint applies, or why the
        trace cannot tell (a named waypoint the bundle cannot place)."""
        addressed = "service" if svc is not None else "workload"
        found = wpt.waypoint_for_traffic(self.snap, pod=None if svc is not None else target,
                                         service=svc)
        if found is None:
            return None
        b, wp, bad = found
        expl.append(Step(StepKind.ZTUNNEL, f"{b.on} uses waypoint {wp.label} ({wpt.USE_WAYPOINT}); "
                         f"the waypoint is for {wp.waypoint_for} traffic "
                         f"({wp.waypoint_for_source})", b.source))
        if bad is not None and bad[0] == "AMB503":
            expl.append(Step(StepKind.ZTUNNEL, f"{bad[1]} ({bad[0]})"))
            self._warnings.append(f"{bad[0]}: {bad[1]}")
            return None
        if bad is not None:
            self._warnings.append(f"{bad[0]}: {bad[1]}")
            return (f"{bad[1]} ({bad[0]}): whether istiod drops the binding (traffic goes "
                    "straight to the destination, L7 policy unenforced) or ztunnel fails the "
                    "connection is not modelled")
        pod = wpt.pick_pod(wp, node)
        others = [p.name for p in wp.ready if p is not pod]
        expl.append(Step(StepKind.ZTUNNEL, f"HBONE: mTLS + HTTP/2 CONNECT to waypoint pod {pod.name} "
                         f"{SocketAddr(pod.ips[0], HBONE_PORT)} on {pod.node} with :authority "
                         f"{original} (the {addressed} address is kept for the waypoint's L7 "
                         "routing and policy)" + (f" (others: {', '.join(others)})"
                                                  if others else ""), pod.source))
        return pod

    def envoy_next(self, ns: NetNamespace, node: str, authority: SocketAddr | None,
                   dst_ep: Endpoint, gateway: str) -> _Next | str:
        """What a waypoint's (or ingress gateway's) Envoy connects to: the endpoint it picks
        for the CONNECT :authority, HBONE to its 15008 when it is in the mesh, else plain
        TCP. Envoy is not captured (`istio.io/dataplane-mode: none`): no mark, no redirect."""
        if authority is None:
            return f"{gateway} on {node} took HBONE without a CONNECT target this trace knows"
        expl = [Step(StepKind.ZTUNNEL, f"{gateway}'s Envoy on {node} terminates mTLS, applies L7 "
                     f"routing and policy (HTTPRoute, AuthorizationPolicy targetRefs) for "
                     f"{authority}")]
        found = self.service_by_vip(authority)
        target = self.pod_by_ip(authority.ip)
        port = authority.port
        if found is not None:
            svc, idx = found
            eps, why_eps = self.service_endpoints(svc)
            if not eps:
                return f"Service {svc.namespace}/{svc.name} has no ready endpoints"
            target, how = self.pick_endpoint(eps, dst_ep)
            if target is None:
                return how
            expl.append(why_eps)
            tp = self.target_port(svc, idx, target)
            if tp is None:
                return (f"Service {svc.namespace}/{svc.name} targetPort "
                        f"{svc.ports[idx].target_port} is not a port of {target.name}")
            port = tp
            expl.append(Step(StepKind.ZTUNNEL, f"Envoy load-balances Service {svc.namespace}/{svc.name} "
                             f"to {target.name} {_same_family(target, authority.ip)}:{port}",
                             svc.source))
        if target is None:
            return f"{authority} is neither a Service nor a pod of the cluster"
        dst_ip = _same_family(target, authority.ip)
        inmesh, why = self.captured(target)
        expl.extend(why)
        if inmesh:
            auth = SocketAddr(dst_ip, port)
            expl.append(Step(StepKind.ZTUNNEL, f"HBONE: mTLS + HTTP/2 CONNECT to "
                             f"{SocketAddr(dst_ip, HBONE_PORT)} with :authority {auth}, from "
                             f"{gateway}'s own address (the destination's ztunnel takes the "
                             "original client from the Forwarded header)"))
            return _Next(Direction.HBONE, f"{gateway} on {node}", ns, dst_ip, HBONE_PORT, None, 0,
                         expl, auth)
        expl.append(Step(StepKind.ZTUNNEL, f"destination not in the mesh: plain TCP to "
                         f"{SocketAddr(dst_ip, port)}"))
        return _Next(Direction.PLAINTEXT, f"{gateway} on {node}", ns, dst_ip, port, None, 0, expl)

    def sidecar_next(self, d: Delivery, original: SocketAddr, dst_ep: Endpoint) -> _Next | str:
        """What a sidecar's Envoy (uid 1337) connects to after taking a connection."""
        ns = self.world.by_id[d.netns]
        if d.component == Component.SIDECAR_INBOUND:
            expl = [Step(StepKind.ZTUNNEL, f"the sidecar's Envoy on {d.node} takes the inbound "
                         f"connection for {original} and forwards it to the application from "
                         "127.0.0.6 as uid 1337 (Istio's inbound passthrough source)")]
            return _Next(Direction.INBOUND, f"sidecar on {d.node}", ns, original.ip, original.port,
                         SIDECAR_INBOUND_SRC, 0, expl, uid=SIDECAR_UID)
        found = self.service_by_vip(original)
        target: SocketAddr = original
        expl = [Step(StepKind.ZTUNNEL, f"the sidecar's Envoy on {d.node} takes the outbound connection "
                     f"for {original} (uid 1337 skips its own redirect)")]
        if found is not None:
            svc, idx = found
            eps = self.endpoints(svc)
            pod, _how = self.pick_endpoint(eps, dst_ep)
            if pod is not None:
                tp = self.target_port(svc, idx, pod)
                if tp is not None:
                    target = SocketAddr(pod.ips[0], tp)
                    expl.append(Step(StepKind.ZTUNNEL, f"Envoy load-balances Service {svc.namespace}/"
                                     f"{svc.name} to {pod.name} {target} (mTLS when the peer "
                                     "has a sidecar or ztunnel, else plain TCP)", svc.source))
        return _Next(Direction.OUTBOUND_SIDECAR, f"sidecar on {d.node}", ns, target.ip, target.port,
                     None, 0, expl, uid=SIDECAR_UID)

    def socket_mark(self, d: Delivery) -> tuple[int, str]:
        """SO_MARK of the socket that accepted `d` (it marks the answer)."""
        if not d.component.startswith("ztunnel-"):
            return 0, ""
        if self._generation(d) == "legacy":
            return LEGACY_SOCKET_MARKS.get(d.component, (0, ""))
        return INPOD_MARK, "in-pod ztunnel sockets carry SO_MARK 1337 (0x539)"

    def _with_reply(self, walker: PathWalker, result: LegResult) -> LegResult:
        """Simulate the answer of a delivered leg; a lost answer means no connection."""
        if result.packet.proto != "tcp":
            return result  # no handshake: nothing comes back that the kernel must route
        if result.disposition == Disposition.REFUSED:
            rep = walker.reply(result, mark=0, mark_why="")
            if rep.disposition != Disposition.DELIVERED:
                return replace(result, reply=rep, disposition=Disposition.DROPPED,
                               reason=(f"{result.reason}; but the reset never returns to the "
                                       f"client (it sees a timeout): {rep.reason}"),
                               culprit=rep.culprit)
            return replace(result, reply=rep)
        if result.disposition != Disposition.DELIVERED or result.delivered_to is None:
            return result
        mark, why = self.socket_mark(result.delivered_to)
        rep = walker.reply(result, mark=mark, mark_why=why)
        if rep.disposition != Disposition.DELIVERED:
            d = result.delivered_to
            return replace(result, reply=rep, disposition=Disposition.DROPPED,
                           reason=(f"the SYN reaches {d.component} on {d.node} "
                                   f"({d.address}:{d.port}), but the answer never returns: "
                                   f"{rep.reason}"),
                           culprit=rep.culprit)
        return replace(result, reply=rep)

    # ------------------------------------------------------------------ the trace
    def trace(self, src: Endpoint, dst: Endpoint, *, proto: str = "tcp",
              plaintext: bool = False, uid: int | None = None,
              endpoint: EndpointSelector | str | None = None) -> Trace:
        """Trace a connection from `src` to `dst` (whose `port` must be set).

        `uid` owns the client's socket when rules match on it: the node's probe SNAT of
        the nftables backend is `meta skuid <kubelet uid>` (istio-datapath.md 3.6), so a
        kubelet probe and a root process on the node take different paths.
        `endpoint` is followed wherever the path forks over endpoints (kube-proxy's random
        choice); every fork is stated, with the branch taken and why.
        """
        if isinstance(endpoint, str):  # a pod name or an address, as typed
            endpoint = _selector_of(endpoint)
        self.endpoint_choice = endpoint
        walker = PathWalker(self.world)
        walker.endpoint = endpoint
        assert dst.ip is not None and dst.port is not None
        request = SocketAddr(dst.ip, dst.port)
        start = src.netns
        warnings: list[str] = []
        opener = f"{src.label} (app)"
        if plaintext:
            state = self.snap.nodes.get(src.node or "")
            if state is None or state.host is None:
                raise ValueError("no node network namespace for --plaintext")
            start = state.host
            opener = f"a client outside the mesh on {src.node} (host network)"
        assert start is not None
        self._warnings = warnings
        legs: list[Leg] = []
        gw = src.pod if (src.pod is not None and not plaintext and proto == "tcp"
                         and wpt.is_ingress_gateway_pod(src.pod)) else None
        if gw is not None:
            # An ingress gateway's Envoy is not captured: it speaks HBONE itself, to the
            # destination's 15008 (or plain TCP to a destination outside the mesh).
            first = self.envoy_next(start, src.node or "?", request, dst,
                                    f"ingress gateway {gw.namespace}/{gw.name}")
            if dst.service is not None and wpt.ingress_uses_waypoint(self.snap, dst.service):
                first = (f"Service {dst.service.namespace}/{dst.service.name} is labelled "
                         f"{wpt.INGRESS_USE_WAYPOINT}: the gateway's route through the waypoint "
                         "is not modelled")
                return self._finish(src, dst, request, legs, walker, warnings,
                                    Disposition.INSUFFICIENT_INFO, first, plaintext)
            if isinstance(first, _Next):
                result = self._with_reply(walker, walker.connect(
                    start, dst=first.dst, dport=first.dport, proto=proto))
                legs.append(Leg(1, first.direction, f"{src.label} (ingress gateway Envoy)",
                                start.id, result, tuple(first.explanation),
                                f"{proto} connect to {SocketAddr(first.dst, first.dport)}",
                                SocketAddr(first.dst, first.dport)))
                return self._follow(src, dst, request, legs, walker, warnings, proto,
                                    result, first.authority, plaintext)
            warnings.append(f"ingress gateway {gw.name}: {first}; traced as a plain client")
        result = self._with_reply(walker, walker.connect(start, dst=dst.ip, dport=dst.port,
                                                         proto=proto, uid=uid))
        legs.append(Leg(1, Direction.OUTBOUND, opener, start.id, result,
                        request=f"{proto} connect to {request}"
                        + (f" as uid {uid}" if uid is not None else ""), target=request,
                        uid=uid))
        return self._follow(src, dst, request, legs, walker, warnings, proto, result, None,
                            plaintext)

    def _follow(self, src: Endpoint, dst: Endpoint, request: SocketAddr, legs: list[Leg],
                walker: PathWalker, warnings: list[str], proto: str, result: LegResult,
                authority: SocketAddr | None, plaintext: bool) -> Trace:
        """Follow what each accepting proxy (ztunnel, sidecar, waypoint) connects to next."""
        client = result.client.ip if result.client else None
        reason = result.reason
        od = result.original_destination
        if dst.service is not None and authority is None and od is not None and \
                str(od) != str(request):
            b = wpt.binding(self.snap, pod=None, service=dst.service)
            if b is not None:
                warnings.append(f"Service {dst.service.namespace}/{dst.service.name} uses waypoint "
                                f"{b.namespace}/{b.name}, but {request} was DNATed to {od} before "
                                "ztunnel saw it: the waypoint (and its L7 policy) is bypassed")
        while result.disposition == Disposition.DELIVERED and result.delivered_to is not None \
                and result.delivered_to.component.startswith(("ztunnel-", "sidecar-",
                                                              "waypoint-")) \
                and len(legs) < 6:
            d = result.delivered_to
            assert result.original_destination is not None and client is not None
            if d.component == Component.ZTUNNEL_DNS:
                legs[-1] = _explained(legs[-1], Step(
                    StepKind.ZTUNNEL, f"ztunnel's DNS proxy on {d.node} answers for {result.original_destination}: "
                    "names of the mesh (Services, ServiceEntries) from its own tables, others "
                    "forwarded with the ztunnel pod's /etc/resolv.conf, not the app pod's "
                    "dnsConfig (istio-datapath.md 3.8)"))
                break
            if d.component == Component.WAYPOINT_HBONE:
                nxt = self.envoy_next(self.world.by_id[d.netns], d.node, authority, dst,
                                      f"waypoint {d.pod}")
            elif d.component.startswith("sidecar-"):
                nxt = self.sidecar_next(d, result.original_destination, dst)
            else:
                nxt = self.ztunnel_next(d, result.original_destination, client, dst, authority)
            if isinstance(nxt, str):
                reason = nxt
                legs[-1] = _explained(legs[-1], Step(StepKind.ZTUNNEL, nxt))
                return self._finish(src, dst, request, legs, walker, warnings,
                                    Disposition.INSUFFICIENT_INFO, nxt, plaintext)
            if nxt.authority is not None:
                authority = nxt.authority
            result = self._with_reply(walker, walker.connect(
                nxt.netns, dst=nxt.dst, dport=nxt.dport, src=nxt.src, mark=nxt.mark, proto=proto,
                uid=nxt.uid))
            legs.append(Leg(len(legs) + 1, nxt.direction, nxt.opener, nxt.netns.id, result,
                            tuple(nxt.explanation), f"{proto} connect to {SocketAddr(nxt.dst, nxt.dport)}"
                            + (f" from {nxt.src}" if nxt.src else "")
                            + (f" mark {nxt.mark:#x}" if nxt.mark else ""),
                            SocketAddr(nxt.dst, nxt.dport), nxt.src, nxt.mark, nxt.uid))
            reason = result.reason
        last = legs[-1].result
        if last.disposition == Disposition.DELIVERED:
            via_ztunnel = any(leg.result.delivered_to is not None
                              and leg.result.delivered_to.component.startswith(("ztunnel-",
                                                                                "sidecar-"))
                              for leg in legs)
            disp = Disposition.DELIVERED if via_ztunnel else Disposition.BYPASSED_MESH
            if disp == Disposition.BYPASSED_MESH:
                reason = "reached the application without passing through any ztunnel"
        else:
            disp = last.disposition
        return self._finish(src, dst, request, legs, walker, warnings, disp, reason, plaintext)

    def _finish(self, src: Endpoint, dst: Endpoint, request: SocketAddr, legs: list[Leg],
                walker: PathWalker, warnings: list[str], disp: Disposition,
                reason: str | None, plaintext: bool) -> Trace:
        errors: list[str] = []
        for leg in legs:
            hops = list(leg.result.hops) + (list(leg.result.reply.hops) if leg.result.reply
                                            else [])
            for hop in hops:
                ns = self.world.by_id.get(hop.netns)
                for prob in ns.problems if ns else ():
                    text = str(prob)
                    bucket = errors if prob.severity == "error" else warnings
                    if text not in bucket:
                        bucket.append(text)
        summary = self.summary(src, legs, disp)
        endpoint = walker.endpoint
        if endpoint is not None and not any(
                s.branches for leg in legs for hop in leg.result.hops for s in hop.steps):
            warnings.append(f"--endpoint {endpoint.text}: no random choice of an endpoint on "
                            "this path; nothing to choose")
        return Trace(src, dst, request, disp, tuple(legs), summary, tuple(walker.assumptions),
                     tuple(warnings), reason, plaintext, tuple(errors),
                     endpoint.text if endpoint else None)

    def summary(self, src: Endpoint, legs: Sequence[Leg], disp: Disposition) -> str:
        """`sleep -> [ambient-worker] ztunnel:15001 -> HBONE -> [ambient-worker2] ztunnel:15008 -> productpage`."""
        parts = [src.short if not legs or legs[0].start_netns == (src.netns.id if src.netns else "")
                 else f"[{src.node}]"]
        for leg in legs:
            r = leg.result
            if leg.direction == "hbone":
                parts.append("HBONE")
            elif leg.direction in ("plaintext", "passthrough"):
                parts.append("plaintext")
            if r.delivered_to is not None:
                d = r.delivered_to
                if d.component.startswith("ztunnel-"):
                    parts.append(f"[{d.node}] ztunnel:{d.port}")
                elif d.component.startswith("waypoint-"):
                    parts.append(f"[{d.node}] waypoint:{d.port}")
                elif d.component.startswith("sidecar-"):
                    parts.append(f"[{d.node}] sidecar:{d.port}")
                else:
                    ns = self.world.by_id[d.netns]
                    parts.append(f"{self.label_of(ns)}:{d.port}")
            else:
                last_hop = r.hops[-1] if r.hops else None
                where = f"[{last_hop.node}]" if last_hop else ""
                parts.append(f"{where} {r.disposition.value.upper()}".strip())
        return " -> ".join(parts) + f"  ({disp.value})"


def _explained(leg: Leg, step: Step) -> Leg:
    """`leg` with one more thing its proxy decided (said after the leg was walked)."""
    return replace(leg, explanation=(*leg.explanation, step))


def _selector_of(text: str) -> EndpointSelector:
    """`--endpoint` text as a selector: its address when it is one (a pod name is matched
    by name where endpoints are pods)."""
    import ipaddress

    try:
        return EndpointSelector.of(text, (ipaddress.ip_address(text),))
    except ValueError:
        return EndpointSelector.of(text, ())


def trace(snap: Snapshot, src: Endpoint, dst: Endpoint, **kw: object) -> Trace:
    """Convenience: one trace over a snapshot."""
    return Tracer(snap).trace(src, dst, **kw)  # type: ignore[arg-type]

