"""nft ruleset parser: Istio's nftables goldens as the real nft prints them, round trip.

The fixtures under tests/fixtures/raw/nft/ were produced by loading every
`inpod-nftables/*.golden` (and an iptables-nft, a mixed and an expression-zoo case) into a
throwaway netns with `nft -f` and dumping `nft -j list ruleset` / `nft list ruleset`
(`tests/fixtures/raw/nft/regenerate.py`). The kernel test re-does that live.
"""

from __future__ import annotations

import ipaddress
import os
import random
from pathlib import Path

import pytest

from ambientctl import model
from ambientctl.analyzers.parse import nft
from ambientctl.errors import ParseError
from ambientlab import goldens, nftdump

FIX = Path(__file__).parent / "fixtures" / "raw" / "nft"
GOLDEN_CASES = goldens.nft_golden_names()
M = model.Match


def _read(name: str) -> str:
    return (FIX / name).read_text()


def _shape(rs: model.Ruleset) -> list[tuple]:
    """Everything the simulator reads, without sources (handles, line numbers)."""
    out = []
    for t in rs.tables:
        for c in t.chains.values():
            out.append((t.family, t.name, t.backend, c.name, c.policy, c.base))
            for r in c.rules:
                out.append((r.position, r.matches, r.target, r.target_options, r.goto))
    return out


def _rules(rs: model.Ruleset, table: str, chain: str) -> tuple[model.Rule, ...]:
    (t,) = [t for t in rs.tables if t.name == table]
    return t.chains[chain].rules


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_every_istio_golden_rule_is_translated_without_leftovers(case: str) -> None:
    rs = nft.parse_nft_json(_read(f"{case}.json"), f"nodes/n/pods/default/p/{case}.json")
    golden = goldens.nft_transaction(goldens.read(f"inpod-nftables/{case}.golden"))
    want_rules = [ln for ln in golden.splitlines() if ln.startswith("add rule ")]
    got = list(nft.iter_rules(rs))
    assert len(got) == len(want_rules) > 0
    for rule in got:
        assert rule.target is not None, rule.text
        leftovers = [m for m in rule.matches if m.module == "nft"]
        assert leftovers == [], rule.text
    assert all(t.backend == "nft" and t.family == "inet" for t in rs.tables)
    assert rs.warnings == ()


@pytest.mark.parametrize(
    "case", [*GOLDEN_CASES, "expressions", "mixed-native-and-iptables-nft", "empty"]
)
def test_text_form_gives_the_same_model_as_json(case: str) -> None:
    from_json = nft.parse_nft_json(_read(f"{case}.json"), f"{case}.json")
    from_text = nft.parse_nft_text(_read(f"{case}.txt"), f"{case}.txt")
    assert _shape(from_text) == _shape(from_json)


def test_json_rules_are_rendered_as_nft_text_for_evidence() -> None:
    rs = nft.parse_nft_json(_read("default.json"), "nft-ruleset.json")
    r = _rules(rs, "istio-ambient-nat", "istio-prerouting")[1]
    assert r.source.path == "nft-ruleset.json"
    assert r.text.startswith("ip daddr != 127.0.0.1 tcp dport != 15008 meta mark & 0xfff != 0x539")
    assert "redirect to :15006" in r.text


# --------------------------------------------------------------------------- translations


def test_inbound_redirect_rule_matches_the_iptables_vocabulary() -> None:
    rs = nft.parse_nft_json(_read("default.json"), "x.json")
    accept, redirect = _rules(rs, "istio-ambient-nat", "istio-prerouting")
    assert accept.matches == (
        M(None, "-p", ("tcp",)),
        M(None, "-4"),
        M(None, "-s", ("169.254.7.127/32",)),
    )
    assert accept.target == "ACCEPT"
    assert redirect.matches == (
        M(None, "-4"),
        M(None, "-d", ("127.0.0.1/32",), negated=True),
        M(None, "-p", ("tcp",)),
        M("tcp", "--dport", ("15008",), negated=True),
        M("mark", "--mark", ("0x539/0xfff",), negated=True),
    )
    assert (redirect.target, redirect.target_options) == (
        "REDIRECT",
        (M("REDIRECT", "--to-ports", ("15006",)),),
    )
    assert redirect.counters == (0, 0)


