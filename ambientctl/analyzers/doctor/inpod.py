"""AMB3xx: in-pod redirection, Istio >= 1.21 (istio-datapath.md §3, §5 "Modern").

Each ambient pod's own netns holds nat/mangle `ISTIO_PRERT`/`ISTIO_OUTPUT` (or the native
nftables tables `inet istio-ambient-*`), `ip rule 32764 fwmark 0x111/0xfff lookup 100` with
`local default dev lo table 100`, and ztunnel's listeners 15001/15006/15008 opened inside
it. The node holds only the kubelet-probe SNAT (`ISTIO_POSTRT`) and the probe ipset.

These checks apply only to nodes where in-pod state was found (or ambient pods run and
the cluster is in-pod elsewhere): on a node-level (legacy) bundle they have no targets.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator

from ambientctl.analyzers import netfilter, routing
from ambientctl.analyzers.doctor import sim
from ambientctl.analyzers.doctor.facts import (
    BYPASS_INBOUND,
    Context,
    NodeView,
    PodTarget,
    file_of,
    ipset_named,
    pod_name,
    restart_cni,
    running,
    scan_rules,
    stale_members,
    v4,
)
from ambientctl.analyzers.doctor.issues import issue_at
from ambientctl.analyzers.doctor.registry import Issue, Skip, check
from ambientctl.analyzers.findings import Evidence, Severity
from ambientctl.analyzers.packet import Packet
from ambientctl.analyzers.snapshot import group_files
from ambientctl.analyzers.ztunnel_view import Disagreement, disagreements, workloads_by_pod
from ambientctl.istio import (
    DATAPLANE_MODE,
    DNS_PORT,
    HBONE_PORT,
    INBOUND_PLAINTEXT_PORT,
    INPOD_MARK,
    INPOD_MASK,
    INPOD_TPROXY_MARK,
    OUTBOUND_PORT,
    PROBE_SNAT_V4,
    REDIRECTION,
    SIDECAR_STATUS,
    ZTUNNEL_LISTENERS,
)
from ambientctl.model import IPAddress, NetNamespace, Pod

PROBE_SNAT = ipaddress.ip_address(PROBE_SNAT_V4)
PROBE_SETS_V4 = ("istio-inpod-probes-v4", "istio-inpod-probes")
PROBE_SETS_V6 = ("istio-inpod-probes-v6",)
INPOD_CHAINS = ("ISTIO_PRERT", "ISTIO_OUTPUT")


def _captured(ctx: Context, ns: NetNamespace | None) -> bool:
    return ctx.seen(ns, "inpod-ambient") or ctx.seen(ns, "cilium-ztunnel")


def captured_count(ctx: Context, node: NodeView) -> int | None:
    """Expected pods whose netns holds in-pod redirection rules (None when some pod's netns
    or rules were not collected: unknown, not zero)."""
    nss = [node.pod_netns(p) for p in node.expected]
    if any(ns is None or ns.rulesets is None for ns in nss):
        return None
    return sum(1 for ns in nss if _captured(ctx, ns))


def _app_port(pod: Pod) -> int:
    for _name, port, proto in pod.container_ports:
        if proto.upper() == "TCP" and port not in ZTUNNEL_LISTENERS:
            return port
    return 8080


def _eth(ns: NetNamespace) -> str:
    if ns.link("eth0") is not None:
        return "eth0"
    return next((lnk.name for lnk in ns.links or () if lnk.name != "lo"), "eth0")


def _destination(ctx: Context, pt: PodTarget) -> tuple[IPAddress, int]:
    sample = ctx.sample_service()
    if sample is not None:
        return sample
    remote = ctx.remote_ip(pt.node.name)
    return (remote or ipaddress.ip_address("192.0.2.10")), 80


def _pod_issue(pt: PodTarget, message: str, evidence: tuple[Evidence, ...],
               remediation: str | None = None) -> Issue:
    return Issue(message=message, evidence=evidence, node=pt.node.name, pod=pod_name(pt.pod),
                 netns=pt.ns.id if pt.ns else None, remediation=remediation)


def _require_inpod(ctx: Context, pt: PodTarget) -> NetNamespace:
    ns = pt.ns
    assert ns is not None
    if not ctx.seen(ns, "inpod-ambient"):
        raise Skip(f"{ns.dir}: no in-pod redirection rules (see AMB301)")
    return ns


def _require_inpod_v4(ctx: Context, pt: PodTarget) -> tuple[NetNamespace, IPAddress]:
    """`_require_inpod`, and the pod's IPv4 address the sample packets use."""
    ns = _require_inpod(ctx, pt)
    ip = v4(pt.pod)
    if ip is None:
        raise Skip(f"pod {pod_name(pt.pod)} has no IPv4 address")
    return ns, ip


