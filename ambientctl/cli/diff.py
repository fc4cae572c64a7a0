"""`ambientctl bundle diff OLD NEW`: what changed between two bundles, semantically."""

from __future__ import annotations

import json

import click

from ambientctl.cli.bundle_cmd import bundle
from ambientctl.errors import ExitCode


@bundle.command("diff")
@click.argument("old", metavar="OLD")
@click.argument("new", metavar="NEW")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--all", "all_entries", is_flag=True, help="Also list changes outside the "
              "ambient datapath (kube-proxy churn, unrelated pods) in text output.")
def diff_cmd(old: str, new: str, output: str, all_entries: bool) -> int:
    """Compare bundles OLD and NEW per node and namespace: rules (by chain and text, not
    line), ip rules, routes, ipset members, links, listeners, sysctls, pods, Services,
    namespaces and ztunnel workloads - ambient's datapath first. Exit 1 when they differ."""
    from ambientctl.analyzers.diff import diff_bundles
    from ambientctl.loading import load_snapshot
    from ambientctl.render import diff_out
    from ambientctl.resources import bundle_argument

    old, new = bundle_argument(old), bundle_argument(new)
    entries = diff_bundles(load_snapshot(old), load_snapshot(new))
    if output == "json":
        click.echo(json.dumps(diff_out.diff_document(old, new, entries), indent=2))
    else:
        click.echo(diff_out.diff_text(old, new, entries, all_entries=all_entries), nl=False)
    return int(ExitCode.FINDINGS if entries else ExitCode.OK)
