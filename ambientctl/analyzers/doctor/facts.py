"""Facts every check needs, computed once per snapshot: node modes, ambient pods, ztunnels.

Which pods *should* be in the mesh comes from the cluster objects (istio-datapath.md §2.1
and §3.1); which design a node runs comes from its rules (`classify`). Both are needed
because the checks compare them: an ambient pod the node's rules do not know is the
most common failure of all.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Container, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from ambientctl.analyzers.derived_facts import DerivedFacts, running
from ambientctl.analyzers.snapshot import group_files
from ambientctl.errors import ParseError
from ambientctl.istio import Enrollment, is_ztunnel
from ambientctl.istio import enrollment as istio_enrollment
from ambientctl.model import (
    Chain,
    IPAddress,
    IpSet,
    IpSetMember,
    Link,
    NetNamespace,
    NodeState,
    Pod,
    PodRef,
    Route,
    RouteType,
    Rule,
    Service,
    Snapshot,
    Table,
)

BYPASS_INBOUND = "ambient.istio.io/bypass-inbound-capture"
# The fix for most missing or stale istio-cni state: its agent reconciles on start.
CNI_AGENT = "kubectl -n istio-system delete pod -l k8s-app=istio-cni-node " \
            "--field-selector spec.nodeName={node}"

# Which spec-table groups hold which kind of data a check needs (preference order as the
# snapshot reads them): the file names come from the one table (`snapshot.SPEC_TABLE`).
DATA_GROUPS: dict[str, tuple[str, ...]] = {
    "iptables": ("iptables-save", "nft", "iptables-legacy-save"),
    "ipset": ("ipset",),
    "sets": ("ipset", "nft"),
    "ip-rule": ("ip-rule",),
    "ip-route": ("ip-route",),
    "ip-addr": ("ip-addr",),
    "ss": ("ss-listen",),
    "sysctl": ("sysctl",),
}
DATA_FILES: dict[str, tuple[str, ...]] = {
    data: group_files(*groups) for data, groups in DATA_GROUPS.items()}


def has_data(ns: NetNamespace, data: str) -> bool:
    """Is this kind of data in the bundle (and parsed) for `ns`?"""
    if data == "iptables":
        return ns.rulesets is not None
    if data == "ipset":
        return ns.ipsets is not None and "ipset.txt" in ns.files and not any(
            p.path == f"{ns.dir}/ipset.txt" and p.severity == "error" for p in ns.problems)
    if data == "sets":
        return ns.ipsets is not None
    if data == "ip-rule":
        return ns.rules is not None
    if data == "ip-route":
        return ns.routes is not None
    if data == "ip-addr":
        return ns.links is not None
    if data == "ss":
        return ns.listeners is not None
    if data == "sysctl":
        return ns.sysctls is not None
    raise KeyError(data)


def _parsed_path(ns: NetNamespace, data: str) -> str | None:
    """The file the snapshot actually parsed for `data` (from the facts' own sources)."""
    if data == "ip-addr" and ns.links:
        return ns.links[0].source.path
    if data == "ip-route":
        return next((r.source.path for r in ns.routes or () if r.family == 4), None)
    if data == "ip-rule":
        return next((r.source.path for r in ns.rules or () if r.family == 4), None)
    if data == "iptables":
        paths = [rs.source.path for rs in ns.rulesets or ()]
        return next((p for p in paths if p.endswith("/iptables-save.txt")), None) or \
            next(iter(paths), None)
    if data == "sysctl" and ns.sysctls:
        return next(iter(ns.sysctls.values())).source.path
    return None


def file_of(ns: NetNamespace, data: str) -> str:
    """The bundle path of the file holding `data` for `ns`: the one parsed, else the first
    present, else the usual name (for "looked in" evidence)."""
    parsed = _parsed_path(ns, data)
    if parsed:
        return parsed
    names = DATA_FILES[data]
    for name in names:
        if name in ns.files:
            return f"{ns.dir}/{name}"
    return f"{ns.dir}/{names[0]}"


def missing_reason(ns: NetNamespace, data: str) -> str:
    """Why `data` is not available for `ns`, naming the file (for SKIPPED results)."""
    names = DATA_FILES[data]
    for p in ns.problems:
        if p.severity == "error" and any(p.path == f"{ns.dir}/{n}" for n in names):
            return f"{p.path}: {p.message}"
    return f"{ns.dir}/{names[0]}: not in the bundle"


def is_ztunnel_pod(pod: Pod) -> bool:
    """The ztunnel DaemonSet's pods (`istio.is_ztunnel` on the model's pod)."""
    return is_ztunnel(pod.namespace, pod.name, pod.labels)


def enrollment(pod: Pod, ns_labels: Mapping[str, str]) -> Enrollment:
    """Does istio-cni enroll `pod` (`istio.enrollment` on the model's pod)?"""
    return istio_enrollment(namespace=pod.namespace, name=pod.name, labels=pod.labels,
                            annotations=pod.annotations, host_network=pod.host_network,
                            namespace_labels=ns_labels)


@dataclass
class NodeView:
    """One node as the checks see it."""

    name: str
    state: NodeState | None
    mode: str  # legacy | inpod | mixed | none
    expected: tuple[Pod, ...] = ()  # running pods istio-cni should enroll here
    pods: tuple[Pod, ...] = ()  # every pod the cluster schedules here
    ztunnel_pod: Pod | None = None
    ztunnel_ns: NetNamespace | None = None
    mode_evidence: tuple[str, ...] = ()

    @property
    def host(self) -> NetNamespace | None:
        """The node's own network namespace, when collected."""
        return self.state.host if self.state else None

    @property
    def target(self) -> str:
        """The check-result target id."""
        return f"node/{self.name}"

    @property
    def legacy(self) -> bool:
        """Runs (also) the 2022-1.20 node-level redirection."""
        return self.mode in ("legacy", "mixed")

    @property
    def inpod(self) -> bool:
        """Runs (also) in-pod redirection."""
        return self.mode in ("inpod", "mixed")

    def pod_netns(self, pod: Pod) -> NetNamespace | None:
        """The collected network namespace of `pod` on this node."""
        if self.state is None:
            return None
        return self.state.pods.get(pod.ref)

    @property
    def ztunnel_ip(self) -> IPAddress | None:
        """The current ztunnel pod's IPv4 address (cluster object, else its netns' eth0)."""
        if self.ztunnel_pod is not None:
            for ip in self.ztunnel_pod.ips:
                if ip.version == 4:
                    return ip
        if self.ztunnel_ns is not None:
            eth0 = self.ztunnel_ns.link("eth0")
            for addr in eth0.addresses if eth0 else ():
                if addr.interface.version == 4:
                    return addr.interface.ip
        return None


@dataclass
class PodTarget:
    """One pod, for pod-scoped checks."""

    pod: Pod
    node: NodeView
    ns: NetNamespace | None

    @property
    def target(self) -> str:
        """The check-result target id."""
        return f"pod/{self.pod.namespace}/{self.pod.name}"


@dataclass
class Context:
    """A snapshot plus the facts derived from it (shared by every check).

    Roles, pods by address and each node's ztunnel come from the snapshot's
    `DerivedFacts` (the same answers the trace uses); a namespace is classified and a
    node's view built when a check first asks for it, so a caller that needs two nodes
    (the trace's verdict) pays for two.
    """

    snap: Snapshot
    roles: Mapping[str, str] = field(default_factory=dict)
    role_notes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    nodes: Mapping[str, NodeView] = field(default_factory=dict)

    @classmethod
    def build(cls, snap: Snapshot) -> Context:
        facts = DerivedFacts.of(snap)
        ctx = cls(snap, facts.roles, facts.role_notes)
        ctx.nodes = _NodeViews(ctx)
        return ctx

    @property
    def facts(self) -> DerivedFacts:
        """The snapshot's shared derived facts."""
        return DerivedFacts.of(self.snap)

    # ------------------------------------------------------------------ cluster
    @cached_property
    def ns_labels(self) -> dict[str, Mapping[str, str]]:
        """Namespace name -> labels."""
        return {n.name: n.labels for n in self.snap.cluster.namespaces}

    @property
    def pods_by_ref(self) -> dict[PodRef, Pod]:
        """Every pod of cluster/pods.json by namespace/name."""
        return self.facts.pods_by_ref

    def pod_by_ip(self, ip: IPAddress, node: str | None = None) -> list[Pod]:
        """Running, non-host-network pods that own `ip` (on `node` when given)."""
        return [p for p in self.facts.pods_at(ip)
                if not p.host_network and running(p) and (node is None or p.node == node)]

    @cached_property
    def failed_files(self) -> dict[str, str]:
        """Bundle path -> why the manifest says its command produced no file
        (`not collected: ...`, the wording of `ManifestEntry.reason`)."""
        m = self.snap.manifest
        if m is None:
            return {}
        return {dest: f"not collected: {e.reason()}" for dest, e in m.not_collected().items()}

    def missing_reason(self, ns: NetNamespace, data: str) -> str:
        """Why `data` is unavailable for `ns`: a parse problem, a failed command, or absence."""
        reason = missing_reason(ns, data)
        if reason.endswith(": not in the bundle"):
            for name in DATA_FILES[data]:
                why = self.failed_files.get(f"{ns.dir}/{name}")
                if why:
                    return f"{ns.dir}/{name}: {why}"
        return reason

    def enrollment(self, pod: Pod) -> Enrollment:
        """Should `pod` be in the mesh?"""
        return enrollment(pod, self.ns_labels.get(pod.namespace, {}))

    def cluster_problem(self, kind: str) -> str | None:
        """Why cluster/<kind>.json is unusable (missing or broken), or None."""
        from ambientctl.layout import CLUSTER_FILES

        path = CLUSTER_FILES[kind]
        # A lazy snapshot's bundle-wide problems include every ztunnel dump's, which parses
        # every dump; a cluster file's problem is among the cheap base ones.
        problems = getattr(self.snap, "base_problems", None)
        for p in self.snap.problems if problems is None else problems:
            if p.path == path:
                return f"{path}: {p.message}"
        return None

    def sample_service(self) -> tuple[IPAddress, int] | None:
        """The first (IPv4 ClusterIP, TCP port) of `services_with_ports`: a sample destination."""
        for _svc, vip, port in self.services_with_ports():
            return vip, port
        return None

    def services_with_ports(self) -> Iterator[tuple[Service, IPAddress, int]]:
        """(service, IPv4 ClusterIP, TCP port) for every ClusterIP service port."""
        return iter(self._service_ports)

    @cached_property
    def _service_ports(self) -> tuple[tuple[Service, IPAddress, int], ...]:
        # Listed once: checks ask per node and per pod, and sorting every Service each time
        # made a cluster-wide pass per pod (quadratic in cluster size).
        out = []
        for svc in sorted(self.snap.cluster.services, key=lambda s: (s.namespace, s.name)):
            for vip in svc.cluster_ips:
                if vip.version != 4:
                    continue
                for port in svc.ports:
                    if port.protocol.upper() == "TCP":
                        out.append((svc, vip, port.port))
        return tuple(out)

    def remote_ip(self, node: str) -> IPAddress | None:
        """An address on another node (a pod IP there, else a ClusterIP): a sample destination."""
        for pod_node, ip in self._pod_addresses:
            if pod_node != node:
                return ip
        for _svc, vip, _port in self.services_with_ports():
            return vip
        return None

    @cached_property
    def _pod_addresses(self) -> tuple[tuple[str, IPAddress], ...]:
        """(node, first IPv4) of every running, scheduled, non-host-network pod with one, by
        namespace/name: `remote_ip` takes the first not on the asking node (sorted once,
        not once per pod)."""
        out = []
        for p in sorted(self.snap.cluster.pods, key=lambda p: (p.namespace, p.name)):
            if p.node and running(p) and not p.host_network:
                v4 = [ip for ip in p.ips if ip.version == 4]
                if v4:
                    out.append((p.node, v4[0]))
        return tuple(out)

    # ------------------------------------------------------------------ roles
    def role(self, ns: NetNamespace | None) -> str:
        """classify()'s kind for `ns` ("not-captured" when unknown)."""
        if ns is None:
            return "not-captured"
        return self.roles.get(ns.id, "not-captured")

    def seen(self, ns: NetNamespace | None, kind: str) -> bool:
        """Is `kind` the namespace's role or among the other fingerprints it carries?"""
        if ns is None:
            return False
        return self.roles.get(ns.id) == kind or kind in self.role_notes.get(ns.id, ())

    # ------------------------------------------------------------------ nodes
    def node_names(self) -> list[str]:
        """Every node the bundle or the cluster objects name, sorted."""
        names = set(self.snap.nodes)
        names |= {n.name for n in self.snap.cluster.nodes}
        names |= {p.node for p in self.snap.cluster.pods if p.node}
        return sorted(names)

    def node_view(self, name: str) -> NodeView:
        """The checks' view of node `name` (its mode classifies the node's namespaces)."""
        state = self.snap.nodes.get(name)
        pods = self.facts.pods_on(name)
        expected = tuple(p for p in pods if running(p) and self.enrollment(p).expected)
        ztunnel_pod = self.facts.ztunnel_pod(name)
        ztunnel_ns = self.facts.ztunnel_netns(name)
        mode, why = self._mode(state)
        return NodeView(name, state, mode, expected, pods, ztunnel_pod, ztunnel_ns, why)

    def _mode(self, state: NodeState | None) -> tuple[str, tuple[str, ...]]:
        if state is None:
            return "unknown", ("node not in the bundle",)
        legacy, inpod = [], []
        host = state.host
        if host is not None and self.seen(host, "legacy-node"):
            legacy.append(f"{host.dir}: node-level rules (ztunnel-*, istioin)")
        if host is not None and self.seen(host, "inpod-host"):
            inpod.append(f"{host.dir}: ISTIO_POSTRT / istio-inpod-probes")
        for ns in state.pods.values():
            if self.seen(ns, "legacy-ztunnel"):
                legacy.append(f"{ns.dir}: ztunnel pistioin/pistioout")
            if self.seen(ns, "inpod-ambient"):
                inpod.append(f"{ns.dir}: ISTIO_PRERT / istio-ambient-*")
        if legacy and inpod:
            return "mixed", tuple(legacy + inpod)
        if legacy:
            return "legacy", tuple(legacy)
        if inpod:
            return "inpod", tuple(inpod)
        return "none", ()

    def pod_targets(self, node: NodeView) -> list[PodTarget]:
        """Pods istio-cni should enroll on `node`, with their netns when collected."""
        return [PodTarget(p, node, node.pod_netns(p)) for p in node.expected]


# --------------------------------------------------------------------------- helpers


class _NodeViews(Mapping[str, NodeView]):
    """Node name -> `NodeView`, each built on first lookup and then kept."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._names: list[str] | None = None
        self._views: dict[str, NodeView] = {}

    def _all(self) -> list[str]:
        if self._names is None:
            self._names = self._ctx.node_names()
        return self._names

    def __getitem__(self, name: str) -> NodeView:
        view = self._views.get(name)
        if view is None:
            if name not in self._all():
                raise KeyError(name)
            view = self._views[name] = self._ctx.node_view(name)
        return view

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


def pod_name(pod: Pod) -> str:
    """`namespace/name`, as findings name a pod."""
    return f"{pod.namespace}/{pod.name}"


def restart_cni(node: NodeView) -> str:
    """The command that restarts the istio-cni agent of `node`."""
    return CNI_AGENT.format(node=node.name)


def ipset_named(ns: NetNamespace | None, *names: str) -> IpSet | None:
    """The first of `names` that exists among the sets of `ns` (None when none, or when the
    sets were not collected)."""
    sets = (ns.ipsets or {}) if ns is not None else {}
    return next((sets[n] for n in names if n in sets), None)


def stale_members(s: IpSet | None, wanted: Container[IPAddress | None]
                  ) -> Iterator[tuple[IpSetMember, IPAddress]]:
    """Members of `s` whose address is not in `wanted` (a member's text may carry a prefix
    or `,port`; one that is not an address is skipped)."""
    for m in s.members if s is not None else ():
        try:
            ip = ipaddress.ip_address(m.text.split(",", 1)[0].split("/", 1)[0])
        except ValueError:
            continue
        if ip not in wanted:
            yield m, ip


def v4(pod: Pod) -> IPAddress | None:
    """The pod's first IPv4 address."""
    return next((ip for ip in pod.ips if ip.version == 4), None)


def routes_in(ns: NetNamespace, table: str) -> list[Route]:
    """The routes of one table."""
    return [r for r in ns.routes or () if r.table == table]


def host_route_to(ns: NetNamespace, table: str, ip: IPAddress) -> Route | None:
    """The route in `table` whose destination is exactly `ip`/32 (or /128)."""
    for r in ns.routes or ():
        if r.table == table and r.dst.num_addresses == 1 and r.dst.network_address == ip:
            return r
    return None


def pod_device(host: NetNamespace, ip: IPAddress) -> str | None:
    """The node-side device a pod IP is reached through (kindnet/ptp veth or a bridge)."""
    from ambientctl.analyzers.routing import table_lookup

    route, _ = table_lookup(host, "main", ip)
    if route is None or route.type != RouteType.UNICAST or route.gateway is not None:
        return None
    return route.dev


def peer_link(host: NetNamespace, pod_ns: NetNamespace, ifname: str = "eth0") -> Link | None:
    """The node-side veth whose peer is `ifname` in `pod_ns` (ifindex pairs, `eth0@if7`)."""
    inner = pod_ns.link(ifname)
    if inner is None or inner.peer_index is None:
        return None
    outer = host.link_by_index(inner.peer_index)
    if outer is None:
        return None
    if outer.peer_index is not None and outer.peer_index != inner.index:
        return None
    return outer


def scan_rules(ns: NetNamespace, *needles: str, chains: Callable[[str], bool] | None = None,
               tables: tuple[str, ...] | None = None) -> Iterator[tuple[Table, Chain, Rule]]:
    """Rules whose verbatim text contains one of `needles` (case-insensitive), tokenising
    only those: a node can hold 630k kube-proxy rules and a check looks for a handful
    (`netfilter.iter_rules` would tokenise every one). `chains`/`tables` narrow further;
    a rule that does not tokenise is skipped (AMB103 reports unparseable files).
    """
    low = tuple(n.lower() for n in needles)
    for table in ns.tables():
        if tables is not None and table.name not in tables:
            continue
        for name, chain in table.chains.items():
            if chains is not None and not chains(name):
                continue
            if chain.prebuilt is not None or chain.tokenizer is None:
                try:
                    rules = chain.rules
                except ParseError:
                    continue
                for rule in rules:
                    text = rule.text.lower()
                    if not low or any(n in text for n in low):
                        yield table, chain, rule
                continue
            for pos, (line, text) in enumerate(chain.raw_rules, start=1):
                lt = text.lower()
                if low and not any(n in lt for n in low):
                    continue
                try:
                    yield table, chain, chain.tokenizer(chain, pos, line, text)
                except ParseError:
                    continue


def ip(text: str) -> IPAddress:
    """Parse an address literal."""
    return ipaddress.ip_address(text)
