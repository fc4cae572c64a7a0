"""What a result was computed from, so a pasted trace or report carries its provenance: the
bundle, when and how it was collected and how many nodes it holds (`bundle_header`), and
the versions of the tools that dumped the kernel state and of the Istio components
(`collected_with`: a rule the parser misreads is often a tool version's doing).

Text outputs only: the JSON documents keep their schema (the manifest itself carries
these fields for a machine reader)."""

from __future__ import annotations

import re

from ambientctl.manifest_model import Manifest
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


# A version as tools print it: "v1.8.9", "6.1.0", "6.18.44-fc-v1252" (suffix kept).
_VERSION = re.compile(r"v?\d+(?:\.\d+)+(?:[-+~][0-9A-Za-z.+~-]*)?")
_IPTABLES_BACKEND = re.compile(r"\((nf_tables|legacy)\)")
_LONG_HEX = re.compile(r"[0-9a-f]{20,}")


def _tool_version(tool: str, output: str) -> str | None:
    """`iptables v1.8.9 (nf_tables)`, `nft v1.0.6`, `iproute2 6.1.0`: the tool and the
    version it printed (iptables keeps its backend: it decides which rules exist); None
    when the output names no version (the command failed)."""
    m = _VERSION.search(output)
    if m is None:
        return None
    backend = _IPTABLES_BACKEND.search(output) if tool.startswith("iptables") else None
    return f"{tool} {m.group(0)}" + (f" ({backend.group(1)})" if backend else "")


def _short_tag(tag: str) -> str:
    """A tag with a commit hash in it keeps 12 hex digits (`0.0.0-ambient.191fe680b52c`)."""
    return _LONG_HEX.sub(lambda m: m.group(0)[:12], tag)


def collected_with(manifest: Manifest | None) -> str | None:
    """`collected with: iptables v1.8.9 (nf_tables), nft v1.0.6, ..., ztunnel 1.24.0`: the
    tool versions the nodes reported (`targets[].tool_versions`) and the Istio components'
    image tags (`components`), each tool once, differing versions across nodes joined
    by `/`. None when the manifest records neither (hand-made and older bundles)."""
    if manifest is None:
        return None
    seen: dict[str, list[str]] = {}  # tool -> distinct versions, in the order first met
    for target in manifest.targets:
        for tool, output in target.tool_versions.items():
            text = _tool_version(tool, output)
            if text is not None and text not in seen.setdefault(tool, []):
                seen[tool].append(text)
    parts = [versions[0] + "".join("/" + v.split(" ", 1)[1] for v in versions[1:])
             for versions in seen.values() if versions]
    for component, tags in sorted(manifest.components.items()):
        short = list(dict.fromkeys(_short_tag(t) for t in tags))
        if short:
            parts.append(f"{component} {'/'.join(short)}")
    return f"collected with: {', '.join(parts)}" if parts else None


def provenance_lines(location: str, snap: Snapshot) -> str:
    """The text outputs' provenance: the bundle header, then what it was collected with."""
    extra = collected_with(snap.manifest)
    return bundle_header(location, snap) + (f"\n{extra}" if extra else "")
