"""Read a bundle from a directory or a `.tar.gz`, safely.

Safety: no member may escape the bundle (absolute paths, `..`), links of any kind are
refused rather than followed, and only regular files are read. A tarball must hold one
top folder (the bundle); its name is stripped. When `manifest.json` is present, each
file's sha256 is checked against it as the file is read; a hand-assembled bundle without
manifest is read by file name (the caller warns once).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ambientctl.bundle.layout import MANIFEST, MANIFEST_SCHEMA
from ambientctl.errors import BundleError


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One integrity problem found by `Bundle.verify()`."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class Bundle:
    """An opened bundle: an index of its regular files and their bytes on demand."""

    def __init__(self, location: str) -> None:
        self.location = location
        path = Path(location)
        if not path.exists():
            raise BundleError(
                f"bundle not found: {location}",
                hint="pass --bundle DIR or --bundle FILE.tar.gz (see examples/)",
            )
        self._tar: tarfile.TarFile | None = None
        self._members: dict[str, object] = {}
        if path.is_dir():
            self._index_dir(path)
        elif tarfile.is_tarfile(location):
            self._index_tar(path)
        else:
            raise BundleError(
                f"{location}: not a bundle (neither a directory nor a .tar.gz)",
                hint="a bundle is what `ambientctl collect -o DIR|FILE.tar.gz` writes",
            )
        self.manifest: Mapping[str, object] | None = self._load_manifest()
        self._hashes: dict[str, str] = {}
        if self.manifest is not None:
            for entry in self.manifest.get("entries", []) or []:  # type: ignore[union-attr]
                if isinstance(entry, dict) and entry.get("path") and entry.get("sha256"):
                    self._hashes[str(entry["path"])] = str(entry["sha256"])

    # ------------------------------------------------------------------ indexing
    def _index_dir(self, root: Path) -> None:
        root_real = root.resolve()
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            for name in filenames:
                full = Path(dirpath) / name
                st = full.lstat()
                rel = full.relative_to(root).as_posix()
                if stat.S_ISLNK(st.st_mode):
                    raise BundleError(
                        f"{self.location}: {rel} is a symbolic link; bundles hold regular files only"
                    )
                if not stat.S_ISREG(st.st_mode):
                    continue
                if not full.resolve().is_relative_to(root_real):
                    raise BundleError(f"{self.location}: {rel} lies outside the bundle")
                self._members[rel] = full
            dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]

    def _index_tar(self, path: Path) -> None:
        try:
            tar = tarfile.open(path, "r:*")
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BundleError(f"{self.location}: unreadable archive ({exc})") from exc
        self._tar = tar
        tops = set()
        for m in members:
            p = PurePosixPath(m.name)
            if p.is_absolute() or ".." in p.parts:
                raise BundleError(f"{self.location}: member {m.name!r} escapes the bundle")
            if m.issym() or m.islnk():
                raise BundleError(
                    f"{self.location}: member {m.name!r} is a link; bundles hold regular files only"
                )
            if p.parts:
                tops.add(p.parts[0])
        if len(tops) != 1:
            raise BundleError(
                f"{self.location}: expected one top folder in the archive, found {len(tops)}"
            )
        for m in members:
            if not m.isfile():
                continue
            parts = PurePosixPath(m.name).parts[1:]
            if parts:
                self._members["/".join(parts)] = m

    def _load_manifest(self) -> Mapping[str, object] | None:
        if MANIFEST not in self._members:
            return None
        raw = self._read_bytes(MANIFEST)
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise BundleError(f"{self.location}/{MANIFEST}: not valid JSON ({exc})") from exc
        if not isinstance(doc, dict):
            raise BundleError(f"{self.location}/{MANIFEST}: not a JSON object")
        schema = str(doc.get("schema", ""))
        if schema != MANIFEST_SCHEMA:
            if schema.startswith("ambientctl.bundle/v"):
                raise BundleError(
                    f"{self.location}/{MANIFEST}: bundle format {schema} is newer than this "
                    f"ambientctl understands ({MANIFEST_SCHEMA})",
                    hint="upgrade ambientctl",
                )
            raise BundleError(f"{self.location}/{MANIFEST}: unknown schema {schema!r}")
        return doc

    # ------------------------------------------------------------------ reading
    def _read_bytes(self, rel: str) -> bytes:
        member = self._members[rel]
        if isinstance(member, Path):
            return member.read_bytes()
        assert self._tar is not None
        fh = self._tar.extractfile(member)  # type: ignore[arg-type]
        if fh is None:
            raise BundleError(f"{self.location}: {rel} is not a regular file")
        return fh.read()

    def paths(self) -> list[str]:
        """All regular files, bundle-relative, sorted."""
        return sorted(self._members)

    def has(self, rel: str) -> bool:
        """Is `rel` in the bundle?"""
        return rel in self._members

    def read_bytes(self, rel: str, *, verify: bool = True) -> bytes:
        """The stored bytes of `rel`, checked against the manifest's sha256 when it has one."""
        if rel not in self._members:
            raise BundleError(f"{self.location}: {rel} is missing from the bundle")
        data = self._read_bytes(rel)
        expected = self._hashes.get(rel)
        if verify and expected is not None and hashlib.sha256(data).hexdigest() != expected:
            raise BundleError(
                f"{self.location}: {rel} does not match its sha256 in manifest.json",
                hint="the bundle was modified or damaged after collection; "
                "`ambientctl bundle verify` lists every mismatch",
            )
        return data

    def read_text(self, rel: str) -> str:
        """The file decoded as UTF-8 (undecodable bytes become U+FFFD, parsers then object)."""
        return self.read_bytes(rel).decode("utf-8", errors="replace")

    def verify(self) -> list[Mismatch]:
        """Recheck every hash the manifest lists; return what does not match, path-sorted.

        Reported: a listed file that is missing, a file whose size or sha256 differs from
        its entry, and a regular file the manifest does not list (something was added).
        Raises `BundleError` when there is no manifest to verify against.
        """
        if self.manifest is None:
            raise BundleError(
                f"{self.location}: no {MANIFEST}; nothing to verify against",
                hint="hand-assembled bundles carry no hashes",
            )
        problems: list[Mismatch] = []
        listed: set[str] = {MANIFEST}
        for entry in self.manifest.get("entries", []) or []:  # type: ignore[union-attr]
            if not isinstance(entry, dict) or not entry.get("path"):
                continue
            rel = str(entry["path"])
            listed.add(rel)
            if rel not in self._members:
                problems.append(Mismatch(rel, "missing: listed in manifest.json"))
                continue
            data = self._read_bytes(rel)
            size = entry.get("size")
            digest = hashlib.sha256(data).hexdigest()
            if entry.get("sha256") and digest != entry["sha256"]:
                problems.append(
                    Mismatch(rel, f"sha256 {digest} != manifest {entry['sha256']}")
                )
            elif isinstance(size, int) and size != len(data):
                problems.append(Mismatch(rel, f"size {len(data)} != manifest {size}"))
        for rel in self._members:
            if rel not in listed:
                problems.append(Mismatch(rel, "not listed in manifest.json"))
        return sorted(problems, key=lambda m: m.path)

    def close(self) -> None:
        """Release the archive handle, if any."""
        if self._tar is not None:
            self._tar.close()
            self._tar = None


def open_bundle(location: str) -> Bundle:
    """Open a bundle directory or tarball (raises `BundleError` with a hint)."""
    return Bundle(location)
