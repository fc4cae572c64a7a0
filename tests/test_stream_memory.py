"""`bundle verify` and `bundle redact` hold a bounded part of a large manifest (issue 12).

Why: at 200 nodes the manifest holds ~80k entries (48 MB). Opening a bundle read it whole
to index it, and redaction decoded it whole (several times its size as Python objects),
then built the rewritten entries as one list. Now the manifest is indexed a chunk at a
time (`index_manifest_chunked`), its entries stream through redaction into a spool, and
these tests pin both: the chunked index answers exactly what the whole-document index
answers (or declines, and the caller indexes the whole document), and a manifest far
larger than the read batch goes through open, verify and redact with a peak of traced
memory well under its own size, which reading it whole already exceeds.
"""

from __future__ import annotations

import io
import json
import shutil
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ambientctl.bundle import reader
from ambientctl.bundle.manifest import EntrySpool
from ambientctl.bundle.reader import open_bundle
from ambientctl.bundle.redact import redact_bundle
from ambientctl.bundle.tarindex import IndexedMember
from ambientctl.bundle.writer import write_tarball
from ambientctl.manifest_index import (
    LazyManifest,
    PathIndex,
    index_manifest,
    index_manifest_chunked,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if (p / "manifest.json").is_file())
KEY = b"stream-memory-test-key-012345678"


def _reader(raw: bytes) -> Callable[[int, int], bytes]:
    return lambda start, end: raw[start:end]


def _answer(found: tuple[dict[str, Any], LazyManifest] | None, raw: bytes) -> object:
    """What an index tells a reader: the header, each entry's span and typed value, which
    entry each path finds, the failed entries and the damage."""
    if found is None:
        return None
    header, lazy = found
    d = lazy.__dict__
    spans = list(zip(d["_starts"], d["_ends"], strict=True))
    paths = sorted({json.loads(raw[a:b]).get("path") for a, b in spans
                    if isinstance(json.loads(raw[a:b]), dict)} - {None}, key=str)
    return (header, spans, list(lazy.iter_entries()), d["_failed"],
            [(p, lazy.entry_for(p)) for p in paths if isinstance(p, str)]
            + [("no/such/file", lazy.entry_for("no/such/file"))],
            lazy.problems)


def _variants() -> list[tuple[str, bytes, bool]]:
    """(name, manifest bytes, must the chunked scan answer?)."""
    base = json.loads((EXAMPLES[0] / "manifest.json").read_bytes())
    entries = base["entries"]
    out = [(f"{p.name}", (p / "manifest.json").read_bytes(), True) for p in EXAMPLES]

    def doc(**changes: Any) -> bytes:
        return json.dumps({**base, **changes}, indent=2).encode()

    out += [
        ("compact", json.dumps(base).encode(), True),
        ("wide indent", json.dumps(base, indent=9).encode(), True),
        ("no entries", doc(entries=[]), True),
        ("damaged values", doc(entries=[{**e, "size": "big", "argv": "x"} for e in entries]),
         True),
        ("escaped quotes", doc(entries=[{**e, "note": 'say "entries": ['} for e in entries]),
         True),
        # shapes the forward scan declines (the whole-document index decides)
        ("nested entries key first", doc(collection={"entries": [1]}), False),
        ("brace in a string", doc(entries=[{**e, "note": "a{b}c"} for e in entries]), False),
        ("object in an entry", doc(entries=[{**entries[0], "x": {"y": 1}}, *entries[1:]]),
         False),
        ("entries key inside an entry", doc(entries=[{**e, "entries": [1]} for e in entries]),
         False),
        ("trailing garbage", doc() + b" {}", False),
        ("truncated", doc()[:-40], False),
        ("entries twice", b'{"schema": "s", "entries": [], "entries": [{"path": "a"}]}',
         False),
    ]
    return out


