"""`bundle diff` and `trace --compare` as text and JSON (`ambientctl.diff/v1`,
`ambientctl.compare/v1`, docs/schemas/)."""

from __future__ import annotations

from typing import Any

from ambientctl.analyzers.compare import Divergence, FlatStep
from ambientctl.analyzers.diff import DiffEntry
from ambientctl.render.terminal import terminal_safe

DIFF_SCHEMA = "ambientctl.diff/v1"
COMPARE_SCHEMA = "ambientctl.compare/v1"


def _src(ref: Any) -> dict[str, Any] | None:
    return None if ref is None else {"path": ref.path, "line": ref.line, "text": ref.text}


def entry_json(e: DiffEntry) -> dict[str, Any]:
    """One difference."""
    return {"scope": e.scope, "kind": e.kind, "change": e.change, "what": e.what,
            "detail": e.detail, "ambient": e.ambient, "old": _src(e.old), "new": _src(e.new)}


def diff_document(old: str, new: str, entries: list[DiffEntry]) -> dict[str, Any]:
    """The `ambientctl.diff/v1` document."""
    return {"schema": DIFF_SCHEMA, "old": old, "new": new,
            "summary": {"entries": len(entries), "ambient": sum(e.ambient for e in entries)},
            "entries": [entry_json(e) for e in entries]}


def diff_text(old: str, new: str, entries: list[DiffEntry], *, all_entries: bool) -> str:
    """Grouped by relevance (ambient first), then scope."""
    lines = [f"--- {old}", f"+++ {new}"]
    if not entries:
        return terminal_safe("\n".join(lines + ["no differences"]) + "\n")
    shown = entries if all_entries else [e for e in entries if e.ambient] or entries[:50]
    for relevant in (True, False):
        group = [e for e in shown if e.ambient is relevant]
        if not group:
            continue
        lines.append("")
        lines.append("ambient datapath:" if relevant else "other changes:")
        scope = None
        for e in group:
            if e.scope != scope:
                scope = e.scope
                lines.append(f"  {scope}")
            where = e.new or e.old
            lines.append(f"    {e}" + (f"  [{where}]" if where is not None else ""))
    hidden = len(entries) - len(shown)
    lines.append("")
    lines.append(f"{len(entries)} difference(s), {sum(e.ambient for e in entries)} in the "
                 f"ambient datapath" + (f"; {hidden} others not shown (--all)" if hidden else ""))
    return terminal_safe("\n".join(lines) + "\n")


def _flat(s: FlatStep | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {"leg": s.leg, "direction": s.direction, "answer": s.reply, "netns": s.netns,
            "kind": s.step.kind, "summary": s.step.summary, "source": _src(s.step.source)}


def compare_text(old_summary: str, new_summary: str, d: Divergence | None) -> str:
    """Both paths and where they part."""
    lines = [f"old: {old_summary}", f"new: {new_summary}", ""]
    if d is None:
        return terminal_safe("\n".join(lines + ["the two paths are the same, step for step"]) + "\n")
    lines.append(f"first divergence (step {d.index + 1}), in {d.netns}:")
    lines.append(f"  old: {d.old.describe() if d.old else '(the old trace ended here)'}")
    lines.append(f"  new: {d.new.describe() if d.new else '(the new trace ended here)'}")
    lines.append("")
    if d.explained_by:
        lines.append("explained by:")
        for e in d.explained_by:
            where = e.new or e.old
            lines.append(f"  {e.scope}: {e}" + (f"  [{where}]" if where is not None else ""))
    else:
        lines.append("no difference between the bundles explains it (same rules and state): "
                     "check what the bundles do not hold (timing, conntrack, the ztunnel's "
                     "runtime state)")
    return terminal_safe("\n".join(lines) + "\n")


def compare_document(old_doc: dict[str, Any], new_doc: dict[str, Any],
                     d: Divergence | None) -> dict[str, Any]:
    """The `ambientctl.compare/v1` document (both traces in full)."""
    return {"schema": COMPARE_SCHEMA, "old": old_doc, "new": new_doc,
            "same_path": d is None,
            "divergence": None if d is None else {
                "index": d.index, "netns": d.netns, "old": _flat(d.old), "new": _flat(d.new),
                "explained_by": [entry_json(e) for e in d.explained_by]}}
