"""`manifest.json` read lazily: an offset index of its entries, each decoded when asked for.

Why (issue 12): a 200-node bundle's manifest holds ~80k entries (48 MB); decoding all of
them, then typing them, was most of a `trace` that reads a few dozen files. The index keeps
each entry's byte span, its `"path"` and whether its `"status"` is something other than
`"ok"`: found by C loops over the writer's own layout and proved (`_fast_index`), else by
an exact string-aware scan (`_exact_index`: the top-level `"entries"` array must be a
sequence of flat objects whose values are scalars, strings or arrays of scalars). The rest
of the document (targets, collection, components) is decoded at once with the array
spliced out. An entry is decoded and typed (`manifest_model._entry`, the one reading of an
entry) when its file is read or when a failed command is asked for; asking for `entries`
decodes them all, as the eager reader did.

Any other shape (nested objects in an entry, no `"entries"` array, a splice that does not
decode to the same header) returns None: the caller decodes the whole document, which
reports damage in its usual words. Bounded like the eager reader: the bytes are held once,
the index costs a few machine words per entry, and each entry is decoded through
`jsondoc.load_json` (nesting bounded).
"""

from __future__ import annotations

import bisect
import re
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from itertools import repeat
from operator import methodcaller
from typing import Any

from ambientctl.errors import ParseError
from ambientctl.jsondoc import load_json
from ambientctl.manifest_model import (
    Manifest,
    ManifestEntry,
    _entry,
    _entry_clean,
    _Reader,
    read_manifest,
)

_STR = rb'"(?:[^"\\]++|\\.)*+"'
# A flat object: its values are scalars, strings or arrays of those (what the writer
# stores). Strings are consumed whole, so a brace or bracket inside one is text; an object
# nested in an entry leaves text between two matches, which the gap check refuses.
_SCALARS = rb'[^{}\[\]"]++'
_OBJ_RE = re.compile(rb'\{(?:' + _SCALARS + rb'|' + _STR + rb'|\[(?:' + _SCALARS + rb'|' + _STR
                     + rb')*+\])*+\}')
# The fast index (`_fast_index`): a separator between two entries (and the next entry's
# path, where the writer puts it: its first key, a plain string), an entry's opening with
# its path, a backslash.
_PATH = rb'(?:"path": "([^"\\{}]*+)")?'
_PATH0_RE = re.compile(_PATH)  # after the first entry's `{` and blanks
# Every byte but a quote, a brace opening an object, a backslash: deleted by translate().
_NOT_QUOTING = bytes(b for b in range(256) if b not in b'"{\\')
_WINDOW = 4 << 20  # bytes translated at a time
_BRACE = re.compile(rb'\{')
_FLAT_RE = re.compile(rb'\{[^{}]*+\}')  # the chunked scan: proved span by span
_BACKSLASH = re.compile(rb'\\')
_START = methodcaller("start")
_KEY_BEFORE = re.compile(rb'[{,]\s*+\Z')  # what precedes a key (tested on a short window)
_OPEN = re.compile(rb'\s*+:\s*+\[')
_GAP = re.compile(rb'\s*+,\s*+')
_TAIL = re.compile(rb'\s*+\]\s*+\}\s*+')  # the entries array, then the document, end
# A key is a string right after `{` or `,` (checked by the caller); inside a string every
# quote is escaped, so `"path":` there is preceded by a backslash, never by `{` or `,`.
_VALUE_RE = re.compile(rb'\s*+:\s*+(' + _STR + rb'|[^,}\s]++)')
_BATCH = 1 << 20  # bytes of manifest read at a time by `iter_entries`
_TYPED_AT_ONCE = 1024  # entries `_sweep` decodes as one JSON array


