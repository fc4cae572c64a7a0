"""kube-proxy's IPVS mode: which virtual service takes a packet, and where it sends it.

kube-proxy (IPVS mode) binds every Service address to the dummy device `kube-ipvs0`, so the
kernel routes a packet for a ClusterIP as local; IPVS hooks NF_INET_LOCAL_IN (after the
filter INPUT chains: `ip_vs_remote_request4`, priority NF_IP_PRI_NAT_SRC - 1) and, for a
virtual service with Masq forwarding, rewrites the destination to one real server chosen
by the scheduler and transmits it (`ip_vs_nat_xmit`): the packet leaves the node, it is
never "delivered to a listener on the node".

This kernel has no IPVS module, so none of this is proven against a kernel here; it is
modelled from `ipvsadm -Ln --exact` (docs/trace.md says so). The scheduler's choice is a
fork like kube-proxy's random choice in iptables/nftables mode.
"""

from __future__ import annotations

from ambientctl.analyzers.packet import Packet
from ambientctl.model import IPAddress, IpvsService, NetNamespace

__all__ = ["IPVS_DEVICE", "held_by_ipvs", "takes", "virtual_service"]

IPVS_DEVICE = "kube-ipvs0"


def held_by_ipvs(ns: NetNamespace, ip: IPAddress) -> bool:
    """True when `ip` is an address of kube-proxy's `kube-ipvs0` dummy device in `ns`."""
    link = ns.link(IPVS_DEVICE)
    return link is not None and any(a.interface.ip == ip for a in link.addresses)


def takes(ns: NetNamespace, p: Packet) -> bool:
    """Might IPVS take this locally delivered packet at LOCAL_IN?

    `ip_vs_remote_request4` looks every local packet up in the virtual service table, not
    only those for `kube-ipvs0`'s addresses: kube-proxy's NodePorts are virtual services on
    the node's own addresses (`TCP 172.18.0.2:30080 rr`). So: the address is on kube-ipvs0,
    or the table has a service for it, or the node is in IPVS mode (kube-ipvs0 exists) and
    the table was not collected - then the walk must stop, not assume a local listener.
    """
    if held_by_ipvs(ns, p.dst):
        return True
    if ns.ipvs is not None:
        return virtual_service(ns.ipvs, p) is not None
    return ns.link(IPVS_DEVICE) is not None


def virtual_service(services: tuple[IpvsService, ...], p: Packet) -> IpvsService | None:
    """The virtual service for the packet's protocol, destination address and port.

    FWM services (matched by the packet's mark) are looked up after the address ones, as
    `ip_vs_service_find` does (`__ip_vs_service_find`, then `__ip_vs_svc_fwm_find`).
    """
    for svc in services:
        if svc.proto == p.proto and svc.address == p.dst and svc.port == p.dport:
            return svc
    for svc in services:
        if svc.fwmark is not None and svc.fwmark == p.mark:
            return svc
    return None
