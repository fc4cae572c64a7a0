"""Build a `Snapshot` from a bundle's files, lazily: pure, given a way to read them.

Why lazy: a trace between two pods crosses two or three namespaces, while a 200-node bundle
holds ~70k files (issue 12). The cluster objects (cluster/*.json) are parsed eagerly — every
command needs them to find the endpoints — but each network namespace is built from the file
LISTING only (id, node, pod, dir, files) and parses a slot (links, routes, ...) the first time
it is read. ztunnel config_dumps are parsed per node on first access likewise.

`SPEC_TABLE` is the one table that binds each catalogue command (collectors/specs.py, by
id: analyzers never import collectors) to the file it writes, the parser that reads it and
the model slot it fills; the loader below is driven by it, and every slot records a
`SlotStatus` (parsed / empty / missing / not-collected / failed, with path, line and reason).

A file that is absent leaves its slot `None`; a file that fails to parse leaves it `None` and
records a `Problem` naming the file and line; the rest of the bundle is still used. Entries
the manifest marks as failed (the command did not run on the node) become problems too, with
the node's own stderr. For the same accesses, problems come out exactly as the former eager
builder produced them (the golden outputs pin that).

Why subclasses with `functools.cached_property` rather than a loader object handed around:
callers keep the model's attribute names (`ns.links`), the instances stay frozen from the
outside (the frozen dataclass `__setattr__` still refuses writes; `cached_property` fills the
instance `__dict__` directly), and `dataclasses.replace` on a lazy namespace yields an eager
copy through the inherited `__init__`. Pickling a lazy namespace pickles its parsed values
(a plain `NetNamespace`); pickling a lazy snapshot re-opens the bundle from `source` in the
receiving process (`BundleView.reopen`) — parsed state is never required to cross.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from functools import cached_property
from itertools import groupby
from operator import itemgetter, methodcaller
from typing import Any

from ambientctl.analyzers.parse import host as ph
from ambientctl.analyzers.parse import iproute as pr
from ambientctl.analyzers.parse import ipset as ps
from ambientctl.analyzers.parse import iptables as pt
from ambientctl.analyzers.parse._common import load_json
from ambientctl.analyzers.parse.reuse import CACHE
from ambientctl.analyzers.parse.ztunnel import parse_config_dump
from ambientctl.errors import ParseError
from ambientctl.layout import (
    CLUSTER_FILES,
    COMMAND_FILES,
    CONFIG_DUMP,
    MESH_FILES,
    NFT_RULESET,
    NFT_TEXT,
    config_dump_path,
    netns_of_dir,
    split_netns_dir,
)
from ambientctl.manifest_model import Manifest
from ambientctl.model import (
    NETNS_SLOTS,
    Cluster,
    IpSet,
    MeshObject,
    NetNamespace,
    NodeState,
    PodRef,
    Problem,
    Ruleset,
    SlotStatus,
    Snapshot,
    ZtunnelConfig,
)

_XT_SKIPPED = re.compile(r"table (ip6?) (\S+) is managed by iptables-nft")


# --------------------------------------------------------------------------- the spec table


def _nft_parse(text: str, path: str) -> Ruleset:
    from ambientctl.analyzers.parse import nft as pn

    if path.endswith(".jsonl"):  # per-table listings (nft-tables.jsonl)
        return pn.parse_nft(text, path)
    return pn.parse_nft_json(text, path) if path.endswith(".json") else pn.parse_nft_text(text, path)


def _nft_doc_parts(text: str, path: str) -> tuple[object, object, object]:
    """(ruleset, named sets, registrations) of an `nft -j` dump from ONE decode (the
    loader's fast path; a failure falls back to the three parsers and their wording). A
    `.jsonl` holds one listing per table (`nft-tables.jsonl`), merged into one document."""
    from ambientctl.analyzers.parse import nft as pn
    from ambientctl.analyzers.parse import nft_hooks

    doc: Any = (pn.merge_table_listings(text, path) if path.endswith(".jsonl")
                else json.loads(text))
    ruleset, named = pn.ruleset_and_sets_from_doc(doc, path)
    return ruleset, named, nft_hooks.registrations_from_doc(doc, path)


def _ipvs_parse(text: str, path: str) -> object:
    from ambientctl.analyzers.parse.ipvs import parse_ipvsadm

    return parse_ipvsadm(text, path)


def _config_dump_parse(text: str, path: str) -> ZtunnelConfig:
    # The node is the directory name: nodes/<node>/ztunnel/config_dump.json.
    return parse_config_dump(text, path, path.split("/")[1])


@dataclass(frozen=True)
class FileSpec:
    """One bundle file: the catalogue command that writes it, its parser and its slot.

    `group` ties alternatives of one fact together (the text and JSON forms of one
    `ip` command): within a group, the first file (table order) that parses wins and a
    broken one is still reported. `command` is the id in `collectors.specs` (None: a file
    only older bundles or other tools write); its file is the one `layout.COMMAND_FILES`
    names for the command (`_of`), so the name is written once for writer and reader.
    `parse(text, path)` raises `ParseError`.
    """

    command: str | None
    file: str
    slot: str
    group: str
    parse: Callable[[str, str], object]
    note: str = ""
    families: frozenset[int] = frozenset({4, 6})  # address families the file describes


def _route4(t: str, p: str) -> object:
    return pr.parse_ip_route(t, p, family=4)


def _route6(t: str, p: str) -> object:
    return pr.parse_ip_route(t, p, family=6)


def _rule4(t: str, p: str) -> object:
    return pr.parse_ip_rule(t, p, family=4)


def _rule6(t: str, p: str) -> object:
    return pr.parse_ip_rule(t, p, family=6)


def _save(t: str, p: str) -> object:
    return pt.parse_iptables_save(t, p, backend=None)


def _legacy_save(t: str, p: str) -> object:
    return pt.parse_iptables_save(t, p, backend="iptables-legacy")


def _udp_listen(t: str, p: str) -> object:
    return ph.parse_ss_listen(t, p, proto="udp")


_V4, _V6 = frozenset({4}), frozenset({6})


def _of(command: str, slot: str, group: str, parse: Callable[[str, str], object],
        **kw: Any) -> FileSpec:
    """The entry for a catalogue command: its file is the one `layout.COMMAND_FILES` names."""
    return FileSpec(command, COMMAND_FILES[command], slot, group, parse, **kw)


# Order matters: it is the preference within a group (text first for iproute2: evidence is
# then the line `ip` printed, with its line number; JSON first for nft: it has handles).
SPEC_TABLE: tuple[FileSpec, ...] = (
    _of("ip-addr-text", "links", "ip-addr", pr.parse_ip_addr),
    _of("ip-addr", "links", "ip-addr", pr.parse_ip_addr),
    _of("ip-route-text", "routes", "ip-route", _route4, families=_V4),
    _of("ip-route", "routes", "ip-route", _route4, families=_V4),
    _of("ip6-route-text", "routes", "ip6-route", _route6, families=_V6),
    _of("ip6-route", "routes", "ip6-route", _route6, families=_V6),
    _of("ip-rule-text", "rules", "ip-rule", _rule4, families=_V4),
    _of("ip-rule", "rules", "ip-rule", _rule4, families=_V4),
    _of("ip6-rule-text", "rules", "ip6-rule", _rule6, families=_V6),
    _of("ip6-rule", "rules", "ip6-rule", _rule6, families=_V6),
    _of("iptables-save", "rulesets", "iptables-save", _save, families=_V4),
    _of("ip6tables-save", "rulesets", "ip6tables-save", _save, families=_V6),
    _of("iptables-legacy-save", "rulesets", "iptables-legacy-save", _legacy_save, families=_V4),
    _of("ip6tables-legacy-save", "rulesets", "ip6tables-legacy-save", _legacy_save, families=_V6),
    _of("nft-tables", "rulesets", "nft", _nft_parse,
        note="per-table `nft -j` listings, merged into one `nft -j list ruleset` document; "
        "also fills `ipsets` (named sets) and `registrations` (base-chain hooks), from it"),
    FileSpec(None, NFT_RULESET, "rulesets", "nft", _nft_parse,
             note="`nft -j list ruleset`: bundles collected before nft-tables.jsonl; also "
             "fills `ipsets` and `registrations`, from the same decoded document"),
    FileSpec(None, NFT_TEXT, "rulesets", "nft", _nft_parse,
             note="`nft list ruleset` text: older bundles and nft builds without JSON"),
    _of("ipset", "ipsets", "ipset", ps.parse_ipset),
    _of("ss-listen", "listeners", "ss-listen", ph.parse_ss_listen),
    _of("ss-listen-udp", "listeners", "ss-listen-udp", _udp_listen,
        note="read only beside ss-listen.txt: without the TCP listing the namespace's "
        "listeners are unknown, and UDP alone would make them look known"),
    _of("sysctl", "sysctls", "sysctl", ph.parse_sysctl),
    _of("ipvsadm", "ipvs", "ipvsadm", _ipvs_parse),
    _of("ip-neigh-text", "neighbors", "ip-neigh", pr.parse_ip_neigh),
    _of("ip-neigh", "neighbors", "ip-neigh", pr.parse_ip_neigh),
    _of("ztunnel-config-dump", "ztunnel_configs", "config-dump",
        _config_dump_parse, note="per node: nodes/<node>/ztunnel/config_dump.json"),
)

# Slots filled from another slot's file rather than a file of their own.
DERIVED_SLOTS = {"registrations": COMMAND_FILES["nft-tables"]}
# Files that are an error in a namespace's netfilter view (a broken one leaves it unknown).
_NETFILTER_FILES = tuple(s.file for s in SPEC_TABLE if s.slot == "rulesets")


def _group(name: str) -> tuple[FileSpec, ...]:
    return tuple(s for s in SPEC_TABLE if s.group == name)


def netfilter_files(family: int) -> tuple[str, ...]:
    """The files whose damage leaves a namespace's `family` netfilter rules unknown."""
    return tuple(s.file for s in SPEC_TABLE if s.slot == "rulesets" and family in s.families)


def cite(ns: NetNamespace, slot: str) -> str:
    """The bundle path to cite for a slot: the file its data came from (`SlotStatus.path`),
    else the first file that would hold it (a namespace built by hand knows no file)."""
    return ns.status(slot).path or f"{ns.dir}/{slot_files(slot)[0]}"


def group_files(*groups: str) -> tuple[str, ...]:
    """The bundle files of the named groups, groups in the order given and files in table
    order within each: what a reader that wants one kind of data looks for, and where."""
    return tuple(s.file for g in groups for s in _group(g))


def slot_files(slot: str) -> tuple[str, ...]:
    """The bundle files (table order) that fill `slot`: what the trace cites and doctor
    checks for presence."""
    own = tuple(s.file for s in SPEC_TABLE if s.slot == slot)
    return own + ((DERIVED_SLOTS[slot],) if slot in DERIVED_SLOTS else ())


# --------------------------------------------------------------------------- bundle view


@dataclass(frozen=True)
class BundleView:
    """What the snapshot builder needs from a bundle: its file list and a reader.

    `reopen(location)` re-opens the bundle in another process (a pickled lazy snapshot);
    `close()` releases the reader once the snapshot is no longer needed.
    """

    location: str
    paths: tuple[str, ...]
    read_text: Callable[[str], str]
    manifest: Manifest | None = None
    manifest_problems: tuple[str, ...] = ()  # damage the reader found (and neutralised)
    reopen: Callable[[str], Snapshot] | None = None
    close: Callable[[], None] | None = None


def _parse(problems: list[Problem], path: str, fn: Callable[..., object]) -> object | None:
    # `fn` is called with no arguments; `...` because the callers' lambdas bind their loop
    # variables as defaults (ruff B023), and mypy cannot infer those against `Callable[[], _]`.
    try:
        return fn()
    except ParseError as exc:
        problems.append(Problem(exc.path, exc.line, exc.reason))
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError,
            OverflowError) as exc:  # defensive: a parser bug must not take the bundle down
        problems.append(Problem(path, None, f"could not be parsed ({type(exc).__name__}: {exc})"))
    return None


