"""`parse_pods/services/namespaces/nodes`: kubectl List documents, other shapes, bad input."""

from __future__ import annotations

import ipaddress
import json
import pathlib
import random

import pytest

from ambientctl import model
from ambientctl.analyzers.parse.cluster import (
    parse_namespaces,
    parse_nodes,
    parse_pods,
    parse_services,
)
from ambientctl.errors import ParseError

RAW = pathlib.Path(__file__).resolve().parent / "fixtures" / "raw"
ip = ipaddress.ip_address


def read(rel: str) -> str:
    return (RAW / rel).read_text()


def test_pods_from_a_kubectl_list() -> None:
    text = read("cluster/pods.json")
    pods = {p.name: p for p in parse_pods(text, "cluster/pods.json")}
    sleep = pods["sleep-7b85956664-z6qh7"]
    assert (sleep.namespace, sleep.node, sleep.ips, sleep.phase) == (
        "default",
        "ambient-worker",
        (ip("10.244.2.4"),),
        "Running",
    )
    assert (sleep.owner, sleep.labels, sleep.images, sleep.host_network) == (
        "ReplicaSet/sleep-7b85956664", {"app": "sleep"}, ("curlimages/curl",), False,
    )  # fmt: skip
    assert sleep.ref == model.PodRef("default", "sleep-7b85956664-z6qh7")
    pp = pods["productpage-v1-7c548b785b-w9zl6"]
    assert pp.annotations == {"ambient.istio.io/redirection": "enabled"}
    assert pp.container_ports == ((None, 9080, "TCP"),)
    assert pods["reviews-v1-6494d87c7b-zrpks"].uid == "0ff78312-3a13-4a02-b39d-644bfb91e861"
    zt = pods["ztunnel-nptf6"]
    assert zt.owner == "DaemonSet/ztunnel" and zt.container_ports == (
        ("http-envoy-prom", 15020, "TCP"),
        ("dns", 15053, "UDP"),
    )
    cni = pods["istio-cni-node-qsvsz"]
    assert cni.host_network and cni.ips == (ip("172.18.0.4"),)
    assert pods["dual-7d9f"].ips == (ip("10.244.2.9"), ip("fd00:10:244:2::9"))
    pending = pods["pending-0"]
    assert (pending.ips, pending.node, pending.phase) == ((), None, "Pending")
    # SourceRef: the object's `"name": "<name>"` line, verbatim
    lines = text.splitlines()
    for p in pods.values():
        assert lines[p.source.line - 1] == p.source.text
        assert p.source.text.strip() == f'"name": "{p.name}",'


def test_pod_source_line_is_its_own_metadata_name() -> None:
    """A container named like the next pod must not steal that pod's line."""
    items = [
        {
            "kind": "Pod",
            "metadata": {"name": "a", "namespace": "x"},
            "spec": {"containers": [{"name": "b"}]},
        },
        {
            "kind": "Pod",
            "metadata": {"name": "b", "namespace": "x"},
            "spec": {"containers": [{"name": "a"}]},
        },
    ]
    text = json.dumps({"apiVersion": "v1", "kind": "List", "items": items}, indent=4)
    a, b = parse_pods(text, "pods.json")
    lines = text.splitlines()
    assert (
        lines[a.source.line - 1].strip() == '"name": "a",'
        and lines[b.source.line - 1].strip() == '"name": "b",'
    )
    assert a.source.line < b.source.line


def test_services() -> None:
    text = read("cluster/services.json")
    svcs = {s.name: s for s in parse_services(text, "cluster/services.json")}
    pp = svcs["productpage"]
    assert (pp.namespace, pp.type, pp.cluster_ips) == ("default", "ClusterIP", (ip("10.96.10.1"),))
    assert pp.ports == (model.ServicePort(9080, "TCP", "9080", "http"),)
    assert pp.selector == {"app": "productpage"} and pp.labels["service"] == "productpage"
    # the last-applied annotation holds "name":"productpage" escaped: not the metadata line
    assert pp.source.text.strip() == '"name": "productpage",'
    assert svcs["kubernetes"].selector == {} and svcs["kubernetes"].ports[0].target_port == "6443"
    assert (
        svcs["reviews-headless"].cluster_ips == ()
        and svcs["reviews-headless"].ports[0].target_port == "http"
    )
    dual = svcs["dual"]
    assert dual.cluster_ips == (ip("10.96.20.2"), ip("fd00:10:96::2")) and dual.type == "NodePort"
    assert dual.ports == (
        model.ServicePort(80, "TCP", "80", None),
    )  # defaults: TCP, targetPort = port
    assert [p.protocol for p in svcs["istiod"].ports] == ["TCP", "UDP"]


def test_namespaces_and_nodes() -> None:
    nss = {
        n.name: n
        for n in parse_namespaces(read("cluster/namespaces.json"), "cluster/namespaces.json")
    }
    assert nss["default"].labels["istio.io/dataplane-mode"] == "ambient"
    assert "istio.io/dataplane-mode" not in nss["istio-system"].labels
    nodes = {n.name: n for n in parse_nodes(read("cluster/nodes.json"), "cluster/nodes.json")}
    w = nodes["ambient-worker"]
    assert w.addresses == (("InternalIP", "172.18.0.3"), ("Hostname", "ambient-worker"))
    assert w.pod_cidrs == ("10.244.2.0/24", "fd00:10:244:2::/64")
    assert nodes["ambient-worker2"].pod_cidrs == ("10.244.1.0/24",)  # only spec.podCIDR


