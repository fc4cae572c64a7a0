"""kube-proxy's nftables mode (GA in Kubernetes 1.33): the ruleset it writes, for the labs.

kube-proxy in nftables mode owns one table per family (`ip kube-proxy`, `ip6 kube-proxy`)
and writes it with `nft -f -` as a transaction of `add` commands. This module produces
that transaction in the exact shape of kube-proxy's nftables proxier
(kubernetes/kubernetes `pkg/proxy/nftables/proxier.go`, whose test golden
`TestOverallNFTablesRules` lists the base rules verbatim):

* base chains and priorities: `filter-prerouting-pre-dnat` and `filter-output-pre-dnat`
  (filter, priority -110: before DNAT, for `firewall-check`), `filter-forward`,
  `filter-input`, `filter-output` (filter, 0: `service-endpoints-check`,
  `nodeport-endpoints-check`, `cluster-ips-check`), `nat-prerouting`/`nat-output` (nat,
  -100: `jump services`) and `nat-postrouting` (nat, 100: `jump masquerading`);
* the dispatch is one verdict-map lookup, `ip daddr . meta l4proto . th dport vmap
  @service-ips`, plus `ip daddr @nodeport-ips meta l4proto . th dport vmap
  @service-nodeports` for NodePorts;
* a Service chain `service-<HASH>-<ns>/<name>/<proto>/<port>` marks traffic from outside the
  cluster CIDR for masquerade, then picks an endpoint with `numgen random mod N vmap { 0 :
  goto endpoint-..., 1 : goto endpoint-... }`; an endpoint chain marks hairpin traffic and
  DNATs (`meta l4proto tcp dnat to IP:PORT`);
* masquerading uses mark 0x4000: `mark-for-masquerade` sets it, `masquerading` returns
  unless it is set, clears it and `masquerade fully-random`;
* a Service without endpoints gets `no-endpoint-services` / `no-endpoint-nodeports`
  elements `: goto reject-chain`; every ClusterIP is in `cluster-ips`, and
  `cluster-ips-check` rejects other ports of a ClusterIP and drops unallocated ClusterIPs
  of the service CIDR.

Chain names hash as kube-proxy's `hashAndTruncate`: base32(sha256(name))[:8] + "-" + name.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["KubeProxyService", "chain_base", "ruleset"]

MASQ_MARK = 0x4000


@dataclass(frozen=True)
class KubeProxyService:
    """One Service port as kube-proxy sees it (Service + EndpointSlice, already joined)."""

    namespace: str
    name: str
    port_name: str
    cluster_ip: str
    port: int
    endpoints: tuple[tuple[str, int], ...]  # (pod IP, target port), kube-proxy's order
    protocol: str = "tcp"
    node_port: int | None = None
    external_ips: tuple[str, ...] = field(default=())

    @property
    def port_key(self) -> str:
        """`ns/name/proto/port`, the base of its chain names."""
        return f"{self.namespace}/{self.name}/{self.protocol}/{self.port_name}"

    @property
    def display(self) -> str:
        """`ns/name:port`, kube-proxy's element comments."""
        return f"{self.namespace}/{self.name}:{self.port_name}"


def chain_base(name: str) -> str:
    """kube-proxy's `hashAndTruncate`: `ULMVA6XW-ns1/svc1/tcp/p80` for `ns1/svc1/tcp/p80`."""
    digest = base64.b32encode(hashlib.sha256(name.encode()).digest()).decode()
    return f"{digest[:8]}-{name}"


def _service_chain(svc: KubeProxyService) -> str:
    return "service-" + chain_base(svc.port_key)


def _external_chain(svc: KubeProxyService) -> str:
    return "external-" + chain_base(svc.port_key)


def _endpoint_chain(svc: KubeProxyService, ip: str, port: int) -> str:
    # proxier.go servicePortEndpointChainNameBase: a chain name cannot hold ':', so an IPv6
    # endpoint's colons become dots ("fd00.10.244.1..4/9080").
    return "endpoint-" + chain_base(f"{svc.port_key}__{ip.replace(':', '.')}/{port}")


