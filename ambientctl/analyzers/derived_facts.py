"""Facts derived from one snapshot that trace and doctor both need, computed on demand.

Both commands ask the same questions of a bundle: what role does this network namespace
play (`classify`), which pod owns this address, which ztunnel serves this node, which
namespaces hold this address, which addresses are local to this namespace. Answering
them in one place gives one answer (trace and doctor used to classify with different
fallbacks) and lets a trace pay only for what its path touches: nothing here walks the
whole bundle up front.

Where an address lives is first read from the cluster objects (pods' podIPs, nodeName and
hostNetwork, nodes' addresses) - no file is parsed for that - and then confirmed against
the `ip addr` of those candidate namespaces only. When the cluster objects do not claim an
address, or none of the claimed namespaces really holds it (kind without an API, a
hand-made bundle, objects that disagree with the kernel), every namespace's `ip addr` is
read: the answer is the same as a full scan would give, only cheaper when it can be.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from ambientctl.istio import is_ztunnel
from ambientctl.model import IPAddress, Link, NetNamespace, Pod, PodRef, Snapshot

if TYPE_CHECKING:
    from ambientctl.analyzers.classify import Classification

UNKNOWN_ROLE = "not-captured"
K = TypeVar("K")
V = TypeVar("V")

Owner = tuple[NetNamespace, Link]


@dataclass(frozen=True)
class Role:
    """A namespace's role: `classify`'s kind, and the other kinds whose fingerprints it
    also carries (a pod with both sidecar and in-pod rules)."""

    kind: str
    also_seen: tuple[str, ...] = ()


def fallback_role(ns: NetNamespace) -> str:
    """Chain and link names only: what is still known when classification failed (a
    broken rule must stop neither trace nor doctor, and both must then agree)."""
    try:
        names = {lnk.name for lnk in ns.links or ()}
        tables = list(ns.tables())
    except Exception:  # noqa: BLE001 - advisory: never take the command down
        return UNKNOWN_ROLE
    chains = {c for t in tables for c in t.chains}
    if {"pistioin", "pistioout"} & names:
        return "legacy-ztunnel"
    if "ztunnel-PREROUTING" in chains or "istioin" in names:
        return "legacy-node"
    if "ISTIO_INBOUND" in chains or "ISTIO_REDIRECT" in chains:
        return "sidecar"
    if "ISTIO_PRERT" in chains or any(t.name.startswith("istio-ambient") for t in tables):
        return "inpod-host" if ns.pod is None else "inpod-ambient"
    return UNKNOWN_ROLE


def _routable(ip: IPAddress) -> bool:
    # Loopback and IPv6 link-local addresses exist in every namespace: they never say
    # where a packet goes next (a next hop is never one of them across namespaces).
    return not (ip.is_loopback or (ip.version == 6 and ip.is_link_local))


def running(pod: Pod) -> bool:
    """Running (or phase unknown in a hand-made bundle) and addressed: a pod whose
    namespace the kernel dumps can be expected to show."""
    return pod.phase in (None, "Running") and bool(pod.ips)


class DerivedFacts:
    """The derived facts of one snapshot, each computed the first time it is asked for.

    Not a frozen dataclass on purpose: it is a memo table over an immutable snapshot; what
    it returns never changes once computed. Get the one instance of a snapshot with
    `DerivedFacts.of(snap)` so that trace, its verdict and doctor share the work.
    """

    _instances: dict[int, DerivedFacts] = {}

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self._roles: dict[str, Role] = {}
        self._owners: dict[IPAddress, tuple[Owner, ...]] = {}
        self._all_owners: dict[IPAddress, list[Owner]] | None = None
        self._local: dict[str, frozenset[IPAddress]] = {}
        self._by_id: dict[str, NetNamespace] | None = None
        self._pods_by_ip: dict[IPAddress, list[Pod]] | None = None
        self._pods_by_ref: dict[PodRef, Pod] | None = None
        self._pods_by_node: dict[str, tuple[Pod, ...]] | None = None
        self._pos: dict[str, int] | None = None

    @classmethod
    def of(cls, snap: Snapshot) -> DerivedFacts:
        """The shared facts of `snap` (created on first use, dropped with the snapshot)."""
        got = cls._instances.get(id(snap))
        if got is not None and got.snap is snap:
            return got
        got = cls(snap)
        cls._instances[id(snap)] = got
        weakref.finalize(snap, cls._instances.pop, id(snap), None)
        return got

    # ------------------------------------------------------------------ namespaces
    @property
    def by_id(self) -> dict[str, NetNamespace]:
        """Every namespace by id, in the snapshot's order (listing only: nothing parsed)."""
        if self._by_id is None:
            self._by_id = {ns.id: ns for ns in self.snap.namespaces()}
        return self._by_id

    def on_node(self, node: str) -> Iterator[NetNamespace]:
        """The namespaces collected on `node` (host first), without parsing them."""
        state = self.snap.nodes.get(node)
        if state is not None:
            yield from state.namespaces()

    # ------------------------------------------------------------------ cluster objects
    @property
    def pods_by_ref(self) -> dict[PodRef, Pod]:
        """Every pod of cluster/pods.json by namespace/name."""
        if self._pods_by_ref is None:
            self._pods_by_ref = {p.ref: p for p in self.snap.cluster.pods}
        return self._pods_by_ref

    def pods_on(self, node: str) -> tuple[Pod, ...]:
        """The pods the cluster schedules on `node`, by namespace/name: grouped in one pass
        over the cluster the first time (per node, a scan would be quadratic at scale)."""
        if self._pods_by_node is None:
            grouped: dict[str, list[Pod]] = {}
            for p in sorted(self.snap.cluster.pods, key=lambda p: (p.namespace, p.name)):
                if p.node:
                    grouped.setdefault(p.node, []).append(p)
            self._pods_by_node = {name: tuple(pods) for name, pods in grouped.items()}
        return self._pods_by_node.get(node, ())

    def pods_at(self, ip: IPAddress) -> list[Pod]:
        """Every pod whose podIPs hold `ip` (host-network ones too), in cluster order."""
        if self._pods_by_ip is None:
            index: dict[IPAddress, list[Pod]] = {}
            for pod in self.snap.cluster.pods:
                for a in pod.ips:
                    bucket = index.setdefault(a, [])
                    if not bucket or bucket[-1] is not pod:
                        bucket.append(pod)
            self._pods_by_ip = index
        return self._pods_by_ip.get(ip, [])

    def pod_by_ip(self, ip: IPAddress) -> Pod | None:
        """The first non-host-network pod that owns `ip` (a host-network pod shares its
        node's addresses, so it never names an address)."""
        return next((p for p in self.pods_at(ip) if not p.host_network), None)

    # ------------------------------------------------------------------ roles
    def classification(self, ns: NetNamespace) -> Classification | None:
        """`classify`'s full answer for `ns`; None when classification itself failed."""
        from ambientctl.analyzers.classify import classify

        pod = self.pods_by_ref.get(ns.pod) if ns.pod else None
        try:
            return classify(ns, pod)
        except Exception:  # noqa: BLE001 - classification is advisory
            return None

    def role_of(self, ns: NetNamespace) -> Role:
        """The role of `ns`, with THE fallback when classification fails (`fallback_role`)."""
        got = self._roles.get(ns.id)
        if got is None:
            c = self.classification(ns)
            got = Role(c.kind, tuple(c.also_seen)) if c is not None else Role(fallback_role(ns))
            self._roles[ns.id] = got
        return got

    def known_roles(self, ids: Iterable[str]) -> dict[str, Role]:
        """The roles classified so far among namespace `ids` (a doctor worker process hands
        them back with its findings, see `learn_roles`)."""
        return {i: self._roles[i] for i in ids if i in self._roles}

    def learn_roles(self, roles: Mapping[str, Role]) -> None:
        """Take roles another process classified over the same bundle: the doctor parent
        then names each node's mode without parsing the node again."""
        self._roles.update(roles)

    def role(self, ns: NetNamespace | None) -> str:
        """The role's kind ("not-captured" for no namespace)."""
        return UNKNOWN_ROLE if ns is None else self.role_of(ns).kind

    @property
    def roles(self) -> Mapping[str, str]:
        """Namespace id -> role kind, classified when looked up."""
        return _Roles(self, lambda r: r.kind)

    @property
    def role_notes(self) -> Mapping[str, tuple[str, ...]]:
        """Namespace id -> the other kinds it carries fingerprints of."""
        return _Roles(self, lambda r: r.also_seen)

    # ------------------------------------------------------------------ ztunnel per node
    def ztunnel_pod(self, node: str) -> Pod | None:
        """The running ztunnel pod the cluster schedules on `node`, if any."""
        return next((p for p in self.pods_on(node)
                     if is_ztunnel(p.namespace, p.name, p.labels) and running(p)), None)

    def ztunnel_netns(self, node: str) -> NetNamespace | None:
        """ztunnel's own network namespace on `node`: its pod's, else a namespace that
        carries the 2022 ztunnel's rules or is named like a ztunnel pod."""
        state = self.snap.nodes.get(node)
        if state is None:
            return None
        zpod = self.ztunnel_pod(node)
        if zpod is not None and zpod.ref in state.pods:
            return state.pods[zpod.ref]
        for ref, ns in sorted(state.pods.items(), key=lambda kv: str(kv[0])):
            if is_ztunnel(ref.namespace, ref.name, {}):  # a netns dir has no labels: the name rule
                return ns
            r = self.role_of(ns)
            if r.kind == "legacy-ztunnel" or "legacy-ztunnel" in r.also_seen:
                return ns
        return None

    # ------------------------------------------------------------------ addresses
    def local_addresses(self, ns: NetNamespace) -> frozenset[IPAddress]:
        """Addresses the kernel treats as local in `ns` (`netfilter.local_addresses`)."""
        got = self._local.get(ns.id)
        if got is None:
            from ambientctl.analyzers.netfilter import local_addresses

            got = self._local[ns.id] = local_addresses(ns)
        return got

    def claimed(self, ip: IPAddress) -> list[NetNamespace]:
        """The namespaces the cluster objects say hold `ip`, in snapshot order: the pods
        owning it (their own netns; a host-network pod's node), and the node whose
        status.addresses list it. Nothing is parsed."""
        ids: set[str] = set()
        for pod in self.pods_at(ip):
            ns = self.snap.pod_netns(pod.ref)
            if ns is not None:
                ids.add(ns.id)
            if pod.host_network and pod.node:
                ids.add(f"{pod.node}/host")
        for node in self.snap.cluster.nodes:
            if any(addr == str(ip) for _kind, addr in node.addresses):
                ids.add(f"{node.name}/host")
        pos = self._positions()
        return [self.by_id[i] for i in sorted(ids & pos.keys(), key=pos.__getitem__)]

    def _positions(self) -> dict[str, int]:
        if self._pos is None:
            self._pos = {i: n for n, i in enumerate(self.by_id)}
        return self._pos

    def owners(self, ip: IPAddress) -> tuple[Owner, ...]:
        """Every (namespace, link) that carries `ip`, in snapshot order (loopback and IPv6
        link-local addresses excluded).

        The cluster objects' candidates are confirmed against their `ip addr`; when they
        name none that holds it, every namespace's `ip addr` is read (never a guess).
        """
        got = self._owners.get(ip)
        if got is not None:
            return got
        if not _routable(ip):
            return ()
        if self._all_owners is None:
            found = tuple((ns, lnk) for ns in self.claimed(ip)
                          for lnk, addr in ns.addresses() if addr.interface.ip == ip)
            if found:
                self._owners[ip] = found
                return found
        got = tuple(self._scan_all().get(ip, ()))
        self._owners[ip] = got
        return got

    def _scan_all(self) -> dict[IPAddress, list[Owner]]:
        """Every namespace's addresses: the fallback when the cluster objects cannot tell."""
        if self._all_owners is None:
            index: dict[IPAddress, list[Owner]] = {}
            for ns in self.by_id.values():
                for link, addr in ns.addresses():
                    a = addr.interface.ip
                    if _routable(a):
                        index.setdefault(a, []).append((ns, link))
            self._all_owners = index
        return self._all_owners

    def owner_of(self, ip: IPAddress) -> NetNamespace | None:
        """The first namespace holding `ip` as a local address, loopback included (what
        `netns.owns` answers, scanned in snapshot order)."""
        if not _routable(ip):
            return next((ns for ns in self.by_id.values() if ns.owns(ip)), None)
        found = self.owners(ip)
        return found[0][0] if found else None

    def veth_peer(self, ns: NetNamespace, link: Link) -> tuple[NetNamespace, Link] | None:
        """The other end of veth `link` of `ns`: the one namespace of the same node that
        holds it (`veth_peer_among`). Reads the `ip addr` of that node's namespaces only:
        the pairing must be unique there, which no cheaper index can promise (a bundle
        may hold look-alike copies, and then nothing is paired)."""
        return veth_peer_among(ns, link, self.on_node(ns.node))

    # ------------------------------------------------------------------ lazy views
    @property
    def owners_view(self) -> Mapping[IPAddress, tuple[Owner, ...]]:
        """`owners` as a mapping (`.get(ip, [])`), resolved per address on lookup."""
        return _Lookup(self.owners)

    @property
    def local_view(self) -> Mapping[str, frozenset[IPAddress]]:
        """Namespace id -> `local_addresses`, computed on lookup."""
        return _Lookup(lambda i: self.local_addresses(self.by_id[str(i)]))


