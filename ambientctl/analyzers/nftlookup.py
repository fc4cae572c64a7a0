"""nft set and verdict-map lookups (`model.NftLookup`) evaluated on a simulated packet.

The kernel builds the key from the rule's selectors (nft(8) "CONCATENATIONS": `ip daddr .
meta l4proto . th dport` is one key of three parts) and looks it up in the set; an
element matches when every part matches (an exact value, a prefix, or a range in an
interval set). A verdict map whose lookup finds nothing gives no verdict: the rule stops
there and evaluation goes on with the next rule (`nft_lookup_eval` sets NFT_BREAK).

Selectors carry implicit protocol dependencies as payload matches do: `ip daddr` only
exists for IPv4 packets, `th dport` only for TCP/UDP (and the other transport headers),
so a packet without them never matches, negated or not.

`numgen random mod N` is not a property of the packet: the walker forks on it
(`numgen_branches`).
"""

from __future__ import annotations

import fnmatch
import ipaddress
from dataclasses import dataclass
from typing import Any

from ambientctl.analyzers.packet import Packet
from ambientctl.model import NftElement, NftLookup

__all__ = ["ABSENT", "MISSING", "NumgenBranch", "is_numgen", "lookup", "numgen_branches"]

# `lookup`'s third value when the packet lacks a header the key reads (`ip daddr` of an
# IPv6 packet): no element can match, and a negated lookup does not match either.
ABSENT = "the packet has no such header"

_PROTO_NAMES = {"6": "tcp", "17": "udp", "1": "icmp", "58": "ipv6-icmp", "132": "sctp",
                "136": "udplite", "33": "dccp", "icmpv6": "ipv6-icmp"}
_TRANSPORT = {"tcp", "udp", "sctp", "udplite", "dccp"}


class _Missing:
    """The packet lacks the header a selector reads: the lookup cannot match."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


def _kind(selector: str) -> str:
    """What a selector's values are: addr | proto | int | iface."""
    field = selector.split()[-1]
    if field in ("saddr", "daddr"):
        return "addr"
    if field in ("l4proto", "protocol", "nexthdr"):
        return "proto"
    if field in ("iifname", "oifname"):
        return "iface"
    return "int"


def _value(selector: str, p: Packet, out_dev: str | None, hook: str) -> Any:
    """The packet's value for one selector; MISSING (no such header) or None (not modelled)."""
    words = selector.split()
    if len(words) == 2 and words[0] in ("ip", "ip6"):
        if p.family != (4 if words[0] == "ip" else 6):
            return MISSING
        if words[1] == "daddr":
            return p.dst
        if words[1] == "saddr":
            return p.src
        if words[1] in ("protocol", "nexthdr"):
            return p.proto
        return None
    if len(words) == 2 and words[0] in ("th", "tcp", "udp", "sctp"):
        if (words[0] == "th" and p.proto not in _TRANSPORT) or (
            words[0] != "th" and p.proto != words[0]
        ):
            return MISSING
        if words[1] == "dport":
            return p.dport
        if words[1] == "sport":
            return p.sport
        return None
    key = words[-1] if words[0] == "meta" or len(words) == 1 else None
    if words[0] == "ct" and len(words) == 2 and words[1] == "mark":
        return p.ctmark
    if key == "l4proto":
        return p.proto
    if key == "nfproto":
        return "ipv4" if p.family == 4 else "ipv6"
    if key == "mark":
        return p.mark
    if key == "iifname":
        return p.iif if hook not in ("output",) else MISSING
    if key == "oifname":
        return out_dev if hook not in ("prerouting", "input") else MISSING
    return None


@dataclass(frozen=True, slots=True)
class _Part:
    """One parsed element part: an exact value, or a predicate (prefix, range, wildcard)."""

    exact: Any = None
    net: Any = None
    lo: Any = None
    hi: Any = None
    glob: str | None = None

    def matches(self, v: Any) -> bool:
        if self.net is not None:
            return bool(v.version == self.net.version and v in self.net)
        if self.lo is not None:
            try:
                return bool(self.lo <= v <= self.hi)
            except TypeError:
                return False
        if self.glob is not None:
            return isinstance(v, str) and fnmatch.fnmatchcase(v, self.glob)
        return bool(self.exact == v)


def _int(text: str) -> int:
    return int(text, 0)


