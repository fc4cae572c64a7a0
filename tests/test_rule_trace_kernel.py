"""Every rule the kernel evaluates, in the kernel's order: the trace engine vs `nft monitor trace`.

For each design - the 2022 node-level lab (`ambientlab.seed`) and the three in-pod
variants (`ambientlab.inpod`: REDIRECT, TPROXY, native nftables) - healthy and with five
faults each, the lab is built, collected with `ambientctl collect --local`, and traced
from its bundle along several paths. Then the kernel's own packet trace is switched on in
every namespace of the lab (`ambientlab.nftrace.KernelTrace`: `meta nftrace set 1` at
priority -350, `nft -a monitor trace` per namespace) and every leg is replayed as a real
TCP connection. For the leg's first packet (the SYN) and its answer (SYN-ACK, or the
kernel's RST), the sequence of (namespace, hook, family, table, chain, rule position,
verdict) the simulator walked must be the one the kernel printed, step for step: rules
are named by their nft handle in the trace and mapped to positions through
`nft -j list ruleset` (`parse.nft_hooks.rule_positions`).

Verdicts are compared in the kernel's words: an iptables target that ends the table's walk
(REDIRECT, DNAT, TPROXY) is `accept`, REJECT is `drop` (the xt target returns NF_DROP),
MARK/CONNMARK are `continue`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to build network namespaces"),
]

from ambientctl.analyzers.selectors import resolve
from ambientctl.analyzers.trace import Tracer
from ambientctl.analyzers.trace_result import Hop, Leg, LegResult, Trace
from ambientctl.loading import load_snapshot
from ambientlab.emulate import Landing
from ambientlab.nftrace import KernelTrace, StepKey, kernel_steps, tcp_of

# Paths per design: name -> (source, destination, port, uid, plaintext)
SEED_PATHS: dict[str, tuple[str, str, int | None, int | None, bool]] = {
    "sleep-productpage": ("sleep", "productpage", None, None, False),
    "sleep-productpage-plaintext": ("sleep", "productpage", None, None, True),
    "productpage-sleep-pod": ("productpage", "10.244.2.4", 80, None, False),
}
INPOD_PATHS: dict[str, tuple[str, str, int | None, int | None, bool]] = {
    "sleep-productpage": ("sleep", "productpage", None, None, False),
    "curl-productpage-pod": ("curl", "10.244.1.7", 9080, None, False),
    "node-productpage": ("node/ambient-worker2", "10.244.1.7", 9080, None, False),
    "kubelet-productpage": ("node/ambient-worker2", "10.244.1.7", 9080, 1000, False),
    "httpbin-productpage": ("httpbin", "productpage", None, None, False),
}
SEED_FAULTS = ("ipset-missing-sleep", "ip-rule-101-missing", "tproxy-15001-missing",
               "table100-route-missing-productpage", "kube-proxy-ahead", "rp-filter-pistioout")
INPOD_FAULTS = ("chains-missing-productpage", "ip-rule-32764-missing", "redirect-15008",
                "nft-and-iptables-both", "ztunnel-not-listening-productpage",
                "probe-ipset-missing-productpage")
DESIGNS = ("node-2022", "inpod-redirect", "inpod-tproxy", "inpod-nft")
CASES = [(d, f) for d in DESIGNS
         for f in (None, *(SEED_FAULTS if d == "node-2022" else INPOD_FAULTS))]


def _case_id(case: tuple[str, str | None]) -> str:
    return f"{case[0]}-{case[1] or 'healthy'}"


# --------------------------------------------------------------------------- the simulator


def _sim_steps(result: LegResult) -> list[StepKey]:
    out: list[StepKey] = []
    for hop in result.hops:
        out.extend(_hop_steps(hop))
    return out


def _hop_steps(hop: Hop) -> Iterator[StepKey]:
    for s in hop.steps:
        if s.kind not in ("rule", "policy") or s.verdict is None:
            continue
        assert s.hook and s.family and s.table and s.chain
        verdict = {"reject": "drop"}.get(s.verdict, s.verdict)
        yield (hop.netns, s.hook.lower(), s.family, s.table, s.chain, s.position, verdict)


def _by_netns(steps: list[StepKey]) -> dict[str, list[StepKey]]:
    out: dict[str, list[StepKey]] = {}
    for s in steps:
        out.setdefault(s[0], []).append(s)
    return out


# --------------------------------------------------------------------------- the run


@dataclass
class Compared:
    """One packet (a leg's SYN or its answer): both sides, per namespace."""

    what: str
    sim: dict[str, list[StepKey]]
    kernel: dict[str, list[StepKey]]

    @property
    def steps(self) -> int:
        return max(sum(map(len, self.sim.values())), sum(map(len, self.kernel.values())))

    @property
    def agreeing(self) -> int:
        n = 0
        for ns in set(self.sim) | set(self.kernel):
            a, b = self.sim.get(ns, []), self.kernel.get(ns, [])
            if a == b:
                n += len(a)
        return n


@dataclass
class Case:
    design: str
    fault: str | None
    compared: list[Compared] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _lab(design: str) -> Any:
    if design == "node-2022":
        from ambientlab.seed import SeedLab

        return SeedLab()
    from ambientlab.inpod import InpodLab

    return InpodLab(variant=design.removeprefix("inpod-"), mixed=True)


def _connect(lab: Any, leg: Leg) -> Landing:
    assert leg.target is not None
    kw: dict[str, Any] = {"src_ip": str(leg.bind) if leg.bind else None,
                          "mark": leg.mark or None, "timeout": 0.5}
    if leg.uid is not None:
        kw["uid"] = leg.uid
    try:
        return lab.connect(leg.start_netns, str(leg.target.ip), leg.target.port, **kw)  # type: ignore[no-any-return]
    except OSError as exc:
        return Landing("unreachable", detail=str(exc))


def _run_case(design: str, fault: str | None, work: Path) -> Case:
    paths = SEED_PATHS if design == "node-2022" else INPOD_PATHS
    case = Case(design, fault)
    with _lab(design) as lab:
        if fault:
            lab.inject(fault)
        bundle = work / "bundle"
        lab.collect(str(bundle))
        snap = load_snapshot(str(bundle))
        tracer = Tracer(snap)
        traces: dict[str, Trace] = {}
        for name, (src, dst, port, uid, plaintext) in paths.items():
            try:
                s = resolve(snap, src, role="source")
                d = resolve(snap, dst, role="destination", port=port)
                kw: dict[str, Any] = {"plaintext": plaintext}
                if uid is not None:
                    kw["uid"] = uid
                traces[name] = tracer.trace(s, d, **kw)
            except Exception as exc:  # noqa: BLE001 - reported by the test
                case.errors.append(f"{name}: trace raised {type(exc).__name__}: {exc}")
        with KernelTrace(lab.netns_names(), work / "nftrace") as kt:
            positions, hooks = kt.rule_positions(), kt.base_hooks()
            for name, t in traces.items():
                for leg in t.legs:
                    if leg.target is None:
                        continue
                    marks = kt.mark()
                    _connect(lab, leg)
                    events = kt.events_since(marks)
                    label = f"{name} leg {leg.index} ({leg.direction})"
                    kernel_syn = kernel_steps(events, False, positions, hooks)
                    if not any(tcp_of(e) for e in events.get(leg.start_netns, [])):
                        case.errors.append(f"{label}: the kernel traced no TCP packet in "
                                           f"{leg.start_netns}")
                        continue
                    case.compared.append(Compared(
                        f"{label} SYN", _by_netns(_sim_steps(leg.result)), kernel_syn))
                    sim_answer = _by_netns(_sim_steps(leg.result.reply)) if leg.result.reply \
                        else {}
                    case.compared.append(Compared(
                        f"{label} answer", sim_answer,
                        kernel_steps(events, True, positions, hooks)))
    return case


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> Callable[[tuple[str, str | None]], Case]:
    done: dict[tuple[str, str | None], Case] = {}

    def get(key: tuple[str, str | None]) -> Case:
        if key not in done:
            done[key] = _run_case(key[0], key[1], tmp_path_factory.mktemp(_case_id(key)))
            stats = Path(os.environ.get("AMBIENTCTL_RULETRACE_STATS", "/dev/null"))
            if str(stats) != "/dev/null":
                c = done[key]
                with open(stats, "a") as f:
                    f.write(json.dumps({"design": key[0], "fault": key[1],
                                        "steps": sum(x.steps for x in c.compared),
                                        "agreeing": sum(x.agreeing for x in c.compared),
                                        "packets": len(c.compared)}) + "\n")
        return done[key]

    return get


def _diff(c: Compared) -> str:
    lines = [f"{c.what}:"]
    for ns in sorted(set(c.sim) | set(c.kernel)):
        a, b = c.sim.get(ns, []), c.kernel.get(ns, [])
        if a == b:
            continue
        lines.append(f"  {ns}:")
        lines.append("    simulator: " + "\n               ".join(map(str, a[:40])))
        lines.append("    kernel:    " + "\n               ".join(map(str, b[:40])))
    return "\n".join(lines)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_every_rule_the_kernel_evaluates_is_the_rule_the_trace_names(
    cases: Callable[[tuple[str, str | None]], Case], case: tuple[str, str | None]
) -> None:
    c = cases(case)
    assert not c.errors, "\n".join(c.errors)
    assert c.compared, "nothing was compared"
    assert any(x.kernel for x in c.compared), "the kernel traced no rule at all"
    bad = [x for x in c.compared if x.sim != x.kernel]
    assert not bad, "\n".join(_diff(x) for x in bad)
