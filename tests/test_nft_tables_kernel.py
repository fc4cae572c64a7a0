"""Per-table nft collection (`nft-tables.jsonl`) against the kernel: what it lists, what it
skips, and that the analyzers answer exactly as from `nft -j list ruleset`.

The in-pod lab with kube-proxy in nftables mode has both kinds of tables in one netns: the
node's `ip kube-proxy` (native) beside iptables-nft's `ip nat`/`ip mangle` (ambient's host
rules), whose POSTROUTING chains share priority 100 with kube-proxy's `nat-postrouting` -
the case where the order of tables (nft handles) decides the walk. The lab is collected once
(`collect --local`, the new command), then every netns is dumped again with the old
`nft -j list ruleset` into a copy of the bundle: trace and doctor must give the same
answers from both, file names aside.

The other tests load a table into their own uniquely named netns and run the catalogue's
script there (`ip netns exec`): never the root netns.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from ambientctl import model
from ambientctl.analyzers import netfilter
from ambientctl.analyzers.parse import nft as pn
from ambientctl.analyzers.parse import nft_hooks
from ambientctl.collectors.specs import NETNS_SPECS
from ambientctl.loading import load_snapshot
from ambientlab.inpod import InpodLab

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[1]
SPEC = next(s for s in NETNS_SPECS if s.id == "nft-tables")
PATHS = [("sleep", "productpage"), ("curl", "reviews"), ("node/ambient-worker", "reviews"),
         ("sleep", "reviews-v1")]


@contextlib.contextmanager
def netns(tag: str) -> Iterator[str]:
    """A fresh network namespace, deleted afterwards even when the test fails."""
    name = f"ambnft-{tag}-{os.getpid()}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def run(ns: str, *argv: str, stdin: str | None = None) -> str:
    proc = subprocess.run(["ip", "netns", "exec", ns, *argv], input=stdin, text=True,
                          capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, f"{argv[:3]} failed ({proc.returncode}): {proc.stderr}"
    return proc.stdout


def _bundle_dir(logical: str) -> str:
    """`ambient-worker/pod/default/sleep-x` -> `nodes/ambient-worker/pods/default/sleep-x`."""
    node, kind, *rest = logical.split("/")
    return f"nodes/{node}/host" if kind == "host" else f"nodes/{node}/pods/{'/'.join(rest)}"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(new: collected with nft-tables.jsonl, old: the same with nft-ruleset.json)."""
    work = tmp_path_factory.mktemp("nfttables")
    new, old = work / "new", work / "old"
    full: dict[str, str] = {}
    with InpodLab(variant="redirect", kube_proxy="nftables") as lab:
        lab.collect(new)
        for logical, name in lab.netns_names().items():
            full[_bundle_dir(logical)] = run(name, "nft", "-j", "list", "ruleset")
    shutil.copytree(new, old)
    for rel, text in full.items():
        (old / rel / "nft-tables.jsonl").unlink()
        (old / rel / "nft-ruleset.json").write_text(text)
    return new, old


def _cli(*argv: str) -> str:
    res = subprocess.run([sys.executable, "-m", "ambientctl", *argv], capture_output=True,
                         text=True, cwd=ROOT, timeout=300, check=False,
                         env={**os.environ, "COLUMNS": "100", "NO_COLOR": "1"})
    return f"exit {res.returncode}\n{res.stdout}"


def _same(text: str, bundle: Path) -> str:
    """An output with the bundle's path and nft file name made neutral."""
    text = text.replace(str(bundle), "<bundle>")
    return re.sub(r"nft-tables\.jsonl|nft-ruleset\.json", "<nft>", text)


def test_the_collection_lists_native_tables_and_only_the_chains_of_iptables_nft_ones(
        bundles: tuple[Path, Path]) -> None:
    new, old = bundles
    host = "nodes/ambient-worker/host"
    text = (new / host / "nft-tables.jsonl").read_text()
    assert "# nft -j list table ip kube-proxy\n" in text
    assert "# skipped table ip nat\n" in text
    docs = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    rules = {(r["family"], r["table"]) for d in docs for i in d["nftables"]
             if (r := i.get("rule")) is not None}
    assert rules == {("ip", "kube-proxy")}  # no rule of ip nat / ip mangle was listed
    # The native table comes out exactly as `nft -j list ruleset` prints it.
    full = json.loads((old / host / "nft-ruleset.json").read_text())["nftables"]
    merged = pn.merge_table_listings(text, "x.jsonl")["nftables"]

    def native(items: list[dict[str, dict[str, object]]]) -> list[object]:
        return [i for i in items if "metainfo" not in i and next(iter(i.values())).get(
            "table", next(iter(i.values())).get("name")) == "kube-proxy"]

    assert native(merged) == native(full) != []
    # Every base chain of every table is registered alike (handles and all); only the
    # skipped tables' own handle is unknown, and their order is the kernel's.
    want = nft_hooks.parse_registrations((old / host / "nft-ruleset.json").read_text(), "a")
    got = nft_hooks.parse_registrations(text, "b.jsonl")
    assert {k: (r.hook, r.priority, r.chain_handle) for k, r in got.items()} == \
        {k: (r.hook, r.priority, r.chain_handle) for k, r in want.items()}

    def by_order(regs: Mapping[tuple[str, str, str], model.ChainRegistration]
                 ) -> list[tuple[str, str, str]]:
        return sorted(regs, key=lambda k: (regs[k].table_order or 0, regs[k].chain_handle or 0))

    assert by_order(got) == by_order(want)