def ruleset(
    services: Sequence[KubeProxyService],
    *,
    family: str = "ip",
    cluster_cidr: str,
    service_cidr: str,
    node_ips: Sequence[str] = (),
) -> str:
    """The `nft -f` transaction kube-proxy writes for `services` (one family).

    `family` is "ip" or "ip6"; addresses in `services`, `cluster_cidr`, `service_cidr` and
    `node_ips` must be of that family. The table is created fresh (kube-proxy's first
    sync): `add table` then `flush table`, so loading twice gives the same ruleset.
    """
    if family not in ("ip", "ip6"):
        raise ValueError(f"family must be ip or ip6, not {family!r}")
    addr_type = "ipv4_addr" if family == "ip" else "ipv6_addr"
    t = f"{family} kube-proxy"
    out: list[str] = [
        f'add table {t} {{ comment "rules for kube-proxy" ; }}',
        f"flush table {t}",
        "",
        f'add set {t} cluster-ips {{ type {addr_type} ; comment "Active ClusterIPs" ; }}',
        f'add set {t} nodeport-ips {{ type {addr_type} ; comment "IPs that accept NodePort '
        'traffic" ; }',
        "",
        f"add map {t} firewall-ips {{ type {addr_type} . inet_proto . inet_service : verdict ; "
        'comment "destinations that are subject to LoadBalancerSourceRanges" ; }',
        f"add map {t} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; "
        'comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }',
        f"add map {t} no-endpoint-services {{ type {addr_type} . inet_proto . inet_service : "
        'verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }',
        f"add map {t} service-ips {{ type {addr_type} . inet_proto . inet_service : verdict ; "
        'comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }',
        f"add map {t} service-nodeports {{ type inet_proto . inet_service : verdict ; "
        'comment "NodePort traffic" ; }',
        "",
        f"add chain {t} cluster-ips-check",
        f"add chain {t} filter-prerouting-pre-dnat {{ type filter hook prerouting priority -110 ; }}",
        f"add chain {t} filter-output-pre-dnat {{ type filter hook output priority -110 ; }}",
        f"add chain {t} filter-forward {{ type filter hook forward priority 0 ; }}",
        f"add chain {t} filter-input {{ type filter hook input priority 0 ; }}",
        f"add chain {t} filter-output {{ type filter hook output priority 0 ; }}",
        f"add chain {t} firewall-check",
        f"add chain {t} mark-for-masquerade",
        f"add chain {t} masquerading",
        f"add chain {t} nat-output {{ type nat hook output priority -100 ; }}",
        f"add chain {t} nat-postrouting {{ type nat hook postrouting priority 100 ; }}",
        f"add chain {t} nat-prerouting {{ type nat hook prerouting priority -100 ; }}",
        f"add chain {t} nodeport-endpoints-check",
        f'add chain {t} reject-chain {{ comment "helper for @no-endpoint-services / '
        '@no-endpoint-nodeports" ; }',
        f"add chain {t} services",
        f"add chain {t} service-endpoints-check",
        "",
        f"add rule {t} cluster-ips-check {family} daddr @cluster-ips reject comment "
        '"Reject traffic to invalid ports of ClusterIPs"',
        f"add rule {t} cluster-ips-check {family} daddr {{ {service_cidr} }} drop comment "
        '"Drop traffic to unallocated ClusterIPs"',
        f"add rule {t} filter-prerouting-pre-dnat ct state new jump firewall-check",
        f"add rule {t} filter-forward ct state new jump service-endpoints-check",
        f"add rule {t} filter-forward ct state new jump cluster-ips-check",
        f"add rule {t} filter-input ct state new jump nodeport-endpoints-check",
        f"add rule {t} filter-input ct state new jump service-endpoints-check",
        f"add rule {t} filter-output ct state new jump service-endpoints-check",
        f"add rule {t} filter-output-pre-dnat ct state new jump firewall-check",
        f"add rule {t} filter-output ct state new jump cluster-ips-check",
        f"add rule {t} firewall-check {family} daddr . meta l4proto . th dport vmap @firewall-ips",
        f"add rule {t} mark-for-masquerade mark set mark or {MASQ_MARK:#x}",
        f"add rule {t} masquerading mark and {MASQ_MARK:#x} == 0 return",
        f"add rule {t} masquerading mark set mark xor {MASQ_MARK:#x}",
        f"add rule {t} masquerading masquerade fully-random",
        f"add rule {t} nat-output jump services",
        f"add rule {t} nat-postrouting jump masquerading",
        f"add rule {t} nat-prerouting jump services",
        f"add rule {t} nodeport-endpoints-check {family} daddr @nodeport-ips meta l4proto . "
        "th dport vmap @no-endpoint-nodeports",
        f"add rule {t} reject-chain reject",
        f"add rule {t} services {family} daddr . meta l4proto . th dport vmap @service-ips",
        f"add rule {t} services {family} daddr @nodeport-ips meta l4proto . th dport vmap "
        "@service-nodeports",
        f"add rule {t} service-endpoints-check {family} daddr . meta l4proto . th dport vmap "
        "@no-endpoint-services",
    ]
    for ip in node_ips:
        out.append(f"add element {t} nodeport-ips {{ {ip} }}")
    for svc in services:
        out.append("")
        out.extend(_service(t, family, svc, cluster_cidr))
    return "\n".join(out) + "\n"


