"""The lazy snapshot (issue 12) and its spec table (issue 9 §1).

`load_snapshot` parses cluster objects eagerly and each namespace slot on first access; the
example bundles (generated from real kernels by examples/make_*.py) are the input.
"""

from __future__ import annotations

import dataclasses
import pickle
import shutil
import tarfile
from pathlib import Path

import pytest

from ambientctl.analyzers.snapshot import SPEC_TABLE, BundleView, build_snapshot, slot_files
from ambientctl.collectors.specs import ALL_SPECS
from ambientctl.layout import NETNS_FILES
from ambientctl.loading import load_snapshot
from ambientctl.model import NETNS_SLOTS, NetNamespace, PodRef

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "seed-kind-ambient"
INPOD = ROOT / "examples" / "inpod-kind-ambient"


def _fields(ns: NetNamespace) -> tuple[object, ...]:
    return tuple(getattr(ns, f.name) for f in dataclasses.fields(NetNamespace))


def _a_pod(snap) -> PodRef:  # type: ignore[no-untyped-def]
    return next(ref for state in snap.nodes.values() for ref in state.pods
                if ref.namespace != "istio-system")


def _recording(location: Path) -> tuple[list[str], object]:
    """A snapshot built over a reader that records every path it is asked for."""
    from ambientctl.bundle.reader import open_bundle

    bundle = open_bundle(str(location))
    reads: list[str] = []

    def read_text(rel: str) -> str:
        reads.append(rel)
        return bundle.read_text(rel)

    view = BundleView(str(location), tuple(bundle.paths()), read_text, bundle.typed_manifest,
                      tuple(bundle.manifest_problems), close=bundle.close)
    return reads, build_snapshot(view)


# --------------------------------------------------------------------------- laziness


def test_loading_reads_only_the_manifest_and_cluster_files() -> None:
    reads, snap = _recording(SEED)
    assert reads and all(r.startswith("cluster/") for r in reads)
    assert snap.parsed_namespaces() == ()  # type: ignore[attr-defined]
    # listing-only attributes and lookups parse nothing
    ids = [ns.id for ns in snap.namespaces()]  # type: ignore[attr-defined]
    assert snap.netns(ids[-1]).files  # type: ignore[attr-defined]
    assert snap.pod_netns(_a_pod(snap)) is not None  # type: ignore[attr-defined]
    assert all(r.startswith("cluster/") for r in reads)
    assert snap.parsed_namespaces() == ()  # type: ignore[attr-defined]


def test_reading_a_slot_opens_only_that_slots_files_of_that_namespace() -> None:
    reads, snap = _recording(SEED)
    before = len(reads)
    ns = snap.pod_netns(_a_pod(snap))  # type: ignore[attr-defined]
    assert ns.links
    assert reads[before:] == [f"{ns.dir}/ip-addr.txt"]
    assert snap.parsed_namespaces() == (ns.id,)  # type: ignore[attr-defined]
    ns.rulesets  # noqa: B018  (the access is the point)
    assert {r.rsplit("/", 1)[1] for r in reads[before + 1:]} <= set(slot_files("rulesets"))
    assert all(r.startswith(ns.dir + "/") for r in reads[before:])


def test_nft_ruleset_json_is_read_once_for_rulesets_sets_and_registrations() -> None:
    reads, snap = _recording(SEED)
    ns = next(n for n in snap.namespaces() if "nft-ruleset.json" in n.files)  # type: ignore[attr-defined]
    ns.rulesets, ns.ipsets, ns.registrations  # noqa: B018
    assert reads.count(f"{ns.dir}/nft-ruleset.json") == 1
    assert ns.registrations is not None and ns.status("registrations").state == "parsed"


@pytest.mark.parametrize("example", ["seed-kind-ambient", "inpod-kind-ambient",
                                     "mixed-kind-ambient"])
def test_every_namespace_is_the_same_whatever_the_access_order(example: str) -> None:
    # slots read one by one, in reverse order, equal a fresh namespace's `problems`-first read
    a = load_snapshot(str(ROOT / "examples" / example))
    b = load_snapshot(str(ROOT / "examples" / example))
    for x, y in zip(a.namespaces(), b.namespaces(), strict=True):
        x.problems  # noqa: B018
        for slot in reversed(NETNS_SLOTS):
            getattr(y, slot)
        assert _fields(x) == _fields(y)
    assert list(a.all_problems()) == list(b.all_problems())


def test_evict_drops_a_nodes_parsed_state_and_the_next_access_reparses() -> None:
    snap = load_snapshot(str(INPOD))
    before = list(snap.all_problems())
    values = {ns.id: _fields(ns) for ns in snap.namespaces()}
    node = sorted(snap.nodes)[0]
    assert node in snap.parsed_dumps() or snap.parsed_dumps() == ()  # type: ignore[attr-defined]
    snap.evict(node)  # type: ignore[attr-defined]
    parsed = snap.parsed_namespaces()  # type: ignore[attr-defined]
    assert parsed and not any(i.startswith(node + "/") for i in parsed)
    assert node not in snap.parsed_dumps()  # type: ignore[attr-defined]
    assert {ns.id: _fields(ns) for ns in snap.namespaces()} == values
    assert list(snap.all_problems()) == before