def _failed_entries(manifest: Manifest | None) -> dict[str, str]:
    """Planned commands that did not produce a file: destination path -> why, in the one
    wording of `ManifestEntry.reason` (an optional tool the node lacks is absent data,
    not listed)."""
    if manifest is None:
        return {}
    return {dest: entry.reason() for dest, entry in manifest.not_collected().items()}


# --------------------------------------------------------------------------- one namespace

# Problems of a namespace, in the order the former eager builder appended them (the golden
# outputs pin that order): a slot may write two buckets (nft sets before the registrations,
# ipset.txt after them).
_BUCKETS = ("not-collected", "links", "routes", "rules", "rulesets", "ipsets-nft",
            "registrations", "ipsets", "listeners", "sysctls", "ipvs", "neighbors")


class _NetnsLoader:
    """Parses the slots of one namespace directory on demand, recording problems and status."""

    def __init__(self, view: BundleView, d: str, files: frozenset[str],
                 not_collected: tuple[tuple[str, str], ...]) -> None:
        self.view = view
        self.dir = d
        self.files = files
        self.not_collected = not_collected  # (path, why), sorted by path
        self.reset()

    def reset(self) -> None:
        """Forget everything parsed (the namespace re-parses on next access)."""
        self.buckets: dict[str, list[Problem]] = {
            "not-collected": [Problem(rel, None, f"not collected: {why}")
                              for rel, why in self.not_collected]}
        self.status: dict[str, SlotStatus] = {}
        self.used: dict[str, str] = {}  # slot -> the file its data came from
        self._nft: tuple[object, object, object] | None = None

    # ---- helpers
    def rel(self, name: str) -> str:
        return f"{self.dir}/{name}"

    def text(self, name: str) -> str:
        return self.view.read_text(self.rel(name))

    def _bucket(self, name: str) -> list[Problem]:
        return self.buckets.setdefault(name, [])

    def _first_parsed(self, group: str, bucket: str) -> object | None:
        # Alternatives of one command (text, JSON): the first that parses wins; a broken
        # one is still reported.
        problems = self._bucket(bucket)
        for spec in _group(group):
            if spec.file in self.files:
                got = _parse(problems, self.rel(spec.file),
                             lambda s=spec: CACHE.parse(
                                 s.parse, self.text(s.file), self.rel(s.file)))
                if got is not None:
                    self.used.setdefault(spec.slot, self.rel(spec.file))
                    return got
        return None

    def _settle(self, slot: str, value: object, buckets: tuple[str, ...]) -> object:
        """Record the slot's status (see `SlotStatus`), then hand the value back."""
        if value is not None:
            state = "parsed" if value else "empty"
            self.status[slot] = SlotStatus(state, self.used.get(slot))
            return value
        errors = [p for b in buckets for p in self.buckets.get(b, ()) if p.severity == "error"]
        if errors:
            first = errors[0]
            self.status[slot] = SlotStatus("failed", first.path, first.line, first.message)
            return value
        names = set(slot_files(slot))
        for rel, why in self.not_collected:
            if rel.rsplit("/", 1)[-1] in names:
                self.status[slot] = SlotStatus("not-collected", rel, None, why)
                return value
        self.status[slot] = SlotStatus("missing", None, None,
                                       "none of " + ", ".join(slot_files(slot)) + " in "
                                       + self.dir)
        return value

    # ---- slots
    def links(self) -> object:
        return self._settle("links", self._first_parsed("ip-addr", "links"), ("links",))

    def routes(self) -> object:
        got4 = self._first_parsed("ip-route", "routes")
        got6 = self._first_parsed("ip6-route", "routes")
        # iproute2 >= 6 prints IPv6 routes in `ip route show table all` too: keep one of each.
        routes: list = []
        seen: set[tuple] = set()
        for route in [*(got4 or ()), *(got6 or ())]:  # type: ignore[misc]
            key = (route.family, route.table, route.type, route.dst, route.gateway, route.dev,
                   route.metric)
            if key not in seen:
                seen.add(key)
                routes.append(route)
        return self._settle("routes", tuple(routes) if got4 is not None else None, ("routes",))

    def rules(self) -> object:
        got4 = self._first_parsed("ip-rule", "rules")
        got6 = self._first_parsed("ip6-rule", "rules")
        rules = [*(got4 or ()), *(got6 or ())]  # type: ignore[misc]
        return self._settle("rules", tuple(rules) if got4 is not None else None, ("rules",))

    def _nft_name(self) -> str | None:
        return next((s.file for s in _group("nft") if s.file in self.files), None)

    def _nft_parts(self) -> tuple[object, object, object]:
        """(ruleset, named sets, registrations) of the nft dump, from ONE read and decode.

        The fast path decodes the JSON once and derives all three; any failure falls back
        to the three separate parsers so that a broken file is reported exactly as before.
        """
        if self._nft is not None:
            return self._nft
        from ambientctl.analyzers.parse import nft as pn
        from ambientctl.analyzers.parse import nft_hooks

        name = self._nft_name()
        assert name is not None
        path = self.rel(name)
        text = self.text(name)
        parts: tuple[object, object, object] | None = None
        if name.endswith(".jsonl") or (name.endswith(".json") and text.lstrip()[:1] == "{"):
            try:
                parts = CACHE.parse(_nft_doc_parts, text, path)
            except (ParseError, ValueError, KeyError, TypeError, IndexError, AttributeError,
                    RecursionError, OverflowError):
                parts = None
        if parts is None:  # the same text, through the three parsers and their own wording
            got = _parse(self._bucket("rulesets"), path, lambda: _nft_parse(text, path))
            sets = _parse(self._bucket("ipsets-nft"), path, lambda: pn.nft_sets(text, path))
            regs: object = None
            if name.endswith((".json", ".jsonl")):
                regs = _parse(self._bucket("registrations"), path,
                              lambda: nft_hooks.parse_registrations(text, path))
            parts = (got, sets, regs)
        self._nft = parts
        return parts

    def rulesets(self) -> object:
        problems = self._bucket("rulesets")
        rulesets: list[Ruleset] = []
        nf_seen = False
        xt_unread: list[str] = []
        for spec in SPEC_TABLE:
            if spec.slot != "rulesets" or spec.group == "nft" or spec.file not in self.files:
                continue
            nf_seen = True
            got = _parse(problems, self.rel(spec.file),
                         lambda s=spec: CACHE.parse(
                             s.parse, self.text(s.file), self.rel(s.file)))
            if isinstance(got, Ruleset):
                rulesets.append(got)
                self.used.setdefault("rulesets", self.rel(spec.file))
        nft_name = self._nft_name()
        if nft_name is not None:
            nf_seen = True
            got = self._nft_parts()[0]
            if isinstance(got, Ruleset):
                rulesets.append(got)
                self.used.setdefault("rulesets", self.rel(nft_name))
                # Tables written by iptables-nft are read through iptables-save (their
                # matches are opaque `xt` expressions in nft's listing). Without that dump
                # they would vanish and the namespace look unfiltered: its netfilter is then
                # unknown, said once here, so that trace stops with insufficient-info and
                # doctor skips, alike.
                for w in got.warnings:
                    m = _XT_SKIPPED.match(w)
                    if m is None:
                        continue
                    save = "ip6tables-save.txt" if m.group(1) == "ip6" else "iptables-save.txt"
                    if save not in self.files:
                        xt_unread.append(f"table {m.group(1)} {m.group(2)}")
                if xt_unread:
                    problems.append(Problem(
                        self.rel(nft_name), None,
                        f"{', '.join(xt_unread)} written by iptables-nft, and no iptables-save "
                        "in the bundle to read them with: this namespace's netfilter rules are "
                        "not modelled"))
        failed_nf = any(p.path.endswith(_NETFILTER_FILES) and p.severity == "error"
                        for b in ("not-collected", "rulesets") for p in self.buckets.get(b, ()))
        value = None if (not nf_seen or (failed_nf and not rulesets) or xt_unread) \
            else tuple(rulesets)
        return self._settle("rulesets", value, ("rulesets",))

    def registrations(self) -> object:
        regs = None
        name = self._nft_name()
        if name is not None and name.endswith((".json", ".jsonl")):
            got = self._nft_parts()[2]
            regs = got if isinstance(got, dict) else None
            if regs is not None:
                self.used.setdefault("registrations", self.rel(name))
        return self._settle("registrations", regs, ("registrations",))

    def ipsets(self) -> object:
        ipsets: dict[str, IpSet] | None = None
        nft_name = self._nft_name()
        if nft_name is not None:
            sets = self._nft_parts()[1]
            if isinstance(sets, dict) and sets:
                ipsets = dict(sets)
                self.used.setdefault("ipsets", self.rel(nft_name))
        if "ipset.txt" in self.files:
            problems = self._bucket("ipsets")
            got = _parse(problems, self.rel("ipset.txt"),
                         lambda: CACHE.parse(ps.parse_ipset, self.text("ipset.txt"),
                                             self.rel("ipset.txt")))
            if isinstance(got, dict):
                ipsets = {**(ipsets or {}), **got}
                self.used.setdefault("ipsets", self.rel("ipset.txt"))
                for s in got.values():
                    if s.declared_entries is not None and s.declared_entries != len(s.members):
                        problems.append(Problem(
                            s.source.path, s.source.line,
                            f"ipset {s.name} declares {s.declared_entries} entries but lists "
                            f"{len(s.members)}: the output looks truncated", "warning"))
        return self._settle("ipsets", ipsets, ("ipsets-nft", "ipsets"))

    def listeners(self) -> object:
        problems = self._bucket("listeners")
        listeners = None
        (tcp,) = _group("ss-listen")
        (udp_spec,) = _group("ss-listen-udp")
        if tcp.file in self.files:
            listeners = _parse(problems, self.rel(tcp.file),
                               lambda: CACHE.parse(tcp.parse, self.text(tcp.file),
                                                   self.rel(tcp.file)))
            if listeners is not None:
                self.used["listeners"] = self.rel(tcp.file)
        if listeners is not None and udp_spec.file in self.files:
            udp = _parse(problems, self.rel(udp_spec.file),
                         lambda: CACHE.parse(udp_spec.parse, self.text(udp_spec.file),
                                             self.rel(udp_spec.file)))
            listeners = (*listeners, *udp) if udp is not None else listeners  # type: ignore[misc]
        return self._settle("listeners", listeners, ("listeners",))

    def _single(self, slot: str, group: str) -> object:
        return self._settle(slot, self._first_parsed(group, slot), (slot,))

    def sysctls(self) -> object:
        return self._single("sysctls", "sysctl")

    def ipvs(self) -> object:
        return self._single("ipvs", "ipvsadm")

    def neighbors(self) -> object:
        return self._single("neighbors", "ip-neigh")

    def problems(self, ns: NetNamespace) -> tuple[Problem, ...]:
        for slot in NETNS_SLOTS:
            getattr(ns, slot)  # force every slot (each fills its buckets once)
        return tuple(p for b in _BUCKETS for p in self.buckets.get(b, ()))


