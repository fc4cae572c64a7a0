"""The typed model every analyzer works on: what one bundle says about a cluster.

Parsers (`ambientctl.analyzers.parse`) build these objects from raw command output; the
simulator and the checks only read them. Every fact keeps a `SourceRef` (bundle path,
1-based line, verbatim text) so that each conclusion can point at its evidence.

Conventions
- Frozen dataclasses; tuples, not lists. `None` means "not collected or unparseable"
  (see `NetNamespace.problems`); an empty tuple means "collected and empty".
- Route tables are named the way `ip route` prints them: "local", "main", "default" for
  255/254/253, the decimal number otherwise (`table_name()` normalises).
- Marks are ints; masks default to 0xffffffff as in the kernel.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import TypeAlias

from ambientctl.manifest_model import Manifest

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface: TypeAlias = ipaddress.IPv4Interface | ipaddress.IPv6Interface

ALL_ONES = 0xFFFFFFFF

_TABLE_NAMES = {"255": "local", "254": "main", "253": "default", "0": "unspec"}
_TABLE_IDS = {v: int(k) for k, v in _TABLE_NAMES.items()}


def table_name(value: str | int) -> str:
    """Normalise a route-table id the way `ip` prints it (254 -> "main")."""
    text = str(value)
    return _TABLE_NAMES.get(text, text)


def table_id(name: str) -> int | None:
    """The numeric id of a table name ("main" -> 254), None when not numeric."""
    if name in _TABLE_IDS:
        return _TABLE_IDS[name]
    return int(name) if name.isdigit() else None


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where a fact came from: bundle-relative path, 1-based line, and the line verbatim."""

    path: str
    line: int | None = None
    text: str | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path


@dataclass(frozen=True, slots=True)
class Problem:
    """A file that could not be used: missing, failed on the node, or malformed.

    `severity` is "error" (the data is unusable) or "warning" (usable, but doubtful:
    e.g. a hand-assembled bundle without manifest, an ipset whose member count
    disagrees with its header).
    """

    path: str
    line: int | None
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"


# --------------------------------------------------------------------------- netfilter


@dataclass(frozen=True, slots=True)
class Match:
    """One match option of a rule, kept generic so that no option is ever dropped.

    `-m mark ! --mark 0x539/0xfff` is Match(module="mark", option="--mark",
    args=("0x539/0xfff",), negated=True); `-s 10.0.0.1/32` is Match(module=None,
    option="-s", ...). nft rules are translated into the same vocabulary by their parser;
    an nft expression without an equivalent keeps module="nft" and its text in args.
    """

    module: str | None
    option: str
    args: tuple[str, ...] = ()
    negated: bool = False

    def __str__(self) -> str:
        neg = "! " if self.negated else ""
        return f"{neg}{self.option} {' '.join(self.args)}".strip()


@dataclass(frozen=True, slots=True)
class IpvsRealServer:
    """One real server of an IPVS virtual service (`  -> 10.244.0.2:53  Masq  1  0  0`)."""

    address: IPAddress
    port: int
    forward: str  # Masq | Route | Tunnel | Local
    weight: int
    source: SourceRef


@dataclass(frozen=True, slots=True)
class IpvsService:
    """One IPVS virtual service (`ipvsadm -Ln --exact`), kube-proxy's IPVS mode.

    IPVS takes a packet at NF_INET_LOCAL_IN (after the filter INPUT chains) when its
    destination is a virtual service and the address is local - kube-proxy binds every
    Service address to the dummy device `kube-ipvs0` for that - and, with Masq forwarding,
    rewrites the destination to a real server and sends it on (ip_vs_nat_xmit).
    """

    proto: str  # tcp | udp | sctp | fwm
    address: IPAddress | None  # None for an FWM service
    port: int | None
    scheduler: str
    flags: tuple[str, ...]
    fwmark: int | None
    source: SourceRef
    reals: tuple[IpvsRealServer, ...] = ()