def _service(t: str, family: str, svc: KubeProxyService, cluster_cidr: str) -> list[str]:
    proto, out = svc.protocol, [f"# {svc.display}"]
    key = f"{proto} . {svc.port}"
    if not svc.endpoints:
        # proxier.go: no endpoints -> reject (ClusterIP/NodePort) through reject-chain.
        out.append(f"add element {t} cluster-ips {{ {svc.cluster_ip} }}")
        out.append(f'add element {t} no-endpoint-services {{ {svc.cluster_ip} . {key} comment '
                   f'"{svc.display}" : goto reject-chain }}')
        if svc.node_port:
            out.append(f'add element {t} no-endpoint-nodeports {{ {proto} . {svc.node_port} '
                       f'comment "{svc.display}" : goto reject-chain }}')
        return out
    chain = _service_chain(svc)
    eps = [(ip, port, _endpoint_chain(svc, ip, port)) for ip, port in svc.endpoints]
    # Every chain exists before a rule names it (nft resolves jump/goto targets at load).
    out.append(f"add chain {t} {chain}")
    out.extend(f"add chain {t} {c}" for _, _, c in eps)
    out.append(f"add rule {t} {chain} {family} daddr {svc.cluster_ip} {family} saddr != "
               f"{cluster_cidr} jump mark-for-masquerade")
    vmap = " , ".join(f"{i} : goto {c}" for i, (_, _, c) in enumerate(eps))
    out.append(f"add rule {t} {chain} numgen random mod {len(eps)} vmap {{ {vmap} }}")
    if svc.node_port or svc.external_ips:
        ext = _external_chain(svc)
        out.append(f"add chain {t} {ext}")
        out.append(f"add rule {t} {ext} jump mark-for-masquerade")
        out.append(f"add rule {t} {ext} goto {chain}")
    for ip, port, ep_chain in eps:
        dst = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        out.append(f"add rule {t} {ep_chain} {family} saddr {ip} jump mark-for-masquerade")
        out.append(f"add rule {t} {ep_chain} meta l4proto {proto} dnat to {dst}")
    out.append(f"add element {t} cluster-ips {{ {svc.cluster_ip} }}")
    out.append(f"add element {t} service-ips {{ {svc.cluster_ip} . {key} : goto {chain} }}")
    for ip in svc.external_ips:
        out.append(f"add element {t} service-ips {{ {ip} . {key} : goto {_external_chain(svc)} }}")
    if svc.node_port:
        out.append(f"add element {t} service-nodeports {{ {proto} . {svc.node_port} : goto "
                   f"{_external_chain(svc)} }}")
    return out