class LazyNetNamespace(NetNamespace):
    """A `NetNamespace` whose slots parse their files on first access (see module doc).

    Built with `LazyNetNamespace.lazy(...)` from the listing alone. Equality compares the
    parsed values (forcing them), like the eager class; `repr` does not parse.
    """

    _loader: _NetnsLoader

    @classmethod
    def lazy(cls, *, id: str, node: str, pod: PodRef | None, dir: str,  # noqa: A002
             files: frozenset[str], loader: _NetnsLoader) -> LazyNetNamespace:
        ns = cls.__new__(cls)
        ns.__dict__.update(id=id, node=node, pod=pod, dir=dir, files=files, _loader=loader)
        return ns

    # One cached property per slot: the first read parses, later reads are a dict lookup.
    @cached_property
    def links(self):
        return self._loader.links()

    @cached_property
    def routes(self):
        return self._loader.routes()

    @cached_property
    def rules(self):
        return self._loader.rules()

    @cached_property
    def rulesets(self):
        return self._loader.rulesets()

    @cached_property
    def ipsets(self):
        return self._loader.ipsets()

    @cached_property
    def listeners(self):
        return self._loader.listeners()

    @cached_property
    def sysctls(self):
        return self._loader.sysctls()

    @cached_property
    def ipvs(self):
        return self._loader.ipvs()

    @cached_property
    def registrations(self):
        return self._loader.registrations()

    @cached_property
    def neighbors(self):
        return self._loader.neighbors()

    @cached_property
    def problems(self):
        """This namespace's problems: forces its own slots only."""
        return self._loader.problems(self)

    def status(self, slot: str) -> SlotStatus:
        """Parse status of `slot` (parses it if it was not yet)."""
        loader = self.__dict__.get("_loader")
        if loader is None:  # an eager copy made by dataclasses.replace
            return super().status(slot)
        if slot not in NETNS_SLOTS:
            raise KeyError(f"unknown slot {slot!r}: one of {', '.join(NETNS_SLOTS)}")
        getattr(self, slot)
        return loader.status[slot]

    def parsed(self) -> bool:
        """True when any slot of this namespace holds parsed data."""
        return any(s in self.__dict__ for s in (*NETNS_SLOTS, "problems"))

    def evict(self) -> None:
        """Drop every parsed slot; the next access re-parses from the bundle."""
        for s in (*NETNS_SLOTS, "problems"):
            self.__dict__.pop(s, None)
        loader = self.__dict__.get("_loader")
        if loader is not None:
            loader.reset()

    def __repr__(self) -> str:
        return f"LazyNetNamespace(id={self.id!r}, dir={self.dir!r})"

    # Equal namespaces share id and dir, so this hash agrees with the inherited field-wise
    # equality without parsing anything (the generated one would parse every slot, then
    # fail on the `ipsets` dict).
    def __hash__(self) -> int:
        return hash((self.id, self.dir))

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        # Parsed values cross a process boundary as a plain NetNamespace (no reader).
        return (NetNamespace, tuple(getattr(self, f.name) for f in fields(NetNamespace)))


