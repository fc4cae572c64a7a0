"""The default `trace` view: the path at a glance.

One line per step that changed the packet or where it goes - MARK/CONNMARK,
DNAT/SNAT/REDIRECT/TPROXY/MASQUERADE, a non-default `ip rule` and the route it chose, a
device or tunnel crossing, a drop, the delivery - each citing `file:line` (the file is
in the hop's directory, named once in the hop's header). Jumps, ACCEPTs, chain policies
and the default rules 0/32766/32767 are left to `-v`, which shows every step.

The answer (SYN-ACK) of a leg that came back is one line naming what it passed through;
an answer that did not come back is shown step by step, because that is where the
connection broke.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from ambientctl.analyzers.trace_result import Hop, Leg, LegResult, Step, Trace

DEFAULT_RULES = {0, 32766, 32767}
# Words in a rule step's verdict that mean the rule changed the packet, its marks or its
# fate (the verdict text is the engine's own: "MARK 0x0 -> 0x100", "REDIRECT ...").
_CHANGING = re.compile(r"\b(MARK|CONNMARK|DNAT|SNAT|MASQUERADE|REDIRECT|TPROXY|tproxy|DROP|"
                       r"REJECT|CT zone|CT notrack|unmodelled|not modelled)\b")
ROLE_LABELS = {
    "legacy-node": "node (node-level capture)",
    "inpod-host": "node",
    "legacy-ztunnel": "ztunnel",
    "inpod-ambient": "app (captured in the pod)",
    "sidecar": "app with sidecar",
    "cilium-ztunnel": "ztunnel (Cilium)",
}


def _cite(step: Step, base: str) -> str:
    src = step.source
    if src is None:
        return ""
    path = src.path[len(base):] if base and src.path.startswith(base) else src.path
    return f"  [{path}:{src.line}]" if src.line else f"  [{path}]"


def _tag(step: Step) -> str:
    if step.kind in ("rule", "policy"):
        m = _CHANGING.search(step.summary.split(": ", 1)[-1])
        return m.group(1).upper() if m else "RULE"
    return {"ip-rule": "ip rule", "exit": "out", "deliver": "deliver", "drop": "DROP",
            "sysctl": "sysctl", "note": "conntrack"}.get(step.kind, step.kind)


def changed(step: Step, previous: Step | None = None) -> bool:
    """Did this step change the packet, its marks, its route or its fate?"""
    if step.kind in ("rule", "policy"):
        if step.mark_before is not None and step.mark_after is not None and \
                step.mark_before != step.mark_after:
            return True
        verdict = step.summary.split(": ", 1)[-1]
        return bool(_CHANGING.search(verdict))
    if step.kind == "ip-rule":
        return step.rule_priority is not None and step.rule_priority not in DEFAULT_RULES
    if step.kind == "route":
        # the route a non-default ip rule chose (a default rule's route is the usual way)
        return previous is not None and previous.kind == "ip-rule" and changed(previous)
    if step.kind == "note":
        return step.summary.startswith("conntrack reverses the NAT")
    return step.kind in ("exit", "drop") or (step.kind == "sysctl" and "drop" in step.summary)


def _rule_priority(step: Step) -> int | None:
    m = re.match(r"ip rule (\d+)", step.summary)
    return int(m.group(1)) if m else None


def _normalised(steps: Iterable[Step]) -> list[Step]:
    from dataclasses import replace

    out = []
    for s in steps:
        if s.kind == "ip-rule" and s.rule_priority is None:
            s = replace(s, rule_priority=_rule_priority(s))
        out.append(s)
    return out


def _hop_base(hop: Hop) -> str:
    """The hop's directory in the bundle, from any step's citation."""
    for s in hop.steps:
        if s.source is not None and "/" in s.source.path:
            return s.source.path.rsplit("/", 1)[0] + "/"
    return ""


def _role(hop: Hop, later: Sequence[Hop]) -> str:
    """The 2022 design captures on the node, so an app pod's own netns has no capture
    rules: it is "captured on the node" when a node-level hop after it marks the packet."""
    if hop.role == "not-captured" and hop.pod is not None:
        if not later:
            return "app"
        captured = any(h.role == "legacy-node" and any(
            s.kind == "rule" and s.mark_before != s.mark_after for s in h.steps) for h in later)
        return "app (captured on the node)" if captured else "app (not captured)"
    return ROLE_LABELS.get(hop.role, hop.role)


def _verbatim(step: Step) -> str:
    text = (step.source.text or "").strip() if step.source is not None else ""
    return " ".join(text.split()) or step.summary


def _line(tag: str, what: str, cites: list[str]) -> str:
    where = f"  [{', '.join(c for c in cites if c)}]" if any(cites) else ""
    return f"    {tag:<10} {what}{where}"


def _short_cite(step: Step, base: str) -> str:
    return _cite(step, base).strip()[1:-1] if step.source is not None else ""


def _hop_lines(hop: Hop, later: Sequence[Hop]) -> list[str]:
    steps = _normalised(hop.steps)
    base = _hop_base(hop)
    who = f"pod {hop.pod}" if hop.pod else "node"
    enter = next((s for s in steps if s.kind == "enter"), None)
    inn = ""
    if enter is not None:
        m = re.match(r"arrives on (\S+)", enter.summary)
        inn = f" · in {m.group(1)}" if m else ""
    lines = [f"  [{hop.node}] {who} · {_role(hop, later)}{inn}"]
    i = 0
    prev: Step | None = None
    while i < len(steps):
        s = steps[i]
        nxt = steps[i + 1] if i + 1 < len(steps) else None
        if s.kind == "ip-rule" and changed(s):
            if nxt is not None and nxt.kind == "route":
                # the rule and the route it chose, verbatim, on one line
                lines.append(_line("ip rule", f"{_verbatim(s)}  =>  {_verbatim(nxt)}",
                                   [_short_cite(s, base), _short_cite(nxt, base)]))
                prev, i = nxt, i + 2
                continue
            miss = " (its table has no route: the next rule decides)" \
                if "has no route" in s.summary else ""
            lines.append(_line("ip rule", _verbatim(s) + miss, [_short_cite(s, base)]))
        elif s.kind == "exit":
            m = re.match(r"leaves by (\S+) \(.*?\) -> (.*)$", s.summary)
            what = f"{m.group(1)} -> {m.group(2)}" if m else s.summary
            lines.append(_line("out", what, [_short_cite(s, base)]))
        elif s.kind == "deliver":
            lines.append(_line("deliver", s.summary.removeprefix("delivered to "),
                               [_short_cite(s, base)]))
        elif s.kind in ("rule", "policy") and changed(s, prev):
            lines.append(_line(_tag(s), s.summary.removeprefix("ip ").removeprefix("ip6 "),
                               [_short_cite(s, base)]))
        elif s.kind != "route" and changed(s, prev):
            lines.append(_line(_tag(s), s.summary, [_short_cite(s, base)]))
        prev = s
        i += 1
    return lines


def _answer_line(rep: LegResult) -> str:
    """A returned answer in one line: the devices it left by and what changed it."""
    devs, parts = [], []
    for hop in rep.hops:
        steps = _normalised(hop.steps)
        for s in steps:
            if s.kind == "exit":
                m = re.match(r"leaves by (\S+)", s.summary)
                if m:
                    devs.append(m.group(1))
            elif s.kind == "ip-rule" and changed(s):
                parts.append(f"ip rule {s.rule_priority}")
            elif s.kind in ("rule", "policy") and changed(s):
                parts.append(s.summary.split(": ", 1)[-1])
            elif s.kind == "note" and changed(s):
                parts.append(s.summary)
    via = f" via {' -> '.join(devs)}" if devs else ""
    return f"    answer     returns{via}" + (f": {', '.join(parts)}" if parts else "")


def _leg_lines(leg: Leg) -> list[str]:
    r = leg.result
    head = f"leg {leg.index} {leg.direction}: {leg.opener}: {leg.request}"
    if r.delivered_to is not None:
        d = r.delivered_to
        where = d.pod or d.node + " (node)"
        out = [head, f"    => {r.disposition.value}: {d.component} {d.address}:{d.port} in "
                     f"{where} on {d.node}; original destination {r.original_destination}"]
    else:
        out = [head, f"    => {r.disposition.value.upper()}: {r.reason}"]
    for i, hop in enumerate(r.hops):
        out += _hop_lines(hop, r.hops[i + 1:])
    rep = r.reply
    if rep is not None:
        if rep.disposition.value == "delivered":
            out.append(_answer_line(rep))
        else:
            out.append(f"    answer {rep.disposition.value.upper()}: {rep.reason}")
            for i, hop in enumerate(rep.hops):
                out += ["  " + ln for ln in _hop_lines(hop, rep.hops[i + 1:])]
    if r.culprit is not None and r.delivered_to is None:
        c = r.culprit
        out.append(f"    culprit: {c}" + (f"  {c.text.strip()}" if c.text else ""))
    return out


def render(t: Trace) -> list[str]:
    """The at-a-glance lines for the legs and the ztunnel decisions between them."""
    out: list[str] = ["(each [file:line] is in the hop's directory: nodes/NODE/host/ or "
                      "nodes/NODE/pods/NAMESPACE/POD/)", ""]
    for leg in t.legs:
        for s in leg.explanation:
            out.append(f"  ztunnel: {s.summary}")
        out += _leg_lines(leg)
        out.append("")
    return out
