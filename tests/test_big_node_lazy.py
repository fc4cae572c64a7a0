"""A trace on a big kube-proxy node reads only the chains its path visits, and says the same.

Why: the iptables parser indexes a dump by offset and builds a chain (and splits its rules
into lines) only when the walk looks it up (`ambientctl.analyzers.parse.chain_index`). That
is only worth having if (1) it really builds no more chains on a node with thousands of
kube-proxy chains than on the small node (a count, not a time: benchmarks/bench_trace.py
times it), (2) the answer is the one a full parse gives, evidence line numbers included, and
(3) every rule's (line, text) is the line `sed -n Np` prints, whatever the dump's shape.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import kube_proxy_dump  # noqa: E402
import scale_bundle  # noqa: E402
from bench_trace import inflate  # noqa: E402

from ambientctl.analyzers.parse.iptables import parse_iptables_save  # noqa: E402
from ambientctl.analyzers.selectors import resolve  # noqa: E402
from ambientctl.analyzers.trace import Tracer  # noqa: E402
from ambientctl.bundle.load import load_snapshot  # noqa: E402
from ambientctl.render.trace_json import trace_document  # noqa: E402

NODE = "ambient-worker"


def _bundle(tmp: Path, services: int) -> Path:
    bundle = scale_bundle.generate(tmp / f"b{services}", 2, pods=0)
    (bundle / "manifest.json").unlink()  # the dump no longer matches its hash
    # The template node's own dump (the generated bundle's already holds ~5k kube-proxy
    # lines of the same generator): small, or inflated with `services` more.
    text = (scale_bundle.TEMPLATE / "nodes" / NODE / "host" / "iptables-save.txt").read_text()
    if services:
        text = inflate(text, kube_proxy_dump.generate(services, 3))
    (bundle / "nodes" / NODE / "host" / "iptables-save.txt").write_text(text)
    return bundle


def _trace(bundle: Path, *, force_all: bool = False) -> tuple[dict, dict[str, set[str]]]:
    """The trace document, and per (namespace, table) of the big node the chains built."""
    snap = load_snapshot(str(bundle))
    big = [ns for ns in snap.namespaces() if ns.id == f"{NODE}/host"]
    assert big, "the bundle lost its node"
    if force_all:  # a full parse: every chain built and tokenised before the walk
        for t in big[0].tables():
            for chain in t.chains.values():
                chain.rules  # noqa: B018
    src = resolve(snap, "sleep", role="source")
    dst = resolve(snap, "productpage", role="destination")
    doc = trace_document(Tracer(snap).trace(src, dst), "B")
    built = {f"{t.family}/{t.name}": {n for n in t.chains if n in t.chains._built}  # type: ignore[attr-defined]
             for t in big[0].tables() if hasattr(t.chains, "_built")}
    return doc, built


def test_trace_on_a_big_node_builds_the_same_chains_as_on_the_small_node(tmp_path: Path) -> None:
    small_doc, small_built = _trace(_bundle(tmp_path, 0))
    big_bundle = _bundle(tmp_path, 2000)
    big_doc, big_built = _trace(big_bundle)
    nat = parse_iptables_save(
        (big_bundle / "nodes" / NODE / "host" / "iptables-save.txt").read_text(), "x"
    ).tables[0].chains
    assert len(nat) > 8000  # 2,000 services x 3 endpoints: the chains are there
    assert big_built == small_built
    assert 0 < sum(len(v) for v in big_built.values()) < 20
    # The KUBE-SERVICES entries are scanned (not built as chains) and change nothing.
    assert big_doc["disposition"] == small_doc["disposition"] == "delivered"


def test_trace_on_a_big_node_says_what_a_full_parse_says(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, 2000)
    lazy, built = _trace(bundle)
    full, _ = _trace(bundle, force_all=True)
    assert lazy == full
    assert sum(len(v) for v in built.values()) < 20


def _reference(text: str) -> dict[str, list[tuple[int, str]]]:
    """Every chain's rules as a plain line split files them (the definition of exact)."""
    out: dict[str, list[tuple[int, str]]] = {}
    for no, line in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        body = line.split("] ", 1)[1] if line.startswith("[") else line
        if body.startswith("-A "):
            out.setdefault(body.split(" ")[1], []).append((no, line))
    return out


