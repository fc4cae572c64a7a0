"""The support-bundle layout (v1): the ONLY place that maps targets and commands to paths.

Public contract, see docs/bundle-format.md (mirrors the team's bundle-layout.md):

    manifest.json
    cluster/{pods,services,namespaces,nodes,endpointslices}.json
    nodes/<node>/host/<file>
    nodes/<node>/pods/<namespace>/<pod>/<file>
    nodes/<node>/ztunnel/config_dump.json
    cluster/ztunnel-shared/sha256-<hex>.json   (format 2: sections every ztunnel shares)
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# 2: a ztunnel config_dump may be stored split, its cluster-wide sections once under
# ZTUNNEL_SHARED_DIR (bundle/ztunnel_shared.py); 1: every dump whole. Readers read both.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
MANIFEST_SCHEMA = "ambientctl.bundle/v1"

CLUSTER_FILES = {
    "pods": "cluster/pods.json",
    "services": "cluster/services.json",
    "namespaces": "cluster/namespaces.json",
    "nodes": "cluster/nodes.json",
    "endpointslices": "cluster/endpointslices.json",
}

# Istio / Gateway API objects the intended path depends on: optional (older bundles and
# clusters without the CRDs lack them; intent then falls back to labels, and says so).
MESH_FILES = {
    "PeerAuthentication": "cluster/peerauthentications.json",
    "AuthorizationPolicy": "cluster/authorizationpolicies.json",
    "Gateway": "cluster/gateways.json",
}
# kind -> (API group, versions tried in order, plural): how `collect` lists them
MESH_APIS = {
    "PeerAuthentication": ("security.istio.io", ("v1", "v1beta1"), "peerauthentications"),
    "AuthorizationPolicy": ("security.istio.io", ("v1", "v1beta1"), "authorizationpolicies"),
    "Gateway": ("gateway.networking.k8s.io", ("v1", "v1beta1"), "gateways"),
}

# Catalogue command id -> the file its stdout becomes: the one list of bundle file names per
# command. `collectors.specs` runs the commands and `analyzers.snapshot.SPEC_TABLE` parses
# the files; both look the names up here (analyzers may not import collectors).
NETNS_COMMAND_FILES: dict[str, str] = {
    "iptables-save": "iptables-save.txt",
    "ip6tables-save": "ip6tables-save.txt",
    "iptables-legacy-save": "iptables-legacy-save.txt",
    "ip6tables-legacy-save": "ip6tables-legacy-save.txt",
    "nft-tables": "nft-tables.jsonl",
    "ipset": "ipset.txt",
    "ip-rule": "ip-rule.json",
    "ip-rule-text": "ip-rule.txt",
    "ip6-rule": "ip6-rule.json",
    "ip6-rule-text": "ip6-rule.txt",
    "ip-route": "ip-route.json",
    "ip-route-text": "ip-route.txt",
    "ip6-route": "ip6-route.json",
    "ip6-route-text": "ip6-route.txt",
    "ip-addr": "ip-addr.json",
    "ip-addr-text": "ip-addr.txt",
    "ss-listen": "ss-listen.txt",
    "ss-listen-udp": "ss-listen-udp.txt",
    "sysctl": "sysctl.txt",
    "ipvsadm": "ipvsadm.txt",
    "ip-neigh": "ip-neigh.json",
    "ip-neigh-text": "ip-neigh.txt",
}
CONFIG_DUMP = "config_dump.json"  # ztunnel's admin /config_dump, per node
COMMAND_FILES: dict[str, str] = {**NETNS_COMMAND_FILES, "ztunnel-config-dump": CONFIG_DUMP}
# `nft -j list ruleset` (one JSON document): written by collections before `nft-tables`
# (docs/bundle-format.md "nft-tables.jsonl"); the reader still parses it, exactly as before.
NFT_RULESET = "nft-ruleset.json"
# `nft list ruleset` as text: no command writes it any more; older bundles and nft builds
# without JSON do, and the reader still parses it.
NFT_TEXT = "nft-ruleset.txt"
# Every file a namespace directory may hold.
NETNS_FILES: tuple[str, ...] = (*NETNS_COMMAND_FILES.values(), NFT_RULESET, NFT_TEXT)

# Kubernetes object names: DNS-1123 subdomain (pods, nodes) / label (namespaces).
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def valid_name(name: str) -> bool:
    """True for a DNS-1123 name: safe as a path component and as an argv element."""
    return bool(_NAME.match(name)) and ".." not in name


def host_dir(node: str) -> str:
    """Directory of a node's own network namespace."""
    return f"nodes/{node}/host"


def pod_dir(node: str, namespace: str, pod: str) -> str:
    """Directory of one pod's network namespace."""
    return f"nodes/{node}/pods/{namespace}/{pod}"


def config_dump_path(node: str) -> str:
    """Where ztunnel's admin config_dump of that node is stored."""
    return f"nodes/{node}/ztunnel/{CONFIG_DUMP}"


def netns_of_dir(d: str) -> tuple[str, str | None, str | None] | None:
    """(node, ns, pod) of a namespace directory "nodes/N/host" or "nodes/N/pods/NS/P"."""
    parts = d.split("/")
    if len(parts) == 3 and parts[0] == "nodes" and parts[2] == "host":
        return parts[1], None, None
    if len(parts) == 5 and parts[0] == "nodes" and parts[2] == "pods":
        return parts[1], parts[3], parts[4]
    return None


def is_config_dump_path(rel: str) -> bool:
    """Is `rel` a node's ztunnel config_dump (nodes/<node>/ztunnel/config_dump.json)?"""
    parts = rel.split("/")
    return len(parts) == 4 and parts[0] == "nodes" and parts[2:] == ["ztunnel", CONFIG_DUMP]


# ztunnel's cluster-wide config_dump sections, stored once per distinct content (format 2).
ZTUNNEL_SHARED_DIR = "cluster/ztunnel-shared"
_SHARED_NAME = re.compile(r"^cluster/ztunnel-shared/sha256-([0-9a-f]{64})\.json$")


def ztunnel_shared_path(sha256_hex: str) -> str:
    """Where the shared config_dump sections whose bytes hash to `sha256_hex` are stored."""
    return f"{ZTUNNEL_SHARED_DIR}/sha256-{sha256_hex}.json"


def ztunnel_shared_digest(rel: str) -> str | None:
    """The sha256 a shared-sections file is named after; None when `rel` is not one."""
    m = _SHARED_NAME.match(rel)
    return m.group(1) if m else None


def split_netns_dir(path: str) -> tuple[str, str | None, str | None, str] | None:
    """Split "nodes/N/host/F" or "nodes/N/pods/NS/P/F" into (node, ns, pod, file)."""
    d, sep, name = path.rpartition("/")
    key = netns_of_dir(d) if sep else None
    return None if key is None else (*key, name)


def looks_like_bundle(paths: Iterable[str]) -> bool:
    """A bundle holds at least one of manifest.json, nodes/..., cluster/...: anything else
    (a docs folder, an empty directory) is refused rather than read as an empty cluster."""
    return any(p == MANIFEST or p.startswith(("nodes/", "cluster/")) for p in paths)
