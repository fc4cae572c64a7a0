"""The default trace view shows the path at a glance: the steps that changed the packet or
its route, each with file:line, grouped by namespace; `-v` keeps every step."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ambientctl.analyzers.selectors import resolve
from ambientctl.analyzers.trace import Tracer
from ambientctl.loading import load_snapshot
from ambientctl.render import trace_text
from ambientctl.render.term import Term

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "seed-kind-ambient"


def _trace(bundle: Path, src: str = "sleep", dst: str = "productpage"):  # type: ignore[no-untyped-def]
    snap = load_snapshot(str(bundle))
    return Tracer(snap).trace(resolve(snap, src, role="source"),
                              resolve(snap, dst, role="destination"))


def test_seed_default_view_names_each_changing_step_with_its_file_and_line() -> None:
    text = trace_text.render(_trace(SEED))
    lines = text.splitlines()
    assert ("    MARK       mangle ztunnel-PREROUTING #15: MARK 0x0 -> 0x100  "
            "[iptables-save.txt:40]") in lines
    assert ("    ip rule    101: from all fwmark 0x100/0x100 lookup 101  =>  default via "
            "192.168.127.2 dev istioout table 101  [ip-rule.txt:3, ip-route.txt:4]") in lines
    assert any(ln.startswith("    TPROXY     mangle PREROUTING #2: TPROXY -> listener "
                             "127.0.0.1:15001") for ln in lines)
    assert "    out        istioout -> ambient-worker pod istio-system/ztunnel-nptf6 pistioout  " \
           "[ip-addr.txt:43]" in lines
    # what changed nothing stays under -v
    assert "policy ACCEPT" not in text and "jump ztunnel-PREROUTING" not in text
    assert not any(re.match(r"\s+ip rule\s+0:", ln) for ln in lines)
    # the input device and the route's device apart; the 2022 source pod's role
    assert "  [ambient-worker] node · node (node-level capture) · in vetha5ba3e5c" in lines
    assert ("  [ambient-worker] pod default/sleep-7b85956664-z6qh7 · app (captured on the node)"
            in lines)
    verbose = trace_text.render(_trace(SEED), verbose=True)
    assert len(lines) < 70 < len(verbose.splitlines()) // 4


def test_a_broken_answer_is_expanded_step_by_step(tmp_path: Path) -> None:
    b = tmp_path / "b"
    shutil.copytree(SEED, b)
    (b / "manifest.json").unlink()
    routes = b / "nodes" / "ambient-worker2" / "host" / "ip-route.txt"
    routes.write_text("".join(ln for ln in routes.read_text().splitlines(keepends=True)
                              if not ln.startswith("10.244.1.7 via 192.168.126.2 dev istioin")))
    (b / "nodes" / "ambient-worker2" / "host" / "ip-route.json").unlink(missing_ok=True)
    text = trace_text.render(_trace(b))
    assert "    answer DROPPED: the answer to 10.244.2.3:40000 is delivered locally" in text
    assert "      TPROXY     mangle PREROUTING #2: TPROXY -> listener 127.0.0.1:15001" in text
    assert "    ip rule    103: from all lookup 100 (its table has no route: the next rule " \
           "decides)  [ip-rule.txt:5]" in text


def test_eighty_columns_wrap_at_word_boundaries_never_inside_a_word() -> None:
    t = _trace(SEED)
    plain = trace_text.render(t)
    narrow = trace_text.render(t, term=Term(width=80))
    for ln in narrow.splitlines():
        assert len(ln) <= 80 or " " not in ln.strip(), ln
    assert plain.split() == narrow.split()  # the same words, none cut


def test_colour_only_on_a_terminal_and_never_under_no_color() -> None:
    t = _trace(SEED)
    assert "\x1b[" not in trace_text.render(t, term=Term())
    assert "\x1b[1;32m" in trace_text.render(t, term=Term(colour=True))

    class Tty:
        def isatty(self) -> bool:
            return True

    old = os.environ.pop("NO_COLOR", None)
    try:
        assert Term.detect(Tty()).colour
        os.environ["NO_COLOR"] = "1"
        assert not Term.detect(Tty()).colour
    finally:
        os.environ.pop("NO_COLOR", None)
        if old is not None:
            os.environ["NO_COLOR"] = old


def test_cli_text_names_the_bundle_its_collection_time_and_mode_after_the_summary() -> None:
    res = subprocess.run([sys.executable, "-m", "ambientctl", "trace", "sleep", "productpage",
                          "--bundle", str(SEED)], capture_output=True, text=True, cwd=ROOT,
                         timeout=60)
    first, second = res.stdout.splitlines()[:2]
    assert first.endswith("(delivered)")
    created = json.loads((SEED / "manifest.json").read_text())["created_at"]
    assert second == f"bundle: {SEED} · collected {created} (local) · 2 nodes"
