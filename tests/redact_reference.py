"""The in-memory `bundle redact` as it was before it streamed (every file held at once):
the oracle the streaming implementation must match byte for byte (tests/test_redact_stream.py).

Kept verbatim apart from its name so a change to the streaming code that alters any output
byte, or the order in which the Redactor sees values, fails the comparison. Its manifest
rewrite (`_redacted_manifest`, the whole document built in memory) lives here too since
`bundle redact` streams the entries (issue 12).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ambientctl.bundle.layout import CLUSTER_FILES, MANIFEST, split_netns_dir
from ambientctl.bundle.manifest import Manifest, sha256_hex
from ambientctl.bundle.reader import open_bundle
from ambientctl.bundle.redact import (
    _LINK_NETNS,
    _OBJECT_KIND,
    INFRA_NAMESPACES,
    RULES,
    Redactor,
    RedactResult,
    _register_cluster,
    _register_manifest,
    _write_map,
    private_map_path,
)
from ambientctl.bundle.redact_fields import MANIFEST_FIELDS, file_kind, table_for
from ambientctl.bundle.redact_walk import Walker
from ambientctl.bundle.writer import check_output_path, rfc3339, write_prepared
from ambientctl.errors import BundleError, UsageError


def redact_in_memory(src_path: str, out_path: str, *, key: bytes | None = None) -> RedactResult:
    """Write a redacted copy of the bundle at `src_path` to `out_path` (dir or .tar.gz).

    `key` seeds the keyed mappings (random by default: two redactions of one bundle do
    not share replacements). Raises `UsageError` when `out_path` or its map exists,
    `BundleError` when the source is unreadable or damaged (hashes are checked on read).
    """
    map_path = private_map_path(out_path)
    check_output_path(out_path)
    if os.path.lexists(map_path):
        raise UsageError(f"{map_path} already exists", hint="choose another output")
    src = open_bundle(src_path)
    try:
        red = Redactor(key if key is not None else os.urandom(32))
        manifest = src.manifest
        _register_manifest(red, manifest)
        files: dict[str, str] = {}
        for rel in src.paths():
            if rel == MANIFEST:
                continue
            files[rel] = src.read_bytes(rel).decode("utf-8", errors="surrogateescape")
        for kind_file, rel in CLUSTER_FILES.items():
            if rel in files:
                try:
                    doc = json.loads(files[rel])
                except ValueError as exc:
                    raise BundleError(f"{src_path}: {rel} is not valid JSON ({exc})",
                                      hint="redaction needs readable cluster files") from exc
                _register_cluster(red, _OBJECT_KIND[kind_file], doc)
        for rel, text in files.items():
            parts = rel.split("/")
            if len(parts) >= 2 and parts[0] == "nodes":
                red.add_name(parts[1], "node")
            split = split_netns_dir(rel)
            if split and split[1] is not None:
                red.add_name(split[1], "namespace")
                if split[1] not in INFRA_NAMESPACES:
                    red.add_name(split[2] or "", "pod")
            if rel.endswith("ip-addr.txt"):
                for m in _LINK_NETNS.finditer(text):
                    red.add_name(m.group(1), "netns")
        parsed: dict[str, Any] = {}
        for rel in files:
            if table_for(rel) is not None:
                try:
                    parsed[rel] = json.loads(files[rel])
                except ValueError as exc:
                    raise BundleError(f"{src_path}: {rel} is not valid JSON ({exc})",
                                      hint="redaction reads structured files field by field"
                                      ) from exc
        for rel, doc_in in parsed.items():  # dry pass: contexts, images -> literals
            Walker(red, table_for(rel), rel, dry=True).walk(doc_in)  # type: ignore[arg-type]
        if manifest is not None:
            Walker(red, MANIFEST_FIELDS, MANIFEST, dry=True).walk(dict(manifest))
        red.finish_names()
        out_files: list[tuple[str, bytes]] = []
        new_path: dict[str, str] = {}
        dropped: list[str] = []
        for rel in sorted(files):
            kind = file_kind(rel)
            if kind is None:
                dropped.append(rel)
                red.warnings.append(f"{rel} dropped: not a file type redaction knows")
                continue
            new_rel = red.text(rel)
            if rel in parsed:
                walked = Walker(red, table_for(rel), rel, dry=False).walk(parsed[rel])  # type: ignore[arg-type]
                indent = 4 if rel.startswith("cluster/") else 2
                body = json.dumps(walked, indent=indent, ensure_ascii=False) + "\n"
            else:
                body = red.dump(files[rel])
            new_path[rel] = new_rel
            out_files.append((new_rel, body.encode("utf-8", errors="surrogateescape")))
        stored = {p: d for p, d in out_files}
        digests = {p: (len(d), sha256_hex(d)) for p, d in stored.items()}
        doc = _redacted_manifest(red, manifest, digests, new_path, src_path, dropped)
    finally:
        src.close()
    if len(stored) != len(new_path):
        raise BundleError(f"{src_path}: two files map to one path after redaction",
                          hint="report this: the name map is not injective")
    for path in sorted(red.unclassified):
        red.warnings.append(f"{path}: field not classified; its values were made opaque")
    write_prepared(out_path, out_files, doc)
    counts = {"names": len(red.names), "ips": len(red.ips), "macs": len(red.macs),
              "uuids": len(red.uuids), "opaque": len(red.opaque), "files": len(out_files),
              "dropped": len(dropped)}
    _write_map(map_path, red, parent=doc["redaction"]["parent"], bundle_id=doc["bundle_id"],
               out_path=out_path)
    return RedactResult(out_path, map_path, doc["bundle_id"], doc["redaction"]["parent"],
                        counts, tuple(dict.fromkeys(red.warnings)))


def _redacted_manifest(red: Redactor, manifest: Mapping[str, Any] | None,
                       stored: Mapping[str, tuple[int, str]], new_path: dict[str, str],
                       src_path: str, dropped: list[str]) -> dict[str, Any]:
    """The new manifest: fields redacted by MANIFEST_FIELDS; `stored` gives each written
    file's (size, sha256), taken as it was written (the bytes are not kept)."""
    src = dict(manifest or {})
    walked = Walker(red, MANIFEST_FIELDS, MANIFEST, dry=False).walk(src)
    listed: set[str] = set()
    entries: list[dict[str, Any]] = []
    raw_entries = src.get("entries")
    if not isinstance(raw_entries, list):
        raw_entries = []
    for entry, new in zip(raw_entries, walked.get("entries") or [], strict=False):
        if not isinstance(entry, dict) or not isinstance(new, dict):
            continue
        new = {k: v for k, v in new.items() if k not in ("sha256", "size", "path")}
        path = entry.get("path")
        if path and path in new_path:
            listed.add(path)
            rel = new_path[path]
            new = {"path": rel, **new, "size": stored[rel][0], "sha256": stored[rel][1]}
        else:
            if path in dropped:
                new["note"] = "dropped by redaction: not a file type redaction knows"
            new = {"path": None, **new, "size": None, "sha256": None}
        entries.append(new)
    for path, rel in sorted(new_path.items()):
        if path not in listed:  # a hand-assembled bundle: every file becomes an entry
            entries.append({"path": rel, "spec": rel.rsplit("/", 1)[-1], "target": "file",
                            "transport": "file", "status": "ok", "size": stored[rel][0],
                            "sha256": stored[rel][1]})
    m = Manifest(
        created_at=str(src.get("created_at") or rfc3339(datetime.now(UTC))),
        collection=walked.get("collection") or {"mode": "unknown"},
        targets=walked.get("targets") or [],
        entries=entries,
        partial=bool(src.get("partial")),
        components=walked.get("components") or {},
    )
    doc = m.document()
    for key, value in walked.items():
        if key not in doc and key != "redaction":
            doc[key] = value  # fields this version does not know: made opaque by the walk
    parent = src.get("bundle_id")
    if not isinstance(parent, str) or not parent.startswith("sha256:"):
        parent = "unmanifested:" + red.opaque_value(
            "bundle", os.path.basename(os.path.normpath(src_path)))
    out: dict[str, Any] = {}
    for k, v in doc.items():
        out[k] = v
        if k == "partial":
            out["redaction"] = {"applied": True, "parent": parent, "rules": RULES}
    out.setdefault("redaction", {"applied": True, "parent": parent, "rules": RULES})
    return out
