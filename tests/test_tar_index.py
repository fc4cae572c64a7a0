"""Indexed `.tar.gz` bundles: a trace decompresses only what its path reads, the archive
stays a plain tar.gz for `tar`, and a lying index is refused (exit 4), never followed.

Why: without an index, reading one member of a `.tar.gz` costs the whole archive's
decompression; at 200 nodes that was most of a trace (issue 12). The index is input like
any other, so every guarantee of issue 11 must hold through it too
(ambientctl/bundle/tarindex.py, docs/bundle-format.md).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from ambientctl.bundle import tarindex
from ambientctl.bundle.reader import open_bundle
from ambientctl.bundle.tarindex import INDEX_NAME, read_index_head
from ambientctl.bundle.writer import write_tarball
from ambientctl.errors import BundleError
from ambientctl.loading import load_snapshot
from tests.path_probe import path_namespaces, trace_doc

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "examples" / "inpod-kind-ambient"
sys.path.insert(0, str(ROOT / "benchmarks"))

import scale_bundle  # noqa: E402


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ambientctl", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ix") / "b.tar.gz"
    write_tarball(EX, str(out), top="b", mtime=0)
    return out


def _rewrite_index(src: Path, dst: Path, mutate: Callable[[dict], object]) -> Path:
    """`src` with its index document replaced by `mutate(doc)`'s edit (the body kept)."""
    with open(src, "rb") as fh:
        head = read_index_head(fh, str(src))
        assert head is not None
        top, data, gz_len, _raw_len = head
        fh.seek(gz_len)
        body = fh.read()
    doc = json.loads(data)
    mutate(doc)
    return _with_index(dst, top, json.dumps(doc).encode(), body)


def _with_index(dst: Path, top: str, data: bytes, body: bytes) -> Path:
    info = tarfile.TarInfo(f"{top}/{INDEX_NAME}")
    info.size = len(data)
    member = info.tobuf(tarfile.PAX_FORMAT) + data + b"\0" * (-len(data) % 512)
    dst.write_bytes(gzip.compress(member, mtime=0) + body)
    return dst


class _Row:
    """One member of the index's columns, as [name, header offset, size]."""

    def __init__(self, doc: dict, rel: str) -> None:
        self.cols = [doc["members"][k] for k in ("names", "headers", "sizes")]
        self.i = self.cols[0].index(f"b/{rel}")

    def __getitem__(self, field: int) -> object:
        return self.cols[field][self.i]

    def __setitem__(self, field: int, value: object) -> None:
        self.cols[field][self.i] = value


def _member(doc: dict, rel: str) -> _Row:
    return _Row(doc, rel)


# ------------------------------------------------------------------ a plain tar.gz still
def test_tar_lists_and_extracts_the_indexed_archive_as_the_bundle_plus_its_index(
        indexed: Path, tmp_path: Path) -> None:
    listed = subprocess.run(["tar", "tzf", str(indexed)], capture_output=True, text=True,
                            check=True).stdout.split()
    assert listed[0] == f"b/{INDEX_NAME}"  # first: the reader finds it in one gzip member
    want = sorted(p.relative_to(EX).as_posix() for p in EX.rglob("*") if p.is_file())
    assert sorted(n[2:] for n in listed[1:]) == want
    subprocess.run(["tar", "xzf", str(indexed), "-C", str(tmp_path)], check=True)
    for rel in want:
        assert (tmp_path / "b" / rel).read_bytes() == (EX / rel).read_bytes(), rel
    # the extracted directory is a clean bundle: the index file is not a bundle file
    done = cli("bundle", "verify", str(tmp_path / "b"))
    assert done.returncode == 0, done.stderr
    assert INDEX_NAME not in open_bundle(str(tmp_path / "b")).paths()


def test_the_indexed_archive_is_many_gzip_members_one_per_tar_member(indexed: Path) -> None:
    raw = indexed.read_bytes()
    files = sum(1 for p in EX.rglob("*") if p.is_file())
    # index + one per file (none is over a MiB) + the end-of-archive blocks
    assert raw.count(b"\x1f\x8b\x08") >= files + 2
    whole = gzip.decompress(raw)
    assert len(whole) % 512 == 0 and whole.endswith(b"\0" * 1024)


