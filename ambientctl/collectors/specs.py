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
- `nft` catches native nftables tables (Istio >= 1.28 `inet istio-ambient-*`, kube-proxy's
  nftables mode `ip/ip6 kube-proxy`) that `iptables-save` never shows; its JSON always
  carries table/chain/rule handles (as `nft -a` prints them), which say which base chains
  iptables-nft really registered and in which order chains of equal priority run
  (`analyzers.parse.nft_hooks`). It is NOT `nft -j list ruleset`: that also lists every
  rule of iptables-nft's own tables, translating each one back from the kernel's
  expressions, which costs ~30 s and ~1 GB on a 630k-rule node for rules `iptables-save`
  already holds. `NFT_TABLES_SCRIPT` lists every chain (cheap: no rules) and then each
  table in full, except the tables named as iptables-nft names its own (see there).
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
from typing import Any

from ambientctl.layout import COMMAND_FILES
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

    `file` is the name `layout.COMMAND_FILES` gives the id (`_spec`); `keep` (optional) decides whether a
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
    # Multiplies the per-command timeout (a command known to be slow on large nodes).
    timeout_factor: float = 1.0
    # A binary that is only there when a feature is in use (ipvsadm: kube-proxy in IPVS
    # mode): its absence is recorded as skipped with `absent_reason` ("not found"), not as
    # a failed collection that marks the bundle partial.
    optional: bool = False
    # The program the command needs when argv[0] is only the shell that runs it
    # (`nft-tables`): what a "not installed" note names.
    program: str | None = None

    @property
    def binary(self) -> str:
        """The program the command needs on the target."""
        return self.program or self.argv[0]


@dataclass(frozen=True, slots=True)
class VersionSpec:
    """A `--version`-style command whose output goes into the manifest's target entry."""

    tool: str
    argv: tuple[str, ...]


def _spec(id: str, argv: tuple[str, ...], **kw: Any) -> CommandSpec:
    """A catalogue command writing the file `layout.COMMAND_FILES` names for its id."""
    return CommandSpec(id, COMMAND_FILES[id], argv, **kw)


_LEGACY_NOTE = "printed no table: the iptables-legacy backend is unused here; not stored"

# iptables-nft's tables: family ip (iptables) / ip6 (ip6tables), one per iptables table
# name. Their rules come from `iptables-save`; `nft` lists only their chains.
IPTABLES_NFT_TABLES: tuple[str, ...] = ("filter", "nat", "mangle", "raw", "security")

# What `nft-tables` runs, in one `sh` (one exec, whatever the number of tables):
# 1. `nft -j list chains`: every chain of every table, base chains with hook, priority and
#    handle, and no rule. `nft list tables` would be the obvious table list, but nft 1.0.6
#    fills its whole cache (every rule) for it: as slow as `list ruleset` (measured).
# 2. the text `nft list chains`, for its `table FAMILY NAME {` lines (through `grep` when
#    the node has it: a `read` loop over 160k chains costs seconds): the tables that hold a
#    chain (a table without a chain is never entered by a packet);
# 3. `nft -j list table FAMILY NAME` for each of them, except ip/ip6 tables with an
#    iptables table name, recorded as `# skipped table FAMILY NAME` instead. Whether such a
#    table really is iptables-nft's is decided by the reader (`parse.nft`), from its base
#    chains and `iptables-save`, never assumed: a native table it could not read leaves the
#    walk insufficient-info, not "no rules". nft joins its arguments into ONE command line
#    and parses it (`list table ip x; flush ruleset` would be two commands), so a name
#    outside [A-Za-z0-9_.-] is never passed to it: `# not listed: ...` instead.
# Each JSON document follows a `# nft -j ...` line naming the command that printed it; a
# failed listing adds `# exit N`. No output is parsed or rewritten on the node (no jq
# there): `parse.nft.merge_table_listings` joins the documents into the one
# `{"nftables": [...]}` document `nft -j list ruleset` would have printed.
NFT_TABLES_SCRIPT = (
    "command -v nft >/dev/null 2>&1 || { echo 'sh: nft: not found' >&2; exit 127; }; "
    "echo '# nft -j list chains'; nft -j list chains || exit; "
    "if command -v grep >/dev/null 2>&1; then nft list chains | grep '^table '; "
    "else nft list chains; fi | while read -r k f t r; do "
    "case $k in table) ;; *) continue ;; esac; "
    "case $f in ip|ip6|inet|arp|bridge|netdev) ;; *) f=; esac; "
    "case $t in ''|*[!A-Za-z0-9_.-]*) f= ;; esac; "
    "if [ -z \"$f\" ]; then echo '# not listed: a table whose family or name nft could "
    "misread as more than a name'; continue; fi; "
    "case $f/$t in " + "|".join(f"ip/{n}|ip6/{n}" for n in IPTABLES_NFT_TABLES)
    + ") echo \"# skipped table $f $t\"; continue ;; esac; "
    "echo \"# nft -j list table $f $t\"; nft -j list table \"$f\" \"$t\" || echo \"# exit $?\"; "
    "done"
)

