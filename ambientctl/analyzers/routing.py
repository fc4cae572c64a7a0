"""The kernel's routing decision: `ip rule` policy, then longest-prefix match per table.

Rules are tried in priority order (ties keep the kernel's listing order). A rule matches
when all its selectors do (`ip-rule(8)`): from/to prefixes, fwmark under its mask,
iif (for locally generated packets the input interface is `lo`: "If the interface is
loopback, the rule only matches packets originating from this host"), oif (only sockets
bound to a device), ipproto/sport/dport/uidrange; `not` inverts the whole selector.
Actions: `lookup` a table (no match there, a `throw` route, or a result suppressed by
`suppress_prefixlength` continues with the next rule), `goto` the rule whose priority
equals the target (an unresolved goto is skipped, `fib_rules_lookup`), `nop`, or a final
`blackhole`/`unreachable`/`prohibit`.

Within a table the longest prefix wins, then the lowest metric. Routes through a device
that is administratively down are not used (the kernel removes them; a dump taken in
between can still show them).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ambientctl.model import (
    IPAddress,
    IpRule,
    NetNamespace,
    Route,
    RouteType,
    RuleAction,
    SourceRef,
)

# The rules every namespace has when `ip rule` was not collected (`ip rule` on a fresh netns).
_DEFAULT_RULES = ((0, "local"), (32766, "main"), (32767, "default"))


@dataclass(frozen=True, slots=True)
class RuleStep:
    """One ip rule that matched the packet, and what came of it."""

    rule: IpRule
    outcome: str  # "hit" | "no-route" | "throw" | "suppressed" | "goto" | "nop" | "final"
    route: Route | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class RouteResult:
    """Where the routing decision sends the packet."""

    kind: str  # unicast | local | broadcast | blackhole | unreachable | prohibit | no-route |
    # insufficient-info
    steps: tuple[RuleStep, ...]
    rule: IpRule | None = None
    route: Route | None = None
    table: str | None = None
    dev: str | None = None
    gateway: IPAddress | None = None
    src: IPAddress | None = None  # preferred source for locally generated packets
    reason: str | None = None
    assumed_rules: bool = False
    skipped: tuple[str, ...] = ()  # routes passed over (device down ...)

    @property
    def nexthop(self) -> IPAddress | None:
        """The address the packet is handed to: the gateway, or the destination itself."""
        return self.gateway


def _mark_ok(rule: IpRule, mark: int) -> bool:
    return rule.fwmark is None or (mark & rule.fwmask) == (rule.fwmark & rule.fwmask)


def rule_matches(
    rule: IpRule,
    *,
    src: IPAddress | None,
    dst: IPAddress,
    mark: int,
    iif: str | None,
    oif: str | None,
    proto: str,
    sport: int,
    dport: int,
    uid: int | None,
) -> bool:
    """Does `rule`'s selector match (before `not` is applied, then applied)?"""
    ok = True
    if rule.src is not None:
        # An unbound socket's first lookup uses source 0.0.0.0 (only `from all` matches).
        probe = src if src is not None else ipaddress.ip_address("0.0.0.0" if dst.version == 4 else "::")
        ok = ok and probe in rule.src
    if rule.dst is not None:
        ok = ok and dst in rule.dst
    ok = ok and _mark_ok(rule, mark)
    if rule.iif is not None:
        ok = ok and rule.iif == (iif or "lo")
    if rule.oif is not None:
        ok = ok and oif is not None and rule.oif == oif
    if rule.ipproto is not None:
        ok = ok and rule.ipproto.lower() in (proto, {"tcp": "6", "udp": "17"}.get(proto))
    if rule.sport is not None:
        ok = ok and rule.sport[0] <= sport <= rule.sport[1]
    if rule.dport is not None:
        ok = ok and rule.dport[0] <= dport <= rule.dport[1]
    if rule.uidrange is not None:
        ok = ok and uid is not None and rule.uidrange[0] <= uid <= rule.uidrange[1]
    return (not ok) if rule.invert else ok


