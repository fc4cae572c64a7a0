"""`ambientctl bundle ...`: operations on a bundle itself (not on what it describes).

    ambientctl bundle verify PATH     # recheck every sha256 of manifest.json
    ambientctl bundle redact IN OUT   # a shareable copy: IPs, MACs, uids and names mapped

`verify` prints one line per problem (`path: reason`) on stdout and exits 4 when there is
any; a clean bundle prints nothing on stdout and exits 0.
"""

from __future__ import annotations

import click

from ambientctl.cli import cli
from ambientctl.errors import ExitCode
from ambientctl.render.terminal import terminal_safe


@cli.group("bundle")
def bundle() -> None:
    """Inspect support bundles."""


@bundle.command("verify")
@click.argument("path", metavar="PATH")
@click.pass_context
def verify(ctx: click.Context, path: str) -> None:
    """Recheck every file of a bundle against the sha256 in its manifest."""
    from ambientctl.bundle.reader import open_bundle

    opened = open_bundle(path, stream_manifest=True)  # memory independent of its size
    try:
        mismatches, checked = opened.verify_counted()
    finally:
        opened.close()
    for mismatch in mismatches:
        click.echo(terminal_safe(str(mismatch)))
    if mismatches:
        click.echo(f"{len(mismatches)} problem(s) in {path}", err=True)
        ctx.exit(int(ExitCode.BUNDLE))
    click.echo(f"ok: {checked} files match manifest.json", err=True)


@bundle.command("redact")
@click.argument("src", metavar="IN")
@click.argument("out", metavar="OUT")
def redact(src: str, out: str) -> None:
    """Write a redacted copy of bundle IN to OUT (a directory or .tar.gz).

    IPs (prefix-preserving), MACs, uids, node / namespace / pod / Service names are
    replaced consistently in contents and paths; traces and doctor give the same answers.
    The private map (original -> replacement) is written beside OUT as
    OUT.private-map.json: keep it, share only OUT. Prints OUT on stdout, the map on stderr.
    """
    from ambientctl.bundle.redact import redact_bundle

    result = redact_bundle(src, out)
    click.echo(result.path)
    for warning in result.warnings:
        click.echo(terminal_safe(f"warning: {warning}"), err=True)
    click.echo(f"private map (do not share): {result.map_path}", err=True)
