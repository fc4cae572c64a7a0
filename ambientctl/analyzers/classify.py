"""Which redirection design a network namespace holds, from its rules alone.

Istio ambient has two unrelated datapaths (istio-datapath.md §0): the 2022-1.20 "legacy"
node-level one (rules in the node's netns and in the ztunnel pod's netns) and the in-pod
one of 1.21+ (rules inside every ambient pod's netns, one SNAT chain on the node). Sidecar
pods and Cilium's own ztunnel integration use lookalike chains and the same marks. The
analyzers must know which one they look at before judging anything, so this module turns
the fingerprints of istio-datapath.md §0 and §3.11 into a `Classification` with the rules
that gave it away as evidence:

| kind | fingerprint |
|---|---|
| legacy-node | `ztunnel-*` chains, ipset `ztunnel-pods-ips`, links `istioin`/`istioout`, ip rule 101 `fwmark 0x100/0x100 lookup 101` |
| legacy-ztunnel | links/rules on `pistioin`/`pistioout` with TPROXY, ip rules 20000/20003 |
| inpod-host | nat chain `ISTIO_POSTRT`, set `istio-inpod-probes*`, nft `istio-ambient-nat` with only `postrouting` |
| inpod-ambient | `ISTIO_PRERT` (+ mark 0x539), or nft `istio-ambient-*` tables with `prerouting`/`output` |
| sidecar | `ISTIO_INBOUND`/`ISTIO_REDIRECT`/`ISTIO_IN_REDIRECT` + `--uid-owner 1337` |
| cilium-ztunnel | `CILIUM_PREROUTING`/`CILIUM_OUTPUT` + mark 0x539 |
| not-captured | none of these |

When fingerprints of several kinds are present (an upgraded node keeping stale legacy
chains, a pod with both backends), the first kind in the order inpod-ambient,
cilium-ztunnel, sidecar, inpod-host, legacy-ztunnel, legacy-node wins and the others are
listed in `also_seen`. Rules are tokenised lazily; a malformed rule is not fatal here: the
chain names still classify and `notes` says the rules could not be read.
"""  # noqa: E501 - a verbatim fingerprint table / nft dump, not prose to wrap

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ambientctl import model
from ambientctl.analyzers.parse.iptables import BASE_HOOKS
from ambientctl.errors import ParseError
from ambientctl.istio import (
    INPOD_MARK,
    INPOD_MASK,
    INPOD_TPROXY_MARK,
    LEGACY_IPSET,
    SIDECAR_STATUS,
    SIDECAR_UID,
)

__all__ = ["KINDS", "Classification", "classify"]

KINDS = (
    "inpod-ambient",
    "cilium-ztunnel",
    "sidecar",
    "inpod-host",
    "legacy-ztunnel",
    "legacy-node",
    "not-captured",
)


_LEGACY_NODE_CHAINS = {
    "ztunnel-PREROUTING",
    "ztunnel-POSTROUTING",
    "ztunnel-FORWARD",
    "ztunnel-INPUT",
    "ztunnel-OUTPUT",
}
_SIDECAR_CHAINS = {
    "ISTIO_INBOUND",
    "ISTIO_REDIRECT",
    "ISTIO_IN_REDIRECT",
    "ISTIO_DIVERT",
    "ISTIO_TPROXY",
}
_CILIUM_CHAINS = {"CILIUM_PREROUTING", "CILIUM_OUTPUT"}
_INPOD_CHAINS = {"ISTIO_PRERT", "ISTIO_OUTPUT"}
_XT_INSPECTED = (_LEGACY_NODE_CHAINS | _SIDECAR_CHAINS | _CILIUM_CHAINS | _INPOD_CHAINS
                 | {"ISTIO_POSTRT"})
# Only built-in chains can be base chains (the others' rules are read from those).
_HOOK_CHAIN_NAMES = frozenset(name for hooks in BASE_HOOKS.values() for name in hooks)