def test_output_rules_translate_oifname_udp_and_mark_accept() -> None:
    rs = nft.parse_nft_json(_read("default.json"), "x.json")
    rules = _rules(rs, "istio-ambient-nat", "istio-output")
    dns = rules[1]
    assert dns.matches == (
        M(None, "-o", ("lo",), negated=True),
        M("mark", "--mark", ("0x539/0xfff",), negated=True),
        M(None, "-p", ("udp",)),
        M("udp", "--dport", ("53",)),
    )
    assert dns.target_option("--to-ports") == ("15053",)
    assert rules[3].matches == (M(None, "-p", ("tcp",)), M("mark", "--mark", ("0x111/0xfff",)))
    assert rules[4].matches == (
        M(None, "-o", ("lo",)),
        M(None, "-4"),
        M(None, "-d", ("127.0.0.1/32",), True),
    )


def test_mangle_connmark_rules_derive_xmark_from_nft_bitwise() -> None:
    # nft lists `ct mark & 0xfffff000 | 0x111` as `ct mark & 0xfffff111 | 0x111`
    # (same function); both must give --set-xmark 0x111/0xfff.
    rs = nft.parse_nft_json(_read("default.json"), "x.json")
    (save,) = _rules(rs, "istio-ambient-mangle", "istio-prerouting")
    assert save.matches == (M("mark", "--mark", ("0x539/0xfff",)),)
    assert (save.target, save.target_options) == (
        "CONNMARK",
        (M("CONNMARK", "--set-xmark", ("0x111/0xfff",)),),
    )
    (restore,) = _rules(rs, "istio-ambient-mangle", "istio-output")
    assert restore.matches == (M("connmark", "--mark", ("0x111/0xfff",)),)
    assert restore.target == "CONNMARK"
    assert restore.target_options == (
        M("CONNMARK", "--restore-mark"),
        M("CONNMARK", "--nfmask", ("0xffffffff",)),
        M("CONNMARK", "--ctmask", ("0xffffffff",)),
    )


def test_raw_rules_become_ct_zone() -> None:
    rs = nft.parse_nft_json(_read("default.json"), "x.json")
    (out,) = _rules(rs, "istio-ambient-raw", "istio-output")
    assert out.matches == (
        M(None, "-p", ("udp",)),
        M("udp", "--dport", ("53",)),
        M("mark", "--mark", ("0x539/0xfff",)),
    )
    assert (out.target, out.target_options) == ("CT", (M("CT", "--zone", ("1",)),))


def test_base_chains_get_hook_priority_kind_and_policy() -> None:
    rs = nft.parse_nft_text(_read("default.txt"), "x.txt")  # text prints `priority dstnat`
    tables = {t.name: t for t in rs.tables}
    nat, mangle, raw = (
        tables["istio-ambient-nat"],
        tables["istio-ambient-mangle"],
        tables["istio-ambient-raw"],
    )
    assert nat.chains["prerouting"].base == model.BaseHook("prerouting", -100, "nat")
    assert nat.chains["prerouting"].policy == "ACCEPT"
    assert mangle.chains["output"].base == model.BaseHook("output", -150, "route")
    assert raw.chains["prerouting"].base == model.BaseHook("prerouting", -300, "filter")
    assert (
        nat.chains["istio-prerouting"].base is None
        and nat.chains["istio-prerouting"].policy is None
    )


def test_hostprobe_snat_rule_and_probe_set() -> None:
    rs = nft.parse_nft_json(_read("hostprobe.json"), "nodes/w/host/nft-ruleset.json")
    (rule,) = _rules(rs, "istio-ambient-nat", "postrouting")
    assert rule.matches == (
        M(None, "-p", ("tcp",)),
        M("owner", "--uid-owner", ("1000",)),
        M(None, "-4"),
        M("set", "--match-set", ("istio-inpod-probes-v4", "dst")),
    )
    assert (rule.target, rule.target_options) == (
        "SNAT",
        (M("SNAT", "--to-source", ("169.254.7.127",)),),
    )
    chain = rs.tables[0].chains["postrouting"]
    assert chain.base == model.BaseHook("postrouting", 100, "nat")


@pytest.mark.parametrize("suffix", ["json", "txt"])
def test_nft_sets_are_returned_as_ipsets_with_pod_uid_comments(suffix: str) -> None:
    sets = nft.nft_sets(_read(f"hostprobe_ipv6.{suffix}"), f"nft-ruleset.{suffix}")
    v4, v6 = sets["istio-inpod-probes-v4"], sets["istio-inpod-probes-v6"]
    assert (v4.type, v4.family, v6.type, v6.family) == (
        "nft:ipv4_addr",
        "inet",
        "nft:ipv6_addr",
        "inet6",
    )
    assert {(m.text, m.comment) for m in v4.members} == set(nftdump.PROBE_MEMBERS)
    hit = v4.lookup(ipaddress.ip_address("10.244.1.7"))
    assert hit is not None and hit.comment == nftdump.PROBE_MEMBERS[0][1]
    assert v4.lookup(ipaddress.ip_address("10.244.1.99")) is None
    assert [m.text for m in v6.members] == ["fd00:10:244:1::7"]


