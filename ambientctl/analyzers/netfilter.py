"""Netfilter simulation: walk one hook of one namespace the way the kernel does.

All tables that register at a hook (iptables-nft, iptables-legacy and native nft tables
alike) run in order of priority (`BaseHook.priority`; raw -300, mangle -150, DNAT -100,
filter 0, SNAT 100). Within a base chain rules run in order; a rule matches when ALL of
its matches do (they are ANDed). `-j CHAIN` pushes a return point, `-g CHAIN` does not
(RETURN from a chain entered by goto returns to the caller of the chain that did the
goto), RETURN or the end of a user chain pops, the end of a base chain applies its policy
(iptables(8), "TARGETS"). ACCEPT ends only the current table's walk: the next table at
the same hook still runs. DROP/REJECT end the packet.

Matches are evaluated in three-valued logic (Diekmann et al., FM 2015): True, False or
None (not modelled). An unknown match on a rule whose target could change the path stops
the walk with `insufficient-info` naming that rule; on a rule that cannot (LOG, a
counting rule) it is noted and skipped. `-m statistic` and nft's `numgen random mod N vmap
{...}` fork: every branch is walked and reported, and the one `Context.endpoint` names
(`trace --endpoint`) is followed, else the first (ambientctl.analyzers.fork).

nft rules may carry set/map lookups (`Rule.lookups`, evaluated by
ambientctl.analyzers.nftlookup) and several statements run in order (`Rule.statements`:
`meta mark set ... drop`, `... vmap @service-ips`). A statement that is not modelled stops
the walk: it is never skipped as if it could not change the path.

NAT tables only see the first packet of a connection, and only once per manip type:
after nat OUTPUT decided the destination, a packet looped back through `lo` does not
consult nat PREROUTING again (`nf_nat_inet_fn`: rules run only while the manip is not
initialised).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from ambientctl.analyzers import nftlookup
from ambientctl.analyzers.fork import EndpointSelector
from ambientctl.analyzers.packet import Packet, SocketAddr
from ambientctl.errors import ParseError
from ambientctl.model import (
    ALL_ONES,
    Chain,
    IPAddress,
    IpSet,
    Listener,
    Match,
    NetNamespace,
    NftElement,
    NftLookup,
    RouteType,
    Rule,
    SourceRef,
    Table,
)

# Tables whose chains are not evaluated on a given family's packets.
_FAMILY_TABLES = {4: ("ip", "inet"), 6: ("ip6", "inet")}

# Targets that never change the packet's path (kept in the trace, nothing else).
_NOOP_TARGETS = {"LOG", "NFLOG", "ULOG", "TRACE", "CHECKSUM", "TCPMSS", "DSCP", "TOS",
                 "CLASSIFY", "AUDIT", "NOTRACK", "TEE", "IDLETIMER", "LED", "SECMARK",
                 "CONNSECMARK", "RATEEST", "HL", "TTL", "ECN"}


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class NfStep:
    """A rule (or policy) that did something to the packet."""

    table: Table
    chain: str
    position: int | None  # None for a policy
    action: str  # "jump" | "goto" | "return" | "accept" | "drop" | "reject" | "mark" | "nat" |
    # "tproxy" | "continue" | "policy" | "unknown-skipped" | "insufficient-info"
    summary: str
    source: SourceRef
    mark_before: int
    mark_after: int
    rule: Rule | None = None
    branches: tuple[str, ...] = ()  # statistic alternatives, described
    # How the rule left the chain walk, in the kernel's words: continue, accept, drop,
    # reject, return, jump, goto (a policy step: accept/drop). None: not evaluated.
    verdict: str | None = None


@dataclass(frozen=True, slots=True)
class HookResult:
    """The outcome of one hook: a verdict, the packet after it, and the steps taken."""

    verdict: str  # "accept" | "drop" | "reject" | "insufficient-info"
    packet: Packet
    steps: tuple[NfStep, ...]
    reason: str | None = None  # for drop/reject/insufficient-info
    culprit: SourceRef | None = None
    notes: tuple[str, ...] = ()


@dataclass
class Context:
    """What rule evaluation needs to know about the namespace beyond the packet."""

    ns: NetNamespace
    local_addresses: frozenset[IPAddress]
    listeners: tuple[Listener, ...] | None
    out_dev: str | None = None  # for -o in FORWARD/POSTROUTING and MASQUERADE
    out_src: IPAddress | None = None  # address MASQUERADE would use
    notes: list[str] = field(default_factory=list)
    endpoint: EndpointSelector | None = None  # the user's pick at a fork (trace --endpoint)


def local_addresses(ns: NetNamespace) -> frozenset[IPAddress]:
    """Addresses the kernel treats as local: on any link, plus `local` routes (table local)."""
    found: set[IPAddress] = {a.interface.ip for _, a in ns.addresses()}
    for route in ns.routes or ():
        if route.type == RouteType.LOCAL and route.dst.num_addresses == 1:
            found.add(route.dst.network_address)
    found.add(ipaddress.ip_address("127.0.0.1"))
    found.add(ipaddress.ip_address("::1"))
    return frozenset(found)


# --------------------------------------------------------------------------- helpers


def _int(text: str) -> int:
    return int(text, 0)


def parse_mark(text: str) -> tuple[int, int]:
    """`0x100/0x100` -> (value, mask); no mask means all ones."""
    if "/" in text:
        value, mask = text.split("/", 1)
        return _int(value), _int(mask)
    return _int(text), ALL_ONES


@functools.lru_cache(maxsize=65536)
def _networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    # Cached: a kube-proxy KUBE-SERVICES chain is 10k `-d VIP/32` rules walked per trace.
    return tuple(ipaddress.ip_network(part, strict=False) for part in text.split(",") if part)


def _iface_match(pattern: str, name: str | None) -> bool:
    if name is None:
        return False
    if pattern.endswith("+"):
        return name.startswith(pattern[:-1])
    return name == pattern


def _port_match(spec: str, port: int) -> bool:
    for part in spec.split(","):
        if ":" in part:
            lo, hi = part.split(":", 1)
            if (int(lo) if lo else 0) <= port <= (int(hi) if hi else 65535):
                return True
        elif "-" in part:  # nft-style ranges
            lo, hi = part.split("-", 1)
            if int(lo) <= port <= int(hi):
                return True
        elif part and int(part) == port:
            return True
    return False


_PROTO_NUMBERS = {"6": "tcp", "17": "udp", "1": "icmp", "58": "ipv6-icmp"}


# --------------------------------------------------------------------------- matches


Tri = bool | None
MatchFn = Callable[[Match, Packet, "Context", str], Tri]


def _m_src(m: Match, p: Packet, c: Context, hook: str) -> Tri:
    if p.src is None:
        return None
    return any(p.src in n for n in _networks(m.args[0]) if n.version == p.family)


def _m_dst(m: Match, p: Packet, c: Context, hook: str) -> Tri:
    return any(p.dst in n for n in _networks(m.args[0]) if n.version == p.family)


def _m_proto(m: Match, p: Packet, c: Context, hook: str) -> Tri:
    want = m.args[0].lower()
    want = _PROTO_NUMBERS.get(want, want)
    return want in ("all", "0") or want == p.proto


def _m_iif(m: Match, p: Packet, c: Context, hook: str) -> Tri:
    if hook in ("output", "postrouting") and p.iif is None:
        return False
    return _iface_match(m.args[0], p.iif)


def _m_oif(m: Match, p: Packet, c: Context, hook: str) -> Tri:
    if hook in ("prerouting", "input"):
        return False
    if c.out_dev is None:
        return None
    return _iface_match(m.args[0], c.out_dev)


def _m_dport(m: Match, p: Packet, c: Context, hook: str) -> Tri:
    if m.module in ("tcp", "udp") and m.module != p.proto:
        return False
    return _port_match(m.args[0], p.dport)


def _m_sport(m: Match, p: Packet, c: Context, hook: str) -> Tri:
    if m.module in ("tcp", "udp") and m.module != p.proto:
        return False
    return _port_match(m.args[0], p.sport)


def _m_multiport(m: Match, p: Packet, c: Context, hook: str) -> Tri:
    if m.option in ("--dports", "--destination-ports"):
        return _port_match(m.args[0], p.dport)
    if m.option in ("--sports", "--source-ports"):
        return _port_match(m.args[0], p.sport)
    if m.option == "--ports":
        return _port_match(m.args[0], p.dport) or _port_match(m.args[0], p.sport)
    return None


def _m_tcp_flags(m: Match, p: Packet, c: Context, hook: str) -> Tri:
    # We simulate a connection's first packet (SYN) and its answer (SYN,ACK).
    if p.proto != "tcp":
        return False
    flags = set(p.tcp_flags.split(","))
    if m.option == "--syn":  # SYN set, RST/ACK/FIN clear
        return flags == {"SYN"}
    if m.option == "--tcp-flags" and len(m.args) >= 2:
        mask = set(m.args[0].upper().split(","))
        comp = set(m.args[1].upper().split(",")) - {"NONE"}
        if "ALL" in mask:
            mask = {"SYN", "ACK", "FIN", "RST", "URG", "PSH", "ECE", "CWR"}
        return (flags & mask) == comp
    return None


def _m_mark(m: Match, p: Packet, c: Context, hook: str) -> Tri:
    value, mask = parse_mark(m.args[0])
    return (p.mark & mask) == value


def _m_connmark(m: Match, p: Packet, c: Context, hook: str) -> Tri:
    value, mask = parse_mark(m.args[0])
    return (p.ctmark & mask) == value


def _m_ctstate(m: Match, p: Packet, c: Context, hook: str) -> Tri:
    states = {s.upper() for s in m.args[0].split(",")}
    return p.ctstate in states or ("UNTRACKED" in states and False)


def _m_set(m: Match, p: Packet, c: Context, hook: str) -> Tri:
    name = m.args[0]
    flags = m.args[1].split(",") if len(m.args) > 1 else ["src"]
    sets = c.ns.ipsets
    if sets is None or name not in sets:
        c.notes.append(f"ipset {name} is not in the bundle for {c.ns.label}")
        return None
    ipset = sets[name]
    dims = ipset.type.split(":", 1)[-1].split(",")
    if len(dims) > 1 or dims[0] == "port":
        return _set_match_dims(ipset, dims, flags, p, c)
    which = p.src if flags[0] == "src" else p.dst
    if which is None:
        return None
    return ipset.lookup(which) is not None


def _set_match_dims(ipset: IpSet, dims: list[str], flags: list[str], p: Packet, c: Context
                    ) -> Tri:
    """A multi-dimension set (`hash:ip,port`, `hash:ip,port,ip`, `bitmap:port`, ...) matched
    as ipset(8) says: each dimension of the type is compared with the packet's source or
    destination as the `--match-set` flags name it, in order (`dst,dst,src`: destination
    address, destination port, source address). kube-proxy's IPVS mode relies on this:
    `KUBE-LOOP-BACK dst,dst,src` is hairpin traffic only, not any packet to an endpoint."""
    if len(flags) < len(dims) or any(d not in ("ip", "net", "port") for d in dims):
        c.notes.append(f"ipset {ipset.name} ({ipset.type}, flags {','.join(flags)}) is not "
                       "modelled")
        return None
    wanted: list[tuple[str, IPAddress | tuple[str, int]]] = []
    for dim, flag in zip(dims, flags, strict=False):  # extra flags are ignored
        if dim == "port":
            wanted.append(("port", (p.proto, p.sport if flag == "src" else p.dport)))
        else:
            addr = p.src if flag == "src" else p.dst
            if addr is None:
                return None
            wanted.append(("ip", addr))
    unreadable = None
    for member in ipset.members:
        hit = _member_matches(member.text, wanted, ipset.type.startswith("bitmap:"))
        if hit:
            return True
        if hit is None and unreadable is None:
            unreadable = member
    if unreadable is not None:  # it might have matched: unknown, not "no"
        c.notes.append(f"ipset {ipset.name}: member {unreadable.text!r} is not understood")
        return None
    return False


def _member_matches(text: str, wanted: list[tuple[str, IPAddress | tuple[str, int]]],
                    bitmap: bool) -> bool | None:
    """Does one member match the packet's values? None: the member text is not understood."""
    parts = text.split(",")
    if len(parts) != len(wanted):
        return None
    for part, (_kind, value) in zip(parts, wanted, strict=True):
        if isinstance(value, tuple):  # a port dimension: (protocol, port)
            proto, port = value
            if ":" in part:
                mproto, _, spec = part.partition(":")
                # ipset prints the protocol by name or number (6 tcp, 17 udp).
                if {"6": "tcp", "17": "udp"}.get(mproto, mproto) != proto:
                    return False
            elif not bitmap and proto != "tcp":
                return False  # a bare port means tcp in hash:*,port sets (ipset(8))
            else:
                spec = part
            lo, _, hi = spec.partition("-")
            try:
                if not int(lo) <= port <= int(hi or lo):
                    return False
            except ValueError:
                return None
        else:
            try:
                if "-" in part:
                    lo_s, hi_s = part.split("-", 1)
                    lo_a, hi_a = ipaddress.ip_address(lo_s), ipaddress.ip_address(hi_s)
                    if value.version != lo_a.version or not lo_a <= value <= hi_a:  # type: ignore[operator]
                        return False
                elif value not in ipaddress.ip_network(part, strict=False):
                    return False
            except (ValueError, TypeError):
                return None
    return True