@dataclass(frozen=True)
class Classification:
    """What redirection design a namespace holds, and why we think so.

    Attributes:
        kind: one of `KINDS`.
        inbound: in-pod: "tproxy" (mangle TPROXY to 15006/15008, Istio 1.21-1.23, opt-in
            1.24), "redirect" (nat REDIRECT to 15006, 1.24+) or "none" (ingress mode:
            `ambient.istio.io/bypass-inbound-capture`); sidecar: "redirect" or "tproxy"
            (interception mode). None for other kinds.
        backend: "iptables", "nftables" or "both" (which tool holds the redirection rules).
        dns_capture: in-pod: DNS is redirected to ztunnel's 15053.
        ipv6: the redirection also covers IPv6 (ip6tables rules or nft `ip6` matches).
        sidecar_via: "istio-init" or "istio-cni" when the pod's `sidecar.istio.io/status`
            names its init container (istio-cni injects `istio-validation` instead).
        generation: Istio versions this layout belongs to ("1.21-1.24", "1.24+", "1.28+",
            "2022-1.20").
        evidence: the chains, rules, sets, links and ip rules that gave the kind away.
        also_seen: other kinds whose fingerprints are present too.
        notes: caveats (unreadable rules, mixed backends, ...).
    """

    kind: str
    inbound: str | None = None
    backend: str | None = None
    dns_capture: bool | None = None
    ipv6: bool | None = None
    sidecar_via: str | None = None
    generation: str | None = None
    evidence: tuple[model.SourceRef, ...] = ()
    also_seen: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass
class _Found:
    """Evidence gathered for one kind."""

    refs: list[model.SourceRef] = field(default_factory=list)
    strong: bool = False  # the decisive fingerprint (not only a supporting one)

    def add(self, ref: model.SourceRef, strong: bool = True) -> None:
        self.refs.append(ref)
        self.strong = self.strong or strong


def _rules(chain: model.Chain, notes: list[str]) -> tuple[model.Rule, ...]:
    try:
        return chain.rules
    except ParseError as exc:
        notes.append(
            f"rules of chain {chain.name} ({chain.source}) could not be read: {exc.reason}"
        )
        return ()


def _mark_of(m: model.Match) -> tuple[int, int] | None:
    if m.module not in ("mark", "connmark") or m.option != "--mark" or not m.args:
        return None
    text = m.args[0]
    try:
        if "/" in text:
            value, mask = text.split("/", 1)
            return int(value, 0), int(mask, 0)
        return int(text, 0), model.ALL_ONES
    except ValueError:
        return None


def _has_inpod_mark(rule: model.Rule) -> bool:
    for m in (*rule.matches, *rule.target_options):
        mk = _mark_of(m)
        if mk is not None and mk[0] & INPOD_MASK == INPOD_MARK:
            return True
    return any(
        o.option in ("--set-xmark", "--set-mark") and o.args and o.args[0].startswith("0x539")
        for o in rule.target_options
    )


def _has_uid_1337(rule: model.Rule) -> bool:
    return any(
        m.module == "owner" and m.option in ("--uid-owner", "--gid-owner") and m.args == (str(SIDECAR_UID),)
        for m in rule.matches
    )


def _ports(rule: model.Rule, *names: str) -> set[str]:
    args = rule.target_option(*names)
    return {args[0].split("-")[0].split(":")[0]} if args else set()


def _is_v6_rule(rule: model.Rule) -> bool:
    return any(m.option == "-6" and not m.negated for m in rule.matches)


