"""Live collection: plan and run a kind, Kubernetes-exec or SSH collection into a bundle.

Every live source ends in the same place as `collect --local`: a `Plan` of targets run by
`runner.Runner` and written by `bundle.writer` - live mode is "collect a bundle, then
analyse it", so replay is exact by construction.

Sources (pick one; `--node` / `--namespace` filter the targets):
- `--kind NAME`: each kind node container through the docker SDK (its own netns = the
  node's; every pod netns under its /var/run/netns), pods named by the Kubernetes API of
  context `kind-NAME` (or `--context`).
- `--ssh SPEC` / `--ssh-inventory FILE`: each node through paramiko, same layout as kind;
  pods named by the Kubernetes API of `--context` (current context) when reachable.
- default: the Kubernetes API of `--context` (or the current context) only. Per node, the
  istio-cni node pod (hostNetwork, so the node's root netns; pod netns through the host
  directory it mounts at /host/var/run/netns) and the ztunnel pod (its own netns, the
  2022 design's redirection target). Images may lack the tools: what could not be seen,
  and which source would see it, is recorded in the manifest (`collection.not_seen`).

ztunnel's admin `config_dump` (localhost:15000 inside the ztunnel pod's own netns) is one
more target per ztunnel pod (`Target.ztunnel_target`): kind and SSH run the node's curl
inside the ztunnel pod's netns (one exec, not batched); Kubernetes-exec-only collection
cannot (distroless ztunnel: no curl, no shell), so it fetches the same URL through the API
server's pod port-forward (`kube.KubePortForwardTransport`, route `portforward/NS/POD`).

Routing: the runner hands a transport only the target's netns, so each target's netns
is a `RoutedNetns` that also names the node transport (`route`) and the target kind
(what the batch runs). Each node transport sits behind `AllowlistTransport` (nothing
outside the read-only catalogue and the two fixed scripts is ever sent) and is wrapped in
`BatchingTransport`: one round trip per target. Discovery (which netns is which pod) runs
per node, concurrently, through the same allowlisted transports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ambientctl.collectors.batch import CATALOGUE, AllowlistTransport, BatchingTransport
from ambientctl.collectors.discovery import (
    ClusterView,
    discover_cluster,
    discover_pod_netns,
    istio_pods,
    map_netns,
    pod_key,
)
from ambientctl.collectors.exec_outcome import DEFAULT_MAX_OUTPUT
from ambientctl.collectors.runner import (
    DEFAULT_CONCURRENCY,
    DEFAULT_TARGET_TIMEOUT,
    DEFAULT_TIMEOUT,
    CollectOptions,
    Plan,
    Target,
    collect_bundle,
)
from ambientctl.collectors.transport import NetnsRef, Transport
from ambientctl.errors import CollectionError, TransportError, UsageError
from ambientctl.raw import ExecResult, RawStatus

NETNS_DIR = "/var/run/netns"
CNI_HOST_NETNS_DIR = "/host/var/run/netns"  # istio-cni DaemonSet's mount of the host dir
# Istio >= 1.26 runs the istio-cni agent in its OWN netns by default (chart value
# `ambient.shareHostNetworkNamespace: false`, pod `hostNetwork: false`); it reaches the
# node's netns through the host's /proc, mounted read-only at /host/proc. PID 1 of the
# host (its init) lives in the node's root netns.
CNI_HOST_PROC = "/host/proc"
MAX_CONCURRENCY = 64
NO_CLUSTER_HINT = "replay a bundle instead: --bundle example:seed-kind-ambient"


@dataclass(frozen=True, slots=True)
class RoutedNetns(NetnsRef):
    """A netns plus which node transport reaches it and what kind of target it is."""

    route: str = ""
    kind: str = ""  # "node" | "pod" | "ztunnel"


@dataclass(frozen=True)
class LiveOptions:
    """The source options of `collect` / `trace` / `doctor` (see cli/source.py)."""

    context: str | None = None
    kubeconfig: str | None = None
    kind: str | None = None
    ssh: str | None = None
    ssh_inventory: str | None = None
    ssh_accept_new: bool = False
    ssh_known_hosts: str = "~/.ssh/known_hosts"
    ssh_user: str | None = None
    ssh_key: str | None = None
    ssh_sudo: bool = False
    ssh_jump: str | None = None
    docker_host: str | None = None
    nodes: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    concurrency: int = DEFAULT_CONCURRENCY
    timeout: float = DEFAULT_TIMEOUT
    # One deadline for each target's whole collection (runner.DEFAULT_TARGET_TIMEOUT).
    target_timeout: float = DEFAULT_TARGET_TIMEOUT
    # Per-command stdout cap (exec_outcome.DEFAULT_MAX_OUTPUT); None: no cap.
    max_output: int | None = DEFAULT_MAX_OUTPUT
    split_dumps: bool = True  # ztunnel config_dumps: cluster-wide sections stored once
    connect_timeout: float = 15.0
    # Where the istio-cni node pod sees the host's /var/run/netns (its DaemonSet mounts
    # it there); only Kubernetes-exec collection uses it.
    cni_netns_dir: str = CNI_HOST_NETNS_DIR
    # Where a non-hostNetwork istio-cni agent sees the host's /proc (see CNI_HOST_PROC).
    cni_host_proc: str = CNI_HOST_PROC

    @property
    def collect_options(self) -> CollectOptions:
        """How the collection runs (the part every source shares)."""
        return CollectOptions(timeout=self.timeout, concurrency=self.concurrency,
                              target_timeout=self.target_timeout, max_output=self.max_output,
                              split_dumps=self.split_dumps)

    @property
    def mode(self) -> str:
        if self.kind:
            return "kind"
        if self.ssh or self.ssh_inventory:
            return "ssh"
        return "kube"


class RoutingTransport:
    """Dispatches each command to the node transport its netns names (`route`)."""

    def __init__(self, name: str, routes: dict[str, Transport]) -> None:
        self.name = name
        self.routes = routes
        self.max_output: int | None = None  # for the manifest's notes (set by collect_bundle)

    def _route(self, netns: NetnsRef | None) -> Transport:
        route = getattr(netns, "route", None)
        transport = self.routes.get(route or "")
        if transport is None:
            raise TransportError(f"no {self.name} transport for target route {route!r}")
        return transport

    def run(self, argv: Sequence[str], *, netns: NetnsRef | None, timeout: float) -> ExecResult:
        return self._route(netns).run(argv, netns=netns, timeout=timeout)

    def describe_wrapper(self, netns: NetnsRef) -> tuple[str, ...]:
        transport = self.routes.get(getattr(netns, "route", ""))
        describe = getattr(transport, "describe_wrapper", None)
        return tuple(describe(netns)) if callable(describe) else netns.wrapper()

    def netns_inode(self, netns: NetnsRef | None) -> int | None:
        """The netns inode the route's batch read `netns` from (None when unknown)."""
        transport = self.routes.get(getattr(netns, "route", ""))
        get = getattr(transport, "netns_inode", None)
        return get(netns) if callable(get) else None

    def close(self) -> None:
        for transport in self.routes.values():
            with contextlib.suppress(Exception):  # best effort; the bundle is what matters
                transport.close()


