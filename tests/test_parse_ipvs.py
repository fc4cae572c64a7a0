"""`ipvsadm -Ln --exact` (ipvsadm 1.31 format) and the IPVS virtual-service lookup."""

from __future__ import annotations

import ipaddress

import pytest

from ambientctl.analyzers.ipvs import virtual_service
from ambientctl.analyzers.packet import Packet
from ambientctl.analyzers.parse.ipvs import parse_ipvsadm
from ambientctl.errors import ParseError

# The shape ipvsadm prints (ipvsadm.c print_title / print_service_entry / print_dest),
# with kube-proxy IPVS mode's services: rr scheduler, Masq real servers, a persistent
# (session affinity) service, an IPv6 one and a firewall-mark one.
DUMP = """IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.96.0.1:443 rr
  -> 172.18.0.2:6443              Masq    1      3          0
TCP  10.96.0.10:53 rr
  -> 10.244.0.2:53                Masq    1      0          0
  -> 10.244.0.3:53                Masq    1      0          0
UDP  10.96.0.10:53 rr
  -> 10.244.0.2:53                Masq    1      0          12
TCP  10.96.47.113:9080 rr persistent 10800
  -> 10.244.1.4:9080              Masq    1      0          0
TCP  [fd00:10:96::a]:53 rr
  -> [fd00:10:244::2]:53          Masq    1      0          0
FWM  100 rr
  -> 10.244.1.9:80                Masq    1      0          0
"""
P = "nodes/w1/host/ipvsadm.txt"


def _pkt(dst: str, dport: int, proto: str = "tcp", mark: int = 0) -> Packet:
    ip = ipaddress.ip_address(dst)
    return Packet(family=ip.version, proto=proto, src=None, dst=ip, sport=40000,
                  dport=dport, mark=mark)


def test_services_real_servers_flags_and_lines_are_read() -> None:
    svcs = parse_ipvsadm(DUMP, P)
    assert [(s.proto, str(s.address), s.port, s.scheduler, s.flags) for s in svcs] == [
        ("tcp", "10.96.0.1", 443, "rr", ()), ("tcp", "10.96.0.10", 53, "rr", ()),
        ("udp", "10.96.0.10", 53, "rr", ()), ("tcp", "10.96.47.113", 9080, "rr",
                                              ("persistent", "10800")),
        ("tcp", "fd00:10:96::a", 53, "rr", ()), ("fwm", "None", None, "rr", ())]
    dns = svcs[1]
    assert [(str(r.address), r.port, r.forward, r.weight) for r in dns.reals] == [
        ("10.244.0.2", 53, "Masq", 1), ("10.244.0.3", 53, "Masq", 1)]
    assert dns.source.line == 6 and dns.reals[1].source.line == 8
    assert svcs[5].fwmark == 100


def test_no_ipvs_services_is_an_empty_table() -> None:
    head = "\n".join(DUMP.splitlines()[:3]) + "\n"
    assert parse_ipvsadm(head, P) == ()


@pytest.mark.parametrize("bad", ["", "*nat\n:PREROUTING ACCEPT\n",
                                 DUMP.replace("172.18.0.2:6443", "kubernetes:https"),
                                 DUMP + "  -> 10.244.0.9\n"])
def test_garbage_or_names_or_a_cut_line_is_a_parse_error(bad: str) -> None:
    with pytest.raises(ParseError):
        parse_ipvsadm(bad, P)


def test_virtual_service_by_proto_address_port_then_fwmark() -> None:
    svcs = parse_ipvsadm(DUMP, P)
    assert virtual_service(svcs, _pkt("10.96.0.10", 53, "udp")) is svcs[2]
    assert virtual_service(svcs, _pkt("10.96.0.10", 53)) is svcs[1]
    assert virtual_service(svcs, _pkt("10.96.0.10", 54)) is None
    assert virtual_service(svcs, _pkt("10.1.2.3", 80, mark=100)) is svcs[5]
