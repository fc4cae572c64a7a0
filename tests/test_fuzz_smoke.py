"""A few seconds of the project's fuzzer (benchmarks/fuzz.py) on every parser and the CLI:
malformed input must end in a data error, never a crash. The long campaign is run by hand."""

from __future__ import annotations

import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import fuzz  # noqa: E402


def test_mutated_files_never_crash_a_parser(tmp_path):
    tried, crashes = fuzz.fuzz_parsers(4.0, random.Random(20261205), tmp_path)
    assert tried > 100
    assert crashes == {}


def test_mutated_bundles_never_crash_trace_or_doctor(tmp_path):
    tried, crashes = fuzz.fuzz_cli(4.0, random.Random(20261205), tmp_path)
    assert tried >= 1
    assert crashes == {}


def test_deep_nesting_and_wrong_types_are_data_errors():
    # Classes the first campaign found (issue 11 §2), pinned by name.
    import pytest

    from ambientctl.analyzers.parse import cluster as pc
    from ambientctl.analyzers.parse._common import load_json
    from ambientctl.errors import ParseError

    with pytest.raises(ParseError, match="nested too deeply"):
        load_json("[" * 100000 + "]" * 100000, "nodes/n/ztunnel/config_dump.json")
    with pytest.raises(ParseError, match="nested too deeply"):
        pc.parse_pods('{"kind": "List", "items": [' + "[" * 100000 + "]" * 100000 + "]}",
                      "cluster/pods.json")
    with pytest.raises(ParseError, match=r"pod a: status is a string, expected an object"):
        pc.parse_pods('{"items": [{"metadata": {"name": "a"}, "status": "Running"}]}',
                      "cluster/pods.json")
    with pytest.raises(ParseError, match=r"service s: spec is a string"):
        pc.parse_services('{"items": [{"metadata": {"name": "s"}, "spec": "x"}]}',
                          "cluster/services.json")


def test_per_parser_fuzz_reaches_the_rule_tokenisers():
    # Rules are tokenised lazily when a walk enters their chain: a parser call alone never
    # sees a malformed rule. The fuzzer's parse functions must force it (issue 11 §2).
    import pytest

    from ambientctl.errors import ParseError

    parsers = fuzz._parsers()
    bad_rule = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING bogus\nCOMMIT\n"
    with pytest.raises(ParseError, match=r"iptables-save.txt:3: unexpected argument 'bogus'"):
        parsers["iptables-save.txt"](bad_rule, "nodes/n/iptables-save.txt")
    bad_stmt = ('{"nftables": [{"table": {"family": "inet", "name": "t", "handle": 1}}, '
                '{"chain": {"family": "inet", "table": "t", "name": "c", "handle": 2}}, '
                '{"rule": {"family": "inet", "table": "t", "chain": "c", "handle": 3, '
                '"expr": 5}}]}')
    with pytest.raises(ParseError):
        parsers["nft-ruleset.json"](bad_stmt, "nodes/n/nft-ruleset.json")


def test_crashes_of_the_tokenising_campaign_are_data_errors():
    # Found by `benchmarks/fuzz.py --mode parsers` once it covered ipvsadm and config_dump.
    import pytest

    from ambientctl.analyzers.parse.ipvs import parse_ipvsadm
    from ambientctl.analyzers.parse.ztunnel import parse_config_dump
    from ambientctl.errors import ParseError

    head = "IP Virtual Server version 1.2.1 (size=4096)\n"
    with pytest.raises(ParseError, match=r"ipvsadm.txt:2: not an IP address: '10.96.0.999:443'"):
        parse_ipvsadm(head + "TCP  10.96.0.999:443 rr\n", "nodes/n/ipvsadm.txt")
    with pytest.raises(ParseError, match=r"ipvsadm.txt:3: real server weight 'x'"):
        parse_ipvsadm(head + "TCP  10.96.0.1:443 rr\n  -> 172.18.0.2:6443 Masq x 0 0\n",
                      "nodes/n/ipvsadm.txt")
    with pytest.raises(ParseError, match=r"service default/web: vips is int, expected a list"):
        parse_config_dump('{"workloads": [], "services": [{"namespace": "default", "name": "web", '
                          '"vips": 5}]}',
                          "nodes/n/ztunnel/config_dump.json", "n")


def test_an_infinite_port_number_in_a_config_dump_is_skipped_not_a_crash():
    # Found by `benchmarks/fuzz.py --mode parsers --seed 11`: JSON's 1e999 decodes to inf and
    # int(inf) raises OverflowError, which reached the CLI as an internal error.
    from ambientctl.analyzers.parse.ztunnel import parse_config_dump

    cfg = parse_config_dump(
        '{"workloads": [], "services": [{"namespace": "default", "name": "web", '
        '"vips": ["/10.96.0.10"], "ports": {"80": 1e999, "443": 8443}, "endpoints": {}}]}',
        "nodes/n/ztunnel/config_dump.json", "n")
    (svc,) = cfg.services
    assert dict(svc.ports) == {443: 8443}