# --------------------------------------------------------------------------- ztunnel dumps


class _ZtunnelDumps:
    """Per-node ztunnel config_dumps, read and parsed the first time a node is asked for."""

    def __init__(self, view: BundleView, nodes: Iterable[str]) -> None:
        self.view = view
        self.nodes = tuple(nodes)  # in listing order: the order problems are reported in
        self.parsed: dict[str, tuple[object | None, ZtunnelConfig | None,
                                     tuple[Problem, ...]]] = {}
        self.listed: dict[str, tuple[Problem, ...]] = {}  # problems of dumps not kept

    def get(self, node: str) -> tuple[object | None, ZtunnelConfig | None, tuple[Problem, ...]]:
        got = self.parsed.get(node)
        if got is None:
            rel = config_dump_path(node)
            text = self.view.read_text(rel)
            try:
                raw: object | None = load_json(text, rel, "ztunnel config_dump")
            except ParseError:
                raw = None  # parse_config_dump says why, once
            # Every generation's layout, read into one shape; an unreadable dump is a
            # problem of the bundle (stated by trace and doctor), never an empty mesh.
            problems: list[Problem] = []
            zc = _parse(problems, rel, lambda: parse_config_dump(text, rel, node))
            got = (raw, zc if isinstance(zc, ZtunnelConfig) else None, tuple(problems))
            self.parsed[node] = got
        return got

    def problems_of(self, node: str) -> tuple[Problem, ...]:
        """The parse problems of `node`'s dump. A dump parsed only to list its problems is
        not kept (on a large cluster every ztunnel's dump names every workload: keeping
        all of them is quadratic); the problems are."""
        got = self.parsed.get(node)
        if got is not None:
            return got[2]
        known = self.listed.get(node)
        if known is None:
            known = self.listed[node] = self.get(node)[2]
            del self.parsed[node]
        return known

    def evict(self, node: str) -> None:
        self.parsed.pop(node, None)


