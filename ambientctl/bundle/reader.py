"""Read a bundle from a directory or a `.tar.gz`, safely.

Safety: no member may escape the bundle (absolute paths, `..`), links of any kind are
refused rather than followed, and only regular files are read: a device, FIFO, socket,
hard-linked file (directory bundles) or twice-stored member (archives) is refused, never
skipped silently. Sizes are capped (`limits.ReadLimits`, docs/limits-and-safety.md). A
tarball must be gzip-compressed and must hold one top folder (the bundle); its name is
stripped. One written with a member index (`tarindex`: what `collect` writes) is read
member by member through the validated index; any other is read in one forward pass
(`gzindex`), as is every tarball by `verify`. When `manifest.json` is present, each
file's sha256 is checked against it as the file is read; a hand-assembled bundle without
manifest is read by file name (the caller warns once).
"""

from __future__ import annotations

import bisect
import codecs
import hashlib
import os
import stat
import tarfile
import weakref
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from ambientctl.bundle.gzindex import GzipIndex
from ambientctl.bundle.layout import FORMAT_VERSION, MANIFEST, MANIFEST_SCHEMA
from ambientctl.bundle.limits import OVERRIDE_HINT, ReadLimits, human
from ambientctl.bundle.tarindex import INDEX_NAME, IndexedMember, TarIndex, open_index
from ambientctl.bundle.ztunnel_shared import STUB_HEAD_BYTES, is_split, reassemble
from ambientctl.errors import BundleError
from ambientctl.layout import is_config_dump_path, ztunnel_shared_digest
from ambientctl.manifest_index import LazyManifest, index_manifest, index_manifest_chunked
from ambientctl.manifest_model import Manifest, read_manifest


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One integrity problem found by `Bundle.verify()`."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True, slots=True)
class _TarMember:
    """Where one regular file of an archive lies in the uncompressed tar stream."""

    name: str  # as stored (with the top folder)
    offset: int
    size: int
    sha256: str  # computed during the forward pass


_KIND = {
    tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO", tarfile.CONTTYPE: "a contiguous file",
    tarfile.GNUTYPE_SPARSE: "a GNU sparse file",
}
_TEXT_CHUNK = 1 << 20  # bytes read (and decoded) at a time by read_text
_HEADER_MAX = 1 << 20  # bytes of tar headers (pax, GNU long names) between two members
# A manifest this big is indexed, not decoded (a 2-node bundle's is ~0.4 MB; 200 nodes: 48 MB).
LAZY_MANIFEST_BYTES = 4 << 20


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _read_up_to(fd: int, n: int) -> bytes:
    """Up to `n` bytes of `fd`, fewer only at its end (what a buffered `read(n)` returns;
    one `os.read` may return less)."""
    parts: list[bytes] = []
    while n > 0:
        chunk = os.read(fd, n)
        if not chunk:
            break
        parts.append(chunk)
        n -= len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


