"""Builders for the `Issue`s several check modules yield the same way.

Kept apart from `facts` (which `registry` imports, so it cannot import `Issue` back).
"""

from __future__ import annotations

from ambientctl.analyzers.doctor.registry import Issue
from ambientctl.analyzers.findings import Evidence
from ambientctl.model import NetNamespace


def issue_at(node: str, ns: NetNamespace, message: str, evidence: tuple[Evidence, ...] = (),
             remediation: str | None = None) -> Issue:
    """A finding located in `ns` on `node`, naming its pod when `ns` is a pod's netns
    (the ztunnel pod's, an ambient pod's) and no pod when it is the node's own."""
    return Issue(message=message, evidence=evidence, node=node,
                 pod=str(ns.pod) if ns.pod else None, netns=ns.id, remediation=remediation)
