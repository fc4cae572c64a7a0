"""Kubernetes exec transport (kubernetes Python client): `pods/exec` over WebSocket.

For managed clusters where neither Docker nor SSH reaches the nodes: exec into the
ztunnel pod (2022 design: it has its own netns with the TPROXY rules) and into the
istio-cni node pod (hostNetwork: it sees the node's root netns, and pod netns through the
host's /var/run/netns mounted at /host/var/run/netns). Images may be distroless: a
missing binary comes back as not found (data), never as a failure of the run.

What the client's defaults get wrong, and what this module does instead
(perf-reliability.md §2.4):
- `stream()` temporarily swaps `call_api` on the ApiClient it is given, so one ApiClient
  shared by threads sends REST calls over WebSocket and vice versa
  (kubernetes-client/python#928): every thread gets its OWN ApiClient here.
- with the default `_preload_content=True` the client waits with no deadline, and with a
  `_request_timeout` returns the partial output *without an error*. We pass
  `_preload_content=False`, read frames ourselves against a deadline, and accept the
  output only if the error channel (3) carried `status: Success`. A non-zero exit is a
  `Failure` with `reason: NonZeroExitCode` whose `details.causes[reason=ExitCode].message`
  is the code. A stream that ends with no status is a transport error: its output may be
  truncated (kubectl#1361), so it is never stored as if whole.
- WSClient buffers with `bytes += bytes` per frame (quadratic for a 70 MB iptables-save)
  and duplicates stdout into a capture buffer; we read frames from its WebSocket
  (`.sock.recv_data_frame`) straight into one bytearray per channel.
- the client has no output limit at all: stdout and stderr go into `CappedBuffer`s
  (`max_output`, the same per-command cap as the docker and ssh transports), so a
  command printing 600 MiB costs at most the cap while its frames are drained to the
  end (the exit status still arrives on channel 3); a result past the cap comes back
  `truncated` with no stdout, and the runner records it so in the manifest.

The argv is sent as repeated `command=` query parameters, which the API documents as
"not executed within a shell". The kubernetes package is imported only when used.

`KubePortForwardTransport` reads ztunnel's admin API (`specs.ZTUNNEL_SPECS`) where exec
cannot: the ztunnel image is distroless (no curl, no shell), but the API server's
`pods/portforward` (WebSocket subprotocol `v4.channel.k8s.io`: per port a data channel
2i and an error channel 2i+1, each opened by a frame holding the port number, little
endian) connects to localhost:PORT inside the pod's netns - where the admin listens. It
"runs" only the admin argv, with curl's meaning: one GET, `--fail` (HTTP >= 400 -> exit
22), `--max-time`, and a refused connection (the kubelet's error-channel text says
"connection refused") -> exit 7, like curl's "Failed to connect".
"""

from __future__ import annotations

import contextlib
import copy
import http.client
import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

from ambientctl.collectors.exec_outcome import (
    DEFAULT_MAX_OUTPUT,
    STDERR_CAP,
    CappedBuffer,
    Deadline,
    missing_binary,
    runtime_says_missing,
)
from ambientctl.collectors.transport import NetnsRef
from ambientctl.errors import RequestTooLong, TransportError
from ambientctl.raw import ExecResult

CONNECT_TIMEOUT = 15.0
STDOUT, STDERR, ERROR, CLOSE = 1, 2, 3, 255
RBAC_HINT = "see docs/rbac.yaml for the minimal Role (pods/exec get+create in istio-system)"


@dataclass(frozen=True, slots=True)
class KubeSource:
    """Which cluster: a kubeconfig context (None = current) or in-cluster config."""

    context: str | None = None
    kubeconfig: str | None = None  # None = $KUBECONFIG or ~/.kube/config


class ClientFactory:
    """Makes a fresh ApiClient per call, from one Configuration loaded once.

    The Configuration is deep-copied per client: ApiClients never share state.
    """

    def __init__(self, source: KubeSource = KubeSource(), timeout: float = CONNECT_TIMEOUT) -> None:
        self.source = source
        self.timeout = timeout
        self._config: Any = None
        self._lock = threading.Lock()

    def configuration(self) -> Any:
        with self._lock:
            if self._config is None:
                self._config = load_configuration(self.source)
            return self._config

    def __call__(self) -> Any:
        from kubernetes import client

        return client.ApiClient(copy.deepcopy(self.configuration()))


