"""Redaction's classification table: every file type and every JSON field, redact or keep.

Why a table and not "redact every string": structured files hold two kinds of strings.
Identifiers (names, hostnames, images, paths, contexts, label values) must go; values the
analyzers read as vocabulary (`phase: Running`, `protocol: HBONE`, `istio.io/dataplane-mode:
ambient`) must stay exactly, or the redacted bundle would answer differently. A keep rule
carries its reason and a validator: a kept field whose value is not of the expected shape
(a name planted where an enum belongs) is replaced as opaque, never passed through.

What the table does not name is not trusted: an unknown JSON field has its strings (and
its keys) replaced by opaque tokens and is reported; an unknown file is dropped (its
manifest entry says so). `tests/test_redact.py` builds maximal objects through the
collectors' own projections and fails when one produces a path this table lacks.

Paths: dot-separated keys from the document root, `[]` for list items, `*` for any key of
a map whose keys are data (`services./10.96.0.1`); `DYNAMIC_KEYS` says what happens to
those keys.
"""

from __future__ import annotations

import re

from ambientctl.bundle.layout import NETNS_FILES
from ambientctl.istio import IMAGE_COMPONENTS
from ambientctl.layout import CONFIG_DUMP, ZTUNNEL_SHARED_DIR, ztunnel_shared_digest

# ---------------------------------------------------------------------------- validators

_ENUMS: dict[str, frozenset[str]] = {
    "phase": frozenset({"Pending", "Running", "Succeeded", "Failed", "Unknown", "Active",
                        "Terminating"}),
    "svc-type": frozenset({"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"}),
    "protocol": frozenset({"TCP", "UDP", "SCTP", "HBONE", "TLS", "HTTP"}),
    "family": frozenset({"IPv4", "IPv6", "FQDN"}),
    "family-policy": frozenset({"SingleStack", "PreferDualStack", "RequireDualStack"}),
    "traffic-policy": frozenset({"Cluster", "Local"}),
    "affinity": frozenset({"None", "ClientIP"}),
    "condition": frozenset({"True", "False", "Unknown"}),
    "addr-type": frozenset({"InternalIP", "ExternalIP", "Hostname", "InternalDNS",
                            "ExternalDNS"}),
    "taint-effect": frozenset({"NoSchedule", "PreferNoSchedule", "NoExecute"}),
    "restart": frozenset({"Always", "OnFailure", "Never"}),
    "pull": frozenset({"Always", "IfNotPresent", "Never"}),
    "qos": frozenset({"Guaranteed", "Burstable", "BestEffort"}),
    "kind": frozenset({"Pod", "Service", "Namespace", "Node", "EndpointSlice", "List",
                       "ReplicaSet", "Deployment", "DaemonSet", "StatefulSet", "Job",
                       "CronJob", "ReplicationController", "Gateway"}),
    "target-kind": frozenset({"node", "pod", "ztunnel"}),
    "transport": frozenset({"local", "docker", "kube", "ssh", "file"}),
    "status": frozenset({"ok", "nonzero_exit", "not_found", "timeout", "transport_error",
                         "skipped", "absent", "not-kept", "not_kept", "interrupted"}),
    "mode": frozenset({"local", "kind", "ssh", "kube", "unknown"}),
    "zt-state": frozenset({"Up", "Pending", "Down", "Available", "Unavailable", "Healthy",
                           "Unhealthy", "Initializing"}),
    "workload-type": frozenset({"deployment", "pod", "job", "cronjob", "daemonset",
                                "statefulset", "replicaset"}),
    "policy-action": frozenset({"Allow", "Deny", "Audit"}),
    "policy-scope": frozenset({"Global", "Namespace", "WorkloadSelector"}),
    "ipfamily-lower": frozenset({"ipv4", "ipv6"}),
    "finalizer": frozenset({"kubernetes"}),
    "schema": frozenset({"ambientctl.bundle/v1"}),
    "tool": frozenset({"ambientctl"}),
    "cluster-id": frozenset({"Kubernetes"}),
    # label / annotation values the analyzers compare against
    "dataplane-mode": frozenset({"ambient", "none", "sidecar", ""}),
    "enabled": frozenset({"enabled", "disabled"}),
    "bool-text": frozenset({"true", "false"}),
    "tunnel": frozenset({"http"}),
    "tls-mode": frozenset({"istio", "disabled"}),
    "waypoint-for": frozenset({"service", "workload", "all", "none"}),
    "os": frozenset({"linux", "windows"}),
    "arch": frozenset({"amd64", "arm64", "arm", "s390x", "ppc64le", "386", "riscv64"}),
    "spec": frozenset(
        {*NETNS_FILES, CONFIG_DUMP, "pods.json", "services.json", "namespaces.json",
         "nodes.json", "endpointslices.json", "iptables-save", "ip6tables-save",
         "iptables-legacy-save", "ip6tables-legacy-save", "nft", "ipset", "ip", "ss",
         "sysctl", "curl", "uname", "?"}),
}
_PATTERNS: dict[str, re.Pattern[str]] = {
    "timestamp": re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$"),
    "api-version": re.compile(r"^(?:[a-z]+(?:\.[a-z0-9]+)*\.(?:k8s|istio)\.io/|apps/|batch/)?"
                              r"v\d+(?:alpha\d+|beta\d+)?$"),
    "version": re.compile(r"^(?:v?\d+(?:\.\d+)*(?:[-+.][0-9A-Za-z.]+)*|latest)$"),
    "tool-version": re.compile(r"^(?:(?:iptables|ip6tables|ip utility|ipset|nftables|curl)"
                               r"\b[\w ,:.()#/+-]*|\d+\.\d+[\w.+-]*)$"),
    "key": re.compile(r"^[a-z][a-z0-9_]*$|^\d+$"),
    "runtime": re.compile(r"^[a-z]+://v?\d[\w.+-]*$"),
    "word": re.compile(r"^[a-z][a-z0-9_]*$"),
    "hash": re.compile(r"^[a-z0-9]{1,12}$"),
    "digits": re.compile(r"^\d*$"),
    "controller": re.compile(r"^[a-z0-9-]+\.(?:k8s|istio)\.io$"),
    "serial": re.compile(r"^\d+$"),
}
# `version` also matches what `bundle_id`s and revisions look like; kept fields are short.


