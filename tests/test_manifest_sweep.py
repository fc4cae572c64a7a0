"""The manifest sweep (`LazyManifest._sweep`) answers as typing every entry does.

Why (issue 12): doctor asks for the whole manifest's damage; typing all 80k entries of a
200-node bundle (and holding them) was most of that. The sweep types only the entries a
quick test (`manifest_model._entry_clean`) cannot clear, and keeps each entry's path and
sha256 for the file reads that follow. These tests pin the quick test against `_entry`
key by key and value type by value type, and the sweep's problems and hashes against
the whole typing (`entries`, `problems`, `entry_for`), damaged entries included.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from ambientctl.errors import ParseError
from ambientctl.manifest_index import LazyManifest, index_manifest, index_manifest_chunked
from ambientctl.manifest_model import _ENTRY_TYPES, _entry, _entry_clean, _Reader
from tests.test_manifest_fast_index import _entry as written_entry
from tests.test_manifest_fast_index import _written

# One value of every JSON type (and a float, which is not an integer to the manifest).
VALUES: list[object] = ["x", "", 3, 0, -1, 2.5, True, False, None, ["a", 1], [], {"k": 1}]


@pytest.mark.parametrize("key", sorted({k for k, _t in _ENTRY_TYPES} | {"wrapper", "x"}))
@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_the_quick_test_clears_an_entry_exactly_when_entry_finds_nothing(
        key: str, value: object) -> None:
    e = written_entry(1)
    e[key] = value
    r = _Reader()
    _entry(r, e, "$.entries[1]")
    assert _entry_clean(e) == (not r.problems), (key, value, r.problems)


def _damaged() -> list[dict[str, Any]]:
    entries = [written_entry(i) for i in range(40)]
    entries[3].update(exit_code="x", status="timeout")  # damage, and a failed command
    entries[7].update(size=1.5)
    entries[9].update(sha256=7)  # a hash of the wrong type: typed as none
    entries[11].update(path="")  # no path
    entries[12].update(sha256="")  # no hash
    entries[13].update(path=entries[2]["path"], sha256="cd" * 32)  # the path twice
    entries[20].update(optional_absent="yes", note=["n"])
    entries[21].update(stderr='braces } { and "quotes" in a string')
    entries[22].update(path="nodes/n22/host/odd\\name.txt")
    entries[25].update(path=None, status="skipped", optional_absent=True)  # absent: data
    entries[26].update(path=None, status="nonzero-exit", exit_code=1, stderr="no such file")
    entries[27].update(path=None, status="nonzero-exit", exit_code=1, target="node/n26",
                       spec=entries[26]["spec"])  # the same command failed again
    entries[28].update(status=5)  # not a string: typed as "", not a failure
    return entries


def _lazies(raw: bytes) -> list[LazyManifest]:
    """The manifest indexed whole, and chunked when the chunked scan takes it (it stands
    aside for a brace inside a string)."""
    whole = index_manifest(raw)
    assert whole is not None
    chunked = index_manifest_chunked(lambda a, b: raw[a:b], len(raw), chunk=512)
    return [whole[1]] + ([chunked[1]] if chunked is not None else [])


def test_both_indexes_are_swept() -> None:
    entries = _damaged()
    del entries[21]  # no brace inside a string: the chunked scan takes it
    assert len(_lazies(_written(entries))) == 2


@pytest.mark.parametrize("typed_first", [(), (2, 3), tuple(range(0, 39, 3))])
def test_the_sweep_finds_the_problems_and_hashes_that_typing_every_entry_finds(
        typed_first: tuple[int, ...]) -> None:
    entries = _damaged()
    for variant in (entries, entries[:21] + entries[22:]):
        _compare(variant, typed_first)


def _compare(entries: list[dict[str, Any]], typed_first: tuple[int, ...]) -> None:
    raw = _written(entries)
    for swept, whole in zip(_lazies(raw), _lazies(raw), strict=True):
        for i in typed_first:  # files read before the sweep: their entries typed then
            swept.entry_for(entries[i]["path"] or "")
        assert whole.entries  # every entry typed: `problems` is then `_all`'s
        failed = whole.not_collected_entries()
        assert [e.status for e in failed] == ["timeout", "nonzero-exit", "nonzero-exit"]
        assert swept.not_collected_entries() == failed  # sweeps, types only the candidates
        problems = swept.problems
        assert problems == whole.problems != ()
        assert swept.problems_so_far == whole.problems_so_far
        assert len(swept.decoded()) < len(whole.decoded())  # the clean ones were not typed
        paths = {e.path for e in whole.entries if e.path} | {"nodes/absent.txt", ""}
        for path in sorted(paths):
            e = whole.entry_for(path)
            assert swept.sha256_for(path) == (e.sha256 if e is not None else None), path
        assert swept.entries == whole.entries  # and typing all still works after a sweep


def test_a_manifest_whose_entries_do_not_decode_reports_as_before() -> None:
    raw = _written([written_entry(i) for i in range(5)])
    bad = raw.replace(b'"duration_ms": 3', b'"duration_ms": 3x', 1)
    for lazy in _lazies(bad)[:1]:
        with pytest.raises(ParseError) as swept:
            _ = lazy.problems
        whole = index_manifest(bad)
        assert whole is not None
        with pytest.raises(ParseError) as typed:
            _ = whole[1].entries
        assert (swept.value.line, str(swept.value)) == (typed.value.line, str(typed.value))


def test_json_dumps_layout_is_swept_too() -> None:
    doc = json.loads(_written(_damaged()))
    raw = json.dumps(doc, indent=1).encode()
    swept, whole = _lazies(raw)[0], _lazies(raw)[0]
    assert whole.entries
    assert swept.problems == whole.problems
    assert [swept.sha256_for(e.path) for e in whole.entries if e.path] == [
        whole.entry_for(e.path).sha256 for e in whole.entries if e.path]  # type: ignore[union-attr]
