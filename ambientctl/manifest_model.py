"""`manifest.json` as typed, frozen data: read once by the bundle reader, used by all.

Why a module of its own (beside `raw.py`, outside `bundle/`): the reader builds it, and the
analyzers and renderers consume it (provenance line, AMB101/AMB102, the failed files of a
namespace, ztunnel's version); neither side should walk the JSON as raw dicts, and the
analyzers must not import `bundle/`. The writer (`bundle/manifest.py`) still assembles the
JSON document; this module is its reading side and `docs/bundle-format.md` its contract.

A manifest is data from a file a user may have edited or damaged: a value of the wrong type
never crashes a reader. The damaged field is ignored and named by its JSON path in
`Manifest.problems` (`$.entries[3].exit_code is str, expected an integer: ignored`), which
the snapshot reports like any other data problem of the bundle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ambientctl.raw import OPTIONAL_ABSENT  # read only as the fallback for older bundles

# Statuses of an entry whose command produced no file for a reason worth reporting
# (`skipped` included: a refused netns, an absent ztunnel admin API); `ok` is the only other.
NOT_COLLECTED_STATUSES = frozenset(
    {"nonzero-exit", "not-found", "timeout", "transport-error", "skipped", "truncated"})


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One planned command (or copied cluster file) and what became of it."""

    spec: str  # the catalogue id: the file name it writes ("ip-addr.json"), else argv[0]
    target: str  # target id ("node/w1", "pod/ns/name", "ztunnel/ns/name", "cluster")
    status: str  # ok | nonzero-exit | not-found | timeout | transport-error | skipped | truncated
    path: str | None = None  # where its stdout is stored; None when nothing was stored
    planned_path: str | None = None  # hand-made/older bundles: the destination, if named
    argv: tuple[str, ...] = ()
    transport: str | None = None
    exit_code: int | None = None
    stderr: str = ""
    note: str | None = None
    size: int | None = None
    sha256: str | None = None
    optional_absent: bool = False
    """The target lacks an optional tool (no `ipvsadm` without IPVS): absent data, not a
    failure. Set by the runner; older bundles: derived from the note's prefix."""

    @property
    def not_collected(self) -> bool:
        """Did the command fail to produce its file for a reason worth reporting?"""
        return self.status in NOT_COLLECTED_STATUSES and not self.optional_absent

    @property
    def why(self) -> str:
        """The reason in one line: the runner's note, else stderr's last line, else ''."""
        if self.note:
            return self.note
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else ""

    def reason(self) -> str:
        """Why there is no file, in the one wording every reader uses (the snapshot's data
        problems, doctor's skipped checks, AMB102): `nonzero-exit on the node (exit 1):
        <why>`; shown after `not collected: `."""
        return (f"{self.status} on the node"
                + (f" (exit {self.exit_code})" if self.exit_code is not None else "")
                + (f": {self.why}" if self.why else ""))