def valid(kind: str, value: str) -> bool:
    """Does `value` have the shape a keep rule of `kind` promises?"""
    if kind in _ENUMS:
        return value in _ENUMS[kind]
    pat = _PATTERNS.get(kind)
    return bool(pat and pat.fullmatch(value) and len(value) <= 120)


# ------------------------------------------------------------------------- label policy

# Label / selector keys: kept key -> what happens to the value. Every other key is a
# customer's: key and value become opaque tokens (consistently, so selectors still match).
LABEL_KEYS: dict[str, str] = {
    "app": "name:app",
    "app.kubernetes.io/name": "name:app",
    "app.kubernetes.io/instance": "name:app",
    "k8s-app": "name:app",
    "service.istio.io/canonical-name": "name:app",
    "kubernetes.io/service-name": "name:service",
    "service": "name:service",
    "kubernetes.io/metadata.name": "name:namespace",
    "kubernetes.io/hostname": "name:node",
    "istio.io/use-waypoint": "name:app",
    "istio.io/gateway-name": "name:app",
    "gateway.networking.k8s.io/gateway-name": "name:app",
    "version": "keep:version",
    "app.kubernetes.io/version": "keep:version",
    "service.istio.io/canonical-revision": "keep:version",
    "pod-template-hash": "keep:hash",
    "controller-revision-hash": "keep:hash",
    "pod-template-generation": "keep:digits",
    "istio.io/dataplane-mode": "keep:dataplane-mode",
    "istio.io/waypoint-for": "keep:waypoint-for",
    "istio-injection": "keep:enabled",
    "sidecar.istio.io/inject": "keep:bool-text",
    "networking.istio.io/tunnel": "keep:tunnel",
    "security.istio.io/tlsMode": "keep:tls-mode",
    "istio.io/rev": "opaque:rev",
    "kubernetes.io/os": "keep:os",
    "kubernetes.io/arch": "keep:arch",
    "beta.kubernetes.io/os": "keep:os",
    "beta.kubernetes.io/arch": "keep:arch",
    "endpointslice.kubernetes.io/managed-by": "keep:controller",
    "node-role.kubernetes.io/control-plane": "keep:digits",
    "node-role.kubernetes.io/master": "keep:digits",
    "node.kubernetes.io/exclude-from-external-load-balancers": "keep:digits",
}

