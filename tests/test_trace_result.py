"""The trace result is frozen, typed data that refuses, on construction, what the walk
guarantees cannot happen (issue 9 §6): each invariant is pinned by building a result that
breaks it from a real one, and the enums write exactly the strings they replaced."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from ambientctl.analyzers.packet import SocketAddr
from ambientctl.analyzers.selectors import resolve
from ambientctl.analyzers.trace import Tracer
from ambientctl.analyzers.trace_result import (
    Component,
    Delivery,
    Direction,
    Disposition,
    Hop,
    Leg,
    LegResult,
    Step,
    StepKind,
    Trace,
    TraceInvariantError,
)
from ambientctl.loading import load_snapshot

ROOT = Path(__file__).resolve().parent.parent
EX = ROOT / "examples"


@pytest.fixture(scope="module")
def seed() -> Trace:
    snap = load_snapshot(str(EX / "seed-kind-ambient"))
    return Tracer(snap).trace(resolve(snap, "sleep", role="source"),
                              resolve(snap, "productpage", role="destination"))


def _first(t: Trace) -> Leg:
    leg = t.legs[0]
    assert leg.result.disposition is Disposition.DELIVERED and leg.result.reply is not None
    return leg


# ---------------------------------------------------------------- frozen and typed

def test_every_level_of_a_real_trace_is_frozen(seed: Trace) -> None:
    leg = _first(seed)
    r = leg.result
    for obj, name in ((seed, "disposition"), (leg, "index"), (r, "reason"),
                      (r.hops[0], "role"), (r.hops[0].steps[0], "summary")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, name, None)
    assert isinstance(seed.legs, tuple) and isinstance(r.hops, tuple)
    assert isinstance(r.hops[0].steps, tuple) and isinstance(r.conntrack, tuple)
    assert isinstance(seed.warnings, tuple) and isinstance(seed.assumptions, tuple)


def test_a_real_trace_uses_the_enums(seed: Trace) -> None:
    assert all(isinstance(leg.direction, Direction) for leg in seed.legs)
    assert all(isinstance(s.kind, StepKind)
               for leg in seed.legs for h in leg.result.hops for s in h.steps)
    assert all(isinstance(leg.result.delivered_to.component, Component)
               for leg in seed.legs if leg.result.delivered_to is not None)


def test_enums_are_written_as_the_strings_they_replaced() -> None:
    assert json.dumps([StepKind.IP_RULE, Component.ZTUNNEL_OUTBOUND, Direction.HBONE,
                       Disposition.LEFT_BUNDLE]) == \
        '["ip-rule", "ztunnel-outbound", "hbone", "left-bundle"]'
    assert f"{Component.APP}:{Direction.OUTBOUND_SIDECAR}" == "app:outbound-sidecar"
    assert Component.ZTUNNEL_DNS.startswith("ztunnel-")


# ---------------------------------------------------------------- Step, Delivery

def test_a_step_kind_must_be_a_step_kind() -> None:
    with pytest.raises(TraceInvariantError, match="not a StepKind"):
        Step("enter", "a string where the enum belongs")  # type: ignore[arg-type]


def test_a_rule_step_names_its_hook_and_a_policy_its_chain() -> None:
    with pytest.raises(TraceInvariantError, match="rule step without its hook"):
        Step(StepKind.RULE, "ip mangle PREROUTING #1: MARK", table="mangle", chain="PREROUTING")
    with pytest.raises(TraceInvariantError, match="policy step without table and chain"):
        Step(StepKind.POLICY, "ip filter ?: policy DROP", hook="INPUT", table="filter")
    Step(StepKind.RULE, "IPVS tcp 10.96.0.10:53 rr: Masq -> 10.244.0.2:53", hook="INPUT")


def test_a_delivery_component_must_be_a_component(seed: Trace) -> None:
    d = _first(seed).result.delivered_to
    assert d is not None
    with pytest.raises(TraceInvariantError, match="not a Component"):
        dataclasses.replace(d, component="ztunnel-outbound")
    with pytest.raises(TraceInvariantError, match="port 0"):
        dataclasses.replace(d, port=0)


# ---------------------------------------------------------------- LegResult

def test_a_leg_result_has_at_least_one_hop(seed: Trace) -> None:
    with pytest.raises(TraceInvariantError, match="without a namespace"):
        dataclasses.replace(_first(seed).result, hops=())


def test_a_delivered_result_ends_with_a_deliver_step(seed: Trace) -> None:
    r = _first(seed).result
    cut = r.hops[-1]
    cut = dataclasses.replace(cut, steps=cut.steps[:-1])
    with pytest.raises(TraceInvariantError, match="end with a deliver step"):
        dataclasses.replace(r, hops=(*r.hops[:-1], cut))
    with pytest.raises(TraceInvariantError, match="end with a deliver step"):
        dataclasses.replace(r, hops=(*r.hops[:-1], dataclasses.replace(cut, steps=())))


def test_a_delivered_result_gives_no_reason_nor_culprit(seed: Trace) -> None:
    with pytest.raises(TraceInvariantError, match="no reason nor culprit"):
        dataclasses.replace(_first(seed).result, reason="but why")


def test_only_a_delivered_or_dropped_result_carries_a_delivery(seed: Trace) -> None:
    r = _first(seed).result
    with pytest.raises(TraceInvariantError, match="refused leg with a delivery"):
        dataclasses.replace(r, disposition=Disposition.REFUSED, reason="refused", reply=None)


def test_the_delivery_is_in_the_last_namespace_visited(seed: Trace) -> None:
    r = _first(seed).result
    assert r.delivered_to is not None and len(r.hops) > 1
    elsewhere = dataclasses.replace(r.delivered_to, netns=r.hops[0].netns)
    with pytest.raises(TraceInvariantError, match="not in the last namespace"):
        dataclasses.replace(r, delivered_to=elsewhere)


def test_an_answer_has_no_answer_of_its_own(seed: Trace) -> None:
    r = _first(seed).result
    assert r.reply is not None
    with pytest.raises(TraceInvariantError, match="answer of its own"):
        dataclasses.replace(r, reply=dataclasses.replace(r.reply, reply=r.reply))


def test_only_tcp_legs_have_a_reply(seed: Trace) -> None:
    r = _first(seed).result
    with pytest.raises(TraceInvariantError, match="reply to a udp leg"):
        dataclasses.replace(r, packet=dataclasses.replace(r.packet, proto="udp"))


def test_a_lost_answer_drops_the_leg(seed: Trace) -> None:
    r = _first(seed).result
    assert r.reply is not None
    lost_hop = dataclasses.replace(r.reply.hops[-1], steps=(Step(StepKind.DROP, "lost"),))
    lost = dataclasses.replace(r.reply, disposition=Disposition.DROPPED, reason="lost",
                               hops=(*r.reply.hops[:-1], lost_hop))
    with pytest.raises(TraceInvariantError, match="a lost answer means no connection"):
        dataclasses.replace(r, reply=lost)
    dropped = dataclasses.replace(r, reply=lost, disposition=Disposition.DROPPED,
                                  reason="the answer never returns")
    assert dropped.reply is lost


# ---------------------------------------------------------------- Leg

def test_a_delivered_leg_ends_with_a_delivery(seed: Trace) -> None:
    leg = _first(seed)
    with pytest.raises(TraceInvariantError, match="delivered without a delivery"):
        dataclasses.replace(leg, result=dataclasses.replace(leg.result, delivered_to=None))


def test_an_answered_tcp_leg_has_a_reply(seed: Trace) -> None:
    leg = _first(seed)
    with pytest.raises(TraceInvariantError, match="answered but no reply"):
        dataclasses.replace(leg, result=dataclasses.replace(leg.result, reply=None))


def test_a_reply_exists_only_when_the_leg_was_answered(seed: Trace) -> None:
    leg = _first(seed)
    r = leg.result
    nobody = dataclasses.replace(r.hops[-1], steps=(Step(StepKind.DROP, "dropped"),))
    unanswered = dataclasses.replace(r, disposition=Disposition.DROPPED, delivered_to=None,
                                     reason="dropped", hops=(*r.hops[:-1], nobody))
    with pytest.raises(TraceInvariantError, match="a reply to a connection nobody answered"):
        dataclasses.replace(leg, result=unanswered)
    # the same leg without the reply is what the walk makes of a drop
    assert dataclasses.replace(leg, result=dataclasses.replace(unanswered, reply=None))


def test_a_leg_is_numbered_from_one_starts_where_its_walk_starts_and_has_a_direction(
        seed: Trace) -> None:
    leg = _first(seed)
    with pytest.raises(TraceInvariantError, match="legs count from 1"):
        dataclasses.replace(leg, index=0)
    with pytest.raises(TraceInvariantError, match="but its first hop is"):
        dataclasses.replace(leg, start_netns="nowhere")
    with pytest.raises(TraceInvariantError, match="not a Direction"):
        dataclasses.replace(leg, direction="outbound")


# ---------------------------------------------------------------- Trace

def test_legs_are_numbered_in_order(seed: Trace) -> None:
    assert len(seed.legs) > 1
    with pytest.raises(TraceInvariantError, match="numbered 1, 2"):
        dataclasses.replace(seed, legs=tuple(reversed(seed.legs)))


def test_a_delivered_trace_ends_with_a_delivered_leg(seed: Trace) -> None:
    assert seed.disposition is Disposition.DELIVERED
    with pytest.raises(TraceInvariantError, match="delivered trace whose last leg is None"):
        dataclasses.replace(seed, legs=())
    last = seed.legs[-1]
    dead = dataclasses.replace(last.result.hops[-1], steps=(Step(StepKind.DROP, "dropped"),))
    dropped = dataclasses.replace(last, result=dataclasses.replace(
        last.result, disposition=Disposition.DROPPED, delivered_to=None, reply=None,
        reason="dropped", hops=(*last.result.hops[:-1], dead)))
    with pytest.raises(TraceInvariantError, match="delivered trace whose last leg is dropped"):
        dataclasses.replace(seed, legs=(*seed.legs[:-1], dropped))
    with pytest.raises(TraceInvariantError, match="last leg is dropped but the trace is refused"):
        dataclasses.replace(seed, legs=(*seed.legs[:-1], dropped),
                            disposition=Disposition.REFUSED)
    assert dataclasses.replace(seed, legs=(*seed.legs[:-1], dropped),
                               disposition=Disposition.DROPPED).legs[-1] is dropped


def test_a_trace_may_stop_for_want_of_information_after_a_delivered_leg(seed: Trace) -> None:
    """ztunnel's next hop unknown: the last leg was delivered, the trace is insufficient."""
    t = dataclasses.replace(seed, disposition=Disposition.INSUFFICIENT_INFO)
    assert t.legs[-1].result.disposition is Disposition.DELIVERED


def test_a_hand_made_minimal_result_is_accepted() -> None:
    """The types stand alone: a one-hop refused UDP leg needs no reply."""
    import ipaddress

    from ambientctl.analyzers.packet import Packet

    dst = ipaddress.ip_address("10.0.0.2")
    p = Packet(family=4, proto="udp", src=ipaddress.ip_address("10.0.0.1"), dst=dst,
               sport=40000, dport=53)
    r = LegResult(Disposition.REFUSED, (Hop("n1", "ns1", None, "node",
                                            (Step(StepKind.ENTER, "socket connects"),)),),
                  p, p, reason="nothing listens")
    leg = Leg(1, Direction.OUTBOUND, "me", "ns1", r, target=SocketAddr(dst, 53))
    assert leg.result.reply is None
    d = Delivery("n1", None, "ns1", "0.0.0.0", 53, Component.APP, SocketAddr(dst, 53))
    assert d.component == "app"