def test_hooks_run_the_same_chains_in_the_same_order_as_from_the_full_ruleset(
        bundles: tuple[Path, Path]) -> None:
    new, old = load_snapshot(str(bundles[0])), load_snapshot(str(bundles[1]))
    olds = {ns.id: ns for ns in old.namespaces()}
    seen = 0
    for ns in new.namespaces():
        other = olds[ns.id]
        for hook in ("prerouting", "input", "forward", "output", "postrouting"):
            got, got_notes = netfilter.hook_chains(ns, hook, 4)
            want, want_notes = netfilter.hook_chains(other, hook, 4)
            assert [(t.name, c.name) for t, c in got] == \
                [(t.name, c.name) for t, c in want], (ns.id, hook)
            assert got_notes == want_notes
            seen += len(got)
    assert seen


@pytest.mark.parametrize("src,dst", PATHS)
def test_trace_answers_as_from_the_full_ruleset(bundles: tuple[Path, Path], src: str,
                                                dst: str) -> None:
    new, old = bundles
    for fmt in (["-o", "json"], ["-v"]):
        got = _cli("trace", src, dst, "--bundle", str(new), *fmt)
        want = _cli("trace", src, dst, "--bundle", str(old), *fmt)
        assert _same(got, new) == _same(want, old)


def test_doctor_answers_as_from_the_full_ruleset(bundles: tuple[Path, Path]) -> None:
    new, old = bundles
    got = _cli("doctor", "--bundle", str(new), "-o", "json")
    assert _same(got, new) == _same(_cli("doctor", "--bundle", str(old), "-o", "json"), old)


def test_iptables_nft_tables_are_skipped_and_read_through_iptables_save() -> None:
    with netns("xt") as ns:
        run(ns, "iptables-nft", "-t", "nat", "-A", "POSTROUTING", "-o", "lo", "-j",
            "MASQUERADE")
        run(ns, "nft", "add table inet istio-ambient-nat")
        run(ns, "nft", "add chain inet istio-ambient-nat output "
            "{ type nat hook output priority -100; }")
        run(ns, "nft", "add rule inet istio-ambient-nat output tcp dport 80 redirect to :15001")
        text = run(ns, *SPEC.argv)
    rs = pn.parse_nft(text, "nft-tables.jsonl")
    assert [(t.family, t.name) for t in rs.tables] == [("inet", "istio-ambient-nat")]
    assert [r.target for r in rs.tables[0].chains["output"].rules] == ["REDIRECT"]
    assert any(w.startswith("table ip nat is managed by iptables-nft") for w in rs.warnings)


def test_a_native_table_with_an_iptables_name_is_never_read_as_empty() -> None:
    # A hand-written `table ip nat` (nftables.conf style, lowercase base chains): the
    # collector skips it by name, so its rules are unknown - every packet it sees must stop
    # the walk (an opaque rule), not pass as if the table were empty.
    with netns("native") as ns:
        run(ns, "nft", "-f", "-", stdin="table ip nat {\n chain postrouting {\n"
            "  type nat hook postrouting priority srcnat; policy accept;\n"
            "  oifname lo masquerade\n }\n}\n")
        text = run(ns, *SPEC.argv)
    assert "# skipped table ip nat" in text and "masquerade" not in text
    rs = pn.parse_nft(text, "nft-tables.jsonl")
    (table,) = rs.tables
    (rule,) = table.chains["postrouting"].rules
    assert [(m.module, m.option) for m in rule.matches] == [("nft", "expr")]
    assert any("collected without its rules" in w for w in rs.warnings)


def test_a_node_without_nft_is_recorded_as_not_found() -> None:
    with netns("nonft") as ns:
        proc = subprocess.run(["ip", "netns", "exec", ns, "env", "PATH=/nonexistent",
                               "/bin/sh", *SPEC.argv[1:]], capture_output=True, timeout=30,
                              check=False)
    assert proc.returncode == 127 and proc.stdout == b""
    assert SPEC.binary == "nft"
