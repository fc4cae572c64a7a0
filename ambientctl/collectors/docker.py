"""Docker transport (docker SDK): `docker exec` into a kind node container.

A kind node is a container whose own network namespace is the node's root namespace;
pods are network namespaces under the node's /var/run/netns, entered with
`ip netns exec NAME` inside the container. The argv goes to the Engine API as a JSON list
(`Cmd`), never through a shell.

Two things the SDK's convenience calls get wrong for a collector, handled here:
- `exec_start()` reads the hijacked connection from the *raw* socket, bypassing the
  HTTP response's buffered reader; bytes that arrived together with the "101 UPGRADED"
  headers are lost (docker/docker-py#425, #3332: "exec_run unexpected empty output").
  We read the multiplexed stream through that buffered reader instead.
- the SDK disables the socket timeout on streams, so a hung command blocks forever; we
  set a socket timeout from the command's deadline before every read.

On a timeout the connection is closed; the Engine API has no "kill exec" call, so the
command may run on in the node until it ends by itself (the batch wrapper bounds it).

The docker SDK is imported only when a client is created.
"""

from __future__ import annotations

import contextlib
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ambientctl.collectors.exec_outcome import (
    DEFAULT_MAX_OUTPUT,
    STDERR_CAP,
    CappedBuffer,
    Deadline,
    missing_binary,
)
from ambientctl.collectors.transport import NetnsRef
from ambientctl.errors import TransportError
from ambientctl.raw import ExecResult

CONNECT_TIMEOUT = 15.0
_HEADER = struct.Struct(">BxxxL")  # stream id (0 stdin, 1 stdout, 2 stderr), 3 pad bytes, size


def docker_client(base_url: str | None = None, timeout: float = CONNECT_TIMEOUT) -> Any:
    """A DockerClient for `base_url` (e.g. unix:///var/run/docker.sock), else from the
    environment (DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH), as `docker` does."""
    try:
        import docker
    except ImportError as exc:
        raise TransportError(
            "the docker SDK is not installed", hint="pip install 'ambientctl[live]'"
        ) from exc
    try:
        if base_url:
            return docker.DockerClient(base_url=base_url, timeout=int(timeout))
        return docker.from_env(timeout=int(timeout))
    except docker.errors.DockerException as exc:
        where = base_url or "DOCKER_HOST / /var/run/docker.sock"
        raise TransportError(
            f"cannot reach a Docker engine at {where} ({_short(exc)})",
            hint="is Docker running? (kind nodes are containers) or use --context / --ssh",
        ) from None


def not_running_state(exc: Any) -> str:
    """"paused" or "not running", from dockerd's 409 answer to an exec request."""
    text = str(getattr(exc, "explanation", "") or exc).lower()
    return "paused" if "paused" in text else "not running"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:200] if text else type(exc).__name__


def _stream_reader(sock: Any) -> tuple[Any, Any]:
    """(buffered reader to read from, socket to set timeouts on) for an exec socket.

    `exec_start(socket=True)` returns `response.raw._fp.fp.raw` and pins the response on
    it as `_response`; the response's BufferedReader (`.raw._fp.fp`) may already hold the
    first frames. Fall back to the raw socket if the SDK's internals ever change.
    """
    reader = sock
    response = getattr(sock, "_response", None)
    try:
        reader = response.raw._fp.fp  # type: ignore[union-attr]
    except AttributeError:
        pass
    raw = getattr(sock, "_sock", sock)  # SocketIO -> socket (unix, tcp, tls)
    return reader, raw