class _DumpMapping(Mapping[str, Any]):
    """A read-only node -> value mapping over `_ZtunnelDumps`; only readable dumps appear.

    `m[node]`, `m.get(node)` and `node in m` parse that node's dump alone; iterating parses
    them all (a node is in the mapping only if its dump could be read).
    """

    def __init__(self, dumps: _ZtunnelDumps, index: int) -> None:
        self._dumps = dumps
        self._index = index  # 0: raw JSON, 1: ZtunnelConfig

    def __getitem__(self, node: str) -> Any:
        if node not in self._dumps.nodes:
            raise KeyError(node)
        value = self._dumps.get(node)[self._index]
        if value is None:
            raise KeyError(node)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter([n for n in self._dumps.nodes if self._dumps.get(n)[self._index] is not None])

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"<lazy ztunnel dumps of {len(self._dumps.nodes)} nodes>"


# --------------------------------------------------------------------------- the snapshot


class LazySnapshot(Snapshot):
    """A `Snapshot` whose namespaces and ztunnel dumps parse on first access.

    `problems` (bundle-wide) includes every ztunnel dump's parse problem, so reading it
    parses every dump; `base_problems` and `dump_problems(node)` are the cheap parts.
    """

    _view: BundleView
    _dumps: _ZtunnelDumps
    base_problems: tuple[Problem, ...]

    def __getattr__(self, name: str) -> Any:
        # A copy made by `dataclasses.replace` went through `Snapshot.__init__`, which sets
        # the dataclass fields only: its lazy dump store and bundle view are found through
        # the dump mapping the copy kept (so evict/close work on it as on the original).
        m = self.__dict__.get("ztunnel_configs")
        if isinstance(m, _DumpMapping):
            if name == "_dumps":
                return m._dumps
            if name == "_view":
                return m._dumps.view
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @cached_property
    def problems(self):
        return self.base_problems + self._late_manifest_problems() + tuple(
            p for n in self._dumps.nodes for p in self._dumps.problems_of(n))

    def _late_manifest_problems(self) -> tuple[Problem, ...]:
        """Damage of manifest entries typed after the build: a large manifest is indexed
        and its entries typed on demand (`manifest_index`); the whole picture types all."""
        m = self.manifest
        if m is None:
            return ()
        known = {p.message for p in self.base_problems if p.path == "manifest.json"}
        return tuple(Problem("manifest.json", None, msg) for msg in m.problems
                     if msg not in known)

    def read_problems(self) -> tuple[Problem, ...]:
        """`base_problems` plus those of the ztunnel dumps parsed so far: what a command that
        reads a few nodes (trace) states, without parsing every node's dump to say more."""
        base = self.__dict__.get("base_problems")
        if base is None:  # a dataclasses.replace copy: `problems` was computed to make it
            return tuple(self.problems)
        return base + tuple(p for n in self.parsed_dumps() for p in self._dumps.get(n)[2])

    def dump_problems(self, node: str) -> tuple[Problem, ...]:
        """Parse problems of one node's ztunnel config_dump (parses that dump alone)."""
        return self._dumps.get(node)[2] if node in self._dumps.nodes else ()

    def parsed_namespaces(self) -> tuple[str, ...]:
        """Ids of the namespaces with any parsed slot: "trace touched only the path" as a
        testable fact."""
        return tuple(ns.id for ns in self.namespaces()
                     if isinstance(ns, LazyNetNamespace) and ns.parsed())

    def dump_nodes(self) -> tuple[str, ...]:
        """Nodes whose bundle holds a ztunnel config_dump (the listing: nothing parsed;
        also on a copy made by dataclasses.replace, which keeps the dump mapping)."""
        m = self.ztunnel_configs
        return m._dumps.nodes if isinstance(m, _DumpMapping) else tuple(m)

    def parsed_dumps(self) -> tuple[str, ...]:
        """Nodes whose ztunnel config_dump was parsed."""
        return tuple(n for n in self._dumps.nodes if n in self._dumps.parsed)

    def evict(self, node: str) -> None:
        """Drop everything parsed for `node` (its namespaces and its ztunnel dump), so that a
        doctor streaming node by node holds one node at a time; the next access re-parses.
        Bundle-wide `problems`, once computed, stay (they are small)."""
        state = self.nodes.get(node)
        if state is not None:
            for ns in state.namespaces():
                if isinstance(ns, LazyNetNamespace):
                    ns.evict()
        self._dumps.evict(node)

    def close(self) -> None:
        """Release the bundle reader (later parses of unparsed slots then fail)."""
        if self._view.close is not None:
            self._view.close()

    def __repr__(self) -> str:
        return f"LazySnapshot(source={self.source!r}, nodes={len(self.nodes)})"

    def __hash__(self) -> int:  # equal snapshots share their source; nothing is parsed
        return hash(self.source)

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        if self._view.reopen is None:
            raise TypeError(f"{self.source}: this snapshot cannot be re-opened elsewhere")
        return (self._view.reopen, (self.source,))


