"""A small Kubernetes API server (HTTP + WebSocket), backed by emulated nodes and pods.

What it is: the wire protocol of the calls ambientctl makes through the UNMODIFIED
kubernetes Python client (built on the `websockets` library's sync server):

    GET /version, /api, /apis, /api/v1, /apis/discovery.k8s.io/v1     discovery
    GET /api/v1/{nodes,pods,services,namespaces}                        lists
    GET /api/v1/namespaces/{ns}/pods[/{name}]                           list / get
    GET /apis/discovery.k8s.io/v1/endpointslices                        list
    GET /api/v1/namespaces/{ns}/pods/{name}/exec?command=..&container=..&stdout=true&stderr=true
        WebSocket upgrade, subprotocol `v4.channel.k8s.io`: binary frames whose first
        byte is the channel (1 stdout, 2 stderr, 3 error); the error channel carries one
        metav1.Status: `{"metadata":{},"status":"Success"}` or a Failure with
        `reason: NonZeroExitCode` and `details.causes[{reason: ExitCode, message: "N"}]`
        (what kubelet's remotecommand server writes), or `reason: InternalError` when the
        container runtime cannot start the binary.
    GET /api/v1/namespaces/{ns}/pods/{name}/portforward?ports=P[,Q]
        WebSocket upgrade, subprotocol `v4.channel.k8s.io` (kubelet's websocket port
        forward): per requested port i a data channel 2i and an error channel 2i+1, each
        opened by a frame carrying the port number (uint16, little endian); bytes on the
        data channel go to a REAL TCP connection to 127.0.0.1:P inside the pod's network
        namespace (the one its exec lands in) and back; a failed connect is reported on the
        error channel with kubelet's wording ("... connect: connection refused"), then the
        stream is closed.

List responses have the API server's shape (`kind: PodList`, items without kind /
apiVersion) and, like a real cluster, pods carry things a collector must NOT copy:
container `env` (with a planted secret value), `managedFields` and the
`kubectl.kubernetes.io/last-applied-configuration` annotation.

What it is not: an API server. No TLS, no watch, no RBAC beyond one bearer token; exec
runs the argv for real in the emulated pod's network namespace (`ExecTarget.prefix`:
`ip netns exec POD_NETNS`, or a `NodeView` prefix for a hostNetwork pod such as istio-cni).
A pod may be given a set of binaries (`binaries=`) to emulate a distroless image;
anything else is "executable file not found". `latency` delays each exec;
`drop_status` ends exec streams without a status (the silent truncation of kubectl#1361).
"""

from __future__ import annotations

import contextlib
import copy
import http
import json
import os
import re
import selectors
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets import http11
from websockets.datastructures import Headers
from websockets.http11 import Response
from websockets.sync.server import ServerConnection, serve

V4 = "v4.channel.k8s.io"
PLANTED_SECRET = "s3cr3t-must-not-leak"
TOKEN = "ambientctl-test-token"

_LISTS = {
    "/api/v1/nodes": ("nodes", "NodeList", "v1"),
    "/api/v1/pods": ("pods", "PodList", "v1"),
    "/api/v1/services": ("services", "ServiceList", "v1"),
    "/api/v1/namespaces": ("namespaces", "NamespaceList", "v1"),
    "/apis/discovery.k8s.io/v1/endpointslices": (
        "endpointslices",
        "EndpointSliceList",
        "discovery.k8s.io/v1",
    ),
    # custom resources: served only when the cluster document holds them (else 404, as
    # on a cluster without the CRD)
    "/apis/security.istio.io/v1/peerauthentications": (
        "peerauthentications", "PeerAuthenticationList", "security.istio.io/v1"),
    "/apis/security.istio.io/v1/authorizationpolicies": (
        "authorizationpolicies", "AuthorizationPolicyList", "security.istio.io/v1"),
    "/apis/gateway.networking.k8s.io/v1/gateways": (
        "gateways", "GatewayList", "gateway.networking.k8s.io/v1"),
}


_CUSTOM = frozenset({"peerauthentications", "authorizationpolicies", "gateways"})


@dataclass
class ExecTarget:
    """Where exec into one pod lands."""

    prefix: list[str]  # argv prefix that runs a command in the pod's container/netns
    binaries: frozenset[str] | None = None  # None: every binary of this machine
    # A simulated node (benchmarks at cluster scale): argv -> (stdout, stderr, exit code)
    # answered in-process instead of running `prefix + argv`; the wire protocol (frames,
    # status) is the same.
    respond: Callable[[list[str]], tuple[bytes, bytes, int]] | None = None
    # A simulated pod's port-forward (benchmarks): (port, HTTP request bytes) -> the
    # bytes its listener answers before closing, instead of a TCP connection in a netns.
    forward: Callable[[int, bytes], bytes] | None = None


