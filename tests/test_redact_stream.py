"""`bundle redact` streams: one source file in memory at a time, the same bytes as before.

Why: held whole, redaction of a 200-node bundle peaked at 1.2 GiB (every file's text, every
parsed JSON document and every output at once). Streaming must not change a single output
byte, nor the order in which the Redactor meets values (which decides the replacements),
so the output is compared against the in-memory implementation kept in
tests/redact_reference.py, on the examples and on a generated bundle, as a directory and
as a .tar.gz.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from ambientctl.bundle import reader as bundle_reader
from ambientctl.bundle import writer as bundle_writer
from ambientctl.bundle.redact import redact_bundle
from ambientctl.bundle.redact_fields import file_kind
from tests.redact_reference import redact_in_memory

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import scale_bundle  # noqa: E402

KEY = b"redaction-stream-key-0123456789a"


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scale_bundle.generate(tmp_path_factory.mktemp("gen") / "b3", 3)


@pytest.mark.parametrize("manifest", ["decoded", "indexed"])
@pytest.mark.parametrize("out_name", ["red", "red.tar.gz"])
@pytest.mark.parametrize("source", ["seed-kind-ambient", "inpod-kind-ambient",
                                    "mixed-kind-ambient", "generated"])
def test_streamed_redaction_writes_the_bytes_the_in_memory_one_wrote(
        tmp_path: Path, generated: Path, source: str, out_name: str, manifest: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`indexed`: the threshold lowered so that the source's manifest is indexed and its
    entries stream from the file (a 200-node bundle's case), not decoded whole."""
    if manifest == "indexed":
        monkeypatch.setattr(bundle_reader, "LAZY_MANIFEST_BYTES", 0)
    src = str(generated if source == "generated" else ROOT / "examples" / source)
    outs = {}
    for how, fn in (("old", redact_in_memory), ("new", redact_bundle)):
        (tmp_path / how).mkdir()
        out = tmp_path / how / out_name
        result = fn(src, str(out), key=KEY)
        tree = _tree(out) if out.is_dir() else {"": out.read_bytes()}
        private_map = Path(result.map_path).read_bytes()
        outs[how] = (tree, private_map, result.bundle_id, result.parent, result.counts,
                     result.warnings)
    assert outs["new"] == outs["old"]
    assert outs["new"][0], "nothing was written"


def test_redaction_holds_one_source_file_at_a_time(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path, generated: Path) -> None:
    """While writing, each file is read, redacted and handed to the writer before the next
    one is read: the reads and writes interleave one to one (dropped files excepted)."""
    events: list[tuple[str, str]] = []
    real_read = bundle_reader.Bundle.read_bytes

    def read_bytes(self: bundle_reader.Bundle, rel: str, *, verify: bool = True) -> bytes:
        events.append(("read", rel))
        return real_read(self, rel, verify=verify)

    real_write = bundle_writer.write_prepared

    def write_prepared(out: str, files, manifest):  # type: ignore[no-untyped-def]
        def seen():  # type: ignore[no-untyped-def]
            for rel, data in files:
                events.append(("write", rel))
                yield rel, data
        events.append(("writing", ""))
        return real_write(out, seen(), manifest)

    monkeypatch.setattr(bundle_reader.Bundle, "read_bytes", read_bytes)
    monkeypatch.setattr("ambientctl.bundle.redact.write_prepared", write_prepared)
    result = redact_bundle(str(generated), str(tmp_path / "red"), key=KEY)
    writing = events[events.index(("writing", "")) + 1:]
    writes = [e for e in writing if e[0] == "write"]
    assert len(writes) == result.counts["files"] > 100
    pending = 0
    for kind, rel in writing:
        if kind == "read" and file_kind(rel) is None:
            continue  # dropped: read to check its hash, never written
        pending += 1 if kind == "read" else -1
        assert pending in (0, 1), "a second file was read before the first was written"
    assert pending == 0
    assert json.loads((tmp_path / "red" / "manifest.json").read_text())["redaction"]["applied"]


@pytest.mark.parametrize("manifest", ["decoded", "indexed"])
@pytest.mark.parametrize("entries_last", [True, False])
def test_streamed_manifest_keeps_unknown_fields_and_key_order_as_the_in_memory_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, manifest: str,
        entries_last: bool) -> None:
    """A manifest field this version does not know is made opaque and written after the
    entries (the spooled manifest's tail); entries not last (hand-edited, decoded whole)
    are walked in document order. Both as the in-memory implementation wrote them."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "examples" / "inpod-kind-ambient", src)
    doc = json.loads((src / "manifest.json").read_text())
    entries = doc.pop("entries")
    doc["x_site"] = {"owner": "team-a", "where": ["rack 4", "10.1.2.3"]}
    doc = {**doc, "entries": entries} if entries_last else {"entries": entries, **doc}
    (src / "manifest.json").write_text(json.dumps(doc, indent=2) + "\n")
    if manifest == "indexed":
        monkeypatch.setattr(bundle_reader, "LAZY_MANIFEST_BYTES", 0)
    outs = []
    for how, fn in (("old", redact_in_memory), ("new", redact_bundle)):
        (tmp_path / how).mkdir()
        out = tmp_path / how / "red"
        result = fn(str(src), str(out), key=KEY)
        outs.append((_tree(out), Path(result.map_path).read_bytes(), result.warnings))
    assert outs[0] == outs[1]
    written = json.loads((tmp_path / "new" / "red" / "manifest.json").read_text())
    assert list(written)[-1] != "entries" and "x_site" not in written  # made opaque, after