@dataclass(frozen=True, slots=True)
class ManifestTarget:
    """One collection target: a node's root netns or one pod's, and its bundle directory."""

    id: str
    kind: str | None = None  # node | pod | ztunnel
    node: str | None = None
    dir: str | None = None
    netns_inode: int | None = None
    tool_versions: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Manifest:
    """A bundle's `manifest.json`, typed; `problems` names every value that was ignored."""

    created_at: str | None = None
    bundle_id: str | None = None
    partial: bool = False
    collection: Mapping[str, Any] = field(default_factory=dict)  # free-form record
    components: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    targets: tuple[ManifestTarget, ...] = ()
    entries: tuple[ManifestEntry, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def mode(self) -> str | None:
        """How it was collected (`local`, `kube`, `kind`, `ssh`, ...), when recorded."""
        mode = self.collection.get("mode")
        return mode if isinstance(mode, str) else None

    def destination(self, entry: ManifestEntry) -> str | None:
        """Where `entry`'s file is (or would have been) in the bundle: its path, else its
        target's directory plus its spec's file name (failed entries carry `path: null`)."""
        if entry.path or entry.planned_path:
            return entry.path or entry.planned_path
        d = self._dirs().get(entry.target)
        return f"{d}/{entry.spec}" if d and entry.spec else None

    def _dirs(self) -> dict[str, str]:
        return {t.id: t.dir for t in self.targets if t.dir}

    def not_collected_entries(self) -> tuple[ManifestEntry, ...]:
        """Every entry whose command produced no file for a reason worth reporting
        (`ManifestEntry.not_collected`), in manifest order, repeats included."""
        return tuple(e for e in self.entries if e.not_collected)

    def not_collected(self) -> dict[str, ManifestEntry]:
        """Bundle path -> entry of every planned command that produced no file for a reason
        worth reporting (`ManifestEntry.not_collected`; its `reason()` says why)."""
        out: dict[str, ManifestEntry] = {}
        for e in self.entries:
            dest = self.destination(e) if e.not_collected else None
            if dest:
                out[dest] = e
        return out


# --------------------------------------------------------------------------- reading

_JSON_TYPE = {str: "a string", int: "an integer", bool: "a boolean", list: "an array",
              dict: "an object"}


class _Reader:
    """Pulls typed values out of JSON objects, recording each mismatch by JSON path."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def get(self, obj: Mapping[str, Any], key: str, want: type, where: str,
            default: Any = None) -> Any:
        value = obj.get(key)
        if value is None:
            return default
        # bool is an int to Python, not to JSON: `"exit_code": true` is a damaged value.
        ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
        if not ok:
            self.problems.append(f"{where}.{key} is {type(value).__name__}, expected "
                                 f"{_JSON_TYPE[want]}: ignored")
            return default
        return value


# What `_entry` reads of an entry, and the type each value must have (null aside).
_ENTRY_TYPES: tuple[tuple[str, type], ...] = (
    ("argv", list), ("note", str), ("optional_absent", bool), ("spec", str),
    ("target", str), ("status", str), ("path", str), ("planned_path", str),
    ("transport", str), ("exit_code", int), ("stderr", str), ("size", int),
    ("sha256", str))
_NONE = type(None)


def _entry_clean(e: Mapping[str, Any]) -> bool:
    """Would `_entry` type `e` without a problem? True when every value it reads is null or
    exactly of its type (JSON decodes to exact types; `type(v) is int` leaves a bool out,
    as `_Reader.get` does). False only sends the entry through `_entry` itself, which words
    the problems: a quick test, never a second set of rules (tests/test_manifest_sweep.py
    pins it against `_entry` key by key)."""
    get = e.get
    for key, want in _ENTRY_TYPES:
        t = type(get(key))
        if t is not want and t is not _NONE:
            return False
    return True


def _entry(r: _Reader, e: Mapping[str, Any], where: str) -> ManifestEntry:
    argv = r.get(e, "argv", list, where, [])
    note = r.get(e, "note", str, where)
    flag = e.get("optional_absent")
    if flag is None:  # bundles before the field: the note's prefix said it
        absent = e.get("status") == "skipped" and bool(note and note.startswith(OPTIONAL_ABSENT))
    else:
        absent = bool(r.get(e, "optional_absent", bool, where, False))
    return ManifestEntry(
        spec=r.get(e, "spec", str, where, ""),
        target=r.get(e, "target", str, where, ""),
        status=r.get(e, "status", str, where, ""),
        path=r.get(e, "path", str, where) or None,
        planned_path=r.get(e, "planned_path", str, where) or None,
        argv=tuple(str(a) for a in argv),
        transport=r.get(e, "transport", str, where),
        exit_code=r.get(e, "exit_code", int, where),
        stderr=r.get(e, "stderr", str, where, ""),
        note=note,
        size=r.get(e, "size", int, where),
        sha256=r.get(e, "sha256", str, where) or None,
        optional_absent=absent,
    )


def _target(r: _Reader, t: Mapping[str, Any], where: str) -> ManifestTarget:
    versions = r.get(t, "tool_versions", dict, where, {})
    return ManifestTarget(
        id=r.get(t, "id", str, where, ""),
        kind=r.get(t, "kind", str, where),
        node=r.get(t, "node", str, where),
        dir=r.get(t, "dir", str, where),
        netns_inode=r.get(t, "netns_inode", int, where),
        tool_versions={str(k): str(v) for k, v in versions.items() if isinstance(v, str)},
    )


def _objects(r: _Reader, doc: Mapping[str, Any], key: str) -> list[tuple[str, Mapping[str, Any]]]:
    items = doc.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        r.problems.append(f"$.{key} is {type(items).__name__}, expected an array: ignored "
                          "(hashes not checked, failed commands not known)")
        return []
    out: list[tuple[str, Mapping[str, Any]]] = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            out.append((f"$.{key}[{i}]", item))
        else:
            r.problems.append(f"$.{key}[{i}] is {type(item).__name__}, expected an object: "
                              "ignored")
    return out


def read_manifest(doc: Mapping[str, Any]) -> Manifest:
    """The typed manifest of a decoded `manifest.json` object (schema already checked)."""
    r = _Reader()
    components: dict[str, tuple[str, ...]] = {}
    for name, tags in r.get(doc, "components", dict, "$", {}).items():
        if isinstance(tags, list) and all(isinstance(t, str) for t in tags):
            components[str(name)] = tuple(tags)
        else:
            r.problems.append(f"$.components.{name} is not an array of strings: ignored")
    targets = tuple(_target(r, t, w) for w, t in _objects(r, doc, "targets"))
    entries = tuple(_entry(r, e, w) for w, e in _objects(r, doc, "entries"))
    return Manifest(
        created_at=r.get(doc, "created_at", str, "$"),
        bundle_id=r.get(doc, "bundle_id", str, "$"),
        partial=bool(r.get(doc, "partial", bool, "$", False)),
        collection=r.get(doc, "collection", dict, "$", {}),
        components=components,
        targets=targets,
        entries=entries,
        problems=tuple(r.problems),
    )
