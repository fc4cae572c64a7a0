"""Injectable faults: one real, small change to the kernel state of the seed lab each.

Every fault is a `Fault(apply, revert)` whose docstring gives the exact commands and what
they do to a real connection (observed in this kernel by `tests/test_lab.py`). `revert`
restores the healthy state exactly (same rule positions), so one lab can serve many tests:

    with lab.injected("istioout-down"):
        assert lab.connect(SLEEP, "10.96.182.142", 9080).outcome == "timeout"

Logical ids used below: W = "ambient-worker/host", W2 = "ambient-worker2/host",
ZT = "ambient-worker/pod/istio-system/ztunnel-nptf6", SLEEP = the sleep pod.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ambientlab.topology import IPSET, OUTBOUND_TUN, OUTBOUND_TUN_ZTUNNEL, WORKER, WORKER2, find_pod

if TYPE_CHECKING:
    from ambientlab.seed import SeedLab

W = WORKER.logical_host()
W2 = WORKER2.logical_host()
ZT = WORKER.logical_pod(WORKER.ztunnel)

_KUBE_SERVICES_JUMP = ("-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES")
_TPROXY_15001 = ("-p", "tcp", "-i", "pistioout", "-j", "TPROXY", "--tproxy-mark", "0x400/0xfff",
                 "--on-port", "15001", "--on-ip", "127.0.0.1")


@dataclass(frozen=True)
class Fault:
    """A named fault: `apply(lab)` breaks, `revert(lab)` heals."""

    name: str
    apply: Callable[[SeedLab], None]
    revert: Callable[[SeedLab], None]

    @property
    def doc(self) -> str:
        """What the fault does (the apply function's docstring)."""
        return (self.apply.__doc__ or "").strip()


# --------------------------------------------------------------------------- ipset


def ipset_missing_sleep(lab: SeedLab) -> None:
    """The sleep pod (10.244.2.4) is missing from ambient-worker's `ztunnel-pods-ips`.

        ip netns exec <W> ipset del ztunnel-pods-ips 10.244.2.4

    Its table-100 route stays. Effect on sleep -> productpage:9080 (VIP 10.96.182.142):
    no 0x100 mark, so nat `ztunnel-PREROUTING` does not ACCEPT and kube-proxy DNATs to
    10.244.1.7:9080; the SYN leaves for ambient-worker2, whose `ip rule 103`/table 100 hands
    it to ztunnel-vxv4b's inbound 15006 (the remote ztunnel sees plaintext from an
    un-meshed client). Its SYN-ACK comes back to ambient-worker for 10.244.2.4, which
    `ip rule 103` -> table 100 (`10.244.2.4 via 192.168.126.2 dev istioin`) sends into
    ztunnel-nptf6's inbound tunnel instead of to the pod: sleep never completes the
    handshake -> "timeout".
    """
    lab.exec(W, "ipset", "del", IPSET, "10.244.2.4")


def _ipset_restore_sleep(lab: SeedLab) -> None:
    _, pod = find_pod("default", "sleep-7b85956664-z6qh7")
    lab.exec(W, "ipset", "add", IPSET, pod.ip, "comment", pod.pod_uid)


# --------------------------------------------------------------------------- ip rule


def ip_rule_101_missing(lab: SeedLab) -> None:
    """ambient-worker lost `ip rule 101 fwmark 0x100/0x100 lookup 101`.

        ip -n <W> rule del priority 101

    Effect on sleep -> 10.96.182.142:9080: the SYN is still marked 0x100 and still skips
    kube-proxy (nat ACCEPT), but nothing routes the mark to table 101: rule 103 (table 100
    has no route for the VIP) falls through to main, `default via 172.18.0.1 dev eth0`, and
    the un-NATed VIP packet dies on the kind bridge -> "timeout".
    """
    lab.ip(W, "rule", "del", "priority", "101")


def _ip_rule_101_restore(lab: SeedLab) -> None:
    lab.ip(W, "rule", "add", "priority", "101", "fwmark", "0x100/0x100", "lookup", "101")


# --------------------------------------------------------------------------- TPROXY


def tproxy_15001_missing(lab: SeedLab) -> None:
    """ztunnel-nptf6 lost its outbound TPROXY rule (mangle PREROUTING, position 2).

        ip netns exec <ZT> iptables -t mangle -D PREROUTING -p tcp -i pistioout -j TPROXY \\
            --tproxy-mark 0x400/0xfff --on-port 15001 --on-ip 127.0.0.1

    Effect on sleep -> 10.96.182.142:9080: the SYN arrives on `pistioout` as before but no
    socket claims it and no mark selects table 100; the ztunnel netns routes the VIP by
    `main` back out of eth0, but a pod namespace does not forward (ip_forward=0): dropped
    -> "timeout".
    """
    lab.exec(ZT, "iptables", "-t", "mangle", "-D", "PREROUTING", *_TPROXY_15001)


def _tproxy_15001_restore(lab: SeedLab) -> None:
    lab.exec(ZT, "iptables", "-t", "mangle", "-I", "PREROUTING", "2", *_TPROXY_15001)


# --------------------------------------------------------------------------- links


def istioout_down(lab: SeedLab) -> None:
    """ambient-worker's outbound tunnel device is down.

        ip -n <W> link set istioout down

    The kernel deletes every route through a device that goes down (here table 101's
    `default via 192.168.127.2 dev istioout` and the connected 192.168.127.0/30), and the
    peer `pistioout` loses carrier. Effect on sleep -> 10.96.182.142:9080: marked 0x100,
    rule 101 finds no route in table 101 and falls through to main's default via the
    kind bridge -> "timeout" (as ip-rule-101-missing, but the rule is still there).
    """
    lab.ip(W, "link", "set", OUTBOUND_TUN, "down")


def _istioout_up(lab: SeedLab) -> None:
    lab.ip(W, "link", "set", OUTBOUND_TUN, "up")
    lab.ip(W, "route", "replace", "table", "101", "0.0.0.0/0", "via", OUTBOUND_TUN_ZTUNNEL,
           "dev", OUTBOUND_TUN)


# --------------------------------------------------------------------------- routes


_PRODUCTPAGE_ROUTE = ("table", "100", "10.244.1.7/32", "via", "192.168.126.2", "dev", "istioin",
                      "src", "10.244.1.1")


def table100_route_missing_productpage(lab: SeedLab) -> None:
    """ambient-worker2 lost productpage's table-100 route (istio-cni's per-pod route).

        ip -n <W2> route del table 100 10.244.1.7/32 via 192.168.126.2 dev istioin src 10.244.1.1

    Effect on anything reaching 10.244.1.7 through ambient-worker2's routing: rule 103
    finds nothing in table 100 and main delivers the SYN straight to productpage's veth,
    bypassing ztunnel-vxv4b. But productpage is still an ipset member, and the node's
    mangle rule marks ALL its TCP 0x100 (it does not look at the conntrack direction): its
    SYN-ACK (or RST) is routed by table 101 into ztunnel-vxv4b's outbound tunnel, where
    TPROXY hands it to the 15001 listener; that answers with a RST (spoofing the client),
    which the node routes back to productpage, closing its half-open connection. The client
    never hears back: ambient-worker/host -> 10.244.1.7:9080 and HBONE from
    ztunnel-nptf6 -> 10.244.1.7:15008 both end in "timeout" (healthy: ztunnel-vxv4b 15006
    / 15008). Traffic that never touches worker2's routing is unaffected (sleep ->
    productpage's VIP still lands on ztunnel-nptf6:15001).
    """
    lab.ip(W2, "route", "del", *_PRODUCTPAGE_ROUTE)


def _table100_restore(lab: SeedLab) -> None:
    lab.ip(W2, "route", "add", *_PRODUCTPAGE_ROUTE)


# --------------------------------------------------------------------------- rule order


def kube_proxy_ahead(lab: SeedLab) -> None:
    """kube-proxy's jump is ahead of Istio's in ambient-worker's nat PREROUTING.

        ip netns exec <W> iptables -t nat -D PREROUTING -m comment \\
            --comment "kubernetes service portals" -j KUBE-SERVICES
        ip netns exec <W> iptables -t nat -I PREROUTING 1 -m comment \\
            --comment "kubernetes service portals" -j KUBE-SERVICES

    Effect on sleep -> 10.96.182.142:9080: mangle still marks 0x100 (mangle runs before
    nat), but KUBE-SERVICES DNATs before `ztunnel-PREROUTING` can ACCEPT. The connection
    still reaches ztunnel-nptf6:15001, yet its original destination is the pod
    10.244.1.7:9080, not the VIP: ztunnel can no longer tell which service was asked for.
    """
    lab.exec(W, "iptables", "-t", "nat", "-D", "PREROUTING", *_KUBE_SERVICES_JUMP)
    lab.exec(W, "iptables", "-t", "nat", "-I", "PREROUTING", "1", *_KUBE_SERVICES_JUMP)


def _kube_proxy_behind(lab: SeedLab) -> None:
    lab.exec(W, "iptables", "-t", "nat", "-D", "PREROUTING", *_KUBE_SERVICES_JUMP)
    lab.exec(W, "iptables", "-t", "nat", "-I", "PREROUTING", "2", *_KUBE_SERVICES_JUMP)


# --------------------------------------------------------------------------- sysctl


def rp_filter_pistioout(lab: SeedLab) -> None:
    """Strict reverse-path filtering inside ztunnel-nptf6 on the outbound tunnel.

        ip netns exec <ZT> sysctl -w net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.pistioout.rp_filter=1

    The kernel uses max(all, dev). Effect on sleep -> 10.96.182.142:9080: TPROXY marks the
    SYN and `ip rule 20000` makes it local, but validating its source 10.244.2.4 against
    the ztunnel netns' `main` table says "reachable via eth0", not `pistioout`: the SYN is
    dropped as a martian -> "timeout".
    """
    lab.netns(ZT).sysctl([("net.ipv4.conf.all.rp_filter", "1"),
                          ("net.ipv4.conf.pistioout.rp_filter", "1")])


def _rp_filter_restore(lab: SeedLab) -> None:
    lab.netns(ZT).sysctl([("net.ipv4.conf.all.rp_filter", "0"),
                          ("net.ipv4.conf.pistioout.rp_filter", "0")])


# --------------------------------------------------------------------------- processes


def ztunnel_outbound_down(lab: SeedLab) -> None:
    """ambient-worker's ztunnel stops listening on 15001 (its other listeners stay).

    The emulated ztunnel of ztunnel-nptf6 is restarted without the 127.0.0.1:15001
    listener (no kernel command: the process simply has no such socket). Effect on
    sleep -> 10.96.182.142:9080: the TPROXY rule still matches, finds no transparent
    socket on 127.0.0.1:15001 and drops the SYN (`xt_TPROXY`: "no socket, dropping") ->
    "timeout"; `ss -Hltn` in the ztunnel netns no longer shows :15001.
    """
    specs = tuple(s for s in lab.server_specs(ZT) if s.port != 15001)
    lab.restart_server(ZT, specs)


def _ztunnel_outbound_up(lab: SeedLab) -> None:
    from ambientlab.seed import ZTUNNEL_LISTENERS

    lab.restart_server(ZT, ZTUNNEL_LISTENERS)


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Fault("ipset-missing-sleep", ipset_missing_sleep, _ipset_restore_sleep),
        Fault("ip-rule-101-missing", ip_rule_101_missing, _ip_rule_101_restore),
        Fault("tproxy-15001-missing", tproxy_15001_missing, _tproxy_15001_restore),
        Fault("istioout-down", istioout_down, _istioout_up),
        Fault("table100-route-missing-productpage", table100_route_missing_productpage,
              _table100_restore),
        Fault("kube-proxy-ahead", kube_proxy_ahead, _kube_proxy_behind),
        Fault("rp-filter-pistioout", rp_filter_pistioout, _rp_filter_restore),
        Fault("ztunnel-outbound-down", ztunnel_outbound_down, _ztunnel_outbound_up),
    )
}