def table_lookup(
    ns: NetNamespace, table: str, dst: IPAddress
) -> tuple[Route | None, tuple[str, ...]]:
    """Longest-prefix match of `dst` in `table` (then lowest metric); skipped routes noted."""
    best: Route | None = None
    skipped: list[str] = []
    for route in ns.routes or ():
        if route.table != table or route.family != dst.version or dst not in route.dst:
            continue
        if route.dev is not None and route.type not in (RouteType.LOCAL, RouteType.BROADCAST):
            link = ns.link(route.dev)
            if link is not None and not link.admin_up:
                skipped.append(f"{route.source.text or route.dst} (device {route.dev} is down)")
                continue
        if "dead" in route.flags:
            skipped.append(f"{route.source.text or route.dst} (next hop dead)")
            continue
        if best is None or route.dst.prefixlen > best.dst.prefixlen or (
            route.dst.prefixlen == best.dst.prefixlen and route.metric < best.metric
        ):
            best = route
    return best, tuple(skipped)


def _default_rules(ns: NetNamespace, family: int) -> tuple[IpRule, ...]:
    return tuple(
        IpRule(family=family, priority=prio, action=RuleAction.LOOKUP, table=table,
               source=SourceRef(f"{ns.dir}/ip-rule (not collected: assumed default)", None,
                                f"{prio}:\tfrom all lookup {table}"))
        for prio, table in _DEFAULT_RULES
    )


def select_source(ns: NetNamespace, route: Route, dst: IPAddress) -> IPAddress | None:
    """The source address the kernel picks for a locally generated packet on `route`.

    `src` on the route wins; for a `local` route, the destination itself; otherwise the
    first primary address of the output device in the same subnet as the next hop, else
    its first address (`inet_select_addr`).
    """
    if route.src is not None:
        return route.src
    if route.type == RouteType.LOCAL:
        return dst
    link = ns.link(route.dev) if route.dev else None
    if link is None:
        return None
    target = route.gateway or dst
    fallback: IPAddress | None = None
    for addr in link.addresses:
        if addr.interface.version != dst.version or addr.scope == "link" and dst.version == 6:
            continue
        if target in addr.interface.network:
            return addr.interface.ip
        fallback = fallback or addr.interface.ip
    if fallback is None:
        # No address on the device: the kernel picks one from any device (scope global).
        for _, addr in ns.addresses():
            if addr.interface.version == dst.version and not addr.interface.ip.is_loopback:
                return addr.interface.ip
    return fallback


