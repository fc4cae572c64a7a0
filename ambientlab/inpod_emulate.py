"""Emulated in-pod ztunnel / Envoy / app listeners, and a probe that connects from any netns.

Run a server inside a namespace with `ip netns exec NS python -m ambientlab.inpod_emulate`:

    serve --id ambient-worker/pod/default/sleep-7b85956664-z6qh7 --comm ztunnel \\
          --listen [::]:15001,mark=0x539,reuseport --listen 127.0.0.1:15053,mark=0x539 ...

What the real ztunnel does at the socket level in a pod's netns (istio-datapath.md §3.7,
ztunnel `src/inpod/config.rs`): its sockets are created inside the pod netns, carry
SO_MARK 1337 (0x539, so that the pod's own rules skip them) and SO_REUSEPORT, listen
dual-stack on `[::]:15001/15006/15008` and on localhost:15053; in the TPROXY era the
inbound listeners are also IP_TRANSPARENT (TPROXY hands packets only to transparent
sockets, iptables-extensions(8) TPROXY). `--uid N` creates the sockets with that owner
(Envoy runs as 1337; the sidecar rules match `--uid-owner 1337`): the socket's owner is the
creator's *fsuid* (`sock_alloc` -> `current_fsuid()`), so setfsuid(2) is enough and the
process keeps the root capabilities SO_MARK and IP_TRANSPARENT need.

Every accepted connection is answered with one JSON line (the `ambientlab.emulate.Landing`
fields: listener, getsockname(), getpeername(), SO_ORIGINAL_DST) and appended to `--log`.
`connect_in()` opens a probe connection from any named netns in a short-lived thread
(setns(2) with CLONE_NEWNET changes only the calling thread).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import ipaddress
import json
import os
import selectors
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from ambientlab.emulate import Landing

IP_TRANSPARENT = 19  # <linux/in.h>
IPV6_TRANSPARENT = 75  # <linux/in6.h>
SO_MARK = 36  # <asm-generic/socket.h>
SO_ORIGINAL_DST = 80  # <linux/netfilter_ipv4.h>
IP6T_SO_ORIGINAL_DST = 80  # <linux/netfilter_ipv6/ip6_tables.h>
PR_SET_NAME = 15
CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)

__all__ = ["Landing", "ListenSpec", "connect", "connect_in", "serve"]


@contextlib.contextmanager
def _fsuid(uid: int | None) -> Iterator[None]:
    """Create sockets owned by `uid` (setfsuid(2) is per thread; restored afterwards)."""
    if uid is None:
        yield
        return
    old = _libc.setfsuid(uid)
    try:
        yield
    finally:
        _libc.setfsuid(old)


def _norm(host: str) -> str:
    """`::ffff:10.0.0.1` -> `10.0.0.1` (a v4 peer of a dual-stack socket)."""
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


def _fmt(addr: tuple) -> str:  # type: ignore[type-arg]
    host = _norm(addr[0])
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"


def _original_dst(conn: socket.socket) -> str | None:
    """SO_ORIGINAL_DST (v4 conntrack tuple, also for v4-mapped peers) or IP6T_SO_ORIGINAL_DST."""
    try:
        raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
        port = struct.unpack_from("!H", raw, 2)[0]
        return f"{socket.inet_ntoa(raw[4:8])}:{port}"
    except OSError:
        pass
    try:
        raw = conn.getsockopt(socket.IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, 28)
        port = struct.unpack_from("!H", raw, 2)[0]
        return f"[{socket.inet_ntop(socket.AF_INET6, raw[8:24])}]:{port}"
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class ListenSpec:
    """`IP:PORT[,transparent][,mark=0xNNN][,reuseport]`; `[::]:P` is dual-stack."""

    ip: str
    port: int
    transparent: bool = False
    mark: int | None = None
    reuseport: bool = False

    @classmethod
    def parse(cls, text: str) -> ListenSpec:
        """Parse the `--listen` syntax."""
        head, *opts = text.split(",")
        ip, _, port = head.rpartition(":")
        ip = ip.strip("[]")
        kw: dict[str, object] = {}
        for opt in opts:
            if opt == "transparent":
                kw["transparent"] = True
            elif opt == "reuseport":
                kw["reuseport"] = True
            elif opt.startswith("mark="):
                kw["mark"] = int(opt[5:], 0)
            else:
                raise ValueError(f"unknown listen option {opt!r}")
        return cls(ip, int(port), **kw)  # type: ignore[arg-type]

    def __str__(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        opts = (",transparent" if self.transparent else "") + (
            ",reuseport" if self.reuseport else ""
        )
        opts += f",mark={self.mark:#x}" if self.mark is not None else ""
        return f"{host}:{self.port}{opts}"

    @property
    def label(self) -> str:
        """The listener as `ss` would print its local address."""
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"

    def open(self) -> socket.socket:
        """Create, configure, bind and listen."""
        v6 = ":" in self.ip
        sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if v6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if self.reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if self.transparent:
            if v6:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
            sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        if self.mark is not None:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, self.mark)
        sock.bind((self.ip, self.port))
        sock.listen(128)
        return sock


def serve(
    netns_id: str, specs: list[ListenSpec], log_path: str | None, comm: str | None, uid: int | None
) -> None:
    """Listen on every spec, answer each connection with its landing, forever."""
    if comm:
        with contextlib.suppress(OSError):
            _libc.prctl(PR_SET_NAME, comm.encode()[:15], 0, 0, 0)
    sel = selectors.DefaultSelector()
    with _fsuid(uid):
        for spec in specs:
            sock = spec.open()
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ, spec)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if log_path else None
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        for key, _ in sel.select():
            listener: socket.socket = key.fileobj  # type: ignore[assignment]
            spec: ListenSpec = key.data
            try:
                conn, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                continue
            record = {
                "outcome": "accepted",
                "netns": netns_id,
                "listener": spec.label,
                "local": _fmt(conn.getsockname()),
                "original_dst": _original_dst(conn),
                "peer": _fmt(peer),
            }
            try:
                conn.setblocking(True)
                conn.settimeout(1.0)
                conn.sendall(json.dumps(record, sort_keys=True).encode() + b"\n")
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            finally:
                conn.close()
            if log_fd is not None:
                os.write(log_fd, json.dumps({"ts": time.time(), **record}).encode() + b"\n")


def connect(
    dst: str,
    port: int,
    *,
    src: str | None = None,
    mark: int | None = None,
    uid: int | None = None,
    timeout: float = 2.0,
) -> Landing:
    """One TCP connection from the calling thread's netns; where did it land?

    `src` binds a source address the netns may not own (ztunnel's original-source connect),
    which the kernel allows only on an IP_TRANSPARENT socket (ip(7)).
    """
    v6 = ipaddress.ip_address(dst).version == 6
    with _fsuid(uid):
        sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
    try:
        if mark is not None:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        if src is not None:
            if v6:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
            else:
                sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
            sock.bind((src, 0))
        sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            sock.connect((dst, port))
        except ConnectionRefusedError:
            return Landing("refused", detail="connection refused (RST)")
        except TimeoutError:
            return Landing("timeout", detail=f"no SYN-ACK within {timeout:g}s")
        except OSError as exc:
            if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES, errno.EPERM):
                return Landing("unreachable", detail=os.strerror(exc.errno or 0))
            return Landing("unreachable", detail=f"{type(exc).__name__}: {exc}")
        client = _fmt(sock.getsockname())
        data = b""
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                break
            except ConnectionResetError:
                return Landing("refused", client=client, detail="reset after the handshake")
            if not chunk:
                break
            data += chunk
        if b"\n" not in data:
            return Landing(
                "timeout", client=client, detail="handshake completed but no listener answered"
            )
        doc = json.loads(data.split(b"\n", 1)[0])
        return Landing.from_json({**doc, "client": client})
    finally:
        sock.close()


def connect_in(netns: str, dst: str, port: int, **kw: object) -> Landing:
    """`connect()` from inside the named netns (/var/run/netns/NAME), in a helper thread."""
    result: dict[str, object] = {}

    def work() -> None:
        try:
            fd = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            finally:
                os.close(fd)
            result["landing"] = connect(dst, port, **kw)  # type: ignore[arg-type]
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    t = threading.Thread(target=work, name=f"probe-{netns}")
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["landing"]  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (`python -m ambientlab.inpod_emulate`)."""
    parser = argparse.ArgumentParser(prog="ambientlab.inpod_emulate")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="listen and report every accepted connection")
    s.add_argument("--id", required=True, help="logical netns id reported in landings")
    s.add_argument("--listen", action="append", required=True, type=ListenSpec.parse)
    s.add_argument("--log", help="append one JSON line per accepted connection here")
    s.add_argument("--comm", help="process name to show in `ss -p`")
    s.add_argument("--uid", type=int, help="owner of the sockets (fsuid)")
    c = sub.add_parser("connect", help="open one TCP connection, print the Landing as JSON")
    c.add_argument("--dst", required=True)
    c.add_argument("--port", required=True, type=int)
    c.add_argument("--src")
    c.add_argument("--mark", type=lambda v: int(v, 0))
    c.add_argument("--uid", type=int)
    c.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        with contextlib.suppress(KeyboardInterrupt):
            serve(args.id, args.listen, args.log, args.comm, args.uid)
        return 0
    landing = connect(
        args.dst, args.port, src=args.src, mark=args.mark, uid=args.uid, timeout=args.timeout
    )
    sys.stdout.write(json.dumps(asdict(landing), sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