def test_writing_the_same_directory_twice_gives_identical_bytes(tmp_path: Path) -> None:
    write_tarball(EX, str(tmp_path / "1.tar.gz"), top="b", mtime=0)
    write_tarball(EX, str(tmp_path / "2.tar.gz"), top="b", mtime=0)
    assert (tmp_path / "1.tar.gz").read_bytes() == (tmp_path / "2.tar.gz").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no scratch left


def test_a_big_member_is_split_into_gzip_members_and_read_back_whole(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(EX, src)
    big = os.urandom(1 << 16) * 40  # 2.5 MiB: three pieces
    (src / "big.bin").write_bytes(big)
    out = tmp_path / "b.tar.gz"
    write_tarball(src, str(out), top="b", mtime=0)
    bundle = open_bundle(str(out))
    assert bundle._ix is not None
    assert bundle.read_bytes("big.bin") == big
    with tarfile.open(out) as tar:  # and tarfile (random access) agrees
        got = tar.extractfile("b/big.bin")
        assert got is not None and got.read() == big


def test_an_index_too_big_for_readers_is_not_written_and_the_archive_reads_without_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tarindex, "MAX_INDEX_BYTES", 1000)
    out = tmp_path / "b.tar.gz"
    write_tarball(EX, str(out), top="b", mtime=0)
    names = subprocess.run(["tar", "tzf", str(out)], capture_output=True, text=True,
                           check=True).stdout.split()
    assert f"b/{INDEX_NAME}" not in names
    bundle = open_bundle(str(out))
    assert bundle._ix is None
    assert bundle.read_bytes("cluster/pods.json") == (EX / "cluster/pods.json").read_bytes()


def test_an_archive_without_an_index_is_still_read_by_the_forward_pass(tmp_path: Path) -> None:
    out = tmp_path / "plain.tar.gz"
    scale_bundle.to_tar(EX, out, indexed=False)
    bundle = open_bundle(str(out))
    assert bundle._ix is None
    assert bundle.read_bytes("cluster/pods.json") == (EX / "cluster/pods.json").read_bytes()


