"""`ambientctl collect`: gather raw state into a support bundle.

    ambientctl collect --local -o bundle/                      # this machine's netns
    ambientctl collect --local --pod cni-1a2b=default/sleep-x -o b.tar.gz
    ambientctl collect --local --targets lab.json --cluster-dir cluster/ -o b/

`--local` collects this machine: the current network namespace as node `--node-name`
(default: the hostname) plus each `--pod NETNS=namespace/pod`; or, for a lab that
emulates several nodes with namespaces, the nodes and pods of `--targets FILE`.

Exit codes: 0 complete; 7 (partial) when some commands failed but a bundle was written;
3 when nothing could be collected; 130 when interrupted (the bundle is still written,
marked partial). The bundle path is the only thing printed on stdout.

`--redact` writes a redacted bundle at `-o` instead (see `ambientctl bundle redact`) and
its private map beside it (`<out>.private-map.json`, path on stderr). The unredacted
bundle is collected into a private temporary directory and deleted afterwards, unless
`--keep-unredacted PATH` names where to keep it.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from typing import Any

import click

from ambientctl.cli import cli
from ambientctl.cli.source import live_source_options
from ambientctl.errors import ExitCode, UsageError
from ambientctl.render.terminal import echo


def _progress(quiet: bool) -> Callable[[str], None] | None:
    """A progress printer on stderr, only for a human watching a terminal."""
    if quiet or not sys.stderr.isatty():
        return None
    return lambda line: echo(f"  {line}", err=True)


def _failure_lines(failed: tuple[dict[str, Any], ...]) -> list[str]:
    """One line per (target, status, reason), naming the specs it hit; the reason is the
    one every reader gives (`ManifestEntry.why`: the note, else stderr's last line)."""
    from ambientctl.manifest_model import read_manifest

    groups: dict[tuple[str, str, str], list[str]] = {}
    for entry in read_manifest({"entries": list(failed)}).entries:
        groups.setdefault((entry.target, entry.status, entry.why), []).append(entry.spec)
    return [
        f"{target}: {status} ({', '.join(specs)}){': ' + why if why else ''}"
        for (target, status, why), specs in groups.items()
    ]


def was_interrupted(written: Any) -> bool:
    """Did the run that wrote this bundle stop on Ctrl-C / SIGTERM (manifest says so)?"""
    return bool(written.header.get("collection", {}).get("interrupted"))


def _default_node_name() -> str:
    return socket.gethostname().split(".", 1)[0].lower()


@cli.command("collect")
@click.option(
    "-o", "--output", "out", required=True, metavar="DIR|FILE.tar.gz",
    help="Where to write the bundle (must not exist).",
)
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds before one command is killed.")
@click.option("--redact", is_flag=True,
              help="Write a redacted bundle (IPs, MACs, uids, names mapped) and its private "
                   "map beside it, for sharing.")
@click.option("--keep-unredacted", metavar="DIR|FILE.tar.gz",
              help="With --redact: also keep the unredacted bundle here (else it is deleted).")
@live_source_options
@click.option("-q", "--quiet", is_flag=True, help="No progress or summary on stderr.")
@click.pass_context
def collect(
    ctx: click.Context,
    out: str,
    redact: bool,
    keep_unredacted: str | None,
    quiet: bool,
    **source: Any,
) -> None:
    """Collect iptables, ipsets, routes, rules, addresses, listeners and sysctls into a bundle."""
    from ambientctl.cli.common import sigterm_as_interrupt

    sigterm_as_interrupt()
    if keep_unredacted and not redact:
        raise UsageError("--keep-unredacted goes with --redact")
    if not redact:
        _collect(ctx, out, quiet, None, **source)
        return
    import os
    import shutil
    import tempfile

    from ambientctl.bundle.redact import private_map_path
    from ambientctl.bundle.writer import bundle_name, check_output_path

    check_output_path(out)
    if os.path.lexists(private_map_path(out)):
        raise UsageError(f"{private_map_path(out)} already exists", hint="choose another -o")
    if keep_unredacted:
        check_output_path(keep_unredacted)
    tmp = tempfile.mkdtemp(prefix="ambientctl-unredacted-")  # mode 0700
    try:
        raw = keep_unredacted or os.path.join(tmp, bundle_name(out))
        _collect(ctx, raw, quiet, out, **source)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _collect(ctx: click.Context, out: str, quiet: bool, redact_to: str | None,
             **source: Any) -> None:
    """Collect into `out` from the source the options name (`--local`, else live: the
    current kube context, or --context/--kind/--ssh); with `redact_to`, then write the
    redacted bundle there."""
    from ambientctl.cli.source import (
        collect_local,
        collect_options_from,
        collection_warnings,
        live_options_from,
        local_source_from,
    )

    local = local_source_from(**source)
    if local is not None:
        written, interrupted = collect_local(local, collect_options_from(**source), out,
                                             progress=_progress(quiet))
        _report(ctx, written, interrupted, quiet, redact_to)
        return
    from ambientctl.collectors.live import collect_live

    # One line and a hint pointing at --bundle and the example when nothing is reachable.
    written = collect_live(live_options_from(**source), out, progress=_progress(quiet),
                           argv=["ambientctl", *sys.argv[1:]])
    for line in collection_warnings(written.header):
        echo(line, err=True)
    _report(ctx, written, was_interrupted(written), quiet, redact_to)


def _report(ctx: click.Context, written: Any, interrupted: bool, quiet: bool,
            redact_to: str | None = None) -> None:
    """Print the bundle path (stdout), a summary (stderr) and set the exit code.

    With `redact_to`, the collected bundle is first redacted there and that path printed.
    """
    if redact_to is not None:
        from ambientctl.bundle.redact import redact_bundle

        result = redact_bundle(written.path, redact_to)
        echo(result.path)
        for warning in result.warnings:
            echo(f"warning: {warning}", err=True)
        echo(f"private map (do not share): {result.map_path}", err=True)
    else:
        echo(written.path)
    if not quiet:
        total = written.entry_count
        if written.failed:
            echo(
                f"warning: {len(written.failed)} of {total} entries failed; bundle marked partial",
                err=True,
            )
            for line in _failure_lines(written.failed)[:10]:
                echo(f"  {line}", err=True)
            echo(f"  details: {redact_to or written.path} manifest.json", err=True)
        elif sys.stderr.isatty():
            echo(f"collected {total} entries, {written.header['bundle_id']}", err=True)
    if interrupted:
        done = written.entry_count - written.not_run
        echo(
            f"interrupted: kept a partial bundle at {redact_to or written.path} ({done} of "
            f"{written.entry_count} entries done; the rest are marked skipped in manifest.json)",
            err=True,
        )
        ctx.exit(int(ExitCode.INTERRUPTED))
    if written.failed:
        ctx.exit(int(ExitCode.PARTIAL))