@dataclass
class LivePlan:
    """Everything `run_live` needs: a routing transport, targets, files, notes.

    `cluster` keeps the API's files and list errors, not its objects (`_assemble`)."""

    transport: RoutingTransport
    targets: list[Target]
    cluster: ClusterView | None
    collection: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers


def _check_filters(opts: LiveOptions) -> None:
    from ambientctl.bundle.layout import valid_name

    for what, names in (("--node", opts.nodes), ("--namespace", opts.namespaces)):
        for name in names:
            if not valid_name(name):
                raise UsageError(f"{what} {name!r} is not a valid Kubernetes name")
    if not 1 <= opts.concurrency <= MAX_CONCURRENCY:
        raise UsageError(f"--concurrency must be between 1 and {MAX_CONCURRENCY}")


def _kube_factory(opts: LiveOptions, context: str | None) -> Any:
    from ambientctl.collectors.kube import ClientFactory, KubeSource

    return ClientFactory(
        KubeSource(context=context, kubeconfig=opts.kubeconfig), timeout=opts.connect_timeout
    )


def _cluster(
    opts: LiveOptions, context: str | None, *, required: bool
) -> tuple[Any, ClusterView | None, str | None]:
    """(client factory, cluster view or None, why it is missing)."""
    factory = _kube_factory(opts, context)
    try:
        return factory, discover_cluster(factory, timeout=opts.connect_timeout), None
    except TransportError as exc:
        if required:
            raise CollectionError(
                f"no cluster reachable: {exc.message}", hint=NO_CLUSTER_HINT
            ) from None
        return factory, None, exc.message


