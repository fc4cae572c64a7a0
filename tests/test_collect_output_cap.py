"""Output size is bounded: a per-command stdout cap (--max-output) on every transport, the
truncation recorded in the manifest (status `truncated`, nothing stored), and peak memory
independent of what a command prints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ambientctl.collectors import batch
from ambientctl.collectors.batch import BatchingTransport, new_nonce, split_batch
from ambientctl.collectors.exec_outcome import DEFAULT_MAX_OUTPUT, CappedBuffer
from ambientctl.collectors.specs import NETNS_SPECS
from ambientctl.collectors.transport import NetnsRef
from ambientctl.raw import ExecResult
from tests.peers.sshd import Sshd, sshd_available

REPO = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024

pytest_plugins = ["tests.peers.fixtures"]


def test_capped_buffer_holds_at_most_the_cap_and_counts_everything() -> None:
    buf = CappedBuffer(5)
    buf.append(b"abc")
    assert buf.getvalue() == b"abc" and not buf.truncated
    for chunk in (b"defg", b"hij"):
        buf.append(chunk)
    assert buf.getvalue() == b"" and buf.seen == 10 and buf.truncated  # never stored
    exact = CappedBuffer(3)
    exact.append(b"abc")
    assert not exact.truncated and exact.getvalue() == b"abc"


def test_cli_default_max_output_is_the_collectors() -> None:
    from ambientctl.cli.source import DEFAULT_MAX_OUTPUT_MIB

    assert DEFAULT_MAX_OUTPUT_MIB * MIB == DEFAULT_MAX_OUTPUT


def test_the_batch_caps_each_command_on_the_node_and_keeps_its_exit_code() -> None:
    nonce = new_nonce()
    script = (
        batch._PROLOGUE
        + "    0) x sh -c 'head -c 100000 /dev/zero; echo e >&2; exit 3' ;;\n"
        + "    1) x sh -c 'printf abc; exit 5' ;;\n"
        + "    2) x sh -c 'echo started; sleep 5' ;;\n"
        + batch._EPILOGUE
        + batch._MAIN
    )
    res = subprocess.run(["sh", "-c", script, "sh", nonce, "1", "c11", "0", "1", "2"],
                         capture_output=True, timeout=30)
    pieces = split_batch(res.stdout, res.stderr, nonce)
    assert len(pieces[0].stdout) == 11 and pieces[0].stderr == b"e\n"  # cap + 1: cut
    assert (pieces[1].stdout, pieces[1].exit_code) == (b"abc", 5)
    assert pieces[2].timed_out and pieces[2].stdout == b"started\n"  # timeout still seen


class _Big:
    name = "fake"

    def run(self, argv: Sequence[str], *, netns: NetnsRef | None, timeout: float) -> ExecResult:
        nonce = argv[4]
        assert "c11" in argv  # the cap travels to the node
        out = b""
        for i in [a for a in argv[6:] if a.isdigit()]:
            body = b"x" * (11 if i == argv[-1] else 4)
            out += f"{nonce} B {i}\n".encode() + body + f"\n{nonce} E {i} 0 1 \n".encode()
        return ExecResult(0, out, b"", 1)

    def close(self) -> None:
        pass


def test_a_batched_command_past_the_cap_is_flagged_truncated() -> None:
    t = BatchingTransport(_Big(), max_output=10)
    results = [t.run(s.argv, netns=None, timeout=5) for s in NETNS_SPECS]
    assert [r.truncated for r in results] == [False] * (len(results) - 1) + [True]
    assert results[-1].stdout == b"" and results[0].stdout == b"xxxx"


def _shim(tmp_path: Path, tool: str, body: str) -> str:
    from ambientctl.collectors import specs

    shim = tmp_path / "bin"
    shim.mkdir()
    for name in specs.programs() | {"ip", "nsenter"}:
        real = shutil.which(name)
        if real:
            (shim / name).symlink_to(real)
    (shim / tool).unlink(missing_ok=True)
    (shim / tool).write_text(f"#!/bin/sh\n{body}\n")
    (shim / tool).chmod(0o755)
    return str(shim)


@pytest.mark.kernel
def test_a_600_mib_output_is_truncated_recorded_and_costs_no_memory(
    lab: Any, tmp_path: Path
) -> None:
    path = _shim(tmp_path, "ipset", f"exec {shutil.which('head')} -c {600 * MIB} /dev/zero")
    out = tmp_path / "b"
    host = lab.netns_name("ambient-worker/host")
    # A fresh parent whose only children are this collection: its RUSAGE_CHILDREN peak
    # RSS is the collector's own (KiB), not that of anything else the test suite ran.
    measure = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
    )
    res = subprocess.run(
        [sys.executable, "-c", measure, "ip", "netns", "exec", host, sys.executable, "-m",
         "ambientctl", "collect", "--local", "--node-name", "ambient-worker",
         "--max-output", "16", "-q", "-o", str(out)],
        cwd=REPO, env={**os.environ, "PATH": path, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=300,
    )
    peak_kib = int(res.stdout.strip().splitlines()[-1])
    assert res.returncode == 7, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    entry = next(e for e in manifest["entries"] if e["spec"] == "ipset.txt")
    assert entry["status"] == "truncated" and entry["path"] is None
    assert f"cap of {16 * MIB} bytes" in entry["note"]
    assert manifest["collection"]["max_output_bytes"] == 16 * MIB
    assert not (out / "nodes/ambient-worker/host/ipset.txt").exists()
    assert peak_kib < 150 * 1024, f"peak RSS {peak_kib} KiB for a 600 MiB output"


@pytest.mark.kernel
def test_the_docker_transport_caps_stdout(docker_peer: Any) -> None:
    from ambientctl.collectors.docker import DockerTransport

    t = DockerTransport("ambient-worker", base_url=docker_peer.base_url, max_output=1000)
    res = t.run(["head", "-c", "50000", "/dev/zero"], netns=None, timeout=20)
    t.close()
    assert res.exit_code == 0 and res.truncated and res.stdout == b""


@pytest.mark.kernel
@pytest.mark.skipif(sshd_available() is not None, reason=str(sshd_available()))
def test_the_ssh_transport_caps_stdout(tmp_path: Path) -> None:
    from ambientctl.collectors.ssh import SshEndpoint, SshTransport

    with Sshd(tmp_path / "sshd") as sshd:
        known = tmp_path / "known_hosts"
        known.write_text(sshd.known_hosts_line())
        t = SshTransport(
            SshEndpoint(node="n1", host="127.0.0.1", port=sshd.port, user="root",
                        key_file=str(sshd.client_key)),
            known_hosts=str(known), max_output=1000,
        )
        res = t.run(["head", "-c", "50000", "/dev/zero"], netns=None, timeout=20)
        t.close()
    assert res.exit_code == 0 and res.truncated and res.stdout == b""
