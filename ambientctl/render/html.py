"""The HTML report: one self-contained page (inline CSS, JS and SVG; nothing fetched) that
draws the path of each traced pair and lists doctor's findings where they sit.

Drawn from the versioned JSON documents (`ambientctl.trace/v1`, `ambientctl.doctor/v1`),
not from internals, so the page shows exactly what `-o json` says: nodes are columns,
network namespaces are boxes inside them, each leg is a run of coloured arrows from box to
box labelled with the devices crossed, and every hop is a clickable marker whose rules,
routes and devices (file:line, verbatim) open in the side panel. Findings link to the box
of the namespace their evidence comes from. Every string from the bundle is escaped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

COL_W, NODE_GAP, BOX_H, ROW_H, TOP = 190, 30, 56, 26, 44
LEG_COLOURS = ("#2563eb", "#7c3aed", "#0891b2", "#c2410c", "#be185d", "#4d7c0f")
DISPOSITION_COLOURS = {"delivered": "#15803d", "bypassed-mesh": "#b45309"}

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#111;background:#fafafa}
header{padding:12px 20px;background:#111;color:#eee}header h1{font-size:18px;margin:0 0 4px}
header .prov{font:12px monospace;color:#bbb}
main{display:flex;gap:16px;padding:16px 20px;align-items:flex-start}
section.draw{flex:1;min-width:0;overflow:auto;background:#fff;border:1px solid #ddd;padding:8px}
aside#panel{width:26%;max-height:90vh;overflow:auto;background:#fff;border:1px solid #ddd;
 padding:8px 12px;font-size:12px;position:sticky;top:8px}
aside#panel pre{white-space:pre-wrap;word-break:break-word;margin:2px 0 8px}
.verdict{font:13px monospace;padding:6px 8px;margin:6px 0;border-left:6px solid #999;background:#f4f4f4}
.verdict.ok{border-color:#15803d}.verdict.bad{border-color:#b91c1c}
.legs span{display:inline-block;margin:2px 10px 2px 0;font-size:12px}
.sw{display:inline-block;width:22px;height:4px;vertical-align:middle;margin-right:4px}
svg text{font:12px monospace}svg .node-title{font-weight:bold;font-size:13px}
.ns rect{fill:#f8fafc;stroke:#64748b}.ns.flagged rect{stroke:#b91c1c;stroke-width:3}
.ns.focus rect{fill:#fef9c3}.hop{cursor:pointer}.arrow,.device,line,.leg{pointer-events:none}.hop:hover circle{r:9}
.findings li{margin:4px 0}.sev{font:11px monospace;padding:1px 4px;border-radius:3px;color:#fff}
.sev.error{background:#b91c1c}.sev.warning{background:#b45309}.sev.info{background:#2563eb}
#errors{display:none}
"""

_JS = """
window.__errors=[];window.addEventListener('error',function(e){window.__errors.push(String(e.message));
 var el=document.getElementById('errors');el.textContent=window.__errors.join('\\n');el.style.display='block';});
function show(id){var t=document.getElementById('tpl-'+id);var p=document.getElementById('panel');
 if(!t){return;}p.innerHTML='';p.appendChild(t.content.cloneNode(true));}
function focusNs(id){document.querySelectorAll('.ns.focus').forEach(function(e){e.classList.remove('focus');});
 var el=document.getElementById('ns-'+id);if(el){el.classList.add('focus');el.scrollIntoView({block:'center'});}
 show('ns-'+id);}
document.addEventListener('click',function(e){var h=e.target.closest('.hop');if(h){show(h.dataset.tpl);return;}
 var n=e.target.closest('.ns');if(n){show('ns-'+n.dataset.ns);}});
document.getElementById('rendered').textContent='ok';
"""


def _id(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)


