"""An on-link route over a veth, against the kernel: the peer must own or answer for the address.

A route without a gateway (`ip route add 192.0.2.10 dev eth0`) sends the packet to the
address itself, so the sender first resolves it by ARP. A veth delivers the request to its
peer namespace only, which answers when it owns the address (arp_ignore=0: any local
address) or proxies for it (`proxy_arp` in conf/all or conf/<dev>, and a route to it out of
another device: `arp_process()`, ip-sysctl.rst), or the sender holds a static PERMANENT
entry. Otherwise the entry goes INCOMPLETE -> FAILED and the packet is dropped.

For each case the seed lab's out-of-mesh pod (notsleep) gets the on-link route, the case's
setting is applied, the lab is collected with `ambientctl collect --local` and traced; then
a real TCP connect() is made and the kernel's own evidence read: the sender's neighbour
entry (`ip -j neigh show`) and whether the peer's IP layer received anything (`Ip:
InReceives` in the peer netns' /proc/net/snmp, which counts packets after the
PACKET_OTHERHOST check of `ip_rcv_core()`, so a frame to a wrong MAC is not counted).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kernel]

if os.geteuid() != 0:  # pragma: no cover - CI runs as root
    pytest.skip("needs root to build network namespaces", allow_module_level=True)

from ambientctl.analyzers.selectors import resolve  # noqa: E402
from ambientctl.analyzers.trace import Tracer  # noqa: E402
from ambientctl.analyzers.trace_result import Disposition  # noqa: E402
from ambientctl.bundle.load import load_snapshot  # noqa: E402

SeedLab = pytest.importorskip("ambientlab.seed").SeedLab

NODE = "ambient-worker/host"
SENDER = "ambient-worker/pod/default/notsleep-6d6c8669b5-pngxg"
TARGET = "192.0.2.10"  # TEST-NET-1: owned by nobody unless a case adds it
PORT = 8080
WRONG_MAC = "02:00:00:00:00:99"


def _peer_veth(lab: object) -> tuple[str, str]:
    """The node-side veth of the sender's eth0 and its MAC, read from the kernel."""
    link = json.loads(lab.ip(SENDER, "-j", "link", "show", "eth0").stdout)[0]  # type: ignore[attr-defined]
    peer_index = link["link_index"]
    for lk in json.loads(lab.ip(NODE, "-j", "link", "show").stdout):  # type: ignore[attr-defined]
        if lk["ifindex"] == peer_index:
            return lk["ifname"], lk["address"]
    raise AssertionError(f"no link with ifindex {peer_index} in {NODE}")


def _in_receives(lab: object, logical_id: str) -> int:
    """`Ip: InReceives` of one namespace (/proc/net/snmp is per network namespace)."""
    text = lab.exec(logical_id, "cat", "/proc/net/snmp").stdout  # type: ignore[attr-defined]
    head, vals = [ln.split() for ln in text.splitlines() if ln.startswith("Ip:")][:2]
    return int(vals[head.index("InReceives")])


def _neigh_state(lab: object) -> list[str]:
    out = lab.ip(SENDER, "-j", "neigh", "show", TARGET, "dev", "eth0").stdout  # type: ignore[attr-defined]
    entries = json.loads(out or "[]")
    return list(entries[0].get("state", [])) if entries else []


# case -> (apply(lab, veth, mac) commands, revert commands, does ARP reach the peer?)
Setup = Callable[[object, str, str], None]


def _node(*args: str) -> Setup:
    return lambda lab, veth, mac: lab.ip(NODE, *[a.format(veth=veth) for a in args])  # type: ignore[attr-defined]


def _node_sysctl(key: str, value: int) -> Setup:
    return lambda lab, veth, mac: lab.exec(  # type: ignore[attr-defined]
        NODE, "sysctl", "-qw", f"{key.format(veth=veth)}={value}")


