"""AMB2xx: the 2022-1.20 node-level design (istio-datapath.md §2.2-2.7).

State lives in two namespaces per node. The node's: ipset `ztunnel-pods-ips` (one member
per enrolled pod), mangle `ztunnel-PREROUTING` marking their TCP 0x100, ip rules 100-103,
table 100 (one `/32 via 192.168.126.2 dev istioin` per enrolled pod), tables 101/102 and
the tunnels `istioin`/`istioout`. The ztunnel pod's: `pistioin`/`pistioout`, TPROXY to
15001/15006/15008 in mangle PREROUTING, ip rule 20000 and `local default dev lo table 100`.

Where a rule's *effect* is the question ("does a packet from this pod get mark 0x100?",
"is TCP from pistioout handed to 15001?"), the check runs the simulator on a sample
packet rather than pattern-matching rule text; the evidence is still the file, line and
rule (or the absence and where it was looked for).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from ambientctl import istio
from ambientctl.analyzers import netfilter, routing
from ambientctl.analyzers.doctor import sim
from ambientctl.analyzers.doctor.facts import (
    Context,
    NodeView,
    file_of,
    host_route_to,
    ipset_named,
    peer_link,
    pod_device,
    pod_name,
    restart_cni,
    routes_in,
    scan_rules,
    stale_members,
    v4,
)
from ambientctl.analyzers.doctor.issues import issue_at
from ambientctl.analyzers.doctor.registry import Issue, Skip, check
from ambientctl.analyzers.findings import Evidence, Severity
from ambientctl.analyzers.packet import Packet
from ambientctl.istio import HBONE_PORT, INBOUND_PLAINTEXT_PORT, OUTBOUND_PORT
from ambientctl.model import IPAddress, IpRule, IpSet, NetNamespace, Route, RuleAction

IPSET = istio.LEGACY_IPSET
TUN_IN, TUN_OUT = "istioin", "istioout"
ZT_TUN_IN, ZT_TUN_OUT = "pistioin", "pistioout"
TUN_IN_ZTUNNEL = ipaddress.ip_address("192.168.126.2")
TUN_OUT_ZTUNNEL = ipaddress.ip_address("192.168.127.2")
OUTBOUND_MARK = 0x100
TPROXY_MARK, TPROXY_MASK = 0x400, 0xFFF
ORG_SRC_MARK = 0x4D3
ZTUNNEL_PORTS = istio.ZTUNNEL_LISTENERS


# --------------------------------------------------------------------------- helpers


def _host_ip(node: NodeView) -> str:
    """Istio's HOST_IP, as the table-100 routes' `src` show it."""
    host = node.host
    for r in routes_in(host, "100") if host else ():
        if r.src is not None:
            return str(r.src)
    return "<HOST_IP>"


def _ipset(node: NodeView) -> IpSet | None:
    """The node's `ztunnel-pods-ips`, if collected and present."""
    return ipset_named(node.host, IPSET)


def captured_count(node: NodeView) -> int | None:
    """Expected pods that are in the ipset and have their table-100 route."""
    host = node.host
    if host is None or host.ipsets is None or host.routes is None:
        return None
    s = host.ipsets.get(IPSET)
    n = 0
    for pod in node.expected:
        ip = v4(pod)
        if ip is not None and s is not None and s.lookup(ip) is not None \
                and host_route_to(host, "100", ip) is not None:
            n += 1
    return n


def _table100_pod_route(route: Route) -> bool:
    """A per-pod route of table 100 (`/32 via 192.168.126.2 dev istioin`)."""
    return route.table == "100" and route.dst.num_addresses == 1 and (
        route.dev == TUN_IN or route.gateway == TUN_IN_ZTUNNEL)


def _ztunnel_veth(node: NodeView) -> tuple[str, Evidence] | None:
    """The node-side veth of the current ztunnel pod, and how we know."""
    host = node.host
    if host is None:
        return None
    if node.ztunnel_ns is not None and host.links is not None:
        link = peer_link(host, node.ztunnel_ns)
        if link is not None:
            return link.name, Evidence.of(link.source, f"peer of eth0 in {node.ztunnel_ns.dir}")
    zip_ = node.ztunnel_ip
    if zip_ is not None and host.routes is not None:
        route, _ = routing.table_lookup(host, "main", zip_)
        if route is not None and route.dev and route.gateway is None and route.dst.prefixlen == 32:
            return route.dev, Evidence.of(route.source, f"main-table route to ztunnel {zip_}")
    return None


# --------------------------------------------------------------------------- ipset / table 100


@check("AMB201", title="Ambient pod missing from ipset ztunnel-pods-ips",
       severity=Severity.ERROR, area="legacy", scope="node", modes=("legacy",),
       requires=("host:ipset", "cluster:pods", "cluster:namespaces"),
       remediation="Restart the istio-cni agent on the node so it re-enrolls its pods; by hand: "
                   "`ipset add ztunnel-pods-ips <POD_IP> comment <POD_UID>`.")
