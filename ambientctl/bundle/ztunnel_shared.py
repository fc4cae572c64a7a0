"""ztunnel config_dumps stored split: the cluster-wide sections once, each node's own beside it.

Why: every ztunnel's `config_dump` carries the whole mesh's `workloads`, `services` and
`policies` (the xDS state, the same on every node up to propagation skew), next to its own
`workloadState` and `certificates`. At 500 nodes x 25k pods that is ~12 MB of identical
sections per node, ~6 GB per bundle (docs/bundle-format.md). Format 2 stores:

- `cluster/ztunnel-shared/sha256-<hex>.json`: `{"workloads": ..., "services": ...,
  "policies": ...}` (those of the sections the dump holds, in its order), the values'
  bytes exactly as ztunnel printed them; named after the sha256 of the file. Two
  ztunnels share one file only when those bytes are identical: a node caught
  mid-propagation (or a ztunnel of another version) keeps its own file, never a merge.
- `nodes/<node>/ztunnel/config_dump.json` (the stub): the dump as printed, with one
  member added first, `"ambientctl.split": {"shared": <path>, "size": N, "sha256": H,
  "spans": [[section, start, end], ...]}` (the original's size and sha256, and where each
  section's value lies in the shared file), and each shared value replaced by
  `{"ambientctl.shared": "<section>"}`.

Reassembly gives the original bytes back, checked against `size` and `sha256`; the
shared file is checked against its name. Any difference (a missing, damaged or swapped
shared file, an edited stub) is a `BundleError` naming the file, never a partial dump.
Splitting is structural, no JSON tree is built: ztunnel's own 2-space layout is cut at its
top-level lines (C-speed searches: ~0.05 s CPU for a 13 MB dump of 25k workloads), any
other layout by a scanner over strings and brackets (~10x slower); reassembly splices at
the recorded spans (~0.02 s). A dump that is not one JSON object with
those members (ztunnel's older layouts, damage) is stored whole, as in format 1.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ambientctl.errors import BundleError
from ambientctl.layout import ztunnel_shared_digest, ztunnel_shared_path

# The sections every ztunnel of one cluster holds alike (workloadState, certificates: per node).
SHARED_SECTIONS = (b'"workloads"', b'"services"', b'"policies"')
_SECTION_NAMES = frozenset(k.decode()[1:-1] for k in SHARED_SECTIONS)
SPLIT_KEY = "ambientctl.split"
_STUB = re.compile(rb'\s*\{"ambientctl\.split": ')
STUB_HEAD_BYTES = 4096  # enough of a stored dump to tell a stub (`is_split`)
# A JSON string (escapes included) or one structural character; numbers, literals and
# whitespace lie between tokens. Multi-byte UTF-8 never holds these ASCII bytes.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[][{},:]')
_WS = b" \t\r\n"


def _placeholder(key: bytes) -> bytes:
    """What replaces a shared section's value in the stub (`key` is the quoted name)."""
    return b'{"ambientctl.shared": ' + key + b"}"


def _members(data: bytes) -> tuple[int, list[tuple[bytes, int, int]]] | None:
    """The top-level object's opening brace and its members as (quoted key, value start,
    value end); None when `data` is not one JSON object (as far as structure tells)."""
    depth, opened = 0, -1
    key: bytes | None = None
    start = -1
    members: list[tuple[bytes, int, int]] = []
    end = -1
    for m in _TOKEN.finditer(data):
        tok = m.group()
        c = tok[0]
        if depth == 0:
            if c != 0x7B or opened >= 0 or data[:m.start()].strip(_WS):  # "{"
                return None
            depth, opened = 1, m.start()
            continue
        if depth == 1:
            if c == 0x22 and key is None and start < 0:  # a key
                key = tok
                continue
            if c == 0x3A:  # ":"
                if key is None or start >= 0:
                    return None
                start = m.end()
                continue
            if c in (0x2C, 0x7D):  # "," or "}"
                if key is not None:
                    if start < 0:
                        return None
                    vs, ve = start, m.start()
                    while vs < ve and data[vs] in _WS:
                        vs += 1
                    while ve > vs and data[ve - 1] in _WS:
                        ve -= 1
                    if vs == ve:
                        return None
                    members.append((key, vs, ve))
                key, start = None, -1
                if c == 0x7D:
                    depth, end = 0, m.end()
                    break
                continue
        if c in (0x7B, 0x5B):
            depth += 1
        elif c in (0x7D, 0x5D):
            depth -= 1
            if depth < 1:
                return None
    if end < 0 or data[end:].strip(_WS):
        return None
    return opened, members


