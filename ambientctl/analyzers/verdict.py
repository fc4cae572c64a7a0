"""The verdict on a trace: is this the path the mesh intends, is each leg mTLS, and if it
is not as intended, which step left the intended path and which doctor check explains it.

The culprit is only ever a check that doctor raises on the same bundle (both read the
same facts: `doctor.facts.Context`), chosen by where its evidence sits: the namespace of
the earliest hop of the first leg that went wrong, then the pods of the pair, then the
nodes on the path. When no check explains the deviation, the verdict says so rather than
inventing a cause.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ambientctl.analyzers.compare import flatten
from ambientctl.analyzers.doctor.facts import Context
from ambientctl.analyzers.findings import Finding, Report
from ambientctl.analyzers.intent import Intent, derive
from ambientctl.analyzers.trace_result import Component, Leg, Trace
from ambientctl.model import Pod, PodRef, Snapshot


@dataclass(frozen=True)
class Culprit:
    """The doctor check behind the first step that left the intended path."""

    check: str | None
    title: str
    step: int | None  # index into the trace's steps (legs in order, each leg then its answer)
    evidence: str  # "path:line: text"


@dataclass(frozen=True)
class Verdict:
    """One line for humans (`text`) and the facts behind it."""

    intent: Intent
    as_intended: bool
    text: str
    culprit: Culprit | None
    mtls: tuple[bool | None, ...]  # per leg, see `leg_mtls`
    notes: tuple[str, ...] = ()


def _nodes(leg: Leg) -> set[str]:
    return {h.node for h in leg.result.hops}


def _ztunnel_leg(leg: Leg) -> bool:
    d = leg.result.delivered_to
    return leg.opener.startswith("ztunnel") or (d is not None and
                                                d.component.startswith("ztunnel-"))


def leg_mtls(leg: Leg, intent: Intent) -> bool | None:
    """True: HBONE (mTLS) between ztunnels/waypoints. False: plaintext that crosses a node
    boundary, or that bypasses an enrolled source's ztunnel. None: a leg that stays on one
    node on its way into or out of a ztunnel, or an Envoy (sidecar) leg whose TLS Envoy
    decides (auto mTLS, DestinationRule) and the kernel cannot see."""
    if leg.direction == "hbone":
        return True
    if leg.direction == "outbound-sidecar":
        return None
    if len(_nodes(leg)) > 1:
        return False
    if _ztunnel_leg(leg):
        return None
    if leg.index == 1 and intent.source.kind == "ambient":
        return False  # an enrolled app's connection that no ztunnel took
    return None if leg.direction.startswith("outbound") and intent.bypass else False


def _short(reason: str | None, limit: int = 110) -> str:
    """The first clause of an engine reason, for a one-line verdict (-v has it all)."""
    text = (reason or "no reason given").split("; ")[0]
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


def _delivered(leg: Leg, component: Component) -> bool:
    d = leg.result.delivered_to
    return d is not None and d.component == component


def _first_bad_leg(t: Trace, intent: Intent) -> tuple[Leg | None, str]:
    """The first leg off the intended path, and what happened, in words."""
    legs = t.legs
    if not legs:
        return None, "no leg could be traced"
    first = legs[0]
    src, dst = intent.source, intent.destination
    if _delivered(first, Component.ZTUNNEL_DNS):
        return None, ""  # a DNS query answered by the source's ztunnel DNS proxy (15053)
    if intent.waypoint_problem is not None:
        return first, f"{src.label}'s traffic to {dst.label} cannot take its waypoint: " + \
            intent.waypoint_problem[1].split(": istiod")[0]
    if src.kind == "gateway" and intent.path == "hbone":
        bad = next((leg for leg in legs if leg.result.disposition.value != "delivered"), None)
        if bad is not None:
            return bad, (f"leg {bad.index} ({bad.direction}) {bad.result.disposition.value}"
                         + (f": {_short(bad.result.reason)}" if bad.result.reason else ""))
        if not any(_delivered(leg, Component.ZTUNNEL_INBOUND_HBONE) for leg in legs):
            return legs[-1], f"no HBONE leg: {dst.label} was reached without mTLS"
        return None, ""
    if intent.path in ("hbone", "passthrough") and not _delivered(first, Component.ZTUNNEL_OUTBOUND):
        lands = next((leg.result.delivered_to for leg in legs
                      if leg.result.delivered_to is not None), None)
        if lands is not None and first.result.delivered_to is not None:
            where = f"{lands.component} on {lands.node}"
            return first, (f"{src.label} is enrolled but its SYN skipped its ztunnel: plaintext "
                           f"to {where}")
        return first, (f"{src.label} is enrolled but its SYN never reached its ztunnel: "
                       f"{first.result.disposition.value} ({_short(first.result.reason)})")
    if intent.path in ("hbone", "passthrough") and t.destination.service is not None and \
            first.result.original_destination is not None and \
            str(first.result.original_destination) != str(t.request):
        return first, (f"the Service address {t.request} was DNATed to "
                       f"{first.result.original_destination} before {src.label}'s ztunnel saw "
                       "it: Service policy and waypoints are bypassed")
    for leg in legs:
        if leg.result.disposition.value != "delivered":
            return leg, (f"leg {leg.index} ({leg.direction}) {leg.result.disposition.value}"
                         + (f": {_short(leg.result.reason)}" if leg.result.reason else ""))
    if intent.waypoint is not None and not any(_delivered(leg, Component.WAYPOINT_HBONE)
                                               for leg in legs):
        return first, f"{src.label}'s traffic skipped its waypoint {intent.waypoint}"
    if intent.path == "hbone" and not any(_delivered(leg, Component.ZTUNNEL_INBOUND_HBONE) or
                                          leg.direction == "hbone" for leg in legs):
        return legs[-1], f"no HBONE leg: {dst.label} was reached without mTLS"
    if intent.path == "hbone" and any(_delivered(leg, Component.ZTUNNEL_INBOUND_PLAINTEXT)
                                      for leg in legs):
        bad = next(leg for leg in legs if _delivered(leg, Component.ZTUNNEL_INBOUND_PLAINTEXT))
        return bad, (f"HBONE to {dst.label} was captured again as plaintext by its ztunnel "
                     "(15006): inbound capture does not exclude 15008")
    if t.disposition.value not in ("delivered", "bypassed-mesh"):
        return legs[-1], t.disposition.value
    inbound = (Component.ZTUNNEL_INBOUND_HBONE, Component.ZTUNNEL_INBOUND_PLAINTEXT)
    if dst.kind == "ambient" and intent.path in ("hbone", "inbound", "sidecar") and \
            t.disposition.value in ("delivered", "bypassed-mesh") and \
            not any(_delivered(leg, c) for leg in legs for c in inbound):
        return legs[-1], f"{dst.label} was reached around its ztunnel (bypassed the mesh)"
    if intent.path == "probe":
        if t.disposition.value in ("delivered", "bypassed-mesh") and not any(
                _ztunnel_leg(leg) for leg in legs):
            return None, ""
        return legs[-1], (f"the kubelet probe to {dst.label} was not let through around its "
                          "ztunnel (no SNAT to 169.254.7.127 / no probe mark)")
    if intent.path in ("hbone", "passthrough", "inbound") and t.disposition.value == \
            "bypassed-mesh":
        return legs[-1], f"{dst.label} was reached around its ztunnel (bypassed the mesh)"
    return None, ""


def _pick(findings: Sequence[Finding], leg: Leg, t: Trace, intent: Intent) -> Finding | None:
    serious = sorted((f for f in findings if f.severity.value in ("error", "warning")),
                     key=lambda f: -f.severity.rank)
    order: list[str] = []
    for result in (leg.result, leg.result.reply):
        if result is not None:
            order += [h.netns for h in result.hops if h.netns not in order]
    for other in t.legs:
        order += [h.netns for h in other.result.hops if h.netns not in order]
    for netns in order:
        for f in serious:
            if f.netns == netns:
                return f
    pods = {f"{p.namespace}/{p.name}" for p in (intent.source.pod, intent.destination.pod) if p}
    for f in serious:
        if f.pod in pods:
            return f
    nodes = {h.node for other in t.legs for h in other.result.hops}
    for f in serious:
        if f.node in nodes and f.pod is None:
            return f
    return None


def _evidence(f: Finding) -> str:
    if not f.evidence:
        return f.message
    e = f.evidence[0]
    where = f"{e.path}:{e.line}" if e.line else e.path
    text = (e.text or e.note or "").strip()
    return f"{where}: {text}" if text else where


def _as_intended_text(t: Trace, intent: Intent) -> str:
    if t.legs and _delivered(t.legs[0], Component.ZTUNNEL_DNS):
        return (f"as intended — {intent.source.label}'s DNS query is answered by its ztunnel's "
                "DNS proxy (15053)")
    nodes = [n for leg in t.legs if leg.direction == "hbone" for n in
             (leg.result.hops[0].node if leg.result.hops else "?",
              leg.result.delivered_to.node if leg.result.delivered_to else "?")]
    wp = next((leg.result.delivered_to for leg in t.legs if _delivered(leg, Component.WAYPOINT_HBONE)),
              None)
    if intent.path == "hbone" and wp is not None and nodes:
        return (f"as intended — HBONE mTLS {nodes[0]} → waypoint {intent.waypoint} on {wp.node} "
                f"→ {nodes[-1]}")
    if intent.path == "hbone":
        return (f"as intended — HBONE mTLS {nodes[0]} → {nodes[-1]}" if nodes else
                "as intended — HBONE mTLS")
    if intent.path == "probe":
        return f"bypass, as intended — {intent.expected}"
    if intent.path == "bypass":
        return f"bypass, as intended — {intent.expected.removeprefix('no ztunnel: ')}"
    return f"as intended — {intent.expected}"


def judge(snap: Snapshot, t: Trace, *, plaintext: bool = False, uid: int | None = None,
          report: Report | None = None, ctx: Context | None = None) -> Verdict:
    """The verdict on trace `t` of `snap` (doctor runs only when the path is off)."""
    ctx = ctx or Context.build(snap)
    reached: Pod | None = None
    last = t.legs[-1].result.delivered_to if t.legs else None
    if last is not None and last.pod and last.component in ("app", "sidecar-inbound"):
        ns, _, name = last.pod.partition("/")
        reached = ctx.pods_by_ref.get(PodRef(ns, name))
    intent = derive(ctx, t.source, t.destination, plaintext=plaintext, reached=reached,
                    uid=uid)
    mtls = tuple(leg_mtls(leg, intent) for leg in t.legs)
    notes = list(intent.notes)
    bad, what = _first_bad_leg(t, intent)
    if bad is None:
        return Verdict(intent, True, _as_intended_text(t, intent), None, mtls, tuple(notes))
    if report is None:
        from ambientctl.analyzers.doctor import diagnose

        report = diagnose(snap)
    f = _pick(report.findings, bad, t, intent)
    if intent.waypoint_problem is not None:  # the waypoint check that names this binding
        f = next((x for x in report.findings if x.check_id == intent.waypoint_problem[0]
                  and x.message == intent.waypoint_problem[1]), f)
    if f is not None:  # cite the root of its incident: fix that first
        from ambientctl.analyzers.doctor.incidents import root_of

        f = report.findings[root_of(report.findings, report.findings.index(f))]
    steps = flatten(t)  # the step order `culprit.step` indexes (as --compare counts them)
    index = None
    if f is not None and f.netns is not None:
        index = next((i for i, s in enumerate(steps) if s.leg == bad.index and
                      s.netns == f.netns), None)
    if index is None:
        index = next((i for i, s in enumerate(steps) if s.leg == bad.index), None)
    if f is None:
        culprit = Culprit(None, "no doctor check explains this", index,
                          str(bad.result.culprit) if bad.result.culprit else "")
        text = f"NOT as intended — {what} (no doctor check explains it)"
    else:
        culprit = Culprit(f.check_id, f.title, index, _evidence(f))
        text = f"NOT as intended — {what} ({f.check_id}: {culprit.evidence})"
    return Verdict(intent, False, text, culprit, mtls, tuple(notes))


def crossing_legs_mtls(t: Trace, v: Verdict) -> bool:
    """`--expect-mtls`: every leg that crosses a node boundary is mTLS."""
    return all(m is True for leg, m in zip(t.legs, v.mtls, strict=True) if len(_nodes(leg)) > 1)
