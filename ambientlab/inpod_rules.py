"""What istio-cni (and its lookalikes) program into a network namespace, ready to load.

Each function returns a `RuleLoad`: iptables-restore / ip6tables-restore / nft -f / ipset
restore input and `ip` commands, built from Istio's own goldens (`ambientlab.goldens`) so
the lab holds exactly what istio-cni would install. `apply()` loads one into a named netns
with the real tools (`ip netns exec`), nothing else.

Variants of the in-pod pod rules (istio-datapath.md §3.3, §3.6, §3.9):

* "redirect": `inpod-iptables/default.golden` (1.24+ default, DNS capture on);
* "tproxy":   `inpod-iptables-history/istio-1.21.0_default.golden` (command form, TPROXY
  inbound in mangle, DNS capture without the mark exclusion);
* "nft":      `inpod-nftables/default.golden` (1.28+ native nftables backend);
* "ipv6":     `inpod-iptables/default_ipv6.golden` (v4 + v6 blobs);
* "ingress":  `inpod-iptables/ingress.golden` (bypass-inbound-capture: outbound only).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ambientlab import goldens

INPOD_IP_RULE = ("rule", "add", "fwmark", "0x111/0xfff", "pref", "32764", "lookup", "100")
INPOD_ROUTE = ("route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100")
INPOD_IP6_RULE = ("-6", "rule", "add", "fwmark", "0x111/0xfff", "pref", "32764", "lookup", "100")
INPOD_ROUTE6 = ("-6", "route", "add", "local", "::/0", "dev", "lo", "table", "100")
# The v6 probe SNAT address: istio-cni's real default, and the test value its `*_ipv6`
# goldens carry instead (`constructTestConfig()`, data/istio/SOURCES.md).
PROBE_SNAT6 = "fd16:9254:7127:1337:ffff:ffff:ffff:ffff"
GOLDEN_TEST_PROBE6 = "e9ac:1e77:90ca:399f:4d6d:ece2:2f9b:3164"

POD_VARIANTS = ("redirect", "nodns", "tproxy", "nft", "ipv6", "ingress")


@dataclass(frozen=True)
class RuleLoad:
    """Inputs for the real tools; `ip` holds argv tails for `ip` (after "ip")."""

    iptables: str | None = None
    ip6tables: str | None = None
    nft: str | None = None
    ipset: str | None = None
    ip: tuple[tuple[str, ...], ...] = ()

    def __add__(self, other: RuleLoad) -> RuleLoad:
        def cat(a: str | None, b: str | None) -> str | None:
            return a if b is None else b if a is None else a + b

        return RuleLoad(
            iptables=cat(self.iptables, other.iptables),
            ip6tables=cat(self.ip6tables, other.ip6tables),
            nft=cat(self.nft, other.nft),
            ipset=cat(self.ipset, other.ipset),
            ip=self.ip + other.ip,
        )


def pod_ambient(variant: str = "redirect") -> RuleLoad:
    """The rules istio-cni installs in an ambient pod's netns, plus its ip rule/route."""
    routing = (INPOD_IP_RULE, INPOD_ROUTE)
    if variant == "redirect":
        v4, _ = goldens.restore_blobs(goldens.read("inpod-iptables/default.golden"))
        return RuleLoad(iptables=v4, ip=routing)
    if variant == "nodns":
        v4, _ = goldens.restore_blobs(
            goldens.read("inpod-iptables/dns_pod_disabled_and_on_globally.golden"))
        return RuleLoad(iptables=v4, ip=routing)
    if variant == "ingress":
        v4, _ = goldens.restore_blobs(goldens.read("inpod-iptables/ingress.golden"))
        return RuleLoad(iptables=v4, ip=routing)
    if variant == "ipv6":
        v4, v6 = goldens.restore_blobs(goldens.read("inpod-iptables/default_ipv6.golden"))
        return RuleLoad(iptables=v4, ip6tables=v6, ip=(*routing, INPOD_IP6_RULE, INPOD_ROUTE6))
    if variant == "tproxy":
        v4, _ = goldens.commands_to_restore(
            goldens.read("inpod-iptables-history/istio-1.21.0_default.golden")
        )
        return RuleLoad(iptables=v4, ip=routing)
    if variant == "nft":
        tx = goldens.nft_transaction(goldens.read("inpod-nftables/default.golden"))
        return RuleLoad(nft=tx, ip=routing)
    raise ValueError(f"unknown in-pod variant {variant!r} (one of {', '.join(POD_VARIANTS)})")


