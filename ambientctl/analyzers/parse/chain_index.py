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

from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import overload

from ambientctl import model

__all__ = ["ChainMap", "LineIndex", "RawRules", "TableIndex"]

# 16 KiB blocks: 4.4k entries for 70 MB, and a lookup counts at most 16k characters.
_BLOCK = 1 << 14


class LineIndex:
    """Offset -> 1-based line number of one text, from per-block newline counts."""

    __slots__ = ("_before", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._before: array | None = None  # newlines before each block, built on first use

    def line(self, offset: int) -> int:
        """The 1-based line holding `offset` (`sed`'s numbering: only "\\n" ends a line)."""
        before = self._before
        if before is None:
            before = array("q", [0])
            text, total = self.text, 0
            for start in range(0, len(text), _BLOCK):
                total += text.count("\n", start, start + _BLOCK)
                before.append(total)
            self._before = before
        block = offset // _BLOCK
        return before[block] + self.text.count("\n", block * _BLOCK, offset) + 1


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
            spans, text = self._spans, self._text
            for k in range(0, len(spans), 2):
                first = self._lines.line(spans[k])
                parts = text[spans[k] : spans[k + 1]].split("\n")
                if parts and parts[-1] == "":
                    parts.pop()
                out.extend(zip(range(first, first + len(parts)), parts))
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


class TableIndex:
    """One table's chains as the index pass found them: names, offsets, rule spans."""

    __slots__ = ("decl_ends", "decls", "extra", "first", "names", "policies")

    def __init__(self) -> None:
        self.names: dict[str, int] = {}  # chain name -> position in the arrays below
        self.decls = array("q")  # offset of each ":NAME POLICY" line
        self.decl_ends = array("q")
        self.policies: list[str | None] = []  # None for "-" (a user chain)
        self.first = array("q")  # first rule span (start, end) per chain; -1 = no rules
        self.extra: dict[int, list[int]] = {}  # further spans of interleaved chains

    def declare(self, name: str, start: int, end: int, policy: str | None) -> None:
        self.names[name] = len(self.decls)
        self.decls.append(start)
        self.decl_ends.append(end)
        self.policies.append(policy)
        self.first.extend((-1, -1))

    def add_span(self, idx: int, start: int, end: int) -> None:
        first = self.first
        if first[2 * idx] < 0:
            first[2 * idx], first[2 * idx + 1] = start, end
        elif first[2 * idx + 1] == start and idx not in self.extra:
            first[2 * idx + 1] = end  # the run continues (a blank line did not split it)
        else:
            self.extra.setdefault(idx, []).extend((start, end))

    def spans(self, idx: int) -> list[int]:
        s, e = self.first[2 * idx], self.first[2 * idx + 1]
        return ([s, e] if s >= 0 else []) + self.extra.get(idx, [])


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

    @property
    def built(self) -> int:
        """How many chains were built so far."""
        return len(self._built)

    def __getitem__(self, name: str) -> model.Chain:
        chain = self._built.get(name)
        if chain is not None:
            return chain
        idx = self._index.names[name]  # KeyError for an unknown chain, as a dict
        ix = self._index
        start = ix.decls[idx]
        policy = ix.policies[idx]
        chain = self._built[name] = model.Chain(
            table=self._table,
            name=name,
            policy=policy,
            source=model.SourceRef(
                self._path, self._lines.line(start), self._text[start : ix.decl_ends[idx]]
            ),
            raw_rules=RawRules(self._text, ix.spans(idx), self._lines),
            tokenizer=self._tokenizer,
            base=self._hooks.get(name) if policy is not None else None,
        )
        return chain

    def __contains__(self, name: object) -> bool:
        return name in self._index.names

    def __iter__(self) -> Iterator[str]:
        return iter(self._index.names)

    def __len__(self) -> int:
        return len(self._index.names)

    def __repr__(self) -> str:
        return f"ChainMap({self._table}: {len(self)} chains, {self.built} built)"
