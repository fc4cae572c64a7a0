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
