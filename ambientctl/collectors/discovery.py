"""Discovery: what to collect, from structured sources only (no text scraping).

- The Kubernetes API (kubernetes client, one fresh ApiClient per call): nodes, pods,
  services, namespaces and endpointslices, stored in the bundle as `cluster/*.json` in
  the `kubectl get -o json` List shape (a v1 `List`, items with `kind`/`apiVersion`,
  sorted keys, 4-space indent), so a support engineer can assemble one by hand.
  These are PROJECTIONS: only the fields the analyzers read survive (names, UIDs, node,
  IPs, ports, selectors, owners, images, phase, and the Istio labels/annotations). Never
  `env`, `envFrom`, `args`, `command`, volumes, `managedFields` or
  `kubectl.kubernetes.io/last-applied-configuration` (which embeds the env it applied):
  pod specs carry secrets, and a bundle travels.
- kind node containers (docker SDK): containers labelled `io.x-k8s.kind.cluster=NAME`.
- Pod network namespaces on a node: the node's netns directory is listed by a fixed
  script (`batch.DISCOVERY_SCRIPT`) that prints each netns's `ip -j -d addr`; a netns is
  a pod's when it holds that pod's IP and the pod is scheduled on that node. Where the
  directory is absent (an istio-cni agent without the host's /var/run/netns), the same
  script finds one process per netns under the host's /proc (`Discovered.proc`).
"""

from __future__ import annotations

import io
import ipaddress
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ambientctl import istio
from ambientctl.bundle.layout import CLUSTER_FILES, MESH_APIS, MESH_FILES, valid_name
from ambientctl.collectors.batch import discovery_argv, new_nonce
from ambientctl.collectors.transport import Transport
from ambientctl.errors import TransportError

KIND_CLUSTER_LABEL = "io.x-k8s.kind.cluster"
KIND_ROLE_LABEL = "io.x-k8s.kind.role"

# Annotation keys kept in projections: Istio's (redirection status, sidecar status,
# capture knobs). Everything else may be arbitrary user data.
_ANNOTATION_PREFIXES = (
    "ambient.istio.io/",
    "istio.io/",
    "sidecar.istio.io/",
    "networking.istio.io/",
    "cni.istio.io/",
    "traffic.sidecar.istio.io/",
    "proxy.istio.io/",
)


# --------------------------------------------------------------------------- projections


def _pick(src: Mapping[str, Any] | None, keys: Iterable[str]) -> dict[str, Any]:
    if not isinstance(src, Mapping):
        return {}
    return {k: src[k] for k in keys if k in src and src[k] is not None}


def _annotations(meta: Mapping[str, Any]) -> dict[str, str]:
    ann = meta.get("annotations") or {}
    return {k: v for k, v in ann.items() if k.startswith(_ANNOTATION_PREFIXES)}


def _metadata(meta: Mapping[str, Any] | None, *, owners: bool = True) -> dict[str, Any]:
    meta = meta or {}
    out = _pick(meta, ("name", "namespace", "uid", "creationTimestamp", "labels"))
    ann = _annotations(meta)
    if ann:
        out["annotations"] = ann
    if owners and meta.get("ownerReferences"):
        out["ownerReferences"] = [
            _pick(o, ("apiVersion", "kind", "name", "uid", "controller"))
            for o in meta["ownerReferences"]
        ]
    return out


def _container(c: Mapping[str, Any]) -> dict[str, Any]:
    out = _pick(c, ("name", "image", "restartPolicy"))
    if c.get("ports"):
        out["ports"] = [
            _pick(p, ("name", "containerPort", "protocol", "hostPort")) for p in c["ports"]
        ]
    return out