class PathIndex:
    """Which entry names a path, in 16 bytes an entry (issue 12: a dict of 80k path strings
    was ~12 MB at 200 nodes): each path's `hash()` and entry index, sorted by hash.

    Exact: the entries sharing a path's hash (a collision, or the path named twice) are
    read again, last first, and the first whose `"path"` (read as `_field` reads it) is
    the path wins: the last entry naming it, what a dict filled in order keeps."""

    def __init__(self) -> None:
        self._hashes: array[int] = array("q")
        self._indices: array[int] = array("q")

    def add(self, path: str, i: int) -> None:
        """Entry `i` names `path` (added in entry order; `freeze` once all are in)."""
        self._hashes.append(hash(path))
        self._indices.append(i)

    def freeze(self) -> None:
        """Sort by hash (stable: entries of one hash stay in entry order)."""
        order = sorted(range(len(self._hashes)), key=self._hashes.__getitem__)
        self._hashes = array("q", (self._hashes[k] for k in order))
        self._indices = array("q", (self._indices[k] for k in order))

    def find(self, path: str, read: Callable[[int, int], bytes], starts: Sequence[int],
             ends: Sequence[int]) -> tuple[int | None, bytes | None]:
        """(index, bytes) of the last entry whose path is `path`; (None, None) if none."""
        h = hash(path)
        lo = bisect.bisect_left(self._hashes, h)
        hi = bisect.bisect_right(self._hashes, h, lo)
        for k in range(hi - 1, lo - 1, -1):
            i = self._indices[k]
            raw = read(starts[i], ends[i])
            if _field(raw, b'"path"', 0, len(raw)) == path:
                return i, raw
        return None, None