def load_configuration(source: KubeSource) -> Any:
    """Load a kubernetes Configuration (kubeconfig context, else in-cluster)."""
    try:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException
    except ImportError as exc:
        raise TransportError(
            "the kubernetes client is not installed", hint="pip install 'ambientctl[live]'"
        ) from exc
    cfg = client.Configuration()
    try:
        config.load_kube_config(
            config_file=source.kubeconfig, context=source.context, client_configuration=cfg
        )
    except (ConfigException, OSError, TypeError, ValueError) as exc:
        if source.context is None and source.kubeconfig is None:
            try:
                config.load_incluster_config(client_configuration=cfg)
                return cfg
            except ConfigException:
                pass
        what = f"context {source.context!r}" if source.context else "the current kube context"
        raise TransportError(
            f"no Kubernetes cluster configured: {what} ({_first_line(exc)})"
        ) from None
    return cfg


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _network_reason(exc: BaseException) -> str:
    """The OS-level reason inside urllib3's MaxRetryError/NewConnectionError text."""
    text = str(exc)
    m = re.search(r"\[Errno -?\d+\] [^'\")\]]+", text)
    if m:
        return m.group(0).strip()
    for needle in ("timed out", "Name or service not known", "certificate verify failed"):
        if needle in text:
            return needle
    return _first_line(exc)[:120]


def api_error(exc: BaseException, what: str, server: str | None = None) -> TransportError:
    """One-line TransportError for a failed API call or WebSocket handshake."""
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None) or ""
    reason = getattr(exc, "reason", None) or str(exc)
    # WebSocket handshake failures arrive as ApiException(status=0, reason="Handshake
    # status 403 Forbidden -+-+- {headers} -+-+- b'{json}'") from websocket-client.
    m = re.search(r"Handshake status (\d{3})", str(reason))
    if m:
        status = int(m.group(1))
        body = str(reason).rsplit(" -+-+- ", 1)[-1] if " -+-+- " in str(reason) else ""
        if body.startswith(("b'", 'b"')):
            body = body[2:-1]
    message = ""
    try:
        message = json.loads(body).get("message", "") if body else ""
    except (ValueError, AttributeError):
        pass
    detail = message or (f"Handshake status {status}" if m else _first_line(exc))
    hint = RBAC_HINT if status in (401, 403) else None
    if status in (414, 431):
        return RequestTooLong(f"{what}: HTTP {status} ({detail})",
                              hint="the exec URL was too long for the API server or a proxy "
                              "in front of it (nginx allows 8 KiB)")
    if status:
        return TransportError(f"{what}: HTTP {status} ({detail})", hint=hint)
    where = f" {server}" if server else ""
    return TransportError(
        f"{what}: API server{where} unreachable ({_network_reason(exc)})",
        hint="check --context / KUBECONFIG, or replay a bundle with --bundle",
    )


def _exit_from_status(status: dict[str, Any]) -> int | None:
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message", ""))
            except ValueError:
                return None
    return None


# The exec argv travels in the request line (`command=` parameters). The API server takes
# 1 MiB of it, but what often stands in front of it does not: nginx answers a request line
# longer than one of its `large_client_header_buffers` (8k by default) with 414 URI Too
# Long, as does the `websockets` server (MAX_LINE_LENGTH 8192). A node batch refused so is
# sent again cut into groups that fit (`batch.BatchingTransport._run_node_batch`).
MAX_REQUEST_LINE = 8192
# Method, path prefix a proxy may add (Rancher's /k8s/clusters/ID), the other parameters
# (container, stdin/stdout/stderr/tty) and the HTTP version.
_REQUEST_LINE_ALLOWANCE = 512


