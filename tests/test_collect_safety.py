"""Nothing lost, nothing left behind (issue 11 §5): exclusive temporaries, SIGTERM handled
like Ctrl-C, interrupted live collections exit 130 saying what was kept, write errors keep
what was written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ambientctl.bundle.writer import write_tarball
from ambientctl.errors import ExitCode, UsageError
from tests.peers.sshd import Sshd, sshd_available

REPO = Path(__file__).resolve().parents[1]


def _start(*args: str, env: dict[str, str], netns: str | None = None) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "ambientctl", *args]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    return subprocess.Popen(
        argv, cwd=REPO, env={**os.environ, **env}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )


def _wait_for(path: Path, limit: float = 30) -> None:
    end = time.monotonic() + limit
    while not path.exists() and time.monotonic() < end:
        time.sleep(0.05)
    assert path.exists(), f"{path} never appeared"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --------------------------------------------------------------------------- tarball


def test_the_tarball_temporary_never_follows_a_planted_symlink(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "manifest.json").write_text("{}")
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    out = tmp_path / "b.tar.gz"
    # The name the writer used to pick (<out>.tmp-<pid>), planted as a link to the victim.
    os.symlink(victim, f"{out}.tmp-{os.getpid()}")
    write_tarball(src, str(out), top="b", mtime=0)
    assert victim.read_text() == "precious\n"
    assert out.is_file() and not out.is_symlink()
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".b.tar.gz.")]
    assert leftovers == []


def test_a_tarball_never_replaces_what_appeared_at_the_output(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "manifest.json").write_text("{}")
    out = tmp_path / "b.tar.gz"
    os.symlink(tmp_path / "elsewhere", out)
    with pytest.raises(UsageError, match="appeared"):
        write_tarball(src, str(out), top="b", mtime=0)
    assert out.is_symlink() and not (tmp_path / "elsewhere").exists()


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


# --------------------------------------------------------------------------- signals


def _slow_path(tmp_path: Path, pidfile: Path) -> str:
    """PATH with the real tools and an `ss` that records its pid and hangs."""
    from ambientctl.collectors import specs

    shim = tmp_path / "bin"
    shim.mkdir()
    import shutil

    for tool in specs.programs() | {"ip", "nsenter"}:
        real = shutil.which(tool)
        if real:
            (shim / tool).symlink_to(real)
    (shim / "ss").unlink(missing_ok=True)
    (shim / "ss").write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 600\n")
    (shim / "ss").chmod(0o755)
    return str(shim)


@pytest.mark.kernel
def test_sigterm_during_a_redacted_collection_is_an_interrupt(lab: Any, tmp_path: Path) -> None:
    host = lab.netns_name("ambient-worker2/host")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    pidfile = tmp_path / "ss.pid"
    out = tmp_path / "shared"
    proc = _start(
        "collect", "--local", "--node-name", "ambient-worker2", "--timeout", "60",
        "--redact", "-o", str(out),
        env={"PATH": _slow_path(tmp_path, pidfile), "TMPDIR": str(tmpdir),
             "PYTHONPATH": str(REPO)},
        netns=host,
    )
    try:
        _wait_for(pidfile)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == ExitCode.INTERRUPTED, stderr
    assert stdout.strip() == str(out)
    assert "interrupted: kept a partial bundle at" in stderr and str(out) in stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["partial"] is True
    assert list(tmpdir.iterdir()) == []  # the unredacted bundle is gone
    assert not _alive(int(pidfile.read_text()))  # the node command was killed


@pytest.mark.kernel
@pytest.mark.skipif(sshd_available() is not None, reason=str(sshd_available()))
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_live_collection_exits_130_saying_what_was_kept(
    tmp_path: Path, sig: signal.Signals
) -> None:
    hang = tmp_path / "hang.sh"
    started = tmp_path / "started"
    hang.write_text(f"touch {started}\nexec sleep 30\n")
    with Sshd(tmp_path / "sshd", extra_config=f"SetEnv BASH_ENV={hang}\n") as sshd:
        known = tmp_path / "known_hosts"
        known.write_text(sshd.known_hosts_line())
        ssh = ["--ssh", f"n1=root@127.0.0.1:{sshd.port}", "--ssh-key", str(sshd.client_key),
               "--ssh-known-hosts", str(known), "--target-timeout", "60"]
        env = {"KUBECONFIG": "/nonexistent", "TMPDIR": str(tmp_path), "PYTHONPATH": str(REPO)}
        out = tmp_path / "live"
        proc = _start("collect", *ssh, "-o", str(out), env=env)
        _wait_for(started)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == ExitCode.INTERRUPTED, stderr  # was 0, silently
        assert f"interrupted: kept a partial bundle at {out}" in stderr
        assert json.loads((out / "manifest.json").read_text())["collection"]["interrupted"]
        started.unlink()
        # trace/doctor collect into a temporary bundle: an interrupt stops before the
        # analysis, says nothing was kept, and leaves nothing in $TMPDIR.
        proc = _start("trace", "a", "b", *ssh, env=env)
        _wait_for(started)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == ExitCode.INTERRUPTED, stderr
    assert "interrupted: live collection stopped, no analysis; nothing kept" in stderr
    assert not list(tmp_path.glob("ambientctl-live-*"))


# --------------------------------------------------------------------------- write errors


@pytest.mark.kernel
def test_a_full_disk_says_what_failed_and_keeps_what_was_written(lab: Any, tmp_path: Path) -> None:
    # A private mount namespace with a 48 KiB tmpfs: the machine's mounts are untouched.
    disk = tmp_path / "disk"
    disk.mkdir()
    host = lab.netns_name("ambient-worker/host")
    out = disk / "b"
    script = (
        f"mount -t tmpfs -o size=48k tmpfs {disk} && "
        f"ip netns exec {host} {sys.executable} -m ambientctl collect --local "
        f"--node-name ambient-worker -q -o {out}; rc=$?; "
        f"ls -R {disk} > {tmp_path / 'listing'}; "
        f"cat {out}.partial/manifest.json > {tmp_path / 'manifest'} 2>/dev/null; exit $rc"
    )
    res = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == ExitCode.BUNDLE, res.stderr
    line = res.stderr.strip().splitlines()[0]
    assert line.startswith(f"error: cannot write {out}.partial/")
    assert "No space left on device" in line and f"kept in {out}.partial" in line
    assert "internal error" not in res.stderr and "Traceback" not in res.stderr
    listing = (tmp_path / "listing").read_text()
    assert "iptables-save.txt" in listing  # written before the disk filled: kept
