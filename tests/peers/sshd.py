"""A real OpenSSH `sshd` for tests: throwaway keys, loopback only, killed at teardown.

`Sshd(workdir, netns=None)` writes a host key, a client key and an `sshd_config` under
`workdir`, and runs `/usr/sbin/sshd -D -e -f CONFIG` (foreground, log to stderr). With
`netns`, sshd runs inside that emulated node's network namespace (`ip netns exec`, or
`prefix`, e.g. a `NodeView` prefix that also gives it the node's /var/run/netns), so a
session's commands see the node's interfaces, rules and routes exactly as an ssh session
on a real node would; a `LoopbackBridge` makes it reachable at 127.0.0.1:`port` from the
test's own namespace. Without `netns` it listens on 127.0.0.1:`port` directly (a jump host).

Needs root (sshd's privilege separation) and the Debian `openssh-server` package.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from tests.peers.netns import LoopbackBridge

SSHD = "/usr/sbin/sshd"


def sshd_available() -> str | None:
    """None when a test sshd can run here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "needs root (sshd privilege separation, network namespaces)"
    if not os.path.exists(SSHD) or not shutil.which("ssh-keygen"):
        return "OpenSSH server not installed (apt-get install openssh-server)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, kind: str = "ed25519") -> Path:
    """Write an unencrypted key pair at path / path.pub (ssh-keygen)."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "ambientctl-test", "-f", str(path)],
        check=True,
    )
    return path


class Sshd:
    """One running sshd. `client_key` logs in as root; `host_pub` is its host public key."""

    def __init__(
        self,
        workdir: Path,
        *,
        netns: str | None = None,
        prefix: list[str] | None = None,
        client_pub: Path | None = None,
        extra_config: str = "",
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(workdir, 0o700)
        self.workdir = workdir
        self.netns = netns
        self.host_key = keygen(workdir / "ssh_host_ed25519_key")
        if client_pub is None:
            self.client_key: Path | None = keygen(workdir / "id_client")
            client_pub = workdir / "id_client.pub"
        else:
            self.client_key = None
        (workdir / "authorized_keys").write_bytes(client_pub.read_bytes())
        os.chmod(workdir / "authorized_keys", 0o600)
        self.listen_port = 2222 if netns else _free_port()
        config = workdir / "sshd_config"
        config.write_text(
            f"Port {self.listen_port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {self.host_key}\n"
            f"PidFile {workdir}/sshd.pid\n"
            f"AuthorizedKeysFile {workdir}/authorized_keys\n"
            "PermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "AllowTcpForwarding yes\n"
            "MaxSessions 64\n"
            "MaxStartups 100:30:200\n"
            "LogLevel INFO\n" + extra_config
        )
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privsep chroot
        argv = [SSHD, "-D", "-e", "-f", str(config)]
        if netns:
            # The emulated node's loopback must be up for sshd to bind 127.0.0.1.
            subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
            argv = [*(prefix or ["ip", "netns", "exec", netns]), *argv]
        self.log: list[str] = []
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        ready = threading.Event()
        threading.Thread(target=self._read_log, args=(ready,), daemon=True).start()
        if not ready.wait(10) or self.proc.poll() is not None:
            self.close()
            raise RuntimeError("sshd did not start: " + " | ".join(self.log[-5:]))
        self.bridge = LoopbackBridge(netns, self.listen_port) if netns else None
        self.port = self.bridge.port if self.bridge else self.listen_port
        self.host_pub = (workdir / "ssh_host_ed25519_key.pub").read_text().split()[:2]

    def _read_log(self, ready: threading.Event) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip())
            if "Server listening on" in line:
                ready.set()
        ready.set()

    def known_hosts_line(self, host: str = "127.0.0.1", key: list[str] | None = None) -> str:
        """The known_hosts entry OpenSSH would record for this server."""
        name = host if self.port == 22 else f"[{host}]:{self.port}"
        kind, blob = key or self.host_pub
        return f"{name} {kind} {blob}\n"

    def close(self) -> None:
        if getattr(self, "bridge", None) is not None:
            self.bridge.close()  # type: ignore[union-attr]
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def __enter__(self) -> Sshd:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def wait_port(port: int, timeout: float = 5.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class StallingSshServer:
    """An SSH server (paramiko, server side) that opens sessions and never answers exec.

    OpenSSH always answers an exec request; a wedged node's sshd (its child stuck before
    replying, e.g. on a hung PAM or NSS lookup) does not. This peer speaks the real SSH
    protocol up to that point: key exchange, any public key accepted, session channels
    opened, and then every `exec` request is left unanswered until `close()`.
    """

    def __init__(self, workdir: Path) -> None:
        import paramiko

        workdir.mkdir(parents=True, exist_ok=True)
        self.host_key_path = keygen(workdir / "stall_host_key")
        self.host_key = paramiko.Ed25519Key.from_private_key_file(str(self.host_key_path))
        self.client_key = keygen(workdir / "stall_client")
        self._stop = threading.Event()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.exec_requests = 0
        self._transports: list[object] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.host_key.get_name()} {self.host_key.get_base64()}\n"

    def _accept(self) -> None:
        import paramiko

        peer = self

        class Server(paramiko.ServerInterface):
            def get_allowed_auths(self, username: str) -> str:
                return "publickey"

            def check_auth_publickey(self, username: str, key: object) -> int:
                return paramiko.AUTH_SUCCESSFUL

            def check_channel_request(self, kind: str, chanid: int) -> int:
                return paramiko.OPEN_SUCCEEDED

            def check_channel_exec_request(self, channel: object, command: bytes) -> bool:
                peer.exec_requests += 1
                peer._stop.wait()  # never answer (until the peer is closed)
                return False

        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            t = paramiko.Transport(conn)
            t.add_server_key(self.host_key)
            self._transports.append(t)
            t.start_server(server=Server())

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        for t in self._transports:
            with contextlib.suppress(Exception):
                t.close()  # type: ignore[attr-defined]

    def __enter__(self) -> StallingSshServer:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
