"""The trace engine against the real kernel over IPv6: the dual-stack in-pod lab.

`InpodLab(variant="redirect", ipv6=True)` gives every node and pod a second, IPv6 address
(kind's dual-stack layout: podCIDR fd00:10:244:X::/64, Services with a v6 ClusterIP in
`clusterIPs`), ip6tables kube-proxy DNAT, the v4+v6 in-pod rules of
`default_ipv6.golden` with its v6 ip rule / `local ::/0 dev lo table 100`, and the node's
v6 probe SNAT (`hostprobe_ipv6.golden`, fd16:9254:7127:1337:ffff:ffff:ffff:ffff). It is
built ONCE, collected with `ambientctl collect --local`, traced along IPv6 paths, and every
leg the trace computed is replayed as a real TCP connection (its netns, target, bound
source, SO_MARK, owner), as in tests/test_trace_inpod_kernel.py:

* trace `delivered` <=> accepted in that netns, on that listener, with the local address,
  original destination (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST) and peer the trace names;
* trace `refused` <=> reset; anything else <=> not accepted.

What this caught: for a v6 destination the engine sends ztunnel's HBONE to the destination
pod's FIRST address (its IPv4 one), then has ztunnel connect to the v4 app address from the
client's v6 address - a socket no kernel can open. ztunnel picks the workload address of
the original destination's family (`pick_workload_destination`, ztunnel src/state.rs).
Proposed fix: /tmp/ipv6-engine-fixes/ztunnel-same-family-destination.diff; those paths are
strict xfails until it lands.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pytest

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to build network namespaces"),
]

from ambientctl.analyzers.selectors import resolve
from ambientctl.analyzers.trace import Tracer
from ambientctl.analyzers.trace_result import Trace
from ambientctl.loading import load_snapshot
from ambientlab.emulate import Landing
from ambientlab.inpod import SERVICE_IPS6, InpodLab
from tests.replay import T_SLOW, Traced, assert_traced_path_matches_kernel, replay_all

SLEEP = "ambient-worker/pod/default/sleep-7b85956664-z6qh7"
PP = "ambient-worker2/pod/default/productpage-v1-7c548b785b-w9zl6"
PP_IP6, SLEEP_IP6 = "fd00:10:244:1::7", "fd00:10:244:2::4"
PP_VIP6 = SERVICE_IPS6[("default", "productpage")]
PROBE_SNAT6 = "fd16:9254:7127:1337:ffff:ffff:ffff:ffff"

# name -> (source, destination, port)
PATHS: dict[str, tuple[str, str, int]] = {
    "sleep-productpage-svc6": ("sleep", PP_VIP6, 9080),
    "sleep-productpage-pod6": ("sleep", PP_IP6, 9080),
    "curl-productpage-svc6": ("curl", PP_VIP6, 9080),
    "curl-productpage-pod6": ("curl", PP_IP6, 9080),
    # A root process on the node (a kubelet probe): ip6tables' probe SNAT to fd16:...
    "node-productpage-pod6": ("node/ambient-worker2", PP_IP6, 9080),
}
XFAIL: dict[str, pytest.MarkDecorator] = {}  # every path agrees with the kernel


@dataclass
class DualStack:
    """What the tests compare, computed while the lab was up."""

    paths: dict[str, Traced]
    cluster: dict[str, dict[str, object]]  # file name -> kubectl-shaped document
    direct: dict[str, Landing]  # engine-free kernel checks


@pytest.fixture(scope="module")
def dual(tmp_path_factory: pytest.TempPathFactory) -> DualStack:
    bundle = tmp_path_factory.mktemp("ipv6") / "bundle"
    with InpodLab(variant="redirect", ipv6=True) as lab:
        lab.collect(bundle)
        cluster_dir = lab.lab.workdir / "cluster"
        cluster = {f.name: json.loads(f.read_text()) for f in cluster_dir.glob("*.json")}
        snap = load_snapshot(str(bundle))
        tracer = Tracer(snap)
        traces: dict[str, Trace | Exception] = {}
        for name, (src, dst, port) in PATHS.items():
            try:
                s = resolve(snap, src, role="source")
                d = resolve(snap, dst, role="destination", port=port)
                traces[name] = tracer.trace(s, d)
            except Exception as exc:  # noqa: BLE001 - re-raised by the test of this path
                traces[name] = exc

        # A v6 source bound on a v4 socket is a leg the kernel will not even open.
        paths = replay_all(lab, traces, unopenable_is_unreachable=True)
        direct = {
            "sleep-vip6": lab.connect(SLEEP, PP_VIP6, 9080, timeout=T_SLOW),
            "hbone6": lab.connect(SLEEP, PP_IP6, 15008, mark=0x539, timeout=T_SLOW),
            "inbound6": lab.connect(PP, PP_IP6, 9080, src_ip=SLEEP_IP6, mark=0x539,
                                    timeout=T_SLOW),
        }
    return DualStack(paths, cluster, direct)


# --------------------------------------------------------------------------- replay


@pytest.mark.parametrize(
    "path", [pytest.param(p, marks=XFAIL.get(p, ())) for p in PATHS]
)
def test_every_ipv6_leg_lands_where_the_kernel_delivers(dual: DualStack, path: str) -> None:
    t = assert_traced_path_matches_kernel(dual.paths[path])
    assert t.disposition.value in ("delivered", "bypassed-mesh"), t.summary


@pytest.mark.parametrize(
    "path", [pytest.param(p, marks=XFAIL.get(p, ())) for p in PATHS]
)
def test_every_ipv6_leg_stays_ipv6(dual: DualStack, path: str) -> None:
    """A v6 connection stays v6 hop by hop: ztunnel keeps the family of what it was asked."""
    t = dual.paths[path].get()
    for leg in t.legs:
        assert leg.target is not None and leg.target.ip.version == 6, (leg.index, leg.target)
        assert leg.bind is None or leg.bind.version == 6, (leg.index, leg.bind)


def test_node_probe_reaches_the_app_from_the_v6_probe_address(dual: DualStack) -> None:
    """ip6tables `ISTIO_POSTRT` SNATs the node's probe to fd16:...; the pod's v6 rules (real
    address, not the golden's test value) accept it past the 15006 REDIRECT."""
    traced = dual.paths["node-productpage-pod6"]
    t, got = traced.get(), traced.landings[0]
    assert str(t.legs[0].result.packet.src) == PROBE_SNAT6, t.summary
    assert (got.netns, got.listener, got.local) == (PP, "[::]:9080", f"[{PP_IP6}]:9080"), got
    assert got.peer is not None and got.peer.rsplit(":", 1)[0].strip("[]") == PROBE_SNAT6


def test_plaintext_v6_client_is_redirected_to_15006_with_its_v6_destination(
    dual: DualStack,
) -> None:
    traced = dual.paths["curl-productpage-svc6"]
    first, got = traced.get().legs[0], traced.landings[0]
    d = first.result.delivered_to
    assert d is not None and (d.netns, d.component, d.port) == (
        PP, "ztunnel-inbound-plaintext", 15006)
    assert (got.netns, got.listener, got.local, got.original_dst) == (
        PP, "[::]:15006", f"[{PP_IP6}]:15006", f"[{PP_IP6}]:9080"), got


# --------------------------------------------------------------------------- the lab itself


def test_the_kernel_carries_the_in_pod_walk_over_ipv6(dual: DualStack) -> None:
    """Engine-free: REDIRECT 15001 in sleep's netns (v6 OUTPUT REDIRECT lands on ::1, the
    original destination the v6 VIP), HBONE to productpage's [::]:15008 untouched, and
    ztunnel's spoofed-source delivery over lo answered through the v6 ip rule 32764."""
    out, hbone, inbound = dual.direct["sleep-vip6"], dual.direct["hbone6"], dual.direct["inbound6"]
    assert (out.netns, out.listener, out.local, out.original_dst) == (
        SLEEP, "[::]:15001", "[::1]:15001", f"[{PP_VIP6}]:9080"), out
    assert (hbone.netns, hbone.listener, hbone.local) == (
        PP, "[::]:15008", f"[{PP_IP6}]:15008"), hbone
    assert (inbound.netns, inbound.listener, inbound.local) == (
        PP, "[::]:9080", f"[{PP_IP6}]:9080"), inbound
    assert inbound.peer is not None and inbound.peer.rsplit(":", 1)[0] == f"[{SLEEP_IP6}]"


def test_cluster_lists_both_families(dual: DualStack) -> None:
    pods = {p["metadata"]["name"]: p for p in dual.cluster["pods.json"]["items"]}  # type: ignore[index]
    pp = next(p for n, p in pods.items() if n.startswith("productpage"))
    assert [x["ip"] for x in pp["status"]["podIPs"]] == ["10.244.1.7", PP_IP6]
    svcs = {s["metadata"]["name"]: s for s in dual.cluster["services.json"]["items"]}  # type: ignore[index]
    assert svcs["productpage"]["spec"]["clusterIPs"] == ["10.96.182.142", PP_VIP6]


def test_dual_stack_is_offered_only_where_a_golden_backs_it() -> None:
    for kw in ({"variant": "nft"}, {"variant": "tproxy"}, {"mixed": True},
               {"dns_capture": False}):
        with pytest.raises(ValueError, match="ipv6"):
            InpodLab(ipv6=True, **kw)  # type: ignore[arg-type]
