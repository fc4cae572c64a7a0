"""The rules each emulated namespace gets, as exact command vectors / restore text.

Three authors, as on a real 2022 kind node:
- kube-proxy (iptables mode, Kubernetes 1.25) and kubelet/kindnet: loaded with
  `iptables-restore --noflush`, as kube-proxy itself does. Chain names are kube-proxy's
  own hashes (`KUBE-SVC-` + base32(sha256("default/productpage:http" + "tcp"))[:16]).
- istio-cni on the node (legacy node-level redirection, istio-datapath.md §2.3, the
  `experimental-ambient` / Sept-2022 list: no filter-table `ztunnel-FORWARD` (1.19+), the
  `<=1.19` form of the ztunnel-OUTPUT rule, no DNS capture): individual `iptables` /
  `ip` / `ipset` commands in the order istio-cni issues them, so the jumps end up
  INSERTED at position 1, ahead of kube-proxy's.
- the ztunnel pod's init script (§2.4 plus the init-script-era extras: ip rules 20001 /
  20002 and the nat OUTPUT 15088 redirect). The per-chain `-j LOG` rules of that script
  are left out: non-init netns do not log by default (`nf_log_all_netns`), they would
  only be noise in the dumps.
"""

from __future__ import annotations

import base64
import hashlib

from ambientlab.topology import (
    CLUSTER_CIDR,
    GENEVE_DPORT,
    INBOUND_TUN,
    INBOUND_TUN_HOST,
    INBOUND_TUN_ZTUNNEL,
    IPSET,
    OUTBOUND_TUN,
    OUTBOUND_TUN_HOST,
    OUTBOUND_TUN_ZTUNNEL,
    SERVICES,
    NodeSpec,
    ServiceSpec,
)

Argv = tuple[str, ...]


