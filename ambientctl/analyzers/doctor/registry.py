"""The check registry: `@check(...)` declares a check, `run_checks()` runs them all.

A check is a pure function over the snapshot's facts, called once per *target*:

- scope "bundle": once, `fn(ctx)`;
- scope "node": per node whose mode the check applies to, `fn(ctx, node: NodeView)`;
- scope "pod": per pod istio-cni should enroll on such a node, `fn(ctx, pt: PodTarget)`.

It yields `Issue`s; the registry turns them into `Finding`s carrying the check's id,
title, severity, remediation and docs anchor. `requires` names the data a check reads
("host:ipset", "ztunnel:ss", "pod:iptables", "cluster:pods", "config_dump"): when one is
missing for a target, the check is not called and the result is SKIPPED with a reason
naming the file. A check that raises is ERRORED; the others still run (insights-core's
`dr.run_components`). A check can also raise `Skip(reason)` when it finds out late that
it cannot decide.
"""

from __future__ import annotations

import copy
import re
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from ambientctl.analyzers.doctor.facts import (
    Context,
    NodeView,
    PodTarget,
    has_data,
)
from ambientctl.analyzers.findings import (
    CheckInfo,
    CheckResult,
    CheckStatus,
    Evidence,
    Finding,
    Severity,
)
from ambientctl.errors import ParseError

ID_PATTERN = re.compile(r"^AMB\d{3}$")
DOCS_PAGE = "docs/checks.md"
AREAS = ("collection", "legacy", "inpod", "node", "waypoint")
SCOPES = ("bundle", "node", "pod")


class Skip(Exception):
    """Raised by a check that cannot decide for this target; the message says why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Issue:
    """What a check function yields: the specifics of one finding."""

    message: str
    evidence: tuple[Evidence, ...] = ()
    node: str | None = None
    pod: str | None = None
    netns: str | None = None
    remediation: str | None = None  # specific fix; the check's default otherwise


@dataclass(frozen=True)
class Check:
    """A registered check: its catalogue entry, function and target filter."""

    info: CheckInfo
    fn: Callable[..., Iterable[Issue]]
    modes: tuple[str, ...] | None
    per_namespace: bool = False
    """A bundle check whose issues come from each namespace alone (`snap.namespaces()`,
    `snap.all_problems()`): the streaming runner feeds it one node at a time."""


REGISTRY: dict[str, Check] = {}
RETIRED: frozenset[str] = frozenset()  # ids that were used once: never reuse them


def docs_anchor(check_id: str) -> str:
    """The check's section in docs/checks.md."""
    return f"{DOCS_PAGE}#{check_id.lower()}"


def check(
    id: str,
    *,
    title: str,
    severity: Severity,
    area: str,
    scope: str,
    remediation: str,
    requires: tuple[str, ...] = (),
    modes: tuple[str, ...] | None = None,
    per_namespace: bool = False,
) -> Callable[[Callable[..., Iterable[Issue]]], Callable[..., Iterable[Issue]]]:
    """Register a check. `modes` limits node/pod checks to nodes running those designs
    ("legacy", "inpod"; a "mixed" node counts as both). `per_namespace` marks a bundle
    check that reads the snapshot only through `namespaces()`/`all_problems()` plus the
    bundle-wide `problems`, so it can run node by node (see `NodeSlice`)."""
    if not ID_PATTERN.match(id):
        raise ValueError(f"check id {id!r} does not match {ID_PATTERN.pattern}")
    if id in REGISTRY or id in RETIRED:
        raise ValueError(f"check id {id} is already used")
    if area not in AREAS or scope not in SCOPES:
        raise ValueError(f"{id}: unknown area {area!r} or scope {scope!r}")

    def deco(fn: Callable[..., Iterable[Issue]]) -> Callable[..., Iterable[Issue]]:
        info = CheckInfo(id=id, title=title, severity=severity, area=area, scope=scope,
                         requires=requires, remediation=remediation, docs=docs_anchor(id))
        REGISTRY[id] = Check(info, fn, modes, per_namespace)
        return fn

    return deco