def pod_ambient_dual_stack() -> RuleLoad:
    """The "ipv6" load as a real dual-stack cluster holds it: the golden's test probe address
    replaced by the real default, so the pod accepts what the node's v6 probe SNAT sends."""
    load = pod_ambient("ipv6")
    assert load.ip6tables is not None
    return RuleLoad(iptables=load.iptables, ip=load.ip,
                    ip6tables=load.ip6tables.replace(GOLDEN_TEST_PROBE6, PROBE_SNAT6))


def host_probe_dual_stack(
    v4_members: Iterable[tuple[str, str]], v6_members: Iterable[tuple[str, str]]
) -> RuleLoad:
    """A dual-stack node's probe SNAT (1.24+, `hostprobe_ipv6.golden`): `ISTIO_POSTRT` in
    iptables and ip6tables, sets `istio-inpod-probes-v4` and `istio-inpod-probes-v6`."""
    v4, v6 = goldens.restore_blobs(goldens.read("inpod-iptables/hostprobe_ipv6.golden"))
    sets = probe_ipset("istio-inpod-probes-v4", v4_members) + probe_ipset(
        "istio-inpod-probes-v6", v6_members, family="inet6")
    return RuleLoad(iptables=v4, ip6tables=v6, ipset=sets)


def host_probe(variant: str, members: Iterable[tuple[str, str]]) -> RuleLoad:
    """The node's probe SNAT rule and probe set with (pod ip, pod uid) members.

    "redirect" (1.24+): `hostprobe.golden` (`-I POSTROUTING 1`, set `istio-inpod-probes-v4`);
    "tproxy" (1.21): `istio-1.21.0_hostprobe.golden` (`-A POSTROUTING`, set
    `istio-inpod-probes`); "nft": `inpod-nftables/hostprobe.golden` + the nft probe set.
    The ipset is `hash:ip family inet comment`, the pod UID as member comment (istio-cni
    `cni/pkg/ipset`).
    """
    members = list(members)
    if variant == "nft":
        tx = goldens.probe_sets_transaction(members) + goldens.nft_transaction(
            goldens.read("inpod-nftables/hostprobe.golden")
        )
        # `skuid 1000` is the golden's (fake) kubelet UID: the lab's kubelet probes run as 1000.
        return RuleLoad(nft=tx)
    if variant == "tproxy":
        v4, _ = goldens.commands_to_restore(
            goldens.read("inpod-iptables-history/istio-1.21.0_hostprobe.golden")
        )
        set_name = "istio-inpod-probes"
    else:
        v4, _ = goldens.restore_blobs(goldens.read("inpod-iptables/hostprobe.golden"))
        set_name = "istio-inpod-probes-v4"
    return RuleLoad(iptables=v4, ipset=probe_ipset(set_name, members))


def probe_ipset(name: str, members: Iterable[tuple[str, str]], family: str = "inet") -> str:
    """`ipset restore` input for a probe set (`family inet6` for the v6 one)."""
    lines = [f"create {name} hash:ip family {family} comment"]
    lines += [f'add {name} {ip} comment "{uid}"' for ip, uid in members]
    return "\n".join(lines) + "\n"


def sidecar_cni(pod_ip: str) -> RuleLoad:
    """Sidecar pod rules as istio-cni's plugin writes them (`cni-plugin_basic.txt.golden`).

    The golden is already concrete (no placeholders); `pod_ip` is unused by the rules and
    kept for symmetry with the other builders.
    """
    del pod_ip
    v4, _ = goldens.restore_blobs(goldens.read("sidecar-contrast/cni-plugin_basic.txt.golden"))
    return RuleLoad(iptables=v4)


