"""Replaying a trace's legs as real connections in a lab, and comparing with the trace.

Shared by the kernel tests of the in-pod labs: every leg the trace computed is opened for
real from its namespace, with its target, bound source, SO_MARK and socket owner, and the
kernel's landing must be what the trace says.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ambientctl.analyzers.trace_result import Disposition, Leg, Trace
from ambientlab.emulate import Landing

T = 0.5  # probe timeout: every leg that dies costs this much (the handshake is in-kernel)
T_SLOW = 3.0  # second chance for a connection that may only be slow (a loaded machine)


@dataclass
class Traced:
    """One path through one lab: the trace and, per leg, where the kernel put that leg."""

    trace: Trace | None
    landings: list[Landing]
    error: Exception | None = None  # the engine raised instead of tracing

    def get(self) -> Trace:
        """The trace, or the engine's exception re-raised in the test."""
        if self.error is not None:
            raise self.error
        assert self.trace is not None
        return self.trace


def replay(lab: Any, leg: Leg, *, unopenable_is_unreachable: bool = False) -> Landing:
    """The leg as a real connection: its netns, target, bound source, SO_MARK and owner.

    With `unopenable_is_unreachable`, a socket the kernel will not even open (a v6 source
    bound on a v4 socket) counts as not accepted instead of erroring the test.
    """
    assert leg.target is not None

    def once(timeout: float) -> Landing:
        try:
            return lab.connect(  # type: ignore[no-any-return]
                leg.start_netns,
                str(leg.target.ip),  # type: ignore[union-attr]
                leg.target.port,  # type: ignore[union-attr]
                src_ip=str(leg.bind) if leg.bind else None,
                mark=leg.mark or None,
                uid=leg.uid,
                timeout=timeout,
            )
        except OSError as exc:
            if not unopenable_is_unreachable:
                raise
            return Landing("unreachable", detail=f"{type(exc).__name__}: {exc}")

    landing = once(T)
    # A timeout is only a verdict when no handshake completed and the trace did not expect
    # one: otherwise a busy emulator (not the datapath) may be what made us wait.
    if landing.outcome == "timeout" and (
        landing.client is not None or leg.result.disposition == Disposition.DELIVERED
    ):
        landing = once(T_SLOW)
    return landing


def replay_all(lab: Any, traces: Mapping[str, Trace | Exception], **kw: bool) -> dict[str, Traced]:
    """Replay every path's legs (in order within a path).

    Paths are independent connections (own sockets, own conntrack tuples): they are
    replayed side by side so that the legs that die cost one timeout, not one each.
    """

    def one(name: str) -> Traced:
        t = traces[name]
        if isinstance(t, Exception):
            return Traced(None, [], t)
        return Traced(t, [replay(lab, leg, **kw) for leg in t.legs])

    with ThreadPoolExecutor(max_workers=max(1, len(traces))) as pool:
        return dict(zip(traces, pool.map(one, traces), strict=True))


def listener_label(address: str, port: int) -> str:
    """The trace's listener as the lab labels it: ss prints a dual-stack [::] socket as `*`."""
    if address in ("*", "::"):
        return f"[::]:{port}"
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def assert_leg_matches_kernel(leg: Leg, landing: Landing) -> None:
    """Trace `delivered` <=> accepted on the named listener/netns/addresses; `refused` <=>
    refused; anything else <=> not accepted. The lab's bundles are complete, so a trace
    that gives up on them is a failure too."""
    r = leg.result
    assert r.disposition not in (
        Disposition.INSUFFICIENT_INFO,
        Disposition.LEFT_BUNDLE,
        Disposition.LOOP,
    ), f"leg {leg.index}: the lab's bundle is complete, yet: {r.disposition.value}: {r.reason}"
    context = (
        f"leg {leg.index} ({leg.direction}) from {leg.start_netns}: {leg.request}: "
        f"trace says {r.disposition.value} {r.delivered_to} ({r.reason}); "
        f"kernel says {landing}"
    )
    if r.disposition == Disposition.DELIVERED:
        d = r.delivered_to
        assert d is not None
        assert landing.outcome == "accepted", context
        assert landing.netns == d.netns, context
        assert landing.listener == listener_label(d.address, d.port), context
        assert landing.local == str(d.local), context
        assert (landing.original_dst or landing.local) == str(r.original_destination), context
        assert landing.peer is not None and landing.peer.rsplit(":", 1)[0].strip("[]") == str(
            r.packet.src
        ), context
    elif r.disposition == Disposition.REFUSED:
        assert landing.outcome == "refused", context
    else:
        assert landing.outcome in ("timeout", "unreachable"), context


def assert_traced_path_matches_kernel(traced: Traced) -> Trace:
    """Every leg of one replayed path agrees with the kernel; returns the trace."""
    t = traced.get()
    assert t.legs, t.summary
    assert len(traced.landings) == len(t.legs)
    for leg, landing in zip(t.legs, traced.landings, strict=True):
        assert_leg_matches_kernel(leg, landing)
    return t
