"""The `local` transport: run argv vectors on this machine, optionally in another netns.

- Never a shell: `subprocess.Popen(list)`, stdin closed, `LC_ALL=C` so that tools print the
  same words everywhere.
- `start_new_session=True` puts each command (and anything it forks) in its own process
  group: a timeout kills the whole group, and a Ctrl-C on the terminal does not reach it
  (the runner decides what an interrupt means).
- A named netns is entered with `ip netns exec NAME` (which also bind-mounts the netns'
  /sys, so `ip -d` and `sysctl` see that namespace), a path with `nsenter --net=PATH --`.
  Both exec the command in place, so the child's exit code is the command's.
- A binary missing from PATH is reported as `not_found` before anything is started: the
  wrappers would only say `exec of "x" failed` with exit code 1/127.
- A namespace that does not exist raises `TransportError`: every command for that target
  would fail the same way, and the runner records them all as transport errors.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence

from ambientctl.bundle.layout import valid_name
from ambientctl.collectors.exec_outcome import (
    DEFAULT_MAX_OUTPUT,
    STDERR_CAP,
    CappedBuffer,
    Deadline,
)
from ambientctl.collectors.runner import Target
from ambientctl.collectors.transport import NetnsRef
from ambientctl.errors import TransportError, UsageError
from ambientctl.raw import ExecResult

NETNS_RUN_DIR = "/var/run/netns"
DRAIN_SECONDS = 2.0  # after a kill: how long the pipes may take to reach EOF


def descendants(root: int) -> list[int]:
    """Every live descendant of process `root` (children first), from /proc's ppid links.

    proc(5): field 4 of /proc/PID/stat is the parent pid; the command name (field 2) is
    in parentheses and may itself contain ")" or spaces, so the fields are read after the
    LAST ")".
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue  # exited meanwhile
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.append(child)
                todo.append(child)
    return out


def _env() -> dict[str, str]:
    """The child environment: the caller's PATH, a fixed locale, nothing else needed."""
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C"}
    return env