def _wanted_node(opts: LiveOptions, node: str) -> bool:
    return not opts.nodes or node in opts.nodes


def _wanted_pod(opts: LiveOptions, namespace: str) -> bool:
    return not opts.namespaces or namespace in opts.namespaces


def _parallel(fn: Callable[[Any], Any], items: Sequence[Any], concurrency: int) -> list[Any]:
    """fn over items with bounded concurrency; an exception is returned, not raised."""

    def safe(item: Any) -> Any:
        try:
            return fn(item)
        except TransportError as exc:
            return exc

    if not items:
        return []
    with ThreadPoolExecutor(
        max_workers=min(concurrency, len(items)), thread_name_prefix="discover"
    ) as pool:
        return list(pool.map(safe, items))


def _node_targets(
    node: str,
    route: str,
    transport: Transport,
    view: ClusterView | None,
    opts: LiveOptions,
    notes: dict[str, Any],
    *,
    netns_dir: str = NETNS_DIR,
    by_path: bool = False,
    ztunnel_admin: bool = True,
    node_netns: RoutedNetns = RoutedNetns(),
    host_proc: str | None = None,
) -> list[Target]:
    """The node's own netns + the netns of each of its pods found in `netns_dir`; with
    `ztunnel_admin`, the node's ztunnel pod once more, for its admin `config_dump`.
    `node_netns`: how the node's own netns is entered (default: the exec's own netns).
    `host_proc`: where `netns_dir` is absent, find pod netns as `HOST_PROC/PID/ns/net`."""
    targets = [Target.node_target(node, dataclasses.replace(node_netns, route=route, kind="node"))]
    if view is None:
        return targets
    # Discovery is one more round trip to the node, bounded like a target's collection.
    discovered = discover_pod_netns(
        transport,
        netns_dir,
        host_proc=host_proc,
        timeout=min(opts.connect_timeout + opts.timeout, opts.target_timeout),
    )
    if discovered.proc is not None:
        notes.setdefault("pod_netns_via_proc", {})[node] = (
            f"{netns_dir} absent: pod netns entered as {discovered.proc}/PID/ns/net"
        )
    mapping = map_netns(discovered.addrs, view.pods_on(node))
    if mapping.unmapped or mapping.ambiguous:
        notes.setdefault("unmapped_netns", {})[node] = sorted(mapping.unmapped + mapping.ambiguous)
    zt = istio_pods(view, node).get("ztunnel") if ztunnel_admin else None
    zt_key = pod_key(zt) if zt is not None else None
    admin: list[Target] = []
    for netns, (namespace, pod) in sorted(mapping.pods.items(), key=lambda kv: kv[1]):
        if not _wanted_pod(opts, namespace):
            continue
        ref = (
            RoutedNetns(path=discovered.path(netns, netns_dir), route=route, kind="pod")
            if by_path or discovered.proc is not None
            else RoutedNetns(name=netns, route=route, kind="pod")
        )
        targets.append(Target.pod_target(node, namespace, pod, ref))
        if (namespace, pod) == zt_key:
            admin.append(
                Target.ztunnel_target(node, namespace, pod, dataclasses.replace(ref, kind="ztunnel"))
            )
    return targets + admin