def _parse_cluster(view: BundleView, paths: set[str], problems: list[Problem]) -> Cluster:
    from ambientctl.analyzers.parse import cluster as pc

    def cluster_file(kind: str, fn: Callable[[str, str], tuple]) -> tuple:
        rel = CLUSTER_FILES[kind]
        if rel not in paths:
            if kind != "endpointslices":
                problems.append(Problem(rel, None, "missing from the bundle", "warning"))
            return ()
        got = _parse(problems, rel, lambda: fn(view.read_text(rel), rel))
        return got if isinstance(got, tuple) else ()

    mesh: list[MeshObject] = []
    mesh_kinds = set()
    for kind, rel in MESH_FILES.items():
        if rel in paths:
            got = _parse(problems, rel, lambda k=kind, r=rel: pc.parse_mesh_objects(
                view.read_text(r), r, k))
            if isinstance(got, tuple):
                mesh += got
                mesh_kinds.add(kind)
    return Cluster(
        pods=cluster_file("pods", pc.parse_pods),
        services=cluster_file("services", pc.parse_services),
        namespaces=cluster_file("namespaces", pc.parse_namespaces),
        nodes=cluster_file("nodes", pc.parse_nodes),
        endpoint_slices=cluster_file("endpointslices", pc.parse_endpointslices),
        mesh_objects=tuple(mesh),
        mesh_kinds=frozenset(mesh_kinds),
    )