class LazyManifest(Manifest):
    """A `Manifest` whose entries are decoded on demand from an offset index.

    `entries` (every entry, as the eager reader typed them) and `problems` (every damaged
    value) decode the whole array on first access; `entry_for(path)` and `not_collected()`
    decode only what they return. `problems_so_far` names the damage of the header and of
    the entries decoded until now (what a trace that read a few files can state).
    """

    # Not slotted: the caches below live in the instance dict (the parent's fields are slots).
    # These properties shadow the parent's `entries` and `problems` slots (a class attribute
    # found first in the MRO wins); `index_manifest` never sets those two fields.
    @property
    def entries(self) -> tuple[ManifestEntry, ...]:
        return self._all()[0]

    @property
    def problems(self) -> tuple[str, ...]:
        d = self.__dict__
        if d["_complete"] is not None:
            return d["_complete"][1]
        return self._sweep()

    def _init_lazy(self, read: Callable[[int, int], bytes], size: int,
                   starts: Sequence[int], ends: Sequence[int],
                   paths: list[str | None] | PathIndex, failed: tuple[int, ...],
                   header_problems: tuple[str, ...]) -> None:
        d = self.__dict__
        d["_read"], d["_size"], d["_starts"], d["_ends"] = read, size, starts, ends
        # entry i's path (the whole-document index): the path -> index map is built on the
        # first lookup, once the caller has dropped the document's bytes (issue 12: ~7 MB
        # off the open's peak); the chunked index hands a `PathIndex`, held as it is
        if isinstance(paths, PathIndex):
            d["_path_list"], d["_paths"] = None, paths
        else:
            d["_path_list"], d["_paths"] = paths, None
        d["_failed"] = failed
        d["_header_problems"] = header_problems
        d["_decoded"] = {}  # index -> (entry or None, its problems)
        d["_complete"] = None
        # `_sweep`: (problems, per entry (path, sha256) or None, entries whose status is
        # not "ok" and were not typed)
        d["_swept"] = None

    def _decode(self, i: int, raw: bytes | None = None) -> ManifestEntry | None:
        """Entry `i`, typed and cached (from `raw`, its bytes, when the caller has them)."""
        d = self.__dict__
        got = d["_decoded"].get(i)
        if got is None:
            got = self._typed(i, raw if raw is not None else d["_read"](d["_starts"][i],
                                                                          d["_ends"][i]))
            d["_decoded"][i] = got
        return got[0]

    def _typed(self, i: int, raw: bytes) -> tuple[ManifestEntry | None, tuple[str, ...]]:
        """Entry `i` decoded from its bytes and typed, with its problems (nothing cached)."""
        d = self.__dict__
        where = f"$.entries[{i}]"
        r = _Reader()
        try:
            obj = load_json(raw.decode("utf-8", errors="replace"), "manifest.json",
                            what="manifest entry")
        except (ValueError, ParseError):
            # Invalid JSON inside the array (load_json raises ParseError, with a line
            # counted inside the entry): the whole document says so in the eager reader's
            # words and at its line in manifest.json, as if it had been decoded up front.
            load_json(d["_read"](0, d["_size"]).decode("utf-8", errors="replace"),
                      "manifest.json")
            obj = None
        if isinstance(obj, dict):
            return _entry(r, obj, where), tuple(r.problems)
        return None, (f"{where} is not a JSON object: ignored",)

    def _sweep(self) -> tuple[str, ...]:
        """Every problem of the manifest, without typing every entry (issue 12: doctor asks
        for the whole manifest's damage and typed all 80k entries of a 200-node bundle,
        then held them, ~1 KiB each). The entries not typed yet are decoded a batch at a
        time as one JSON array (`_TYPED_AT_ONCE`, one call into the C decoder), and each
        is typed by `_entry` only when `_entry_clean` cannot tell that typing would find
        nothing; those are cached as `_decode` caches them, so `problems_so_far` and
        `entry_for` see them. Kept per entry: the path and sha256 `_entry` would type, what
        `sha256_for` answers a file's hash from. Same problems, in the same order, as
        `_all`."""
        d = self.__dict__
        if d["_swept"] is not None:
            return d["_swept"][0]
        decoded = d["_decoded"]
        n = len(d["_starts"])
        kept: list[tuple[str | None, str | None] | None] = [None] * n
        not_ok: list[int] = []
        todo: list[tuple[int, bytes]] = []
        for i, raw in self._spans():
            if i not in decoded:
                todo.append((i, raw))
                if len(todo) < _TYPED_AT_ONCE:
                    continue
            self._sweep_batch(todo, kept, not_ok)
            todo.clear()
        self._sweep_batch(todo, kept, not_ok)
        problems = list(d["_header_problems"])
        for i in range(n):
            got = decoded.get(i)
            if got is not None:
                problems.extend(got[1])
                kept[i] = None if got[0] is None else (got[0].path, got[0].sha256)
        d["_swept"] = swept = (tuple(problems), kept, tuple(not_ok))
        return swept[0]

    def _sweep_batch(self, batch: list[tuple[int, bytes]],
                     kept: list[tuple[str | None, str | None] | None],
                     not_ok: list[int]) -> None:
        """`_sweep` over (index, bytes) pairs: the clean entries' path and sha256 into
        `kept` (and into `not_ok` those whose status is not "ok"), the others typed into
        `_decoded`. Each span is one `{...}` object, so the
        joined array holds exactly these values; if it does not decode, each entry is
        typed alone (`_typed`: a damaged one fails in its own words, with its own line)."""
        if not batch:
            return
        decoded = self.__dict__["_decoded"]
        try:
            joined = b"[" + b",".join(raw for _i, raw in batch) + b"]"
            objs = load_json(joined.decode("utf-8", errors="replace"), "manifest.json",
                             what="manifest entry")
        except (ParseError, ValueError):
            objs = None
        if not isinstance(objs, list) or len(objs) != len(batch):
            for i, raw in batch:
                decoded[i] = self._typed(i, raw)
            return
        for (i, _raw), obj in zip(batch, objs, strict=True):
            if isinstance(obj, dict) and _entry_clean(obj):
                # what `_entry` types them as (`or None`: an empty string is none)
                kept[i] = (obj.get("path") or None, obj.get("sha256") or None)
                if obj.get("status") != "ok":
                    not_ok.append(i)
            elif isinstance(obj, dict):
                r = _Reader()
                decoded[i] = (_entry(r, obj, f"$.entries[{i}]"), tuple(r.problems))
            else:
                decoded[i] = (None, (f"$.entries[{i}] is not a JSON object: ignored",))

    def not_collected_entries(self) -> tuple[ManifestEntry, ...]:
        """As `Manifest.not_collected_entries`, typing only the entries that may qualify:
        those `_sweep` found with a status other than "ok", and those it typed (issue 12:
        AMB102 typed all 80k entries of a 200-node bundle to find the failed commands; a
        healthy one has none)."""
        d = self.__dict__
        if d["_complete"] is not None:
            return super().not_collected_entries()
        self._sweep()
        maybe = sorted({*d["_swept"][2], *d["_decoded"]})
        return tuple(e for e in map(self._decode, maybe) if e is not None and e.not_collected)

    def sha256_for(self, path: str, *, keep: bool = True) -> str | None:
        """`entry_for(path, keep=keep).sha256` (None when no entry names the file): from
        what `_sweep` kept once it ran, without typing the entry again."""
        d = self.__dict__
        swept = d["_swept"]
        if swept is not None:
            i, _raw = self._index_of(path)
            if i is None:
                return None
            got = d["_decoded"].get(i)
            if got is not None:
                e = got[0]
                return e.sha256 if e is not None and e.path == path else None
            rec = swept[1][i]
            return rec[1] if rec is not None and rec[0] == path else None
        e = self.entry_for(path, keep=keep)
        return e.sha256 if e is not None else None

    def iter_entries(self) -> Iterator[ManifestEntry]:
        """The entries of `entries`, in order, each decoded and typed as it is reached and
        then dropped (issue 12: `bundle verify` of a 200-node bundle held all ~80k typed
        entries, ~3 KiB each, to look at each once). Nothing is cached: an entry already
        decoded is reused, the others are decoded again on the next pass. The bytes are
        read a batch of entries at a time (`_BATCH` bytes at most, or one entry), not one
        read per entry."""
        d = self.__dict__
        if d["_complete"] is not None:
            yield from d["_complete"][0]
            return
        decoded = d["_decoded"]
        for k, raw in self._spans():
            got = decoded.get(k)
            if got is None:
                got = self._typed(k, raw)
            if got[0] is not None:
                yield got[0]

    def iter_raw(self) -> Iterator[object]:
        """Every entry as stored: the JSON value each decodes to, in order, nothing typed
        or cached (issue 12: `bundle redact` rewrites the entries as documents, and held
        the whole decoded array of a 200-node bundle: ~250 MB for 80k entries)."""
        d = self.__dict__
        for _k, raw in self._spans():
            try:
                yield load_json(raw.decode("utf-8", errors="replace"), "manifest.json",
                                what="manifest entry")
            except ValueError:
                # as `_typed`: the whole document reports invalid JSON in its own words
                load_json(d["_read"](0, d["_size"]).decode("utf-8", errors="replace"),
                          "manifest.json")
                raise

    def _spans(self) -> Iterator[tuple[int, bytes]]:
        """(index, bytes) of every entry, read a batch of entries at a time (`_BATCH`
        bytes at most, or one entry), not one read per entry."""
        d = self.__dict__
        starts, ends = d["_starts"], d["_ends"]
        i, n = 0, len(starts)
        while i < n:
            j = i + 1  # entries [i, j) are read at once
            while j < n and ends[j] - starts[i] <= _BATCH:
                j += 1
            base = starts[i]
            chunk = d["_read"](base, ends[j - 1])
            for k in range(i, j):
                yield k, chunk[starts[k] - base:ends[k] - base]
            i = j

    def _all(self) -> tuple[tuple[ManifestEntry, ...], tuple[str, ...]]:
        """Every entry typed (and cached), with every problem. The entries not decoded yet
        are read a batch at a time (`_spans`), not one re-read of manifest.json each
        (issue 12: doctor at 200 nodes opened manifest.json 80k times here)."""
        d = self.__dict__
        if d["_complete"] is None:
            entries: list[ManifestEntry] = []
            problems = list(d["_header_problems"])
            decoded = d["_decoded"]
            for i, raw in self._spans():
                got = decoded.get(i)
                if got is None:
                    got = decoded[i] = self._typed(i, raw)
                if got[0] is not None:
                    entries.append(got[0])
                problems.extend(got[1])
            d["_complete"] = (tuple(entries), tuple(problems))
        return d["_complete"]

    @property
    def problems_so_far(self) -> tuple[str, ...]:
        """Damage of the header and of the entries decoded so far (index order)."""
        d = self.__dict__
        return d["_header_problems"] + tuple(p for _i, got in sorted(d["_decoded"].items())
                                             for p in got[1])

    def decoded(self) -> tuple[int, ...]:
        """Indices of the entries decoded so far ("a trace typed only what it read", testable)."""
        return tuple(sorted(self.__dict__["_decoded"]))

    def entry_for(self, path: str, *, keep: bool = True) -> ManifestEntry | None:
        """The entry whose file is `path` (the last one, as the eager reader kept), decoded
        alone; None when no entry names it. `keep=False`: not cached, unless it already
        was (a reader of every file once, `bundle redact`, would otherwise end up holding
        every typed entry, ~1 KiB each; then `problems_so_far` does not name its damage)."""
        d = self.__dict__
        i, raw = self._index_of(path)
        if i is None:
            return None
        if keep or i in d["_decoded"]:
            e = self._decode(i, raw)
        else:
            e = self._typed(i, raw if raw is not None else d["_read"](d["_starts"][i],
                                                                       d["_ends"][i]))[0]
        return e if e is not None and e.path == path else None

    def _index_of(self, path: str) -> tuple[int | None, bytes | None]:
        """The index of the last entry whose path is `path` (and its bytes, when finding it
        read them), or (None, None)."""
        d = self.__dict__
        if d["_paths"] is None:
            named: dict[str | None, int] = dict(zip(d["_path_list"], range(len(d["_path_list"])),
                                                    strict=True))
            named.pop(None, None)  # entries without a path; the last naming a path wins
            d["_paths"], d["_path_list"] = named, None
        paths = d["_paths"]
        if isinstance(paths, PathIndex):
            return paths.find(path, d["_read"], d["_starts"], d["_ends"])
        return paths.get(path), None

    def not_collected(self) -> dict[str, ManifestEntry]:
        """As `Manifest.not_collected`, decoding only the entries whose status is not ok."""
        out: dict[str, ManifestEntry] = {}
        for i in self.__dict__["_failed"]:
            e = self._decode(i)
            dest = self.destination(e) if e is not None and e.not_collected else None
            if dest:
                out[dest] = e  # type: ignore[assignment]  # e is set when dest is
        return out