@dataclass(frozen=True, slots=True)
class NftElement:
    """One element of an nft set or map: its key parts and, for a verdict map, its verdict.

    `parts` hold one text per key component in nft's syntax (`10.96.0.10`, `10.0.0.0/8`,
    `10.0.0.1-10.0.0.9`, `tcp`, `80`, `30000-32767`); `verdict` is `goto CHAIN`,
    `jump CHAIN`, `accept`, `drop`, `return` or `continue` (None in a plain set).
    """

    parts: tuple[str, ...]
    verdict: str | None = None
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class NftLookup:
    """An nft set or verdict-map lookup that the iptables vocabulary cannot carry.

    `ip daddr . meta l4proto . th dport vmap @service-ips` has key ("ip daddr",
    "meta l4proto", "th dport") and the elements of the table's map `service-ips`
    (resolved by the parser: nft(8) "SETS"/"MAPS" — a named set is looked up where the
    rule runs, so the elements listed with the table are the ones the kernel consults).
    `numgen random mod 2` as key is a random choice: the walk treats it as a fork.
    As a match (`KEY @set`, `KEY != { ... }`) `negated` inverts membership.
    """

    key: tuple[str, ...]
    elements: tuple[NftElement, ...]
    name: str | None = None  # the named set/map, None for an anonymous `{ ... }`
    negated: bool = False
    is_map: bool = False

    def __str__(self) -> str:
        data = f"@{self.name}" if self.name else "{ ... }"
        op = "vmap " if self.is_map else ("!= " if self.negated else "")
        return f"{' . '.join(self.key)} {op}{data}"


@dataclass(frozen=True, slots=True)
class NftStatement:
    """One statement of an nft rule that has several (or a verdict map), in rule order.

    `target`/`options`/`goto` use the iptables vocabulary of `Rule` (`MARK --set-xmark`,
    `DROP`, `MASQUERADE`, a chain name); `vmap` is a verdict-map lookup. A statement
    without either is not modelled: its nft text is in `text`, and a walk that reaches it
    stops with insufficient-info naming it.
    """

    target: str | None
    options: tuple[Match, ...] = ()
    goto: bool = False
    vmap: NftLookup | None = None
    text: str = ""


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of a chain, in kernel order (`position` is 1-based, as `-L --line-numbers`)."""

    table: str
    chain: str
    position: int
    matches: tuple[Match, ...]
    target: str | None  # "ACCEPT", "MARK", a chain name; None for a rule without -j/-g
    target_options: tuple[Match, ...]  # e.g. (--on-port 15001), (--set-xmark 0x100/0x100)
    goto: bool  # -g CHAIN rather than -j CHAIN
    source: SourceRef
    counters: tuple[int, int] | None = None  # [packets:bytes] from `iptables-save -c`
    # nft only: set/map lookups ANDed with `matches`, and the statements in order when a
    # rule has more than one or a verdict map (`target` is then "NFT").
    lookups: tuple[NftLookup, ...] = ()
    statements: tuple[NftStatement, ...] = ()

    def target_option(self, *names: str) -> tuple[str, ...] | None:
        """The arguments of the first target option among `names`, or None."""
        for opt in self.target_options:
            if opt.option in names:
                return opt.args
        return None

    @property
    def text(self) -> str:
        """The rule verbatim as the bundle holds it."""
        return self.source.text or ""


@dataclass(frozen=True)
class Chain:
    """A chain: declared policy plus its rules, tokenised lazily.

    A node can hold 630k rules; a trace touches a handful of chains. The parser stores
    each rule's (line number, text) and a tokeniser; `rules` tokenises on first use.
    `raw_rules` may be a lazy sequence (the iptables parser's `RawRules`: offsets into the
    dump, split into lines when first read) — any `Sequence` of (line, text) works.
    """

    table: str
    name: str
    policy: str | None  # "ACCEPT"/"DROP" for built-in chains, None for user chains ("-")
    source: SourceRef  # the declaration line (":NAME POLICY [p:b]") or first rule
    raw_rules: Sequence[tuple[int, str]] = ()
    tokenizer: Callable[[Chain, int, int, str], Rule] | None = field(
        default=None, repr=False, compare=False
    )
    prebuilt: tuple[Rule, ...] | None = field(default=None, repr=False, compare=False)
    base: BaseHook | None = None  # set for chains the kernel calls from a hook

    @cached_property
    def rules(self) -> tuple[Rule, ...]:
        """Rules in order; a malformed rule raises `ambientctl.errors.ParseError`."""
        if self.prebuilt is not None:
            return self.prebuilt
        assert self.tokenizer is not None
        return tuple(
            self.tokenizer(self, pos, line, text)
            for pos, (line, text) in enumerate(self.raw_rules, start=1)
        )

    def __len__(self) -> int:
        return len(self.prebuilt) if self.prebuilt is not None else len(self.raw_rules)

    def raw_text(self, index: int) -> str | None:
        """The 0-based `index`th rule's text before tokenising (None when prebuilt)."""
        return None if self.prebuilt is not None else self.raw_rules[index][1]

    def rule_at(self, index: int) -> Rule:
        """The 0-based `index`th rule, tokenising only it (a walk that skips most of a
        10k-rule KUBE-SERVICES chain need not tokenise them all)."""
        if self.prebuilt is not None:
            return self.prebuilt[index]
        if "rules" in self.__dict__:
            return self.__dict__["rules"][index]
        cache = self.__dict__.setdefault("_rule_cache", {})
        rule = cache.get(index)
        if rule is None:
            assert self.tokenizer is not None
            line, text = self.raw_rules[index]
            rule = cache[index] = self.tokenizer(self, index + 1, line, text)
        return rule