def pod_missing_from_ipset(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """An ambient pod whose IP is not in the set: its TCP is never marked 0x100."""
    host = node.host
    assert host is not None
    s = _ipset(node)
    path = file_of(host, "ipset")
    if s is None:
        if node.expected:
            names = ", ".join(pod_name(p) for p in node.expected[:8])
            yield Issue(message=f"ipset {IPSET} does not exist on node {node.name} (netns "
                        f"{host.id}): none of its {len(node.expected)} ambient pod(s) ({names}) "
                        "is captured", evidence=(Evidence.missing(path, f"ipset {IPSET}"),),
                        node=node.name, netns=host.id,
                        remediation=f"Restart istio-cni on {node.name}: `{restart_cni(node)}`")
        return
    for pod in node.expected:
        ip = v4(pod)
        if ip is None or s.lookup(ip) is not None:
            continue
        why = ctx.enrollment(pod).why
        yield Issue(
            message=f"pod {pod_name(pod)} ({ip}) on node {node.name} should be in the mesh "
                    f"({why}) but is not in ipset {IPSET} (netns {host.id}): its outbound TCP is "
                    "not marked 0x100 and bypasses ztunnel",
            evidence=(Evidence.missing(path, f"member {ip} in ipset {IPSET}"),
                      Evidence.of(s.source, f"ipset {IPSET}: {len(s.members)} member(s)"),
                      Evidence.of(pod.source, f"pod {pod_name(pod)} ({why})")),
            node=node.name, pod=pod_name(pod), netns=host.id,
            remediation=f"Restart istio-cni on {node.name} (`{restart_cni(node)}`), or by hand: "
                        f"`ipset add {IPSET} {ip} comment {pod.uid or '<POD_UID>'}`")


@check("AMB202", title="Ambient pod missing its table-100 route", severity=Severity.ERROR,
       area="legacy", scope="node", modes=("legacy",),
       requires=("host:ip-route", "cluster:pods", "cluster:namespaces"),
       remediation="Restart the istio-cni agent on the node; by hand: `ip route add table 100 "
                   "<POD_IP>/32 via 192.168.126.2 dev istioin src <HOST_IP>`.")
def pod_missing_route(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """Inbound to an ambient pod reaches ztunnel only through its table-100 route (rule 103)."""
    host = node.host
    assert host is not None
    path = file_of(host, "ip-route")
    for pod in node.expected:
        ip = v4(pod)
        if ip is None:
            continue
        route = host_route_to(host, "100", ip)
        fix = (f"`ip route replace table 100 {ip}/32 via {TUN_IN_ZTUNNEL} dev {TUN_IN} "
               f"src {_host_ip(node)}` on {node.name}, or restart istio-cni: `{restart_cni(node)}`")
        if route is None:
            yield Issue(
                message=f"pod {pod_name(pod)} ({ip}) on node {node.name} has no route in table "
                        f"100 (netns {host.id}): inbound traffic to it is not sent into the "
                        f"{TUN_IN} tunnel and reaches the pod without ztunnel (no mTLS, HBONE to "
                        ":15008 refused)",
                evidence=(Evidence.missing(path, f"`{ip} via {TUN_IN_ZTUNNEL} dev {TUN_IN}` in "
                                                 "table 100"),
                          Evidence.of(pod.source, f"pod {pod_name(pod)}")),
                node=node.name, pod=pod_name(pod), netns=host.id, remediation=fix)
        elif route.dev != TUN_IN:
            yield Issue(
                message=f"the table-100 route of pod {pod_name(pod)} ({ip}) on node {node.name} "
                        f"leaves by {route.dev}, not the {TUN_IN} tunnel to ztunnel",
                evidence=(Evidence.of(route.source, "table-100 route"),),
                node=node.name, pod=pod_name(pod), netns=host.id, remediation=fix)


def _owner_text(ctx: Context, node: NodeView, ip: IPAddress) -> str:
    here = ctx.pod_by_ip(ip, node.name)
    if here:
        p = here[0]
        return f"it is pod {pod_name(p)}, which is not ambient ({ctx.enrollment(p).why})"
    elsewhere = ctx.pod_by_ip(ip)
    if elsewhere:
        return f"it belongs to pod {pod_name(elsewhere[0])} on node {elsewhere[0].node}"
    return "no running pod has this address"


@check("AMB203", title="Stale ztunnel-pods-ips member", severity=Severity.WARNING,
       area="legacy", scope="node", modes=("legacy",),
       requires=("host:ipset", "cluster:pods", "cluster:namespaces"),
       remediation="`ipset del ztunnel-pods-ips <IP>` on the node (or restart istio-cni, which "
                   "rebuilds the set).")
def stale_ipset_member(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """A member no running ambient pod of this node owns: a reused IP gets captured."""
    host = node.host
    assert host is not None
    s = _ipset(node)
    if s is None:
        return
    wanted = {v4(p) for p in node.expected}
    uids = {p.uid: p for p in ctx.snap.cluster.pods if p.uid}
    for m, ip in stale_members(s, wanted):
        owner = _owner_text(ctx, node, ip)
        was = uids.get(m.comment or "")
        tail = f"; its comment names pod UID {m.comment}" + (
            f" ({pod_name(was)})" if was else ", which no pod has any more") if m.comment else ""
        yield Issue(message=f"ipset {IPSET} on node {node.name} holds {ip} but {owner}{tail}: "
                    "TCP from whatever gets this IP is captured by ztunnel",
                    evidence=(Evidence.of(m.source, "stale member"),),
                    node=node.name, netns=host.id,
                    remediation=f"`ipset del {IPSET} {ip}` on {node.name}, or restart istio-cni: "
                                f"`{restart_cni(node)}`")


@check("AMB204", title="Stale table-100 route", severity=Severity.WARNING, area="legacy",
       scope="node", modes=("legacy",),
       requires=("host:ip-route", "cluster:pods", "cluster:namespaces"),
       remediation="`ip route del table 100 <IP>/32` on the node (or restart istio-cni).")
def stale_table100_route(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """A per-pod route for an IP no ambient pod of this node has: its traffic goes to ztunnel."""
    host = node.host
    assert host is not None
    wanted = {v4(p) for p in node.expected}
    for r in routes_in(host, "100"):
        if not _table100_pod_route(r):
            continue
        ip = r.dst.network_address
        if ip in wanted or ip == node.ztunnel_ip:
            continue
        yield Issue(message=f"table 100 on node {node.name} routes {ip} into the {TUN_IN} tunnel "
                    f"but {_owner_text(ctx, node, ip)}: inbound traffic to that address is "
                    "sent to ztunnel",
                    evidence=(Evidence.of(r.source, "stale table-100 route"),),
                    node=node.name, netns=host.id,
                    remediation=f"`ip route del table 100 {ip}/32` on {node.name}, or restart "
                                f"istio-cni: `{restart_cni(node)}`")


@check("AMB205", title="ipset ztunnel-pods-ips close to maxelem", severity=Severity.WARNING,
       area="legacy", scope="node", modes=("legacy",), requires=("host:ipset",),
       remediation="Recreate the set with a larger maxelem (istio-cni creates it with the "
                   "kernel default 65536) or remove stale members; a full set makes "
                   "`ipset add` fail and new pods stay uncaptured.")
def ipset_near_maxelem(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """At 90% of maxelem the next enrollments are close to failing."""
    s = _ipset(node)
    if s is None:
        return
    limit = s.maxelem or 65536
    if len(s.members) >= 0.9 * limit:
        assert node.host is not None
        yield Issue(message=f"ipset {IPSET} on node {node.name} holds {len(s.members)} of "
                    f"maxelem {limit} entries", evidence=(Evidence.of(s.source, "set header"),),
                    node=node.name, netns=node.host.id)


# --------------------------------------------------------------------------- ip rules


# (priority, fwmark, mask, action, table, goto, as `ip rule` prints it) - §2.3
_ExpectedRule = tuple[int, int | None, int, RuleAction, str | None, int | None, str]
_GOTO, _LOOKUP = RuleAction.GOTO, RuleAction.LOOKUP
_EXPECTED_RULES: tuple[_ExpectedRule, ...] = (
    (100, 0x200, 0x200, _GOTO, None, 32766, "100: from all fwmark 0x200/0x200 goto 32766"),
    (101, 0x100, 0x100, _LOOKUP, "101", None, "101: from all fwmark 0x100/0x100 lookup 101"),
    (102, 0x040, 0x040, _LOOKUP, "102", None, "102: from all fwmark 0x40/0x40 lookup 102"),
    (103, None, 0, _LOOKUP, "100", None, "103: from all lookup 100"),
)


def _same_selector(r: IpRule, fwmark: int | None, mask: int, action: RuleAction,
                   table: str | None, goto: int | None) -> bool:
    if r.family != 4 or r.invert or r.src is not None or r.dst is not None or r.iif or r.oif \
            or r.ipproto or r.sport or r.dport or r.uidrange:
        return False
    if fwmark is None:
        if r.fwmark is not None:
            return False
    elif r.fwmark != fwmark or r.fwmask != mask:
        return False
    if r.action != action:
        return False
    return (r.table == table) if action == RuleAction.LOOKUP else r.goto == goto


def _rule_hits(ns: NetNamespace) -> dict[int, list[IpRule]]:
    """Expected priority -> the rules that carry that rule's selector and action."""
    out: dict[int, list[IpRule]] = {}
    for prio, mark, mask, action, table, goto, _text in _EXPECTED_RULES:
        out[prio] = [r for r in ns.rules or ()
                     if _same_selector(r, mark, mask, action, table, goto)]
    return out


@check("AMB206", title="ip rule 100-103 missing", severity=Severity.ERROR, area="legacy",
       scope="node", modes=("legacy",), requires=("host:ip-rule",),
       remediation="Restart the istio-cni agent on the node (it recreates the rules); by hand "
                   "e.g. `ip rule add priority 101 fwmark 0x100/0x100 lookup 101`.")
def ip_rule_missing(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """Without 101 marked pod traffic never reaches table 101; without 103 inbound skips 100."""
    host = node.host
    assert host is not None
    hits = _rule_hits(host)
    effect = {100: "ztunnel's and the node's own skip-marked traffic is no longer sent to the "
                   "main table first",
              101: "TCP marked 0x100 by enrolled pods is not routed into the istioout tunnel: "
                   "it bypasses ztunnel",
              102: "replies of connections ztunnel spoofed (mark 0x40) do not return to ztunnel",
              103: "table 100 is never consulted: inbound traffic to ambient pods bypasses "
                   "ztunnel"}
    for prio, mark, mask, _action, table, goto, text in _EXPECTED_RULES:
        if hits[prio]:
            continue
        cmd = (f"ip rule add priority {prio}" + (f" fwmark {mark:#x}/{mask:#x}" if mark else "")
               + (f" goto {goto}" if goto else f" lookup {table}"))
        yield Issue(message=f"ip rule {prio} is missing on node {node.name} (netns {host.id}): "
                    f"{effect[prio]}",
                    evidence=(Evidence.missing(file_of(host, "ip-rule"), f"`{text}`"),),
                    node=node.name, netns=host.id,
                    remediation=f"`{cmd}` on {node.name}, or restart istio-cni: "
                                f"`{restart_cni(node)}`")


@check("AMB207", title="ip rule 100-103 duplicated", severity=Severity.WARNING, area="legacy",
       scope="node", modes=("legacy",), requires=("host:ip-rule",),
       remediation="Delete the extra copies (`ip rule del priority <P>` removes one per call); "
                   "duplicates are left by an agent that re-initialised without cleaning up.")
def ip_rule_duplicated(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """The same selector at several priorities: a later cleanup deletes only one of them."""
    host = node.host
    assert host is not None
    for prio, rules in _rule_hits(host).items():
        if len(rules) > 1:
            yield Issue(message=f"ip rule {prio}'s selector appears {len(rules)} times on node "
                        f"{node.name} (priorities {', '.join(str(r.priority) for r in rules)})",
                        evidence=tuple(Evidence.of(r.source) for r in rules),
                        node=node.name, netns=host.id)


@check("AMB208", title="ip rules 100-103 out of order", severity=Severity.ERROR, area="legacy",
       scope="node", modes=("legacy",), requires=("host:ip-rule",),
       remediation="Re-create the rules at priorities 100-103 (restart the istio-cni agent); "
                   "skip (0x200) must come before the capture rules, 101/102 before 103, and "
                   "all before `32766: lookup main`.")
def ip_rule_order(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """The four rules work only in their order (the kernel tries rules by priority)."""
    host = node.host
    assert host is not None
    hits = _rule_hits(host)
    prio = {k: min(r.priority for r in v) for k, v in hits.items() if v}
    before = ((100, 101), (100, 102), (100, 103), (101, 103), (102, 103))
    bad: list[str] = []
    for a, b in before:
        if a in prio and b in prio and prio[a] >= prio[b]:
            bad.append(f"rule {a} (at {prio[a]}) must come before rule {b} (at {prio[b]})")
    main = [r.priority for r in host.rules or () if r.family == 4 and r.table == "main"
            and r.fwmark is None and r.src is None and r.dst is None and not r.invert]
    for k, p in prio.items():
        if main and p >= min(main):
            bad.append(f"rule {k} (at {p}) comes after `lookup main` (at {min(main)}): main "
                       "answers first")
    if bad:
        rules = [r for v in hits.values() for r in v]
        yield Issue(message=f"ip rules on node {node.name} are out of order: " + "; ".join(bad),
                    evidence=tuple(Evidence.of(r.source) for r in sorted(rules,
                                                                       key=lambda r: r.priority)),
                    node=node.name, netns=host.id)


# --------------------------------------------------------------------------- tables, tunnels


@check("AMB209", title="Table 101/102 default route missing", severity=Severity.ERROR,
       area="legacy", scope="node", modes=("legacy",), requires=("host:ip-route",),
       remediation="Restart the istio-cni agent on the node; by hand: `ip route add table 101 "
                   "0.0.0.0/0 via 192.168.127.2 dev istioout` and `ip route add table 102 "
                   "0.0.0.0/0 via <ZTUNNEL_IP> dev <ZTUNNEL_VETH> onlink`.")
def tables_default_missing(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """Table 101 sends captured outbound into istioout; 102 sends spoofed replies to ztunnel."""
    host = node.host
    assert host is not None
    path = file_of(host, "ip-route")
    for table, want in (("101", f"default via {TUN_OUT_ZTUNNEL} dev {TUN_OUT}"),
                        ("102", "default via <ZTUNNEL_IP> dev <ZTUNNEL_VETH> onlink")):
        default = [r for r in routes_in(host, table) if r.family == 4 and r.dst.prefixlen == 0]
        if not default:
            effect = ("outbound TCP of enrolled pods (mark 0x100) finds no route in table 101 "
                      "and falls through to the main table, bypassing ztunnel" if table == "101"
                      else "replies to connections ztunnel spoofed (mark 0x40) are not returned "
                           "to ztunnel")
            yield Issue(message=f"table {table} on node {node.name} has no default route: "
                        f"{effect}", evidence=(Evidence.missing(path, f"`{want}` in table "
                                                                      f"{table}"),),
                        node=node.name, netns=host.id)
        elif table == "101" and default[0].dev != TUN_OUT:
            yield Issue(message=f"the default route of table 101 on node {node.name} leaves by "
                        f"{default[0].dev}, not the {TUN_OUT} tunnel to ztunnel",
                        evidence=(Evidence.of(default[0].source),), node=node.name, netns=host.id)


def _tunnel_state(ns: NetNamespace, names: tuple[str, ...], node: NodeView,
                  what: str) -> Iterator[Issue]:
    path = file_of(ns, "ip-addr")
    for name in names:
        link = ns.link(name)
        if link is None:
            yield issue_at(node.name, ns, f"tunnel device {name} does not exist on node "
                           f"{node.name} ({what}netns {ns.id}): traffic routed to it is dropped",
                           (Evidence.missing(path, f"device {name}"),))
        elif not link.admin_up:
            yield issue_at(node.name, ns, f"tunnel device {name} is down on node {node.name} "
                           f"({what}netns {ns.id}): the kernel removes and skips routes through it",
                           (Evidence.of(link.source,
                                        f"{name} flags <{','.join(sorted(link.flags))}>"),),
                           remediation=f"`ip link set {name} up` in that netns, or restart "
                                       "istio-cni")
        elif not link.carrier:
            yield issue_at(node.name, ns, f"tunnel device {name} on node {node.name} ({what}netns "
                           f"{ns.id}) has no carrier (state {link.state}): its other end is down "
                           "or gone", (Evidence.of(link.source),))


@check("AMB210", title="Tunnel device istioin/istioout missing or down", severity=Severity.ERROR,
       area="legacy", scope="node", modes=("legacy",), requires=("host:ip-addr",),
       remediation="Restart the istio-cni agent on the node (it recreates the tunnels); a "
                   "device merely down: `ip link set istioout up`.")
def host_tunnel_down(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """Table 101 and table 100 lead into istioout/istioin; without them nothing reaches ztunnel."""
    assert node.host is not None
    yield from _tunnel_state(node.host, (TUN_IN, TUN_OUT), node, "")


@check("AMB217", title="ztunnel tunnel ends pistioin/pistioout missing or down",
       severity=Severity.ERROR, area="legacy", scope="node", modes=("legacy",),
       requires=("ztunnel:ip-addr",),
       remediation="Restart the ztunnel pod on the node (its init step / istio-cni recreates "
                   "the tunnel ends).")
def ztunnel_tunnel_down(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """The ztunnel pod's ends of the tunnels: without them the tunnel leads nowhere."""
    assert node.ztunnel_ns is not None
    yield from _tunnel_state(node.ztunnel_ns, (ZT_TUN_IN, ZT_TUN_OUT), node, "ztunnel pod, ")


@check("AMB211", title="Tunnels or routes point at an old ztunnel IP", severity=Severity.ERROR,
       area="legacy", scope="node", modes=("legacy",),
       requires=("host:ip-addr", "host:ip-route", "host:iptables"),
       remediation="Restart the istio-cni agent on the node: it reconciles the tunnels, routes "
                   "and rules with the current ztunnel pod (`ReconcileZtunnel`).")
def old_ztunnel_ip(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """After a ztunnel restart the node must follow its new IP, else traffic is blackholed."""
    host = node.host
    assert host is not None
    zip_ = node.ztunnel_ip
    if zip_ is None:
        raise Skip(f"the ztunnel pod IP on {node.name} is unknown (no running ztunnel pod in "
                   "cluster/pods.json and no ztunnel netns in the bundle)")
    if node.ztunnel_pod is not None:
        cur = Evidence.of(node.ztunnel_pod.source, f"current ztunnel pod IP {zip_}")
    else:
        assert node.ztunnel_ns is not None  # ztunnel_ip came from its eth0
        cur = Evidence(path=file_of(node.ztunnel_ns, "ip-addr"),
                       note=f"current ztunnel eth0 address {zip_}")
    for name in (TUN_IN, TUN_OUT):
        link = host.link(name)
        if link is not None and link.tunnel_remote is not None and link.tunnel_remote != zip_:
            yield Issue(message=f"tunnel {name} on node {node.name} leads to {link.tunnel_remote}, "
                        f"but the ztunnel pod is now {zip_}: captured traffic is blackholed",
                        evidence=(Evidence.of(link.source, f"{name} remote {link.tunnel_remote}"),
                                  cur), node=node.name, netns=host.id)
    for r in routes_in(host, "102"):
        if r.dst.prefixlen == 0 and r.gateway is not None and r.gateway != zip_:
            yield Issue(message=f"table 102 on node {node.name} sends spoofed-connection replies "
                        f"to {r.gateway}, but the ztunnel pod is now {zip_}",
                        evidence=(Evidence.of(r.source), cur), node=node.name, netns=host.id)
    for table in ("100", "101", "102"):
        for r in routes_in(host, table):
            if r.dst.num_addresses != 1 or _table100_pod_route(r) or r.dst.version != 4:
                continue
            if r.dst.network_address != zip_:
                yield Issue(message=f"table {table} on node {node.name} has a route to "
                            f"{r.dst.network_address} through {r.dev}, the address of an old "
                            f"ztunnel pod (now {zip_})",
                            evidence=(Evidence.of(r.source), cur), node=node.name, netns=host.id)
    for _t, chain, rule in scan_rules(host, chains=lambda n: n.startswith("ztunnel-")):
        for m in rule.matches:
            if m.option in ("-s", "--source") and m.args and m.args[0].endswith("/32") \
                    and any(x.option in ("-i", "--in-interface") for x in rule.matches) \
                    and ipaddress.ip_network(m.args[0], strict=False).network_address != zip_:
                yield Issue(message=f"rule {chain.name} #{rule.position} on node {node.name} "
                            f"names ztunnel source {m.args[0]}, but the ztunnel pod is now "
                            f"{zip_}", evidence=(Evidence.of(rule.source), cur),
                            node=node.name, netns=host.id)


@check("AMB212", title="Rules name a veth that is not the ztunnel pod's", severity=Severity.ERROR,
       area="legacy", scope="node", modes=("legacy",),
       requires=("host:ip-addr", "host:ip-route", "host:iptables"),
       remediation="Restart the istio-cni agent on the node so the rules and routes follow the "
                   "ztunnel pod's current veth.")
def stale_ztunnel_veth(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """`-i <ZTUNNEL_VETH>` and `dev <ZTUNNEL_VETH>` must name the ztunnel pod's node-side veth."""
    host = node.host
    assert host is not None
    found = _ztunnel_veth(node)
    if found is None:
        raise Skip(f"cannot tell the ztunnel pod's veth on {node.name} (no ztunnel netns with "
                   "an eth0@ifN, no main-table /32 route to the ztunnel IP)")
    veth, how = found
    tunnels = {TUN_IN, TUN_OUT, "lo"}
    for table in ("100", "101", "102"):
        for r in routes_in(host, table):
            if r.dev and r.dev not in tunnels and r.dev != veth:
                yield Issue(message=f"table {table} on node {node.name} routes through {r.dev}, "
                            f"but the ztunnel pod's veth is {veth}", evidence=(
                                Evidence.of(r.source), how), node=node.name, netns=host.id)
    for _t, chain, rule in scan_rules(host, chains=lambda n: n.startswith("ztunnel-")):
        for m in rule.matches:
            if m.option in ("-i", "--in-interface") and m.args and m.args[0] not in tunnels \
                    and m.args[0] != veth:
                yield Issue(message=f"rule {chain.name} #{rule.position} on node {node.name} "
                            f"matches interface {m.args[0]}, but the ztunnel pod's veth is "
                            f"{veth}: ztunnel's own traffic is not recognised",
                            evidence=(Evidence.of(rule.source), how), node=node.name,
                            netns=host.id)


# --------------------------------------------------------------------------- host mangle marking


@check("AMB218", title="Enrolled pod's TCP is not marked 0x100", severity=Severity.ERROR,
       area="legacy", scope="node", modes=("legacy",),
       requires=("host:iptables", "host:ipset", "host:ip-route", "cluster:pods",
                 "cluster:namespaces"),
       remediation="Restart the istio-cni agent on the node: it re-creates the mangle "
                   "`ztunnel-PREROUTING` chain, its jump at position 1 and the 0x100 MARK rule.")
def outbound_not_marked(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """Simulate mangle/nat PREROUTING for a SYN from each enrolled pod in the ipset."""
    host = node.host
    assert host is not None
    s = _ipset(node)
    if s is None:
        return  # AMB201 reports the missing set
    sample = ctx.sample_service()
    remote = sample[0] if sample else ctx.remote_ip(node.name)
    if remote is None:
        raise Skip("no sample destination (no Service and no pod on another node)")
    dport = sample[1] if sample else 80
    path = file_of(host, "iptables")
    undecided: list[str] = []
    decided = 0
    ctx_nf = netfilter.Context(host, netfilter.local_addresses(host), host.listeners)
    for pod in node.expected:
        ip = v4(pod)
        if ip is None or s.lookup(ip) is None:
            continue
        dev = pod_device(host, ip)
        if dev is None:
            undecided.append(f"{pod_name(pod)}: no main-table route to {ip} names its veth")
            continue
        pkt = Packet(family=4, proto="tcp", src=ip, dst=remote, sport=40000, dport=dport,
                     iif=dev)
        ctx_nf.notes.clear()
        res = netfilter.run_hook(host, "prerouting", pkt, ctx_nf)
        if res.verdict == "insufficient-info":
            undecided.append(f"{pod_name(pod)}: {res.reason} ({res.culprit})")
            continue
        decided += 1
        if res.packet.mark & OUTBOUND_MARK:
            continue
        evidence: list[Evidence] = []
        mark_rules = [r for t, c, r in scan_rules(host, "0x100", tables=("mangle",))
                      if r.target == "MARK" and (r.target_option("--set-xmark", "--set-mark")
                                                  or ("",))[0].startswith("0x100")]
        steps = [st for st in res.steps if st.table.name == "mangle"]
        if steps:
            last = steps[-1]
            evidence.append(Evidence.of(last.source, f"the walk of mangle {last.chain} ends here: "
                                        f"{last.summary}"))
        if mark_rules:
            evidence.append(Evidence.of(mark_rules[0].source, "the 0x100 MARK rule exists but "
                                        "this packet does not reach it"))
        else:
            evidence.append(Evidence.missing(path, f"a mangle rule `-m set --match-set {IPSET} src "
                                                   "-j MARK --set-xmark 0x100/0x100`"))
        yield Issue(message=f"a TCP SYN from pod {pod_name(pod)} ({ip}, arriving on {dev}) to "
                    f"{remote}:{dport} leaves mangle PREROUTING on node {node.name} with mark "
                    f"{res.packet.mark:#x}, without 0x100: it is not routed to ztunnel",
                    evidence=tuple(evidence), node=node.name, pod=pod_name(pod), netns=host.id)
    if undecided and decided == 0:
        raise Skip("could not simulate: " + "; ".join(undecided[:3]))


# --------------------------------------------------------------------------- ztunnel netns


_TPROXY_CASES = ((ZT_TUN_OUT, "remote", 9080, OUTBOUND_PORT), (ZT_TUN_IN, "local", HBONE_PORT, HBONE_PORT),
                 (ZT_TUN_IN, "local", 9080, INBOUND_PLAINTEXT_PORT))


@check("AMB213", title="ztunnel netns: TPROXY to 15001/15006/15008 missing",
       severity=Severity.ERROR, area="legacy", scope="node", modes=("legacy",),
       requires=("ztunnel:iptables", "ztunnel:ip-addr"),
       remediation="Restart the ztunnel pod on the node (its init step installs the mangle "
                   "PREROUTING TPROXY rules); by hand, in the ztunnel netns: `iptables -t mangle "
                   "-A PREROUTING -p tcp -i pistioout -j TPROXY --tproxy-mark 0x400/0xfff "
                   "--on-port 15001 --on-ip 127.0.0.1` (likewise 15008/15006 on pistioin).")
def ztunnel_tproxy_missing(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """Simulate TCP arriving on the tunnel ends: each must be TPROXYed to its listener port."""
    zt = node.ztunnel_ns
    assert zt is not None
    remote = ctx.remote_ip(node.name) or ipaddress.ip_address("192.0.2.10")
    local = next((v4(p) for p in node.expected if v4(p) is not None), None) \
        or ipaddress.ip_address("192.0.2.20")
    path = file_of(zt, "iptables")
    # listeners=None: the rule's presence is the question here, AMB216 asks for the listener.
    nf = netfilter.Context(zt, netfilter.local_addresses(zt), None)
    undecided: list[str] = []
    tproxy_rules = [r for t, c, r in scan_rules(zt, "tproxy") if r.target == "TPROXY"]
    for iif, where, dport, want in _TPROXY_CASES:
        dst = remote if where == "remote" else local
        pkt = Packet(family=4, proto="tcp", src=local if where == "remote" else remote,
                     dst=dst, sport=40000, dport=dport, iif=iif)
        nf.notes.clear()
        res = netfilter.run_hook(zt, "prerouting", pkt, nf)
        if res.verdict == "insufficient-info":
            undecided.append(f"{iif} :{dport}: {res.reason}")
            continue
        got = res.packet.tproxy.port if res.packet.tproxy else None
        if got == want:
            continue
        what = (f"TPROXYed to {got} instead" if got else
                f"{res.verdict}ed without TPROXY" if res.verdict != "accept" else "not TPROXYed")
        ev: list[Evidence] = []
        same = [r for r in tproxy_rules if (r.target_option("--on-port") or ("",))[0] == str(want)]
        if got is not None:
            hit = next((st for st in res.steps if st.action == "tproxy"), None)
            if hit is not None:
                ev.append(Evidence.of(hit.source, "this rule takes the packet"))
        if same:
            ev.append(Evidence.of(same[0].source, f"the TPROXY rule to {want} exists but this "
                                                  "packet does not reach it"))
        else:
            ev.append(Evidence.missing(path, f"a mangle PREROUTING rule `-i {iif} -p tcp "
                                       + (f"--dport {dport} " if want == HBONE_PORT else "")
                                       + f"-j TPROXY --on-port {want}`"))
        yield issue_at(node.name, zt, f"in the ztunnel pod on node {node.name} (netns {zt.id}), "
                       f"TCP arriving on {iif} to port {dport} is {what}: ztunnel's "
                       f"{ZTUNNEL_PORTS[want]} listener :{want} never gets it", tuple(ev))
    if undecided and len(undecided) == len(_TPROXY_CASES):
        raise Skip("could not simulate mangle PREROUTING: " + "; ".join(undecided))


def _local_route_issue(ctx: Context, node: NodeView, mark: int, prio: int,
                       iif: str, purpose: str) -> Iterator[Issue]:
    zt = node.ztunnel_ns
    assert zt is not None
    remote = ctx.remote_ip(node.name) or ipaddress.ip_address("192.0.2.10")
    gap = sim.local_route_gap(zt, mark=mark, mask=TPROXY_MASK, prio=prio, table="100",
                              dst=remote, iif=iif)
    if gap is None:
        return
    yield issue_at(node.name, zt, f"in the ztunnel pod on node {node.name} (netns {zt.id}) "
                   f"packets with mark {mark:#x} ({purpose}) are not delivered locally: "
                   f"{gap.why}", gap.evidence)


@check("AMB214", title="ztunnel netns: ip rule 20000 or `local default dev lo` missing",
       severity=Severity.ERROR, area="legacy", scope="node", modes=("legacy",),
       requires=("ztunnel:ip-rule", "ztunnel:ip-route", "ztunnel:ip-addr"),
       remediation="Restart the ztunnel pod; by hand in its netns: `ip rule add priority 20000 "
                   "fwmark 0x400/0xfff lookup 100` and `ip route add local 0.0.0.0/0 dev lo "
                   "table 100`.")
def ztunnel_local_route_missing(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """TPROXY only assigns the socket; the mark 0x400 must also route the packet locally."""
    yield from _local_route_issue(ctx, node, TPROXY_MARK, 20000, ZT_TUN_OUT,
                                  "TPROXYed to ztunnel's listeners; otherwise they are "
                                  "forwarded or dropped")


@check("AMB215", title="ztunnel netns: ip rule 20003 missing", severity=Severity.WARNING,
       area="legacy", scope="node", modes=("legacy",),
       requires=("ztunnel:ip-rule", "ztunnel:ip-route", "ztunnel:ip-addr"),
       remediation="Restart the ztunnel pod; by hand in its netns: `ip rule add priority 20003 "
                   "fwmark 0x4d3/0xfff lookup 100`.")
def ztunnel_orgsrc_rule_missing(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """Replies to connections ztunnel opened with a spoofed source come back marked 0x4d3."""
    yield from _local_route_issue(ctx, node, ORG_SRC_MARK, 20003, "eth0",
                                  "replies to connections ztunnel opened with the client's "
                                  "address")


@check("AMB216", title="ztunnel not listening on 15001/15006/15008", severity=Severity.ERROR,
       area="legacy", scope="node", modes=("legacy",),
       requires=("ztunnel:ss", "ztunnel:iptables"),
       remediation="Check the ztunnel pod on the node (`kubectl -n istio-system logs <pod>`; "
                   "restart it): TPROXY drops packets for a port nobody listens on.")
def ztunnel_not_listening(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """TPROXY hands packets to a transparent socket on --on-ip:--on-port, or drops them."""
    zt = node.ztunnel_ns
    assert zt is not None
    targets: dict[int, IPAddress] = {}
    for _t, _c, rule in scan_rules(zt, "tproxy"):
        if rule.target != "TPROXY":
            continue
        on_port = (rule.target_option("--on-port") or ("0",))[0]
        on_ip = (rule.target_option("--on-ip") or ("127.0.0.1",))[0]
        if on_port.isdigit() and int(on_port) in ZTUNNEL_PORTS:
            ip_ = ipaddress.ip_address(on_ip)
            targets.setdefault(int(on_port), ipaddress.ip_address("127.0.0.1")
                               if ip_.is_unspecified else ip_)
    for port in ZTUNNEL_PORTS:
        targets.setdefault(port, ipaddress.ip_address("127.0.0.1"))
    path = file_of(zt, "ss")
    for port, ip_ in sorted(targets.items()):
        if netfilter.find_listener(zt.listeners, ip_, port) is None:
            yield issue_at(node.name, zt, f"nothing listens on {ip_}:{port} in the ztunnel pod "
                           f"on node {node.name} (netns {zt.id}): {ZTUNNEL_PORTS[port]} "
                           "connections TPROXYed there are dropped",
                           (Evidence.missing(path, f"a TCP listener on {ip_}:{port}"),))


@check("AMB219", title="Node-level redirection left on a node without ambient pods or ztunnel",
       severity=Severity.WARNING, area="legacy", scope="node", modes=("legacy",),
       requires=("host:iptables", "cluster:pods", "cluster:namespaces"),
       remediation="Leftovers of an uninstall or upgrade: remove the ztunnel-* chains and their "
                   "jumps, ip rules 100-103, tables 100-102, istioin/istioout and the ipset "
                   "(`ip rule del priority 101` ...), or drain and reboot the node.")
def leftover_node_state(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """istio-cni's cleanup did not run (the 2022 chart's preStop even had a typo,
    `ztunnel-FOWARD`): the rules stay, steering traffic towards a ztunnel that is gone."""
    host = node.host
    assert host is not None
    if node.expected or node.ztunnel_pod is not None:
        return
    ev = [Evidence.of(ch.source, f"{t.name} {name}") for t in host.tables()
          for name, ch in t.chains.items() if name.startswith("ztunnel-")][:3]
    ev += [Evidence.of(r.source) for r in host.rules or () if 100 <= r.priority <= 103][:2]
    if not ev:
        return
    yield Issue(message=f"node {node.name} still holds node-level ambient state (ztunnel-* chains, "
                "ip rules 100-103) but runs no ztunnel and no ambient pod: leftovers of an "
                "uninstall or upgrade that keep steering marked traffic to tunnels",
                evidence=tuple(ev), node=node.name, netns=host.id)
