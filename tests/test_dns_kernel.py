"""DNS capture (in-pod, DNS on): UDP and TCP 53 land on ztunnel's 15053 proxy, as traced.

The in-pod lab loads the current default golden (DNS capture on): nat ISTIO_OUTPUT
REDIRECTs UDP/53 (not to lo) and TCP/53 to 15053, where ztunnel's DNS proxy listens on
127.0.0.1 in the pod's own netns. The trace (`--udp`) must name that socket and the
original destination, and a real datagram from the pod must be answered by it with
the answer must reach the app's socket connected to the resolver address (conntrack
maps it back: the original destination).
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
from ambientctl.analyzers.trace_result import Disposition  # noqa: E402
from ambientctl.loading import load_snapshot  # noqa: E402

inpod = pytest.importorskip("ambientlab.inpod")

SLEEP = "ambient-worker/pod/default/sleep-7b85956664-z6qh7"
RESOLVER = "10.96.0.10"


@pytest.fixture(scope="module")
def lab_and_snapshot(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    cls = inpod.InpodLab
    with cls(variant="redirect") as lab:
        bundle = tmp_path_factory.mktemp("dns") / "bundle"
        lab.collect(str(bundle))
        yield lab, load_snapshot(str(bundle))


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_dns_to_the_cluster_resolver_lands_on_ztunnels_dns_proxy(lab_and_snapshot, proto: str
                                                                   ) -> None:
    lab, snap = lab_and_snapshot
    src = resolve(snap, "sleep", role="source")
    dst = resolve(snap, RESOLVER, role="destination", port=53)
    t = Tracer(snap).trace(src, dst, proto=proto)
    leg = t.legs[0].result
    assert t.disposition == Disposition.DELIVERED, t.summary
    assert leg.delivered_to is not None
    assert (leg.delivered_to.component, leg.delivered_to.netns) == ("ztunnel-dns", SLEEP)
    assert str(leg.original_destination) == f"{RESOLVER}:53"
    rules = [s.source.text for h in leg.hops for s in h.steps if s.kind == "rule" and s.source]
    assert any("--to-ports 15053" in (r or "") or "--to-port 15053" in (r or "") for r in rules)
    if proto == "udp":
        # The probe's socket is connected to RESOLVER:53 and accepts only datagrams from
        # that peer: an answer from the 15053 proxy arrives only because conntrack maps
        # its source back to the original destination (UDP has no SO_ORIGINAL_DST).
        landing = lab.send_udp(SLEEP, RESOLVER, 53)
        assert landing.outcome == "accepted", landing
        assert landing.netns == SLEEP and landing.listener == "udp:127.0.0.1:15053"
        assert landing.local == "127.0.0.1:15053"
    else:
        landing = lab.connect(SLEEP, RESOLVER, 53)
        assert landing.outcome == "accepted" and landing.netns == SLEEP
        assert landing.local == "127.0.0.1:15053" and landing.original_dst == f"{RESOLVER}:53"


def test_without_dns_capture_the_query_is_not_redirected(tmp_path: Path) -> None:
    """`ambient.istio.io/dns-capture: "false"`: no 15053 rules; the datagram leaves the pod."""
    with inpod.InpodLab(variant="redirect", dns_capture=False) as lab:
        lab.collect(str(tmp_path / "bundle"))
        snap = load_snapshot(str(tmp_path / "bundle"))
        src = resolve(snap, "sleep", role="source")
        dst = resolve(snap, RESOLVER, role="destination", port=53)
        t = Tracer(snap).trace(src, dst, proto="udp")
        leg = t.legs[0].result
        assert leg.delivered_to is None or leg.delivered_to.component != "ztunnel-dns", t.summary
        assert t.disposition != Disposition.DELIVERED
        assert len(leg.hops) > 1 and leg.hops[0].netns == SLEEP  # it left sleep's netns
        assert lab.send_udp(SLEEP, RESOLVER, 53, timeout=1.0).outcome != "accepted"
