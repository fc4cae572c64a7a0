"""The trace engine against the real kernel, in-pod era: every leg lands where the trace says.

For each in-pod variant of `ambientlab.inpod` - "redirect" (Istio 1.24+ default), "tproxy"
(the 1.21 era: inbound by mangle TPROXY) and "nft" (1.28+ native nftables) - healthy and
with every fault of `ambientlab.inpod.FAULTS`, the mixed lab (ambient pods, a pod outside
the mesh and a sidecar pod) is built ONCE, collected with `ambientctl collect --local`, and
traced from the bundle along several paths. Every leg the trace computed is then replayed
as a real TCP connection from the leg's namespace, with its bound (spoofed) source, its
SO_MARK and its socket owner:

* trace `delivered` <=> the kernel accepted it in the namespace, on the listener, with the
  getsockname(), original destination (SO_ORIGINAL_DST) and peer address the trace names;
* trace `refused` <=> the kernel answered with a reset;
* anything else <=> the connection timed out or was unreachable.

What this caught (fixed in the engine since): a nat chain that accepts without NAT does
not end the NAT walk of its hook - the kernel runs every nat chain until one binds
(`nf_nat_inet_fn`), so nft's `skuid` probe SNAT on a node that also has kube-proxy's
iptables nat table, and an nft REDIRECT after a 1.21 mangle TPROXY, both apply; after
TPROXY + REDIRECT the original destination is conntrack's (SO_ORIGINAL_DST), not
getsockname(); and a kubelet probe needs the client socket's uid (`Tracer.trace(uid=)`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to build network namespaces"),
]

from ambientctl.analyzers.selectors import resolve
from ambientctl.analyzers.trace import Tracer
from ambientctl.analyzers.trace_result import Disposition, Leg, Step, Trace
from ambientctl.loading import load_snapshot
from ambientctl.model import Snapshot
from ambientlab.inpod import FAULTS, KUBELET_UID, VARIANTS, InpodLab
from tests.replay import Traced, assert_traced_path_matches_kernel, replay_all

SLEEP = "ambient-worker/pod/default/sleep-7b85956664-z6qh7"
PP = "ambient-worker2/pod/default/productpage-v1-7c548b785b-w9zl6"
PP_IP, SLEEP_IP, PP_VIP = "10.244.1.7", "10.244.2.4", "10.96.182.142"

# name -> (source, destination, port, uid of the client socket)
PATHS: dict[str, tuple[str, str, int | None, int | None]] = {
    "sleep-productpage": ("sleep", "productpage", None, None),
    "curl-productpage-svc": ("curl", "productpage", None, None),
    "curl-productpage-pod": ("curl", PP_IP, 9080, None),
    # A root process on the node: iptables' probe SNAT takes any local socket
    # (`--socket-exists`), nft's only the kubelet's uid (`meta skuid`).
    "node-productpage": ("node/ambient-worker2", PP_IP, 9080, None),
    "kubelet-productpage": ("node/ambient-worker2", PP_IP, 9080, KUBELET_UID),
    "sleep-httpbin": ("sleep", "httpbin", None, None),
    "httpbin-productpage": ("httpbin", "productpage", None, None),
}

CASES = [(v, f) for v in VARIANTS for f in (None, *FAULTS)]


def _case_id(case: tuple[str, str | None]) -> str:
    return f"{case[0]}-{case[1] or 'healthy'}"


def _params() -> list[object]:
    return [
        pytest.param(case, path, id=f"{_case_id(case)}-{path}") for case in CASES for path in PATHS
    ]


# --------------------------------------------------------------------------- the lab


@dataclass
class Case:
    """A (variant, fault) lab, traced along every path and replayed, then torn down."""

    variant: str
    fault: str | None
    paths: dict[str, Traced]


def _trace(snap: Snapshot, tracer: Tracer, path: str) -> Trace:
    src, dst, port, uid = PATHS[path]
    s = resolve(snap, src, role="source")
    d = resolve(snap, dst, role="destination", port=port)
    return tracer.trace(s, d, uid=uid)


def _build_and_replay(variant: str, fault: str | None, bundle: Path) -> Case:
    with InpodLab(variant=variant, mixed=True) as lab:
        if fault:
            lab.inject(fault)
        lab.collect(bundle)  # `ambientctl collect --local`, as a user would run it
        snap = load_snapshot(str(bundle))
        tracer = Tracer(snap)
        traces: dict[str, Trace | Exception] = {}
        for path in PATHS:
            try:
                traces[path] = _trace(snap, tracer, path)
            except Exception as exc:  # noqa: BLE001 - re-raised by the test of this path
                traces[path] = exc

        paths = replay_all(lab, traces)
    return Case(variant, fault, paths)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> Callable[[tuple[str, str | None]], Case]:
    """Each (variant, fault) lab is built once, when a test first asks for it.

    Everything the tests compare is computed while the lab is up (traces from its bundle,
    and every leg replayed), then the lab is torn down: one lab alive at a time, whatever
    order the tests run in.
    """
    done: dict[tuple[str, str | None], Case] = {}

    def get(case: tuple[str, str | None]) -> Case:
        if case not in done:
            bundle = tmp_path_factory.mktemp(_case_id(case)) / "bundle"
            done[case] = _build_and_replay(case[0], case[1], bundle)
        return done[case]

    return get


# --------------------------------------------------------------------------- replay


@pytest.mark.parametrize(("case", "path"), _params())
def test_every_leg_lands_where_the_kernel_delivers(
    cases: Callable[[tuple[str, str | None]], Case], case: tuple[str, str | None], path: str
) -> None:
    assert_traced_path_matches_kernel(cases(case).paths[path])


# --------------------------------------------------------------------------- pinned outcomes

# sleep -> productpage Service, per fault: what the kernel does (and so the trace must say).
SLEEP_TO_PRODUCTPAGE: dict[str | None, dict[str, str]] = {
    None: {"*": "delivered"},
    # HBONE still reaches the 15008 socket; ztunnel's delivery to the app is not answered
    # (no connmark / no ip rule: the SYN-ACK leaves by eth0 towards the spoofed client).
    "chains-missing-productpage": {"*": "dropped"},
    "ip-rule-32764-missing": {"*": "dropped"},
    "redirect-15008": {"*": "delivered"},
    "probe-ipset-missing-productpage": {"*": "delivered"},
    "nft-and-iptables-both": {"*": "delivered"},
    "sidecar-in-ambient-namespace": {"*": "delivered"},
    # REDIRECT to a port nobody listens on: RST; TPROXY without a listener: NF_DROP.
    "ztunnel-not-listening-productpage": {"*": "refused", "tproxy": "dropped"},
}


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_sleep_to_productpage_ends_as_the_fault_makes_it(
    cases: Callable[[tuple[str, str | None]], Case], case: tuple[str, str | None]
) -> None:
    want = SLEEP_TO_PRODUCTPAGE[case[1]]
    traced = cases(case).paths["sleep-productpage"]
    t = traced.get()
    assert t.disposition.value == want.get(case[0], want["*"]), t.summary
    first = t.legs[0].result.delivered_to
    assert first is not None and first.netns == SLEEP  # always captured at the source
    assert traced.landings[0].netns == SLEEP


# --------------------------------------------------------------------------- the healthy path


def _rule_steps(leg: Leg, netns: str, hook: str) -> list[Step]:
    return [
        s
        for h in leg.result.hops
        if h.netns == netns
        for s in h.steps
        if s.kind == "rule" and s.hook == hook
    ]


@pytest.mark.parametrize("variant", VARIANTS)
def test_healthy_path_is_the_in_pod_walk_of_the_datapath_doc(
    cases: Callable[[tuple[str, str | None]], Case], variant: str
) -> None:
    """istio-datapath.md 3.8 (and 3.9 for the TPROXY era), step by step, trace and kernel."""
    traced = cases((variant, None)).paths["sleep-productpage"]
    t = traced.get()
    assert [leg.direction for leg in t.legs] == ["outbound", "hbone", "inbound"], t.summary
    (outbound, hbone, inbound), (k_out, k_hbone, k_in) = t.legs, traced.landings

    # 1. REDIRECT 15001 in sleep's OWN netns (nat OUTPUT); ztunnel reads the Service IP
    #    with SO_ORIGINAL_DST: kube-proxy never sees the VIP.
    d = outbound.result.delivered_to
    assert d is not None and (d.netns, d.component, d.port) == (SLEEP, "ztunnel-outbound", 15001)
    assert str(outbound.result.original_destination) == f"{PP_VIP}:9080"
    assert {h.netns for h in outbound.result.hops} == {SLEEP}
    assert any(
        "REDIRECT" in s.summary
        and s.summary.endswith(":15001")
        and s.chain in ("ISTIO_OUTPUT", "istio-output")
        for s in _rule_steps(outbound, SLEEP, "OUTPUT")
    ), t.summary
    assert (k_out.netns, k_out.listener, k_out.original_dst) == (
        SLEEP,
        "[::]:15001",
        f"{PP_VIP}:9080",
    ), k_out

    # 2. HBONE from sleep's netns (SO_MARK 0x539 skips the REDIRECT) to productpage:15008,
    #    NOT redirected there: ztunnel's real [::]:15008 socket takes it (TPROXY era: by
    #    mangle TPROXY --on-port 15008, the destination kept).
    assert (hbone.start_netns, hbone.mark, str(hbone.target)) == (SLEEP, 0x539, f"{PP_IP}:15008")
    d = hbone.result.delivered_to
    assert d is not None and (d.netns, d.component) == (PP, "ztunnel-inbound-hbone")
    assert str(d.local) == str(hbone.result.original_destination) == f"{PP_IP}:15008"
    assert not any("REDIRECT" in s.summary for s in _rule_steps(hbone, SLEEP, "OUTPUT"))
    at_pp = _rule_steps(hbone, PP, "PREROUTING")
    assert not any("REDIRECT" in s.summary for s in at_pp), t.summary
    tproxied = [s for s in at_pp if "TPROXY" in s.summary.upper()]
    if variant == "tproxy":
        assert tproxied and tproxied[0].table == "mangle" and "15008" in tproxied[0].summary
    else:
        assert not tproxied
    assert (k_hbone.netns, k_hbone.listener, k_hbone.local) == (
        PP,
        "[::]:15008",
        f"{PP_IP}:15008",
    ), k_hbone

    # 3. ztunnel -> app from productpage's netns over lo: SO_MARK 0x539, the client's
    #    address spoofed; mangle PREROUTING turns 0x539 into connmark 0x111, and the app's
    #    answer (mark restored) takes ip rule 32764 -> table 100 back to ztunnel.
    assert (inbound.start_netns, inbound.mark, str(inbound.bind)) == (PP, 0x539, SLEEP_IP)
    assert [h.netns for h in inbound.result.hops] == [PP]
    assert any(s.kind == "exit" and s.device == "lo" for s in inbound.result.hops[0].steps)
    d = inbound.result.delivered_to
    assert d is not None and (d.component, d.port) == ("app", 9080)
    assert any("0x111" in s.summary for s in _rule_steps(inbound, PP, "PREROUTING"))
    reply = inbound.result.reply
    assert reply is not None and reply.disposition == Disposition.DELIVERED
    assert any(
        s.kind == "ip-rule" and s.rule_priority == 32764 for h in reply.hops for s in h.steps
    )
    assert k_in.peer is not None
    assert (k_in.netns, k_in.listener, k_in.peer.rsplit(":", 1)[0]) == (
        PP,
        "0.0.0.0:9080",
        SLEEP_IP,
    ), k_in


@pytest.mark.parametrize("variant", VARIANTS)
def test_plaintext_client_reaches_inbound_15006_by_redirect_or_tproxy(
    cases: Callable[[tuple[str, str | None]], Case], variant: str
) -> None:
    """Outside the mesh -> productpage: nat REDIRECT 15006 today, mangle TPROXY in 1.21."""
    traced = cases((variant, None)).paths["curl-productpage-pod"]
    first, got = traced.get().legs[0], traced.landings[0]
    d = first.result.delivered_to
    assert d is not None and (d.netns, d.component, d.port) == (
        PP,
        "ztunnel-inbound-plaintext",
        15006,
    )
    at_pp = _rule_steps(first, PP, "PREROUTING")
    if variant == "tproxy":
        step = next(s for s in at_pp if "TPROXY" in s.summary.upper())
        assert step.table == "mangle" and "15006" in step.summary
        assert str(d.local) == f"{PP_IP}:9080"  # TPROXY keeps the destination
    else:
        assert any("REDIRECT" in s.summary and s.summary.endswith(":15006") for s in at_pp)
        assert str(d.local) == f"{PP_IP}:15006"
    assert (got.netns, got.listener, got.local, got.original_dst) == (
        PP,
        "[::]:15006",
        str(d.local),
        f"{PP_IP}:9080",
    ), got
