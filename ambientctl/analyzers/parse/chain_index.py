"""Chains of a big `iptables-save` dump, located by offset and built when first read.

Why: a kube-proxy node holds 160k chains and 630k rules in a ~70 MB dump; a trace reads a
handful of chains. Holding one `Chain` object (or one tuple per rule) for each would cost
several times the dump's size in memory and most of the parse time. The index pass
(`parse_iptables_save`) records, per table, each chain's declaration offset and the spans
of the dump that hold its rules; `ChainMap` builds the `model.Chain` on first access, and
its `RawRules` splits the spans into (line, text) pairs only when the chain's rules are
read. Line numbers come from `LineIndex` (newline counts per block, counted once), so the
evidence a trace cites stays `sed -n Np`-exact without a list of lines.
"""

from __future__ import annotations

import functools
import gc
import re
from array import array
from collections import deque
from collections.abc import Callable, ItemsView, Iterator, Mapping, Sequence, ValuesView
from itertools import islice, repeat
from operator import sub
from typing import cast, overload

from ambientctl import model

__all__ = ["ChainMap", "LineIndex", "RawRules", "TableIndex"]

# 16 KiB blocks: 4.4k entries for 70 MB, and a lookup counts at most 16k characters.
_BLOCK = 1 << 14


class LineIndex:
    """Offset -> 1-based line number of one text, from per-block newline counts."""

    __slots__ = ("_before", "_last", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._before = array("q", [0])  # newlines before each block, counted as needed
        self._last = (0, 1)  # the previous lookup: (offset, line)

    def line(self, offset: int) -> int:
        """The 1-based line holding `offset` (`sed`'s numbering: only "\\n" ends a line)."""
        last = self._last
        if last[0] <= offset < last[0] + _BLOCK:
            # Near the previous lookup (chains are mostly read in file order): count the gap.
            got = last[1] + self.text.count("\n", last[0], offset)
        else:
            block = offset // _BLOCK
            before = self._before
            if len(before) <= block:  # count the blocks up to this one, once
                text, total = self.text, before[-1]
                for start in range(len(before) * _BLOCK - _BLOCK, block * _BLOCK, _BLOCK):
                    total += text.count("\n", start, start + _BLOCK)
                    before.append(total)
            got = before[block] + self.text.count("\n", block * _BLOCK, offset) + 1
        self._last = (offset, got)
        return got


class RawRules(Sequence[tuple[int, str]]):
    """A chain's rules as (line, text), split out of the dump on first read.

    `spans` are (start, end) offsets of runs of consecutive rule lines (iptables-save prints
    a chain's rules together: normally one span; a hand-edited dump may interleave chains).
    """

    __slots__ = ("_lines", "_rules", "_spans", "_text")

    def __init__(self, text: str, spans: Sequence[int], lines: LineIndex) -> None:
        self._text = text
        self._spans = spans  # flat: start0, end0, start1, end1, ...
        self._lines = lines
        self._rules: tuple[tuple[int, str], ...] | None = None

    def _split(self) -> tuple[tuple[int, str], ...]:
        rules = self._rules
        if rules is None:
            out: list[tuple[int, str]] = []
            spans, text, line = self._spans, self._text, self._lines.line
            for k in range(0, len(spans), 2):
                parts = text[spans[k] : spans[k + 1]].split("\n")
                if parts[-1] == "":
                    parts.pop()
                first = line(spans[k])
                out += zip(range(first, first + len(parts)), parts, strict=True)
            rules = self._rules = tuple(out)
        return rules

    def __len__(self) -> int:
        if self._rules is not None:
            return len(self._rules)
        # Counting newlines is cheaper than splitting: `len(chain)` need not split it.
        spans, text, n = self._spans, self._text, 0
        for k in range(0, len(spans), 2):
            start, end = spans[k], spans[k + 1]
            n += text.count("\n", start, end) + (text[end - 1 : end] != "\n")
        return n

    @overload
    def __getitem__(self, index: int) -> tuple[int, str]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[tuple[int, str]]: ...
    def __getitem__(self, index: int | slice) -> tuple[int, str] | Sequence[tuple[int, str]]:
        return self._split()[index]

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return iter(self._split())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return self._split() == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._split())

    def __repr__(self) -> str:
        return f"RawRules({len(self)} rules)"


# One chain's run of rule lines (`-A NAME ...`) as iptables-save prints them: one regex
# match per chain, not one Python step per rule. `iptables-save -c` prefixes every rule with
# `[packets:bytes] `: a second pattern (an optional prefix per line costs 2.5x the time).
_RUN_RE = re.compile(r"-A ([^ \n]+)[^\n]*\n(?:-A \1(?=[ \n])[^\n]*\n)*")
_COUNTED_RUN_RE = re.compile(
    r"\[\d+:\d+\] -A ([^ \n]+)[^\n]*\n(?:\[\d+:\d+\] -A \1(?=[ \n])[^\n]*\n)*"
)
# A well-formed chain declaration (others go through the parser's line-by-line path).
_DECL_RE = re.compile(r":([^ \n]+) [^ \n]+(?: \[\d+:\d+\])?\n")
_BATCH = 8192  # matches held at once (bounds the transient memory of a bulk step)


