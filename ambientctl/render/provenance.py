"""One line that says what a result was computed from: the bundle, when and how it was
collected, and how many nodes it holds (so a pasted trace carries its provenance)."""

from __future__ import annotations

from ambientctl.model import Snapshot


def bundle_header(location: str, snap: Snapshot) -> str:
    """`bundle: PATH · collected TIME (MODE) · N nodes[, partial]`."""
    m = snap.manifest
    parts = [f"bundle: {location}"]
    if m is not None and m.created_at is not None:
        parts.append(f"collected {m.created_at}" + (f" ({m.mode})" if m.mode else ""))
    elif m is None:
        parts.append("no manifest (assembled by hand)")
    parts.append(f"{len(snap.nodes)} node{'s' if len(snap.nodes) != 1 else ''}"
                 + (", partial" if m is not None and m.partial else ""))
    return " · ".join(parts)
