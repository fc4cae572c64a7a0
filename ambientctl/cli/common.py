"""What several commands share: where the data comes from, and loading it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import click

from ambientctl.model import Snapshot


def source_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`--bundle PATH` plus the live-collection options (--context, --kind, --ssh, ...)."""
    from ambientctl.cli.source import source_options

    return source_options(fn)


def load(source: Mapping[str, object], *, echo_problems: bool = True) -> tuple[str, Snapshot]:
    """Resolve the source options to a bundle and parse it; warnings go to stderr
    (unless the command reports bundle problems itself, as doctor does)."""
    from ambientctl.bundle.load import load_snapshot

    from ambientctl.cli.source import resolve_source

    location = resolve_source(**source)
    snap = load_snapshot(str(location))
    if echo_problems:
        for prob in snap.problems:
            click.echo(f"warning: {prob}", err=True)
    return str(location), snap
