"""The seed lab in the real kernel: the seed's paths work, and every fault breaks one.

The oracle is the kernel: a real TCP connection from a lab namespace, answered by the
emulated listener it landed on (`SeedLab.connect`). The expected landings are the seed's
(shared/seed/000_6ed5710dbf089bea.txt) and istio-datapath.md §2.5's packet walks.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ambientlab.faults import FAULTS
from ambientlab.netns import NETNS_DIR, REGISTRY_DIR

pytestmark = pytest.mark.kernel

SLEEP = "ambient-worker/pod/default/sleep-7b85956664-z6qh7"
ZT1 = "ambient-worker/pod/istio-system/ztunnel-nptf6"
ZT2 = "ambient-worker2/pod/istio-system/ztunnel-vxv4b"
PRODUCTPAGE = "ambient-worker2/pod/default/productpage-v1-7c548b785b-w9zl6"
W, W2 = "ambient-worker/host", "ambient-worker2/host"
VIP = "10.96.182.142"


# --------------------------------------------------------------------------- healthy paths


def test_sleep_to_productpage_service_lands_on_local_ztunnel_outbound_with_vip_kept(lab) -> None:
    landing = lab.connect(SLEEP, VIP, 9080)
    assert landing.outcome == "accepted", landing
    assert landing.netns == ZT1
    assert landing.listener == "127.0.0.1:15001"
    assert landing.local == f"{VIP}:9080"  # TPROXY keeps the Service IP: no kube-proxy DNAT
    assert landing.peer.startswith("10.244.2.4:")


def test_hbone_from_ztunnel_lands_on_remote_ztunnel_15008(lab) -> None:
    landing = lab.connect(ZT1, "10.244.1.7", 15008)
    assert landing.outcome == "accepted", landing
    assert (landing.netns, landing.listener) == (ZT2, "127.0.0.1:15008")
    assert landing.local == "10.244.1.7:15008"
    assert landing.peer.startswith("10.244.2.3:")


def test_spoofed_inbound_from_ztunnel_reaches_app_with_client_ip(lab) -> None:
    landing = lab.connect(ZT2, "10.244.1.7", 9080, src_ip="10.244.2.4")
    assert landing.outcome == "accepted", landing
    assert (landing.netns, landing.listener) == (PRODUCTPAGE, "0.0.0.0:9080")
    assert landing.peer.startswith("10.244.2.4:")  # the original client, not ztunnel


def test_node_to_pod_is_captured_by_the_pods_ztunnel_inbound_plaintext(lab) -> None:
    landing = lab.connect(W, "10.244.1.7", 9080)
    assert landing.outcome == "accepted", landing
    assert (landing.netns, landing.listener) == (ZT2, "127.0.0.1:15006")
    assert landing.local == "10.244.1.7:9080"
    assert landing.peer.startswith("172.18.0.2:")


def test_a_closed_port_in_a_pod_without_redirection_is_refused(lab) -> None:
    # ztunnel pods are not in the ipset: nothing intercepts, the kernel answers RST.
    assert lab.connect(ZT1, "10.244.1.2", 9999).outcome == "refused"


def test_connections_are_logged_as_json_lines(lab) -> None:
    lab.connect(SLEEP, VIP, 9080)
    last = json.loads(lab.connections_log.read_text().splitlines()[-1])
    assert last["netns"] == ZT1 and last["listener"] == "127.0.0.1:15001"
    assert last["original_dst"] == f"{VIP}:9080"


# --------------------------------------------------------------------------- the seed's own output


SEED_IP_RULE = """0:	from all lookup local
100:	from all fwmark 0x200/0x200 goto 32766
101:	from all fwmark 0x100/0x100 lookup 101
102:	from all fwmark 0x40/0x40 lookup 102
103:	from all lookup 100
32766:	from all lookup main
32767:	from all lookup default
"""

ZTUNNEL_IP_RULE = """0:	from all lookup local
20000:	from all fwmark 0x400/0xfff lookup 100
20001:	from all fwmark 0x401/0xfff lookup 101
20002:	from all fwmark 0x402/0xfff lookup 102
20003:	from all fwmark 0x4d3/0xfff lookup 100
32766:	from all lookup main
32767:	from all lookup default
"""


def test_node_and_ztunnel_print_what_the_seed_and_its_era_printed(lab) -> None:
    assert lab.exec(W2, "ip", "rule").stdout == SEED_IP_RULE
    table101 = lab.exec(W2, "ip", "route", "show", "table", "101").stdout.split("\n")
    assert [line.strip() for line in table101 if line] == [
        "default via 192.168.127.2 dev istioout",
        "10.244.1.2 dev veth5db63c11 scope link",
    ]
    got = lab.exec(W2, "ip", "route", "get", "10.244.1.7").stdout
    assert got.startswith("10.244.1.7 via 192.168.126.2 dev istioin table 100 src 10.244.1.1")
    # istio/istio#42197 (2022-11) ztunnel netns capture of the init-script era
    assert lab.exec(ZT2, "ip", "rule").stdout == ZTUNNEL_IP_RULE
    table102 = lab.exec(ZT2, "ip", "route", "show", "table", "102").stdout.split("\n")
    assert [line.strip() for line in table102 if line] == [
        "default via 192.168.126.1 dev pistioin",
        "10.244.1.1 dev eth0 scope link",
    ]


def test_jumps_are_inserted_ahead_of_kube_proxy(lab) -> None:
    nat = lab.exec(W, "iptables", "-t", "nat", "-S", "PREROUTING").stdout.splitlines()
    jumps = [line.split("-j ", 1)[1] for line in nat if "-j " in line]
    assert jumps == ["ztunnel-PREROUTING", "KUBE-SERVICES"]
    filt = lab.exec(W, "iptables", "-t", "filter", "-S").stdout
    assert "ztunnel" not in filt  # the Sept-2022 design has no filter-table chain


def test_every_ambient_pod_is_in_the_ipset_with_its_uid(lab) -> None:
    out = lab.exec(W2, "ipset", "list", "ztunnel-pods-ips").stdout
    members = {line.split()[0] for line in out.splitlines() if line.startswith("10.244.")}
    # the seed's capture lacks details' 10.244.1.9; the healthy lab must not
    assert members == {"10.244.1.4", "10.244.1.5", "10.244.1.6", "10.244.1.7", "10.244.1.8",
                       "10.244.1.9"}
    assert '10.244.1.5 comment "0ff78312-3a13-4a02-b39d-644bfb91e861"' in out


def test_ztunnel_listeners_are_transparent_and_marked(lab) -> None:
    out = lab.exec(ZT1, "ss", "-Hltne").stdout
    rows = {line.split()[3]: line for line in out.splitlines()}
    assert "fwmark:0x401" in rows["127.0.0.1:15001"]
    assert "fwmark:0x402" in rows["127.0.0.1:15006"]
    assert "fwmark:0x402" in rows["127.0.0.1:15008"]
    assert '"envoy"' in lab.exec(ZT1, "ss", "-Hltnp").stdout


def test_netns_names_are_unique_and_prefixed(lab) -> None:
    names = [lab.netns_name(i) for i in lab.logical_ids()]
    assert len(set(names)) == len(names) == 12
    assert all(n.startswith(lab.lab.id + "-") and n.startswith("amb") for n in names)
    assert all((NETNS_DIR / n).exists() for n in names)


# --------------------------------------------------------------------------- faults


def _state(lab, logical_id: str) -> list[str]:
    """What a fault may change in one namespace (counters and timestamps left out)."""
    out = []
    for argv in (["iptables-save"], ["ip", "rule"], ["ip", "route", "show", "table", "all"],
                 ["ipset", "save"], ["ip", "-br", "link"], ["sysctl", "net.ipv4.conf"],
                 ["ss", "-Hltn"]):
        lines = [x for x in lab.exec(logical_id, *argv).stdout.splitlines() if not x.startswith("#")]
        if argv[0] == "ipset":  # hash order may change when a member is re-added
            lines.sort()
        out.append("\n".join(lines))
    return out


# fault -> (namespace it touches, probe (from, dst, port, kwargs), expected outcome, extra check)
FAULT_CASES = {
    # SYN DNATed to productpage, taken by ztunnel-vxv4b:15006; SYN-ACK misrouted into
    # ztunnel-nptf6 by worker's table-100 route for the sleep pod.
    "ipset-missing-sleep": (W, (SLEEP, VIP, 9080, {}), "timeout"),
    # marked 0x100, no rule routes the mark: main -> kind bridge, dropped there
    "ip-rule-101-missing": (W, (SLEEP, VIP, 9080, {}), "timeout"),
    # nothing claims the SYN on pistioout; ztunnel netns does not forward
    "tproxy-15001-missing": (ZT1, (SLEEP, VIP, 9080, {}), "timeout"),
    # the kernel deletes table 101's default route with the device
    "istioout-down": (W, (SLEEP, VIP, 9080, {}), "timeout"),
    # productpage reached directly, but its SYN-ACK is marked 0x100 and diverted to ztunnel
    "table100-route-missing-productpage": (W2, (W, "10.244.1.7", 9080, {}), "timeout"),
    # still reaches ztunnel, but the Service IP is gone (checked below)
    "kube-proxy-ahead": (W, (SLEEP, VIP, 9080, {}), "accepted"),
    # strict rp_filter: source 10.244.2.4 is "via eth0", not pistioout -> martian, dropped
    "rp-filter-pistioout": (ZT1, (SLEEP, VIP, 9080, {}), "timeout"),
    # TPROXY finds no socket on 127.0.0.1:15001 and drops
    "ztunnel-outbound-down": (ZT1, (SLEEP, VIP, 9080, {}), "timeout"),
}


def test_every_fault_has_a_case() -> None:
    assert set(FAULT_CASES) == set(FAULTS)
    assert all(f.doc for f in FAULTS.values())


@pytest.mark.parametrize("fault", sorted(FAULT_CASES))
def test_fault_changes_the_real_connection_and_reverts_exactly(lab, fault: str) -> None:
    touched, (src, dst, port, kwargs), expected = FAULT_CASES[fault]
    healthy = lab.connect(src, dst, port, **kwargs)
    assert healthy.outcome == "accepted", healthy
    before = _state(lab, touched)
    with lab.injected(fault):
        broken = lab.connect(src, dst, port, timeout=1.0, **kwargs)
        assert broken.outcome == expected, broken
        assert (broken.outcome, broken.netns, broken.local) != (
            healthy.outcome, healthy.netns, healthy.local
        )
        assert _state(lab, touched) != before
    assert _state(lab, touched) == before
    again = lab.connect(src, dst, port, **kwargs)
    assert (again.outcome, again.netns, again.listener, again.local) == (
        healthy.outcome, healthy.netns, healthy.listener, healthy.local
    )


def test_kube_proxy_ahead_loses_the_service_ip(lab) -> None:
    with lab.injected("kube-proxy-ahead"):
        landing = lab.connect(SLEEP, VIP, 9080)
    assert (landing.netns, landing.listener) == (ZT1, "127.0.0.1:15001")
    assert landing.local == "10.244.1.7:9080"  # DNATed before ztunnel-PREROUTING could ACCEPT


def test_istioout_down_takes_its_routes_with_it(lab) -> None:
    with lab.injected("istioout-down"):
        table101 = lab.exec(W, "ip", "route", "show", "table", "101").stdout
        peer = lab.exec(ZT1, "ip", "-br", "link", "show", "pistioout").stdout
    assert "istioout" not in table101
    assert "LOWERLAYERDOWN" in peer or "DOWN" in peer


def test_table100_route_missing_also_silences_hbone(lab) -> None:
    with lab.injected("table100-route-missing-productpage"):
        hbone = lab.connect(ZT1, "10.244.1.7", 15008, timeout=1.0)
    # productpage's RST is an ipset member's TCP: marked 0x100 and diverted like a SYN-ACK
    assert hbone.outcome == "timeout"


def test_ztunnel_outbound_down_removes_only_the_15001_listener(lab) -> None:
    with lab.injected("ztunnel-outbound-down"):
        ports = {line.split()[3] for line in lab.exec(ZT1, "ss", "-Hltn").stdout.splitlines()}
        inbound = lab.connect(W2, "10.244.2.4", 80)  # worker2 node -> sleep: inbound 15006
    assert "127.0.0.1:15001" not in ports and "127.0.0.1:15006" in ports
    assert (inbound.netns, inbound.listener) == (ZT1, "127.0.0.1:15006")


# --------------------------------------------------------------------------- lifecycle


def _lab_leftovers(lab_id: str) -> list[str]:
    left = [p.name for p in NETNS_DIR.glob(f"{lab_id}-*")]
    left += [str(p) for p in Path("/tmp").glob(f"ambientlab-{lab_id}-*")]
    left += [str(p) for p in REGISTRY_DIR.glob(f"{lab_id}.json")]
    return left


def test_teardown_removes_namespaces_processes_and_files() -> None:
    from ambientlab.seed import SeedLab

    with SeedLab() as fresh:
        lab_id = fresh.lab.id
        pids = [pid for i in fresh.logical_ids() for pid in fresh.netns(i).pids()]
        assert pids and _lab_leftovers(lab_id)
    assert _lab_leftovers(lab_id) == []
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_a_build_failing_halfway_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from ambientlab import seed

    def boom(self: object, node: object) -> None:
        raise RuntimeError("injected build failure")

    monkeypatch.setattr(seed.SeedLab, "_kube_and_istio_node", boom)
    lab = seed.SeedLab()
    with pytest.raises(RuntimeError, match="injected"):
        lab.__enter__()
    assert lab.lab is not None and _lab_leftovers(lab.lab.id) == []


def test_cleanup_removes_dead_labs_and_spares_live_ones() -> None:
    from ambientlab.cleanup import cleanup
    from ambientlab.netns import Lab

    live = Lab()
    dead = Lab()
    try:
        live.add_netns("x")
        dead.add_netns("x")
        # make `dead` look like a crashed run: its owner is a process that has exited
        proc = subprocess.Popen(["true"])
        proc.wait()
        doc = json.loads(dead.registry.read_text())
        doc["owner_pid"] = proc.pid
        dead.registry.write_text(json.dumps(doc))
        report = cleanup()
        assert any(line.startswith(f"{dead.id}: removed 1") for line in report), report
        assert any(line.startswith(f"{live.id}: owner pid") for line in report), report
        assert not (NETNS_DIR / f"{dead.id}-x").exists()
        assert (NETNS_DIR / f"{live.id}-x").exists()
    finally:
        live.teardown()
        dead.teardown()
    assert _lab_leftovers(live.id) == [] and _lab_leftovers(dead.id) == []


def test_emulated_processes_die_with_the_lab() -> None:
    from ambientlab.seed import SeedLab

    fresh = SeedLab().__enter__()
    try:
        proc, _ = fresh._servers[ZT1]
        assert proc.poll() is None  # running
        in_netns = fresh.netns(ZT1).pids()
        assert proc.pid in in_netns
    finally:
        fresh.teardown()
    assert proc.poll() is not None
    for pid in in_netns:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
