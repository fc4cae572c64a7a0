"""Netfilter walk semantics on small literal rulesets (iptables(8), iptables-extensions(8))."""

from __future__ import annotations

import ipaddress

from ambientctl.analyzers import netfilter
from ambientctl.analyzers.packet import Packet
from ambientctl.analyzers.parse.iptables import parse_iptables_save
from ambientctl.model import NetNamespace

PATH = "nodes/n/host/iptables-save.txt"


def ns_with(rules: str) -> NetNamespace:
    rs = parse_iptables_save(rules, PATH)
    return NetNamespace(id="n/host", node="n", pod=None, dir="nodes/n/host", links=(),
                        routes=(), rules=(), rulesets=(rs,), ipsets={}, listeners=())


def pkt(**kw: object) -> Packet:
    base: dict[str, object] = dict(family=4, proto="tcp", src=ipaddress.ip_address("10.0.0.1"),
                                   dst=ipaddress.ip_address("10.0.0.2"), sport=40000, dport=80,
                                   iif="eth0")
    base.update(kw)
    return Packet(**base)  # type: ignore[arg-type]


def run(ns: NetNamespace, hook: str, p: Packet) -> netfilter.HookResult:
    return netfilter.run_hook(ns, hook, p, netfilter.Context(ns, frozenset(), ns.listeners))


MANGLE = """*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
{chains}
{rules}
COMMIT
"""


def mangle(chains: str, rules: str) -> NetNamespace:
    return ns_with(MANGLE.format(chains=chains, rules=rules))


def test_set_xmark_clears_the_mask_bits_then_xors_the_value() -> None:
    ns = mangle("", "-A PREROUTING -j MARK --set-xmark 0x100/0x300")
    res = run(ns, "prerouting", pkt(mark=0x2F0))
    assert res.packet.mark == (0x2F0 & ~0x300) ^ 0x100 == 0x1F0


def test_return_from_a_chain_entered_by_goto_returns_to_the_jumping_chain() -> None:
    ns = mangle(":A - [0:0]\n:B - [0:0]", "\n".join([
        "-A PREROUTING -j A",
        "-A PREROUTING -j MARK --set-xmark 0x4/0x4",
        "-A A -g B",
        "-A A -j MARK --set-xmark 0x1/0x1",  # skipped: B was entered by goto from A
        "-A B -j RETURN",
    ]))
    res = run(ns, "prerouting", pkt())
    assert res.packet.mark == 0x4


