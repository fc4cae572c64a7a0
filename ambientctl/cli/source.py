"""Where a command's data comes from: `--bundle PATH`, or a live cluster collected now.

`trace` and `doctor` (and anything decorated with `source_options`) take the same
options. Live mode collects a bundle first (into a temporary directory, removed at exit,
unless `--save-bundle PATH`) and then analyses that bundle exactly as a replay would.

    --bundle PATH             replay a bundle (directory or .tar.gz); no cluster needed
    --context NAME            Kubernetes API + exec via that kube context [default: current]
    --kind NAME               a kind cluster: docker exec into its node containers
    --ssh SPEC                nodes over SSH: [NODE=][USER@]HOST[:PORT],...
    --ssh-inventory FILE      nodes over SSH from a TOML inventory (user, port, key, jump)
    --ssh-accept-new          record unknown host keys (a CHANGED key is always refused)
    --node NAME, --collect-namespace NS   collect only these (repeatable)
    --concurrency N           targets collected at once [default: 8, max 64]
    --target-timeout SECS     one deadline for all the commands of one target [default: 360]
    --max-output MIB          stdout kept per command; longer is recorded truncated [256]

With nothing reachable the error says so in one line and points at `--bundle`.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import click

from ambientctl.errors import CollectionError, UsageError
from ambientctl.render.terminal import echo

# Kept equal to collectors.runner.DEFAULT_TARGET_TIMEOUT (a test pins it) so that `--help`
# does not import the collectors.
DEFAULT_TARGET_TIMEOUT = 360.0
DEFAULT_MAX_OUTPUT_MIB = 256  # = collectors.exec_outcome.DEFAULT_MAX_OUTPUT (a test pins it)

EXAMPLE_BUNDLE = "example:seed-kind-ambient"
_LIVE_FLAGS = {
    "context": "--context",
    "kubeconfig": "--kubeconfig",
    "kind": "--kind",
    "ssh": "--ssh",
    "ssh_inventory": "--ssh-inventory",
    "ssh_accept_new": "--ssh-accept-new",
    "nodes": "--node",
    "namespaces": "--collect-namespace",
    "save_bundle": "--save-bundle",
}


def _live_option_list(
    *, collect: bool = False
) -> list[Callable[[Callable[..., Any]], Callable[..., Any]]]:
    # `-n/--namespace` is kubectl's name scope in trace and doctor; in `collect`, which
    # resolves no names, it is the collection filter itself.
    ns_flags = ("-n", "--namespace", "--collect-namespace") if collect else \
        ("--collect-namespace",)
    return [
        click.option(
            "--context",
            "context",
            metavar="NAME",
            help="Kube context to collect from [default: the current context].",
        ),
        click.option(
            "--kubeconfig",
            "kubeconfig",
            metavar="FILE",
            help="Kubeconfig file [default: $KUBECONFIG or ~/.kube/config].",
        ),
        click.option(
            "--kind",
            "kind",
            metavar="NAME",
            help="Collect kind cluster NAME through docker exec into its nodes.",
        ),
        click.option(
            "--ssh",
            "ssh",
            metavar="SPEC",
            help="Collect nodes over SSH: [NODE=][USER@]HOST[:PORT],...",
        ),
        click.option(
            "--ssh-inventory",
            "ssh_inventory",
            metavar="FILE",
            type=click.Path(exists=True, dir_okay=False),
            help="SSH nodes from a TOML inventory (see docs/live-collection.md).",
        ),
        click.option("--ssh-user", "ssh_user", metavar="USER", help="SSH user for --ssh hosts."),
        click.option(
            "--ssh-key", "ssh_key", metavar="FILE", help="SSH private key for --ssh hosts."
        ),
        click.option(
            "--ssh-jump",
            "ssh_jump",
            metavar="[USER@]HOST[:PORT]",
            help="Reach --ssh hosts through this jump host.",
        ),
        click.option(
            "--ssh-sudo",
            "ssh_sudo",
            is_flag=True,
            help="Run node commands with `sudo -n` (non-interactive).",
        ),
        click.option(
            "--ssh-known-hosts",
            "ssh_known_hosts",
            metavar="FILE",
            default="~/.ssh/known_hosts",
            show_default=True,
            help="known_hosts file checked (and, with --ssh-accept-new, appended to).",
        ),
        click.option(
            "--ssh-accept-new",
            "ssh_accept_new",
            is_flag=True,
            help="Record unknown host keys on first contact; a changed key is always refused.",
        ),
        click.option(
            "--node",
            "nodes",
            multiple=True,
            metavar="NAME",
            help="Collect only this node (repeatable).",
        ),
        click.option(
            *ns_flags,
            "namespaces",
            multiple=True,
            metavar="NS",
            help="Collect only pods of this namespace (repeatable).",
        ),
        click.option(
            "--concurrency",
            "concurrency",
            type=click.IntRange(1, 64),
            default=8,
            show_default=True,
            help="Targets collected at the same time.",
        ),
        click.option(
            "--target-timeout",
            "target_timeout",
            type=click.FloatRange(min=1.0),
            default=DEFAULT_TARGET_TIMEOUT,
            show_default=True,
            metavar="SECS",
            help="One deadline for all the commands of one node or pod (a hung node costs "
            "at most this).",
        ),
        click.option(
            "--max-output",
            "max_output_mib",
            type=click.IntRange(min=1),
            default=DEFAULT_MAX_OUTPUT_MIB,
            show_default=True,
            metavar="MIB",
            help="Stdout kept per command; a longer output is recorded as truncated, not "
            "stored.",
        ),
    ]


def _apply(
    fn: Callable[..., Any], options: list[Callable[[Callable[..., Any]], Callable[..., Any]]]
) -> Callable[..., Any]:
    for option in reversed(options):
        fn = option(fn)
    return fn


def live_source_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The live-source options alone (for `collect`, which always collects live)."""
    return _apply(fn, _live_option_list(collect=True))


