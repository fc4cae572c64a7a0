"""Where a packet sent on a veth arrives: its peer on the same node, never a namespace of
another node whose ifindexes happen to match (ifindexes are per-netns counters)."""

from __future__ import annotations

from ipaddress import ip_address, ip_interface

from ambientctl.analyzers.path import PathWalker, World
from ambientctl.model import Address, Link, NetNamespace, PodRef, SourceRef


def _link(index: int, name: str, peer: int, cidr: str | None = None) -> Link:
    src = SourceRef("ip-addr.txt")
    addrs = (Address(ip_interface(cidr), "global", src),) if cidr else ()
    return Link(index=index, name=name, source=src, flags=frozenset({"UP"}), kind="veth",
                peer_index=peer, addresses=addrs)


def _node(name: str, ip: str, pod_veth_index: int) -> tuple[NetNamespace, NetNamespace]:
    """A kind node: eth0 (ifindex 2, its peer on the docker host: not in any bundle) and
    one pod whose eth0 (ifindex 2) pairs with the node's `vethX` (ifindex `pod_veth_index`)."""
    host = NetNamespace(id=f"{name}/host", node=name, pod=None, dir=f"nodes/{name}/host",
                        links=(_link(2, "eth0", 9, f"{ip}/16"),
                               _link(pod_veth_index, "vethX", 2)))
    pod = NetNamespace(id=f"{name}/pod/default/p", node=name, pod=PodRef("default", "p"),
                       dir=f"nodes/{name}/pods/default/p",
                       links=(_link(2, "eth0", pod_veth_index, "10.244.0.5/24"),))
    return host, pod


def _walker(*namespaces: NetNamespace) -> PathWalker:
    owners: dict = {}
    for ns in namespaces:
        for link in ns.links or ():
            for a in link.addresses:
                owners.setdefault(a.interface.ip, []).append((ns, link))
    world = World(snap=None, by_id={ns.id: ns for ns in namespaces}, owners=owners,  # type: ignore[arg-type]
                  local={}, roles={})
    return PathWalker(world)


def test_a_veth_never_pairs_with_a_namespace_of_another_node() -> None:
    # Node a's eth0 peer is ifindex 9 on the docker host; node b has a pod veth with
    # ifindex 9 whose peer is ifindex 2 - a coincidence, not a cable. The third node, which
    # owns the next hop, is missing from the bundle.
    a_host, a_pod = _node("a", "172.18.0.2", 7)
    b_host, b_pod = _node("b", "172.18.0.3", 9)
    walker = _walker(a_host, a_pod, b_host, b_pod)
    assert walker.next_namespace(a_host, a_host.links[0], ip_address("172.18.0.4")) is None


def test_a_veth_reaches_the_owner_of_the_next_hop_across_the_docker_bridge() -> None:
    a_host, a_pod = _node("a", "172.18.0.2", 7)
    b_host, b_pod = _node("b", "172.18.0.3", 9)
    found = _walker(a_host, a_pod, b_host, b_pod).next_namespace(
        a_host, a_host.links[0], ip_address("172.18.0.3"))
    assert found is not None and found[0].id == "b/host" and found[1].name == "eth0"


def test_a_veth_pairs_with_its_peer_on_the_same_node() -> None:
    a_host, a_pod = _node("a", "172.18.0.2", 7)
    b_host, b_pod = _node("b", "172.18.0.3", 9)
    found = _walker(a_host, a_pod, b_host, b_pod).next_namespace(
        a_pod, a_pod.links[0], ip_address("10.244.0.1"))
    assert found is not None and found[0].id == "a/host" and found[1].name == "vethX"
