"""`parse_ipset`: `ipset list` and `ipset save`, the seed's capture, truncation and wrong input."""

from __future__ import annotations

import ipaddress
import pathlib
import random

import pytest

from ambientctl.analyzers.parse.ipset import parse_ipset
from ambientctl.errors import ParseError

RAW = pathlib.Path(__file__).resolve().parent / "fixtures" / "raw"


def read(rel: str) -> str:
    return (RAW / rel).read_text()


def test_seed_ipset_list() -> None:
    sets = parse_ipset(read("ipset/seed-ipset-list.txt"), "nodes/ambient-worker2/host/ipset.txt")
    s = sets["ztunnel-pods-ips"]
    assert (s.type, s.family, s.hashsize, s.maxelem, s.declared_entries) == (
        "hash:ip",
        "inet",
        1024,
        65536,
        5,
    )
    assert [m.text for m in s.members] == [
        "10.244.1.5",
        "10.244.1.7",
        "10.244.1.8",
        "10.244.1.4",
        "10.244.1.6",
    ]
    assert all(m.comment is None for m in s.members)
    assert (s.source.line, s.source.text) == (1, "Name: ztunnel-pods-ips")
    assert s.members[1].source.line == 10 and s.members[1].source.text == "10.244.1.7"
    assert s.lookup(ipaddress.ip_address("10.244.1.7")) is s.members[1]
    assert s.lookup(ipaddress.ip_address("10.244.2.4")) is None


def test_kernel_list_and_save_give_the_same_sets() -> None:
    listed = parse_ipset(read("ipset/kernel-list.txt"), "ipset.txt")
    saved = parse_ipset(read("ipset/kernel-save.txt"), "ipset.txt")
    assert sorted(listed) == sorted(saved)
    for name in listed:
        a, b = listed[name], saved[name]
        assert (a.type, a.family, a.hashsize, a.maxelem) == (
            b.type,
            b.family,
            b.hashsize,
            b.maxelem,
        )
        assert sorted((m.text, m.comment) for m in a.members) == sorted(
            (m.text, m.comment) for m in b.members
        )
        assert a.declared_entries == len(a.members) and b.declared_entries is None
    pods = listed["ztunnel-pods-ips"]
    assert {m.text: m.comment for m in pods.members} == {
        "10.244.1.7": None,
        "10.244.1.6": "e41edf7c-a347-45cb-a144-97492faa77bf",
        "10.244.1.5": "0ff78312-3a13-4a02-b39d-644bfb91e861",
    }
    assert saved["istio-inpod-probes-v6"].members[0].comment == "uid with spaces"
    assert listed["nets"].members[0].text == "10.0.0.0/8"  # "timeout 199 packets 0 bytes 0" dropped
    assert listed["ipport"].members[0].text == "10.0.0.1,tcp:80"
    assert (listed["ports"].family, listed["ports"].hashsize) == (None, None)
    assert (
        listed["sets"].type == "list:set" and listed["sets"].members[0].text == "ztunnel-pods-ips"
    )
    assert listed["empty"].members == () and listed["empty"].declared_entries == 0
    line = saved["ztunnel-pods-ips"].members[0].source
    assert read("ipset/kernel-save.txt").splitlines()[line.line - 1] == line.text


def test_terse_listing_has_counts_but_no_members() -> None:
    sets = parse_ipset(read("ipset/kernel-list-terse.txt"), "ipset.txt")
    assert sets["ztunnel-pods-ips"].declared_entries == 3 and sets["ztunnel-pods-ips"].members == ()


def test_count_mismatch_with_complete_lines_is_left_to_the_caller() -> None:
    """Timed-out entries stay counted until GC: a short listing alone is not damage."""
    text = read("ipset/seed-ipset-list.txt").replace("10.244.1.6\n", "")
    s = parse_ipset(text, "ipset.txt")["ztunnel-pods-ips"]
    assert s.declared_entries == 5 and len(s.members) == 4


def test_listing_cut_mid_member_line_fails() -> None:
    text = read("ipset/kernel-list.txt")
    cut = text[: text.index("e41edf7c-a347") + 4]  # inside a comment of the first set
    with pytest.raises(ParseError) as exc:
        parse_ipset(cut, "nodes/w1/host/ipset.txt")
    assert "unterminated comment" in exc.value.reason and exc.value.line == len(cut.splitlines())
    seed = read("ipset/seed-ipset-list.txt")
    header_cut = seed[: seed.index("Header:") + 20]
    with pytest.raises(ParseError) as exc:
        parse_ipset(header_cut, "ipset.txt")
    assert "cut off" in exc.value.reason


