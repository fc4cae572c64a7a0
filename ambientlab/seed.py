"""The seed lab: the 2022 kind cluster of the seed, built from network namespaces.

    with SeedLab() as lab:
        landing = lab.connect("ambient-worker/pod/default/sleep-7b85956664-z6qh7",
                              "10.96.182.142", 9080)
        assert landing.netns == "ambient-worker/pod/istio-system/ztunnel-nptf6"
        lab.collect("/tmp/bundle")

What is real and what is emulated
- Real kernel state, built with the exact commands of their authors: every namespace,
  veth, address, route, `ip rule`, ipset, iptables rule and sysctl of two kind worker
  nodes (`ambient-worker`, `ambient-worker2`), their pods, and the two ztunnel pods, in the
  Sept-2022 node-level ambient design (istio-datapath.md §2.2-2.5; `ambientlab.rules`).
  Packets really traverse netfilter, policy routing and TPROXY.
- The `kind` docker network is a bridge (172.18.0.1/16) in a namespace of its own that is
  never collected, like docker's bridge on a real host. It has no uplink and forwards
  nothing (ip_forward=0), so a packet the nodes send "to the internet" dies there.
- **Tunnels are veth pairs, not geneve**: this kernel has no geneve. `istioin`<->`pistioin`
  (192.168.126.1/30 - .2/30) and `istioout`<->`pistioout` (192.168.127.1/30 - .2/30) are
  veth pairs between the node and its ztunnel netns, MTU 1450 like the geneve devices of
  the seed; their `ip link` alias says which geneve device they stand for. Geneve is an
  Ethernet-over-UDP tunnel, so for routing and netfilter the packet arriving on `pistioout`
  is the same; only the outer UDP/6081 packets on the ztunnel veth are missing (the
  `-p udp --dport 6081 -j RETURN` rule is present but never hit).
- Processes are emulated (`ambientlab.emulate`): ztunnel's transparent listeners
  (127.0.0.1:15001 with SO_MARK 0x401; :15006 and :15008 with SO_MARK 0x402; admin
  127.0.0.1:15000 and health 0.0.0.0:15021) named `envoy` like the 2022 Envoy-based
  ztunnel, and the bookinfo apps' 0.0.0.0:9080. kube-proxy, kubelet, kindnet and istio-cni
  do not run; the rules they would have written are loaded once.

Teardown (namespaces, processes, temp files) happens on `__exit__`, also when the build
fails halfway; `python -m ambientlab.cleanup` removes what a killed run left.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Self

from ambientlab import cluster as cluster_mod
from ambientlab import kubeproxy_nft, rules
from ambientlab.emulate import Landing, ListenSpec
from ambientlab.netns import Lab, LabError, Netns, repo_env
from ambientlab.topology import (
    INBOUND_TUN,
    INBOUND_TUN_HOST,
    INBOUND_TUN_ZTUNNEL,
    KIND_BRIDGE_IP,
    KIND_PREFIX,
    NODES,
    OUTBOUND_TUN,
    OUTBOUND_TUN_HOST,
    OUTBOUND_TUN_ZTUNNEL,
    TUN_PREFIX,
    NodeSpec,
    PodSpec,
    _mac,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
KIND_NETNS = "kind"  # logical id of the (uncollected) docker bridge namespace
TUN_MTU = 1450  # the seed's geneve devices

ZTUNNEL_LISTENERS = (
    ListenSpec("127.0.0.1", 15001, transparent=True, mark=0x401),  # outbound (from pistioout)
    ListenSpec("127.0.0.1", 15006, transparent=True, mark=0x402),  # inbound plaintext
    ListenSpec("127.0.0.1", 15008, transparent=True, mark=0x402),  # inbound HBONE
    ListenSpec("127.0.0.1", 15000),  # Envoy admin
    ListenSpec("0.0.0.0", 15021),  # readiness
)
APP_PORT = 9080

# ztunnel variants of the node-level design (`SeedLab(ztunnel=...)`): what differs between
# them for the datapath is the source address of the HBONE connection (istio-datapath.md
# 2.5 step 5). "envoy-2022" is the seed (connects from its own address); "rust-node" is
# the Rust ztunnel of Istio 1.18-1.20, which binds the client pod's address on it
# (original source). The variant shows in the cluster objects as the ztunnel image and in
# `ss` as the listeners' process name, as it would on a real node. The kernel rules stay
# the seed's (the init-script era's ip rules 20001/20002 and the 15088 REDIRECT are extra
# there but never hit by the HBONE leg or its answer).
ZTUNNEL_VARIANTS = {
    "envoy-2022": (None, None),  # the seed's image and comm, unchanged
    "rust-node": ("docker.io/istio/ztunnel:1.20.0", "ztunnel"),
}


def kube_proxy_nft(node: NodeSpec) -> str:
    """kube-proxy in nftables mode for the seed's Services, on `node` (`nft -f` input)."""
    from ambientlab.topology import CLUSTER_CIDR, SERVICES

    svcs = [kubeproxy_nft.KubeProxyService(
        s.namespace, s.name, s.port_name, s.cluster_ip, s.port,
        tuple((p.ip, s.target_port) for _n, p in s.endpoints())) for s in SERVICES]
    return kubeproxy_nft.ruleset(svcs, cluster_cidr=CLUSTER_CIDR, service_cidr="10.96.0.0/16",
                                 node_ips=[node.ip])