class LocalTransport:
    """Runs commands on this machine (see the module docstring for the guarantees)."""

    name = "local"

    def __init__(self, *, max_output: int | None = DEFAULT_MAX_OUTPUT) -> None:
        """`max_output`: bytes of one command's stdout kept (the rest is read and dropped,
        and the result says `truncated`); None keeps everything."""
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._closed = False
        self.max_output = max_output

    # ------------------------------------------------------------------ checks
    @staticmethod
    def _check_netns(netns: NetnsRef | None) -> None:
        if netns is None:
            return
        if netns.name is not None:
            path = os.path.join(NETNS_RUN_DIR, netns.name)
            if not os.path.exists(path):
                raise TransportError(
                    f"network namespace {netns.name!r} not found in {NETNS_RUN_DIR}",
                    hint="list them with `ip netns list`",
                )
        elif netns.path is not None and not os.path.exists(netns.path):
            raise TransportError(f"network namespace file {netns.path} does not exist")
        elif netns.pid is not None and not os.path.exists(f"/proc/{netns.pid}/ns/net"):
            raise TransportError(f"process {netns.pid} does not exist (no /proc/{netns.pid}/ns/net)")

    # ------------------------------------------------------------------ run
    def run(self, argv: Sequence[str], *, netns: NetnsRef | None, timeout: float) -> ExecResult:
        """Run `argv` (inside `netns` when given); see the module docstring."""
        if self._closed:
            raise TransportError("local transport closed (collection interrupted)")
        self._check_netns(netns)
        env = _env()
        if shutil.which(argv[0], path=env["PATH"]) is None:
            return ExecResult(
                exit_code=None,
                stdout=b"",
                stderr=f"{argv[0]}: command not found in PATH".encode(),
                duration_ms=0,
                not_found=True,
            )
        wrapper = netns.wrapper() if netns is not None else ()
        full = [*wrapper, *argv]
        if wrapper and shutil.which(wrapper[0], path=env["PATH"]) is None:
            raise TransportError(
                f"{wrapper[0]} is not installed: cannot enter network namespaces",
                hint="install iproute2 (ip) and util-linux (nsenter)",
            )
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                full,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise TransportError(f"cannot start {full[0]}: {exc.strerror or exc}") from exc
        with self._lock:
            self._running.add(proc)
        out, err = CappedBuffer(self.max_output), CappedBuffer(STDERR_CAP)
        try:
            timed_out = self._capture(proc, out, err, Deadline(timeout))
        finally:
            with self._lock:
                self._running.discard(proc)
        duration_ms = int((time.monotonic() - start) * 1000)
        return ExecResult(
            exit_code=proc.returncode,
            stdout=out.getvalue(),
            stderr=err.getvalue(),
            duration_ms=duration_ms,
            timed_out=timed_out,
            truncated=out.truncated,
        )

    def _capture(
        self,
        proc: subprocess.Popen[bytes],
        out: CappedBuffer,
        err: CappedBuffer,
        deadline: Deadline,
    ) -> bool:
        """Read both pipes into capped buffers until EOF and exit, or the deadline (then
        kill the tree and drain for at most DRAIN_SECONDS); True when the deadline hit.

        Not `communicate()`: it holds all output in memory, and after a kill it waits for
        EOF from whatever still holds the pipes, for ever (see `_kill_tree`).
        """
        assert proc.stdout is not None and proc.stderr is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)

        def pump(limit: Deadline) -> None:
            while sel.get_map() and not limit.expired():
                for key, _ in sel.select(limit.remaining()):
                    chunk = os.read(key.fd, 1 << 16)
                    if chunk:
                        key.data.append(chunk)
                    else:
                        sel.unregister(key.fileobj)

        timed_out = False
        try:
            pump(deadline)
            if sel.get_map():
                timed_out = True
            else:
                try:  # pipes closed; the process may still run (it closed its stdout)
                    proc.wait(timeout=max(deadline.remaining(), 0.001))
                except subprocess.TimeoutExpired:
                    timed_out = True
            if timed_out:
                self._kill_tree(proc)
                pump(Deadline(DRAIN_SECONDS))  # an escaped process may hold them for ever
        finally:
            sel.close()
            proc.stdout.close()
            proc.stderr.close()
        proc.wait()
        return timed_out

    @staticmethod
    def netns_inode(netns: NetnsRef | None) -> int | None:
        """The inode of `netns` (what `stat -L -c %i` prints on its nsfs file): local
        collection has no batch, and the file is right here (None: gone or unreadable)."""
        if netns is None or (netns.name is None and netns.path is None and netns.pid is None):
            path = "/proc/self/ns/net"
        elif netns.name is not None:
            path = os.path.join(NETNS_RUN_DIR, netns.name)
        elif netns.path is not None:
            path = netns.path
        else:
            path = f"/proc/{netns.pid}/ns/net"
        try:
            return os.stat(path).st_ino
        except OSError:
            return None

    @staticmethod
    def _kill_group(proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the command's whole process group (it leads its own session)."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    @classmethod
    def _kill_tree(cls, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the command's process group AND every descendant still linked to it.

        A descendant that called setsid(2) (e.g. `setsid cmd &`) has left the group that
        `killpg` reaches, yet still holds the output pipes: without this it outlives the
        timeout and `communicate()` waits for its EOF forever (cpython bpo-31935).
        """
        tree = descendants(proc.pid)
        cls._kill_group(proc)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        """Kill whatever still runs (an interrupted collection) and refuse new commands."""
        self._closed = True
        with self._lock:
            running = list(self._running)
        for proc in running:
            self._kill_tree(proc)


# --------------------------------------------------------------------------- planning


def netns_ref(value: str) -> NetnsRef:
    """`--pod`/`--targets` netns syntax: a path when it contains "/", else a netns name.

    Names are checked against DNS-1123 (they reach an argv); paths must be absolute.
    """
    if "/" in value:
        if not value.startswith("/"):
            raise UsageError(f"network namespace path {value!r} must be absolute")
        return NetnsRef(path=os.path.normpath(value))
    if not valid_name(value):
        raise UsageError(
            f"invalid network namespace name {value!r}",
            hint="pass a name listed by `ip netns list`, or an absolute path",
        )
    return NetnsRef(name=value)


def parse_pod_option(value: str) -> tuple[NetnsRef, str, str]:
    """`NETNS=namespace/pod` -> (netns, namespace, pod)."""
    netns, sep, ref = value.partition("=")
    namespace, slash, pod = ref.partition("/")
    if not sep or not slash or not netns or not namespace or not pod or "/" in pod:
        raise UsageError(
            f"--pod {value!r}: expected NETNS=NAMESPACE/POD",
            hint="e.g. --pod cni-1234=default/sleep-7b85956664-z6qh7",
        )
    return netns_ref(netns), namespace, pod


def targets_from_document(doc: object, *, source: str) -> list[Target]:
    """Targets from a `--targets` JSON document (several emulated nodes on one machine).

    Shape: {"nodes": [{"name": N, "host_netns": NETNS | null,
                       "pods": [{"namespace": NS, "name": P, "netns": NETNS,
                                 "ztunnel": true}]}]}
    `host_netns` null (or absent) means the current network namespace. `ztunnel` (optional,
    default false) marks the node's ztunnel pod: besides its netns dump, its admin
    `config_dump` is read from inside its netns (one per node).
    """
    def bad(why: str) -> UsageError:
        return UsageError(f"{source}: {why}", hint='expected {"nodes": [{"name": ..., ...}]}')

    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list):
        raise bad('no "nodes" list')
    targets: list[Target] = []
    zt_nodes: list[str] = []
    current_used = False
    for i, node in enumerate(doc["nodes"]):
        if not isinstance(node, dict) or not isinstance(node.get("name"), str):
            raise bad(f"nodes[{i}] has no name")
        host = node.get("host_netns")
        if host is None:
            if current_used:
                raise bad("only one node may use the current network namespace")
            current_used = True
            ref = NetnsRef()
        elif isinstance(host, str):
            ref = netns_ref(host)
        else:
            raise bad(f"nodes[{i}].host_netns must be a string or null")
        targets.append(Target.node_target(node["name"], ref))
        pods = node.get("pods", [])
        if not isinstance(pods, list):
            raise bad(f"nodes[{i}].pods must be a list")
        for j, pod in enumerate(pods):
            if not isinstance(pod, dict) or not all(
                isinstance(pod.get(k), str) for k in ("namespace", "name", "netns")
            ):
                raise bad(f"nodes[{i}].pods[{j}] needs namespace, name and netns strings")
            ref = netns_ref(pod["netns"])
            targets.append(Target.pod_target(node["name"], pod["namespace"], pod["name"], ref))
            ztunnel = pod.get("ztunnel", False)
            if not isinstance(ztunnel, bool):
                raise bad(f"nodes[{i}].pods[{j}].ztunnel must be true or false")
            if ztunnel:
                if zt_nodes.count(node["name"]):
                    raise bad(f"nodes[{i}] has two ztunnel pods; a node runs one")
                zt_nodes.append(node["name"])
                targets.append(
                    Target.ztunnel_target(node["name"], pod["namespace"], pod["name"], ref)
                )
    if not targets:
        raise bad("no targets")
    return targets
