"""Re-export of `ambientctl.layout`, where the bundle layout now lives.

The layout is a table of names (no I/O) that collectors, the bundle reader/writer and the
analyzers all need; it moved out of `bundle/` so that analyzers can cite file names
without importing the bundle package (tests/test_architecture.py pins that rule). Old
imports of `ambientctl.bundle.layout` keep working through this module.
"""

from __future__ import annotations

from ambientctl.layout import (  # noqa: F401  (re-exported names)
    CLUSTER_FILES,
    FORMAT_VERSION,
    MANIFEST,
    MANIFEST_SCHEMA,
    MESH_APIS,
    MESH_FILES,
    NETNS_FILES,
    config_dump_path,
    host_dir,
    looks_like_bundle,
    pod_dir,
    split_netns_dir,
    valid_name,
)