def _batched(t: Transport, opts: LiveOptions) -> BatchingTransport:
    # The whole batch of a target gets the target's deadline; each command inside it its
    # own timeout (x its spec's factor), enforced on the node by coreutils `timeout`.
    # Each command's stdout is capped on the node (`head -c`) and again here.
    return BatchingTransport(
        t,
        target_timeout=opts.target_timeout,
        command_timeout=opts.timeout,
        max_output=opts.max_output,
    )


def stream_cap(opts: LiveOptions) -> int | None:
    """What one exec's stdout may hold on a node transport: a whole batch carries every
    command of a target, each capped on the node, so the stream cap is that many caps (a
    bound on memory even when the node has no `head` to cap them one by one)."""
    if opts.max_output is None:
        return None
    return opts.max_output * (len(CATALOGUE) + 1)


# --------------------------------------------------------------------------- planners


def plan_kind(opts: LiveOptions) -> LivePlan:
    """kind: docker exec into each node container; pods named by the cluster's API."""
    from ambientctl.collectors.discovery import kind_nodes
    from ambientctl.collectors.docker import DockerTransport, docker_client

    assert opts.kind is not None
    from ambientctl.bundle.layout import valid_name

    if not valid_name(opts.kind):
        raise UsageError(f"--kind {opts.kind!r} is not a valid kind cluster name")
    try:
        client = docker_client(opts.docker_host, opts.connect_timeout)
        nodes = kind_nodes(client, opts.kind)
        client.close()
    except TransportError as exc:
        raise CollectionError(
            f"no cluster reachable: {exc.message}", hint=exc.hint or NO_CLUSTER_HINT
        ) from None
    if not any(n.running for n in nodes):
        why = (
            "node containers: " + ", ".join(f"{n.name} {n.state}" for n in nodes)
            if nodes
            else f"no container labelled io.x-k8s.kind.cluster={opts.kind}"
        )
        raise CollectionError(
            f"no running kind cluster named {opts.kind!r} ({why})",
            hint="`kind get clusters` lists them; or " + NO_CLUSTER_HINT,
        )
    context = opts.context or f"kind-{opts.kind}"
    _, view, cluster_why = _cluster(opts, context, required=False)
    notes: dict[str, Any] = {"mode": "kind", "kind_cluster": opts.kind, "context": context}
    if cluster_why:
        notes["cluster_error"] = cluster_why
    selected = [n for n in nodes if _wanted_node(opts, n.name)]
    stopped = {n.name: n.state for n in selected if not n.running}
    if stopped:
        # Still planned: each of their commands fails in the manifest (bundle partial),
        # and the collection notes say which state kept them out.
        notes["unavailable_nodes"] = stopped
    routes: dict[str, Transport] = {}
    inner: dict[str, Transport] = {}
    for n in selected:
        inner[n.name] = AllowlistTransport(
            DockerTransport(
                n.name,
                base_url=opts.docker_host,
                connect_timeout=opts.connect_timeout,
                max_output=stream_cap(opts),
            )
        )
        routes[n.name] = _batched(inner[n.name], opts)

    def node_plan(n: Any) -> list[Target] | TransportError:
        if not n.running:
            return TransportError(
                f"docker: node container {n.name} is {n.state}: nothing can be collected from it"
            )
        return _node_targets(n.name, n.name, inner[n.name], view, opts, notes)

    results = _parallel(node_plan, selected, opts.concurrency)
    return _assemble(
        "docker",
        routes,
        selected_names=[n.name for n in selected],
        results=results,
        view=view,
        notes=notes,
    )