def lookup(
    ns: NetNamespace,
    *,
    dst: IPAddress,
    src: IPAddress | None = None,
    mark: int = 0,
    iif: str | None = None,
    oif: str | None = None,
    proto: str = "tcp",
    sport: int = 0,
    dport: int = 0,
    uid: int | None = None,
) -> RouteResult:
    """The routing decision for one packet in `ns` (iif None = locally generated)."""
    family = dst.version
    if ns.routes is None:
        return RouteResult("insufficient-info", (), reason=f"{ns.label}: routes were not collected "
                           f"or could not be parsed ({ns.dir}/ip-route.*)")
    rules = tuple(r for r in ns.rules if r.family == family) if ns.rules is not None else ()
    assumed = False
    if not rules:
        rules = _default_rules(ns, family)
        assumed = True
    ordered = sorted(rules, key=lambda r: r.priority)  # stable: ties keep listing order
    steps: list[RuleStep] = []
    skipped_all: list[str] = []
    i = 0
    hops = 0
    while i < len(ordered):
        rule = ordered[i]
        i += 1
        if not rule_matches(rule, src=src, dst=dst, mark=mark, iif=iif, oif=oif, proto=proto,
                            sport=sport, dport=dport, uid=uid):
            continue
        if rule.action == RuleAction.NOP:
            steps.append(RuleStep(rule, "nop"))
            continue
        if rule.action == RuleAction.GOTO:
            target = next((j for j, r in enumerate(ordered) if r.priority == rule.goto), None)
            if target is None or rule.unresolved:
                steps.append(RuleStep(rule, "nop", note=f"goto {rule.goto} is unresolved: skipped"))
                continue
            steps.append(RuleStep(rule, "goto", note=f"continue at priority {rule.goto}"))
            hops += 1
            if hops > 256:
                return RouteResult("insufficient-info", tuple(steps), rule=rule,
                                   reason="ip rule goto loop", assumed_rules=assumed)
            i = target
            continue
        if rule.action in (RuleAction.BLACKHOLE, RuleAction.UNREACHABLE, RuleAction.PROHIBIT):
            steps.append(RuleStep(rule, "final"))
            return RouteResult(str(rule.action), tuple(steps), rule=rule,
                               reason=f"ip rule {rule.priority}: {rule.action}",
                               assumed_rules=assumed)
        table = rule.table or "main"
        route, skipped = table_lookup(ns, table, dst)
        skipped_all.extend(skipped)
        if route is None:
            steps.append(RuleStep(rule, "no-route", note=f"table {table} has no route to {dst}"))
            continue
        if route.type == RouteType.THROW:
            steps.append(RuleStep(rule, "throw", route, note=f"throw route in table {table}"))
            continue
        if rule.suppress_prefixlength is not None and (
            route.dst.prefixlen <= rule.suppress_prefixlength
        ):
            steps.append(RuleStep(rule, "suppressed", route,
                                  note=f"prefix /{route.dst.prefixlen} suppressed "
                                  f"(suppress_prefixlength {rule.suppress_prefixlength})"))
            continue
        steps.append(RuleStep(rule, "hit", route))
        kind = str(route.type)
        if route.type in (RouteType.BLACKHOLE, RouteType.UNREACHABLE, RouteType.PROHIBIT):
            return RouteResult(kind, tuple(steps), rule=rule, route=route, table=table,
                               reason=f"{route.type} route in table {table}",
                               assumed_rules=assumed, skipped=tuple(skipped_all))
        gateway = route.gateway
        dev = route.dev
        if route.nexthops and gateway is None and dev is None:
            nh = route.nexthops[0]
            gateway, dev = nh.gateway, nh.dev
        if route.type == RouteType.LOCAL:
            dev = "lo" if iif is None else (iif or dev)
        return RouteResult(
            "local" if route.type in (RouteType.LOCAL, RouteType.BROADCAST) else "unicast",
            tuple(steps), rule=rule, route=route, table=table, dev=dev, gateway=gateway,
            src=select_source(ns, route, dst) if iif is None else None,
            assumed_rules=assumed, skipped=tuple(skipped_all),
        )
    return RouteResult("no-route", tuple(steps), reason=f"no ip rule led to a route for {dst} "
                       "(the kernel answers ENETUNREACH)", assumed_rules=assumed,
                       skipped=tuple(skipped_all))


def _sysctl_int(ns: NetNamespace, name: str) -> int | None:
    s = ns.sysctl(name)
    if s is None:
        return None
    try:
        return int(s.value.split()[0])
    except (ValueError, IndexError):
        return None


@dataclass(frozen=True, slots=True)
class SysctlView:
    """A sysctl value with where it came from, or the default assumed."""

    value: int
    source: SourceRef | None
    assumed: bool


def conf(ns: NetNamespace, dev: str, key: str, default: int) -> tuple[SysctlView, SysctlView]:
    """`net.ipv4.conf.all.<key>` and `net.ipv4.conf.<dev>.<key>` (dots in names as `/`)."""
    out = []
    for scope in ("all", dev.replace(".", "/")):
        name = f"net.ipv4.conf.{scope}.{key}"
        s = ns.sysctl(name)
        v = _sysctl_int(ns, name)
        out.append(SysctlView(v if v is not None else default, s.source if s else None, v is None))
    return out[0], out[1]


