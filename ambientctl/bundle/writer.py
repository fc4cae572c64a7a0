"""Write a bundle: raw outputs + manifest, as a directory or a deterministic `.tar.gz`.

Atomicity: everything is written into `<out>.partial/` and renamed to `<out>` only once
the manifest is written, so an interrupted or crashed run never leaves something that
looks like a complete bundle. A tarball is built from that staging directory into a
temporary file created exclusively beside the target (`mkstemp`: O_CREAT|O_EXCL, so a
planted symlink or file is never followed or truncated) and then linked to `<out>`, which
fails rather than replace anything that appeared there meanwhile.

Write errors (a full disk, a quota, EIO) never discard what was written: the staging
directory is kept, a manifest marked partial is attempted in it, and a `BundleError` names
the file that failed, the reason and where the rest is.

Storage rules (the bundle-layout contract):
- A successful command's stdout is stored byte for byte; an empty stdout is a 0-byte file
  ("empty" is not "missing").
- A command that did not succeed stores no file (`path: null` in its manifest entry), so
  that no reader mistakes an error's partial output for the real thing; its stderr, exit
  code and status are in the manifest.

Deterministic tarball: members sorted, regular files only, mtime = the manifest's
`created_at`, uid/gid 0 with empty owner names, mode 0644, gzip header mtime 0 and no file
name, one top folder (the bundle name). Two tarballs of the same directory are
byte-identical, so a bundle's hash names its content.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from ambientctl.bundle.layout import MANIFEST
from ambientctl.bundle.manifest import (
    EntrySpool,
    Manifest,
    component_versions,
    entry_for,
    file_entry,
    sha256_hex,
)
from ambientctl.bundle.tarindex import write_indexed_tar
from ambientctl.bundle.ztunnel_shared import split_dump
from ambientctl.errors import BundleError, UsageError
from ambientctl.layout import is_config_dump_path, ztunnel_shared_digest
from ambientctl.raw import RawOutput, RawStatus

TAR_SUFFIXES = (".tar.gz", ".tgz")
# gzip level of written tarballs. Measured on a 21x-inflated example bundle
# (benchmarks/bench_bundle_read.py, loaded 2-core machine): level 9 took 4.06 s for
# 1,513,624 bytes, level 6 2.95 s for 1,532,761 (1.4x the time for 1.3% smaller output);
# 6 is also gzip(1)'s default.
GZIP_LEVEL = 6


def is_tarball_name(out: str) -> bool:
    """Does `out` ask for a tarball (by its suffix)?"""
    return out.endswith(TAR_SUFFIXES)


def bundle_name(out: str) -> str:
    """The bundle's name: the output's base name without `.tar.gz`/`.tgz`."""
    base = os.path.basename(os.path.normpath(out))
    for suffix in TAR_SUFFIXES:
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def rfc3339(moment: datetime) -> str:
    """UTC, second precision, `Z` suffix: the manifest's `created_at` format."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(created_at: str) -> int:
    return int(datetime.strptime(created_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())


def _safe_rel(path: str) -> PurePosixPath:
    rel = PurePosixPath(path)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise BundleError(f"refusing to write {path!r}: not a relative bundle path")
    return rel


@dataclass(frozen=True)
class WrittenBundle:
    """What was written: where, the manifest without its entries (`header`), how many
    entries it has, the entries that failed and how many the run never got to.

    The entries themselves are not held (a 500-node cluster has about a million): they
    are in the written manifest, which `manifest` reads back on demand.
    """

    path: str
    header: dict[str, Any]  # the manifest document minus `entries`
    entry_count: int
    failed: tuple[dict[str, Any], ...]
    not_run: int = 0  # entries skipped because the run was interrupted before them

    @property
    def partial(self) -> bool:
        """Some planned command did not succeed (or the run was interrupted)."""
        return bool(self.header.get("partial"))

    @property
    def manifest(self) -> dict[str, Any]:
        """The whole manifest document, read back from the bundle (O(entries) memory:
        for tests and tools, not for the collection path)."""
        if not is_tarball_name(self.path):
            with open(os.path.join(self.path, MANIFEST), "rb") as fh:
                doc: dict[str, Any] = json.load(fh)
                return doc
        with tarfile.open(self.path, mode="r:gz") as tar:
            member = tar.extractfile(f"{bundle_name(self.path)}/{MANIFEST}")
            if member is None:
                raise BundleError(f"{self.path}: no {MANIFEST}")
            loaded: dict[str, Any] = json.load(member)
            return loaded


@dataclass(frozen=True, slots=True)
class ExtraFile:
    """A file copied into the bundle as is (e.g. `cluster/pods.json` from --cluster-dir)."""

    path: str
    data: bytes
    source: str


FAILED_STATUSES = frozenset(
    {
        RawStatus.NONZERO_EXIT,
        RawStatus.NOT_FOUND,
        RawStatus.TIMEOUT,
        RawStatus.TRANSPORT_ERROR,
        RawStatus.TRUNCATED,
    }
)


def check_output_path(out: str) -> None:
    """Refuse to overwrite anything: the output and its staging name must be free."""
    if os.path.lexists(out):
        if os.path.isdir(out) and not is_tarball_name(out) and not os.listdir(out):
            return  # an empty directory is fine (`mkdir out && collect -o out`)
        raise UsageError(f"{out} already exists", hint="choose another -o or remove it first")
    staging = out + ".partial"
    if os.path.lexists(staging):
        raise UsageError(
            f"{staging} exists (left by an interrupted collection)",
            hint=f"remove it: rm -r {staging}",
        )
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise UsageError(f"directory {parent} does not exist")


SHARED_SOURCE = "ztunnel config_dump sections every node holds alike (stored once)"


class SharedDumps:
    """ztunnel config_dumps stored split as they are written (`ztunnel_shared`): each
    distinct shared-sections file is written once into the staging directory, and only
    its (size, sha256) is kept for its manifest entry; a dump is never held past its
    write. Thread-safe: targets finish on the runner's worker threads."""

    def __init__(self, staging: Path, *, enabled: bool = True) -> None:
        self.staging = staging
        self.enabled = enabled
        self._lock = threading.Lock()
        self.written: dict[str, tuple[int, str]] = {}  # shared path -> (size, sha256)

    def stored_form(self, path: str, stdout: bytes) -> bytes:
        """The bytes to store at `path`: a config_dump's stub once its shared sections are
        on disk, anything else (or a dump that does not split) as it is."""
        if not self.enabled or not is_config_dump_path(path):
            return stdout
        split = split_dump(stdout)
        if split is None:
            return stdout
        with self._lock:  # one writer per content: the first dump with it writes it
            if split.shared_path not in self.written:
                dest = self.staging.joinpath(*_safe_rel(split.shared_path).parts)
                dest.parent.mkdir(parents=True, exist_ok=True)
                with open(dest, "xb") as fh:
                    fh.write(split.shared)
                digest = ztunnel_shared_digest(split.shared_path)  # named after its hash
                assert digest is not None
                self.written[split.shared_path] = (len(split.shared), digest)
        return split.stub

    def entries(self, started_at: str) -> list[dict[str, Any]]:
        """Manifest entries of the shared files written, path-sorted."""
        return [{**file_entry(path, b"", source=SHARED_SOURCE, started_at=started_at),
                 "size": size, "sha256": sha}
                for path, (size, sha) in sorted(self.written.items())]


class Spill:
    """The staging directory of a bundle being collected, filled as targets finish.

    `Runner` hands each finished target's outputs to `__call__`, which writes their
    stdout to `OUT.partial/<path>` and returns them with `stdout` dropped and
    `spilled=(size, sha256)`; `write_bundle(..., spill=...)` then only adds the manifest.
    So a collection holds at most its running targets' outputs in memory, whatever the
    size of the cluster. `discard()` removes the staging directory (nothing was written).
    """

    def __init__(self, out: str, *, split_dumps: bool = True) -> None:
        check_output_path(out)
        self.out = out
        self.staging = Path(out + ".partial")
        _mkdir_staging(self.staging)
        self.shared = SharedDumps(self.staging, enabled=split_dumps)
        self._lock = threading.Lock()
        self.error: OSError | None = None
        self.failed_path: str | None = None

    def __call__(self, output: RawOutput) -> RawOutput:
        if output.status is not RawStatus.OK or self.error is not None:
            return output
        rel = _safe_rel(output.path)
        dest = self.staging.joinpath(*rel.parts)
        try:
            data = self.shared.stored_form(output.path, output.stdout)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "xb") as fh:  # never through a link, never twice
                fh.write(data)
        except OSError as exc:
            with self._lock:  # a full disk: keep this output in memory, stop spilling
                if self.error is None:
                    self.error, self.failed_path = exc, str(dest)
            return output
        return replace(output, stdout=b"", spilled=(len(data), sha256_hex(data)))

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def write_bundle(
    out: str,
    *,
    outputs: Iterable[RawOutput],
    created_at: str,
    collection: dict[str, Any],
    targets: list[dict[str, Any]],
    extra_files: Iterable[ExtraFile] = (),
    not_kept: Iterable[str] = (),
    interrupted: bool = False,
    spill: Spill | None = None,
    split_dumps: bool = True,
) -> WrittenBundle:
    """Write `outputs` (+ extra files) and the manifest to `out` (a directory or .tar.gz).

    With `spill`, outputs already written to its staging directory are not written again
    (and the spill's own `split_dumps` applies). `split_dumps`: store ztunnel config_dumps
    split, their cluster-wide sections once (`SharedDumps`).
    Returns the manifest and the failed entries; raises `UsageError` when `out` exists.
    """
    # the run's own set as it is (a path per refused output): not copied once more
    skip = not_kept if isinstance(not_kept, set | frozenset) else set(not_kept)
    if spill is None:
        check_output_path(out)
        staging = Path(out + ".partial")
        _mkdir_staging(staging)
    else:  # outputs a failed spill kept in memory are written below (and fail loudly)
        staging = spill.staging
    shared = spill.shared if spill is not None else SharedDumps(staging, enabled=split_dumps)
    manifest = Manifest(created_at=created_at, collection=collection, targets=targets)
    writing = str(staging)
    failed: list[dict[str, Any]] = []
    not_run = 0
    with EntrySpool() as spool:
        try:
            for output in outputs:
                stored = output.status is RawStatus.OK and output.path not in skip
                if not stored and output.spilled is not None:
                    # spilled when its target finished, refused since (a netns read under
                    # two roles): the file must not stay in the bundle
                    staging.joinpath(*_safe_rel(output.path).parts).unlink(missing_ok=True)
                if stored and output.spilled is None:
                    rel = _safe_rel(output.path)
                    dest = staging.joinpath(*rel.parts)
                    writing = str(dest)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    data = shared.stored_form(output.path, output.stdout)
                    dest.write_bytes(data)
                    if data is not output.stdout:  # the manifest describes what is stored
                        output = replace(output, stdout=data)
                entry = entry_for(output, stored=stored)
                spool.append(entry)
                if entry["status"] in FAILED_STATUSES:
                    failed.append(entry)
                elif output.status is RawStatus.SKIPPED and output.note == "interrupted":
                    not_run += 1
            for shared_entry in shared.entries(created_at):
                spool.append(shared_entry)
            for extra in sorted(extra_files, key=lambda e: e.path):
                if extra.path == "cluster/pods.json":
                    manifest.components = component_versions(extra.data)
                rel = _safe_rel(extra.path)
                dest = staging.joinpath(*rel.parts)
                writing = str(dest)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(extra.data)
                spool.append(
                    file_entry(extra.path, extra.data, source=extra.source, started_at=created_at)
                )
            manifest.partial = interrupted or bool(failed)
            writing = str(staging / MANIFEST)
            with open(staging / MANIFEST, "wb") as fh:
                spool.write_manifest(fh, manifest)
            header = manifest.header(spool.bundle_id())
        except OSError as exc:
            raise _kept_after_write_error(staging, manifest, spool, writing, exc) from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        count = spool.count
    _finish(staging, out, mtime=_epoch(created_at))
    return WrittenBundle(path=out, header=header, entry_count=count, failed=tuple(failed),
                         not_run=not_run)