def test_end_of_a_chain_entered_by_goto_from_the_base_chain_applies_the_policy() -> None:
    ns = ns_with("*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                 ":X - [0:0]\n-A INPUT -g X\n-A INPUT -j ACCEPT\nCOMMIT\n")
    res = run(ns, "input", pkt())
    assert res.verdict == "drop" and res.steps[-1].action == "policy"


def test_connmark_save_and_restore_use_their_masks() -> None:
    ns = mangle("", "\n".join([
        "-A PREROUTING -j CONNMARK --save-mark --nfmask 0x220 --ctmask 0x220",
        "-A POSTROUTING -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0x0f0",
    ]))
    res = run(ns, "prerouting", pkt(mark=0x3FF, ctmark=0x1000))
    assert res.packet.ctmark == (0x1000 & ~0x220) ^ (0x3FF & 0x220) == 0x1220
    res = run(ns, "postrouting", pkt(mark=0x1, ctmark=0xABC))
    assert res.packet.mark == (0x1 & ~0xFFFFFFFF) ^ (0xABC & 0x0F0) == 0xB0


def test_negated_mark_match_and_interface_wildcard() -> None:
    ns = mangle("", "\n".join([
        "-A PREROUTING -i veth+ -m mark ! --mark 0x539/0xfff -j MARK --set-xmark 0x1/0x1",
    ]))
    assert run(ns, "prerouting", pkt(iif="veth1234")).packet.mark == 0x1
    assert run(ns, "prerouting", pkt(iif="eth0")).packet.mark == 0x0
    assert run(ns, "prerouting", pkt(iif="veth1", mark=0x539)).packet.mark == 0x539


def test_unmodelled_match_that_decides_the_path_is_insufficient_info_naming_the_rule() -> None:
    ns = mangle("", "-A PREROUTING -m hashlimit --hashlimit-upto 5/sec -j DROP")
    res = run(ns, "prerouting", pkt())
    assert res.verdict == "insufficient-info"
    assert res.culprit is not None and res.culprit.path == PATH and res.culprit.line == 8
    assert res.culprit.text == "-A PREROUTING -m hashlimit --hashlimit-upto 5/sec -j DROP"
    assert "hashlimit" in (res.reason or "")


def test_unmodelled_match_on_a_log_rule_is_skipped_with_a_note() -> None:
    ns = mangle("", "-A PREROUTING -m hashlimit --hashlimit-upto 5/sec -j LOG\n"
                    "-A PREROUTING -j MARK --set-xmark 0x8/0x8")
    res = run(ns, "prerouting", pkt())
    assert res.verdict == "accept" and res.packet.mark == 0x8
    assert any(s.action == "unknown-skipped" for s in res.steps)


def test_statistic_branches_are_all_walked_and_reported() -> None:
    ns = ns_with("\n".join([
        "*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
        ":POSTROUTING ACCEPT [0:0]", ":SVC - [0:0]", ":SEP1 - [0:0]", ":SEP2 - [0:0]",
        "-A PREROUTING -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j SVC",
        "-A SVC -m statistic --mode random --probability 0.5 -j SEP1",
        "-A SVC -j SEP2",
        "-A SEP1 -p tcp -m tcp -j DNAT --to-destination 10.244.0.5:8080",
        "-A SEP2 -p tcp -m tcp -j DNAT --to-destination 10.244.0.6:8080",
        "COMMIT", ""]))
    res = run(ns, "prerouting", pkt(dst=ipaddress.ip_address("10.96.0.10")))
    assert str(res.packet.dst) == "10.244.0.5" and res.packet.dport == 8080
    assert res.packet.original_dst is not None and str(res.packet.original_dst) == "10.96.0.10:80"
    branches = [b for s in res.steps for b in s.branches]
    assert any("10.244.0.6:8080" in b for b in branches)


def test_nat_chain_without_a_binding_hands_over_to_the_next_nat_chain() -> None:
    # nf_nat_inet_fn: an iptables nat chain ending in ACCEPT does not decide the manip.
    ipt = ns_with("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                  ":POSTROUTING ACCEPT [0:0]\n-A PREROUTING -p udp -j ACCEPT\nCOMMIT\n")
    second = parse_iptables_save(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
        ":POSTROUTING ACCEPT [0:0]\n-A PREROUTING -p tcp -j REDIRECT --to-ports 15006\nCOMMIT\n",
        "nodes/n/host/iptables-legacy-save.txt", backend="iptables-legacy")
    ns = NetNamespace(id="n/host", node="n", pod=None, dir="nodes/n/host", links=(), routes=(),
                      rules=(), rulesets=(*ipt.rulesets, second), ipsets={}, listeners=())  # type: ignore[misc]
    res = run(ns, "prerouting", pkt(iif=None))
    assert res.packet.dport == 15006 and res.packet.dnat_done


def test_tproxy_without_a_listener_drops_and_with_one_assigns_and_marks() -> None:
    from ambientctl.model import Listener, SourceRef

    rules = "-A PREROUTING -p tcp -j TPROXY --on-port 15001 --on-ip 127.0.0.1 --tproxy-mark 0x400/0xfff"
    ns = mangle("", rules)
    assert run(ns, "prerouting", pkt()).verdict == "drop"
    lst = Listener("tcp", ipaddress.ip_address("127.0.0.1"), 15001, SourceRef("ss", 1), 4)
    ns2 = NetNamespace(id=ns.id, node="n", pod=None, dir=ns.dir, links=(), routes=(), rules=(),
                       rulesets=ns.rulesets, ipsets={}, listeners=(lst,))
    res = run(ns2, "prerouting", pkt())
    assert res.verdict == "accept" and res.packet.mark == 0x400
    assert res.packet.tproxy is not None and str(res.packet.tproxy) == "127.0.0.1:15001"
    assert str(res.packet.dst) == "10.0.0.2"  # TPROXY never rewrites the packet


def test_dnat_to_loopback_from_a_device_is_a_martian_unless_route_localnet() -> None:
    """ip-sysctl.rst route_localnet: 127/8 destinations arriving on a device are dropped."""
    from ambientctl.analyzers.parse.host import parse_sysctl
    from ambientctl.analyzers.parse.iproute import parse_ip_addr, parse_ip_route
    from ambientctl.analyzers.path import PathWalker, World
    from ambientctl.analyzers.trace_result import Disposition
    from ambientctl.model import Cluster, NodeState, Snapshot

    addr = ("1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN\n"
            "    inet 127.0.0.1/8 scope host lo\n"
            "2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP\n"
            "    inet 10.0.0.2/24 scope global eth0\n")
    routes = "10.0.0.0/24 dev eth0 proto kernel scope link src 10.0.0.2\n" \
             "local 127.0.0.0/8 dev lo table local proto kernel scope host src 127.0.0.1\n"
    rules = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
             ":POSTROUTING ACCEPT [0:0]\n-A PREROUTING -p tcp -j DNAT --to-destination "
             "127.0.0.1:8080\nCOMMIT\n")
    for localnet, expected in (("0", Disposition.DROPPED), ("1", Disposition.REFUSED)):
        sysctl = parse_sysctl(f"net.ipv4.conf.all.route_localnet = {localnet}\n"
                              "net.ipv4.conf.eth0.route_localnet = 0\n", "n/sysctl.txt")
        ns = NetNamespace(id="n/host", node="n", pod=None, dir="nodes/n/host",
                          links=parse_ip_addr(addr, "a"), routes=parse_ip_route(routes, "r"),
                          rules=(), rulesets=(parse_iptables_save(rules, PATH),), ipsets={},
                          listeners=(), sysctls=sysctl)
        snap = Snapshot("x", Cluster(), {"n": NodeState("n", ns, {})})
        walker = PathWalker(World.build(snap, {ns.id: "not-captured"}))
        hops: list = []
        res = walker._receive(ns, pkt(iif="eth0"), walker._new_hop(ns, hops), hops)
        assert getattr(res, "disposition", None) == expected, res


def test_host_destination_fast_path_decides_like_the_full_match() -> None:
    """Rules `-d A.B.C.D/32` for other addresses are skipped untokenised; negations and
    `-d` inside a quoted comment are not taken by the fast path."""
    rules = [f"-A PREROUTING -d 10.9.0.{i}/32 -j MARK --set-xmark 0x1/0x1" for i in range(200)]
    rules += [
        '-A PREROUTING -m comment --comment "x -d 10.9.9.9/32 y" -j MARK --set-xmark 0x2/0x2',
        "-A PREROUTING ! -d 10.9.9.9/32 -j MARK --set-xmark 0x4/0x4",
        "-A PREROUTING -d 10.0.0.2/32 -j MARK --set-xmark 0x8/0x8",
    ]
    ns = mangle("", "\n".join(rules))
    res = run(ns, "prerouting", pkt())  # dst 10.0.0.2
    assert res.packet.mark == 0x2 | 0x4 | 0x8
    res = run(ns, "prerouting", pkt(dst=ipaddress.ip_address("10.9.0.7")))
    assert res.packet.mark == 0x1 | 0x2 | 0x4
    chain = next(t for t in ns.tables()).chains["PREROUTING"]
    assert "rules" not in chain.__dict__  # never tokenised as a whole
