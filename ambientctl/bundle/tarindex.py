"""The member index of a `.tar.gz` bundle: write it, validate it, read one member through it.

Why: a gzip stream has no random access, so without help reading one member of a
`.tar.gz` costs decompressing (and hashing) the whole archive first; at 200 nodes that is
most of a trace, which needs a few dozen of the 70k files. The writer therefore stores the
archive as concatenated gzip members (RFC 1952 allows it; `tar xzf` and `gzip -d` read
them as one stream): a new gzip member starts at every tar header and every `PIECE`
uncompressed bytes inside a member. The FIRST tar member, `<top>/INDEX_NAME`, alone in the
first gzip member, lists where every other gzip member and tar member lies. Every offset
in it is relative to the end of that first gzip member (the "body"): the index need not
know its own compressed size, so it is written after the body is compressed, and no
fixed-size padding is reserved. Reading a member then decompresses only the gzip members
that hold it.

Trust: the index is input like any other. It is validated whole before it is used (bounded
size, offsets increasing, inside the file, members tiling the body, names following the
bundle's path rules, no duplicates, the caps of `ReadLimits`), and each member read is
checked against it: every gzip member decompressed must end exactly where the index says,
with a valid CRC-32/length trailer, and the tar header found at the member's offset must
name the same file, of the same size, as a regular file, ending exactly where the next
member starts. Any disagreement is a `BundleError`: a lying index is refused, never
followed. The forward pass (`bundle verify`) reads the whole archive as a plain tar.gz and
compares it with the index.
"""

from __future__ import annotations

import bisect
import io
import json
import operator
import os
import tarfile
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from itertools import chain, islice, repeat
from operator import itemgetter
from pathlib import Path, PurePosixPath
from typing import BinaryIO, NamedTuple, cast

from ambientctl.bundle.limits import ReadLimits, human
from ambientctl.errors import BundleError, ParseError

INDEX_NAME = ".ambientctl-tar-index.json"  # dot file: `ls` of an extracted bundle hides it
INDEX_SCHEMA = "ambientctl.tar-index/v1"
PIECE = 1 << 20  # uncompressed data bytes per gzip member inside a big tar member
# A gzip member holds at most a tar header (pax records included) plus PIECE data bytes
# and block padding; the reader refuses a table claiming more (one decompression's memory).
MAX_GZ_RAW = PIECE + (64 << 10)
MAX_GZ_COMPRESSED = MAX_GZ_RAW + (MAX_GZ_RAW >> 8) + 1024  # deflate's worst-case expansion
# The index itself: ~100 bytes per member; 64 MiB is several times the 500k-member cap.
MAX_INDEX_BYTES = 64 << 20
# Decoded gzip members kept: a member's header piece is read twice (header check, data),
# an indexed manifest's entries are re-read span by span. More only costs peak memory.
CACHE_BYTES = 8 << 20
_WBITS_GZIP = 16 + zlib.MAX_WBITS
_BLOCK = tarfile.BLOCKSIZE
_HINT = "the archive's member index is damaged or forged; re-pack the bundle from its " \
        "directory, or check it with `ambientctl bundle verify`"


