"""A trace on a multi-node bundle opens only the files of the namespaces on its path.

Why (issue 12): at 200 nodes a trace between two pods must cost about what it costs at 2.
The snapshot parses a namespace when the walk enters it (tests/test_trace_touches_path.py
pins that at the model level); these tests pin it at the reader, for a directory and a
`.tar.gz`: the files opened are the manifest, the cluster objects, the ztunnel dumps the
lookup needed and files of the path's nodes only; the same files whether the cluster has 3
nodes or 6 (nodes 0 and 1 are the path's); only their manifest entries are typed; and the
answer equals the one of a full (eager) load.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ambientctl.bundle import reader
from ambientctl.loading import load_snapshot
from ambientctl.manifest_index import LazyManifest, index_manifest
from ambientctl.manifest_model import read_manifest
from tests.path_probe import path_namespaces, trace_doc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import scale_bundle  # noqa: E402

SRC, DST = "sleep", "productpage"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("little")
    out: dict[str, Path] = {}
    for n in (3, 6):
        d = scale_bundle.generate(tmp / f"b{n}", n, pods=3)
        out[f"dir{n}"] = d
        out[f"tar{n}"] = scale_bundle.to_tar(d, tmp / f"b{n}.tar.gz")
    return out


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every bundle file whose bytes are read, in order; manifests indexed (not decoded)
    whatever their size, so the lazy manifest is what the trace runs on."""
    got: list[str] = []
    read_bytes = reader.Bundle._read_bytes
    read_text = reader.Bundle.read_text

    def _bytes(self: reader.Bundle, rel: str) -> bytes:
        got.append(rel)
        return read_bytes(self, rel)

    def _text(self: reader.Bundle, rel: str) -> str:
        if isinstance(self._members.get(rel), str):
            got.append(rel)  # a directory file is streamed, not read through _read_bytes
        return read_text(self, rel)

    monkeypatch.setattr(reader.Bundle, "_read_bytes", _bytes)
    monkeypatch.setattr(reader.Bundle, "read_text", _text)
    monkeypatch.setattr(reader, "LAZY_MANIFEST_BYTES", 0)
    yield got


def _trace(location: Path) -> tuple[dict, set[str], LazyManifest]:
    snap = load_snapshot(str(location))
    doc, t = trace_doc(snap, SRC, DST)
    assert isinstance(snap.manifest, LazyManifest)
    return doc, path_namespaces(t), snap.manifest


@pytest.mark.parametrize("kind", ["dir", "tar"])
def test_a_trace_opens_only_the_files_of_its_path_nodes_whatever_the_cluster_size(
        bundles: dict[str, Path], opened: list[str], kind: str) -> None:
    doc, path, manifest = _trace(bundles[f"{kind}6"])
    big = list(opened)
    opened.clear()
    _trace(bundles[f"{kind}3"])
    assert sorted(big) == sorted(opened)  # O(path): three more nodes, not one more file
    assert len(big) == len(set(big))  # each file read once
    path_nodes = {ns.split("/")[0] for ns in path}
    for rel in big:
        parts = rel.split("/")
        if parts[0] == "nodes":
            assert parts[1] in path_nodes, rel
        else:
            assert rel == "manifest.json" or parts[0] == "cluster", rel
    # files beyond `ip addr` (what confirms who holds an address) only in the path's netns
    dirs = {f"nodes/{n}/host" if rest == ["host"] else f"nodes/{n}/pods/{rest[1]}/{rest[2]}"
            for n, *rest in (ns.split("/") for ns in path)}
    deep = {rel.rsplit("/", 1)[0] for rel in big
            if rel.startswith("nodes/") and "/ztunnel/" not in rel
            and not rel.endswith("/ip-addr.txt")}
    assert deep <= dirs, sorted(deep - dirs)
    # the manifest typed only the entries of the files read (plus any failed command)
    assert 0 < len(manifest.decoded()) <= len(big)  # hashes checked, nothing else typed
    assert doc["intent"]["as_intended"] is True, doc["intent"]


@pytest.mark.parametrize("kind", ["dir", "tar"])
def test_a_trace_over_the_indexed_manifest_answers_as_a_full_load(
        bundles: dict[str, Path], opened: list[str], kind: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    lazy_doc, _, _ = _trace(bundles[f"{kind}6"])
    monkeypatch.setattr(reader, "LAZY_MANIFEST_BYTES", 1 << 62)  # decoded whole
    eager = load_snapshot(str(bundles[f"{kind}6"]))
    assert not isinstance(eager.manifest, LazyManifest)
    eager_doc, _ = trace_doc(eager, SRC, DST, eager=True)
    assert lazy_doc == eager_doc


def test_the_indexed_manifest_types_every_entry_as_the_full_decode_does(
        bundles: dict[str, Path]) -> None:
    raw = (bundles["dir6"] / "manifest.json").read_bytes()
    doc = json.loads(raw)
    doc["entries"][3]["status"] = "timeout"  # a failed command, found without decoding all
    doc["entries"][3]["exit_code"] = "x"  # damage, named by its JSON path
    doc["entries"][5]["stderr"] = 'braces } { and "quotes" in a string'
    raw = json.dumps(doc, indent=2).encode()
    indexed = index_manifest(raw)
    assert indexed is not None
    _, lazy = indexed
    full = read_manifest(json.loads(raw))
    assert lazy.not_collected() == full.not_collected() != {}
    assert lazy.decoded() == (3,)
    assert lazy.problems_so_far == ("$.entries[3].exit_code is str, expected an integer: "
                                    "ignored",)
    e = full.entries[7]
    assert lazy.entry_for(e.path or "") == e
    assert lazy.entries == full.entries and lazy.problems == full.problems
    assert (lazy.targets, lazy.components, lazy.bundle_id) == (
        full.targets, full.components, full.bundle_id)
    # keys after a long run of blanks (a re-indented manifest) are still keys
    wide = index_manifest(json.dumps(doc, indent=24).encode())
    assert wide is not None and wide[1].entry_for(e.path or "") == e
    assert wide[1].not_collected() == full.not_collected()


@pytest.mark.parametrize("change", ["nested", "not-last", "no-entries", "not-a-list"])
def test_a_manifest_of_another_shape_is_decoded_whole(bundles: dict[str, Path],
                                                      change: str) -> None:
    doc = json.loads((bundles["dir3"] / "manifest.json").read_bytes())
    if change == "nested":
        doc["entries"][1]["extra"] = {"path": "nodes/x/host/ip-addr.txt"}
    elif change == "not-last":
        doc = {"entries": doc.pop("entries"), **doc}
    elif change == "no-entries":
        del doc["entries"]
    else:
        doc["entries"] = 5
    assert index_manifest(json.dumps(doc, indent=2).encode()) is None


def test_damage_of_untyped_entries_is_left_to_the_whole_picture(
        bundles: dict[str, Path], opened: list[str], tmp_path: Path) -> None:
    import shutil

    b = shutil.copytree(bundles["dir3"], tmp_path / "b")
    doc = json.loads((b / "manifest.json").read_bytes())
    doc["entries"][3]["exit_code"] = "x"
    (b / "manifest.json").write_text(json.dumps(doc, indent=2))
    snap = load_snapshot(str(b))
    damage = "$.entries[3].exit_code is str, expected an integer: ignored"
    assert damage not in {p.message for p in snap.read_problems()}  # trace's warnings
    assert damage in {p.message for p in snap.problems}  # doctor's: every entry typed
