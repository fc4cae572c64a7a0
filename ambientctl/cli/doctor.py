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

import json
import sys

import click

from ambientctl.cli import cli
from ambientctl.cli.common import source_option
from ambientctl.errors import ExitCode, UsageError
from ambientctl.model import Snapshot
from ambientctl.render.terminal import terminal_safe

_LIVE = ("context", "kubeconfig", "kind", "ssh", "ssh_inventory")


def _collect_local(node_name: str | None, pods: tuple[str, ...], targets_file: str | None,
                   cluster_dir: str | None, out: str | None) -> str:
    """`collect --local` on this machine into `out` (or a temporary bundle removed at exit)."""
    import atexit
    import os
    import shutil
    import socket
    import tempfile

    from ambientctl.collectors.local import (
        LocalTransport,
        parse_pod_option,
        targets_from_document,
    )
    from ambientctl.collectors.runner import Plan, Target, collect_bundle, read_cluster_dir
    from ambientctl.collectors.transport import NetnsRef

    if targets_file:
        try:
            with open(targets_file, encoding="utf-8") as fh:
                doc = json.load(fh)
        except (OSError, ValueError) as exc:
            raise UsageError(f"{targets_file}: cannot read targets ({exc})") from exc
        targets = targets_from_document(doc, source=targets_file)
    else:
        node = node_name or socket.gethostname().split(".", 1)[0].lower()
        targets = [Target.node_target(node, NetnsRef())]
        for value in pods:
            netns, namespace, pod = parse_pod_option(value)
            targets.append(Target.pod_target(node, namespace, pod, netns))
    if out is None:
        tmp = tempfile.mkdtemp(prefix="ambientctl-doctor-")
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
        out = os.path.join(tmp, "bundle")
    written, _interrupted = collect_bundle(
        LocalTransport(), Plan(tuple(targets)), out,
        collection={"mode": "local", "argv": ["ambientctl", *sys.argv[1:]]},
        extra_files=read_cluster_dir(cluster_dir) if cluster_dir else [],
    )
    if written.failed:
        click.echo(f"warning: {len(written.failed)} command(s) failed during collection "
                   "(reported as AMB102)", err=True)
    return written.path


def _snapshot(source: dict[str, object]) -> tuple[str, Snapshot]:
    """Load without echoing bundle problems: doctor reports them as AMB1xx findings."""
    from ambientctl.cli.common import load

    return load(source, echo_problems=False)


def _list_checks() -> None:
    from ambientctl.analyzers.doctor import _load_areas, catalogue

    _load_areas()
    for c in catalogue():
        click.echo(f"{c.id}  {c.severity.value:<7}  {c.area:<10}  {c.title}")


@cli.command("doctor")
@source_option
@click.option("--local", "local", is_flag=True,
              help="Collect this machine first (`collect --local`: its netns, --pod ones or "
              "--targets), then check that bundle.")
@click.option("--node-name", metavar="NAME", help="With --local: this node's name [default: "
              "hostname].")
@click.option("--pod", "local_pods", multiple=True, metavar="NETNS=NAMESPACE/POD",
              help="With --local: also collect this pod's netns (repeatable).")
@click.option("--targets", "targets_file", type=click.Path(exists=True, dir_okay=False),
              help="With --local: JSON list of nodes and pods by netns (labs).")
@click.option("--cluster-dir", type=click.Path(exists=True, file_okay=False),
              help="With --local: kubectl -o json files (pods, services, namespaces, nodes).")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--fail-on", type=click.Choice(["error", "warning", "none"]), default="error",
              show_default=True, help="Exit 1 when an unsuppressed finding is this severe.")
@click.option("-S", "--suppress", "suppress", multiple=True, metavar="ID[=NODE[/POD]]",
              help="Hide findings of check ID (everywhere, on NODE, or for POD on NODE; globs "
              "allowed). Repeatable.")
@click.option("--check", "only", multiple=True, metavar="ID", help="Run only this check "
              "(repeatable).")
@click.option("-L", "--list-checks", is_flag=True, help="List the checks and exit.")
@click.option("-v", "--verbose", is_flag=True, help="Show every piece of evidence.")
def doctor_cmd(local: bool, node_name: str | None, local_pods: tuple[str, ...],
               targets_file: str | None, cluster_dir: str | None, output: str, fail_on: str,
               suppress: tuple[str, ...], only: tuple[str, ...], list_checks: bool,
               verbose: bool, **source: object) -> int:
    """Check a cluster, a node or a bundle for broken ambient redirection."""
    from ambientctl.analyzers.doctor import REGISTRY, _load_areas, diagnose, parse_suppression
    from ambientctl.render import doctor_json, doctor_text

    if list_checks:
        _list_checks()
        return int(ExitCode.OK)
    rules = [parse_suppression(s) for s in suppress]
    _load_areas()
    unknown = sorted({c.upper() for c in only} - set(REGISTRY))
    if unknown:
        raise UsageError(f"--check {', '.join(unknown)}: no such check", hint="list them: -L")
    local_only = (node_name or local_pods or targets_file or cluster_dir)
    if local_only and not local:
        raise UsageError("--node-name, --pod, --targets and --cluster-dir need --local")
    if local:
        clash = [f"--{k.replace('_', '-')}" for k in ("bundle", *_LIVE) if source.get(k)]
        if clash:
            raise UsageError(f"--local collects this machine; it cannot be combined with "
                             f"{', '.join(clash)}")
        path = _collect_local(node_name, local_pods, targets_file, cluster_dir,
                              source.get("save_bundle"))  # type: ignore[arg-type]
        location, snap = _snapshot({"bundle": path})
    else:
        location, snap = _snapshot(dict(source))
    report = diagnose(snap, fail_on=fail_on, suppress=rules,
                      only=[c.upper() for c in only] or None)
    if output == "json":
        doc = doctor_json.doctor_document(report)
        doc["source"] = location
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(doctor_text.render(report, verbose=verbose), nl=False)
    if report.failing:
        return int(ExitCode.FINDINGS)
    for r in report.errored:
        click.echo(terminal_safe(f"error: check {r.check.id} crashed on {r.target}: {r.reason}"),
                   err=True)
    if report.errored:
        return int(ExitCode.INTERNAL)
    return int(ExitCode.OK)
