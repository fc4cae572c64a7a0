"""Open a bundle and parse it into a `Snapshot`: the one place where reading meets analysis."""

from __future__ import annotations

import os

from ambientctl.analyzers.snapshot import BundleView, build_snapshot
from ambientctl.bundle.layout import MANIFEST, looks_like_bundle
from ambientctl.bundle.reader import open_bundle
from ambientctl.errors import BundleError
from ambientctl.model import Snapshot


def _bundles_below(location: str) -> list[str]:
    """Bundles one or two levels below a directory that is not one itself."""
    found: list[str] = []
    if not os.path.isdir(location):
        return found
    for dirpath, dirnames, filenames in os.walk(location):
        depth = os.path.relpath(dirpath, location).count(os.sep) + (dirpath != location)
        if dirpath != location and (MANIFEST in filenames or "nodes" in dirnames):
            found.append(dirpath)
            dirnames[:] = []
        elif depth >= 2:
            dirnames[:] = []
        dirnames.sort()
    found += sorted(os.path.join(location, f) for f in os.listdir(location)
                    if f.endswith(".tar.gz"))
    return found


def load_snapshot(location: str) -> Snapshot:
    """Read the bundle at `location` (directory or .tar.gz) and parse every file."""
    bundle = open_bundle(location)
    try:
        paths = tuple(bundle.paths())
        if not looks_like_bundle(paths):
            below = _bundles_below(location)
            if below:
                raise BundleError(f"{location}: not a bundle, but it holds {len(below)}: "
                                  + ", ".join(below[:8]) + (" ..." if len(below) > 8 else ""),
                                  hint=f"pass one of them: --bundle {below[0]}")
            raise BundleError(f"{location}: not a bundle (no manifest.json, nodes/ or cluster/)",
                              hint="a bundle is what `ambientctl collect -o DIR|FILE.tar.gz` "
                              "writes; try --bundle example:seed-kind-ambient")
        view = BundleView(location, paths, bundle.read_text, bundle.typed_manifest,
                          tuple(bundle.manifest_problems))
        return build_snapshot(view)
    finally:
        bundle.close()