@pytest.mark.parametrize("chunk", [1, 7, 300, 4097, 1 << 20])
@pytest.mark.parametrize("variant", _variants(), ids=lambda v: v[0])
def test_chunked_index_answers_what_the_whole_document_index_answers(
        variant: tuple[str, bytes, bool], chunk: int) -> None:
    _name, raw, must = variant
    chunked = index_manifest_chunked(_reader(raw), len(raw), chunk=chunk)
    if must:
        assert chunked is not None, "the chunked scan declined a manifest it should index"
    if chunked is not None:
        assert _answer(chunked, raw) == _answer(index_manifest(raw, _reader(raw)), raw)


def test_path_index_finds_the_last_entry_naming_a_path_even_when_hashes_collide(
        monkeypatch: pytest.MonkeyPatch) -> None:
    raw = b'[{"path": "a"},{"path": "b"},{"path": "a"},{"path": "c"}]'
    starts, ends = [1, 15, 29, 43], [14, 28, 42, 56]
    assert all(raw[s:e].startswith(b"{") and raw[s:e].endswith(b"}")
               for s, e in zip(starts, ends, strict=True))
    for colliding in (False, True):
        index = PathIndex()
        if colliding:  # every path hashes alike: only the bytes tell them apart
            monkeypatch.setattr("builtins.hash", lambda _x: 42)
        for i, p in enumerate(["a", "b", "a", "c"]):
            index.add(p, i)
        index.freeze()
        found = {p: index.find(p, _reader(raw), starts, ends)[0] for p in "abcd"}
        monkeypatch.undo()
        assert found == {"a": 2, "b": 1, "c": 3, "d": None}


N_EXTRA = 30_000  # entries added to the example's manifest: ~13 MB, 13 read batches