class _Scan:
    """One pass over a namespace: evidence per kind plus in-pod details."""

    def __init__(self, ns: model.NetNamespace) -> None:
        self.notes: list[str] = []
        self.found: dict[str, _Found] = {k: _Found() for k in KINDS}
        self.inpod_backends: set[str] = set()
        self.inbound: dict[str, str] = {}  # backend -> inbound mode seen
        self.dns = False
        self.ipv6 = False
        self.sidecar_tproxy = False
        self.host_backends: set[str] = set()
        self._tables(ns)
        self._sets(ns)
        self._links(ns)
        self._ip_rules(ns)

    # ---------------------------------------------------------------- netfilter
    def _tables(self, ns: model.NetNamespace) -> None:
        for table in ns.tables():
            if table.backend == "nft":
                self._nft_table(table)
            else:
                self._xt_table(table)

    def _xt_table(self, table: model.Table) -> None:
        backend = "iptables"
        # Names first: a kube-proxy node declares 160k chains, and the parser builds a
        # chain only when it is looked up (ambientctl.analyzers.parse.chain_index).
        for name in table.chains:
            if name not in _XT_INSPECTED and name not in _HOOK_CHAIN_NAMES:
                continue
            chain = table.chains[name]
            if name in _LEGACY_NODE_CHAINS:
                self.found["legacy-node"].add(chain.source)
            elif name == "ISTIO_POSTRT":
                self.found["inpod-host"].add(chain.source)
                self.host_backends.add("iptables")
                for rule in _rules(chain, self.notes):
                    if rule.target == "SNAT":
                        self.found["inpod-host"].add(rule.source)
            elif name in _CILIUM_CHAINS:
                rules = _rules(chain, self.notes)
                marked = [r for r in rules if _has_inpod_mark(r)]
                if marked:
                    self.found["cilium-ztunnel"].add(chain.source)
                    self.found["cilium-ztunnel"].add(marked[0].source)
            elif name in _SIDECAR_CHAINS:
                self.found["sidecar"].add(chain.source, strong=name != "ISTIO_TPROXY")
                if name in ("ISTIO_TPROXY", "ISTIO_DIVERT"):
                    self.sidecar_tproxy = True
            elif name in _INPOD_CHAINS:
                self._inpod_chain(table, chain, backend)
            else:
                for rule in _rules(chain, self.notes) if chain.base is not None else ():
                    self._legacy_ztunnel_rule(rule)

    def _inpod_chain(self, table: model.Table, chain: model.Chain, backend: str) -> None:
        rules = _rules(chain, self.notes)
        inpod = self.found["inpod-ambient"]
        sidecar_rules = [r for r in rules if _has_uid_1337(r)]
        if sidecar_rules:  # ISTIO_OUTPUT of a sidecar pod
            self.found["sidecar"].add(sidecar_rules[0].source)
            return
        marked = [r for r in rules if _has_inpod_mark(r)]
        if chain.name == "ISTIO_PRERT" or marked:
            inpod.add(chain.source, strong=chain.name == "ISTIO_PRERT" or bool(marked))
            self.inpod_backends.add(backend)
            if table.family == "ip6" and rules:
                self.ipv6 = True
        for r in marked[:1]:
            inpod.add(r.source)
        self._inpod_rules(rules, backend, table.name, chain.name)

    def _inpod_rules(
        self, rules: Iterable[model.Rule], backend: str, table: str, chain: str
    ) -> None:
        prerouting = chain in ("ISTIO_PRERT", "istio-prerouting")
        for r in rules:
            if r.target == "TPROXY" and prerouting:
                self.inbound.setdefault(backend, "tproxy")
                self.found["inpod-ambient"].add(r.source)
            elif (
                r.target == "REDIRECT"
                and prerouting
                and "15006" in _ports(r, "--to-ports", "--to-port")
            ):
                self.inbound.setdefault(backend, "redirect")
                self.found["inpod-ambient"].add(r.source)
            elif r.target == "REDIRECT" and "15053" in _ports(r, "--to-ports", "--to-port"):
                self.dns = True
            if _is_v6_rule(r):
                self.ipv6 = True

    def _legacy_ztunnel_rule(self, rule: model.Rule) -> None:
        ifaces = {m.args[0] for m in rule.matches if m.option == "-i" and m.args}
        if ifaces & {"pistioin", "pistioout"}:
            self.found["legacy-ztunnel"].add(rule.source, strong=rule.target == "TPROXY")

    def _nft_table(self, table: model.Table) -> None:
        if not table.name.startswith("istio-ambient-"):
            return
        chains = set(table.chains)
        if chains and chains <= {"postrouting"}:
            # The node's table: probe SNAT (cni/pkg/nftables, AppendHostRules).
            self.found["inpod-host"].add(table.source)
            self.host_backends.add("nftables")
            for rule in _rules(table.chains["postrouting"], self.notes):
                if rule.target == "SNAT":
                    self.found["inpod-host"].add(rule.source)
            return
        self.found["inpod-ambient"].add(table.source)
        self.inpod_backends.add("nftables")
        for chain in table.chains.values():
            rules = _rules(chain, self.notes)
            self._inpod_rules(rules, "nftables", table.name, chain.name)
            for r in rules:
                if _has_inpod_mark(r):
                    self.found["inpod-ambient"].add(r.source)
                    break

    # ---------------------------------------------------------------- other facts
    def _sets(self, ns: model.NetNamespace) -> None:
        for name, ipset in (ns.ipsets or {}).items():
            if name.startswith("istio-inpod-probes"):
                self.found["inpod-host"].add(ipset.source)
            elif name == LEGACY_IPSET:
                self.found["legacy-node"].add(ipset.source)

    def _links(self, ns: model.NetNamespace) -> None:
        for link in ns.links or ():
            if link.name in ("istioin", "istioout"):
                self.found["legacy-node"].add(link.source)
            elif link.name in ("pistioin", "pistioout"):
                self.found["legacy-ztunnel"].add(link.source)

    def _ip_rules(self, ns: model.NetNamespace) -> None:
        for r in ns.rules or ():
            if r.priority == 101 and r.fwmark == 0x100 and r.fwmask == 0x100 and r.table == "101":
                self.found["legacy-node"].add(r.source)
            elif r.priority in (20000, 20003) and r.table == "100" and r.fwmark is not None:
                self.found["legacy-ztunnel"].add(r.source)
            elif (
                r.priority == 32764
                and r.fwmark == INPOD_TPROXY_MARK
                and r.fwmask == INPOD_MASK
                and r.table == "100"
            ):
                # Supporting only: Cilium's ztunnel integration installs the same rule.
                for kind in ("inpod-ambient", "cilium-ztunnel"):
                    if self.found[kind].strong:
                        self.found[kind].add(r.source, strong=False)