def test_ztunnel_dumps_parse_per_node_on_access() -> None:
    snap = load_snapshot(str(INPOD))
    assert snap.parsed_dumps() == ()  # type: ignore[attr-defined]
    node = sorted(snap.nodes)[0]
    assert snap.ztunnel_configs.get(node) is not None
    assert snap.parsed_dumps() == (node,)  # type: ignore[attr-defined]
    assert node in snap.config_dumps


def test_namespaces_stay_frozen_and_replace_gives_an_eager_copy() -> None:
    snap = load_snapshot(str(SEED))
    ns = next(iter(snap.namespaces()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ns.links = ()  # type: ignore[misc]
    copy = dataclasses.replace(ns, rulesets=())
    assert copy.rulesets == () and copy.links == ns.links and copy.problems == ns.problems


def test_hash_and_repr_parse_nothing_and_equality_compares_content() -> None:
    a, b = load_snapshot(str(SEED)), load_snapshot(str(SEED))
    x, y = next(iter(a.namespaces())), next(iter(b.namespaces()))
    assert hash(x) == hash(y) and hash(a) == hash(b) and repr(x) and repr(a)
    assert a.parsed_namespaces() == () == b.parsed_namespaces()
    assert x == y and x != next(iter(reversed(list(b.namespaces()))))


def test_pickling_reopens_the_snapshot_and_materialises_a_namespace() -> None:
    snap = load_snapshot(str(SEED))
    again = pickle.loads(pickle.dumps(snap))
    assert again.source == snap.source and again.parsed_namespaces() == ()
    ns = snap.pod_netns(_a_pod(snap))
    plain = pickle.loads(pickle.dumps(ns))
    assert type(plain) is NetNamespace and _fields(plain) == _fields(ns)


def test_tar_gz_bundle_loads_lazily_and_equals_the_directory(tmp_path: Path) -> None:
    tgz = tmp_path / "seed.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        for f in sorted(SEED.rglob("*")):
            tar.add(f, arcname=f"seed/{f.relative_to(SEED)}", recursive=False)
    d, t = load_snapshot(str(SEED)), load_snapshot(str(tgz))
    assert t.parsed_namespaces() == ()  # type: ignore[attr-defined]
    ref = _a_pod(d)
    assert _fields(t.pod_netns(ref)) == _fields(d.pod_netns(ref))
    assert t.parsed_namespaces() == (d.pod_netns(ref).id,)  # type: ignore[attr-defined]
    assert list(t.all_problems()) == list(d.all_problems())


# --------------------------------------------------------------------------- slot status


def test_status_says_parsed_with_the_file_or_missing_with_what_was_looked_for() -> None:
    snap = load_snapshot(str(SEED))
    ns = snap.pod_netns(_a_pod(snap))
    st = ns.status("links")
    assert (st.state, st.path) == ("parsed", f"{ns.dir}/ip-addr.txt")
    ipvs = ns.status("ipvs")  # ipvsadm runs on nodes only
    assert ipvs.state == "missing" and "ipvsadm.txt" in (ipvs.reason or "")


def test_status_says_failed_with_file_and_line_for_a_broken_file(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(SEED, bundle)
    (bundle / "manifest.json").unlink()  # hand-edited files: no hashes to check
    ns_dir = next((bundle / "nodes").glob("*/host"))
    (ns_dir / "iptables-save.txt").write_text("*filter\n:INPUT ACCEPT [0:0]\n-A NOWHERE -j\n")
    for other in ("ip6tables-save.txt", "nft-ruleset.json"):
        (ns_dir / other).unlink(missing_ok=True)
    snap = load_snapshot(str(bundle))
    ns = snap.netns(f"{ns_dir.parent.name}/host")
    st = ns.status("rulesets")
    assert st.state == "failed" and st.path == f"{ns.dir}/iptables-save.txt" and st.reason
    assert ns.rulesets is None


def test_status_says_not_collected_when_the_manifest_says_the_command_failed() -> None:
    bundle = load_snapshot(str(ROOT / "examples" / "mixed-kind-ambient"))
    seen = [(ns.id, slot, ns.status(slot)) for ns in bundle.namespaces() for slot in NETNS_SLOTS]
    for _, _, st in seen:
        assert st.state in {"parsed", "empty", "missing", "not-collected", "failed"}
    # every not-collected problem of a namespace shows as that slot's status
    for ns in bundle.namespaces():
        for p in ns.problems:
            if p.message.startswith("not collected"):
                name = p.path.rsplit("/", 1)[1]
                slot = next(s.slot for s in SPEC_TABLE if s.file == name)
                if getattr(ns, slot) is None:
                    assert ns.status(slot).state == "not-collected"


# --------------------------------------------------------------------------- the spec table


def test_every_catalogue_command_has_exactly_one_parser_entry() -> None:
    by_command: dict[str, int] = {}
    for spec in SPEC_TABLE:
        if spec.command is not None:
            by_command[spec.command] = by_command.get(spec.command, 0) + 1
    assert by_command == {s.id: 1 for s in ALL_SPECS}
    # the file the catalogue writes is the file the table reads
    files = {s.command: s.file for s in SPEC_TABLE}
    assert all(files[s.id] == s.file for s in ALL_SPECS)


def test_every_table_entry_without_a_command_says_why_and_every_layout_file_is_read() -> None:
    assert all(s.note for s in SPEC_TABLE if s.command is None)
    assert set(NETNS_FILES) <= {s.file for s in SPEC_TABLE}
    assert len({s.file for s in SPEC_TABLE}) == len(SPEC_TABLE)
    assert {s.slot for s in SPEC_TABLE} - {"ztunnel_configs"} <= set(NETNS_SLOTS)


_GARBAGE = "\x00\x01\x7f}{ not a dump ]]] \x1b[31m\n%%%% @@@ ::: -A\n"


def _truncated(name: str) -> str:
    real = next(iter(sorted((ROOT / "examples").glob(f"*/nodes/*/*/{name}"))), None) or \
        next(iter(sorted((ROOT / "examples").glob(f"*/nodes/*/pods/*/*/{name}"))), None)
    if real is None:
        return '{"nftables": [{"metainfo": {"json_schema_version": 1}}, {"table": {"fam'
    text = real.read_text()
    return text[: max(1, len(text) * 3 // 5)]


def _wrong_format(name: str) -> str:
    if name.endswith(".json"):
        return "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"  # iptables-save where JSON belongs
    return '{"nftables": [{"metainfo": {"version": "1.0.6"}}]}\n'  # JSON where text belongs


@pytest.mark.parametrize("kind", ["truncated", "garbage", "wrong-format"])
@pytest.mark.parametrize("spec", SPEC_TABLE, ids=lambda s: s.file)
def test_bad_input_in_any_table_entry_is_a_problem_naming_the_file(
        tmp_path: Path, spec, kind: str) -> None:  # type: ignore[no-untyped-def]
    text = {"truncated": _truncated, "garbage": lambda _: _GARBAGE,
            "wrong-format": _wrong_format}[kind](spec.file)
    if spec.slot == "ztunnel_configs":
        rel = f"nodes/n1/ztunnel/{spec.file}"
    else:
        rel = f"nodes/n1/host/{spec.file}"
    (tmp_path / rel).parent.mkdir(parents=True)
    (tmp_path / rel).write_text(text)
    if spec.file == "ss-listen-udp.txt":  # read only beside the TCP listing (see its note)
        (tmp_path / "nodes/n1/host/ss-listen.txt").write_text("")
    snap = load_snapshot(str(tmp_path))
    if spec.slot == "ztunnel_configs":
        value = snap.ztunnel_configs.get("n1")
        problems = list(snap.problems)
    else:
        ns = snap.netns("n1/host")
        value = getattr(ns, spec.slot)
        problems = list(ns.problems)
        st = ns.status(spec.slot)
        if value is None:
            assert st.state in {"failed", "missing"}
    named = [p for p in problems if p.path == rel]
    if kind != "truncated" or value is None:
        # a value built from garbage must at least be reported; nothing is silently dropped
        assert named or value, f"{rel}: {kind} input neither parsed nor reported"
    if kind == "garbage":
        assert named, f"{rel}: garbage accepted without a problem"


def test_rules_read_from_nft_alone_are_cited_from_the_nft_file(tmp_path: Path) -> None:
    # The trace used to cite iptables-save.txt for every namespace, nft-only ones included.
    from ambientctl.analyzers.snapshot import cite

    host = tmp_path / "nodes" / "n1" / "host"
    host.mkdir(parents=True)
    (host / "nft-ruleset.json").write_text(
        '{"nftables": [{"metainfo": {"json_schema_version": 1}},'
        ' {"table": {"family": "inet", "name": "istio-ambient-nat", "handle": 1}},'
        ' {"chain": {"family": "inet", "table": "istio-ambient-nat", "name": "prerouting",'
        ' "handle": 1, "type": "nat", "hook": "prerouting", "prio": -100,'
        ' "policy": "accept"}}]}\n')
    ns = load_snapshot(str(tmp_path)).netns("n1/host")
    assert ns.rulesets and cite(ns, "rulesets") == "nodes/n1/host/nft-ruleset.json"
    assert ns.registrations and cite(ns, "registrations") == "nodes/n1/host/nft-ruleset.json"
    assert cite(ns, "links") == "nodes/n1/host/ip-addr.txt"  # absent: what would hold it
    assert ns.status("links").state == "missing"