def test_interval_set_members_keep_prefixes_and_ranges() -> None:
    for suffix in ("json", "txt"):
        nets = nft.nft_sets(_read(f"expressions.{suffix}"), "x")["nets"]
        assert [m.text for m in nets.members] == ["10.0.0.0/8", "192.168.1.1-192.168.1.9"]
        assert nets.lookup(ipaddress.ip_address("10.9.9.9")) is not None
        assert nets.lookup(ipaddress.ip_address("192.168.1.5")) is not None


EXPECTED_EXPRESSIONS = {
    # (chain, position): (matches as text, target, options as text, goto)
    ("pre", 1): (
        "-4 -p tcp",
        "TPROXY",
        "--on-port 15001 --on-ip 127.0.0.1 --tproxy-mark 0x400/0xfff",
        False,
    ),
    ("pre", 2): (
        "-p tcp --dport 15008",
        "TPROXY",
        "--on-port 15008 --tproxy-mark 0x111/0xffffffff --nft-no-verdict",
        False,
    ),
    ("pre", 3): ("-i eth0 -4 -s 10.0.0.0/8", "sub", "", True),
    ("pre", 4): ("--ctstate RELATED,ESTABLISHED", "ACCEPT", "", False),
    ("pre", 5): ("--ctstate NEW", "sub", "", False),
    ("pre", 6): ("", "CONNMARK", "--restore-mark --nfmask 0xffffffff --ctmask 0xffffffff", False),
    ("pre", 7): ("", "CONNMARK", "--set-xmark 0x111/0xfff", False),
    ("pre", 8): ("", "MARK", "--set-xmark 0x539/0xfff", False),
    ("pre", 9): ("--mark 0x111/0xfff", "ACCEPT", "", False),
    ("pre", 10): ("-4 --match-set nets dst", "DROP", "", False),
    ("pre", 11): ("-4 ! --match-set nets src", "RETURN", "", False),
    ("pre", 12): ("", "CT", "--notrack", False),
    ("pre", 13): ("", "CT", "--zone 1", False),
    ("pre", 14): ("-p tcp --dports 80,443", "ACCEPT", "", False),
    ("pre", 15): ("--mark 0x100", "ACCEPT", "", False),
    ("pre", 17): ("-p udp --sport 53 --dport 1:1024", "ACCEPT", "", False),
    ("pre", 18): ("-4", "ACCEPT", "", False),
    ("pre", 19): ("-6 -d ::1/128", "ACCEPT", "", False),
    ("pre", 20): ("-6 -p tcp", "ACCEPT", "", False),
    ("pre", 21): ("! -o lo", "ACCEPT", "", False),
    ("pre", 22): ("", "MARK", "--set-xmark 0x100/0x100", False),
    ("pre", 23): ("", "MARK", "--set-xmark 0x0/0x100", False),
    ("pre", 24): ("", "MARK", "--set-xmark 0x4/0x0", False),
    ("pre", 25): ("", "CONNMARK", "--save-mark --nfmask 0xffffffff --ctmask 0xffffffff", False),
    ("pre", 26): ("", "CONNMARK", "--set-xmark 0x5/0xffffffff", False),
    ("pre", 28): ("", "REJECT", "", False),
    ("pre", 29): ("--dst-type LOCAL", "ACCEPT", "", False),
    ("nat_pre", 1): ("-p tcp --dport 80", "DNAT", "--to-destination 10.0.0.1:8080", False),
    ("nat_pre", 3): ("-p tcp --dport 82", "REDIRECT", "", False),
    ("post", 2): ("", "MASQUERADE", "", False),
    ("post", 3): ("-o eth0", "MASQUERADE", "--random --persistent", False),
    ("post", 4): (
        "-4 -d 10.0.0.1/32 -p tcp --dport 5",
        "SNAT",
        "--to-source 10.0.0.2-10.0.0.9:1000-2000",
        False,
    ),
    ("out", 2): ("--gid-owner 1337", "ACCEPT", "", False),
    ("out", 3): ("! --uid-owner 1337", "ACCEPT", "", False),
    ("out", 4): ("--transparent", "ACCEPT", "", False),
    ("in", 1): ("-4 -s 1.2.3.4/32 --comment hello", "ACCEPT", "", False),
    ("sub", 1): ("-i lo", "ACCEPT", "", False),
    ("sub", 2): ("-o lo", "ACCEPT", "", False),
    ("sub", 3): ("", None, "", False),
}


