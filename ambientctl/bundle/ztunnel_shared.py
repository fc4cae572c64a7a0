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
  member added first, `"ambientctl.split": {"shared": <path>, "size": N, "sha256": H}`
  (the original's size and sha256), and each shared value replaced by
  `{"ambientctl.shared": "<section>"}`.

Reassembly gives the original bytes back, checked against `size` and `sha256`; the
shared file is checked against its name. Any difference (a missing, damaged or swapped
shared file, an edited stub) is a `BundleError` naming the file, never a partial dump.
Splitting is structural (a scanner over strings and brackets, no JSON objects built), so
a 12 MB dump costs its bytes, not a decoded tree. A dump that is not one JSON object with
those members (ztunnel's older layouts, damage) is stored whole, as in format 1.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from ambientctl.errors import BundleError
from ambientctl.layout import ztunnel_shared_digest, ztunnel_shared_path

# The sections every ztunnel of one cluster holds alike (workloadState, certificates: per node).
SHARED_SECTIONS = (b'"workloads"', b'"services"', b'"policies"')
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


@dataclass(frozen=True, slots=True)
class SplitDump:
    """One dump split: the stub stored at the node's path, the shared file and its path."""

    stub: bytes
    shared: bytes
    shared_path: str


def split_dump(dump: bytes) -> SplitDump | None:
    """Split one config_dump (see the module docstring); None when it is stored whole:
    not one JSON object, no shared section, or a section printed twice."""
    found = _members(dump)
    if found is None:
        return None
    opened, members = found
    keys = [k for k, _s, _e in members]
    shared = [(k, s, e) for k, s, e in members if k in SHARED_SECTIONS]
    if not shared or any(keys.count(k) > 1 for k, _s, _e in shared) \
            or any(k == b'"' + SPLIT_KEY.encode() + b'"' for k in keys):
        return None
    view = memoryview(dump)
    parts: list[bytes | memoryview] = [b"{"]
    for n, (key, s, e) in enumerate(shared):
        parts += [b", " if n else b"", key, b": ", view[s:e]]
    parts.append(b"}\n")
    shared_bytes = b"".join(parts)
    digest = hashlib.sha256(shared_bytes).hexdigest()
    path = ztunnel_shared_path(digest)
    head = json.dumps({"shared": path, "size": len(dump),
                       "sha256": hashlib.sha256(dump).hexdigest()}).encode()
    out: list[bytes | memoryview] = [view[:opened + 1], b'"ambientctl.split": ', head, b","]
    pos = opened + 1
    for key, s, e in shared:
        out += [view[pos:s], _placeholder(key)]
        pos = e
    out.append(view[pos:])
    stub = b"".join(out)
    try:  # a placeholder's text printed inside a value would misplace a section: whole
        reassemble(stub, lambda _p: shared_bytes, "config_dump", "split")
    except BundleError:
        return None
    return SplitDump(stub, shared_bytes, path)


def is_split(stored: bytes) -> bool:
    """Is this stored config_dump a stub (format 2) rather than a whole dump?"""
    return _STUB.match(stored) is not None


def referenced_shared(stub: bytes, where: str) -> tuple[str, int, str]:
    """(shared path, original size, original sha256) a stub records; `BundleError` when
    its header is not the one the writer writes."""
    m = _STUB.match(stub)
    assert m is not None, "referenced_shared is called on stubs only"
    close = stub.find(b"}", m.end())
    head: object = None
    if close > 0:
        try:
            head = json.loads(stub[m.end():close + 1])
        except ValueError:
            head = None
    if not isinstance(head, dict) or set(head) != {"shared", "size", "sha256"} \
            or not isinstance(head["shared"], str) \
            or ztunnel_shared_digest(head["shared"]) is None \
            or not isinstance(head["size"], int) or not isinstance(head["sha256"], str) \
            or stub[close + 1:close + 2] != b",":
        raise BundleError(f"{where}: its {SPLIT_KEY!r} header is damaged; the config_dump "
                          "cannot be reassembled",
                          hint="the bundle was modified or damaged after collection")
    return head["shared"], head["size"], head["sha256"]


def check_shared(shared: bytes, path: str, where: str) -> None:
    """A shared file must hash to the digest it is named after (`where`: the bundle)."""
    digest = ztunnel_shared_digest(path)
    if digest is None or hashlib.sha256(shared).hexdigest() != digest:
        raise BundleError(
            f"{where}: {path} does not match the sha256 it is named after; the ztunnel "
            "config_dumps that reference it cannot be reassembled",
            hint="the bundle was modified or damaged after collection; "
            "`ambientctl bundle verify` lists every mismatch")


def reassemble(stub: bytes, read_shared: Callable[[str], bytes], rel: str,
               where: str) -> tuple[bytes, str]:
    """The original config_dump from its stub (`rel`, in bundle `where`) and the shared
    file `read_shared(path)` returns (checked against its name here), and that path. Raises
    `BundleError` naming what does not add up: never a dump with sections missing."""
    path, size, sha = referenced_shared(stub, f"{where}: {rel}")
    shared = read_shared(path)
    check_shared(shared, path, where)
    found = _members(shared)
    if found is None:
        raise BundleError(f"{where}: {path} is not the shared sections of a config_dump")
    _opened, members = found
    m = _STUB.match(stub)
    assert m is not None
    close = stub.find(b"}", m.end())
    opened = stub.index(b"{", m.start())
    view = memoryview(stub)
    sview = memoryview(shared)
    out: list[bytes | memoryview] = [view[:opened + 1]]
    pos = close + 2
    for key, s, e in members:
        at = stub.find(_placeholder(key), pos)
        if at < 0:
            break
        out += [view[pos:at], sview[s:e]]
        pos = at + len(_placeholder(key))
    out.append(view[pos:])
    dump = b"".join(out)
    if len(dump) != size or hashlib.sha256(dump).hexdigest() != sha:
        raise BundleError(
            f"{where}: {rel} reassembled with {path} is not the config_dump that was "
            "collected (its recorded size or sha256 differs)",
            hint="the bundle was modified or damaged after collection; "
            "`ambientctl bundle verify` lists every mismatch")
    return dump, path


__all__ = ["SHARED_SECTIONS", "STUB_HEAD_BYTES", "SplitDump", "check_shared", "is_split",
           "reassemble", "referenced_shared", "split_dump"]
