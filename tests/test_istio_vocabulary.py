"""`ambientctl/istio.py`: one definition of which pod is ztunnel / istio-cni / a waypoint and of
enrollment, shared by the collectors (raw API pods) and the analyzers (model pods)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from ambientctl import istio
from ambientctl.analyzers.doctor.facts import enrollment, is_ztunnel_pod
from ambientctl.bundle.load import load_snapshot
from ambientctl.collectors.discovery import is_ambient, istio_pods

ROOT = Path(__file__).resolve().parent.parent
RAW_PODS = ROOT / "tests" / "fixtures" / "raw" / "cluster" / "pods.json"
EXAMPLES = sorted(p.parent.parent for p in (ROOT / "examples").glob("*/cluster/pods.json"))


def _pods(path: Path) -> list[dict]:
    return json.loads(path.read_text())["items"]


def _key(pod: dict) -> tuple[str, str, dict[str, str]]:
    meta = pod["metadata"]
    return meta.get("namespace", "default"), meta["name"], meta.get("labels") or {}


def test_real_kind_pods_are_told_apart_ztunnel_istio_cni_and_apps() -> None:
    # The seed cluster's own `kubectl get pods -o json` (istio-cni-node is hostNetwork,
    # labelled k8s-app; ztunnel labelled app).
    pods = {p["metadata"]["name"]: p for p in _pods(RAW_PODS)}
    assert {n for n, p in pods.items() if istio.is_ztunnel(*_key(p))} == {"ztunnel-nptf6"}
    assert {n for n, p in pods.items() if istio.is_istio_cni(*_key(p))} == {"istio-cni-node-qsvsz"}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_collectors_and_analyzers_find_the_same_ztunnels_in_every_example(example: Path) -> None:
    raw = _pods(example / "cluster" / "pods.json")
    by_raw = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in raw
              if istio.is_ztunnel(*_key(p))}
    snap = load_snapshot(str(example))
    by_model = {(p.namespace, p.name) for p in snap.cluster.pods if is_ztunnel_pod(p)}
    assert by_raw == by_model
    assert by_raw and all(name.startswith("ztunnel-") for _ns, name in by_raw)


def test_discovery_picks_the_nodes_istio_pods_by_the_shared_definition() -> None:
    class View:
        def pods_on(self, node: str) -> list[dict]:
            return [p for p in _pods(RAW_PODS) if (p.get("spec") or {}).get("nodeName") == node]

    nodes = {(p.get("spec") or {}).get("nodeName") for p in _pods(RAW_PODS)
             if p["metadata"]["name"] == "ztunnel-nptf6"}
    (node,) = nodes
    found = istio_pods(View(), node)  # type: ignore[arg-type]
    assert found["ztunnel"]["metadata"]["name"] == "ztunnel-nptf6"
    if "istio-cni" in found:
        assert found["istio-cni"]["metadata"]["name"] == "istio-cni-node-qsvsz"


@pytest.mark.parametrize(("namespace", "name", "labels", "ztunnel", "cni"), [
    # chart shapes: `app: ztunnel` is the DaemonSet selector; newer charts add the k8s name
    ("istio-system", "ztunnel-abcde", {"app": "ztunnel"}, True, False),
    ("kube-system", "ztunnel-abcde", {"app": "ztunnel", "sidecar.istio.io/inject": "false"},
     True, False),
    ("istio-system", "zt-1", {"app.kubernetes.io/name": "ztunnel"}, True, False),
    ("istio-system", "istio-cni-node-x1", {"k8s-app": "istio-cni-node"}, False, True),
    ("istio-system", "cni-x1", {"app.kubernetes.io/name": "istio-cni"}, False, True),
    # a user's pod with the prefix but its own app label is not the mesh's
    ("default", "ztunnel-demo-1", {"app": "ztunnel-demo"}, False, False),
    ("istio-system", "ztunnel-demo-1", {"app": "demo"}, False, False),
    # unlabelled (hand-made or redacted bundles): the DaemonSet prefix in istio-system only
    ("istio-system", "ztunnel-q", {}, True, False),
    ("default", "ztunnel-q", {}, False, False),
    ("istio-system", "istio-cni-node-q", {}, False, True),
])
def test_pod_identification_on_chart_and_edge_shapes(namespace: str, name: str,
                                                      labels: dict[str, str], ztunnel: bool,
                                                      cni: bool) -> None:
    assert istio.is_ztunnel(namespace, name, labels) is ztunnel
    assert istio.is_istio_cni(namespace, name, labels) is cni


def test_waypoint_and_ingress_gateway_pods_by_their_controller_label() -> None:
    assert istio.is_waypoint({istio.MANAGED: istio.MESH_CONTROLLER})
    assert not istio.is_waypoint({istio.MANAGED: istio.GATEWAY_CONTROLLER})
    assert istio.is_ingress_gateway({istio.MANAGED: istio.GATEWAY_CONTROLLER})
    assert istio.is_ingress_gateway({"istio": "ingressgateway"})
    assert not istio.is_ingress_gateway({istio.MANAGED: istio.MESH_CONTROLLER})


def test_enrollment_order_opt_outs_before_labels_before_istio_cni_status() -> None:
    def enrolled(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
                 ns: dict[str, str] | None = None, host: bool = False, name: str = "app-1",
                 namespace: str = "mesh") -> istio.Enrollment:
        return istio.enrollment(namespace=namespace, name=name, labels=labels or {},
                                annotations=annotations or {}, host_network=host,
                                namespace_labels=ns or {})

    ambient_ns = {istio.DATAPLANE_MODE: "ambient"}
    assert enrolled(ns=ambient_ns).expected
    assert not enrolled(ns=ambient_ns, host=True).expected
    assert not enrolled(ns=ambient_ns, labels={istio.DATAPLANE_MODE: "none"}).expected
    assert not enrolled(ns=ambient_ns, annotations={istio.SIDECAR_STATUS: "{}"}).expected
    assert not enrolled(ns=ambient_ns, annotations={istio.REDIRECTION: "disabled"}).expected
    assert enrolled(labels={istio.DATAPLANE_MODE: "ambient"}).expected
    assert enrolled(annotations={istio.REDIRECTION: "pending"}).expected
    zt = enrolled(ns=ambient_ns, labels={"app": "ztunnel"}, name="ztunnel-x",
                  namespace="istio-system")
    assert (zt.expected, zt.why) == (False, "ztunnel itself")
    assert not enrolled().expected


def test_doctor_enrollment_and_collector_membership_agree_on_the_examples() -> None:
    # Every example pod: collection's "is it ambient" (raw dicts) is istio-cni's status or
    # doctor's enrollment (model pods), from the same function.
    for example in EXAMPLES:
        snap = load_snapshot(str(example))
        nss = {n["metadata"]["name"]: n
               for n in json.loads((example / "cluster" / "namespaces.json").read_text())["items"]}
        raw = {(p["metadata"]["namespace"], p["metadata"]["name"]): p
               for p in _pods(example / "cluster" / "pods.json")}
        ns_labels = {name: (n["metadata"].get("labels") or {}) for name, n in nss.items()}
        for pod in snap.cluster.pods:
            expected = enrollment(pod, ns_labels.get(pod.namespace, {})).expected
            captured = pod.annotations.get(istio.REDIRECTION) == "enabled"
            assert is_ambient(raw[(pod.namespace, pod.name)], nss) is (captured or expected), \
                (example.name, pod.namespace, pod.name)


def test_vocabulary_literals_live_only_in_the_istio_module() -> None:
    # One fact, one place: these strings/ports appear as code literals nowhere else in the
    # package (message text inside f-strings is prose and may name them). The redaction
    # field table keys raw documents by label name and is the one listed exception.
    values = {istio.DATAPLANE_MODE, istio.REDIRECTION, istio.SIDECAR_STATUS, istio.USE_WAYPOINT,
              istio.USE_WAYPOINT_NAMESPACE, istio.WAYPOINT_FOR, istio.TUNNEL, istio.LEGACY_IPSET,
              istio.GATEWAY_NAME, istio.MANAGED, istio.INBOUND_PLAINTEXT_PORT,
              istio.OUTBOUND_PORT, istio.HBONE_PORT, istio.DNS_PORT, istio.INPOD_MARK}
    allowed = {Path("ambientctl/istio.py"), Path("ambientctl/bundle/redact_fields.py")}
    found = []
    for path in sorted((ROOT / "ambientctl").rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel in allowed:
            continue
        tree = ast.parse(path.read_text())
        in_fstring = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)
                      for v in node.values}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and id(node) not in in_fstring
                    and type(node.value) in (str, int) and node.value in values):
                found.append(f"{rel}:{node.lineno}: {node.value!r}")
    assert not found, "\n".join(found)
