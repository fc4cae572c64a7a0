"""`ambientctl trace -o json`: the `ambientctl.trace/v1` document (docs/schemas/trace-v1.json)."""

from __future__ import annotations

from typing import Any

from ambientctl.analyzers.selectors import Endpoint
from ambientctl.analyzers.trace_result import Delivery, Hop, Leg, Step, Trace
from ambientctl.analyzers.verdict import Verdict
from ambientctl.model import SourceRef

SCHEMA = "ambientctl.trace/v1"


def _src(ref: SourceRef | None) -> dict[str, Any] | None:
    if ref is None:
        return None
    return {"path": ref.path, "line": ref.line, "text": ref.text}


def _mark(v: int | None) -> str | None:
    return None if v is None else f"{v:#x}"


def step_json(s: Step) -> dict[str, Any]:
    """One step."""
    return {
        "kind": s.kind,
        "summary": s.summary,
        "source": _src(s.source),
        "hook": s.hook,
        "table": s.table,
        "chain": s.chain,
        "position": s.position,
        "backend": s.backend,
        "mark_before": _mark(s.mark_before),
        "mark_after": _mark(s.mark_after),
        "rule_priority": s.rule_priority,
        "route_table": s.route_table,
        "device": s.device,
        "next_netns": s.next_netns,
        "branches": list(s.branches),
        "packet": s.packet,
    }


def _hop(h: Hop) -> dict[str, Any]:
    return {"node": h.node, "netns": h.netns, "pod": h.pod, "role": h.role,
            "steps": [step_json(s) for s in h.steps]}


def _delivery(d: Delivery | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {"node": d.node, "pod": d.pod, "netns": d.netns, "address": d.address,
            "port": d.port, "component": d.component, "local": str(d.local),
            "listener": _src(d.listener)}


def _endpoint(e: Endpoint) -> dict[str, Any]:
    return {
        "kind": e.kind,
        "name": e.pod.name if e.pod else (e.service.name if e.service else e.label),
        "namespace": e.pod.namespace if e.pod else (e.service.namespace if e.service else None),
        "ip": str(e.ip) if e.ip is not None else None,
        "port": e.port,
        "node": e.node,
        "netns": e.netns.id if e.netns else None,
    }


def _leg(leg: Leg) -> dict[str, Any]:
    r = leg.result
    return {
        "index": leg.index,
        "direction": leg.direction,
        "opened_by": leg.opener,
        "start_netns": leg.start_netns,
        "request": leg.request,
        "target": str(leg.target) if leg.target else None,
        "bind": str(leg.bind) if leg.bind else None,
        "mark": f"{leg.mark:#x}",
        "uid": leg.uid,
        "disposition": r.disposition.value,
        "reason": r.reason,
        "culprit": _src(r.culprit),
        "delivered_to": _delivery(r.delivered_to),
        "original_destination": str(r.original_destination) if r.original_destination else None,
        "ztunnel": [step_json(s) for s in leg.explanation],
        "hops": [_hop(h) for h in r.hops],
        "reply": None if r.reply is None else {
            "disposition": r.reply.disposition.value,
            "reason": r.reply.reason,
            "hops": [_hop(h) for h in r.reply.hops],
        },
    }


def intent_json(v: Verdict) -> dict[str, Any]:
    """The verdict: what was intended, whether it happened, and the first culprit."""
    i = v.intent
    c = v.culprit
    return {
        "expected": i.expected,
        "path": i.path,
        "as_intended": v.as_intended,
        "verdict": v.text,
        "source": {"name": i.source.label, "kind": i.source.kind, "why": i.source.why},
        "destination": {"name": i.destination.label, "kind": i.destination.kind,
                        "why": i.destination.why},
        "peer_authentication": i.peer_authentication,
        "waypoint": i.waypoint,
        "intent_sources": list(i.sources),
        "notes": list(v.notes),
        "culprit": None if c is None else {"check": c.check, "title": c.title, "step": c.step,
                                           "evidence": c.evidence},
    }


def trace_document(t: Trace, bundle: str, verdict: Verdict | None = None) -> dict[str, Any]:
    """The whole JSON document (with `intent` and each leg's `mtls` when judged)."""
    legs = [_leg(leg) for leg in t.legs]
    if verdict is not None:
        for doc, mtls in zip(legs, verdict.mtls, strict=True):
            doc["mtls"] = mtls
    return {
        "schema": SCHEMA,
        "bundle": bundle,
        "source": _endpoint(t.source),
        "destination": _endpoint(t.destination),
        "request": str(t.request),
        "plaintext": t.plaintext,
        "disposition": t.disposition.value,
        "reason": t.reason,
        "summary": t.summary,
        "legs": legs,
        "assumptions": list(t.assumptions),
        "warnings": list(t.warnings),
        "data_errors": list(t.data_errors),
        **({"intent": intent_json(verdict)} if verdict is not None else {}),
        **({"endpoint": t.endpoint} if t.endpoint is not None else {}),
    }
