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
import gc
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ambientctl.analyzers.derived_facts import Role
from ambientctl.analyzers.doctor.facts import Context
from ambientctl.analyzers.doctor.registry import (
    REGISTRY,
    Issue,
    Skip,
    Slices,
    assemble,
    catalogue,
    check,
    docs_anchor,
    run_bundle,
    run_node,
    selected,
    slice_issues,
)
from ambientctl.analyzers.doctor.registry import run_checks as _run_checks
from ambientctl.analyzers.findings import (
    CheckResult,
    Finding,
    NodeSummary,
    Report,
    Severity,
)
from ambientctl.errors import AmbientError, UsageError
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


# --------------------------------------------------------------------------- scheduling

WORKERS_ENV = "AMBIENTCTL_DOCTOR_WORKERS"
POOL_MIN_NODES = 16
"""With `AMBIENTCTL_DOCTOR_WORKERS=auto`, below this many nodes no pool is started: forking
is cheap (workers inherit the index), but a small bundle's run is mostly start-up and the
serial bundle-wide work, which a pool does not shorten."""

Captured = tuple[int | None, int | None]

GC_THRESHOLD = (50_000, 20, 100)
"""Collector thresholds while the checks run (restored after). Parsing a node allocates
millions of small objects that live until the node is evicted, so the default youngest
generation (700 allocations) ran ~1,000 collections at 50 nodes, 15% of doctor's CPU time,
finding almost nothing; at these thresholds a handful run and peak memory is unchanged
(measured: docs in benchmarks/README.md)."""


def _can_fork() -> bool:
    """Workers are forked (they inherit the parent's bundle index): where the platform
    cannot fork, nodes are checked in this process."""
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


def _workers(snapshot: Snapshot, nodes: int) -> int:
    """How many processes check nodes: one unless `AMBIENTCTL_DOCTOR_WORKERS` says otherwise
    (a number; 1 = sequential; tests force the pool on small bundles), or `auto`: one per
    usable core for bundles of `POOL_MIN_NODES` or more whose snapshot parses namespaces on
    demand (`Snapshot.evict` exists; an eager snapshot has already paid for every node).

    Why one by default: the workers are forked after the bundle is indexed and share it
    (`_run_pool`), yet on the shared 2-core reference machine two workers were not faster
    (2026-12-06, load average 8-17 from other work: 50 nodes 11.7-15.0 s against 9.5-13.9 s
    in one process; 200 nodes 70 s against 40 s), cost 10-25% more CPU time in all, and held
    ~390-400 MiB over the three processes (VmRSS summed; Pss ~280) against ~240 MiB: at the
    400 MiB goal. What stays serial (start-up, the bundle index, typing every manifest entry
    for the bundle-wide problems) is a large share. On an idle multi-core machine `auto`
    may pay: measure with benchmarks/bench_scale.py (it samples the process tree)."""
    forced = os.environ.get(WORKERS_ENV, "").strip()
    if forced and forced != "auto":
        if not forced.isdigit() or int(forced) < 1:
            raise UsageError(f"{WORKERS_ENV}={forced!r}: expected a whole number >= 1 or auto",
                             hint=f"unset {WORKERS_ENV} to check nodes in this process")
        return min(int(forced), max(nodes, 1)) if _can_fork() else 1
    if not forced or not _can_fork():
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    if cpus <= 1 or nodes < POOL_MIN_NODES or not callable(getattr(snapshot, "evict", None)):
        return 1
    return min(cpus, nodes)


NodePart = tuple[str, dict[str, list[CheckResult]], Captured, dict[str, list[Issue] | None],
                 dict[str, Role]]


def _check_nodes(ctx: Context, only: tuple[str, ...] | None,
                 names: Iterable[str]) -> list[NodePart]:
    """Check `names` node by node as the sequential run does (the node's checks, then the
    per-namespace bundle checks' slice of it, then its captured-pod counts, then drop the
    node): each node's results, counts, slice issues (None where the check raised: the
    parent then reruns that check itself, so an error reads exactly as in a sequential run)
    and the roles classified on the way (the parent names the node's mode from them)."""
    checks = selected(only)
    evict = getattr(ctx.snap, "evict", None)
    sliced = [c for c in checks if c.info.scope == "bundle" and c.per_namespace]
    out: list[NodePart] = []
    for name in names:
        results = run_node(ctx, checks, name)
        issues = {}
        for c in sliced:
            got, exc = slice_issues(ctx, c, name)
            issues[c.info.id] = got if exc is None else None
        state = ctx.snap.nodes.get(name)
        roles = ctx.facts.known_roles(ns.id for ns in state.namespaces()) if state else {}
        out.append((name, results, _captured(ctx, name), issues, roles))
        if callable(evict):
            evict(name)
    return out


_FORKED: tuple[Context, tuple[str, ...] | None] | None = None
"""The parent's context while it forks its workers: each inherits it (the bundle index and
the cluster objects, copy-on-write) instead of re-opening and re-indexing the bundle."""


