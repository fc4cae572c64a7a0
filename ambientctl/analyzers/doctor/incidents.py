"""Findings that share a cause, grouped: the root first, its consequences under it.

A table of "this check's fault causes that check's finding" (same node), from how the
kernel and istio-cni behave: a tunnel device that goes down takes its routes with it
(the kernel deletes routes through a device that loses its address or carrier), a node
that istio-cni never initialised has no per-pod state either, a ztunnel that is missing
cannot listen, a pod netns without Istio's chains disagrees with ztunnel's view. Fix the
root and the consequences go away; the table only groups, it never hides a finding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ambientctl.analyzers.findings import Finding

CAUSES: dict[str, tuple[str, ...]] = {
    "AMB406": ("AMB201", "AMB202", "AMB218", "AMB301", "AMB303", "AMB306"),
    "AMB407": ("AMB216", "AMB304", "AMB310"),
    "AMB210": ("AMB209", "AMB217", "AMB218"),
    "AMB217": ("AMB209",),
    "AMB211": ("AMB202", "AMB209", "AMB212"),
    "AMB201": ("AMB218",),
    "AMB301": ("AMB302", "AMB303", "AMB304", "AMB310"),
    "AMB305": ("AMB304", "AMB310"),
    "AMB304": ("AMB310",),
    "AMB402": ("AMB401",),
    "AMB405": ("AMB401",),
    "AMB102": ("AMB103", "AMB104"),
}


@dataclass(frozen=True)
class Incident:
    """One cause: `root` and the findings it explains (indices into the findings list)."""

    root: int
    consequences: tuple[int, ...]

    @property
    def members(self) -> tuple[int, ...]:
        return (self.root, *self.consequences)


def _related(cause: Finding, effect: Finding) -> bool:
    if (cause.check_id, cause.node, cause.pod, cause.netns) == \
            (effect.check_id, effect.node, effect.pod, effect.netns):
        return True  # the same check, same place: one cause (e.g. each missing port)
    if effect.check_id not in CAUSES.get(cause.check_id, ()):
        return False
    if cause.node is not None and effect.node is not None and cause.node != effect.node:
        return False
    # a pod-level cause explains only that pod's consequences
    return cause.pod is None or effect.pod is None or cause.pod == effect.pod


def group(findings: Sequence[Finding]) -> list[Incident]:
    """Every finding in exactly one incident, incidents in the order of their roots."""
    parent: dict[int, int] = {}
    for i, effect in enumerate(findings):
        for j, cause in enumerate(findings):
            if i == j or j in parent or i in parent or not _related(cause, effect):
                continue
            if cause.check_id == effect.check_id and j > i:
                continue  # duplicates hang under the first of them
            parent[i] = j
    # follow chains to the top (210 -> 217 -> 209: 209's root is 210)
    def root(i: int) -> int:
        seen = set()
        while i in parent and i not in seen:
            seen.add(i)
            i = parent[i]
        return i

    members: dict[int, list[int]] = {}
    for i in range(len(findings)):
        members.setdefault(root(i), []).append(i)
    return [Incident(r, tuple(m for m in ms if m != r)) for r, ms in
            sorted(members.items(), key=lambda kv: kv[0])]


def root_of(findings: Sequence[Finding], index: int) -> int:
    """The root finding of the incident `index` belongs to."""
    for inc in group(findings):
        if index in inc.members:
            return inc.root
    return index