# --------------------------------------------------------------------------- pod netns


@check("AMB301", title="Enrolled pod has no in-pod redirection rules", severity=Severity.ERROR,
       area="inpod", scope="pod", modes=("inpod",),
       requires=("pod:iptables", "cluster:pods", "cluster:namespaces"),
       remediation="Restart the istio-cni agent on the node (it reconciles every ambient pod's "
                   "netns on start, `cni.ambient.reconcileIptablesOnStartup`), or restart the "
                   "pod so the CNI plugin runs again.")
def inpod_rules_missing(ctx: Context, pt: PodTarget) -> Iterator[Issue]:
    """Enrolled (label/annotation) but its netns lost the rules: mesh bypass (#61182, #55968)."""
    ns = pt.ns
    assert ns is not None
    role = ctx.role(ns)
    if _captured(ctx, ns) or role == "sidecar":
        return
    ann = pt.pod.annotations.get(REDIRECTION)
    ev = [Evidence.missing(file_of(ns, "iptables"),
                           "chains ISTIO_PRERT / ISTIO_OUTPUT in tables nat and mangle")]
    nft = next((n for n in group_files("nft") if n in ns.files), None)
    if nft:
        ev.append(Evidence.missing(f"{ns.dir}/{nft}", "tables inet istio-ambient-nat/-mangle"))
    ev.append(Evidence.of(pt.pod.source, f"{REDIRECTION}: {ann}" if ann else
                          ctx.enrollment(pt.pod).why))
    yield _pod_issue(pt, f"pod {pod_name(pt.pod)} on node {pt.node.name} is in the mesh "
                     f"({ctx.enrollment(pt.pod).why}) but its netns {ns.id} has no in-pod "
                     "redirection rules: its traffic bypasses ztunnel (plaintext, no policy)",
                     tuple(ev), f"Restart istio-cni on {pt.node.name} "
                                f"(`{restart_cni(pt.node)}`) or the pod (`kubectl -n "
                                f"{pt.pod.namespace} delete pod {pt.pod.name}`)")


def _wrong(res: netfilter.HookResult, expected_rule: str, path: str, present: list[str]
           ) -> tuple[Evidence, ...]:
    ev: list[Evidence] = []
    acted = sim.acting_step(res, "nat", "tproxy")
    if acted is not None:
        ev.append(Evidence.of(acted.source, f"this rule takes it: {acted.summary}"))
    elif present:
        last = sim.last_step_evidence(res, "the walk ends here")
        if last is not None:
            ev.append(last)
    if not present:
        ev.append(Evidence.missing(path, expected_rule))
    return tuple(ev)


@check("AMB302", title="In-pod rules do not redirect to ztunnel's ports",
       severity=Severity.ERROR, area="inpod", scope="pod", modes=("inpod",),
       requires=("pod:iptables", "pod:ip-addr", "cluster:pods", "cluster:namespaces"),
       remediation="Restart the istio-cni agent on the node so it rewrites the pod's rules "
                   "from its template; look for a foreign rule (another CNI, an init container) "
                   "inserted ahead of ISTIO_PRERT/ISTIO_OUTPUT.")
