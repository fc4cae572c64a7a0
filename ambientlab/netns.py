"""Network-namespace primitives for the lab: create, wire, run inside, always tear down.

Safety rules this module enforces (the workplace's kernel rules):
- Every namespace is named `<lab id>-<suffix>` where the lab id is `amb` + 6 random hex
  digits, and is recorded in a registry file `/run/ambientlab/<lab id>.json` BEFORE it is
  created. That registry is the marker `python -m ambientlab.cleanup` trusts: it never
  touches a namespace that no registry lists, nor a lab whose owner process still runs.
- No command ever runs in the machine's root network namespace: everything goes through
  `ip -n NAME ...` (iproute2 switches netns first) or `ip netns exec NAME ...`.
- `Lab.teardown()` kills every process inside the lab's namespaces (`ip netns pids`),
  deletes the namespaces and the work directory, and is idempotent; callers use it from
  `finally`/`__exit__`, so a build that fails halfway still leaves nothing behind.

Every kernel command is appended to `commands.log` in the work directory (one shell-quoted
line each), so what the lab did can be read and replayed by hand.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Self

REGISTRY_DIR = Path("/run/ambientlab")
NETNS_DIR = Path("/var/run/netns")
PREFIX = "amb"


class LabError(RuntimeError):
    """A kernel command of the lab failed (message names the command and its stderr)."""


REPO_ROOT = Path(__file__).resolve().parents[1]


def repo_env() -> dict[str, str]:
    """The environment for lab processes (`python -m ambientlab...`, `-m ambientctl`): this
    checkout first on PYTHONPATH, whatever was there kept after it."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"]
                                          if env.get("PYTHONPATH") else "")
    return env


def new_lab_id() -> str:
    """`amb` + 6 random hex digits: unique enough, short enough for netns names."""
    return PREFIX + secrets.token_hex(3)