class KubeExecTransport:
    """Runs argv in one container of one pod through `pods/exec`."""

    name = "kube"

    def argv_budget(self) -> int:
        """Bytes of `command=` parameters an exec request of this pod may carry."""
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.pod}/exec"
        return MAX_REQUEST_LINE - _REQUEST_LINE_ALLOWANCE - len(path)

    @staticmethod
    def argv_cost(args: Sequence[str]) -> int:
        """What `args` add to the request line: `command=` + the arg percent-encoded + `&`
        each, in the longer of the two encodings clients use (kubernetes 37 sends a space
        as `%20` and keeps `/`; `urlencode`'s default, `+` and `%2F`)."""
        return sum(max(len(quote(a, safe="/")), len(quote_plus(a))) + 9 for a in args)

    def __init__(
        self,
        namespace: str,
        pod: str,
        container: str | None = None,
        *,
        client_factory: Callable[[], Any] | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        max_output: int | None = DEFAULT_MAX_OUTPUT,
    ) -> None:
        self.namespace, self.pod, self.container = namespace, pod, container
        self.max_output = max_output  # stdout bytes kept per exec (CappedBuffer)
        self._factory = client_factory or ClientFactory(timeout=connect_timeout)
        self.connect_timeout = connect_timeout
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()

    def _api_client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:  # one ApiClient per thread, never shared (python#928)
            client = self._factory()
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def describe_wrapper(self, netns: NetnsRef) -> tuple[str, ...]:
        """How a command reaches its netns, for the manifest (the kubectl equivalent)."""
        container = ("-c", self.container) if self.container else ()
        return (
            "kubectl",
            "exec",
            "-n",
            self.namespace,
            self.pod,
            *container,
            "--",
            *netns.wrapper(),
        )

    def run(self, argv: Sequence[str], *, netns: NetnsRef | None, timeout: float) -> ExecResult:
        import websocket
        from kubernetes import client as k8s
        from kubernetes.stream import stream

        deadline = Deadline(timeout)
        command = [*(netns.wrapper() if netns is not None else ()), *argv]
        where = f"kube exec {self.namespace}/{self.pod}"
        kwargs: dict[str, Any] = {
            "command": command,
            "stderr": True,
            "stdin": False,
            "stdout": True,
            "tty": False,
            "_preload_content": False,
            "binary": True,
        }
        if self.container:
            kwargs["container"] = self.container
        # create_websocket() passes no timeout to the handshake; websocket-client's
        # module default is the only knob (the same value for every transport). Never
        # more than what is left of this call's deadline (the target's, via the runner).
        websocket.setdefaulttimeout(max(0.001, min(self.connect_timeout, deadline.remaining())))
        try:
            api = k8s.CoreV1Api(self._api_client())
            ws = stream(api.connect_get_namespaced_pod_exec, self.pod, self.namespace, **kwargs)
        except Exception as exc:  # noqa: BLE001 - ApiException, urllib3/websocket errors
            raise api_error(exc, where) from None
        chans = {
            STDOUT: CappedBuffer(self.max_output),
            STDERR: CappedBuffer(STDERR_CAP),
            # One metav1.Status; kubelet's are a few hundred bytes.
            ERROR: CappedBuffer(STDERR_CAP),
        }
        timed_out = False
        sock = ws.sock
        try:
            while True:
                remaining = deadline.remaining()
                if remaining <= 0:
                    timed_out = True
                    break
                sock.settimeout(remaining)
                try:
                    opcode, frame = sock.recv_data_frame(True)
                except websocket.WebSocketTimeoutException:
                    timed_out = True
                    break
                except websocket.WebSocketConnectionClosedException:
                    break
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    break
                if opcode not in (websocket.ABNF.OPCODE_BINARY, websocket.ABNF.OPCODE_TEXT):
                    continue
                data = frame.data
                if not data or data[0] == CLOSE:  # v5 "channel closed" control frame
                    continue
                buf = chans.get(data[0])
                if buf is not None:
                    buf.append(memoryview(data)[1:])
        except OSError as exc:
            raise TransportError(f"{where}: stream broke ({exc})") from None
        finally:
            with contextlib.suppress(Exception):  # closing is best effort
                ws.close()
        out, err = chans[STDOUT].getvalue(), chans[STDERR].getvalue()
        cut = chans[STDOUT].truncated
        if timed_out:
            return ExecResult(
                None, out, err, deadline.elapsed_ms(), timed_out=True, truncated=cut
            )
        raw_status = chans[ERROR].getvalue()
        if not chans[ERROR].seen:
            raise TransportError(
                f"{where}: the exec stream ended without a status; output may be truncated"
            )
        try:
            status = json.loads(raw_status)
        except ValueError:
            raise TransportError(
                f"{where}: unreadable exec status {raw_status[:200]!r}"
            ) from None
        if status.get("status") == "Success":
            return ExecResult(0, out, err, deadline.elapsed_ms(), truncated=cut)
        if status.get("reason") == "NonZeroExitCode":
            code = _exit_from_status(status)
            if code is not None:
                return ExecResult(
                    code, out, err, deadline.elapsed_ms(),
                    not_found=missing_binary(code, err), truncated=cut,
                )
        message = str(status.get("message", ""))
        if runtime_says_missing(message):
            return ExecResult(
                None, out, err + message.encode(), deadline.elapsed_ms(), not_found=True
            )
        raise TransportError(f"{where}: {message or status.get('reason') or 'exec failed'}")

    def close(self) -> None:
        with self._lock:
            for c in self._clients:
                with contextlib.suppress(Exception):  # closing is best effort
                    c.close()
            self._clients.clear()


