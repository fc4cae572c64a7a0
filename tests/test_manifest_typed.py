"""The typed manifest: read once, damaged values named by JSON path, failed entries worded
once, optional tools told apart by the entry's own field (and by the note in old bundles).

The bundle is the repository's seed example with its manifest edited the way a damaged or
older bundle would carry it; everything is read through the real reader and analyzers.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from ambientctl.analyzers.doctor import run_checks
from ambientctl.analyzers.doctor.facts import Context
from ambientctl.analyzers.findings import Finding
from ambientctl.bundle.load import load_snapshot
from ambientctl.bundle.reader import open_bundle
from ambientctl.manifest_model import read_manifest
from ambientctl.model import Snapshot

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples/seed-kind-ambient"
HOST = "nodes/ambient-worker/host"
MANIFEST_SCHEMA = json.loads((ROOT / "docs/schemas/bundle-manifest-v1.json").read_text())


def _edited(tmp_path: Path, fn: Callable[[dict], None], drop: tuple[str, ...] = ()) -> Path:
    dest = tmp_path / "bundle"
    shutil.copytree(SEED, dest)
    doc = json.loads((dest / "manifest.json").read_text())
    fn(doc)
    (dest / "manifest.json").write_text(json.dumps(doc, indent=2))
    for rel in drop:
        (dest / rel).unlink()
    return dest


def _fail(doc: dict, path: str, **fields: object) -> None:
    entry = next(e for e in doc["entries"] if e.get("path") == path)
    entry.update(path=None, sha256=None, size=None, **fields)


def _amb102(snap: Snapshot) -> list[Finding]:
    return [f for r in run_checks(snap, only=["AMB102"]) for f in r.findings]


def _problems(snap: Snapshot) -> dict[str, str]:
    return {p.path: p.message for p in snap.all_problems()}


def test_a_value_of_the_wrong_type_is_a_data_problem_named_by_its_json_path(tmp_path) -> None:
    def damage(doc: dict) -> None:
        doc["entries"][2]["exit_code"] = "zero"
        doc["entries"][3] = 7
        doc["partial"] = "no"

    snap = load_snapshot(str(_edited(tmp_path, damage)))
    said = [p.message for p in snap.problems if p.path == "manifest.json"]
    assert "$.entries[2].exit_code is str, expected an integer: ignored" in said
    assert "$.entries[3] is int, expected an object: ignored" in said
    assert "$.partial is str, expected a boolean: ignored" in said
    assert snap.manifest is not None and snap.manifest.partial is False
    assert snap.manifest.entries[2].exit_code is None  # ignored, the rest of the entry kept
    assert len(snap.manifest.entries) == len(json.loads((SEED / "manifest.json").read_text())
                                             ["entries"]) - 1


def test_a_boolean_is_not_taken_for_an_exit_code() -> None:
    m = read_manifest({"entries": [{"spec": "x", "target": "t", "status": "nonzero-exit",
                                    "exit_code": True}]})
    assert m.entries[0].exit_code is None
    assert m.problems == ("$.entries[0].exit_code is bool, expected an integer: ignored",)


def test_a_failed_entry_reads_the_same_in_the_snapshot_doctor_facts_and_amb102(tmp_path) -> None:
    rel = f"{HOST}/ss-listen.txt"
    bundle = _edited(tmp_path, lambda d: _fail(
        d, rel, status="nonzero-exit", exit_code=1,
        stderr="ss: cannot open netlink socket: Operation not permitted\n"), drop=(rel,))
    snap = load_snapshot(str(bundle))
    wording = "not collected: nonzero-exit on the node (exit 1): ss: cannot open netlink " \
              "socket: Operation not permitted"
    assert _problems(snap)[rel] == wording
    assert Context(snap).failed_files[rel] == wording
    assert [e.note for f in _amb102(snap) for e in f.evidence] == [f"{rel} {wording}"]


def test_an_optional_tool_the_runner_marked_absent_is_no_failure(tmp_path) -> None:
    rel = f"{HOST}/ss-listen.txt"  # any entry: the field, not the note, decides
    bundle = _edited(tmp_path, lambda d: _fail(d, rel, status="skipped", exit_code=None,
                                                note="ss is optional here",
                                                optional_absent=True), drop=(rel,))
    snap = load_snapshot(str(bundle))
    assert rel not in _problems(snap)
    assert rel not in Context(snap).failed_files
    assert not _amb102(snap)


def test_an_old_bundle_says_optional_absence_by_the_note_prefix(tmp_path) -> None:
    rel = f"{HOST}/ss-listen.txt"
    bundle = _edited(tmp_path, lambda d: _fail(d, rel, status="skipped", exit_code=None,
                                                note="not found: ss is not installed"),
                     drop=(rel,))
    snap = load_snapshot(str(bundle))
    assert rel not in _problems(snap)
    assert not _amb102(snap)


def test_a_skip_without_the_field_or_the_prefix_is_reported(tmp_path) -> None:
    rel = f"{HOST}/ss-listen.txt"
    bundle = _edited(tmp_path, lambda d: _fail(d, rel, status="skipped", exit_code=None,
                                                note="interrupted", optional_absent=False),
                     drop=(rel,))
    snap = load_snapshot(str(bundle))
    assert _problems(snap)[rel] == "not collected: skipped on the node: interrupted"


def test_the_reader_checks_hashes_from_the_typed_entries(tmp_path) -> None:
    bundle = _edited(tmp_path, lambda d: None)
    (bundle / f"{HOST}/ss-listen.txt").write_text("tampered\n")
    opened = open_bundle(str(bundle))
    try:
        assert opened.typed_manifest is not None
        assert [str(m) for m in opened.verify()][0].startswith(f"{HOST}/ss-listen.txt: sha256")
    finally:
        opened.close()


@pytest.mark.parametrize("example", ["seed-kind-ambient", "inpod-kind-ambient",
                                     "mixed-kind-ambient"])
def test_the_examples_manifests_follow_the_documented_schema(example: str) -> None:
    doc = json.loads((ROOT / "examples" / example / "manifest.json").read_text())
    jsonschema.validate(doc, MANIFEST_SCHEMA, cls=jsonschema.Draft202012Validator)


def test_the_schema_refuses_an_unknown_status() -> None:
    doc = {"schema": "ambientctl.bundle/v1",
           "entries": [{"spec": "x", "target": "node/w1", "status": "fine"}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, MANIFEST_SCHEMA, cls=jsonschema.Draft202012Validator)