def _entries_array(raw: bytes) -> tuple[int, list[int], list[int]] | None:
    """Where the top-level entries array's items start, and each object's span; None unless
    the array is the document's last member and holds flat objects only (the exact scan)."""
    a = _array_start(raw)
    if a is None:
        return None
    spans = _tile(raw, a)
    return None if spans is None else (a, *spans)


def _array_start(raw: bytes) -> int | None:
    """Where the top-level entries array's items begin (just after its `[`), or None."""
    key = raw.rfind(b'"entries"')  # the writer puts entries last
    if key < 0 or _KEY_BEFORE.search(raw[max(0, key - 64):key]) is None:
        return None
    opened = _OPEN.match(raw, key + len(b'"entries"'))
    return None if opened is None else opened.end()


def _misplaced(gap: bytes, *, first: bool) -> bool:
    """Is `gap`, the bytes before an entry, anything but what JSON allows there: blanks
    before the first entry, a comma (and blanks) between two?"""
    if first:
        return bool(gap.strip())
    return gap != b"," and _GAP.fullmatch(gap) is None


def _tile(raw: bytes, a: int) -> tuple[list[int], list[int]] | None:
    """The objects from `a` to the array's end, separated by commas and nothing else: the
    exact, string-aware scan (a Python step per entry; `_fast_index` is tried first)."""
    pos = a
    starts: list[int] = []
    ends: list[int] = []
    for m in _OBJ_RE.finditer(raw, a):
        begin, pos_next = m.span()
        if _misplaced(raw[pos:begin], first=not starts):
            return None
        starts.append(begin)
        ends.append(pos := pos_next)
    # Only the top-level array is followed by nothing but the document's closing brace.
    if _TAIL.fullmatch(raw, pos) is None:
        return None
    return starts, ends


