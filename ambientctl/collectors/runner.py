"""Run a collection plan (targets x command specs) through any `Transport`.

The runner is transport-agnostic: it knows targets, specs, timeouts and concurrency, and
turns every outcome into a `RawOutput` - failures included, because a failed command is
data (it becomes a manifest entry and, later, a finding), not an exception.

Concurrency: targets run in parallel (default 8 at a time), the commands of one target run
one after the other. Serial per target is what keeps `iptables*-save` one at a time per
network namespace (iptables-legacy takes the xtables lock; the nft backend reads the
ruleset generation) and keeps a pod's netns from being entered a dozen times at once.

Deadlines: each command has its own timeout (`timeout` x the spec's `timeout_factor`), and
each TARGET has one deadline for all its commands together (`target_timeout`, default
`DEFAULT_TARGET_TIMEOUT`): no command is given more than what is left of it, and once it has
passed the remaining commands are recorded `timeout` without being sent. So a hung node
costs at most `target_timeout`, whatever the transport and however many commands it has
(a remote batch gets the same deadline: `batch.BatchingTransport`). The manifest entry of
every timed-out command says which limit cut it and after how long.

Interruption: a Ctrl-C (KeyboardInterrupt in the main thread) stops scheduling, closes the
transport (the local one kills running process groups), and every command that did not
finish becomes `SKIPPED` with note "interrupted". `RunResult.interrupted` tells the writer to
mark the bundle partial.
"""

from __future__ import annotations

import bisect
import os
import pickle
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import overload

from ambientctl.bundle import layout
from ambientctl.bundle.manifest import refuse_shared_netns
from ambientctl.bundle.writer import (
    ExtraFile,
    Spill,
    WrittenBundle,
    rfc3339,
    write_bundle,
)
from ambientctl.collectors.exec_outcome import DEFAULT_MAX_OUTPUT, Deadline
from ambientctl.collectors.specs import (
    ALL_SPECS,
    VERSION_SPECS,
    CommandSpec,
    VersionSpec,
)
from ambientctl.collectors.transport import NetnsRef, Transport
from ambientctl.errors import CollectionError, TransportError, UsageError
from ambientctl.raw import ExecResult, RawOutput, RawStatus

DEFAULT_TIMEOUT = 30.0
DEFAULT_CONCURRENCY = 8
# One target's whole collection (all its commands, one batch or many execs). Six minutes
# covers the slowest node measured (630k iptables-nft rules: the `nft-tables` listing
# 8-23 s, `iptables-save` 7-13 s; `nft -j list ruleset` took 29 min there under load and is
# no longer run) many times over, and bounds what one hung node can cost a run
# (sos-collector: 180 s per node; cilium sysdump: 180 s per node).
DEFAULT_TARGET_TIMEOUT = 360.0