class DockerTransport:
    """Runs argv in one container (a kind node) through the Engine API exec calls."""

    name = "docker"

    def __init__(
        self,
        container: str,
        *,
        base_url: str | None = None,
        client_factory: Callable[[], Any] | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        max_output: int | None = DEFAULT_MAX_OUTPUT,
    ) -> None:
        self.container = container
        self._factory = client_factory or (lambda: docker_client(base_url, connect_timeout))
        self._client: Any = None
        self.max_output = max_output  # stdout bytes kept per exec (CappedBuffer)
        self._closed = False
        self._lock = threading.Lock()

    def _api(self) -> Any:
        # One client (a requests.Session) per transport: sessions are not shared
        # between worker threads.
        with self._lock:
            if self._closed:
                # closed by an interrupted collection: never reconnect behind its back
                raise TransportError(f"docker exec in {self.container}: closed (collection interrupted)")
            if self._client is None:
                self._client = self._factory()
            return self._client.api

    def describe_wrapper(self, netns: NetnsRef) -> tuple[str, ...]:
        """How a command reaches its netns, for the manifest."""
        return ("docker", "exec", self.container, *netns.wrapper())

    def run(self, argv: Sequence[str], *, netns: NetnsRef | None, timeout: float) -> ExecResult:
        import docker

        deadline = Deadline(timeout)
        cmd = [*(netns.wrapper() if netns is not None else ()), *argv]
        api = self._api()
        try:
            exec_id = api.exec_create(self.container, cmd, stdout=True, stderr=True)["Id"]
            sock = api.exec_start(exec_id, socket=True)
        except docker.errors.NotFound:
            raise TransportError(f"docker: container {self.container} not found") from None
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                # dockerd refuses exec in a container that is not running ("Container ID is
                # not running") or paused ("... is paused, unpause the container before exec").
                raise TransportError(
                    f"docker: node container {self.container} is {not_running_state(exc)}: "
                    "nothing can be collected from it",
                    hint=f"docker start / docker unpause {self.container}, then collect again",
                ) from None
            raise TransportError(f"docker exec in {self.container}: {_short(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - requests ConnectionError, socket errors
            raise TransportError(
                f"docker exec in {self.container}: engine unreachable ({_short(exc)})"
            ) from None
        out, err, timed_out = self._read(sock, deadline, self.max_output)
        code = None
        if not timed_out:
            code = self._exit_code(api, exec_id, deadline)
            timed_out = code is None
        return ExecResult(
            exit_code=code,
            stdout=out.getvalue(),
            truncated=out.truncated,
            stderr=err,
            duration_ms=deadline.elapsed_ms(),
            timed_out=timed_out,
            not_found=code is not None and missing_binary(code, err),
        )

    @staticmethod
    def _read(
        sock: Any, deadline: Deadline, max_output: int | None = DEFAULT_MAX_OUTPUT
    ) -> tuple[CappedBuffer, bytes, bool]:
        reader, raw = _stream_reader(sock)
        bufs = {1: CappedBuffer(max_output), 2: CappedBuffer(STDERR_CAP)}

        def read_exact(n: int) -> bytes | None:
            got = bytearray()
            while len(got) < n:
                remaining = deadline.remaining()
                if remaining <= 0:
                    raise TimeoutError
                raw.settimeout(remaining)
                chunk = reader.read1(min(n - len(got), 1 << 16))
                if not chunk:
                    return None if not got else bytes(got)
                got += chunk
            return bytes(got)

        timed_out = False
        try:
            while True:
                header = read_exact(_HEADER.size)
                if header is None or len(header) < _HEADER.size:
                    break  # end of stream: the process exited and dockerd hung up
                stream, size = _HEADER.unpack(header)
                target = bufs.get(stream, bufs[1])
                while size:
                    remaining = deadline.remaining()
                    if remaining <= 0:
                        raise TimeoutError
                    raw.settimeout(remaining)
                    chunk = reader.read1(min(size, 1 << 16))
                    if not chunk:
                        break
                    target.append(chunk)
                    size -= len(chunk)
        except (TimeoutError, OSError):
            timed_out = deadline.expired()
            if not timed_out:
                raise TransportError("docker exec stream broke before the command ended") from None
        finally:
            with contextlib.suppress(Exception):  # closing is best effort
                sock.close()
                response = getattr(sock, "_response", None)
                if response is not None:
                    response.close()
        return bufs[1], bufs[2].getvalue(), timed_out

    @staticmethod
    def _exit_code(api: Any, exec_id: str, deadline: Deadline) -> int | None:
        # The stream ends when the process's output pipes close; dockerd records the
        # exit code just after. Poll briefly rather than trust the first answer.
        import time

        while True:
            info = api.exec_inspect(exec_id)
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            if deadline.expired():
                return None
            time.sleep(0.02)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._client is not None:
                try:
                    self._client.close()
                finally:
                    self._client = None