_Index = tuple["array[int]", "array[int]", list[str | None], tuple[int, ...]]


def _exact_index(raw: bytes) -> tuple[int, _Index] | None:
    """The index by the exact scan: spans by `_tile`, each entry's path and status by
    `_field` (the reference the fast index must equal)."""
    found = _entries_array(raw)
    if found is None:
        return None
    a, starts, ends = found
    paths: list[str | None] = []
    failed: list[int] = []
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        path = _field(raw, b'"path"', start, end)
        paths.append(path if isinstance(path, str) and path else None)
        if _field(raw, b'"status"', start, end) != "ok":
            failed.append(i)  # decoded by not_collected(); "ok" is the only other status
    return a, (array("q", starts), array("q", ends), paths, tuple(failed))


def _fast_index(raw: bytes) -> tuple[int, _Index] | None:
    """The same index as `_exact_index`, or None; each step a C loop over the bytes.

    Why (issue 12): the exact scan took 0.6 s of CPU per trace at 200 nodes (a regex
    stepping byte by byte, then Python per entry); this takes ~0.25 s. Entries are found
    by the writer's own layout (`json.dumps` with an indent: the first entry opens with
    some blanks, and every later one follows `},` + the blanks before the first + `{` +
    the same blanks), and the result is proved:
    - the region holds nothing but blanks before the first entry's `{` and after the last
      `}`, and the separators found cut it into entries; an entry holding a `{` besides its
      own (a nested object, a brace in a string, a separator not in the writer's layout)
      or a backslash must match the exact scan's string-aware pattern whole;
    - every other entry holds an even number of quotes (each quote delimits a string):
      so no separator lies inside a string (counted for all entries in one pass when the
      region holds no `{` but the entries');
    - an entry's path is read where the writer puts it (the first key, a plain string);
      its status is "ok" when `"status"` occurs in it once, inside `"status": "ok"` after
      a comma and the writer's blanks (a key, read as `_field` reads it). Any other entry
      (another key order, escapes, a second `"status"`) is read by `_field`.
    Anything else returns None: the caller runs the exact scan.
    """
    a = _array_start(raw)
    z = raw.rfind(b"]")
    if a is None or z < a or _TAIL.fullmatch(raw, z) is None:
        return None
    first = raw.find(b"{", a, z)
    last = raw.rfind(b"}", a, z)
    gap = raw[a:first]
    ws = raw[first + 1:max(first + 1, raw.find(b'"', first, z))]
    if first < 0 or gap.strip() or ws.strip() or raw[last + 1:z].strip():
        return None
    # Each separator's `}` ends an entry and its `{` opens the next; its path follows.
    sep = b"}," + gap + b"{" + ws
    shift = len(sep) - len(ws) - 1  # from a separator's `}` to its `{`
    head = _PATH0_RE.match(raw, first + 1 + len(ws))
    assert head is not None  # its path is optional: it matches wherever it starts
    starts = array("q", [first])
    ends = array("q")
    paths = [_text(head.group(1))]  # checked below; `_field` reads the others
    for m in re.compile(re.escape(sep) + _PATH).finditer(raw, first, z):
        end = m.start()
        ends.append(end + 1)
        starts.append(end + shift)
        paths.append(_text(m.group(1)))
    ends.append(last + 1)
    n = len(starts)
    # Quotes, braces and backslashes only (one translate pass): when the region holds no
    # `{` but the entries', the quotes of entry i lie between its `{` and the next.
    # translate() allocates its result at the input's size before shrinking it: done a
    # window at a time, the 48 MB document never costs a second 48 MB.
    quoting = b"".join(raw[i:i + _WINDOW].translate(None, _NOT_QUOTING)
                       for i in range(0, len(raw), _WINDOW))
    head_len = len(raw[:a].translate(None, _NOT_QUOTING))
    opens = array("q", map(_START, _BRACE.finditer(quoting, head_len)))
    exact: set[int] = set()  # entries proved, and read, by the exact rules
    if len(opens) == n:
        opens.append(len(quoting))  # the tail holds no quote, brace or backslash
        quotes = [e - s - 1 for s, e in zip(opens, opens[1:], strict=False)]
        if quoting.find(b"\\", head_len) >= 0:
            exact = {bisect_right(opens, m.start()) - 1
                     for m in _BACKSLASH.finditer(quoting, head_len)}
    else:  # a `{` inside some string (or a separator not in the writer's layout)
        quotes = list(map(raw.count, repeat(b'"'), starts, ends))
        braces = map(raw.count, repeat(b"{"), starts, ends)
        slashes = map(raw.find, repeat(b"\\"), starts, ends)
        exact = {i for i, (b, s) in enumerate(zip(braces, slashes, strict=True))
                 if b != 1 or s >= 0}
    del quoting
    for i in exact:
        if _OBJ_RE.fullmatch(raw, starts[i], ends[i]) is None:
            return None
    if any(q & 1 for i, q in enumerate(quotes) if i not in exact):
        return None
    for i, p in enumerate(paths):
        if not p or i in exact:
            got = _field(raw, b'"path"', starts[i], ends[i])
            paths[i] = got if isinstance(got, str) and got else None
    # Entry i is "ok" when `"status"` occurs in it once, inside `"status": "ok"` after a
    # comma and the writer's blanks. Counted per entry (a C loop), the second count only
    # when the first does not settle every entry.
    ok = b"," + ws + b'"status": "ok"'
    oks = list(map(raw.count, repeat(ok), starts, ends))
    if sum(oks) == n == raw.count(b'"status"', a, z):
        keys: list[int] | repeat[int] = repeat(1)
    else:
        keys = list(map(raw.count, repeat(b'"status"'), starts, ends))
    failed = tuple(i for i, (o, k) in enumerate(zip(oks, keys, strict=False))
                   if (o != 1 or k != 1 or i in exact)
                   and _field(raw, b'"status"', starts[i], ends[i]) != "ok")
    return a, (starts, ends, paths, failed)