@pytest.mark.parametrize("suffix", ["json", "txt"])
def test_expression_zoo_translations(suffix: str) -> None:
    rs = nft.parse_nft(_read(f"expressions.{suffix}"), f"x.{suffix}")
    t = {t.name: t for t in rs.tables}["t"]
    for (chain, pos), (matches, target, options, goto) in EXPECTED_EXPRESSIONS.items():
        r = t.chains[chain].rules[pos - 1]
        got = (
            " ".join(map(str, r.matches)),
            r.target,
            " ".join(map(str, r.target_options)),
            r.goto,
        )
        assert got == (matches, target, options, goto), r.text
    assert t.chains["in"].policy == "DROP"
    assert t.chains["fwdc"].base == model.BaseHook("forward", 50, "filter")


@pytest.mark.parametrize("suffix", ["json", "txt"])
def test_untranslatable_expressions_are_kept_and_statements_and_lookups_structured(suffix: str) -> None:
    rs = nft.parse_nft(_read(f"expressions.{suffix}"), f"x.{suffix}")
    pre = {t.name: t for t in rs.tables}["t"].chains["pre"].rules
    flags, mark_and_accept, concat = pre[15], pre[26], pre[29]
    assert flags.matches == (M("nft", "expr", ("tcp flags syn",)),) and flags.target == "ACCEPT"
    # Several statements run in order (the rule can change the path: never "no target").
    assert mark_and_accept.target == "NFT" and mark_and_accept.matches == ()
    assert [(st.target, st.options) for st in mark_and_accept.statements] == [
        ("MARK", (M("MARK", "--set-xmark", ("0x1/0xffffffff",)),)), ("ACCEPT", ())]
    # A concatenated key is a set lookup with its elements, not an opaque expression.
    assert concat.matches == () and concat.target == "ACCEPT"
    assert concat.lookups == (model.NftLookup(("ip daddr", "tcp dport"),
                                              (model.NftElement(("10.0.0.1", "80")),)),)


def test_xmark_translation_computes_what_nft_bitwise_computes() -> None:
    rng = random.Random(1337)
    for _ in range(300):
        and_mask, or_val, xor_val = (rng.getrandbits(32) for _ in range(3))
        expr = {"^": [{"|": [{"&": [{"meta": {"key": "mark"}}, and_mask]}, or_val]}, xor_val]}
        rule = nft._rule_from_exprs(
            "t",
            "c",
            1,
            [{"mangle": {"key": {"meta": {"key": "mark"}}, "value": expr}}],
            model.SourceRef("x"),
            "inet",
        )
        value, mask = (int(x, 16) for x in rule.target_options[0].args[0].split("/"))
        for _ in range(5):
            old = rng.getrandbits(32)
            want = (((old & and_mask) | or_val) ^ xor_val) & 0xFFFFFFFF
            assert ((old & ~mask) ^ value) & 0xFFFFFFFF == want


# --------------------------------------------------------------------------- iptables-nft


@pytest.mark.parametrize("suffix", ["json", "txt"])
def test_iptables_nft_tables_are_skipped_with_a_warning(suffix: str) -> None:
    rs = nft.parse_nft(_read(f"iptables-nft-default.{suffix}"), f"nft-ruleset.{suffix}")
    assert rs.tables == ()
    named = sorted(w.split()[1:3][1] for w in rs.warnings)
    assert named == ["mangle", "nat", "raw"]
    assert all("iptables-nft" in w and "iptables-save" in w for w in rs.warnings)


def test_nft_stderr_warning_merged_into_the_text_is_honoured() -> None:
    text = _read("iptables-nft-default.stderr.txt") + _read("iptables-nft-default.txt")
    rs = nft.parse_nft_text(text, "nft-ruleset.txt")
    assert rs.tables == ()
    assert all("nft warns so" in w for w in rs.warnings)


def test_mixed_dump_keeps_only_the_native_istio_tables() -> None:
    rs = nft.parse_nft_json(_read("mixed-native-and-iptables-nft.json"), "x.json")
    assert sorted(t.name for t in rs.tables) == [
        "istio-ambient-mangle",
        "istio-ambient-nat",
        "istio-ambient-raw",
    ]
    assert len(rs.warnings) == 3


def test_native_table_named_like_iptables_is_kept() -> None:
    text = "table ip nat {\n\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\ttcp dport 80 redirect to :8080\n\t}\n}\n"
    rs = nft.parse_nft_text(text, "x.txt")
    assert [t.name for t in rs.tables] == ["nat"] and rs.warnings == ()


