"""Discovery: API lists -> secret-free kubectl-shaped projections; kind nodes; netns -> pod."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ambientctl.analyzers.parse.cluster import (
    parse_namespaces,
    parse_nodes,
    parse_pods,
    parse_services,
)
from ambientctl.collectors.discovery import (
    addresses,
    as_kubectl_list,
    discover_cluster,
    discover_netns,
    is_ambient,
    istio_pods,
    kind_nodes,
    map_netns,
    parse_discovery,
    project_pod,
)
from ambientctl.collectors.kube import ClientFactory, KubeSource
from ambientctl.errors import TransportError
from tests.peers.kube_api import PLANTED_SECRET, KubeApi
from tests.peers.lab import lab_cluster

pytest_plugins = ["tests.peers.fixtures"]


def _pod(
    name: str, ip: str | None, node: str = "n1", ns: str = "default", **spec: Any
) -> dict[str, Any]:
    status = {"podIP": ip, "podIPs": [{"ip": ip}]} if ip else {}
    return {
        "metadata": {"name": name, "namespace": ns},
        "spec": {"nodeName": node, **spec},
        "status": status,
    }


def _addr_json(*ips: str) -> bytes:
    return json.dumps(
        [
            {"ifname": "lo", "addr_info": [{"local": "127.0.0.1"}]},
            {"ifname": "eth0", "addr_info": [{"local": ip} for ip in ips]},
        ]
    ).encode()


# --------------------------------------------------------------------------- projections


def test_pod_projection_drops_env_args_and_last_applied_but_keeps_what_analysis_reads() -> None:
    raw = {
        "metadata": {
            "name": "p",
            "namespace": "default",
            "uid": "u1",
            "labels": {"app": "a"},
            "annotations": {
                "ambient.istio.io/redirection": "enabled",
                "kubectl.kubernetes.io/last-applied-configuration": PLANTED_SECRET,
                "vendor.example/token": PLANTED_SECRET,
            },
            "managedFields": [{"manager": "kubectl"}],
            "ownerReferences": [
                {"kind": "ReplicaSet", "name": "p-1", "uid": "r", "controller": True}
            ],
        },
        "spec": {
            "nodeName": "n1",
            "volumes": [{"secret": {"secretName": "db"}}],
            "containers": [
                {
                    "name": "c",
                    "image": "i",
                    "env": [{"name": "PW", "value": PLANTED_SECRET}],
                    "envFrom": [{"secretRef": {"name": "db"}}],
                    "args": [PLANTED_SECRET],
                    "command": ["run", PLANTED_SECRET],
                    "ports": [{"containerPort": 9080, "protocol": "TCP"}],
                }
            ],
        },
        "status": {
            "phase": "Running",
            "podIP": "10.244.1.7",
            "podIPs": [{"ip": "10.244.1.7"}],
            "hostIP": "172.18.0.3",
        },
    }
    out = project_pod(raw)
    text = json.dumps(out)
    assert PLANTED_SECRET not in text and "db" not in text and "managedFields" not in text
    assert out["metadata"]["annotations"] == {"ambient.istio.io/redirection": "enabled"}
    (pod,) = parse_pods(as_kubectl_list([out]).decode(), "cluster/pods.json")
    assert (pod.namespace, pod.name, pod.node, str(pod.ips[0]), pod.owner) == (
        "default",
        "p",
        "n1",
        "10.244.1.7",
        "ReplicaSet/p-1",
    )
    assert pod.container_ports == ((None, 9080, "TCP"),) and pod.images == ("i",)


def test_kubectl_list_shape_is_sorted_and_indented_like_kubectl() -> None:
    text = as_kubectl_list(
        [{"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "x"}}]
    ).decode()
    doc = json.loads(text)
    assert doc["kind"] == "List" and doc["apiVersion"] == "v1" and doc["items"][0]["kind"] == "Pod"
    assert text.startswith('{\n    "apiVersion": "v1",\n    "items": [') and text.endswith("}\n")


def test_ambient_membership_follows_annotation_then_labels() -> None:
    nss = {"mesh": {"metadata": {"labels": {"istio.io/dataplane-mode": "ambient"}}}}
    assert is_ambient(
        {"metadata": {"annotations": {"ambient.istio.io/redirection": "enabled"}}}, {}
    )
    assert is_ambient({"metadata": {"namespace": "mesh"}}, nss)
    assert not is_ambient(
        {"metadata": {"namespace": "mesh", "labels": {"istio.io/dataplane-mode": "none"}}}, nss
    )
    assert not is_ambient({"metadata": {"namespace": "mesh"}, "spec": {"hostNetwork": True}}, nss)
    assert not is_ambient(
        {"metadata": {"namespace": "mesh", "annotations": {"sidecar.istio.io/status": "{}"}}}, nss
    )
    assert not is_ambient({"metadata": {"namespace": "other"}}, nss)


# --------------------------------------------------------------------------- netns -> pod


def test_each_netns_maps_to_the_pod_whose_ip_it_holds() -> None:
    pods = [
        _pod("a", "10.0.0.1"),
        _pod("b", "10.0.0.2"),
        _pod("far", "10.0.0.3", node="n2"),
        _pod("hostnet", "172.18.0.2", hostNetwork=True),
    ]
    found = {
        "cni-a": _addr_json("10.0.0.1"),
        "cni-b": _addr_json("10.0.0.2", "fe80::1"),
        "cni-far": _addr_json("10.0.0.3"),
        "cni-host": _addr_json("172.18.0.2"),
        "cni-both": _addr_json("10.0.0.1", "10.0.0.2"),
        "cni-junk": b"not json",
        "Bad;Name": _addr_json("10.0.0.1"),
        "cni-a-stale": _addr_json("10.0.0.1"),
    }
    m = map_netns(found, [p for p in pods if p["spec"]["nodeName"] == "n1"])
    # cni-both holds the IPs of two pods; pod a is claimed by two netns: trust none of them
    assert m.pods == {"cni-b": ("default", "b")}
    assert set(m.ambiguous) == {"cni-both", "cni-a", "cni-a-stale"}
    assert set(m.unmapped) == {"cni-far", "cni-host", "cni-junk", "Bad;Name"}


def test_discovery_output_is_split_per_netns() -> None:
    nonce = "0" * 32
    out = (f"{nonce} N cni-1\n[1]\n{nonce} E 0\n{nonce} N cni-2\n\n{nonce} E 1\n").encode()
    assert parse_discovery(out, nonce) == {"cni-1": b"[1]", "cni-2": b""}
    assert addresses(_addr_json("10.0.0.1", "::1")) == {"10.0.0.1"}


# --------------------------------------------------------------------------- peers


@pytest.mark.kernel
def test_cluster_discovery_through_the_api_writes_secret_free_parsable_lists(
    kube_peer: KubeApi, peer_dir: Path
) -> None:
    view = discover_cluster(ClientFactory(KubeSource(kubeconfig=str(peer_dir / "kubeconfig"))))
    assert set(view.files) == {
        f"cluster/{k}.json" for k in ("pods", "services", "namespaces", "nodes", "endpointslices")
    }
    for data in view.files.values():
        assert PLANTED_SECRET.encode() not in data  # the peer plants it in env/args/annotations
        assert b'"env"' not in data and b"managedFields" not in data
    pods = parse_pods(view.files["cluster/pods.json"].decode(), "cluster/pods.json")
    lab_pods = lab_cluster(with_cni=True)["pods"]["items"]
    assert {(p.namespace, p.name) for p in pods} == {
        (p["metadata"]["namespace"], p["metadata"]["name"]) for p in lab_pods
    }
    assert len(parse_services(view.files["cluster/services.json"].decode(), "s")) == 6
    assert len(parse_namespaces(view.files["cluster/namespaces.json"].decode(), "n")) == 3
    assert {n.name for n in parse_nodes(view.files["cluster/nodes.json"].decode(), "n")} == {
        "ambient-worker",
        "ambient-worker2",
    }
    found = istio_pods(view, "ambient-worker")
    assert found["ztunnel"]["metadata"]["name"] == "ztunnel-nptf6"
    assert found["istio-cni"]["spec"]["hostNetwork"] is True


@pytest.mark.kernel
def test_an_unreachable_api_is_a_transport_error(peer_dir: Path) -> None:
    conf = peer_dir / "dead.conf"
    conf.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "d",
                "clusters": [{"name": "d", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "d", "user": {"token": "t"}}],
                "contexts": [{"name": "d", "context": {"cluster": "d", "user": "d"}}],
            }
        )
    )
    with pytest.raises(TransportError, match="unreachable"):
        discover_cluster(ClientFactory(KubeSource(kubeconfig=str(conf)), timeout=2), timeout=2)


@pytest.mark.kernel
def test_kind_nodes_and_their_pod_netns_are_found(docker_peer: Any, seed_lab: Any) -> None:
    import docker

    from ambientctl.collectors.docker import DockerTransport

    nodes = kind_nodes(docker.DockerClient(base_url=docker_peer.base_url), "ambient")
    assert [n.name for n in nodes] == ["ambient-worker", "ambient-worker2"]
    found = discover_netns(
        DockerTransport("ambient-worker2", base_url=docker_peer.base_url), "/var/run/netns"
    )
    pods = [p for p in lab_cluster()["pods"]["items"] if p["spec"]["nodeName"] == "ambient-worker2"]
    m = map_netns(found, pods)
    expected = {
        seed_lab.netns_name(
            f"ambient-worker2/pod/{p['metadata']['namespace']}/{p['metadata']['name']}"
        ): (p["metadata"]["namespace"], p["metadata"]["name"])
        for p in pods
    }
    assert m.pods == expected and not m.ambiguous and not m.unmapped


# --------------------------------------------------------------------------- RBAC


def test_the_documented_rbac_grants_exactly_what_collection_uses() -> None:
    yaml = pytest.importorskip("yaml")
    docs = list(
        yaml.safe_load_all((Path(__file__).resolve().parents[1] / "docs" / "rbac.yaml").read_text())
    )
    grants: set[tuple[str, str, str, str]] = set()  # (scope, group, resource, verb)
    for doc in docs:
        if doc["kind"] not in ("ClusterRole", "Role"):
            continue
        scope = doc["metadata"].get("namespace", "*cluster*")
        for rule in doc["rules"]:
            for group in rule["apiGroups"]:
                for res in rule["resources"]:
                    for verb in rule["verbs"]:
                        grants.add((scope, group, res, verb))
    for _, group, res, verb in grants:
        assert "*" not in (group, res, verb)
        assert res not in ("secrets", "configmaps", "nodes/proxy")
    writes = {g for g in grants if g[3] not in ("get", "list")}
    # exec into ztunnel/istio-cni pods, and port-forward to ztunnel's localhost-only admin
    # port (config_dump), both in istio-system only.
    assert writes == {("istio-system", "", "pods/exec", "create"),
                      ("istio-system", "", "pods/portforward", "create")}
    reads = {(g[1], g[2]) for g in grants if g[0] == "*cluster*" and g[3] == "list"}
    from ambientctl.bundle.layout import MESH_APIS

    assert reads == {
        ("", "nodes"),
        ("", "namespaces"),
        ("", "pods"),
        ("", "services"),
        ("discovery.k8s.io", "endpointslices"),
        *((group, plural) for group, _versions, plural in MESH_APIS.values()),
    }
    assert ("istio-system", "", "pods/exec", "get") in grants  # WebSocket exec starts as a GET
    bound = {
        (d["roleRef"]["kind"], d["roleRef"]["name"]) for d in docs if d["kind"].endswith("Binding")
    }
    assert bound == {("ClusterRole", "ambientctl-reader"), ("Role", "ambientctl-exec")}


@pytest.mark.kernel
def test_cluster_lists_are_read_in_pages_with_continue_tokens(
    kube_peer: KubeApi, peer_dir: Path
) -> None:
    factory = ClientFactory(KubeSource(kubeconfig=str(peer_dir / "kubeconfig")))
    whole = discover_cluster(factory)
    before = dict(kube_peer.list_pages)
    paged = discover_cluster(factory, page_size=2)
    assert paged.files == whole.files  # same objects, same bytes
    n_pods = len(lab_cluster(with_cni=True)["pods"]["items"])
    served = kube_peer.list_pages["pods"] - before.get("pods", 0)
    assert n_pods > 2 and served == -(-n_pods // 2)  # ceil: every page followed, no more


@pytest.mark.kernel
def test_an_invalid_name_from_the_api_skips_that_object_and_collects_the_rest(
    seed_lab: Any, views: Any, peer_dir: Path
) -> None:
    from ambientctl.bundle.reader import open_bundle
    from ambientctl.collectors.live import LiveOptions, collect_live
    from tests.peers.lab import kube_exec_targets

    docs = lab_cluster(with_cni=True)
    bad = json.loads(json.dumps(docs["pods"]["items"][0]))
    bad["metadata"]["name"] = "Bad_Name/../x"
    bad["metadata"]["uid"] = "bad"
    docs["pods"]["items"].append(bad)
    bad_node = json.loads(json.dumps(docs["nodes"]["items"][0]))
    bad_node["metadata"]["name"] = "NODE WITH SPACES"
    docs["nodes"]["items"].append(bad_node)
    with KubeApi(docs, kube_exec_targets(seed_lab, views, docs)) as api:
        conf = api.kubeconfig(peer_dir / "invalid-names.conf")
        written = collect_live(
            LiveOptions(kubeconfig=str(conf), cni_netns_dir="/var/run/netns"),
            str(peer_dir / "invalid-names"),
        )
    skipped = written.manifest["collection"]["skipped_objects"]
    assert {s["kind"] for s in skipped} == {"pods", "nodes"}
    assert any("Bad_Name/../x" in s["why"] for s in skipped)
    assert any("NODE WITH SPACES" in s["why"] for s in skipped)
    bundle = open_bundle(str(peer_dir / "invalid-names"))
    ids = {t["id"] for t in written.manifest["targets"]}
    assert {"node/ambient-worker", "node/ambient-worker2"} <= ids
    assert any(p.startswith("nodes/ambient-worker2/pods/default/") for p in bundle.paths())
    assert b"Bad_Name" not in bundle.read_bytes("cluster/pods.json")


def _mesh_docs() -> dict[str, dict[str, Any]]:
    def lst(kind: str, api: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {"apiVersion": api, "kind": f"{kind}List", "items": items}

    pa = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
          "metadata": {"name": "strict", "namespace": "default", "uid": "u1",
                       "managedFields": [{"manager": "x"}]},
          "spec": {"mtls": {"mode": "STRICT"}, "selector": {"matchLabels": {"app": "p"}}}}
    ap = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
          "metadata": {"name": "allow", "namespace": "default"},
          "spec": {"action": "ALLOW", "rules": [{"from": [{"source": {"principals": [
              "cluster.local/ns/secret/sa/" + PLANTED_SECRET]}}]}]}}
    gw = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
          "metadata": {"name": "waypoint", "namespace": "default",
                       "labels": {"istio.io/waypoint-for": "service"}},
          "spec": {"gatewayClassName": "istio-waypoint",
                   "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}}
    return {"peerauthentications": lst("PeerAuthentication", "security.istio.io/v1", [pa]),
            "authorizationpolicies": lst("AuthorizationPolicy", "security.istio.io/v1", [ap]),
            "gateways": lst("Gateway", "gateway.networking.k8s.io/v1", [gw])}


@pytest.mark.kernel
def test_istio_and_gateway_objects_are_collected_projected_and_read(peer_dir: Path) -> None:
    """PeerAuthentication, AuthorizationPolicy and Gateway lists land as cluster/*.json in
    the kubectl List shape, projected (no rules, no managedFields), and the snapshot reads
    them; a cluster without the CRDs records why and writes no file."""
    from ambientctl.analyzers.parse.cluster import parse_mesh_objects
    from ambientctl.bundle.layout import MESH_FILES

    with KubeApi({**lab_cluster(), **_mesh_docs()}) as api:
        view = discover_cluster(ClientFactory(KubeSource(
            kubeconfig=str(api.kubeconfig(peer_dir / "mesh.conf")))))
    for kind, rel in MESH_FILES.items():
        text = view.files[rel].decode()
        assert PLANTED_SECRET not in text and "managedFields" not in text
        (obj,) = parse_mesh_objects(text, rel, kind)
        assert obj.namespace == "default"
    assert json.loads(view.files[MESH_FILES["PeerAuthentication"]])["items"][0]["spec"] == \
        {"mtls": {"mode": "STRICT"}, "selector": {"matchLabels": {"app": "p"}}}
    assert "rules" not in view.files[MESH_FILES["AuthorizationPolicy"]].decode()
    with KubeApi(lab_cluster()) as api:
        bare = discover_cluster(ClientFactory(KubeSource(
            kubeconfig=str(api.kubeconfig(peer_dir / "bare.conf")))))
    assert not set(MESH_FILES.values()) & set(bare.files)
    from ambientctl.bundle.layout import MESH_APIS

    assert set(bare.errors) >= {plural for _g, _v, plural in MESH_APIS.values()}


def test_a_paged_list_is_projected_page_by_page_never_held_raw_whole() -> None:
    """Why: a 500-node cluster's pod list is tens of MB raw (env, args, managedFields),
    and it was held whole beside its projection (most of discovery's peak). Here 800 pods
    carry 8 KB each that the projection drops: reading them 20 a page must peak near one
    page's raw objects beside the projections, far under the 6.4 MB of the whole raw list."""
    import tracemalloc

    from ambientctl.collectors.discovery import _read_projected

    class Resp:
        def __init__(self, data: bytes) -> None:
            self.data = data

    n, size = 800, 20

    def call(**kwargs: Any) -> Resp:
        start = int(kwargs.get("_continue") or 0)
        env = [{"name": "BIG", "value": "x" * 8000}]
        items = [_pod(f"p{i}", node="n1", ip=f"10.1.{i // 250}.{i % 250 + 1}",
                      containers=[{"name": "app", "image": "app:1", "env": env}])
                 for i in range(start, min(n, start + size))]
        more = {"continue": str(start + size)} if start + size < n else {}
        return Resp(json.dumps({"items": items, "metadata": more}).encode())

    tracemalloc.start()
    try:
        projected, dropped = _read_projected("pods", call, 1.0, size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(projected) == n and not dropped
    assert all("env" not in c for p in projected for c in p["spec"]["containers"])
    assert peak < 3_000_000, peak  # measured ~1.8 MB; held whole: ~8.9 MB


def test_a_live_plan_keeps_the_cluster_files_not_its_objects() -> None:
    """Why: the projected objects (~1.8 KB a pod, 18 MiB at 200 x 50) serve planning only;
    a plan that kept them held them through the whole run and the write."""
    from ambientctl.collectors.discovery import ClusterView
    from ambientctl.collectors.live import RoutedNetns, _assemble
    from ambientctl.collectors.runner import Target

    view = ClusterView({"pods": [_pod("a", "10.0.0.1")], "nodes": [{"metadata": {"name": "n1"}}]},
                       {"cluster/pods.json": b"{}\n"}, {"endpointslices": "forbidden"})
    target = Target.node_target("n1", RoutedNetns(route="r", kind="node"))
    plan = _assemble("kube", {}, selected_names=["n1"], results=[[target]], view=view, notes={})
    assert plan.cluster is not None and plan.cluster.objects == {}
    assert plan.cluster.files == view.files and plan.cluster.errors == view.errors
    assert plan.targets == [target]


def test_a_failed_list_is_told_from_a_projection_bug() -> None:
    """Why: projecting page by page moved the projection inside the list's error handling;
    only the API's failures may become the `list KIND` transport error, a projection that
    breaks still surfaces as itself (as when the whole list was read first)."""
    from ambientctl.collectors.discovery import _ListFailed, _read_projected

    class Resp:
        data = json.dumps({"items": [_pod("a", "10.0.0.1", containers="not-a-list")]}).encode()

    def refused(**kwargs: Any) -> Any:
        raise OSError("connection refused")

    with pytest.raises(_ListFailed) as failed:
        _read_projected("pods", refused, 1.0, 10)
    assert isinstance(failed.value.error, OSError)
    with pytest.raises(AttributeError):
        _read_projected("pods", lambda **kwargs: Resp(), 1.0, 10)