def _worker(conn: Any, names: list[str]) -> None:
    """A forked worker: check `names` over the inherited context and send back
    ("ok", parts) or ("error", exception). Ctrl-C is the parent's to handle: it ends the
    workers (they ignore SIGINT, which the terminal sends to the whole process group)."""
    import pickle
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert _FORKED is not None
    ctx, only = _FORKED
    reply: tuple[str, object]
    try:
        reply = ("ok", _check_nodes(ctx, only, names))
    except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
        try:
            pickle.loads(pickle.dumps(exc))
            reply = ("error", exc)
        except Exception:  # noqa: BLE001 - an exception that does not cross processes
            reply = ("error", RuntimeError(f"{type(exc).__name__}: {exc}"))
    conn.send(reply)
    conn.close()


def _run_pool(ctx: Context, only: tuple[str, ...] | None, workers: int
              ) -> tuple[list[dict[str, list[CheckResult]]], dict[str, Captured], Slices]:
    """Nodes dealt round-robin to `workers` forked processes that share the parent's
    bundle index copy-on-write; the parent then takes the bundle-wide slice and merges the
    nodes' results in node order: the same results as one process.

    A worker's exception is raised here (one line from the CLI, like any error); a worker
    that dies without a reply is an error naming it; Ctrl-C or any error ends the others."""
    import multiprocessing

    global _FORKED
    names = list(ctx.nodes)
    mp = multiprocessing.get_context("fork")
    procs = []
    _FORKED = (ctx, only)
    gc.freeze()  # what the parent built stays shared: a child's collector leaves it alone
    try:
        for k in range(workers):
            recv, send = mp.Pipe(duplex=False)
            proc = mp.Process(target=_worker, args=(send, names[k::workers]), daemon=True,
                              name=f"ambientctl-doctor-{k + 1}")
            proc.start()
            send.close()
            procs.append((proc, recv))
        _FORKED = None
        gc.unfreeze()
        parts: dict[str, NodePart] = {}
        for proc, recv in procs:
            try:
                status, got = recv.recv()
            except EOFError:
                proc.join()
                raise AmbientError(
                    f"doctor: worker process {proc.name} ended without a result "
                    f"(exit code {proc.exitcode})",
                    hint=f"{WORKERS_ENV}=1 checks every node in this process") from None
            if status != "ok":
                raise got
            parts.update((part[0], part) for part in got)
    finally:
        _FORKED = None
        gc.unfreeze()
        for proc, recv in procs:
            recv.close()
            if proc.is_alive():
                proc.terminate()
            proc.join()
    # The bundle-wide slice once the workers are gone, not while they run: it types every
    # manifest entry (~110 MiB at 200 nodes), and the three processes together then held
    # 458 MiB (VmRSS summed) against 387 MiB this way, for ~1 s of wall time.
    checks = [c for c in selected(only) if c.info.scope == "bundle" and c.per_namespace]
    slices: dict[str, list[tuple[list[Issue], BaseException | None]] | None] = {
        c.info.id: [slice_issues(ctx, c, None)] for c in checks}
    per_node, captured = [], {}
    for name in names:
        _name, results, counts, issues, roles = parts[name]
        per_node.append(results)
        captured[name] = counts
        ctx.facts.learn_roles(roles)
        for cid, found in issues.items():
            if found is None:  # it raised on that node: the parent reruns it whole
                slices[cid] = None
            elif slices.get(cid) is not None:
                slices[cid].append((found, None))  # type: ignore[union-attr]
    return per_node, captured, {k: v for k, v in slices.items() if v is not None}


def _run_streaming(ctx: Context, only: Iterable[str] | None
                   ) -> tuple[list[CheckResult], dict[str, Captured]]:
    """All checks node by node (in a process pool when it pays), then the bundle-wide ones;
    results in check-id order and each node's captured-pod counts, taken while the node is
    parsed."""
    wanted = tuple(only) if only is not None else None
    workers = _workers(ctx.snap, len(ctx.nodes))
    if workers > 1:
        per_node, captured, slices = _run_pool(ctx, wanted, workers)
        checks = selected(wanted)
        return assemble(checks, per_node, run_bundle(ctx, checks, slices)), captured
    captured = {}

    def keep(view: object) -> None:
        name = view.name  # type: ignore[attr-defined]
        captured[name] = _captured(ctx, name)

    return _run_checks(ctx, wanted, on_node=keep), captured


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
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLD)
    try:
        results, captured = _run_streaming(ctx, only)
    finally:
        gc.set_threshold(*before)
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
        got, expected = captured[name]
        counts = {s.value: 0 for s in Severity}
        for f in (*shown, *below):
            if f.node == name:
                counts[f.severity.value] += 1
        nodes.append(NodeSummary(name, view.mode, expected, got, counts,
                                 ztunnel=view.ztunnel_pod is not None or view.ztunnel_ns is not None))
    return Report(source=snapshot.source,
                  bundle_id=snapshot.manifest.bundle_id if snapshot.manifest else None,
                  results=tuple(results), findings=tuple(shown), suppressed=tuple(hidden),
                  nodes=tuple(nodes), fail_on=fail_on, catalogue=tuple(catalogue()),
                  below_threshold=tuple(below), output_threshold=output_threshold,
                  unmatched_suppressions=unmatched)


_load_areas()
