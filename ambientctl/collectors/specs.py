"""The fixed catalogue of read-only commands: one `CommandSpec` per bundle file.

Every collector (local, docker, kube exec, ssh) runs exactly these argv vectors inside a
target's network namespace and stores the bytes under `bundle.layout` names. The catalogue
is data, not code paths, so a test can prove it is read-only (no `-A/-I/-D/-F/-X/-N`,
no `add`/`del`/`flush`/`set`/`restore`, no `sysctl -w`, ...).

Why these commands:
- `iptables-save` (and `ip6tables-save`) print both backends' view in one dump; the nft
  backend warns in a comment when legacy tables exist, so `iptables-legacy-save` is run
  too and kept only when it printed a table (an empty legacy dump is the normal case and
  would only add noise).
- `nft -j list ruleset` catches native nftables tables (Istio >= 1.28 `inet istio-ambient-*`)
  that `iptables-save` never shows; its JSON always carries table/chain/rule handles (as
  `nft -a` prints them), which say which base chains iptables-nft really registered and
  in which order chains of equal priority run (`analyzers.parse.nft_hooks`).
- `ip -j ...` JSON is preferred by the reader; `ip -d addr` text is kept beside its JSON
  because support engineers read it, and it costs a few KB.
- `sysctl net` prints the `net.*` subtree only (`sysctl -a` would add kernel/vm noise).

Tool versions are evidence for the parsers (iproute2 changed `ip -j rule` keys before), so
`VERSION_SPECS` are run once per node and recorded in the manifest, not stored as files.

`ZTUNNEL_SPECS` hold the one read that is not a netfilter/iproute2 dump: ztunnel's admin
`GET /config_dump` (istio-datapath.md §4.3). The admin API listens on localhost:15000 inside
the ztunnel pod's OWN netns, so the request must be made from inside that netns; the
ztunnel image is distroless (no curl, no shell), so node-level sources (`--local`,
`--kind`, `--ssh`) run the node's curl there, and Kubernetes-exec-only collection fetches
the same URL through the API server's pod port-forward (`kube.KubePortForwardTransport`).
Only targets of kind "ztunnel" (one per ztunnel pod) get it; its file lands at
`layout.config_dump_path(node)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ambientctl.raw import OPTIONAL_ABSENT


def _has_table(stdout: bytes) -> bool:
    """True when an `*-save` dump declares at least one table (a line starting with `*`).

    `iptables-legacy-save` prints nothing at all when no legacy table is instantiated in the
    namespace; a dump with tables is what tells the analyzers both backends are in use.
    """
    return stdout.startswith(b"*") or b"\n*" in stdout


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One read-only command and the bundle file its stdout becomes.

    `file` is a name from `layout.NETNS_FILES`; `keep` (optional) decides whether a
    successful output is worth storing (see `iptables-legacy-save`); `targets` says on which
    kind of target the command runs ("node", "pod" or both).
    """

    id: str
    file: str
    argv: tuple[str, ...]
    keep: Callable[[bytes], bool] | None = None
    keep_reason: str | None = None  # manifest note when `keep` refused the output
    targets: frozenset[str] = frozenset({"node", "pod"})
    # Exit codes that mean "the source does not exist in this netns" rather than "the
    # collection failed" (curl exit 7: nothing listens on the admin port): recorded as
    # skipped with `absent_reason`, not as a failure that marks the bundle partial.
    absent_exit_codes: frozenset[int] = frozenset()
    absent_reason: str | None = None
    # Which other source sees the data when the binary is missing on the target.
    missing_hint: str | None = None
    # Multiplies the per-command timeout: `nft -j list ruleset` over iptables-nft tables
    # takes ~30 s where iptables-save takes 1.4 s (perf-reliability.md 1.7, and measured
    # again here through every transport on a 630k-rule node).
    timeout_factor: float = 1.0
    # A binary that is only there when a feature is in use (ipvsadm: kube-proxy in IPVS
    # mode): its absence is recorded as skipped with `absent_reason` ("not found"), not as
    # a failed collection that marks the bundle partial.
    optional: bool = False

    @property
    def binary(self) -> str:
        """The program the command needs on the target."""
        return self.argv[0]


@dataclass(frozen=True, slots=True)
class VersionSpec:
    """A `--version`-style command whose output goes into the manifest's target entry."""

    tool: str
    argv: tuple[str, ...]


_LEGACY_NOTE = "printed no table: the iptables-legacy backend is unused here; not stored"