def _text(value: bytes | None) -> str | None:
    """A plain string's bytes as `_field` decodes them; None for none (or empty)."""
    return value.decode("utf-8", errors="replace") if value else None


def _string(token: bytes) -> object:
    if token[:1] == b'"' and b"\\" not in token:
        return token[1:-1].decode("utf-8", errors="replace")
    try:
        return load_json(token.decode("utf-8", errors="replace"), "manifest.json")
    except ValueError:
        return None


def _is_key(raw: bytes, at: int, start: int) -> bool:
    """Does the quote at `at` open a key: is the last non-blank byte before it `{` or `,`?"""
    before = raw[max(start, at - 16):at].rstrip()
    if before:
        return before[-1:] in (b"{", b",")
    return _KEY_BEFORE.search(raw, start, at) is not None  # a long run of blanks


def _field(raw: bytes, key: bytes, start: int, end: int) -> object:
    """The value of `key` in the flat object raw[start:end], if it is there as a key."""
    at = raw.find(key, start, end)
    while at >= 0:
        if _is_key(raw, at, start):
            v = at + len(key)
            if raw[v:v + 3] == b': "':  # the writer's layout, a string: read it directly
                q = raw.find(b'"', v + 3, end)
                if q >= 0 and raw.find(b"\\", v + 3, q) < 0:
                    return raw[v + 3:q].decode("utf-8", errors="replace")
            m = _VALUE_RE.match(raw, v, end)
            return _string(m.group(1)) if m is not None else None
        at = raw.find(key, at + 1, end)  # the word inside a string: not the key
    return None


