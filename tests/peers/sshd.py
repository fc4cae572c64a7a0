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
