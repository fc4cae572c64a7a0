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


# ------------------------------------------- slot status on real bundle shapes (issue 9 §1)

_NOTSLEEP = "nodes/ambient-worker/pods/default/notsleep-6d6c8669b5-pngxg"
_NOTSLEEP_ID = "ambient-worker/pod/default/notsleep-6d6c8669b5-pngxg"


def _seed_copy(tmp_path: Path, *, manifest: bool = True) -> Path:
    bundle = tmp_path / "seed"
    shutil.copytree(SEED, bundle)
    if not manifest:  # hand-edited files: no hashes to check against
        (bundle / "manifest.json").unlink()
    return bundle


def test_status_of_an_empty_file_is_empty_with_its_path_and_doctor_has_the_data() -> None:
    """A collected file that held nothing (no ipsets in an app pod's netns: 0 bytes in the
    real seed bundle) is `empty`, not `missing`: the command ran and found nothing."""
    from ambientctl.analyzers.doctor.facts import file_of, has_data
    from ambientctl.model import SlotStatus

    snap = load_snapshot(str(SEED))
    ns = snap.netns(_NOTSLEEP_ID)
    assert (SEED / _NOTSLEEP / "ipset.txt").stat().st_size == 0
    assert ns.status("ipsets") == SlotStatus("empty", f"{_NOTSLEEP}/ipset.txt")
    assert ns.ipsets == {} and has_data(ns, "ipset") and has_data(ns, "sets")
    assert file_of(ns, "ipset") == f"{_NOTSLEEP}/ipset.txt"


def test_status_of_a_failed_command_is_not_collected_with_the_manifests_reason(
        tmp_path: Path) -> None:
    """The manifest records that `sysctl net` failed in the pod's netns: the slot says so
    (path, and the one wording of `ManifestEntry.reason`), and doctor's SKIPPED reason and
    "looked in" evidence say the same file and reason."""
    import json

    from ambientctl.analyzers.doctor.facts import Context, file_of, has_data
    from ambientctl.model import SlotStatus

    bundle = _seed_copy(tmp_path)
    rel = f"{_NOTSLEEP}/sysctl.txt"
    doc = json.loads((bundle / "manifest.json").read_text())
    entry = next(e for e in doc["entries"] if e.get("path") == rel)
    entry.update(status="nonzero-exit", exit_code=1, path=None, size=None, sha256=None,
                 stderr="sysctl: cannot open \"/proc/sys/net\": Permission denied\n")
    (bundle / "manifest.json").write_text(json.dumps(doc))
    (bundle / rel).unlink()
    snap = load_snapshot(str(bundle))
    ns = snap.netns(_NOTSLEEP_ID)
    why = 'nonzero-exit on the node (exit 1): sysctl: cannot open "/proc/sys/net": ' \
          "Permission denied"
    assert ns.sysctls is None
    assert ns.status("sysctls") == SlotStatus("not-collected", rel, None, why)
    assert not has_data(ns, "sysctl") and file_of(ns, "sysctl") == rel
    assert Context.build(snap).missing_reason(ns, "sysctl") == f"{rel}: not collected: {why}"
    # the other namespaces' sysctls are untouched
    assert snap.netns("ambient-worker/host").status("sysctls").state == "parsed"


def test_status_of_a_broken_dump_is_failed_with_path_line_and_reason(tmp_path: Path) -> None:
    """A real iptables-save with one damaged line in the middle: the slot fails at that
    line (not at the file), the rules are unknown rather than partial, and doctor's
    SKIPPED reason names the same place."""
    from ambientctl.analyzers.doctor.facts import Context, has_data

    bundle = _seed_copy(tmp_path, manifest=False)
    host = bundle / "nodes" / "ambient-worker" / "host"
    lines = (host / "iptables-save.txt").read_text().splitlines(keepends=True)
    bad = next(i for i, ln in enumerate(lines) if ln.startswith("-A ")) + 2
    lines.insert(bad, "-A NOWHERE -j ACCEPT\n")  # a chain its table never declared
    (host / "iptables-save.txt").write_text("".join(lines))
    for other in ("ip6tables-save.txt", "nft-ruleset.json"):  # no other source of rules
        (host / other).unlink()
    ns = load_snapshot(str(bundle)).netns("ambient-worker/host")
    st = ns.status("rulesets")
    assert (st.state, st.path, st.line) == (
        "failed", "nodes/ambient-worker/host/iptables-save.txt", bad + 1), st
    assert st.reason and ns.rulesets is None and not has_data(ns, "iptables")
    reason = Context.build(load_snapshot(str(bundle))).missing_reason(ns, "iptables")
    assert reason.startswith("nodes/ambient-worker/host/iptables-save.txt:"), reason


def test_status_of_a_file_nobody_collected_is_missing_naming_every_file_looked_for(
        tmp_path: Path) -> None:
    """Neither on disk nor in the manifest (a hand-assembled bundle without `ss`): missing,
    the reason lists the table's files for the slot, doctor says "not in the bundle"."""
    from ambientctl.analyzers.doctor.facts import Context, file_of

    bundle = _seed_copy(tmp_path, manifest=False)
    for name in slot_files("listeners"):
        (bundle / _NOTSLEEP / name).unlink()
    snap = load_snapshot(str(bundle))
    ns = snap.netns(_NOTSLEEP_ID)
    st = ns.status("listeners")
    assert (st.state, st.path, st.line) == ("missing", None, None)
    assert st.reason == f"none of ss-listen.txt, ss-listen-udp.txt in {_NOTSLEEP}"
    assert file_of(ns, "ss") == f"{_NOTSLEEP}/ss-listen.txt"
    assert Context.build(snap).missing_reason(ns, "ss") == \
        f"{_NOTSLEEP}/ss-listen.txt: not in the bundle"


def test_doctors_data_kinds_name_files_of_the_spec_table_for_the_slot_they_check() -> None:
    """doctor lists no file names of its own: each kind of data is spec-table groups, and
    every file of a kind fills the slot `has_data` reads for it (a typo'd group would be
    an empty tuple here)."""
    from ambientctl.analyzers.doctor.facts import DATA_FILES

    slot_of = {s.file: s.slot for s in SPEC_TABLE}
    checked = {"iptables": {"rulesets"}, "ipset": {"ipsets"}, "sets": {"ipsets", "rulesets"},
               "ip-rule": {"rules"}, "ip-route": {"routes"}, "ip-addr": {"links"},
               "ss": {"listeners"}, "sysctl": {"sysctls"}}
    assert set(DATA_FILES) == set(checked)
    for data, files in DATA_FILES.items():
        assert files and {slot_of[f] for f in files} == checked[data], data
    # preference order is the table's: the text form of an iproute2 dump first
    assert DATA_FILES["ip-rule"] == ("ip-rule.txt", "ip-rule.json")
    assert DATA_FILES["iptables"][0] == "iptables-save.txt"
