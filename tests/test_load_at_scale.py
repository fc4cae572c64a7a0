"""Loading at cluster scale (issue 12): the listing grouped fast, the collector paused.

build_snapshot names a namespace per directory of the listing, whatever its order: the
listing (80k files at 200 nodes) is grouped by directory with C loops (runs of one
directory) rather than by splitting every path in Python; a directory whose files are not
one run (a subdirectory sorts among them, or an unsorted listing) must still be one
namespace with all its files, and the ztunnel dumps keep the listing's order.
"""

from __future__ import annotations

import pytest

from ambientctl.analyzers.snapshot import BundleView, build_snapshot

LISTING = (
    "nodes/n1/host/ip-addr.txt",
    "nodes/n1/host/sub/x.txt",  # a subdirectory between two files of nodes/n1/host
    "nodes/n1/host/routes.txt",
    "nodes/n1/ztunnel/config_dump.json",
    "nodes/n0/pods/default/p/ip-addr.txt",
    "nodes/n0/ztunnel/config_dump.json",
    "nodes/n0/host/ip-addr.txt",
    "nodes/n0/pods/default/p/ip-route.txt",  # the pod's second run
    "nodes/n2/ztunnel/other.json",
    "nodes/n2/host",  # a file where a directory is expected: no namespace
    "manifest.json",
)


def _refused(rel: str) -> str:
    raise AssertionError(f"nothing is read while the snapshot is built: {rel}")


def test_every_directory_is_one_namespace_with_all_its_files_whatever_the_order() -> None:
    snap = build_snapshot(BundleView("listing", LISTING, _refused))
    assert {ns.id: sorted(ns.files) for ns in snap.namespaces()} == {
        "n0/host": ["ip-addr.txt"],
        "n0/pod/default/p": ["ip-addr.txt", "ip-route.txt"],
        "n1/host": ["ip-addr.txt", "routes.txt"],
    }
    assert snap.dump_nodes() == ("n1", "n0")  # the listing's order


def test_loading_pauses_the_cycle_collector_and_restores_it_whatever_happens(
        monkeypatch, tmp_path) -> None:
    """Opening a big bundle allocates ~10^6 long-lived objects: the collector is off while
    it does (issue 12), then back as it was, also when the load fails; the process's own
    frozen objects are left frozen."""
    import gc

    from ambientctl import loading
    from ambientctl.errors import BundleError

    seen: list[bool] = []
    build = loading.build_snapshot
    monkeypatch.setattr(loading, "build_snapshot",
                        lambda view: seen.append(gc.isenabled()) or build(view))
    bundle = tmp_path / "b"
    (bundle / "nodes" / "n0" / "host").mkdir(parents=True)
    (bundle / "nodes" / "n0" / "host" / "ip-addr.txt").write_text("")
    assert gc.isenabled()
    loading.load_snapshot(str(bundle))
    assert seen == [False] and gc.isenabled()
    with pytest.raises(BundleError):
        loading.load_snapshot(str(tmp_path / "missing"))
    assert gc.isenabled()
    gc.disable()
    try:
        loading.load_snapshot(str(bundle))
        assert not gc.isenabled()  # left off: it was off
    finally:
        gc.enable()
    # what the load allocated lands in the oldest generation, nothing stays frozen...
    loading.load_snapshot(str(bundle))
    assert gc.get_freeze_count() == 0
    # ...and objects the process froze itself stay frozen
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        loading.load_snapshot(str(bundle))
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_a_pods_source_line_is_its_line_of_the_file_without_splitting_it(newline: str) -> None:
    """The verbatim line of each pod (its `"name":` line, else its first) is cut around the
    offset, not taken from a split of the whole file (13 MB at 200 nodes)."""
    from ambientctl.analyzers.parse.cluster import parse_pods

    doc = newline.join([
        '{"kind": "List", "items": [',
        '  {"metadata": {',
        '    "name": "a", "namespace": "n"}},',
        '  {"metadata": {"namespace": "n", "name" :"b"}},',
        '  {"metadata": {"name": "c"}}]}',  # the last line, no newline after it
    ])
    lines = doc.split("\n")
    got = [(p.source.line, p.source.text) for p in parse_pods(doc, "cluster/pods.json")]
    assert got == [(3, lines[2].rstrip("\r")), (4, lines[3].rstrip("\r")),
                   (5, lines[4].rstrip("\r"))]
