"""Helpers for the O(path) tests: a snapshot whose namespaces record which of them were
read beyond their listing, and a trace over the old eager indices to compare with.

Why a recorder and not only the lazy snapshot's own probe: it holds on any snapshot
(eager or lazy) and counts every read of a namespace's parsed data, so "the trace read
only the namespaces on its path" is checked against what the analyzers actually touch.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ambientctl.analyzers.path import World
from ambientctl.analyzers.selectors import resolve
from ambientctl.analyzers.trace import Tracer
from ambientctl.analyzers.trace_result import Trace
from ambientctl.analyzers.verdict import judge
from ambientctl.model import NetNamespace, NodeState, Snapshot
from ambientctl.render import trace_json

# What a namespace says without any of its files parsed (its place in the listing).
LISTING = frozenset({"id", "node", "pod", "dir", "files", "label"})
# Reads of `ip addr` only (a veth's peer is looked for among the node's namespaces).
LINKS = frozenset({"links", "link", "link_by_index", "addresses", "owns"})


class _Recorder:
    """Delegates to a namespace, noting (its id, what) when anything beyond the listing is
    read."""

    def __init__(self, ns: NetNamespace, touched: set[tuple[str, str]]) -> None:
        object.__setattr__(self, "_ns", ns)
        object.__setattr__(self, "_touched", touched)

    def __getattr__(self, name: str) -> Any:
        ns = object.__getattribute__(self, "_ns")
        if name not in LISTING:
            object.__getattribute__(self, "_touched").add((ns.id, name))
        return getattr(ns, name)


def recording(snap: Snapshot) -> tuple[Snapshot, set[tuple[str, str]]]:
    """`snap` with recording namespaces, and the set of (netns id, attribute) they record
    into."""
    touched: set[tuple[str, str]] = set()
    nodes = {name: NodeState(name,
                             _Recorder(st.host, touched) if st.host is not None else None,  # type: ignore[arg-type]
                             {ref: _Recorder(ns, touched) for ref, ns in st.pods.items()})  # type: ignore[misc]
             for name, st in snap.nodes.items()}
    return dataclasses.replace(snap, nodes=nodes), touched


def eager_world(tracer: Tracer) -> World:
    """The indices as `World.build` made them before the derived-facts layer: every
    namespace classified, every address of every namespace indexed, plain dicts."""
    snap = tracer.snap
    overrides = dict(getattr(tracer.world.roles, "maps", [{}])[0])
    by_id, owners, local, roles = {}, {}, {}, {}
    from ambientctl.analyzers import netfilter
    for ns in snap.namespaces():
        by_id[ns.id] = ns
        for link, addr in ns.addresses():
            ip = addr.interface.ip
            if ip.is_loopback or (ip.version == 6 and ip.is_link_local):
                continue
            owners.setdefault(ip, []).append((ns, link))
        local[ns.id] = netfilter.local_addresses(ns)
        roles[ns.id] = tracer.facts.role_of(ns).kind
    roles.update(overrides)
    return World(snap, by_id, owners, local, roles)


def trace_doc(snap: Snapshot, src: str, dst: str, *, port: int | None = None,
              eager: bool = False, **kw: Any) -> tuple[dict[str, Any], Trace]:
    """The trace JSON document (with its verdict) of SRC -> DST."""
    s = resolve(snap, src, role="source")
    d = resolve(snap, dst, role="destination", port=port)
    tracer = Tracer(snap)
    if eager:
        tracer.world = eager_world(tracer)
    t = tracer.trace(s, d, **kw)
    doc = trace_json.trace_document(t, "B", judge(snap, t))
    return json.loads(json.dumps(doc)), t


def path_namespaces(t: Trace) -> set[str]:
    """Every namespace a hop of the trace (forward or answer) crossed."""
    out = set()
    for leg in t.legs:
        hops = list(leg.result.hops) + (list(leg.result.reply.hops) if leg.result.reply else [])
        out |= {h.netns for h in hops}
    return out
