"""`doctor`: a catalogue of checks over a snapshot, modelled on `istioctl analyze`.

Ids are `AMB` + three digits, grouped by area and never reused once retired:

- AMB1xx `collection.py`: what the bundle could not tell (failed commands, parse errors).
- AMB2xx `legacy.py`: the 2022-1.20 node-level design (node netns + ztunnel pod netns).
- AMB3xx `inpod.py`: in-pod redirection (Istio >= 1.21).
- AMB4xx `node.py`: node-wide hazards (kube-proxy, IPVS, rp_filter, marks, backends).
- AMB5xx `waypoint.py`: waypoints named but missing, not ready, or for the wrong traffic.

`run_checks(snapshot)` runs everything and returns one `CheckResult` per check and
target; `diagnose()` adds suppression, the per-node summary and the fail threshold.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from ambientctl.analyzers.doctor.facts import Context
from ambientctl.analyzers.doctor.registry import (
    REGISTRY,
    Issue,
    Skip,
    catalogue,
    check,
    docs_anchor,
)
from ambientctl.analyzers.doctor.registry import run_checks as _run_checks
from ambientctl.analyzers.findings import (
    CheckResult,
    Finding,
    NodeSummary,
    Report,
    Severity,
)
from ambientctl.errors import UsageError
from ambientctl.model import Snapshot

__all__ = [
    "REGISTRY", "Issue", "Skip", "Suppression", "catalogue", "check", "diagnose",
    "docs_anchor", "parse_suppression", "run_checks",
]

FAIL_ON = ("error", "warning", "none")


def _load_areas() -> None:
    # Importing an area module registers its checks.
    from ambientctl.analyzers.doctor import (  # noqa: F401
        collection,
        inpod,
        legacy,
        node,
        waypoint,  # noqa: F401
    )


def run_checks(snapshot: Snapshot, only: Iterable[str] | None = None) -> list[CheckResult]:
    """Run every check (or those in `only`) over `snapshot`."""
    _load_areas()
    return _run_checks(Context.build(snapshot), only)


# --------------------------------------------------------------------------- suppression


@dataclass(frozen=True, slots=True)
class Suppression:
    """`-S ID`, `-S ID=node` or `-S ID=node/pod` (globs allowed, pod as name or ns/name)."""

    check: str
    node: str | None = None
    pod: str | None = None
    text: str = ""

    def matches(self, f: Finding) -> bool:
        """Does this suppression silence finding `f`?"""
        if not fnmatch.fnmatchcase(f.check_id, self.check):
            return False
        if self.node is not None and not fnmatch.fnmatchcase(f.node or "", self.node):
            return False
        if self.pod is not None:
            if f.pod is None:
                return self.pod == "*"
            name = f.pod.split("/", 1)[-1]
            return fnmatch.fnmatchcase(f.pod, self.pod) or fnmatch.fnmatchcase(name, self.pod)
        return True


def parse_suppression(text: str) -> Suppression:
    """Parse one `-S` value; a malformed one is a usage error."""
    cid, sep, where = text.partition("=")
    cid = cid.strip().upper()
    if not cid or not all(c.isalnum() or c in "*?[]" for c in cid):
        raise UsageError(f"-S {text!r}: expected ID, ID=node or ID=node/pod",
                         hint="e.g. -S AMB203=ambient-worker/sleep-7b85956664-z6qh7")
    if not sep:
        return Suppression(cid, text=text)
    where = where.strip()
    if not where:
        raise UsageError(f"-S {text!r}: nothing after '='", hint="use -S ID to suppress everywhere")
    node, _, pod = where.partition("/")
    return Suppression(cid, node or "*", pod or None, text)


# --------------------------------------------------------------------------- the report


def _captured(ctx: Context, name: str) -> tuple[int | None, int | None]:
    """(captured, expected) ambient pods of one node, None when unknowable from the bundle."""
    from ambientctl.analyzers.doctor import inpod, legacy

    node = ctx.nodes[name]
    if ctx.cluster_problem("pods"):
        return None, None
    expected = len(node.expected)
    if node.mode == "legacy":
        return legacy.captured_count(node), expected
    if node.mode == "inpod":
        return inpod.captured_count(ctx, node), expected
    if node.mode == "mixed":
        a, b = legacy.captured_count(node), inpod.captured_count(ctx, node)
        return (None if a is None or b is None else min(expected, a + b)), expected
    return (0 if node.state is not None else None), expected


def diagnose(snapshot: Snapshot, *, fail_on: str = "error",
             suppress: Iterable[Suppression] = (), only: Iterable[str] | None = None,
             output_threshold: str = "info") -> Report:
    """Run the checks and assemble the report: findings sorted, suppressed ones apart,
    those under `output_threshold` apart again (counted, not shown)."""
    if fail_on not in FAIL_ON:
        raise UsageError(f"--fail-on {fail_on!r}: choose one of {', '.join(FAIL_ON)}")
    if output_threshold not in {s.value for s in Severity}:
        raise UsageError(f"--output-threshold {output_threshold!r}: choose info, warning or "
                         "error")
    _load_areas()
    ctx = Context.build(snapshot)
    results = _run_checks(ctx, only)
    rules = tuple(suppress)
    shown: list[Finding] = []
    hidden: list[Finding] = []
    for r in results:
        for f in r.findings:
            (hidden if any(s.matches(f) for s in rules) else shown).append(f)
    shown.sort(key=lambda f: f.sort_key)
    hidden.sort(key=lambda f: f.sort_key)
    unmatched = tuple(s.text for s in rules if not any(s.matches(f) for f in hidden))
    floor = Severity(output_threshold).rank
    below = [f for f in shown if f.severity.rank < floor]
    shown = [f for f in shown if f.severity.rank >= floor]
    nodes = []
    for name, view in ctx.nodes.items():
        captured, expected = _captured(ctx, name)
        counts = {s.value: 0 for s in Severity}
        for f in (*shown, *below):
            if f.node == name:
                counts[f.severity.value] += 1
        nodes.append(NodeSummary(name, view.mode, expected, captured, counts,
                                 ztunnel=view.ztunnel_pod is not None or view.ztunnel_ns is not None))
    return Report(source=snapshot.source,
                  bundle_id=snapshot.manifest.bundle_id if snapshot.manifest else None,
                  results=tuple(results), findings=tuple(shown), suppressed=tuple(hidden),
                  nodes=tuple(nodes), fail_on=fail_on, catalogue=tuple(catalogue()),
                  below_threshold=tuple(below), output_threshold=output_threshold,
                  unmatched_suppressions=unmatched)


_load_areas()