def catalogue() -> list[CheckInfo]:
    """Every registered check, by id."""
    return [REGISTRY[k].info for k in sorted(REGISTRY)]


# --------------------------------------------------------------------------- requirements


def _requirement_missing(ctx: Context, target: object, req: str) -> str | None:
    where, _, data = req.partition(":")
    if where == "cluster":
        return ctx.cluster_problem(data)
    if where == "config_dump":
        node_name = target.name if isinstance(target, NodeView) else (
            target.node.name if isinstance(target, PodTarget) else None)
        if node_name is not None and node_name not in ctx.snap.ztunnel_configs:
            path = f"nodes/{node_name}/ztunnel/config_dump.json"
            bad = next((p for p in ctx.snap.problems if p.path == path), None)
            if bad is not None:  # present but unreadable: say so, never "no workloads"
                return f"{path}: unreadable ({bad.message})"
            return f"{path}: not in the bundle"
        return None
    node = target if isinstance(target, NodeView) else (
        target.node if isinstance(target, PodTarget) else None)
    if node is None:
        raise ValueError(f"requirement {req!r} needs a node or pod target")
    if where == "host":
        ns = node.host
        if ns is None:
            return f"nodes/{node.name}/host/: the node's network namespace is not in the bundle"
    elif where == "ztunnel":
        ns = node.ztunnel_ns
        if ns is None:
            zp = node.ztunnel_pod
            looked = (f"nodes/{node.name}/pods/{zp.namespace}/{zp.name}/" if zp
                      else f"nodes/{node.name}/pods/istio-system/ztunnel-*/")
            return f"{looked}: no ztunnel pod network namespace in the bundle"
    elif where == "pod":
        assert isinstance(target, PodTarget)
        ns = target.ns
        if ns is None:
            return (f"nodes/{node.name}/pods/{target.pod.namespace}/{target.pod.name}/: "
                    "the pod's network namespace is not in the bundle")
    else:
        raise ValueError(f"unknown requirement {req!r}")
    if not has_data(ns, data):
        return ctx.missing_reason(ns, data)
    return None


# --------------------------------------------------------------------------- running


def _targets(ctx: Context, chk: Check,
             only_node: str | None = None) -> list[tuple[str, str | None, object]]:
    """(target id, node, target object) for every target the check applies to (on
    `only_node` alone when given: the streaming runner asks node by node)."""
    scope = chk.info.scope
    if scope == "bundle":
        return [("bundle", None, None)]
    out: list[tuple[str, str | None, object]] = []
    # Node by node, look up that node's view alone: iterating every view to skip the others
    # built them all, and building a view classifies its namespaces (parses its rulesets),
    # so the first node's checks parsed the whole cluster at once.
    if only_node is None:
        views: Iterable[NodeView] = ctx.nodes.values()
    else:
        views = [ctx.nodes[only_node]] if only_node in ctx.nodes else []
    for node in views:
        if node.state is None:
            continue  # not collected: AMB1xx says so once, not every check
        if chk.modes is not None and not any(
            m == node.mode or (node.mode == "mixed" and m in ("legacy", "inpod"))
            for m in chk.modes
        ):
            continue
        if scope == "node":
            out.append((node.target, node.name, node))
        else:
            for pt in ctx.pod_targets(node):
                out.append((pt.target, node.name, pt))
    return out


def _finding(chk: Check, issue: Issue) -> Finding:
    info = chk.info
    return Finding(check_id=info.id, severity=info.severity, title=info.title,
                   message=issue.message, node=issue.node, pod=issue.pod, netns=issue.netns,
                   evidence=issue.evidence, remediation=issue.remediation or info.remediation,
                   docs=info.docs)


