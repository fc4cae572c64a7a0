"""ztunnel config_dumps stored split (bundle format 2): cluster-wide sections once, read whole.

Why: every node's ztunnel prints the whole mesh's `workloads`/`services`/`policies`; at 500
nodes that is the same ~12 MB stored 500 times. The writer stores those sections once per
distinct content (`cluster/ztunnel-shared/sha256-<hex>.json`) and a per-node stub; the
reader gives back the dump ztunnel printed, byte for byte, or a `BundleError` naming what
is missing or damaged -- never a dump with sections quietly gone. The bundles here are
written through `write_bundle` (the collector's writer) from the in-pod example's files,
split and whole, so the two differ only in how the dumps are stored.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ambientctl.bundle.reader import Bundle
from ambientctl.bundle.redact import redact_bundle
from ambientctl.bundle.writer import Spill, write_bundle
from ambientctl.bundle.ztunnel_shared import is_split, reassemble, split_dump
from ambientctl.errors import BundleError
from ambientctl.raw import RawOutput, RawStatus

ROOT = Path(__file__).resolve().parents[1]
INPOD = ROOT / "examples" / "inpod-kind-ambient"
DUMPS = [f"nodes/{n}/ztunnel/config_dump.json" for n in ("ambient-worker", "ambient-worker2")]
KEY = b"ztunnel-shared-redaction-key-0123"


def _outputs(src: Path, change: dict[str, bytes] | None = None) -> list[RawOutput]:
    """One stored output per file the example's manifest lists (as the collector hands
    them to the writer); `change` replaces some files' bytes."""
    man = json.loads((src / "manifest.json").read_text())
    outs = []
    for e in man["entries"]:
        if not e.get("path"):
            continue
        data = (change or {}).get(e["path"]) or (src / e["path"]).read_bytes()
        outs.append(RawOutput(path=e["path"], target=e["target"], argv=tuple(e["argv"]),
                              transport=e["transport"], status=RawStatus.OK, exit_code=0,
                              stdout=data, stderr=b"", started_at=e["started_at"],
                              duration_ms=0))
    return outs


def _write(out: Path, *, split: bool = True, change: dict[str, bytes] | None = None,
           spill: bool = False, src: Path = INPOD) -> Path:
    man = json.loads((src / "manifest.json").read_text())
    outputs = _outputs(src, change)
    sp = None
    if spill:
        sp = Spill(str(out), split_dumps=split)
        outputs = [sp(o) for o in outputs]
    write_bundle(str(out), outputs=outputs, created_at=man["created_at"],
                 collection=man["collection"], targets=man["targets"], spill=sp,
                 split_dumps=split)
    return out


def _shared(bundle: Path) -> list[Path]:
    return sorted((bundle / "cluster" / "ztunnel-shared").glob("*.json"))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ambientctl", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def _answers(bundle: Path, *, trace: bool = True) -> list[Any]:
    """Doctor's JSON, and trace's between the example's pods (names a redacted bundle
    has replaced: `trace=False`)."""
    runs = [_cli("doctor", "--bundle", str(bundle), "-o", "json")]
    if trace:
        runs.append(_cli("trace", "sleep", "productpage", "--bundle", str(bundle), "-o", "json"))
    got = []
    for res in runs:
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr
        doc = json.loads(res.stdout.replace(str(bundle), "B"))
        doc.pop("bundle_id", None)  # names the manifest's entries: they differ by form
        got.append(doc)
    return got


@pytest.mark.parametrize("spill", [False, True], ids=["in-memory", "spilled"])
def test_cluster_wide_sections_are_stored_once_and_read_back_byte_for_byte(
        tmp_path: Path, spill: bool) -> None:
    bundle = _write(tmp_path / "b", spill=spill)
    shared = _shared(bundle)
    assert len(shared) == 1  # both nodes' workloads/services/policies are identical
    assert shared[0].name == f"sha256-{hashlib.sha256(shared[0].read_bytes()).hexdigest()}.json"
    man = json.loads((bundle / "manifest.json").read_text())
    assert man["format_version"] == 2
    listed = {e["path"]: e for e in man["entries"] if e.get("path")}
    rel = f"cluster/ztunnel-shared/{shared[0].name}"
    assert listed[rel]["sha256"] == hashlib.sha256(shared[0].read_bytes()).hexdigest()
    b = Bundle(str(bundle))
    for dump in DUMPS:
        stored = (bundle / dump).read_bytes()
        assert is_split(stored) and len(stored) < len((INPOD / dump).read_bytes()) / 4
        assert listed[dump]["sha256"] == hashlib.sha256(stored).hexdigest()  # what is stored
        assert b.read_bytes(dump) == (INPOD / dump).read_bytes()
        assert b.read_text(dump) == (INPOD / dump).read_text()
    assert b.verify() == []


