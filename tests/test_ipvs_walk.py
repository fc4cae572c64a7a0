"""kube-proxy's IPVS mode, end to end on a bundle collected from a real-shaped IPVS node.

The seed lab in IPVS mode (`ambientlab.kubeproxy_ipvs`) holds, in the real kernel, what
kube-proxy writes there: `kube-ipvs0` with every ClusterIP (so the kernel routes them as
`local`), the `KUBE-CLUSTER-IP` / `KUBE-LOOP-BACK` / `KUBE-NODE-PORT-TCP` ipsets and the
IPVS-mode nat rules (KUBE-SERVICES ACCEPT, KUBE-NODE-PORT, KUBE-MARK-MASQ,
KUBE-POSTROUTING). Only the virtual services cannot exist (this kernel has no IPVS): the
node's `ipvsadm -Ln --exact` prints the table kube-proxy would have made. The bundle is
collected with `ambientctl collect --local` and traced forward and back: the IPVS DNAT at
LOCAL_IN (never "a listener on the node"), kube-proxy's masquerade, and the answer's
un-NAT by conntrack. Without `ipvsadm.txt` the walk stops with `insufficient-info: IPVS`.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator

import pytest

from ambientctl.analyzers.netfilter import Context, eval_match
from ambientctl.analyzers.packet import Packet
from ambientctl.analyzers.parse.ipset import parse_ipset
from ambientctl.model import Match

pytestmark = [pytest.mark.kernel]

NODE_PORT = "172.18.0.2:30080"  # ambient-worker's address, productpage's NodePort


def _steps(result: object) -> list[str]:
    return [s.summary for h in result.hops for s in h.steps]  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    if os.geteuid() != 0:  # pragma: no cover - CI runs as root
        pytest.skip("needs root to build network namespaces")
    from ambientctl.bundle.load import load_snapshot
    from ambientlab.seed import SeedLab

    out: dict[str, object] = {}
    with SeedLab(kube_proxy="ipvs") as lab:
        for name, have in (("ipvs", True), ("no-ipvsadm", False)):
            lab.ipvsadm = have
            path = tmp_path_factory.mktemp(name) / "bundle"
            res = lab.collect(str(path))
            assert res.returncode == 0, res.stderr
            out[name] = load_snapshot(str(path))
        out["local-route"] = lab.ip("ambient-worker/host", "-j", "route", "get",
                                    "10.96.182.142").stdout
    yield out


def _trace(snap: object, src: str, dst: str) -> object:
    from ambientctl.analyzers.selectors import resolve
    from ambientctl.analyzers.trace import Tracer

    return Tracer(snap).trace(resolve(snap, src, role="source"),  # type: ignore[arg-type]
                              resolve(snap, dst, role="destination"))  # type: ignore[arg-type]


def test_the_kernel_routes_a_cluster_ip_on_kube_ipvs0_as_local(bundles: dict) -> None:
    from ambientctl.analyzers import routing

    assert '"type":"local"' in bundles["local-route"].replace(" ", "")  # the kernel's answer
    node = next(ns for ns in bundles["ipvs"].namespaces() if ns.id == "ambient-worker/host")
    got = routing.lookup(node, dst=ipaddress.ip_address("10.96.182.142"), src=None, mark=0,
                         iif=None)
    assert got.kind == "local"  # the bundle's answer
    assert all(ns.ipvs for ns in bundles["ipvs"].namespaces() if ns.pod is None)  # type: ignore[attr-defined]
    assert not any(ns.ipvs for ns in bundles["no-ipvsadm"].namespaces())  # type: ignore[attr-defined]


def test_pod_to_cluster_ip_is_dnated_by_ipvs_at_local_in_and_answered_from_the_vip(
        bundles: dict) -> None:
    t = _trace(bundles["ipvs"], "notsleep", "productpage")
    first = t.legs[0].result  # type: ignore[attr-defined]
    steps = _steps(first)
    # No iptables DNAT on this path: the address stays the VIP until IPVS.
    assert not any("DNAT" in s for s in steps), steps
    ipvs = [s for s in steps if s.startswith("IPVS tcp 10.96.182.142:9080 rr: Masq -> ")]
    assert ipvs == ["IPVS tcp 10.96.182.142:9080 rr: Masq -> 10.244.1.7:9080"], steps
    assert not any("listener is assumed" in s or "nothing listens" in s for s in steps)
    # The pod is inside the cluster CIDR: not masqueraded, and no hairpin (src != endpoint).
    assert not any("MASQUERADE" in s for s in steps), steps
    # The answer: conntrack gives the client the VIP back as its source.
    reply = first.reply
    assert reply is not None and reply.disposition.value == "delivered", t.summary  # type: ignore[attr-defined]
    back = _steps(reply)
    assert any("conntrack reverses the NAT: tcp 10.96.182.142:9080 -> " in s for s in back), back


def test_mesh_pod_to_cluster_ip_skips_ztunnel_under_ipvs_and_the_verdict_says_so(
        bundles: dict) -> None:
    # 2022 node-level design: the ClusterIP is in table local (priority 0), ahead of Istio's
    # fwmark rules, so IPVS DNATs it on the node before ztunnel sees it (istio/istio#40974).
    from ambientctl.analyzers.verdict import judge

    t = _trace(bundles["ipvs"], "sleep", "productpage")
    steps = _steps(t.legs[0].result)  # type: ignore[attr-defined]
    assert "IPVS tcp 10.96.182.142:9080 rr: Masq -> 10.244.1.7:9080" in steps
    v = judge(bundles["ipvs"], t)  # type: ignore[arg-type]
    assert not v.as_intended
    assert "DNATed to 10.244.1.7:9080 before sleep's ztunnel" in v.text, v.text


def test_node_port_on_a_node_address_is_an_ipvs_virtual_service_not_a_closed_port(
        bundles: dict) -> None:
    t = _trace(bundles["ipvs"], "node/ambient-worker2", NODE_PORT)
    first = t.legs[0].result  # type: ignore[attr-defined]
    steps = _steps(first)
    assert "IPVS tcp 172.18.0.2:30080 rr: Masq -> 10.244.1.7:9080" in steps, steps
    # KUBE-NODE-PORT-TCP (bitmap:port) dst -> KUBE-MARK-MASQ, then kube-proxy masquerades.
    assert "ip nat KUBE-NODE-PORT #1: jump KUBE-MARK-MASQ" in steps, steps
    assert "ip nat KUBE-MARK-MASQ #1: MARK 0x0 -> 0x4000" in steps, steps
    assert "ip nat KUBE-POSTROUTING #4: MASQUERADE source -> 172.18.0.2" in steps, steps
    assert steps.index("ip nat KUBE-MARK-MASQ #1: MARK 0x0 -> 0x4000") < steps.index(
        "IPVS tcp 172.18.0.2:30080 rr: Masq -> 10.244.1.7:9080") < steps.index(
        "ip nat KUBE-POSTROUTING #4: MASQUERADE source -> 172.18.0.2")
    reply = first.reply
    assert reply is not None, t.summary
    back = _steps(reply)
    assert any(s.startswith("conntrack reverses the NAT: tcp 172.18.0.2:30080 -> 172.18.0.3:")
               for s in back), back
    assert back[-1].startswith("the answer reaches the connecting socket 172.18.0.3:"), back


@pytest.mark.parametrize("dst", ["productpage", NODE_PORT])
def test_without_ipvsadm_the_walk_stops_with_insufficient_info_ipvs(
        bundles: dict, dst: str) -> None:
    src = "notsleep" if dst == "productpage" else "node/ambient-worker2"
    t = _trace(bundles["no-ipvsadm"], src, dst)
    first = t.legs[0].result  # type: ignore[attr-defined]
    assert first.disposition.value == "insufficient-info", t.summary
    assert first.reason.startswith("insufficient-info: IPVS: ")
    assert "ipvsadm.txt" in first.reason


# ----------------------------------------------------------------- ipset dimensions (unit)

_SETS = """create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536
add KUBE-LOOP-BACK 10.244.1.7,tcp:9080,10.244.1.7
create KUBE-NODE-PORT-TCP bitmap:port range 0-65535
add KUBE-NODE-PORT-TCP 30080
create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536
add KUBE-CLUSTER-IP 10.96.182.142,tcp:9080
create ODD hash:ip,port family inet hashsize 1024 maxelem 65536
add ODD 10.96.0.1,tcp:x
"""


def _match(set_name: str, flags: str, src: str, dst: str, dport: int) -> object:
    class _NS:
        ipsets = parse_ipset(_SETS, "nodes/n/ipset.txt")
        label = "node n"

    p = Packet(family=4, proto="tcp", src=ipaddress.ip_address(src), sport=40000,
               dst=ipaddress.ip_address(dst), dport=dport)
    ctx = Context(ns=_NS(), local_addresses=frozenset(), listeners=None)  # type: ignore[arg-type]
    return eval_match(Match("set", "--match-set", (set_name, flags)), p, ctx, "postrouting")


def test_multi_dimension_ipsets_match_every_dimension_as_the_flags_name_it() -> None:
    # Hairpin only: the endpoint talking to itself through the Service.
    assert _match("KUBE-LOOP-BACK", "dst,dst,src", "10.244.1.7", "10.244.1.7", 9080) is True
    assert _match("KUBE-LOOP-BACK", "dst,dst,src", "10.244.2.3", "10.244.1.7", 9080) is False
    assert _match("KUBE-LOOP-BACK", "dst,dst,src", "10.244.1.7", "10.244.1.7", 80) is False
    assert _match("KUBE-CLUSTER-IP", "dst,dst", "10.244.2.3", "10.96.182.142", 9080) is True
    assert _match("KUBE-CLUSTER-IP", "dst,dst", "10.244.2.3", "10.96.182.142", 22) is False
    assert _match("KUBE-NODE-PORT-TCP", "dst", "172.18.0.3", "172.18.0.2", 30080) is True
    assert _match("KUBE-NODE-PORT-TCP", "dst", "172.18.0.3", "172.18.0.2", 30081) is False
    # A member the matcher cannot read might have matched: unknown, never a confident "no".
    assert _match("ODD", "dst,dst", "10.244.2.3", "10.96.0.1", 443) is None