def source_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`--bundle` + the live-source options + `--save-bundle` (see module docstring)."""
    return _apply(
        fn,
        [
            click.option(
                "--bundle",
                "bundle",
                metavar="PATH",
                help="Replay a support bundle (directory or .tar.gz; example:NAME for a bundled "
                "example) instead of a live cluster.",
            ),
            *_live_option_list(),
            click.option(
                "--save-bundle",
                "save_bundle",
                metavar="PATH",
                help="Keep the live-collected bundle at PATH (dir or .tar.gz).",
            ),
        ],
    )


LIVE_EXTRA_HINT = "install the live-collection clients: pip install 'ambientctl[live]'"
_CLIENTS = {"kube": ("kubernetes",), "kind": ("docker",), "ssh": ("paramiko",)}


def _require_clients(mode: str) -> None:
    """Live collection imports its client lazily; say which extra is missing before
    anything starts (rather than an internal error from deep inside a worker)."""
    from importlib.util import find_spec

    missing = [m for m in _CLIENTS.get(mode, ()) if find_spec(m) is None]
    if missing:
        raise CollectionError(
            f"{'--' + mode if mode != 'kube' else 'live collection from a kube context'} "
            f"needs the Python package {', '.join(missing)}, which is not installed",
            hint=LIVE_EXTRA_HINT + " (or replay a bundle: --bundle " + EXAMPLE_BUNDLE + ")",
        )


def live_options_from(**opts: Any) -> Any:
    """A `collectors.live.LiveOptions` from the option values (unknown keys ignored).

    Raises CollectionError when no source at all is configured (no kube context, no
    --kind, no --ssh): the one-line "no cluster reachable" error with the --bundle hint.
    """
    from ambientctl.collectors.live import LiveOptions, env_kubeconfig_present

    live = LiveOptions(
        context=opts.get("context"),
        kubeconfig=opts.get("kubeconfig"),
        kind=opts.get("kind"),
        ssh=opts.get("ssh"),
        ssh_inventory=opts.get("ssh_inventory"),
        ssh_accept_new=bool(opts.get("ssh_accept_new")),
        ssh_known_hosts=opts.get("ssh_known_hosts") or "~/.ssh/known_hosts",
        ssh_user=opts.get("ssh_user"),
        ssh_key=opts.get("ssh_key"),
        ssh_sudo=bool(opts.get("ssh_sudo")),
        ssh_jump=opts.get("ssh_jump"),
        nodes=tuple(opts.get("nodes") or ()),
        namespaces=tuple(opts.get("namespaces") or ()),
        concurrency=int(opts.get("concurrency") or 8),
        target_timeout=float(opts.get("target_timeout") or DEFAULT_TARGET_TIMEOUT),
        max_output=max_output_bytes(opts),
    )
    _require_clients(live.mode)
    if (
        live.mode == "kube"
        and not live.context
        and not live.kubeconfig
        and not env_kubeconfig_present()
    ):
        raise CollectionError(
            "no cluster reachable: no kube context configured ($KUBECONFIG, ~/.kube/config) "
            "and no --kind or --ssh given",
            hint=f"replay a bundle instead: --bundle {EXAMPLE_BUNDLE}",
        )
    return live


def collection_warnings(manifest: dict[str, Any]) -> list[str]:
    """stderr lines for what a live collection could not see, from its manifest notes.

    A node-level collection (--kind, --ssh) without a reachable Kubernetes API collects
    the nodes' own namespaces only: pod namespaces cannot be named (nor collected), so a
    trace between pods cannot be answered - said loudly, with a remedy the same command
    accepts. A node container that is not running is named with its state.
    """
    collection = manifest.get("collection") or {}
    lines = []
    for node, state in sorted((collection.get("unavailable_nodes") or {}).items()):
        lines.append(f"warning: node {node}: container is {state}; nothing collected from it")
    why = collection.get("cluster_error")
    if why and collection.get("mode") in ("kind", "ssh"):
        context = collection.get("context")
        remedy = "--kubeconfig FILE or --context NAME"
        if collection.get("mode") == "kind":
            cluster = collection.get("kind_cluster")
            remedy = (
                f"--kubeconfig FILE (`kind get kubeconfig --name {cluster} > FILE`) "
                "or --context NAME"
            )
        lines += [
            "warning: ONLY NODES WERE COLLECTED: the Kubernetes API"
            + (f" (context {context})" if context else "")
            + f" is not reachable ({why}); pods are unnamed and their network namespaces "
            "were not collected",
            f"hint: add {remedy} to the same command to name and collect the pods",
        ]
    return lines


def max_output_bytes(opts: dict[str, Any]) -> int:
    """`--max-output` (MiB) in bytes."""
    return int(opts.get("max_output_mib") or DEFAULT_MAX_OUTPUT_MIB) * 1024 * 1024


def _temp_bundle() -> str:
    """A fresh bundle path in a private temporary directory, removed at exit."""
    tmp = tempfile.mkdtemp(prefix="ambientctl-live-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    return os.path.join(tmp, "bundle")


def resolve_source(**opts: Any) -> str:
    """A bundle path for the source options: `--bundle` as given, or a live collection.

    Raises CollectionError ("no cluster reachable: ...", hint: --bundle + the example)
    when nothing live can be reached.
    """
    bundle = opts.get("bundle")
    if bundle:
        live_given = [flag for key, flag in _LIVE_FLAGS.items() if opts.get(key)]
        if live_given:
            raise UsageError(
                f"--bundle replays a bundle; it cannot be combined with {', '.join(live_given)}"
            )
        from ambientctl.resources import bundle_argument

        return bundle_argument(str(bundle))
    from ambientctl.cli.common import sigterm_as_interrupt
    from ambientctl.collectors.live import collect_live

    sigterm_as_interrupt()  # a TERM must also remove the temporary bundle (atexit)
    live = live_options_from(**opts)
    out = opts.get("save_bundle") or _temp_bundle()
    progress: Callable[[str], None] | None = None
    if sys.stderr.isatty():
        def progress(line: str) -> None:
            echo(f"  {line}", err=True)
    written = collect_live(live, out, progress=progress)
    if written.manifest.get("collection", {}).get("interrupted"):
        kept = (
            f"partial bundle kept at {written.path}"
            if opts.get("save_bundle")
            else "nothing kept (the temporary bundle is removed; --save-bundle keeps it)"
        )
        echo(f"interrupted: live collection stopped, no analysis; {kept}", err=True)
        raise click.exceptions.Exit(130)
    for line in collection_warnings(written.manifest):
        echo(line, err=True)
    if written.failed:
        echo(
            f"warning: live collection is partial: {len(written.failed)} of "
            f"{len(written.manifest['entries'])} commands failed (manifest.json has each reason)",
            err=True,
        )
    return written.path
