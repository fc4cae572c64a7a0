"""What several commands share: where the data comes from, and loading it."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import click

from ambientctl.model import Snapshot
from ambientctl.render.terminal import terminal_safe


def source_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`--bundle PATH` plus the live-collection options (--context, --kind, --ssh, ...)."""
    from ambientctl.cli.source import source_options

    return source_options(fn)


def _raise_interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def sigterm_as_interrupt() -> None:
    """From now on, SIGTERM does what Ctrl-C does (KeyboardInterrupt in the main thread).

    Why: `kill`, systemd, CI runners and `timeout(1)` stop a process with SIGTERM, whose
    default action ends it on the spot - no partial bundle, node commands left running,
    and a live collection's unredacted temporary bundle left in $TMPDIR. As an exception,
    it runs the same path as SIGINT: running commands killed, what finished written and
    marked partial, temporaries removed, exit 130.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)


def load(source: Mapping[str, object], *, echo_problems: bool = True) -> tuple[str, Snapshot]:
    """Resolve the source options to a bundle and parse it; warnings go to stderr
    (unless the command reports bundle problems itself, as doctor does)."""
    from ambientctl.cli.source import resolve_source
    from ambientctl.loading import load_snapshot

    location = resolve_source(**source)
    snap = load_snapshot(str(location))
    if echo_problems:
        # A lazy snapshot states what it has read (issue 12): the bundle-wide problems, not
        # every node's ztunnel dump parsed only to warn about it.
        for prob in snap.read_problems():
            click.echo(terminal_safe(f"warning: {prob}"), err=True)
    return str(location), snap
