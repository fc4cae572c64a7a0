"""Write a bundle: raw outputs + manifest, as a directory or a deterministic `.tar.gz`.

Atomicity: everything is written into `<out>.partial/` and renamed to `<out>` only once
the manifest is written, so an interrupted or crashed run never leaves something that
looks like a complete bundle. A tarball is built from that staging directory into a
temporary name beside the target and renamed too.

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

import gzip
import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from ambientctl.bundle.layout import MANIFEST
from ambientctl.bundle.manifest import Manifest, component_versions, entry_for, file_entry
from ambientctl.errors import BundleError, UsageError
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
    """What was written: where, the manifest document, and the entries that failed."""

    path: str
    manifest: dict[str, Any]
    failed: tuple[dict[str, Any], ...]

    @property
    def partial(self) -> bool:
        """Some planned command did not succeed (or the run was interrupted)."""
        return bool(self.manifest.get("partial"))


@dataclass(frozen=True, slots=True)
class ExtraFile:
    """A file copied into the bundle as is (e.g. `cluster/pods.json` from --cluster-dir)."""

    path: str
    data: bytes
    source: str


FAILED_STATUSES = frozenset(
    {RawStatus.NONZERO_EXIT, RawStatus.NOT_FOUND, RawStatus.TIMEOUT, RawStatus.TRANSPORT_ERROR}
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


def write_bundle(
    out: str,
    *,
    outputs: Sequence[RawOutput],
    created_at: str,
    collection: dict[str, Any],
    targets: list[dict[str, Any]],
    extra_files: Iterable[ExtraFile] = (),
    not_kept: Iterable[str] = (),
    interrupted: bool = False,
) -> WrittenBundle:
    """Write `outputs` (+ extra files) and the manifest to `out` (a directory or .tar.gz).

    Returns the manifest and the failed entries; raises `UsageError` when `out` exists.
    """
    check_output_path(out)
    skip = set(not_kept)
    staging = Path(out + ".partial")
    staging.mkdir()
    try:
        manifest = Manifest(created_at=created_at, collection=collection, targets=targets)
        for output in outputs:
            stored = output.status is RawStatus.OK and output.path not in skip
            if stored:
                rel = _safe_rel(output.path)
                dest = staging.joinpath(*rel.parts)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(output.stdout)
            manifest.entries.append(entry_for(output, stored=stored))
        for extra in sorted(extra_files, key=lambda e: e.path):
            if extra.path == "cluster/pods.json":
                manifest.components = component_versions(extra.data)
            rel = _safe_rel(extra.path)
            dest = staging.joinpath(*rel.parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(extra.data)
            manifest.entries.append(
                file_entry(extra.path, extra.data, source=extra.source, started_at=created_at)
            )
        failed = tuple(e for e in manifest.entries if e["status"] in FAILED_STATUSES)
        manifest.partial = interrupted or bool(failed)
        (staging / MANIFEST).write_bytes(manifest.to_json())
        doc = manifest.document()
        if is_tarball_name(out):
            write_tarball(staging, out, top=bundle_name(out), mtime=_epoch(created_at))
            shutil.rmtree(staging)
        else:
            if os.path.isdir(out):
                os.rmdir(out)  # the empty directory check_output_path accepted
            os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return WrittenBundle(path=out, manifest=doc, failed=failed)


def write_prepared(
    out: str, files: Iterable[tuple[str, bytes]], manifest: dict[str, Any]
) -> str:
    """Write already-prepared `files` plus the `manifest` document to `out`.

    For bundles derived from another bundle (`bundle redact`): the caller has built the
    entries (paths, sizes, sha256s) itself. Same staging, atomic rename and deterministic
    tarball as `write_bundle`; raises `UsageError` when `out` exists.
    """
    check_output_path(out)
    staging = Path(out + ".partial")
    staging.mkdir()
    try:
        for path, data in files:
            rel = _safe_rel(path)
            dest = staging.joinpath(*rel.parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        (staging / MANIFEST).write_bytes(
            (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode()
        )
        if is_tarball_name(out):
            mtime = _epoch(str(manifest["created_at"]))
            write_tarball(staging, out, top=bundle_name(out), mtime=mtime)
            shutil.rmtree(staging)
        else:
            if os.path.isdir(out):
                os.rmdir(out)
            os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _tarinfo(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


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
    tmp = f"{out}.tmp-{os.getpid()}"
    try:
        # GzipFile writes mtime and the file name into its header: pin both.
        with (
            open(tmp, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                          compresslevel=compresslevel) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for rel, full in files:
                data = full.read_bytes()
                tar.addfile(_tarinfo(f"{top}/{rel}", len(data), mtime), io.BytesIO(data))
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
