"""Forks: places where the kernel (or a proxy) picks one of several endpoints at random.

kube-proxy spreads a Service's connections over its endpoints with a random choice
(`-m statistic --mode random` in iptables mode, `numgen random mod N vmap { ... }` in
nftables mode); ztunnel load-balances over a Service's endpoints itself. A trace of one
connection cannot know which one a real packet takes, so it states every outcome and
follows one: the one the user asked for with `trace --endpoint POD|IP`, else the first,
and says which. `EndpointSelector` is that choice, consulted at any fork of the walk.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ambientctl.model import IPAddress

__all__ = ["EndpointSelector"]


@dataclass(frozen=True, slots=True)
class EndpointSelector:
    """The endpoint the user wants followed at a fork: a pod's addresses, or one address."""

    text: str  # as the user wrote it ("reviews-v2-...", "10.244.1.7")
    ips: frozenset[IPAddress]

    @classmethod
    def of(cls, text: str, ips: Iterable[IPAddress]) -> EndpointSelector:
        """Build from the user's text and the addresses it resolved to."""
        return cls(text, frozenset(ips))

    def pick(self, candidates: Sequence[IPAddress | None]) -> int | None:
        """Index of the first candidate this selector names, or None."""
        for i, ip in enumerate(candidates):
            if ip is not None and ip in self.ips:
                return i
        return None
