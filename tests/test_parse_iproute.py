"""`parse_ip_rule`, `parse_ip_route`, `parse_ip_addr`: text and JSON, the seed, malformed input."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import pathlib
import random

import pytest

from ambientctl import model
from ambientctl.analyzers.parse.iproute import parse_ip_addr, parse_ip_route, parse_ip_rule
from ambientctl.errors import ParseError

RAW = pathlib.Path(__file__).resolve().parent / "fixtures" / "raw"
ip = ipaddress.ip_address
net = ipaddress.ip_network


def read(rel: str) -> str:
    return (RAW / rel).read_text()


def bare(items: tuple) -> list:
    """Facts without their SourceRef (text and JSON point at different lines)."""
    out = []
    for x in items:
        x = dataclasses.replace(x, source=None)
        if isinstance(x, model.Link):
            x = dataclasses.replace(
                x, addresses=tuple(dataclasses.replace(a, source=None) for a in x.addresses)
            )
        out.append(x)
    return out


# =========================================================================== ip rule


def test_seed_legacy_node_rules() -> None:
    rules = parse_ip_rule(
        read("ip-rule/seed-legacy-node.txt"), "nodes/ambient-worker2/host/ip-rule.txt"
    )
    assert [(r.priority, r.action.value, r.table, r.goto, r.fwmark, r.fwmask) for r in rules] == [
        (0, "lookup", "local", None, None, model.ALL_ONES),
        (100, "goto", None, 32766, 0x200, 0x200),
        (101, "lookup", "101", None, 0x100, 0x100),
        (102, "lookup", "102", None, 0x40, 0x40),
        (103, "lookup", "100", None, None, model.ALL_ONES),
        (32766, "lookup", "main", None, None, model.ALL_ONES),
        (32767, "lookup", "default", None, None, model.ALL_ONES),
    ]
    assert all(r.src is None and r.family == 4 and not r.invert for r in rules)
    assert rules[2].source == model.SourceRef(
        "nodes/ambient-worker2/host/ip-rule.txt", 3, "101:\tfrom all fwmark 0x100/0x100 lookup 101"
    )


def test_issue_42197_rules_with_spaces_instead_of_tabs() -> None:
    rules = parse_ip_rule(read("ip-rule/issue-42197-ztunnel.txt"), "ip-rule.txt")
    assert [(r.priority, r.fwmark, r.fwmask, r.table) for r in rules[1:5]] == [
        (20000, 0x400, 0xFFF, "100"), (20001, 0x401, 0xFFF, "101"), (20002, 0x402, 0xFFF, "102"), (20003, 0x4D3, 0xFFF, "100"),
    ]  # fmt: skip


def test_kernel_rules_text_and_json_agree() -> None:
    text = parse_ip_rule(read("ip-rule/kernel.txt"), "ip-rule.txt")
    js = parse_ip_rule(read("ip-rule/kernel.json"), "ip-rule.json")
    assert bare(text) == bare(js)
    by = {r.priority: r for r in text}
    assert by[200].invert and by[200].dst == net("192.168.0.0/16")
    assert by[201].iif == "v0" and by[202].oif == "v1" and by[202].ipproto == "tcp"
    assert by[208].unresolved and by[210].iif == "nonexist"  # "[detached]"
    assert by[32764].fwmark == 0x111 and by[32764].fwmask == 0xFFF
    assert js[0].source.line == 1 and json.loads(js[0].source.text)["priority"] == 0


def test_kernel_v6_rules() -> None:
    text = parse_ip_rule(read("ip-rule/kernel-v6.txt"), "ip6-rule.txt", family=6)
    js = parse_ip_rule(read("ip-rule/kernel-v6.json"), "ip6-rule.json", family=6)
    assert bare(text) == bare(js)
    assert {r.family for r in text} == {6}
    r300 = next(r for r in text if r.priority == 300)
    assert (r300.src, r300.dst) == (net("fd00::/64"), net("fd01::1/128"))


def test_old_iproute2_json_with_to_tbl() -> None:
    rules = parse_ip_rule(read("ip-rule/iproute2-4.17-to_tbl.json"), "ip-rule.json")
    assert [r.action.value for r in rules] == [
        "lookup",
        "goto",
        "lookup",
        "blackhole",
        "unreachable",
        "lookup",
        "lookup",
    ]
    assert rules[1].goto == 32766 and rules[1].fwmark == 0x200


def test_newer_json_keys() -> None:
    text = json.dumps(
        [
            {"priority": 5, "src": "10.0.0.0", "srclen": 8, "action": "prohibit"},
            {
                "priority": 6,
                "src": "all",
                "dport_start": 80,
                "dport_end": 90,
                "uid_start": 1,
                "uid_end": 2,
                "table": "254",
            },
            {
                "priority": 7,
                "src": "all",
                "fwmark": 4096,
                "table": "main",
                "suppress_ifgroup": "default",
            },
        ]
    )
    r = parse_ip_rule(text, "ip-rule.json")
    assert r[0].action is model.RuleAction.PROHIBIT and r[0].src == net("10.0.0.0/8")
    assert r[1].dport == (80, 90) and r[1].uidrange == (1, 2) and r[1].table == "main"
    assert r[2].fwmark == 4096 and r[2].suppress_ifgroup == 0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0:\tfrom all lookup local\n100:\tfrom all fwmark\n", "without a value"),
        ("0:\tfrom all\n", "without an action"),
        ("0:\tfrom all lookup local frobnicate\n", "unknown ip rule keyword"),
        ("0:\tfrom 10.0.0.300 lookup local\n", "not an IP prefix"),
        ("0:\tfrom all fwmark 0xZZ lookup 1\n", "not a number"),
        ("0:\tfrom all sport 10-x lookup 1\n", "not a number"),
        ("from all lookup local\n", "not ip rule output"),
    ],
)
def test_malformed_rules_name_the_line(text: str, reason: str) -> None:
    with pytest.raises(ParseError) as exc:
        parse_ip_rule(text, "ip-rule.txt")
    assert reason in exc.value.reason and exc.value.line == len(text.splitlines())


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('[{"priority": 0, "src": "all"}]', "without an action"),
        ('[{"src": "all", "table": "main"}]', "without 'priority'"),
        ('[{"priority": 1, "action": "explode"}]', "unknown action"),
        ('[{"priority": 1, "table": "main"}, 3]', "not an object"),
        ('{"priority": 1}', "expected a JSON array"),
    ],
)
def test_malformed_rule_json(text: str, reason: str) -> None:
    with pytest.raises(ParseError) as exc:
        parse_ip_rule(text, "ip-rule.json")
    assert reason in exc.value.reason


# =========================================================================== ip route


def test_seed_table_101() -> None:
    routes = parse_ip_route(
        read("ip-route/seed-table-101.txt"), "ip-route.txt", default_table="101"
    )
    assert [(r.table, str(r.dst), r.gateway, r.dev, r.scope, r.type) for r in routes] == [
        ("101", "0.0.0.0/0", ip("192.168.127.2"), "istioout", None, model.RouteType.UNICAST),
        ("101", "10.244.1.2/32", None, "veth5db63c11", "link", model.RouteType.UNICAST),
    ]
    assert (
        parse_ip_route(read("ip-route/seed-table-101.txt"), "x")[0].table == "main"
    )  # no `table`: main


def test_issue_42197_tables() -> None:
    t101 = parse_ip_route(read("ip-route/issue-42197-table-101.txt"), "x", default_table="101")
    t102 = parse_ip_route(read("ip-route/issue-42197-table-102.txt"), "x", default_table="102")
    assert (t101[0].gateway, t101[0].dev) == (ip("192.168.127.1"), "pistioout")
    assert (t102[0].gateway, t102[0].dev) == (ip("192.168.126.1"), "pistioin")
    assert t102[1].dst == net("10.244.1.1/32") and t102[1].dev == "eth0"


def test_kernel_table_all_text_compact_and_pretty_json_agree() -> None:
    text = parse_ip_route(read("ip-route/kernel-table-all.txt"), "ip-route.txt")
    js = parse_ip_route(read("ip-route/kernel-table-all.json"), "ip-route.json")
    pretty = parse_ip_route(read("ip-route/kernel-table-all-pretty.json"), "ip-route.json")
    assert bare(text) == bare(js) == bare(pretty)
    assert {r.source.line for r in js} == {1}
    pretty_lines = read("ip-route/kernel-table-all-pretty.json").splitlines()
    assert all(pretty_lines[r.source.line - 1].strip() in ("{", "[ {", "},{") for r in pretty)
    assert len({r.source.line for r in pretty}) == len(pretty)
    lines = read("ip-route/kernel-table-all.txt").splitlines()
    assert all(lines[r.source.line - 1] == r.source.text for r in text)


def test_kernel_routes_field_by_field() -> None:
    routes = parse_ip_route(read("ip-route/kernel-table-all.txt"), "ip-route.txt")
    key = {(r.family, r.table, r.type.value, str(r.dst)): r for r in routes}
    local_default = key[(4, "100", "local", "0.0.0.0/0")]
    assert (local_default.dev, local_default.scope) == ("lo", "host")
    assert key[(4, "102", "unicast", "0.0.0.0/0")].onlink
    assert key[(4, "102", "unicast", "0.0.0.0/0")].gateway == ip("10.9.9.9")
    for t in ("throw", "prohibit", "blackhole", "unreachable"):
        assert any(r.type.value == t for r in routes)
    mp = key[(4, "main", "unicast", "10.11.0.0/16")]
    assert mp.gateway is None and mp.dev is None
    assert mp.nexthops == (
        model.NextHop(ip("10.0.0.2"), "v0", 1),
        model.NextHop(ip("10.0.1.2"), "v1", 3),
    )
    tie = [r for r in routes if r.dst == net("10.10.0.0/16")]
    assert [r.metric for r in tie] == [100, 100] and len({r.gateway for r in tie}) == 2
    v6 = key[(6, "100", "local", "::/0")]
    assert v6.metric == 1024 and v6.family == 6
    assert key[(6, "local", "local", "::1/128")].proto == "kernel"
    assert key[(4, "local", "broadcast", "10.0.0.255/32")].src == ip("10.0.0.1")


@pytest.mark.parametrize(
    ("line", "family", "dst"),
    [
        ("default dev lo scope link", 4, "0.0.0.0/0"),
        ("default dev lo metric 1024 pref medium", 6, "::/0"),  # pref exists only for IPv6
        (
            "default via fe80::1 dev eth0 proto ra metric 1024 expires 1798sec hoplimit 64 pref medium",
            6,
            "::/0",
        ),
        ("default via 10.0.0.1 dev eth0 proto dhcp src 10.0.0.5 metric 100", 4, "0.0.0.0/0"),
        (
            "default via inet6 fe80::1 dev eth0",
            4,
            "0.0.0.0/0",
        ),  # RFC 5549 needs the family argument
        ("fe80::/64 dev eth0 proto kernel metric 256 pref medium", 6, "fe80::/64"),
        ("10.244.1.7 via 192.168.126.2 dev istioin src 10.244.1.1", 4, "10.244.1.7/32"),
        ("10.1.0.0/16 dev eth0 mtu lock 1400 advmss 1360 linkdown", 4, "10.1.0.0/16"),
        ("unicast 10.1.0.0/16 dev eth0 table 7 proto boot scope link", 4, "10.1.0.0/16"),
        ("nat 10.1.0.0/16 via 10.9.0.0 table 7", 4, "10.1.0.0/16"),
        ("10.2.0.0/16 encap mpls 100/200 via 10.0.0.1 dev eth0", 4, "10.2.0.0/16"),
        ("10.3.0.0/16 nhid 5 via 10.0.0.1 dev eth0 onlink", 4, "10.3.0.0/16"),
    ],
)
def test_route_variants(line: str, family: int, dst: str) -> None:
    (r,) = parse_ip_route(line + "\n", "ip-route.txt")
    assert (r.family, str(r.dst)) == (family, dst)


def test_route_attributes() -> None:
    (r,) = parse_ip_route("10.1.0.0/16 dev eth0 mtu lock 1400 advmss 1360 linkdown\n", "x")
    assert r.flags == ("linkdown",) and r.dev == "eth0"
    (r,) = parse_ip_route("default via inet6 fe80::1 dev eth0\n", "x")
    assert r.gateway == ip("fe80::1")
    (r,) = parse_ip_route("unicast 10.1.0.0/16 dev eth0 table 254 proto boot scope link\n", "x")
    assert (r.table, r.proto, r.type) == ("main", "boot", model.RouteType.UNICAST)
    (r,) = parse_ip_route("10.3.0.0/16 via 10.0.0.1 dev eth0 onlink\n", "x")
    assert r.onlink and r.flags == ()
    routes = parse_ip_route(
        "10.4.0.0/16\n\tnexthop via 10.0.0.1 dev a weight 2 onlink\n\tnexthop via 10.0.0.2 dev b dead linkdown\n",
        "x",
    )
    assert routes[0].nexthops == (
        model.NextHop(ip("10.0.0.1"), "a", 2, True),
        model.NextHop(ip("10.0.0.2"), "b", 1, False),
    )


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("\tnexthop via 10.0.0.1 dev a\n", 1, "unexpected continuation"),
        ("10.0.0.0/8 dev eth0\n\tvia 10.0.0.1\n", 2, "unexpected continuation"),
        ("10.0.0.0/8 frobnicate 3\n", 1, "unknown ip route keyword"),
        ("10.0.0.0/8 dev\n", 1, "without a value"),
        ("10.0.0.0/33 dev eth0\n", 1, "not an IP prefix"),
        ("10.0.0.0/8 via 10.0.0.x dev eth0\n", 1, "not an IP address"),
        ("10.0.0.0/8 dev eth0 metric high\n", 1, "not a number"),
        ("local\n", 1, "without a destination"),
        ("dev eth0\n", 1, "not ip route output"),
        ("10.4.0.0/16\n\tnexthop via 10.0.0.1 dev a weight x\n", 2, "not a number"),
    ],
)
def test_malformed_routes_name_the_line(text: str, line: int, reason: str) -> None:
    with pytest.raises(ParseError) as exc:
        parse_ip_route(text, "ip-route.txt")
    assert exc.value.line == line and reason in exc.value.reason


def test_empty_route_dump_is_valid() -> None:
    assert parse_ip_route("", "ip-route.txt") == ()
    assert parse_ip_route("[]\n", "ip-route.json") == ()


# =========================================================================== ip addr


def test_seed_node_istioout() -> None:
    (link,) = parse_ip_addr(
        read("ip-addr/seed-node-istioout.txt"), "nodes/ambient-worker2/host/ip-addr.txt"
    )
    assert (link.index, link.name, link.mtu, link.state, link.mac) == (
        11,
        "istioout",
        1450,
        "UNKNOWN",
        "0a:ea:4e:e0:8d:26",
    )
    assert link.flags == frozenset({"BROADCAST", "MULTICAST", "UP", "LOWER_UP"}) and link.carrier
    (addr,) = link.addresses
    assert (str(addr.interface), addr.scope, addr.label) == (
        "192.168.127.1/30",
        "global",
        "istioout",
    )
    assert addr.source.line == 3


def test_seed_ztunnel_links() -> None:
    out = parse_ip_addr(read("ip-addr/seed-ztunnel-pistioout.txt"), "ip-addr.txt")
    inn = parse_ip_addr(read("ip-addr/seed-ztunnel-pistioin.txt"), "ip-addr.txt")
    eth0 = out[0]
    assert (eth0.index, eth0.name, eth0.peer_index, eth0.link_netnsid) == (2, "eth0", 3, 0)
    assert [(str(a.interface), a.scope, a.label) for a in eth0.addresses] == [
        ("10.244.2.3/24", "global", "eth0"), ("fe80::448a:46ff:fe72:1d3b/64", "link", None),
    ]  # fmt: skip
    assert (out[1].index, out[1].name, str(out[1].addresses[0].interface)) == (
        4,
        "pistioout",
        "192.168.127.2/30",
    )
    assert (inn[1].index, inn[1].name, str(inn[1].addresses[0].interface)) == (
        3,
        "pistioin",
        "192.168.126.2/30",
    )
    assert out[1].kind is None  # plain `ip a`: no kind


def test_kubectl_stderr_line_is_not_ip_output() -> None:
    with pytest.raises(ParseError) as exc:
        parse_ip_addr(read("ip-addr/seed-ztunnel-pistioout.kubectl.txt"), "ip-addr.txt")
    assert exc.value.line == 1 and "Defaulted container" in exc.value.reason


def test_geneve_from_iproute2_6_1_text_and_json() -> None:
    text = {
        x.name: x
        for x in parse_ip_addr(read("ip-addr/geneve-node-iproute2-6.1.d.txt"), "ip-addr.txt")
    }
    js = {
        x.name: x
        for x in parse_ip_addr(read("ip-addr/geneve-node-iproute2-6.1.json"), "ip-addr.json")
    }
    for links in (text, js):
        tin, tout = links["istioin"], links["istioout"]
        assert (tin.kind, tin.tunnel_id, tin.tunnel_remote, tin.tunnel_dstport) == (
            "geneve",
            1000,
            ip("10.244.2.3"),
            6081,
        )
        assert (tout.kind, tout.tunnel_id, tout.index) == ("geneve", 1001, 11)
        assert str(tout.addresses[0].interface) == "192.168.127.1/30"
        assert links["veth5db63c11"].kind == "veth" and links["veth5db63c11"].peer_index == 3
    assert text["veth5db63c11"].link_netns == "cni-6f1a3b2c-0d4e-5f60-7182-93a4b5c6d7e8"
    assert js["veth5db63c11"].link_netnsid == 1
    assert text["eth0"].peer_index == 11 and text["eth0"].link_netnsid == 0
    assert text["lo"].kind is None  # lo's details ride on its link/loopback line


def test_kernel_two_netns_text_detail_and_json_agree() -> None:
    for tag in ("a", "b"):
        plain = parse_ip_addr(read(f"ip-addr/kernel-{tag}.txt"), "ip-addr.txt")
        detail = parse_ip_addr(read(f"ip-addr/kernel-{tag}.d.txt"), "ip-addr.txt")
        js = parse_ip_addr(read(f"ip-addr/kernel-{tag}.json"), "ip-addr.json")
        def no_ns(ls):
            return [
                    dataclasses.replace(x, link_netns=None, link_netnsid=None) for x in bare(ls)
                ]
        def no_kind(ls):
            return [
                    dataclasses.replace(
                        x, kind=None, tunnel_id=None, tunnel_remote=None, tunnel_dstport=None
                    )
                    for x in bare(ls)
                ]
        assert no_ns(detail) == no_ns(js)
        assert no_kind(plain) == no_kind(detail)
    a = {x.name: x for x in parse_ip_addr(read("ip-addr/kernel-a.d.txt"), "x")}
    b = {x.name: x for x in parse_ip_addr(read("ip-addr/kernel-b.d.txt"), "x")}
    assert a["eth0"].peer_index == b["eth0"].index and b["eth0"].peer_index == a["eth0"].index
    assert (a["eth0"].kind, a["eth0"].master) == ("veth", "br0")
    assert a["br0"].kind == "bridge"
    assert (a["vx0"].kind, a["vx0"].tunnel_id, a["vx0"].tunnel_remote, a["vx0"].tunnel_dstport) == (
        "vxlan",
        5,
        ip("10.244.1.2"),
        4789,
    )
    assert a["vdown"].state == "DOWN" and not a["vdown"].admin_up
    assert a["vdown"].peer_index == a["vdown-peer"].index
    assert [x.label for x in b["eth0"].addresses if x.interface.version == 4] == ["eth0", "eth0:1"]


@pytest.mark.parametrize(
    ("line", "iface", "scope", "label"),
    [
        (
            "    inet 10.0.0.7/24 brd 10.0.0.255 scope global secondary v0:1",
            "10.0.0.7/24",
            "global",
            "v0:1",
        ),
        ("    inet 10.0.0.1 peer 10.0.0.2/32 scope global tun0", "10.0.0.1/32", "global", "tun0"),
        (
            "    inet 172.18.0.3/16 brd 172.18.255.255 scope global dynamic noprefixroute eth0",
            "172.18.0.3/16",
            "global",
            "eth0",
        ),
        ("    inet6 fd00::1/64 scope global nodad ", "fd00::1/64", "global", None),
        (
            "    inet6 2001:db8::5/64 scope global dynamic mngtmpaddr noprefixroute ",
            "2001:db8::5/64",
            "global",
            None,
        ),
        ("    inet 10.0.0.9/24 scope global deprecated", "10.0.0.9/24", "global", None),
    ],
)
def test_address_lines(line: str, iface: str, scope: str, label: str | None) -> None:
    text = "2: eth0: <UP> mtu 1500 state UP\n" + line + "\n"
    (a,) = parse_ip_addr(text, "x")[0].addresses
    assert (str(a.interface), a.scope, a.label) == (iface, scope, label)


def test_peer_none_and_unknown_peer_name() -> None:
    text = "4: ip6tnl0@NONE: <NOARP> mtu 1452 qdisc noop state DOWN\n5: vlan9@eth9: <UP> mtu 1500 state UP\n"
    a, b = parse_ip_addr(text, "x")
    assert a.peer_index is None and a.name == "ip6tnl0"
    assert b.peer_index is None and b.name == "vlan9"  # eth9 is not in this dump


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("    inet 10.0.0.1/24 scope global eth0\n", 1, "before any link"),
        ("1: lo: <LOOPBACK> mtu 65536\nnot indented\n", 2, "not ip addr output"),
        (
            "1: lo: <LOOPBACK> mtu 65536\n    inet 10.0.0.300/8 scope host lo\n",
            2,
            "not an address/prefix",
        ),
        ("1: lo: <LOOPBACK> mtu big\n", 1, "not a number"),
        ("1: lo: <LOOPBACK> mtu 1\n    link/ether aa:bb link-netnsid x\n", 2, "not a number"),
        ("1: lo: <LOOPBACK> mtu 1\n    inet\n", 2, "without an address"),
    ],
)
def test_malformed_addr_names_the_line(text: str, line: int, reason: str) -> None:
    with pytest.raises(ParseError) as exc:
        parse_ip_addr(text, "ip-addr.txt")
    assert exc.value.line == line and reason in exc.value.reason


# =========================================================================== shared: empty, JSON cuts, wrong tools


@pytest.mark.parametrize("parser", [parse_ip_rule, parse_ip_addr])
def test_empty_rule_and_addr_output_is_suspicious(parser) -> None:
    with pytest.raises(ParseError) as exc:
        parser("  \n", "x.txt")
    assert "empty" in exc.value.reason and exc.value.hint


@pytest.mark.parametrize(
    ("parser", "rel"),
    [(parse_ip_rule, "ip-rule/kernel.json"), (parse_ip_route, "ip-route/kernel-table-all.json"),
     (parse_ip_route, "ip-route/kernel-table-all-pretty.json"), (parse_ip_addr, "ip-addr/kernel-a.json")],
)  # fmt: skip
def test_json_cut_anywhere_fails(parser, rel: str) -> None:
    text = read(rel)
    for end in sorted(
        {len(text) // 2, len(text) - 3, *random.Random(5).sample(range(1, len(text) - 2), 40)}
    ):
        with pytest.raises(ParseError) as exc:
            parser(text[:end], "x.json")
        assert (
            "truncated" in exc.value.reason
            or "not valid JSON" in exc.value.reason
            or "expected" in exc.value.reason
        )
        assert exc.value.line is not None and exc.value.line <= text[:end].count("\n") + 1


def test_json_cut_in_half_says_truncated() -> None:
    text = read("ip-route/kernel-table-all.json")
    with pytest.raises(ParseError) as exc:
        parse_ip_route(text[: len(text) // 2], "nodes/w1/host/ip-route.json")
    assert "truncated" in exc.value.reason and exc.value.path == "nodes/w1/host/ip-route.json"


def test_json_with_trailing_garbage_fails() -> None:
    with pytest.raises(ParseError) as exc:
        parse_ip_rule(read("ip-rule/kernel.json").rstrip() + " []\n", "ip-rule.json")
    assert "after the JSON array" in exc.value.reason


WRONG = [
    "iptables-save/inpod-default.iptables-save.txt", "ipset/kernel-list.txt", "ipset/kernel-save.txt",
    "ss-listen/kernel-H.txt", "sysctl/kernel-net.txt", "cluster/pods.json",
]  # fmt: skip


@pytest.mark.parametrize(
    "rel",
    [
        *WRONG,
        "ip-route/kernel-table-all.txt",
        "ip-addr/kernel-a.d.txt",
        "ip-route/kernel-table-all.json",
    ],
)
def test_ip_rule_rejects_other_tools(rel: str) -> None:
    with pytest.raises(ParseError):
        parse_ip_rule(read(rel), "ip-rule.txt")


@pytest.mark.parametrize(
    "rel",
    [
        *WRONG,
        "ip-rule/kernel.txt",
        "ip-addr/kernel-a.d.txt",
        "ip-rule/kernel.json",
        "ip-addr/kernel-a.json",
    ],
)
def test_ip_route_rejects_other_tools(rel: str) -> None:
    with pytest.raises(ParseError):
        parse_ip_route(read(rel), "ip-route.txt")


@pytest.mark.parametrize(
    "rel",
    [
        *WRONG,
        "ip-rule/kernel.txt",
        "ip-route/kernel-table-all.txt",
        "ip-rule/kernel.json",
        "ip-route/kernel-table-all.json",
    ],
)
def test_ip_addr_rejects_other_tools(rel: str) -> None:
    with pytest.raises(ParseError):
        parse_ip_addr(read(rel), "ip-addr.txt")


@pytest.mark.parametrize("parser", [parse_ip_rule, parse_ip_route, parse_ip_addr])
def test_garbage_raises_only_parse_error(parser) -> None:
    rng = random.Random(11)
    for _ in range(200):
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 200))).decode("latin-1")
        try:
            parser(junk, "x")
        except ParseError:
            pass


def test_bad_family_argument_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        parse_ip_rule("0:\tfrom all lookup local\n", "x", family=5)