def inpod_redirect_wrong(ctx: Context, pt: PodTarget) -> Iterator[Issue]:
    """Simulate the four connections the design relies on, in the pod's own netns."""
    ns, ip = _require_inpod_v4(ctx, pt)
    path = file_of(ns, "iptables")
    eth = _eth(ns)
    dst, dport = _destination(ctx, pt)
    local = netfilter.local_addresses(ns)
    chains: dict[tuple[str, int], netfilter.HookChains] = {}  # per hook: the 4 packets'
    rules = list(netfilter.iter_rules(ns))

    def present(port: int, target: str = "REDIRECT") -> list[str]:
        out = []
        for _t, _c, r in rules:
            ports = r.target_option("--to-ports", "--to-port", "--on-port") or ("",)
            if r.target in (target, "TPROXY") and ports[0].split("-")[0].lstrip(":") == str(port):
                out.append(r.text)
        return out

    undecided: list[str] = []
    # (a) the app's outbound connection -> 15001
    out_pkt = Packet(family=4, proto="tcp", src=ip, dst=dst, sport=40000, dport=dport,
                     local_socket=True)
    res = sim.hook(ns, "output", out_pkt, listeners=False, out_dev=eth, out_src=ip,
                   local=local, chains=chains)
    if res.verdict == "insufficient-info":
        undecided.append(f"OUTPUT: {res.reason}")
    elif not (res.packet.dport == OUTBOUND_PORT and res.packet.dst in local):
        yield _pod_issue(pt, f"in pod {pod_name(pt.pod)} on node {pt.node.name} (netns {ns.id}) "
                         f"the app's connection to {dst}:{dport} is not redirected to ztunnel's "
                         f"outbound port 15001 (it goes to {res.packet.dst_addr}, verdict "
                         f"{res.verdict}): outbound traffic bypasses the mesh",
                         _wrong(res, "a nat ISTIO_OUTPUT rule `-p tcp -m mark ! --mark "
                                "0x539/0xfff -j REDIRECT --to-ports 15001`", path, present(OUTBOUND_PORT)))
    # (b) ztunnel's own connection (SO_MARK 0x539) must leave untouched
    zt_pkt = Packet(family=4, proto="tcp", src=ip, dst=dst, sport=40001, dport=HBONE_PORT,
                    mark=INPOD_MARK, local_socket=True)
    res = sim.hook(ns, "output", zt_pkt, listeners=False, out_dev=eth, out_src=ip,
                   local=local, chains=chains)
    if res.verdict == "insufficient-info":
        undecided.append(f"OUTPUT 0x539: {res.reason}")
    elif res.verdict != "accept" or res.packet.dst_addr != zt_pkt.dst_addr:
        yield _pod_issue(pt, f"in pod {pod_name(pt.pod)} on node {pt.node.name} (netns {ns.id}) "
                         f"ztunnel's own HBONE connection (mark 0x539) to {dst}:15008 is "
                         f"{res.verdict}ed to {res.packet.dst_addr}: ztunnel loops into itself",
                         _wrong(res, "", path, ["x"]))
    inbound = pt.pod.annotations.get(BYPASS_INBOUND, "").lower() != "true"
    peer = ctx.remote_ip(pt.node.name) or ipaddress.ip_address("192.0.2.30")
    # (c) plaintext inbound -> 15006
    if inbound:
        port = _app_port(pt.pod)
        in_pkt = Packet(family=4, proto="tcp", src=peer, dst=ip, sport=40002, dport=port, iif=eth)
        res = sim.hook(ns, "prerouting", in_pkt, listeners=False, local=local, chains=chains)
        got = res.packet.tproxy.port if res.packet.tproxy else (
            res.packet.dport if res.packet.dst in local and res.packet.dport != port else None)
        if res.verdict == "insufficient-info":
            undecided.append(f"PREROUTING: {res.reason}")
        elif got != INBOUND_PLAINTEXT_PORT:
            yield _pod_issue(pt, f"in pod {pod_name(pt.pod)} on node {pt.node.name} "
                             f"(netns {ns.id}) plaintext TCP to {ip}:{port} is not redirected "
                             f"to ztunnel's inbound port 15006 ("
                             + (f"sent to {got}" if got else "not redirected")
                             + "): inbound policy is bypassed",
                             _wrong(res, "a nat ISTIO_PRERT rule `-p tcp ! --dport 15008 -m mark "
                                    "! --mark 0x539/0xfff -j REDIRECT --to-ports 15006`", path,
                                    present(INBOUND_PLAINTEXT_PORT)))
    # (d) HBONE inbound must reach ztunnel's own :15008
    hb_pkt = Packet(family=4, proto="tcp", src=peer, dst=ip, sport=40003, dport=HBONE_PORT, iif=eth)
    res = sim.hook(ns, "prerouting", hb_pkt, listeners=False, local=local, chains=chains)
    if res.verdict == "insufficient-info":
        undecided.append(f"PREROUTING 15008: {res.reason}")
    else:
        tp = res.packet.tproxy.port if res.packet.tproxy else None
        if res.verdict != "accept" or res.packet.dport != HBONE_PORT or tp not in (None, HBONE_PORT):
            where = tp or res.packet.dport
            yield _pod_issue(pt, f"in pod {pod_name(pt.pod)} on node {pt.node.name} "
                             f"(netns {ns.id}) HBONE to {ip}:15008 lands on port {where} "
                             f"({res.verdict}) instead of ztunnel's HBONE listener: mTLS "
                             "connections from other ztunnels fail",
                             _wrong(res, "", path, ["x"]))
    if len(undecided) == 4 or (undecided and not inbound and len(undecided) == 3):
        raise Skip("could not simulate: " + "; ".join(undecided))