def _sender_neigh(mac: str | None, *, delete: bool = False) -> Setup:
    def run(lab: object, veth: str, peer_mac: str) -> None:
        if delete:
            lab.ip(SENDER, "neigh", "del", TARGET, "dev", "eth0", check=False)  # type: ignore[attr-defined]
        else:
            lab.ip(SENDER, "neigh", "replace", TARGET, "lladdr", mac or peer_mac,  # type: ignore[attr-defined]
                   "dev", "eth0", "nud", "permanent")
    return run


CASES: dict[str, tuple[Setup | None, Setup | None, bool]] = {
    "nobody-answers": (None, None, False),
    "peer-owns-the-address": (_node("addr", "add", f"{TARGET}/32", "dev", "lo"),
                              _node("addr", "del", f"{TARGET}/32", "dev", "lo"), True),
    "proxy-arp-on-the-peer-veth": (_node_sysctl("net.ipv4.conf.{veth}.proxy_arp", 1),
                                   _node_sysctl("net.ipv4.conf.{veth}.proxy_arp", 0), True),
    "proxy-arp-in-conf-all": (_node_sysctl("net.ipv4.conf.all.proxy_arp", 1),
                              _node_sysctl("net.ipv4.conf.all.proxy_arp", 0), True),
    "static-neighbour-with-the-peer-mac": (_sender_neigh(None), _sender_neigh(None, delete=True),
                                           True),
    "static-neighbour-with-a-wrong-mac": (_sender_neigh(WRONG_MAC),
                                          _sender_neigh(None, delete=True), False),
}


@pytest.fixture(scope="module")
def lab() -> Iterator[object]:
    with SeedLab() as seed:
        seed.ip(SENDER, "route", "add", TARGET, "dev", "eth0")  # on-link: no gateway
        yield seed


@pytest.mark.parametrize("case", list(CASES))
def test_on_link_next_hop_reaches_the_veth_peer_only_when_it_answers(
        case: str, lab: object, tmp_path: Path) -> None:
    apply, revert, reaches = CASES[case]
    veth, mac = _peer_veth(lab)
    lab.ip(SENDER, "neigh", "flush", "dev", "eth0", check=False)  # type: ignore[attr-defined]
    if apply is not None:
        apply(lab, veth, mac)
    try:
        bundle = tmp_path / "bundle"
        res = lab.collect(str(bundle))  # type: ignore[attr-defined]
        assert res.returncode == 0, res.stderr
        snap = load_snapshot(str(bundle))
        t = Tracer(snap).trace(resolve(snap, "notsleep", role="source"),
                               resolve(snap, f"{TARGET}:{PORT}", role="destination"))
        first = t.legs[0].result
        trace_reaches = any(h.netns == NODE for h in first.hops)
        arp_drop = first.disposition == Disposition.DROPPED and (
            "unanswered" in (first.reason or "") or "not the peer's" in (first.reason or ""))

        before = _in_receives(lab, NODE)
        landing = lab.connect(SENDER, TARGET, PORT, timeout=3.0)  # type: ignore[attr-defined]
        received = _in_receives(lab, NODE) - before
        state = _neigh_state(lab)
    finally:
        if revert is not None:
            revert(lab, veth, mac)
    kernel = f"kernel: connect {landing.outcome}, neigh {state}, peer InReceives +{received}"
    ours = f"trace: {first.disposition.value}: {first.reason}"
    assert trace_reaches == reaches, f"{case}: {ours}; {kernel}"
    assert arp_drop == (not reaches), f"{case}: {ours}; {kernel}"
    assert (received > 0) == reaches, f"{case}: {ours}; {kernel}"
    if first.disposition == Disposition.DELIVERED:  # where the trace says it lands
        assert first.delivered_to is not None
        assert (landing.outcome, landing.netns, landing.listener) == (
            "accepted", first.delivered_to.netns,
            f"{first.delivered_to.address}:{first.delivered_to.port}"), f"{ours}; {kernel}"
    else:
        assert landing.outcome != "accepted", f"{ours}; {kernel}"
    if case == "nobody-answers":
        assert state and set(state) <= {"INCOMPLETE", "FAILED"}, kernel
    elif case.startswith("static"):
        assert state == ["PERMANENT"], kernel
    else:
        assert state and not set(state) & {"INCOMPLETE", "FAILED"}, kernel