def ip_forward(ns: NetNamespace, family: int, default: int) -> SysctlView:
    """Is forwarding on in this namespace (`net.ipv4.ip_forward`, `net.ipv6.conf.all.forwarding`)?"""
    name = "net.ipv4.ip_forward" if family == 4 else "net.ipv6.conf.all.forwarding"
    s = ns.sysctl(name)
    v = _sysctl_int(ns, name)
    return SysctlView(v if v is not None else default, s.source if s else None, v is None)


@dataclass(frozen=True, slots=True)
class SourceCheck:
    """Reverse-path / martian-source validation of a received packet (`fib_validate_source`)."""

    ok: bool
    summary: str
    evidence: tuple[SourceRef, ...]
    assumed: bool


def validate_source(
    ns: NetNamespace, *, src: IPAddress, dst: IPAddress, iif: str, mark: int
) -> SourceCheck:
    """Would the kernel accept a packet from `src` arriving on `iif`?

    rp_filter is max(conf.all, conf.<iif>) (ip-sysctl.rst): 1 strict (the route back to
    the source must leave by `iif`), 2 loose (any route back). A source that is one of
    this namespace's own addresses is a martian unless accept_local is set. The reverse
    lookup uses the packet mark only with src_valid_mark, and `iif lo`.
    """
    if src.version != 4:
        return SourceCheck(True, "IPv6: no rp_filter sysctl", (), False)
    all_rp, dev_rp = conf(ns, iif, "rp_filter", 0)
    all_al, dev_al = conf(ns, iif, "accept_local", 0)
    all_vm, dev_vm = conf(ns, iif, "src_valid_mark", 0)
    rpf = max(all_rp.value, dev_rp.value)
    accept_local = bool(all_al.value or dev_al.value)
    rmark = mark if (all_vm.value or dev_vm.value) else 0
    evidence = tuple(v.source for v in (all_rp, dev_rp) if v.source is not None)
    assumed = all_rp.assumed and dev_rp.assumed
    reverse = lookup(ns, dst=src, src=dst, mark=rmark, iif=None, proto="tcp")
    if reverse.kind == "local" and not accept_local:
        return SourceCheck(False, f"martian source: {src} is an address of this namespace and "
                           f"accept_local is 0 on {iif}", evidence, assumed)
    if rpf == 0:
        return SourceCheck(True, f"rp_filter=0 on {iif}: source not validated", evidence, assumed)
    if reverse.kind not in ("unicast", "local"):
        return SourceCheck(False, f"rp_filter={rpf}: no route back to {src}, the kernel drops it "
                           "(reverse-path filter)", evidence, assumed)
    if rpf == 1 and reverse.dev != iif:
        return SourceCheck(False, f"rp_filter=1 (strict) on {iif}: the route back to {src} leaves "
                           f"by {reverse.dev}, not {iif}: dropped as a martian", evidence, assumed)
    return SourceCheck(True, f"rp_filter={rpf}: route back to {src} via {reverse.dev}", evidence,
                       assumed)



@dataclass(frozen=True, slots=True)
class NeighbourCheck:
    """Does anything on the other end of a veth answer ARP/NDP for the next hop?

    `ok` is True (answered: the frame goes to the peer), False (nobody answers: the
    kernel queues the packet, the neighbour entry goes INCOMPLETE -> FAILED and the packet
    is dropped) or None (the bundle cannot tell).
    """

    ok: bool | None
    summary: str
    evidence: tuple[SourceRef, ...] = ()


