"""Open a bundle and build its `Snapshot`: the one place where reading meets analysis.

Why outside `bundle/`: the bundle package reads and writes bundles and must not import the
analyzers (that was the one package-level cycle, issue 9); this module joins the two.
`ambientctl.bundle.load` re-exports `load_snapshot` for older callers.

The snapshot is lazy (`analyzers.snapshot`): the reader stays open for as long as the
snapshot may still parse a namespace, and is closed by `Snapshot.close()` or when the
snapshot is garbage-collected.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

from ambientctl.analyzers.snapshot import BundleView, build_snapshot
from ambientctl.bundle.reader import open_bundle
from ambientctl.errors import BundleError
from ambientctl.layout import MANIFEST, looks_like_bundle
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


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a bundle is opened and indexed.

    Why (issue 12): opening a 200-node bundle allocates some 10^6 objects that all live
    on (the member and manifest indexes, the cluster objects); each allocation burst
    triggered collections that walked them again, 0.1-0.2 s of CPU per trace, for cycles
    the loading does not make. Reference counting still frees everything as usual; any
    cycle made meanwhile is found by the first collection after. Left off if it was off.
    """
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if gc.get_freeze_count() == 0:
            # What the load allocated goes straight to the oldest generation (freeze and
            # unfreeze each splice lists, nothing is walked), or the first collections
            # after it would walk it all twice on the way there. Cycles among it are
            # still collected by the next full collection. Skipped when the process
            # froze objects of its own (unfreeze would thaw them).
            gc.freeze()
            gc.unfreeze()
        if was_on:
            gc.enable()


def load_snapshot(location: str) -> Snapshot:
    """Open the bundle at `location` (directory or .tar.gz): cluster objects are parsed now,
    each namespace's files when the analysis first reads them (a `.tar.gz` member is
    decompressed only then)."""
    with _collector_paused():
        return _load(location)


def _load(location: str) -> Snapshot:
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
                          tuple(bundle.manifest_problems), reopen=load_snapshot,
                          close=bundle.close)
        return build_snapshot(view)
    except BaseException:
        bundle.close()
        raise
