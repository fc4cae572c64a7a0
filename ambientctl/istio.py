"""Istio ambient vocabulary: ports, marks, labels/annotations, which pod is which, enrollment.

One place for the names Istio gives things, so that collectors (which pods to exec into,
which netns to dump) and analyzers (what a rule or a pod means) cannot drift apart. Facts
are from /work/shared/docs/istio-datapath.md (§2-§4: marks, labels and annotations §4.1,
ports §4.2) and the charts: every ztunnel chart selects its pods with `app: ztunnel` and the
istio-cni chart with `k8s-app: istio-cni-node` (DaemonSet `spec.selector.matchLabels`, so
every pod of those DaemonSets carries the label).

Pure data and functions over plain values (names, label maps): no I/O, importable by every
layer. The model's `Pod` and the API's pod dicts both reduce to these arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# --------------------------------------------------------------------------- ports (§4.2)

OUTBOUND_PORT = 15001  # outbound capture (app netns in-pod; ztunnel netns via TPROXY legacy)
INBOUND_PLAINTEXT_PORT = 15006  # inbound plaintext
HBONE_PORT = 15008  # HBONE: HTTP/2 CONNECT over mTLS, also on the wire between nodes
DNS_PORT = 15053  # ztunnel's DNS proxy
ADMIN_PORT = 15000  # ztunnel admin (`/config_dump`), localhost only
METRICS_PORT = 15020  # ztunnel metrics
READINESS_PORT = 15021  # ztunnel readiness `/healthz/ready`
ENVOY_STATS_PORT = 15090  # Envoy's Prometheus port (sidecars, waypoints)

# ztunnel's listeners, port -> what it serves (the three a captured connection lands on).
ZTUNNEL_LISTENERS: Mapping[int, str] = {
    OUTBOUND_PORT: "outbound",
    INBOUND_PLAINTEXT_PORT: "inbound plaintext",
    HBONE_PORT: "inbound HBONE",
}

# --------------------------------------------------------------------------- marks (§3, §3.11)

# In-pod (Istio >= 1.21): ztunnel's sockets carry SO_MARK 1337 under mask 0xfff; the pod's
# rules skip packets with it. Cilium's ztunnel integration uses the same value.
INPOD_MARK = 0x539
INPOD_MASK = 0xFFF
INPOD_TPROXY_MARK = 0x111  # in-pod TPROXY era (1.21-1.23): marks inbound for table 100
# Legacy node-level design: the ipset of captured pod IPs.
LEGACY_IPSET = "ztunnel-pods-ips"
# kubelet's probes are SNATed to this link-local address in-pod, so the pod's rules let them in.
PROBE_SNAT_V4 = "169.254.7.127"
# Sidecars: istio-proxy runs as uid 1337 (its rules RETURN on --uid-owner 1337) and
# delivers inbound traffic to the app from 127.0.0.6 (§3.11).
SIDECAR_UID = 1337
SIDECAR_INBOUND_SRC = "127.0.0.6"

# --------------------------------------------------------------------------- labels, annotations (§4.1)

DATAPLANE_MODE = "istio.io/dataplane-mode"  # label, pod & namespace: ambient | none
REDIRECTION = "ambient.istio.io/redirection"  # annotation istio-cni writes: enabled | pending
SIDECAR_STATUS = "sidecar.istio.io/status"  # annotation: presence means a sidecar pod
USE_WAYPOINT = "istio.io/use-waypoint"  # label: bind to a waypoint (`none` opts out)
USE_WAYPOINT_NAMESPACE = "istio.io/use-waypoint-namespace"
WAYPOINT_FOR = "istio.io/waypoint-for"  # label on the waypoint Gateway: service|workload|all|none
WAYPOINT_FOR_VALUES = ("service", "workload", "all", "none")
DEFAULT_WAYPOINT_FOR = "service"
INGRESS_USE_WAYPOINT = "istio.io/ingress-use-waypoint"
TUNNEL = "networking.istio.io/tunnel"  # label `http`: the workload speaks HBONE natively
# Gateway API: the pods Istio deploys for a Gateway carry its name and their controller.
GATEWAY_NAME = "gateway.networking.k8s.io/gateway-name"
MANAGED = "gateway.istio.io/managed"
MESH_CONTROLLER = "istio.io-mesh-controller"  # waypoints
GATEWAY_CONTROLLER = "istio.io-gateway-controller"  # ingress/egress gateways

# --------------------------------------------------------------------------- which image is which

# Istio components by the last path element of their image repository: the manifest's
# `components` (their tags, written from cluster/pods.json), the ztunnel generation the
# trace reads from a pod's image, and the images redaction keeps readable.
IMAGE_COMPONENTS = {"ztunnel": "ztunnel", "install-cni": "istio-cni", "pilot": "istiod",
                    "proxyv2": "istio-proxy"}


def image_component(image: str) -> tuple[str, str] | None:
    """(component, tag) of an Istio image ("docker.io/istio/ztunnel:1.24.0" -> ("ztunnel",
    "1.24.0"); an untagged one is "latest"), None for any other image. A registry port is
    not a tag ("registry:5000/istio/ztunnel" is untagged)."""
    last = image.rsplit("/", 1)[-1]
    repo, _, tag = image.rpartition(":") if ":" in last else (image, "", "")
    component = IMAGE_COMPONENTS.get(repo.rsplit("/", 1)[-1])
    return (component, tag or "latest") if component is not None else None


# --------------------------------------------------------------------------- which pod is which

ISTIO_NAMESPACE = "istio-system"  # the charts' default release namespace
ZTUNNEL_APP = "ztunnel"
ISTIO_CNI_APP = "istio-cni-node"
# Keys a workload's "app" name is read from, in order (kubectl and dashboards use the same).
APP_LABELS = ("app", "k8s-app", "app.kubernetes.io/name")


def _is_app(namespace: str, name: str, labels: Mapping[str, str], apps: tuple[str, ...],
            prefix: str) -> bool:
    # The labels decide when the pod has any app label (the charts' pods always do, in any
    # namespace); a pod with none (a hand-made or redacted bundle) is recognised by the
    # DaemonSet's name prefix in istio-system only, so a user's `ztunnel-demo` elsewhere is
    # not taken for the mesh's.
    values = [labels[k] for k in APP_LABELS if labels.get(k)]
    if values:
        return any(v in apps for v in values)
    return name.startswith(prefix) and namespace == ISTIO_NAMESPACE


def is_ztunnel(namespace: str, name: str, labels: Mapping[str, str]) -> bool:
    """A pod of the ztunnel DaemonSet (`app: ztunnel`; newer charts add
    `app.kubernetes.io/name: ztunnel`)."""
    return _is_app(namespace, name, labels, (ZTUNNEL_APP,), ZTUNNEL_APP + "-")


def is_istio_cni(namespace: str, name: str, labels: Mapping[str, str]) -> bool:
    """A pod of the istio-cni node agent DaemonSet (`k8s-app: istio-cni-node`; newer charts
    add `app.kubernetes.io/name: istio-cni`)."""
    return _is_app(namespace, name, labels, (ISTIO_CNI_APP, "istio-cni"), ISTIO_CNI_APP + "-")


def is_waypoint(labels: Mapping[str, str]) -> bool:
    """A waypoint's Envoy pod (Istio's mesh controller deploys it for a waypoint Gateway)."""
    return labels.get(MANAGED) == MESH_CONTROLLER


def is_ingress_gateway(labels: Mapping[str, str]) -> bool:
    """An ingress gateway's Envoy pod (Gateway API deployment or the classic install)."""
    return labels.get(MANAGED) == GATEWAY_CONTROLLER or labels.get("istio") == "ingressgateway"