class _Layout:
    """A sequence chart: one lifeline (column) per network namespace, grouped under its
    node, in order of first appearance; one row per move of a packet between them."""

    def __init__(self, traces: Sequence[Mapping[str, Any]]) -> None:
        self.nodes: list[str] = []
        self.meta: dict[str, tuple[str, str | None, str]] = {}
        order: dict[str, list[str]] = {}
        for doc in traces:
            for leg in doc.get("legs", []):
                for hop in leg.get("hops", []):
                    node, netns = str(hop.get("node")), str(hop.get("netns"))
                    if node not in self.nodes:
                        self.nodes.append(node)
                        order[node] = []
                    if netns not in self.meta:
                        order[node].append(netns)
                        self.meta[netns] = (node, hop.get("pod"), str(hop.get("role")))
        self.boxes: dict[str, tuple[float, float]] = {}
        x = 20.0
        for node in self.nodes:
            for netns in order[node]:
                self.boxes[netns] = (x, TOP)
                x += COL_W
            x += NODE_GAP
        self.width = max(x - NODE_GAP + 20, 400)
        rows = sum(1 + max(1, len(leg.get("hops", []))) for d in traces
                   for leg in d.get("legs", [])) + len(traces)
        self.height = TOP + BOX_H + 20 + rows * ROW_H + 30

    def centre(self, netns: str) -> float:
        return self.boxes[netns][0] + COL_W / 2 - 10