NETNS_SPECS: tuple[CommandSpec, ...] = (
    CommandSpec("iptables-save", "iptables-save.txt", ("iptables-save",)),
    CommandSpec("ip6tables-save", "ip6tables-save.txt", ("ip6tables-save",)),
    CommandSpec(
        "iptables-legacy-save",
        "iptables-legacy-save.txt",
        ("iptables-legacy-save",),
        keep=_has_table,
        keep_reason=_LEGACY_NOTE,
    ),
    CommandSpec(
        "ip6tables-legacy-save",
        "ip6tables-legacy-save.txt",
        ("ip6tables-legacy-save",),
        keep=_has_table,
        keep_reason=_LEGACY_NOTE,
    ),
    CommandSpec("nft-ruleset", "nft-ruleset.json", ("nft", "-j", "list", "ruleset"),
                timeout_factor=4.0),
    CommandSpec("ipset", "ipset.txt", ("ipset", "list")),
    # Rules and routes are stored twice: JSON for machines, and the text iproute2 prints,
    # which the analyzers prefer so that every route and rule cited as evidence is the
    # line an operator would read, with its line number.
    CommandSpec("ip-rule", "ip-rule.json", ("ip", "-j", "rule")),
    CommandSpec("ip-rule-text", "ip-rule.txt", ("ip", "rule")),
    CommandSpec("ip6-rule", "ip6-rule.json", ("ip", "-6", "-j", "rule")),
    CommandSpec("ip6-rule-text", "ip6-rule.txt", ("ip", "-6", "rule")),
    CommandSpec("ip-route", "ip-route.json", ("ip", "-j", "route", "show", "table", "all")),
    CommandSpec("ip-route-text", "ip-route.txt", ("ip", "route", "show", "table", "all")),
    CommandSpec(
        "ip6-route", "ip6-route.json", ("ip", "-6", "-j", "route", "show", "table", "all")
    ),
    CommandSpec(
        "ip6-route-text", "ip6-route.txt", ("ip", "-6", "route", "show", "table", "all")
    ),
    CommandSpec("ip-addr", "ip-addr.json", ("ip", "-j", "-d", "addr")),
    CommandSpec("ip-addr-text", "ip-addr.txt", ("ip", "-d", "addr")),
    CommandSpec("ss-listen", "ss-listen.txt", ("ss", "-Hltnp")),
    # UDP sockets: ztunnel's in-pod DNS proxy (127.0.0.1:15053) for the DNS capture path.
    CommandSpec("ss-listen-udp", "ss-listen-udp.txt", ("ss", "-Hlunp")),
    CommandSpec("sysctl", "sysctl.txt", ("sysctl", "net")),
    # kube-proxy's IPVS mode: the virtual services and their real servers (numeric, exact
    # counters). Nodes only; a node without ipvsadm is recorded as not found.
    CommandSpec("ipvsadm", "ipvsadm.txt", ("ipvsadm", "-Ln", "--exact"),
                targets=frozenset({"node"}), optional=True,
                absent_reason=OPTIONAL_ABSENT + "ipvsadm is not installed on the node (kube-proxy "
                "is not in IPVS mode there, or the node image lacks the tool); not stored"),
    # Neighbours: whether an on-link next hop ever answered ARP/NDP (a veth peer that owns
    # no address and does not proxy_arp leaves the entry FAILED/INCOMPLETE).
    CommandSpec("ip-neigh", "ip-neigh.json", ("ip", "-j", "neigh", "show")),
    CommandSpec("ip-neigh-text", "ip-neigh.txt", ("ip", "neigh", "show")),
)

ZTUNNEL_ADMIN_PORT = 15000
ZTUNNEL_ADMIN_PATH = "/config_dump"
# Read-only: one GET; `--fail` turns an HTTP error into exit 22 instead of storing the error
# page as JSON; `--max-time` bounds a hung admin server (curl(1) EXIT CODES: 7 = could not
# connect, 22 = HTTP error, 28 = timeout).
ZTUNNEL_ADMIN_ARGV: tuple[str, ...] = (
    "curl",
    "-sS",
    "--fail",
    "--max-time",
    "10",
    f"http://127.0.0.1:{ZTUNNEL_ADMIN_PORT}{ZTUNNEL_ADMIN_PATH}",
)

ZTUNNEL_SPECS: tuple[CommandSpec, ...] = (
    CommandSpec(
        "ztunnel-config-dump",
        "config_dump.json",
        ZTUNNEL_ADMIN_ARGV,
        targets=frozenset({"ztunnel"}),
        # 7: nothing listens; 1: with this fixed http:// URL, only "Received HTTP/0.9 when
        # not allowed" - the listener does not speak HTTP/1.x (not ztunnel's admin API).
        absent_exit_codes=frozenset({1, 7}),
        absent_reason=(
            f"no ztunnel admin API on 127.0.0.1:{ZTUNNEL_ADMIN_PORT} in the ztunnel pod's "
            "netns (curl exit 7: nothing listens; exit 1: the listener does not answer "
            "HTTP): ztunnel down, or not the Rust ztunnel; not stored"
        ),
        missing_hint=(
            "curl is not on the node; `collect` without --kind/--ssh/--local (Kubernetes "
            "API port-forward to the ztunnel pod's :15000) fetches it"
        ),
    ),
)

# Every spec a plan may run: each target kind picks its own (`specs_for`).
ALL_SPECS: tuple[CommandSpec, ...] = NETNS_SPECS + ZTUNNEL_SPECS

VERSION_SPECS: tuple[VersionSpec, ...] = (
    VersionSpec("iptables", ("iptables", "--version")),
    VersionSpec("iproute2", ("ip", "-V")),
    VersionSpec("ipset", ("ipset", "--version")),
    VersionSpec("nft", ("nft", "--version")),
    VersionSpec("kernel", ("uname", "-r")),
)


def specs_for(kind: str, specs: tuple[CommandSpec, ...] = NETNS_SPECS) -> tuple[CommandSpec, ...]:
    """The specs that apply to a target of `kind` ("node", "pod"; "ztunnel" with
    `specs=ALL_SPECS`), in catalogue order."""
    return tuple(s for s in specs if kind in s.targets)


def all_argv() -> list[tuple[str, ...]]:
    """Every argv the catalogue can run (files and versions): what the read-only test checks."""
    return [s.argv for s in NETNS_SPECS] + [v.argv for v in VERSION_SPECS]


def admin_argv() -> list[tuple[str, ...]]:
    """The argv of the ztunnel admin reads (not in the batch catalogue: run one by one,
    or through the API server's port-forward); the read-only test checks them too."""
    return [s.argv for s in ZTUNNEL_SPECS]