def _batches(matches: Iterator[re.Match[str]]) -> Iterator[list[re.Match[str]]]:
    while batch := list(islice(matches, _BATCH)):
        yield batch


def _spans(batch: list[re.Match[str]]) -> tuple[list[int], list[int], list[str]]:
    """Starts, ends and first groups of a batch of matches (the loops run in C)."""
    return (list(map(re.Match.start, batch)), list(map(re.Match.end, batch)),
            list(map(re.Match.group, batch, repeat(1, len(batch)))))


class TableIndex:
    """One table's chains as the index pass found them: names, declaration offsets, runs.

    Per chain: its name (a dict key) and an offset; per run of rules: two offsets. Bulk
    steps (`add_decls`, `add_runs`) keep Python out of the per-chain loop: the regex,
    `map` and `dict(zip(...))` run in C.
    """

    __slots__ = ("decls", "more", "names", "run_ends", "run_of", "run_starts")

    def __init__(self) -> None:
        self.names: dict[str, int] = {}  # chain name -> its number (declaration order)
        self.decls = array("q")  # offset of each ":NAME POLICY" line
        self.run_starts = array("q")
        self.run_ends = array("q")
        # chain number -> its first run, -1: none (yet). An array, not a dict: a 630k-rule
        # dump has 160k chains, and a dict of them with their run numbers (int objects)
        # held ~10 MiB at the trace's peak, against 1.3 MiB here (bench_scale.py big node).
        self.run_of = array("q")
        self.more: dict[int, list[int]] = {}  # chain -> all its runs, when it has several

    def declare(self, name: str, start: int) -> None:
        self.names[name] = len(self.decls)
        self.decls.append(start)

    def add_decls(self, text: str, start: int, end: int) -> tuple[int, tuple[str, int] | None]:
        """Declare the chains of the ":NAME POLICY" lines from `start` on, up to `end` or the
        first malformed line; returns where it stopped and a duplicate as (name, offset)."""
        pos = start
        for batch in _batches(_DECL_RE.finditer(text, start, end)):
            starts, ends, found = _spans(batch)
            if starts[0] != pos or ends[-1] - pos != sum(map(sub, ends, starts)):
                for s, e, name in zip(starts, ends, found, strict=True):  # accept the good prefix
                    if s != pos:
                        return pos, None
                    if name in self.names:
                        return pos, (name, s)
                    self.declare(name, s)
                    pos = e
                return pos, None
            base = len(self.decls)
            new = dict(zip(found, range(base, base + len(found)), strict=True))
            if len(new) != len(found) or not self.names.keys().isdisjoint(new):
                for name, s in zip(found, starts, strict=True):
                    if name in self.names:
                        return pos, (name, s)
                    self.declare(name, s)
            self.names.update(new)
            self.decls.extend(starts)
            pos = ends[-1]
        return pos, None

    def add_run(self, idx: int, start: int, end: int) -> None:
        """File one run of rules (offsets) under chain number `idx`."""
        run = len(self.run_starts)
        self.run_starts.append(start)
        self.run_ends.append(end)
        self._cover(idx)
        first = self.run_of[idx]
        if first < 0:
            self.run_of[idx] = run
        else:
            self.more.setdefault(idx, [first]).append(run)

    def _cover(self, idx: int) -> None:
        """Grow `run_of` (with "no run yet") to hold chain number `idx`."""
        if idx >= len(self.run_of):
            self.run_of.extend(repeat(-1, max(idx + 1, len(self.decls)) - len(self.run_of)))

    def add_runs(self, text: str, start: int, end: int) -> int:
        """File the runs of rule lines from `start` on, up to `end` or the first line that
        is not a rule of a declared chain; returns where it stopped (that line's offset)."""
        pattern = _COUNTED_RUN_RE if text.startswith("[", start) else _RUN_RE
        pos = start
        for batch in _batches(pattern.finditer(text, start, end)):
            starts, ends, names = _spans(batch)
            idxs = list(map(self.names.get, names))
            # Contiguous (no line skipped by the search) and all chains declared?
            if starts[0] != pos or ends[-1] - pos != sum(map(sub, ends, starts)) \
                    or None in idxs:
                for s, e, idx in zip(starts, ends, idxs, strict=True):  # accept the good prefix
                    if s != pos or idx is None:
                        return pos
                    self.add_run(idx, s, e)
                    pos = e
                return pos
            known = cast(list[int], idxs)  # no None: checked above
            base = len(self.run_starts)
            self._cover(max(known))
            run_of = self.run_of
            if len(set(known)) == len(known) and max(map(run_of.__getitem__, known)) < 0:
                self.run_starts.extend(starts)
                self.run_ends.extend(ends)
                # run_of[chain] = run for the whole batch, the loop in C
                deque(map(run_of.__setitem__, known, range(base, base + len(known))), 0)
            else:  # a chain's rules come in several runs (a hand-edited or merged dump)
                for s, e, i in zip(starts, ends, known, strict=True):
                    self.add_run(i, s, e)
            pos = ends[-1]
        return pos

    def spans(self, idx: int) -> list[int]:
        """Flat (start, end, ...) offsets of chain `idx`'s runs, in file order."""
        runs = self.more.get(idx)
        if runs is None:
            first = self.run_of[idx] if idx < len(self.run_of) else -1
            runs = [] if first < 0 else [first]
        out: list[int] = []
        for r in runs:
            out += (self.run_starts[r], self.run_ends[r])
        return out


