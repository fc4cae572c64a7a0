"""Parse once per distinct content: a bounded cache of parsed files, keyed by their text.

Why: the pods of a cluster carry the same in-pod dumps. istio-cni writes the same rules in
every pod, so every pod's `iptables-save.txt` and `nft-ruleset.json` are byte-identical,
and `sysctl -a` of a pod is mostly the kernel's defaults: at 200 nodes x 20 pods, doctor
parsed 4,000 copies of one 27 KB `sysctl.txt` and one 7 KB `nft-ruleset.json` (issue 12).

Provenance: a parsed object cites its file (`SourceRef.path`), and that is all that
differs between equal texts in two files. The parsers read nothing else of the path but
its file name (`ip6tables-save.txt` says the family, `*-legacy-save.txt` the backend,
`.json` the form), which is part of the key. A hit hands back the cached result
*relocated*: the same object graph with every `SourceRef` of the old path replaced by one
of the new path. Objects are rebuilt only where something under them changed (frozen
dataclasses, tuples) and shared where nothing did (`Match`, `NftLookup`, addresses:
immutable and path-free); dicts and lists are always new (a caller may extend its copy).
Lazy containers relocate themselves (`relocated(old, new)`: `Sysctls`, `ChainMap`),
sharing their path-free index. A result holding anything else is not cached, and neither
is a failure (a `ParseError` names its file: the next copy is parsed and fails alike).

Bounded: texts up to `MAX_TEXT` characters (a node's own large dumps are distinct and
would only push the pods' out), at most `MAX_ENTRIES` results and `MAX_CHARS` characters
of text held, least recently used dropped first; a result is kept from the second
time its text is seen. `CACHE.stats()` gives the hit rate.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from ambientctl import model

__all__ = ["CACHE", "ContentCache", "NotRelocatable", "relocate"]

T = TypeVar("T")

MAX_TEXT = 64 * 1024
MAX_ENTRIES = 512
MAX_CHARS = 4 * 1024 * 1024
SEEN_KEPT = 8192


class NotRelocatable(Exception):
    """The parsed result holds an object `relocate` cannot rebuild for another path."""


_ATOMS: tuple[type, ...] = (str, int, float, bool, bytes, type(None), enum.Enum,
                            ipaddress.IPv4Address, ipaddress.IPv6Address,
                            ipaddress.IPv4Network, ipaddress.IPv6Network,
                            ipaddress.IPv4Interface, ipaddress.IPv6Interface)
_KINDS: dict[type, str] = {}
_FIELDS: dict[type, tuple[str, ...]] = {}


def _kind(t: type) -> str:
    kind = _KINDS.get(t)
    if kind is None:
        if issubclass(t, _ATOMS):
            kind = "atom"
        elif t is model.SourceRef:
            kind = "ref"
        elif t in (tuple, list, dict, frozenset):
            kind = t.__name__
        elif callable(getattr(t, "relocated", None)):
            kind = "self"
        elif dataclasses.is_dataclass(t):
            kind = "dataclass"
            _FIELDS[t] = tuple(f.name for f in dataclasses.fields(t))
        else:
            kind = "other"
        _KINDS[t] = kind
    return kind


def relocate(obj: T, old: str, new: str) -> T:
    """`obj` as if parsed from file `new` rather than `old` (see the module docstring);
    raises `NotRelocatable` for an object it does not know how to rebuild.

    Also when `old == new` (the same bundle path in another bundle, or a namespace parsed
    again after doctor evicted it): lazy containers are still copied, so that chains and
    sysctls built through one snapshot are neither seen nor kept alive through another."""
    return _Relocator(old, new).run(obj)


class _Relocator:
    __slots__ = ("memo", "new", "old")

    def __init__(self, old: str, new: str) -> None:
        self.old = old
        self.new = new
        self.memo: dict[int, Any] = {}  # id -> rebuilt: a shared sub-object stays shared

    def run(self, obj: Any) -> Any:
        kind = _KINDS.get(type(obj)) or _kind(type(obj))
        if kind == "atom":
            return obj
        if kind == "ref":
            return model.SourceRef(self.new, obj.line, obj.text) if obj.path == self.old else obj
        key = id(obj)
        got = self.memo.get(key, self)
        if got is not self:
            return got
        run = self.run
        if kind == "tuple":
            items = self._moved(obj)
            got = obj if items is None else tuple(items)
        elif kind == "list":
            got = [run(x) for x in obj]
        elif kind == "dict":
            got = {run(k): run(v) for k, v in obj.items()}
        elif kind == "frozenset":
            members = frozenset(run(x) for x in obj)
            got = obj if members == obj else members
        elif kind == "self":
            got = obj.relocated(self.old, self.new)
        elif kind == "dataclass":
            got = self._dataclass(obj)
        else:
            raise NotRelocatable(f"{type(obj).__name__} in a parsed result")
        self.memo[key] = got
        return got

    def _moved(self, values: Any) -> list[Any] | None:
        """`values` relocated one by one, or None when none of them changed (the caller
        keeps its object). Atoms are passed over here rather than through `run` (issue 12:
        a pod's four ip rules, 22 fields each, took longer to relocate than to parse)."""
        kinds = _KINDS
        out: list[Any] | None = None
        for k, v in enumerate(values):
            if kinds.get(type(v)) == "atom":
                if out is not None:
                    out.append(v)
                continue
            m = self.run(v)
            if out is None:
                if m is v:
                    continue
                out = list(values[:k])
            out.append(m)
        return out

    def _dataclass(self, obj: Any) -> Any:
        if isinstance(obj, model.Chain) and obj.prebuilt is None and obj.tokenizer is not None:
            # Its rules are tokenised on demand by a tokeniser bound to the old path (a
            # ChainMap relocates its chains by building them anew instead).
            raise NotRelocatable("a lazily tokenised chain")
        names = _FIELDS[type(obj)]
        moved = self._moved([getattr(obj, n) for n in names])
        if moved is None:
            return obj
        # Field by field, as __init__ would set them (no __post_init__ in the model), but
        # without the cost of dataclasses.replace; per-instance caches (cached_property
        # values, a chain's tokenised rules) are left behind and recomputed.
        out = object.__new__(type(obj))
        for name, value in zip(names, moved, strict=True):
            object.__setattr__(out, name, value)
        return out


class ContentCache:
    """The bounded text -> parsed result cache (see the module docstring).

    A result is kept from the second time its text is parsed: most of a pod's files are
    its own (addresses, routes) and would only fill the cache with what never hits; the
    first sighting leaves the key's hash in a bounded set (`SEEN_KEPT`). Measured on the
    200-node doctor pool, keeping every result cost each worker ~5 MiB more.
    """

    def __init__(self, max_entries: int = MAX_ENTRIES, max_chars: int = MAX_CHARS,
                 max_text: int = MAX_TEXT) -> None:
        self.max_entries = max_entries
        self.max_chars = max_chars
        self.max_text = max_text
        self._entries: OrderedDict[tuple[object, str, str], tuple[str, object]] = OrderedDict()
        self._chars = 0
        self._refused: set[tuple[object, str, str]] = set()  # results that do not relocate
        self._seen: set[int] = set()  # hashes of keys parsed once (not kept yet)
        self.hits = 0
        self.misses = 0
        self.skipped = 0  # texts too large to cache

    def parse(self, parse: Callable[[str, str], T], text: str, path: str) -> T:
        """`parse(text, path)`, or an equal result relocated from an earlier file of the
        same name and text."""
        if len(text) > self.max_text:
            self.skipped += 1
            return parse(text, path)
        key = (parse, path.rsplit("/", 1)[-1], text)
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            try:
                got: T = relocate(entry[1], entry[0], path)  # type: ignore[assignment]
            except NotRelocatable:
                self._drop(key)
                if len(self._refused) >= self.max_entries:
                    self._refused.clear()
                self._refused.add(key)
            else:
                self.hits += 1
                return got
        self.misses += 1
        value = parse(text, path)
        if key in self._refused:
            return value
        mark = hash(key)
        if mark not in self._seen:  # kept from its second sighting on (see the class doc)
            if len(self._seen) >= SEEN_KEPT:
                self._seen.clear()
            self._seen.add(mark)
        else:
            self._entries[key] = (path, value)
            self._chars += len(text)
            while len(self._entries) > self.max_entries or self._chars > self.max_chars:
                self._drop(next(iter(self._entries)))
        return value

    def _drop(self, key: tuple[object, str, str]) -> None:
        if self._entries.pop(key, None) is not None:
            self._chars -= len(key[2])

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def chars(self) -> int:
        """Characters of text the cache holds (its keys)."""
        return self._chars

    def stats(self) -> dict[str, int]:
        """Hits, misses and what is held: the figures a benchmark reports."""
        return {"hits": self.hits, "misses": self.misses, "skipped": self.skipped,
                "entries": len(self._entries),
                "chars": self._chars}

    def clear(self) -> None:
        """Forget every result and the counts."""
        self._entries.clear()
        self._refused.clear()
        self._seen.clear()
        self._chars = 0
        self.hits = self.misses = self.skipped = 0


CACHE = ContentCache()
"""The one cache the snapshot loader parses through (per process: a forked doctor worker
starts from the parent's, which has parsed no namespace by then)."""