def _mkdir_staging(staging: Path) -> None:
    try:
        staging.mkdir()
    except FileExistsError:
        raise UsageError(
            f"{staging} exists (left by an interrupted collection)",
            hint=f"remove it: rm -r {staging}",
        ) from None
    except OSError as exc:
        raise BundleError(f"cannot create {staging}: {exc.strerror or exc}") from None


def _kept_after_write_error(
    staging: Path, manifest: Manifest, spool: EntrySpool, writing: str, exc: OSError
) -> BundleError:
    """The error for a failed write; what was written stays in `staging`, with a manifest
    marked partial when the disk still takes one (entries up to the failed file)."""
    manifest.partial = True
    manifest.collection = {
        **manifest.collection,
        "write_error": f"{writing}: {exc.strerror or exc}",
    }
    kept = "with a partial manifest"
    try:
        with open(staging / MANIFEST, "wb") as fh:
            spool.write_manifest(fh, manifest)
    except OSError:
        with_manifest = staging / MANIFEST
        with_manifest.unlink(missing_ok=True)
        kept = "without a manifest"
    reason = exc.strerror or str(exc)
    hint = "free some space (or choose another -o) and collect again"
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        hint = "check the output directory (permissions, file system) and collect again"
    return BundleError(
        f"cannot write {writing}: {reason}; what was written is kept in {staging} ({kept})",
        hint=hint,
    )


