"""Random access into a gzip stream after ONE forward pass (a zran-style checkpoint index).

Why: a `.tar.gz` has no index, and `tarfile` in random-access mode seeks backwards in
the gzip stream whenever a member is read out of archive order, which restarts the
decompression from byte 0: reading N out-of-order members costs O(N x archive). Instead,
the archive is decompressed once, front to back; every `SPACING` uncompressed bytes the
decompressor's complete state is saved (`zlib.Decompress.copy()`: its 32 KiB window
plus bit position, ~40 KiB) together with the compressed offset of the next unread input
byte. Reading any byte range later restarts from the nearest checkpoint at or before it
and decompresses at most one block (`SPACING` plus one output chunk). Decoded blocks are
kept in a small LRU cache, so members read in any order decode each block about once.

Only gzip is accepted (RFC 1952, as the bundle format promises for `.tar.gz`); several
concatenated gzip members and zero padding after the last one are valid (gzip(1)
accepts both). zlib checks each member's CRC-32 and length trailer: a corrupted or
missing trailer is an error, never silently accepted.
"""

from __future__ import annotations

import bisect
import zlib
from collections import OrderedDict
from typing import BinaryIO

from ambientctl.errors import BundleError

SPACING = 1 << 20  # uncompressed bytes between checkpoints
CHUNK_IN = 1 << 16  # compressed bytes read from the file at a time
CHUNK_OUT = 1 << 16  # uncompressed bytes produced per inflate call
CACHE_BYTES = 32 << 20  # decoded blocks kept (a small bundle stays fully cached)
GZIP_MAGIC = b"\x1f\x8b"
_WBITS_GZIP = 16 + zlib.MAX_WBITS  # gzip header and trailer, checked by zlib

# Magic numbers of what people put in a file named .tar.gz by mistake (or on purpose).
_OTHER_FORMATS = (
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"PK\x03\x04", "zip"),
)