def _dedupe(refs: Iterable[model.SourceRef]) -> Iterator[model.SourceRef]:
    seen: set[tuple[str, int | None, str | None]] = set()
    for ref in refs:
        key = (ref.path, ref.line, ref.text)
        if key not in seen:
            seen.add(key)
            yield ref


def _sidecar_via(pod: model.Pod | None) -> str | None:
    """istio-cni injects the `istio-validation` init container instead of `istio-init`."""
    if pod is None:
        return None
    status = pod.annotations.get(SIDECAR_STATUS)
    if not status:
        return None
    try:
        inits = json.loads(status).get("initContainers") or []
    except (ValueError, AttributeError, RecursionError):
        return None
    if not isinstance(inits, list):
        return None
    if "istio-validation" in inits:
        return "istio-cni"
    if "istio-init" in inits:
        return "istio-init"
    return None


def classify(ns: model.NetNamespace, pod: model.Pod | None = None) -> Classification:
    """Classify one network namespace (a node's or a pod's).

    Args:
        ns: the namespace; only its tables, ipsets, links and ip rules are read.
        pod: the pod object, when known: tells istio-init from istio-cni sidecars.

    Returns:
        The Classification; `kind` is "not-captured" when no fingerprint is present.
    """
    scan = _Scan(ns)
    kinds = [k for k in KINDS[:-1] if scan.found[k].strong]
    if not kinds:
        return Classification(kind="not-captured", notes=tuple(scan.notes))
    kind, others = kinds[0], tuple(kinds[1:])
    notes = list(scan.notes)
    evidence = tuple(_dedupe(scan.found[kind].refs))
    if kind == "inpod-ambient":
        backends = scan.inpod_backends
        backend = (
            "both" if len(backends) > 1 else "nftables" if backends == {"nftables"} else "iptables"
        )
        modes = set(scan.inbound.values())
        inbound = scan.inbound.get("iptables") or scan.inbound.get("nftables") or "none"
        if len(modes) > 1:
            notes.append(f"the backends disagree on inbound capture: {sorted(modes)}")
        if backend == "both":
            notes.append("redirection rules exist in both iptables and nftables")
        generation = (
            "1.28+" if "nftables" in backends else "1.21-1.24" if inbound == "tproxy" else "1.24+"
        )
        return Classification(
            kind=kind,
            inbound=inbound,
            backend=backend,
            dns_capture=scan.dns,
            ipv6=scan.ipv6,
            generation=generation,
            evidence=evidence,
            also_seen=others,
            notes=tuple(notes),
        )
    if kind == "sidecar":
        return Classification(
            kind=kind,
            inbound="tproxy" if scan.sidecar_tproxy else "redirect",
            backend="iptables",
            sidecar_via=_sidecar_via(pod),
            evidence=evidence,
            also_seen=others,
            notes=tuple(notes),
        )
    if kind == "inpod-host":
        hb = scan.host_backends
        backend = "both" if len(hb) > 1 else "nftables" if hb == {"nftables"} else "iptables"
        if backend == "both":
            notes.append("probe SNAT rules exist in both iptables and nftables")
        return Classification(
            kind=kind,
            backend=backend,
            generation="1.21+",
            evidence=evidence,
            also_seen=others,
            notes=tuple(notes),
        )
    if kind == "cilium-ztunnel":
        return Classification(
            kind=kind,
            inbound="redirect",
            backend="iptables",
            evidence=evidence,
            also_seen=others,
            notes=tuple(notes),
        )
    return Classification(
        kind=kind,
        backend="iptables",
        generation="2022-1.20",
        evidence=evidence,
        also_seen=others,
        notes=tuple(notes),
    )
