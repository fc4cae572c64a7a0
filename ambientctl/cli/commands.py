"""Imports every command module so that each registers itself on the root group."""

from ambientctl.cli import bundle_cmd  # noqa: F401
from ambientctl.cli import collect  # noqa: F401
from ambientctl.cli import trace  # noqa: F401
from ambientctl.cli import doctor  # noqa: F401
from ambientctl.cli import meta  # noqa: F401
from ambientctl.cli import report  # noqa: F401
from ambientctl.cli import diff  # noqa: F401