def _m_addrtype(m: Match, p: Packet, c: Context, hook: str) -> Tri:
    want = {t.upper() for t in m.args[0].split(",")}
    ip = p.dst if m.option == "--dst-type" else p.src
    if m.option not in ("--dst-type", "--src-type") or ip is None:
        return None
    if ip in c.local_addresses:
        kind = "LOCAL"
    elif ip.is_multicast:
        kind = "MULTICAST"
    elif isinstance(ip, ipaddress.IPv4Address) and ip == ipaddress.IPv4Address("255.255.255.255"):
        kind = "BROADCAST"
    else:
        kind = "UNICAST"
    return kind in want


def _m_owner(m: Match, p: Packet, c: Context, hook: str) -> Tri:
    if m.option == "--socket-exists":
        return p.local_socket
    if m.option in ("--uid-owner", "--gid-owner"):
        if not p.local_socket:
            return False
        have = p.uid if m.option == "--uid-owner" else p.gid
        spec = m.args[0]
        if have is None:
            # An application socket: its owner is not a numeric id that iptables names
            # (Istio names only the proxy's 1337), stated as an assumption by the trace.
            return False
        if "-" in spec:
            lo, hi = spec.split("-", 1)
            return int(lo) <= have <= int(hi)
        return spec.isdigit() and int(spec) == have
    return None


