"""Waypoint and ingress-gateway legs against the real kernel (in-pod lab, `waypoint=True`).

The lab adds a waypoint pod (an Envoy-like listener on 15008, `istio.io/dataplane-mode:
none`, never captured) bound to Service productpage, and an ingress gateway pod. Each lab
(healthy in every in-pod variant; each `WAYPOINT_FAULTS` cluster fault in the redirect
variant) is built once, collected with `ambientctl collect --local`, traced from the bundle,
and every leg is replayed as a real connection from its namespace (tests/replay.py): the
kernel must deliver each leg where the trace says. The verdict and doctor must agree on
every waypoint fault.
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

from ambientctl.analyzers.doctor import diagnose
from ambientctl.analyzers.findings import Report
from ambientctl.analyzers.selectors import resolve
from ambientctl.analyzers.trace import Tracer
from ambientctl.analyzers.trace_result import Disposition, Trace
from ambientctl.analyzers.verdict import Verdict, judge
from ambientctl.loading import load_snapshot
from ambientctl.model import Snapshot
from ambientlab.inpod import VARIANTS, WAYPOINT_FAULTS, InpodLab
from tests.replay import Traced, assert_traced_path_matches_kernel, replay_all

SLEEP = "ambient-worker/pod/default/sleep-7b85956664-z6qh7"
PP = "ambient-worker2/pod/default/productpage-v1-7c548b785b-w9zl6"
WP = "ambient-worker/pod/default/waypoint-5f9c8d7b6-x2k4p"
GW = "ambient-worker/pod/istio-ingress/ingress-gateway-7d9f6c5b4-h8q2n"
PP_IP, WP_IP, PP_VIP = "10.244.1.7", "10.244.2.20", "10.96.182.142"

PATHS: dict[str, tuple[str, str, int | None]] = {
    "sleep-productpage-svc": ("sleep", "productpage", None),  # Service-addressed: waypoint
    "sleep-productpage-pod": ("sleep", PP_IP, 9080),  # workload-addressed: a service waypoint
    "gateway-productpage": ("ingress-gateway", "productpage", None),
    "curl-productpage-svc": ("curl", "productpage", None),  # outside the mesh: no waypoint
}
CASES = [(v, None) for v in VARIANTS] + [("redirect", f) for f in WAYPOINT_FAULTS]


def _case_id(case: tuple[str, str | None]) -> str:
    return f"{case[0]}-{case[1] or 'healthy'}"


@dataclass
class Case:
    snap: Snapshot
    report: Report
    paths: dict[str, Traced]
    verdicts: dict[str, Verdict]


def _build(variant: str, fault: str | None, bundle: Path) -> Case:
    with InpodLab(variant=variant, waypoint=True, waypoint_fault=fault) as lab:
        lab.collect(bundle)
        snap = load_snapshot(str(bundle))
        tracer = Tracer(snap)
        traces: dict[str, Trace | Exception] = {}
        for name, (src, dst, port) in PATHS.items():
            try:
                traces[name] = tracer.trace(resolve(snap, src, role="source"),
                                            resolve(snap, dst, role="destination", port=port))
            except Exception as exc:  # noqa: BLE001 - re-raised by the test of this path
                traces[name] = exc
        paths = replay_all(lab, traces)
    report = diagnose(snap)
    verdicts = {n: judge(snap, t, report=report) for n, t in traces.items()
                if isinstance(t, Trace)}
    return Case(snap, report, paths, verdicts)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> Callable[[tuple[str, str | None]], Case]:
    """One lab alive at a time; everything compared is computed while it is up."""
    done: dict[tuple[str, str | None], Case] = {}

    def get(case: tuple[str, str | None]) -> Case:
        if case not in done:
            done[case] = _build(*case, tmp_path_factory.mktemp(_case_id(case)) / "bundle")
        return done[case]

    return get


@pytest.mark.parametrize(("case", "path"), [
    pytest.param(c, p, id=f"{_case_id(c)}-{p}") for c in CASES for p in PATHS])
def test_every_waypoint_and_gateway_leg_lands_where_the_kernel_delivers(
    cases: Callable[[tuple[str, str | None]], Case], case: tuple[str, str | None], path: str
) -> None:
    assert_traced_path_matches_kernel(cases(case).paths[path])


@pytest.mark.parametrize("variant", VARIANTS)
def test_service_traffic_goes_ztunnel_waypoint_ztunnel_and_is_as_intended(
    cases: Callable[[tuple[str, str | None]], Case], variant: str
) -> None:
    c = cases((variant, None))
    traced = c.paths["sleep-productpage-svc"]
    t = traced.get()
    assert [leg.direction for leg in t.legs] == ["outbound", "hbone", "hbone", "inbound"], \
        t.summary
    _out, to_wp, from_wp, _in = t.legs
    # ztunnel, in sleep's netns (SO_MARK 0x539), HBONE to the waypoint pod's 15008, keeping
    # the Service address as :authority for the waypoint's L7 routing.
    assert (to_wp.start_netns, to_wp.mark, str(to_wp.target)) == (SLEEP, 0x539, f"{WP_IP}:15008")
    assert any(f":authority {PP_VIP}:9080" in s.summary for s in to_wp.explanation)
    d = to_wp.result.delivered_to
    assert d is not None and (d.netns, d.component) == (WP, "waypoint-hbone")
    # the waypoint is not captured: nothing redirects on its way in
    assert not any("REDIRECT" in s.summary for h in to_wp.result.hops if h.netns == WP
                   for s in h.steps)
    k = traced.landings[1]
    assert (k.netns, k.listener, k.local) == (WP, "0.0.0.0:15008", f"{WP_IP}:15008"), k
    # the waypoint's Envoy, from its own netns and address, HBONE to productpage's ztunnel
    assert (from_wp.start_netns, from_wp.mark, str(from_wp.target)) == (WP, 0, f"{PP_IP}:15008")
    d = from_wp.result.delivered_to
    assert d is not None and (d.netns, d.component) == (PP, "ztunnel-inbound-hbone")
    assert traced.landings[2].peer is not None and \
        traced.landings[2].peer.rsplit(":", 1)[0] == WP_IP
    assert t.disposition == Disposition.DELIVERED and not t.warnings
    v = c.verdicts["sleep-productpage-svc"]
    assert v.as_intended, v.text
    assert "waypoint default/waypoint on ambient-worker" in v.text
    assert v.intent.waypoint == "default/waypoint"
    assert v.mtls[1:3] == (True, True)
    assert not [f for f in c.report.findings if f.check_id.startswith("AMB5")]


def test_pod_addressed_traffic_skips_a_service_waypoint_as_intended(
    cases: Callable[[tuple[str, str | None]], Case]
) -> None:
    c = cases(("redirect", None))
    t = c.paths["sleep-productpage-pod"].get()
    assert [leg.direction for leg in t.legs] == ["outbound", "hbone", "inbound"], t.summary
    assert str(t.legs[1].target) == f"{PP_IP}:15008"
    v = c.verdicts["sleep-productpage-pod"]
    assert v.as_intended and v.intent.waypoint is None, v.text


def test_ingress_gateway_speaks_hbone_to_the_ambient_pod(
    cases: Callable[[tuple[str, str | None]], Case]
) -> None:
    c = cases(("redirect", None))
    traced = c.paths["gateway-productpage"]
    t = traced.get()
    assert [leg.direction for leg in t.legs] == ["hbone", "inbound"], t.summary
    first = t.legs[0]
    assert (first.start_netns, first.mark, str(first.target)) == (GW, 0, f"{PP_IP}:15008")
    d = first.result.delivered_to
    assert d is not None and (d.netns, d.component) == (PP, "ztunnel-inbound-hbone")
    assert traced.landings[0].netns == PP
    v = c.verdicts["gateway-productpage"]
    assert v.as_intended and v.intent.path == "hbone" and v.mtls[0] is True, v.text


def test_outside_client_to_a_waypoint_service_is_warned_that_the_waypoint_is_bypassed(
    cases: Callable[[tuple[str, str | None]], Case]
) -> None:
    t = cases(("redirect", None)).paths["curl-productpage-svc"].get()
    assert any("waypoint default/waypoint" in w and "bypassed" in w for w in t.warnings)


# fault -> (check, trace disposition of sleep -> productpage Service)
FAULT_OUTCOME = {
    "waypoint-missing": ("AMB501", Disposition.INSUFFICIENT_INFO),
    "waypoint-not-ready": ("AMB502", Disposition.INSUFFICIENT_INFO),
    "waypoint-for-workload": ("AMB503", Disposition.DELIVERED),
}


@pytest.mark.parametrize("fault", WAYPOINT_FAULTS)
def test_a_broken_waypoint_is_not_as_intended_and_cites_the_check_doctor_raises(
    cases: Callable[[tuple[str, str | None]], Case], fault: str
) -> None:
    c = cases(("redirect", fault))
    check, disposition = FAULT_OUTCOME[fault]
    t = c.paths["sleep-productpage-svc"].get()
    assert t.disposition == disposition, t.summary
    assert any(w.startswith(check) for w in t.warnings), t.warnings
    assert not any(leg.result.delivered_to is not None and
                   leg.result.delivered_to.component == "waypoint-hbone" for leg in t.legs)
    v = c.verdicts["sleep-productpage-svc"]
    assert not v.as_intended and v.culprit is not None and v.culprit.check == check, v.text
    assert check in {f.check_id for f in c.report.findings}
    # traffic that no waypoint is meant for is untouched by the fault
    assert c.verdicts["sleep-productpage-pod"].as_intended