# Cilium's own ztunnel integration, transcribed from cilium/cilium pkg/ztunnel/iptables/inpod.go
# (commit 7c48df96f485): chains CILIUM_PREROUTING/CILIUM_OUTPUT, same marks as istio-cni.
CILIUM_ZTUNNEL = """\
*mangle
-N CILIUM_PREROUTING
-N CILIUM_OUTPUT
-A PREROUTING -j CILIUM_PREROUTING
-A OUTPUT -j CILIUM_OUTPUT
-A CILIUM_PREROUTING -m mark --mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff
-A CILIUM_OUTPUT -m connmark --mark 0x111/0xfff -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff
COMMIT
*nat
-N CILIUM_PREROUTING
-N CILIUM_OUTPUT
-A PREROUTING -j CILIUM_PREROUTING
-A OUTPUT -j CILIUM_OUTPUT
-A CILIUM_PREROUTING ! -d 127.0.0.1/32 -p tcp -m tcp ! --dport 15008 -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15006
-A CILIUM_OUTPUT -p tcp -m mark --mark 0x111/0xfff -j ACCEPT
-A CILIUM_OUTPUT ! -d 127.0.0.1/32 -o lo -j ACCEPT
-A CILIUM_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001
COMMIT
"""


def cilium_ztunnel() -> RuleLoad:
    """Cilium's in-pod rules (a lookalike the classifier must not call istio-cni)."""
    return RuleLoad(iptables=CILIUM_ZTUNNEL, ip=(INPOD_IP_RULE, INPOD_ROUTE))


# Legacy (1.18-1.20) node rules, from the reconstructed command list in
# shared/upstream-captures/istio/legacy/ with the seed lab's concrete values (ztunnel veth
# veth9a1b2c3d, ztunnel 10.244.2.3, node 10.244.2.1, geneve 6081, one enrolled pod).
LEGACY_NODE = """\
*nat
-N ztunnel-PREROUTING
-N ztunnel-POSTROUTING
-I PREROUTING -j ztunnel-PREROUTING
-I POSTROUTING -j ztunnel-POSTROUTING
-A ztunnel-PREROUTING -m mark --mark 0x100/0x100 -j ACCEPT
-A ztunnel-POSTROUTING -m mark --mark 0x100/0x100 -j ACCEPT
COMMIT
*mangle
-N ztunnel-PREROUTING
-N ztunnel-POSTROUTING
-N ztunnel-OUTPUT
-N ztunnel-INPUT
-N ztunnel-FORWARD
-I PREROUTING -j ztunnel-PREROUTING
-I POSTROUTING -j ztunnel-POSTROUTING
-I OUTPUT -j ztunnel-OUTPUT
-I INPUT -j ztunnel-INPUT
-I FORWARD -j ztunnel-FORWARD
-A ztunnel-PREROUTING -i istioin -j MARK --set-mark 0x200/0x200
-A ztunnel-PREROUTING -i istioin -j RETURN
-A ztunnel-PREROUTING -i istioout -j MARK --set-mark 0x200/0x200
-A ztunnel-PREROUTING -i istioout -j RETURN
-A ztunnel-FORWARD -m mark --mark 0x220/0x220 -j CONNMARK --save-mark --nfmask 0x220 --ctmask 0x220
-A ztunnel-INPUT -m mark --mark 0x220/0x220 -j CONNMARK --save-mark --nfmask 0x220 --ctmask 0x220
-A ztunnel-FORWARD -m mark --mark 0x210/0x210 -j CONNMARK --save-mark --nfmask 0x210 --ctmask 0x210
-A ztunnel-INPUT -m mark --mark 0x210/0x210 -j CONNMARK --save-mark --nfmask 0x210 --ctmask 0x210
-A ztunnel-OUTPUT -m owner --socket-exists -p tcp -m set --match-set ztunnel-pods-ips dst --source 10.244.2.1 -j MARK --set-mark 0x220
-A ztunnel-PREROUTING -p udp -m udp --dport 6081 -j RETURN
-A ztunnel-PREROUTING -m connmark --mark 0x220/0x220 -j MARK --set-mark 0x200/0x200
-A ztunnel-PREROUTING -m mark --mark 0x200/0x200 -j RETURN
-A ztunnel-PREROUTING ! -i veth9a1b2c3d -m connmark --mark 0x210/0x210 -j MARK --set-mark 0x040/0x040
-A ztunnel-PREROUTING -m mark --mark 0x040/0x040 -j RETURN
-A ztunnel-PREROUTING -i veth9a1b2c3d ! --source 10.244.2.3 -j MARK --set-mark 0x210/0x210
-A ztunnel-PREROUTING -m mark --mark 0x200/0x200 -j RETURN
-A ztunnel-PREROUTING -i veth9a1b2c3d -j MARK --set-mark 0x220/0x220
-A ztunnel-PREROUTING -p udp -j MARK --set-mark 0x220/0x220
-A ztunnel-PREROUTING -m mark --mark 0x200/0x200 -j RETURN
-A ztunnel-PREROUTING -p tcp -m set --match-set ztunnel-pods-ips src -j MARK --set-mark 0x100/0x100
COMMIT
*filter
-N ztunnel-FORWARD
-I FORWARD -j ztunnel-FORWARD
-A ztunnel-FORWARD -m mark --mark 0x100/0x100 -j ACCEPT
COMMIT
"""

