"""`manifest.json`: what a bundle holds and how each file came to be.

The manifest is written by `collect` and read (optionally) by everything else. Schema
(`"schema": "ambientctl.bundle/v1"`, checked by the reader):

    {
      "schema": "ambientctl.bundle/v1",
      "format_version": 1,
      "bundle_id": "sha256:<hash of the canonical entries list>",
      "created_at": "2022-10-12T07:34:33Z",
      "tool": {"name": "ambientctl", "version": "0.1.0"},
      "collection": {"mode": "local", "argv": [...], "timeout_s": 30, "concurrency": 8},
      "partial": false,
      "targets": [{"id": "node/w1", "kind": "node", "node": "w1", "netns": {...},
                   "dir": "nodes/w1/host", "tool_versions": {"iptables": "iptables v1.8.9 ..."}}],
      "entries": [{"path": "nodes/w1/host/iptables-save.txt" | null, "spec": "iptables-save.txt",
                   "target": "node/w1", "argv": [...], "wrapper": [...], "transport": "local",
                   "status": "ok", "exit_code": 0, "stderr": "", "stderr_truncated": false,
                   "note": null, "optional_absent": false,
                   "started_at": "...", "duration_ms": 12,
                   "size": 3112 | null, "sha256": "..." | null}]
    }

Every planned command has an entry, failed / timed-out / skipped ones included; `path`,
`size` and `sha256` are null when nothing was stored. Cluster files copied from a
directory are entries too (`target: "cluster"`, `transport: "file"`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import IO, Any

from ambientctl import __version__
from ambientctl.bundle.layout import FORMAT_VERSION, MANIFEST_SCHEMA
from ambientctl.istio import image_component
from ambientctl.raw import RawOutput, RawStatus

STDERR_LIMIT = 4096  # bytes of stderr kept per entry: enough for any error message


def sha256_hex(data: bytes) -> str:
    """The hex sha256 of `data` (the manifest's hash of stored bytes)."""
    return hashlib.sha256(data).hexdigest()


def _stderr_text(stderr: bytes) -> tuple[str, bool]:
    if len(stderr) <= STDERR_LIMIT:
        return stderr.decode("utf-8", errors="replace"), False
    return stderr[:STDERR_LIMIT].decode("utf-8", errors="replace"), True


def spec_id_of(path: str | None, argv: Sequence[str]) -> str:
    """A short id for an entry: its file name ("ip-addr.json"), else argv[0]."""
    if path:
        return path.rsplit("/", 1)[-1]
    return argv[0] if argv else "?"


def entry_for(output: RawOutput, *, stored: bool, spec: str | None = None) -> dict[str, Any]:
    """The manifest entry of one planned command (`stored`: did its stdout become a file)."""
    stderr, truncated = _stderr_text(output.stderr)
    return {
        "path": output.path if stored else None,
        "spec": spec or spec_id_of(output.path, output.argv),
        "target": output.target,
        "argv": list(output.argv),
        "wrapper": list(output.wrapper),
        "transport": output.transport,
        "status": str(output.status),
        "exit_code": output.exit_code,
        "stderr": stderr,
        "stderr_truncated": truncated,
        "note": output.note,
        "optional_absent": output.optional_absent,
        "started_at": output.started_at,
        "duration_ms": output.duration_ms,
        "size": (output.spilled[0] if output.spilled else len(output.stdout)) if stored else None,
        "sha256": (output.spilled[1] if output.spilled else sha256_hex(output.stdout))
        if stored else None,
    }


def file_entry(path: str, data: bytes, *, source: str, started_at: str) -> dict[str, Any]:
    """The entry of a file copied into the bundle (cluster/*.json from `--cluster-dir`)."""
    return {
        "path": path,
        "spec": spec_id_of(path, ()),
        "target": "cluster",
        "argv": [],
        "wrapper": [],
        "transport": "file",
        "source": source,
        "status": str(RawStatus.OK),
        "exit_code": None,
        "stderr": "",
        "stderr_truncated": False,
        "note": None,
        "started_at": started_at,
        "duration_ms": 0,
        "size": len(data),
        "sha256": sha256_hex(data),
    }


def canonical(doc: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, no whitespace) for hashing."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def bundle_id(entries: Iterable[Mapping[str, Any]]) -> str:
    """`sha256:` of the canonical entries list: names the exact input of an analysis."""
    return "sha256:" + sha256_hex(canonical(list(entries)))




def component_versions(pods_json: bytes) -> dict[str, list[str]]:
    """Istio and ztunnel versions from the pods' images (`cluster/pods.json`).

    `{"ztunnel": ["1.24.0"], "istiod": ["1.24.0"], ...}`: the tags of every distinct
    image of each component, so a mixed-version cluster (mid-upgrade) shows both.
    """
    try:
        doc = json.loads(pods_json)
    except (ValueError, RecursionError):
        return {}
    items = doc.get("items", []) if isinstance(doc, dict) else doc
    found: dict[str, set[str]] = {}
    for pod in items if isinstance(items, list) else []:
        spec = pod.get("spec", {}) if isinstance(pod, dict) else {}
        for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
            image = str(c.get("image", "")) if isinstance(c, dict) else ""
            known = image_component(image)
            if known is not None:
                found.setdefault(known[0], set()).add(known[1])
    return {k: sorted(v) for k, v in sorted(found.items())}


@dataclass
class Manifest:
    """A manifest being assembled; `to_json()` gives the bytes written to the bundle."""

    created_at: str
    collection: dict[str, Any]
    targets: list[dict[str, Any]] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)
    partial: bool = False
    components: dict[str, list[str]] = field(default_factory=dict)

    def header(self, bundle_id: str) -> dict[str, Any]:
        """Every key of the document but `entries` (which comes last), in document order:
        what a streamed manifest (`EntrySpool.write_manifest`) writes before its entries."""
        return {
            "schema": MANIFEST_SCHEMA,
            "format_version": FORMAT_VERSION,
            "bundle_id": bundle_id,
            "created_at": self.created_at,
            "tool": {"name": "ambientctl", "version": __version__},
            "collection": self.collection,
            "partial": self.partial,
            "components": self.components,
            "targets": self.targets,
        }

    def document(self) -> dict[str, Any]:
        """The manifest as a JSON-ready mapping, keys in a stable, readable order."""
        return {**self.header(bundle_id(self.entries)), "entries": self.entries}

    def to_json(self) -> bytes:
        """Pretty JSON (2-space indent, trailing newline): humans read manifests too."""
        return (json.dumps(self.document(), indent=2, ensure_ascii=False) + "\n").encode()


