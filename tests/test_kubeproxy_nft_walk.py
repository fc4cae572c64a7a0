"""kube-proxy's nftables mode, hook by hook: the kernel's own listing of the ruleset, walked.

The ruleset is generated in kube-proxy's shape (`ambientlab.kubeproxy_nft`), loaded into a
namespace of this test with `nft -f` and read back with `nft -j list ruleset` and `nft list
ruleset` — so the parser sees exactly what a node's dump holds (the kernel normalises
priorities, marks and element order). Whole connections are replayed against the kernel in
tests/test_kubeproxy_nft_kernel.py.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from ambientctl.analyzers import netfilter
from ambientctl.analyzers.fork import EndpointSelector
from ambientctl.analyzers.packet import Packet
from ambientctl.analyzers.parse.nft import nft_sets, parse_nft, parse_nft_json
from ambientctl.model import NetNamespace
from ambientlab.kubeproxy_nft import KubeProxyService, ruleset
from ambientlab.netns import Lab

pytestmark = pytest.mark.kernel

IP = ipaddress.ip_address
CLUSTER_CIDR, SERVICE_CIDR, NODE_IP = "10.244.0.0/16", "10.96.0.0/16", "172.18.0.3"
SERVICES = (
    KubeProxyService("default", "reviews", "http", "10.96.47.113", 9080,
                     (("10.244.1.4", 9080), ("10.244.1.7", 9080)), node_port=30080),
    KubeProxyService("default", "empty", "http", "10.96.0.50", 80, (), node_port=30050),
)
SERVICES6 = (
    KubeProxyService("default", "reviews", "http", "fd00:10:96::71", 9080,
                     (("fd00:10:244:1::4", 9080), ("fd00:10:244:1::7", 9080))),
)


@pytest.fixture(scope="module")
def dumps() -> Iterator[dict[str, str]]:
    """{"json": ..., "txt": ...}: the kernel's listing of both kube-proxy tables."""
    lab = Lab()
    try:
        ns = lab.add_netns("kpnft")
        ns.exec("nft", "-f", "-", stdin=ruleset(SERVICES, cluster_cidr=CLUSTER_CIDR,
                                              service_cidr=SERVICE_CIDR, node_ips=[NODE_IP]))
        ns.exec("nft", "-f", "-", stdin=ruleset(SERVICES6, family="ip6",
                                              cluster_cidr="fd00:10:244::/56",
                                              service_cidr="fd00:10:96::/112"))
        yield {"json": ns.exec("nft", "-j", "list", "ruleset").stdout,
               "txt": ns.exec("nft", "list", "ruleset").stdout}
    finally:
        lab.teardown()


def _ns(text: str, form: str) -> NetNamespace:
    """The namespace as a bundle loads it: rules, and the nft sets as ipsets."""
    path = f"nodes/n/host/nft-ruleset.{form}"
    return NetNamespace(id="n/host", node="n", pod=None, dir="nodes/n/host", links=(),
                        routes=(), rules=(), rulesets=(parse_nft(text, path),),
                        ipsets=nft_sets(text, path), listeners=())


def _pkt(dst: str, dport: int, src: str = "10.244.2.9", **kw: object) -> Packet:
    fam = IP(dst).version
    return Packet(family=fam, proto="tcp", src=IP(src), dst=IP(dst), sport=40000, dport=dport,
                  **kw)  # type: ignore[arg-type]


def _run(ns: NetNamespace, hook: str, p: Packet, endpoint: EndpointSelector | None = None,
         ) -> tuple[netfilter.HookResult, netfilter.Context]:
    local = frozenset({IP(NODE_IP), IP("127.0.0.1")})
    ctx = netfilter.Context(ns, local, None, endpoint=endpoint)
    return netfilter.run_hook(ns, hook, p, ctx), ctx


@pytest.fixture(params=["json", "txt"])
def node(request: pytest.FixtureRequest, dumps: dict[str, str]) -> NetNamespace:
    return _ns(dumps[request.param], request.param)


def test_both_listings_give_the_same_rules_maps_and_statements(dumps: dict[str, str]) -> None:
    a = parse_nft(dumps["json"], "x.json")
    b = parse_nft(dumps["txt"], "x.txt")
    for ta, tb in zip(a.tables, b.tables, strict=True):
        assert (ta.family, ta.name) == (tb.family, tb.name)
        assert list(ta.chains) == list(tb.chains)
        for name in ta.chains:
            ra, rb = ta.chains[name].rules, tb.chains[name].rules
            assert [(r.matches, r.lookups, r.target, r.target_options, r.goto,
                     [(s.target, s.options, s.goto, s.vmap) for s in r.statements])
                    for r in ra] == [
                (r.matches, r.lookups, r.target, r.target_options, r.goto,
                 [(s.target, s.options, s.goto, s.vmap) for s in r.statements]) for r in rb], name
    services = {t.name: t for t in a.tables if t.family == "ip"}["kube-proxy"].chains["services"]
    vmap = services.rules[0].statements[0].vmap
    assert vmap is not None and vmap.name == "service-ips"
    assert vmap.key == ("ip daddr", "meta l4proto", "th dport")


