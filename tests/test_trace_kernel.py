"""The trace engine against the real kernel: every leg lands where the trace says.

For the healthy seed lab and each injected fault, the lab is built from network
namespaces, collected with `ambientctl collect --local`, traced from the bundle, and
then every leg the trace computed is replayed as a real TCP connection from the same
namespace, with the same bound source and SO_MARK. Where the trace says `delivered`,
the connection must be accepted by the listener the trace names, in the namespace it
names, and the accepted socket must see the original destination the trace names;
where it says the packet dies, the real connection must not be accepted anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kernel]

if os.geteuid() != 0:  # pragma: no cover - CI runs as root
    pytest.skip("needs root to build network namespaces", allow_module_level=True)

from ambientctl.analyzers.selectors import resolve  # noqa: E402
from ambientctl.analyzers.trace import Tracer  # noqa: E402
from ambientctl.analyzers.trace_result import (
    Disposition,  # noqa: E402
    Trace,  # noqa: E402
)
from ambientctl.loading import load_snapshot  # noqa: E402

SeedLab = pytest.importorskip("ambientlab.seed").SeedLab

SLEEP = "ambient-worker/pod/default/sleep-7b85956664-z6qh7"
ZT1 = "ambient-worker/pod/istio-system/ztunnel-nptf6"
ZT2 = "ambient-worker2/pod/istio-system/ztunnel-vxv4b"
PRODUCTPAGE = "ambient-worker2/pod/default/productpage-v1-7c548b785b-w9zl6"

# fault -> (expected overall disposition, expected (component, netns) of leg 1, or None)
CASES: dict[str | None, tuple[str, tuple[str, str] | None]] = {
    None: ("delivered", ("ztunnel-outbound", ZT1)),
    # The SYN reaches the remote ztunnel's plaintext port, but the SYN-ACK is routed into
    # ztunnel-nptf6's inbound tunnel (sleep's table-100 route is still there).
    "ipset-missing-sleep": ("dropped", ("ztunnel-inbound-plaintext", ZT2)),
    "ip-rule-101-missing": ("left-bundle", None),
    "tproxy-15001-missing": ("dropped", None),
    "istioout-down": ("left-bundle", None),
    # HBONE reaches productpage itself (no 15008 listener); its reset is marked 0x100 and
    # diverted into ztunnel-vxv4b's outbound tunnel: the client sees a timeout.
    "table100-route-missing-productpage": ("dropped", ("ztunnel-outbound", ZT1)),
    "kube-proxy-ahead": ("delivered", ("ztunnel-outbound", ZT1)),
    "rp-filter-pistioout": ("dropped", None),
    "ztunnel-outbound-down": ("dropped", None),
}


def _trace(lab: object, bundle: Path, *, plaintext: bool = False) -> Trace:
    lab.collect(str(bundle))  # type: ignore[attr-defined]
    snap = load_snapshot(str(bundle))
    src = resolve(snap, "sleep", role="source")
    dst = resolve(snap, "productpage", role="destination")
    return Tracer(snap).trace(src, dst, plaintext=plaintext)


def _assert_legs_match_kernel(lab: object, t: Trace) -> None:
    for leg in t.legs:
        assert leg.target is not None
        landing = lab.connect(  # type: ignore[attr-defined]
            leg.start_netns, str(leg.target.ip), leg.target.port,
            src_ip=str(leg.bind) if leg.bind else None, mark=leg.mark or None,
        )
        r = leg.result
        context = f"leg {leg.index} ({leg.direction}) {leg.request}: trace says " \
                  f"{r.disposition.value} {r.delivered_to}, kernel says {landing}"
        if r.disposition == Disposition.DELIVERED:
            assert r.delivered_to is not None
            assert landing.outcome == "accepted", context
            assert landing.netns == r.delivered_to.netns, context
            assert landing.listener == f"{r.delivered_to.address}:{r.delivered_to.port}", context
            seen = landing.original_dst or landing.local
            assert seen == str(r.original_destination), context
        elif r.disposition == Disposition.REFUSED:
            assert landing.outcome == "refused", context
        else:
            assert landing.outcome != "accepted", context


@pytest.mark.parametrize("fault", list(CASES), ids=lambda f: f or "healthy")
def test_trace_legs_land_where_the_kernel_delivers(fault: str | None, tmp_path: Path) -> None:
    expected, first = CASES[fault]
    with SeedLab() as lab:
        if fault:
            lab.inject(fault)
        t = _trace(lab, tmp_path / "bundle")
        assert t.disposition.value == expected, t.summary
        if first is not None:
            d = t.legs[0].result.delivered_to
            assert d is not None and (d.component, d.netns) == first, t.summary
        _assert_legs_match_kernel(lab, t)


def test_healthy_seed_path_is_the_three_legs_of_the_seed(tmp_path: Path) -> None:
    with SeedLab() as lab:
        t = _trace(lab, tmp_path / "bundle")
    assert [leg.direction for leg in t.legs] == ["outbound", "hbone", "inbound"]
    outbound, hbone, inbound = (leg.result for leg in t.legs)
    assert str(outbound.original_destination) == "10.96.182.142:9080"  # Service IP kept
    assert outbound.delivered_to is not None and outbound.delivered_to.port == 15001
    assert hbone.delivered_to is not None and hbone.delivered_to.component == \
        "ztunnel-inbound-hbone" and hbone.delivered_to.netns == ZT2
    assert str(hbone.original_destination) == "10.244.1.7:15008"
    assert inbound.delivered_to is not None and inbound.delivered_to.netns == PRODUCTPAGE
    assert inbound.delivered_to.component == "app"
    # The seed's rules are named with their file and line.
    texts = [s.source.text for h in outbound.hops for s in h.steps if s.source and s.source.text]
    assert any("--match-set ztunnel-pods-ips src -j MARK --set-xmark 0x100/0x100" in x
               for x in texts)
    assert any("TPROXY --on-port 15001" in x for x in texts)
    assert any(x.strip().startswith("101:") for x in texts)


def test_plaintext_client_lands_on_ztunnel_15006(tmp_path: Path) -> None:
    with SeedLab() as lab:
        t = _trace(lab, tmp_path / "bundle", plaintext=True)
        first = t.legs[0].result.delivered_to
        assert first is not None and first.component == "ztunnel-inbound-plaintext"
        assert first.netns == ZT2
        assert t.disposition == Disposition.DELIVERED
        _assert_legs_match_kernel(lab, t)


# --------------------------------------------------------------------------- ztunnel generations


def test_rust_node_level_ztunnel_spoofs_the_client_on_hbone_and_the_answer_returns(
        tmp_path: Path) -> None:
    """Istio 1.18-1.20's Rust ztunnel binds the client's address on the HBONE connection:
    the trace says so, binds it, and the kernel accepts that connection on the remote
    ztunnel's 15008 seeing the client's address; its answer comes back (connmark 0x210 ->
    table 102 -> ztunnel veth -> 0x4d3 -> local) or the connection would not complete."""
    with SeedLab(ztunnel="rust-node") as lab:
        t = _trace(lab, tmp_path / "bundle")
        assert t.disposition == Disposition.DELIVERED, t.summary
        hbone = t.legs[1]
        assert hbone.direction == "hbone"
        assert str(hbone.bind) == "10.244.2.4"  # sleep's address, not ztunnel-nptf6's
        said = [s.summary for s in hbone.explanation]
        assert any("Rust ztunnel of the node-level design" in s and "1.20.0" in s
                   for s in said), said
        assert any("from the client's address 10.244.2.4" in s for s in said), said
        assert hbone.result.packet.src == hbone.bind
        # The answer of the spoofed connection goes back through table 102 on the client's node.
        rep = hbone.result.reply
        assert rep is not None and rep.disposition == Disposition.DELIVERED
        texts = [st.source.text for h in rep.hops for st in h.steps if st.source and st.source.text]
        assert any("0x40/0x40" in x for x in texts), texts
        _assert_legs_match_kernel(lab, t)
        landing = lab.connect(hbone.start_netns, str(hbone.target.ip), hbone.target.port,
                              src_ip=str(hbone.bind))
        assert landing.outcome == "accepted" and landing.peer is not None
        assert landing.peer.rsplit(":", 1)[0] == "10.244.2.4", landing


def test_envoy_2022_ztunnel_connects_from_its_own_address(tmp_path: Path) -> None:
    with SeedLab() as lab:
        t = _trace(lab, tmp_path / "bundle")
    hbone = t.legs[1]
    assert hbone.bind is None and str(hbone.result.packet.src) == "10.244.2.3"
    assert any("2022 Envoy-based ztunnel" in s.summary for s in hbone.explanation)