def plan_ssh(opts: LiveOptions) -> LivePlan:
    """SSH: paramiko into each node; pods named by the Kubernetes API when reachable."""
    from ambientctl.collectors.ssh import load_inventory, parse_ssh_spec, transports_for

    if opts.ssh and opts.ssh_inventory:
        raise UsageError("--ssh and --ssh-inventory cannot be combined")
    if opts.ssh_inventory:
        endpoints = load_inventory(opts.ssh_inventory)
    else:
        endpoints = parse_ssh_spec(
            opts.ssh or "",
            user=opts.ssh_user,
            key_file=opts.ssh_key,
            sudo=opts.ssh_sudo,
            jump=opts.ssh_jump,
        )
    endpoints = [e for e in endpoints if _wanted_node(opts, e.node)]
    if not endpoints:
        raise UsageError("no SSH node left after --node filtering")
    inner: dict[str, Transport] = {
        node: AllowlistTransport(t)
        for node, t in transports_for(
            endpoints,
            known_hosts=opts.ssh_known_hosts,
            accept_new=opts.ssh_accept_new,
            connect_timeout=opts.connect_timeout,
            max_output=stream_cap(opts),
        ).items()
    }
    _, view, why = _cluster(opts, opts.context, required=False)
    notes: dict[str, Any] = {"mode": "ssh", "context": opts.context}
    if why:
        notes["cluster_error"] = why + " (pods are not named: only node netns collected)"
    routes: dict[str, Transport] = {node: _batched(t, opts) for node, t in inner.items()}
    names = [e.node for e in endpoints]
    results = _parallel(
        lambda n: _node_targets(n, n, inner[n], view, opts, notes), names, opts.concurrency
    )
    return _assemble("ssh", routes, selected_names=names, results=results, view=view, notes=notes)


def plan_kube(opts: LiveOptions) -> LivePlan:
    """Kubernetes exec only: istio-cni node pods (+ pod netns) and ztunnel pods."""
    from ambientctl.collectors.kube import KubeExecTransport, KubePortForwardTransport

    factory, view, _ = _cluster(opts, opts.context, required=True)
    assert view is not None
    notes: dict[str, Any] = {"mode": "kube", "context": opts.context}
    routes: dict[str, Transport] = {}
    inner: dict[str, Transport] = {}
    work: list[tuple[str, dict[str, dict[str, Any]]]] = []
    for node in view.node_names():
        if not _wanted_node(opts, node):
            continue
        pods = istio_pods(view, node)
        if not pods:
            notes.setdefault("not_seen", []).append(
                {
                    "target": f"node/{node}",
                    "what": "everything on this node",
                    "why": "no istio-cni or ztunnel pod to exec into",
                    "seen_by": "--kind NAME or --ssh (node-level access)",
                }
            )
            continue
        for pod in pods.values():
            ns, name = pod_key(pod)
            container = (pod.get("spec") or {}).get("containers", [{}])[0].get("name")
            route = f"{ns}/{name}"
            inner[route] = AllowlistTransport(
                KubeExecTransport(
                    ns,
                    name,
                    container,
                    client_factory=factory,
                    connect_timeout=opts.connect_timeout,
                    max_output=stream_cap(opts),
                )
            )
            routes[route] = _batched(inner[route], opts)
            if pod is pods.get("ztunnel"):
                routes[f"portforward/{route}"] = AllowlistTransport(
                    KubePortForwardTransport(
                        ns, name, client_factory=factory, connect_timeout=opts.connect_timeout
                    )
                )
        work.append((node, pods))

    def node_plan(item: tuple[str, dict[str, dict[str, Any]]]) -> list[Target]:
        node, pods = item
        targets: list[Target] = []
        mapped: set[tuple[str, str]] = set()
        if "istio-cni" in pods:
            route = "/".join(pod_key(pods["istio-cni"]))
            targets = _node_targets(
                node,
                route,
                inner[route],
                view,
                opts,
                notes,
                netns_dir=opts.cni_netns_dir,
                by_path=True,
                ztunnel_admin=False,  # read through port-forward below, not the cni pod
                node_netns=_cni_node_netns(pods["istio-cni"], opts),
                host_proc=opts.cni_host_proc,
            )
            mapped = {(t.namespace, t.pod) for t in targets if t.kind == "pod"}  # type: ignore[misc]
        else:
            notes.setdefault("not_seen", []).append(
                {
                    "target": f"node/{node}",
                    "what": "the node's own netns and its pods' netns",
                    "why": "no istio-cni node pod on this node",
                    "seen_by": "--kind NAME or --ssh (node-level access)",
                }
            )
        zt = pods.get("ztunnel")
        if zt is not None and pod_key(zt) not in mapped and _wanted_pod(opts, pod_key(zt)[0]):
            ns, name = pod_key(zt)
            # Exec into ztunnel itself: its commands run in its own netns (2022 design).
            targets.append(
                Target.pod_target(node, ns, name, RoutedNetns(route=f"{ns}/{name}", kind="pod"))
            )
        if zt is not None and _wanted_pod(opts, pod_key(zt)[0]):
            ns, name = pod_key(zt)
            ref = RoutedNetns(route=f"portforward/{ns}/{name}", kind="ztunnel")
            targets.append(Target.ztunnel_target(node, ns, name, ref))
        return targets

    results = _parallel(node_plan, work, opts.concurrency)
    return _assemble(
        "kube", routes, selected_names=[n for n, _ in work], results=results, view=view, notes=notes
    )


