"""Terminal escape sequences from node stderr and bundle contents never reach the terminal;
JSON keeps the exact value (escaped by json)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ambientctl.render.terminal import terminal_safe

REPO = Path(__file__).resolve().parents[1]
OSC_TITLE = "\x1b]0;pwned\x07"
OSC_LINK = "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\"


def test_controls_c1_and_bidi_become_visible_escapes_layout_stays() -> None:
    text = f"a{OSC_TITLE}b\x9b2J\u202eevil\r\nline2\tcol é 日本"
    safe = terminal_safe(text)
    assert "\x1b" not in safe and "\x07" not in safe and "\x9b" not in safe
    assert "\u202e" not in safe and "\r" not in safe
    assert safe == "a\\x1b]0;pwned\\x07b\\x9b2J\\u202eevil\\x0d\nline2\tcol é 日本"
    assert terminal_safe("plain text\n") == "plain text\n"


def _no_controls(text: str) -> None:
    assert terminal_safe(text) == text, f"control characters reached the terminal: {text!r}"


@pytest.mark.kernel
def test_node_stderr_and_bundle_contents_are_shown_escaped(lab: Any, tmp_path: Path) -> None:
    from ambientctl.collectors import specs

    shim = tmp_path / "bin"
    shim.mkdir()
    for tool in specs.programs() | {"ip", "nsenter"}:
        real = shutil.which(tool)
        if real:
            (shim / tool).symlink_to(real)
    (shim / "ipset").unlink(missing_ok=True)
    (shim / "ipset").write_text(f"#!/bin/sh\nprintf '%s\\n' '{OSC_TITLE}{OSC_LINK}' >&2\nexit 1\n")
    (shim / "ipset").chmod(0o755)
    env = {**os.environ, "PATH": str(shim), "PYTHONPATH": str(REPO)}
    out = tmp_path / "b"
    host = lab.netns_name("ambient-worker/host")
    res = subprocess.run(
        ["ip", "netns", "exec", host, sys.executable, "-m", "ambientctl", "collect", "--local",
         "--node-name", "ambient-worker", "-o", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 7, res.stderr
    assert "\\x1b]0;pwned\\x07" in res.stderr  # shown, visibly escaped
    _no_controls(res.stdout)
    _no_controls(res.stderr)
    # The manifest keeps the exact bytes (JSON escapes them).
    manifest = json.loads((out / "manifest.json").read_text())
    entry = next(e for e in manifest["entries"] if e["spec"] == "ipset.txt")
    assert entry["stderr"].startswith(OSC_TITLE + OSC_LINK)
    # A bundle's own contents (a pod name in a file) reach doctor's and trace's text.
    rule = f"0:\tfrom all lookup {OSC_TITLE}\n".encode()
    (out / "nodes/ambient-worker/host/ip-rule.txt").write_bytes(rule)
    for e in manifest["entries"]:
        if e["path"] == "nodes/ambient-worker/host/ip-rule.txt":
            e["size"], e["sha256"] = len(rule), hashlib.sha256(rule).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    seen = ""
    for args in (("doctor", "--bundle", str(out)), ("trace", "a", "b", "--bundle", str(out))):
        shown = subprocess.run(
            [sys.executable, "-m", "ambientctl", *args], cwd=REPO, env=env,
            capture_output=True, text=True, timeout=120,
        )
        assert shown.stdout or shown.stderr
        _no_controls(shown.stdout)
        _no_controls(shown.stderr)
        seen += shown.stdout + shown.stderr
    assert "\\x1b]0;pwned" in seen  # the data was shown, visibly escaped
    doc = subprocess.run(
        [sys.executable, "-m", "ambientctl", "doctor", "--bundle", str(out), "-o", "json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert doc.stdout, doc.stderr
    assert "\x1b" not in doc.stdout and json.loads(doc.stdout)  # JSON: escaped by json


def test_only_the_renderers_own_colours_pass_never_conceal_title_or_cursor() -> None:
    from ambientctl.render.term import Term

    painted = Term(colour=True).paint("ok", "bold", "green")
    assert terminal_safe(painted) == painted
    assert terminal_safe("\x1b[8mhidden\x1b[2J") == "\\x1b[8mhidden\\x1b[2J"