def _hash16(text: str) -> str:
    """kube-proxy's `portProtoHash`: base32(sha256(text))[:16]."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def svc_chain(svc: ServiceSpec) -> str:
    """`KUBE-SVC-...` of a service port (kube-proxy `servicePortPolicyClusterChain`)."""
    return "KUBE-SVC-" + _hash16(f"{svc.namespace}/{svc.name}:{svc.port_name}" + "tcp")


def sep_chain(svc: ServiceSpec, endpoint: str) -> str:
    """`KUBE-SEP-...` of one endpoint (kube-proxy `servicePortEndpointChainName`)."""
    return "KUBE-SEP-" + _hash16(f"{svc.namespace}/{svc.name}:{svc.port_name}" + "tcp" + endpoint)


def _probability(n_left: int) -> str:
    # kube-proxy computeProbability: fmt.Sprintf("%0.10f", 1.0/float64(n)); the statistic
    # match stores it as a u32 fraction of 2^31, so iptables-save prints 0.33333333349.
    return f"{1.0 / n_left:0.10f}"


def kube_proxy_restore() -> str:
    """`iptables-restore --noflush` input: kubelet + kube-proxy + kindnet rules of a node."""
    nat_chains = ["KIND-MASQ-AGENT", "KUBE-KUBELET-CANARY", "KUBE-MARK-DROP", "KUBE-MARK-MASQ",
                  "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-PROXY-CANARY", "KUBE-SERVICES"]
    svc_rules: list[str] = []
    chain_rules: list[str] = []
    for svc in sorted(SERVICES, key=lambda s: s.name):
        name = f"{svc.namespace}/{svc.name}:{svc.port_name}"
        chain = svc_chain(svc)
        nat_chains.append(chain)
        svc_rules.append(
            f'-A KUBE-SERVICES -d {svc.cluster_ip}/32 -p tcp -m comment --comment "{name} cluster IP" '
            f"-m tcp --dport {svc.port} -j {chain}"
        )
        chain_rules.append(
            f'-A {chain} ! -s {CLUSTER_CIDR} -d {svc.cluster_ip}/32 -p tcp -m comment --comment '
            f'"{name} cluster IP" -m tcp --dport {svc.port} -j KUBE-MARK-MASQ'
        )
        eps = svc.endpoints()
        for i, (_, pod) in enumerate(eps):
            endpoint = f"{pod.ip}:{svc.target_port}"
            sep = sep_chain(svc, endpoint)
            nat_chains.append(sep)
            left = len(eps) - i
            stat = f" -m statistic --mode random --probability {_probability(left)}" if left > 1 else ""
            chain_rules.append(f'-A {chain} -m comment --comment "{name} -> {endpoint}"{stat} -j {sep}')
            chain_rules.append(f'-A {sep} -s {pod.ip}/32 -m comment --comment "{name}" -j KUBE-MARK-MASQ')
            chain_rules.append(
                f'-A {sep} -p tcp -m comment --comment "{name}" -m tcp -j DNAT --to-destination {endpoint}'
            )
    svc_rules.append(
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the '
        'last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS'
    )
    lines = ["*mangle"]
    lines += [f":{c} - [0:0]" for c in ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY", "KUBE-PROXY-CANARY")]
    lines += ["COMMIT", "*nat"]
    lines += [f":{c} - [0:0]" for c in nat_chains]
    lines += [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        (
            '-A POSTROUTING -m addrtype ! --dst-type LOCAL -m comment --comment "kind-masq-agent: '
            "ensure nat POSTROUTING directs all non-LOCAL destination traffic to our custom "
            'KIND-MASQ-AGENT chain" -j KIND-MASQ-AGENT'
        ),
        (
            f'-A KIND-MASQ-AGENT -d {CLUSTER_CIDR} -m comment --comment "kind-masq-agent: local '
            'traffic is not subject to MASQUERADE" -j RETURN'
        ),
        (
            '-A KIND-MASQ-AGENT -m comment --comment "kind-masq-agent: outbound traffic is '
            'subject to MASQUERADE (must be last in chain)" -j MASQUERADE'
        ),
        "-A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000",
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
        (
            '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
            "-j MASQUERADE --random-fully"
        ),
    ]
    lines += svc_rules + chain_rules
    lines += ["COMMIT", "*filter"]
    lines += [f":{c} - [0:0]" for c in ("KUBE-EXTERNAL-SERVICES", "KUBE-FIREWALL", "KUBE-FORWARD",
                                          "KUBE-KUBELET-CANARY", "KUBE-NODEPORTS", "KUBE-PROXY-CANARY",
                                          "KUBE-PROXY-FIREWALL", "KUBE-SERVICES")]
    lines += [
        '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
        '-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
        '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
        "-A INPUT -j KUBE-FIREWALL",
        '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
        '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
        '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
        '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
        '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        "-A OUTPUT -j KUBE-FIREWALL",
        '-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP',
        '-A KUBE-FIREWALL -m comment --comment "kubernetes firewall for dropping marked packets" -m mark --mark 0x8000/0x8000 -j DROP',
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT',
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- istio-cni, node


def istio_node_iptables(node: NodeSpec) -> list[Argv]:
    """istio-cni's host-netns iptables commands, in issue order (§2.3, Sept-2022 list)."""
    zveth, zip_, host_ip = node.ztunnel.host_veth, node.ztunnel.ip, node.host_ip
    cmds: list[str] = []
    for table, chain in (("nat", "PREROUTING"), ("nat", "POSTROUTING"), ("mangle", "PREROUTING"),
                         ("mangle", "POSTROUTING"), ("mangle", "OUTPUT"), ("mangle", "INPUT"),
                         ("mangle", "FORWARD")):
        cmds.append(f"-t {table} -N ztunnel-{chain}")
        cmds.append(f"-t {table} -I {chain} -j ztunnel-{chain}")
    cmds += [
        # appendRules
        f"-t mangle -A ztunnel-PREROUTING -i {INBOUND_TUN} -j MARK --set-mark 0x200/0x200",
        f"-t mangle -A ztunnel-PREROUTING -i {INBOUND_TUN} -j RETURN",
        f"-t mangle -A ztunnel-PREROUTING -i {OUTBOUND_TUN} -j MARK --set-mark 0x200/0x200",
        f"-t mangle -A ztunnel-PREROUTING -i {OUTBOUND_TUN} -j RETURN",
        "-t mangle -A ztunnel-FORWARD -m mark --mark 0x220/0x220 -j CONNMARK --save-mark --nfmask 0x220 --ctmask 0x220",
        "-t mangle -A ztunnel-INPUT -m mark --mark 0x220/0x220 -j CONNMARK --save-mark --nfmask 0x220 --ctmask 0x220",
        "-t mangle -A ztunnel-FORWARD -m mark --mark 0x210/0x210 -j CONNMARK --save-mark --nfmask 0x210 --ctmask 0x210",
        "-t mangle -A ztunnel-INPUT -m mark --mark 0x210/0x210 -j CONNMARK --save-mark --nfmask 0x210 --ctmask 0x210",
        f"-t mangle -A ztunnel-OUTPUT --source {host_ip} -j MARK --set-mark 0x220",
        "-t nat -A ztunnel-PREROUTING -m mark --mark 0x100/0x100 -j ACCEPT",
        "-t nat -A ztunnel-POSTROUTING -m mark --mark 0x100/0x100 -j ACCEPT",
        # appendRules2
        f"-t mangle -A ztunnel-PREROUTING -p udp -m udp --dport {GENEVE_DPORT} -j RETURN",
        "-t mangle -A ztunnel-PREROUTING -m connmark --mark 0x220/0x220 -j MARK --set-mark 0x200/0x200",
        "-t mangle -A ztunnel-PREROUTING -m mark --mark 0x200/0x200 -j RETURN",
        f"-t mangle -A ztunnel-PREROUTING ! -i {zveth} -m connmark --mark 0x210/0x210 -j MARK --set-mark 0x040/0x040",
        "-t mangle -A ztunnel-PREROUTING -m mark --mark 0x040/0x040 -j RETURN",
        f"-t mangle -A ztunnel-PREROUTING -i {zveth} ! --source {zip_} -j MARK --set-mark 0x210/0x210",
        "-t mangle -A ztunnel-PREROUTING -m mark --mark 0x200/0x200 -j RETURN",
        f"-t mangle -A ztunnel-PREROUTING -i {zveth} -j MARK --set-mark 0x220/0x220",
        "-t mangle -A ztunnel-PREROUTING -p udp -j MARK --set-mark 0x220/0x220",
        "-t mangle -A ztunnel-PREROUTING -m mark --mark 0x200/0x200 -j RETURN",
        f"-t mangle -A ztunnel-PREROUTING -p tcp -m set --match-set {IPSET} src -j MARK --set-mark 0x100/0x100",
    ]
    return [("iptables", *c.split()) for c in cmds]


