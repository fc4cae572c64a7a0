"""`bundle verify` over an indexed manifest walks its entries one at a time (issue 12).

Why: at 200 nodes the manifest holds ~80k entries; typing them all to look at each once
was most of verify's peak memory. These tests pin that the streamed walk finds exactly
what the eager one finds (same mismatches, same order, same count of checked files) on
the examples, a generated bundle and damaged bundles, as a directory and as both kinds
of .tar.gz, and that it keeps no typed entry once done.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import ambientctl.manifest_index as manifest_index
from ambientctl.bundle import reader
from ambientctl.bundle.reader import Mismatch, open_bundle
from ambientctl.manifest_index import LazyManifest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import scale_bundle  # noqa: E402

EX = ROOT / "examples" / "inpod-kind-ambient"
VICTIM = "nodes/ambient-worker/host/iptables-save.txt"


def _both(location: Path, monkeypatch: pytest.MonkeyPatch,
          ) -> tuple[tuple[list[Mismatch], int], tuple[list[Mismatch], int]]:
    """verify_counted() with the manifest decoded whole, then with it indexed (the
    threshold lowered so the examples' small manifests take the streamed path)."""
    eager = open_bundle(str(location))
    try:
        assert not isinstance(eager.typed_manifest, LazyManifest)
        want = eager.verify_counted()
    finally:
        eager.close()
    with monkeypatch.context() as m:
        m.setattr(reader, "LAZY_MANIFEST_BYTES", 0)
        lazy = open_bundle(str(location))
        try:
            typed = lazy.typed_manifest
            assert isinstance(typed, LazyManifest), "the index refused this manifest"
            got = lazy.verify_counted()
            assert typed.decoded() == (), "verify kept typed entries"
        finally:
            lazy.close()
    return want, got


def _edit_manifest(d: Path, fn: Callable[[list[dict]], None]) -> None:
    doc = json.loads((d / "manifest.json").read_text())
    fn(doc["entries"])
    (d / "manifest.json").write_text(json.dumps(doc, indent=2) + "\n")


def _retype(entries: list[dict]) -> None:
    """Values of the wrong type: a string size, a numeric sha256, a numeric path."""
    with_path = [e for e in entries if e.get("path")]
    with_path[0]["size"] = str(with_path[0]["size"])
    with_path[1]["sha256"] = 7
    with_path[2]["path"] = 5


def _duplicate(entries: list[dict]) -> None:
    """The same file listed twice, the second time with another hash."""
    e = next(e for e in entries if e.get("path") == VICTIM)
    entries.append({**e, "sha256": "0" * 64})


DAMAGE: dict[str, Callable[[Path], None]] = {
    "clean": lambda d: None,
    "hash_mismatch": lambda d: (d / VICTIM).write_text((d / VICTIM).read_text() + "# x\n"),
    "missing_file": lambda d: (d / VICTIM).unlink(),
    "unlisted_file": lambda d: (d / "nodes" / "extra.txt").write_text("added\n"),
    "size_only": lambda d: _edit_manifest(d, lambda es: [
        e.update(sha256=None, size=1) for e in es if e.get("path") == VICTIM]),
    "bad_entry_types": lambda d: _edit_manifest(d, _retype),
    "duplicate_entry": lambda d: _edit_manifest(d, _duplicate),
}


@pytest.mark.parametrize("example", ["inpod-kind-ambient", "seed-kind-ambient",
                                     "mixed-kind-ambient"])
def test_streamed_verify_matches_the_eager_one_on_the_examples(
        example: str, monkeypatch: pytest.MonkeyPatch) -> None:
    want, got = _both(ROOT / "examples" / example, monkeypatch)
    assert got == want
    assert want[1] > 0


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_streamed_verify_reports_the_same_damage_as_the_eager_one(
        damage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "b"
    shutil.copytree(EX, d)
    DAMAGE[damage](d)
    want, got = _both(d, monkeypatch)
    assert got == want
    assert (want[0] == []) == (damage == "clean")
    for indexed in (True, False):  # the same damage read through either archive kind
        tgz = scale_bundle.to_tar(d, tmp_path / f"b{int(indexed)}.tar.gz", indexed=indexed)
        assert _both(tgz, monkeypatch) == (want, want)


def test_entries_are_read_in_batches_and_a_batch_boundary_loses_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "b"
    shutil.copytree(EX, d)
    DAMAGE["hash_mismatch"](d)
    DAMAGE["bad_entry_types"](d)
    want, _ = _both(d, monkeypatch)
    for batch in (1, 700, 5000):  # one entry per read, a few, many
        monkeypatch.setattr(manifest_index, "_BATCH", batch)
        assert _both(d, monkeypatch)[1] == want


def test_streamed_verify_matches_the_eager_one_on_a_generated_bundle(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = scale_bundle.generate(tmp_path / "g", 2)
    victim = next(p for p in sorted((bundle / "nodes").rglob("*.txt")))
    victim.write_text(victim.read_text() + "# tampered\n")
    want, got = _both(bundle, monkeypatch)
    assert got == want
    assert [m.path for m in want[0]] == [victim.relative_to(bundle).as_posix()]


def test_after_verify_the_entries_are_still_all_there(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # verify decodes without caching; asking for every entry afterwards still types them all
    monkeypatch.setattr(reader, "LAZY_MANIFEST_BYTES", 0)
    b = open_bundle(str(EX))
    try:
        _, checked = b.verify_counted()
        assert b.typed_manifest is not None
        assert sum(1 for e in b.typed_manifest.entries if e.path) == checked
    finally:
        b.close()
