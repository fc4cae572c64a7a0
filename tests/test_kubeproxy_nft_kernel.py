"""kube-proxy's nftables mode beside the ambient rules, proven against the kernel.

The in-pod lab is built with kube-proxy in nftables mode (`InpodLab(kube_proxy="nftables")`:
table `ip kube-proxy` in kube-proxy's exact shape on both nodes, no KUBE-* iptables
chains), collected with `ambientctl collect --local`, traced from the bundle, and every leg
replayed as a real connection: a ClusterIP from a pod outside the mesh, a NodePort, a
node-local client (the lab's nodes have no default route: the kernel and the trace both
answer ENETUNREACH before netfilter; tests/test_kubeproxy_nft_walk.py pins its OUTPUT walk
through `cluster-ips-check`), mesh pod traffic through ztunnel, and a Service with two endpoints behind
`numgen random mod 2`: the kernel's random pick must be the path the trace follows with
`--endpoint` naming the pod the kernel chose.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ambientctl.analyzers.fork import EndpointSelector
from ambientctl.analyzers.selectors import resolve
from ambientctl.analyzers.trace import Tracer
from ambientctl.analyzers.trace_result import Disposition, Trace
from ambientctl.loading import load_snapshot
from ambientlab.inpod import FORK_SERVICE, NODE_PORTS, NODES, InpodLab, pod_logical
from tests.replay import (
    Traced,
    assert_leg_matches_kernel,
    assert_traced_path_matches_kernel,
    replay,
    replay_all,
)

pytestmark = pytest.mark.kernel

WORKER = NODES[0]  # ambient-worker: the curl (outside the mesh) and sleep pods live here
PATHS: dict[str, tuple[str, str, int | None]] = {
    # src, dst, port
    "outside-clusterip": ("curl", "reviews", None),
    "outside-nodeport": ("curl", WORKER.ip, NODE_PORTS[("default", "productpage")]),
    "node-clusterip": (f"node/{WORKER.name}", "reviews", None),
    "mesh-pod-service": ("sleep", "productpage", None),
    "mesh-pod-pod": ("sleep", "reviews-v1", None),
}


@dataclass
class Built:
    paths: dict[str, Traced]
    fork: dict[str, tuple[Trace, list[object]]]  # endpoint pod -> (trace, kernel landings)
    unpicked: Trace


def _trace(snap: object, tracer: Tracer, src: str, dst: str, port: int | None,
           endpoint: EndpointSelector | None = None) -> Trace:
    s = resolve(snap, src, role="source")  # type: ignore[arg-type]
    d = resolve(snap, dst, role="destination", port=port)  # type: ignore[arg-type]
    return tracer.trace(s, d, endpoint=endpoint)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    bundle = tmp_path_factory.mktemp("kpnft") / "bundle"
    with InpodLab(variant="redirect", kube_proxy="nftables") as lab:
        lab.collect(bundle)
        snap = load_snapshot(str(bundle))
        tracer = Tracer(snap)
        traces: dict[str, Trace | Exception] = {}
        for name, (src, dst, port) in PATHS.items():
            try:
                traces[name] = _trace(snap, tracer, src, dst, port)
            except Exception as exc:  # noqa: BLE001 - re-raised by the test of this path
                traces[name] = exc
        paths = replay_all(lab, traces)
        # The fork: one trace per endpoint (--endpoint POD), and the kernel's own picks.
        _, _, vip, port, apps = FORK_SERVICE
        fork: dict[str, tuple[Trace, list[object]]] = {}
        for app in apps:
            pod = lab.pod(app)
            t = _trace(snap, tracer, "curl", vip, port,
                       EndpointSelector.of(pod.name, [ipaddress.ip_address(pod.ip)]))
            fork[pod_logical(pod)] = (t, [])
        unpicked = _trace(snap, tracer, "curl", vip, port)
        leg = unpicked.legs[0]
        for _ in range(24):
            landing = replay(lab, leg)
            if landing.netns in fork:
                fork[landing.netns][1].append(landing)
            else:
                fork.setdefault(str(landing.netns), (unpicked, []))[1].append(landing)
            if all(lands for _, lands in fork.values()):
                break
    yield Built(paths, fork, unpicked)


@pytest.mark.parametrize("path", list(PATHS))
def test_every_leg_lands_where_the_kernel_delivers(built: Built, path: str) -> None:
    t = assert_traced_path_matches_kernel(built.paths[path])
    assert t.disposition != Disposition.INSUFFICIENT_INFO, t.reason


def test_kube_proxy_dnat_is_named_on_the_path(built: Built) -> None:
    t = built.paths["outside-clusterip"].get()
    steps = [s for leg in t.legs for hop in leg.result.hops for s in hop.steps]
    tables = {s.table for s in steps if s.kind == "rule"}
    assert "kube-proxy" in tables
    assert any("vmap @service-ips" in s.summary for s in steps)
    assert any(s.summary.endswith("DNAT 10.96.47.113:9080 -> 10.244.1.4:9080")
               for s in steps), [s.summary for s in steps]


def test_each_endpoint_the_kernel_picks_is_the_trace_with_that_endpoint(built: Built) -> None:
    assert len(built.fork) == 2, f"the kernel landed outside the two endpoints: {built.fork}"
    for netns, (t, landings) in built.fork.items():
        assert landings, f"the kernel never picked {netns} in 24 connections"
        assert t.legs[0].result.delivered_to is not None
        assert t.legs[0].result.delivered_to.netns == netns
        for landing in landings:
            assert_leg_matches_kernel(t.legs[0], landing)  # type: ignore[arg-type]


def test_unpicked_fork_follows_the_first_and_states_both(built: Built) -> None:
    t = built.unpicked
    notes = [a for a in t.assumptions if "picks at random" in a]
    assert len(notes) == 1, t.assumptions
    assert "10.244.1.4:9080" in notes[0] and "10.244.1.7:9080" in notes[0]
    assert "(the first)" in notes[0]
    assert t.legs[0].result.delivered_to is not None


# --------------------------------------------------------------------------- 2022 design

SEED_PATHS: dict[str, tuple[str, str, int | None]] = {
    "sleep-productpage": ("sleep", "productpage", None),
    "sleep-reviews": ("sleep", "reviews", None),
    "node-reviews": ("node/ambient-worker", "reviews", None),
    "node-productpage": ("node/ambient-worker2", "productpage", None),
}


@pytest.fixture(scope="module")
def seed_built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Traced]]:
    """The 2022 node-level lab with kube-proxy in nftables mode, traced and replayed."""
    from ambientlab.seed import SeedLab

    bundle = tmp_path_factory.mktemp("kpnft-seed") / "bundle"
    with SeedLab(kube_proxy="nftables") as lab:
        lab.collect(str(bundle), check=True)
        snap = load_snapshot(str(bundle))
        tracer = Tracer(snap)
        traces: dict[str, Trace | Exception] = {}
        for name, (src, dst, port) in SEED_PATHS.items():
            try:
                traces[name] = _trace(snap, tracer, src, dst, port)
            except Exception as exc:  # noqa: BLE001 - re-raised by the test of this path
                traces[name] = exc
        replayed = replay_all(_NoUid(lab), traces)
        # A path through a fork (reviews has three endpoints behind `numgen random mod 3`):
        # the kernel picked one; the trace that follows that endpoint must be the path it
        # took, leg by leg (later legs are fresh connections, replayed again).
        for name, traced in replayed.items():
            t = traced.trace
            if t is None or not any("picks at random" in a for a in t.assumptions):
                continue
            first = traced.landings[0]
            assert first.original_dst is not None, first
            src, dst, port = SEED_PATHS[name]
            ip = ipaddress.ip_address(first.original_dst.rsplit(":", 1)[0].strip("[]"))
            picked = _trace(snap, tracer, src, dst, port, EndpointSelector.of(str(ip), [ip]))
            replayed[name] = Traced(picked, [first] + [replay(_NoUid(lab), leg)
                                                       for leg in picked.legs[1:]])
        yield replayed


class _NoUid:
    """The seed lab's `connect` has no socket owner (no path here sets one)."""

    def __init__(self, lab: object) -> None:
        self.lab = lab

    def connect(self, *args: object, uid: int | None = None, **kw: object) -> object:
        assert uid is None
        return self.lab.connect(*args, **kw)  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", list(SEED_PATHS))
def test_seed_lab_every_leg_lands_where_the_kernel_delivers(
    seed_built: dict[str, Traced], path: str
) -> None:
    t = assert_traced_path_matches_kernel(seed_built[path])
    assert t.disposition != Disposition.INSUFFICIENT_INFO, t.reason
    if path.endswith("reviews"):  # three endpoints: the fork is stated with every outcome
        note = next(a for a in t.assumptions if "picks at random" in a)
        assert all(f"10.244.1.{i}:9080" in note for i in (4, 5, 6)), note