@dataclass(frozen=True, slots=True)
class Target:
    """One network namespace to collect: a node's own, or one pod's.

    `id` is "node/<node>" or "pod/<namespace>/<name>" (the manifest's target ids);
    `dir` is its bundle directory from `layout`. A "ztunnel" target
    ("ztunnel/<namespace>/<name>") is the ztunnel pod's netns once more, for the reads
    that are not netns dumps (its admin `config_dump`), stored under `nodes/<node>/ztunnel`.
    Names are validated here, once, before any of them reaches a path or an argv.
    """

    id: str
    kind: str  # "node" | "pod" | "ztunnel"
    node: str
    netns: NetnsRef
    namespace: str | None = None
    pod: str | None = None

    @property
    def dir(self) -> str:
        """The bundle directory of this target's files."""
        if self.kind == "node":
            return layout.host_dir(self.node)
        if self.kind == "ztunnel":
            return layout.config_dump_path(self.node).rsplit("/", 1)[0]
        assert self.namespace is not None and self.pod is not None
        return layout.pod_dir(self.node, self.namespace, self.pod)

    @classmethod
    def node_target(cls, node: str, netns: NetnsRef) -> Target:
        """The root netns of `node`."""
        _require_name("node", node)
        _require_netns(netns)
        return cls(id=f"node/{node}", kind="node", node=node, netns=netns)

    @classmethod
    def pod_target(cls, node: str, namespace: str, pod: str, netns: NetnsRef) -> Target:
        """The netns of pod `namespace/pod` on `node`."""
        _require_name("node", node)
        _require_name("namespace", namespace)
        _require_name("pod", pod)
        _require_netns(netns)
        return cls(
            id=f"pod/{namespace}/{pod}",
            kind="pod",
            node=node,
            netns=netns,
            namespace=namespace,
            pod=pod,
        )

    @classmethod
    def ztunnel_target(cls, node: str, namespace: str, pod: str, netns: NetnsRef) -> Target:
        """ztunnel pod `namespace/pod` on `node`, for its admin API (see the class doc)."""
        base = cls.pod_target(node, namespace, pod, netns)
        return cls(
            id=f"ztunnel/{namespace}/{pod}",
            kind="ztunnel",
            node=base.node,
            netns=base.netns,
            namespace=namespace,
            pod=pod,
        )

    def describe(self) -> dict[str, object]:
        """The manifest's view of this target."""
        doc: dict[str, object] = {"id": self.id, "kind": self.kind, "node": self.node}
        if self.kind in ("pod", "ztunnel"):
            doc["pod"] = {"namespace": self.namespace, "name": self.pod}
        netns = {
            k: v
            for k, v in (("name", self.netns.name), ("path", self.netns.path), ("pid", self.netns.pid))
            if v is not None
        }
        doc["netns"] = netns or None
        doc["dir"] = self.dir
        return doc


def _require_name(what: str, name: str) -> None:
    if not layout.valid_name(name):
        raise UsageError(
            f"invalid {what} name {name!r}",
            hint="names must be DNS-1123: lowercase letters, digits, '-' and '.'",
        )


def _require_netns(netns: NetnsRef) -> None:
    if netns.name is not None and not layout.valid_name(netns.name):
        raise UsageError(
            f"invalid network namespace name {netns.name!r}",
            hint="pass a name listed by `ip netns list`, or an absolute path",
        )
    if netns.path is not None and not netns.path.startswith("/"):
        raise UsageError(f"network namespace path {netns.path!r} must be absolute")


@dataclass(frozen=True, slots=True)
class Plan:
    """What to collect: targets (in manifest order) and the specs to run on each."""

    targets: tuple[Target, ...]
    specs: tuple[CommandSpec, ...] = ALL_SPECS
    versions: tuple[VersionSpec, ...] = VERSION_SPECS

    def __post_init__(self) -> None:
        ids = [t.id for t in self.targets]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise UsageError(f"target listed twice: {', '.join(dupes)}")
        dirs = [t.dir for t in self.targets]
        if len(set(dirs)) != len(dirs):
            raise UsageError("two targets map to the same bundle directory")

    def specs_for(self, target: Target) -> tuple[CommandSpec, ...]:
        """The specs that run on `target`."""
        return tuple(s for s in self.specs if target.kind in s.targets)


@dataclass(frozen=True, slots=True)
class VersionResult:
    """One tool-version command's outcome, for the manifest."""

    tool: str
    argv: tuple[str, ...]
    status: RawStatus
    output: str | None


