"""What changed between two bundles, semantically: per node and network namespace, the
rules, ip rules, routes, ipset members, links and addresses, listeners and sysctls; in the
cluster, pods, Services and namespaces; in ztunnel's view, its workloads.

Rules are compared by chain and verbatim text, never by line number (a rule inserted at
the top of a chain moves every line below it, and that is not a change of theirs); a rule
present in both whose order among the others changed is `moved`. Every entry says whether
it touches ambient's datapath (`ambient`), and `diff_bundles` puts those first, so the
one entry that explains a broken path is at the top rather than under kube-proxy's churn.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from ambientctl.istio import REDIRECTION
from ambientctl.model import NetNamespace, Snapshot, SourceRef

# What makes a change matter to ambient: its marks, ports, chains, sets, devices, tables
# and rule priorities (both designs; see docs/istio-datapath.md).
_AMBIENT_TEXT = re.compile(
    r"ztunnel|istio|ISTIO|pistio|0x100\b|0x200\b|0x210\b|0x220\b|0x400\b|0x401\b|0x402\b|"
    r"0x539\b|0x111\b|0x4d3\b|1500[0168]\b|15053\b|15021\b|TPROXY|192\.168\.12[67]\.|"
    r"169\.254\.7\.127|fd16:9254:7127")
_AMBIENT_RULE_PRIORITIES = {100, 101, 102, 103, 20000, 20001, 20002, 20003, 32764}
_AMBIENT_TABLES = {"100", "101", "102"}
_AMBIENT_SYSCTLS = re.compile(r"rp_filter|ip_forward|forwarding|route_localnet|accept_local|"
                              r"istio|pistio|src_valid_mark|ip_nonlocal_bind")


@dataclass(frozen=True)
class DiffEntry:
    """One semantic difference. `scope` is a netns id ("w1/host", "w1/pod/ns/name"),
    "cluster" or "ztunnel/<node>"; `old`/`new` cite where the fact was in each bundle."""

    scope: str
    kind: str  # netns | rule | chain | policy | ip-rule | route | ipset | ipset-member |
    # link | address | listener | sysctl | pod | service | namespace | ztunnel-workload
    change: str  # added | removed | moved | changed
    what: str
    detail: str = ""
    ambient: bool = False
    old: SourceRef | None = None
    new: SourceRef | None = None

    def __str__(self) -> str:
        sign = {"added": "+", "removed": "-", "moved": "~", "changed": "~"}[self.change]
        return f"{sign} {self.kind} {self.what}" + (f"  ({self.detail})" if self.detail else "")


def _amb(text: str) -> bool:
    return bool(_AMBIENT_TEXT.search(text))


def _keyed_diff(scope: str, kind: str, old: Mapping[str, tuple[str, SourceRef | None]],
                new: Mapping[str, tuple[str, SourceRef | None]],
                ambient: bool | None = None) -> Iterator[DiffEntry]:
    """Entries for keys only in one side, and keys whose value changed."""
    for key in sorted(old.keys() - new.keys()):
        yield DiffEntry(scope, kind, "removed", key, old[key][0] if old[key][0] != key else "",
                        _amb(key + old[key][0]) if ambient is None else ambient, old=old[key][1])
    for key in sorted(new.keys() - old.keys()):
        yield DiffEntry(scope, kind, "added", key, new[key][0] if new[key][0] != key else "",
                        _amb(key + new[key][0]) if ambient is None else ambient, new=new[key][1])
    for key in sorted(old.keys() & new.keys()):
        if old[key][0] != new[key][0]:
            yield DiffEntry(scope, kind, "changed", key, f"{old[key][0]} -> {new[key][0]}",
                            _amb(key + old[key][0] + new[key][0]) if ambient is None else ambient,
                            old[key][1], new[key][1])


def _chains(ns: NetNamespace) -> dict[str, tuple[str | None, list[tuple[str, SourceRef]]]]:
    """`backend family table chain` -> (policy, [(rule text, where)]), without tokenising."""
    out: dict[str, tuple[str | None, list[tuple[str, SourceRef]]]] = {}
    for table in ns.tables():
        for chain in table.chains.values():
            key = f"{table.backend} {table.family} {table.name} {chain.name}"
            if chain.prebuilt is not None:  # nft: rules come parsed, with their own source
                rules = [(" ".join((r.source.text or r.text).split()), r.source)
                         for r in chain.prebuilt]
            else:
                rules = [(" ".join(text.split()), SourceRef(chain.source.path, line, text))
                         for line, text in chain.raw_rules]
            out[key] = (chain.policy, rules)
    return out


def _rule_entries(scope: str, old: NetNamespace, new: NetNamespace) -> Iterator[DiffEntry]:
    if old.rulesets is None or new.rulesets is None:
        return
    a, b = _chains(old), _chains(new)
    for key in sorted(a.keys() - b.keys()):
        yield DiffEntry(scope, "chain", "removed", key, f"{len(a[key][1])} rule(s)",
                        _amb(key), old=a[key][1][0][1] if a[key][1] else None)
    for key in sorted(b.keys() - a.keys()):
        yield DiffEntry(scope, "chain", "added", key, f"{len(b[key][1])} rule(s)",
                        _amb(key), new=b[key][1][0][1] if b[key][1] else None)
    for key in sorted(a.keys() & b.keys()):
        (pol_a, rules_a), (pol_b, rules_b) = a[key], b[key]
        if pol_a != pol_b:
            yield DiffEntry(scope, "policy", "changed", key, f"{pol_a} -> {pol_b}", _amb(key))
        texts_a, texts_b = [t for t, _ in rules_a], [t for t, _ in rules_b]
        if texts_a == texts_b:
            continue
        # in a chain that holds ambient rules, any change can reorder traffic around them
        # (kube-proxy's jump moved ahead of ztunnel's is a move of a kube-proxy rule)
        near = any(_amb(t) for t in (*texts_a, *texts_b))
        gone = Counter(texts_a) - Counter(texts_b)
        came = Counter(texts_b) - Counter(texts_a)
        for t, src in rules_a:
            if gone[t] > 0:
                gone[t] -= 1
                yield DiffEntry(scope, "rule", "removed", t, key, near or _amb(t + key), old=src)
        for t, src in rules_b:
            if came[t] > 0:
                came[t] -= 1
                yield DiffEntry(scope, "rule", "added", t, key, near or _amb(t + key), new=src)
        # present in both, but its order among the common rules changed
        common_a = [t for t in texts_a if t in set(texts_b)]
        common_b = [t for t in texts_b if t in set(texts_a)]
        sm = difflib.SequenceMatcher(a=common_a, b=common_b, autojunk=False)
        stayed: set[int] = set()
        for block in sm.get_matching_blocks():
            stayed.update(range(block.a, block.a + block.size))
        for i, t in enumerate(common_a):
            if i not in stayed:
                pos_a = texts_a.index(t) + 1
                pos_b = texts_b.index(t) + 1
                yield DiffEntry(scope, "rule", "moved", t, f"{key}: #{pos_a} -> #{pos_b}",
                                near or _amb(t + key), rules_a[pos_a - 1][1],
                                rules_b[pos_b - 1][1])


def _ip_rules(ns: NetNamespace) -> dict[str, tuple[str, SourceRef | None]]:
    out: dict[str, tuple[str, SourceRef | None]] = {}
    for r in ns.rules or ():
        text = " ".join((r.source.text or f"{r.priority}: {r.action}").split())
        out[f"v{r.family} {text}"] = (text, r.source)
    return out


def _routes(ns: NetNamespace) -> dict[str, tuple[str, SourceRef | None]]:
    out: dict[str, tuple[str, SourceRef | None]] = {}
    for r in ns.routes or ():
        text = " ".join((r.source.text or f"{r.type} {r.dst}").split())
        key = f"table {r.table}: {text}"
        out[key] = (key, r.source)
    return out


def _netns_entries(scope: str, old: NetNamespace, new: NetNamespace) -> Iterator[DiffEntry]:
    yield from _rule_entries(scope, old, new)
    if old.rules is not None and new.rules is not None:
        for e in _keyed_diff(scope, "ip-rule", _ip_rules(old), _ip_rules(new)):
            prio = re.match(r"v\d (\d+):", e.what)
            amb = e.ambient or bool(prio and int(prio.group(1)) in _AMBIENT_RULE_PRIORITIES)
            detail = e.detail if e.change == "changed" else ""
            yield DiffEntry(e.scope, e.kind, e.change, e.what.split(" ", 1)[1], detail, amb,
                            e.old, e.new)
    if old.routes is not None and new.routes is not None:
        for e in _keyed_diff(scope, "route", _routes(old), _routes(new)):
            table = e.what.split(":", 1)[0].split()[-1]
            yield DiffEntry(e.scope, e.kind, e.change, e.what, "", e.ambient or
                            table in _AMBIENT_TABLES, e.old, e.new)
    if old.ipsets is not None and new.ipsets is not None:
        for name in sorted(old.ipsets.keys() ^ new.ipsets.keys()):
            s = old.ipsets.get(name) or new.ipsets[name]
            yield DiffEntry(scope, "ipset", "removed" if name in old.ipsets else "added", name,
                            f"{len(s.members)} member(s)", _amb(name), s.source if
                            name in old.ipsets else None, s.source if name in new.ipsets else None)
        for name in sorted(old.ipsets.keys() & new.ipsets.keys()):
            ma = {m.text: ("", m.source) for m in old.ipsets[name].members}
            mb = {m.text: ("", m.source) for m in new.ipsets[name].members}
            for e in _keyed_diff(scope, "ipset-member", ma, mb, ambient=_amb(name)):
                yield DiffEntry(e.scope, e.kind, e.change, f"{e.what} in {name}", "",
                                e.ambient, e.old, e.new)
    if old.links is not None and new.links is not None:
        def links(ns: NetNamespace) -> dict[str, tuple[str, SourceRef | None]]:
            return {link.name: ((link.state or "?") + (" up" if link.admin_up else " admin-down")
                                + (" carrier" if link.carrier else " no-carrier"), link.source)
                    for link in ns.links or ()}

        def addrs(ns: NetNamespace) -> dict[str, tuple[str, SourceRef | None]]:
            return {f"{a.interface} on {link.name}": ("", a.source) for link, a in ns.addresses()}

        yield from _keyed_diff(scope, "link", links(old), links(new))
        yield from _keyed_diff(scope, "address", addrs(old), addrs(new))
    if old.listeners is not None and new.listeners is not None:
        def socks(ns: NetNamespace) -> dict[str, tuple[str, SourceRef | None]]:
            return {f"{lst.proto} {lst.address or '*'}:{lst.port}": ("", lst.source)
                    for lst in ns.listeners or ()}

        yield from _keyed_diff(scope, "listener", socks(old), socks(new))
    if old.sysctls is not None and new.sysctls is not None:
        sa = {k: (v.value, v.source) for k, v in old.sysctls.items()}
        sb = {k: (v.value, v.source) for k, v in new.sysctls.items()}
        for e in _keyed_diff(scope, "sysctl", sa, sb):
            yield DiffEntry(e.scope, e.kind, e.change, e.what, e.detail,
                            e.ambient or bool(_AMBIENT_SYSCTLS.search(e.what)), e.old, e.new)


def _cluster_entries(old: Snapshot, new: Snapshot) -> Iterator[DiffEntry]:
    def pods(s: Snapshot) -> dict[str, tuple[str, SourceRef | None]]:
        return {f"{p.namespace}/{p.name}": (
            f"node={p.node} ips={','.join(map(str, p.ips))} phase={p.phase} "
            f"labels={dict(sorted(p.labels.items()))} "
            f"redirection={p.annotations.get(REDIRECTION)}", p.source)
            for p in s.cluster.pods}

    def services(s: Snapshot) -> dict[str, tuple[str, SourceRef | None]]:
        return {f"{v.namespace}/{v.name}": (
            f"ips={','.join(map(str, v.cluster_ips))} ports="
            f"{','.join(f'{p.port}/{p.protocol}' for p in v.ports)} "
            f"selector={dict(sorted(v.selector.items()))} labels={dict(sorted(v.labels.items()))}",
            v.source) for v in s.cluster.services}

    def namespaces(s: Snapshot) -> dict[str, tuple[str, SourceRef | None]]:
        return {n.name: (f"labels={dict(sorted(n.labels.items()))}", n.source)
                for n in s.cluster.namespaces}

    for kind, fn in (("pod", pods), ("service", services), ("namespace", namespaces)):
        for e in _keyed_diff("cluster", kind, fn(old), fn(new)):
            yield DiffEntry(e.scope, e.kind, e.change, e.what, e.detail,
                            "istio.io" in e.detail or "ambient" in e.detail, e.old, e.new)


def _workloads(dump: object) -> dict[str, tuple[str, SourceRef | None]]:
    """ztunnel workloads of any config_dump generation, by namespace/name (or address)."""
    out: dict[str, tuple[str, SourceRef | None]] = {}
    if not isinstance(dump, Mapping):
        return out
    found: list[object] = []
    for key in ("workloads", "workload", "by_uid", "by_addr"):
        value = dump.get(key)
        if isinstance(value, list):
            found += value
        elif isinstance(value, Mapping):
            found += list(value.values())
    for w in found:
        if not isinstance(w, Mapping):
            continue
        name = f"{w.get('namespace', '?')}/{w.get('name', '?')}"
        ips = w.get("workloadIps") or w.get("workload_ips") or w.get("workloadIp") or ""
        out.setdefault(name, (json.dumps({k: w.get(k) for k in (
            "node", "protocol", "status", "workloadState", "serviceAccount")
            if w.get(k) is not None} | {"ips": ips}, sort_keys=True), None))
    return out


def diff_bundles(old: Snapshot, new: Snapshot) -> list[DiffEntry]:
    """Every difference, ambient-relevant first, then by scope and kind."""
    entries: list[DiffEntry] = []
    old_ns = {ns.id: ns for ns in old.namespaces()}
    new_ns = {ns.id: ns for ns in new.namespaces()}
    for nid in sorted(old_ns.keys() ^ new_ns.keys()):
        ns = old_ns.get(nid) or new_ns[nid]
        entries.append(DiffEntry(nid, "netns", "removed" if nid in old_ns else "added",
                                 ns.label, ns.dir, "ztunnel" in nid or "istio" in nid))
    for nid in sorted(old_ns.keys() & new_ns.keys()):
        entries += _netns_entries(nid, old_ns[nid], new_ns[nid])
    entries += _cluster_entries(old, new)
    for node in sorted(set(old.config_dumps) | set(new.config_dumps)):
        entries += [DiffEntry(f"ztunnel/{node}", e.kind, e.change, e.what, e.detail, True)
                    for e in _keyed_diff(f"ztunnel/{node}", "ztunnel-workload",
                                         _workloads(old.config_dumps.get(node)),
                                         _workloads(new.config_dumps.get(node)))]
    order = {k: i for i, k in enumerate(("netns", "rule", "policy", "chain", "ip-rule", "route",
                                         "ipset-member", "ipset", "link", "address",
                                         "listener", "sysctl", "ztunnel-workload", "pod",
                                         "namespace", "service"))}
    entries.sort(key=lambda e: (not e.ambient, e.scope, order.get(e.kind, 99)))
    return entries


def explaining(entries: Iterable[DiffEntry], netns: str) -> list[DiffEntry]:
    """The entries that can explain a path change inside network namespace `netns`."""
    return [e for e in entries if e.scope == netns]
