"""SSH transport (paramiko): run catalogue commands on a node over one SSH connection.

Host keys are checked against known_hosts, always:
- default: an unknown host is refused (paramiko's RejectPolicy semantics, the safe
  default Bandit B507 / CodeQL CWE-295 ask for);
- `--ssh-accept-new`: OpenSSH's `StrictHostKeyChecking=accept-new` — an unknown key is
  recorded (appended to known_hosts, created 0600 if missing) and accepted;
- a key that differs from the recorded one is ALWAYS refused, in every mode (paramiko
  raises BadHostKeyException before authentication, whatever the policy).

An SSH "exec" request carries one command *string* that the remote login shell parses
(RFC 4254 §6.5), so argv is joined with `shlex.join`: every element is quoted, nothing
is interpolated. Optional `sudo -n --` (non-interactive: a password prompt fails fast
instead of hanging). A jump host is reached first and the node through a `direct-tcpip`
channel (RFC 4254 §7.2), the same as `ssh -J`; both hops are host-key checked.

paramiko is imported only when a connection is made.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shlex
import threading
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ambientctl.bundle.layout import valid_name
from ambientctl.collectors.exec_outcome import (
    DEFAULT_MAX_OUTPUT,
    STDERR_CAP,
    CappedBuffer,
    Deadline,
    missing_binary,
)
from ambientctl.collectors.transport import NetnsRef
from ambientctl.errors import TransportError, UsageError
from ambientctl.raw import ExecResult

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
CONNECT_TIMEOUT = 15.0

_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$", re.IGNORECASE)
_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_IPV6 = re.compile(r"^[0-9A-Fa-f:.]+$")


@dataclass(frozen=True, slots=True)
class SshEndpoint:
    """Where one node's sshd is, and how to log in."""

    node: str  # the Kubernetes node name this host is
    host: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    sudo: bool = False
    jump: SshEndpoint | None = None

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{user}{host}:{self.port}"

    def known_hosts_name(self) -> str:
        """The name OpenSSH and paramiko look the host up by in known_hosts."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def _check_host(host: str, where: str) -> str:
    if _HOST.match(host) or (":" in host and _IPV6.match(host)):
        return host
    raise UsageError(f"{where}: {host!r} is not a host name or IP address")


def _check_endpoint(ep: SshEndpoint, where: str) -> SshEndpoint:
    _check_host(ep.host, where)
    if not 0 < ep.port < 65536:
        raise UsageError(f"{where}: port {ep.port} is out of range")
    if ep.user is not None and not _USER.match(ep.user):
        raise UsageError(f"{where}: {ep.user!r} is not a valid user name")
    if not valid_name(ep.node):
        raise UsageError(
            f"{where}: node name {ep.node!r} is not a valid Kubernetes node name",
            hint="name the node explicitly: --ssh NODE=user@host:port",
        )
    return ep


def _parse_hostport(text: str, where: str) -> tuple[str | None, str, int | None]:
    user, _, rest = text.rpartition("@")
    if rest.startswith("["):  # [v6addr]:port
        host, _, tail = rest[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else None
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    else:
        host, port = rest, None
    try:
        port_num = int(port) if port else None
    except ValueError:
        raise UsageError(f"{where}: port {port!r} is not a number") from None
    return (user or None), host, port_num


def parse_ssh_spec(
    spec: str,
    *,
    user: str | None = None,
    key_file: str | None = None,
    sudo: bool = False,
    jump: str | None = None,
) -> list[SshEndpoint]:
    """`--ssh` value: comma-separated `[NODE=][USER@]HOST[:PORT]` (IPv6 as `[addr]:port`).

    Without `NODE=`, the host name must itself be the Kubernetes node name.
    """
    jump_ep = None
    if jump:
        ju, jh, jp = _parse_hostport(jump, "--ssh jump host")
        jump_ep = _check_endpoint(
            SshEndpoint(node="jump", host=jh, port=jp or 22, user=ju or user, key_file=key_file),
            "--ssh jump host",
        )
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        node, eq, target = item.partition("=")
        if not eq:
            node, target = "", item
        u, host, port = _parse_hostport(target, f"--ssh {item}")
        ep = SshEndpoint(
            node=node or host,
            host=host,
            port=port or 22,
            user=u or user,
            key_file=key_file,
            sudo=sudo,
            jump=jump_ep,
        )
        out.append(_check_endpoint(ep, f"--ssh {item}"))
    if not out:
        raise UsageError("--ssh: no host given", hint="--ssh NODE=user@host[:port],...")
    return out


def load_inventory(path: str) -> list[SshEndpoint]:
    """Read an inventory file (TOML), documented in docs/live-collection.md:

    [defaults]            # optional: user, port, key, sudo, jump
    user = "core"
    key = "~/.ssh/id_ed25519"
    jump = "bastion"      # name of a [jump.NAME] table, or "user@host:port"
    [jump.bastion]
    host = "203.0.113.7"
    [[nodes]]
    name = "worker-1"     # Kubernetes node name
    host = "10.0.0.11"    # defaults to name
    """
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise UsageError(f"--ssh-inventory {path}: cannot read ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--ssh-inventory {path}: not valid TOML ({exc})") from exc
    defaults: dict[str, Any] = doc.get("defaults", {})
    jumps: dict[str, Any] = doc.get("jump", {})

    def jump_of(ref: Any) -> SshEndpoint | None:
        if not ref:
            return None
        if isinstance(ref, str) and ref in jumps:
            j = jumps[ref]
            ep = SshEndpoint(
                node="jump",
                host=str(j.get("host", ref)),
                port=int(j.get("port", 22)),
                user=j.get("user", defaults.get("user")),
                key_file=j.get("key", defaults.get("key")),
            )
        else:
            u, h, p = _parse_hostport(str(ref), f"{path}: jump")
            ep = SshEndpoint(
                node="jump",
                host=h,
                port=p or 22,
                user=u or defaults.get("user"),
                key_file=defaults.get("key"),
            )
        return _check_endpoint(ep, f"{path}: jump host")

    out = []
    for i, node in enumerate(doc.get("nodes", [])):
        where = f"{path}: nodes[{i}]"
        if "name" not in node:
            raise UsageError(f"{where}: `name` (the Kubernetes node name) is required")
        ep = SshEndpoint(
            node=str(node["name"]),
            host=str(node.get("host", node["name"])),
            port=int(node.get("port", defaults.get("port", 22))),
            user=node.get("user", defaults.get("user")),
            key_file=node.get("key", defaults.get("key")),
            sudo=bool(node.get("sudo", defaults.get("sudo", False))),
            jump=jump_of(node.get("jump", defaults.get("jump"))),
        )
        out.append(_check_endpoint(ep, where))
    if not out:
        raise UsageError(f"--ssh-inventory {path}: no [[nodes]] entries")
    return out


# --------------------------------------------------------------------------- host keys


def _fingerprint(key: Any) -> str:
    return f"{key.get_name()} {key.fingerprint}"  # paramiko: "SHA256:..."


class _KnownHosts:
    """known_hosts shared by every connection of a run: read once, appended under a lock."""

    def __init__(self, path: str, accept_new: bool) -> None:
        self.path = os.path.expanduser(path)
        self.accept_new = accept_new
        self.lock = threading.Lock()

    revoked: frozenset[tuple[str, str]] = frozenset()  # (key type, base64) of @revoked keys

    def load_into(self, client: Any) -> None:
        """Put the file's plain host keys into `client` (never written back: paramiko's
        save_host_keys would drop what it does not understand), and remember the revoked
        keys for the policy (`is_revoked`). See `read_known_hosts` for the line rules."""
        if not os.path.exists(self.path):
            return
        try:
            with open(self.path, encoding="utf-8", errors="replace") as fh:
                plain, revoked = read_known_hosts(fh)
        except OSError as exc:
            raise TransportError(f"cannot read known_hosts {self.path}: {exc}") from exc
        self.revoked = revoked
        keys = client.get_host_keys()
        for names, key in plain:
            if (key.get_name(), key.get_base64()) in revoked:
                continue  # a revoked key is never "known", even when listed plainly too
            for name in names:
                keys.add(name, key.get_name(), key)

    def is_revoked(self, key: Any) -> bool:
        return (key.get_name(), key.get_base64()) in self.revoked

    def record(self, hostname: str, key: Any) -> None:
        """Append `hostname keytype base64`, exactly what OpenSSH's accept-new writes."""
        with self.lock:
            parent = os.path.dirname(self.path)
            if parent and not os.path.isdir(parent):
                os.makedirs(parent, mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as fh:
                fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


def read_known_hosts(lines: Any) -> tuple[list[tuple[list[str], Any]], frozenset[tuple[str, str]]]:
    """(plain entries as (host patterns, key), revoked keys) of a known_hosts file.

    The line format is sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT": an optional marker, host
    patterns, key type, base64 key, comment. Handled as OpenSSH does:
    - `@revoked`: the key "must not ever be accepted". It is refused for EVERY host here
      (OpenSSH refuses it for the hosts its pattern matches; `@revoked *` is the usual
      form): stricter, never weaker.
    - `@cert-authority`: the key is a CA that signs host CERTIFICATES. ambientctl does not
      verify certificates, so these lines are ignored, exactly as OpenSSH ignores them for a
      host presenting a plain key: a CA line never makes a plain key trusted.
    - a line that cannot be parsed (unknown key type, bad base64, too few fields) is
      skipped, as ssh(1) skips it; `#` comments and blank lines too.
    """
    import binascii

    import paramiko
    from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

    plain: list[tuple[list[str], Any]] = []
    revoked: set[tuple[str, str]] = set()
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        marker = None
        if line.startswith("@"):
            marker, _, line = line.partition(" ")
            line = line.strip()
        try:
            entry = HostKeyEntry.from_line(line, lineno)
        except (InvalidHostKey, paramiko.SSHException, binascii.Error, ValueError, TypeError):
            entry = None
        if entry is None or entry.key is None:
            continue
        if marker == "@revoked":
            revoked.add((entry.key.get_name(), entry.key.get_base64()))
        elif marker is None:
            plain.append((list(entry.hostnames), entry.key))
        # "@cert-authority" (and any unknown marker, which OpenSSH rejects): ignored
    return plain, frozenset(revoked)


def _policy(known: _KnownHosts, endpoint: SshEndpoint) -> Any:
    import paramiko

    class Policy(paramiko.MissingHostKeyPolicy):
        """Called by paramiko only for an UNKNOWN host (a changed key never gets here).

        A revoked key is never in the known set (`load_into`), so it always arrives here,
        before authentication: refused in every mode, and never recorded.
        """

        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            if known.is_revoked(key):
                raise TransportError(
                    f"ssh {endpoint}: host key of {hostname} ({_fingerprint(key)}) is marked "
                    f"@revoked in {known.path}; refusing to connect",
                    hint="the node's key was revoked on purpose: check the node before "
                    "trusting it again",
                )
            if known.accept_new:
                known.record(hostname, key)
                client.get_host_keys().add(hostname, key.get_name(), key)
                return
            raise TransportError(
                f"ssh {endpoint}: host key of {hostname} is not in {known.path} "
                f"({_fingerprint(key)}); refusing to connect",
                hint="verify the fingerprint and add it to known_hosts (ssh-keyscan), "
                "or pass --ssh-accept-new to record unknown keys on first contact",
            )

    return Policy()


# --------------------------------------------------------------------------- transport


class SshTransport:
    """One node over one SSH connection (channels are multiplexed, one per command)."""

    name = "ssh"

    def __init__(
        self,
        endpoint: SshEndpoint,
        *,
        known_hosts: str = DEFAULT_KNOWN_HOSTS,
        accept_new: bool = False,
        connect_timeout: float = CONNECT_TIMEOUT,
        known: _KnownHosts | None = None,
        max_output: int | None = DEFAULT_MAX_OUTPUT,
    ) -> None:
        self.endpoint = endpoint
        self.known = known or _KnownHosts(known_hosts, accept_new)
        self.connect_timeout = connect_timeout
        self.max_output = max_output  # stdout bytes kept per exec (CappedBuffer)
        self._lock = threading.Lock()
        self._clients: list[Any] = []  # [jump?, node]
        self._failed: TransportError | None = None
        self._closed = False

    # .................................................................. connection
    def _connect_one(self, ep: SshEndpoint, sock: Any = None) -> Any:
        import paramiko

        client = paramiko.SSHClient()
        self.known.load_into(client)
        client.set_missing_host_key_policy(_policy(self.known, ep))
        key_file = os.path.expanduser(ep.key_file) if ep.key_file else None
        try:
            client.connect(
                ep.host,
                port=ep.port,
                username=ep.user,
                key_filename=key_file,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                channel_timeout=self.connect_timeout,
                sock=sock,
                look_for_keys=key_file is None,
                allow_agent=key_file is None,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise TransportError(
                f"ssh {ep}: host key CHANGED for {ep.known_hosts_name()} "
                f"(known {_fingerprint(exc.expected_key)}, offered {_fingerprint(exc.key)}); "
                "refusing to connect",
                hint="if the node was legitimately reinstalled, remove the old entry with "
                f"`ssh-keygen -R '{ep.known_hosts_name()}' -f {self.known.path}`",
            ) from None
        except TransportError:
            client.close()
            raise
        except paramiko.AuthenticationException as exc:
            client.close()
            raise TransportError(
                f"ssh {ep}: authentication failed ({exc})",
                hint="check the user and key (--ssh-inventory: user, key)",
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            raise TransportError(
                f"ssh {ep}: cannot connect ({exc or type(exc).__name__})"
            ) from None
        return client

    def _client(self) -> Any:
        with self._lock:
            if self._closed:
                # closed by an interrupted collection: never reconnect behind its back
                raise TransportError(f"ssh {self.endpoint}: closed (collection interrupted)")
            if self._failed is not None:
                raise self._failed  # do not hammer an unreachable node once per command
            if self._clients:
                return self._clients[-1]
            ep = self.endpoint
            try:
                if ep.jump is not None:
                    jump = self._connect_one(ep.jump)
                    self._clients.append(jump)
                    try:
                        channel = jump.get_transport().open_channel(
                            "direct-tcpip",
                            (ep.host, ep.port),
                            ("127.0.0.1", 0),
                            timeout=self.connect_timeout,
                        )
                    except Exception as exc:  # noqa: BLE001 - paramiko ChannelException, SSHException
                        raise TransportError(
                            f"ssh {ep}: jump host {ep.jump} cannot reach {ep.host}:{ep.port} ({exc})"
                        ) from None
                    self._clients.append(self._connect_one(ep, sock=channel))
                else:
                    self._clients.append(self._connect_one(ep))
            except TransportError as exc:
                self._close_clients()
                self._failed = exc
                raise
            return self._clients[-1]

    # .................................................................. commands
    def command_line(self, argv: Sequence[str], netns: NetnsRef | None) -> str:
        """The exact string sent in the SSH exec request: every element shell-quoted."""
        prefix: tuple[str, ...] = ("sudo", "-n", "--") if self.endpoint.sudo else ()
        wrapper = netns.wrapper() if netns is not None else ()
        return shlex.join((*prefix, *wrapper, *argv))

    def describe_wrapper(self, netns: NetnsRef) -> tuple[str, ...]:
        """How a command reaches its netns, for the manifest."""
        sudo = ("sudo", "-n", "--") if self.endpoint.sudo else ()
        return ("ssh", str(self.endpoint), *sudo, *netns.wrapper())

    def run(self, argv: Sequence[str], *, netns: NetnsRef | None, timeout: float) -> ExecResult:
        deadline = Deadline(timeout)
        client = self._client()
        try:
            chan = client.get_transport().open_session(
                timeout=max(0.001, min(deadline.remaining(), self.connect_timeout))
            )
        except Exception as exc:  # noqa: BLE001 - the connection died under us
            if deadline.expired():
                return ExecResult(None, b"", b"", deadline.elapsed_ms(), timed_out=True)
            raise TransportError(f"ssh {self.endpoint}: exec failed ({exc})") from None
        # paramiko's exec_command waits for the server's answer to the exec request with
        # no timeout at all (Channel._wait_for_event: event.wait()); a server that accepts
        # the session and never answers would hold this thread forever. Closing the
        # channel sets that event, so a watchdog closes it at the deadline.
        watchdog = threading.Timer(deadline.remaining(), chan.close)
        watchdog.daemon = True
        watchdog.start()
        try:
            chan.exec_command(self.command_line(argv, netns))
        except Exception as exc:  # noqa: BLE001 - the connection died under us
            watchdog.cancel()
            chan.close()
            if deadline.expired():
                return ExecResult(None, b"", b"", deadline.elapsed_ms(), timed_out=True)
            raise TransportError(f"ssh {self.endpoint}: exec failed ({exc})") from None
        watchdog.cancel()
        out, err = CappedBuffer(self.max_output), CappedBuffer(STDERR_CAP)
        timed_out = False
        try:
            chan.setblocking(False)
            while True:
                drained = False
                while chan.recv_ready():
                    out.append(chan.recv(1 << 16))
                    drained = True
                while chan.recv_stderr_ready():
                    err.append(chan.recv_stderr(1 << 16))
                    drained = True
                if (
                    chan.exit_status_ready()
                    and chan.eof_received
                    and not chan.recv_ready()
                    and not chan.recv_stderr_ready()
                ):
                    break
                if deadline.expired():
                    timed_out = True
                    break
                if chan.closed and not chan.recv_ready() and not chan.recv_stderr_ready():
                    # closed under us (`close()`: an interrupted collection) or by the
                    # server without EOF: nothing more will come (exit code None if the
                    # server sent none)
                    break
                if not drained:
                    # The channel pipe is signalled on data and EOF, not on exit-status:
                    # wake up often enough not to sit on a finished command.
                    select.select([chan], [], [], min(deadline.remaining(), 0.02))
            code = chan.recv_exit_status() if not timed_out else None
        finally:
            chan.close()  # on timeout sshd hangs up the session (SIGHUP to the command)
        if code == -1:  # no exit-status message (killed by a signal): paramiko reports -1
            code = None
        return ExecResult(
            exit_code=code,
            stdout=out.getvalue(),
            stderr=err.getvalue(),
            truncated=out.truncated,
            duration_ms=deadline.elapsed_ms(),
            timed_out=timed_out,
            not_found=not timed_out and missing_binary(code, err.getvalue()),
        )

    def _close_clients(self) -> None:
        for c in reversed(self._clients):
            with contextlib.suppress(Exception):  # closing is best effort
                c.close()
        self._clients.clear()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._close_clients()


def transports_for(
    endpoints: Sequence[SshEndpoint],
    *,
    known_hosts: str = DEFAULT_KNOWN_HOSTS,
    accept_new: bool = False,
    connect_timeout: float = CONNECT_TIMEOUT,
    max_output: int | None = DEFAULT_MAX_OUTPUT,
) -> dict[str, SshTransport]:
    """node name -> transport, sharing one known_hosts (and its append lock)."""
    known = _KnownHosts(known_hosts, accept_new)
    return {
        ep.node: SshTransport(
            ep, known=known, connect_timeout=connect_timeout, max_output=max_output
        ) for ep in endpoints
    }


def with_user(endpoints: Sequence[SshEndpoint], **changes: Any) -> list[SshEndpoint]:
    """Endpoints with fields replaced (CLI defaults applied after parsing)."""
    return [replace(ep, **changes) for ep in endpoints]
