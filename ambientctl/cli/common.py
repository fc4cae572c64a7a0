"""What several commands share: where the data comes from, and loading it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import click

from ambientctl.model import Snapshot


def source_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`--bundle PATH` plus the live-collection options when that module is present."""
    try:
        from ambientctl.cli.source import source_options
    except ImportError:
        return click.option("--bundle", "bundle", metavar="PATH",
                            help="A support bundle (directory or .tar.gz).")(fn)
    return source_options(fn)


def load(source: Mapping[str, object]) -> tuple[str, Snapshot]:
    """Resolve the source options to a bundle and parse it; warnings go to stderr."""
    from ambientctl.bundle.load import load_snapshot

    try:
        from ambientctl.cli.source import resolve_source
    except ImportError:
        resolve_source = None  # type: ignore[assignment]
    if resolve_source is not None:
        location = resolve_source(**source)
    else:
        location = source.get("bundle")  # type: ignore[assignment]
        if not location:
            from ambientctl.errors import CollectionError

            raise CollectionError(
                "no --bundle given and live collection is not available",
                hint="try: ambientctl trace sleep productpage --bundle examples/seed-kind-ambient",
            )
    snap = load_snapshot(str(location))
    for prob in snap.problems:
        click.echo(f"warning: {prob}", err=True)
    return str(location), snap
