"""ztunnel's own view of the mesh, and where it disagrees with the kernel.

The config_dumps of a bundle are parsed once, whatever generation printed them, into
`model.ZtunnelConfig` (`parse.ztunnel`). trace asks "what does ztunnel know at this
address" and doctor "what does this node's ztunnel know of this pod"; both then ask the
same question of the pod's network namespace - does ztunnel's view match its rules and
sockets? - and `disagreements` is the one place that answers it (trace's DISAGREEMENT
steps and doctor's AMB310 used to decide it each their own way).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

from ambientctl.analyzers.derived_facts import Role
from ambientctl.analyzers.parse.ztunnel import SHAPES
from ambientctl.istio import HBONE_PORT
from ambientctl.model import (
    IPAddress,
    NetNamespace,
    Pod,
    Snapshot,
    SourceRef,
    ZtunnelConfig,
    ZtunnelWorkload,
)

# Roles whose namespace carries in-pod redirection (ISTIO_PRERT / istio-ambient-*), or
# Cilium's equivalent: what istio-cni installs for a pod ztunnel serves (1.21+).
CAPTURED_ROLES = ("inpod-ambient", "cilium-ztunnel")
# The node-level design redirects on the node, not inside the pod: a pod netns without
# rules is then expected, and nothing here applies.
NODE_LEVEL_ROLES = ("legacy-ztunnel", "legacy-node")


@dataclass(frozen=True)
class WorkloadSeen:
    """A workload of one node's config_dump, with a citation naming the dump's layout."""

    workload: ZtunnelWorkload
    config: ZtunnelConfig
    source: SourceRef


def configs_in_order(snap: Snapshot) -> Iterator[tuple[str, ZtunnelConfig]]:
    """Readable config_dumps, nodes in name order, each parsed only when reached (a lazy
    snapshot lists its dumps without parsing them)."""
    listed = getattr(snap, "dump_nodes", None)
    nodes = listed() if callable(listed) else tuple(snap.ztunnel_configs)
    for node in sorted(nodes):
        cfg = snap.ztunnel_configs.get(node)
        if cfg is not None:
            yield node, cfg


def workload_at(snap: Snapshot, ip: IPAddress) -> WorkloadSeen | None:
    """The workload ztunnel knows at `ip`, from the first readable config_dump (nodes in
    name order) that lists it."""
    for _node, cfg in configs_in_order(snap):
        for w in cfg.workloads:
            if ip in w.ips:
                shape = SHAPES.get(cfg.shape, cfg.shape)
                return WorkloadSeen(w, cfg, SourceRef(cfg.source.path, None, f"{w.source.text}"
                                                      + (f" ({shape})" if shape else "")))
    return None


def workloads_by_pod(cfg: ZtunnelConfig | None
                     ) -> tuple[dict[str, ZtunnelWorkload], dict[str, str]]:
    """(workloads by "ns/name", workloadState by pod uid) of one node's config_dump."""
    if cfg is None:
        return {}, {}
    by_name = {f"{w.namespace}/{w.name}": w for w in cfg.workloads if w.name and w.namespace}
    return by_name, dict(cfg.states)


class Disagreement(StrEnum):
    """One way ztunnel's view and a pod's network namespace contradict each other."""

    HBONE_WITHOUT_RULES = "hbone-without-rules"  # istio/istio#61182
    HBONE_WITHOUT_LISTENER = "hbone-without-listener"
    RULES_WITHOUT_PROXY = "rules-without-proxy"  # istio/istio#55968


def captured(role: Role) -> bool:
    """Does the namespace carry in-pod redirection (its role, or a fingerprint it also has)?"""
    return role.kind in CAPTURED_ROLES or any(k in CAPTURED_ROLES for k in role.also_seen)


def disagreements(pod: Pod, ns: NetNamespace, role: Role, protocol: str | None,
                  states: Mapping[str, str] | None = None) -> tuple[Disagreement, ...]:
    """Where ztunnel's view of `pod` contradicts its network namespace `ns`.

    `protocol` is what ztunnel sends the pod ("HBONE" / "TCP"; None when unknown),
    `states` its workloadState by pod uid (None or empty when the dump has none). What
    the bundle lacks (no rules, no sockets collected) is never a disagreement.
    """
    if role.kind in NODE_LEVEL_ROLES:
        return ()
    out: list[Disagreement] = []
    rules = captured(role)
    if protocol == "HBONE" and ns.rulesets is not None and not rules:
        out.append(Disagreement.HBONE_WITHOUT_RULES)
    if protocol == "HBONE" and ns.listeners is not None and \
            not any(lst.port == HBONE_PORT for lst in ns.listeners):
        out.append(Disagreement.HBONE_WITHOUT_LISTENER)
    if rules and ns.rulesets is not None and states and pod.uid and \
            states.get(pod.uid) != "Up":
        out.append(Disagreement.RULES_WITHOUT_PROXY)
    return tuple(out)