def _malformed_finding(exc: ParseError, target_id: str, node: str | None) -> CheckResult:
    """An AMB103 ("a file could not be parsed") finding for a lazily found bad line."""
    chk = REGISTRY["AMB103"]
    issue = Issue(message=f"{exc.path}" + (f" line {exc.line}" if exc.line else "")
                  + f" could not be used: {exc.reason}",
                  evidence=(Evidence(path=exc.path, line=exc.line, note=exc.reason),),
                  node=node)
    return CheckResult(check=chk.info, target=target_id, status=CheckStatus.FAILED,
                       findings=(_finding(chk, issue),), node=node)


def run_check(ctx: Context, chk: Check, only_node: str | None = None) -> list[CheckResult]:
    """One check on every target it applies to (on `only_node`'s targets when given)."""
    results: list[CheckResult] = []
    for target_id, node, target in _targets(ctx, chk, only_node):
        reason = None
        for req in chk.info.requires:
            reason = _requirement_missing(ctx, target, req)
            if reason is not None:
                break
        if reason is not None:
            results.append(CheckResult(check=chk.info, target=target_id,
                                       status=CheckStatus.SKIPPED, reason=reason, node=node))
            continue
        try:
            issues = list(chk.fn(ctx) if target is None else chk.fn(ctx, target))
        except Skip as exc:
            results.append(CheckResult(check=chk.info, target=target_id,
                                       status=CheckStatus.SKIPPED, reason=str(exc), node=node))
            continue
        except ParseError as exc:
            # Parsing is lazy (a rule is tokenised when a check first reads it): a malformed
            # line found here is bad data, not a bug. The check is skipped there and the
            # file is reported like any other unparseable file (AMB103).
            results.append(CheckResult(check=chk.info, target=target_id,
                                       status=CheckStatus.SKIPPED,
                                       reason=f"malformed input: {exc.message}", node=node))
            results.append(_malformed_finding(exc, target_id, node))
            continue
        except Exception as exc:  # noqa: BLE001 - one broken check must not stop the rest
            tb = traceback.extract_tb(exc.__traceback__)
            where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
            results.append(CheckResult(check=chk.info, target=target_id,
                                       status=CheckStatus.ERRORED,
                                       reason=f"{type(exc).__name__}: {exc}{where}", node=node))
            continue
        findings = tuple(_finding(chk, i) for i in issues)
        results.append(CheckResult(check=chk.info, target=target_id,
                                   status=CheckStatus.FAILED if findings else CheckStatus.PASSED,
                                   findings=findings, node=node))
    return results


class NodeSlice:
    """The snapshot as a `per_namespace` bundle check sees it during a streamed run: one
    node's namespaces (or none, with the bundle-wide problems, for the first slice).
    Slices in node-name order yield what the whole snapshot yields, in the same order,
    since `Snapshot.namespaces()` walks nodes by name; anything else is the snapshot's."""

    def __init__(self, snap: object, node: str | None) -> None:
        self._snap = snap
        self._node = node

    def __getattr__(self, name: str) -> object:
        return getattr(self._snap, name)

    @property
    def problems(self) -> tuple[object, ...]:
        return self._snap.problems if self._node is None else ()  # type: ignore[attr-defined]

    def namespaces(self) -> Iterable[object]:
        state = self._snap.nodes.get(self._node) if self._node else None  # type: ignore[attr-defined]
        return state.namespaces() if state is not None else ()

    def all_problems(self) -> Iterable[object]:
        yield from self.problems
        for ns in self.namespaces():
            yield from ns.problems  # type: ignore[attr-defined]


Slices = Mapping[str, list[tuple[list[Issue], BaseException | None]]]


def slice_issues(ctx: Context, chk: Check, node: str | None) -> tuple[list[Issue], BaseException | None]:
    """A per_namespace check's issues on one slice, and the exception it stopped on."""
    part = copy.copy(ctx)
    part.snap = NodeSlice(ctx.snap, node)  # type: ignore[assignment]
    issues: list[Issue] = []
    try:
        for issue in chk.fn(part):
            issues.append(issue)
    except Exception as exc:  # noqa: BLE001 - replayed where run_check would see it
        return issues, exc
    return issues, None