def _finish(staging: Path, out: str, *, mtime: int) -> None:
    """Move a complete staging directory into place: `out` as a directory, or a tarball.

    A tarball that cannot be written leaves the complete bundle as the staging directory
    (readable as a directory bundle) and says so.
    """
    if is_tarball_name(out):
        try:
            write_tarball(staging, out, top=bundle_name(out), mtime=mtime)
        except OSError as exc:
            raise BundleError(
                f"cannot write {out}: {exc.strerror or exc}; the complete bundle is kept as "
                f"the directory {staging}",
                hint="free some space (or choose another -o); the directory can be read "
                "with --bundle as it is",
            ) from None
        shutil.rmtree(staging, ignore_errors=True)
        return
    try:
        if os.path.isdir(out) and not os.path.islink(out):
            os.rmdir(out)  # the empty directory check_output_path accepted
        os.rename(staging, out)
    except OSError as exc:
        raise BundleError(
            f"cannot move the bundle to {out}: {exc.strerror or exc}; it is complete in "
            f"{staging}",
            hint="rename it yourself, or choose another -o",
        ) from None


@dataclass(frozen=True)
class SpooledManifest:
    """A manifest document whose entries wait in an `EntrySpool`, not in memory (issue 12:
    `bundle redact` of a 200-node bundle built its 80k entries as one list, then the
    JSON text). `head` holds the keys before `entries` (`bundle_id` computed by the spool),
    `tail` the keys after them; written as `json.dump` of the whole document writes it."""

    head: dict[str, Any]
    spool: EntrySpool
    tail: dict[str, Any] = field(default_factory=dict)


