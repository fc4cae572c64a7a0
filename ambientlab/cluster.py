"""The lab's Kubernetes objects, as `kubectl get ... -o json` would print them (v1 List).

Projections, as the bundle layout allows: the fields path analysis needs (names, UIDs,
labels, annotations, owners, node, IPs, ports, images, selectors, podCIDRs), in the
real shape, nothing secret. Timestamps are fixed (the seed's day) so that two builds
write identical files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ambientlab.topology import NODES, SERVICES, NodeSpec, PodSpec, ServiceSpec, _uid

CREATED = "2022-10-11T11:20:07Z"
K8S_VERSION = "v1.25.2"


def _list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}}


def pod_object(node: NodeSpec, pod: PodSpec) -> dict[str, Any]:
    """One Pod."""
    annotations = {"ambient.istio.io/redirection": "enabled" if pod.ambient else "disabled"}
    if pod.ztunnel:
        annotations["sidecar.istio.io/inject"] = "false"
    owner = {
        "apiVersion": "apps/v1",
        "blockOwnerDeletion": True,
        "controller": True,
        "kind": pod.owner_kind,
        "name": pod.owner_name,
        "uid": _uid(pod.owner_kind.lower(), pod.namespace, pod.owner_name),
    }
    container: dict[str, Any] = {
        "image": pod.image,
        "imagePullPolicy": "IfNotPresent",
        "name": "istio-proxy" if pod.ztunnel else pod.app,
    }
    if pod.ports:
        container["ports"] = [{"containerPort": p, "protocol": "TCP"} for p in pod.ports]
    if pod.ztunnel:
        container["ports"] = [{"containerPort": 15020, "name": "http-envoy-prom", "protocol": "TCP"}]
    spec: dict[str, Any] = {
        "containers": [container],
        "nodeName": node.name,
        "serviceAccountName": "ztunnel" if pod.ztunnel else f"bookinfo-{pod.app}" if pod.ports else pod.app,
    }
    if pod.ztunnel:
        spec["initContainers"] = [{"image": pod.image, "name": "istio-init"}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "annotations": annotations,
            "creationTimestamp": CREATED,
            "generateName": (pod.owner_name + "-") if pod.owner_kind == "ReplicaSet" else "ztunnel-",
            "labels": pod.labels,
            "name": pod.name,
            "namespace": pod.namespace,
            "ownerReferences": [owner],
            "uid": pod.pod_uid,
        },
        "spec": spec,
        "status": {
            "hostIP": node.ip,
            "phase": "Running",
            "podIP": pod.ip,
            "podIPs": [{"ip": pod.ip}],
            "qosClass": "BestEffort",
            "startTime": CREATED,
        },
    }


def service_object(svc: ServiceSpec) -> dict[str, Any]:
    """One ClusterIP Service."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "creationTimestamp": CREATED,
            "labels": {"app": svc.app, "service": svc.name},
            "name": svc.name,
            "namespace": svc.namespace,
            "uid": svc.uid,
        },
        "spec": {
            "clusterIP": svc.cluster_ip,
            "clusterIPs": [svc.cluster_ip],
            "internalTrafficPolicy": "Cluster",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "ports": [{"name": svc.port_name, "port": svc.port, "protocol": "TCP",
                       "targetPort": svc.target_port}],
            "selector": {"app": svc.app},
            "sessionAffinity": "None",
            "type": "ClusterIP",
        },
        "status": {"loadBalancer": {}},
    }


def endpointslice_object(svc: ServiceSpec) -> dict[str, Any]:
    """The EndpointSlice the endpointslice controller would keep for `svc`."""
    name = f"{svc.name}-{_uid('eps', svc.namespace, svc.name)[:5]}"
    return {
        "addressType": "IPv4",
        "apiVersion": "discovery.k8s.io/v1",
        "endpoints": [
            {
                "addresses": [pod.ip],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "nodeName": node.name,
                "targetRef": {"kind": "Pod", "name": pod.name, "namespace": pod.namespace,
                              "uid": pod.pod_uid},
            }
            for node, pod in svc.endpoints()
        ],
        "kind": "EndpointSlice",
        "metadata": {
            "creationTimestamp": CREATED,
            "generateName": f"{svc.name}-",
            "labels": {"endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                       "kubernetes.io/service-name": svc.name, "app": svc.app, "service": svc.name},
            "name": name,
            "namespace": svc.namespace,
            "ownerReferences": [{"apiVersion": "v1", "blockOwnerDeletion": True, "controller": True,
                                 "kind": "Service", "name": svc.name, "uid": svc.uid}],
            "uid": _uid("endpointslice", svc.namespace, name),
        },
        "ports": [{"name": svc.port_name, "port": svc.target_port, "protocol": "TCP"}],
    }


def namespace_objects() -> list[dict[str, Any]]:
    """default (ambient-enabled), istio-system, kube-system."""
    def ns(name: str, extra: dict[str, str] | None = None) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"creationTimestamp": CREATED,
                         "labels": {"kubernetes.io/metadata.name": name, **(extra or {})},
                         "name": name, "uid": _uid("namespace", "", name)},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }

    return [ns("default", {"istio.io/dataplane-mode": "ambient"}), ns("istio-system"), ns("kube-system")]


def node_object(node: NodeSpec) -> dict[str, Any]:
    """One Node (kind worker)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "creationTimestamp": CREATED,
            "labels": {"beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": node.name,
                       "kubernetes.io/os": "linux"},
            "name": node.name,
            "uid": _uid("node", "", node.name),
        },
        "spec": {"podCIDR": node.pod_cidr, "podCIDRs": [node.pod_cidr],
                 "providerID": f"kind://docker/ambient/{node.name}"},
        "status": {
            "addresses": [{"address": node.ip, "type": "InternalIP"},
                          {"address": node.name, "type": "Hostname"}],
            "nodeInfo": {"architecture": "amd64", "containerRuntimeVersion": "containerd://1.6.8",
                         "kubeProxyVersion": K8S_VERSION, "kubeletVersion": K8S_VERSION,
                         "operatingSystem": "linux", "osImage": "Ubuntu 22.04.1 LTS"},
        },
    }


def documents() -> dict[str, dict[str, Any]]:
    """file name -> List document."""
    return {
        "pods.json": _list([pod_object(n, p) for n in NODES
                            for p in sorted(n.pods, key=lambda p: (p.namespace, p.name))]),
        "services.json": _list([service_object(s) for s in SERVICES]),
        "namespaces.json": _list(namespace_objects()),
        "nodes.json": _list([node_object(n) for n in NODES]),
        "endpointslices.json": _list([endpointslice_object(s) for s in SERVICES]),
    }


def write_cluster(directory: Path) -> list[Path]:
    """Write the five files (4-space JSON like kubectl, trailing newline)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, doc in documents().items():
        path = directory / name
        path.write_text(json.dumps(doc, indent=4, sort_keys=True) + "\n")
        written.append(path)
    return written