@dataclass(frozen=True, slots=True)
class BaseHook:
    """Where the kernel calls a base chain: netfilter hook and priority (lower runs first).

    iptables' built-in chains have fixed priorities (raw -300, mangle -150, nat DNAT -100,
    filter 0, security 50, nat SNAT 100: `include/uapi/linux/netfilter_ipv4.h`); nft base
    chains declare theirs. `kind` is "filter", "nat" (only sees the first packet of a
    connection) or "route" (a mark change re-routes locally generated packets).
    """

    hook: str  # prerouting | input | forward | output | postrouting
    priority: int
    kind: str = "filter"


@dataclass(frozen=True)
class Table:
    """One netfilter table as one tool printed it.

    `family` is "ip", "ip6" or "inet"; `backend` says who owns it: "iptables-nft",
    "iptables-legacy" or "nft" (native nftables, e.g. Istio's `inet istio-ambient-nat`).
    """

    family: str
    name: str
    backend: str
    chains: Mapping[str, Chain]
    source: SourceRef

    def base_chains(self) -> Iterator[Chain]:
        """Chains called from a netfilter hook."""
        # A lazily built chain map (the iptables parser's ChainMap, 160k chains on a
        # kube-proxy node) knows which few names can be base chains without building all.
        lazy = getattr(self.chains, "base_chains", None)
        if lazy is not None:
            return lazy()
        return (c for c in self.chains.values() if c.base is not None)


@dataclass(frozen=True, slots=True)
class ChainRegistration:
    """A base chain as nftables holds it (`nft -j list ruleset`): what the kernel enters.

    `iptables-save` prints built-in chains iptables-nft never registered; only those with a
    registration run. Handles order chains of equal priority (later registered runs first:
    `ambientctl.analyzers.parse.nft_hooks`). None = the dump did not say. `table_order`
    orders tables as their handles do: the handle itself in a full `nft list ruleset`, the
    table's position in the kernel's table list in per-table listings (where a table
    whose rules were not listed has no handle).
    """

    family: str
    table: str
    chain: str
    hook: str
    priority: int | None
    table_handle: int | None
    chain_handle: int | None
    source: SourceRef
    table_order: int | None = None


@dataclass(frozen=True)
class Ruleset:
    """All tables one dump holds (one `iptables-save` or one `nft list ruleset`)."""

    tables: tuple[Table, ...]
    source: SourceRef
    warnings: tuple[str, ...] = ()  # e.g. "# Warning: iptables-legacy tables present ..."
    header: str | None = None  # "# Generated by iptables-save v1.8.9 (nf_tables) ..."


# --------------------------------------------------------------------------- ipset


@dataclass(frozen=True, slots=True)
class IpSetMember:
    """One member line of a set, with its optional comment (Istio stores the pod UID)."""

    text: str  # "10.244.1.7" or "10.0.0.0/8"
    comment: str | None
    source: SourceRef