# ------------------------------------------------------------------ a trace reads its path
@pytest.fixture(scope="module")
def bundle6(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    where = tmp_path_factory.mktemp("scale")
    b = scale_bundle.generate(where / "b6", 6)
    return b, scale_bundle.to_tar(b, where / "b6.tar.gz")


def test_a_trace_on_an_indexed_archive_decompresses_only_its_path_and_answers_as_the_directory(
        bundle6: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    directory, archive = bundle6
    read: list[str] = []
    decompressed: list[int] = []
    real_read, real_piece = tarindex.TarIndex.read, tarindex.TarIndex._piece

    def counting_read(self: tarindex.TarIndex, rel: str) -> bytes:
        read.append(rel)
        return real_read(self, rel)

    def counting_piece(self: tarindex.TarIndex, k: int) -> bytes:
        before = self.decompressed
        out = real_piece(self, k)
        decompressed.append(self.decompressed - before)
        return out

    monkeypatch.setattr(tarindex.TarIndex, "read", counting_read)
    monkeypatch.setattr(tarindex.TarIndex, "_piece", counting_piece)
    doc, t = trace_doc(load_snapshot(str(archive)), "sleep", "productpage")
    monkeypatch.undo()
    want, _ = trace_doc(load_snapshot(str(directory)), "sleep", "productpage")
    assert doc == want
    nodes = {ns.split("/")[0] for ns in path_namespaces(t)}
    assert 1 <= len(nodes) < 6
    touched = {r.split("/")[1] for r in read if r.startswith("nodes/")}
    # the path's nodes (+ the node whose dump the snapshot samples first, as for a directory)
    assert touched <= nodes | {sorted(p.name for p in (directory / "nodes").iterdir())[0]}
    assert len(touched) < 6
    total = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    assert 0 < sum(decompressed) < total / 2, (sum(decompressed), total)
    # and the same figure through the CLI: the JSON differs only in the bundle's name
    got = json.loads(cli("trace", "sleep", "productpage", "-o", "json", "--bundle",
                         str(archive)).stdout)
    dir_doc = json.loads(cli("trace", "sleep", "productpage", "-o", "json", "--bundle",
                             str(directory)).stdout)
    got.pop("bundle")
    dir_doc.pop("bundle")
    assert got == dir_doc


# ------------------------------------------------------------------ a lying index
def _refused(archive: Path, needle: str) -> None:
    done = cli("trace", "sleep", "productpage", "--bundle", str(archive))
    assert done.returncode == 4, (done.returncode, done.stderr)
    first = done.stderr.splitlines()[0]
    assert first.startswith(f"error: {archive}: "), first
    assert needle in first, first
    assert "Traceback" not in done.stderr


def test_an_index_pointing_a_member_at_another_members_header_is_refused(
        indexed: Path, tmp_path: Path) -> None:
    # pods.json and the next file swap names: each entry points at the other's header
    def lie(doc: dict) -> None:
        names = doc["members"]["names"]
        i = names.index("b/cluster/pods.json")
        names[i], names[i + 1] = names[i + 1], names[i]
    _refused(_rewrite_index(indexed, tmp_path / "x.tar.gz", lie), "where the archive holds")


def test_an_index_pointing_into_the_middle_of_a_member_is_refused(
        indexed: Path, tmp_path: Path) -> None:
    _refused(_rewrite_index(indexed, tmp_path / "x.tar.gz",
                            lambda doc: _member(doc, "cluster/pods.json").__setitem__(
                                1, _member(doc, "cluster/pods.json")[1] + 512)),
             "no gzip member starts")


def test_an_index_with_a_wrong_size_is_refused_when_the_member_is_read(
        indexed: Path, tmp_path: Path) -> None:
    _refused(_rewrite_index(indexed, tmp_path / "x.tar.gz",
                            lambda doc: _member(doc, "cluster/pods.json").__setitem__(2, 10)),
             "is 7882 bytes in the archive, 10 in its member index")


def test_an_index_naming_a_file_not_in_the_archive_is_refused(
        indexed: Path, tmp_path: Path) -> None:
    bad = _rewrite_index(indexed, tmp_path / "x.tar.gz",
                         lambda doc: _member(doc, "cluster/pods.json").__setitem__(
                             0, "b/cluster/pods.jsoo"))
    with pytest.raises(BundleError, match=r"puts 'b/cluster/pods.jsoo' where the archive "
                                          r"holds 'b/cluster/pods.json'"):
        open_bundle(str(bad)).read_bytes("cluster/pods.jsoo")
    done = cli("bundle", "verify", str(bad))  # and the forward pass finds it unread
    assert done.returncode == 4, done.stderr
    assert done.stderr.startswith(f"error: {bad}: its member index "), done.stderr


def test_an_index_listing_a_name_twice_is_refused(indexed: Path, tmp_path: Path) -> None:
    def twice(doc: dict) -> None:
        names = doc["members"]["names"]
        i = names.index("b/cluster/pods.json")
        names[i + 1] = names[i]
    _refused(_rewrite_index(indexed, tmp_path / "x.tar.gz", twice), "twice")


def test_an_index_listing_no_members_is_refused_as_a_damaged_archive(
        indexed: Path, tmp_path: Path) -> None:
    """An empty member list once ended in a ValueError from a length check (an internal
    error) instead of the one-line refusal naming the archive."""
    def empty(doc: dict) -> None:
        for k in ("names", "headers", "sizes"):
            doc["members"][k] = []
    _refused(_rewrite_index(indexed, tmp_path / "x.tar.gz", empty), "lists no members")


def test_an_index_escaping_the_bundle_folder_is_refused(indexed: Path, tmp_path: Path) -> None:
    _refused(_rewrite_index(indexed, tmp_path / "x.tar.gz",
                            lambda doc: _member(doc, "cluster/pods.json").__setitem__(
                                0, "b/../../etc/passwd")),
             "not a file of the bundle folder")


@pytest.mark.parametrize("top", ["..", "/"])
def test_an_index_whose_folder_escapes_the_bundle_is_refused(indexed: Path, tmp_path: Path,
                                                               top: str) -> None:
    with open(indexed, "rb") as fh:
        head = read_index_head(fh, str(indexed))
        assert head is not None
        fh.seek(head[2])
        body = fh.read()
    doc = json.loads(head[1])
    doc["members"]["names"] = [top + n[1:] for n in doc["members"]["names"]]
    bad = _with_index(tmp_path / "x.tar.gz", top, json.dumps(doc).encode(), body)
    with pytest.raises(BundleError, match="escapes the bundle"):
        open_bundle(str(bad))


def test_an_index_larger_than_its_cap_is_refused_without_decompressing_the_rest(
        indexed: Path, tmp_path: Path) -> None:
    with open(indexed, "rb") as fh:
        head = read_index_head(fh, str(indexed))
        assert head is not None
        fh.seek(head[2])
        body = fh.read()
    for extra in (1024, 1 << 20):  # over the cap; over what one decompression may produce
        huge = b"{" + b" " * (tarindex.MAX_INDEX_BYTES + extra) + b"}"
        _refused(_with_index(tmp_path / "x.tar.gz", "b", huge, body),
                 "member index is larger than 64 MiB")


def test_an_index_of_more_entries_than_the_member_cap_allows_is_refused_before_decoding(
        indexed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = _rewrite_index(indexed, tmp_path / "x.tar.gz",
                         lambda doc: [col.extend([0] * 5000) for col in doc["gzip"].values()])
    monkeypatch.setenv("AMBIENTCTL_MAX_MEMBERS", "1000")
    monkeypatch.setenv("AMBIENTCTL_MAX_BUNDLE_SIZE", "64M")
    with pytest.raises(BundleError, match="its member index has more than 5144 entries"):
        open_bundle(str(bad))


@pytest.mark.parametrize("damage", [
    lambda doc: doc["members"]["sizes"].pop(),  # columns of different lengths
    lambda doc: doc["members"].__setitem__("headers", 5),  # not a list
    lambda doc: doc["members"]["sizes"].__setitem__(0, -1),  # negative
    lambda doc: doc["members"]["sizes"].__setitem__(0, True),  # a bool is not a size
], ids=["ragged", "not-a-list", "negative", "bool"])
def test_an_index_of_the_wrong_shape_is_refused(indexed: Path, tmp_path: Path,
                                                damage: Callable[[dict], object]) -> None:
    with pytest.raises(BundleError, match="member index (lacks|has a malformed)"):
        open_bundle(str(_rewrite_index(indexed, tmp_path / "x.tar.gz", damage)))


def test_an_index_not_covering_the_file_is_refused(indexed: Path, tmp_path: Path) -> None:
    _refused(_rewrite_index(indexed, tmp_path / "x.tar.gz",
                            lambda doc: doc["gzip"]["compressed"].__setitem__(
                                -1, doc["gzip"]["compressed"][-1] + 7)),
             "does not cover the file exactly")


def test_a_corrupted_gzip_trailer_of_a_member_read_through_the_index_is_refused(
        indexed: Path, tmp_path: Path) -> None:
    with open(indexed, "rb") as fh:
        head = read_index_head(fh, str(indexed))
        assert head is not None
    doc = json.loads(head[1])
    header = _member(doc, "cluster/pods.json")[1]
    k = doc["gzip"]["uncompressed"].index(header)
    crc_at = head[2] + doc["gzip"]["compressed"][k + 1] - 8  # pods.json's gzip CRC-32
    raw = bytearray(indexed.read_bytes())
    raw[crc_at] ^= 0xFF
    bad = tmp_path / "x.tar.gz"
    bad.write_bytes(bytes(raw))
    _refused(bad, "corrupted gzip data")


def test_verify_reads_the_whole_archive_and_refuses_an_index_lying_about_an_unread_member(
        indexed: Path, tmp_path: Path) -> None:
    # a smaller size for a member nothing reads: validation cannot see it, verify must
    bad = _rewrite_index(indexed, tmp_path / "x.tar.gz",
                         lambda doc: _member(doc, "cluster/pods.json").__setitem__(2, 0))
    assert open_bundle(str(bad)).has("cluster/pods.json")
    done = cli("bundle", "verify", str(bad))
    assert done.returncode == 4, done.stderr
    assert "member index does not match the archive at 'cluster/pods.json'" in done.stderr
    good = cli("bundle", "verify", str(indexed))
    assert good.returncode == 0, good.stderr


def test_reading_a_member_outside_the_index_is_a_missing_file(indexed: Path) -> None:
    bundle = open_bundle(str(indexed))
    with pytest.raises(BundleError, match="missing from the bundle"):
        bundle.read_bytes(INDEX_NAME)
    assert INDEX_NAME not in bundle.paths()
    assert sorted(bundle.paths()) == sorted(
        p.relative_to(EX).as_posix() for p in EX.rglob("*") if p.is_file())


def test_a_gzip_stream_whose_first_member_is_not_an_index_is_not_mistaken_for_one(
        tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for p in sorted(EX.rglob("*")):
            if p.is_file():
                tar.add(p, arcname=f"b/{p.relative_to(EX).as_posix()}")
    out = tmp_path / "p.tar.gz"
    out.write_bytes(gzip.compress(buf.getvalue()))
    with open(out, "rb") as fh:
        assert read_index_head(fh, str(out)) is None