NETNS_SPECS: tuple[CommandSpec, ...] = (
    _spec("iptables-save", ("iptables-save",)),
    _spec("ip6tables-save", ("ip6tables-save",)),
    _spec("iptables-legacy-save", ("iptables-legacy-save",), keep=_has_table,
          keep_reason=_LEGACY_NOTE),
    _spec("ip6tables-legacy-save", ("ip6tables-legacy-save",), keep=_has_table,
          keep_reason=_LEGACY_NOTE),
    # 0.6 s on a 100k-rule iptables-nft node where `nft -j list ruleset` took 21 s (load 7,
    # docs/live-collection.md "nft"); the factor is for a 630k-rule node (each chain
    # listing dumps all 160k chains: 12-25 s at load 7-10, against 29 min for
    # `nft -j list ruleset` there) and a large native table (kube-proxy's
    # nftables mode), listed in full.
    _spec("nft-tables", ("sh", "-c", NFT_TABLES_SCRIPT, "nft-tables"), program="nft",
          timeout_factor=4.0),
    _spec("ipset", ("ipset", "list")),
    # Rules and routes are stored twice: JSON for machines, and the text iproute2 prints,
    # which the analyzers prefer so that every route and rule cited as evidence is the
    # line an operator would read, with its line number.
    _spec("ip-rule", ("ip", "-j", "rule")),
    _spec("ip-rule-text", ("ip", "rule")),
    _spec("ip6-rule", ("ip", "-6", "-j", "rule")),
    _spec("ip6-rule-text", ("ip", "-6", "rule")),
    _spec("ip-route", ("ip", "-j", "route", "show", "table", "all")),
    _spec("ip-route-text", ("ip", "route", "show", "table", "all")),
    _spec("ip6-route", ("ip", "-6", "-j", "route", "show", "table", "all")),
    _spec("ip6-route-text", ("ip", "-6", "route", "show", "table", "all")),
    _spec("ip-addr", ("ip", "-j", "-d", "addr")),
    _spec("ip-addr-text", ("ip", "-d", "addr")),
    _spec("ss-listen", ("ss", "-Hltnp")),
    # UDP sockets: ztunnel's in-pod DNS proxy (127.0.0.1:15053) for the DNS capture path.
    _spec("ss-listen-udp", ("ss", "-Hlunp")),
    _spec("sysctl", ("sysctl", "net")),
    # kube-proxy's IPVS mode: the virtual services and their real servers (numeric, exact
    # counters). Nodes only; a node without ipvsadm is recorded as not found.
    _spec("ipvsadm", ("ipvsadm", "-Ln", "--exact"),
                targets=frozenset({"node"}), optional=True,
                absent_reason=OPTIONAL_ABSENT + "ipvsadm is not installed on the node (kube-proxy "
                "is not in IPVS mode there, or the node image lacks the tool); not stored"),
    # Neighbours: whether an on-link next hop ever answered ARP/NDP (a veth peer that owns
    # no address and does not proxy_arp leaves the entry FAILED/INCOMPLETE).
    _spec("ip-neigh", ("ip", "-j", "neigh", "show")),
    _spec("ip-neigh-text", ("ip", "neigh", "show")),
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
    _spec(
        "ztunnel-config-dump",
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


def programs() -> set[str]:
    """Every program the catalogue starts on a target: each argv[0] (`sh` for `nft-tables`)
    and the program such a script needs (`CommandSpec.program`)."""
    return {a[0] for a in all_argv()} | {s.binary for s in NETNS_SPECS}


def admin_argv() -> list[tuple[str, ...]]:
    """The argv of the ztunnel admin reads (not in the batch catalogue: run one by one,
    or through the API server's port-forward); the read-only test checks them too."""
    return [s.argv for s in ZTUNNEL_SPECS]