def index_manifest(raw: bytes, read: Callable[[int, int], bytes] | None = None,
                   ) -> tuple[dict[str, Any], LazyManifest] | None:
    """The manifest's header (the document without its entries) and a lazy typed manifest,
    or None when the document does not have the shape the index relies on.

    `read(start, end)` reads those bytes of the manifest again when an entry is decoded, so
    that the document is not held (48 MB at 200 nodes); without it, `raw` is kept."""
    found = _fast_index(raw) or _exact_index(raw)
    if found is None:
        return None
    a, (starts, ends, path_of, failed) = found
    b = raw.index(b"]", ends[-1] if ends else a) + 1
    try:
        header = load_json((raw[:a - 1] + b"[]" + raw[b:]).decode("utf-8", errors="replace"),
                           "manifest.json")
    except ValueError:
        return None
    if not isinstance(header, dict) or header.get("entries") != []:
        return None
    base = read_manifest(header)
    lazy = LazyManifest.__new__(LazyManifest)
    for f in Manifest.__dataclass_fields__:
        if f not in ("entries", "problems"):
            object.__setattr__(lazy, f, getattr(base, f))
    lazy._init_lazy(read or (lambda start, end: raw[start:end]), len(raw), starts, ends,
                    path_of, failed, base.problems)
    return header, lazy