def istio_node_sysctls(node: NodeSpec) -> list[tuple[str, str]]:
    """istio-cni's host sysctls (§2.3) plus the per-pod ones of enrolled pods."""
    zveth = node.ztunnel.host_veth
    out = [
        ("net.ipv4.conf.default.rp_filter", "0"),
        ("net.ipv4.conf.all.rp_filter", "0"),
        (f"net.ipv4.conf.{zveth}.rp_filter", "0"),
        (f"net.ipv4.conf.{zveth}.accept_local", "1"),
        (f"net.ipv4.conf.{INBOUND_TUN}.rp_filter", "0"),
        (f"net.ipv4.conf.{INBOUND_TUN}.accept_local", "1"),
        (f"net.ipv4.conf.{OUTBOUND_TUN}.rp_filter", "0"),
        (f"net.ipv4.conf.{OUTBOUND_TUN}.accept_local", "1"),
        # the CNI plugin's cmdAdd writes /proc/sys/net/ipv4/conf/<IfName=eth0>/rp_filter
        # from the host netns (cni/pkg/plugin/ambient.go), i.e. the node's own eth0.
        ("net.ipv4.conf.eth0.rp_filter", "0"),
    ]
    out += [(f"net.ipv4.conf.{p.host_veth}.rp_filter", "0") for p in node.apps if p.ambient]
    return out


def istio_node_routes(node: NodeSpec) -> list[str]:
    """istio-cni's tables 100/101/102 and ip rules 100-103, as `ip -batch` lines."""
    zveth, zip_, host_ip = node.ztunnel.host_veth, node.ztunnel.ip, node.host_ip
    lines = [
        f"route add table 101 {zip_} dev {zveth} scope link",
        f"route add table 101 0.0.0.0/0 via {OUTBOUND_TUN_ZTUNNEL} dev {OUTBOUND_TUN}",
        f"route add table 102 {zip_} dev {zveth} scope link",
        f"route add table 102 0.0.0.0/0 via {zip_} dev {zveth} onlink",
        f"route add table 100 {zip_} dev {zveth} scope link",
        "rule add priority 100 fwmark 0x200/0x200 goto 32766",
        "rule add priority 101 fwmark 0x100/0x100 lookup 101",
        "rule add priority 102 fwmark 0x040/0x040 lookup 102",
        "rule add priority 103 table 100",
    ]
    for pod in node.apps:
        if pod.ambient:
            lines.append(
                f"route add table 100 {pod.ip}/32 via {INBOUND_TUN_ZTUNNEL} dev {INBOUND_TUN} src {host_ip}"
            )
    return lines