def test_missing_final_newline_is_a_cut_even_when_the_count_matches() -> None:
    """ "10.244.1.6" cut to "10.244" still makes 5 members: a line without newline is never trusted."""
    seed = read("ipset/seed-ipset-list.txt")
    for cut in (seed.rstrip("\n"), seed[: seed.rindex("10.244.1.6") + 6]):
        with pytest.raises(ParseError) as exc:
            parse_ipset(cut, "ipset.txt")
        assert "cut off" in exc.value.reason and "4 complete of 5" in exc.value.reason


@pytest.mark.parametrize("upto", ["Size in memory", "Members:", "Number of entries"])
def test_last_set_cut_at_a_line_end_in_its_header_fails(upto: str) -> None:
    text = read("ipset/kernel-list.txt")
    cut = text[: text.index(upto, text.index("Name: sets"))]
    with pytest.raises(ParseError) as exc:
        parse_ipset(cut, "ipset.txt")
    assert "truncated" in exc.value.reason and exc.value.line == len(cut.splitlines())


def test_a_listing_cut_anywhere_never_parses_as_a_wrong_whole() -> None:
    """Every prefix either fails or parses to members that are a prefix of the real ones."""
    text = read("ipset/kernel-list.txt")
    full = parse_ipset(text, "ipset.txt")
    for end in range(1, len(text)):
        try:
            part = parse_ipset(text[:end], "ipset.txt")
        except ParseError:
            continue
        for name, s in part.items():
            want = [m.text for m in full[name].members]
            got = [m.text for m in s.members]
            assert got == want[: len(got)]
            if name == list(part)[-1] and not text[:end].endswith("\n"):
                assert got == want  # a cut line is accepted only when nothing is missing


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("Name: a\nRevision: 6\nMembers:\n\nName: b\n", 1, "no 'Type:'"),
        ("Name: a\nType: hash:ip\nMembers:\n", 3, "header ends before 'Revision'"),
        ("Name: a\nType: hash:ip\nBogus line\n", 3, "expected 'Key: value'"),
        ("Name: a\nType: hash:ip\nColour: red\n", 3, "unknown header line"),
        ("Name: a\nType: hash:ip\nNumber of entries: x\nMembers:\n", 3, "not a number"),
        ("Name: a\nType: hash:ip\nHeader: family inet hashsize big\n", 3, "not a number"),
        (
            "Name: a\nType: hash:ip\nMembers:\n\nName: a\nType: hash:ip\nMembers:\n",
            5,
            "listed twice",
        ),
        ("Name: \n", 1, "without a name"),
        (
            "Name: a\nType: hash:ip\nMembers:\nipset v7.17: Kernel error received: Operation not permitted\n",
            4,
            "reported an error",
        ),
        ("create a hash:ip\nadd b 10.0.0.1\n", 2, "not created above"),
        ("create a hash:ip\ncreate a hash:ip\n", 2, "created twice"),
        ("create a\n", 1, "needs a name and a type"),
        ("create a hash:ip\nadd a\n", 2, "needs a set and a member"),
        ("create a hash:ip\nflush a\n", 2, "not ipset save output"),
        ('create a hash:ip comment\nadd a 10.0.0.1 comment "cut\n', 2, "unterminated comment"),
    ],
)
def test_malformed_ipset_output_names_the_line(text: str, line: int, reason: str) -> None:
    with pytest.raises(ParseError) as exc:
        parse_ipset(text, "ipset.txt")
    assert exc.value.line == line and reason in exc.value.reason


@pytest.mark.parametrize(
    "rel",
    ["iptables-save/inpod-default.iptables-save.txt", "ip-rule/kernel.txt", "ip-rule/kernel.json",
     "ip-route/kernel-table-all.txt", "ip-addr/kernel-a.txt", "ss-listen/kernel-H.txt", "cluster/nodes.json"],
)  # fmt: skip
def test_another_tools_output_is_rejected(rel: str) -> None:
    with pytest.raises(ParseError) as exc:
        parse_ipset(read(rel), "ipset.txt")
    assert exc.value.line == 1 and "not ipset output" in exc.value.reason


def test_empty_output_means_no_sets() -> None:
    assert parse_ipset("", "ipset.txt") == {}
    assert parse_ipset("\n\n", "ipset.txt") == {}


def test_garbage_is_rejected_or_harmless() -> None:
    rng = random.Random(3)
    for _ in range(100):
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))).decode("latin-1")
        try:
            sets = parse_ipset(junk, "ipset.txt")
        except ParseError:
            continue
        assert sets == {}