def test_whole_dumps_are_written_when_asked_and_old_bundles_read_as_before(
        tmp_path: Path) -> None:
    bundle = _write(tmp_path / "b", split=False)
    assert _shared(bundle) == []
    b, old = Bundle(str(bundle)), Bundle(str(INPOD))
    for dump in DUMPS:
        assert (bundle / dump).read_bytes() == (INPOD / dump).read_bytes()
        assert b.read_bytes(dump) == old.read_bytes(dump) == (INPOD / dump).read_bytes()


def test_trace_doctor_and_diff_answer_the_same_on_split_and_whole_bundles(
        tmp_path: Path) -> None:
    split = _write(tmp_path / "split")
    whole = _write(tmp_path / "whole", split=False)
    assert _answers(split) == _answers(whole)
    diff = _cli("bundle", "diff", str(whole), str(split))
    assert diff.returncode == 0 and "no differences" in diff.stdout, diff.stdout + diff.stderr


def test_a_generated_cluster_stores_each_distinct_shared_content_once(tmp_path: Path) -> None:
    """benchmarks/scale_bundle.py's 3-node cluster (each generated ztunnel lists its own
    node's pods: three distinct contents); written split and whole, it answers alike."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import scale_bundle

    src = scale_bundle.generate(tmp_path / "gen", 3)
    dumps = sorted(p.relative_to(src).as_posix() for p in src.glob("nodes/*/ztunnel/*.json"))
    assert len(dumps) == 3
    expected = {json.dumps({k: v for k, v in json.loads((src / d).read_text()).items()
                            if k in ("workloads", "services", "policies")}) for d in dumps}
    split = _write(tmp_path / "split", src=src)
    whole = _write(tmp_path / "whole", split=False, src=src)
    assert len(_shared(split)) == len(expected) and _shared(whole) == []
    b = Bundle(str(split))
    for d in dumps:
        assert is_split((split / d).read_bytes())
        assert b.read_bytes(d) == (src / d).read_bytes()
    assert b.verify() == []
    assert _answers(split) == _answers(whole)


def test_dumps_that_disagree_keep_one_shared_file_each(tmp_path: Path) -> None:
    """Mid-rollout, one ztunnel has not seen a workload yet: its view is kept, not merged."""
    dump = json.loads((INPOD / DUMPS[1]).read_text())
    dump["workloads"] = dump["workloads"][1:]
    behind = json.dumps(dump, indent=2).encode()
    bundle = _write(tmp_path / "b", change={DUMPS[1]: behind})
    assert len(_shared(bundle)) == 2
    b = Bundle(str(bundle))
    assert b.read_bytes(DUMPS[0]) == (INPOD / DUMPS[0]).read_bytes()
    assert b.read_bytes(DUMPS[1]) == behind
    assert b.verify() == []
    diff = _cli("bundle", "diff", str(_write(tmp_path / "a")), str(bundle), "-o", "json")
    assert diff.returncode == 1, diff.stderr
    assert "ztunnel" in diff.stdout


def _rewrite_shared_consistently(bundle: Path) -> str:
    """A lying shared file: its content changed AND its manifest entry updated to match
    (only its name still tells what it held)."""
    path = _shared(bundle)[0]
    rel = f"cluster/ztunnel-shared/{path.name}"
    data = path.read_bytes().replace(b"productpage", b"productpagX")
    path.write_bytes(data)
    man = json.loads((bundle / "manifest.json").read_text())
    for e in man["entries"]:
        if e.get("path") == rel:
            e.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    (bundle / "manifest.json").write_text(json.dumps(man, indent=2))
    return rel


def test_a_tampered_shared_file_is_exit_4_naming_it(tmp_path: Path) -> None:
    bundle = _write(tmp_path / "b")
    rel = _rewrite_shared_consistently(bundle)
    for argv in (["trace", "sleep", "productpage"], ["doctor"]):
        res = _cli(*argv, "--bundle", str(bundle))
        assert res.returncode == 4, res.stdout + res.stderr
        assert rel in res.stderr
    verify = _cli("bundle", "verify", str(bundle))
    assert verify.returncode == 4
    assert f"{rel}: sha256" in verify.stdout and "named after" in verify.stdout
    assert all(f"{d}: {rel} does not match" in verify.stdout for d in DUMPS), verify.stdout


def test_a_missing_shared_file_is_named_never_an_empty_mesh(tmp_path: Path) -> None:
    bundle = _write(tmp_path / "b")
    path = _shared(bundle)[0]
    path.unlink()
    with pytest.raises(BundleError, match=f"cluster/ztunnel-shared/{path.name} is missing"):
        Bundle(str(bundle)).read_text(DUMPS[0])
    res = _cli("trace", "sleep", "productpage", "--bundle", str(bundle))
    assert res.returncode == 4 and path.name in res.stderr


def test_an_edited_stub_does_not_reassemble(tmp_path: Path) -> None:
    """The stub's own manifest hash is updated too: the recorded sha256 of the dump catches it."""
    stored = split_dump((INPOD / DUMPS[1]).read_bytes())
    assert stored is not None
    edited = stored.stub.replace(b'"Up"', b'"Pending"', 1)
    assert edited != stored.stub
    with pytest.raises(BundleError, match="is not the config_dump that was collected"):
        reassemble(edited, lambda _p: stored.shared, DUMPS[1], "b")
    with pytest.raises(BundleError, match="does not match the sha256 it is named after"):
        reassemble(stored.stub, lambda _p: stored.shared + b" ", DUMPS[1], "b")