@check("AMB303", title="ip rule 32764 or table-100 local route missing in the pod",
       severity=Severity.ERROR, area="inpod", scope="pod", modes=("inpod",),
       requires=("pod:ip-rule", "pod:ip-route", "pod:iptables", "cluster:pods",
                 "cluster:namespaces"),
       remediation="Restart the istio-cni agent on the node; by hand in the pod's netns: "
                   "`ip rule add fwmark 0x111/0xfff pref 32764 lookup 100` and `ip route add "
                   "local 0.0.0.0/0 dev lo table 100`.")
def inpod_route_missing(ctx: Context, pt: PodTarget) -> Iterator[Issue]:
    """Replies on connections ztunnel delivered with the client's address return via 0x111."""
    ns = _require_inpod(ctx, pt)
    dst, _ = _destination(ctx, pt)
    gap = sim.local_route_gap(ns, mark=INPOD_TPROXY_MARK, mask=INPOD_MASK, prio=32764,
                              table="100", dst=dst, iif=None)
    if gap is not None:
        yield _pod_issue(pt, f"in pod {pod_name(pt.pod)} on node {pt.node.name} (netns {ns.id}) "
                         f"the app's replies marked 0x111 are not routed back to ztunnel: "
                         f"{gap.why}; inbound connections through ztunnel hang",
                         gap.evidence)


@check("AMB304", title="ztunnel is not listening in the pod's netns", severity=Severity.ERROR,
       area="inpod", scope="pod", modes=("inpod",),
       requires=("pod:ss", "pod:iptables", "cluster:pods", "cluster:namespaces"),
       remediation="Check ztunnel on the node (`kubectl -n istio-system logs <ztunnel pod>`: "
                   "look for the pod's UID and `pod received, starting proxy`); restart the "
                   "ztunnel pod or the istio-cni agent so the netns is handed over again.")
def inpod_not_listening(ctx: Context, pt: PodTarget) -> Iterator[Issue]:
    """Rules without listeners: REDIRECTed connections are refused."""
    ns, ip = _require_inpod_v4(ctx, pt)
    wants = [(ipaddress.ip_address("127.0.0.1"), OUTBOUND_PORT, "outbound"),
             (ip, HBONE_PORT, "inbound HBONE")]
    if pt.pod.annotations.get(BYPASS_INBOUND, "").lower() != "true":
        wants.append((ip, INBOUND_PLAINTEXT_PORT, "inbound plaintext"))
    if any(True for _ in scan_rules(ns, "15053")):
        # DNS capture is on (`REDIRECT --to-ports 15053`): ztunnel's DNS proxy must be there.
        wants.append((ipaddress.ip_address("127.0.0.1"), DNS_PORT, "DNS proxy"))
    path = file_of(ns, "ss")
    for addr, port, what in wants:
        if netfilter.find_listener(ns.listeners, addr, port) is None:
            yield _pod_issue(pt, f"nothing listens on {addr}:{port} ({what}) in pod "
                             f"{pod_name(pt.pod)} on node {pt.node.name} (netns {ns.id}): "
                             "ztunnel is not serving this pod, redirected connections are refused",
                             (Evidence.missing(path, f"a TCP listener accepting {addr}:{port}"),))


