"""`trace -o dot` and `-o mermaid`: the path as a graph to paste into docs and tickets.

Nodes are clusters (subgraphs), network namespaces are graph nodes, each hop-to-hop move
of a leg is an edge labelled `leg N direction: device`. mTLS legs are solid, plaintext
dashed, a leg that did not reach its socket red. Built from the `ambientctl.trace/v1`
document, like the HTML report.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any


def _edges(doc: Mapping[str, Any]) -> list[tuple[str, str, str, bool, bool]]:
    """(from netns, to netns, label, mtls, broken) for every move of every leg."""
    out = []
    for leg in doc.get("legs", []):
        hops = leg.get("hops", [])
        mtls = leg.get("mtls")
        if mtls is None:
            mtls = leg.get("direction") == "hbone"
        broken = leg.get("disposition") != "delivered"
        for a, b in zip(hops, hops[1:], strict=False):
            dev = next((str(s["summary"]).split()[2] for s in a.get("steps", [])
                        if s.get("kind") == "exit" and str(s.get("summary", "")).startswith(
                            "leaves by ")), "")
            label = f"leg {leg.get('index')} {leg.get('direction')}" + (f": {dev}" if dev else "")
            out.append((str(a["netns"]), str(b["netns"]), label, bool(mtls), broken))
    return out


def _netns(doc: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """netns id -> (node, label), in order of first appearance."""
    seen: dict[str, tuple[str, str]] = {}
    for leg in doc.get("legs", []):
        for hop in leg.get("hops", []):
            pod = hop.get("pod")
            seen.setdefault(str(hop["netns"]), (str(hop["node"]),
                                                f"{pod or 'host'} ({hop.get('role')})"))
    return seen


def _dot_q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(doc: Mapping[str, Any]) -> str:
    """Graphviz DOT (`dot -Tsvg`)."""
    lines = ["digraph ambient_trace {", "  rankdir=LR;", "  node [shape=box, fontname=monospace];",
             f"  label={_dot_q(str(doc.get('summary', '')))}; labelloc=t;"]
    by_node: dict[str, list[tuple[str, str]]] = {}
    for netns, (node, label) in _netns(doc).items():
        by_node.setdefault(node, []).append((netns, label))
    for i, (node, members) in enumerate(by_node.items()):
        lines.append(f"  subgraph cluster_{i} {{ label={_dot_q('node ' + node)};")
        lines += [f"    {_dot_q(n)} [label={_dot_q(label)}];" for n, label in members]
        lines.append("  }")
    for a, b, label, mtls, broken in _edges(doc):
        style = "solid" if mtls else "dashed"
        colour = "red" if broken else ("darkgreen" if mtls else "black")
        lines.append(f"  {_dot_q(a)} -> {_dot_q(b)} [label={_dot_q(label)}, style={style}, "
                     f"color={colour}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mm_id(netns: str) -> str:
    return "n_" + re.sub(r"[^A-Za-z0-9_]", "_", netns)


def _mm_text(text: str) -> str:
    return text.replace('"', "'").replace("|", "/")


def to_mermaid(doc: Mapping[str, Any]) -> str:
    """A Mermaid `flowchart` (GitHub, GitLab and most wikis render it)."""
    lines = ["flowchart LR"]
    by_node: dict[str, list[tuple[str, str]]] = {}
    for netns, (node, label) in _netns(doc).items():
        by_node.setdefault(node, []).append((netns, label))
    for i, (node, members) in enumerate(by_node.items()):
        lines.append(f'  subgraph node_{i}["node {_mm_text(node)}"]')
        lines += [f'    {_mm_id(n)}["{_mm_text(label)}"]' for n, label in members]
        lines.append("  end")
    broken_edges = []
    for k, (a, b, label, mtls, broken) in enumerate(_edges(doc)):
        arrow = "-->" if mtls else "-.->"
        lines.append(f'  {_mm_id(a)} {arrow}|"{_mm_text(label)}"| {_mm_id(b)}')
        if broken:
            broken_edges.append(str(k))
    if broken_edges:
        lines.append(f"  linkStyle {','.join(broken_edges)} stroke:red")
    return "\n".join(lines) + "\n"