def _cni_node_netns(cni_pod: dict[str, Any], opts: LiveOptions) -> RoutedNetns:
    """How an exec into the istio-cni agent pod reaches the NODE's netns.

    `hostNetwork: true` (Istio < 1.26, or `ambient.shareHostNetworkNamespace: true`): the
    pod's own netns is the node's. Otherwise (the 1.26+ default; absent means false in
    the Pod API) the agent has a netns of its own and the node's is entered by path,
    through the host's init: `nsenter --net=/host/proc/1/ns/net`.
    """
    if (cni_pod.get("spec") or {}).get("hostNetwork") is True:
        return RoutedNetns()
    return RoutedNetns(path=f"{opts.cni_host_proc.rstrip('/')}/1/ns/net")


def _assemble(
    name: str,
    routes: dict[str, Transport],
    *,
    selected_names: list[str],
    results: list[Any],
    view: ClusterView | None,
    notes: dict[str, Any],
) -> LivePlan:
    targets: list[Target] = []
    unreachable: dict[str, str] = {}
    for node, res in zip(selected_names, results, strict=True):
        if isinstance(res, TransportError):
            # Discovery could not reach the node: still plan its host netns, so the
            # manifest records the failure per command like any other.
            unreachable[node] = res.message
            route = node if node in routes else ""
            if route:
                targets.append(Target.node_target(node, RoutedNetns(route=route, kind="node")))
            continue
        targets.extend(res)
    # One round trip per node: each node transport learns every netns it will be asked
    # about (its own and its pods'), and batches them all into one exec.
    by_route: dict[str, list[NetnsRef]] = {}
    for t in targets:
        if t.kind in ("node", "pod"):
            by_route.setdefault(getattr(t.netns, "route", ""), []).append(t.netns)
    for route, refs in by_route.items():
        expect = getattr(routes.get(route), "expect", None)
        if callable(expect):
            expect(refs)
    if unreachable:
        notes["discovery_errors"] = unreachable
    if view is not None and view.skipped:
        # API objects with a name that is not DNS-1123: left out, the rest collected.
        notes["skipped_objects"] = list(view.skipped)
    if not targets:
        raise CollectionError(
            "nothing to collect: no node matched"
            + (f" ({', '.join(sorted(unreachable))} unreachable)" if unreachable else ""),
            hint="check --node / --collect-namespace, or " + NO_CLUSTER_HINT,
        )
    # The run needs of the cluster only its files and list errors: the projected objects
    # (~1.8 KB a pod: 18 MiB at 200 x 50) were for planning and go with this frame.
    kept = dataclasses.replace(view, objects={}) if view is not None else None
    return LivePlan(RoutingTransport(name, routes), targets, kept, notes)


