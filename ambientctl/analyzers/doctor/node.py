"""AMB4xx: node-wide hazards - other components' rules, sysctls and backends that break
ambient without touching Istio's own state (istio-datapath.md §5).
"""

from __future__ import annotations

from collections.abc import Iterator

from ambientctl.analyzers import netfilter, routing
from ambientctl.analyzers.doctor import sim
from ambientctl.analyzers.doctor.facts import (
    Context,
    NodeView,
    file_of,
    ipset_named,
    pod_device,
    pod_name,
    scan_rules,
    v4,
)
from ambientctl.analyzers.doctor.issues import issue_at
from ambientctl.analyzers.doctor.legacy import (
    IPSET,
    OUTBOUND_MARK,
    TUN_IN,
    TUN_OUT,
    ZT_TUN_IN,
    ZT_TUN_OUT,
    _ztunnel_veth,
)
from ambientctl.analyzers.doctor.registry import Issue, Skip, check
from ambientctl.analyzers.findings import Evidence, Severity
from ambientctl.analyzers.packet import Packet
from ambientctl.model import IPAddress, NetNamespace, RouteType, Table

# Mark bits the node-level design sets and tests in the node's netns (§2.2): 0x100 outbound,
# 0x200 skip, 0x210/0x220 (bits 0x010/0x020 with skip), 0x040 proxy return.
LEGACY_HOST_BITS = 0x100 | 0x200 | 0x040 | 0x010 | 0x020


def _enrolled_in_ipset(node: NodeView) -> list[tuple[str, IPAddress]]:
    s = ipset_named(node.host, IPSET)
    out = []
    for pod in node.expected:
        ip = v4(pod)
        if ip is not None and (s is None or s.lookup(ip) is not None):
            out.append((pod_name(pod), ip))
    return out


def _rp_sample_ends(ctx: Context, node: NodeView) -> tuple[IPAddress, list[tuple[str, IPAddress]]]:
    """(a remote address, the enrolled pods): the ends of the rp_filter sample packets."""
    remote = ctx.remote_ip(node.name)
    pods = _enrolled_in_ipset(node)
    if remote is None or not pods:
        raise Skip("no enrolled pod or no remote address to build sample packets from")
    return remote, pods


# --------------------------------------------------------------------------- kube-proxy


@check("AMB401", title="Service ClusterIP is DNATed before ztunnel sees it",
       severity=Severity.ERROR, area="node", scope="node", modes=("legacy",),
       requires=("host:iptables", "host:ipset", "host:ip-route", "cluster:pods",
                 "cluster:services", "cluster:namespaces"),
       remediation="Restore the order istio-cni set up: the nat `ztunnel-PREROUTING` jump must be "
                   "rule 1 of nat PREROUTING, ahead of KUBE-SERVICES (restart the istio-cni agent; "
                   "by hand `iptables -t nat -D PREROUTING -j ztunnel-PREROUTING; iptables -t nat "
                   "-I PREROUTING 1 -j ztunnel-PREROUTING`).")