def _names_back(other: NetNamespace, link: Link) -> Link | None:
    """The link of `other` that is `link`'s veth peer, if the two name each other."""
    peer = other.link_by_index(link.peer_index) if link.peer_index is not None else None
    if peer is not None and peer.peer_index == link.index and peer.kind in (None, "veth"):
        return peer
    return None


def veth_peer_among(ns: NetNamespace, link: Link, candidates: Iterable[NetNamespace]
                    ) -> tuple[NetNamespace, Link] | None:
    """The one namespace among `candidates` (those of `ns`'s node) holding `link`'s peer.

    Only on the same node: ifindexes are small per-netns counters (a pod's eth0 is 2 on
    every node), so a pair matched across nodes by index alone is a coincidence. Several
    look-alikes (a stale bundle) pair nothing.
    """
    if link.peer_index is None or link.kind not in (None, "veth"):
        return None
    cands = [(other, peer) for other in candidates
             if other.id != ns.id and other.node == ns.node
             for peer in (_names_back(other, link),) if peer is not None]
    return cands[0] if len(cands) == 1 else None


class _Lookup(Mapping[K, V]):
    """A mapping computed per key on lookup; it cannot be listed (nothing asks to)."""

    def __init__(self, fn: Callable[[K], V]) -> None:
        self._fn = fn

    def __getitem__(self, key: K) -> V:
        return self._fn(key)  # KeyError when the key is unknown, as a mapping says

    def __iter__(self) -> Iterator[K]:
        raise TypeError("a lazily computed view cannot be listed")

    def __len__(self) -> int:
        raise TypeError("a lazily computed view cannot be counted")


class _Roles(Mapping[str, V]):
    """A read-only view of the roles, computed per key on lookup."""

    def __init__(self, facts: DerivedFacts, pick: Callable[[Role], V]) -> None:
        self._facts = facts
        self._pick = pick

    def __getitem__(self, key: str) -> V:
        ns = self._facts.by_id.get(key)
        if ns is None:
            raise KeyError(key)
        return self._pick(self._facts.role_of(ns))

    def __iter__(self) -> Iterator[str]:
        return iter(self._facts.by_id)

    def __len__(self) -> int:
        return len(self._facts.by_id)