class KubePortForwardTransport:
    """Fetches a ztunnel admin URL through `pods/portforward` (see the module docstring)."""

    name = "kube"

    def __init__(
        self,
        namespace: str,
        pod: str,
        *,
        client_factory: Callable[[], Any] | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.namespace, self.pod = namespace, pod
        self._factory = client_factory or ClientFactory(timeout=connect_timeout)
        self.connect_timeout = connect_timeout

    def close(self) -> None:
        """Nothing held between calls: each `run` opens and closes its own forwarded stream
        and API client (the `Transport` protocol asks every transport for `close`)."""

    def describe_wrapper(self, netns: NetnsRef) -> tuple[str, ...]:
        """The kubectl equivalent: forward the port, then run the argv against it."""
        return ("kubectl", "port-forward", "-n", self.namespace, f"pod/{self.pod}")

    @staticmethod
    def _request(argv: Sequence[str]) -> tuple[int, str, float | None]:
        """(port, path, max_time) of an admin argv; anything else is refused."""
        from ambientctl.collectors.specs import ZTUNNEL_SPECS

        if tuple(argv) not in {s.argv for s in ZTUNNEL_SPECS}:
            raise TransportError(f"kube port-forward runs only the ztunnel admin reads, not {argv[0]}")
        url = urlsplit(argv[-1])
        max_time = float(argv[argv.index("--max-time") + 1]) if "--max-time" in argv else None
        return int(url.port or 80), url.path or "/", max_time

    def run(self, argv: Sequence[str], *, netns: NetnsRef | None, timeout: float) -> ExecResult:
        import websocket
        from kubernetes import client as k8s
        from kubernetes.stream import portforward

        port, path, max_time = self._request(argv)
        deadline = Deadline(min(timeout, max_time) if max_time else timeout)
        where = f"kube port-forward {self.namespace}/{self.pod}:{port}"
        websocket.setdefaulttimeout(self.connect_timeout)
        api_client = self._factory()  # its own ApiClient: stream() patches it (python#928)
        try:
            try:
                api = k8s.CoreV1Api(api_client)
                pf = portforward(
                    api.connect_get_namespaced_pod_portforward, self.pod, self.namespace,
                    ports=str(port),
                )
            except Exception as exc:  # noqa: BLE001 - ApiException, urllib3/websocket errors
                raise api_error(exc, where) from None
            try:
                return self._get(pf, port, path, deadline, where)
            finally:
                with contextlib.suppress(Exception):  # closing is best effort
                    pf.close()
        finally:
            with contextlib.suppress(Exception):
                api_client.close()

    @staticmethod
    def _get(pf: Any, port: int, path: str, deadline: Deadline, where: str) -> ExecResult:
        sock = pf.socket(port)
        sock.settimeout(max(deadline.remaining(), 0.001))
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: */*\r\n"
            "Connection: close\r\n\r\n"
        ).encode("ascii")
        try:
            try:
                sock.sendall(request)
            except (BrokenPipeError, ConnectionResetError):
                # The pod side may answer and close before our request is written (a
                # listener that speaks first; kubelet then ends the stream, and the
                # client's proxy thread closes its end of the socketpair): what it sent
                # is still buffered on our end. Read it, as curl reads the reply after
                # a write the peer never consumed - never a transport error by itself.
                pass
            resp = http.client.HTTPResponse(sock, method="GET")
            resp.begin()
            body = resp.read()
        except TimeoutError:
            return ExecResult(None, b"", b"", deadline.elapsed_ms(), timed_out=True)
        except (http.client.HTTPException, OSError) as exc:
            error = str(pf.error(port) or "").strip()
            if "connection refused" in error.lower():
                # curl's exit 7 ("Failed to connect"): nothing listens on the admin port.
                return ExecResult(7, b"", error.encode() + b"\n", deadline.elapsed_ms())
            if not error and isinstance(exc, http.client.RemoteDisconnected):
                err = b"curl: (52) Empty reply from server\n"
                return ExecResult(52, b"", err, deadline.elapsed_ms())
            if not error and isinstance(exc, http.client.BadStatusLine):
                # curl's exit 1: the listener answered, but not with HTTP/1.x.
                err = b"curl: (1) Received HTTP/0.9 when not allowed\n"
                return ExecResult(1, b"", err, deadline.elapsed_ms())
            raise TransportError(
                f"{where}: {error or f'the forwarded stream ended early ({exc})'}"
            ) from None
        if resp.status >= 400:  # curl --fail
            failed = f"curl: (22) The requested URL returned error: {resp.status}\n"
            return ExecResult(22, b"", failed.encode(), deadline.elapsed_ms())
        return ExecResult(0, body, b"", deadline.elapsed_ms())
