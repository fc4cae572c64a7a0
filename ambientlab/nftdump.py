"""Load rules into a throwaway network namespace and dump them the way a collector would.

Used to produce (and, in kernel tests, re-produce) the `nft -j list ruleset` / `nft list
ruleset` fixtures of `tests/fixtures/raw/nft/`: what the real nft prints for Istio's
goldens, not what we think it prints. Every namespace gets a unique name and is deleted
in a `finally`, even when loading fails.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ambientlab import goldens

# A small rule set that exercises every translation of the nft parser (and a few
# expressions it must keep as leftovers). Loaded verbatim with `nft -f`.
EXPRESSIONS = """\
add table inet t
add set inet t istio-inpod-probes-v4 { type ipv4_addr ; comment "UUID of the pods that are part of ambient mesh" ; }
add element inet t istio-inpod-probes-v4 { 10.244.1.7 comment "7d3b1a2c-0000-4000-8000-000000000001" }
add element inet t istio-inpod-probes-v4 { 10.244.1.4 comment "uid-2" }
add set inet t nets { type ipv4_addr ; flags interval ; elements = { 10.0.0.0/8, 192.168.1.1-192.168.1.9 } ; }
add chain inet t pre { type filter hook prerouting priority mangle ; policy accept ; }
add chain inet t nat_pre { type nat hook prerouting priority dstnat ; }
add chain inet t post { type nat hook postrouting priority srcnat ; }
add chain inet t out { type route hook output priority -150 ; }
add chain inet t in { type filter hook input priority filter ; policy drop ; }
add chain inet t fwdc { type filter hook forward priority security ; }
add chain inet t sub
add rule inet t pre ip protocol tcp tproxy ip to 127.0.0.1:15001 meta mark set meta mark & 0xfffff000 | 0x400 accept
add rule inet t pre meta l4proto tcp tcp dport 15008 tproxy to :15008 meta mark set 0x111
add rule inet t pre iifname "eth0" ip saddr 10.0.0.0/8 goto sub
add rule inet t pre ct state established,related accept
add rule inet t pre ct state new counter jump sub
add rule inet t pre meta mark set ct mark
add rule inet t pre ct mark set ct mark & 0xfffff000 | 0x111
add rule inet t pre meta mark set meta mark & 0xfffff000 | 0x539
add rule inet t pre ct mark & 0xfff == 0x111 accept
add rule inet t pre ip daddr @nets drop
add rule inet t pre ip saddr != @nets return
add rule inet t pre notrack
add rule inet t pre ct zone set 1
add rule inet t pre tcp dport { 80, 443 } accept
add rule inet t pre meta mark 0x100 accept
add rule inet t pre tcp flags syn accept
add rule inet t pre udp sport 53 udp dport 1-1024 accept
add rule inet t pre meta nfproto ipv4 accept
add rule inet t pre ip6 daddr ::1 accept
add rule inet t pre ip6 nexthdr tcp accept
add rule inet t pre oifname != "lo" accept
add rule inet t pre meta mark set mark or 0x100
add rule inet t pre meta mark set mark and 0xfffffeff
add rule inet t pre mark set mark xor 0x4
add rule inet t pre ct mark set mark
add rule inet t pre ct mark set 0x5
add rule inet t pre meta mark set 0x1 accept
add rule inet t pre log prefix "x " reject
add rule inet t pre fib daddr type local accept
add rule inet t pre ip daddr . tcp dport { 10.0.0.1 . 80 } accept
add rule inet t nat_pre tcp dport 80 dnat ip to 10.0.0.1:8080
add rule inet t nat_pre tcp dport 81 redirect to :15006
add rule inet t nat_pre tcp dport 82 redirect
add rule inet t post meta l4proto tcp skuid 1000 ip daddr @istio-inpod-probes-v4 counter snat ip to 169.254.7.127
add rule inet t post masquerade
add rule inet t post oifname "eth0" masquerade random,persistent
add rule inet t post ip daddr 10.0.0.1 tcp dport 5 snat ip to 10.0.0.2-10.0.0.9:1000-2000
add rule inet t out meta skuid 1337 accept
add rule inet t out meta skgid 1337 accept
add rule inet t out meta skuid != 1337 accept
add rule inet t out socket transparent 1 accept
add rule inet t in ip saddr 1.2.3.4 accept comment "hello"
add rule inet t sub meta iifname "lo" counter accept
add rule inet t sub meta oif "lo" accept
add rule inet t sub continue
add table ip nat2
add chain ip nat2 PRE { type nat hook prerouting priority -100 ; }
add rule ip nat2 PRE tcp dport 99 dnat to 10.1.1.1
add rule ip nat2 PRE ip daddr 10.96.0.1 tcp dport 443 dnat to 10.0.0.1:6443
"""

# Pod IPs and UIDs of the in-pod lab, used as probe-set members of the hostprobe cases.
PROBE_MEMBERS = (
    ("10.244.1.7", "3c1f6f0e-7d7b-4b4e-9f3a-5a1c2f0d7a01"),
    ("10.244.1.4", "b5a0e1d2-2c4f-4a8e-8d6b-0e9f1a2b3c04"),
)
PROBE_MEMBERS_V6 = (("fd00:10:244:1::7", "3c1f6f0e-7d7b-4b4e-9f3a-5a1c2f0d7a01"),)


@dataclass(frozen=True)
class DumpCase:
    """What to load: an nft transaction and/or iptables-restore input (iptables-nft)."""

    name: str
    nft: str | None = None
    iptables: str | None = None
    ip6tables: str | None = None


@dataclass(frozen=True)
class Dump:
    """What the tools printed (stdout of each; stderr of `nft list ruleset` apart)."""

    json: str
    text: str
    text_stderr: str


def cases() -> list[DumpCase]:
    """Every golden of `inpod-nftables/` plus iptables-nft, mixed, expression and empty cases."""
    out = []
    for stem in goldens.nft_golden_names():
        tx = goldens.nft_transaction(goldens.read(f"inpod-nftables/{stem}.golden"))
        if stem.startswith("hostprobe"):
            v6 = PROBE_MEMBERS_V6 if stem.endswith("_ipv6") else None
            tx = goldens.probe_sets_transaction(PROBE_MEMBERS, v6) + tx
        out.append(DumpCase(stem, nft=tx))
    v4, _ = goldens.restore_blobs(goldens.read("inpod-iptables/default.golden"))
    out.append(DumpCase("iptables-nft-default", iptables=v4))
    native = goldens.nft_transaction(goldens.read("inpod-nftables/default.golden"))
    out.append(DumpCase("mixed-native-and-iptables-nft", nft=native, iptables=v4))
    out.append(DumpCase("expressions", nft=EXPRESSIONS))
    out.append(DumpCase("empty"))
    return out


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, input=stdin, capture_output=True, text=True, check=False, timeout=60
    )


def _check(res: subprocess.CompletedProcess[str], what: str) -> None:
    if res.returncode != 0:
        raise RuntimeError(f"{what} failed ({res.returncode}): {res.stderr.strip()}")


@contextmanager
def scratch_netns(prefix: str = "amb-nft") -> Iterator[str]:
    """A fresh, uniquely named network namespace, deleted on exit (even on failure)."""
    name = f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    _check(_run(["ip", "netns", "add", name]), f"ip netns add {name}")
    try:
        yield name
    finally:
        _run(["ip", "netns", "del", name])


def load(ns: str, case: DumpCase) -> None:
    """Load a case's rules into `ns` with the real tools."""
    if case.iptables is not None:
        _check(
            _run(["ip", "netns", "exec", ns, "iptables-nft-restore", "--noflush"], case.iptables),
            f"{case.name}: iptables-nft-restore",
        )
    if case.ip6tables is not None:
        _check(
            _run(["ip", "netns", "exec", ns, "ip6tables-nft-restore", "--noflush"], case.ip6tables),
            f"{case.name}: ip6tables-nft-restore",
        )
    if case.nft is not None:
        _check(
            _run(["ip", "netns", "exec", ns, "nft", "-f", "-"], case.nft), f"{case.name}: nft -f"
        )


def dump(ns: str) -> Dump:
    """`nft -j list ruleset` and `nft list ruleset` as a collector stores them."""
    js = _run(["ip", "netns", "exec", ns, "nft", "-j", "list", "ruleset"])
    _check(js, "nft -j list ruleset")
    tx = _run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"])
    _check(tx, "nft list ruleset")
    return Dump(json=js.stdout, text=tx.stdout, text_stderr=tx.stderr)


def load_and_dump(case: DumpCase) -> Dump:
    """Load a case into a scratch netns and dump it."""
    with scratch_netns() as ns:
        load(ns, case)
        return dump(ns)