def _m_true(m: Match, p: Packet, c: Context, hook: str) -> Tri:
    return True


def _m_iprange(m: Match, p: Packet, c: Context, hook: str) -> Tri:
    ip = p.src if m.option == "--src-range" else p.dst
    if ip is None:
        return None
    lo_s, hi_s = m.args[0].split("-", 1)
    return ipaddress.ip_address(lo_s) <= ip <= ipaddress.ip_address(hi_s)  # type: ignore[operator]


def _m_socket(m: Match, p: Packet, c: Context, hook: str) -> Tri:
    # `-m socket` matches when an ESTABLISHED local socket owns the packet: never the
    # first SYN (listeners count only with --nowildcard off and a non-wildcard bind).
    return False


def _m_pkttype(m: Match, p: Packet, c: Context, hook: str) -> Tri:
    return m.args[0].lower() == "unicast"


def _m_family4(m: Match, p: Packet, c: Context, hook: str) -> Tri:
    return p.family == 4


def _m_family6(m: Match, p: Packet, c: Context, hook: str) -> Tri:
    return p.family == 6


MATCHES: dict[tuple[str | None, str], MatchFn] = {
    # `-4`/`-6`: the nft translator's family guard for `ip ...`/`ip6 ...` in inet tables
    # (iptables-restore accepts the same flags).
    (None, "-4"): _m_family4,
    (None, "-6"): _m_family6,
    (None, "-s"): _m_src,
    (None, "--source"): _m_src,
    (None, "--src"): _m_src,
    (None, "-d"): _m_dst,
    (None, "--destination"): _m_dst,
    (None, "--dst"): _m_dst,
    (None, "-p"): _m_proto,
    (None, "--protocol"): _m_proto,
    (None, "-i"): _m_iif,
    (None, "--in-interface"): _m_iif,
    (None, "-o"): _m_oif,
    (None, "--out-interface"): _m_oif,
    ("tcp", "--dport"): _m_dport,
    ("tcp", "--destination-port"): _m_dport,
    ("tcp", "--sport"): _m_sport,
    ("tcp", "--source-port"): _m_sport,
    ("tcp", "--syn"): _m_tcp_flags,
    ("tcp", "--tcp-flags"): _m_tcp_flags,
    ("udp", "--dport"): _m_dport,
    ("udp", "--destination-port"): _m_dport,
    ("udp", "--sport"): _m_sport,
    ("udp", "--source-port"): _m_sport,
    ("multiport", "--dports"): _m_multiport,
    ("multiport", "--destination-ports"): _m_multiport,
    ("multiport", "--sports"): _m_multiport,
    ("multiport", "--source-ports"): _m_multiport,
    ("multiport", "--ports"): _m_multiport,
    ("mark", "--mark"): _m_mark,
    ("connmark", "--mark"): _m_connmark,
    ("conntrack", "--ctstate"): _m_ctstate,
    ("state", "--state"): _m_ctstate,
    ("set", "--match-set"): _m_set,
    ("addrtype", "--dst-type"): _m_addrtype,
    ("addrtype", "--src-type"): _m_addrtype,
    ("owner", "--socket-exists"): _m_owner,
    ("owner", "--uid-owner"): _m_owner,
    ("owner", "--gid-owner"): _m_owner,
    ("comment", "--comment"): _m_true,
    ("iprange", "--src-range"): _m_iprange,
    ("iprange", "--dst-range"): _m_iprange,
    ("socket", "--transparent"): _m_socket,
    ("socket", "--nowildcard"): _m_socket,
    ("socket", "--restore-skmark"): _m_socket,
    ("pkttype", "--pkt-type"): _m_pkttype,
    # `-m limit`: assumed under its rate for one packet (stated by the trace).
    ("limit", "--limit"): _m_true,
    ("limit", "--limit-burst"): _m_true,
    # set-match options that only affect counters
    ("set", "--return-nomatch"): _m_true,
    ("set", "--update-counters"): _m_true,
    ("set", "--update-subcounters"): _m_true,
    ("addrtype", "--limit-iface-in"): _m_true,
    ("addrtype", "--limit-iface-out"): _m_true,
}