def project_pod(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A pod without env, args, volumes or anything else that may hold secrets."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    out_spec = _pick(spec, ("nodeName", "hostNetwork", "serviceAccountName"))
    out_spec["containers"] = [_container(c) for c in spec.get("containers") or []]
    if spec.get("initContainers"):
        out_spec["initContainers"] = [_container(c) for c in spec["initContainers"]]
    out_status = _pick(status, ("phase", "podIP", "podIPs", "hostIP", "hostIPs"))
    if status.get("conditions"):
        out_status["conditions"] = [_pick(c, ("type", "status")) for c in status["conditions"]]
    if status.get("containerStatuses"):
        out_status["containerStatuses"] = [
            _pick(c, ("name", "ready", "restartCount", "started"))
            for c in status["containerStatuses"]
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(obj.get("metadata")),
        "spec": out_spec,
        "status": out_status,
    }


def project_service(obj: Mapping[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec") or {}
    out_spec = _pick(
        spec,
        (
            "type",
            "clusterIP",
            "clusterIPs",
            "ipFamilies",
            "ipFamilyPolicy",
            "selector",
            "externalTrafficPolicy",
            "internalTrafficPolicy",
            "sessionAffinity",
            "externalIPs",
        ),
    )
    if spec.get("ports"):
        out_spec["ports"] = [
            _pick(p, ("name", "port", "targetPort", "protocol", "nodePort", "appProtocol"))
            for p in spec["ports"]
        ]
    lb = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress")
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(obj.get("metadata")),
        "spec": out_spec,
        "status": {
            "loadBalancer": {"ingress": [_pick(i, ("ip", "hostname")) for i in lb]} if lb else {}
        },
    }


def project_namespace(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": _metadata(obj.get("metadata"), owners=False),
        "status": _pick(obj.get("status"), ("phase",)),
    }


def project_node(obj: Mapping[str, Any]) -> dict[str, Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    out_status: dict[str, Any] = _pick(status, ("addresses",))
    if status.get("nodeInfo"):
        out_status["nodeInfo"] = _pick(
            status["nodeInfo"],
            (
                "kernelVersion",
                "osImage",
                "containerRuntimeVersion",
                "kubeletVersion",
                "kubeProxyVersion",
                "architecture",
                "operatingSystem",
            ),
        )
    if status.get("conditions"):
        out_status["conditions"] = [_pick(c, ("type", "status")) for c in status["conditions"]]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": _metadata(obj.get("metadata"), owners=False),
        "spec": _pick(spec, ("podCIDR", "podCIDRs", "taints", "unschedulable")),
        "status": out_status,
    }


def project_endpointslice(obj: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": _metadata(obj.get("metadata")),
        "addressType": obj.get("addressType"),
    }
    out["endpoints"] = [
        {
            **_pick(e, ("addresses", "conditions", "nodeName", "zone", "hostname")),
            **(
                {"targetRef": _pick(e["targetRef"], ("kind", "namespace", "name", "uid"))}
                if e.get("targetRef")
                else {}
            ),
        }
        for e in obj.get("endpoints") or []
    ]
    out["ports"] = [
        _pick(p, ("name", "port", "protocol", "appProtocol")) for p in obj.get("ports") or []
    ]
    return out


PROJECTIONS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "pods": project_pod,
    "services": project_service,
    "namespaces": project_namespace,
    "nodes": project_node,
    "endpointslices": project_endpointslice,
}


def _mesh_projection(kind: str, spec_keys: tuple[str, ...]) -> Callable[[Mapping[str, Any]],
                                                                        dict[str, Any]]:
    def project(obj: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": str(obj.get("apiVersion") or ""),
            "kind": kind,
            "metadata": _metadata(obj.get("metadata"), owners=False),
            "spec": _pick(obj.get("spec"), spec_keys),
        }

    return project


# Istio / Gateway API objects the intended path reads (analyzers/intent.py, waypoint.py):
# only what decides a path - mTLS modes and selectors, a policy's action and selector (its
# rules hold principals and are not needed), a Gateway's class and listeners.
MESH_PROJECTIONS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "PeerAuthentication": _mesh_projection("PeerAuthentication",
                                           ("selector", "mtls", "portLevelMtls")),
    "AuthorizationPolicy": _mesh_projection("AuthorizationPolicy",
                                            ("selector", "action", "targetRef", "targetRefs")),
    "Gateway": _mesh_projection("Gateway", ("gatewayClassName", "listeners")),
}


def _list_mesh(api_client: Any, kind: str, timeout: float,
               page_size: int) -> list[dict[str, Any]]:
    """A cluster-wide list of one mesh kind, trying its API versions newest first."""
    from functools import partial

    from kubernetes import client as k8s

    group, versions, plural = MESH_APIS[kind]
    custom = k8s.CustomObjectsApi(api_client)
    last: Exception | None = None
    for version in versions:
        try:
            return _list_raw(partial(custom.list_cluster_custom_object, group, version,
                                     plural), timeout, page_size=page_size)
        except Exception as exc:  # noqa: BLE001 - a version not served: try the next
            last = exc
    assert last is not None
    raise last