@dataclass
class KubeApi:
    """`with KubeApi(cluster, exec_targets) as api:` -> `api.kubeconfig(path)`."""

    cluster: dict[str, dict[str, Any]]  # "pods" -> kubectl-shaped List document, ...
    exec_targets: dict[tuple[str, str], ExecTarget] = field(default_factory=dict)
    latency: float = 0.0
    token: str = TOKEN
    enrich: bool = True
    drop_status: bool = False  # close exec streams without a status (a truncated stream)
    exec_count: int = 0
    forward_count: int = 0
    requests: list[str] = field(default_factory=list)
    list_pages: dict[str, int] = field(default_factory=dict)  # kind -> pages served
    # The longest request line served (`GET PATH?QUERY HTTP/1.1`). The `websockets` server
    # refuses a longer one than `max_request_line` with 414, as nginx in front of a real
    # API server does past 8 KiB (its default); a real API server takes 1 MiB.
    longest_request_line: int = 0
    max_request_line: int = 8192

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = serve(
            self._handler,
            "127.0.0.1",
            0,
            subprotocols=[V4],  # type: ignore[list-item]
            process_request=self._process_request,
            compression=None,
            ping_interval=None,
            max_size=2**20,
            logger=_quiet_logger(),
            close_timeout=0.5,
        )
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> KubeApi:  # noqa: PYI034
        # websockets reads its limit from a module global at every request: set for the
        # life of this peer, restored after (peers run one at a time in a test process).
        self._line_limit = http11.MAX_LINE_LENGTH
        http11.MAX_LINE_LENGTH = self.max_request_line
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        http11.MAX_LINE_LENGTH = self._line_limit

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(5)

    def kubeconfig(self, path: str | Path, context: str = "peer") -> Path:
        """Write a kubeconfig whose current context is `context` (JSON is valid YAML)."""
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": context,
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": context, "user": {"token": self.token}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        }
        Path(path).write_text(json.dumps(doc, indent=1))
        return Path(path)

    # ------------------------------------------------------------------ objects
    def _items(
        self, kind: str, raw: list[dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        """Copies of `raw` (default: every item of `kind`) as the API serves them."""
        items = []
        source = (self.cluster.get(kind) or {}).get("items", []) if raw is None else raw
        for item in source:
            obj = copy.deepcopy(item)
            obj.pop("kind", None)  # typed list items come without kind/apiVersion
            obj.pop("apiVersion", None)
            if self.enrich:
                _enrich(kind, obj)
            items.append(obj)
        return items

    def _pod(self, ns: str, name: str) -> dict[str, Any] | None:
        for p in (self.cluster.get("pods") or {}).get("items", []):
            if p["metadata"].get("namespace") == ns and p["metadata"].get("name") == name:
                return self._items("pods", [p])[0]  # copy only the match (cluster scale)
        return None

    # ------------------------------------------------------------------ HTTP
    def _process_request(self, conn: ServerConnection, request: Any) -> Response | None:
        parts = urlsplit(request.path)
        path, query = parts.path.rstrip("/") or "/", parse_qs(parts.query)
        self.requests.append(path)
        self.longest_request_line = max(self.longest_request_line,
                                        len(f"GET {request.path} HTTP/1.1"))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _status(401, "Unauthorized", "Unauthorized")
        m = re.match(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/exec$", path)
        if m:
            return self._check_exec(m.group(1), m.group(2), query, request)
        m = re.match(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/portforward$", path)
        if m:
            return self._check_portforward(m.group(1), m.group(2), query, request)
        if path == "/version":
            return _json(
                200,
                {"major": "1", "minor": "31", "gitVersion": "v1.31.0", "platform": "linux/amd64"},
            )
        if path == "/api":
            return _json(
                200,
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}
                    ],
                },
            )
        if path == "/apis":
            gv = {"groupVersion": "discovery.k8s.io/v1", "version": "v1"}
            return _json(
                200,
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [
                        {"name": "discovery.k8s.io", "versions": [gv], "preferredVersion": gv}
                    ],
                },
            )
        if path == "/api/v1":
            return _json(
                200,
                _resources(
                    "v1",
                    [
                        ("pods", "Pod", True, ["get", "list"]),
                        ("pods/exec", "PodExecOptions", True, ["create", "get"]),
                        ("pods/portforward", "PodPortForwardOptions", True, ["create", "get"]),
                        ("nodes", "Node", False, ["get", "list"]),
                        ("services", "Service", True, ["get", "list"]),
                        ("namespaces", "Namespace", False, ["get", "list"]),
                    ],
                ),
            )
        if path == "/apis/discovery.k8s.io/v1":
            return _json(
                200,
                _resources(
                    "discovery.k8s.io/v1",
                    [("endpointslices", "EndpointSlice", True, ["get", "list"])],
                ),
            )
        if path in _LISTS:
            kind, list_kind, api_version = _LISTS[path]
            if kind not in self.cluster and kind in _CUSTOM:
                return _status(404, "NotFound", "the server could not find the requested resource")
            return self._list(kind, list_kind, api_version, query)
        m = re.match(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?$", path)
        if m:
            if m.group(2):
                pod = self._pod(m.group(1), m.group(2))
                if pod is None:
                    return _status(404, "NotFound", f'pods "{m.group(2)}" not found')
                return _json(200, {"kind": "Pod", "apiVersion": "v1", **pod})
            return self._list("pods", "PodList", "v1", query, namespace=m.group(1))
        return _status(404, "NotFound", "the server could not find the requested resource")

    def _list(
        self,
        kind: str,
        list_kind: str,
        api_version: str,
        query: dict[str, list[str]],
        namespace: str | None = None,
    ) -> Response:
        # Filter and page the stored items, then copy only the page (cluster scale).
        items = (self.cluster.get(kind) or {}).get("items", [])
        if namespace is not None:
            items = [i for i in items if i["metadata"].get("namespace") == namespace]
        for sel in query.get("labelSelector", []):
            for term in filter(None, sel.split(",")):
                k, _, v = term.partition("=")
                items = [i for i in items if (i["metadata"].get("labels") or {}).get(k) == v]
        for sel in query.get("fieldSelector", []):
            for term in filter(None, sel.split(",")):
                k, _, v = term.partition("=")
                if k == "spec.nodeName":
                    items = [i for i in items if (i.get("spec") or {}).get("nodeName") == v]
        # Chunking (`limit` / `continue`), as the API server pages a list: the token is
        # opaque to clients; here it is the offset of the next item, tagged with the kind
        # (a token from another list is refused with 400, as a mismatched key is).
        meta: dict[str, Any] = {"resourceVersion": "4242"}
        start = 0
        token = query.get("continue", [""])[0]
        if token:
            tag, _, offset = token.partition(":")
            if tag != kind or not offset.isdigit():
                return _status(400, "BadRequest", "continue key is not valid")
            start = int(offset)
        limit = query.get("limit", [""])[0]
        with self._lock:
            self.list_pages[kind] = self.list_pages.get(kind, 0) + 1
        if limit.isdigit() and int(limit) > 0:
            end = start + int(limit)
            if end < len(items):
                meta["continue"] = f"{kind}:{end}"
                meta["remainingItemCount"] = len(items) - end
            items = items[start:end]
        else:
            items = items[start:]
        items = self._items(kind, items)
        return _json(
            200,
            {"kind": list_kind, "apiVersion": api_version, "metadata": meta, "items": items},
        )

    # ------------------------------------------------------------------ exec
    def _check_exec(
        self, ns: str, name: str, query: dict[str, list[str]], request: Any
    ) -> Response | None:
        pod = self._pod(ns, name)
        if pod is None:
            return _status(404, "NotFound", f'pods "{name}" not found')
        containers = [c["name"] for c in (pod.get("spec") or {}).get("containers", [])]
        wanted = query.get("container", [None])[0]
        if wanted is None and len(containers) > 1:
            return _status(
                400,
                "BadRequest",
                f"a container name must be specified for pod {name}, "
                f"choose one of: [{' '.join(containers)}]",
            )
        if wanted is not None and wanted not in containers:
            return _status(400, "BadRequest", f"container {wanted} is not valid for pod {name}")
        if not query.get("command"):
            return _status(400, "BadRequest", "you must specify at least 1 command")
        if (ns, name) not in self.exec_targets:
            return _status(500, "InternalError", f"pod {ns}/{name} has no emulated netns")
        if "upgrade" not in request.headers.get("Connection", "").lower():
            return _status(400, "BadRequest", "Upgrade request required")
        return None  # go on with the WebSocket handshake

    # ------------------------------------------------------------------ port-forward
    def _forward_netns(self, ns: str, name: str) -> str | None:
        """The named netns a pod's port-forward connects in (its exec target's netns)."""
        target = self.exec_targets.get((ns, name))
        if target is None or target.prefix[:3] != ["ip", "netns", "exec"]:
            return None
        return target.prefix[3]

    def _check_portforward(
        self, ns: str, name: str, query: dict[str, list[str]], request: Any
    ) -> Response | None:
        if self._pod(ns, name) is None:
            return _status(404, "NotFound", f'pods "{name}" not found')
        ports = [p for v in query.get("ports", []) for p in v.split(",") if p]
        if not ports or not all(p.isdigit() and 0 < int(p) < 65536 for p in ports):
            return _status(400, "BadRequest", "at least one valid port is required")
        target = self.exec_targets.get((ns, name))
        if self._forward_netns(ns, name) is None and (target is None or target.forward is None):
            return _status(500, "InternalError", f"pod {ns}/{name} has no emulated netns")
        if "upgrade" not in request.headers.get("Connection", "").lower():
            return _status(400, "BadRequest", "Upgrade request required")
        return None

    @staticmethod
    def _forward_in_process(conn: ServerConnection, port: int,
                            answer: Callable[[int, bytes], bytes]) -> None:
        """Read one HTTP request on the first port's data channel, send the simulated
        listener's answer in 64 KiB frames, close (a listener answering `Connection: close`)."""
        request = b""
        with contextlib.suppress(Exception):
            for message in conn:
                if isinstance(message, bytes) and message and message[0] == 0:
                    request += message[1:]
                    if b"\r\n\r\n" in request:
                        break
        reply = answer(port, request)
        with contextlib.suppress(Exception):
            for at in range(0, len(reply), 1 << 16):
                conn.send(b"\x00" + reply[at:at + (1 << 16)])
            conn.close()

    def _portforward(self, conn: ServerConnection, ns: str, name: str, query: str) -> None:
        from tests.peers.netns import connect_in_netns

        netns = self._forward_netns(ns, name)
        ports = [int(p) for v in parse_qs(query)["ports"] for p in v.split(",") if p]
        with self._lock:
            self.forward_count += 1
        for i, port in enumerate(ports):
            conn.send(bytes([2 * i]) + port.to_bytes(2, "little"))
            conn.send(bytes([2 * i + 1]) + port.to_bytes(2, "little"))
        target = self.exec_targets.get((ns, name))
        if target is not None and target.forward is not None:
            self._forward_in_process(conn, ports[0], target.forward)
            return
        assert netns is not None
        upstream: dict[int, Any] = {}
        for i, port in enumerate(ports):
            try:
                upstream[i] = connect_in_netns(netns, "127.0.0.1", port, timeout=5.0)
            except OSError as exc:
                reason = "connect: connection refused" if isinstance(
                    exc, ConnectionRefusedError) else str(exc)
                msg = (f"error forwarding port {port} to pod {name}, uid : failed to execute "
                       f"portforward in network namespace \"/var/run/netns/{netns}\": failed to "
                       f"connect to localhost:{port} inside namespace, IPv4: dial tcp4 "
                       f"127.0.0.1:{port}: {reason}")
                conn.send(bytes([2 * i + 1]) + msg.encode())
        if not upstream:
            conn.close()
            return

        def pump(i: int, sock: Any) -> None:
            try:
                while chunk := sock.recv(1 << 16):
                    conn.send(bytes([2 * i]) + chunk)
            except OSError:
                pass
            finally:
                # the pod side closed: end the stream, as kubelet does when its copy ends
                with contextlib.suppress(Exception):
                    conn.close()

        for i, sock in upstream.items():
            threading.Thread(target=pump, args=(i, sock), daemon=True).start()
        try:
            # The client going away ends the iteration (or raises): close the pod side.
            with contextlib.suppress(Exception):
                for message in conn:
                    if isinstance(message, bytes) and message and message[0] % 2 == 0:
                        sock = upstream.get(message[0] // 2)
                        if sock is not None:
                            sock.sendall(message[1:])
        finally:
            for sock in upstream.values():
                with contextlib.suppress(OSError):
                    sock.close()

    def _handler(self, conn: ServerConnection) -> None:
        parts = urlsplit(conn.request.path)  # type: ignore[union-attr]
        pf = re.match(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/portforward$", parts.path)
        if pf:
            self._portforward(conn, pf.group(1), pf.group(2), parts.query)
            return
        m = re.match(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/exec$", parts.path)
        assert m is not None
        target = self.exec_targets[(m.group(1), m.group(2))]
        argv = parse_qs(parts.query)["command"]
        with self._lock:
            self.exec_count += 1
        if self.latency:
            time.sleep(self.latency)
        binary = argv[0]
        missing = shutil.which(binary) is None or (
            target.binaries is not None and os.path.basename(binary) not in target.binaries
        )
        if missing:
            msg = (
                "Internal error occurred: error executing command in container: failed to exec "
                "in container: failed to start exec: OCI runtime exec failed: exec failed: unable "
                f'to start container process: exec: "{binary}": executable file not found in '
                "$PATH: unknown"
            )
            conn.send(
                b"\x03"
                + json.dumps(
                    {
                        "metadata": {},
                        "status": "Failure",
                        "message": msg,
                        "reason": "InternalError",
                        "code": 500,
                    }
                ).encode()
            )
            return
        if target.respond is not None:
            self._respond(conn, argv, target.respond)
            return
        proc = subprocess.Popen(
            [*target.prefix, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        sel = selectors.DefaultSelector()
        assert proc.stdout is not None and proc.stderr is not None
        sel.register(proc.stdout, selectors.EVENT_READ, b"\x01")
        sel.register(proc.stderr, selectors.EVENT_READ, b"\x02")
        try:
            while sel.get_map():
                events = sel.select(timeout=0.2)
                if not events:
                    # Nothing to send: has the client hung up (its deadline)? Then stop
                    # the command, as the API server does when the stream goes away.
                    try:
                        conn.recv(timeout=0)
                    except TimeoutError:
                        pass
                for key, _ in events:
                    chunk = os.read(key.fileobj.fileno(), 1 << 16)  # type: ignore[union-attr]
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    conn.send(key.data + chunk)
            rc = proc.wait()
            if self.drop_status:
                return  # like kubectl#1361: the stream just ends
            if rc == 0:
                status: dict[str, Any] = {"metadata": {}, "status": "Success"}
            else:
                code = rc if rc > 0 else 128 - rc
                status = {
                    "metadata": {},
                    "status": "Failure",
                    "message": f"command terminated with non-zero exit code: error executing "
                    f"command {argv}, exit code {code}",
                    "reason": "NonZeroExitCode",
                    "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
                }
            conn.send(b"\x03" + json.dumps(status).encode())
        except Exception:  # noqa: BLE001 - the client hung up (its deadline): stop the command
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
        finally:
            sel.close()
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()


    def _respond(
        self,
        conn: ServerConnection,
        argv: list[str],
        respond: Callable[[list[str]], tuple[bytes, bytes, int]],
    ) -> None:
        """A simulated node's answer, framed as kubelet frames a real one."""
        out, err, rc = respond(argv)
        for channel, data in ((b"\x01", out), (b"\x02", err)):
            view = memoryview(data)
            for i in range(0, len(view), 1 << 16):
                conn.send(channel + bytes(view[i : i + (1 << 16)]))
        conn.send(b"\x03" + json.dumps(_exit_status(argv, rc)).encode())


def _exit_status(argv: list[str], rc: int) -> dict[str, Any]:
    if rc == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing "
        f"command {argv}, exit code {rc}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(rc)}]},
    }


# --------------------------------------------------------------------------- helpers


def _quiet_logger() -> Any:
    import logging

    logger = logging.getLogger("tests.peers.kube_api")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def _json(code: int, doc: Any) -> Response:
    body = json.dumps(doc).encode()
    headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
    )
    return Response(code, http.HTTPStatus(code).phrase, headers, body)


def _status(code: int, reason: str, message: str) -> Response:
    return _json(
        code,
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        },
    )


def _resources(gv: str, rows: list[tuple[str, str, bool, list[str]]]) -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": [
            {"name": n, "singularName": "", "namespaced": ns, "kind": k, "verbs": v}
            for n, k, ns, v in rows
        ],
    }


def _enrich(kind: str, obj: dict[str, Any]) -> None:
    """Add what a real API server returns and a collector must drop."""
    meta = obj.setdefault("metadata", {})
    meta.setdefault("managedFields", [{"manager": "kubectl", "operation": "Update"}])
    if kind == "pods":
        meta.setdefault("annotations", {})["kubectl.kubernetes.io/last-applied-configuration"] = (
            json.dumps(
                {
                    "spec": {
                        "containers": [{"env": [{"name": "DB_PASSWORD", "value": PLANTED_SECRET}]}]
                    }
                }
            )
        )
        for c in (obj.get("spec") or {}).get("containers", []):
            c.setdefault("env", [{"name": "DB_PASSWORD", "value": PLANTED_SECRET}])
            c.setdefault("envFrom", [{"secretRef": {"name": "db"}}])
            c.setdefault("args", ["--password", PLANTED_SECRET])