@check("AMB305", title="Pod redirection is pending", severity=Severity.ERROR, area="inpod",
       scope="pod", modes=("inpod",), requires=("cluster:pods", "cluster:namespaces"),
       remediation="ztunnel has not accepted the pod yet: check the ztunnel pod on the node "
                   "(`kubectl -n istio-system get pods -o wide`, its logs for the pod's UID).")
def inpod_pending(ctx: Context, pt: PodTarget) -> Iterator[Issue]:
    """`pending`: rules are in, ztunnel is not proxying - the pod has no traffic at all."""
    if pt.pod.annotations.get(REDIRECTION) == "pending":
        yield _pod_issue(pt, f"pod {pod_name(pt.pod)} on node {pt.node.name} is annotated "
                         f"{REDIRECTION}: pending: istio-cni installed its rules but ztunnel "
                         "has not started proxying it, so it can neither send nor receive",
                         (Evidence.of(pt.pod.source, f"{REDIRECTION}: pending"),))


# --------------------------------------------------------------------------- node netns


def _enrolled(ctx: Context, node: NodeView) -> list[Pod]:
    """Pods istio-cni has enrolled (annotation enabled, or rules in their netns)."""
    return [p for p in node.expected
            if p.annotations.get(REDIRECTION) == "enabled" or _captured(ctx, node.pod_netns(p))]


@check("AMB306", title="Pod IP missing from the probe ipset", severity=Severity.ERROR,
       area="inpod", scope="node", modes=("inpod",),
       requires=("host:sets", "cluster:pods", "cluster:namespaces"),
       remediation="Restart the istio-cni agent on the node (it resyncs the set, PR #60471); by "
                   "hand: `ipset add istio-inpod-probes-v4 <POD_IP> comment <POD_UID>`.")