def _suffix(pod: PodSpec) -> str:
    """Short netns suffix: "sleep", "productpage-v1", "zt-nptf6"."""
    if pod.ztunnel:
        return "zt-" + pod.name.rsplit("-", 1)[1]
    return pod.name.rsplit("-", 2)[0]


def _python() -> list[str]:
    # -S: no site import (faster start; the lab needs only the stdlib and itself).
    return [sys.executable, "-S", "-m"]


class SeedLab:
    """The seed's two nodes in the real kernel (see the module docstring)."""

    def __init__(self, *, lab_id: str | None = None, emulate: bool = True,
                 ztunnel: str = "envoy-2022", kube_proxy: str = "iptables") -> None:
        """`kube_proxy`: "iptables" (the seed's Kubernetes 1.25), "nftables" (kube-proxy's
        nftables mode, table `ip kube-proxy`: `ambientlab.kubeproxy_nft`) or "ipvs" (IPVS
        mode: `ambientlab.kubeproxy_ipvs`; set `ipvsadm = False` to collect a node whose
        ipvsadm is missing)."""
        if ztunnel not in ZTUNNEL_VARIANTS:
            raise ValueError(f"unknown ztunnel variant {ztunnel!r}; known: "
                             f"{sorted(ZTUNNEL_VARIANTS)}")
        self.ztunnel_variant = ztunnel
        if kube_proxy not in ("iptables", "nftables", "ipvs"):
            raise ValueError(f"kube_proxy must be iptables, nftables or ipvs, not "
                             f"{kube_proxy!r}")
        self.ipvsadm = True
        self._lab_id = lab_id
        self._emulate = emulate
        self.kube_proxy = kube_proxy
        self.lab: Lab | None = None
        self._ns: dict[str, Netns] = {}  # logical id -> netns
        self._servers: dict[str, tuple[object, tuple[ListenSpec, ...]]] = {}
        self.active_faults: list[str] = []

    # ------------------------------------------------------------------ context
    def __enter__(self) -> Self:
        self.build()
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def teardown(self) -> None:
        """Remove everything this lab created (idempotent)."""
        if self.lab is not None:
            self.lab.teardown()

    @property
    def workdir(self) -> Path:
        """The lab's temp directory (commands.log, connections.jsonl, cluster/)."""
        assert self.lab is not None
        return self.lab.workdir

    @property
    def connections_log(self) -> Path:
        """JSON lines: every connection any emulated listener accepted."""
        return self.workdir / "connections.jsonl"

    # ------------------------------------------------------------------ names
    def netns(self, logical_id: str) -> Netns:
        """The namespace of a logical id ("ambient-worker/host", ".../pod/NS/NAME", "kind")."""
        try:
            return self._ns[logical_id]
        except KeyError:
            raise KeyError(f"unknown namespace {logical_id!r}; known: {sorted(self._ns)}") from None

    def netns_name(self, logical_id: str) -> str:
        """The real netns name (under /var/run/netns) of a logical id."""
        return self.netns(logical_id).name

    def netns_names(self) -> dict[str, str]:
        """Every namespace of the lab: logical id -> real netns name (for `KernelTrace`)."""
        return {logical: ns.name for logical, ns in self._ns.items()}

    def logical_ids(self) -> list[str]:
        """Every collected namespace's logical id (the bridge namespace excluded)."""
        return [k for k in self._ns if k != KIND_NETNS]

    def exec(self, logical_id: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside a lab namespace (`ip netns exec`)."""
        return self.netns(logical_id).exec(*argv, check=check)

    def ip(self, logical_id: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`ip -n <netns> ARGS`."""
        return self.netns(logical_id).ip(*args, check=check)

    # ------------------------------------------------------------------ build
    def build(self) -> None:
        """Create and wire everything; on any failure tear down what exists and re-raise."""
        self.lab = Lab(self._lab_id)
        try:
            self._build()
        except BaseException:
            self.teardown()
            raise

    def _build(self) -> None:
        lab = self.lab
        assert lab is not None
        self._ns[KIND_NETNS] = lab.add_netns("kind")
        for node in NODES:
            self._ns[node.logical_host()] = lab.add_netns(node.name.removeprefix("ambient-"))
            for pod in node.pods:
                self._ns[node.logical_pod(pod)] = lab.add_netns(_suffix(pod))
        self._base_sysctls()
        self._kind_bridge()
        for node in NODES:
            self._node_links(node)
        for node in NODES:
            self._node_addresses(node)
            for pod in node.pods:
                self._pod_addresses(node, pod)
        for node in NODES:
            self._istio_ztunnel_netns(node)
            self._kube_and_istio_node(node)
        if self._emulate:
            self._start_emulators()

    def _base_sysctls(self) -> None:
        """Values every namespace gets before links exist, explicit so that the lab never
        inherits the machine's (a new netns copies init_net's ipv4 all/default settings).

        DAD is off so that no address is "tentative" in a dump taken right after the build.
        """
        no_dad = [("net.ipv6.conf.all.accept_dad", "0"), ("net.ipv6.conf.default.accept_dad", "0")]
        self.netns(KIND_NETNS).sysctl([*no_dad, ("net.ipv4.ip_forward", "0")])
        for node in NODES:
            # kind node: forwarding on; rp_filter as an Ubuntu docker host leaves it (loose)
            # until istio-cni zeroes all/default below.
            self.netns(node.logical_host()).sysctl(
                [*no_dad, ("net.ipv4.ip_forward", "1"),
                 ("net.ipv4.conf.all.rp_filter", "2"), ("net.ipv4.conf.default.rp_filter", "2")]
            )
            for pod in node.pods:
                self.netns(node.logical_pod(pod)).sysctl(
                    [*no_dad, ("net.ipv4.ip_forward", "0"),
                     ("net.ipv4.conf.all.rp_filter", "2"), ("net.ipv4.conf.default.rp_filter", "2")]
                )

    def _kind_bridge(self) -> None:
        kind = self.netns(KIND_NETNS)
        lines = ["link add br-kind type bridge", f"addr add {KIND_BRIDGE_IP}/{KIND_PREFIX} dev br-kind",
                 "link set br-kind up"]
        for node in NODES:
            port = "veth" + hashlib.sha256(node.name.encode()).hexdigest()[:7]
            node_ns = self.netns(node.logical_host())
            node_ns.ip("link", "add", "eth0", "address", node.eth0_mac, "type", "veth",
                       "peer", "name", port, "netns", kind.name)
            lines += [f"link set {port} master br-kind", f"link set {port} up"]
        kind.ip_batch(lines)

    def _node_links(self, node: NodeSpec) -> None:
        """Pod veths (pod eth0 <-> node vethXXXXXXXX) and the tunnel stand-ins."""
        host = self.netns(node.logical_host())
        zt = node.ztunnel
        zt_ns = self.netns(node.logical_pod(zt))
        for pod in node.pods:
            pod_ns = self.netns(node.logical_pod(pod))
            pod_ns.ip("link", "add", "eth0", "address", pod.mac, "type", "veth", "peer", "name",
                      pod.host_veth, "address", _mac(f"{node.name}/{pod.host_veth}"),
                      "netns", host.name)
        # ifindex order inside the ztunnel netns is then lo=1, eth0=2, pistioin=3,
        # pistioout=4, as in the seed's `ip a` of ztunnel-nptf6.
        for tun, remote in ((INBOUND_TUN, 1000), (OUTBOUND_TUN, 1001)):
            host_mac = (node.istioout_mac if tun == OUTBOUND_TUN else None) or _mac(f"{node.name}/{tun}")
            zt_mac = node.extra_macs.get(f"p{tun}") or _mac(f"{node.name}/p{tun}")
            host.ip("link", "add", tun, "mtu", str(TUN_MTU), "address", host_mac, "type", "veth",
                    "peer", "name", f"p{tun}", "mtu", str(TUN_MTU), "address", zt_mac,
                    "netns", zt_ns.name)
            host.ip("link", "set", tun, "alias",
                    f"ambientlab stand-in for geneve id {remote} remote {zt.ip} dstport 6081")
            zt_ns.ip("link", "set", f"p{tun}", "alias",
                     f"ambientlab stand-in for geneve id {remote} remote {node.host_ip} dstport 6081")

    def _node_addresses(self, node: NodeSpec) -> None:
        host = self.netns(node.logical_host())
        lines = [
            f"addr add {node.ip}/{KIND_PREFIX} brd + dev eth0",
            "link set eth0 up",
            f"route add default via {KIND_BRIDGE_IP} dev eth0",
            f"route add {node.peer_cidr} via {node.peer_ip} dev eth0",
        ]
        # kindnet (ptp): every pod's host veth carries the gateway address as a /32 and the
        # node routes the pod IP to that veth with scope host.
        for pod in node.pods:
            lines += [
                f"addr add {node.host_ip}/32 dev {pod.host_veth}",
                f"link set {pod.host_veth} up",
                f"route add {pod.ip} dev {pod.host_veth} scope host",
            ]
        lines += [
            f"addr add {INBOUND_TUN_HOST}/{TUN_PREFIX} dev {INBOUND_TUN}",
            f"addr add {OUTBOUND_TUN_HOST}/{TUN_PREFIX} dev {OUTBOUND_TUN}",
            f"link set {INBOUND_TUN} up",
            f"link set {OUTBOUND_TUN} up",
        ]
        host.ip_batch(lines)

    def _pod_addresses(self, node: NodeSpec, pod: PodSpec) -> None:
        ns = self.netns(node.logical_pod(pod))
        gw = node.host_ip
        lines = [
            f"addr add {pod.ip}/24 brd + dev eth0",
            "link set eth0 up",
            # ptp deletes the connected route the address created and routes the subnet via
            # the gateway instead, which it reaches through a /32 scope-link route.
            f"route del {node.pod_cidr} dev eth0",
            f"route add {gw} dev eth0 scope link src {pod.ip}",
            f"route add {node.pod_cidr} via {gw} dev eth0 src {pod.ip}",
            f"route add default via {gw} dev eth0",
        ]
        if pod.ztunnel:
            lines += [
                f"addr add {INBOUND_TUN_ZTUNNEL}/{TUN_PREFIX} dev p{INBOUND_TUN}",
                f"addr add {OUTBOUND_TUN_ZTUNNEL}/{TUN_PREFIX} dev p{OUTBOUND_TUN}",
                f"link set p{INBOUND_TUN} up",
                f"link set p{OUTBOUND_TUN} up",
            ]
        ns.ip_batch(lines)

    def _istio_ztunnel_netns(self, node: NodeSpec) -> None:
        """The ztunnel pod's init script: rp_filter, ip rules/tables, TPROXY rules."""
        ns = self.netns(node.logical_pod(node.ztunnel))
        ns.sysctl(rules.ztunnel_sysctls())
        ns.ip_batch(rules.ztunnel_routes(node))
        for argv in rules.ztunnel_iptables(node):
            ns.exec(*argv)

    def _kube_and_istio_node(self, node: NodeSpec) -> None:
        """kube-proxy/kubelet/kindnet rules, then istio-cni's node setup and enrollment."""
        ns = self.netns(node.logical_host())
        if self.kube_proxy == "nftables":
            ns.exec("nft", "-f", "-", stdin=kube_proxy_nft(node))
        elif self.kube_proxy == "ipvs":
            from ambientlab import kubeproxy_ipvs

            ns.ip_batch(kubeproxy_ipvs.ipvs_device_batch())
            ns.exec("ipset", "restore", stdin=kubeproxy_ipvs.ipset_commands())
            ns.exec("iptables-restore", "--noflush", stdin=kubeproxy_ipvs.iptables_restore())
        else:
            ns.exec("iptables-restore", "--noflush", stdin=rules.kube_proxy_restore())
        for argv in rules.istio_node_ipset(node)[:1]:
            ns.exec(*argv)
        for argv in rules.istio_node_iptables(node):
            ns.exec(*argv)
        ns.sysctl(rules.istio_node_sysctls(node))
        ns.ip_batch(rules.istio_node_routes(node))
        for argv in rules.istio_node_ipset(node)[1:]:
            ns.exec(*argv)

    # ------------------------------------------------------------------ processes
    def _start_emulators(self) -> None:
        started = []
        for node in NODES:
            for pod in node.pods:
                if pod.ztunnel:
                    comm = ZTUNNEL_VARIANTS[self.ztunnel_variant][1] or pod.comm
                    started.append(self._spawn_server(node.logical_pod(pod), ZTUNNEL_LISTENERS, comm))
                elif pod.ports:
                    specs = (ListenSpec("0.0.0.0", APP_PORT),)
                    started.append(self._spawn_server(node.logical_pod(pod), specs, pod.comm))
        for logical_id, proc in started:
            self._await_ready(logical_id, proc)

    def _spawn_server(
        self, logical_id: str, specs: Sequence[ListenSpec], comm: str | None
    ) -> tuple[str, subprocess.Popen[bytes]]:
        assert self.lab is not None
        argv = [*_python(), "ambientlab.emulate", "serve", "--id", logical_id,
                "--log", str(self.connections_log)]
        if comm:
            argv += ["--comm", comm]
        for spec in specs:
            argv += ["--listen", str(spec)]
        proc = self.lab.spawn(
            self.netns(logical_id), argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, cwd=str(REPO_ROOT), env=self._env(),
        )
        self._servers[logical_id] = (proc, tuple(specs))
        return logical_id, proc

    def _await_ready(self, logical_id: str, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            err = b""
            if proc.poll() is not None and proc.stderr is not None:
                err = proc.stderr.read()
            raise LabError(f"emulator in {logical_id} did not start: {err.decode(errors='replace').strip()}")

    def restart_server(self, logical_id: str, specs: Sequence[ListenSpec]) -> None:
        """Replace the emulated process of a namespace by one listening on `specs`."""
        assert self.lab is not None
        old = self._servers.pop(logical_id, None)
        comm = None
        if old is not None:
            self.lab.stop(old[0])  # type: ignore[arg-type]
        for node in NODES:
            for pod in node.pods:
                if node.logical_pod(pod) == logical_id:
                    comm = (ZTUNNEL_VARIANTS[self.ztunnel_variant][1] if pod.ztunnel
                            else None) or pod.comm
        _, proc = self._spawn_server(logical_id, specs, comm)
        self._await_ready(logical_id, proc)

    def server_specs(self, logical_id: str) -> tuple[ListenSpec, ...]:
        """What the emulated process of a namespace currently listens on."""
        entry = self._servers.get(logical_id)
        return entry[1] if entry else ()

    @staticmethod
    def _env() -> dict[str, str]:
        return repo_env()

    # ------------------------------------------------------------------ probes
    def connect(
        self,
        from_ns: str,
        dst_ip: str,
        dst_port: int,
        *,
        src_ip: str | None = None,
        mark: int | None = None,
        timeout: float = 2.0,
    ) -> Landing:
        """Open one TCP connection from inside `from_ns` and report where it landed.

        The client runs in a short-lived `ip netns exec <ns> python -m ambientlab.emulate
        connect` process; `src_ip` binds that address with IP_TRANSPARENT (ztunnel's
        original-source connect), `mark` sets SO_MARK.
        """
        argv = [*_python(), "ambientlab.emulate", "connect", "--dst", dst_ip,
                "--port", str(dst_port), "--timeout", str(timeout)]
        if src_ip is not None:
            argv += ["--src", src_ip]
        if mark is not None:
            argv += ["--mark", hex(mark)]
        ns = self.netns(from_ns)
        res = subprocess.run(
            ["ip", "netns", "exec", ns.name, *argv], capture_output=True, text=True,
            timeout=timeout + 10, cwd=str(REPO_ROOT), env=self._env(), check=False,
        )
        if res.returncode != 0 or not res.stdout.strip():
            raise LabError(f"probe from {from_ns} failed: {res.stderr.strip()}")
        return Landing.from_json(json.loads(res.stdout))

    # ------------------------------------------------------------------ collection
    def targets(self) -> dict[str, object]:
        """The `collect --local --targets` document for this lab."""
        return {
            "nodes": [
                {
                    "name": node.name,
                    "host_netns": self.netns_name(node.logical_host()),
                    "pods": [
                        {"namespace": p.namespace, "name": p.name,
                         "netns": self.netns_name(node.logical_pod(p))}
                        for p in sorted(node.pods, key=lambda p: (p.namespace, p.name))
                    ],
                }
                for node in NODES
            ]
        }

    def write_cluster(self, directory: str | os.PathLike[str]) -> list[Path]:
        """Write cluster/{pods,services,namespaces,nodes,endpointslices}.json into `directory`."""
        written = cluster_mod.write_cluster(Path(directory))
        image = ZTUNNEL_VARIANTS[self.ztunnel_variant][0]
        if image is not None:  # the variant's ztunnel image on both ztunnel pods
            pods = Path(directory) / "pods.json"
            doc = json.loads(pods.read_text())
            for item in doc["items"]:
                spec = item["spec"]
                for c in [*spec.get("containers", []), *spec.get("initContainers", [])]:
                    if c["image"].rsplit(":", 1)[0].endswith("/ztunnel"):
                        c["image"] = image
            pods.write_text(json.dumps(doc, indent=4, sort_keys=True) + "\n")
        return written

    def collect(
        self, out_path: str | os.PathLike[str], *extra_args: str, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run `python -m ambientctl collect --local --targets ... --cluster-dir ... -o OUT`."""
        targets_file = self.workdir / "targets.json"
        targets_file.write_text(json.dumps(self.targets(), indent=2) + "\n")
        cluster_dir = self.workdir / "cluster"
        cluster_dir.mkdir(exist_ok=True)
        self.write_cluster(cluster_dir)
        argv = [sys.executable, "-m", "ambientctl", "collect", "--local",
                "--targets", str(targets_file), "--cluster-dir", str(cluster_dir),
                "-o", str(out_path), *extra_args]
        env = self._env()
        if self.kube_proxy == "ipvs" and self.ipvsadm:
            from ambientlab import kubeproxy_ipvs

            shim = kubeproxy_ipvs.write_shim(self.workdir / "ipvsadm-shim", {
                n.name: self.netns_name(n.logical_host()) for n in NODES})
            env["PATH"] = f"{shim}:{env.get('PATH', os.defpath)}"
        res = subprocess.run(argv, capture_output=True, text=True, cwd=str(REPO_ROOT),
                             env=env, timeout=300, check=False)
        if check and res.returncode != 0:
            raise LabError(f"collect failed ({res.returncode}): {res.stderr.strip()}")
        return res

    # ------------------------------------------------------------------ faults
    def inject(self, name: str) -> None:
        """Apply a fault from `ambientlab.faults.FAULTS` (see there for what each does)."""
        from ambientlab.faults import FAULTS

        if name not in FAULTS:
            raise KeyError(f"unknown fault {name!r}; known: {sorted(FAULTS)}")
        FAULTS[name].apply(self)
        self.active_faults.append(name)

    def revert(self, name: str) -> None:
        """Undo a fault applied by `inject` (restores the exact healthy state)."""
        from ambientlab.faults import FAULTS

        FAULTS[name].revert(self)
        self.active_faults.remove(name)

    @contextlib.contextmanager
    def injected(self, name: str) -> Iterator[SeedLab]:
        """`with lab.injected("istioout-down"): ...` - the fault is reverted on exit."""
        self.inject(name)
        try:
            yield self
        finally:
            self.revert(name)