class OutputSpool(Sequence[RawOutput]):
    """Finished targets' outputs, pickled to an unnamed temporary file as each target
    finishes, read back in plan order: a spilling run (`Runner(spill=...)`) holds no
    output beyond its running targets, not even the small records left once stdout went
    to disk (at 500 nodes x 50 pods, about a million `RawOutput`s: ~300 MiB).

    `put` may be called from any worker; `seal` fixes the order (plan order) once the run
    is over. A sequence: iteration streams one target at a time, indexing reads back the
    one target holding the item (tests and small runs index; the writer iterates).
    """

    def __init__(self) -> None:
        self._fh = tempfile.TemporaryFile(prefix="ambientctl-outputs-")
        self._lock = threading.Lock()
        self._blocks: dict[str, tuple[int, int, int]] = {}  # id -> (offset, length, count)
        self._order: list[str] = []
        self._ends: list[int] = []  # cumulative output counts along `_order`

    def put(self, key: str, outputs: Sequence[RawOutput]) -> None:
        """Store one target's outputs (once per key)."""
        data = pickle.dumps(list(outputs), protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            offset = self._fh.seek(0, os.SEEK_END)
            self._fh.write(data)
            self._blocks[key] = (offset, len(data), len(outputs))

    def seal(self, order: Sequence[str]) -> None:
        """Fix the order of the sequence: every key stored, in this order."""
        total, ends = 0, []
        for key in order:
            total += self._blocks[key][2]
            ends.append(total)
        self._order, self._ends = list(order), ends

    def _load(self, key: str) -> list[RawOutput]:
        offset, length, _ = self._blocks[key]
        with self._lock:
            self._fh.seek(offset)
            data = self._fh.read(length)
        loaded: list[RawOutput] = pickle.loads(data)  # noqa: S301 - our own file
        return loaded

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __iter__(self) -> Iterator[RawOutput]:
        for key in self._order:
            yield from self._load(key)

    @overload
    def __getitem__(self, index: int) -> RawOutput: ...

    @overload
    def __getitem__(self, index: slice) -> list[RawOutput]: ...

    def __getitem__(self, index: int | slice) -> RawOutput | list[RawOutput]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        block = bisect.bisect_right(self._ends, index)
        start = self._ends[block - 1] if block else 0
        return self._load(self._order[block])[index - start]

    def close(self) -> None:
        self._fh.close()


@dataclass
class RunResult:
    """Everything a run produced, in plan order (`outputs`: a list, or an `OutputSpool`
    when the run spilled its outputs to disk)."""

    outputs: Sequence[RawOutput] = field(default_factory=list)
    versions: dict[str, list[VersionResult]] = field(default_factory=dict)  # target id -> ...
    not_kept: set[str] = field(default_factory=set)  # paths whose output a spec's `keep` refused
    interrupted: bool = False
    # target id -> when its deadline cut the collection (RFC 3339), for the manifest
    deadline_reached: dict[str, str] = field(default_factory=dict)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _status(res: ExecResult) -> RawStatus:
    if res.not_found:
        return RawStatus.NOT_FOUND
    if res.timed_out:
        return RawStatus.TIMEOUT
    if res.truncated:
        return RawStatus.TRUNCATED
    if res.exit_code == 0:
        return RawStatus.OK
    return RawStatus.NONZERO_EXIT


class Runner:
    """Runs a `Plan` through one transport (see the module docstring)."""

    def __init__(
        self,
        transport: Transport,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        concurrency: int = DEFAULT_CONCURRENCY,
        progress: Callable[[str], None] | None = None,
        target_timeout: float = DEFAULT_TARGET_TIMEOUT,
        spill: Callable[[RawOutput], RawOutput] | None = None,
    ) -> None:
        if concurrency < 1:
            raise UsageError("concurrency must be at least 1")
        if timeout <= 0:
            raise UsageError("timeout must be positive")
        if target_timeout <= 0:
            raise UsageError("target timeout must be positive")
        self.transport = transport
        self.timeout = timeout
        self.target_timeout = target_timeout
        self._deadline_reached: dict[str, str] = {}
        self.concurrency = concurrency
        self._progress = progress
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._not_kept: set[str] = set()
        self._results: dict[str, tuple[list[RawOutput], list[VersionResult]]] = {}
        self._cv = threading.Condition(self._lock)
        self._busy = 0  # targets taken off the queue whose outcome is not in yet
        self._errors: list[BaseException] = []
        self._spill = spill  # writes a finished target's outputs to disk (`writer.Spill`)
        self._store: OutputSpool | None = None  # a spilling run's finished outputs

    # ------------------------------------------------------------------ one target
    def _wrapper(self, netns: NetnsRef) -> tuple[str, ...]:
        describe = getattr(self.transport, "describe_wrapper", None)
        if callable(describe):
            return tuple(describe(netns))
        return netns.wrapper()

    def _skipped(self, target: Target, spec: CommandSpec, note: str, status: RawStatus) -> RawOutput:
        return RawOutput(
            path=f"{target.dir}/{spec.file}",
            target=target.id,
            argv=spec.argv,
            transport=self.transport.name,
            status=status,
            exit_code=None,
            stdout=b"",
            stderr=b"",
            started_at=_now(),
            duration_ms=0,
            wrapper=self._wrapper(target.netns),
            note=note,
        )

    def _run_target(
        self, plan: Plan, target: Target
    ) -> tuple[list[RawOutput], list[VersionResult]]:
        outputs: list[RawOutput] = []
        versions: list[VersionResult] = []
        broken: str | None = None  # transport error text: the target is unreachable
        wrapper = self._wrapper(target.netns)
        deadline = Deadline(self.target_timeout)
        deadline_note = (
            f"the target's deadline ({self.target_timeout:g}s for all its commands, "
            "--target-timeout) was reached"
        )

        def hit_deadline() -> None:
            with self._lock:
                self._deadline_reached.setdefault(target.id, _now())

        for spec in plan.specs_for(target):
            if self._cancel.is_set():
                outputs.append(self._skipped(target, spec, "interrupted", RawStatus.SKIPPED))
                continue
            if broken is not None:
                outputs.append(self._skipped(target, spec, broken, RawStatus.TRANSPORT_ERROR))
                continue
            if deadline.expired():
                hit_deadline()
                outputs.append(
                    self._skipped(target, spec, f"not run: {deadline_note}", RawStatus.TIMEOUT)
                )
                continue
            started = _now()
            try:
                own_limit = self.timeout * spec.timeout_factor
                limit = min(own_limit, deadline.remaining())
                res = self.transport.run(spec.argv, netns=target.netns, timeout=limit)
            except TransportError as exc:
                if self._cancel.is_set():
                    outputs.append(self._skipped(target, spec, "interrupted", RawStatus.SKIPPED))
                    continue
                broken = exc.message
                outputs.append(self._skipped(target, spec, broken, RawStatus.TRANSPORT_ERROR))
                continue
            status = _status(res)
            note = None
            optional_absent = False
            if self._cancel.is_set() and status is not RawStatus.OK:
                status, note = RawStatus.SKIPPED, "interrupted"
            elif status is RawStatus.TIMEOUT:
                if deadline.expired():
                    hit_deadline()
                    note = f"stopped after {res.duration_ms / 1000:.1f}s: {deadline_note}"
                else:
                    note = f"killed after {own_limit:g}s (per-command timeout, --timeout)"
            elif status is RawStatus.TRUNCATED:
                cap = getattr(self.transport, "max_output", None)
                limit_text = f" of {cap} bytes" if isinstance(cap, int) else ""
                note = (
                    f"stdout went past the per-command output cap{limit_text} (--max-output) "
                    "and was cut; not stored (a cut dump would be read as if whole)"
                )
            elif status is RawStatus.NOT_FOUND and spec.optional:
                status, note = RawStatus.SKIPPED, spec.absent_reason or "not found"
                optional_absent = True
            elif status is RawStatus.NOT_FOUND:
                note = f"{spec.binary} is not installed on the target"
                if spec.missing_hint:
                    note += f"; {spec.missing_hint}"
            elif status is RawStatus.NONZERO_EXIT and res.exit_code in spec.absent_exit_codes:
                # The source is not there (see CommandSpec.absent_exit_codes): data, not a
                # failed collection.
                status, note = RawStatus.SKIPPED, spec.absent_reason or "source absent"
            stdout = res.stdout
            if status is RawStatus.OK and spec.keep is not None and not spec.keep(stdout):
                note = spec.keep_reason or "output not kept"
                with self._lock:
                    self._not_kept.add(f"{target.dir}/{spec.file}")
            outputs.append(
                RawOutput(
                    path=f"{target.dir}/{spec.file}",
                    target=target.id,
                    argv=spec.argv,
                    transport=self.transport.name,
                    status=status,
                    exit_code=res.exit_code,
                    stdout=stdout,
                    stderr=res.stderr,
                    started_at=started,
                    duration_ms=res.duration_ms,
                    wrapper=wrapper,
                    note=note,
                    optional_absent=optional_absent,
                )
            )
        if target.kind == "node":
            for vspec in plan.versions:
                if self._cancel.is_set() or broken is not None or deadline.expired():
                    versions.append(VersionResult(vspec.tool, vspec.argv, RawStatus.SKIPPED, None))
                    continue
                try:
                    res = self.transport.run(
                        vspec.argv,
                        netns=target.netns,
                        timeout=min(self.timeout, deadline.remaining()),
                    )
                except TransportError:
                    versions.append(
                        VersionResult(vspec.tool, vspec.argv, RawStatus.TRANSPORT_ERROR, None)
                    )
                    continue
                status = _status(res)
                text = None
                if status is RawStatus.OK:
                    text = res.stdout.decode("utf-8", errors="replace").strip() or (
                        res.stderr.decode("utf-8", errors="replace").strip()
                    )
                versions.append(VersionResult(vspec.tool, vspec.argv, status, text))
        return outputs, versions

    # ------------------------------------------------------------------ whole plan
    def _worker(self, plan: Plan, targets: queue.SimpleQueue[Target]) -> None:
        """Take targets off the queue until it is empty or the run is cancelled.

        Taking a target and counting it busy happen under one lock, the same the main
        thread holds to cancel: after a cancel, no target is started, and `_busy` counts
        exactly the targets whose outcome is still to come.
        """
        while True:
            with self._cv:
                if self._cancel.is_set() or self._errors:
                    return
                try:
                    target = targets.get_nowait()
                except queue.Empty:
                    return
                self._busy += 1
            try:
                outs, vers = self._run_target(plan, target)
                if self._spill is not None:
                    with self._cv:  # this target's refused paths, not a copy of all so far
                        refused = {o.path for o in outs if o.path in self._not_kept}
                    outs = [o if o.path in refused else self._spill(o) for o in outs]
                if self._store is not None:  # kept on disk, not in memory (see OutputSpool)
                    self._store.put(target.id, outs)
            except BaseException as exc:  # noqa: BLE001 - a bug: re-raised in the main thread
                with self._cv:
                    self._errors.append(exc)
                    self._busy -= 1
                    self._cv.notify_all()
                return
            with self._cv:
                self._results[target.id] = (outs if self._store is None else [], vers)
                self._busy -= 1
                self._report(target, outs)
                self._cv.notify_all()

    def _report(self, target: Target, outputs: list[RawOutput]) -> None:
        """One progress line: targets done / running / failed, elapsed (caller holds the lock)."""
        bad = sum(1 for o in outputs if o.status is not RawStatus.OK)
        self._failed_targets += 1 if bad else 0
        if self._progress is None or self._cancel.is_set():
            return
        elapsed = time.monotonic() - self._t0
        self._progress(
            f"[{len(self._results)}/{self._total} done, {self._busy} running, "
            f"{self._failed_targets} with failures, {elapsed:.1f}s] "
            f"{target.id}: {len(outputs) - bad}/{len(outputs)} commands ok"
        )

    def run(self, plan: Plan) -> RunResult:
        """Run every spec on every target; never raises for a failed command.

        `concurrency` worker threads pull targets from a queue and deposit each target's
        outcome themselves. The main thread only waits on a condition, never on
        `Thread.join()` (a join interrupted by KeyboardInterrupt can leave CPython 3.11
        believing the thread stopped), so a Ctrl-C landing anywhere loses nothing that
        finished: after it, running targets complete (their commands killed), queued ones
        are reported skipped.
        """
        result = RunResult()
        self._cancel = threading.Event()
        self._cv = threading.Condition(self._lock)
        self._busy = 0
        self._total = len(plan.targets)
        self._failed_targets = 0
        self._t0 = time.monotonic()
        self._results = {}
        self._store = OutputSpool() if self._spill is not None else None
        self._not_kept = set()
        self._deadline_reached = {}
        self._errors = []
        targets: queue.SimpleQueue[Target] = queue.SimpleQueue()
        for target in schedule(plan.targets, self.concurrency):
            targets.put(target)
        try:
            for i in range(min(self.concurrency, len(plan.targets))):
                threading.Thread(
                    target=self._worker, args=(plan, targets), name=f"collect-{i}", daemon=True
                ).start()
            with self._cv:
                while not ((targets.empty() and self._busy == 0) or self._errors):
                    self._cv.wait(0.2)
        except KeyboardInterrupt:
            result.interrupted = True
            with self._cv:
                self._cancel.set()  # from here on no worker starts a target
            self.transport.close()  # kills running commands; they come back as "interrupted"
            with self._cv:
                while self._busy:
                    self._cv.wait(0.2)
        if self._errors:
            raise self._errors[0]
        outputs: list[RawOutput] = []
        for target in plan.targets:
            done = self._results.get(target.id)  # a finished target's outputs are stored
            outs, vers = done or (
                [self._skipped(target, s, "interrupted", RawStatus.SKIPPED)
                 for s in plan.specs_for(target)],
                [],
            )
            if self._store is None:
                outputs.extend(outs)
            elif done is None:
                self._store.put(target.id, outs)
            if target.kind == "node":
                result.versions[target.id] = vers
        if self._store is not None:
            self._store.seal([t.id for t in plan.targets])
        result.outputs = self._store if self._store is not None else outputs
        # handed over, not copied: a path per refused output (~2 a pod, 3.5 MiB at 200 x
        # 50), and the runner lives as long as the write
        result.not_kept, self._not_kept = self._not_kept, set()
        result.deadline_reached = dict(self._deadline_reached)
        return result


def schedule(targets: Sequence[Target], concurrency: int) -> list[Target]:
    """The order workers take targets in (results stay in plan order).

    A remote node answers all its netns in one batch (`batch.BatchingTransport.expect`),
    so workers should start on DIFFERENT nodes: nodes are taken `concurrency` at a time,
    their targets interleaved. A window's pods are answered from the batch cache right
    after it, so at most about `concurrency` nodes' outputs wait in memory at once.
    """
    by_node: dict[str, list[Target]] = {}
    for t in targets:
        by_node.setdefault(t.node, []).append(t)
    nodes = list(by_node.values())
    order: list[Target] = []
    for w in range(0, len(nodes), max(1, concurrency)):
        window = nodes[w : w + concurrency]
        for i in range(max(len(n) for n in window)):
            order += [n[i] for n in window if i < len(n)]
    return order


def run_plan(
    transport: Transport,
    targets: Sequence[Target],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    concurrency: int = DEFAULT_CONCURRENCY,
    specs: tuple[CommandSpec, ...] = ALL_SPECS,
    progress: Callable[[str], None] | None = None,
    target_timeout: float = DEFAULT_TARGET_TIMEOUT,
) -> RunResult:
    """Convenience: build a `Plan` and run it."""
    runner = Runner(
        transport,
        timeout=timeout,
        concurrency=concurrency,
        progress=progress,
        target_timeout=target_timeout,
    )
    return runner.run(Plan(tuple(targets), specs))


# --------------------------------------------------------------------------- plan -> bundle


def deadline_fields(result: RunResult, target: Target) -> dict[str, str]:
    """The manifest target fields saying when its deadline cut its collection (if it did)."""
    when = result.deadline_reached.get(target.id)
    return {"deadline_reached_at": when} if when else {}

CLUSTER_SOURCE_FILES = ("pods.json", "services.json", "namespaces.json", "nodes.json",
                        "endpointslices.json")


def read_cluster_dir(directory: str) -> list[ExtraFile]:
    """The `kubectl get -o json` files found in `directory`, for the bundle's cluster/.

    Stored as found (collectors never parse); absent files are simply not copied.
    """
    files: list[ExtraFile] = []
    for name in CLUSTER_SOURCE_FILES:
        src = os.path.join(directory, name)
        if os.path.isfile(src):
            with open(src, "rb") as fh:
                files.append(ExtraFile(f"cluster/{name}", fh.read(), os.path.abspath(src)))
    return files


@dataclass(frozen=True, slots=True)
class CollectOptions:
    """How a collection runs, whatever its source (`--local`, `--kind`, `--ssh`, kube):
    built once from the command line and passed through whole to the runner and the
    manifest (`collection.timeout_s`, ...), so a new limit is one field, not a keyword
    argument threaded through every layer."""

    timeout: float = DEFAULT_TIMEOUT  # seconds before one command is killed
    concurrency: int = DEFAULT_CONCURRENCY  # targets collected at once
    target_timeout: float = DEFAULT_TARGET_TIMEOUT  # one deadline for a target's commands
    max_output: int | None = DEFAULT_MAX_OUTPUT  # stdout bytes kept per command; None: no cap
    # ztunnel config_dumps stored split, cluster-wide sections once (bundle format 2)
    split_dumps: bool = True

    def record(self) -> dict[str, object]:
        """The limits as the manifest's `collection` records them."""
        return {"timeout_s": self.timeout, "target_timeout_s": self.target_timeout,
                "max_output_bytes": self.max_output, "concurrency": self.concurrency}


NO_EVIDENCE_HINT = "check the namespaces (`ip netns list`) and that you run as root"


def collect_bundle(
    transport: Transport,
    plan: Plan,
    out: str,
    *,
    collection: dict[str, object],
    options: CollectOptions | None = None,
    extra_files: Sequence[ExtraFile] = (),
    progress: Callable[[str], None] | None = None,
    target_fields: Callable[[Target], dict[str, object]] | None = None,
    after_run: Callable[[RunResult], dict[str, object]] | None = None,
    nothing_hint: str = NO_EVIDENCE_HINT,
) -> tuple[WrittenBundle, bool]:
    """Run `plan` and write the bundle to `out`; returns (bundle, interrupted).

    The one run-then-write of every source: `collect --local` and live collection
    (`collectors.live.run_live`) differ only in the transport, the targets, the
    `collection` record, per-target fields (`target_fields`: e.g. the node route of a
    live target) and what the run itself teaches (`after_run`: e.g. binaries not seen).
    Raises `CollectionError` (and writes nothing) when not one command succeeded: such a
    bundle would hold no evidence, only the reasons, which the error message gives.
    """
    opts = options if options is not None else CollectOptions()
    created_at = rfc3339(datetime.now(UTC))
    spill = Spill(out, split_dumps=opts.split_dumps)  # refuses an existing `out` first
    if hasattr(transport, "max_output"):
        transport.max_output = opts.max_output  # the cap is an option, not the transport's
    runner = Runner(
        transport,
        timeout=opts.timeout,
        concurrency=opts.concurrency,
        progress=progress,
        target_timeout=opts.target_timeout,
        spill=spill,
    )
    try:
        result = runner.run(plan)
    except BaseException:
        spill.discard()
        raise
    finally:
        transport.close()
    try:  # the spool's temporary file is closed whatever happens from here
        if not any(o.status is RawStatus.OK for o in result.outputs) and not result.interrupted:
            spill.discard()
            first = next((o for o in result.outputs), None)
            why = ""
            if first is not None:
                why = (first.note or first.stderr.decode("utf-8", "replace").strip()
                       or str(first.status))
                why = f": {first.target}: {why}"
            raise CollectionError(f"nothing could be collected{why}", hint=nothing_hint)
        targets: list[dict[str, object]] = []
        inode = getattr(transport, "netns_inode", None)
        for target in plan.targets:
            doc = target.describe()
            doc["transport"] = transport.name
            if target_fields is not None:
                doc.update(target_fields(target))
            doc["netns_inode"] = inode(target.netns) if callable(inode) else None
            if target.kind == "node":
                doc["tool_versions"] = {
                    v.tool: v.output for v in result.versions.get(target.id, [])
                }
            doc.update(deadline_fields(result, target))
            targets.append(doc)
        outputs, conflicts = refuse_shared_netns(targets, result.outputs)
        meta = dict(collection)
        if result.interrupted:
            meta["interrupted"] = True  # Ctrl-C / SIGTERM: `collect` exits 130 on it
        if conflicts:
            meta["netns_conflicts"] = conflicts
        for key, value in opts.record().items():
            meta.setdefault(key, value)
        if after_run is not None:
            meta.update(after_run(result))
        written = write_bundle(
            out,
            outputs=outputs,
            created_at=created_at,
            collection=meta,
            targets=targets,
            extra_files=extra_files,
            not_kept=result.not_kept,
            interrupted=result.interrupted,
            spill=spill,
        )
    finally:
        if isinstance(result.outputs, OutputSpool):
            result.outputs.close()
    return written, result.interrupted