# Annotation keys the analyzers read: key kept, value as said. Every other annotation
# (the projection keeps Istio-prefixed ones; hand-made bundles may hold anything) gets an
# opaque key and value.
ANNOTATION_KEYS: dict[str, str] = {
    "ambient.istio.io/redirection": "keep:enabled",
    "ambient.istio.io/bypass-inbound-capture": "keep:bool-text",
    "ambient.istio.io/dns-capture": "keep:bool-text",
    "sidecar.istio.io/inject": "keep:bool-text",
    "sidecar.istio.io/status": "sidecar-status",
    "istio.io/reroute-virtual-interfaces": "prose",
    "traffic.sidecar.istio.io/excludeOutboundIPRanges": "prose",
    "traffic.sidecar.istio.io/excludeInboundPorts": "prose",
    "traffic.sidecar.istio.io/excludeOutboundPorts": "prose",
    "traffic.sidecar.istio.io/includeInboundPorts": "prose",
    "traffic.sidecar.istio.io/includeOutboundIPRanges": "prose",
}

# Image basenames of Istio components (manifest `components` reads their tags): the
# registry path becomes opaque, the component name and tag stay. Any other image is
# opaque as a whole (app names inside image names included).
ISTIO_IMAGES = frozenset(IMAGE_COMPONENTS)  # the one list: istio.IMAGE_COMPONENTS
PUBLIC_REGISTRIES = frozenset({"docker.io/istio", "gcr.io/istio-release", "istio",
                               "gcr.io/istio-testing"})

# ------------------------------------------------------------------------- the tables

_META = {
    "metadata.name": ("name:{kind}", "the object's name: an identifier"),
    "metadata.namespace": ("name:namespace", "namespace names identify the customer"),
    "metadata.uid": ("text", "UUIDs are mapped by the text pass"),
    "metadata.generateName": ("name:owner", "owner name prefix"),
    "metadata.creationTimestamp": ("keep:timestamp", "time, not identity"),
    "metadata.resourceVersion": ("keep:digits", "an etcd counter"),
    "metadata.labels": ("labels", "label keys/values: allow-listed, else opaque"),
    "metadata.annotations": ("annotations", "only analyzer-read keys kept"),
    "metadata.ownerReferences[].apiVersion": ("keep:api-version", "API vocabulary"),
    "metadata.ownerReferences[].kind": ("keep:kind", "API vocabulary"),
    "metadata.ownerReferences[].name": ("name:owner", "owner (ReplicaSet...) name"),
    "metadata.ownerReferences[].uid": ("text", "UUID"),
    "metadata.ownerReferences[].controller": ("keep", "boolean"),
    "metadata.ownerReferences[].blockOwnerDeletion": ("keep", "boolean"),
    "apiVersion": ("keep:api-version", "API vocabulary"),
    "kind": ("keep:kind", "API vocabulary"),
}
_CONTAINER = {
    "name": ("name:app", "container names are app names"),
    "image": ("image", "registries, repositories and app names"),
    "imagePullPolicy": ("keep:pull", "enum"),
    "restartPolicy": ("keep:restart", "enum"),
    "ports[].name": ("name:port", "port names appear in kube-proxy comments"),
    "ports[].containerPort": ("keep", "number"),
    "ports[].hostPort": ("keep", "number"),
    "ports[].protocol": ("keep:protocol", "enum"),
}
_LIST = {
    "apiVersion": ("keep:api-version", "API vocabulary"),
    "kind": ("keep:kind", "API vocabulary"),
    "metadata.resourceVersion": ("keep:digits", "an etcd counter"),
    "metadata.continue": ("opaque:token", "a paging token"),
}