def _write_open_json(dest: IO[bytes], doc: Mapping[str, Any]) -> None:
    """Write `json.dumps(doc, indent=2, ensure_ascii=False)` without its closing `\n}`,
    encoded chunk by chunk as the encoder yields them. The header holds every target (at
    200 nodes x 50 pods 10,200 of them: json.dumps's pure-Python indenting encoder lists
    all its chunks before joining them, ~26 MiB for a 4 MiB text, then the text is
    encoded once more): here only a few chunks are held at a time."""
    chunks = json.JSONEncoder(indent=2, ensure_ascii=False).iterencode(dict(doc))
    held = ""  # the last two characters written so far are held back: they are "\n}"
    for chunk in chunks:
        held += chunk
        if len(held) > 2:
            dest.write(held[:-2].encode())
            held = held[-2:]
    if held != "\n}":
        raise ValueError(f"a JSON object's text ends with '\\n}}', not {held!r}")


class EntrySpool:
    """Manifest entries written to an unnamed temporary file as they are made, so that a
    collection never holds them all (500 nodes x 50 pods: about a million entries, ~1 KB
    each; with the document and its JSON text built in memory the write peaked at
    3.7 GiB).

    Each entry is serialised once, already in the form and indentation it takes inside
    the pretty manifest, and folded into the `bundle_id` hash (the canonical entries list
    hashed incrementally: `[` + entries joined by `,` + `]` is exactly `canonical(list)`).
    `write_manifest` then streams `Manifest.to_json()`'s bytes: the header, then the
    spooled entries copied in chunks. Entries stay in the order they were appended.
    """

    _INDENT = b"    "  # an entry's lines inside `"entries": [...]` at indent=2, depth 2

    def __init__(self) -> None:
        # unnamed (O_TMPFILE where the file system has it): nothing to clean up, ever
        self._fh: IO[bytes] = tempfile.TemporaryFile(prefix="ambientctl-manifest-")
        self._hash = hashlib.sha256(b"[")
        self.count = 0

    def append(self, entry: Mapping[str, Any]) -> None:
        """Serialise `entry` to the spool and into the bundle id."""
        self._hash.update((b"," if self.count else b"") + canonical(entry))
        pretty = json.dumps(entry, indent=2, ensure_ascii=False).encode()
        # JSON text has no raw newline inside a string: every "\n" is a line break
        self._fh.write((b",\n" if self.count else b"") + self._INDENT
                       + pretty.replace(b"\n", b"\n" + self._INDENT))
        self.count += 1

    def bundle_id(self) -> str:
        """`bundle_id(entries)` of the entries appended so far."""
        h = self._hash.copy()
        h.update(b"]")
        return "sha256:" + h.hexdigest()

    def write_manifest(self, dest: IO[bytes], manifest: Manifest) -> None:
        """Write `manifest` with the spooled entries (its own `entries` ignored) to `dest`:
        the bytes `Manifest.to_json()` gives for the same entries, never all in memory."""
        self.write_document(dest, manifest.header(self.bundle_id()))

    def write_document(self, dest: IO[bytes], head: Mapping[str, Any],
                       tail: Mapping[str, Any] | None = None) -> None:
        """Write the document `{**head, "entries": <spooled>, **tail}` to `dest`: the bytes
        `json.dump(doc, indent=2, ensure_ascii=False)` plus a newline give, the entries
        copied from the spool in chunks (`head` and `tail` are small: no entries in them)."""
        # '{\n  "k": v\n}' loses its closing '\n}' (head) or both braces (tail)
        if head:
            _write_open_json(dest, head)
            dest.write(b",\n")
        else:
            dest.write(b"{\n")
        after = ""
        if tail:
            after = "," + json.dumps(dict(tail), indent=2, ensure_ascii=False)[1:-2]
        if not self.count:
            dest.write(('  "entries": []' + after + "\n}\n").encode())
            return
        dest.write(b'  "entries": [\n')
        self._fh.flush()
        self._fh.seek(0)
        shutil.copyfileobj(self._fh, dest, 1 << 20)
        self._fh.seek(0, 2)  # appending may go on (a partial manifest after a write error)
        dest.write(("\n  ]" + after + "\n}\n").encode())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> EntrySpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- netns identity