# Options that appear with a module but carry no condition of their own.
_MODULE_ONLY = {"-m", "--match"}


def eval_match(m: Match, p: Packet, c: Context, hook: str) -> Tri:
    """Evaluate one match; None when it is not modelled (the caller decides what that means)."""
    if m.option in _MODULE_ONLY:
        return True
    if m.module == "statistic":
        return None  # handled as a fork by the walker
    fn = MATCHES.get((m.module, m.option))
    if fn is None:
        return None
    try:
        result = fn(m, p, c, hook)
    except (ValueError, IndexError):
        return None
    if result is None:
        return None
    return (not result) if m.negated else result


# --------------------------------------------------------------------------- targets


def _xmark(old: int, value: int, mask: int) -> int:
    """`--set-xmark value/mask`: zero the mask bits, then XOR the value (iptables-extensions(8))."""
    return ((old & ~mask) ^ value) & ALL_ONES


def _opt(rule: Rule, *names: str) -> str | None:
    args = rule.target_option(*names)
    if args is None:
        return None
    return args[0] if args else ""


def _first_addr(ns: NetNamespace, dev: str | None, family: int) -> IPAddress | None:
    """The primary address of `dev` (first one, as `ip addr` lists them)."""
    if dev is None:
        return None
    link = ns.link(dev)
    for addr in link.addresses if link else ():
        if addr.interface.version == family:
            return addr.interface.ip
    return None


def _masq_addr(ns: NetNamespace, dev: str | None, p: Packet) -> IPAddress | None:
    """The address MASQUERADE picks on `dev`: one whose subnet holds the destination, else
    the device's first (primary) address of the family."""
    link = ns.link(dev) if dev else None
    if link is None:
        return None
    addrs = [a.interface for a in link.addresses if a.interface.version == p.family]
    for iface in addrs:
        if p.dst in iface.network:
            return iface.ip
    return addrs[0].ip if addrs else None


@dataclass(frozen=True, slots=True)
class _Effect:
    kind: str  # "continue" | "accept" | "drop" | "reject" | "return" | "jump" | "goto" | "unknown"
    packet: Packet
    summary: str
    action: str
    chain: str | None = None  # jump/goto target when it is not `rule.target` (a verdict map)


def apply_target(rule: Rule, p: Packet, c: Context, hook: str) -> _Effect:
    """Apply a matched rule's target to the packet."""
    t = rule.target
    if t is None:
        return _Effect("continue", p, "counted (rule has no target)", "continue")
    if t == "ACCEPT":
        return _Effect("accept", p, "ACCEPT", "accept")
    if t == "DROP":
        return _Effect("drop", p, "DROP", "drop")
    if t == "REJECT":
        how = _opt(rule, "--reject-with") or "icmp-port-unreachable"
        return _Effect("reject", p, f"REJECT --reject-with {how}", "reject")
    if t == "RETURN":
        return _Effect("return", p, "RETURN", "return")
    if t in _NOOP_TARGETS:
        return _Effect("continue", p, f"{t} (does not change the packet)", "continue")
    if t == "MARK":
        old = p.mark
        if (v := _opt(rule, "--set-xmark")) is not None:
            value, mask = parse_mark(v)
            new = _xmark(old, value, mask)
        elif (v := _opt(rule, "--set-mark")) is not None:
            value, mask = parse_mark(v)
            new = ((old & ~mask) | value) & ALL_ONES
        elif (v := _opt(rule, "--and-mark")) is not None:
            new = old & _int(v)
        elif (v := _opt(rule, "--or-mark")) is not None:
            new = old | _int(v)
        elif (v := _opt(rule, "--xor-mark")) is not None:
            new = old ^ _int(v)
        else:
            return _Effect("unknown", p, f"MARK with unmodelled options: {rule.text}", "unknown")
        return _Effect("continue", replace(p, mark=new), f"MARK {old:#x} -> {new:#x}", "mark")
    if t == "CONNMARK":
        old_ct, old = p.ctmark, p.mark
        nfmask = _int(_opt(rule, "--nfmask") or _opt(rule, "--mask") or "0xffffffff")
        ctmask = _int(_opt(rule, "--ctmask") or _opt(rule, "--mask") or "0xffffffff")
        if rule.target_option("--save-mark") is not None:
            # ctmark = (ctmark & ~ctmask) ^ (nfmark & nfmask)
            new_ct = ((old_ct & ~ctmask) ^ (old & nfmask)) & ALL_ONES
            return _Effect("continue", replace(p, ctmark=new_ct),
                           f"CONNMARK save: ctmark {old_ct:#x} -> {new_ct:#x}", "mark")
        if rule.target_option("--restore-mark") is not None:
            # nfmark = (nfmark & ~nfmask) ^ (ctmark & ctmask)
            new = ((old & ~nfmask) ^ (old_ct & ctmask)) & ALL_ONES
            return _Effect("continue", replace(p, mark=new),
                           f"CONNMARK restore: mark {old:#x} -> {new:#x}", "mark")
        if (v := _opt(rule, "--set-xmark")) is not None:
            value, mask = parse_mark(v)
            new_ct = _xmark(old_ct, value, mask)
        elif (v := _opt(rule, "--set-mark")) is not None:
            value, mask = parse_mark(v)
            new_ct = ((old_ct & ~mask) | value) & ALL_ONES
        else:
            return _Effect("unknown", p, f"CONNMARK with unmodelled options: {rule.text}", "unknown")
        return _Effect("continue", replace(p, ctmark=new_ct),
                       f"CONNMARK ctmark {old_ct:#x} -> {new_ct:#x}", "mark")
    if t == "CT":
        if (z := _opt(rule, "--zone")) is not None:
            return _Effect("continue", replace(p, ct_zone=int(z)), f"CT zone {z}", "continue")
        if rule.target_option("--notrack") is not None:
            return _Effect("continue", replace(p, ctstate="UNTRACKED"), "CT notrack", "continue")
        return _Effect("continue", p, "CT (no effect on the path)", "continue")
    if t == "TPROXY":
        return _tproxy(rule, p, c, hook)
    if t == "REDIRECT":
        return _redirect(rule, p, c, hook)
    if t == "DNAT":
        spec = _opt(rule, "--to-destination", "--to")
        if not spec:
            return _Effect("unknown", p, f"DNAT without --to-destination: {rule.text}", "unknown")
        ip, port = _split_hostport(spec, p.dport)
        q = replace(p, dst=ip, dport=port, dnat_done=True,
                    original_dst=p.original_dst or p.dst_addr)
        return _Effect("accept", q, f"DNAT {p.dst_addr} -> {SocketAddr(ip, port)}", "nat")
    if t == "SNAT":
        spec = _opt(rule, "--to-source", "--to")
        if not spec:
            return _Effect("unknown", p, f"SNAT without --to-source: {rule.text}", "unknown")
        ip, port = _split_hostport(spec, p.sport)
        q = replace(p, src=ip, sport=port, snat_done=True)
        return _Effect("accept", q, f"SNAT source -> {SocketAddr(ip, port)}", "nat")
    if t == "MASQUERADE":
        # nf_nat_masquerade_ipv4: the new source is inet_select_addr(out device, next hop,
        # RT_SCOPE_UNIVERSE) - an address of the OUTGOING DEVICE (one on the next hop's
        # subnet first), not the route's `src` (which may sit on another device).
        src = _masq_addr(c.ns, c.out_dev, p) or c.out_src
        if src is None:
            return _Effect("unknown", p, "MASQUERADE: outgoing address unknown", "unknown")
        q = replace(p, src=src, snat_done=True)
        return _Effect("accept", q, f"MASQUERADE source -> {src}", "nat")
    # A chain of the same table: jump or goto.
    return _Effect("goto" if rule.goto else "jump", p, f"{'goto' if rule.goto else 'jump'} {t}",
                   "goto" if rule.goto else "jump")


