"""Imports every command module so that each registers itself on the root group."""

from ambientctl.cli import (
    bundle_cmd,  # noqa: F401
    collect,  # noqa: F401
    diff,  # noqa: F401
    doctor,  # noqa: F401
    meta,  # noqa: F401
    report,  # noqa: F401
    trace,  # noqa: F401
)