def as_kubectl_list(items: Sequence[Mapping[str, Any]]) -> bytes:
    """`kubectl get -o json` bytes: a v1 List, sorted keys, 4-space indent, newline."""
    doc = {
        "apiVersion": "v1",
        "items": list(items),
        "kind": "List",
        "metadata": {"resourceVersion": ""},
    }
    # The same text as `json.dumps(doc, indent=4, sort_keys=True)`, encoded chunk by chunk
    # (ASCII: `ensure_ascii`): the bytes only, never a `str` of the whole list beside them
    # (7 MB each for 10,000 pods).
    out = io.BytesIO()
    for chunk in json.JSONEncoder(indent=4, sort_keys=True).iterencode(doc):
        out.write(chunk.encode())
    out.write(b"\n")
    return out.getvalue()


# --------------------------------------------------------------------------- cluster


@dataclass(frozen=True)
class ClusterView:
    """What the API said, projected: objects for planning, bytes for the bundle."""

    objects: dict[str, list[dict[str, Any]]]  # "pods" -> projected items
    files: dict[str, bytes]  # bundle path -> kubectl-shaped JSON
    errors: dict[str, str] = field(default_factory=dict)  # kind -> why it is missing
    # Objects left out because a name is not DNS-1123 (it would reach a bundle path or
    # an argv): one note each, for the manifest; the rest of the cluster is collected.
    skipped: tuple[dict[str, str], ...] = ()

    @property
    def pods(self) -> list[dict[str, Any]]:
        return self.objects.get("pods", [])

    def node_names(self) -> list[str]:
        return [n["metadata"]["name"] for n in self.objects.get("nodes", [])]

    def pods_on(self, node: str) -> list[dict[str, Any]]:
        return [p for p in self.pods if (p.get("spec") or {}).get("nodeName") == node]


# Cluster-wide lists are read in pages (`limit` + `continue`, the API's chunking): a
# 500-node cluster's pod list is tens of MB in one response otherwise, and one slow
# response would hit a single whole-list timeout. Each page gets the connect timeout to
# connect and LIST_READ_TIMEOUT to answer (urllib3 (connect, read) tuple).
LIST_PAGE_SIZE = 500
LIST_READ_TIMEOUT = 60.0
MAX_LIST_PAGES = 10_000  # a server that never stops handing out continue tokens


def _pages(
    api_call: Callable[..., Any], timeout: float, *, page_size: int = LIST_PAGE_SIZE
) -> Iterator[list[Any]]:
    """Each page's items, one page decoded at a time: a caller that projects a page
    before asking for the next holds one page of raw objects, not the whole list (at
    200 nodes x 50 pods the raw pod list beside its projection was most of discovery's
    ~70 MiB peak)."""
    # _preload_content=False: the raw JSON, not the generated models (slow, and they
    # would re-serialise with different keys); the projection is built from it.
    token: str | None = None
    for _ in range(MAX_LIST_PAGES):
        kwargs: dict[str, Any] = {"limit": page_size}
        if token:
            kwargs["_continue"] = token
        resp = api_call(
            _preload_content=False, _request_timeout=(timeout, LIST_READ_TIMEOUT), **kwargs
        )
        doc = json.loads(resp.data)
        del resp  # its body, already decoded
        token = (doc.get("metadata") or {}).get("continue") or None
        items = doc.get("items") or []
        del doc
        yield items
        del items
        if not token:
            return
    raise ValueError(f"the list did not end after {MAX_LIST_PAGES} pages")


def _list_raw(
    api_call: Callable[..., Any], timeout: float, *, page_size: int = LIST_PAGE_SIZE
) -> list[dict[str, Any]]:
    """The whole list at once (the mesh lists: a version not served must fail before
    anything of it is kept, see `_list_mesh`)."""
    return [item for page in _pages(api_call, timeout, page_size=page_size) for item in page]