def index_manifest_chunked(read: Callable[[int, int], bytes], size: int, *,
                           chunk: int = _BATCH) -> tuple[dict[str, Any], LazyManifest] | None:
    """`index_manifest(read(0, size), read)`, reading the document `chunk` bytes at a time
    (issue 12: opening a 200-node bundle read its 48 MB manifest whole to index it). Held:
    the header, the entry being scanned and a chunk, and the index itself (offsets in
    arrays, 16 bytes an entry, and the paths).

    The scan is `_entries_array`'s, forward: the first `"entries"` key opening an array,
    then flat objects separated by commas, then the document's end. It answers only what
    it can prove is `index_manifest`'s answer, else None and the caller reads the document
    whole: a brace inside a string (the exact scan needs the whole document), or the
    bytes `"entries"` anywhere after the array opens (then the key `rfind` picks might be
    another one)."""
    head = bytearray()
    key = -1
    searched = 0
    while True:  # the header, up to the entries array's `[`
        if len(head) < size:
            head += read(len(head), min(size, len(head) + chunk))
        eof = len(head) >= size
        at = head.find(b'"entries"', max(0, searched - len(b'"entries"')))
        while at >= 0 and _KEY_BEFORE.search(head[max(0, at - 64):at]) is None:
            at = head.find(b'"entries"', at + 1)
        if at >= 0 and (eof or len(head) - at > 4096):
            key = at
            break
        if eof:
            return None
        searched = len(head) if at < 0 else at
    opened = _OPEN.match(head, key + len(b'"entries"'))
    if opened is None:
        return None
    bracket = opened.end() - 1
    prefix = bytes(head[:bracket])
    buf, base, pos = bytes(head[bracket + 1:]), bracket + 1, 0
    del head
    loaded = base + len(buf)
    starts: array[int] = array("q")
    ends: array[int] = array("q")
    paths = PathIndex()
    failed: list[int] = []
    while True:
        m = _FLAT_RE.search(buf, pos)
        if m is None:
            if loaded >= size:
                break
            buf = buf[pos:] + read(loaded, min(size, loaded + chunk))
            base, pos = base + pos, 0
            loaded = base + len(buf)
            continue
        begin, end = m.span()
        if _misplaced(buf[pos:begin], first=not starts):
            return None
        if (buf.count(b'"', begin, end) % 2 if buf.find(b"\\", begin, end) < 0
                else _OBJ_RE.fullmatch(buf, begin, end) is None):
            return None  # a brace inside a string: `index_manifest`'s exact scan decides
        if buf.find(b'"entries"', begin, end) >= 0:
            return None
        i = len(starts)
        starts.append(base + begin)
        ends.append(base + end)
        path = _field(buf, b'"path"', begin, end)
        if isinstance(path, str) and path:
            paths.add(path, i)
        if _field(buf, b'"status"', begin, end) != "ok":
            failed.append(i)
        pos = end
    if _TAIL.fullmatch(buf, pos) is None:
        return None
    rest = buf[buf.index(b"]", pos) + 1:]
    paths.freeze()
    return _lazy_manifest(prefix + b"[]" + rest, read, size, starts, ends, paths, failed)


def _lazy_manifest(header_raw: bytes, read: Callable[[int, int], bytes], size: int,
                   starts: Sequence[int], ends: Sequence[int], paths: PathIndex,
                   failed: list[int]) -> tuple[dict[str, Any], LazyManifest] | None:
    """The header decoded (None unless it is an object whose entries are `[]`) and the
    lazy manifest over the indexed entries."""
    try:
        header = load_json(header_raw.decode("utf-8", errors="replace"), "manifest.json")
    except ValueError:
        return None
    if not isinstance(header, dict) or header.get("entries") != []:
        return None
    base = read_manifest(header)
    lazy = LazyManifest.__new__(LazyManifest)
    for f in Manifest.__dataclass_fields__:
        if f not in ("entries", "problems"):
            object.__setattr__(lazy, f, getattr(base, f))
    lazy._init_lazy(read, size, starts, ends, paths, tuple(failed), base.problems)
    return header, lazy
