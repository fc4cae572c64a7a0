"""`ambientctl report`: one self-contained HTML page with the traced paths drawn and
doctor's findings placed on the drawing - to attach to a ticket or open offline."""

from __future__ import annotations

import os

import click

from ambientctl.cli import cli
from ambientctl.cli.common import load, source_option
from ambientctl.errors import ExitCode, UsageError


@cli.command("report")
@click.argument("pairs", nargs=-1, metavar="[SRC DST]...")
@source_option
@click.option("-n", "--namespace", "namespace", metavar="NS",
              help="Namespace of SRC/DST names that carry none.")
@click.option("-o", "--output", "out", default="report.html", show_default=True,
              metavar="FILE", help="Where to write the page (never overwritten).")
def report_cmd(pairs: tuple[str, ...], namespace: str | None, out: str,
               **source: object) -> int:
    """Write an HTML report: each SRC DST pair traced and drawn, doctor's findings listed
    and linked to where they sit. No pair: the findings alone."""
    from ambientctl.analyzers.doctor import diagnose
    from ambientctl.analyzers.selectors import resolve
    from ambientctl.analyzers.trace import Tracer
    from ambientctl.analyzers.verdict import judge
    from ambientctl.render import doctor_json, html, trace_json
    from ambientctl.render.provenance import bundle_header

    if len(pairs) % 2:
        raise UsageError(f"report takes SRC DST pairs; {pairs[-1]!r} has no DST")
    if os.path.exists(out):
        raise UsageError(f"{out} exists; not overwriting it", hint="choose another -o FILE")
    location, snap = load(source, echo_problems=False)
    tracer = Tracer(snap)
    docs = []
    for src, dst in zip(pairs[::2], pairs[1::2], strict=True):
        s = resolve(snap, src, role="source", namespace=namespace)
        d = resolve(snap, dst, role="destination", namespace=namespace)
        if d.port is None:
            raise UsageError(f"destination {dst!r} has no single port to trace to",
                             hint="name it as HOST:PORT")
        t = tracer.trace(s, d)
        docs.append(trace_json.trace_document(t, location, judge(snap, t)))
    doctor = doctor_json.doctor_document(diagnose(snap))
    page = html.report_html(docs, doctor, bundle_header(location, snap),
                            title="ambientctl report: " + (", ".join(
                                f"{a} -> {b}" for a, b in zip(pairs[::2], pairs[1::2],
                                                              strict=True)) or location))
    # O_EXCL: a file that appeared meanwhile (or a planted link) is never written through
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(page)
    click.echo(out)
    return int(ExitCode.OK)