@dataclass(frozen=True)
class IpSet:
    """An ipset (`ipset list` or `ipset save`): header facts and members."""

    name: str
    type: str  # "hash:ip"
    family: str | None  # "inet" / "inet6"
    maxelem: int | None
    hashsize: int | None
    declared_entries: int | None  # "Number of entries: N" (ipset list only)
    members: tuple[IpSetMember, ...]
    source: SourceRef

    @cached_property
    def _index(self) -> tuple[dict[IPAddress, IpSetMember], list[tuple[IPNetwork, IpSetMember]]]:
        hosts: dict[IPAddress, IpSetMember] = {}
        nets: list[tuple[IPNetwork, IpSetMember]] = []
        for m in self.members:
            first = m.text.split(",", 1)[0]
            try:
                if "/" in first:
                    net = ipaddress.ip_network(first, strict=False)
                    if net.num_addresses == 1:
                        hosts[net.network_address] = m
                    else:
                        nets.append((net, m))
                elif "-" in first:
                    lo_s, hi_s = first.split("-", 1)
                    lo, hi = ipaddress.ip_address(lo_s), ipaddress.ip_address(hi_s)
                    for net in ipaddress.summarize_address_range(lo, hi):
                        nets.append((net, m))
                else:
                    hosts[ipaddress.ip_address(first)] = m
            except ValueError:
                continue
        return hosts, nets

    def lookup(self, ip: IPAddress) -> IpSetMember | None:
        """The member that contains `ip` (only the first dimension of multi-dim types)."""
        hosts, nets = self._index
        hit = hosts.get(ip)
        if hit is not None:
            return hit
        for net, member in nets:
            if ip.version == net.version and ip in net:
                return member
        return None


# --------------------------------------------------------------------------- routing


class RouteType(StrEnum):
    """Route types of `ip-route(8)`."""

    UNICAST = "unicast"
    LOCAL = "local"
    BROADCAST = "broadcast"
    MULTICAST = "multicast"
    ANYCAST = "anycast"
    BLACKHOLE = "blackhole"
    UNREACHABLE = "unreachable"
    PROHIBIT = "prohibit"
    THROW = "throw"
    NAT = "nat"


@dataclass(frozen=True, slots=True)
class NextHop:
    """One next hop of a (possibly multipath) route."""

    gateway: IPAddress | None
    dev: str | None
    weight: int = 1
    onlink: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    """One route of `ip route show table all`."""

    family: int  # 4 or 6
    table: str
    type: RouteType
    dst: IPNetwork
    gateway: IPAddress | None
    dev: str | None
    source: SourceRef
    src: IPAddress | None = None  # preferred source ("src 10.244.1.1")
    scope: str | None = None
    proto: str | None = None
    metric: int = 0
    onlink: bool = False
    flags: tuple[str, ...] = ()  # "linkdown", "dead", ...
    nexthops: tuple[NextHop, ...] = ()


class RuleAction(StrEnum):
    """What an `ip rule` does when its selector matches (`ip-rule(8)`)."""

    LOOKUP = "lookup"
    GOTO = "goto"
    NOP = "nop"
    BLACKHOLE = "blackhole"
    UNREACHABLE = "unreachable"
    PROHIBIT = "prohibit"


@dataclass(frozen=True, slots=True)
class IpRule:
    """One policy-routing rule (`ip rule` / `ip -j rule`)."""

    family: int
    priority: int
    action: RuleAction
    source: SourceRef
    invert: bool = False  # "not"
    src: IPNetwork | None = None  # None = "from all"
    dst: IPNetwork | None = None
    fwmark: int | None = None
    fwmask: int = ALL_ONES
    iif: str | None = None
    oif: str | None = None
    ipproto: str | None = None
    sport: tuple[int, int] | None = None
    dport: tuple[int, int] | None = None
    uidrange: tuple[int, int] | None = None
    tos: int | None = None
    table: str | None = None  # for LOOKUP
    goto: int | None = None  # for GOTO
    suppress_prefixlength: int | None = None
    suppress_ifgroup: int | None = None
    unresolved: bool = False  # a goto whose target priority has no rule