# ztunnel pretty-prints its dump (2-space indent): a top-level member is a line that starts
# with exactly two spaces and a quote (a JSON string holds no raw newline, deeper members
# are indented further), so the members are found without reading the values.
_PRETTY_KEY = re.compile(rb'\n  ("[^"\\\n]*(?:\\.[^"\\\n]*)*"): ')
_PRETTY_END = re.compile(rb'\n\}\s*\Z')


def _pretty_members(data: bytes) -> tuple[int, list[tuple[bytes, int, int]]] | None:
    """`_members` for a 2-space pretty-printed object, in C-speed searches; None when the
    text is not laid out that way (then `_members` scans it). A layout that only looks
    like it (another indent) is caught by `split_dump`'s checks of the stub."""
    opened = len(data) - len(data.lstrip(_WS))
    if data[opened:opened + 1] != b"{":
        return None
    keys = list(_PRETTY_KEY.finditer(data))
    end = _PRETTY_END.search(data)
    if not keys or end is None or keys[0].start() != opened + 1:
        return None
    members = []
    for n, m in enumerate(keys):
        stop = keys[n + 1].start() if n + 1 < len(keys) else end.start()
        ve = stop
        if n + 1 < len(keys):
            if data[stop - 1:stop] != b",":
                return None
            ve = stop - 1
        while ve > m.end() and data[ve - 1] in _WS:
            ve -= 1
        if ve <= m.end():
            return None
        members.append((m.group(1), m.end(), ve))
    return opened, members