def plan_live(opts: LiveOptions) -> LivePlan:
    """Discover targets for the chosen source (see module docstring)."""
    _check_filters(opts)
    return {"kind": plan_kind, "ssh": plan_ssh, "kube": plan_kube}[opts.mode](opts)


# --------------------------------------------------------------------------- run


def _not_seen(plan: LivePlan, outputs: Sequence[Any]) -> list[dict[str, Any]]:
    """Per target, the binaries that were missing, and which source would see them."""
    missing: dict[str, list[str]] = {}
    for o in outputs:
        if o.status is RawStatus.NOT_FOUND:
            missing.setdefault(o.target, []).append(o.argv[0])
    other = {
        "kube": "--kind NAME or --ssh (node-level access; the image is distroless)",
        "docker": "--ssh, or install the tools in the node image",
        "ssh": "install the tools on the node (iptables, iproute2, ipset, nftables)",
    }[plan.transport.name]
    # ztunnel's config_dump needs curl on the node; the API server's port-forward
    # (collection without --kind/--ssh) reaches the admin port without any binary.
    admin = "the Kubernetes API (collect without --kind/--ssh: port-forward to :15000)"
    return [
        {
            "target": t,
            "what": sorted(set(b)),
            "why": "binary not found on the target",
            "seen_by": admin if t.startswith("ztunnel/") else other,
        }
        for t, b in sorted(missing.items())
    ]


def run_live(
    plan: LivePlan,
    out: str,
    *,
    opts: LiveOptions,
    argv: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Any:
    """Run `plan` and write the bundle to `out` (`runner.collect_bundle`, the one
    run-then-write of every source); returns the WrittenBundle.

    Raises CollectionError when not one command succeeded.
    """
    from ambientctl.bundle.writer import ExtraFile

    collection = dict(plan.collection)
    if plan.cluster is not None and plan.cluster.errors:
        # optional lists the API would not give (no CRD, no grant): said, not fatal
        collection["cluster_list_errors"] = dict(sorted(plan.cluster.errors.items()))
    collection["argv"] = list(argv) if argv is not None else ["ambientctl", *sys.argv[1:]]
    if opts.nodes:
        collection["nodes_filter"] = list(opts.nodes)
    if opts.namespaces:
        collection["namespaces_filter"] = list(opts.namespaces)

    def not_seen(result: Any) -> dict[str, Any]:
        seen = collection.get("not_seen", []) + _not_seen(plan, result.outputs)
        return {"not_seen": seen} if seen else {}

    source = f"kubernetes API ({plan.collection.get('context') or 'current context'})"
    extra = [
        ExtraFile(p, d, source)
        for p, d in sorted((plan.cluster.files if plan.cluster else {}).items())
    ]
    written, _interrupted = collect_bundle(
        plan.transport,
        Plan(tuple(plan.targets)),
        out,
        collection=collection,
        options=opts.collect_options,
        extra_files=extra,
        progress=progress,
        target_fields=lambda t: {"route": getattr(t.netns, "route", None)},
        after_run=not_seen,
        nothing_hint=NO_CLUSTER_HINT,
    )
    return written


def collect_live(
    opts: LiveOptions,
    out: str,
    *,
    progress: Callable[[str], None] | None = None,
    argv: Sequence[str] | None = None,
) -> Any:
    """Plan + run: the whole live collection into bundle `out` (a dir or .tar.gz)."""
    plan = plan_live(opts)
    if progress is not None:
        progress(f"collecting {len(plan.targets)} network namespaces via {plan.transport.name} ...")
    return run_live(plan, out, opts=opts, argv=argv, progress=progress)


def env_kubeconfig_present() -> bool:
    """Is any Kubernetes configuration around at all (for the "no cluster" message)?"""
    path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    return any(os.path.exists(p) for p in path.split(os.pathsep)) or bool(
        os.environ.get("KUBERNETES_SERVICE_HOST")
    )