@pytest.mark.parametrize("shape", ["plain", "counters", "interleaved", "blank-lines", "crlf"])
def test_every_rule_keeps_its_exact_line_whatever_the_dump_shape(shape: str) -> None:
    text = kube_proxy_dump.generate(300, 4)
    lines = text.split("\n")
    if shape == "counters":
        lines = [f"[{i}:{i * 60}] {ln}" if ln.startswith("-A ") else ln
                 for i, ln in enumerate(lines)]
    elif shape == "interleaved":
        # Swap every pair of rule lines of different chains: chains come in many runs.
        for i in range(len(lines) - 1):
            a, b = lines[i], lines[i + 1]
            if a.startswith("-A ") and b.startswith("-A ") and a.split()[1] != b.split()[1] \
                    and i % 3 == 0:
                lines[i], lines[i + 1] = b, a
    elif shape == "blank-lines":
        lines = [ln for i, x in enumerate(lines) for ln in ((x, "") if i % 7 == 0 else (x,))]
    text = "\n".join(lines)
    if shape == "crlf":
        text = text.replace("\n", "\r\n")
    rs = parse_iptables_save(text, "x/iptables-save.txt")
    got = {name: list(chain.raw_rules) for t in rs.tables for name, chain in t.chains.items()
           if len(chain)}
    ref = _reference(text)
    assert sum(map(len, ref.values())) > 4000
    # Chain names repeat across tables (filter and nat both declare KUBE-SERVICES):
    # compare the union of rules filed under each name.
    merged: dict[str, list[tuple[int, str]]] = {}
    for t in rs.tables:
        for name, chain in t.chains.items():
            assert len(chain) == len(list(chain.raw_rules))
            merged.setdefault(name, []).extend(chain.raw_rules)
    assert {k: sorted(v) for k, v in merged.items() if v} == {k: sorted(v) for k, v in ref.items()}
    assert got  # and a rule tokenises from its own line
    some = next(c for t in rs.tables for c in t.chains.values() if len(c) > 3)
    assert some.rules[-1].source.line == some.raw_rules[-1][0]


_READ_PEAK = """
import sys
sys.path.insert(0, sys.argv[1])
import ambientctl.bundle.reader as reader
assert reader.__file__.startswith(sys.argv[1]), reader.__file__


def hwm():  # this process's peak RSS (VmHWM: ru_maxrss would include the forking parent's)
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmHWM:"))


b = reader.open_bundle(sys.argv[2])
before = hwm()
text = b.read_text("nodes/n/host/iptables-save.txt")
print(before, hwm(), len(text), text[-7:-1])
"""


def test_reading_a_big_dump_holds_it_once_not_as_bytes_plus_text(tmp_path: Path) -> None:
    dump = tmp_path / "b" / "nodes" / "n" / "host" / "iptables-save.txt"
    dump.parent.mkdir(parents=True)
    line = "-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j KUBE-SVC-X\n"
    dump.write_text(line * (48 * 2**20 // len(line)) + "COMMIT\n")
    size = dump.stat().st_size
    out = subprocess.run([sys.executable, "-c", _READ_PEAK, str(ROOT), str(tmp_path / "b")],
                         capture_output=True, text=True, check=True).stdout.split()
    before, after, length = int(out[0]), int(out[1]), int(out[2])
    assert length == size and out[3] == "COMMIT"
    # bytes + str added 2x the size (3x with a non-ASCII character: see read_text);
    # one growing string adds 1x (+ a chunk).
    assert after - before < 1.3 * size, (after - before) / size


def test_reading_in_chunks_decodes_a_character_cut_by_a_chunk_boundary(tmp_path: Path) -> None:
    from ambientctl.bundle.reader import _TEXT_CHUNK, open_bundle

    f = tmp_path / "b" / "x.txt"
    f.parent.mkdir()
    head = b"a" * (_TEXT_CHUNK - 1)  # "é" (2 bytes) starts on the chunk's last byte
    f.write_bytes(head + "é\n".encode() + b"b" * _TEXT_CHUNK + b"\xff\n")
    text = open_bundle(str(tmp_path / "b")).read_text("x.txt")
    assert text == "a" * (_TEXT_CHUNK - 1) + "é\n" + "b" * _TEXT_CHUNK + "\ufffd\n"