def sniff_compression(head: bytes) -> str:
    """A name for the format of a file starting with `head` ("gzip", "xz", "tar", ...)."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    for magic, name in _OTHER_FORMATS:
        if head.startswith(magic):
            return name
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "uncompressed tar"
    return "unknown"


class _Inflater:
    """A gzip decompressor over a file that knows the exact offset of its unread input."""

    def __init__(self, fh: BinaryIO, where: str, in_off: int = 0,
                 dec: zlib._Decompress | None = None, produced: int = 0) -> None:
        self.fh = fh
        self.where = where
        self.dec = dec if dec is not None else zlib.decompressobj(_WBITS_GZIP)
        self.in_off = in_off  # file offset of pending[0]
        self.pending = b""
        self.produced = produced  # uncompressed bytes produced so far (stream offset)
        self.finished = False
        fh.seek(in_off)
        self._eof_file = False

    def _refill(self) -> None:
        if self._eof_file:
            return
        data = self.fh.read(CHUNK_IN)
        if not data:
            self._eof_file = True
        self.pending += data

    def _error(self, what: str) -> BundleError:
        return BundleError(f"{self.where}: {what}",
                           hint="the archive is damaged; ask for it again (or collect again)")

    def _after_member(self) -> bool:
        """At the end of a gzip member: start the next one; False at the end of the stream."""
        while len(self.pending) < 2 and not self._eof_file:
            self._refill()
        if not self.pending:
            return False
        if self.pending[:1] == b"\0":
            # Zero padding (tape blocking) may follow the last member; nothing else may.
            while not self.pending.strip(b"\0"):
                self.in_off += len(self.pending)
                self.pending = b""
                self._refill()
                if not self.pending:
                    return False
            raise self._error("data after the end of the gzip stream")
        if not self.pending.startswith(GZIP_MAGIC):
            raise self._error("data after the end of the gzip stream")
        self.dec = zlib.decompressobj(_WBITS_GZIP)
        return True

    def produce(self) -> bytes:
        """The next chunk of uncompressed bytes (at most CHUNK_OUT); b"" at the end."""
        if self.finished:
            return b""
        while True:
            if self.dec.eof and not self._after_member():
                self.finished = True
                return b""
            if not self.pending:
                # zlib may still hold output for input it already consumed.
                out = self._inflate(b"")
                if out:
                    return out
                self._refill()
                if not self.pending:
                    raise self._error("the gzip stream ends early (truncated: no trailer)")
            out = self._inflate(self.pending)
            if out:
                return out

    def _inflate(self, data: bytes) -> bytes:
        try:
            out = self.dec.decompress(data, CHUNK_OUT)
        except zlib.error as exc:
            raise self._error(f"corrupted gzip data ({exc})") from None
        if data:
            rest = self.dec.unused_data if self.dec.eof else self.dec.unconsumed_tail
            self.in_off += len(data) - len(rest)
            self.pending = rest
        self.produced += len(out)
        return out


class GzipIndex:
    """One forward pass over a gzip file (`read`, for `tarfile`'s stream mode), then
    random access to any uncompressed range (`pread`). See the module docstring.

    `limit`: the most uncompressed bytes the stream may hold; beyond it reading stops
    with a `BundleError` naming the limit (a decompression bomb costs no memory).
    """

    def __init__(self, fh: BinaryIO, where: str, *, limit: int, limit_hint: str,
                 random_access: bool = True) -> None:
        head = fh.read(512)
        kind = sniff_compression(head)
        if kind == "unknown":
            raise BundleError(
                f"{where}: not a bundle (neither a directory nor a .tar.gz)",
                hint="a bundle is what `ambientctl collect -o DIR|FILE.tar.gz` writes")
        if kind != "gzip":
            raise BundleError(
                f"{where}: not gzip-compressed ({kind}); a .tar.gz bundle must be a "
                "gzip-compressed tar",
                hint="re-pack it: tar -czf BUNDLE.tar.gz DIR (or pass the directory)")
        self.fh = fh
        self.where = where
        self.limit = limit
        self.limit_hint = limit_hint
        self._inf = _Inflater(fh, where)
        # checkpoint i: (uncompressed offset, compressed offset, decompressor state)
        self._cp_off: list[int] = [0]
        self._cp: list[tuple[int, zlib._Decompress]] = [(0, self._inf.dec.copy())]
        self._block = bytearray()  # the block being filled by the forward pass
        self._buf = bytearray()  # produced, not yet handed to `read`
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cached = 0
        self.size: int | None = None  # total uncompressed size, once the pass is done
        self.read_limit: int | None = None  # `read` may not go past this offset (headers)
        self.delivered = 0
        # False: one forward pass and nothing after it (`pread` refused): no checkpoints,
        # no decoded blocks kept (`bundle verify` of an indexed archive: ~50 MiB at 200
        # nodes it would never read back).
        self.random_access = random_access

    # ------------------------------------------------------------ the forward pass
    def _pump(self) -> bool:
        out = self._inf.produce()
        if not out:
            if self.size is None:
                self.size = self._inf.produced
                if self.random_access:
                    self._store_block(len(self._cp) - 1, bytes(self._block))
                self._block = bytearray()
            return False
        if self._inf.produced > self.limit:
            raise BundleError(
                f"{self.where}: the archive holds more than {_human(self.limit)} uncompressed "
                "(the total-size limit)", hint=self.limit_hint)
        self._buf += out
        if not self.random_access:
            return True
        self._block += out
        if self._inf.produced - self._cp_off[-1] >= SPACING:
            self._store_block(len(self._cp) - 1, bytes(self._block))
            self._block = bytearray()
            self._cp_off.append(self._inf.produced)
            self._cp.append((self._inf.in_off, self._inf.dec.copy()))
        return True

    def read(self, n: int = -1) -> bytes:
        """Sequential read for the forward pass (what `tarfile.open(mode="r|")` calls)."""
        if n is None or n < 0:
            raise BundleError(f"{self.where}: internal: unbounded read of the archive")
        if self.read_limit is not None and self.delivered + n > self.read_limit:
            raise BundleError(
                f"{self.where}: a tar header block at offset {self.delivered} is larger than "
                "any file may be (the member-size limit)", hint=self.limit_hint)
        while len(self._buf) < n and self._pump():
            pass
        out = bytes(self._buf[:n])
        del self._buf[:n]
        self.delivered += len(out)
        return out

    def finish(self) -> int:
        """Decompress to the end (checks the gzip trailers); the total uncompressed size."""
        self.read_limit = None
        self._buf = bytearray()
        while self._pump():
            self._buf = bytearray()
        assert self.size is not None
        return self.size

    # ------------------------------------------------------------ random access
    def _store_block(self, i: int, data: bytes) -> None:
        if i in self._cache:
            return
        self._cache[i] = data
        self._cached += len(data)
        while self._cached > CACHE_BYTES and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached -= len(old)

    def _load_block(self, i: int) -> bytes:
        got = self._cache.get(i)
        if got is not None:
            self._cache.move_to_end(i)
            return got
        in_off, state = self._cp[i]
        inf = _Inflater(self.fh, self.where, in_off, state.copy(), self._cp_off[i])
        end = self._cp_off[i + 1] if i + 1 < len(self._cp_off) else self.size
        assert end is not None
        parts: list[bytes] = []
        while inf.produced < end:
            out = inf.produce()
            if not out:
                raise BundleError(f"{self.where}: the archive changed while it was read")
            parts.append(out)
        data = b"".join(parts)
        self._store_block(i, data)
        return data

    def pread(self, offset: int, size: int) -> bytes:
        """`size` uncompressed bytes at `offset` (after `finish`)."""
        if size == 0:
            return b""
        assert self.size is not None, "pread before the forward pass finished"
        assert self.random_access, "pread of a forward pass without random access"
        i = bisect.bisect_right(self._cp_off, offset) - 1
        views: list[memoryview] = []
        blocks: list[bytes] = []
        pos, end = offset, offset + size
        while pos < end:
            block = self._load_block(i)
            blocks.append(block)  # keep it alive while its view is in use
            start = pos - self._cp_off[i]
            take = min(len(block) - start, end - pos)
            if take <= 0:
                raise BundleError(f"{self.where}: the archive changed while it was read")
            views.append(memoryview(block)[start:start + take])
            pos += take
            i += 1
        return views[0].tobytes() if len(views) == 1 else b"".join(views)


def _human(n: int) -> str:
    from ambientctl.bundle.limits import human

    return human(n)