def service_vip_lost(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """A marked SYN to a ClusterIP must be ACCEPTed in nat before kube-proxy DNATs it."""
    host = node.host
    assert host is not None
    pods = _enrolled_in_ipset(node)
    if not pods:
        raise Skip(f"no enrolled pod in ipset {IPSET} on {node.name} to send from")
    services = list(ctx.services_with_ports())
    if not services:
        raise Skip("no ClusterIP Service in cluster/services.json to send to")
    nat_text = " ".join(text for t in host.tables() if t.name == "nat"
                        for ch in (t.chains.get("KUBE-SERVICES"),) if ch is not None
                        for _line, text in (ch.raw_rules or tuple((r.source.line or 0, r.text)
                                                                  for r in ch.rules)))
    services.sort(key=lambda s: f"{s[1]}/32" not in nat_text)  # kube-proxy's ones first
    name, src = pods[0]
    dev = pod_device(host, src)
    if dev is None:
        raise Skip(f"no main-table route to {src} ({name}) names its veth")
    svc, vip, port = services[0]
    pkt = Packet(family=4, proto="tcp", src=src, dst=vip, sport=40000, dport=port, iif=dev)
    res = sim.hook(host, "prerouting", pkt)
    if res.verdict == "insufficient-info":
        raise Skip(f"cannot simulate nat PREROUTING: {res.reason} ({res.culprit})")
    if not res.packet.mark & OUTBOUND_MARK:
        raise Skip(f"the sample SYN from {name} is not marked 0x100 (AMB218 reports why)")
    if res.packet.dst == vip:
        return
    ev: list[Evidence] = []
    dnat = sim.acting_step(res, "nat")
    nat_pre = [st for st in res.steps if st.table.name == "nat" and st.chain == "PREROUTING"]
    if nat_pre:
        ev.append(Evidence.of(nat_pre[0].source, "first nat PREROUTING rule that acts"))
    if dnat is not None:
        ev.append(Evidence.of(dnat.source, dnat.summary))
    jump = None
    for t in host.tables():
        if t.name == "nat" and "PREROUTING" in t.chains:
            jump = next((r for r in t.chains["PREROUTING"].rules
                         if r.target == "ztunnel-PREROUTING"), None)
            if jump is not None:
                break
    if jump is not None:
        ev.append(Evidence.of(jump.source, f"the ambient jump is rule #{jump.position}, too late"))
    else:
        ev.append(Evidence.missing(file_of(host, "iptables"),
                                   "`-A PREROUTING -j ztunnel-PREROUTING` in table nat"))
    yield Issue(message=f"on node {node.name}, a SYN from ambient pod {name} to Service "
                f"{svc.namespace}/{svc.name} ({vip}:{port}) is DNATed to {res.packet.dst_addr} by "
                "kube-proxy before the ambient nat ACCEPT: ztunnel sees a pod IP, not the "
                "Service (Service-level policy and waypoints are bypassed)",
                evidence=tuple(ev), node=node.name, pod=name, netns=host.id)


@check("AMB402", title="kube-proxy IPVS addresses in the local table", severity=Severity.ERROR,
       area="node", scope="node", modes=("legacy",), requires=("host:ip-route",),
       remediation="Node-level ambient does not work with kube-proxy in IPVS mode (istio/istio"
                   "#46354): `ip rule 0 lookup local` answers before rules 100-103. Switch "
                   "kube-proxy to iptables mode or upgrade to in-pod redirection (Istio >= 1.21).")
def ipvs_local(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """ClusterIPs bound to kube-ipvs0 are `local` routes: Service traffic never reaches 101."""
    host = node.host
    assert host is not None
    vips = {vip for _s, vip, _p in ctx.services_with_ports()}
    hits = [r for r in host.routes or () if r.table == "local" and r.type == RouteType.LOCAL
            and (r.dev == "kube-ipvs0" or (r.dst.num_addresses == 1
                                            and r.dst.network_address in vips))]
    if hits:
        yield Issue(message=f"node {node.name} has {len(hits)} Service address(es) in the local "
                    "table (kube-proxy IPVS): connections from ambient pods to them are delivered "
                    "to the node by `ip rule 0` and never reach ztunnel",
                    evidence=tuple(Evidence.of(r.source) for r in hits[:5]),
                    node=node.name, netns=host.id)


# --------------------------------------------------------------------------- rp_filter


def _rp_issues(ns: NetNamespace, node: NodeView, samples: list[tuple[str, IPAddress, IPAddress,
               int, str]], what: str) -> Iterator[Issue]:
    for iif, src, dst, mark, purpose in samples:
        if ns.link(iif) is None:
            continue
        res = routing.validate_source(ns, src=src, dst=dst, iif=iif, mark=mark)
        if res.ok:
            continue
        ev = tuple(Evidence.of(s, "effective rp_filter = max(all, device)") for s in res.evidence)
        if not ev:
            ev = (Evidence.missing(file_of(ns, "sysctl"), f"net.ipv4.conf.{iif}.rp_filter"),)
        yield issue_at(node.name, ns, f"{what} on node {node.name} (netns {ns.id}) drops "
                       f"{purpose} arriving on {iif} (from {src} to {dst}): {res.summary}", ev,
                       remediation=f"`sysctl -w net.ipv4.conf.{iif.replace('.', '/')}"
                                   ".rp_filter=0` (and net.ipv4.conf.all.rp_filter=0) in that "
                                   "netns; find what resets it (node tuning, CNI) - istio-cni "
                                   "writes 0 only once")


@check("AMB403", title="rp_filter drops ambient traffic on the node", severity=Severity.ERROR,
       area="node", scope="node", modes=("legacy",),
       requires=("host:sysctl", "host:ip-route", "host:ip-rule", "host:ip-addr", "cluster:pods",
                 "cluster:namespaces"),
       remediation="Set rp_filter to 0 where istio-cni does: `sysctl -w "
                   "net.ipv4.conf.all.rp_filter=0` and on istioin, istioout, the ztunnel veth "
                   "and every ambient pod's veth.")
def node_rp_filter(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """Reverse-path validation of the packets the node-level design sends through odd paths."""
    host = node.host
    assert host is not None
    remote, pods = _rp_sample_ends(ctx, node)
    samples: list[tuple[str, IPAddress, IPAddress, int, str]] = []
    for name, ip in pods:
        dev = pod_device(host, ip)
        if dev:
            samples.append((dev, ip, remote, OUTBOUND_MARK, f"outbound TCP of pod {name}"))
    local = pods[0][1]
    found = _ztunnel_veth(node)
    if found is not None:
        samples.append((found[0], remote, local, 0x210,
                        "ztunnel's connections to local pods with the client's address"))
    samples.append((TUN_OUT, remote, local, 0x200, "replies from ztunnel's outbound listener"))
    samples.append((TUN_IN, local, remote, 0x200, "replies from ztunnel's inbound listeners"))
    yield from _rp_issues(host, node, samples, "the node")


@check("AMB408", title="rp_filter drops ambient traffic in the ztunnel pod",
       severity=Severity.ERROR, area="node", scope="node", modes=("legacy",),
       requires=("ztunnel:sysctl", "ztunnel:ip-route", "ztunnel:ip-rule", "ztunnel:ip-addr",
                 "cluster:pods", "cluster:namespaces"),
       remediation="In the ztunnel pod's netns set rp_filter 0 on all, pistioin, pistioout and "
                   "eth0 (its init step does; restart the ztunnel pod).")
def ztunnel_rp_filter(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """Packets decapsulated from the tunnels carry pod sources the ztunnel netns routes via eth0."""
    zt = node.ztunnel_ns
    assert zt is not None
    remote, pods = _rp_sample_ends(ctx, node)
    local = pods[0][1]
    samples = [(ZT_TUN_OUT, local, remote, 0, f"outbound TCP of pod {pods[0][0]}"),
               (ZT_TUN_IN, remote, local, 0, f"inbound TCP to pod {pods[0][0]}")]
    yield from _rp_issues(zt, node, samples, "the ztunnel pod")


# --------------------------------------------------------------------------- marks, backends


def _affected_bits(rule_opts: tuple[str, ...] | None) -> int:
    if not rule_opts or not rule_opts[0]:
        return 0
    try:
        value, mask = netfilter.parse_mark(rule_opts[0])
    except ValueError:
        return 0
    return value | mask


@check("AMB404", title="Another component sets the ambient mark bits", severity=Severity.ERROR,
       area="node", scope="node", modes=("legacy",), requires=("host:iptables",),
       remediation="Node-level ambient owns fwmark bits 0x100/0x200/0x040/0x010/0x020 on the "
                   "node; move the other component to other bits (Cilium uses 0xf00 and is not "
                   "supported with node-level ambient) or upgrade to in-pod redirection.")
def mark_collision(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """A foreign MARK/CONNMARK/TPROXY that writes ambient bits misroutes or un-skips packets."""
    host = node.host
    assert host is not None
    hits: list[Evidence] = []
    # Only rules that write marks ("-j MARK", "-j CONNMARK", "-j TPROXY", nft "mark set"),
    # not kube-proxy's 150k "-j KUBE-MARK-MASQ" jumps.
    for table, chain, rule in scan_rules(host, "-j mark ", "-j connmark ", "-j tproxy ",
                                         "mark set", "tproxy to",
                                         chains=lambda n: not n.startswith("ztunnel-")):
        bits = 0
        if rule.target == "MARK":
            bits = _affected_bits(rule.target_option("--set-xmark", "--set-mark", "--or-mark",
                                                     "--xor-mark"))
        elif rule.target == "CONNMARK":
            if rule.target_option("--restore-mark") is not None:
                nf = rule.target_option("--nfmask")
                bits = netfilter.parse_mark(nf[0])[0] if nf else 0xFFFFFFFF
            else:
                bits = _affected_bits(rule.target_option("--set-xmark", "--set-mark"))
        elif rule.target == "TPROXY":
            bits = _affected_bits(rule.target_option("--tproxy-mark"))
        if bits & LEGACY_HOST_BITS:
            hits.append(Evidence.of(rule.source, f"{table.backend} {table.name}/{chain.name} "
                                    f"writes bits {bits & LEGACY_HOST_BITS:#x}"))
    for r in host.rules or ():
        if r.fwmark is None or 100 <= r.priority <= 103 or r.priority >= 32766:
            continue
        if r.fwmask & LEGACY_HOST_BITS and r.priority < 103:
            hits.append(Evidence.of(r.source, f"ip rule {r.priority} routes on ambient mark bits "
                                    "before rules 100-103"))
    if hits:
        yield Issue(message=f"on node {node.name}, {len(hits)} rule(s) of another component "
                    f"write or route on the mark bits node-level ambient uses "
                    f"({LEGACY_HOST_BITS:#x}): captured traffic can be misrouted or escape",
                    evidence=tuple(hits[:8]), node=node.name, netns=host.id)


def _is_ambient_chain(name: str) -> bool:
    return name.startswith("ztunnel-") or name in ("ISTIO_POSTRT", "ISTIO_PRERT", "ISTIO_OUTPUT")


@check("AMB405", title="Rules split between the iptables-legacy and iptables-nft backends",
       severity=Severity.ERROR, area="node", scope="node", requires=("host:iptables",),
       remediation="Make istio-cni use the backend kube-proxy uses (Istio >= 1.22 detects it, "
                   "#49703); remove the stale tables of the other backend "
                   "(`iptables-legacy-save`/`iptables-nft-save` show them) and restart istio-cni.")
def backend_split(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """Both backends hook the same points: an ACCEPT in one does not stop the other's DNAT."""
    host = node.host
    assert host is not None
    ambient: dict[str, Table] = {}
    kube: dict[str, Table] = {}
    for t in host.tables():
        if t.backend not in ("iptables-legacy", "iptables-nft"):
            continue
        # By name, building a chain only to ask whether it holds rules, and only until this
        # backend has both answers: a kube-proxy node declares thousands of KUBE- chains
        # (building every one of them was 9% of doctor at 50 nodes).
        chains, backend = t.chains, t.backend
        for name in chains:
            if backend not in ambient and _is_ambient_chain(name) and len(chains[name]):
                ambient[backend] = t
            if backend not in kube and name.startswith("KUBE-") and len(chains[name]):
                kube[backend] = t
            if backend in ambient and backend in kube:
                break
    if not ambient or not kube:
        return
    if set(ambient).isdisjoint(kube):
        a = min(ambient)
        k = min(kube)
        yield Issue(message=f"on node {node.name} the ambient rules are in {a} while kube-proxy's "
                    f"are in {k}: each backend's ACCEPT only ends its own tables, so kube-proxy "
                    "DNATs and filters captured traffic regardless",
                    evidence=(Evidence.of(ambient[a].source, f"ambient chains in {a}"),
                              Evidence.of(kube[k].source, f"kube-proxy chains in {k}")),
                    node=node.name, netns=host.id)
    elif len(ambient) > 1:
        yield Issue(message=f"on node {node.name} ambient chains exist in both iptables backends "
                    f"({', '.join(sorted(ambient))}): one copy is stale",
                    evidence=tuple(Evidence.of(t.source, f"ambient chains in {b}")
                                   for b, t in sorted(ambient.items())),
                    node=node.name, netns=host.id)


# --------------------------------------------------------------------------- coverage


@check("AMB406", title="Ambient pods on a node without ambient redirection",
       severity=Severity.ERROR, area="node", scope="node", modes=("none",),
       requires=("host:iptables", "cluster:pods", "cluster:namespaces"),
       remediation="Check the istio-cni agent on the node (`kubectl -n istio-system logs -l "
                   "k8s-app=istio-cni-node --field-selector spec.nodeName=<node>`): node "
                   "initialisation failed (e.g. istio/istio#46163) or it does not run there.")
def node_not_initialised(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """Neither node-level nor in-pod state: every ambient pod here bypasses the mesh."""
    host = node.host
    assert host is not None
    if not node.expected:
        return
    names = ", ".join(pod_name(p) for p in node.expected[:6])
    ev = [Evidence.missing(file_of(host, "iptables"),
                           "chains ztunnel-PREROUTING (node-level) or ISTIO_POSTRT (in-pod)")]
    if host.ipsets is not None:
        ev.append(Evidence.missing(file_of(host, "sets"),
                                   f"set {IPSET} or istio-inpod-probes-v4"))
    ev.append(Evidence.of(node.expected[0].source, "an ambient pod on this node"))
    yield Issue(message=f"node {node.name} runs {len(node.expected)} ambient pod(s) ({names}) but "
                "holds no ambient redirection state (node-level or in-pod): their traffic "
                "bypasses ztunnel", evidence=tuple(ev), node=node.name, netns=host.id)


@check("AMB407", title="No ztunnel pod on a node that has ambient pods",
       severity=Severity.ERROR, area="node", scope="node",
       requires=("cluster:pods", "cluster:namespaces"),
       remediation="Check the ztunnel DaemonSet (`kubectl -n istio-system get ds ztunnel`, its "
                   "nodeSelector/tolerations, and the pod's events on that node).")
def no_ztunnel(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """Without ztunnel, captured traffic goes to listeners that do not exist."""
    if not node.expected or node.ztunnel_pod is not None:
        return
    others = [p for p in node.pods
              if p.name.startswith("ztunnel-") or p.labels.get("app") == "ztunnel"]
    ev = [Evidence.missing("cluster/pods.json",
                           f"a Running ztunnel pod with spec.nodeName={node.name}")]
    ev += [Evidence.of(p.source, f"ztunnel pod in phase {p.phase}") for p in others[:2]]
    yield Issue(message=f"node {node.name} runs {len(node.expected)} ambient pod(s) but no "
                "running ztunnel pod: captured connections have no proxy to go to",
                evidence=tuple(ev), node=node.name,
                netns=node.host.id if node.host else None)