@pytest.fixture(scope="module")
def big_manifest_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An example bundle whose manifest also lists N_EXTRA commands that timed out (no
    file: they cost nothing but manifest)."""
    out = tmp_path_factory.mktemp("big") / "bundle"
    shutil.copytree(ROOT / "examples" / "inpod-kind-ambient", out)
    doc = json.loads((out / "manifest.json").read_bytes())
    doc["entries"] += [
        {"path": None, "spec": "ss-tnp.txt", "target": f"pod/team-a/worker-{i}",
         "argv": ["ss", "-Hltnp"], "wrapper": [], "transport": "local",
         "status": "timeout", "exit_code": None, "stderr": "timed out after 30 s",
         "stderr_truncated": False, "note": "timed out", "optional_absent": False,
         "started_at": "2024-05-01T10:00:00Z", "duration_ms": 30000, "size": None,
         "sha256": None}
        for i in range(N_EXTRA)]
    (out / "manifest.json").write_text(json.dumps(doc, indent=2) + "\n")
    return out


def _peak(fn: Callable[[], object]) -> tuple[object, int]:
    tracemalloc.start()
    try:
        got = fn()
        return got, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_opening_and_verifying_a_large_manifest_holds_a_fraction_of_it(
        big_manifest_bundle: Path) -> None:
    size = (big_manifest_bundle / "manifest.json").stat().st_size
    assert size > 8 * reader.LAZY_MANIFEST_BYTES // 3

    def verify() -> object:
        bundle = open_bundle(str(big_manifest_bundle), stream_manifest=True)  # as verify does
        try:
            assert isinstance(bundle.typed_manifest, LazyManifest)
            return bundle.verify_counted()
        finally:
            bundle.close()

    (problems, checked), peak = _peak(verify)  # type: ignore[misc]
    assert problems == [] and checked > 100
    # Reading the document whole costs its size at least (measured before the chunked
    # index: 18.9 MB for this 15 MB manifest; now 5.7 MB: read batches, typed entries of
    # one batch, and the positions of the 30k failed entries).
    assert peak < size / 2, f"peak {peak} bytes for a {size}-byte manifest"


def test_redacting_a_large_manifest_streams_its_entries(big_manifest_bundle: Path,
                                                        tmp_path: Path) -> None:
    size = (big_manifest_bundle / "manifest.json").stat().st_size
    out = tmp_path / "red"
    result, peak = _peak(lambda: redact_bundle(str(big_manifest_bundle), str(out), key=KEY))
    written = json.loads((out / "manifest.json").read_bytes())
    assert len(written["entries"]) == len(
        json.loads((big_manifest_bundle / "manifest.json").read_bytes())["entries"])
    assert written["bundle_id"] == result.bundle_id  # type: ignore[attr-defined]
    assert written["redaction"]["applied"]
    # Decoded whole, the entries alone were several times the document's size (measured
    # before streaming: 103 MB for this 15 MB manifest; streamed: 7.4 MB).
    assert peak < size, f"peak {peak} bytes for a {size}-byte manifest"


@pytest.mark.parametrize(("head", "entries", "tail"), [
    ({"a": 1, "b": [1, 2]}, [{"x": 1, "y": []}, {"z": {"q": "é"}}], {"t": [1], "u": {}}),
    ({}, [], {}),
    ({"a": 1}, [], {"t": 2}),
    ({}, [{"a": 1}], {}),
])
def test_spooled_document_is_the_json_dump_of_the_whole(
        head: dict[str, Any], entries: list[dict[str, Any]], tail: dict[str, Any]) -> None:
    spool = EntrySpool()
    with spool:
        for e in entries:
            spool.append(e)
        out = io.BytesIO()
        spool.write_document(out, head, tail)
    whole = {**head, "entries": entries, **tail}
    assert out.getvalue().decode() == json.dumps(whole, indent=2, ensure_ascii=False) + "\n"


def test_verify_of_an_indexed_archive_keeps_one_listing_and_no_random_access_stream(
        tmp_path: Path) -> None:
    """The forward pass hashes every member against the index and keeps 32 bytes each:
    no second listing of the members, no decompressor checkpoints or decoded blocks;
    files are read through the index afterwards, as before verify."""
    src = ROOT / "examples" / "inpod-kind-ambient"
    out = tmp_path / "b.tar.gz"
    write_tarball(src, str(out), top="b", mtime=0)
    plain = open_bundle(str(src))
    bundle = open_bundle(str(out))
    try:
        want = plain.verify_counted()
        assert bundle.verify_counted() == want
        assert bundle.verify_counted() == want  # the pass is not run twice
        members = bundle._members  # noqa: SLF001 - what the bundle holds after verify
        assert all(isinstance(m, IndexedMember) for m in members.values())
        assert bundle._gz is None  # noqa: SLF001
        rel = "cluster/pods.json"
        assert bundle.read_bytes(rel) == plain.read_bytes(rel)
    finally:
        bundle.close()
        plain.close()


def test_manifest_header_with_many_targets_is_written_without_building_its_text(
        tmp_path: Path) -> None:
    """Why: the header holds every target (10,200 at 200 nodes x 50 pods). `json.dumps`
    with an indent lists every chunk of the text before joining it (~6x the text), then
    the text was encoded once more: the collection's peak was its manifest header. Written
    chunk by chunk, the peak above the header's own objects stays a small part of its text,
    and the bytes are those of `json.dumps`."""
    head = {"schema": "x", "targets": [
        {"id": f"pod/app/app-{i}", "kind": "pod", "node": f"node-{i // 50}",
         "pod": {"namespace": "app", "name": f"app-{i}"},
         "netns": {"path": f"/host/var/run/netns/cni-{i:08d}"}, "netns_inode": 4026532000 + i,
         "dir": f"nodes/node-{i // 50}/pods/app/app-{i}", "transport": "kube", "route": "r"}
        for i in range(10_000)]}
    text = len(json.dumps(head, indent=2, ensure_ascii=False))
    out = tmp_path / "manifest.json"
    with EntrySpool() as spool, open(out, "wb") as fh:
        spool.append({"a": 1})
        tracemalloc.start()
        try:
            spool.write_document(fh, head)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    whole = {**head, "entries": [{"a": 1}]}
    assert out.read_bytes() == (json.dumps(whole, indent=2, ensure_ascii=False) + "\n").encode()
    assert peak < text // 2, (peak, text)  # measured ~0.3x; json.dumps + encode: ~6x