# --------------------------------------------------------------------------- variants


def test_priority_expressions_and_bridge_names() -> None:
    text = (
        "table inet a {\n\tchain c {\n\t\ttype filter hook input priority filter - 5; policy drop;\n\t}\n"
        "\tchain d {\n\t\ttype nat hook postrouting priority srcnat + 10; policy accept;\n\t}\n}\n"
        "table bridge b {\n\tchain e {\n\t\ttype filter hook forward priority filter; policy accept;\n\t}\n}\n"
    )
    rs = nft.parse_nft_text(text, "x.txt")
    a, b = rs.tables
    assert (
        a.chains["c"].base == model.BaseHook("input", -5, "filter")
        and a.chains["c"].policy == "DROP"
    )
    assert a.chains["d"].base == model.BaseHook("postrouting", 110, "nat")
    assert b.chains["e"].base == model.BaseHook("forward", -200, "filter")


def test_handles_from_nft_a_are_ignored() -> None:
    plain = _read("default.txt")
    with_handles = "\n".join(
        (ln + f" # handle {i}") if ln.strip() and not ln.strip().startswith(("}", "type")) else ln
        for i, ln in enumerate(plain.splitlines())
    )
    assert _shape(nft.parse_nft_text(with_handles, "x")) == _shape(nft.parse_nft_text(plain, "x"))


def test_text_rules_are_tokenised_lazily_and_fail_on_use() -> None:
    text = 'table inet t {\n\tchain c {\n\t\tiifname "eth0 accept\n\t}\n}\n'
    rs = nft.parse_nft_text(text, "nft-ruleset.txt")  # structure is fine
    with pytest.raises(ParseError) as err:
        _ = rs.tables[0].chains["c"].rules
    assert err.value.path == "nft-ruleset.txt" and err.value.line == 3


def test_empty_ruleset_is_valid() -> None:
    assert nft.parse_nft_json(_read("empty.json"), "x").tables == ()
    assert nft.parse_nft_text("", "x").tables == ()
    assert nft.parse_nft_json(_read("empty.json"), "x").header == "nft 1.0.6 (json schema 1)"


# --------------------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    ("name", "parser", "line"),
    [
        ("malformed-truncated.json", nft.parse_nft_json, 1),
        ("malformed-garbage.txt", nft.parse_nft_json, 1),
        ("malformed-iptables-save.txt", nft.parse_nft_json, 1),
        ("malformed-garbage.txt", nft.parse_nft_text, 1),
        ("malformed-iptables-save.txt", nft.parse_nft_text, 2),
        ("malformed-truncated.txt", nft.parse_nft_text, 27),
        ("malformed-truncated.json", nft.nft_sets, 1),
    ],
)
def test_malformed_input_raises_parse_error_naming_file_and_line(
    name: str, parser, line: int
) -> None:
    path = f"nodes/w1/host/{name}"
    with pytest.raises(ParseError) as err:
        parser(_read(name), path)
    assert err.value.path == path
    assert err.value.line == line
    assert path in err.value.message


def test_iptables_save_input_gets_a_hint() -> None:
    with pytest.raises(ParseError) as err:
        nft.parse_nft_text(_read("malformed-iptables-save.txt"), "x")
    assert "iptables-save" in (err.value.hint or "")


@pytest.mark.parametrize(
    "doc",
    [
        '{"foo": 1}',
        "[]",
        '{"nftables": [{"rule": {"family": "inet"}}]}',
        '{"nftables": [{"rule": {"family": "inet", "table": "t", "chain": "c", "expr": []}}]}',
        '{"nftables": [{"table": {"family": "inet", "name": "t"}}, {"chain": {"family": "inet", "table": "t", "name": "c", "hook": "input", "prio": "x"}}]}',
    ],
)
def test_json_of_the_wrong_shape_raises_parse_error(doc: str) -> None:
    with pytest.raises(ParseError):
        nft.parse_nft_json(doc, "x.json")


# --------------------------------------------------------------------------- real kernel


@pytest.mark.kernel
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces")
@pytest.mark.parametrize("case", [c.name for c in nftdump.cases()])
def test_live_nft_dump_matches_the_stored_fixture(case: str) -> None:
    (spec,) = [c for c in nftdump.cases() if c.name == case]
    live = nftdump.load_and_dump(spec)
    for form, text in (("json", live.json), ("txt", live.text)):
        got = nft.parse_nft(text, f"live.{form}")
        stored = nft.parse_nft(_read(f"{case}.{form}"), f"{case}.{form}")
        assert _shape(got) == _shape(stored)
        assert got.warnings == stored.warnings