def test_bare_list_and_single_object() -> None:
    obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "solo"},
        "status": {"podIP": "10.0.0.9"},
    }
    (p,) = parse_pods(json.dumps(obj, indent=4), "pod.json")
    assert (p.namespace, p.ips, p.source.line) == ("default", (ip("10.0.0.9"),), 5)
    two = parse_pods(
        json.dumps([obj, {**obj, "metadata": {"name": "duo", "namespace": "n"}}]), "pods.json"
    )
    assert [p.name for p in two] == ["solo", "duo"] and two[0].source.line == 1
    assert parse_pods('{"apiVersion": "v1", "items": [], "kind": "List"}', "pods.json") == ()
    # kubectl's typed lists
    assert (
        len(
            parse_nodes(
                json.dumps({"kind": "NodeList", "items": [{"metadata": {"name": "n"}}]}),
                "nodes.json",
            )
        )
        == 1
    )


def test_compact_json_keeps_no_huge_line_text() -> None:
    items = [
        {"kind": "Namespace", "metadata": {"name": f"ns{i}", "labels": {"x": "y" * 50}}}
        for i in range(40)
    ]
    out = parse_namespaces(json.dumps({"kind": "List", "items": items}), "namespaces.json")
    assert len(out) == 40 and all(n.source.line == 1 and n.source.text is None for n in out)


@pytest.mark.parametrize(
    ("parser", "rel"),
    [(parse_pods, "cluster/services.json"), (parse_services, "cluster/pods.json"),
     (parse_namespaces, "cluster/nodes.json"), (parse_nodes, "cluster/namespaces.json")],
)  # fmt: skip
def test_the_wrong_kind_is_rejected(parser, rel: str) -> None:
    with pytest.raises(ParseError) as exc:
        parser(read(rel), "cluster/x.json")
    assert (
        "expected a" in exc.value.reason and "got kind" in exc.value.reason and exc.value.line > 1
    )


@pytest.mark.parametrize("parser", [parse_pods, parse_services, parse_namespaces, parse_nodes])
@pytest.mark.parametrize(
    "rel",
    [
        "iptables-save/inpod-default.iptables-save.txt",
        "ip-rule/kernel.txt",
        "ipset/kernel-list.txt",
        "ip-rule/kernel.json",
    ],
)
def test_other_tools_output_is_rejected(parser, rel: str) -> None:
    with pytest.raises(ParseError):
        parser(read(rel), "cluster/x.json")


@pytest.mark.parametrize("parser", [parse_pods, parse_services, parse_namespaces, parse_nodes])
def test_empty_file_is_rejected(parser) -> None:
    with pytest.raises(ParseError) as exc:
        parser("", "cluster/x.json")
    assert "empty" in exc.value.reason


def test_truncated_list_fails_with_its_last_line() -> None:
    text = read("cluster/pods.json")
    for end in (len(text) // 3, len(text) // 2, len(text) - 5):
        with pytest.raises(ParseError) as exc:
            parse_pods(text[:end], "cluster/pods.json")
        assert "truncated" in exc.value.reason
        assert exc.value.line == text[:end].count("\n") + 1


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"kind": "List", "items": [{"kind": "Pod", "metadata": {}}]}, "without metadata.name"),
        ({"kind": "List", "items": [7]}, "expected a Pod object"),
        ({"kind": "List", "items": {"a": 1}}, "'items' is not an array"),
        (
            {
                "kind": "List",
                "items": [{"metadata": {"name": "a"}, "status": {"podIP": "10.0.0.999"}}],
            },
            "not an IP address",
        ),
        (
            {"kind": "List", "items": [{"metadata": {"name": "a", "labels": ["x"]}}]},
            "metadata.labels is not an object",
        ),
        (
            {
                "kind": "List",
                "items": [
                    {
                        "metadata": {"name": "a"},
                        "spec": {"containers": [{"ports": [{"name": "x"}]}]},
                    }
                ],
            },
            "containerPort",
        ),
        (
            {
                "kind": "List",
                "items": [{"metadata": {"name": "a"}, "spec": {"containers": {"x": 1}}}],
            },
            "is not a list",
        ),
    ],
)
def test_malformed_pods(doc: dict, reason: str) -> None:
    with pytest.raises(ParseError) as exc:
        parse_pods(json.dumps(doc, indent=2), "cluster/pods.json")
    assert reason in exc.value.reason


def test_malformed_services_and_nodes() -> None:
    with pytest.raises(ParseError, match="numeric 'port'"):
        parse_services(
            json.dumps([{"metadata": {"name": "s"}, "spec": {"ports": [{"port": "80"}]}}]), "s.json"
        )
    with pytest.raises(ParseError, match="address without"):
        parse_nodes(
            json.dumps(
                [{"metadata": {"name": "n"}, "status": {"addresses": [{"type": "InternalIP"}]}}]
            ),
            "n.json",
        )


def test_garbage_raises_only_parse_error() -> None:
    rng = random.Random(17)
    for _ in range(200):
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 200))).decode("latin-1")
        for parser in (parse_pods, parse_services, parse_namespaces, parse_nodes):
            try:
                parser(junk, "x.json")
            except ParseError:
                pass