LEGACY_ZTUNNEL = """\
*mangle
-A PREROUTING -p tcp -i pistioin -m tcp --dport 15008 -j TPROXY --tproxy-mark 0x400/0xfff --on-port 15008 --on-ip 127.0.0.1
-A PREROUTING -p tcp -i pistioout -j TPROXY --tproxy-mark 0x400/0xfff --on-port 15001 --on-ip 127.0.0.1
-A PREROUTING -p tcp -i pistioin -j TPROXY --tproxy-mark 0x400/0xfff --on-port 15006 --on-ip 127.0.0.1
-A PREROUTING -p tcp -i eth0 ! --dst 10.244.2.3 -j MARK --set-mark 0x4d3/0xfff
COMMIT
"""


def legacy_node() -> RuleLoad:
    """Legacy node-level rules, ipset and ip rules (no geneve links: the kernel has none)."""
    return RuleLoad(
        iptables=LEGACY_NODE,
        ipset='create ztunnel-pods-ips hash:ip comment\nadd ztunnel-pods-ips 10.244.2.4 comment "uid-sleep"\n',
        ip=(
            ("rule", "add", "priority", "100", "fwmark", "0x200/0x200", "goto", "32766"),
            ("rule", "add", "priority", "101", "fwmark", "0x100/0x100", "lookup", "101"),
            ("rule", "add", "priority", "102", "fwmark", "0x040/0x040", "lookup", "102"),
            ("rule", "add", "priority", "103", "table", "100"),
        ),
    )


def legacy_ztunnel() -> RuleLoad:
    """Legacy rules inside the ztunnel pod's netns (TPROXY from pistioin/pistioout)."""
    return RuleLoad(
        iptables=LEGACY_ZTUNNEL,
        ip=(
            ("rule", "add", "priority", "20000", "fwmark", "0x400/0xfff", "lookup", "100"),
            ("rule", "add", "priority", "20003", "fwmark", "0x4d3/0xfff", "lookup", "100"),
            ("route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100"),
        ),
    )


def _run(argv: Sequence[str], stdin: str | None = None) -> None:
    res = subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, check=False, timeout=60
    )
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")


def apply(netns: str, load: RuleLoad) -> None:
    """Load `load` into the named netns (ipsets first: rules reference them)."""
    exec_ = ["ip", "netns", "exec", netns]
    if load.ipset is not None:
        _run([*exec_, "ipset", "restore"], load.ipset)
    if load.iptables is not None:
        _run([*exec_, "iptables-restore", "--noflush"], load.iptables)
    if load.ip6tables is not None:
        _run([*exec_, "ip6tables-restore", "--noflush"], load.ip6tables)
    if load.nft is not None:
        _run([*exec_, "nft", "-f", "-"], load.nft)
    for argv in load.ip:
        _run(["ip", "-n", netns, *argv])