def neighbour_answers(
    sender: NetNamespace, dev: str, nexthop: IPAddress, peer: NetNamespace, peer_dev: str,
    peer_local: frozenset[IPAddress],
) -> NeighbourCheck:
    """Would a packet sent on veth `dev` towards `nexthop` reach `peer` (on `peer_dev`)?

    A veth only delivers frames addressed to its peer's MAC, which the sender learns by
    ARP (IPv4) or neighbour discovery (IPv6), or from a static entry (`ip neigh add ...
    PERMANENT`). Who answers:
    - IPv4 `arp_process()`: any address local to the peer namespace (arp_ignore=0, the
      default), or - with proxy_arp (conf/all OR conf/<dev>, ip-sysctl.rst) - an address
      the peer routes out of another device.
    - IPv6 `ndisc_recv_ns()`: an address configured on the receiving device itself, or an
      address with a proxy entry when proxy_ndp is on (proxy entries, `ip -6 neigh show
      proxy`, are not collected: then the bundle cannot tell).
    """
    for n in sender.neighbors or ():
        if n.ip == nexthop and n.dev == dev and n.resolved and "PERMANENT" in n.state:
            peer_link = peer.link(peer_dev)
            if peer_link is not None and peer_link.mac and n.lladdr and \
                    peer_link.mac.lower() != n.lladdr.lower():
                return NeighbourCheck(False, f"static neighbour {nexthop} lladdr {n.lladdr} "
                                      f"on {dev} is not the peer's {peer_dev} ({peer_link.mac}):"
                                      " the peer discards the frame", (n.source,))
            return NeighbourCheck(True, f"static neighbour {nexthop} on {dev}", (n.source,))
    in_link = peer.link(peer_dev)
    if nexthop.version == 4:
        if nexthop in peer_local:
            return NeighbourCheck(True, f"{peer.label} owns {nexthop}: it answers ARP")
        all_v, dev_v = conf(peer, peer_dev, "proxy_arp", 0)
        if all_v.value or dev_v.value:
            r = lookup(peer, dst=nexthop, src=None, mark=0, iif=None)
            if r.kind == "unicast" and r.dev is not None and r.dev != peer_dev:
                src = dev_v.source if dev_v.value else all_v.source
                return NeighbourCheck(True, f"proxy_arp on {peer_dev} in {peer.label}: it "
                                      f"answers for {nexthop} (routed via {r.dev})",
                                      (src,) if src else ())
        if all_v.assumed and dev_v.assumed:
            return NeighbourCheck(None, f"{peer.label} does not own {nexthop} and its proxy_arp "
                                  "is not in the bundle (sysctl.txt)")
        return NeighbourCheck(False, _unanswered(sender, dev, nexthop, peer, peer_dev, "ARP"),
                              _neigh_evidence(sender, dev, nexthop))
    if in_link is not None and any(a.interface.ip == nexthop for a in in_link.addresses):
        return NeighbourCheck(True, f"{peer.label} has {nexthop} on {peer_dev}: it answers "
                              "neighbour solicitations")
    pn = peer.sysctl("net.ipv6.conf.all.proxy_ndp")
    pd = peer.sysctl(f"net.ipv6.conf.{peer_dev.replace('.', '/')}.proxy_ndp")
    vals = [_sysctl_int(peer, s.name) for s in (pn, pd) if s is not None]
    if any(vals):
        return NeighbourCheck(None, f"proxy_ndp is on in {peer.label}: whether it answers for "
                              f"{nexthop} depends on proxy entries (`ip -6 neigh show proxy`), "
                              "which are not collected")
    if in_link is None or peer.links is None:
        return NeighbourCheck(None, f"{peer.label}'s links are not in the bundle")
    return NeighbourCheck(False, _unanswered(sender, dev, nexthop, peer, peer_dev,
                                             "neighbour discovery"),
                          _neigh_evidence(sender, dev, nexthop))


def _unanswered(sender: NetNamespace, dev: str, nexthop: IPAddress, peer: NetNamespace,
                peer_dev: str, proto: str) -> str:
    return (f"{nexthop} is on-link via {dev}, but {peer.label} (the veth peer {peer_dev}) "
            f"neither owns it nor answers for it: the {proto} request goes unanswered and the "
            "kernel drops the packet")


def _neigh_evidence(sender: NetNamespace, dev: str, nexthop: IPAddress) -> tuple[SourceRef, ...]:
    return tuple(n.source for n in sender.neighbors or () if n.ip == nexthop and n.dev == dev)
