"""`ambientctl doctor`: run the check catalogue and say what is broken, with evidence.

    ambientctl doctor                          # the current cluster (live collection)
    ambientctl doctor --bundle b.tar.gz        # a customer's bundle
    ambientctl doctor --local                  # this node: collect --local, then check
    ambientctl doctor -o json --fail-on warning -S AMB203=ambient-worker   # CI

Exit codes: 0 when no unsuppressed finding reaches `--fail-on` (default error); 1
(FINDINGS) when one does; 3/4 when nothing could be collected / the bundle is unreadable;
5 when a check crashed (a bug; the other checks still ran and are reported).
"""

from __future__ import annotations

import fnmatch
import json
import re

import click

from ambientctl.cli import cli
from ambientctl.cli.common import source_option
from ambientctl.errors import ExitCode, UsageError
from ambientctl.model import Snapshot
from ambientctl.render.terminal import terminal_safe


def _snapshot(source: dict[str, object]) -> tuple[str, Snapshot]:
    """Load without echoing bundle problems: doctor reports them as AMB1xx findings."""
    from ambientctl.cli.common import load

    return load(source, echo_problems=False)


def _list_checks() -> None:
    from ambientctl.analyzers.doctor import _load_areas, catalogue

    _load_areas()
    for c in catalogue():
        click.echo(f"{c.id}  {c.severity.value:<7}  {c.area:<10}  {c.title}")


@cli.group("doctor", invoke_without_command=True)
@source_option
@click.option("-o", "--output", type=click.Choice(["text", "json", "yaml", "line"]),
              default="text", show_default=True,
              help="line: one line per finding (like istioctl analyze).")
@click.option("--output-threshold", type=click.Choice(["info", "warning", "error"]),
              default="info", show_default=True,
              help="List only findings this severe (the others are counted, and --fail-on "
              "still sees them).")
@click.option("--fail-on", type=click.Choice(["error", "warning", "none"]), default="error",
              show_default=True, help="Exit 1 when an unsuppressed finding is this severe.")
@click.option("-S", "--suppress", "suppress", multiple=True, metavar="ID[=NODE[/POD]]",
              help="Hide findings of check ID (everywhere, on NODE, or for POD on NODE; globs "
              "allowed). Repeatable.")
@click.option("--check", "only", multiple=True, metavar="ID", help="Run only this check "
              "(repeatable).")
@click.option("-L", "--list-checks", is_flag=True, help="List the checks and exit.")
@click.option("-v", "--verbose", is_flag=True, help="Show every piece of evidence.")
@click.pass_context
def doctor_cmd(ctx: click.Context, output: str, output_threshold: str, fail_on: str, suppress: tuple[str, ...],
               only: tuple[str, ...], list_checks: bool, verbose: bool,
               **source: object) -> int | None:
    """Check a cluster, a node or a bundle for broken ambient redirection.

    `ambientctl doctor explain ID` prints what a check means and how to fix it.
    """
    if ctx.invoked_subcommand is not None:
        return None
    from ambientctl.analyzers.doctor import REGISTRY, _load_areas, diagnose, parse_suppression
    from ambientctl.errors import BundleError
    from ambientctl.render import doctor_json, doctor_text

    if list_checks:
        _list_checks()
        return int(ExitCode.OK)
    rules = [parse_suppression(s) for s in suppress]
    _load_areas()
    unknown = sorted({c.upper() for c in only} - set(REGISTRY))
    if unknown:
        raise UsageError(f"--check {', '.join(unknown)}: no such check", hint="list them: -L")
    location, snap = _snapshot(dict(source))
    if not snap.nodes:
        raise BundleError(f"{location}: the bundle holds no node (nodes/ is empty or absent): "
                          "there is nothing to check", hint="collect at least one node")
    unknown_ids = {r.text for r in rules
                   if not any(fnmatch.fnmatchcase(cid, r.check) for cid in REGISTRY)}
    for text in sorted(unknown_ids):
        click.echo(f"warning: -S {text}: no check has that id (doctor -L lists them)", err=True)
    report = diagnose(snap, fail_on=fail_on, suppress=rules,
                      only=[c.upper() for c in only] or None, output_threshold=output_threshold)
    for text in (t for t in report.unmatched_suppressions if t not in unknown_ids):
        click.echo(f"warning: -S {text} suppressed nothing", err=True)
    if output in ("json", "yaml"):
        doc = doctor_json.doctor_document(report)
        doc["source"] = location
        if output == "json":
            click.echo(json.dumps(doc, indent=2))
        else:
            import yaml

            click.echo(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), nl=False)
    elif output == "line":
        click.echo(doctor_text.render_lines(report), nl=False)
    else:
        from ambientctl.render.provenance import collected_with

        click.echo(doctor_text.render(report, verbose=verbose,
                                      provenance=collected_with(snap.manifest)), nl=False)
    if report.result != "pass":
        return int(ExitCode.FINDINGS)
    for r in report.errored:
        click.echo(terminal_safe(f"error: check {r.check.id} crashed on {r.target}: {r.reason}"),
                   err=True)
    if report.errored:
        return int(ExitCode.INTERNAL)
    return int(ExitCode.OK)


@doctor_cmd.command("explain")
@click.argument("check_id", metavar="ID")
def explain_cmd(check_id: str) -> int:
    """What check ID means, why it breaks traffic, its evidence and its fix (from the
    checks catalogue shipped with ambientctl)."""
    from ambientctl.analyzers.doctor import REGISTRY, _load_areas
    from ambientctl.resources import doc_text

    _load_areas()
    cid = check_id.upper()
    if cid not in REGISTRY:
        raise UsageError(f"no check {check_id!r}", hint="list them: ambientctl doctor -L")
    page = doc_text("checks.md")
    section = _section(page, cid) if page else None
    if section is None:
        info = REGISTRY[cid].info
        click.echo(f"{info.id} - {info.title} ({info.severity.value})\n")
        click.echo(f"Fix: {info.remediation}")
        click.echo("(the checks catalogue is not installed with this ambientctl)", err=True)
        return int(ExitCode.OK)
    click.echo(section.rstrip() + "\n")
    return int(ExitCode.OK)


def _section(page: str, cid: str) -> str | None:
    """The `### AMBnnn - ...` section of docs/checks.md, up to the next heading."""
    m = re.search(rf"^### {cid}\b.*?(?=^#{{2,3}} |\Z)", page, re.M | re.S)
    return m.group(0) if m else None
