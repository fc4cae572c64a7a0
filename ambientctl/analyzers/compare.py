"""Where two traces of the same pair part ways, and which bundle differences explain it.

Steps are compared by what the kernel did (namespace, kind, hook, table, chain, summary),
with rule positions (`#15`) and process ids left out: a rule inserted above another moves
its position without changing the path. The first step that differs is the divergence;
the differences found in that step's namespace (ambient-relevant first) are what explains
it, and when that namespace holds none, the ambient-relevant ones on the old path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ambientctl.analyzers.diff import DiffEntry
from ambientctl.analyzers.trace_result import Step, Trace

_NOISE = re.compile(r"#\d+|pid=\d+,fd=\d+|:\d{5}\b")


@dataclass(frozen=True)
class FlatStep:
    """One step of a trace with where it happened."""

    leg: int
    direction: str
    reply: bool
    netns: str
    step: Step

    @property
    def key(self) -> tuple[object, ...]:
        s = self.step
        return (self.leg, self.reply, self.netns, s.kind, s.hook, s.table, s.chain,
                _NOISE.sub("", s.summary))

    def describe(self) -> str:
        where = f"leg {self.leg} {self.direction}{' answer' if self.reply else ''}, {self.netns}"
        cite = f" [{self.step.source}]" if self.step.source is not None else ""
        return f"{where}: {self.step.summary}{cite}"


@dataclass(frozen=True)
class Divergence:
    """The first differing step (None on a side whose trace ended first), and why."""

    index: int
    old: FlatStep | None
    new: FlatStep | None
    netns: str
    explained_by: tuple[DiffEntry, ...]


def flatten(t: Trace) -> list[FlatStep]:
    """Every step of every leg and its answer, in order."""
    out: list[FlatStep] = []
    for leg in t.legs:
        for reply, result in ((False, leg.result), (True, leg.result.reply)):
            if result is None:
                continue
            for hop in result.hops:
                out += [FlatStep(leg.index, leg.direction, reply, hop.netns, s)
                        for s in hop.steps]
    return out


def first_divergence(old: Trace, new: Trace, entries: list[DiffEntry]) -> Divergence | None:
    """None when both traces took the same steps."""
    a, b = flatten(old), flatten(new)
    for i in range(max(len(a), len(b))):
        sa = a[i] if i < len(a) else None
        sb = b[i] if i < len(b) else None
        if sa is not None and sb is not None and sa.key == sb.key:
            continue
        netns = (sb or sa).netns  # type: ignore[union-attr]
        here = [e for e in entries if e.scope == netns]
        if not here:
            on_path = {s.netns for s in a[: i + 1]} | {s.netns for s in b[: i + 1]}
            here = [e for e in entries if e.scope in on_path and e.ambient]
        if not here:
            here = [e for e in entries if e.ambient][:10]
        here.sort(key=lambda e: not e.ambient)
        return Divergence(i, sa, sb, netns, tuple(here))
    return None
