"""Collection writes each target's outputs to the staging directory as soon as the target
finishes: peak memory follows the targets running at once, not the size of the cluster,
and the bundle is the same (every sha256 in the manifest matches its file)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ambientctl.bundle.manifest import EntrySpool, Manifest, bundle_id, sha256_hex
from ambientctl.bundle.writer import Spill, write_bundle
from ambientctl.collectors.runner import OutputSpool, Plan, Runner, Target
from ambientctl.collectors.transport import NetnsRef
from ambientctl.raw import ExecResult, RawOutput, RawStatus

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20

_SCRIPT = r"""
import hashlib, resource, sys
from ambientctl.collectors.runner import CollectOptions, Plan, Target, collect_bundle
from ambientctl.collectors.transport import NetnsRef
from ambientctl.raw import ExecResult

SIZE = int(sys.argv[2]) << 20

class Big:
    name = "fake"
    def run(self, argv, *, netns, timeout):
        # distinct bytes per command, so a mix-up of files would show in the hashes
        seed = hashlib.sha256(repr((argv, netns)).encode()).digest()
        return ExecResult(0, (seed * (SIZE // 32 + 1))[:SIZE], b"", 1)
    def close(self):
        pass

targets = [Target.node_target("n1", NetnsRef())] + [
    Target.pod_target("n1", "default", f"pod-{i}", NetnsRef(name=f"cni-{i}")) for i in range(40)]
written, _ = collect_bundle(Big(), Plan(tuple(targets)), sys.argv[1],
                            collection={"mode": "test"}, options=CollectOptions(concurrency=2))
stored = sum(e["size"] or 0 for e in written.manifest["entries"])
print(stored, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_outputs_are_spilled_as_targets_finish_so_memory_does_not_grow_with_targets(
        tmp_path: Path) -> None:
    out = tmp_path / "b"
    res = subprocess.run([sys.executable, "-c", _SCRIPT, str(out), "4"], capture_output=True,
                         text=True, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    stored, peak_kib = map(int, res.stdout.split())
    assert stored > 1500 * MIB  # 41 targets x their commands x 4 MiB written to disk...
    # ...while memory holds the two running targets' outputs, not all of them (held until
    # the bundle was written, the peak was 3.4 GB for these 2.8 GB)
    assert peak_kib * 1024 < stored / 4, f"peak RSS {peak_kib} KiB for {stored >> 20} MiB"
    verify = subprocess.run([sys.executable, "-m", "ambientctl", "bundle", "verify", str(out)],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert verify.returncode == 0, verify.stdout[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(e["sha256"] for e in manifest["entries"] if e["path"])


def test_a_collection_that_writes_nothing_leaves_no_staging_directory(tmp_path: Path) -> None:
    script = _SCRIPT.replace("return ExecResult(0,", "return ExecResult(1,")
    out = tmp_path / "b"
    res = subprocess.run([sys.executable, "-c", script, str(out), "1"], capture_output=True,
                         text=True, cwd=ROOT, timeout=300)
    assert res.returncode != 0 and "nothing could be collected" in res.stderr
    assert not out.exists() and not Path(f"{out}.partial").exists()


# --------------------------------------------------------------------------- manifest spool


def _entries(n: int) -> list[dict[str, object]]:
    """Entries shaped like the collector's, with what JSON escapes (quotes, newlines,
    non-ASCII, control characters), empty and nested containers, nulls."""
    return [
        {
            "path": f"nodes/n{i}/host/iptables-save.txt" if i % 3 else None,
            "spec": "iptables-save.txt",
            "target": f"node/n{i}",
            "argv": ["iptables-save", "-c"] if i % 2 else [],
            "wrapper": [],
            "transport": "kube",
            "status": "ok" if i % 5 else "timeout",
            "exit_code": 0 if i % 5 else None,
            "stderr": "" if i % 4 else 'line "one"\nzwei: é ✓ \x1b[31m\t',
            "stderr_truncated": bool(i % 7 == 0),
            "note": None,
            "optional_absent": False,
            "started_at": "2026-12-06T01:00:00.000000Z",
            "duration_ms": i * 13,
            "size": i * 1000 if i % 3 else None,
            "sha256": f"{i:064x}" if i % 3 else None,
            "nested": {"z": {}, "a": [[], {"k": [1, 2.5, -3]}]},
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("count", [0, 1, 2, 257])
def test_streamed_manifest_is_byte_identical_to_the_in_memory_document(count: int) -> None:
    manifest = Manifest(
        created_at="2026-12-06T01:00:00Z",
        collection={"mode": "kube", "argv": ["ambientctl", "collect", "-o", "b"],
                    "unavailable_nodes": {}, "skipped_objects": []},
        targets=[{"id": "node/n0", "kind": "node", "netns": {}, "tool_versions": {"ip": "x"}}],
        components={"ztunnel": ["1.24.0"]},
    )
    manifest.entries = _entries(count)
    with EntrySpool() as spool:
        for entry in manifest.entries:
            spool.append(entry)
        assert spool.bundle_id() == bundle_id(manifest.entries)
        streamed = io.BytesIO()
        spool.write_manifest(streamed, manifest)
    assert streamed.getvalue() == manifest.to_json()
    assert json.loads(streamed.getvalue()) == manifest.document()


def test_written_bundle_holds_a_header_and_counts_and_reads_its_entries_back(
        tmp_path: Path) -> None:
    outputs = [
        RawOutput(path=f"nodes/n1/host/f{i}.txt", target="node/n1", argv=("cat", f"f{i}"),
                  transport="local", status=RawStatus.OK if i % 4 else RawStatus.TIMEOUT,
                  exit_code=0, stdout=b"x" * i, stderr=b"", started_at="t", duration_ms=i)
        for i in range(10)
    ]
    for out in (tmp_path / "b", tmp_path / "b.tar.gz"):
        written = write_bundle(str(out), outputs=outputs, created_at="2026-12-06T01:00:00Z",
                               collection={"mode": "test"}, targets=[])
        assert "entries" not in written.header
        assert written.entry_count == 10 and len(written.failed) == 3
        doc = written.manifest
        assert doc["bundle_id"] == written.header["bundle_id"] == bundle_id(doc["entries"])
        assert [e["path"] for e in doc["entries"]] == [
            o.path if o.status is RawStatus.OK else None for o in outputs]
        assert {k: v for k, v in doc.items() if k != "entries"} == written.header


_SPOOL_MEMORY = r"""
import resource, sys, tracemalloc
from ambientctl.bundle.writer import write_bundle
from ambientctl.raw import RawOutput, RawStatus

N = int(sys.argv[2])

def outputs():
    # outputs already spilled by their targets: only their manifest entries remain to write
    for i in range(N):
        yield RawOutput(path=f"nodes/n{i // 40}/pods/p{i}/iptables-save.txt",
                        target=f"pod/ns/p{i}", argv=("iptables-save", "-c"), transport="kube",
                        status=RawStatus.OK, exit_code=0, stdout=b"", stderr=b"",
                        started_at="2026-12-06T01:00:00.000000Z", duration_ms=i % 977,
                        wrapper=("nsenter", f"--net=/var/run/netns/cni-{i}"),
                        spilled=(i, f"{i:064x}"))

tracemalloc.start()
written = write_bundle(sys.argv[1], outputs=outputs(), created_at="2026-12-06T01:00:00Z",
                       collection={"mode": "test"}, targets=[])
print(written.entry_count, tracemalloc.get_traced_memory()[1])
"""


def test_writing_the_manifest_takes_memory_independent_of_the_number_of_entries(
        tmp_path: Path) -> None:
    peaks = {}
    for n in (2_000, 40_000):
        res = subprocess.run([sys.executable, "-c", _SPOOL_MEMORY, str(tmp_path / f"b{n}"),
                              str(n)], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]
        count, peaks[n] = map(int, res.stdout.split())
        assert count == n
    manifest_bytes = (tmp_path / "b40000" / "manifest.json").stat().st_size
    assert manifest_bytes > 20 * MIB  # held in memory, the document alone was ~4x this
    # 20x the entries: the traced peak stays within a small constant of the small run's
    assert peaks[40_000] < peaks[2_000] + 4 * MIB, peaks


# --------------------------------------------------------------------------- outputs spool


def _output(target: str, i: int) -> RawOutput:
    return RawOutput(path=f"{target}/f{i}", target=target, argv=("cat", str(i)),
                     transport="fake", status=RawStatus.OK, exit_code=0, stdout=b"",
                     stderr=b"e" * i, started_at="t", duration_ms=i, spilled=(i, "0" * 64))


def test_output_spool_reads_back_in_plan_order_whatever_order_targets_finished() -> None:
    plan = [f"pod/ns/p{t}" for t in range(7)]
    expected = [_output(t, i) for t in plan for i in range(t.endswith(("3", "5")) and 0 or 4)]
    spool = OutputSpool()
    for target in reversed(plan):  # finished in the opposite order
        spool.put(target, [o for o in expected if o.target == target])
    spool.seal(plan)
    assert list(spool) == expected and len(spool) == len(expected)
    assert [spool[i] for i in range(len(expected))] == expected
    assert spool[-1] == expected[-1] and spool[3:9] == expected[3:9]
    with pytest.raises(IndexError):
        spool[len(expected)]
    spool.close()


class _Fake:
    name = "fake"

    def run(self, argv: object, *, netns: object, timeout: float) -> ExecResult:
        return ExecResult(0, repr((argv, netns)).encode(), b"", 1)

    def close(self) -> None:
        pass


def test_a_spilling_run_keeps_its_outputs_on_disk_and_gives_the_same_outputs(
        tmp_path: Path) -> None:
    targets = [Target.node_target("n1", NetnsRef())] + [
        Target.pod_target("n1", "default", f"pod-{i}", NetnsRef(name=f"cni-{i}"))
        for i in range(5)]
    plain = Runner(_Fake(), concurrency=3).run(Plan(tuple(targets))).outputs
    spill = Spill(str(tmp_path / "b"))
    spooled = Runner(_Fake(), concurrency=3, spill=spill).run(Plan(tuple(targets))).outputs
    assert isinstance(spooled, OutputSpool)
    assert len(spooled) == len(plain) > len(targets)
    spilled = 0
    for a, b in zip(plain, spooled, strict=True):
        assert (a.path, a.target, a.status, a.note) == (b.path, b.target, b.status, b.note)
        if b.spilled is None:  # an output a spec's `keep` refused: never written
            assert b.stdout == a.stdout and not (spill.staging / b.path).exists()
            continue
        spilled += 1
        assert b.stdout == b"" and b.spilled == (len(a.stdout), sha256_hex(a.stdout))
        assert (spill.staging / b.path).read_bytes() == a.stdout
    assert spilled > len(targets)
    spill.discard()


def test_a_spilling_run_reports_the_same_progress_lines_as_a_plain_one(tmp_path: Path) -> None:
    targets = [Target.node_target("n1", NetnsRef())] + [
        Target.pod_target("n1", "default", f"pod-{i}", NetnsRef(name=f"cni-{i}"))
        for i in range(3)]
    plain: list[str] = []
    spooled: list[str] = []
    Runner(_Fake(), concurrency=1, progress=plain.append).run(Plan(tuple(targets)))
    spill = Spill(str(tmp_path / "b"))
    Runner(_Fake(), concurrency=1, progress=spooled.append, spill=spill).run(Plan(tuple(targets)))
    spill.discard()

    def counts(lines: list[str]) -> list[str]:  # "node/n1: 20/22 commands ok", no timings
        return sorted(line.split("] ", 1)[1] for line in lines if "commands ok" in line)

    assert counts(spooled) == counts(plain)
    assert all(" 0/0 commands ok" not in line for line in spooled)


def test_a_spool_that_cannot_store_fails_the_run_instead_of_hanging(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def full(self: OutputSpool, key: str, outputs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(OutputSpool, "put", full)
    spill = Spill(str(tmp_path / "b"))
    targets = (Target.node_target("n1", NetnsRef()),)
    raised: list[BaseException] = []

    def run() -> None:
        try:
            Runner(_Fake(), concurrency=2, spill=spill).run(Plan(targets))
        except BaseException as exc:  # noqa: BLE001 - what the run raised is the subject
            raised.append(exc)

    import threading

    worker = threading.Thread(target=run, daemon=True)  # a hang must fail, not block the suite
    worker.start()
    worker.join(30)
    spill.discard()
    assert not worker.is_alive(), "the run hung after the spool failed"
    assert len(raised) == 1 and isinstance(raised[0], OSError)
    assert "No space left" in str(raised[0])


def test_a_node_batch_answered_in_full_keeps_almost_nothing_per_netns() -> None:
    """The batching transport remembers which netns it batched; once every command of one
    was answered, what stays must be that fact, not the emptied results table (at 25,500
    netns the tables alone were ~28 MiB)."""
    import tracemalloc

    from ambientctl.collectors.batch import BatchingTransport
    from ambientctl.collectors.specs import NETNS_SPECS
    from tests.test_transport_batch import FakeInner

    class Quiet(FakeInner):  # records nothing: only the transport's own memory is measured
        def run(self, argv, *, netns, timeout):  # type: ignore[no-untyped-def]
            res = super().run(argv, netns=netns, timeout=timeout)
            self.calls.clear()
            self.timeouts.clear()
            return res

    t = BatchingTransport(Quiet())

    def answer(first: int, last: int) -> None:
        for i in range(first, last):
            ns = NetnsRef(name=f"cni-{i}")
            for spec in NETNS_SPECS:
                assert t.run(spec.argv, netns=ns, timeout=5).exit_code == 0

    answer(0, 50)  # warm caches (interned strings, lazily built tables)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        answer(50, 2050)
        per_netns = (tracemalloc.get_traced_memory()[0] - base) / 2000
    finally:
        tracemalloc.stop()
    assert per_netns < 800, per_netns  # was ~1,640 bytes


def test_a_collection_that_collects_nothing_closes_its_output_spool(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ambientctl.collectors.runner import collect_bundle
    from ambientctl.errors import CollectionError

    class Refusing(_Fake):
        def run(self, argv: object, *, netns: object, timeout: float) -> ExecResult:
            return ExecResult(1, b"", b"permission denied", 1)

    closed: list[OutputSpool] = []
    real_close = OutputSpool.close

    def close(self: OutputSpool) -> None:
        closed.append(self)
        real_close(self)

    monkeypatch.setattr(OutputSpool, "close", close)
    with pytest.raises(CollectionError, match="nothing could be collected"):
        collect_bundle(Refusing(), Plan((Target.node_target("n1", NetnsRef()),)),
                       str(tmp_path / "b"), collection={"mode": "test"})
    assert len(closed) == 1
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.partial").exists()
