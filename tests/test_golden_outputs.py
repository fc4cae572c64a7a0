"""Today's outputs of trace and doctor on the three example bundles, pinned byte for byte.

Every rendering change becomes a reviewed diff of `tests/fixtures/golden/`: a refactor must
leave these files unchanged, a feature that changes an output regenerates them on purpose:

    AMBIENTCTL_REGEN_GOLDEN=1 python -m pytest tests/test_golden_outputs.py

(and the diff of the regenerated files is part of the commit).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "fixtures" / "golden"
EX = ROOT / "examples"

# (golden name, argv after `ambientctl`): the paths the examples exist to show.
CASES: list[tuple[str, list[str]]] = []
_TRACES = {
    "seed-kind-ambient": [
        ("sleep", "productpage", []),
        ("sleep", "productpage", ["--plaintext"]),
        ("notsleep", "details", []),
        ("node/ambient-worker", "productpage", []),
        ("sleep", "ratings", ["--port", "9080"]),
    ],
    "inpod-kind-ambient": [
        ("sleep", "productpage", []),
        ("sleep", "productpage", ["--plaintext"]),
        ("curl", "productpage", []),
        ("node/ambient-worker2", "productpage", []),
        ("sleep", "reviews", []),
        ("sleep", "productpage", ["--udp", "--port", "53"]),
    ],
    "mixed-kind-ambient": [
        ("sleep", "productpage", []),
        ("sleep", "httpbin", []),
        ("httpbin", "productpage", []),
        ("curl", "productpage", []),
    ],
}
for _bundle, _pairs in _TRACES.items():
    for _src, _dst, _extra in _pairs:
        _slug = re.sub(r"[^a-z0-9]+", "-", "-".join([_src, _dst, *_extra]).lower()).strip("-")
        for _fmt, _flags in (("json", ["-o", "json"]), ("txt", []), ("v.txt", ["-v"])):
            CASES.append((f"{_bundle}/trace-{_slug}.{_fmt}",
                          ["trace", _src, _dst, "--bundle", str(EX / _bundle), *_extra, *_flags]))
    CASES.append((f"{_bundle}/doctor.json", ["doctor", "--bundle", str(EX / _bundle), "-o", "json"]))
    CASES.append((f"{_bundle}/doctor.txt", ["doctor", "--bundle", str(EX / _bundle)]))


def _run(argv: list[str]) -> str:
    res = subprocess.run([sys.executable, "-m", "ambientctl", *argv], capture_output=True,
                         text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "COLUMNS": "100", "NO_COLOR": "1"})
    # The exit code is pinned with the output: a changed disposition must show in the diff.
    text = f"$ ambientctl {' '.join(argv)}\n# exit {res.returncode}\n{res.stdout}"
    return text.replace(str(ROOT), "<repo>")


@pytest.mark.parametrize("name,argv", CASES, ids=[c[0] for c in CASES])
def test_example_output_is_pinned(name: str, argv: list[str]) -> None:
    got = _run(argv)
    path = GOLDEN / name
    if os.environ.get("AMBIENTCTL_REGEN_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(got)
        return
    assert path.exists(), f"no golden {path}: regenerate with AMBIENTCTL_REGEN_GOLDEN=1"
    assert got == path.read_text(), f"{name} changed: review, then regenerate on purpose"
