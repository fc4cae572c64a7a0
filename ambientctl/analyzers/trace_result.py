"""What a trace answers, as frozen typed data: the one vocabulary of trace results.

Why one module: the walker (`path.py`) and the tracer (`trace.py`) build these, the
renderers, the verdict and `compare` read them. With the types beside their builders
(and some of them mutable) every reader depended on the builders, and a result could be
changed after it was reported. Here every type is frozen; the builders accumulate in
private mutable records and freeze at the end.

The enums are `StrEnum`s, so a value is its string everywhere it is written: the JSON
document and the text output are byte-identical to the strings they replace.

Each type checks on construction what the model guarantees and is cheap to check
(`TraceInvariantError`); a result that breaks one is a bug in the builder, caught where it
is made rather than where a renderer trips over it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ambientctl.analyzers.packet import Packet, SocketAddr
from ambientctl.analyzers.selectors import Endpoint
from ambientctl.model import IPAddress, SourceRef


class TraceInvariantError(ValueError):
    """A trace result that contradicts what the walk guarantees (a builder's bug)."""


class Disposition(StrEnum):
    """How a leg (or the whole trace) ends."""

    DELIVERED = "delivered"
    BYPASSED_MESH = "bypassed-mesh"
    REFUSED = "refused"
    DROPPED = "dropped"
    NO_ROUTE = "no-route"
    INSUFFICIENT_INFO = "insufficient-info"
    LEFT_BUNDLE = "left-bundle"  # forwarded to something the bundle does not describe
    LOOP = "loop"


class StepKind(StrEnum):
    """What kind of thing a step says the kernel (or ztunnel) did."""

    ENTER = "enter"  # the packet starts in, or arrives at, a namespace
    ROUTE = "route"  # the route a lookup chose
    IP_RULE = "ip-rule"  # a policy-routing rule that matched
    RULE = "rule"  # a netfilter rule that matched
    POLICY = "policy"  # a netfilter base chain's policy applied
    SYSCTL = "sysctl"  # a sysctl that decided (rp_filter, ip_forward ...)
    EXIT = "exit"  # the packet leaves by a device
    DELIVER = "deliver"  # a socket takes it
    DROP = "drop"  # it dies here
    NOTE = "note"  # a change worth saying (NAT undone, source chosen, conntrack state)
    ZTUNNEL = "ztunnel"  # what a proxy (ztunnel, sidecar, waypoint) decided between legs


class Component(StrEnum):
    """The program whose socket accepted a leg."""

    ZTUNNEL_OUTBOUND = "ztunnel-outbound"
    ZTUNNEL_INBOUND_PLAINTEXT = "ztunnel-inbound-plaintext"
    ZTUNNEL_INBOUND_HBONE = "ztunnel-inbound-hbone"
    ZTUNNEL_DNS = "ztunnel-dns"
    SIDECAR_OUTBOUND = "sidecar-outbound"
    SIDECAR_INBOUND = "sidecar-inbound"
    WAYPOINT_HBONE = "waypoint-hbone"
    APP = "app"

    @property
    def is_proxy(self) -> bool:
        """Does a proxy take it (and open the next leg), rather than the application?"""
        return self is not Component.APP


class Direction(StrEnum):
    """What a leg's connection is, seen from the mesh."""

    OUTBOUND = "outbound"  # the application's own connection
    HBONE = "hbone"  # a proxy to a peer's 15008 (mTLS + HTTP/2 CONNECT)
    INBOUND = "inbound"  # the destination's ztunnel (or sidecar) to the application
    PLAINTEXT = "plaintext"  # a proxy to a destination outside the mesh, plain TCP
    PASSTHROUGH = "passthrough"  # a proxy forwards to an address it knows nothing of
    OUTBOUND_SIDECAR = "outbound-sidecar"  # a sidecar's Envoy opens the next connection


@dataclass(frozen=True, slots=True)
class Step:
    """One thing the kernel did to the packet, with the evidence that says so."""

    kind: StepKind
    summary: str
    source: SourceRef | None = None
    hook: str | None = None
    table: str | None = None
    chain: str | None = None
    position: int | None = None
    mark_before: int | None = None
    mark_after: int | None = None
    rule_priority: int | None = None
    route_table: str | None = None
    device: str | None = None
    next_netns: str | None = None
    backend: str | None = None
    branches: tuple[str, ...] = ()
    packet: str | None = None  # the packet after this step, when it changed
    verdict: str | None = None  # netfilter steps: how the rule ended (`NfStep.verdict`)
    family: str | None = None  # netfilter steps: the table's family (ip, ip6, inet)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, StepKind):
            raise TraceInvariantError(f"step kind {self.kind!r} is not a StepKind")
        # A rule (netfilter, or IPVS at INPUT) acts at a hook; a policy is a base chain's.
        if self.kind in (StepKind.RULE, StepKind.POLICY) and self.hook is None:
            raise TraceInvariantError(f"{self.kind} step without its hook: {self.summary}")
        if self.kind is StepKind.POLICY and (self.table is None or self.chain is None):
            raise TraceInvariantError(f"policy step without table and chain: {self.summary}")


@dataclass(frozen=True, slots=True)
class Hop:
    """The packet's visit to one network namespace."""

    node: str
    netns: str
    pod: str | None
    role: str
    steps: tuple[Step, ...] = ()


@dataclass(frozen=True, slots=True)
class Delivery:
    """The socket that accepted the connection."""

    node: str
    pod: str | None
    netns: str
    address: str  # the listening socket's bound address ("0.0.0.0", "::", "127.0.0.1")
    port: int
    component: Component
    local: SocketAddr  # getsockname() of the accepted socket
    listener: SourceRef | None = None  # the ss line, when collected

    def __post_init__(self) -> None:
        if not isinstance(self.component, Component):
            raise TraceInvariantError(f"component {self.component!r} is not a Component")
        if not 0 < self.port < 65536:
            raise TraceInvariantError(f"delivery to port {self.port}")


Tuple4 = tuple[IPAddress, int, IPAddress, int]  # src, sport, dst, dport


@dataclass(frozen=True, slots=True)
class ConnEntry:
    """The conntrack entry a leg's first packet left in one namespace.

    `t_in` is the tuple as the packet arrived (or was sent), `t_out` as it left or was
    delivered (after DNAT/REDIRECT/SNAT). An answer whose tuple is the reverse of `t_out`
    belongs to this connection: it is ESTABLISHED, carries the entry's connmark, bypasses
    the nat tables, and is un-NATed back to the reverse of `t_in`.
    """

    netns: str
    t_in: Tuple4
    t_out: Tuple4
    ctmark: int


@dataclass(frozen=True, slots=True)
class LegResult:
    """The datapath of one connection (or of its answer, as `reply`).

    Invariants: the walk always starts in a namespace (at least one hop); a delivered
    result ends with a `deliver` step, a socket taking the packet, and gives no reason
    and no culprit; a delivery sits in the last namespace visited; a reply has no reply
    of its own, exists only for TCP, and a lost reply means the connection was dropped.
    """

    disposition: Disposition
    hops: tuple[Hop, ...]
    packet: Packet  # as it was when the leg ended
    first_packet: Packet
    delivered_to: Delivery | None = None
    original_destination: SocketAddr | None = None
    reason: str | None = None
    culprit: SourceRef | None = None
    client: SocketAddr | None = None  # the connecting socket's address (after source selection)
    conntrack: tuple[ConnEntry, ...] = ()
    reply: LegResult | None = None  # the SYN-ACK's (or RST's) way back, once simulated

    def __post_init__(self) -> None:
        if not isinstance(self.disposition, Disposition):
            raise TraceInvariantError(f"disposition {self.disposition!r} is not a Disposition")
        if not self.hops:
            raise TraceInvariantError("a leg without a namespace: the walk starts in one")
        if self.disposition is Disposition.DELIVERED:
            last = self.hops[-1].steps[-1:] if self.hops[-1].steps else ()
            if not last or last[0].kind is not StepKind.DELIVER:
                raise TraceInvariantError("a delivered leg must end with a deliver step")
            if self.reason is not None or self.culprit is not None:
                raise TraceInvariantError("a delivered leg gives no reason nor culprit")
        if self.delivered_to is not None:
            if self.disposition not in (Disposition.DELIVERED, Disposition.DROPPED):
                raise TraceInvariantError(f"a {self.disposition} leg with a delivery")
            if self.delivered_to.netns != self.hops[-1].netns:
                raise TraceInvariantError("the delivery is not in the last namespace visited")
        rep = self.reply
        if rep is not None:
            if rep.reply is not None:
                raise TraceInvariantError("an answer with an answer of its own")
            if self.packet.proto != "tcp":
                raise TraceInvariantError(f"a reply to a {self.packet.proto} leg: only TCP "
                                          "answers are simulated")
            if rep.disposition is not Disposition.DELIVERED and \
                    self.disposition is not Disposition.DROPPED:
                raise TraceInvariantError(f"the answer is {rep.disposition} but the leg is "
                                          f"{self.disposition}: a lost answer means no "
                                          "connection")

    @property
    def answered_by_reset(self) -> bool:
        """Was the answer the kernel's reset for a port nothing listens on?"""
        return self.reply is not None and self.reply.first_packet.tcp_flags == "RST,ACK"


@dataclass(frozen=True, slots=True)
class Leg:
    """One connection, from the socket that opens it to the socket that takes it.

    Invariants: a delivered leg ends with a delivery (the socket that took it); a TCP leg
    has a reply exactly when it was answered (a socket accepted the SYN, or the kernel
    refused it with a reset), and an answer that was a reset belongs to a refused leg
    (or a dropped one, when the reset was lost).
    """

    index: int
    direction: Direction
    opener: str  # who opens the connection ("sleep-... (app)", "ztunnel on ambient-worker")
    start_netns: str
    result: LegResult
    explanation: tuple[Step, ...] = ()  # what ztunnel decided before it
    request: str = ""
    target: SocketAddr | None = None  # what the opener connects to
    bind: IPAddress | None = None  # source address the opener binds (ztunnel's spoofing)
    mark: int = 0  # SO_MARK of the opener's socket
    uid: int | None = None  # owner of the opener's socket, when it matters (a sidecar's 1337)

    def __post_init__(self) -> None:
        if not isinstance(self.direction, Direction):
            raise TraceInvariantError(f"direction {self.direction!r} is not a Direction")
        if self.index < 1:
            raise TraceInvariantError(f"leg index {self.index}: legs count from 1")
        r = self.result
        if r.hops[0].netns != self.start_netns:
            raise TraceInvariantError(f"leg {self.index} starts in {self.start_netns} but its "
                                      f"first hop is {r.hops[0].netns}")
        if r.disposition is Disposition.DELIVERED and r.delivered_to is None:
            raise TraceInvariantError(f"leg {self.index} is delivered without a delivery")
        answered = r.delivered_to is not None or r.disposition is Disposition.REFUSED \
            or r.answered_by_reset
        if r.packet.proto == "tcp" and answered != (r.reply is not None):
            raise TraceInvariantError(
                f"leg {self.index}: " + ("answered but no reply was simulated" if answered
                                         else "a reply to a connection nobody answered"))
        if r.answered_by_reset and r.disposition not in (Disposition.REFUSED,
                                                          Disposition.DROPPED):
            raise TraceInvariantError(f"leg {self.index} answered by a reset is "
                                      f"{r.disposition}")


@dataclass(frozen=True, slots=True)
class Trace:
    """A request from SRC to DST, leg by leg.

    Invariants: legs are numbered 1, 2, ... in order; a trace that reached the application
    (delivered, or bypassed the mesh) ends with a delivered leg; one whose last leg failed
    ends the way that leg did.
    """

    source: Endpoint
    destination: Endpoint
    request: SocketAddr
    disposition: Disposition
    legs: tuple[Leg, ...]
    summary: str
    assumptions: tuple[str, ...]
    warnings: tuple[str, ...]
    reason: str | None = None
    plaintext: bool = False
    data_errors: tuple[str, ...] = ()  # unusable files on the path
    endpoint: str | None = None  # `trace --endpoint`: the endpoint followed at forks

    def __post_init__(self) -> None:
        if not isinstance(self.disposition, Disposition):
            raise TraceInvariantError(f"disposition {self.disposition!r} is not a Disposition")
        if [leg.index for leg in self.legs] != list(range(1, len(self.legs) + 1)):
            raise TraceInvariantError("legs are not numbered 1, 2, ... in order")
        last = self.legs[-1].result.disposition if self.legs else None
        if self.disposition in (Disposition.DELIVERED, Disposition.BYPASSED_MESH) and \
                last is not Disposition.DELIVERED:
            raise TraceInvariantError(f"a {self.disposition} trace whose last leg is {last}")
        if last is not None and last is not Disposition.DELIVERED and last != self.disposition:
            raise TraceInvariantError(f"the last leg is {last} but the trace is "
                                      f"{self.disposition}")