def write_prepared(
    out: str, files: Iterable[tuple[str, bytes]],
    manifest: dict[str, Any] | Callable[[], dict[str, Any] | SpooledManifest],
) -> dict[str, Any]:
    """Write already-prepared `files` plus the `manifest` document to `out`; return the
    manifest written (a `SpooledManifest`'s head and tail: its entries are not kept).

    For bundles derived from another bundle (`bundle redact`): the caller has built the
    entries (paths, sizes, sha256s) itself. `files` may be a generator, written as it
    yields (one file in memory at a time); `manifest` may then be a callable, called once
    `files` is exhausted, so the entries can be built from what was written (and spooled:
    `SpooledManifest`). Same staging, atomic rename and deterministic tarball as
    `write_bundle`; raises `UsageError` when `out` exists.
    """
    check_output_path(out)
    staging = Path(out + ".partial")
    _mkdir_staging(staging)
    try:
        for path, data in files:
            rel = _safe_rel(path)
            dest = staging.joinpath(*rel.parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        got = manifest() if callable(manifest) else manifest
        if isinstance(got, SpooledManifest):
            with open(staging / MANIFEST, "wb") as bfh:
                got.spool.write_document(bfh, got.head, got.tail)
            doc = {**got.head, **got.tail}
        else:
            doc = got
            # Encoded piece by piece into the file: a whole string plus its bytes doubled
            # the peak of `bundle redact` when it built the document in memory.
            with open(staging / MANIFEST, "w", encoding="utf-8", newline="\n") as fh:
                json.dump(doc, fh, indent=2, ensure_ascii=False)
                fh.write("\n")
    except OSError as exc:
        # A derived bundle can be made again from its source: nothing worth keeping.
        shutil.rmtree(staging, ignore_errors=True)
        raise BundleError(f"cannot write {out}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _finish(staging, out, mtime=_epoch(str(doc["created_at"])))
    return doc


def write_tarball(src: Path | str, out: str, *, top: str, mtime: int,
                  compresslevel: int = GZIP_LEVEL) -> None:
    """Tar the regular files under `src` into `out` deterministically (see module doc).

    Symlinks and special files are refused: a bundle holds regular files only.
    """
    root = Path(src)
    files: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in filenames:
            full = Path(dirpath) / name
            if full.is_symlink() or not full.is_file():
                raise BundleError(f"{full}: bundles hold regular files only")
            files.append((full.relative_to(root).as_posix(), full))
    files.sort(key=lambda item: item[0])
    parent = os.path.dirname(os.path.abspath(out))
    # Exclusive creation in the target directory (mkstemp: O_CREAT|O_EXCL, mode 0600): a
    # name planted in a shared directory (a symlink to another file) is never followed.
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(out)}.", suffix=".tmp", dir=parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # what open() would have given the bundle
        # The members are compressed into a scratch file first (created the same exclusive
        # way, removed at once: only its descriptor is used), then the index is written
        # ahead of them: `tarindex` explains the layout.
        body_fd, body_name = tempfile.mkstemp(prefix=f".{os.path.basename(out)}.",
                                              suffix=".body", dir=parent)
        os.unlink(body_name)
        with os.fdopen(fd, "wb") as raw, os.fdopen(body_fd, "w+b") as body:
            write_indexed_tar(raw, body, files, top=top, mtime=mtime, level=compresslevel)
        # link(2) fails with EEXIST instead of replacing whatever appeared at `out`.
        try:
            os.link(tmp, out)
        except FileExistsError:
            raise UsageError(
                f"{out} appeared while the bundle was written; not replaced",
                hint="choose another -o",
            ) from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            # A file system without hard links (vfat, some FUSE): rename, after one more
            # check, since rename(2) would replace.
            if os.path.lexists(out):
                raise UsageError(f"{out} appeared while the bundle was written; not replaced",
                                 hint="choose another -o") from None
            os.rename(tmp, out)
            return
        os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process umask, read without changing it (proc(5) `Umask:`, Linux >= 4.7)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022