def _split_hostport(spec: str, default_port: int) -> tuple[IPAddress, int]:
    spec = spec.split("-")[0] if spec.count(":") <= 1 and "-" in spec.split(":")[0] else spec
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        port = int(rest[1:].split("-")[0]) if rest.startswith(":") else default_port
        return ipaddress.ip_address(host), port
    if spec.count(":") == 1:
        host, port_s = spec.split(":")
        port = int(port_s.split("-")[0]) if port_s else default_port
        return ipaddress.ip_address(host.split("-")[0]), port
    return ipaddress.ip_address(spec.split("-")[0]), default_port


def _tproxy(rule: Rule, p: Packet, c: Context, hook: str) -> _Effect:
    """TPROXY (iptables-extensions(8)): assign the packet to a transparent local listener.

    The listener is looked up on --on-ip (default: the primary address of the incoming
    device, else the packet's destination; `nf_tproxy_laddr4`) and --on-port (0: keep the
    destination port). The destination is NOT rewritten: the accepted socket's
    getsockname() is the original destination. When no transparent listener exists the
    kernel drops the packet (`tproxy_tg4` returns NF_DROP). On success the mark is set
    (`--tproxy-mark value/mask`) so an `ip rule` can route it to `local` and the rule is
    terminal (NF_ACCEPT).
    """
    if hook != "prerouting":
        return _Effect("unknown", p, "TPROXY outside PREROUTING", "unknown")
    port_s = _opt(rule, "--on-port")
    ip_s = _opt(rule, "--on-ip")
    port = int(port_s) if port_s and int(port_s) else p.dport
    ip = ipaddress.ip_address(ip_s) if ip_s else None
    if ip is None or ip.is_unspecified:
        ip = _first_addr(c.ns, p.iif, p.family) or p.dst
    mark_s = _opt(rule, "--tproxy-mark")
    new_mark = p.mark
    if mark_s:
        value, mask = parse_mark(mark_s)
        new_mark = _xmark(p.mark, value, mask)
    listener = find_listener(c.listeners, ip, port, p.proto)
    target = SocketAddr(ip, port)
    if c.listeners is not None and listener is None:
        return _Effect("drop", p, f"TPROXY to {target}: no listener there, the kernel drops it",
                       "drop")
    if c.listeners is None:
        c.notes.append(
            f"{c.ns.label}: no ss-listen.txt in the bundle; assumed a transparent listener on {target}"
        )
    q = replace(p, mark=new_mark, tproxy=target)
    if rule.target_option("--nft-no-verdict") is not None:
        # nft `tproxy` without a verdict statement: the socket is assigned and the rule
        # set continues (the iptables target is terminal).
        return _Effect("continue", q, f"tproxy -> listener {target}, mark {p.mark:#x} -> "
                       f"{new_mark:#x} (no verdict: evaluation continues)", "tproxy")
    return _Effect("accept", q, f"TPROXY -> listener {target}, mark {p.mark:#x} -> {new_mark:#x}",
                   "tproxy")


def _redirect(rule: Rule, p: Packet, c: Context, hook: str) -> _Effect:
    """REDIRECT: DNAT to the incoming interface's primary address, or to the loopback
    address for locally generated packets (127.0.0.1 / ::1), port --to-ports."""
    ports = _opt(rule, "--to-ports", "--to-port")
    port = int(ports.split("-")[0].split(":")[0]) if ports else p.dport
    if hook == "output" or p.iif is None:
        ip: IPAddress = ipaddress.ip_address("127.0.0.1" if p.family == 4 else "::1")
    else:
        found = _first_addr(c.ns, p.iif, p.family)
        if found is None:
            return _Effect("drop", p, f"REDIRECT: {p.iif} has no address, the kernel drops it",
                           "drop")
        ip = found
    q = replace(p, dst=ip, dport=port, dnat_done=True, original_dst=p.original_dst or p.dst_addr)
    return _Effect("accept", q, f"REDIRECT {p.dst_addr} -> {SocketAddr(ip, port)}", "nat")


def find_listener(listeners: tuple[Listener, ...] | None, ip: IPAddress, port: int,
                  proto: str = "tcp") -> Listener | None:
    """The socket that would take a packet to ip:port: an exact bind beats a wildcard."""
    best: Listener | None = None
    for lst in listeners or ():
        if lst.port != port or lst.proto != proto or not lst.accepts(ip):
            continue
        if lst.address is not None and lst.address == ip:
            return lst
        best = best or lst
    return best


# --------------------------------------------------------------------------- the walk


_DST_HOST = re.compile(r" (! )?-d (\d{1,3}(?:\.\d{1,3}){3})/32 ")