@pytest.mark.parametrize("text", [b"[]", b"{}", b'{"certificates": []}', b'{"workloads": [}',
                                  b'{"workloads": 1, "workloads": 2}', b'{"workloads": []} x',
                                  b'{"ambientctl.split": 1, "workloads": []}'])
def test_what_is_not_a_splittable_dump_is_stored_whole(text: bytes) -> None:
    assert split_dump(text) is None


def test_split_keeps_odd_spacing_and_braces_in_strings() -> None:
    text = b' {"workloads" : [1, {"x": "}\\"{"}] , "workloadState": {"a": "b"} } \n'
    stored = split_dump(text)
    assert stored is not None and b"workloadState" in stored.stub
    assert reassemble(stored.stub, lambda _p: stored.shared, "d", "b") == (text, stored.shared_path)


@pytest.mark.parametrize("tar", [False, True], ids=["dir", "tar.gz"])
def test_redaction_of_a_split_bundle_stays_split_and_answers_alike(tmp_path: Path,
                                                                   tar: bool) -> None:
    split, whole = _write(tmp_path / "split"), _write(tmp_path / "whole", split=False)
    suffix = ".tar.gz" if tar else ""
    red_split = tmp_path / f"rs{suffix}"
    red_whole = tmp_path / "rw"
    redact_bundle(str(split), str(red_split), key=KEY)
    redact_bundle(str(whole), str(red_whole), key=KEY)
    verify = _cli("bundle", "verify", str(red_split))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    rs = Bundle(str(red_split))
    shared = [p for p in rs.paths() if p.startswith("cluster/ztunnel-shared/")]
    assert len(shared) == 1 and shared[0] not in {f"cluster/ztunnel-shared/{p.name}"
                                                   for p in _shared(split)}
    dumps = [p for p in rs.paths() if p.endswith("/ztunnel/config_dump.json")]
    assert len(dumps) == 2
    assert all(is_split(rs.read_bytes(d, stored=True)) for d in dumps)
    rw = Bundle(str(red_whole))
    # the same key, the same replacements: the reassembled redacted dumps are the whole
    # bundle's redacted dumps
    assert [rs.read_bytes(d) for d in dumps] == [rw.read_bytes(d) for d in dumps]
    if not tar:
        assert _answers(red_split, trace=False) == _answers(red_whole, trace=False)


def test_a_newer_format_version_is_refused_not_misread(tmp_path: Path) -> None:
    bundle = _write(tmp_path / "b")
    man = json.loads((bundle / "manifest.json").read_text())
    man["format_version"] = 3
    (bundle / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(BundleError, match="format_version 3 is newer"):
        Bundle(str(bundle))


@pytest.mark.parametrize("indent", [None, 1, 2, 4])
def test_any_layout_splits_at_the_top_level_members(indent: int | None) -> None:
    """ztunnel's 2-space layout is split without reading the values; another indent (where
    a deeper key may also start a line with two spaces) is scanned instead."""
    doc = json.loads((INPOD / DUMPS[0]).read_text())
    doc["workloadState"] = {"x": {"workloads": [1], "services": {"policies": []}}}
    text = json.dumps(doc, indent=indent).encode()
    stored = split_dump(text)
    assert stored is not None
    stub = json.loads(stored.stub)
    assert stub["workloads"] == {"ambientctl.shared": "workloads"}
    assert stub["workloadState"] == doc["workloadState"]
    assert set(json.loads(stored.shared)) == {"workloads", "services", "policies"}
    assert reassemble(stored.stub, lambda _p: stored.shared, "d", "b")[0] == text