def _items(kind: str, fields: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    out = dict(_LIST)
    for path, (action, why) in {**_META, **fields}.items():
        out[f"items[].{path}"] = (action.replace("{kind}", kind), why)
    return out


_POD = {
    "spec.nodeName": ("name:node", "node name"),
    "spec.hostNetwork": ("keep", "boolean the walk reads"),
    "spec.serviceAccountName": ("name:serviceaccount", "identity"),
    "spec.serviceAccount": ("name:serviceaccount", "identity"),
    "spec.hostname": ("name:pod", "pod hostname"),
    "spec.subdomain": ("name:service", "headless Service name"),
    **{f"spec.containers[].{k}": v for k, v in _CONTAINER.items()},
    **{f"spec.initContainers[].{k}": v for k, v in _CONTAINER.items()},
    "status.phase": ("keep:phase", "enum"),
    "status.podIP": ("text", "address, mapped"),
    "status.podIPs[].ip": ("text", "address, mapped"),
    "status.hostIP": ("text", "address, mapped"),
    "status.hostIPs[].ip": ("text", "address, mapped"),
    "status.qosClass": ("keep:qos", "enum"),
    "status.startTime": ("keep:timestamp", "time"),
    "status.conditions[].type": ("keep:word-camel", "enum"),
    "status.conditions[].status": ("keep:condition", "enum"),
    "status.containerStatuses[].name": ("name:app", "container name"),
    "status.containerStatuses[].ready": ("keep", "boolean"),
    "status.containerStatuses[].started": ("keep", "boolean"),
    "status.containerStatuses[].restartCount": ("keep", "number"),
}
_SERVICE = {
    "spec.type": ("keep:svc-type", "enum"),
    "spec.clusterIP": ("text", "address (or None), mapped"),
    "spec.clusterIPs[]": ("text", "address, mapped"),
    "spec.externalIPs[]": ("text", "address, mapped"),
    "spec.loadBalancerIP": ("text", "address, mapped"),
    "spec.externalName": ("hostname", "an external hostname"),
    "spec.ipFamilies[]": ("keep:family", "enum"),
    "spec.ipFamilyPolicy": ("keep:family-policy", "enum"),
    "spec.selector": ("labels", "matched against pod labels: same mapping"),
    "spec.externalTrafficPolicy": ("keep:traffic-policy", "enum"),
    "spec.internalTrafficPolicy": ("keep:traffic-policy", "enum"),
    "spec.sessionAffinity": ("keep:affinity", "enum"),
    "spec.ports[].name": ("name:port", "port names appear in kube-proxy comments"),
    "spec.ports[].port": ("keep", "number"),
    "spec.ports[].nodePort": ("keep", "number"),
    "spec.ports[].targetPort": ("name:port", "a number, or a container port name"),
    "spec.ports[].protocol": ("keep:protocol", "enum"),
    "spec.ports[].appProtocol": ("name:port", "protocol name (custom ones identify)"),
    "status.loadBalancer.ingress[].ip": ("text", "address, mapped"),
    "status.loadBalancer.ingress[].hostname": ("hostname", "cloud LB hostnames identify"),
}
_NAMESPACE = {
    "spec.finalizers[]": ("keep:finalizer", "enum"),
    "status.phase": ("keep:phase", "enum"),
}
_NODE = {
    "spec.podCIDR": ("text", "prefix, mapped"),
    "spec.podCIDRs[]": ("text", "prefix, mapped"),
    "spec.providerID": ("opaque:provider", "cloud instance ids identify"),
    "spec.unschedulable": ("keep", "boolean"),
    "spec.taints[].key": ("label-key", "like a label key"),
    "spec.taints[].value": ("opaque:value", "free value"),
    "spec.taints[].effect": ("keep:taint-effect", "enum"),
    "spec.taints[].timeAdded": ("keep:timestamp", "time"),
    "status.addresses[].type": ("keep:addr-type", "enum"),
    "status.addresses[].address": ("node-address", "IP mapped; hostnames are node names"),
    "status.nodeInfo.kernelVersion": ("keep:version", "kernel version"),
    "status.nodeInfo.osImage": ("opaque:os", "free text"),
    "status.nodeInfo.containerRuntimeVersion": ("keep:runtime", "runtime version"),
    "status.nodeInfo.kubeletVersion": ("keep:version", "version"),
    "status.nodeInfo.kubeProxyVersion": ("keep:version", "version"),
    "status.nodeInfo.architecture": ("keep:arch", "enum"),
    "status.nodeInfo.operatingSystem": ("keep:os", "enum"),
    "status.conditions[].type": ("keep:word-camel", "enum"),
    "status.conditions[].status": ("keep:condition", "enum"),
}
_SLICE = {
    "addressType": ("keep:family", "enum"),
    "endpoints[].addresses[]": ("text", "address, mapped"),
    "endpoints[].conditions.*": ("keep", "booleans"),
    "endpoints[].nodeName": ("name:node", "node name"),
    "endpoints[].zone": ("opaque:zone", "cloud zone"),
    "endpoints[].hostname": ("name:pod", "pod hostname"),
    "endpoints[].targetRef.kind": ("keep:kind", "API vocabulary"),
    "endpoints[].targetRef.namespace": ("name:namespace", "namespace"),
    "endpoints[].targetRef.name": ("name:pod", "pod name"),
    "endpoints[].targetRef.uid": ("text", "UUID"),
    "ports[].name": ("name:port", "port name"),
    "ports[].port": ("keep", "number"),
    "ports[].protocol": ("keep:protocol", "enum"),
    "ports[].appProtocol": ("name:port", "protocol name"),
}
_PATTERNS["word-camel"] = re.compile(r"^[A-Z][A-Za-z]*$")

_ENUMS["mtls-mode"] = frozenset({"UNSET", "DISABLE", "PERMISSIVE", "STRICT"})
_ENUMS["authz-action"] = frozenset({"ALLOW", "DENY", "AUDIT", "CUSTOM"})
_ENUMS["gateway-protocol"] = frozenset({"HBONE", "HTTP", "HTTPS", "TCP", "TLS", "UDP", "GRPC"})
_PATTERNS["gateway-class"] = re.compile(r"^istio(?:-[a-z]+)*$")
_PATTERNS["api-group"] = re.compile(r"^(?:[a-z0-9-]+\.)+(?:k8s|istio)\.io$|^$")
_PEERAUTH = {
    "spec.selector.matchLabels": ("labels", "matched against pod labels: same mapping"),
    "spec.mtls.mode": ("keep:mtls-mode", "the mode the verdict reads"),
    "spec.portLevelMtls.*.mode": ("keep:mtls-mode", "per-port mode"),
}
_AUTHZ = {
    "spec.selector.matchLabels": ("labels", "matched against pod labels: same mapping"),
    "spec.action": ("keep:authz-action", "enum"),
    "spec.targetRef.kind": ("keep:kind", "API vocabulary"),
    "spec.targetRef.group": ("keep:api-group", "API group"),
    "spec.targetRef.name": ("name:service", "the Service or Gateway it binds"),
    "spec.targetRefs[].kind": ("keep:kind", "API vocabulary"),
    "spec.targetRefs[].group": ("keep:api-group", "API group"),
    "spec.targetRefs[].name": ("name:service", "the Service or Gateway it binds"),
}
_GATEWAY = {
    "spec.gatewayClassName": ("keep:gateway-class", "istio, istio-waypoint: the kind of Gateway"),
    "spec.listeners[].name": ("name:port", "listener name"),
    "spec.listeners[].port": ("keep", "number"),
    "spec.listeners[].protocol": ("keep:gateway-protocol", "enum"),
    "spec.listeners[].hostname": ("domain", "a hostname: mapped"),
}

CLUSTER_FIELDS: dict[str, dict[str, tuple[str, str]]] = {
    "cluster/peerauthentications.json": _items("peerauthentication", _PEERAUTH),
    "cluster/authorizationpolicies.json": _items("authorizationpolicy", _AUTHZ),
    "cluster/gateways.json": _items("gateway", _GATEWAY),
    "cluster/pods.json": _items("pod", _POD),
    "cluster/services.json": _items("service", _SERVICE),
    "cluster/namespaces.json": _items("namespace", _NAMESPACE),
    "cluster/nodes.json": _items("node", _NODE),
    "cluster/endpointslices.json": _items("service", _SLICE),
}

_WL = "workloads.*."  # map form; the list form is `workloads[]` (same fields)
_WORKLOAD = {
    "uid": ("text", "Kubernetes//Pod/<ns>/<name>: names mapped"),
    "workloadIps[]": ("text", "address, mapped"),
    "waypoint.destination": ("text", "address, mapped"),
    "waypoint.port": ("keep", "number"),
    "waypoint.hboneMtlsPort": ("keep", "number"),
    "protocol": ("keep:protocol", "the walk reads it"),
    "name": ("name:pod", "pod name"),
    "namespace": ("name:namespace", "namespace"),
    "trustDomain": ("domain", "SPIFFE trust domain (cluster.local kept)"),
    "serviceAccount": ("name:serviceaccount", "identity"),
    "workloadName": ("name:owner", "deployment name"),
    "workloadType": ("keep:workload-type", "enum"),
    "canonicalName": ("name:app", "app name"),
    "canonicalRevision": ("keep:version", "version-like (else opaque)"),
    "network": ("opaque:network", "network name"),
    "node": ("name:node", "node name"),
    "nativeTunnel": ("keep", "boolean"),
    "status": ("keep:zt-state", "enum"),
    "clusterId": ("keep:cluster-id", "default kept, others opaque"),
    "services[]": ("prose", "service hostnames"),
    "authorizationPolicies[]": ("prose", "policy names"),
}
_SVC = "services.*."
_ZT_SERVICE = {
    "name": ("name:service", "service name"),
    "namespace": ("name:namespace", "namespace"),
    "hostname": ("hostname", "svc FQDN or an external (ServiceEntry) hostname"),
    "vips[]": ("text", "address, mapped"),
    "ports.*": ("keep", "numbers"),
    "endpoints.*.workloadUid": ("text", "names mapped"),
    "endpoints.*.service": ("prose", "ns/hostname"),
    "endpoints.*.address": ("text", "address, mapped"),
    "endpoints.*.port.*": ("keep", "numbers"),
    "endpoints.*.status": ("keep:zt-state", "enum"),
    "subjectAltNames[]": ("prose", "SPIFFE ids"),
    "ipFamilies": ("keep:family", "enum"),
    "waypoint.destination": ("text", "address, mapped"),
    "waypoint.port": ("keep", "number"),
}
CONFIG_DUMP_FIELDS: dict[str, tuple[str, str]] = {
    **{_WL + k: v for k, v in _WORKLOAD.items()},
    **{"workloads[]." + k: v for k, v in _WORKLOAD.items()},
    **{_SVC + k: v for k, v in _ZT_SERVICE.items()},
    **{"services[]." + k: v for k, v in _ZT_SERVICE.items()},
    "policies[].name": ("name:app", "policy name"),
    "policies[].namespace": ("name:namespace", "namespace"),
    "policies[].scope": ("keep:policy-scope", "enum"),
    "policies[].action": ("keep:policy-action", "enum"),
    "policies[].rules": ("prose", "free structure: every string scrubbed"),
    "certificates[].identity": ("prose", "SPIFFE id: trust domain, ns, sa mapped"),
    "certificates[].state": ("keep:zt-state", "enum"),
    "certificates[].certChain[].pem": ("pem", "certificates embed SPIFFE ids: replaced"),
    "certificates[].certChain[].serialNumber": ("opaque:serial", "serials are unique ids"),
    "certificates[].certChain[].validFrom": ("keep:timestamp", "expiry matters"),
    "certificates[].certChain[].expirationTime": ("keep:timestamp", "expiry matters"),
    "workloadState.*.state": ("keep:zt-state", "enum"),
    "workloadState.*.info.name": ("name:pod", "pod name"),
    "workloadState.*.info.namespace": ("name:namespace", "namespace"),
    "workloadState.*.info.serviceAccount": ("name:serviceaccount", "identity"),
    "workloadState.*.connections.inbound[].src": ("text", "address:port"),
    "workloadState.*.connections.inbound[].originalDst": ("text", "address:port"),
    "workloadState.*.connections.inbound[].actualDst": ("text", "address:port"),
    "workloadState.*.connections.inbound[].protocol": ("keep:protocol", "enum"),
    "workloadState.*.connections.outbound[].src": ("text", "address:port"),
    "workloadState.*.connections.outbound[].originalDst": ("text", "address:port"),
    "workloadState.*.connections.outbound[].actualDst": ("text", "address:port"),
    "workloadState.*.connections.outbound[].protocol": ("keep:protocol", "enum"),
}

MANIFEST_FIELDS: dict[str, tuple[str, str]] = {
    "schema": ("keep:schema", "format"),
    "format_version": ("keep", "number"),
    "bundle_id": ("regen", "recomputed over the redacted entries"),
    "created_at": ("keep:timestamp", "time"),
    "tool.name": ("keep:tool", "format"),
    "tool.version": ("keep:version", "ambientctl's version"),
    "partial": ("keep", "boolean"),
    "components.*[]": ("keep:version", "Istio versions (tags of upstream images)"),
    "redaction": ("regen", "rewritten for this redaction"),
    "collection.mode": ("keep:mode", "enum"),
    "collection.argv[]": ("argv", "options kept; values: names mapped, the rest opaque"),
    "collection.cluster_dir": ("path", "user paths identify"),
    "collection.timeout_s": ("keep", "number"),
    "collection.concurrency": ("keep", "number"),
    "collection.kind_cluster": ("opaque:cluster", "cluster name"),
    "collection.context": ("opaque:context", "kube contexts hold ARNs / account ids"),
    "collection.cluster_error": ("prose", "an error message"),
    "collection.nodes_filter[]": ("name:node", "node names"),
    "collection.namespaces_filter[]": ("name:namespace", "namespace names"),
    "collection.discovery_errors.*": ("prose", "error messages (keys: node names)"),
    "collection.cluster_list_errors.*": ("prose", "why an optional list is absent (keys: kinds)"),
    "collection.pod_netns_via_proc.*": ("prose", "how pod netns were entered (keys: node names)"),
    "collection.not_seen[].target": ("text", "target id: names mapped"),
    "collection.not_seen[].what": ("prose", "what was not seen"),
    "collection.not_seen[].what[]": ("keep:spec", "binary names"),
    "collection.not_seen[].why": ("prose", "reason"),
    "collection.not_seen[].seen_by": ("prose", "advice"),
    "targets[].id": ("text", "kind/ns/name: names mapped"),
    "targets[].kind": ("keep:target-kind", "enum"),
    "targets[].node": ("name:node", "node name"),
    "targets[].pod.namespace": ("name:namespace", "namespace"),
    "targets[].pod.name": ("name:pod", "pod name"),
    "targets[].netns.name": ("name:netns", "netns name"),
    "targets[].netns.path": ("path", "a path"),
    "targets[].netns.pid": ("keep", "number"),
    "targets[].dir": ("text", "bundle path: names mapped"),
    "targets[].transport": ("keep:transport", "enum"),
    "targets[].tool_versions.*": ("keep:tool-version", "tool versions (else opaque)"),
    "targets[].netns_inode": ("keep", "number: a netns inode names nothing off the node"),
    "collection.netns_conflicts[].netns_inode": ("keep", "number"),
    "collection.netns_conflicts[].targets[]": ("text", "target ids: names mapped"),
    "collection.skipped_objects[].kind": ("text", "list kind"),
    "collection.skipped_objects[].why": ("prose", "quotes the invalid name"),
    "collection.target_timeout_s": ("keep", "number"),
    "collection.max_output_bytes": ("keep", "number (null: no cap)"),
    "collection.interrupted": ("keep", "boolean"),
    "collection.write_error": ("prose", "an error message naming a user path"),
    "collection.unavailable_nodes.*": ("keep:word", "container state (keys: node names)"),
    "collection.unmapped_netns.*[]": ("name:netns", "netns names (keys: node names)"),
    "targets[].route": ("text", "the node's exec route (node or namespace/pod): names mapped"),
    "targets[].deadline_reached_at": ("keep:timestamp", "time"),
    "entries[].path": ("regen", "the redacted path"),
    "entries[].size": ("regen", "of the redacted bytes"),
    "entries[].sha256": ("regen", "of the redacted bytes"),
    "entries[].spec": ("keep:spec", "catalogue id"),
    "entries[].target": ("text", "target id: names mapped"),
    "entries[].argv[]": ("argv", "catalogue argv; values mapped"),
    "entries[].wrapper[]": ("argv", "ssh/docker/kubectl/ip netns: hosts, pods mapped"),
    "entries[].transport": ("keep:transport", "enum"),
    "entries[].source": ("path", "where a cluster file came from"),
    "entries[].status": ("keep:status", "enum"),
    "entries[].exit_code": ("keep", "number"),
    "entries[].stderr": ("prose", "hostnames, addresses, names, users scrubbed"),
    "entries[].stderr_truncated": ("keep", "boolean"),
    "entries[].note": ("prose", "free text"),
    "entries[].optional_absent": ("keep", "boolean"),
    "entries[].started_at": ("keep:timestamp", "time"),
    "entries[].duration_ms": ("keep", "number"),
}

DYNAMIC_KEYS: dict[str, str] = {
    "workloads": "text",
    "services": "text",
    "services.*.ports": "keep:key",
    "services.*.endpoints": "text",
    "services.*.endpoints.*.port": "keep:key",
    "workloadState": "text",
    "items[].endpoints[].conditions": "keep:key",
    "components": "keep:key",
    "targets[].tool_versions": "keep:key",
    "collection.discovery_errors": "name:node",
    "collection.cluster_list_errors": "keep:key",
    "collection.pod_netns_via_proc": "name:node",
    "collection.unavailable_nodes": "name:node",
    "collection.unmapped_netns": "name:node",
}

_KERNEL_DUMP = "kernel dump: addresses, MACs, UUIDs, known names (and comments as prose)"
FILE_RULES: dict[str, str] = {
    "manifest.json": "manifest fields (MANIFEST_FIELDS)",
    **{rel: f"cluster fields ({rel})" for rel in CLUSTER_FIELDS},
    f"nodes/*/ztunnel/{CONFIG_DUMP}": "ztunnel config_dump fields (CONFIG_DUMP_FIELDS)",
    f"{ZTUNNEL_SHARED_DIR}/sha256-*.json": "ztunnel config_dump fields (CONFIG_DUMP_FIELDS), "
    "redacted within each dump that references it, split again and renamed after its "
    "redacted content",
    **{f"nodes/*/{{host,pods/*/*}}/{name}": _KERNEL_DUMP for name in NETNS_FILES},
}


def file_kind(rel: str) -> str | None:
    """"manifest", "cluster", "config_dump", "ztunnel_shared", "dump" or None (not a file
    redaction knows)."""
    if rel == "manifest.json":
        return "manifest"
    if ztunnel_shared_digest(rel) is not None:
        return "ztunnel_shared"
    if rel in CLUSTER_FIELDS:
        return "cluster"
    parts = rel.split("/")
    if len(parts) == 4 and parts[0] == "nodes" and parts[2:] == ["ztunnel", CONFIG_DUMP]:
        return "config_dump"
    if parts[0] == "nodes" and parts[-1] in NETNS_FILES and (
        (len(parts) == 4 and parts[2] == "host") or (len(parts) == 6 and parts[2] == "pods")
    ):
        return "dump"
    return None


def table_for(rel: str) -> dict[str, tuple[str, str]] | None:
    """The field table of a structured file."""
    if rel == "manifest.json":
        return MANIFEST_FIELDS
    if rel in CLUSTER_FIELDS:
        return CLUSTER_FIELDS[rel]
    if file_kind(rel) == "config_dump":
        return CONFIG_DUMP_FIELDS
    return None


def prefixes(table: dict[str, tuple[str, str]]) -> frozenset[str]:
    """Every path that is a rule or leads to one (containers the walker descends)."""
    out = set()
    for path in table:
        parts = re.split(r"\.|(?=\[\])", path)
        acc = ""
        for part in parts:
            if part == "[]":
                acc += "[]"
            else:
                acc = f"{acc}.{part}" if acc else part
            out.add(acc)
    return frozenset(out)


__all__ = ["ANNOTATION_KEYS", "CLUSTER_FIELDS", "CONFIG_DUMP_FIELDS", "DYNAMIC_KEYS",
           "FILE_RULES", "ISTIO_IMAGES", "LABEL_KEYS", "MANIFEST_FIELDS", "PUBLIC_REGISTRIES",
           "file_kind", "prefixes", "table_for", "valid"]