class _ListFailed(Exception):
    """The API failed a list (`error`), as opposed to a bug projecting what it returned,
    which propagates as it did when the list was read whole before projecting."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _read_projected(
    kind: str, api_call: Callable[..., Any], timeout: float, page_size: int
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """(projections, skip notes) of a whole core list, each page projected as it arrives
    (see `_pages`); `_ListFailed` when the API fails it, and then nothing of it is kept."""
    projected: list[dict[str, Any]] = []
    dropped: list[dict[str, str]] = []
    pages = _pages(api_call, timeout, page_size=page_size)
    while True:
        try:
            page = next(pages)
        except StopIteration:
            break
        except Exception as exc:  # noqa: BLE001 - the API's failure, told from a projection's
            raise _ListFailed(exc) from exc
        for item in page:
            why = _invalid_name(kind, item) if isinstance(item, Mapping) else "not an object"
            if why is not None:
                dropped.append({"kind": kind, "why": why})
                continue
            projected.append(PROJECTIONS[kind](item))
        del page
    return projected, dropped


def _invalid_name(kind: str, obj: Mapping[str, Any]) -> str | None:
    """Why `obj` cannot be collected (a name that is not DNS-1123), or None."""
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not isinstance(name, str) or not valid_name(name):
        return f"{kind[:-1]} name {str(name)[:80]!r} is not a valid Kubernetes name"
    if kind in ("pods", "services", "endpointslices", *(a[2] for a in MESH_APIS.values())):
        ns = meta.get("namespace")
        if not isinstance(ns, str) or not valid_name(ns):
            return f"{kind[:-1]} {name}: namespace {str(ns)[:80]!r} is not a valid Kubernetes name"
    if kind == "pods":
        node = (obj.get("spec") or {}).get("nodeName")
        if node is not None and (not isinstance(node, str) or not valid_name(node)):
            return f"pod {name}: node name {str(node)[:80]!r} is not a valid Kubernetes name"
    return None


def discover_cluster(
    client_factory: Callable[[], Any],
    *,
    timeout: float = 30.0,
    page_size: int = LIST_PAGE_SIZE,
) -> ClusterView:
    """List nodes, pods, services, namespaces (required), endpointslices and the Istio /
    Gateway API objects of `layout.MESH_FILES` (optional).

    Raises TransportError when the API server cannot be reached or refuses the lists
    that analysis cannot do without.
    """
    from kubernetes import client as k8s

    from ambientctl.collectors.kube import api_error

    api_client = client_factory()
    try:
        core = k8s.CoreV1Api(api_client)
        calls: dict[str, Callable[..., Any]] = {
            "nodes": core.list_node,
            "namespaces": core.list_namespace,
            "pods": core.list_pod_for_all_namespaces,
            "services": core.list_service_for_all_namespaces,
            "endpointslices": k8s.DiscoveryV1Api(api_client).list_endpoint_slice_for_all_namespaces,
        }
        objects: dict[str, list[dict[str, Any]]] = {}
        files: dict[str, bytes] = {}
        errors: dict[str, str] = {}
        skipped: list[dict[str, str]] = []
        for kind, call in calls.items():
            try:
                projected, dropped = _read_projected(kind, call, timeout, page_size)
            except _ListFailed as failed:  # ApiException, urllib3 errors: all recorded
                err = api_error(failed.error, f"list {kind}", api_client.configuration.host)
                if kind == "endpointslices":  # optional in the bundle contract
                    errors[kind] = err.message
                    continue
                raise err from None
            skipped.extend(dropped)
            objects[kind] = projected
            files[CLUSTER_FILES[kind]] = as_kubectl_list(projected)
        for kind in MESH_FILES:  # optional: no CRD (or no RBAC) is recorded, not fatal
            try:
                items = _list_mesh(api_client, kind, timeout, page_size)
            except Exception as exc:  # noqa: BLE001 - recorded in the manifest
                errors[MESH_APIS[kind][2]] = api_error(exc, f"list {MESH_APIS[kind][2]}",
                                                       api_client.configuration.host).message
                continue
            projected = []
            for item in items:
                plural = MESH_APIS[kind][2]
                why = _invalid_name(plural, item) if isinstance(item, Mapping) else \
                    "not an object"
                if why is not None:
                    skipped.append({"kind": plural, "why": why})
                    continue
                projected.append(MESH_PROJECTIONS[kind](item))
            files[MESH_FILES[kind]] = as_kubectl_list(projected)
        return ClusterView(objects, files, errors, tuple(skipped))
    finally:
        api_client.close()


# --------------------------------------------------------------------------- pods


def pod_ips(pod: Mapping[str, Any]) -> set[str]:
    status = pod.get("status") or {}
    ips = {p.get("ip") for p in status.get("podIPs") or [] if isinstance(p, dict)}
    if status.get("podIP"):
        ips.add(status["podIP"])
    return {str(ipaddress.ip_address(i)) for i in ips if i}


def pod_key(pod: Mapping[str, Any]) -> tuple[str, str]:
    meta = pod.get("metadata") or {}
    return str(meta.get("namespace") or "default"), str(meta.get("name"))


def _labels(obj: Mapping[str, Any], key: str = "labels") -> dict[str, str]:
    got = (obj.get("metadata") or {}).get(key)
    return {str(k): str(v) for k, v in got.items()} if isinstance(got, Mapping) else {}


def is_ambient(pod: Mapping[str, Any], namespaces: Mapping[str, Mapping[str, Any]]) -> bool:
    """In the mesh's ambient data plane (istio-datapath.md §3.1 step 3-4, §4.1).

    Captured when istio-cni annotated it `ambient.istio.io/redirection: enabled`; else
    when `istio.enrollment` says istio-cni enrolls it (labels, never hostNetwork,
    sidecar or ztunnel pods).
    """
    namespace, name = pod_key(pod)
    annotations = _labels(pod, "annotations")
    if annotations.get(istio.REDIRECTION) == "enabled":
        return True
    return istio.enrollment(
        namespace=namespace, name=name, labels=_labels(pod), annotations=annotations,
        host_network=bool((pod.get("spec") or {}).get("hostNetwork")),
        namespace_labels=_labels(namespaces.get(namespace, {}))).expected


def istio_pods(view: ClusterView, node: str) -> dict[str, dict[str, Any]]:
    """The node's ztunnel and istio-cni pods ("ztunnel" / "istio-cni" -> pod)."""
    found: dict[str, dict[str, Any]] = {}
    for pod in view.pods_on(node):
        namespace, name = pod_key(pod)
        labels = _labels(pod)
        if istio.is_ztunnel(namespace, name, labels):
            found.setdefault("ztunnel", pod)
        elif istio.is_istio_cni(namespace, name, labels):
            found.setdefault("istio-cni", pod)
    return found


