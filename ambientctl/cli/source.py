"""Where a command's data comes from: `--bundle PATH`, or a live cluster collected now.

`trace` and `doctor` (and anything decorated with `source_options`) take the same
options. Live mode collects a bundle first (into a temporary directory, removed at exit,
unless `--save-bundle PATH`) and then analyses that bundle exactly as a replay would.

    --bundle PATH             replay a bundle (directory or .tar.gz); no cluster needed
    --local                   this machine: its netns as node --node-name (default: the
                              hostname), plus --pod NETNS=NS/POD, or the nodes and pods of
                              --targets FILE; --cluster-dir DIR adds kubectl -o json files
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
import dataclasses
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
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
        click.option(
            "--whole-ztunnel-dumps",
            "whole_ztunnel_dumps",
            is_flag=True,
            help="Store every node's ztunnel config_dump whole (as before bundle format 2), "
            "not its cluster-wide sections once under cluster/ztunnel-shared/.",
        ),
    ]


_LOCAL_FLAGS = {
    "node_name": "--node-name",
    "local_pods": "--pod",
    "targets_file": "--targets",
    "cluster_dir": "--cluster-dir",
}


def _local_option_list() -> list[Callable[[Callable[..., Any]], Callable[..., Any]]]:
    """`--local` and what describes this machine's targets: one source among the others."""
    return [
        click.option("--local", "local", is_flag=True,
                     help="Collect this machine (run commands here): its network namespace as "
                     "node --node-name, plus --pod ones, or the nodes and pods of --targets."),
        click.option("--node-name", "node_name", metavar="NAME",
                     help="With --local: node name for this machine [default: hostname]."),
        click.option("--pod", "local_pods", multiple=True, metavar="NETNS=NAMESPACE/POD",
                     help="With --local: also collect a pod's netns (a name under "
                     "/var/run/netns, or a path). Repeatable."),
        click.option("--targets", "targets_file", type=click.Path(exists=True, dir_okay=False),
                     help="With --local: JSON file listing nodes and pods by netns (labs "
                     "emulating several nodes)."),
        click.option("--cluster-dir", "cluster_dir", type=click.Path(exists=True,
                                                                     file_okay=False),
                     help="With --local: copy pods/services/namespaces/nodes/endpointslices "
                     ".json from here into cluster/."),
    ]


def _apply(
    fn: Callable[..., Any], options: list[Callable[[Callable[..., Any]], Callable[..., Any]]]
) -> Callable[..., Any]:
    for option in reversed(options):
        fn = option(fn)
    return fn


def live_source_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The collection sources alone (for `collect`, which always collects): `--local` and
    the live ones."""
    return _apply(fn, [*_local_option_list(), *_live_option_list(collect=True)])


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
            *_local_option_list(),
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
        **dataclasses.asdict(collect_options_from(**opts)),
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


def collect_options_from(**opts: Any) -> Any:
    """The `collectors.runner.CollectOptions` of the option values (unknown keys ignored):
    how a collection runs, whichever source it reads."""
    from ambientctl.collectors.runner import DEFAULT_TIMEOUT, CollectOptions

    return CollectOptions(
        timeout=float(opts.get("timeout") or DEFAULT_TIMEOUT),
        concurrency=int(opts.get("concurrency") or 8),
        target_timeout=float(opts.get("target_timeout") or DEFAULT_TARGET_TIMEOUT),
        max_output=max_output_bytes(opts),
        split_dumps=not opts.get("whole_ztunnel_dumps"),
    )


@dataclass(frozen=True)
class LocalSource:
    """`--local`: this machine's network namespaces, named by the options."""

    node_name: str | None = None  # this machine's node [default: the hostname]
    pods: tuple[str, ...] = ()  # NETNS=NAMESPACE/POD
    targets_file: str | None = None  # several emulated nodes (labs)
    cluster_dir: str | None = None  # kubectl -o json files copied into cluster/


def local_source_from(**opts: Any) -> LocalSource | None:
    """The `--local` source of the option values; None without `--local`.

    Raises UsageError when a `--local`-only option comes without it, or `--local` with
    another source (`--bundle`, `--kind`, ...): one source per command.
    """
    given = [flag for key, flag in _LOCAL_FLAGS.items() if opts.get(key)]
    if not opts.get("local"):
        if given:
            raise UsageError(f"{', '.join(given)} need{'s' if len(given) == 1 else ''} --local")
        return None
    clash = [flag for key, flag in {"bundle": "--bundle", **_LIVE_FLAGS}.items()
             if key != "save_bundle" and opts.get(key)]
    if clash:
        raise UsageError(f"--local collects this machine; it cannot be combined with "
                         f"{', '.join(clash)}")
    if opts.get("targets_file") and (opts.get("local_pods") or opts.get("node_name")):
        raise UsageError("--targets cannot be combined with --pod or --node-name")
    return LocalSource(node_name=opts.get("node_name"),
                       pods=tuple(opts.get("local_pods") or ()),
                       targets_file=opts.get("targets_file"),
                       cluster_dir=opts.get("cluster_dir"))