def _replayed(chk: Check, parts: list[tuple[list[Issue], BaseException | None]]) -> Check:
    """`chk` with a function that yields the slices' issues in order and raises the first
    exception where it happened, so `run_check` builds the very result of a whole run."""
    def replay(_ctx: Context) -> Iterator[Issue]:
        for issues, exc in parts:
            yield from issues
            if exc is not None:
                raise exc

    return Check(chk.info, replay, chk.modes, chk.per_namespace)


def selected(only: Iterable[str] | None = None) -> list[Check]:
    """The registered checks to run (those in `only`, else all), by id: the results order."""
    wanted = set(only) if only is not None else None
    return [REGISTRY[cid] for cid in sorted(REGISTRY) if wanted is None or cid in wanted]


def run_node(ctx: Context, checks: Iterable[Check], node: str) -> dict[str, list[CheckResult]]:
    """Every node- and pod-scoped check on one node's targets: check id -> results."""
    return {chk.info.id: run_check(ctx, chk, node) for chk in checks
            if chk.info.scope != "bundle"}


def assemble(checks: list[Check], per_node: Iterable[Mapping[str, list[CheckResult]]],
             bundle: Mapping[str, list[CheckResult]]) -> list[CheckResult]:
    """Results in the order of a check-by-check run: by check id, then node order, then the
    node's targets - what the streaming runner must reproduce byte for byte."""
    per_node = list(per_node)
    out: list[CheckResult] = []
    for chk in checks:
        cid = chk.info.id
        if chk.info.scope == "bundle":
            out.extend(bundle.get(cid, ()))
        else:
            for part in per_node:
                out.extend(part.get(cid, ()))
    return out


def run_checks(ctx: Context, only: Iterable[str] | None = None, *,
               on_node: Callable[[NodeView], None] | None = None) -> list[CheckResult]:
    """Every registered check (or those in `only`) on every target it applies to.

    Node by node: a node's and its pods' checks run together, then `on_node(view)` (the
    caller keeps the small per-node facts it needs while the node is parsed), then the
    snapshot may drop the node's parsed state (`Snapshot.evict`, when the snapshot is lazy)
    so peak memory is one node, not the cluster. Bundle-scoped checks run last, after every
    node was read (a lazy snapshot learns of unparseable files as it parses them). The
    results come back in check-id order, exactly as a check-by-check run orders them.
    """
    checks = selected(only)
    evict = getattr(ctx.snap, "evict", None)
    sliced = [c for c in checks if c.info.scope == "bundle" and c.per_namespace]
    slices = {c.info.id: [slice_issues(ctx, c, None)] for c in sliced}
    per_node: list[dict[str, list[CheckResult]]] = []
    for view in ctx.nodes.values():
        per_node.append(run_node(ctx, checks, view.name))
        for c in sliced:
            slices[c.info.id].append(slice_issues(ctx, c, view.name))
        if on_node is not None:
            on_node(view)
        if callable(evict):
            evict(view.name)
    return assemble(checks, per_node, run_bundle(ctx, checks, slices))


def run_bundle(ctx: Context, checks: Iterable[Check],
               slices: Slices | None = None
               ) -> dict[str, list[CheckResult]]:
    """The bundle-scoped checks, after the nodes: a `per_namespace` one replays the issues
    its slices found while each node was parsed (when `slices` holds them)."""
    out: dict[str, list[CheckResult]] = {}
    for chk in checks:
        if chk.info.scope != "bundle":
            continue
        got = (slices or {}).get(chk.info.id)
        out[chk.info.id] = run_check(ctx, _replayed(chk, got) if got is not None else chk)
    return out
