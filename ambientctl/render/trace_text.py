"""`ambientctl trace` as text: a summary line, then each leg at a glance (the steps that
changed the packet or its route, `trace_glance`), or with -v every step.

Like ovn-trace's summary/detailed levels: the same `Trace`, filtered.
"""

from __future__ import annotations

from ambientctl.analyzers.trace_result import Leg, Step, Trace
from ambientctl.analyzers.verdict import Verdict
from ambientctl.render import trace_glance
from ambientctl.render.term import Term
from ambientctl.render.terminal import terminal_safe

_ARROW = " -> "


def _leg_line(leg: Leg) -> str:
    r = leg.result
    head = f"leg {leg.index} {leg.direction}: {leg.opener}: {leg.request}"
    if r.delivered_to is not None:
        d = r.delivered_to
        where = f"{d.pod or d.node + ' (node)'}"
        return (f"{head}\n    => {r.disposition.value}: {d.component} {d.address}:{d.port} in "
                f"{where} on {d.node}; original destination {r.original_destination}")
    return f"{head}\n    => {r.disposition.value.upper()}: {r.reason}"


def _step_line(s: Step) -> list[str]:
    tag = s.hook or s.kind
    lines = [f"      {tag:<11} {s.summary}"]
    if s.source is not None and s.kind in ("rule", "policy", "route", "ip-rule", "deliver",
                                           "drop", "sysctl", "ztunnel", "exit"):
        where = f"{s.source.path}:{s.source.line}" if s.source.line else s.source.path
        text = (s.source.text or "").strip()
        if text and s.kind in ("rule", "route", "ip-rule", "sysctl"):
            lines.append(f"      {'':<11}   {text}    [{where}]")
        else:
            lines.append(f"      {'':<11}   [{where}]")
    for b in s.branches:
        lines.append(f"      {'':<11}   other branch: {b}")
    return lines


def render(t: Trace, *, verbose: bool = False, header: str | None = None,
           term: Term | None = None, verdict: Verdict | None = None) -> str:
    """The text view: at a glance by default (`trace_glance`), every step with -v.

    `header` names the bundle (where, when, how and with what collected: one line each,
    `provenance.provenance_lines`); `term` colours and wraps for a terminal (plain and
    unwrapped when piped)."""
    term = term or Term()
    colour = "green" if t.disposition.value == "delivered" else "red"
    # the summary stays the first line (scripts read it with `head -1`); provenance next
    out = [term.paint(t.summary, "bold", colour), *(header.splitlines() if header else []), ""]
    if t.reason and t.disposition.value not in ("delivered",):
        out.append(f"why: {t.reason}")
        out.append("")
    if not verbose:
        out += trace_glance.render(t)
    for leg in (t.legs if verbose else ()):
        for s in leg.explanation:
            out.append(f"  ztunnel: {s.summary}")
            if verbose and s.source is not None:
                out.append(f"           [{s.source}]")
        out.append(_leg_line(leg))
        if verbose:
            for hop in leg.result.hops:
                who = f"pod {hop.pod}" if hop.pod else "node"
                out.append(f"    [{hop.node}] {who} ({hop.role})")
                for s in hop.steps:
                    out.extend(_step_line(s))
            rep = leg.result.reply
            if rep is not None:
                how = "returns" if rep.disposition.value == "delivered" else rep.disposition.value
                out.append(f"    answer ({how}):")
                for hop in rep.hops:
                    who = f"pod {hop.pod}" if hop.pod else "node"
                    out.append(f"    [{hop.node}] {who} ({hop.role})")
                    for s in hop.steps:
                        out.extend(_step_line(s))
            if leg.result.culprit is not None and leg.result.delivered_to is None:
                c = leg.result.culprit
                out.append(f"    culprit: {c}" + (f"  {c.text.strip()}" if c.text else ""))
        out.append("")
    if t.assumptions:
        out.append("assumptions:")
        out.extend(f"  - {a}" for a in t.assumptions)
    if t.data_errors:
        out.append("unusable data on the path (the trace cannot be trusted past it):")
        out.extend(f"  - {w}" for w in t.data_errors)
    if t.warnings:
        out.append("warnings about the data used:")
        out.extend(f"  - {w}" for w in t.warnings)
    if not verbose:
        out.append("(-v shows every rule, route and device behind each hop)")
    if verdict is not None:
        marks = ", ".join(f"leg {leg.index} {'mTLS' if m else 'plaintext' if m is False else '-'}"
                          for leg, m in zip(t.legs, verdict.mtls, strict=True))
        out.append("")
        out += [f"note: {n}" for n in verdict.notes]
        out.append(f"mtls: {marks}")
        out.append(term.paint(f"verdict: {verdict.text}", "bold",
                              "green" if verdict.as_intended else "red"))
    return terminal_safe(term.fit_all("\n".join(out).rstrip()) + "\n")