def _cannot_match_dst(text: str, p: Packet) -> bool:
    """A fast no on raw text: a rule with a plain `-d A.B.C.D/32` for another address.

    kube-proxy's KUBE-SERVICES chain is one such rule per Service port (10k+ on a big
    node); deciding them without tokenising keeps a trace fast. Only the iptables-save
    form counts (no negation, before any quoted comment), anything else is tokenised.
    """
    m = _DST_HOST.search(text)
    if m is None or m.group(1):
        return False
    quote = text.find('"')
    if quote != -1 and quote < m.start():
        return False
    return p.family != 4 or m.group(2) != str(p.dst)


class _Stop(Exception):
    """Internal: the walk cannot decide (insufficient-info)."""

    def __init__(self, reason: str, culprit: SourceRef) -> None:
        super().__init__(reason)
        self.reason = reason
        self.culprit = culprit


def _malformed(table: Table, chain: Chain, rule: Rule, what: str, exc: Exception) -> _Stop:
    """A rule whose arguments do not parse (`--nfmask 0xzz`, a mixed-family range) found
    when the walk evaluates it: bad data, so the walk stops naming the file and line
    (insufficient-info), never an internal error."""
    return _Stop(f"cannot evaluate {table.name}/{chain.name} #{rule.position}: {what} has a "
                 f"malformed argument ({type(exc).__name__}: {exc})", rule.source)


HookChains = tuple[list[tuple[Table, Chain]], list[str]]
"""`hook_chains`' answer: the base chains in the kernel's order, and notes on that order."""


def hook_tables(ns: NetNamespace, hook: str, family: int) -> list[tuple[Table, Chain]]:
    """Base chains registered at `hook` for `family`, in the order the kernel runs them."""
    return hook_chains(ns, hook, family)[0]


def hook_chains(ns: NetNamespace, hook: str, family: int) -> HookChains:
    """Base chains the kernel enters at `hook`, in its order, and notes on that order.

    - A built-in chain of an iptables-nft table that `nft -j list ruleset` does not list was
      never registered (iptables-save prints every built-in chain of a table it shows): the
      kernel does not enter it, so it has no "policy ACCEPT" step.
    - Equal priority: the later-registered chain runs first (`nf_hook_entries_grow` inserts a
      new hook before the entries of the same priority), told from the nft handles
      (`parse.nft_hooks`); where a chain has no handle (iptables-legacy, an old bundle) the
      order cannot be told and a note says so.
    """
    regs = ns.registrations
    found: list[tuple[int, tuple[int, int] | None, int, Table, Chain]] = []
    order = 0
    for table in ns.tables():
        if table.family not in _FAMILY_TABLES[family]:
            continue
        for chain in table.base_chains():
            assert chain.base is not None
            if chain.base.hook != hook:
                continue
            reg = None
            if regs is not None and table.backend in ("iptables-nft", "nft"):
                reg = regs.get((table.family, table.name, chain.name))
                if reg is None and table.backend == "iptables-nft":
                    continue  # printed by iptables-save, never registered
            when = None
            if reg is not None and reg.table_order is not None and reg.chain_handle is not None:
                when = (reg.table_order, reg.chain_handle)
            found.append((chain.base.priority, when, order, table, chain))
            order += 1
    notes: list[str] = []
    by_prio: dict[int, list[tuple[int, tuple[int, int] | None, int, Table, Chain]]] = {}
    for item in found:
        by_prio.setdefault(item[0], []).append(item)
    result: list[tuple[Table, Chain]] = []
    for prio in sorted(by_prio):
        group = by_prio[prio]
        if len(group) > 1 and all(g[1] is not None for g in group):
            # Later registration (higher handles) first.
            group.sort(key=lambda g: g[1], reverse=True)  # type: ignore[arg-type, return-value]
            tables = {(g[3].family, g[3].name) for g in group}
            if len(tables) > 1:
                names = ", ".join(f"{g[3].family} {g[3].name} {g[4].name}" for g in group)
                notes.append(f"{ns.label}: {hook} chains of equal priority {prio} ({names}) "
                             "ordered by table handle (later-created table first), assuming "
                             "each chain was created with its table")
        elif len(group) > 1:
            names = ", ".join(f"{g[3].family} {g[3].name} {g[4].name}" for g in group)
            notes.append(f"{ns.label}: {hook} chains of equal priority {prio} ({names}): their "
                         "order cannot be told without nft handles (nft-ruleset.json / "
                         "nft-tables.jsonl); "
                         "assumed in dump order")
        result.extend((g[3], g[4]) for g in group)
    return result, notes


def run_hook(ns: NetNamespace, hook: str, packet: Packet, ctx: Context, *,
             chains_at: HookChains | None = None) -> HookResult:
    """Run every base chain at `hook`, following the first branch of any statistic fork.

    `chains_at`: `hook_chains(ns, hook, packet.family)` when the caller has it already
    (doctor sends several sample packets through one namespace's hook)."""
    p = packet
    steps: list[NfStep] = []
    is_dst = hook in ("prerouting", "output")
    nat_seen = False
    chains, order_notes = hook_chains(ns, hook, p.family) if chains_at is None else chains_at
    for n in order_notes:
        if n not in ctx.notes:
            ctx.notes.append(n)
    for table, chain in chains:
        assert chain.base is not None
        if chain.base.kind == "nat":
            # nf_nat_inet_fn: the nat chains of a hook run in priority order only until one
            # of them binds this manip (DNAT/REDIRECT, SNAT/MASQUERADE); a chain that ends
            # in ACCEPT without NAT hands over to the next nat chain (iptables' and nft's
            # alike).
            if p.ctstate != "NEW" or (p.dnat_done if is_dst else p.snat_done):
                continue
            nat_seen = True
        try:
            verdict, p2, sub, branches = _walk_base(table, chain, p, ctx, hook)
        except _Stop as stop:
            return HookResult("insufficient-info", p, tuple(steps), stop.reason, stop.culprit,
                              tuple(ctx.notes))
        except ParseError as exc:
            src = SourceRef(exc.path, exc.line)
            return HookResult("insufficient-info", p, tuple(steps), exc.message, src,
                              tuple(ctx.notes))
        steps.extend(sub)
        if verdict in ("drop", "reject"):
            last = sub[-1] if sub else None
            return HookResult(verdict, p2, tuple(steps), last.summary if last else verdict,
                              last.source if last else None, tuple(ctx.notes))
        p = p2
    if nat_seen:
        # No nat chain bound it: the kernel installs a null binding
        # (nf_nat_alloc_null_binding), so this manip is now decided for the connection.
        p = replace(p, dnat_done=True) if is_dst else replace(p, snat_done=True)
    return HookResult("accept", p, tuple(steps), notes=tuple(ctx.notes))