def _padded(n: int) -> int:
    return -(-n // _BLOCK) * _BLOCK


# ---------------------------------------------------------------------------- writing
class _GzipSink:
    """Writes concatenated gzip members to a file and records where each one starts."""

    def __init__(self, fh: BinaryIO, level: int) -> None:
        self.fh = fh
        self.level = level
        self.gz_off = 0  # compressed bytes written
        self.raw_off = 0  # uncompressed bytes written
        self.compressed: list[int] = []  # where each gzip member starts, compressed
        self.uncompressed: list[int] = []  # and uncompressed

    def member(self, parts: Iterable[bytes]) -> None:
        """One gzip member holding `parts` (mtime 0, no name: deterministic)."""
        self.compressed.append(self.gz_off)
        self.uncompressed.append(self.raw_off)
        comp = zlib.compressobj(self.level, zlib.DEFLATED, _WBITS_GZIP)
        for part in parts:
            self._out(comp.compress(part))
            self.raw_off += len(part)
        self._out(comp.flush())

    def _out(self, data: bytes) -> None:
        self.fh.write(data)
        self.gz_off += len(data)


def write_indexed_tar(dest: BinaryIO, body: BinaryIO, files: list[tuple[str, Path]], *,
                      top: str, mtime: int, level: int) -> None:
    """Write the indexed tar.gz of `files` ((relative name, path), sorted) to `dest`.

    `body` is an empty scratch file (created exclusively by the caller): the members are
    compressed into it first, then the index member and the body are written to `dest`.
    """
    sink = _GzipSink(body, level)
    names: list[str] = []
    headers: list[int] = []
    sizes: list[int] = []
    for rel, full in files:
        with open(full, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            name = f"{top}/{rel}"
            names.append(name)
            headers.append(sink.raw_off)
            sizes.append(size)
            header = _tarinfo(name, size, mtime).tobuf(tarfile.PAX_FORMAT, "utf-8",
                                                       "surrogateescape")
            first = True
            left = size
            while first or left > 0:
                data = fh.read(min(PIECE, left))
                if len(data) != min(PIECE, left):
                    raise BundleError(f"{full}: changed size while the bundle was written")
                left -= len(data)
                parts = [header, data] if first else [data]
                if left == 0:
                    parts.append(b"\0" * (_padded(size) - size))
                sink.member(parts)
                first = False
    # End of archive: two zero blocks. No padding to tar's 10 KiB record: where the record
    # ends depends on the index's size, written last; readers (tar, gzip) need none.
    sink.member([b"\0" * (_BLOCK * 2)])
    sink.compressed.append(sink.gz_off)  # the end of the body
    sink.uncompressed.append(sink.raw_off)
    # Flat arrays, not a list per row: decoding 80k rows as lists cost ~12 MB more.
    doc = {"schema": INDEX_SCHEMA,
           "gzip": {"compressed": sink.compressed, "uncompressed": sink.uncompressed},
           "members": {"names": names, "headers": headers, "sizes": sizes}}
    data = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    del doc, names, headers, sizes
    if len(data) <= MAX_INDEX_BYTES:
        # else (more than a reader accepts: ~500k files with long names) the archive goes
        # without its index, and readers take the one forward pass
        _GzipSink(dest, level).member([
            _tarinfo(f"{top}/{INDEX_NAME}", len(data), mtime).tobuf(
                tarfile.PAX_FORMAT, "utf-8", "surrogateescape"),
            data, b"\0" * (_padded(len(data)) - len(data))])
    body.seek(0)
    while chunk := body.read(1 << 20):
        dest.write(chunk)


def _tarinfo(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


# ---------------------------------------------------------------------------- reading
class IndexedMember(NamedTuple):
    """Where one regular file lies, according to the (validated) index; body-relative.

    A NamedTuple, not a frozen dataclass: 80k of them are built when a 200-node archive
    is opened, and a tuple is built 3x faster (immutable all the same)."""

    name: str  # as stored (with the top folder)
    header: int  # uncompressed offset of its tar header (a gzip member starts there)
    size: int
    end: int  # uncompressed offset where the next member (or the end blocks) starts


def _columns(obj: object, keys: tuple[str, ...]) -> list[list[object]] | None:
    """The equally long lists `obj[key]` for `keys`, or None."""
    if not isinstance(obj, dict):
        return None
    cols = [obj.get(key) for key in keys]
    if not all(isinstance(c, list) for c in cols):
        return None
    out = [c for c in cols if isinstance(c, list)]
    return out if len({len(c) for c in out}) == 1 else None


def _error(where: str, what: str) -> BundleError:
    return BundleError(f"{where}: {what}", hint=_HINT)


def _inflate_one(fh: BinaryIO, where: str, gz_off: int, gz_len: int, raw_len: int) -> bytes:
    """Decompress exactly one gzip member (its trailer checked) of the stated sizes."""
    fh.seek(gz_off)
    data = fh.read(gz_len)
    if len(data) != gz_len:
        raise _error(where, f"the member index points past the end of the file "
                            f"(offset {gz_off + gz_len})")
    dec = zlib.decompressobj(_WBITS_GZIP)
    try:
        out = dec.decompress(data, raw_len + 1)
    except zlib.error as exc:
        raise _error(where, f"corrupted gzip data at offset {gz_off} ({exc}), or the member "
                            "index points into the middle of a gzip member") from None
    if not dec.eof or dec.unused_data or dec.unconsumed_tail or len(out) != raw_len:
        raise _error(where, f"the gzip member at offset {gz_off} does not end where the "
                            "member index says")
    return out


def read_index_head(fh: BinaryIO, where: str) -> tuple[str, bytes, int, int] | None:
    """(top folder, index bytes, compressed and uncompressed size of the index's gzip
    member) when the archive starts with an index; None for any other archive (read by
    the one forward pass). Reads at most one bounded gzip member."""
    fh.seek(0)
    dec = zlib.decompressobj(_WBITS_GZIP)
    out = bytearray()
    used = 0
    cap = MAX_INDEX_BYTES + (64 << 10)
    try:
        while not dec.eof:
            chunk = fh.read(1 << 16)
            if not chunk:
                return None  # truncated: the forward pass names the damage
            got = dec.decompress(chunk, cap + 1 - len(out))
            out += got
            used += len(chunk) - len(dec.unused_data) - len(dec.unconsumed_tail)
            if dec.unconsumed_tail or len(out) > cap:
                if _looks_like_index(bytes(out[:4 * _BLOCK])):
                    raise _error(where, f"its member index is larger than "
                                        f"{human(MAX_INDEX_BYTES)}")
                return None
            if ((len(out) >= 4 * _BLOCK or dec.eof)
                    and not _looks_like_index(bytes(out[:4 * _BLOCK]))):
                return None  # not ours: stop after one header's worth
    except zlib.error:
        return None
    try:
        with tarfile.open(fileobj=io.BytesIO(bytes(out)), mode="r:") as tar:
            info = tar.next()
    except tarfile.TarError:
        return None
    if info is None:
        return None
    parts = PurePosixPath(info.name).parts
    if len(parts) != 2 or parts[1] != INDEX_NAME:
        return None
    if parts[0].startswith("/") or parts[0] in (".", ".."):
        raise _error(where, f"its member index {info.name!r} escapes the bundle")
    if info.size > MAX_INDEX_BYTES:
        raise _error(where, f"its member index is larger than {human(MAX_INDEX_BYTES)}")
    if not info.isreg() or info.offset_data + _padded(info.size) != len(out):
        raise _error(where, "its member index is not a regular file alone in the first "
                            "gzip member")
    data = bytes(out[info.offset_data:info.offset_data + info.size])
    return parts[0], data, used, len(out)


def _looks_like_index(head: bytes) -> bool:
    """Do these first bytes start the index member? Its name is in the first header
    block, or (a long bundle name) in the pax record just after it."""
    if head[156:157] == b"x":
        return b"/" + INDEX_NAME.encode() + b"\n" in head[_BLOCK:]
    name = head[:100].split(b"\0", 1)[0]
    return name.endswith(b"/" + INDEX_NAME.encode())


def open_index(fh: BinaryIO, where: str, limits: ReadLimits) -> TarIndex | None:
    """The archive's validated member index, or None when it has none (an old archive,
    or one packed by hand: read by the forward pass)."""
    head = read_index_head(fh, where)
    return TarIndex(fh, where, limits, head) if head is not None else None


def _gzip_table_fast(table: list[list[object]]) -> tuple[list[int], list[int]] | None:
    """The gzip table's offsets (compressed, uncompressed) when every row is well formed,
    checked at once by C loops (issue 12: one gzip member per bundle file, 80k rows at
    200 nodes); None when any is not (`TarIndex._validate` then names the first): all
    ints, each column strictly increasing by at most MAX_GZ_COMPRESSED / MAX_GZ_RAW."""
    comp, unc = table
    if {type(v) for v in comp} != {int} or {type(v) for v in unc} != {int}:
        return None
    gz, rawo = cast(list[int], comp), cast(list[int], unc)
    for col, most in ((gz, MAX_GZ_COMPRESSED), (rawo, MAX_GZ_RAW)):
        if len(col) > 1 and (min(map(operator.sub, islice(col, 1, None), col)) <= 0
                             or max(map(operator.sub, islice(col, 1, None), col)) > most):
            return None
    return gz, rawo


def _members_fast(top: str, listed: list[list[object]], starts: set[int], max_member: int,
                  end_blocks: int) -> dict[str, IndexedMember] | None:
    """The members of a well-formed table, every row checked at once by C loops; None
    when any check fails (`TarIndex._members_checked` then names the first bad row).

    Why (issue 12): row by row, 80k members took ~0.3 s of a trace of a 200-node
    `.tar.gz`. The same checks, column-wise: types; every name in the bundle folder,
    with no empty, `.` or `..` part and no NUL (joined with NUL between them, and each
    wrapped in slashes, the rows hold no `//`, `/./` or `/../`); no row the index itself
    or listed twice; sizes within the member cap; each header where a gzip member starts
    and after the previous member's data; the last member's data before the end blocks.
    """
    names, headers, sizes = listed
    if not names:
        return None
    if ({type(v) for v in names} != {str} or {type(v) for v in headers} != {int}
            or {type(v) for v in sizes} != {int}):
        return None
    names_s = cast(list[str], names)
    headers_i = cast(list[int], headers)
    sizes_i = cast(list[int], sizes)
    prefix = top + "/"
    if min(sizes_i) < 0 or max(sizes_i) > max_member:
        return None
    if not all(map(str.startswith, names_s, repeat(prefix))):
        return None
    rels = list(map(itemgetter(slice(len(prefix), None)), names_s))
    joined = "/" + "/\0/".join(rels) + "/"
    bad_part = (joined.count("\0") != len(rels) - 1 or "//" in joined or "/./" in joined
                or "/../" in joined)
    del joined  # temporaries are dropped at once: the open's peak memory is made here
    if bad_part or not starts.issuperset(headers_i):
        return None
    unique = set(rels)
    if len(unique) != len(rels) or INDEX_NAME in unique:
        return None
    del unique
    # Each member's data must end (header + block + padded size) before the next header,
    # and the last one's before the end blocks.
    floors = map(operator.add, headers_i,
                 map(operator.mul, map(operator.floordiv, map(operator.neg, sizes_i),
                                       repeat(_BLOCK)), repeat(-_BLOCK)))
    if not all(map(operator.ge, islice(headers_i, 1, None), map(_BLOCK.__add__, floors))):
        return None
    if end_blocks < headers_i[-1] + _BLOCK + _padded(sizes_i[-1]):
        return None
    ends = chain(islice(headers_i, 1, None), (end_blocks,))
    # tuple.__new__ builds each row as the NamedTuple's own __new__ does, in C (a call of
    # that Python __new__ per row was half of this function)
    rows = map(tuple.__new__, repeat(IndexedMember), zip(names_s, headers_i, sizes_i, ends,
                                                         strict=True))
    return dict(zip(rels, rows, strict=True))


class TarIndex:
    """A validated member index over an open archive; reads members through it."""

    def __init__(self, fh: BinaryIO, where: str, limits: ReadLimits,
                 head: tuple[str, bytes, int, int]) -> None:
        self.fh = fh
        self.where = where
        self.top, raw, self.body_gz, self.body_raw = head
        self.decompressed = 0  # uncompressed bytes decompressed through the index
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cached = 0
        self._data_off: dict[str, int] = {}  # name -> data offset, once its header checked
        self._keep = True  # pieces decompressed go to the cache (not during a long read)
        self.members = self._validate(raw, limits)

    # ------------------------------------------------------------ validation
    def _validate(self, raw: bytes, limits: ReadLimits) -> dict[str, IndexedMember]:
        from ambientctl.jsondoc import load_json

        where = self.where
        # Decoded, each value costs 28-80 bytes: 64 MiB of "0," would be ~1 GB. A real index
        # has 3 values per member and 2 per gzip member: bound them before decoding.
        rows = limits.max_members * 5 + 2 * (limits.max_bundle // PIECE) + 16
        if raw.count(b",") > rows:
            raise _error(where, f"its member index has more than {rows} entries (the "
                                "member-count limit allows no more)")
        try:
            doc = load_json(raw.decode("utf-8", errors="strict"), f"{where}:{INDEX_NAME}")
        except (ParseError, UnicodeDecodeError) as exc:
            raise _error(where, f"its member index is not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("schema") != INDEX_SCHEMA:
            raise _error(where, f"its member index is not a {INDEX_SCHEMA} document")
        table = _columns(doc.get("gzip"), ("compressed", "uncompressed"))
        listed = _columns(doc.get("members"), ("names", "headers", "sizes"))
        if table is None or listed is None or len(table[0]) < 2:
            raise _error(where, "its member index lacks the gzip or members table, or their "
                                "columns differ in length")
        file_size = os.fstat(self.fh.fileno()).st_size - self.body_gz
        gz: list[int] = []
        rawo: list[int] = []
        fast_table = _gzip_table_fast(table)
        if fast_table is not None:
            gz, rawo = fast_table
            table = [[], []]  # checked at once: nothing left for the loop below
        for c, u in zip(*table, strict=True):
            if type(c) is not int or type(u) is not int:  # not bool, not float
                raise _error(where, "its member index has a malformed gzip entry")
            if gz and (c - gz[-1] <= 0 or c - gz[-1] > MAX_GZ_COMPRESSED
                       or u - rawo[-1] <= 0 or u - rawo[-1] > MAX_GZ_RAW):
                raise _error(where, f"its member index lists gzip member offsets out of "
                                    f"order or too far apart ({c}, {u})")
            gz.append(c)
            rawo.append(u)
        if gz[0] != 0 or rawo[0] != 0 or gz[-1] != file_size:
            raise _error(where, "its member index does not cover the file exactly "
                                f"({gz[-1]} compressed bytes listed, {file_size} stored)")
        if rawo[-1] > limits.max_bundle:
            raise BundleError(f"{where}: the archive holds more than {human(limits.max_bundle)}"
                              " uncompressed (the total-size limit)")
        if len(listed[0]) > limits.max_members:
            raise BundleError(f"{where}: more than {limits.max_members} files "
                              "(the member-count limit)")
        self._gz, self._raw = gz, rawo
        fast = _members_fast(self.top, listed, set(rawo), limits.max_member, rawo[-2])
        if fast is not None:
            return fast
        return self._members_checked(listed, set(rawo), limits)

    def _members_checked(self, listed: list[list[object]], starts: set[int],
                         limits: ReadLimits) -> dict[str, IndexedMember]:
        """The members table checked row by row, raising on the first bad row (in the
        words below); `_members_fast` accepts only tables that pass here (every one but
        an empty table)."""
        where = self.where
        rawo = self._raw
        prefix = self.top + "/"
        rows_ok: list[tuple[str, str, int, int]] = []  # (rel, name, header, size)
        seen: set[str] = set()
        floor = 0  # where the next header may start (after the previous member's data)
        for name, header, size in zip(*listed, strict=True):
            if type(name) is not str or type(header) is not int or type(size) is not int \
                    or size < 0:
                raise _error(where, "its member index has a malformed member entry")
            # string tests, not PurePosixPath: 80k names cost 1.4 s that way
            rel = name[len(prefix):] if name.startswith(prefix) else ""
            wrapped = f"/{rel}/"
            if (not rel or "\0" in rel or "//" in wrapped or "/./" in wrapped
                    or "/../" in wrapped):
                raise _error(where, f"its member index lists {name!r}, which is not a file "
                                    f"of the bundle folder {self.top!r}")
            if rel == INDEX_NAME:
                raise _error(where, "its member index lists itself")
            if size > limits.max_member:
                raise BundleError(
                    f"{where}: {rel} is {size} bytes, more than the "
                    f"{human(limits.max_member)} a bundle file may hold (the member-size "
                    "limit)")
            if header not in starts:
                raise _error(where, f"its member index puts {name!r} at offset {header}, "
                                    "where no gzip member starts")
            if header < floor:
                raise _error(where, f"its member index puts {name!r} inside "
                                    f"{rows_ok[-1][1]!r}")
            if rel in seen:
                raise _error(where, f"its member index lists {name!r} twice")
            seen.add(rel)
            rows_ok.append((rel, name, header, size))
            floor = header + _BLOCK + _padded(size)
        if not rows_ok:  # a bundle has files: an index of none describes another archive
            raise _error(where, "its member index lists no members")
        end_blocks = rawo[-2]  # the last gzip member holds the end-of-archive blocks
        if end_blocks < floor:
            raise _error(where, f"its member index puts {rows_ok[-1][1]!r} past the end of "
                                "the archive")
        ends = [r[2] for r in rows_ok[1:]] + [end_blocks]
        return {rel: IndexedMember(name, header, size, end)
                for (rel, name, header, size), end in zip(rows_ok, ends, strict=True)}

    # ------------------------------------------------------------ reading
    def _piece(self, k: int) -> bytes:
        """Gzip member k of the body, decompressed and checked (cached unless a long range
        is being read: `_range`)."""
        got = self._cache.get(k)
        if got is not None:
            self._cache.move_to_end(k)
            return got
        if k < 0 or k + 1 >= len(self._gz):
            raise _error(self.where, "a read went past the end of the member index")
        out = _inflate_one(self.fh, self.where, self.body_gz + self._gz[k],
                           self._gz[k + 1] - self._gz[k], self._raw[k + 1] - self._raw[k])
        self.decompressed += len(out)
        if not self._keep:
            return out
        self._cache[k] = out
        self._cached += len(out)
        while self._cached > CACHE_BYTES and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached -= len(old)
        return out

    def _range(self, offset: int, size: int) -> bytes:
        """Body bytes [offset, offset + size), from the gzip members that hold them."""
        if size <= 0:
            return b""
        k = bisect.bisect_right(self._raw, offset) - 1
        # Copied piece by piece into one buffer, each piece free to leave the cache at
        # once: a list of the pieces joined at the end would hold the member twice (a
        # 48 MB manifest: +48 MB of peak). getvalue() hands the buffer over, no copy.
        out = io.BytesIO()
        pos, end = offset, offset + size
        # A range longer than the cache would only evict it and hold its own last pieces
        # (issue 12: 8 MB of a 48 MB manifest kept at the peak of opening the archive).
        self._keep = size <= CACHE_BYTES
        try:
            while pos < end:
                piece = self._piece(k)
                start = pos - self._raw[k]
                take = min(len(piece) - start, end - pos)
                out.write(memoryview(piece)[start:start + take])
                pos += take
                k += 1
        finally:
            self._keep = True
        return out.getvalue()

    def data_offset(self, rel: str) -> int:
        """Body offset of `rel`'s data, after checking its tar header against the index."""
        got = self._data_off.get(rel)
        if got is not None:
            return got
        m = self.members[rel]
        k = bisect.bisect_left(self._raw, m.header)
        head = self._piece(k)
        try:
            with tarfile.open(fileobj=io.BytesIO(head), mode="r:") as tar:
                info = tar.next()
        except tarfile.TarError as exc:
            raise _error(self.where, f"no valid tar header where the member index puts "
                                     f"{m.name!r} ({exc})") from None
        if info is None or info.name != m.name:
            found = info.name if info is not None else "nothing"
            raise _error(self.where, f"the member index puts {m.name!r} where the archive "
                                     f"holds {found!r}")
        if not info.isreg():
            raise _error(self.where, f"{m.name!r} is not a regular file, unlike what the "
                                     "member index says")
        if info.size != m.size:
            raise _error(self.where, f"{m.name!r} is {info.size} bytes in the archive, "
                                     f"{m.size} in its member index")
        if m.header + info.offset_data + _padded(info.size) != m.end:
            raise _error(self.where, f"{m.name!r} does not end where the next member starts "
                                     "according to the member index")
        off = m.header + info.offset_data
        self._data_off[rel] = off
        return off

    def read(self, rel: str) -> bytes:
        """The bytes of `rel`: its header checked, only its gzip members decompressed."""
        data = self._range(self.data_offset(rel), self.members[rel].size)
        self.check_after(rel)
        return data

    def check_after(self, rel: str) -> None:
        """Decompress (and so check) the gzip members after `rel`'s data (block padding):
        the member's region must decompress whole, up to where the next one starts. `read`
        does it; a member read in parts (`pread`) calls it once its last part is read."""
        off, size = self.data_offset(rel), self.members[rel].size
        k = bisect.bisect_right(self._raw, off + size - 1 if size else off)
        while k < len(self._raw) - 1 and self._raw[k] < self.members[rel].end:
            self._piece(k)
            k += 1

    def pread(self, rel: str, start: int, size: int) -> bytes:
        """Bytes [start, start + size) of `rel`'s data (clipped to it)."""
        m = self.members[rel]
        start = max(0, min(start, m.size))
        size = max(0, min(size, m.size - start))
        return self._range(self.data_offset(rel) + start, size)

