"""A small Docker Engine API server on a unix socket, backed by emulated kind nodes.

What it is: just enough of the Engine API (v1.44 wire format) for the calls ambientctl's
docker transport and discovery make through the UNMODIFIED docker SDK:

    GET  /_ping, /version                       (the SDK negotiates the API version)
    GET  /v1.xx/containers/json?filters=...     (label / name / id / status filters)
    GET  /v1.xx/containers/{id|name}/json       (inspect)
    POST /v1.xx/containers/{id}/exec            (exec create: Cmd is an argv list)
    POST /v1.xx/exec/{id}/start                 (hijacked connection, "101 UPGRADED", then
                                                 the multiplexed stream: 8-byte header
                                                 [stream, 0, 0, 0, size as big-endian u32])
    GET  /v1.xx/exec/{id}/json                  (exec inspect: Running, ExitCode)

What it is not: a container runtime. A "container" is an emulated node: an exec runs the
argv for real behind the container's `prefix` - normally `NodeView.prefix()`, i.e. in the
node's network namespace with a /var/run/netns that lists only that node's pods, as inside
a kind node container - so the output is what the kernel says. A missing binary is reported the way dockerd does
(runtime error text on the stdout stream, exit code 127). `latency` delays every exec
start (the benchmark's injected round-trip cost). `coalesce` holds the "101 UPGRADED"
headers back and sends them in one segment with the first frame of output, the way a
fast command's output can arrive on a real engine (docker/docker-py#3332).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import secrets
import selectors
import shutil
import socketserver
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

API_VERSION = "1.44"
_VERSIONED = re.compile(r"^/v\d+\.\d+(/.*)$")


@dataclass
class Container:
    """One emulated kind node container."""

    name: str
    prefix: list[str]  # argv prefix that puts a command "inside" this container
    labels: dict[str, str] = field(default_factory=dict)
    image: str = "kindest/node:v1.31.0"
    ip: str = ""
    id: str = field(default_factory=lambda: secrets.token_hex(32))


@dataclass
class Exec:
    id: str
    container: Container
    cmd: list[str]
    running: bool = False
    exit_code: int | None = None
    pid: int = 0


def kind_container(cluster: str, node: str, prefix: list[str], role: str = "worker") -> Container:
    """A container labelled the way kind labels its node containers."""
    return Container(
        name=node,
        prefix=list(prefix),
        labels={"io.x-k8s.kind.cluster": cluster, "io.x-k8s.kind.role": role},
    )


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True
    # AF_UNIX connect() fails with EAGAIN (not a retry) when the backlog is full; the
    # socketserver default of 5 is far below dockerd's.
    request_queue_size = 512

    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], OSError):  # a client hanging up is normal
            super().handle_error(request, client_address)


class DockerEngine:
    """`with DockerEngine(path, containers) as engine:` -> `engine.base_url` for the SDK."""

    def __init__(
        self,
        socket_path: str | Path,
        containers: list[Container],
        *,
        latency: float = 0.0,
        coalesce: bool = False,
    ) -> None:
        self.socket_path = str(socket_path)
        self.containers = list(containers)
        self.latency = latency
        self.coalesce = coalesce
        self.execs: dict[str, Exec] = {}
        self.exec_count = 0
        self.lock = threading.Lock()
        engine = self

        class Handler(_Handler):
            pass

        Handler.engine = engine
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        self.server = _Server(self.socket_path, Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"unix://{self.socket_path}"

    def find(self, ref: str) -> Container | None:
        for c in self.containers:
            if ref in (c.id, c.name, "/" + c.name) or (len(ref) >= 12 and c.id.startswith(ref)):
                return c
        return None

    def __enter__(self) -> DockerEngine:  # noqa: PYI034
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)


def _summary(c: Container) -> dict[str, object]:
    return {
        "Id": c.id,
        "Names": ["/" + c.name],
        "Image": c.image,
        "ImageID": "sha256:" + "0" * 64,
        "Command": "/usr/local/bin/entrypoint /sbin/init",
        "Created": 1700000000,
        "State": "running",
        "Status": "Up 2 hours",
        "Labels": c.labels,
        "Ports": [],
        "NetworkSettings": {"Networks": {"kind": {"IPAddress": c.ip}}},
        "Mounts": [],
    }


def _inspect(c: Container) -> dict[str, object]:
    return {
        "Id": c.id,
        "Name": "/" + c.name,
        "Created": "2024-01-01T00:00:00Z",
        "State": {"Status": "running", "Running": True, "Paused": False, "Pid": 1, "ExitCode": 0},
        "Image": "sha256:" + "0" * 64,
        "Config": {"Hostname": c.name, "Image": c.image, "Labels": c.labels, "Tty": True},
        "NetworkSettings": {"Networks": {"kind": {"IPAddress": c.ip}}},
    }


def _matches(c: Container, filters: dict[str, list[str]]) -> bool:
    for label in filters.get("label", []):
        key, eq, value = label.partition("=")
        if key not in c.labels or (eq and c.labels[key] != value):
            return False
    names, ids, status = filters.get("name"), filters.get("id"), filters.get("status")
    if names and not any(re.search(n, c.name) for n in names):
        return False
    if ids and not any(c.id.startswith(i) for i in ids):
        return False
    return not (status and "running" not in status)


class _Handler(http.server.BaseHTTPRequestHandler):
    engine: DockerEngine
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def address_string(self) -> str:  # unix sockets have no peer address
        return "unix"

    # ------------------------------------------------------------------ plumbing
    def _path(self) -> tuple[str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        path = parts.path
        m = _VERSIONED.match(path)
        if m:
            path = m.group(1)
        return path, parse_qs(parts.query)

    def _body(self) -> dict[str, object]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else {}

    def _json(self, status: int, doc: object) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Api-Version", API_VERSION)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"message": message})

    # ------------------------------------------------------------------ routes
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path, query = self._path()
        engine = self.engine
        if path == "/_ping":
            self.send_response(200)
            for k, v in (
                ("Api-Version", API_VERSION),
                ("Ostype", "linux"),
                ("Docker-Experimental", "false"),
                ("Content-Type", "text/plain"),
                ("Content-Length", "2"),
            ):
                self.send_header(k, v)
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(b"OK")
            return
        if path == "/version":
            return self._json(
                200,
                {
                    "Version": "26.1.0",
                    "ApiVersion": API_VERSION,
                    "MinAPIVersion": "1.24",
                    "Os": "linux",
                    "Arch": "amd64",
                    "KernelVersion": os.uname().release,
                    "Components": [{"Name": "Engine", "Version": "26.1.0"}],
                },
            )
        if path == "/containers/json":
            filters = json.loads(query.get("filters", ["{}"])[0] or "{}")
            if isinstance(filters, dict):  # {"label": {"a=b": true}} is the old map form
                filters = {
                    k: list(v) if isinstance(v, (list, dict)) else [v] for k, v in filters.items()
                }
            return self._json(200, [_summary(c) for c in engine.containers if _matches(c, filters)])
        m = re.match(r"^/containers/([^/]+)/json$", path)
        if m:
            c = engine.find(m.group(1))
            if c is None:
                return self._error(404, f"No such container: {m.group(1)}")
            return self._json(200, _inspect(c))
        m = re.match(r"^/exec/([^/]+)/json$", path)
        if m:
            ex = engine.execs.get(m.group(1))
            if ex is None:
                return self._error(404, f"No such exec instance: {m.group(1)}")
            return self._json(
                200,
                {
                    "ID": ex.id,
                    "Running": ex.running,
                    "ExitCode": ex.exit_code,
                    "ContainerID": ex.container.id,
                    "Pid": ex.pid,
                    "OpenStdout": True,
                    "OpenStderr": True,
                    "OpenStdin": False,
                    "CanRemove": False,
                    "DetachKeys": "",
                    "ProcessConfig": {
                        "tty": False,
                        "entrypoint": ex.cmd[0],
                        "arguments": ex.cmd[1:],
                        "privileged": False,
                    },
                },
            )
        self._error(404, f"page not found: {path}")

    def do_POST(self) -> None:
        path, _ = self._path()
        engine = self.engine
        m = re.match(r"^/containers/([^/]+)/exec$", path)
        if m:
            c = engine.find(m.group(1))
            body = self._body()
            if c is None:
                return self._error(404, f"No such container: {m.group(1)}")
            cmd = body.get("Cmd")
            if not isinstance(cmd, list) or not cmd or not all(isinstance(a, str) for a in cmd):
                return self._error(400, "No exec command specified")
            ex = Exec(id=secrets.token_hex(32), container=c, cmd=list(cmd))
            with engine.lock:
                engine.execs[ex.id] = ex
            return self._json(201, {"Id": ex.id})
        m = re.match(r"^/exec/([^/]+)/start$", path)
        if m:
            body = self._body()
            ex = engine.execs.get(m.group(1))
            if ex is None:
                return self._error(404, f"No such exec instance: {m.group(1)}")
            if ex.running or ex.exit_code is not None:
                return self._error(409, f"exec {ex.id} has already been started")
            if body.get("Detach") or body.get("Tty"):
                return self._error(400, "this test engine supports attached, non-tty exec only")
            return self._start(ex)
        self._error(404, f"page not found: {path}")

    # ------------------------------------------------------------------ exec start
    def _frame(self, stream: int, data: bytes) -> None:
        # BaseHTTPRequestHandler buffers the headers until flush(); with `coalesce` the
        # first frame leaves in the same write as the headers.
        head = b"".join(getattr(self, "_headers_buffer", []))
        self._headers_buffer = []
        self.wfile.write(head + struct.pack(">BxxxL", stream, len(data)) + data)

    def _start(self, ex: Exec) -> None:
        upgrade = self.headers.get("Upgrade", "").lower() == "tcp"
        # dockerd hijacks the connection: "101 UPGRADED" when the client asked for it,
        # otherwise a 200 whose body is the raw stream until close.
        if upgrade:
            self.send_response(101, "UPGRADED")
            self.send_header("Content-Type", "application/vnd.docker.multiplexed-stream")
            self.send_header("Connection", "Upgrade")
            self.send_header("Upgrade", "tcp")
        else:
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.docker.multiplexed-stream")
        self.send_header("Api-Version", API_VERSION)
        if self.engine.coalesce:
            self._headers_buffer.append(b"\r\n")  # type: ignore[attr-defined]  # sent by _frame
        else:
            self.end_headers()
        self.close_connection = True
        ex.running = True
        with self.engine.lock:
            self.engine.exec_count += 1
        if self.engine.latency:
            time.sleep(self.engine.latency)
        binary = ex.cmd[0]
        if shutil.which(binary) is None:
            # moby translateContainerdStartErr: "executable file not found" => 127, and the
            # router writes the error text onto the (stdout) stream.
            self._frame(
                1,
                (
                    "OCI runtime exec failed: exec failed: unable to start container process: "
                    f'exec: "{binary}": executable file not found in $PATH: unknown\r\n'
                ).encode(),
            )
            ex.exit_code, ex.running = 127, False
            self.wfile.flush()
            return
        proc = subprocess.Popen(
            [*ex.container.prefix, *ex.cmd],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        ex.pid = proc.pid
        sel = selectors.DefaultSelector()
        assert proc.stdout is not None and proc.stderr is not None
        sel.register(proc.stdout, selectors.EVENT_READ, 1)
        sel.register(proc.stderr, selectors.EVENT_READ, 2)
        sel.register(self.connection, selectors.EVENT_READ, 0)  # the client hanging up
        try:
            while len(sel.get_map()) > 1:
                for key, _ in sel.select():
                    if key.data == 0:
                        if not self.connection.recv(1):
                            raise ConnectionResetError("client went away")
                        continue
                    chunk = os.read(key.fileobj.fileno(), 1 << 16)  # type: ignore[union-attr]
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    self._frame(key.data, chunk)
            self.wfile.flush()
        except OSError:  # the client went away (timeout): stop the command like a hang-up
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
        finally:
            sel.close()
            if getattr(self, "_headers_buffer", None):  # a command without output
                try:
                    self.flush_headers()
                except OSError:
                    pass
            rc = proc.wait()
            ex.exit_code = rc if rc >= 0 else 128 - rc  # a signal: 128+N, as dockerd reports
            ex.running = False
            proc.stdout.close()
            proc.stderr.close()