@dataclass
class _Run:
    """One walk of a base chain under fixed fork decisions."""

    verdict: str
    packet: Packet
    steps: list[NfStep]
    arities: list[int]  # one per fork met, in order
    decisions: list[int]  # the branch taken at each (0: the first)


def _walk_base(
    table: Table, base: Chain, p: Packet, ctx: Context, hook: str
) -> tuple[str, Packet, list[NfStep], list[str]]:
    """Walk one base chain; returns (verdict, packet, steps, fork branch descriptions).

    Without forks there is one walk. With forks (statistic, numgen) every combination of
    branches is walked (bounded); the one whose destination `ctx.endpoint` names is
    followed, else the first. The fork step carries the other branches, and a note says
    which branch was followed and why.
    """
    first = _run(table, base, p, ctx, hook, [])
    if not first.arities:
        return first.verdict, first.packet, first.steps, []
    runs = [first]
    queue = [first.decisions[:i] + [v] for i in range(len(first.arities))
             for v in range(1, first.arities[i])]
    while queue and len(runs) < 32:
        prefix = queue.pop(0)
        sub = Context(ctx.ns, ctx.local_addresses, ctx.listeners, ctx.out_dev, ctx.out_src)
        try:
            r = _run(table, base, p, sub, hook, list(prefix))
        except (_Stop, ParseError):
            runs.append(_Run("insufficient-info", p, [], [], prefix))
            continue
        runs.append(r)
        queue.extend(r.decisions[:i] + [v] for i in range(len(prefix), len(r.arities))
                     for v in range(1, r.arities[i]))
    chosen, why = 0, "the first"
    if ctx.endpoint is not None:
        hit = ctx.endpoint.pick([r.packet.dst if r.packet.dst != p.dst or r.packet.dnat_done
                                 else None for r in runs])
        if hit is not None:
            chosen, why = hit, f"--endpoint {ctx.endpoint.text}"
        else:
            why = f"the first: --endpoint {ctx.endpoint.text} is not among them"
    main = runs[chosen]
    described = [_describe_run(r, p) for r in runs]
    alternatives = [d for i, d in enumerate(described) if i != chosen]
    steps = list(main.steps)
    for i, st in enumerate(steps):
        if _is_fork(st.rule):
            steps[i] = replace(st, branches=tuple(alternatives))
            where = f"{table.family} {table.name} {st.chain} #{st.position}"
            ctx.notes.append(
                f"{ctx.ns.label}: {where} picks at random ({_fork_text(st.rule)}); the packet "
                f"may take {len(runs)} paths: " + "; ".join(described)
                + f". Followed {described[chosen]} ({why}).")
            break
    return main.verdict, main.packet, steps, alternatives


def _is_fork(rule: Rule | None) -> bool:
    if rule is None:
        return False
    return any(m.module == "statistic" for m in rule.matches) or any(
        st.vmap is not None and nftlookup.is_numgen(st.vmap) for st in rule.statements)


def _fork_text(rule: Rule | None) -> str:
    assert rule is not None
    for st in rule.statements:
        if st.vmap is not None and nftlookup.is_numgen(st.vmap):
            return st.vmap.key[0]
    stat = [m for m in rule.matches if m.module == "statistic"]
    return " ".join(str(m) for m in stat) or "statistic"


def _describe_run(r: _Run, p: Packet) -> str:
    if r.verdict == "insufficient-info":
        return "a branch that cannot be decided"
    if r.packet.dst_addr != p.dst_addr:
        return f"{r.packet.dst_addr} ({r.verdict})"
    last = next((s for s in reversed(r.steps) if s.action in ("nat", "accept", "drop", "reject",
                                                             "tproxy", "policy")), None)
    return f"{r.verdict}: {last.summary if last else 'falls through'}"


def _decide(decisions: list[int], arities: list[int], arity: int) -> int:
    pos = len(arities)
    arities.append(arity)
    if pos < len(decisions):
        return decisions[pos]
    decisions.append(0)
    return 0


def _run(table: Table, base: Chain, p: Packet, ctx: Context, hook: str,
         decisions: list[int]) -> _Run:
    arities: list[int] = []
    verdict, q, steps = _walk(table, base, p, ctx, hook, decisions, arities)
    return _Run(verdict, q, steps, arities, decisions)


def _lookups_match(rule: Rule, p: Packet, ctx: Context, hook: str) -> tuple[bool, str | None]:
    """(matched, what is not modelled) for the rule's nft set lookups."""
    unknown = None
    for lk in rule.lookups:
        found, _, why = nftlookup.lookup(lk, p, ctx.out_dev, hook)
        if found is None:
            unknown = unknown or why
            continue
        if why == nftlookup.ABSENT:  # the packet lacks the header: never matches
            return False, None
        if found == lk.negated:
            return False, None
    return True, unknown