def probe_set_missing(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """Kubelet probes to a pod outside the set are not SNATed and ztunnel rejects them."""
    host = node.host
    assert host is not None
    pods = _enrolled(ctx, node)
    s4 = ipset_named(host, *PROBE_SETS_V4)
    s6 = ipset_named(host, *PROBE_SETS_V6)
    path = file_of(host, "sets")
    if s4 is None and pods:
        yield Issue(message=f"node {node.name} has no probe set istio-inpod-probes-v4: kubelet "
                    f"probes to its {len(pods)} ambient pod(s) are not SNATed to {PROBE_SNAT} "
                    "and go through ztunnel",
                    evidence=(Evidence.missing(path, "set istio-inpod-probes-v4"),),
                    node=node.name, netns=host.id,
                    remediation=f"Restart istio-cni: `{restart_cni(node)}`")
        return
    for pod in pods:
        for ip in pod.ips:
            s = s4 if ip.version == 4 else s6
            if s is None or s.lookup(ip) is not None:
                continue
            yield Issue(message=f"pod {pod_name(pod)} ({ip}) on node {node.name} is not in "
                        f"probe set {s.name}: kubelet's liveness/readiness probes are not SNATed "
                        f"to {PROBE_SNAT}, reach ztunnel, and fail where policies deny them",
                        evidence=(Evidence.missing(s.source.path, f"member {ip} in set {s.name}"),
                                  Evidence.of(s.source, f"set {s.name}: {len(s.members)} members")),
                        node=node.name, pod=pod_name(pod), netns=host.id,
                        remediation=f"`ipset add {s.name} {ip} comment {pod.uid or '<POD_UID>'}` "
                                    f"on {node.name}, or restart istio-cni: `{restart_cni(node)}`")


@check("AMB311", title="Stale probe ipset member", severity=Severity.WARNING, area="inpod",
       scope="node", modes=("inpod",),
       requires=("host:sets", "cluster:pods", "cluster:namespaces"),
       remediation="`ipset del istio-inpod-probes-v4 <IP>` on the node, or restart istio-cni.")
def probe_set_stale(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """A member no ambient pod of this node owns: probes to a reused IP are SNATed."""
    host = node.host
    assert host is not None
    wanted = {ip for p in node.expected for ip in p.ips}
    for s in (ipset_named(host, *PROBE_SETS_V4), ipset_named(host, *PROBE_SETS_V6)):
        if s is None:
            continue
        for m, ip in stale_members(s, wanted):
            owners = ctx.pod_by_ip(ip, node.name)
            what = (f"pod {pod_name(owners[0])} is not ambient" if owners
                    else "no running pod has this address")
            yield Issue(message=f"probe set {s.name} on node {node.name} holds {ip} but {what}",
                        evidence=(Evidence.of(m.source, "stale member"),), node=node.name,
                        netns=host.id)


def _kubelet_uid(host: NetNamespace) -> int | None:
    """The uid the probe SNAT rule expects (nft backend: `meta skuid <kubelet uid>`)."""
    for _t, _c, rule in scan_rules(host, "snat", str(PROBE_SNAT)):
        if rule.target != "SNAT" or (rule.target_option("--to-source") or ("",))[0] != \
                str(PROBE_SNAT):
            continue
        for m in rule.matches:
            if m.module == "owner" and m.option == "--uid-owner" and m.args and \
                    m.args[0].isdigit() and not m.negated:
                return int(m.args[0])
    return None


@check("AMB307", title="Kubelet probe SNAT missing or after a CNI MASQUERADE",
       severity=Severity.ERROR, area="inpod", scope="node", modes=("inpod",),
       requires=("host:iptables", "host:ip-route", "host:ip-addr", "host:sets", "cluster:pods",
                 "cluster:namespaces"),
       remediation="`ISTIO_POSTRT` must be the first rule of nat POSTROUTING (Istio >= 1.27 "
                   "inserts it at 1, #56414): restart istio-cni, or move the CNI's MASQUERADE "
                   "after it (`iptables -t nat -I POSTROUTING 1 -j ISTIO_POSTRT`).")
def probe_snat_missing(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """Simulate kubelet's probe leaving the node: it must be SNATed to 169.254.7.127."""
    host = node.host
    assert host is not None
    s4 = ipset_named(host, *PROBE_SETS_V4)
    pods = [p for p in _enrolled(ctx, node) if v4(p) is not None
            and s4 is not None and s4.lookup(v4(p)) is not None]  # type: ignore[arg-type]
    if not pods:
        raise Skip(f"no enrolled pod in a probe set on {node.name} to probe")
    pod = pods[0]
    ip = v4(pod)
    assert ip is not None
    r = routing.lookup(host, dst=ip)
    if r.kind != "unicast" or r.src is None:
        raise Skip(f"no route from {node.name} to pod {pod_name(pod)} ({ip}): {r.reason or r.kind}")
    # kubelet's socket: nft mode matches kubelet's uid (`meta skuid`, found by istio-cni in
    # /proc); take that uid from the SNAT rule itself, iptables mode needs none.
    uid = _kubelet_uid(host)
    pkt = Packet(family=4, proto="tcp", src=r.src, dst=ip, sport=40000, dport=_app_port(pod),
                 local_socket=True, uid=uid)
    res = sim.hook(host, "output", pkt, out_dev=r.dev, out_src=r.src)
    if res.verdict == "insufficient-info":
        raise Skip(f"cannot simulate nat OUTPUT: {res.reason} ({res.culprit})")
    res = sim.hook(host, "postrouting", res.packet, out_dev=r.dev, out_src=r.src)
    if res.verdict == "insufficient-info":
        raise Skip(f"cannot simulate nat POSTROUTING: {res.reason} ({res.culprit})")
    if res.packet.src == PROBE_SNAT:
        return
    ev: list[Evidence] = []
    acted = sim.acting_step(res, "nat")
    if acted is not None:
        ev.append(Evidence.of(acted.source, f"this rule rewrites it first: {acted.summary}"))
    chain = next((t.chains["ISTIO_POSTRT"] for t in host.tables()
                  if t.name == "nat" and "ISTIO_POSTRT" in t.chains), None)
    if chain is None and not any(t.name.startswith("istio-ambient") for t in host.tables()):
        ev.append(Evidence.missing(file_of(host, "iptables"), "chain ISTIO_POSTRT in table nat"))
    elif chain is not None:
        ev.append(Evidence.of(chain.source, "ISTIO_POSTRT exists but is not reached first"))
    yield Issue(message=f"on node {node.name} a kubelet probe to pod {pod_name(pod)} ({ip}) leaves "
                f"with source {res.packet.src}, not {PROBE_SNAT}: ztunnel treats it as mesh "
                "traffic and probes fail under allow policies", evidence=tuple(ev),
                node=node.name, pod=pod_name(pod), netns=host.id)


# --------------------------------------------------------------------------- consistency


@check("AMB308", title="Sidecar pod in an ambient namespace", severity=Severity.WARNING,
       area="inpod", scope="bundle", requires=("cluster:pods", "cluster:namespaces"),
       remediation="Pick one data plane per pod: remove the sidecar (`sidecar.istio.io/inject: "
                   "\"false\"`, restart) or label the pod `istio.io/dataplane-mode=none`.")
def sidecar_in_ambient(ctx: Context) -> Iterator[Issue]:
    """istio-cni skips sidecar pods: they stay outside ambient (and may not become Ready)."""
    ambient_ns = {n.name: n for n in ctx.snap.cluster.namespaces
                  if n.labels.get(DATAPLANE_MODE) == "ambient"}
    for pod in ctx.snap.cluster.pods:
        if pod.namespace not in ambient_ns or not running(pod) or pod.host_network:
            continue
        if pod.labels.get(DATAPLANE_MODE) == "none":
            continue
        ns = ctx.snap.pod_netns(pod.ref)
        by_ann = SIDECAR_STATUS in pod.annotations
        by_rules = ctx.role(ns) == "sidecar"
        if not (by_ann or by_rules):
            continue
        ev = [Evidence.of(pod.source, SIDECAR_STATUS if by_ann else "pod"),
              Evidence.of(ambient_ns[pod.namespace].source,
                          f"namespace labelled {DATAPLANE_MODE}=ambient")]
        if by_rules and ns is not None:
            ev.append(Evidence(path=file_of(ns, "iptables"),
                               note="sidecar chains ISTIO_INBOUND/ISTIO_OUTPUT (uid 1337)"))
        yield Issue(message=f"pod {pod_name(pod)} runs an Istio sidecar in namespace "
                    f"{pod.namespace}, which is labelled for ambient: istio-cni leaves it to its "
                    "sidecar, so it is not captured by ztunnel", evidence=tuple(ev),
                    node=pod.node, pod=pod_name(pod), netns=ns.id if ns else None)


def _inpod_iptables(ns: NetNamespace) -> Evidence | None:
    for t in ns.tables():
        if t.backend in ("iptables-nft", "iptables-legacy"):
            for name in (*INPOD_CHAINS, "ISTIO_POSTRT"):
                ch = t.chains.get(name)
                if ch is not None and len(ch):
                    return Evidence.of(ch.source, f"{t.backend} {t.name} {name}")
    return None


def _inpod_nft(ns: NetNamespace) -> Evidence | None:
    for t in ns.tables():
        if t.backend == "nft" and t.name.startswith("istio-ambient-") and any(
                len(c) for c in t.chains.values()):
            return Evidence.of(t.source, f"nft table {t.family} {t.name}")
    return None


@check("AMB309", title="iptables and nftables redirection rules both present",
       severity=Severity.ERROR, area="inpod", scope="node", modes=("inpod",),
       requires=("host:iptables",),
       remediation="A switch to the nftables backend leaves the iptables rules until reboot "
                   "(release note 58353): drain and reboot the node, or remove the ISTIO_* "
                   "chains by hand (`iptables-save | grep ISTIO`) and restart istio-cni.")
def both_backends(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """Two sets of redirect rules: packets are redirected twice or by the stale copy."""
    nss = [node.host] + [ns for ns in (node.state.pods.values() if node.state else ())]
    for ns in nss:
        if ns is None or ns.rulesets is None:
            continue
        a, b = _inpod_iptables(ns), _inpod_nft(ns)
        if a is not None and b is not None:
            yield issue_at(node.name, ns, f"{ns.label} (netns {ns.id}) holds Istio redirection "
                           "rules in both iptables and native nftables", (a, b))


@check("AMB310", title="ztunnel's view disagrees with the pod's netns", severity=Severity.ERROR,
       area="inpod", scope="node", modes=("inpod",),
       requires=("config_dump", "cluster:pods", "cluster:namespaces"),
       remediation="Restart the istio-cni agent on the node (it re-sends every pod netns to "
                   "ztunnel over ZDS); if ztunnel shows the pod Up but the netns has no rules, "
                   "restart the pod.")
def ztunnel_view(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """ztunnel thinks HBONE but the kernel has no rules, or the kernel redirects but ztunnel
    does not serve the pod (istio/istio#61182, #55968)."""
    path = f"nodes/{node.name}/ztunnel/config_dump.json"
    workloads, states = workloads_by_pod(ctx.snap.ztunnel_configs.get(node.name))
    if not workloads and not states:
        raise Skip(f"{path}: no workloads/workloadState in the dump")
    for pod in node.expected:
        ns = node.pod_netns(pod)
        if ns is None or ns.rulesets is None:
            continue  # the kernel's side is unknown for this pod
        w = workloads.get(pod_name(pod))
        found = disagreements(pod, ns, ctx.facts.role_of(ns), w.protocol if w else None,
                              states)
        if Disagreement.HBONE_WITHOUT_RULES in found:
            assert w is not None
            wl = json.dumps({"uid": w.uid, "protocol": w.protocol, "node": w.node},
                            separators=(",", ":"))
            yield Issue(message=f"ztunnel lists pod {pod_name(pod)} on node {node.name} as HBONE, "
                        f"but its netns {ns.id} has no redirection rules: peers send it mTLS on "
                        "15008 that nothing inside accepts, and its own traffic leaves plaintext",
                        evidence=(Evidence(path=path, text=wl, note="ztunnel workload"),
                                  Evidence.missing(file_of(ns, "iptables"),
                                                   "chains ISTIO_PRERT / ISTIO_OUTPUT")),
                        node=node.name, pod=pod_name(pod), netns=ns.id)
        if Disagreement.RULES_WITHOUT_PROXY in found:
            st = states.get(pod.uid or "")
            state = st or None
            note = (f"workloadState[{pod.uid}].state = {state}" if st is not None else
                    f"absent: workloadState[{pod.uid}] (looked in {path})")
            yield Issue(message=f"pod {pod_name(pod)} on node {node.name} has redirection "
                        f"rules but ztunnel's workloadState for UID {pod.uid} is "
                        f"{state or 'absent'}: redirected connections have no proxy",
                        evidence=(Evidence(path=path, absent=st is None, note=note),),
                        node=node.name, pod=pod_name(pod), netns=ns.id)


@check("AMB312", title="In-pod rules installed in the node's netns", severity=Severity.ERROR,
       area="inpod", scope="node", requires=("host:iptables",),
       remediation="istio-cni entered the wrong netns (istio/istio#55139, e.g. a wrong "
                   "`cniNetnsDir`): delete the ISTIO_PRERT/ISTIO_OUTPUT chains from the node "
                   "(`iptables -t nat -F ISTIO_OUTPUT` ...) and fix the platform setting.")
def inpod_rules_on_node(ctx: Context, node: NodeView) -> Iterator[Issue]:
    """The node's own connections would be redirected to 15001, where nothing listens."""
    host = node.host
    assert host is not None
    hits = []
    for t in host.tables():
        for name in INPOD_CHAINS:
            ch = t.chains.get(name)
            if ch is not None and len(ch) and t.backend != "nft":
                rules = ch.rules
                if any(r.target in ("REDIRECT", "TPROXY") for r in rules) or name == "ISTIO_PRERT":
                    hits.append(Evidence.of(ch.source, f"{t.name} {name}: {len(ch)} rule(s)"))
        if t.backend == "nft" and t.name.startswith("istio-ambient-") and \
                set(t.chains) - {"postrouting"}:
            hits.append(Evidence.of(t.source, f"nft {t.name} with pod chains"))
    if hits:
        yield Issue(message=f"the node {node.name}'s own netns ({host.id}) holds in-pod "
                    "redirection chains: the node's connections are redirected to ztunnel ports "
                    "nobody listens on there", evidence=tuple(hits[:6]), node=node.name,
                    netns=host.id)
