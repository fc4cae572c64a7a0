"""Re-export of `ambientctl.loading.load_snapshot` (the loader moved out of `bundle/`).

Why a re-export: callers written against `ambientctl.bundle.load` keep working. It imports
lazily so that importing the bundle package never imports the analyzers (the package
cycle issue 9 removed; tests/test_architecture.py pins it).
"""

from __future__ import annotations

from ambientctl.model import Snapshot


def load_snapshot(location: str) -> Snapshot:
    """See `ambientctl.loading.load_snapshot`."""
    from ambientctl.loading import load_snapshot as _load

    return _load(location)
