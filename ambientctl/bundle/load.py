"""Open a bundle and parse it into a `Snapshot`: the one place where reading meets analysis."""

from __future__ import annotations

from ambientctl.analyzers.snapshot import BundleView, build_snapshot
from ambientctl.bundle.reader import open_bundle
from ambientctl.model import Snapshot


def load_snapshot(location: str) -> Snapshot:
    """Read the bundle at `location` (directory or .tar.gz) and parse every file."""
    bundle = open_bundle(location)
    try:
        view = BundleView(location, tuple(bundle.paths()), bundle.read_text, bundle.manifest,
                          tuple(bundle.manifest_problems))
        return build_snapshot(view)
    finally:
        bundle.close()