def _role(target: Mapping[str, Any]) -> str:
    """What a target claims to be: a node's root netns, or one pod's (a ztunnel target is
    its pod's netns once more, for the admin read: the same role)."""
    if target.get("kind") == "node":
        return f"node/{target.get('node')}"
    pod = target.get("pod") or {}
    return f"pod/{pod.get('namespace')}/{pod.get('name')}"


def refuse_shared_netns(
    targets: Sequence[Mapping[str, Any]], outputs: Iterable[RawOutput]
) -> tuple[Iterable[RawOutput], list[dict[str, Any]]]:
    """Outputs (an iterable read once) with every target that shares its netns (same `netns_inode`) with a target
    of ANOTHER role turned into `skipped` entries, and one conflict record per netns.

    Why: a netns read under two roles means one of them is wrong (e.g. an istio-cni agent
    pod's own netns taken for the node's); storing both would make the analysis trust
    files that are not what their path says. Neither is stored: the data cannot tell
    which claim is right.
    """
    roles: dict[int, dict[str, list[str]]] = {}
    for t in targets:
        inode = t.get("netns_inode")
        if isinstance(inode, int):
            roles.setdefault(inode, {}).setdefault(_role(t), []).append(str(t.get("id")))
    conflicts: list[dict[str, Any]] = []
    refused: dict[str, str] = {}
    for inode, by_role in sorted(roles.items()):
        if len(by_role) < 2:
            continue
        ids = sorted(i for group in by_role.values() for i in group)
        conflicts.append({"netns_inode": inode, "targets": ids})
        for i in ids:
            others = ", ".join(o for o in ids if o != i)
            refused[i] = (
                f"not stored: read from netns inode {inode}, the same netns as {others} "
                "(one netns cannot be two targets)"
            )
    if not refused:
        return outputs, []
    # lazily: `outputs` may be a spooled run's (`runner.OutputSpool`), read back once
    out = (
        replace(o, status=RawStatus.SKIPPED, stdout=b"", note=refused[o.target])
        if o.target in refused and o.status is RawStatus.OK
        else o
        for o in outputs
    )
    return out, conflicts
