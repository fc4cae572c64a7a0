"""`trace --endpoint POD|IP` on the command line (the fork itself: tests/test_kubeproxy_nft_*)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from ambientctl.errors import SelectorError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "inpod-kind-ambient"
SCHEMA = json.loads((ROOT / "docs" / "schemas" / "trace-v1.json").read_text())

pytestmark = pytest.mark.skipif(not EXAMPLE.is_dir(), reason="example bundle not generated")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ambientctl", "trace", *args, "--bundle",
                           str(EXAMPLE)], capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_endpoint_without_a_fork_on_the_path_is_a_warning_and_in_json() -> None:
    res = run("sleep", "productpage", "--endpoint", "productpage-v1", "-o", "json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    jsonschema.validate(data, SCHEMA)
    assert data["endpoint"] == "productpage-v1"
    assert any("--endpoint productpage-v1: no random choice" in w for w in data["warnings"])
    plain = run("sleep", "productpage", "-o", "json")
    assert "endpoint" not in json.loads(plain.stdout)


def test_unknown_endpoint_is_a_one_line_selector_error() -> None:
    res = run("sleep", "productpage", "--endpoint", "nosuchpod")
    # The exit code of every selector that names nothing (SelectorError).
    assert res.returncode == int(SelectorError.exit_code) and "Traceback" not in res.stderr
    assert res.stderr.startswith("error: --endpoint: destination 'nosuchpod' matches no pod")