def istio_node_ipset(node: NodeSpec) -> list[Argv]:
    """`ipset create` + one `ipset add ... comment <UID>` per enrolled pod.

    The seed's `ipset list` on ambient-worker2 shows 5 members and omits details-v1
    (10.244.1.9), although details is an ambient pod like the others (probably captured
    while it was being enrolled). The lab is the healthy reference, so every enrolled pod
    is a member, details included. (The seed's header also shows no `comment` flag: the
    2022 agent stored UIDs only in its log; the lab follows the 1.18+ agent and stores the
    UID as the member comment, which analyzers use to cross-check pods.)
    """
    cmds: list[Argv] = [("ipset", "create", IPSET, "hash:ip", "comment")]
    for pod in node.apps:
        if pod.ambient:
            cmds.append(("ipset", "add", IPSET, pod.ip, "comment", pod.pod_uid))
    return cmds


# --------------------------------------------------------------------------- ztunnel netns


def ztunnel_iptables(node: NodeSpec) -> list[Argv]:
    """The ztunnel pod's init-script iptables commands (§2.4 + Sept-2022 extras)."""
    zip_ = node.ztunnel.ip
    cmds = [
        "-t mangle -F PREROUTING",
        "-t nat -F OUTPUT",
        f"-t mangle -A PREROUTING -p tcp -i p{INBOUND_TUN} -m tcp --dport 15008 -j TPROXY --tproxy-mark 0x400/0xfff --on-port 15008 --on-ip 127.0.0.1",
        f"-t mangle -A PREROUTING -p tcp -i p{OUTBOUND_TUN} -j TPROXY --tproxy-mark 0x400/0xfff --on-port 15001 --on-ip 127.0.0.1",
        f"-t mangle -A PREROUTING -p tcp -i p{INBOUND_TUN} -j TPROXY --tproxy-mark 0x400/0xfff --on-port 15006 --on-ip 127.0.0.1",
        f"-t mangle -A PREROUTING -p tcp -i eth0 ! --dst {zip_} -j MARK --set-mark 0x4d3/0xfff",
        "-t nat -A OUTPUT -p tcp --dport 15088 -j REDIRECT --to-port 15008",
    ]
    return [("iptables", *c.split()) for c in cmds]


def ztunnel_routes(node: NodeSpec) -> list[str]:
    """The ztunnel netns' ip rules 20000-20003 and tables 100/101/102 (`ip -batch` lines)."""
    host_ip = node.host_ip
    return [
        "rule add priority 20000 fwmark 0x400/0xfff lookup 100",
        "rule add priority 20001 fwmark 0x401/0xfff lookup 101",
        "rule add priority 20002 fwmark 0x402/0xfff lookup 102",
        "rule add priority 20003 fwmark 0x4d3/0xfff lookup 100",
        "route add local 0.0.0.0/0 dev lo table 100",
        f"route add table 101 0.0.0.0/0 via {OUTBOUND_TUN_HOST} dev p{OUTBOUND_TUN}",
        f"route add table 102 0.0.0.0/0 via {INBOUND_TUN_HOST} dev p{INBOUND_TUN}",
        f"route add table 101 {host_ip}/32 dev eth0 scope link",
        f"route add table 102 {host_ip}/32 dev eth0 scope link",
    ]


def ztunnel_sysctls() -> list[tuple[str, str]]:
    """rp_filter off everywhere the tunnels and spoofed returns arrive (§2.4)."""
    return [
        (f"net.ipv4.conf.p{OUTBOUND_TUN}.rp_filter", "0"),
        (f"net.ipv4.conf.p{INBOUND_TUN}.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.eth0.rp_filter", "0"),
    ]