# --------------------------------------------------------------------------- netns -> pod


@dataclass(frozen=True)
class NetnsMap:
    """Which netns (by file name in the node's netns directory) is which pod."""

    pods: dict[str, tuple[str, str]]  # netns name -> (namespace, pod)
    unmapped: tuple[str, ...] = ()  # netns holding no IP of a pod on this node
    ambiguous: tuple[str, ...] = ()  # netns holding IPs of several pods


def parse_discovery(stdout: bytes, nonce: str) -> dict[str, bytes]:
    """netns name -> its `ip -j -d addr` output, from DISCOVERY_SCRIPT's framed stdout."""
    tag = nonce.encode()
    begin, end = tag + b" N ", b"\n" + tag + b" E "
    out: dict[str, bytes] = {}
    pos = 0
    while (b := stdout.find(begin, pos)) >= 0:
        eol = stdout.find(b"\n", b)
        if eol < 0:
            break
        name = stdout[b + len(begin) : eol].decode("utf-8", "replace")
        e = stdout.find(end, eol + 1)
        if e < 0:
            break
        out[name] = stdout[eol + 1 : e]
        nxt = stdout.find(b"\n", e + len(end))
        pos = len(stdout) if nxt < 0 else nxt
    return out


def addresses(ip_addr_json: bytes) -> set[str]:
    """Non-loopback addresses in `ip -j addr` output (unparseable output: none)."""
    try:
        links = json.loads(ip_addr_json or b"[]")
    except ValueError:
        return set()
    found: set[str] = set()
    for link in links if isinstance(links, list) else []:
        for a in link.get("addr_info") or []:
            local = a.get("local")
            if not local:
                continue
            try:
                ip = ipaddress.ip_address(local)
            except ValueError:
                continue
            if not ip.is_loopback:
                found.add(str(ip))
    return found


