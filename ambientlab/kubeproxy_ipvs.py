"""kube-proxy's IPVS mode for the seed lab: the parts the kernel here can hold, and the table.

kube-proxy in IPVS mode (kubernetes/kubernetes `pkg/proxy/ipvs/proxier.go`) writes:

* a dummy device `kube-ipvs0` (left DOWN) holding every ClusterIP as a /32, so the kernel
  adds a `local` route for each (table local) and a packet for a ClusterIP is delivered
  locally, where IPVS takes it at LOCAL_IN;
* ipsets instead of per-Service chains: `KUBE-CLUSTER-IP` (hash:ip,port: `VIP,tcp:PORT`),
  `KUBE-LOOP-BACK` (hash:ip,port,ip: `EP,tcp:PORT,EP`, hairpin) and `KUBE-NODE-PORT-TCP`
  (bitmap:port);
* iptables companion rules in the nat table: `KUBE-SERVICES` marks traffic from outside the
  cluster CIDR to a ClusterIP for masquerade and ACCEPTs it (no DNAT: IPVS does that),
  `KUBE-NODE-PORT` marks NodePort traffic, `KUBE-POSTROUTING` masquerades hairpin traffic
  (`KUBE-LOOP-BACK dst,dst,src`) and marked traffic (0x4000), as the proxier's
  `writeIptablesRules` and its test goldens spell them;
* the virtual services themselves (netlink), which `ipvsadm -Ln --exact` prints.

This kernel has no IPVS (no `ip_vs` module: `ipvsadm` fails with "Can't initialize ipvs:
Protocol not available"), so the virtual services cannot be created. `ipvsadm_table()` prints
the table kube-proxy would have made, in ipvsadm 1.31's format, and `shim_dir()` holds an
`ipvsadm` executable that prints it for the node it runs in: the lab's collection then reads
it through ambientctl's own collector, like every other file. Everything else is real.
"""

from __future__ import annotations

import os
from pathlib import Path

from ambientlab.topology import CLUSTER_CIDR, NODES, SERVICES, NodeSpec

__all__ = ["NODE_PORTS", "iptables_restore", "ipset_commands", "ipvs_device_batch",
           "ipvsadm_table", "write_shim"]

MASQ_MARK = "0x4000"
# NodePorts this lab gives (Service name -> port); the seed's Services are ClusterIP only,
# kube-proxy opens a NodePort on every node address (nodePortAddresses unset).
NODE_PORTS = {"productpage": 30080}


def _services() -> list[tuple[str, str, int, int, list[str], int | None]]:
    """(namespace/name:port, ClusterIP, port, target port, endpoint IPs, NodePort)."""
    return [(f"{s.namespace}/{s.name}:{s.port_name}", s.cluster_ip, s.port, s.target_port,
             [p.ip for _n, p in s.endpoints()], NODE_PORTS.get(s.name))
            for s in sorted(SERVICES, key=lambda s: s.cluster_ip)]


def ipvs_device_batch() -> list[str]:
    """`ip -batch` lines: kube-ipvs0 (DOWN, as kube-proxy leaves it) with every ClusterIP.

    kube-proxy makes it a `dummy`; this kernel has no dummy driver, so an `ifb` (also a
    device without a peer or ports that never forwards) stands in, with an alias saying so.
    What matters to the datapath is the same: addresses on it get `local` routes.
    """
    lines = ["link add kube-ipvs0 type ifb",
             "link set kube-ipvs0 alias 'ambientlab stand-in for the dummy device kube-ipvs0'"]
    lines += [f"addr add {vip}/32 dev kube-ipvs0" for _n, vip, *_ in _services()]
    return lines


def ipset_commands() -> str:
    """`ipset restore` input: the sets the proxier's iptables rules match."""
    out = ["create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536",
           "create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536",
           "create KUBE-NODE-PORT-TCP bitmap:port range 0-65535"]
    for _name, vip, port, target, eps, node_port in _services():
        out.append(f"add KUBE-CLUSTER-IP {vip},tcp:{port}")
        out += [f"add KUBE-LOOP-BACK {ep},tcp:{target},{ep}" for ep in eps]
        if node_port is not None:
            out.append(f"add KUBE-NODE-PORT-TCP {node_port}")
    return "\n".join(out) + "\n"


def iptables_restore() -> str:
    """`iptables-restore --noflush` input: kube-proxy's IPVS-mode nat rules (and its
    mangle canaries), in the order `writeIptablesRules` writes them."""
    lines = ["*mangle"]
    lines += [f":{c} - [0:0]" for c in ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY",
                                        "KUBE-PROXY-CANARY")]
    lines += ["COMMIT", "*nat"]
    lines += [f":{c} - [0:0]" for c in ("KUBE-KUBELET-CANARY", "KUBE-LOAD-BALANCER",
                                        "KUBE-MARK-MASQ", "KUBE-NODE-PORT", "KUBE-POSTROUTING",
                                        "KUBE-PROXY-CANARY", "KUBE-SERVICES")]
    lines += [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        "-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ",
        f"-A KUBE-MARK-MASQ -j MARK --set-xmark {MASQ_MARK}/{MASQ_MARK}",
        '-A KUBE-NODE-PORT -p tcp -m comment --comment "Kubernetes nodeport TCP port for '
        'masquerade purpose" -m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ',
        '-A KUBE-POSTROUTING -m comment --comment "Kubernetes endpoints dst ip:port, source ip '
        'for solving hairpin purpose" -m set --match-set KUBE-LOOP-BACK dst,dst,src '
        "-j MASQUERADE",
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --set-xmark {MASQ_MARK}/0x0",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
        f'-A KUBE-SERVICES ! -s {CLUSTER_CIDR} -m comment --comment "Kubernetes service '
        'cluster ip + port for masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst '
        "-j KUBE-MARK-MASQ",
        "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT",
        "-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT",
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"


def ipvsadm_table(node: NodeSpec) -> str:
    """`ipvsadm -Ln --exact` of `node` as kube-proxy would have programmed it (rr, Masq)."""
    out = ["IP Virtual Server version 1.2.1 (size=4096)",
           "Prot LocalAddress:Port Scheduler Flags",
           "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"]
    entries: list[tuple[str, int, int, list[str]]] = []
    for _name, vip, port, target, eps, node_port in _services():
        entries.append((vip, port, target, eps))
        if node_port is not None:
            entries.append((node.ip, node_port, target, eps))
    for addr, port, target, eps in entries:
        out.append(f"TCP  {addr}:{port} rr")
        out += [f"  -> {f'{ep}:{target}':<28}Masq    1      0          0" for ep in eps]
    return "\n".join(out) + "\n"


def write_shim(directory: Path, netns_of_node: dict[str, str]) -> Path:
    """An `ipvsadm` that prints `ipvsadm_table()` for the node netns it runs in (and fails
    as the real one does without IPVS elsewhere); returns the directory to put on PATH."""
    directory.mkdir(parents=True, exist_ok=True)
    for node in NODES:
        netns = netns_of_node.get(node.name)
        if netns is not None:
            (directory / f"table-{netns}.txt").write_text(ipvsadm_table(node))
    shim = directory / "ipvsadm"
    shim.write_text(
        "#!/bin/sh\n"
        "# ambientlab: this kernel has no IPVS; print the table kube-proxy would have made.\n"
        f'table="{directory}/table-$(ip netns identify $$).txt"\n'
        '[ "$*" = "-Ln --exact" ] && [ -f "$table" ] && exec cat "$table"\n'
        'echo "Can\'t initialize ipvs: Protocol not available" >&2\n'
        "exit 2\n")
    os.chmod(shim, 0o755)
    return directory
