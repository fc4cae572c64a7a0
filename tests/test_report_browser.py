"""The HTML report in a real headless Chromium (Debian's `chromium`, driven by Playwright
without downloading a browser): it renders with no console error, draws an element per
hop, opens a hop's rules on click, links a finding to its box, and fetches nothing.
A screenshot of each report is kept under test-artifacts/ (or $AMBIENTCTL_ARTIFACTS).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.example_faults import seed_without_sleep_in_ipset

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "seed-kind-ambient"
INPOD = ROOT / "examples" / "inpod-kind-ambient"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("AMBIENTCTL_ARTIFACTS", ROOT / "test-artifacts"))


def _need_browser() -> None:
    missing = None
    if CHROMIUM is None:
        missing = "chromium is not installed (apt-get install chromium)"
    else:
        try:
            import playwright  # noqa: F401
        except ImportError:
            missing = "playwright is not installed (pip install playwright)"
    if missing:
        if os.environ.get("AMBIENTCTL_REQUIRE_KERNEL") == "1":
            pytest.fail(f"browser test cannot run although required: {missing}")
        pytest.skip(missing)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ambientctl", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def _broken_seed(tmp_path: Path) -> Path:
    return seed_without_sleep_in_ipset(tmp_path, 'broken')


def _hops(bundle: Path, pairs: list[tuple[str, str]]) -> int:
    total = 0
    for src, dst in pairs:
        doc = json.loads(cli("trace", src, dst, "--bundle", str(bundle), "-o", "json").stdout)
        total += sum(len(leg["hops"]) for leg in doc["legs"])
    return total


@pytest.mark.parametrize("name,bundle_fn,pairs", [
    ("seed", lambda tmp: SEED, [("sleep", "productpage"), ("notsleep", "details")]),
    ("inpod", lambda tmp: INPOD, [("sleep", "productpage"), ("curl", "productpage")]),
    ("seed-broken", _broken_seed, [("sleep", "productpage")]),
])
def test_report_renders_in_chromium_with_an_element_per_hop(tmp_path: Path, name: str,
                                                            bundle_fn, pairs) -> None:  # type: ignore[no-untyped-def]
    _need_browser()
    from playwright.sync_api import sync_playwright

    bundle = bundle_fn(tmp_path)
    out = tmp_path / f"{name}.html"
    res = cli("report", "--bundle", str(bundle), *[x for p in pairs for x in p], "-o", str(out))
    assert res.returncode == 0, res.stderr
    page_text = out.read_text()
    # self-contained: nothing is fetched (no external src/href; CSP forbids it anyway)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page_text)
    assert "default-src 'none'" in page_text
    expected_hops = _hops(bundle, pairs)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1800, "height": 1200})
            problems: list[str] = []
            page.on("console", lambda m: problems.append(f"{m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
            page.on("request", lambda r: problems.append(f"request: {r.url}")
                    if not r.url.startswith(("file:", "data:")) else None)
            page.goto(out.as_uri())
            assert page.locator("#rendered").text_content() == "ok"
            assert page.locator(".hop").count() == expected_hops
            page.locator(".hop").nth(1).click()
            panel = page.locator("#panel").inner_text()
            assert re.search(r"\[nodes/[^\]]+:\d+\]", panel), panel
            if name == "seed-broken":
                assert page.locator(".ns.flagged").count() >= 1
                link = page.locator(".finding a").first
                link.click()
                assert page.locator(".ns.focus").count() == 1
                assert "AMB201" in page.locator("#panel").inner_text()
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / f"report-{name}.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")
            assert shot.stat().st_size > 10_000
            assert problems == []
        finally:
            browser.close()


def test_report_never_overwrites_and_needs_pairs(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    out.write_text("mine")
    res = cli("report", "--bundle", str(SEED), "sleep", "productpage", "-o", str(out))
    assert res.returncode == 2 and "not overwriting" in res.stderr and out.read_text() == "mine"
    odd = cli("report", "--bundle", str(SEED), "sleep", "-o", str(tmp_path / "x.html"))
    assert odd.returncode == 2 and "has no DST" in odd.stderr


def test_bundle_strings_are_escaped_in_the_page(tmp_path: Path) -> None:
    from ambientctl.render.html import report_html

    doc = {"summary": "<script>alert(1)</script>", "disposition": "delivered",
           "legs": [{"index": 1, "direction": "outbound", "disposition": "delivered",
                     "hops": [{"node": "n<1>", "netns": "n<1>/host", "pod": None,
                               "role": "x", "steps": [{"kind": "note",
                                                       "summary": "<img src=x onerror=1>"}]}]}]}
    page = report_html([doc], {"findings": [], "result": "pass"}, "p<rov>")
    assert "<script>alert(1)" not in page and "<img src=x" not in page and "p&lt;rov&gt;" in page


def test_dot_output_is_valid_graphviz(tmp_path: Path) -> None:
    dot = cli("trace", "sleep", "productpage", "--bundle", str(SEED), "-o", "dot").stdout
    assert dot.startswith("digraph ambient_trace {")
    if shutil.which("dot") is None:
        if os.environ.get("AMBIENTCTL_REQUIRE_KERNEL") == "1":
            pytest.fail("graphviz (dot) is required to validate -o dot")
        pytest.skip("graphviz is not installed")
    res = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("class=\"edge\"") == 3 + 2 + 2  # hop moves of the three legs


def test_mermaid_output_is_a_well_formed_flowchart() -> None:
    text = cli("trace", "sleep", "productpage", "--bundle", str(SEED), "-o", "mermaid").stdout
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    assert sum(ln.strip().startswith("subgraph ") for ln in lines) == \
        sum(ln.strip() == "end" for ln in lines) == 2
    defined = {m.group(1) for ln in lines if (m := re.match(r'\s+(n_\w+)\["[^"]*"\]$', ln))}
    edges = [re.match(r'\s+(n_\w+) (-->|-\.->)\|"[^"|]*"\| (n_\w+)$', ln) for ln in lines
             if "->" in ln]
    assert len(edges) == 7 and all(edges)
    assert all(e.group(1) in defined and e.group(3) in defined for e in edges if e)