def test_clusterip_is_dnated_by_the_verdict_map_and_the_numgen_fork_is_stated(
    node: NetNamespace,
) -> None:
    res, ctx = _run(node, "prerouting", _pkt("10.96.47.113", 9080, iif="veth1"))
    assert res.verdict == "accept", res.reason
    assert str(res.packet.dst_addr) == "10.244.1.4:9080"  # the first branch
    fork = next(s for s in res.steps if s.branches)
    assert fork.summary.startswith("numgen random mod 2 -> 0 (1/2)")
    assert fork.branches == ("10.244.1.7:9080 (accept)",)
    assert any("followed 10.244.1.4:9080 (accept) (the first)" in n.lower() for n in ctx.notes)
    assert res.packet.mark == 0  # from a pod of the cluster CIDR: no masquerade mark


def test_endpoint_selector_follows_the_branch_that_reaches_it(node: NetNamespace) -> None:
    pick = EndpointSelector.of("reviews-2", [IP("10.244.1.7")])
    res, ctx = _run(node, "prerouting", _pkt("10.96.47.113", 9080, iif="veth1"), pick)
    assert str(res.packet.dst_addr) == "10.244.1.7:9080"
    assert any("--endpoint reviews-2" in n for n in ctx.notes)
    nowhere = EndpointSelector.of("10.9.9.9", [IP("10.9.9.9")])
    res, ctx = _run(node, "prerouting", _pkt("10.96.47.113", 9080, iif="veth1"), nowhere)
    assert str(res.packet.dst_addr) == "10.244.1.4:9080"
    assert any("--endpoint 10.9.9.9 is not among them" in n for n in ctx.notes)


def test_node_local_clusterip_connection_is_dnated_not_rejected(node: NetNamespace) -> None:
    """The bug this models away: without the vmap the packet kept its ClusterIP and
    `cluster-ips-check` (filter OUTPUT, after DNAT) rejected it."""
    res, _ = _run(node, "output", _pkt("10.96.47.113", 9080, src=NODE_IP, local_socket=True))
    assert res.verdict == "accept", res.reason
    assert str(res.packet.dst_addr) == "10.244.1.4:9080"
    assert res.packet.mark == 0x4000  # from outside the cluster CIDR: marked for masquerade
    chains = [s.chain for s in res.steps]
    assert chains.index("nat-output") < chains.index("filter-output")


def test_other_port_of_a_clusterip_is_rejected_and_an_unallocated_one_dropped(
    node: NetNamespace,
) -> None:
    res, _ = _run(node, "output", _pkt("10.96.47.113", 81, src=NODE_IP, local_socket=True))
    assert res.verdict == "reject" and res.steps[-1].chain == "cluster-ips-check"
    res, _ = _run(node, "output", _pkt("10.96.9.9", 80, src=NODE_IP, local_socket=True))
    assert res.verdict == "drop" and res.steps[-1].chain == "cluster-ips-check"


def test_service_without_endpoints_goes_to_reject_chain(node: NetNamespace) -> None:
    res, _ = _run(node, "output", _pkt("10.96.0.50", 80, src=NODE_IP, local_socket=True))
    assert res.verdict == "reject" and res.steps[-1].chain == "reject-chain"
    res, _ = _run(node, "input", _pkt(NODE_IP, 30050, iif="eth0", src="172.18.0.9"))
    assert res.verdict == "reject" and res.steps[-1].chain == "reject-chain"


def test_nodeport_is_dnated_and_marked_for_masquerade(node: NetNamespace) -> None:
    res, _ = _run(node, "prerouting", _pkt(NODE_IP, 30080, src="172.18.0.9", iif="eth0"))
    assert res.verdict == "accept", res.reason
    assert str(res.packet.dst_addr) in ("10.244.1.4:9080", "10.244.1.7:9080")
    assert res.packet.mark == 0x4000
    ctx = netfilter.Context(node, frozenset({IP(NODE_IP)}), None, out_dev="veth1",
                            out_src=IP("10.244.1.1"))
    post = netfilter.run_hook(node, "postrouting", res.packet, ctx)
    assert post.verdict == "accept" and post.packet.snat_done
    assert str(post.packet.src) == "10.244.1.1" and post.packet.mark == 0  # mark ^ 0x4000
    assert [s.chain for s in post.steps][-1] == "masquerading"


def test_ipv6_table_dnats_ipv6_clusterip(node: NetNamespace) -> None:
    res, _ = _run(node, "prerouting", _pkt("fd00:10:96::71", 9080, src="fd00:10:244:2::9",
                                           iif="veth1"))
    assert str(res.packet.dst_addr) == "[fd00:10:244:1::4]:9080"


def test_a_statement_not_modelled_stops_the_walk_naming_it() -> None:
    doc = ('{"nftables": [{"table": {"family": "ip", "name": "t"}}, {"chain": {"family": "ip", '
           '"table": "t", "name": "c", "type": "filter", "hook": "prerouting", "prio": 0, '
           '"policy": "accept"}}, {"rule": {"family": "ip", "table": "t", "chain": "c", "expr": '
           '[{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, '
           '"right": "10.96.0.1"}}, {"mangle": {"key": {"meta": {"key": "mark"}}, "value": 1}},'
           ' {"queue": {"num": 1}}]}}]}')
    ns = _ns(doc, "json")
    assert parse_nft_json(doc, "x.json").tables[0].chains["c"].rules[0].target == "NFT"
    res, _ = _run(ns, "prerouting", _pkt("10.96.0.1", 80, iif="veth1"))
    assert res.verdict == "insufficient-info"
    assert "queue" in (res.reason or "") and "not modelled" in (res.reason or "")
    other, _ = _run(ns, "prerouting", _pkt("10.96.0.2", 80, iif="veth1"))
    assert other.verdict == "accept"