class ChainMap(Mapping[str, model.Chain]):
    """`Table.chains` for an indexed dump: iterating gives names without building chains;
    a chain is built (and kept) on first access. `built` counts them, so tests can pin that
    a trace builds only the chains its path visits."""

    def __init__(
        self,
        table: str,
        index: TableIndex,
        text: str,
        path: str,
        lines: LineIndex,
        tokenizer: Callable[[model.Chain, int, int, str], model.Rule],
        hooks: Mapping[str, model.BaseHook],
    ) -> None:
        self._table = table
        self._index = index
        self._text = text
        self._path = path
        self._lines = lines
        self._tokenizer = tokenizer
        self._hooks = hooks
        self._built: dict[str, model.Chain] = {}
        self._ordered: dict[str, model.Chain] | None = None

    @property
    def built(self) -> int:
        """How many chains were built so far."""
        return len(self._built)

    def __getitem__(self, name: str) -> model.Chain:
        chain = self._built.get(name)
        if chain is not None:
            return chain
        idx = self._index.names[name]  # KeyError for an unknown chain, as a dict
        start = self._index.decls[idx]
        eol = self._text.find("\n", start)
        decl = self._text[start : eol if eol >= 0 else len(self._text)]
        word = decl.split()[1]  # the index pass checked ":NAME POLICY [p:b]"
        policy = None if word == "-" else word
        chain = self._built[name] = model.Chain(
            table=self._table,
            name=name,
            policy=policy,
            source=model.SourceRef(self._path, self._lines.line(start), decl),
            raw_rules=RawRules(self._text, self._index.spans(idx), self._lines),
            tokenizer=self._tokenizer,
            base=self._hooks.get(name) if policy is not None else None,
        )
        return chain

    def _all(self) -> dict[str, model.Chain]:
        """Every chain, built, in declaration order (what a doctor check that reads them
        all needs). Built with the cyclic GC paused: 160k new objects would otherwise make
        it rescan the growing heap again and again, for nothing to collect."""
        if self._ordered is None:
            gc_was_enabled = gc.isenabled()
            gc.disable()
            try:
                self._ordered = {name: self[name] for name in self._index.names}
            finally:
                if gc_was_enabled:
                    gc.enable()
        return self._ordered

    def items(self) -> ItemsView[str, model.Chain]:
        return self._all().items()

    def values(self) -> ValuesView[model.Chain]:
        return self._all().values()

    def base_chains(self) -> Iterator[model.Chain]:
        """The chains a netfilter hook calls, in declaration order (`Table.base_chains`):
        only built-in names can be, so the other chains are not built."""
        names = self._index.names
        declared = sorted((names[n], n) for n in self._hooks if n in names)
        return (c for c in (self[n] for _i, n in declared) if c.base is not None)

    def __contains__(self, name: object) -> bool:
        return name in self._index.names

    def __iter__(self) -> Iterator[str]:
        return iter(self._index.names)

    def __len__(self) -> int:
        return len(self._index.names)

    def __repr__(self) -> str:
        return f"ChainMap({self._table}: {len(self)} chains, {self.built} built)"

    def relocated(self, old: str, new: str) -> ChainMap:
        """The same dump read from file `new` (`parse.reuse`): the index, the text and its
        line index name no file and are shared; chains are built anew, citing `new`."""
        tok = self._tokenizer
        if self._path != old or not (isinstance(tok, functools.partial) and tok.args[:1] == (old,)):
            from ambientctl.analyzers.parse.reuse import NotRelocatable

            raise NotRelocatable(f"chains of {self._path}, not {old}")
        return ChainMap(self._table, self._index, self._text, new, self._lines,
                        functools.partial(tok.func, new, *tok.args[1:], **tok.keywords),
                        self._hooks)