class Bundle:
    """An opened bundle: an index of its regular files and their bytes on demand.

    Bounded by `ReadLimits` (member size, total size, member count): what exceeds one
    is refused with a `BundleError` (exit 4) naming the file and the limit, before its
    bytes are read. An indexed `.tar.gz` is read through its index (`TarIndex`); any
    other `.tar.gz` in one forward pass (`GzipIndex`) that checks
    every header, hashes every member while streaming it, and verifies the gzip trailer;
    members are then read back from the index without seeking backwards in the stream.
    """

    def __init__(self, location: str, limits: ReadLimits | None = None, *,
                 keep_entries: bool = True, stream_manifest: bool = False) -> None:
        self.location = location
        # False: a manifest entry typed to check a file's hash is not kept (a reader of
        # every file once: `bundle redact`); `manifest_problems` then omits its damage.
        self.keep_entries = keep_entries
        # True: a large manifest is indexed a chunk at a time (memory independent of its
        # size: `bundle verify`, `bundle redact`); False: read whole and indexed by the
        # fast C-loop scan (~3x quicker at 200 nodes: what `trace` waits on)
        self.stream_manifest = stream_manifest
        self.limits = limits if limits is not None else ReadLimits.from_env()
        path = Path(location)
        if not path.exists():
            raise BundleError(
                f"bundle not found: {location}",
                hint="pass --bundle DIR or --bundle FILE.tar.gz (see examples/)",
            )
        self._gz: GzipIndex | None = None
        self._fh: BinaryIO | None = None
        self._lost: str | None = None  # why the archive can no longer be read (`_own_handle`)
        self._ix: TarIndex | None = None  # an indexed archive's member index
        # after verify's forward pass over an indexed archive: (header offsets, sha256s)
        self._verified: tuple[array[int], bytearray] | None = None
        # rel -> where it is: a directory bundle's root (str), or its place in an archive
        self._members: dict[str, str | _TarMember | IndexedMember] = {}
        self._opened: set[str] = set()  # directory bundles: files opened (the total cap)
        self._opened_bytes = 0
        self._shared: tuple[str, bytes] | None = None  # the last ztunnel-shared file read
        # config_dumps read reassembled -> the shared file each referenced (redaction
        # stores them split again under the same entry)
        self.reassembled_from: dict[str, str] = {}
        if path.is_dir():
            self._index_dir(path)
        elif path.is_file():
            self._index_tar(path)
        else:
            raise BundleError(
                f"{location}: not a bundle (neither a directory nor a .tar.gz)",
                hint="a bundle is what `ambientctl collect -o DIR|FILE.tar.gz` writes",
            )
        # The manifest, read once. A large one is indexed, not decoded (`manifest_index`):
        # an entry is typed when its file is read; `manifest` (the document as stored,
        # which redaction rewrites) and `typed_manifest.entries` decode it all when asked.
        self._manifest_indexed = False
        self._manifest_doc: dict[str, object] | None = None
        self._manifest_header: dict[str, object] = {}  # an indexed one's, entries: []
        self.typed_manifest: Manifest | None = None
        self._hashes: dict[str, str] | None = None  # eager: path -> sha256
        self._load_manifest()

    @property
    def manifest(self) -> dict[str, object] | None:
        """The whole document as stored (decoded on first use when it was only indexed)."""
        if self._manifest_doc is None and self._manifest_indexed:
            self._manifest_doc = _neutralised(self._decode_manifest(self._read_bytes(MANIFEST)))
        return self._manifest_doc

    def manifest_parts(self) -> tuple[dict[str, object], Iterator[object]] | None:
        """The manifest as stored, in two parts: the document with `"entries": []` in place
        of its entries, and an iterator over the entries (decoded JSON values, in order);
        None without a manifest. An indexed manifest's entries are decoded a batch at a
        time as the iterator is consumed (issue 12: `bundle redact` rewrites 80k entries
        without holding them); a decoded one's come from the document in memory."""
        typed = self.typed_manifest
        if isinstance(typed, LazyManifest):
            return dict(self._manifest_header), typed.iter_raw()
        doc = self._manifest_doc
        if doc is None:
            return None
        entries = doc.get("entries")
        header = {k: ([] if k == "entries" else v) for k, v in doc.items()}
        return header, iter(entries if isinstance(entries, list) else [])

    @property
    def manifest_problems(self) -> list[str]:
        """Damage found in the manifest (and neutralised): all of it when it was decoded
        whole; for an indexed one, its header's and the entries read so far."""
        typed = self.typed_manifest
        if isinstance(typed, LazyManifest):
            return list(typed.problems_so_far)
        return list(typed.problems) if typed is not None else []

    def _expected(self, rel: str) -> str | None:
        """The manifest's sha256 for `rel`, if it lists one."""
        if self._hashes is not None:
            return self._hashes.get(rel)
        typed = self.typed_manifest
        if isinstance(typed, LazyManifest):
            return typed.sha256_for(rel, keep=self.keep_entries)
        return None

    def _too_big(self, rel: str, size: int) -> BundleError:
        return BundleError(
            f"{self.location}: {rel} is {size} bytes, more than the {human(self.limits.max_member)}"
            " a bundle file may hold (the member-size limit)", hint=OVERRIDE_HINT)

    def _count(self, total: int, n: int) -> None:
        if total > self.limits.max_bundle:
            raise BundleError(
                f"{self.location}: its files hold more than {human(self.limits.max_bundle)} "
                "(the total-size limit)", hint=OVERRIDE_HINT)
        if n > self.limits.max_members:
            raise BundleError(
                f"{self.location}: more than {self.limits.max_members} files "
                "(the member-count limit)", hint=OVERRIDE_HINT)

    # ------------------------------------------------------------------ indexing
    def _index_dir(self, root: Path) -> None:
        """List the tree without a stat per file (issue 12: at 70k files the stats were most
        of a trace's start-up). `scandir` reports each entry's type from the directory itself
        (d_type), so links, FIFOs, sockets and devices are still refused here; what needs the
        inode (hard links, the size caps) is checked when a file is opened (`_checked`),
        before its bytes are read."""
        # Containment needs no resolve(): a symbolic link anywhere below the root is refused
        # and never followed, so every directory listed lies inside the root.
        # A file's value is the root, one shared string (its path is root/rel): a path per
        # file was 10 MB of the listing at 200 nodes (issue 12).
        top = str(root)
        pending = [(top, "")]
        members, cap = self._members, self.limits.max_members
        while pending:
            dirpath, prefix = pending.pop()
            try:
                entries = list(os.scandir(dirpath))  # paths() sorts; listing order is free
            except OSError as exc:
                raise BundleError(f"{self.location}: {prefix or '.'} cannot be listed "
                                  f"({exc.strerror})") from exc
            subdirs = []
            for entry in entries:
                if entry.is_file(follow_symlinks=False):  # most entries: one d_type test
                    if not prefix and entry.name == INDEX_NAME:
                        continue  # an extracted indexed archive's index: not a bundle file
                    if len(members) >= cap:
                        self._count(0, len(members) + 1)
                    members[prefix + entry.name] = top
                    continue
                rel = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append((entry.path, rel + "/"))
                    continue
                if entry.is_symlink():
                    raise BundleError(
                        f"{self.location}: {rel} is a symbolic link; bundles hold regular files only"
                    )
                mode = entry.stat(follow_symlinks=False).st_mode  # rare: name its kind
                raise BundleError(
                    f"{self.location}: {rel} is {_file_kind(mode)}; bundles hold "
                    "regular files only")
            pending.extend(reversed(subdirs))

    def _checked(self, rel: str, st: os.stat_result) -> None:
        """The checks of an opened directory-bundle file that need its inode: no other
        name for it (a hard link may be another file on this machine), its size within the
        member cap, and the bytes opened so far within the total cap."""
        if st.st_nlink > 1:
            raise BundleError(
                f"{self.location}: {rel} has {st.st_nlink} hard links; bundles hold "
                "files of their own only (a hard link may be another file on this "
                "machine)", hint="copy the bundle (cp -r) and open the copy")
        # st_size, not blocks: a sparse 2 GiB file is refused before it is read.
        if st.st_size > self.limits.max_member:
            raise self._too_big(rel, st.st_size)
        if rel not in self._opened:
            self._opened.add(rel)
            self._opened_bytes += st.st_size
            self._count(self._opened_bytes, len(self._members))

    def _index_tar(self, path: Path) -> None:
        """One forward pass over the archive: headers checked, members hashed, trailer
        verified; nothing but the index (and a bounded block cache) is kept."""
        try:
            fh = open(path, "rb")  # noqa: SIM115 - kept open until close()
        except OSError as exc:
            raise BundleError(f"{self.location}: cannot be opened ({exc.strerror})") from exc
        self._fh = fh
        _ARCHIVES.add(self)
        try:
            self._ix = open_index(fh, self.location, self.limits)
            if self._ix is not None:
                self._members.update(self._ix.members)
            else:
                self._scan_tar(fh)
        except BaseException:
            self.close()
            raise

    def _scan_tar(self, fh: BinaryIO,
                  record: Callable[[str, tarfile.TarInfo, bytes], None] | None = None) -> None:
        """The forward pass. Each regular file is listed (`_TarMember`) and the stream kept
        for random access; with `record`, `record(rel, member, sha256 digest)` receives
        each instead and nothing is kept (`_forward_pass_against_index`)."""
        fh.seek(0)
        gz = GzipIndex(fh, self.location, limit=self.limits.max_bundle, limit_hint=OVERRIDE_HINT,
                       random_access=record is None)
        if record is None:
            self._gz = gz
        tops: set[str] = set()
        seen: set[str] = set()
        total = 0
        try:
            tar = tarfile.open(fileobj=gz, mode="r|")  # type: ignore[call-overload]
            while True:
                gz.read_limit = gz.delivered + _HEADER_MAX
                m = tar.next()
                gz.read_limit = None
                if m is None:
                    break
                # A stream-mode TarFile keeps every TarInfo it has seen (~1.5 KiB each: at
                # 80k members, most of a trace's peak memory); the index below is all we keep.
                tar.members.clear()
                p = PurePosixPath(m.name)
                if p.is_absolute() or ".." in p.parts:
                    raise BundleError(f"{self.location}: member {m.name!r} escapes the bundle")
                if m.issym() or m.islnk():
                    raise BundleError(
                        f"{self.location}: member {m.name!r} is a link; bundles hold regular "
                        "files only")
                if not (m.isreg() or m.isdir()):
                    raise BundleError(
                        f"{self.location}: member {m.name!r} is "
                        f"{_KIND.get(m.type, f'of tar type {m.type!r}')}; bundles hold "
                        "regular files only")
                if p.parts:
                    tops.add(p.parts[0])
                key = p.as_posix()
                if key in seen:
                    raise BundleError(
                        f"{self.location}: member {m.name!r} is stored twice; which copy is "
                        "the bundle's is ambiguous", hint="re-pack the bundle from its directory")
                seen.add(key)
                self._count(total + m.size, len(seen))
                if not m.isreg():
                    continue
                rel = "/".join(p.parts[1:])
                if rel == INDEX_NAME:
                    rel = ""  # an indexed archive's index: checked, hashed, not listed
                if m.size > self.limits.max_member:
                    raise self._too_big(rel or m.name, m.size)
                total += m.size
                digest = hashlib.sha256()
                stream = tar.extractfile(m)
                assert stream is not None
                got = 0
                while chunk := stream.read(1 << 20):
                    digest.update(chunk)
                    got += len(chunk)
                if got != m.size:
                    raise BundleError(
                        f"{self.location}: member {m.name!r} ends early (truncated archive)")
                if rel and record is not None:
                    record(rel, m, digest.digest())
                elif rel:
                    self._members[rel] = _TarMember(m.name, m.offset_data, m.size,
                                                    digest.hexdigest())
            gz.finish()
        except tarfile.TarError as exc:
            raise BundleError(f"{self.location}: unreadable archive ({exc})") from exc
        except EOFError as exc:
            raise BundleError(f"{self.location}: the archive ends early ({exc})") from exc
        if len(tops) != 1:
            raise BundleError(
                f"{self.location}: expected one top folder in the archive, found {len(tops)}"
            )

    def _manifest_size(self) -> int:
        """The stored size of manifest.json, without reading it."""
        member = self._members[MANIFEST]
        if isinstance(member, (IndexedMember, _TarMember)):
            return member.size
        fh, st = self._open_file(MANIFEST, member)
        fh.close()
        return st.st_size

    def _load_manifest(self) -> None:
        if MANIFEST not in self._members:
            return
        indexed = None
        size = self._manifest_size()
        if size >= LAZY_MANIFEST_BYTES and self.stream_manifest:
            # Indexed a chunk at a time (issue 12: never the 48 MB document at once); a
            # shape the chunked scan cannot prove is indexed from the whole bytes below.
            indexed = index_manifest_chunked(self._manifest_span, size)
            member = self._members[MANIFEST]
            if indexed is not None and isinstance(member, IndexedMember) and self._ix:
                self._ix.check_after(MANIFEST)  # what `read` checks past the data
        raw = b""
        if indexed is None:
            raw = self._read_bytes(MANIFEST)
            indexed = (index_manifest(raw, self._manifest_span)
                       if len(raw) >= LAZY_MANIFEST_BYTES else None)
        if indexed is not None:
            header, typed = indexed
            self._check_schema(header)
            self._manifest_indexed = True  # its bytes are read again, span by span
            self._manifest_header = _neutralised(header)
            self.typed_manifest = typed
            return
        doc = self._decode_manifest(raw)
        self.typed_manifest = read_manifest(doc)  # names the damage _neutralised drops
        self._manifest_doc = _neutralised(doc)
        self._hashes = {e.path: e.sha256 for e in self.typed_manifest.entries
                        if e.path and e.sha256}

    def _manifest_span(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of manifest.json, read again (an indexed entry being typed)."""
        member = self._members[MANIFEST]
        if isinstance(member, IndexedMember):
            if self._ix is None:
                raise BundleError(f"{self.location}: closed; {MANIFEST} cannot be read again")
            return self._ix.pread(MANIFEST, start, end - start)
        if isinstance(member, _TarMember):
            if self._gz is None:
                raise BundleError(f"{self.location}: closed; {MANIFEST} cannot be read again")
            end = min(end, member.size)
            return self._gz.pread(member.offset + start, max(0, end - start))
        fh, _st = self._open_file(MANIFEST, member)
        with fh:
            fh.seek(start)
            return fh.read(max(0, end - start))

    def _decode_manifest(self, raw: bytes) -> dict[str, object]:
        doc = load_json(raw.decode("utf-8", errors="replace"), f"{self.location}/{MANIFEST}")
        if not isinstance(doc, dict):
            raise BundleError(f"{self.location}/{MANIFEST}: not a JSON object")
        self._check_schema(doc)
        return doc

    def _check_schema(self, doc: dict[str, object]) -> None:
        schema = str(doc.get("schema", ""))
        if schema != MANIFEST_SCHEMA:
            if schema.startswith("ambientctl.bundle/v"):
                raise BundleError(
                    f"{self.location}/{MANIFEST}: bundle format {schema} is newer than this "
                    f"ambientctl understands ({MANIFEST_SCHEMA})",
                    hint="upgrade ambientctl",
                )
            raise BundleError(f"{self.location}/{MANIFEST}: unknown schema {schema!r}")
        version = doc.get("format_version")
        if isinstance(version, int) and not isinstance(version, bool) \
                and version > FORMAT_VERSION:
            raise BundleError(
                f"{self.location}/{MANIFEST}: bundle format_version {version} is newer than "
                f"this ambientctl reads (1 to {FORMAT_VERSION})", hint="upgrade ambientctl")

    # ------------------------------------------------------------------ reading
    def _own_handle(self) -> None:
        """In a forked child (doctor's worker pool): read the archive through a descriptor
        of its own. A descriptor inherited over fork shares its file offset with the parent
        and every sibling, and members are read by seek + read: two processes reading at
        once would get each other's bytes. The file must be the one indexed (same inode)."""
        old = self._fh
        if old is None:
            return
        try:
            fh = open(self.location, "rb")  # noqa: SIM115 - kept open until close()
        except OSError as exc:
            self.close()
            self._lost = f"cannot be re-opened in a worker process ({exc.strerror})"
            return
        a, b = os.fstat(old.fileno()), os.fstat(fh.fileno())
        old.close()  # this process's copy only
        if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
            fh.close()
            self._fh = None
            self.close()
            self._lost = "was replaced while it was read"
            return
        self._fh = fh
        for holder in (self._ix, self._gz):
            if holder is not None:
                holder.fh = fh

    def _read_bytes(self, rel: str) -> bytes:
        if self._lost is not None:
            raise BundleError(f"{self.location}: {self._lost}; {rel} cannot be read")
        member = self._members[rel]
        if isinstance(member, IndexedMember):
            if self._ix is None:
                raise BundleError(f"{self.location}: closed; {rel} cannot be read")
            return self._ix.read(rel)
        if isinstance(member, _TarMember):
            assert self._gz is not None
            return self._gz.pread(member.offset, member.size)
        return self._read_file(rel, member)

    def _open_file(self, rel: str, root: str) -> tuple[BinaryIO, os.stat_result]:
        """A directory bundle's regular file (`root`/`rel`), opened without following a
        link."""
        fd, st = self._open_fd(rel, root)
        return os.fdopen(fd, "rb"), st

    def _open_fd(self, rel: str, root: str) -> tuple[int, os.stat_result]:
        """`_open_file`'s descriptor, checked, without a buffered file object around it
        (`read_text` reads a small file in one `os.read`)."""
        full = f"{root}/{rel}"
        try:
            fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            raise BundleError(f"{self.location}: {rel} cannot be read ({exc.strerror})") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise BundleError(f"{self.location}: {rel} is {_file_kind(st.st_mode)}; "
                                  "bundles hold regular files only")
            self._checked(rel, st)
        except BaseException:
            os.close(fd)
            raise
        return fd, st

    def _read_file(self, rel: str, root: str) -> bytes:
        """A directory bundle's file, read with the member cap enforced on what is read
        (the file may have grown, or been swapped for a FIFO, since it was indexed)."""
        fd, st = self._open_fd(rel, root)
        return self._read_fd(rel, fd, st)

    def _read_fd(self, rel: str, fd: int, st: os.stat_result) -> bytes:
        """`_read_file` of a descriptor `_open_fd` opened (and closes): straight from the
        descriptor, no buffered reader around it (`read_text` of a small file too)."""
        try:
            # Ask for the size fstat reports (+1 to notice growth), not for the cap: a
            # read(cap) allocates a cap-sized buffer first (512 MiB by default).
            cap = self.limits.max_member + 1
            data = _read_up_to(fd, min(st.st_size + 1, cap))
            if len(data) > st.st_size and len(data) < cap:  # grew since fstat: the rest
                data += _read_up_to(fd, cap - len(data))
        finally:
            os.close(fd)
        if len(data) > self.limits.max_member:
            raise self._too_big(rel, len(data))
        return data

    def paths(self) -> list[str]:
        """All regular files, bundle-relative, sorted."""
        return sorted(self._members)

    def has(self, rel: str) -> bool:
        """Is `rel` in the bundle?"""
        return rel in self._members

    def read_bytes(self, rel: str, *, verify: bool = True, stored: bool = False) -> bytes:
        """The bytes of `rel`, checked against the manifest's sha256 when it has one.

        A ztunnel config_dump stored split (format 2) comes back reassembled, as ztunnel
        printed it (`stored=True`: the stub as stored)."""
        if rel not in self._members:
            raise BundleError(f"{self.location}: {rel} is missing from the bundle")
        data = self._read_bytes(rel)
        expected = self._expected(rel)
        if verify and expected is not None and hashlib.sha256(data).hexdigest() != expected:
            raise self._hash_mismatch(rel)
        if not stored and is_config_dump_path(rel) and is_split(data):
            data, self.reassembled_from[rel] = reassemble(data, self._shared_bytes, rel,
                                                          self.location)
        return data

    def _shared_bytes(self, path: str) -> bytes:
        """A ztunnel-shared file a stub references (hash-checked by the caller), the last one
        kept: every node's stub usually references the same."""
        if self._shared is not None and self._shared[0] == path:
            return self._shared[1]
        if path not in self._members:
            raise BundleError(
                f"{self.location}: {path} is missing; the ztunnel config_dumps that "
                "reference it cannot be reassembled",
                hint="the bundle is incomplete: copy it again from where it was collected")
        data = self.read_bytes(path)
        self._shared = (path, data)
        return data

    def _hash_mismatch(self, rel: str) -> BundleError:
        return BundleError(
            f"{self.location}: {rel} does not match its sha256 in manifest.json",
            hint="the bundle was modified or damaged after collection; "
            "`ambientctl bundle verify` lists every mismatch",
        )

    def read_text(self, rel: str) -> str:
        """The file decoded as UTF-8 (undecodable bytes become U+FFFD, parsers then object).

        A directory bundle's file is read, hashed and decoded chunk by chunk into one
        growing string, so a 70 MB dump costs its size once, not twice (bytes, then str).
        """
        member = self._members.get(rel)
        if not isinstance(member, str) or (is_config_dump_path(rel) and is_split(
                self._head(rel, STUB_HEAD_BYTES))):  # a stub: read whole, reassembled
            return self.read_bytes(rel).decode("utf-8", errors="replace")
        expected = self._expected(rel)
        fd, st = self._open_fd(rel, member)
        if st.st_size < _TEXT_CHUNK:
            return self._small_text(rel, fd, st, expected)
        digest = hashlib.sha256() if expected is not None else None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        cap, size = self.limits.max_member, 0
        text = ""
        fh = os.fdopen(fd, "rb")
        with fh:
            # `text += piece` on a string nobody else holds grows it in place (CPython's
            # BINARY_OP_INPLACE_ADD_UNICODE; realloc moves big blocks without copying):
            # the file is held once, not as bytes plus str. The specialisation needs a
            # `while True` loop (its backward jump warms the code up; a `while x := ...`
            # loop's does not, and every `+=` would copy: quadratic).
            # tests/test_big_node_lazy.py pins the peak.
            while True:
                chunk = fh.read(_TEXT_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > cap:
                    raise self._too_big(rel, size)
                if digest is not None:
                    digest.update(chunk)
                text += decoder.decode(chunk)
        text += decoder.decode(b"", final=True)
        if digest is not None and digest.hexdigest() != expected:
            raise self._hash_mismatch(rel)
        return text

    def _small_text(self, rel: str, fd: int, st: os.stat_result, expected: str | None) -> str:
        """`read_text` of a file fstat found smaller than one chunk (nearly every file of a
        bundle: doctor reads ~55k at 200 nodes): read whole (`_read_fd`, the same member
        cap), hashed and decoded once, without an incremental decoder per file (issue 12);
        one-shot UTF-8 decoding with `replace` gives what the incremental decoder gives
        over the same bytes."""
        data = self._read_fd(rel, fd, st)
        if expected is not None and hashlib.sha256(data).hexdigest() != expected:
            raise self._hash_mismatch(rel)
        return data.decode("utf-8", errors="replace")

    def verify(self) -> list[Mismatch]:
        """Recheck every hash the manifest lists; return what does not match, path-sorted.

        Reported: a listed file that is missing, a file whose size or sha256 differs from
        its entry, and a regular file the manifest does not list (something was added).
        Raises `BundleError` when there is no manifest to verify against.
        """
        return self.verify_counted()[0]

    def verify_counted(self) -> tuple[list[Mismatch], int]:
        """`verify()`, and how many entries name a file (what `bundle verify` says it checked).

        An indexed manifest's entries are decoded one at a time and dropped once their file
        is checked (`LazyManifest.iter_entries`): memory holds the listed paths, not every
        typed entry (issue 12). Same findings, in the same order, as decoding them all.
        """
        typed = self.typed_manifest
        if typed is None:
            raise BundleError(
                f"{self.location}: no {MANIFEST}; nothing to verify against",
                hint="hand-assembled bundles carry no hashes",
            )
        if self._ix is not None and self._verified is None:
            self._forward_pass_against_index(self._ix)
        problems: list[Mismatch] = []
        listed: set[str] = {MANIFEST}
        checked = 0
        entries = typed.iter_entries() if isinstance(typed, LazyManifest) else typed.entries
        for entry in entries:
            if not entry.path:
                continue
            rel = entry.path
            checked += 1
            listed.add(rel)
            if rel not in self._members:
                problems.append(Mismatch(rel, "missing: listed in manifest.json"))
                continue
            length, digest = self._digest(rel)
            if entry.sha256 and digest != entry.sha256:
                problems.append(Mismatch(rel, f"sha256 {digest} != manifest {entry.sha256}"))
            elif entry.size is not None and entry.size != length:
                problems.append(Mismatch(rel, f"size {length} != manifest {entry.size}"))
            named = ztunnel_shared_digest(rel)
            if named is not None and digest != named:
                problems.append(Mismatch(rel, f"sha256 {digest} is not the one it is named after"))
        problems += self._split_dump_problems()
        for rel, member in self._members.items():
            if rel not in listed:
                if isinstance(member, str):  # what listing no longer stats: opened, not read
                    self._open_file(rel, member)[0].close()
                problems.append(Mismatch(rel, "not listed in manifest.json"))
        return sorted(problems, key=lambda m: m.path), checked

    def _split_dump_problems(self) -> list[Mismatch]:
        """Each ztunnel config_dump stored split must reassemble into the dump collected:
        its shared file present, named after its content, and the result of the recorded
        size and sha256 (format 2; whole dumps have nothing to check here)."""
        problems = []
        prefix = f"{self.location}: "
        for rel in sorted(self._members):
            if not is_config_dump_path(rel) or not is_split(self._head(rel, STUB_HEAD_BYTES)):
                continue
            try:
                self.read_bytes(rel, verify=False)  # the stub's own hash: checked above
            except BundleError as exc:
                why = str(exc.args[0] if exc.args else exc)
                problems.append(Mismatch(rel, why.removeprefix(prefix).removeprefix(f"{rel}: ")))
        return problems

    def _head(self, rel: str, n: int) -> bytes:
        """The first `n` bytes of a file (unchecked: its hash is checked by the caller)."""
        member = self._members[rel]
        if isinstance(member, IndexedMember) and self._ix is not None:
            return self._ix.pread(rel, 0, min(n, member.size))
        if isinstance(member, _TarMember) and self._gz is not None:
            return self._gz.pread(member.offset, min(n, member.size))
        if isinstance(member, str):
            fh, _st = self._open_file(rel, member)
            with fh:
                return fh.read(n)
        return self._read_bytes(rel)[:n]

    def _forward_pass_against_index(self, ix: TarIndex) -> None:
        """`verify` on an indexed archive: read it whole as a plain tar.gz (every header,
        member and gzip trailer), then require the index to describe exactly that.

        Kept: each member's sha256, in a bytearray aligned with the index (whose members
        are in header order: `TarIndex` refuses any other), found by bisection on the
        header offsets; the archive is still read through the index afterwards (issue 12:
        a second listing of 80k members plus the pass's checkpoints and block cache were
        ~100 MiB at 200 nodes). The first disagreement in path order is reported."""
        assert self._fh is not None
        indexed = ix.members
        heads = array("q", (m.header for m in indexed.values()))
        digests = bytearray(32 * len(heads))
        found = bytearray(len(heads))
        bad: list[str] = []  # in the archive, but not where or as the index says

        def record(rel: str, m: tarfile.TarInfo, digest: bytes) -> None:
            listed = indexed.get(rel)
            if listed is None or (m.name, m.size, m.offset - ix.body_raw) != (
                    listed.name, listed.size, listed.header):
                bad.append(rel)
                return
            k = bisect.bisect_left(heads, listed.header)
            found[k] = 1
            digests[32 * k:32 * k + 32] = digest

        self._scan_tar(self._fh, record)
        in_archive = set(bad)
        problems = in_archive | {rel for k, rel in enumerate(indexed) if not found[k]}
        if problems:
            rel = min(problems)
            if rel in indexed and rel in in_archive:
                raise BundleError(
                    f"{self.location}: its member index does not match the archive at "
                    f"{rel!r}", hint="re-pack the bundle from its directory")
            what = "lists" if rel not in in_archive else "omits"
            raise BundleError(f"{self.location}: its member index {what} {rel!r}",
                              hint="re-pack the bundle from its directory")
        self._verified = (heads, digests)

    def _digest(self, rel: str) -> tuple[int, str]:
        """(size, sha256) of a file, hashed while streaming (never the whole file at once)."""
        member = self._members[rel]
        if isinstance(member, _TarMember):
            return member.size, member.sha256  # hashed by the forward pass
        if isinstance(member, IndexedMember):
            if self._verified is not None:  # hashed by verify's forward pass
                heads, digests = self._verified
                k = bisect.bisect_left(heads, member.header)
                return member.size, digests[32 * k:32 * k + 32].hex()
            data = self._read_bytes(rel)
            return len(data), hashlib.sha256(data).hexdigest()
        digest = hashlib.sha256()
        length = 0
        fh, _st = self._open_file(rel, member)
        with fh:
            while chunk := fh.read(1 << 20):
                length += len(chunk)
                if length > self.limits.max_member:
                    raise self._too_big(rel, length)
                digest.update(chunk)
        return length, digest.hexdigest()

    def close(self) -> None:
        """Release the archive handle, if any."""
        self._gz = None
        self._ix = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None


_ARCHIVES: weakref.WeakSet[Bundle] = weakref.WeakSet()
"""Open archive bundles, so that a forked child re-opens each one (`Bundle._own_handle`)."""


def _own_handles_after_fork() -> None:
    for bundle in list(_ARCHIVES):
        bundle._own_handle()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_own_handles_after_fork)


def _neutralised(doc: dict[str, object]) -> dict[str, object]:
    """The document with damaged lists emptied: redaction walks the stored document
    (`read_manifest` reports the damage)."""
    for key in ("entries", "targets"):
        if not isinstance(doc.get(key, []), list):
            doc[key] = []
    return doc


def load_json(text: str, where: str) -> Any:
    """Decode a JSON document whose nesting is bounded (see `parse._common.load_json`)."""
    from ambientctl.jsondoc import load_json as _load

    return _load(text, where, what="JSON document")


def open_bundle(location: str, *, keep_entries: bool = True,
                stream_manifest: bool = False) -> Bundle:
    """Open a bundle directory or tarball (raises `BundleError` with a hint);
    `keep_entries`, `stream_manifest`: see `Bundle`."""
    return Bundle(location, keep_entries=keep_entries, stream_manifest=stream_manifest)