class Netns:
    """One named network namespace of a lab."""

    def __init__(self, lab: Lab, name: str) -> None:
        self.lab = lab
        self.name = name

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`ip -n NAME ARGS...`."""
        return self.lab.run(["ip", "-n", self.name, *args], check=check)

    def ip_batch(self, lines: Iterable[str]) -> None:
        """Several `ip` commands in one process: `ip -n NAME -batch -` (fast, stops at error)."""
        text = "".join(line.rstrip("\n") + "\n" for line in lines)
        if text:
            self.lab.run(["ip", "-n", self.name, "-batch", "-"], stdin=text)

    def exec(
        self, *argv: str, check: bool = True, stdin: str | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """`ip netns exec NAME ARGV...`."""
        return self.lab.run(
            ["ip", "netns", "exec", self.name, *argv], check=check, stdin=stdin, timeout=timeout
        )

    def sysctl(self, settings: Sequence[tuple[str, str | int]]) -> None:
        """Set sysctls inside this namespace with one `sysctl -q -w k=v ...`."""
        if settings:
            self.exec("sysctl", "-q", "-w", *(f"{k}={v}" for k, v in settings))

    def pids(self) -> list[int]:
        """Processes whose network namespace is this one (`ip netns pids`)."""
        res = self.lab.run(["ip", "netns", "pids", self.name], check=False, log=False)
        return [int(p) for p in res.stdout.split() if p.isdigit()]


class Lab:
    """A set of namespaces with a registry, a work directory and guaranteed teardown."""

    def __init__(self, lab_id: str | None = None) -> None:
        self.id = lab_id or new_lab_id()
        if not self.id.startswith(PREFIX) or not self.id.replace("-", "").isalnum():
            raise LabError(f"lab id {self.id!r} must start with {PREFIX!r} and be alphanumeric")
        self.workdir = Path(tempfile.mkdtemp(prefix=f"ambientlab-{self.id}-"))
        self.namespaces: dict[str, Netns] = {}
        self.processes: list[subprocess.Popen[bytes]] = []
        self._closed = False
        self._commands = open(self.workdir / "commands.log", "a", encoding="utf-8")  # noqa: SIM115
        REGISTRY_DIR.mkdir(parents=True, exist_ok=True)
        self.registry = REGISTRY_DIR / f"{self.id}.json"
        if self.registry.exists():
            raise LabError(f"lab id {self.id} already registered in {self.registry}")
        self._save_registry()

    # ------------------------------------------------------------------ registry
    def _save_registry(self) -> None:
        doc = {
            "id": self.id,
            "owner_pid": os.getpid(),
            "owner_start": _proc_start(os.getpid()),
            "workdir": str(self.workdir),
            "netns": sorted(ns.name for ns in self.namespaces.values()),
            "pids": sorted(p.pid for p in self.processes),
        }
        tmp = self.registry.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        os.replace(tmp, self.registry)

    # ------------------------------------------------------------------ running
    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        stdin: str | None = None,
        timeout: float = 30,
        log: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run one command (never a shell); raise `LabError` with its stderr on failure."""
        if log and not self._commands.closed:
            self._commands.write(shlex.join(argv) + "\n")
            if stdin:
                for line in stdin.splitlines():
                    self._commands.write(f"#   {line}\n")
        res = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and res.returncode != 0:
            raise LabError(
                f"`{shlex.join(argv)}` failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}"
            )
        return res

    def add_netns(self, suffix: str) -> Netns:
        """Create `<lab id>-<suffix>` (registered first, so a crash cannot orphan it)."""
        if self._closed:
            raise LabError("lab already torn down")
        name = f"{self.id}-{suffix}"
        ns = Netns(self, name)
        self.namespaces[suffix] = ns
        self._save_registry()
        self.run(["ip", "netns", "add", name])
        # A new netns has `lo` down; every real pod/node has it up.
        ns.ip("link", "set", "lo", "up")
        return ns

    def spawn(self, ns: Netns, argv: Sequence[str], **popen: object) -> subprocess.Popen[bytes]:
        """Start a long-running process inside `ns` (own session; killed at teardown)."""
        full = ["ip", "netns", "exec", ns.name, *argv]
        self._commands.write(shlex.join(full) + " &\n")
        proc = subprocess.Popen(full, start_new_session=True, **popen)  # type: ignore[call-overload]
        self.processes.append(proc)
        self._save_registry()
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 2.0) -> None:
        """Terminate one spawned process (its whole process group)."""
        _kill_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
        for stream in (proc.stdout, proc.stderr, proc.stdin):
            if stream is not None:
                stream.close()
        if proc in self.processes:
            self.processes.remove(proc)

    # ------------------------------------------------------------------ teardown
    def teardown(self) -> None:
        """Kill processes, delete namespaces, remove the work dir and the registry entry."""
        if self._closed:
            return
        self._closed = True
        for proc in list(self.processes):
            with contextlib.suppress(Exception):
                self.stop(proc, timeout=1.0)
        for ns in self.namespaces.values():
            for pid in ns.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for ns in self.namespaces.values():
            if (NETNS_DIR / ns.name).exists():
                self.run(["ip", "netns", "del", ns.name], check=False)
        with contextlib.suppress(Exception):
            self._commands.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.registry.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _proc_start(pid: int) -> str | None:
    """Start time of `pid` in clock ticks (field 22 of /proc/PID/stat): detects pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def owner_alive(doc: dict[str, object]) -> bool:
    """Is the process that registered a lab still the same running process?"""
    pid = doc.get("owner_pid")
    if not isinstance(pid, int):
        return False
    start = _proc_start(pid)
    return start is not None and start == doc.get("owner_start")


def remove_registered(doc: dict[str, object]) -> list[str]:
    """Remove what one registry document lists (for cleanup of crashed runs).

    Only namespaces whose names carry the registered lab id are touched.
    """
    lab_id = str(doc.get("id", ""))
    removed: list[str] = []
    if not lab_id.startswith(PREFIX):
        return removed
    names = [n for n in doc.get("netns", []) or [] if isinstance(n, str) and n.startswith(lab_id + "-")]  # type: ignore[union-attr]
    for name in names:
        res = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, check=False)
        for pid in res.stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
    for name in names:
        if (NETNS_DIR / name).exists():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
            removed.append(name)
    workdir = doc.get("workdir")
    if isinstance(workdir, str) and Path(workdir).name.startswith(f"ambientlab-{lab_id}-"):
        shutil.rmtree(workdir, ignore_errors=True)
    return removed


def wait_until(predicate: object, timeout: float, interval: float = 0.02) -> bool:
    """Poll `predicate()` until true or `timeout` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return bool(predicate())  # type: ignore[operator]
