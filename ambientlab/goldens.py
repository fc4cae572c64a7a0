"""Istio's own rule goldens, turned into input the real tools accept.

The files under `data/istio/` are byte-for-byte copies of istio-cni unit-test goldens (see
`data/istio/SOURCES.md`). They are not directly loadable:

* `inpod-iptables/*.golden` start with the state-check commands the test stub saw
  (`iptables-save`, `ip6tables-save`) and `*_ipv6` goldens hold the v4 restore blob
  followed by the v6 one;
* the 1.21 goldens are in command form (`iptables -t mangle -A ...`);
* `inpod-nftables/hostprobe*.golden` reference the probe sets
  (`@istio-inpod-probes-v4`), which istio-cni creates in a separate transaction
  (`cni/pkg/nftables/host_sets.go`: table `inet istio-ambient-nat`, `type ipv4_addr`,
  comment "UUID of the pods that are part of ambient mesh", one element per pod IP with
  the pod UID as element comment).

This module returns `iptables-restore` / `nft -f` input for them; it runs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "istio"

PROBE_SET_COMMENT = "UUID of the pods that are part of ambient mesh"
_STATE_CHECKS = {"iptables-save", "ip6tables-save", "iptables-legacy-save", "ip6tables-legacy-save"}


def read(rel: str) -> str:
    """A golden's text, by path relative to `data/istio/`."""
    return (DATA / rel).read_text()


def nft_golden_names() -> list[str]:
    """Every nftables golden (stem), sorted."""
    return sorted(p.stem for p in (DATA / "inpod-nftables").glob("*.golden"))


def restore_blobs(text: str) -> tuple[str, str | None]:
    """Split a restore-form golden into (v4 blob, v6 blob or None).

    The state-check lines are dropped. The v6 blob starts at the first table that appears a
    second time (`*_ipv6` goldens concatenate the iptables and ip6tables inputs).
    """
    lines = [ln for ln in text.splitlines() if ln.strip() not in _STATE_CHECKS]
    blobs: list[list[str]] = [[]]
    seen: set[str] = set()
    for ln in lines:
        if ln.startswith("*"):
            name = ln[1:].strip()
            if name in seen and len(blobs) == 1:
                blobs.append([])
                seen = set()
            seen.add(name)
            ln = f"*{name}"  # istio writes "* nat"; both forms load, save prints "*nat"
        blobs[-1].append(ln)
    v4 = "\n".join(blobs[0]).strip() + "\n"
    v6 = "\n".join(blobs[1]).strip() + "\n" if len(blobs) > 1 else None
    return v4, v6


def commands_to_restore(text: str) -> tuple[str, str | None]:
    """Command-form golden (`iptables -t nat -A X ...`) -> (v4, v6) iptables-restore input.

    Commands are grouped per tool and table, keeping their order; `-N X` stays a restore
    command (`iptables-restore --noflush` accepts it), `-A`/`-I` rules are kept verbatim.
    """
    out: dict[str, dict[str, list[str]]] = {"iptables": {}, "ip6tables": {}}
    for ln in text.splitlines():
        toks = ln.split()
        if not toks:
            continue
        tool = toks[0]
        if tool not in out:
            raise ValueError(f"not an iptables command: {ln!r}")
        table = "filter"
        rest = toks[1:]
        if len(rest) >= 2 and rest[0] == "-t":
            table, rest = rest[1], rest[2:]
        out[tool].setdefault(table, []).append(" ".join(rest))
    blobs = []
    for tool in ("iptables", "ip6tables"):
        tables = out[tool]
        if not tables:
            blobs.append(None)
            continue
        parts = []
        for table, cmds in tables.items():
            parts.append(f"*{table}")
            parts.extend(cmds)
            parts.append("COMMIT")
        blobs.append("\n".join(parts) + "\n")
    assert blobs[0] is not None, "golden has no iptables commands"
    return blobs[0], blobs[1]


def nft_transaction(text: str) -> str:
    """An nft golden as `nft -f` input (state-check lines, if any, dropped)."""
    keep = [
        ln
        for ln in text.splitlines()
        if ln.strip()
        and ln.split()[0] in ("add", "flush", "delete", "insert", "create", "table", "replace")
    ]
    return "\n".join(keep) + "\n"


def probe_sets_transaction(
    v4_members: Iterable[tuple[str, str]] = (),
    v6_members: Iterable[tuple[str, str]] | None = None,
    table: str = "istio-ambient-nat",
) -> str:
    """The probe sets istio-cni's HostNftSetManager creates, with (ip, pod uid) members."""
    lines = [
        f"add table inet {table}",
        f'add set inet {table} istio-inpod-probes-v4 {{ type ipv4_addr ; comment "{PROBE_SET_COMMENT}" ; }}',
    ]
    lines += [
        f'add element inet {table} istio-inpod-probes-v4 {{ {ip} comment "{uid}" }}'
        for ip, uid in v4_members
    ]
    if v6_members is not None:
        lines.append(
            f'add set inet {table} istio-inpod-probes-v6 {{ type ipv6_addr ; comment "{PROBE_SET_COMMENT}" ; }}'
        )
        lines += [
            f'add element inet {table} istio-inpod-probes-v6 {{ {ip} comment "{uid}" }}'
            for ip, uid in v6_members
        ]
    return "\n".join(lines) + "\n"