# --------------------------------------------------------------------------- links


@dataclass(frozen=True, slots=True)
class Address:
    """An address configured on a link."""

    interface: IPInterface
    scope: str | None
    source: SourceRef
    label: str | None = None


@dataclass(frozen=True, slots=True)
class Link:
    """A network device and its addresses (`ip -d addr`)."""

    index: int
    name: str
    source: SourceRef
    flags: frozenset[str] = frozenset()  # {"UP", "LOWER_UP", "BROADCAST", ...}
    state: str | None = None  # operstate: UP, DOWN, UNKNOWN, LOWERLAYERDOWN
    mtu: int | None = None
    kind: str | None = None  # veth, geneve, vxlan, bridge, ... (needs `-d`)
    mac: str | None = None
    master: str | None = None
    peer_index: int | None = None  # "eth0@if3": ifindex of the peer, possibly in another netns
    link_netnsid: int | None = None
    link_netns: str | None = None  # "link-netns NAME" when iproute2 knows the name
    tunnel_id: int | None = None  # geneve/vxlan "id"
    tunnel_remote: IPAddress | None = None
    tunnel_dstport: int | None = None
    addresses: tuple[Address, ...] = ()

    @property
    def admin_up(self) -> bool:
        """The device is administratively up (`ip link set up`)."""
        return "UP" in self.flags

    @property
    def carrier(self) -> bool:
        """The device can pass packets (up and not NO-CARRIER / LOWERLAYERDOWN)."""
        return self.admin_up and "NO-CARRIER" not in self.flags and self.state != "LOWERLAYERDOWN"


@dataclass(frozen=True, slots=True)
class Neighbor:
    """One `ip neigh` entry: who answered (or failed to answer) ARP/NDP for an address.

    `state` is the NUD state as iproute2 prints it (REACHABLE, STALE, PERMANENT, FAILED,
    INCOMPLETE, NOARP, ...); `lladdr` is None when the address never resolved.
    """

    ip: IPAddress
    dev: str | None
    lladdr: str | None
    state: tuple[str, ...]
    source: SourceRef
    proxy: bool = False  # `ip neigh add proxy ...` (answered for another host)

    @property
    def resolved(self) -> bool:
        """A link-layer address is known and usable (not FAILED/INCOMPLETE)."""
        return self.lladdr is not None and not ({"FAILED", "INCOMPLETE"} & set(self.state))


# --------------------------------------------------------------------------- sockets, sysctls


@dataclass(frozen=True, slots=True)
class Listener:
    """A listening socket (`ss -Hltnp`)."""

    proto: str  # "tcp"
    address: IPAddress | None  # None = wildcard ("*", "0.0.0.0", "[::]")
    port: int
    source: SourceRef
    family: int | None = None  # 4, 6 or None for a dual-stack wildcard ("*")
    process: str | None = None  # 'users:(("ztunnel",pid=1,fd=3))'
    interface: str | None = None  # "127.0.0.1%lo:53"

    def accepts(self, ip: IPAddress) -> bool:
        """Would this socket accept a connection addressed to `ip`?"""
        if self.address is None:
            return self.family is None or self.family == ip.version
        if self.address == ip:
            return True
        # An IPv6 wildcard listener without IPV6_V6ONLY also takes IPv4 (mapped) peers.
        return (
            isinstance(self.address, ipaddress.IPv6Address)
            and self.address == ipaddress.IPv6Address("::")
            and ip.version == 4
        )


@dataclass(frozen=True, slots=True)
class Sysctl:
    """One `sysctl -a` line."""

    name: str
    value: str
    source: SourceRef


# --------------------------------------------------------------------------- namespaces


