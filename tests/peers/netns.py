"""Network-namespace helpers for the test peers: sockets inside a netns, a loopback bridge.

A socket belongs to the network namespace its creating thread was in when `socket()`
ran, and keeps it for life (network_namespaces(7)). `setns(2)` with CLONE_NEWNET changes
only the calling thread's namespace, so a short-lived helper thread can create a socket
inside an emulated node's namespace without moving the rest of the test process.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from contextlib import suppress

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def socket_in_netns(netns: str, family: int = socket.AF_INET) -> socket.socket:
    """A fresh TCP socket that lives in the named netns (/var/run/netns/NAME)."""
    result: dict[str, object] = {}

    def work() -> None:
        try:
            with open(f"/var/run/netns/{netns}", "rb") as fh:
                _setns(fh.fileno())
            result["sock"] = socket.socket(family, socket.SOCK_STREAM)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = exc

    # The thread ends right after; its (changed) netns dies with it.
    t = threading.Thread(target=work, name=f"setns-{netns}")
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["sock"]  # type: ignore[return-value]


def connect_in_netns(netns: str, host: str, port: int, timeout: float = 5.0) -> socket.socket:
    """Connect to host:port as seen from inside `netns`."""
    sock = socket_in_netns(netns)
    sock.settimeout(timeout)
    try:
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    sock.settimeout(None)
    return sock


class LoopbackBridge:
    """Listen on 127.0.0.1:<free> in the test's own netns, forward each connection to
    host:port inside `netns`. This is how a client in the root namespace reaches a server
    that only listens on the loopback of an emulated node (no link or route is added to
    any namespace)."""

    def __init__(self, netns: str, port: int, host: str = "127.0.0.1") -> None:
        self.netns, self.target = netns, (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="bridge")
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = connect_in_netns(self.netns, *self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed.set()
        with suppress(OSError):
            self._listener.close()
        with self._lock:
            for s in self._socks:
                with suppress(OSError):
                    s.close()
            self._socks.clear()

    def __enter__(self) -> LoopbackBridge:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# The script that gives a process the view of ONE emulated node: its network namespace
# and a /var/run/netns that lists only that node's pod namespaces (as on a real kind node
# or VM). `ip netns exec NODE` already put us in a fresh mount namespace whose mounts are
# slaves of the machine's (ip-netns(8)), so these bind mounts never show outside it.
_NODE_VIEW = r"""d=$1; shift
for f in "$d"/*; do
  [ -e "$f" ] || continue
  mount --bind "/var/run/netns/${f##*/}" "$f" || exit 125
done
mount --rbind "$d" /var/run/netns || exit 125
exec "$@"
"""


class NodeView:
    """One emulated node: its host netns and the pod netns that live "on" it.

    `prefix()` is the argv prefix that runs a command as if on that node: in the node's
    netns, with /var/run/netns holding exactly `pod_netns` (placeholder files under
    `workdir`, bind-mounted inside the command's private mount namespace only).
    """

    def __init__(self, name: str, host_netns: str, pod_netns: list[str], workdir: str) -> None:
        self.name, self.host_netns = name, host_netns
        self.pod_netns = list(pod_netns)
        self.dir = os.path.join(workdir, f"netns-{name}")
        os.makedirs(self.dir, exist_ok=True)
        for pod in self.pod_netns:
            open(os.path.join(self.dir, pod), "a").close()  # a mount point for the bind

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.host_netns, "sh", "-c", _NODE_VIEW, "sh", self.dir]


def node_views(lab_targets: dict[str, object], workdir: str) -> dict[str, NodeView]:
    """NodeViews from a `SeedLab.targets()` document (node name -> view)."""
    views = {}
    for node in lab_targets["nodes"]:  # type: ignore[index]
        views[node["name"]] = NodeView(
            node["name"], node["host_netns"], [p["netns"] for p in node["pods"]], workdir
        )
    return views


# An istio-cni agent pod that is NOT hostNetwork (Istio >= 1.26 default): its exec runs in
# the agent's OWN netns; the host's /proc is visible at a mount point (a real agent has
# /host/proc): `<hostproc>/1/ns/net` is the node's netns (bind-mounted in the exec's
# private mount namespace only), and /var/run/netns lists the node's pods (NodeView).
_AGENT_VIEW = r"""f=$1 n=$2; shift 2
mount --bind "/var/run/netns/$n" "$f" || exit 125
exec "$@"
"""


class AgentView:
    """The view of a non-hostNetwork istio-cni agent pod on one emulated node.

    `host_proc` is the directory that stands for the agent's /host/proc (the same path on
    every node: each exec binds its own node's netns there, privately)."""

    def __init__(self, node: NodeView, agent_netns: str, host_proc: str) -> None:
        self.node, self.agent_netns, self.host_proc = node, agent_netns, host_proc
        os.makedirs(os.path.join(host_proc, "1", "ns"), exist_ok=True)
        open(os.path.join(host_proc, "1", "ns", "net"), "a").close()  # the bind's mount point

    def prefix(self) -> list[str]:
        node_view = ["sh", "-c", _NODE_VIEW, "sh", self.node.dir]
        return [
            "ip", "netns", "exec", self.agent_netns, "sh", "-c", _AGENT_VIEW, "sh",
            os.path.join(self.host_proc, "1", "ns", "net"), self.node.host_netns, *node_view,
        ]


# An istio-cni agent pod that has the host's /proc but NOT the host's /var/run/netns
# (issue 8 §1): every PID file under `<hostproc>` is first bound to the node's netns (the
# host's own processes, kernel threads), then each listed PID to the pod netns its
# process lives in - all in the exec's private mount namespace only.
_PROC_AGENT_VIEW = r"""p=$1 h=$2; shift 2
for f in "$p"/[0-9]*/ns/net; do
  mount --bind "/var/run/netns/$h" "$f" || exit 125
done
while [ "$1" != "--" ]; do
  mount --bind "/var/run/netns/$2" "$p/$1/ns/net" || exit 125
  shift 2
done
shift
exec "$@"
"""


class ProcAgentView:
    """A non-hostNetwork istio-cni agent on one emulated node that sees the host's
    processes under `host_proc` and no netns directory at all.

    `pids`: PID -> the lab netns its process lives in (several PIDs may share one, as the
    processes of one pod do). PID files that exist under `host_proc` for other nodes are
    this node's own processes here (bound to its netns)."""

    def __init__(
        self, host_netns: str, agent_netns: str, host_proc: str, pids: dict[int, str]
    ) -> None:
        self.host_netns, self.agent_netns, self.host_proc = host_netns, agent_netns, host_proc
        self.pids = dict(pids)
        for pid in (1, *self.pids):
            os.makedirs(os.path.join(host_proc, str(pid), "ns"), exist_ok=True)
            open(os.path.join(host_proc, str(pid), "ns", "net"), "a").close()

    def prefix(self) -> list[str]:
        pairs = [x for pid, ns in sorted(self.pids.items()) for x in (str(pid), ns)]
        return [
            "ip", "netns", "exec", self.agent_netns, "sh", "-c", _PROC_AGENT_VIEW, "sh",
            self.host_proc, self.host_netns, *pairs, "--",
        ]