def collect_local(local: LocalSource, options: Any, out: str, *,
                  progress: Callable[[str], None] | None = None) -> tuple[Any, bool]:
    """Collect this machine into bundle `out` (the pipeline every source shares,
    `collectors.runner.collect_bundle`); returns (WrittenBundle, interrupted)."""
    import json
    import socket

    from ambientctl.collectors.local import (
        LocalTransport,
        parse_pod_option,
        targets_from_document,
    )
    from ambientctl.collectors.runner import Plan, Target, collect_bundle, read_cluster_dir
    from ambientctl.collectors.transport import NetnsRef

    if local.targets_file:
        try:
            with open(local.targets_file, encoding="utf-8") as fh:
                doc = json.load(fh)
        except OSError as exc:
            raise UsageError(f"{local.targets_file}: cannot read targets "
                             f"({exc.strerror or exc})") from exc
        except ValueError as exc:
            raise UsageError(f"{local.targets_file}: not valid JSON ({exc})") from exc
        targets = targets_from_document(doc, source=local.targets_file)
    else:
        node = local.node_name or socket.gethostname().split(".", 1)[0].lower()
        targets = [Target.node_target(node, NetnsRef())]
        for value in local.pods:
            netns, namespace, pod = parse_pod_option(value)
            targets.append(Target.pod_target(node, namespace, pod, netns))
    collection: dict[str, object] = {
        "mode": "local",
        "argv": ["ambientctl", *sys.argv[1:]] if sys.argv else ["ambientctl", "collect"],
    }
    if local.cluster_dir:
        collection["cluster_dir"] = local.cluster_dir
    plan = Plan(tuple(targets))
    if progress:
        progress(f"collecting {len(plan.targets)} network namespaces ...")
    return collect_bundle(
        LocalTransport(), plan, out, collection=collection, options=options,
        extra_files=read_cluster_dir(local.cluster_dir) if local.cluster_dir else [],
        progress=progress)


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
    """A bundle path for the source options: `--bundle` as given, or a collection made
    now: `--local` (this machine) or live (kube, `--kind`, `--ssh`).

    Raises CollectionError ("no cluster reachable: ...", hint: --bundle + the example)
    when nothing live can be reached.
    """
    local = local_source_from(**opts)  # refuses --local with --bundle, --pod without it
    bundle = opts.get("bundle")
    if bundle and local is None:
        live_given = [flag for key, flag in _LIVE_FLAGS.items() if opts.get(key)]
        if live_given:
            raise UsageError(
                f"--bundle replays a bundle; it cannot be combined with {', '.join(live_given)}"
            )
        from ambientctl.resources import bundle_argument

        return bundle_argument(str(bundle))
    from ambientctl.cli.common import sigterm_as_interrupt

    sigterm_as_interrupt()  # a TERM must also remove the temporary bundle (atexit)
    # The source is checked (no cluster reachable, client missing) before anything exists.
    live = live_options_from(**opts) if local is None else None
    out = opts.get("save_bundle") or _temp_bundle()
    progress: Callable[[str], None] | None = None
    if sys.stderr.isatty():
        def progress(line: str) -> None:
            echo(f"  {line}", err=True)
    if live is None:
        assert local is not None
        written, _ = collect_local(local, collect_options_from(**opts), out, progress=progress)
    else:
        from ambientctl.collectors.live import collect_live

        written = collect_live(live, out, progress=progress)
    what = "local" if local is not None else "live"
    if written.header.get("collection", {}).get("interrupted"):
        kept = (
            f"partial bundle kept at {written.path}"
            if opts.get("save_bundle")
            else "nothing kept (the temporary bundle is removed; --save-bundle keeps it)"
        )
        echo(f"interrupted: {what} collection stopped, no analysis; {kept}", err=True)
        raise click.exceptions.Exit(130)
    for line in collection_warnings(written.header):
        echo(line, err=True)
    if written.failed:
        echo(
            f"warning: {what} collection is partial: {len(written.failed)} of "
            f"{written.entry_count} commands failed (manifest.json has each reason)",
            err=True,
        )
    return written.path