@dataclass(frozen=True, slots=True)
class PodRef:
    """A pod, by namespace and name."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


# The model slots of a namespace that a bundle file fills (see analyzers/snapshot.py's
# SPEC_TABLE): what `NetNamespace.status` answers for, and what a lazy load parses on demand.
NETNS_SLOTS = ("links", "routes", "rules", "rulesets", "ipsets", "listeners", "sysctls", "ipvs",
               "registrations", "neighbors")


@dataclass(frozen=True, slots=True)
class SlotStatus:
    """How one slot of one namespace came to hold what it holds: data, not prose.

    `state` is one of "parsed" (data read from `path`), "empty" (the file was read and held
    nothing), "missing" (no file in the bundle, and the manifest does not say the command
    failed), "not-collected" (the manifest says the command failed on the node: `reason` is
    why) or "failed" (a file was there and could not be parsed: `path`, `line`, `reason`
    say where and why). Absence evidence, "could not check" and citations are lookups here.
    """

    state: str
    path: str | None = None
    line: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class NetNamespace:
    """One network namespace of one node: the node's own or a pod's.

    `id` is "<node>/host" or "<node>/pod/<namespace>/<name>". Fields are None when the
    bundle does not hold that file or it could not be parsed (`problems` says which).
    """

    id: str
    node: str
    pod: PodRef | None
    dir: str  # bundle directory of its files, e.g. "nodes/w1/host"
    links: tuple[Link, ...] | None = None
    routes: tuple[Route, ...] | None = None
    rules: tuple[IpRule, ...] | None = None
    rulesets: tuple[Ruleset, ...] | None = None  # iptables-save, ip6tables-save, legacy, nft
    ipsets: Mapping[str, IpSet] | None = None
    listeners: tuple[Listener, ...] | None = None
    sysctls: Mapping[str, Sysctl] | None = None
    problems: tuple[Problem, ...] = ()
    files: frozenset[str] = frozenset()  # file names present in `dir`
    # `ipvsadm -Ln --exact` on a node (kube-proxy IPVS mode); None: not collected / no binary
    ipvs: tuple[IpvsService, ...] | None = None
    # Base chains nftables really registered, by (family, table, chain); None when the
    # bundle has no `nft -j list ruleset` (older bundles): every printed chain is assumed.
    registrations: Mapping[tuple[str, str, str], ChainRegistration] | None = None
    neighbors: tuple[Neighbor, ...] | None = None  # `ip neigh`; None = not collected

    @property
    def label(self) -> str:
        """Human name: "ambient-worker" or "ambient-worker pod default/sleep-..."."""
        return f"{self.node} pod {self.pod}" if self.pod else f"{self.node} (node)"

    def link(self, name: str) -> Link | None:
        """The link called `name`, if the bundle has links for this netns."""
        for lnk in self.links or ():
            if lnk.name == name:
                return lnk
        return None

    def link_by_index(self, index: int) -> Link | None:
        """The link with ifindex `index`."""
        for lnk in self.links or ():
            if lnk.index == index:
                return lnk
        return None

    def addresses(self) -> Iterator[tuple[Link, Address]]:
        """Every (link, address) pair of this namespace."""
        for lnk in self.links or ():
            for addr in lnk.addresses:
                yield lnk, addr

    def owns(self, ip: IPAddress) -> Link | None:
        """The link that carries `ip` as a local address, if any."""
        for lnk, addr in self.addresses():
            if addr.interface.ip == ip:
                return lnk
        return None

    def tables(self) -> Iterator[Table]:
        """All netfilter tables of every ruleset of this namespace."""
        for rs in self.rulesets or ():
            yield from rs.tables

    def sysctl(self, name: str) -> Sysctl | None:
        """One sysctl by its dotted name, if collected."""
        return (self.sysctls or {}).get(name)

    def status(self, slot: str) -> SlotStatus:
        """Parse status of one slot (`NETNS_SLOTS`). A namespace built by hand (tests, the
        doctor's what-if copies) knows only whether the slot holds data; the bundle loader's
        namespaces know the file, line and reason (`analyzers.snapshot.LazyNetNamespace`)."""
        if slot not in NETNS_SLOTS:
            raise KeyError(f"unknown slot {slot!r}: one of {', '.join(NETNS_SLOTS)}")
        value = getattr(self, slot)
        if value is None:
            return SlotStatus("missing")
        return SlotStatus("parsed" if value else "empty")


# --------------------------------------------------------------------------- cluster objects


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One port of a Service."""

    port: int
    protocol: str
    target_port: str  # a number or a named container port
    name: str | None = None


@dataclass(frozen=True)
class Service:
    """A Service (from cluster/services.json)."""

    namespace: str
    name: str
    type: str
    cluster_ips: tuple[IPAddress, ...]
    ports: tuple[ServicePort, ...]
    selector: Mapping[str, str]
    source: SourceRef
    labels: Mapping[str, str] = field(default_factory=dict)

    def selects(self, pod: Pod) -> bool:
        """Does this Service's selector pick `pod`? (Kubernetes: same namespace, every
        selector label equal; a Service without a selector selects no pod.)"""
        return bool(self.selector) and pod.namespace == self.namespace and all(
            pod.labels.get(k) == v for k, v in self.selector.items())


@dataclass(frozen=True)
class Pod:
    """A pod (from cluster/pods.json), reduced to what path analysis needs."""

    namespace: str
    name: str
    uid: str | None
    node: str | None
    ips: tuple[IPAddress, ...]
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    phase: str | None
    host_network: bool
    source: SourceRef
    owner: str | None = None  # "ReplicaSet/sleep-7b85956664"
    container_ports: tuple[tuple[str | None, int, str], ...] = ()  # (name, port, protocol)
    images: tuple[str, ...] = ()

    @property
    def ref(self) -> PodRef:
        """This pod's namespace/name."""
        return PodRef(self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class Namespace:
    """A namespace (from cluster/namespaces.json)."""

    name: str
    labels: Mapping[str, str]
    source: SourceRef


@dataclass(frozen=True, slots=True)
class Node:
    """A Kubernetes node (from cluster/nodes.json)."""

    name: str
    addresses: tuple[tuple[str, str], ...]  # (type, address): ("InternalIP", "172.18.0.3")
    pod_cidrs: tuple[str, ...]
    source: SourceRef


@dataclass(frozen=True, slots=True)
class SliceEndpoint:
    """One endpoint of an EndpointSlice: what kube-proxy programs and ztunnel balances over."""

    ips: tuple[IPAddress, ...]
    ready: bool  # conditions.ready; the API says unset means ready
    target: PodRef | None  # targetRef of kind Pod


@dataclass(frozen=True)
class EndpointSlice:
    """An EndpointSlice (from cluster/endpointslices.json, optional in bundles)."""

    namespace: str
    name: str
    service: str | None  # label kubernetes.io/service-name
    endpoints: tuple[SliceEndpoint, ...]
    ports: tuple[tuple[str | None, int], ...]  # (name, port)
    source: SourceRef


@dataclass(frozen=True)
class MeshObject:
    """An Istio or Gateway API object the intended path depends on (PeerAuthentication,
    AuthorizationPolicy, Gateway), from cluster/<kind>s.json. `spec` is kept as read."""

    kind: str
    namespace: str
    name: str
    labels: Mapping[str, str]
    spec: Mapping[str, object]
    source: SourceRef


@dataclass(frozen=True)
class Cluster:
    """Kubernetes objects of the bundle; empty tuples when a file is absent."""

    pods: tuple[Pod, ...] = ()
    services: tuple[Service, ...] = ()
    namespaces: tuple[Namespace, ...] = ()
    nodes: tuple[Node, ...] = ()
    endpoint_slices: tuple[EndpointSlice, ...] = ()
    mesh_objects: tuple[MeshObject, ...] = ()
    mesh_kinds: frozenset[str] = frozenset()
    """Kinds of `mesh_objects` whose file the bundle holds (absent = not collected)."""


# --------------------------------------------------------------------------- ztunnel's view


@dataclass(frozen=True)
class ZtunnelWorkload:
    """One workload of a ztunnel `config_dump`, whatever generation printed it."""

    uid: str | None  # "Kubernetes//Pod/<ns>/<name>"; absent in Istio 1.18's IP-keyed map
    namespace: str | None
    name: str | None
    ips: tuple[IPAddress, ...]
    protocol: str  # "HBONE" or "TCP" (ztunnel's InboundProtocol)
    node: str | None
    waypoint: str | None
    status: str | None  # "Healthy" / "Unhealthy"; None when the dump does not say
    source: SourceRef


@dataclass(frozen=True)
class ZtunnelEndpoint:
    """One endpoint of a Service as ztunnel load-balances over it."""

    workload_uid: str
    address: IPAddress | None
    ports: Mapping[int, int]  # service port -> target port (0 = the Service's own mapping)
    status: str | None  # "Healthy" / "Unhealthy"; None when the dump does not say


@dataclass(frozen=True)
class ZtunnelService:
    """A Service (or ServiceEntry) of a ztunnel `config_dump`."""

    namespace: str | None
    name: str | None
    hostname: str | None
    vips: tuple[IPAddress, ...]
    ports: Mapping[int, int]  # service port -> target port
    endpoints: tuple[ZtunnelEndpoint, ...]
    source: SourceRef


@dataclass(frozen=True)
class ZtunnelConfig:
    """A ztunnel `config_dump`, read into one shape for every generation (Istio 1.18 ->).

    `shape` names the layout it was read from, so that the trace and doctor can say which
    generation's dump they used; `services_known` is False when that layout carries no
    Services (then ztunnel's load balancing cannot be read from it).
    """

    node: str
    shape: str
    workloads: tuple[ZtunnelWorkload, ...]
    services: tuple[ZtunnelService, ...]
    services_known: bool
    states: Mapping[str, str]  # workloadState: pod UID -> state ("Up", "Pending")
    source: SourceRef


@dataclass(frozen=True)
class NodeState:
    """Everything collected from one node: its own netns and its pods' netns."""

    name: str
    host: NetNamespace | None
    pods: Mapping[PodRef, NetNamespace]

    def namespaces(self) -> Iterator[NetNamespace]:
        """The host netns first, then pod netns in name order."""
        if self.host is not None:
            yield self.host
        for key in sorted(self.pods, key=str):
            yield self.pods[key]


@dataclass(frozen=True)
class Snapshot:
    """One bundle, parsed: the input of `trace` and `doctor`."""

    source: str  # the bundle path as given
    cluster: Cluster
    nodes: Mapping[str, NodeState]
    problems: tuple[Problem, ...] = ()  # bundle-wide (manifest missing, cluster file broken)
    manifest: Manifest | None = None  # typed manifest.json (None: assembled by hand)
    config_dumps: Mapping[str, object] = field(default_factory=dict)  # node -> ztunnel config_dump
    ztunnel_configs: Mapping[str, ZtunnelConfig] = field(default_factory=dict)  # readable dumps

    def namespaces(self) -> Iterator[NetNamespace]:
        """Every network namespace of every node, nodes in name order."""
        for name in sorted(self.nodes):
            yield from self.nodes[name].namespaces()

    @cached_property
    def _netns_index(self) -> tuple[dict[str, NetNamespace], dict[PodRef, NetNamespace]]:
        # Built once from the node listing (no slot is parsed): id -> netns, pod -> netns.
        # The first node holding a pod wins, as the scan it replaces did.
        by_id: dict[str, NetNamespace] = {}
        by_pod: dict[PodRef, NetNamespace] = {}
        for name in sorted(self.nodes):
            for ns in self.nodes[name].namespaces():
                by_id.setdefault(ns.id, ns)
        for state in self.nodes.values():
            for ref, ns in state.pods.items():
                by_pod.setdefault(ref, ns)
        return by_id, by_pod

    def netns(self, netns_id: str) -> NetNamespace | None:
        """A namespace by id (O(1): a dict built once from the listing)."""
        return self._netns_index[0].get(netns_id)

    def pod_netns(self, pod: PodRef) -> NetNamespace | None:
        """The network namespace collected for `pod`, on whichever node (O(1))."""
        return self._netns_index[1].get(pod)

    def read_problems(self) -> tuple[Problem, ...]:
        """The bundle-wide problems a command that reads a few nodes states (trace, the CLI's
        warnings): all of them here, everything is parsed; a lazy snapshot states those of
        what it has read (`LazySnapshot.read_problems`)."""
        return tuple(self.problems)

    def all_problems(self) -> Iterator[Problem]:
        """Bundle-wide problems, then every namespace's."""
        yield from self.problems
        for ns in self.namespaces():
            yield from ns.problems
