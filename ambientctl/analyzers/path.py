"""Follow one packet through the kernel, namespace by namespace, until a socket takes it.

This is the datapath half of the trace: a *leg* starts at a socket that opens a
connection and ends at the socket that accepts it (a ztunnel listener or the app), or
where the packet dies. In each namespace the kernel's order is followed:

    locally generated: route (source selection) -> OUTPUT (raw, mangle, nat, filter)
                       -> reroute if mark/destination changed -> POSTROUTING -> device
                       (a `local` route loops through `lo`: PREROUTING raw/mangle, INPUT)
    received:          PREROUTING (raw, mangle, nat) -> route (ip rule, table) with
                       reverse-path check -> INPUT -> socket, or ip_forward -> FORWARD
                       -> POSTROUTING -> device

Leaving by a device hands the packet to the namespace at the other end: the veth peer
(matched by ifindex pairs, `eth0@if7`), the far end of a tunnel (geneve/vxlan `remote`),
or, when the link's other end is not in the bundle (kind's docker bridge, a cloud
fabric), the namespace that owns the next-hop address.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from typing import cast

from ambientctl import istio
from ambientctl.analyzers import ipvs, netfilter, routing
from ambientctl.analyzers.derived_facts import DerivedFacts, veth_peer_among
from ambientctl.analyzers.fork import EndpointSelector
from ambientctl.analyzers.packet import Packet, SocketAddr
from ambientctl.analyzers.snapshot import cite, netfilter_files, slot_files
from ambientctl.analyzers.trace_result import (
    Component,
    ConnEntry,
    Delivery,
    Disposition,
    Hop,
    LegResult,
    Step,
    StepKind,
    Tuple4,
)
from ambientctl.model import IPAddress, Link, Listener, NetNamespace, Snapshot, SourceRef

MAX_HOPS = 24
NF_FILES = {4: netfilter_files(4), 6: netfilter_files(6)}  # from the spec table
ZTUNNEL_PORTS = {istio.OUTBOUND_PORT: Component.ZTUNNEL_OUTBOUND,
                 istio.INBOUND_PLAINTEXT_PORT: Component.ZTUNNEL_INBOUND_PLAINTEXT,
                 istio.HBONE_PORT: Component.ZTUNNEL_INBOUND_HBONE,
                 istio.DNS_PORT: Component.ZTUNNEL_DNS}
SIDECAR_PORTS = {istio.OUTBOUND_PORT: Component.SIDECAR_OUTBOUND,
                 istio.INBOUND_PLAINTEXT_PORT: Component.SIDECAR_INBOUND}


@dataclass
class _HopBuilder:
    """A hop while the walk is in it: steps are appended as the kernel acts (frozen into a
    `Hop` when the leg ends)."""

    node: str
    netns: str
    pod: str | None
    role: str
    steps: list[Step] = field(default_factory=list)

    def freeze(self) -> Hop:
        return Hop(self.node, self.netns, self.pod, self.role, tuple(self.steps))


def _ended(disposition: Disposition, hops: list[_HopBuilder], p: Packet,
           delivered_to: Delivery | None = None, original: SocketAddr | None = None,
           reason: str | None = None, culprit: SourceRef | None = None) -> LegResult:
    """The walk ends here: its hops frozen (`_run` adds the first packet, the client and
    the conntrack entries)."""
    return LegResult(disposition, tuple(h.freeze() for h in hops), p, p, delivered_to,
                     original, reason, culprit)


def _tuple(p: Packet) -> Tuple4:
    assert p.src is not None
    return (p.src, p.sport, p.dst, p.dport)


def _reverse(t: Tuple4) -> Tuple4:
    return (t[2], t[3], t[0], t[1])


@dataclass(frozen=True)
class World:
    """What the walk asks of a snapshot at every hop: namespaces by id, who holds an
    address, a namespace's local addresses, its role.

    Built by `build` over the snapshot's shared `DerivedFacts`, every lookup is answered
    when the walk first asks it, so a trace parses only the namespaces its path touches
    (plain dicts still work, for hand-made worlds in tests).
    """

    snap: Snapshot
    by_id: Mapping[str, NetNamespace]
    owners: Mapping[IPAddress, Sequence[tuple[NetNamespace, Link]]]
    local: Mapping[str, frozenset[IPAddress]]
    roles: Mapping[str, str]
    facts: DerivedFacts | None = None

    @classmethod
    def build(cls, snap: Snapshot, roles: Mapping[str, str] | None = None) -> World:
        """The world of `snap`; `roles` overrides the classified role of some namespaces."""
        facts = DerivedFacts.of(snap)
        # ChainMap only reads its later maps; the lazy roles view stays lazy (typeshed asks
        # for MutableMapping there).
        merged: Mapping[str, str] = ChainMap(
            dict(roles), cast("MutableMapping[str, str]", facts.roles)) if roles else facts.roles
        return cls(snap, facts.by_id, facts.owners_view, facts.local_view, merged, facts)


def _step_from_nf(s: netfilter.NfStep, hook: str, p_after: Packet | None = None) -> Step:
    where = f"{s.table.family} {s.table.name} {s.chain}" + (
        f" #{s.position}" if s.position is not None else "")
    return Step(
        kind=StepKind.POLICY if s.action == "policy" else StepKind.RULE,
        summary=f"{where}: {s.summary}",
        source=s.source,
        hook=hook.upper(),
        table=s.table.name,
        chain=s.chain,
        position=s.position,
        mark_before=s.mark_before,
        mark_after=s.mark_after,
        backend=s.table.backend,
        branches=s.branches,
        verdict=s.verdict,
        family=s.table.family,
    )


def _route_steps(r: routing.RouteResult, assumed_note: list[str], ns: NetNamespace) -> list[Step]:
    out: list[Step] = []
    if r.assumed_rules:
        assumed_note.append(f"{ns.label}: ip rule was not collected; assumed the default rules "
                            "(0 local, 32766 main, 32767 default)")
    for rs in r.steps:
        rule = rs.rule
        if rs.outcome == "hit":
            route = rs.route
            assert route is not None
            out.append(Step(StepKind.IP_RULE, f"ip rule {rule.priority} matches: lookup table "
                            f"{route.table}", rule.source, rule_priority=rule.priority))
            how = f"via {r.gateway} " if r.gateway else ""
            out.append(Step(StepKind.ROUTE, f"table {route.table}: {route.type} {route.dst} "
                            f"{how}dev {r.dev}" + (f" src {r.src}" if r.src else ""),
                            route.source, rule_priority=rule.priority, route_table=route.table,
                            device=r.dev))
        else:
            out.append(Step(StepKind.IP_RULE, f"ip rule {rule.priority} matches: {rs.note or rs.outcome}",
                            rule.source, rule_priority=rule.priority))
    for s in r.skipped:
        out.append(Step(StepKind.NOTE, f"route not usable: {s}"))
    return out


class PathWalker:
    """Walks legs through a `World`. Collects assumptions as it goes."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.assumptions: list[str] = []
        self._client: SocketAddr | None = None
        # forward: conntrack entries being built; reply: the entries to match against
        self._open: dict[str, Tuple4] = {}
        self._conns: list[ConnEntry] = []
        self._reply_to: tuple[str, SocketAddr] | None = None
        self.endpoint: EndpointSelector | None = None  # consulted at every fork

    # ---------------------------------------------------------------- helpers
    def _ctx(self, ns: NetNamespace, out_dev: str | None = None,
             out_src: IPAddress | None = None) -> netfilter.Context:
        return netfilter.Context(ns, self.world.local[ns.id], ns.listeners, out_dev, out_src,
                                 endpoint=self.endpoint)

    def _hook(self, hop: _HopBuilder, ns: NetNamespace, hook: str, p: Packet,
              ctx: netfilter.Context) -> netfilter.HookResult:
        res = netfilter.run_hook(ns, hook, p, ctx)
        for s in res.steps:
            hop.steps.append(_step_from_nf(s, hook))
        for n in res.notes:
            if n not in self.assumptions:
                self.assumptions.append(n)
        if res.packet != p and (res.packet.dst != p.dst or res.packet.dport != p.dport
                                or res.packet.src != p.src):
            hop.steps.append(Step(StepKind.NOTE, f"packet now {res.packet.describe()}",
                                  packet=res.packet.describe()))
        return res

    def _nf_missing(self, ns: NetNamespace, family: int) -> str | None:
        """Why this namespace's netfilter state for `family` cannot be trusted, if it can't.

        A dump that failed to parse (truncated, garbage) must stop the trace rather than be
        simulated as if the rules it lost did not exist.
        """
        if ns.rulesets is None:
            st = ns.status("rulesets")
            if st.state == "failed":
                where = f"{st.path}:{st.line}" if st.line else st.path
                return f"{ns.label}: netfilter rules unusable: {where}: {st.reason}"
            if st.state == "not-collected":
                return f"{ns.label}: netfilter rules not collected ({st.path}: {st.reason})"
            return (f"{ns.label}: no netfilter rules in the bundle (none of "
                    f"{', '.join(slot_files('rulesets'))} in {ns.dir})")
        files = NF_FILES[family]
        for prob in ns.problems:
            if prob.severity == "error" and prob.path.rsplit("/", 1)[-1] in files:
                return f"{ns.label}: netfilter rules unusable: {prob}"
        return None

    def _sysctl_default(self, ns: NetNamespace) -> int:
        return 1 if ns.pod is None else 0

    # ---------------------------------------------------------------- the leg
    def connect(
        self,
        start: NetNamespace,
        *,
        dst: IPAddress,
        dport: int,
        proto: str = "tcp",
        src: IPAddress | None = None,
        sport: int = 40000,
        mark: int = 0,
        uid: int | None = None,
    ) -> LegResult:
        """A socket in `start` connects to dst:dport (optionally bound to `src`, with SO_MARK)."""
        p = Packet(family=dst.version, proto=proto, src=src, dst=dst, sport=sport, dport=dport,
                   mark=mark, local_socket=True, uid=uid)
        hops: list[_HopBuilder] = []
        first = p
        ns = start
        hop = self._new_hop(ns, hops)
        hop.steps.append(Step(StepKind.ENTER, f"socket in {ns.label} connects to {p.dst_addr}"
                              + (f" from {src}" if src else "")
                              + (f" with SO_MARK {mark:#x}" if mark else "")))
        self._client = SocketAddr(src, sport) if src is not None else None
        self._open, self._conns, self._reply_to = {}, [], None
        if src is not None:
            self._open[ns.id] = _tuple(p)
        result = self._local_out(ns, p, hop, hops)
        return self._run(result, hops, first)

    def _run(self, result: LegResult | tuple[NetNamespace, Packet],
             hops: list[_HopBuilder], first: Packet) -> LegResult:
        p = first
        for _ in range(MAX_HOPS):
            if isinstance(result, LegResult):
                return replace(result, first_packet=first, client=self._client,
                               conntrack=tuple(self._conns))
            ns, p = result
            hop = self._new_hop(ns, hops)
            hop.steps.append(Step(StepKind.ENTER, f"arrives on {p.iif} in {ns.label}: {p.describe()}",
                                  device=p.iif))
            result = self._receive(ns, p, hop, hops)
        return LegResult(Disposition.LOOP, tuple(h.freeze() for h in hops), p, first,
                         reason=f"more than {MAX_HOPS} namespaces crossed: a routing loop?")

    def reply(self, fwd: LegResult, *, mark: int, mark_why: str) -> LegResult:
        """Simulate the answer (SYN-ACK, or the kernel's RST) back to the connecting socket.

        A connection only exists when its answer finds the way back: on the 2022 design an
        asymmetric return (a pod still in the ipset, a missing table-100 route) sends the
        answer into a ztunnel tunnel instead of to the client, and the client never hears
        back. A SYN-ACK leaves the accepting socket with that socket's SO_MARK; a RST for a
        closed port is sent by the kernel with mark 0 and no socket (`tcp_v4_send_reset`,
        unless net.ipv4.fwmark_reflect). Either meets the connection's conntrack entry in
        every namespace it crosses.
        """
        p0 = fwd.packet
        assert p0.src is not None and fwd.client is not None and fwd.hops
        refused = fwd.disposition == Disposition.REFUSED
        ns = self.world.by_id[fwd.delivered_to.netns if fwd.delivered_to else fwd.hops[-1].netns]
        entry = next((e for e in reversed(fwd.conntrack) if e.netns == ns.id), None)
        if refused and entry is None:
            entry = ConnEntry(ns.id, self._open.get(ns.id, _tuple(p0)), _tuple(p0), p0.ctmark)
        # The answer leaves with the tuple the socket sees: from the address the SYN was
        # addressed to (TPROXY never rewrote it; conntrack maps a REDIRECT back after
        # OUTPUT) to the peer.
        p = Packet(family=p0.family, proto=p0.proto, src=p0.dst, sport=p0.dport,
                   dst=p0.src, dport=p0.sport, mark=0 if refused else mark,
                   local_socket=not refused, ctstate="ESTABLISHED",
                   ctmark=entry.ctmark if entry else 0, dnat_done=True, snat_done=True,
                   tcp_flags="RST,ACK" if refused else "SYN,ACK")
        self._conns = list(fwd.conntrack) + ([entry] if refused and entry else [])
        self._reply_to = (fwd.hops[0].netns, fwd.client)
        hops: list[_HopBuilder] = []
        hop = self._new_hop(ns, hops)
        if refused:
            hop.steps.append(Step(StepKind.ENTER, f"nothing listens: the kernel answers with a reset "
                                  f"{p.describe()}"))
        else:
            hop.steps.append(Step(StepKind.ENTER, f"the accepting socket answers: {p.describe()}"
                                  + (f" (SO_MARK {mark:#x}: {mark_why})" if mark else "")))
        result = self._local_out(ns, p, hop, hops, entry=entry)
        out = self._run(result, hops, p)
        self._reply_to = None
        return out

    def _start_of(self, fwd: LegResult) -> str:
        return fwd.hops[0].netns

    def _reply_arrived(self, ns: NetNamespace, p: Packet, hop: _HopBuilder,
                        hops: list[_HopBuilder]) -> LegResult:
        assert self._reply_to is not None
        want_ns, client = self._reply_to
        if ns.id == want_ns and p.dst == client.ip and p.dport == client.port:
            hop.steps.append(Step(StepKind.DELIVER, f"the answer reaches the connecting socket {client}: "
                                  "the handshake completes"))
            return _ended(Disposition.DELIVERED, hops, p)
        where = self.world.by_id[want_ns].label
        reason = (f"the answer to {client} is delivered locally in {ns.label}"
                  + (f" (TPROXY to {p.tproxy})" if p.tproxy else "")
                  + f" instead of returning to the client in {where}: the handshake never "
                  "completes")
        hop.steps.append(Step(StepKind.DROP, reason))
        return _ended(Disposition.DROPPED, hops, p, reason=reason)

    def _new_hop(self, ns: NetNamespace, hops: list[_HopBuilder]) -> _HopBuilder:
        hop = _HopBuilder(ns.node, ns.id, str(ns.pod) if ns.pod else None,
                  self.world.roles.get(ns.id, "unknown"))
        hops.append(hop)
        return hop

    def _end(self, disp: Disposition, hops: list[_HopBuilder], p: Packet, reason: str,
             culprit: SourceRef | None = None) -> LegResult:
        hops[-1].steps.append(Step(StepKind.DROP, reason, culprit))
        return _ended(disp, hops, p, reason=reason, culprit=culprit)

    def _route(self, ns: NetNamespace, p: Packet, hop: _HopBuilder, *, iif: str | None
               ) -> routing.RouteResult:
        r = routing.lookup(ns, dst=p.dst, src=p.src, mark=p.mark, iif=iif,
                           oif=p.bound_dev, proto=p.proto, sport=p.sport, dport=p.dport, uid=p.uid)
        hop.steps.extend(_route_steps(r, self.assumptions, ns))
        return r

    def _route_fail(self, r: routing.RouteResult, hops: list[_HopBuilder], p: Packet) -> LegResult:
        if r.kind == "insufficient-info":
            return self._end(Disposition.INSUFFICIENT_INFO, hops, p, r.reason or "routing unknown")
        culprit = r.route.source if r.route else (r.rule.source if r.rule else None)
        if r.kind == "no-route":
            return self._end(Disposition.NO_ROUTE, hops, p, r.reason or "no route", culprit)
        return self._end(Disposition.DROPPED if r.kind == "blackhole" else Disposition.NO_ROUTE,
                         hops, p, r.reason or r.kind, culprit)

    def _local_out(self, ns: NetNamespace, p: Packet, hop: _HopBuilder, hops: list[_HopBuilder],
                   entry: ConnEntry | None = None) -> LegResult | tuple[NetNamespace, Packet]:
        if (why := self._nf_missing(ns, p.family)) is not None:
            return self._end(Disposition.INSUFFICIENT_INFO, hops, p, why)
        r = self._route(ns, p, hop, iif=None)
        if r.kind not in ("unicast", "local"):
            return self._route_fail(r, hops, p)
        if p.src is None:
            if r.src is None:
                return self._end(Disposition.INSUFFICIENT_INFO, hops, p,
                                 f"no source address for the route via {r.dev} in {ns.label}")
            p = replace(p, src=r.src)
            self._client = SocketAddr(r.src, p.sport)
            self._open[ns.id] = _tuple(p)
            hop.steps.append(Step(StepKind.NOTE, f"source address {r.src} (from the route)",
                                  packet=p.describe()))
        before = p
        res = self._hook(hop, ns, "output", p, self._ctx(ns, r.dev, r.src))
        if res.verdict != "accept":
            return self._nf_fail(res, hops)
        p = res.packet
        if entry is not None:
            p = self._unnat(p, entry, hop)
        if p.mark != before.mark or p.dst != before.dst:
            # mangle OUTPUT (a "route" chain) or nat OUTPUT changed what routing looks at:
            # the kernel re-routes (`ip_route_me_harder`).
            hop.steps.append(Step(StepKind.NOTE, "mark or destination changed in OUTPUT: re-route"))
            r = self._route(ns, p, hop, iif=None)
            if r.kind not in ("unicast", "local"):
                return self._route_fail(r, hops, p)
        out_dev = "lo" if r.kind == "local" else r.dev
        res = self._hook(hop, ns, "postrouting", p, self._ctx(ns, out_dev, p.src))
        if res.verdict != "accept":
            return self._nf_fail(res, hops)
        p = res.packet
        if r.kind == "local":
            # Looped back through lo: PREROUTING (raw, mangle; nat already decided), then
            # INPUT. The output route stays attached to the skb: no new routing decision.
            hop.steps.append(Step(StepKind.EXIT, "local destination: loops back through lo",
                                  device="lo"))
            p = replace(p, iif="lo")
            res = self._hook(hop, ns, "prerouting", p, self._ctx(ns))
            if res.verdict != "accept":
                return self._nf_fail(res, hops)
            return self._local_in(ns, res.packet, hop, hops)
        return self._exit(ns, p, r, hop, hops)

    def _receive(self, ns: NetNamespace, p: Packet, hop: _HopBuilder, hops: list[_HopBuilder]
                 ) -> LegResult | tuple[NetNamespace, Packet]:
        if (why := self._nf_missing(ns, p.family)) is not None:
            return self._end(Disposition.INSUFFICIENT_INFO, hops, p, why)
        entry: ConnEntry | None = None
        if self._reply_to is None:
            self._open[ns.id] = _tuple(p)
        else:
            entry = self._match(ns, p)
            if entry is not None:
                p = replace(p, ctstate="ESTABLISHED", ctmark=entry.ctmark, dnat_done=True,
                            snat_done=True)
                hop.steps.append(Step(StepKind.NOTE, f"conntrack: answer of the connection seen here "
                                      f"(ctmark {entry.ctmark:#x}); nat tables are skipped"))
            else:
                # A SYN-ACK or RST that opens no connection: nf_conntrack_tcp's state table
                # has no transition from NONE for it (tcp_new() refuses), so the packet is
                # ctstate INVALID, carries no conntrack entry, and the nat chains - which
                # only see a connection's first packet - are not consulted.
                p = replace(p, ctstate="INVALID", dnat_done=True, snat_done=True)
                hop.steps.append(Step(StepKind.NOTE, "conntrack: no entry for this answer here "
                                      "(the connection never passed this namespace): ctstate "
                                      "INVALID, nat tables are not consulted"))
        res = self._hook(hop, ns, "prerouting", p, self._ctx(ns))
        if res.verdict != "accept":
            return self._nf_fail(res, hops)
        p = res.packet
        if entry is not None:
            # The answer's destination is restored at PREROUTING (inverse of the SNAT), its
            # source only at POSTROUTING/INPUT (inverse of the DNAT, nf_nat_inet_fn's
            # manip per hook): routing and the source checks see the source as it came.
            p = self._unnat(p, entry, hop, "dst")
        assert p.iif is not None
        if (martian := self._martian_loopback(ns, p)) is not None:
            return self._end(Disposition.DROPPED, hops, p, martian[0], martian[1])
        r = self._route(ns, p, hop, iif=p.iif)
        if r.kind not in ("unicast", "local"):
            return self._route_fail(r, hops, p)
        assert p.src is not None
        check = routing.validate_source(ns, src=p.src, dst=p.dst, iif=p.iif, mark=p.mark)
        if check.assumed:
            self._assume(f"{ns.label}: rp_filter not in the bundle; assumed 0 (kernel default)")
        if not check.ok:
            return self._end(Disposition.DROPPED, hops, p, check.summary,
                             check.evidence[-1] if check.evidence else None)
        if check.evidence or "rp_filter=0" not in check.summary:
            hop.steps.append(Step(StepKind.SYSCTL, check.summary,
                                  check.evidence[-1] if check.evidence else None))
        if r.kind == "local":
            if entry is not None:
                p = self._unnat(p, entry, hop, "src")
            return self._local_in(ns, p, hop, hops)
        if p.tproxy is not None:
            # ip_forward() drops an skb that already has a socket assigned.
            return self._end(Disposition.DROPPED, hops, p,
                             f"TPROXY assigned {p.tproxy} but the route is not local (no ip rule "
                             "sends the TPROXY mark to a local table): the kernel drops it")
        fwd = routing.ip_forward(ns, p.family, self._sysctl_default(ns))
        if fwd.assumed:
            self._assume(f"{ns.label}: ip_forward not in the bundle; assumed "
                         f"{fwd.value} ({'node' if ns.pod is None else 'pod'} default)")
        if not fwd.value:
            return self._end(Disposition.DROPPED, hops, p, f"{ns.label} does not forward "
                             f"(ip_forward=0) and {p.dst} is not local", fwd.source)
        hop.steps.append(Step(StepKind.SYSCTL, f"forwarding (ip_forward={fwd.value})", fwd.source))
        res = self._hook(hop, ns, "forward", p, self._ctx(ns, r.dev))
        if res.verdict != "accept":
            return self._nf_fail(res, hops)
        p = res.packet
        out_src = routing.select_source(ns, r.route, p.dst) if r.route else None
        res = self._hook(hop, ns, "postrouting", p, self._ctx(ns, r.dev, out_src))
        if res.verdict != "accept":
            return self._nf_fail(res, hops)
        p = res.packet
        if entry is not None:
            p = self._unnat(p, entry, hop, "src")
        return self._exit(ns, p, r, hop, hops)

    def _martian_loopback(self, ns: NetNamespace, p: Packet
                          ) -> tuple[str, SourceRef | None] | None:
        """127.0.0.0/8 arriving on a real device is a martian (`ip_route_input_slow`):
        always as a source, and as a destination unless route_localnet is set on it
        (ip-sysctl.rst) - e.g. a DNAT to 127.0.0.1 in PREROUTING."""
        if p.iif == "lo" or p.family != 4:
            return None
        assert p.src is not None and p.iif is not None  # a received packet has both
        if p.src.is_loopback:
            return f"martian source {p.src} on {p.iif}: the kernel drops it", None
        if p.dst.is_loopback:
            all_v, dev_v = routing.conf(ns, p.iif, "route_localnet", 0)
            if not (all_v.value or dev_v.value):
                if all_v.assumed and dev_v.assumed:
                    self._assume(f"{ns.label}: route_localnet not in the bundle; assumed 0")
                return (f"martian destination {p.dst} on {p.iif} (route_localnet=0): the kernel "
                        "drops it", dev_v.source or all_v.source)
        return None

    def _assume(self, text: str) -> None:
        if text not in self.assumptions:
            self.assumptions.append(text)

    def _nf_fail(self, res: netfilter.HookResult, hops: list[_HopBuilder]) -> LegResult:
        if res.verdict == "insufficient-info":
            return self._end(Disposition.INSUFFICIENT_INFO, hops, res.packet,
                             res.reason or "netfilter undecidable", res.culprit)
        return self._end(Disposition.DROPPED, hops, res.packet,
                         f"{res.verdict}: {res.reason}", res.culprit)

    def _local_in(self, ns: NetNamespace, p: Packet, hop: _HopBuilder, hops: list[_HopBuilder]
                  ) -> LegResult | tuple[NetNamespace, Packet]:
        res = self._hook(hop, ns, "input", p, self._ctx(ns))
        if res.verdict != "accept":
            return self._nf_fail(res, hops)
        p = res.packet
        if self._reply_to is None and ipvs.takes(ns, p):
            return self._ipvs(ns, p, hop, hops)
        return self._deliver(ns, p, hop, hops)

    def _ipvs(self, ns: NetNamespace, p: Packet, hop: _HopBuilder, hops: list[_HopBuilder]
              ) -> LegResult | tuple[NetNamespace, Packet]:
        """IPVS at LOCAL_IN (after filter INPUT): a virtual service DNATs to a real server
        and sends the packet on (ip_vs_nat_xmit); see ambientctl.analyzers.ipvs."""
        if ipvs.held_by_ipvs(ns, p.dst):
            where = f"{p.dst} is an address of {ipvs.IPVS_DEVICE} (kube-proxy IPVS mode)"
        else:  # a NodePort-style virtual service on one of the node's own addresses
            where = (f"{ns.label} is in kube-proxy IPVS mode ({ipvs.IPVS_DEVICE} exists) and "
                     f"{p.dst_addr} is local: IPVS looks it up at LOCAL_IN")
        if ns.ipvs is None:
            return self._end(Disposition.INSUFFICIENT_INFO, hops, p,
                             f"insufficient-info: IPVS: {where} but {ns.dir}/ipvsadm.txt "
                             "(`ipvsadm -Ln --exact`) is not in the bundle: the virtual "
                             "service and its real servers are unknown")
        svc = ipvs.virtual_service(ns.ipvs, p)
        if svc is None:
            hop.steps.append(Step(StepKind.NOTE, f"{where}; no IPVS virtual service for {p.proto} "
                                  f"{p.dst_addr}: delivered locally"))
            return self._deliver(ns, p, hop, hops)
        if not svc.reals:
            return self._end(Disposition.DROPPED, hops, p, f"IPVS virtual service "
                             f"{p.proto} {p.dst_addr} has no real server: dropped", svc.source)
        reals = [r for r in svc.reals if r.weight > 0] or list(svc.reals)
        unmodelled = [r for r in reals if r.forward != "Masq"]
        if unmodelled:
            return self._end(Disposition.INSUFFICIENT_INFO, hops, p,
                             f"IPVS forwarding `{unmodelled[0].forward}` of {p.dst_addr} is "
                             "not modelled (only Masq, kube-proxy's)", unmodelled[0].source)
        pick, why = 0, "the first"
        if self.endpoint is not None:
            hit = self.endpoint.pick([r.address for r in reals])
            if hit is not None:
                pick, why = hit, f"--endpoint {self.endpoint.text}"
        real = reals[pick]
        target = SocketAddr(real.address, real.port)
        if len(reals) > 1:
            others = tuple(f"{SocketAddr(r.address, r.port)} (weight {r.weight})"
                           for i, r in enumerate(reals) if i != pick)
            self._assume(f"{ns.label}: IPVS ({svc.scheduler}) picks one of {len(reals)} real "
                         f"servers of {p.proto} {p.dst_addr}: " + ", ".join(
                             str(SocketAddr(r.address, r.port)) for r in reals)
                         + f". Followed {target} ({why}).")
        else:
            others = ()
        q = replace(p, dst=real.address, dport=real.port, dnat_done=True,
                    original_dst=p.original_dst or p.dst_addr)
        hop.steps.append(Step(StepKind.RULE, f"IPVS {p.proto} {p.dst_addr} {svc.scheduler}: Masq -> "
                              f"{target}", real.source, hook="INPUT", branches=others,
                              packet=q.describe()))
        # ip_vs_nat_xmit routes the rewritten packet and sends it through LOCAL_OUT's
        # successor POSTROUTING (ip_vs_nat_send_or_cont) out of the node.
        r = self._route(ns, q, hop, iif=None)
        if r.kind != "unicast":
            return self._route_fail(r, hops, q)
        out_src = routing.select_source(ns, r.route, q.dst) if r.route else None
        res = self._hook(hop, ns, "postrouting", q, self._ctx(ns, r.dev, out_src))
        if res.verdict != "accept":
            return self._nf_fail(res, hops)
        return self._exit(ns, res.packet, r, hop, hops)

    def _close(self, ns: NetNamespace, p: Packet) -> None:
        if self._reply_to is None and ns.id in self._open:
            self._conns.append(ConnEntry(ns.id, self._open.pop(ns.id), _tuple(p), p.ctmark))

    def _match(self, ns: NetNamespace, p: Packet) -> ConnEntry | None:
        if p.src is None:
            return None
        for e in self._conns:
            if e.netns == ns.id and _reverse(e.t_out) == _tuple(p):
                return e
        return None

    def _unnat(self, p: Packet, e: ConnEntry, hop: _HopBuilder, part: str = "both") -> Packet:
        """Undo the connection's NAT on its answer: back to the reverse of the tuple it came in as.

        `part` "dst" restores only the destination, "src" only the source.
        """
        rev = _reverse(e.t_in)
        have = _tuple(p)
        want = (rev[0] if part != "dst" else have[0], rev[1] if part != "dst" else have[1],
                rev[2] if part != "src" else have[2], rev[3] if part != "src" else have[3])
        if have != want:
            q = replace(p, src=want[0], sport=want[1], dst=want[2], dport=want[3])
            hop.steps.append(Step(StepKind.NOTE, f"conntrack reverses the NAT: {q.describe()}",
                                  packet=q.describe()))
            return q
        return p

    def _deliver(self, ns: NetNamespace, p: Packet, hop: _HopBuilder,
                        hops: list[_HopBuilder]) -> LegResult:
        if self._reply_to is not None:
            return self._reply_arrived(ns, p, hop, hops)
        self._close(ns, p)
        if p.tproxy is not None:
            # TPROXY picks the socket without rewriting the packet: getsockname() is the
            # destination as it arrived, unless a nat chain after mangle (REDIRECT/DNAT)
            # rewrote it too. The original destination is conntrack's original tuple
            # (SO_ORIGINAL_DST, which ztunnel reads before getsockname()).
            want, local = p.tproxy, p.dst_addr
            original = p.original_dst or p.dst_addr
        else:
            want = p.dst_addr
            local = p.dst_addr
            original = p.original_dst or p.dst_addr
        listener = netfilter.find_listener(ns.listeners, want.ip, want.port, p.proto)
        # UDP sockets are in their own file (older bundles lack it: then assume).
        udp_unknown = p.proto == "udp" and "ss-listen-udp.txt" not in ns.files
        if ns.listeners is not None and listener is None and not udp_unknown:
            return _ended(Disposition.REFUSED, hops, p,
                             reason=f"nothing listens on {want} in {ns.label}: the kernel "
                             + ("answers ICMP port unreachable" if p.proto == "udp" else
                                "answers with a TCP reset (connection refused)"),
                             culprit=SourceRef(f"{ns.dir}/ss-listen"
                                               f"{'-udp' if p.proto == 'udp' else ''}.txt"))
        if listener is None:
            what = "ss-listen-udp.txt" if p.proto == "udp" else "ss-listen.txt"
            self._assume(f"{ns.label}: no {what}; assumed something listens on {want}")
        bound = _bound(listener, want)
        component = self.component(ns, want.port, listener)
        delivery = Delivery(node=ns.node, pod=str(ns.pod) if ns.pod else None, netns=ns.id,
                            address=bound, port=want.port, component=component, local=local,
                            listener=listener.source if listener else None)
        proc = f" ({listener.process})" if listener and listener.process else ""
        hop.steps.append(Step(StepKind.DELIVER, f"delivered to {component} listening on "
                              f"{bound}:{want.port}{proc}; original destination {original}",
                              listener.source if listener else None))
        return _ended(Disposition.DELIVERED, hops, p, delivery, original)

    def component(self, ns: NetNamespace, port: int, listener: Listener | None) -> Component:
        """Which program a port in this namespace belongs to, from the namespace's role."""
        role = self.world.roles.get(ns.id, "")
        proc = (listener.process or "") if listener else ""
        if port in ZTUNNEL_PORTS and (
            role in ("legacy-ztunnel", "inpod-ambient", "cilium-ztunnel") or "ztunnel" in proc
        ):
            return ZTUNNEL_PORTS[port]
        if port in SIDECAR_PORTS and (role == "sidecar" or "envoy" in proc):
            return SIDECAR_PORTS[port]
        if port == istio.HBONE_PORT and role == "waypoint":  # a waypoint's Envoy takes HBONE itself
            return Component.WAYPOINT_HBONE
        return Component.APP

    # ---------------------------------------------------------------- crossing
    def _exit(self, ns: NetNamespace, p: Packet, r: routing.RouteResult, hop: _HopBuilder,
              hops: list[_HopBuilder]) -> LegResult | tuple[NetNamespace, Packet]:
        dev = r.dev
        if dev is None:
            return self._end(Disposition.INSUFFICIENT_INFO, hops, p, "route without a device")
        link = ns.link(dev)
        if link is None:
            return self._end(Disposition.INSUFFICIENT_INFO, hops, p,
                             f"device {dev} is not in {cite(ns, 'links')}")
        if not link.admin_up:
            return self._end(Disposition.DROPPED, hops, p, f"device {dev} is down",
                             link.source)
        nexthop = r.gateway or p.dst
        found = self.next_namespace(ns, link, nexthop)
        if found is None:
            return self._end(Disposition.LEFT_BUNDLE, hops, p,
                             f"leaves {ns.label} by {dev} towards {nexthop}: nothing in the bundle "
                             "owns that next hop", link.source)
        nxt, in_link, how = found
        if not in_link.admin_up:
            return self._end(Disposition.DROPPED, hops, p,
                             f"{in_link.name} in {nxt.label} is down", in_link.source)
        if how.startswith("veth peer") and nxt.node == ns.node:
            # The frame reaches the peer only once ARP/NDP resolved the next hop to it.
            # (Only for a pair inside one node: a veth paired across nodes by ifindex alone
            # is a guess, and the real far end may be a bridge the bundle does not hold.)
            nb = routing.neighbour_answers(ns, dev, nexthop, nxt, in_link.name,
                                           self.world.local[nxt.id])
            if nb.ok is None:
                return self._end(Disposition.INSUFFICIENT_INFO, hops, p, nb.summary,
                                 link.source)
            if not nb.ok:
                return self._end(Disposition.DROPPED, hops, p, nb.summary,
                                 nb.evidence[-1] if nb.evidence else link.source)
        hop.steps.append(Step(StepKind.EXIT, f"leaves by {dev} ({how}) -> {nxt.label} {in_link.name}",
                              link.source, device=dev, next_netns=nxt.id))
        self._close(ns, p)
        crossed = p.crossed(in_link.name)
        if self._reply_to is not None:
            # The answer's state in the next namespace is decided there (`_receive`): its
            # conntrack entry (ESTABLISHED) or none at all (INVALID).
            crossed = replace(crossed, tcp_flags=p.tcp_flags, ctstate="INVALID")
        return nxt, crossed

    def next_namespace(self, ns: NetNamespace, link: Link, nexthop: IPAddress
                       ) -> tuple[NetNamespace, Link, str] | None:
        """Where a packet sent on `link` towards `nexthop` arrives."""
        # A veth pair lives in one kernel: its peer is in a namespace of the SAME node,
        # never on another one. Ifindexes are small per-netns counters (a pod's eth0 is
        # 2 on every node), so a pair matched across nodes by index alone is a
        # coincidence - e.g. node A's eth0 (peer on the docker host, not in the bundle)
        # "paired" with node B's pod veth, and B's eth0 back with A's: a false LOOP
        # once the node that truly owns the next hop is missing from the bundle.
        facts = self.world.facts
        paired = (facts.veth_peer(ns, link) if facts is not None
                  else veth_peer_among(ns, link, self.world.by_id.values()))
        if paired is not None:
            other, peer = paired
            return other, peer, f"veth peer {peer.name}@if{link.index}"
        if link.kind in ("geneve", "vxlan") and link.tunnel_remote is not None:
            for other, _olink in self.world.owners.get(link.tunnel_remote, []):
                for tl in other.links or ():
                    if tl.kind == link.kind and tl.tunnel_id == link.tunnel_id:
                        return other, tl, (f"{link.kind} id {link.tunnel_id} to "
                                           f"{link.tunnel_remote}")
        for other, olink in self.world.owners.get(nexthop, []):
            if other.id != ns.id:
                return other, olink, f"next hop {nexthop} is {other.label}'s {olink.name}"
        return None


def _bound(listener: Listener | None, want: SocketAddr) -> str:
    if listener is None:
        return str(want.ip)
    if listener.address is None:
        return "0.0.0.0" if listener.family == 4 else "::" if listener.family == 6 else "*"
    return str(listener.address)