def build_snapshot(view: BundleView) -> LazySnapshot:
    """The bundle as a `Snapshot`: cluster objects parsed now, everything else on access."""
    problems: list[Problem] = []
    if view.manifest is None:
        problems.append(Problem("manifest.json", None,
                                "no manifest.json: a hand-assembled bundle; files read by name, "
                                "hashes not checked", "warning"))
    problems.extend(Problem("manifest.json", None, msg) for msg in view.manifest_problems)
    failed = _failed_entries(view.manifest)
    paths = set(view.paths)
    cluster = _parse_cluster(view, paths, problems)

    # The listing grouped by directory with C loops (issue 12: at 80k files, splitting
    # every path twice in Python was a tenth of a trace); each directory is named once.
    # A directory's files are one run of the listing, or several when it has
    # subdirectories: runs are merged.
    groups: dict[tuple[str, str | None, str | None], set[str]] = {}
    dump_nodes = []
    for d, run in groupby(map(methodcaller("rpartition", "/"), view.paths), key=itemgetter(0)):
        names = set(map(itemgetter(2), run))
        key = netns_of_dir(d)
        if key is not None:
            groups.setdefault(key, set()).update(names)
        elif CONFIG_DUMP in names:
            parts = d.split("/")
            if len(parts) == 3 and parts[0] == "nodes" and parts[2] == "ztunnel":
                dump_nodes.append(parts[1])
    missing: dict[tuple[str, str | None, str | None], list[tuple[str, str]]] = {}
    for rel, why in sorted(failed.items()):
        split = split_netns_dir(rel)
        if split is None:
            continue
        groups.setdefault(split[:3], set())
        if rel not in paths:  # a failed entry whose file is there anyway is not "missing"
            missing.setdefault(split[:3], []).append((rel, why))

    nodes: dict[str, dict[str, Any]] = {}
    for key, files in sorted(groups.items(), key=lambda kv: str(kv[0])):
        node, ns_name, pod = key
        d = f"nodes/{node}/host" if pod is None else f"nodes/{node}/pods/{ns_name}/{pod}"
        frozen = frozenset(files)
        ns = LazyNetNamespace.lazy(
            id=f"{node}/host" if pod is None else f"{node}/pod/{ns_name}/{pod}",
            node=node, pod=None if pod is None else PodRef(ns_name or "", pod), dir=d,
            files=frozen, loader=_NetnsLoader(view, d, frozen, tuple(missing.get(key, ()))))
        slot = nodes.setdefault(node, {"host": None, "pods": {}})
        if pod is None:
            slot["host"] = ns
        else:
            slot["pods"][PodRef(ns_name or "", pod)] = ns

    dumps = _ZtunnelDumps(view, dump_nodes)

    snap = LazySnapshot.__new__(LazySnapshot)
    snap.__dict__.update(
        source=view.location,
        cluster=cluster,
        nodes={name: NodeState(name, s["host"], s["pods"]) for name, s in sorted(nodes.items())},
        manifest=view.manifest,
        config_dumps=_DumpMapping(dumps, 0),
        ztunnel_configs=_DumpMapping(dumps, 1),
        base_problems=tuple(problems),
        _view=view,
        _dumps=dumps,
    )
    return snap
