"""The address half of redaction: a keyed, prefix-preserving bijection (Crypto-PAn style).

Why prefix-preserving: trace and doctor match addresses against prefixes everywhere
(routes, ipset hash:net members, `-s/-d` CIDRs, `ip rule` selectors, nft `{"addr",
"len"}`). If two addresses share their first n bits before redaction they must share them
after, or a redacted bundle would route a packet differently. Crypto-PAn (Xu, Fan,
Ammar, Moon 2002) gets that with one keyed decision per bit: bit i of the output is bit i
of the input XOR a PRF of the input's first i bits. Any such map is a bijection and
preserves every common prefix.

Why keyed with a per-run secret: without the key the map cannot be inverted or
recomputed; the key is random per `bundle redact` run and is never written anywhere (the
private map lists the pairs it produced). All bits are mapped, host bits included:
nothing of a real address leaks except what the zones below keep on purpose.

Zones (the structure trace and doctor need, and what an engineer must still recognise):

- kept as is: 0/8, 127/8, 169.254/16 (link-local; Istio's probe SNAT 169.254.7.127),
  224/4 multicast, 240/4 (every netmask written 255.x.y.z), Istio's fixed istioin /
  istioout link nets 192.168.126.0/24 and 192.168.127.0/24; `::`, `::1`, v4-mapped
  `::ffff:0:0/96` (its embedded IPv4 is mapped instead), fe80::/10, ff00::/8.
- self-mapped (an address inside stays inside, one outside stays outside): 10/8,
  100.64/10, 172.16/12, 192.168/16, fc00::/7. A private address stays private, so RFC 1918
  logic (masquerade exceptions, "is this pod traffic") still holds.

Never the identity: along every address's path, the first decision that no zone pins is
forced to "flip". So every mapped address differs from its original (the brief's "never
identity for a real address except the documented kept ones"); the cost is one bit of the
key's secrecy per path, which tells nothing about the original.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Zone:
    """A prefix that is either kept as is or mapped onto itself."""

    net: int
    length: int
    keep: bool


def zone(cidr: str, *, keep: bool = False) -> Zone:
    """A `Zone` from CIDR text."""
    n = ipaddress.ip_network(cidr)
    return Zone(int(n.network_address), n.prefixlen, keep)


V4_ZONES = (
    zone("0.0.0.0/8", keep=True),
    zone("127.0.0.0/8", keep=True),
    zone("169.254.0.0/16", keep=True),
    zone("224.0.0.0/4", keep=True),
    zone("240.0.0.0/4", keep=True),
    zone("192.168.126.0/24", keep=True),
    zone("192.168.127.0/24", keep=True),
    zone("10.0.0.0/8"),
    zone("100.64.0.0/10"),
    zone("172.16.0.0/12"),
    zone("192.168.0.0/16"),
)
V6_ZONES = (
    zone("::/128", keep=True),
    zone("::1/128", keep=True),
    zone("::ffff:0:0/96", keep=True),
    zone("fe80::/10", keep=True),
    zone("ff00::/8", keep=True),
    zone("fc00::/7"),
)


class PrefixMap:
    """A keyed prefix-preserving bijection on `width`-bit integers, zones respected.

    Bit i (from the top) is flipped iff a keyed PRF of (i, the original's first i bits)
    says so. Decisions whose prefix is a proper prefix of a zone are never flips (an
    address inside a zone stays inside, one outside stays outside); the first decision on
    a path that no zone pins is always a flip (so no mapped address equals its original).
    """

    def __init__(self, key: bytes, width: int, zones: tuple[Zone, ...]) -> None:
        if len(key) < 16:
            raise ValueError("the redaction key must hold at least 16 bytes")
        self._key = hashlib.blake2b(key, digest_size=32, person=b"ambctl-ip").digest()
        self.width = width
        self.zones = sorted(zones, key=lambda z: -z.length)
        # Decisions no key may take: every proper prefix of a zone.
        self._pinned = {(i, z.net >> (width - i)) for z in zones for i in range(z.length)}
        self._tables: dict[tuple[int, int], int] = {}
        self._done: dict[int, int] = {}

    def zone_of(self, a: int) -> Zone | None:
        """The innermost zone holding `a`, if any."""
        for z in self.zones:
            shift = self.width - z.length
            if a >> shift == z.net >> shift:
                return z
        return None

    def kept(self, a: int) -> bool:
        """Is `a` in a zone kept as is (the documented exceptions)?"""
        z = self.zone_of(a)
        return z is not None and z.keep

    def _table(self, byte: int, prefix: int) -> int:
        """255 keyed decisions for the 8 bits of byte `byte` under the bytes before it.

        Decision for bit j of the byte under its first j bits s is bit (2**j - 1 + s):
        still a function of the whole prefix only, one PRF call per distinct byte prefix.
        """
        got = self._tables.get((byte, prefix))
        if got is None:
            msg = byte.to_bytes(2, "big") + prefix.to_bytes(self.width // 8 + 1, "big")
            got = int.from_bytes(hashlib.blake2b(msg, key=self._key, digest_size=32).digest(),
                                 "big")
            self._tables[(byte, prefix)] = got
        return got

    def map(self, a: int) -> int:
        """The image of address `a` (an int of `width` bits)."""
        got = self._done.get(a)
        if got is not None:
            return got
        if self.kept(a):
            self._done[a] = a
            return a
        width, pinned = self.width, self._pinned
        out = a
        free_seen = False  # has a decision on this path been left free yet?
        table = 0
        for i in range(width):
            prefix = a >> (width - i) if i else 0
            j = i & 7
            if j == 0:
                table = -1  # fetched lazily: most bytes of a zone are pinned
            if (i, prefix) in pinned:
                continue
            if not free_seen:
                free_seen = True
                flip = True  # the first free decision is forced: out != a
            else:
                if table == -1:
                    table = self._table(i >> 3, prefix >> j)
                flip = bool(table >> ((1 << j) - 1 + (prefix & ((1 << j) - 1))) & 1)
            if flip:
                out ^= 1 << (width - 1 - i)
        self._done[a] = out
        return out


__all__ = ["V4_ZONES", "V6_ZONES", "PrefixMap", "Zone", "zone"]