def _checked_pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [k for k, _v in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("a member printed twice")
    return dict(pairs)


@dataclass(frozen=True, slots=True)
class SplitDump:
    """One dump split: the stub stored at the node's path, the shared file and its path."""

    stub: bytes
    shared: bytes
    shared_path: str


def split_dump(dump: bytes) -> SplitDump | None:
    """Split one config_dump (see the module docstring); None when it is stored whole:
    not one JSON object, no shared section, or a section printed twice. ztunnel's own
    layout is split without reading the values (`_pretty_members`); any other is scanned."""
    for finder in (_pretty_members, _members):
        found = finder(dump)
        split = _split_at(dump, found) if found is not None else None
        if split is not None:
            return split
    return None


def _split_at(dump: bytes, found: tuple[int, list[tuple[bytes, int, int]]]) -> SplitDump | None:
    """The split at the members `found`, if it checks out (see below)."""
    opened, members = found
    shared = [(k, s, e) for k, s, e in members if k in SHARED_SECTIONS]
    if not shared:
        return None
    view = memoryview(dump)
    parts: list[bytes | memoryview] = [b"{"]
    spans: list[tuple[str, int, int]] = []
    at = 1
    for n, (key, s, e) in enumerate(shared):
        lead = (b", " if n else b"") + key + b": "
        parts += [lead, view[s:e]]
        at += len(lead)
        spans.append((key.decode()[1:-1], at, at + e - s))
        at += e - s
    parts.append(b"}\n")
    shared_bytes = b"".join(parts)
    path = ztunnel_shared_path(hashlib.sha256(shared_bytes).hexdigest())
    head = json.dumps({"shared": path, "size": len(dump),
                       "sha256": hashlib.sha256(dump).hexdigest(), "spans": spans}).encode()
    out: list[bytes | memoryview] = [view[:opened + 1], b'"ambientctl.split": ', head, b","]
    pos = opened + 1
    for key, s, e in shared:
        out += [view[pos:s], _placeholder(key)]
        pos = e
    out.append(view[pos:])
    stub = b"".join(out)
    # The stub must be one JSON object whose shared members are exactly the placeholders
    # (the cuts were whole top-level values, none printed twice), and must give the dump
    # back byte for byte; anything else is stored whole.
    try:
        doc = json.loads(stub, object_pairs_hook=_checked_pairs)
        if not isinstance(doc, dict) or next(iter(doc)) != SPLIT_KEY or any(
                doc.get(name) != {"ambientctl.shared": name} for name, _s, _e in spans):
            return None
        header, pos = _header(stub, "split")
        if not _is_recorded(_pieces(stub, shared_bytes, header, pos), header):  # not joined
            return None
    except (ValueError, BundleError):
        return None
    return SplitDump(stub, shared_bytes, path)


def is_split(stored: bytes) -> bool:
    """Is this stored config_dump a stub (format 2) rather than a whole dump?"""
    return _STUB.match(stored) is not None


def _header(stub: bytes, where: str) -> tuple[dict[str, Any], int]:
    """The stub's `ambientctl.split` header and where the dump's own members resume;
    `BundleError` when it is not one the writer writes."""
    m = _STUB.match(stub)
    assert m is not None, "called on stubs only"
    close = stub.find(b"}", m.end())
    head: Any = None
    if close > 0:
        try:
            head = json.loads(stub[m.end():close + 1])
        except ValueError:
            head = None
    ok = isinstance(head, dict) and set(head) == {"shared", "size", "sha256", "spans"} \
        and isinstance(head["shared"], str) and ztunnel_shared_digest(head["shared"]) \
        and isinstance(head["size"], int) and isinstance(head["sha256"], str) \
        and isinstance(head["spans"], list) and stub[close + 1:close + 2] == b","
    if ok:
        ok = all(isinstance(x, list) and len(x) == 3 and x[0] in _SECTION_NAMES
                 and all(isinstance(v, int) and not isinstance(v, bool) for v in x[1:])
                 and 0 <= x[1] <= x[2] for x in head["spans"])
    if not ok:
        raise BundleError(f"{where}: its {SPLIT_KEY!r} header is damaged; the config_dump "
                          "cannot be reassembled",
                          hint="the bundle was modified or damaged after collection")
    return head, close + 2


def referenced_shared(stub: bytes, where: str) -> str:
    """The shared file a stub references (`BundleError` when its header is damaged)."""
    return str(_header(stub, where)[0]["shared"])


def check_shared(shared: bytes, path: str, where: str) -> None:
    """A shared file must hash to the digest it is named after (`where`: the bundle)."""
    digest = ztunnel_shared_digest(path)
    if digest is None or hashlib.sha256(shared).hexdigest() != digest:
        raise BundleError(
            f"{where}: {path} does not match the sha256 it is named after; the ztunnel "
            "config_dumps that reference it cannot be reassembled",
            hint="the bundle was modified or damaged after collection; "
            "`ambientctl bundle verify` lists every mismatch")


def _pieces(stub: bytes, shared: bytes, head: dict[str, Any],
            pos: int) -> list[bytes | memoryview]:
    """The dump's bytes in order, as views of the stub and the shared file (not joined)."""
    view, sview = memoryview(stub), memoryview(shared)
    out: list[bytes | memoryview] = [view[:stub.index(b"{") + 1]]
    for name, s, e in head["spans"]:
        mark = _placeholder(b'"' + name.encode() + b'"')
        at = stub.find(mark, pos)
        if at < 0 or e > len(shared):
            break
        out += [view[pos:at], sview[s:e]]
        pos = at + len(mark)
    out.append(view[pos:])
    return out


def _is_recorded(pieces: list[bytes | memoryview], head: dict[str, Any]) -> bool:
    """Do the pieces add up to the size and sha256 the header records?"""
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(piece)
    return sum(len(p) for p in pieces) == head["size"] and digest.hexdigest() == head["sha256"]


def reassemble(stub: bytes, read_shared: Callable[[str], bytes], rel: str,
               where: str) -> tuple[bytes, str]:
    """The original config_dump from its stub (`rel`, in bundle `where`) and the shared
    file `read_shared(path)` returns (checked against its name here), and that path.

    The sections are spliced in at the spans the header records (no scan of the shared
    file); the result must have the recorded size and sha256. Raises `BundleError`
    naming what does not add up: never a dump with sections missing."""
    head, pos = _header(stub, f"{where}: {rel}")
    path = str(head["shared"])
    shared = read_shared(path)
    check_shared(shared, path, where)
    pieces = _pieces(stub, shared, head, pos)
    if not _is_recorded(pieces, head):
        raise BundleError(
            f"{where}: {rel} reassembled with {path} is not the config_dump that was "
            "collected (its recorded size or sha256 differs)",
            hint="the bundle was modified or damaged after collection; "
            "`ambientctl bundle verify` lists every mismatch")
    return b"".join(pieces), path


__all__ = ["SHARED_SECTIONS", "STUB_HEAD_BYTES", "SplitDump", "check_shared", "is_split",
           "reassemble", "referenced_shared", "split_dump"]