def map_netns(addr_by_netns: Mapping[str, bytes], pods: Sequence[Mapping[str, Any]]) -> NetnsMap:
    """Match each netns to the one pod (of this node, not hostNetwork) whose IP it holds."""
    owner: dict[str, tuple[str, str]] = {}
    for pod in pods:
        if (pod.get("spec") or {}).get("hostNetwork"):
            continue
        for ip in pod_ips(pod):
            owner[ip] = pod_key(pod)
    mapped: dict[str, tuple[str, str]] = {}
    unmapped, ambiguous = [], []
    for netns in sorted(addr_by_netns):
        if not valid_name(netns):
            unmapped.append(netns)
            continue
        hits = {owner[ip] for ip in addresses(addr_by_netns[netns]) if ip in owner}
        if len(hits) == 1:
            mapped[netns] = hits.pop()
        elif hits:
            ambiguous.append(netns)
        else:
            unmapped.append(netns)
    # Two netns claiming the same pod (a stale sandbox): trust neither.
    counts: dict[tuple[str, str], int] = {}
    for key in mapped.values():
        counts[key] = counts.get(key, 0) + 1
    for netns, key in list(mapped.items()):
        if counts[key] > 1:
            del mapped[netns]
            ambiguous.append(netns)
    return NetnsMap(mapped, tuple(unmapped), tuple(sorted(ambiguous)))


@dataclass(frozen=True)
class Discovered:
    """A node's pod netns as discovery found them.

    `addrs`: netns -> its `ip -j -d addr` output. The keys are file names in the netns
    directory, or - when the node had no such directory and `proc` is set - PIDs, one
    per distinct netns, entered as `PROC/PID/ns/net` (see `batch.DISCOVERY_SCRIPT`).
    """

    addrs: dict[str, bytes]
    proc: str | None = None

    def path(self, name: str, directory: str) -> str:
        """The file to enter netns `name` by."""
        if self.proc is not None:
            return f"{self.proc.rstrip('/')}/{name}/ns/net"
        return f"{directory.rstrip('/')}/{name}"


def discover_pod_netns(
    transport: Transport,
    directory: str,
    *,
    host_proc: str | None = None,
    timeout: float = 30.0,
) -> Discovered:
    """Run the discovery script on a node (one round trip).

    With `host_proc`, a node whose `directory` is absent is searched through the host's
    /proc instead (istio-cni agents without the /var/run/netns mount, issue 8 §1). A node
    without `sh` or `nsenter` yields nothing (its pods are then not collected, which the
    caller records); an unreachable node raises TransportError.
    """
    nonce = new_nonce()
    res = transport.run(discovery_argv(nonce, directory, host_proc), netns=None, timeout=timeout)
    if res.not_found or res.timed_out:
        return Discovered({})
    proc = None
    if host_proc is not None and res.stdout.startswith(f"{nonce} P ".encode()):
        proc = host_proc
    return Discovered(parse_discovery(res.stdout, nonce), proc)


def discover_netns(
    transport: Transport, directory: str, *, timeout: float = 30.0
) -> dict[str, bytes]:
    """The netns files of `directory` on a node: name -> addr JSON (see discover_pod_netns)."""
    return discover_pod_netns(transport, directory, timeout=timeout).addrs


# --------------------------------------------------------------------------- kind nodes


@dataclass(frozen=True, slots=True)
class KindNode:
    name: str  # container name == Kubernetes node name
    container_id: str
    role: str
    # Docker's container state: "running", "paused", "exited", "created", "restarting",
    # "removing" or "dead". Only a running container accepts `docker exec`.
    state: str = "running"

    @property
    def running(self) -> bool:
        return self.state == "running"


def kind_nodes(docker_client: Any, cluster: str) -> list[KindNode]:
    """Every node container of kind cluster `cluster`, whatever its state (the load
    balancer is no node): a stopped or paused node is still a node of the cluster, and the
    caller must say it could not be collected rather than leave it silently absent."""
    try:
        containers = docker_client.api.containers(
            all=True, filters={"label": f"{KIND_CLUSTER_LABEL}={cluster}"}
        )
    except Exception as exc:  # noqa: BLE001 - docker.errors.APIError, requests errors
        raise TransportError(f"docker: cannot list containers ({exc})") from None
    nodes = []
    for c in containers:
        labels = c.get("Labels") or {}
        role = labels.get(KIND_ROLE_LABEL, "")
        if role == "external-load-balancer":
            continue
        name = (c.get("Names") or ["/"])[0].lstrip("/")
        if valid_name(name):
            state = str(c.get("State") or "unknown")
            nodes.append(KindNode(name=name, container_id=c["Id"], role=role, state=state))
    return sorted(nodes, key=lambda n: n.name)