def _walk(
    table: Table, base: Chain, p: Packet, ctx: Context, hook: str, decisions: list[int],
    arities: list[int],
) -> tuple[str, Packet, list[NfStep]]:
    steps: list[NfStep] = []
    stack: list[tuple[Chain, int]] = []  # return points: (chain, next index)
    chain, index = base, 0
    depth = 0
    while True:
        if index >= len(chain):
            if chain is not base and stack:
                chain, index = stack.pop()
                continue
            # End of the base chain, or of a user chain the base chain entered by goto:
            # the base chain's policy applies.
            return _policy(table, base, p, steps)
        text = chain.raw_text(index)
        if text is not None and _cannot_match_dst(text, p):
            index += 1
            continue
        rule = chain.rule_at(index)
        index += 1
        matched = True
        unknown: str | None = None
        for m in rule.matches:
            if m.module == "statistic":
                continue
            try:
                r = eval_match(m, p, ctx, hook)
            except (ValueError, TypeError, IndexError) as exc:
                raise _malformed(table, chain, rule, f"match `{m}`", exc) from None
            if r is False:
                matched = False
                break
            if r is None:
                unknown = unknown or f"match `{m}`"
        if not matched:
            continue
        if rule.lookups:
            matched, why = _lookups_match(rule, p, ctx, hook)
            if not matched:
                continue
            unknown = unknown or why
        if any(m.module == "statistic" for m in rule.matches):
            # 0: the rule is taken, 1: it is not.
            if _decide(decisions, arities, 2) != 0:
                continue
        if unknown is not None:
            if rule.target is None or rule.target in _NOOP_TARGETS:
                steps.append(NfStep(table, chain.name, rule.position, "unknown-skipped",
                                    f"{unknown} not modelled; the rule cannot change the "
                                    "path, skipped", rule.source, p.mark, p.mark, rule))
                continue
            raise _Stop(f"cannot decide rule {table.name}/{chain.name} #{rule.position}: "
                        f"{unknown} is not modelled", rule.source)
        if rule.statements:
            eff = _statements(table, chain, rule, p, ctx, hook, steps, decisions, arities)
            if eff is None:  # a verdict map found nothing: the rule breaks, next rule
                continue
        else:
            try:
                eff = apply_target(rule, p, ctx, hook)
            except (ValueError, TypeError, IndexError) as exc:
                raise _malformed(table, chain, rule, f"target {rule.target}", exc) from None
            if eff.kind == "unknown":
                raise _Stop(f"cannot apply {table.name}/{chain.name} #{rule.position}: "
                            f"{eff.summary}", rule.source)
            steps.append(NfStep(table, chain.name, rule.position, eff.action, eff.summary,
                                rule.source, p.mark, eff.packet.mark, rule, verdict=eff.kind))
        p = eff.packet
        if eff.kind == "continue":
            continue
        if eff.kind in ("accept", "drop", "reject"):
            return eff.kind, p, steps
        if eff.kind == "return":
            if not stack:
                return _policy(table, base, p, steps)
            chain, index = stack.pop()
            continue
        name = eff.chain or rule.target or ""
        target = table.chains.get(name)
        if target is None:
            raise _Stop(f"{table.name}/{chain.name} #{rule.position}: target {name} is "
                        "neither a known target nor a chain of this table", rule.source)
        depth += 1
        if depth > 10_000:
            raise _Stop("chain walk does not terminate (loop?)", rule.source)
        if eff.kind == "jump":
            stack.append((chain, index))
        chain, index = target, 0


_VERDICT_KINDS = {"accept": "accept", "drop": "drop", "return": "return", "continue": "continue"}


def _statements(table: Table, chain: Chain, rule: Rule, p: Packet, ctx: Context, hook: str,
                steps: list[NfStep], decisions: list[int], arities: list[int]) -> _Effect | None:
    """Run an nft rule's statements in order; the last effect, or None when a map missed.

    Each statement is applied as the iptables target it translates to, on the packet the
    previous one left; a verdict (accept, drop, a jump from a map, ...) ends the rule.
    """
    eff = _Effect("continue", p, "", "continue")
    for st in rule.statements:
        q = eff.packet
        if st.vmap is not None:
            got = _vmap(st.vmap, q, ctx, hook, decisions, arities, table, chain, rule)
            if got is None:
                steps.append(NfStep(table, chain.name, rule.position, "continue",
                                    f"{st.vmap}: no element for this packet, next rule",
                                    rule.source, q.mark, q.mark, rule))
                return None
            eff = got
        elif st.target is None:
            raise _Stop(f"cannot apply {table.name}/{chain.name} #{rule.position}: statement "
                        f"`{st.text}` is not modelled", rule.source)
        else:
            one = replace(rule, target=st.target, target_options=st.options, goto=st.goto,
                          statements=(), lookups=())
            eff = apply_target(one, q, ctx, hook)
            if eff.kind == "unknown":
                raise _Stop(f"cannot apply {table.name}/{chain.name} #{rule.position}: "
                            f"{eff.summary}", rule.source)
            if eff.kind in ("jump", "goto"):
                eff = replace(eff, chain=st.target)
        steps.append(NfStep(table, chain.name, rule.position, eff.action, eff.summary,
                            rule.source, q.mark, eff.packet.mark, rule))
        if eff.kind != "continue":
            return eff
    return eff


def _vmap(lk: NftLookup, p: Packet, ctx: Context, hook: str, decisions: list[int],
          arities: list[int], table: Table, chain: Chain, rule: Rule) -> _Effect | None:
    """A verdict map: the verdict of the element the packet's key finds (None: none)."""
    where = f"{table.name}/{chain.name} #{rule.position}"
    if nftlookup.is_numgen(lk):
        branches = nftlookup.numgen_branches(lk)
        if branches is None:
            raise _Stop(f"cannot apply {where}: `{lk}` is not modelled", rule.source)
        pick = _decide(decisions, arities, len(branches)) if len(branches) > 1 else 0
        b = branches[pick]
        element: NftElement | None = b.element
        if element is None:
            return None
        head = f"{lk.key[0]} -> {element.parts[0]} ({b.share}/{b.modulus})"
    else:
        found, element, why = nftlookup.lookup(lk, p, ctx.out_dev, hook)
        if found is None:
            raise _Stop(f"cannot decide {where}: {why} is not modelled", rule.source)
        if not found or element is None:
            return None
        head = f"{lk}: {' . '.join(element.parts)}"
    verdict = element.verdict or ""
    word, _, name = verdict.partition(" ")
    if word in ("jump", "goto") and name:
        return _Effect(word, p, f"{head} : {verdict}", word, chain=name)
    if word in _VERDICT_KINDS:
        return _Effect(_VERDICT_KINDS[word], p, f"{head} : {word}", word)
    raise _Stop(f"cannot apply {where}: verdict `{verdict}` of `{lk}` is not modelled",
                rule.source)


def _policy(
    table: Table, base: Chain, p: Packet, steps: list[NfStep]
) -> tuple[str, Packet, list[NfStep]]:
    # nft base chains and iptables built-in chains have a policy; default accept.
    pol = (base.policy or "ACCEPT").upper()
    steps.append(NfStep(table, base.name, None, "policy", f"end of {base.name}: policy {pol}",
                        base.source, p.mark, p.mark,
                        verdict="accept" if pol == "ACCEPT" else "drop"))
    return ("accept" if pol == "ACCEPT" else "drop"), p, steps


def iter_rules(ns: NetNamespace) -> Iterator[tuple[Table, Chain, Rule]]:
    """Every parsed rule of a namespace (tokenising all chains: for checks, not hot paths)."""
    for table in ns.tables():
        for chain in table.chains.values():
            for rule in chain.rules:
                yield table, chain, rule
