"""`nft-tables.jsonl` (per-table nft listings) -> the one document the analyzers read.

The shapes are those nft 1.0.6 printed in a netns holding iptables-nft's `ip nat` and a
native `ip kube-proxy` (tests/test_nft_tables_kernel.py checks the real thing); here each
rule of the merge is pinned on a small hand-made file.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ambientctl.analyzers.parse import nft as pn
from ambientctl.analyzers.parse.nft_hooks import parse_registrations
from ambientctl.collectors.specs import NETNS_SPECS
from ambientctl.errors import ParseError

SPEC = next(s for s in NETNS_SPECS if s.id == "nft-tables")
META = {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5",
                     "json_schema_version": 1}}


def _doc(*items: object) -> str:
    return json.dumps({"nftables": [META, *items]})


def _chain(family: str, table: str, name: str, handle: int, hook: str | None = None,
           prio: int = 0) -> dict[str, object]:
    body: dict[str, object] = {"family": family, "table": table, "name": name, "handle": handle}
    if hook:
        body.update(type="nat", hook=hook, prio=prio, policy="accept")
    return {"chain": body}


NAT_POST = _chain("ip", "nat", "POSTROUTING", 2, "postrouting", 100)
KP_POST = _chain("ip", "kube-proxy", "nat-postrouting", 1, "postrouting", 100)
KP_RULE = {"rule": {"family": "ip", "table": "kube-proxy", "chain": "nat-postrouting",
                    "handle": 2, "expr": [{"masquerade": None}]}}


def _file(*, kp_handle: int = 5, nat_first: bool = True) -> str:
    chains = [_chain("ip", "nat", "KUBE-SVC-X", 1), NAT_POST, KP_POST]
    if not nat_first:
        chains = [KP_POST, *chains[:2]]
    return "\n".join([
        "# nft -j list chains", _doc(*chains),
        "# skipped table ip nat",
        "# nft -j list table ip kube-proxy",
        _doc({"table": {"family": "ip", "name": "kube-proxy", "handle": kp_handle}},
             KP_POST, KP_RULE),
    ]) + "\n"


def test_a_skipped_table_keeps_its_chains_and_is_named_unlisted() -> None:
    doc = pn.merge_table_listings(_file(), "n.jsonl")
    items = doc["nftables"]
    assert items[0]["metainfo"]["version"] == "1.0.6"
    merged = items[0]["metainfo"][pn.MERGE_KEY]
    assert merged["unlisted"] == [["ip", "nat"]] and merged["skipped"] == [["ip", "nat"]]
    assert merged["order"] == [["ip", "nat"], ["ip", "kube-proxy"]]
    # kernel order: ip nat (table item without handle, its chains, no rule), then kube-proxy
    assert items[1] == {"table": {"family": "ip", "name": "nat"}}
    assert items[2:4] == [_chain("ip", "nat", "KUBE-SVC-X", 1), NAT_POST]
    assert items[4]["table"]["handle"] == 5 and items[5:] == [KP_POST, KP_RULE]


def test_the_iptables_nft_table_is_read_through_iptables_save_and_the_native_one_parsed() -> None:
    rs = pn.parse_nft(_file(), "n.jsonl")
    assert [(t.family, t.name) for t in rs.tables] == [("ip", "kube-proxy")]
    assert rs.tables[0].chains["nat-postrouting"].rules[0].target == "MASQUERADE"
    assert rs.warnings == ("table ip nat is managed by iptables-nft (its base chains carry "
                           "iptables' built-in names); skipped: it is read through iptables-save",)


def test_equal_priorities_are_ordered_by_the_kernels_table_order() -> None:
    regs = parse_registrations(_file(), "n.jsonl")
    nat, kp = regs[("ip", "nat", "POSTROUTING")], regs[("ip", "kube-proxy", "nat-postrouting")]
    assert (nat.table_handle, kp.table_handle) == (None, 5)
    assert (nat.table_order, kp.table_order) == (0, 1)
    assert (nat.chain_handle, kp.chain_handle) == (2, 1)


def test_a_listing_order_that_contradicts_the_handles_claims_no_order() -> None:
    # Two listed tables whose handles say the opposite of the chain listing's order.
    text = "\n".join([
        "# nft -j list chains", _doc(KP_POST, _chain("inet", "t", "c", 1, "postrouting", 100)),
        "# nft -j list table ip kube-proxy",
        _doc({"table": {"family": "ip", "name": "kube-proxy", "handle": 9}}, KP_POST),
        "# nft -j list table inet t",
        _doc({"table": {"family": "inet", "name": "t", "handle": 3}},
             _chain("inet", "t", "c", 1, "postrouting", 100)),
    ])
    regs = parse_registrations(text, "n.jsonl")
    assert {r.table_order for r in regs.values()} == {None}
    assert {r.table_handle for r in regs.values()} == {9, 3}


def test_a_full_ruleset_orders_tables_by_handle_as_before() -> None:
    regs = parse_registrations(_doc({"table": {"family": "ip", "name": "kube-proxy",
                                               "handle": 7}}, KP_POST), "n.json")
    assert regs[("ip", "kube-proxy", "nat-postrouting")].table_order == 7


def test_a_failed_table_listing_leaves_a_native_table_undecidable_not_empty() -> None:
    own = _chain("ip", "kube-proxy", "nat-postrouting", 1, "postrouting", 100)
    text = "\n".join(["# nft -j list chains", _doc(own),
                      "# nft -j list table ip kube-proxy", "# exit 1"])
    doc = pn.merge_table_listings(text, "n.jsonl")
    assert doc["nftables"][0]["metainfo"][pn.MERGE_KEY]["failed"] == [
        "('ip', 'kube-proxy') exit 1"]
    rs = pn.parse_nft(text, "n.jsonl")
    (rule,) = rs.tables[0].chains["nat-postrouting"].rules
    assert [(m.module, m.option) for m in rule.matches] == [("nft", "expr")]
    assert any("collected without its rules" in w for w in rs.warnings)


def test_a_skipped_table_without_base_chains_is_never_entered() -> None:
    text = "\n".join(["# nft -j list chains", _doc(_chain("ip", "nat", "MY-CHAIN", 1)),
                      "# skipped table ip nat"])
    rs = pn.parse_nft(text, "n.jsonl")
    assert rs.tables == () and "no base chain" in rs.warnings[0]


def test_sets_of_listed_tables_are_read() -> None:
    s = {"set": {"family": "ip", "name": "cluster-ips", "table": "kube-proxy",
                 "type": "ipv4_addr", "handle": 1, "elem": ["10.96.0.1"]}}
    text = "\n".join(["# nft -j list chains", _doc(KP_POST),
                      "# nft -j list table ip kube-proxy",
                      _doc({"table": {"family": "ip", "name": "kube-proxy", "handle": 1}}, s,
                           KP_POST)])
    assert [m.text for m in pn.nft_sets(text, "n.jsonl")["cluster-ips"].members] == ["10.96.0.1"]


@pytest.mark.parametrize("text,what", [
    ("", "no `nft -j list chains`"),
    ('{"nftables": []}\n', "without its `# nft -j list"),
    ("# nft -j list chains\n# rm -rf\n", "unknown comment line"),
    ('# nft -j list chains\n{"nftables": [\n', "ends early"),
    ('# nft -j list chains\n{"other": 1}\n', "not `nft -j` output"),
])
def test_a_damaged_file_is_a_parse_error(text: str, what: str) -> None:
    with pytest.raises(ParseError, match=what):
        pn.merge_table_listings(text, "n.jsonl")


@pytest.mark.parametrize("grep", [True, False], ids=["grep", "no-grep"])
def test_the_script_never_hands_nft_a_name_it_could_read_as_a_command(tmp_path: Path,
                                                                      grep: bool) -> None:
    # nft joins its arguments into one command line: a table named `x;flush` (the kernel
    # takes any name; nft's own parser would not create it) must never reach it.
    log = tmp_path / "calls"
    fake = tmp_path / "nft"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {log}\n'
        'case "$*" in\n'
        '  "list chains") printf "table ip x;flush {\\n\\tchain c {\\n\\t}\\n}\\n'
        'table ip good {\\n\\tchain c {\\n\\t}\\n}\\ntable ip nat {\\n}\\n" ;;\n'
        '  *) echo \'{"nftables": []}\' ;;\n'
        "esac\n")
    fake.chmod(0o755)
    path = f"{tmp_path}:/usr/bin:/bin" if grep else str(tmp_path)  # no grep: the read loop
    res = subprocess.run(["/bin/sh", *SPEC.argv[1:]], capture_output=True, text=True,
                         timeout=30, env={"PATH": path}, check=False)
    assert res.returncode == 0, res.stderr
    assert log.read_text().splitlines() == ["-j list chains", "list chains",
                                            "-j list table ip good"]
    assert res.stdout.splitlines()[2:] == [
        "# not listed: a table whose family or name nft could misread as more than a name",
        "# nft -j list table ip good", '{"nftables": []}', "# skipped table ip nat"]
    # and the reader takes the record as it is
    assert pn.merge_table_listings(res.stdout, "n.jsonl")["nftables"][0]["metainfo"][
        pn.MERGE_KEY]["skipped"] == [["ip", "nat"]]
