"""Kubernetes objects from `kubectl get ... -o json` -> `model.Pod/Service/Namespace/Node`.

Sample (`kubectl get pods -A -o json`, a projection: fields not listed below may be absent)::

    {
        "apiVersion": "v1",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "labels": {"app": "sleep"},
                    "name": "sleep-7b85956664-z6qh7",
                    "namespace": "default",
                    "ownerReferences": [{"kind": "ReplicaSet", "name": "sleep-7b85956664"}],
                    "uid": "0ff78312-3a13-4a02-b39d-644bfb91e861"
                },
                "spec": {"containers": [{"image": "curlimages/curl", "name": "sleep"}],
                         "nodeName": "ambient-worker"},
                "status": {"phase": "Running", "podIP": "10.244.2.4",
                           "podIPs": [{"ip": "10.244.2.4"}]}
            }
        ],
        "kind": "List"
    }

Accepted shapes: a v1 List (`kind: List` or `PodList`...), a bare JSON array of objects, or a
single object (`kubectl get pod X -o json`). An item whose `kind` is set must be the expected
kind (a services.json handed to `parse_pods` fails). Defaults follow the API: missing
`namespace` -> "default", service `type` -> "ClusterIP", port `protocol` -> "TCP",
`targetPort` -> the service port. A `clusterIP` of "None" (headless) or "" gives no IP.

`SourceRef.line` is the line of the object's `"name": "<name>"` (its metadata name: in
kubectl's sorted output `metadata` precedes `spec`, and the keys sorted before `name` —
`annotations`, `labels`, `managedFields` — cannot hold that exact text), else the line where
the object starts. `SourceRef.text` is that line verbatim.

>>> doc = ('{"kind": "List", "items": [{"kind": "Pod", "metadata": '
...        '{"name": "a", "namespace": "ns"}, "status": {"podIP": "10.0.0.5"}}]}')
>>> pods = parse_pods(doc, "cluster/pods.json")
>>> pods[0].ref, pods[0].ips
(PodRef(namespace='ns', name='a'), (IPv4Address('10.0.0.5'),))
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from ambientctl import model
from ambientctl.analyzers.parse._common import (
    LineCounter,
    ip_address,
    iter_json_spans,
    json_type_error,
)
from ambientctl.errors import ParseError

__all__ = ["parse_endpointslices", "parse_mesh_objects", "parse_namespaces", "parse_nodes",
           "parse_pods", "parse_services"]

T = TypeVar("T")
_MAX_TEXT = 1000


def _items(
    text: str, path: str, kind: str
) -> Iterator[tuple[int, dict[str, Any], model.SourceRef]]:
    """(line, object, source) for each object of the expected `kind`."""
    if not text.strip():
        raise ParseError(
            path, None, f"empty file: expected `kubectl get {kind.lower()}s -o json` output"
        )
    counter = LineCounter(text)  # match offsets only grow: one pass over the text in all
    for start, end, line, obj in iter_json_spans(text, path, f"{kind} list", document=True):
        if not isinstance(obj, dict):
            raise ParseError(path, line, f"expected a {kind} object, got {type(obj).__name__}")
        got = obj.get("kind")
        if got is not None and got != kind:
            raise ParseError(
                path, line, f"expected a {kind}, got kind {got!r}", hint="is this the right file?"
            )
        meta = obj.get("metadata")
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
            raise ParseError(path, line, f"{kind} without metadata.name")
        at, where = line, start
        quoted = json.dumps(meta["name"])
        hits = [
            h
            for h in (
                text.find(f'"name": {quoted}', start, end),
                text.find(f'"name":{quoted}', start, end),
            )
            if h >= 0
        ]
        if hits:
            where = min(hits)
            at = counter.at(where)
        verbatim = _line_at(text, where).rstrip("\r")
        # A compact (one-line) document would make every object's text the whole file.
        yield line, obj, model.SourceRef(path, at, verbatim if len(verbatim) <= _MAX_TEXT else None)


def _line_at(text: str, offset: int) -> str:
    """The line holding `offset`, without its newline: `text.split("\\n")[line - 1]`
    without splitting the whole text (issue 12: 169k lines of pods.json at 200 nodes,
    ~13 MB of strings at the peak of a trace's load, to keep 4,000 of them)."""
    end = text.find("\n", offset)
    return text[text.rfind("\n", 0, offset) + 1:end if end >= 0 else len(text)]


def _map(value: Any, path: str, line: int, what: str) -> Mapping[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ParseError(path, line, f"{what} is not an object")
    return {str(k): str(v) for k, v in value.items()}


def _obj(value: Any, path: str, line: int, what: str) -> dict[str, Any]:
    """A nested object (`spec`, `status`): absent/null is empty, any other type an error."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise json_type_error(path, line, what, "an object", value)
    return value


def _str(value: Any, path: str, line: int, what: str) -> str | None:
    """A string field (`namespace`, `nodeName`, `phase`, `type`): absent is None."""
    if value is None or isinstance(value, str):
        return value
    raise json_type_error(path, line, what, "a string", value)


def _list(value: Any, path: str, line: int, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ParseError(path, line, f"{what} is not a list")
    return value


def _collect(
    text: str, path: str, kind: str, build: Callable[[dict[str, Any], model.SourceRef, int], T]
) -> tuple[T, ...]:
    return tuple(build(obj, src, line) for line, obj, src in _items(text, path, kind))


def parse_pods(text: str, path: str) -> tuple[model.Pod, ...]:
    """Pods from `kubectl get pods -A -o json`."""

    def build(obj: dict[str, Any], src: model.SourceRef, line: int) -> model.Pod:
        meta = obj["metadata"]
        spec = _obj(obj.get("spec"), path, line, f"pod {meta['name']}: spec")
        status = _obj(obj.get("status"), path, line, f"pod {meta['name']}: status")
        ip_texts = [
            p.get("ip")
            for p in _list(status.get("podIPs"), path, line, "status.podIPs")
            if isinstance(p, dict)
        ]
        if not ip_texts and status.get("podIP"):
            ip_texts = [status["podIP"]]
        owners = _list(meta.get("ownerReferences"), path, line, "metadata.ownerReferences")
        owner = None
        if (
            owners
            and isinstance(owners[0], dict)
            and owners[0].get("kind")
            and owners[0].get("name")
        ):
            owner = f"{owners[0]['kind']}/{owners[0]['name']}"
        ports: list[tuple[str | None, int, str]] = []
        images: list[str] = []
        for c in _list(spec.get("containers"), path, line, "spec.containers"):
            if not isinstance(c, dict):
                raise ParseError(path, line, "spec.containers[] is not an object")
            if c.get("image"):
                images.append(str(c["image"]))
            for p in _list(c.get("ports"), path, line, "ports"):
                if not isinstance(p, dict) or not isinstance(p.get("containerPort"), int):
                    raise ParseError(
                        path, line, f"pod {meta['name']}: container port without containerPort"
                    )
                ports.append((p.get("name"), p["containerPort"], p.get("protocol", "TCP")))
        return model.Pod(
            namespace=_str(meta.get("namespace"), path, line, "metadata.namespace") or "default",
            name=meta["name"],
            uid=_str(meta.get("uid"), path, line, "metadata.uid"),
            node=_str(spec.get("nodeName"), path, line, "spec.nodeName"),
            ips=tuple(ip_address(str(ip), path, line, "pod IP") for ip in ip_texts if ip),
            labels=_map(meta.get("labels"), path, line, "metadata.labels"),
            annotations=_map(meta.get("annotations"), path, line, "metadata.annotations"),
            phase=_str(status.get("phase"), path, line, "status.phase"),
            host_network=bool(spec.get("hostNetwork", False)),
            source=src,
            owner=owner,
            container_ports=tuple(ports),
            images=tuple(images),
        )

    return _collect(text, path, "Pod", build)


def parse_services(text: str, path: str) -> tuple[model.Service, ...]:
    """Services from `kubectl get services -A -o json`."""

    def build(obj: dict[str, Any], src: model.SourceRef, line: int) -> model.Service:
        meta = obj["metadata"]
        spec = _obj(obj.get("spec"), path, line, f"service {meta['name']}: spec")
        ip_texts = _list(spec.get("clusterIPs"), path, line, "spec.clusterIPs") or (
            [spec["clusterIP"]] if spec.get("clusterIP") else []
        )
        ports = []
        for p in _list(spec.get("ports"), path, line, "spec.ports"):
            if not isinstance(p, dict) or not isinstance(p.get("port"), int):
                raise ParseError(
                    path, line, f"service {meta['name']}: port without a numeric 'port'"
                )
            target = p.get("targetPort", p["port"])
            ports.append(
                model.ServicePort(
                    port=p["port"],
                    protocol=p.get("protocol", "TCP"),
                    target_port=str(target),
                    name=p.get("name"),
                )
            )
        return model.Service(
            namespace=_str(meta.get("namespace"), path, line, "metadata.namespace") or "default",
            name=meta["name"],
            type=_str(spec.get("type"), path, line, "spec.type") or "ClusterIP",
            cluster_ips=tuple(
                ip_address(str(ip), path, line, "cluster IP")
                for ip in ip_texts
                if ip and ip != "None"
            ),
            ports=tuple(ports),
            selector=_map(spec.get("selector"), path, line, "spec.selector"),
            source=src,
            labels=_map(meta.get("labels"), path, line, "metadata.labels"),
        )

    return _collect(text, path, "Service", build)


def parse_namespaces(text: str, path: str) -> tuple[model.Namespace, ...]:
    """Namespaces from `kubectl get namespaces -o json`."""

    def build(obj: dict[str, Any], src: model.SourceRef, line: int) -> model.Namespace:
        meta = obj["metadata"]
        return model.Namespace(
            name=meta["name"],
            labels=_map(meta.get("labels"), path, line, "metadata.labels"),
            source=src,
        )

    return _collect(text, path, "Namespace", build)


def parse_nodes(text: str, path: str) -> tuple[model.Node, ...]:
    """Nodes from `kubectl get nodes -o json`."""

    def build(obj: dict[str, Any], src: model.SourceRef, line: int) -> model.Node:
        meta = obj["metadata"]
        spec = _obj(obj.get("spec"), path, line, f"node {meta['name']}: spec")
        status = _obj(obj.get("status"), path, line, f"node {meta['name']}: status")
        addresses = []
        for a in _list(status.get("addresses"), path, line, "status.addresses"):
            if not isinstance(a, dict) or "type" not in a or "address" not in a:
                raise ParseError(path, line, f"node {meta['name']}: address without type/address")
            addresses.append((str(a["type"]), str(a["address"])))
        cidrs = _list(spec.get("podCIDRs"), path, line, "spec.podCIDRs") or (
            [spec["podCIDR"]] if spec.get("podCIDR") else []
        )
        return model.Node(
            name=meta["name"],
            addresses=tuple(addresses),
            pod_cidrs=tuple(str(c) for c in cidrs),
            source=src,
        )

    return _collect(text, path, "Node", build)


def parse_endpointslices(text: str, path: str) -> tuple[model.EndpointSlice, ...]:
    """EndpointSlices from `kubectl get endpointslices -A -o json` (the bundle's projection).

    `conditions.ready` unset counts as ready, as the discovery.k8s.io/v1 API defines it.
    """

    def build(obj: dict[str, Any], src: model.SourceRef, line: int) -> model.EndpointSlice:
        meta = obj["metadata"]
        eps = []
        for e in _list(obj.get("endpoints"), path, line, "endpoints"):
            if not isinstance(e, dict):
                raise ParseError(path, line, "an endpoint is not an object")
            ips = tuple(ip_address(str(a), path, line, "endpoint address")
                        for a in _list(e.get("addresses"), path, line, "endpoint addresses"))
            cond = e.get("conditions") or {}
            ref = e.get("targetRef") or {}
            target = (model.PodRef(str(ref.get("namespace") or meta.get("namespace") or
                                       "default"), str(ref["name"]))
                      if isinstance(ref, dict) and ref.get("kind") == "Pod" and ref.get("name")
                      else None)
            eps.append(model.SliceEndpoint(ips, cond.get("ready") is not False, target))
        ports = tuple((p.get("name") or None, int(p["port"]))
                      for p in _list(obj.get("ports"), path, line, "ports")
                      if isinstance(p, dict) and isinstance(p.get("port"), int))
        labels = _map(meta.get("labels"), path, line, "metadata.labels")
        return model.EndpointSlice(
            namespace=str(meta.get("namespace") or "default"), name=meta["name"],
            service=labels.get("kubernetes.io/service-name"), endpoints=tuple(eps), ports=ports,
            source=src)

    return _collect(text, path, "EndpointSlice", build)


def parse_mesh_objects(text: str, path: str, kind: str) -> tuple[model.MeshObject, ...]:
    """PeerAuthentications, AuthorizationPolicies or Gateways (`kubectl get KIND -A -o json`)."""

    def build(obj: dict[str, Any], src: model.SourceRef, line: int) -> model.MeshObject:
        meta = obj["metadata"]
        spec = obj.get("spec")
        if spec is not None and not isinstance(spec, dict):
            raise ParseError(path, line, f"{kind} spec is not an object")
        return model.MeshObject(kind=kind, namespace=str(meta.get("namespace") or ""),
                                name=meta["name"],
                                labels=_map(meta.get("labels"), path, line, "metadata.labels"),
                                spec=spec or {}, source=src)

    return _collect(text, path, kind, build)