# --------------------------------------------------------------------------- enrollment


@dataclass(frozen=True)
class Enrollment:
    """Should a pod be in the mesh, and why (for messages)."""

    expected: bool
    why: str


def enrollment(*, namespace: str, name: str, labels: Mapping[str, str],
               annotations: Mapping[str, str], host_network: bool,
               namespace_labels: Mapping[str, str]) -> Enrollment:
    """Does istio-cni enroll this pod (istio-datapath.md §2.1 legacy, §3.1 item 4 in-pod)?

    hostNetwork pods, ztunnel itself and sidecar pods never; then the user's opt-outs
    (annotation `disabled`, legacy..1.21; label `none`, 1.22+), the pod label, the namespace
    label, and last istio-cni's own status annotation (`enabled`/`pending`).
    """
    if host_network:
        return Enrollment(False, "hostNetwork pod")
    if is_ztunnel(namespace, name, labels):
        return Enrollment(False, "ztunnel itself")
    if SIDECAR_STATUS in annotations:
        return Enrollment(False, "has a sidecar")
    ann = annotations.get(REDIRECTION)
    if ann == "disabled":
        return Enrollment(False, f"annotated {REDIRECTION}=disabled")
    label = labels.get(DATAPLANE_MODE)
    if label == "none":
        return Enrollment(False, f"labelled {DATAPLANE_MODE}=none")
    if label == "ambient":
        return Enrollment(True, f"pod labelled {DATAPLANE_MODE}=ambient")
    if namespace_labels.get(DATAPLANE_MODE) == "ambient":
        return Enrollment(True, f"namespace {namespace} labelled {DATAPLANE_MODE}=ambient")
    if ann in ("enabled", "pending"):
        return Enrollment(True, f"annotated {REDIRECTION}={ann}")
    return Enrollment(False, "not selected for ambient")