def _parse_part(text: str, kind: str) -> _Part:
    t = text.strip().strip('"')
    if kind == "addr":
        if "/" in t:
            return _Part(net=ipaddress.ip_network(t, strict=False))
        if "-" in t:
            lo, hi = t.split("-", 1)
            return _Part(lo=ipaddress.ip_address(lo), hi=ipaddress.ip_address(hi))
        return _Part(exact=ipaddress.ip_address(t))
    if kind == "proto":
        return _Part(exact=_PROTO_NAMES.get(t.lower(), t.lower()))
    if kind == "iface":
        return _Part(glob=t) if t.endswith("*") else _Part(exact=t)
    if "-" in t:
        lo, hi = t.split("-", 1)
        return _Part(lo=_int(lo), hi=_int(hi))
    return _Part(exact=_int(t))


class _Index:
    """Exact keys in a dict (a 10k-element `service-ips` is one hash probe), the rest scanned."""

    def __init__(self, lk: NftLookup) -> None:
        kinds = [_kind(s) for s in lk.key]
        self.exact: dict[tuple[Any, ...], NftElement] = {}
        self.other: list[tuple[tuple[_Part, ...], NftElement]] = []
        self.bad: list[str] = []
        for el in lk.elements:
            if len(el.parts) != len(kinds):
                self.bad.append(" . ".join(el.parts))
                continue
            try:
                parts = tuple(_parse_part(t, k) for t, k in zip(el.parts, kinds, strict=True))
            except ValueError:
                self.bad.append(" . ".join(el.parts))
                continue
            if all(pt.net is None and pt.lo is None and pt.glob is None for pt in parts):
                self.exact.setdefault(tuple(pt.exact for pt in parts), el)
            else:
                self.other.append((parts, el))

    def find(self, values: tuple[Any, ...]) -> NftElement | None:
        hit = self.exact.get(values)
        if hit is not None:
            return hit
        for parts, el in self.other:
            if all(pt.matches(v) for pt, v in zip(parts, values, strict=True)):
                return el
        return None


_INDEXES: dict[int, tuple[NftLookup, _Index]] = {}


def _index(lk: NftLookup) -> _Index:
    # Keyed by identity: a lookup's elements never change, and hashing 10k elements per
    # packet would cost more than the lookup itself.
    got = _INDEXES.get(id(lk))
    if got is None or got[0] is not lk:
        got = (lk, _Index(lk))
        _INDEXES[id(lk)] = got
    return got[1]


def lookup(lk: NftLookup, p: Packet, out_dev: str | None, hook: str
           ) -> tuple[bool | None, NftElement | None, str | None]:
    """Look the packet up: (found, element, why-not-modelled).

    found is True/False, or None when a selector (or an element) is not modelled; the
    third value then names it (or is ABSENT: a header the key reads is missing). `negated`
    is NOT applied here.
    """
    values: list[Any] = []
    for sel in lk.key:
        v = _value(sel, p, out_dev, hook)
        if v is MISSING:
            return False, None, ABSENT
        if v is None:
            return None, None, f"selector `{sel}` of `{lk}`"
        values.append(v)
    idx = _index(lk)
    el = idx.find(tuple(values))
    if el is None and idx.bad:
        return None, None, f"element `{idx.bad[0]}` of `{lk}`"
    return el is not None, el, None


def is_numgen(lk: NftLookup) -> bool:
    """A key that is a random number (`numgen random mod N`): a fork, not a lookup."""
    return len(lk.key) == 1 and lk.key[0].startswith("numgen ")


@dataclass(frozen=True, slots=True)
class NumgenBranch:
    """One possible outcome of `numgen random mod N vmap {...}`: a verdict and its share."""

    element: NftElement | None  # None: the number maps to no element (the rule breaks)
    share: int  # how many of the N numbers lead here
    modulus: int


def numgen_branches(lk: NftLookup) -> list[NumgenBranch] | None:
    """Every outcome of a numgen vmap, in element order; None when not modelled.

    `numgen random mod N offset K` draws uniformly from K .. K+N-1 (nft_ng_random_eval:
    `reciprocal_scale(get_random_u32(), modulus) + offset`); `inc` mode counts, which for
    one connection is just as unknown.
    """
    words = lk.key[0].split()
    try:
        mode = words[1]
        modulus = int(words[words.index("mod") + 1])
        offset = int(words[words.index("offset") + 1]) if "offset" in words else 0
    except (IndexError, ValueError):
        return None
    if mode not in ("random", "inc") or modulus <= 0:
        return None
    out: list[NumgenBranch] = []
    covered = 0
    for el in lk.elements:
        try:
            part = _parse_part(el.parts[0], "int")
        except (ValueError, IndexError):
            return None
        if part.lo is not None:
            n = max(0, min(part.hi, offset + modulus - 1) - max(part.lo, offset) + 1)
        else:
            n = 1 if offset <= part.exact < offset + modulus else 0
        if n:
            out.append(NumgenBranch(el, n, modulus))
            covered += n
    if covered < modulus:
        out.append(NumgenBranch(None, modulus - covered, modulus))
    return out
