"""The fast manifest index (`manifest_index._fast_index`) equals the exact scan, or stands aside.

Why (issue 12): a 200-node manifest (80k entries, 48 MB) is indexed on every trace; the
fast index reads the writer's own layout with C loops (literal searches, counts) and
proves what it found. These tests pin that on tricky manifests its spans, paths and failed
entries are the exact scan's (`_exact_index`), and that on any other layout it returns
None (the exact scan then runs) rather than a different answer.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from ambientctl.bundle.manifest import Manifest
from ambientctl.manifest_index import _exact_index, _fast_index, index_manifest
from ambientctl.manifest_model import read_manifest


def _entry(i: int, **over: Any) -> dict[str, Any]:
    """An entry with the writer's keys, in the writer's order (`bundle.manifest.entry_for`)."""
    e: dict[str, Any] = {
        "path": f"nodes/n{i}/host/ip-addr-{i}.txt", "spec": "ip-addr.txt", "target": f"node/n{i}",
        "argv": ["ip", "addr"], "wrapper": ["ip", "netns", "exec", f"w{i}"],
        "transport": "local", "status": "ok", "exit_code": 0, "stderr": "",
        "stderr_truncated": False, "note": None, "optional_absent": False,
        "started_at": "2026-12-05T10:07:39Z", "duration_ms": 3, "size": 10 + i, "sha256": "ab" * 32,
    }
    e.update(over)
    return e


def _written(entries: list[dict[str, Any]]) -> bytes:
    """The bytes `collect` writes for these entries (the writer's layout: indent=2)."""
    return Manifest(created_at="2026-12-05T10:07:39Z", collection={"mode": "local"},
                    targets=[{"id": "node/n0", "kind": "node", "dir": "nodes/n0/host"}],
                    entries=entries).to_json()


def _plain(index: Any) -> Any:
    a, (starts, ends, paths, failed) = index
    return a, list(starts), list(ends), paths, failed


TRICKY = {
    "plain": {},
    "braces and quotes in a string": {3: {"stderr": 'a }, { b "quoted" [x] "status": "no"'}},
    "escaped newline and separator-like text": {2: {"stderr": "line\n  },\n  {\n   \"path\": \"x\""}},
    "backslash in a path": {4: {"path": "nodes/n4/host/odd\\name.txt"}},
    "quote in a path": {5: {"path": 'nodes/n5/host/q"uote.txt'}},
    "a failed command": {1: {"path": None, "status": "timeout", "size": None, "sha256": None,
                             "note": "timed out after 30s"}},
    "an optional tool absent": {6: {"path": None, "status": "skipped", "optional_absent": True}},
    "status not a string": {2: {"status": None}},
    "status with an escape": {3: {"status": "o\\u006b"}},  # json writes it as "o\\\\u006b"
    "unicode in a path": {4: {"path": "nodes/n4/host/é-ü.txt"}},
    "path empty": {1: {"path": ""}},
    "the same path twice": {5: {"path": "nodes/n1/host/ip-addr-1.txt"}},
    "the word status in a value": {2: {"note": "status", "stderr": "\"status\": \"ok\""}},
}


@pytest.mark.parametrize("case", sorted(TRICKY))
def test_the_fast_index_equals_the_exact_scan_on_the_writers_layout(case: str) -> None:
    entries = [_entry(i) for i in range(8)]
    for i, over in TRICKY[case].items():
        entries[i].update(over)
    raw = _written(entries)
    fast, exact = _fast_index(raw), _exact_index(raw)
    assert fast is not None and exact is not None
    assert _plain(fast) == _plain(exact)
    # and the lazy manifest built on it types what the whole decode types
    indexed = index_manifest(raw)
    assert indexed is not None
    full = read_manifest(json.loads(raw))
    assert indexed[1].not_collected() == full.not_collected()
    assert indexed[1].entries == full.entries


@pytest.mark.parametrize("indent", [1, 2, 4])
def test_every_indentation_of_the_writer_is_read_fast(indent: int) -> None:
    doc = json.loads(_written([_entry(i) for i in range(5)]))
    raw = json.dumps(doc, indent=indent).encode()
    fast = _fast_index(raw)
    assert fast is not None and _plain(fast) == _plain(_exact_index(raw))
    assert fast[1][2] == [e["path"] for e in doc["entries"]]
    assert fast[1][3] == ()


def test_another_key_order_is_read_by_the_exact_rules() -> None:
    entries = [_entry(i) for i in range(6)]
    entries[2] = {"status": "nonzero-exit", **{k: v for k, v in entries[2].items()
                                               if k != "status"}}
    entries[4] = dict(reversed(list(entries[4].items())))  # path last, status before it
    raw = _written(entries)
    fast = _fast_index(raw)
    assert fast is not None and _plain(fast) == _plain(_exact_index(raw))
    assert fast[1][3] == (2,)
    assert fast[1][2][4] == entries[4]["path"]


def test_a_compact_manifest_is_indexed_fast_and_read_by_the_exact_rules() -> None:
    doc = json.loads(_written([_entry(i, status="ok" if i != 2 else "timeout")
                               for i in range(4)]))
    raw = json.dumps(doc, separators=(",", ":")).encode()
    fast = _fast_index(raw)
    assert fast is not None and _plain(fast) == _plain(_exact_index(raw))
    assert fast[1][3] == (2,)


@pytest.mark.parametrize("layout", ["one line", "mixed separators"])
def test_another_layout_falls_back_to_the_exact_scan(layout: str) -> None:
    doc = json.loads(_written([_entry(i) for i in range(4)]))
    if layout == "one line":
        raw = json.dumps(doc).encode()  # `}, {`: no separator the first entry announces
    else:
        raw = json.dumps(doc, indent=2).encode().replace(b"},\n    {", b"}, {", 1)
    assert _fast_index(raw) is None
    assert _exact_index(raw) is not None  # what index_manifest then uses
    indexed = index_manifest(raw)
    assert indexed is not None
    assert indexed[1].entries == read_manifest(doc).entries


def test_a_nested_object_is_refused_by_both() -> None:
    entries = [_entry(i) for i in range(4)]
    entries[1]["extra"] = {"path": "nodes/x/host/ip-addr.txt"}
    raw = _written(entries)
    assert _fast_index(raw) is None and _exact_index(raw) is None
    assert index_manifest(raw) is None


def test_a_raw_newline_in_a_string_that_fakes_a_separator_is_refused() -> None:
    """Invalid JSON (a control character in a string) whose string holds the separator:
    the quote parity of the two halves is odd, so the fast index does not split there."""
    raw = _written([_entry(i) for i in range(4)])
    fake = b'"stderr": "x},\n    {\n      y"'
    raw = raw.replace(b'"stderr": ""', fake, 1)
    assert _fast_index(raw) is None
    exact = _exact_index(raw)
    assert exact is not None and len(exact[1][0]) == 4  # the string is one string


def test_a_second_status_key_is_read_as_the_exact_scan_reads_it() -> None:
    """`"status": "ok"` once is not enough: an earlier `"status"` key is the one `_field`
    (and so the exact scan) reads."""
    raw = _written([_entry(i, transport=f"t{i}") for i in range(4)])
    raw = raw.replace(b'"transport": "t2"', b'"status": "timeout"', 1)
    fast = _fast_index(raw)
    assert fast is not None and _plain(fast) == _plain(_exact_index(raw))
    assert fast[1][3] == (2,)


def test_an_entry_that_is_not_json_is_reported_at_its_line_in_the_document() -> None:
    """The index proves the entries' layout, not their tokens: `"size": 40x` passes it, and
    the entry fails only when decoded. The error names the line in manifest.json where the
    damage is, as the eager reader would, not a line counted inside the entry."""
    from ambientctl.errors import ParseError

    raw = _written([_entry(i) for i in range(50)]).replace(b'"size": 40,', b'"size": 40x,')
    line = raw[:raw.index(b"40x")].count(b"\n") + 1
    found = index_manifest(raw)
    assert found is not None
    _header, lazy = found
    with pytest.raises(ParseError, match=rf"^manifest.json:{line}: "):
        lazy.entry_for("nodes/n30/host/ip-addr-30.txt")