def _hop_devices(hop: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(input device, device left by) of a hop, from its enter and exit steps."""
    inn = out = None
    for s in hop.get("steps", []):
        summary = str(s.get("summary", ""))
        if s.get("kind") == "enter" and summary.startswith("arrives on "):
            inn = summary.split()[2]
        elif s.get("kind") == "exit" and summary.startswith("leaves by "):
            out = summary.split()[2]
    return inn, out


def _steps_html(hop: Mapping[str, Any]) -> str:
    rows = []
    for s in hop.get("steps", []):
        src = s.get("source") or {}
        where = f"{src.get('path')}:{src.get('line')}" if src.get("line") else src.get("path")
        text = (src.get("text") or "").strip()
        rows.append(f"<b>{escape(str(s.get('hook') or s.get('kind')))}</b> "
                    f"{escape(str(s.get('summary', '')))}"
                    + (f"\n  {escape(text)}" if text else "")
                    + (f"\n  [{escape(str(where))}]" if where else ""))
    return "<pre>" + "\n".join(rows) + "</pre>"


def _leg_status(leg: Mapping[str, Any]) -> tuple[str, str]:
    """(colour, dash pattern): mTLS legs solid, plaintext dashed, broken legs red."""
    disp = str(leg.get("disposition"))
    if disp != "delivered":
        return "#b91c1c", "6 4"
    mtls = leg.get("mtls")
    if mtls is None:
        mtls = leg.get("direction") == "hbone"
    return "", ("" if mtls else "4 4")


def _svg(traces: Sequence[Mapping[str, Any]], lay: _Layout,
         flagged: set[str]) -> tuple[str, list[str]]:
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" id="drawing" width="{lay.width:.0f}" '
             f'height="{lay.height:.0f}" viewBox="0 0 {lay.width:.0f} {lay.height:.0f}">',
             "<defs>"]
    colours = list(LEG_COLOURS) + ["#b91c1c"]
    for i, c in enumerate(colours):
        parts.append(f'<marker id="arrow{i}" viewBox="0 0 10 10" refX="9" refY="5" '
                     f'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
                     f'<path d="M0,0 L10,5 L0,10 z" fill="{c}"/></marker>')
    parts.append("</defs>")
    templates: list[str] = []
    bottom = lay.height - 10
    for node in lay.nodes:  # a band per node over its namespaces
        xs = [x for n, (x, _y) in lay.boxes.items() if lay.meta[n][0] == node]
        x0, x1 = min(xs) - 6, max(xs) + COL_W - 14
        parts.append(f'<g class="node" id="node-{_id(node)}"><rect x="{x0}" y="6" '
                     f'width="{x1 - x0}" height="{bottom - 6}" fill="#f1f5f9" stroke="#cbd5e1"/>'
                     f'<text class="node-title" x="{x0 + 6}" y="24">node {escape(node)}</text></g>')
    for netns, (x, y) in lay.boxes.items():
        _node, pod, role = lay.meta[netns]
        cls = "ns flagged" if netns in flagged else "ns"
        label = pod.split("/", 1)[-1] if pod else "host netns"
        if len(label) > 24:
            label = label[:22] + "…"
        cx = lay.centre(netns)
        parts.append(f'<line x1="{cx}" y1="{y + BOX_H}" x2="{cx}" y2="{bottom - 4}" '
                     f'stroke="#94a3b8" stroke-dasharray="4 4"/>'
                     f'<g class="{cls}" id="ns-{_id(netns)}" data-ns="{_id(netns)}">'
                     f'<rect x="{x}" y="{y}" width="{COL_W - 20}" height="{BOX_H}" rx="6"/>'
                     f'<text x="{x + 6}" y="{y + 20}">{escape(label)}</text>'
                     f'<text x="{x + 6}" y="{y + 38}" fill="#475569">{escape(role)}</text>'
                     f'<title>{escape(netns)}</title></g>')
    y = TOP + BOX_H + 24
    for t_i, doc in enumerate(traces):
        parts.append(f'<text x="20" y="{y}" font-weight="bold">'
                     f'{escape(str(doc.get("summary", "")))}</text>')
        y += ROW_H
        for leg in doc.get("legs", []):
            index = int(leg.get("index", 1))
            colour_i = (t_i * 3 + index - 1) % len(LEG_COLOURS)
            bad, dash = _leg_status(leg)
            colour = bad or LEG_COLOURS[colour_i]
            marker = len(colours) - 1 if bad else colour_i
            mtls = leg.get("mtls")
            mtls_txt = "" if mtls is None else (" · mTLS" if mtls else " · plaintext")
            parts.append(f'<text class="leg" x="24" y="{y}" fill="{colour}">leg {index} '
                         f'{escape(str(leg.get("direction")))}: '
                         f'{escape(str(leg.get("disposition")))}{mtls_txt}</text>')
            y += ROW_H
            hops = leg.get("hops", [])
            for h_i, hop in enumerate(hops):
                netns = str(hop.get("netns"))
                cx = lay.centre(netns)
                tpl = f"t{t_i}-l{index}-h{h_i}"
                inn, out = _hop_devices(hop)
                title = f"leg {index} {leg.get('direction')}: {netns}"
                parts.append(f'<g class="hop" id="hop-{tpl}" data-tpl="{tpl}" '
                             f'data-leg="{index}" data-hop="{h_i}">'
                             f'<circle cx="{cx}" cy="{y - 4}" r="7" fill="{colour}"/>'
                             f'<title>{escape(title)}</title></g>')
                templates.append(f'<template id="tpl-{tpl}"><h3>{escape(title)}</h3>'
                                 f'<p>in: {escape(str(inn))} · out: {escape(str(out))}</p>'
                                 f'{_steps_html(hop)}</template>')
                if h_i + 1 < len(hops):
                    nx = lay.centre(str(hops[h_i + 1].get("netns")))
                    y2 = y + ROW_H
                    if nx == cx:  # stays in the namespace (loopback): a small loop
                        d = f"M{cx + 8},{y - 4} C{cx + 40},{y} {cx + 40},{y2 - 8} {cx + 8},{y2 - 4}"
                    else:
                        d = f"M{cx},{y - 4} L{nx + (-8 if nx > cx else 8)},{y2 - 4}"
                    parts.append(f'<path class="arrow" d="{d}" stroke="{colour}" '
                                 f'stroke-width="2.5" fill="none" stroke-dasharray="{dash}" '
                                 f'marker-end="url(#arrow{marker})"/>')
                    if out:  # the device crossed, as a small box on the arrow
                        bx = (cx + nx) / 2 - 4 * len(out) if nx != cx else cx + 44
                        parts.append(f'<g class="device"><rect x="{bx - 3}" y="{y + 2}" '
                                     f'width="{8 * len(out) + 6}" height="15" rx="3" '
                                     f'fill="#fff" stroke="{colour}"/><text x="{bx}" '
                                     f'y="{y + 14}" fill="{colour}">{escape(out)}</text></g>')
                y += ROW_H
    parts.append("</svg>")
    return "\n".join(parts), templates


def _ns_templates(traces: Sequence[Mapping[str, Any]], lay: _Layout,
                  findings: Sequence[Mapping[str, Any]]) -> list[str]:
    out = []
    for netns in lay.boxes:
        mine = [f for f in findings if f.get("netns") == netns]
        items = "".join(f"<li><span class='sev {escape(str(f.get('severity')))}'>"
                        f"{escape(str(f.get('id')))}</span> {escape(str(f.get('message')))}</li>"
                        for f in mine)
        out.append(f'<template id="tpl-ns-{_id(netns)}"><h3>{escape(netns)}</h3>'
                   + (f"<ul>{items}</ul>" if items else "<p>no finding here</p>")
                   + "<p>click a coloured marker for that leg's steps in this namespace</p>"
                   "</template>")
    return out


def _findings_html(findings: Sequence[Mapping[str, Any]], lay: _Layout) -> str:
    if not findings:
        return "<p>doctor: no findings.</p>"
    items = []
    for f in findings:
        netns = f.get("netns")
        link = (f' <a href="#ns-{_id(str(netns))}" onclick="focusNs(\'{_id(str(netns))}\');'
                f'return false;">show on the drawing</a>' if netns in lay.boxes else
                " <i>(not on a drawn path)</i>")
        ev = f.get("evidence") or []
        cite = ""
        if ev:
            e = ev[0]
            cite = f" <code>{escape(str(e.get('path')))}{':' + str(e.get('line')) if e.get('line') else ''}</code>"
        items.append(f"<li class='finding' data-netns='{escape(str(netns))}'>"
                     f"<span class='sev {escape(str(f.get('severity')))}'>"
                     f"{escape(str(f.get('id')))}</span> {escape(str(f.get('title')))}: "
                     f"{escape(str(f.get('message')))}{cite}{link}</li>")
    return "<ul class='findings'>" + "".join(items) + "</ul>"


def _verdicts(traces: Sequence[Mapping[str, Any]]) -> str:
    out = []
    for t_i, doc in enumerate(traces):
        intent = doc.get("intent") or {}
        ok = doc.get("disposition") == "delivered" and intent.get("as_intended", True) is not False
        line = escape(str(doc.get("summary")))
        verdict = intent.get("verdict") or doc.get("verdict")
        legs = []
        for leg in doc.get("legs", []):
            bad, dash = _leg_status(leg)
            colour = bad or LEG_COLOURS[(t_i * 3 + int(leg.get("index", 1)) - 1) % len(LEG_COLOURS)]
            mtls = leg.get("mtls")
            mtls_txt = "" if mtls is None else (" · mTLS" if mtls else " · plaintext")
            legs.append(f"<span><i class='sw' style='background:{colour}'></i>leg "
                        f"{leg.get('index')} {escape(str(leg.get('direction')))}: "
                        f"{escape(str(leg.get('disposition')))}{mtls_txt}</span>")
        out.append(f"<div class='verdict {'ok' if ok else 'bad'}' data-trace='{t_i}'>{line}"
                   + (f"<br>verdict: {escape(str(verdict))}" if verdict else "")
                   + f"<div class='legs'>{''.join(legs)}</div></div>")
    return "".join(out)


def report_html(traces: Sequence[Mapping[str, Any]], doctor: Mapping[str, Any] | None,
                provenance: str, title: str = "ambientctl report") -> str:
    """The whole page for trace documents and a doctor document (either may be empty)."""
    lay = _Layout(traces)
    findings = list((doctor or {}).get("findings", []))
    flagged = {str(f.get("netns")) for f in findings if f.get("netns")}
    svg, templates = _svg(traces, lay, flagged)
    templates += _ns_templates(traces, lay, findings)
    result = (doctor or {}).get("result")
    data = json.dumps({"traces": len(traces), "hops": sum(
        len(leg.get("hops", [])) for d in traces for leg in d.get("legs", []))})
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><div class='prov'>{escape(provenance)}</div></header>"
        f"<pre id='errors'></pre><div id='rendered' hidden></div>"
        f"<script type='application/json' id='summary'>{escape(data)}</script>"
        f"<main><section class='draw'>{_verdicts(traces)}{svg}"
        f"<h2>doctor{(' — ' + escape(str(result)).upper()) if result else ''}</h2>"
        f"{_findings_html(findings, lay) if doctor is not None else '<p>doctor not run</p>'}"
        f"</section><aside id='panel'><p>Click a box or a coloured marker: its rules, routes "
        f"and devices, with file:line, show here.</p></aside></main>"
        f"{''.join(templates)}<script>{_JS}</script></body></html>\n"
    )
