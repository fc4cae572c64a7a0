"""One line that says what a result was computed from: the bundle, when and how it was
collected, and how many nodes it holds (so a pasted trace carries its provenance)."""

from __future__ import annotations

from collections.abc import Mapping

from ambientctl.model import Snapshot


def bundle_header(location: str, snap: Snapshot) -> str:
    """`bundle: PATH · collected TIME (MODE) · N nodes[, partial]`."""
    m: Mapping[str, object] = snap.manifest if isinstance(snap.manifest, Mapping) else {}
    parts = [f"bundle: {location}"]
    created = m.get("created_at")
    collection = m.get("collection")
    mode = collection.get("mode") if isinstance(collection, Mapping) else None
    if isinstance(created, str):
        parts.append(f"collected {created}" + (f" ({mode})" if isinstance(mode, str) else ""))
    elif not m:
        parts.append("no manifest (assembled by hand)")
    parts.append(f"{len(snap.nodes)} node{'s' if len(snap.nodes) != 1 else ''}"
                 + (", partial" if m.get("partial") is True else ""))
    return " · ".join(parts)
