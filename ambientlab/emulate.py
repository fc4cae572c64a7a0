"""Emulated processes of the lab: ztunnel's listeners, app listeners, and the probe client.

Run inside a namespace with `ip netns exec NS python -m ambientlab.emulate ...`:

    serve   --id ambient-worker/pod/istio-system/ztunnel-nptf6 --comm envoy --log FILE \
            --listen 127.0.0.1:15001,transparent,mark=0x401 \
            --listen 127.0.0.1:15006,transparent,mark=0x402 ...
    connect --dst 10.96.182.142 --port 9080 [--src 10.244.2.4] [--mark 0x401] [--timeout 2]

The emulated ztunnel does what the 2022 Envoy-based ztunnel's sockets did at the kernel
level and nothing more: its listeners are IP_TRANSPARENT (TPROXY only hands packets to
transparent sockets, `iptables-extensions(8)` TPROXY) and carry SO_MARK 0x401 (outbound,
15001) or 0x402 (inbound, 15006/15008). The mark is inherited by the SYN-ACK and the
accepted socket, so the ztunnel netns' `ip rule 20001/20002` route replies back into the
tunnel they came from (`pistioout`/`pistioin`); with mark 0 they would leave through eth0
and the node, which never saw the SYN there, would not hand them to the client.

Every accepted connection is answered with one JSON line and closed - which listener
(`ip:port` it is bound to), getsockname() (the original destination under TPROXY),
getpeername(), SO_ORIGINAL_DST when conntrack knows one - and the same line is appended to
the lab's log. `connect` prints a `Landing` as JSON: the probe API of `SeedLab.connect`.

The socket-level pieces both labs share - address formatting, SO_ORIGINAL_DST, the
accept-and-answer loop, the probe connection and the CLI skeleton - live here and are
imported by `ambientlab.inpod_emulate`, which adds dual-stack, SO_REUSEPORT and socket owners.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import os
import selectors
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass

IP_TRANSPARENT = 19  # <linux/in.h>
IPV6_TRANSPARENT = 75  # <linux/in6.h>
SO_MARK = 36  # <asm-generic/socket.h>
SO_ORIGINAL_DST = 80  # <linux/netfilter_ipv4.h>
IP6T_SO_ORIGINAL_DST = 80  # <linux/netfilter_ipv6/ip6_tables.h>
PR_SET_NAME = 15  # <linux/prctl.h>


@dataclass(frozen=True, slots=True)
class Landing:
    """Where a probe connection ended.

    `outcome` is "accepted" (handshake done and a lab listener answered), "refused" (RST),
    "timeout" (no answer: dropped somewhere) or "unreachable" (an ICMP error or no route).
    When accepted: `netns` is the logical id of the namespace whose listener took it,
    `listener` the "ip:port" that socket is bound to, `local`/`peer` getsockname() and
    getpeername() of the accepted socket, `original_dst` SO_ORIGINAL_DST (None when conntrack
    has no entry). `client` is the connecting socket's own address; `detail` says more
    about a failure.
    """

    outcome: str
    netns: str | None = None
    listener: str | None = None
    local: str | None = None
    original_dst: str | None = None
    peer: str | None = None
    client: str | None = None
    detail: str | None = None

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> Landing:
        """Inverse of `asdict`."""
        names = cls.__dataclass_fields__  # type: ignore[attr-defined]
        return cls(**{k: v for k, v in doc.items() if k in names})  # type: ignore[arg-type]


def fmt_addr(addr: tuple) -> str:  # type: ignore[type-arg]
    """`ip:port` as `ss` prints it: `[v6]:port`, and a v4 peer of a dual-stack socket
    (`::ffff:10.0.0.1`) as plain `10.0.0.1:port`."""
    host = addr[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"


def set_comm(name: str) -> None:
    """Name this process like the real one (`ss -p` shows comm, e.g. "envoy")."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except OSError:
        pass


def original_dst(conn: socket.socket) -> str | None:
    """SO_ORIGINAL_DST (v4 conntrack tuple, also for v4-mapped peers) or IP6T_SO_ORIGINAL_DST;
    None when conntrack has no entry (an AF_INET socket refuses the v6 option)."""
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
    """`IP:PORT[,transparent][,mark=0xNNN]`."""

    ip: str
    port: int
    transparent: bool = False
    mark: int | None = None

    @classmethod
    def parse(cls, text: str) -> ListenSpec:
        """Parse the `--listen` syntax."""
        head, *opts = text.split(",")
        ip, _, port = head.rpartition(":")
        transparent = False
        mark = None
        for opt in opts:
            if opt == "transparent":
                transparent = True
            elif opt.startswith("mark="):
                mark = int(opt[5:], 0)
            else:
                raise ValueError(f"unknown listen option {opt!r}")
        return cls(ip, int(port), transparent, mark)

    def __str__(self) -> str:
        opts = (",transparent" if self.transparent else "") + (
            f",mark={self.mark:#x}" if self.mark is not None else ""
        )
        return f"{self.ip}:{self.port}{opts}"

    @property
    def label(self) -> str:
        """The listener as reported in landings (`ip:port` it is bound to)."""
        return f"{self.ip}:{self.port}"


def serve(netns_id: str, specs: list[ListenSpec], log_path: str | None, comm: str | None) -> None:
    """Listen on every spec, answer each connection with its landing, forever."""
    if comm:
        set_comm(comm)
    sel = selectors.DefaultSelector()
    for spec in specs:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if spec.transparent:
            sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        if spec.mark is not None:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, spec.mark)
        sock.bind((spec.ip, spec.port))
        sock.listen(128)
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, spec.label)
    answer_forever(sel, netns_id, log_path)


def answer_forever(sel: selectors.BaseSelector, netns_id: str, log_path: str | None) -> None:
    """Print "ready", then answer every connection accepted on `sel`'s listeners (each
    registered with its label as data) with one JSON landing line, close it, and append
    the line with a timestamp to `log_path`."""
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if log_path else None
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        for key, _ in sel.select():
            listener: socket.socket = key.fileobj  # type: ignore[assignment]
            try:
                conn, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                continue
            record = {
                "outcome": "accepted",
                "netns": netns_id,
                "listener": key.data,
                "local": fmt_addr(conn.getsockname()),
                "original_dst": original_dst(conn),
                "peer": fmt_addr(peer),
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
    dst: str, port: int, *, src: str | None, mark: int | None, timeout: float
) -> Landing:
    """Open one TCP connection from the current netns and report where it landed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return probe(sock, dst, port, src=src, mark=mark, timeout=timeout)


def probe(
    sock: socket.socket, dst: str, port: int, *, src: str | None, mark: int | None,
    timeout: float,
) -> Landing:
    """Connect the fresh TCP socket `sock` to dst:port and read the listener's landing line.

    `mark` is SO_MARK; `src` binds a source address the netns may not own (ztunnel's
    "original source" connect), which the kernel allows only on an IP_TRANSPARENT socket
    (ip(7); IPV6_TRANSPARENT for AF_INET6). The caller closes `sock`.
    """
    if mark is not None:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
    if src is not None:
        if sock.family == socket.AF_INET6:
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
    client = fmt_addr(sock.getsockname())
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


def cli_parser(
    prog: str,
) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser, argparse.ArgumentParser]:
    """The `serve`/`connect` command line both emulators share: (parser, serve, connect)."""
    parser = argparse.ArgumentParser(prog=prog)
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="listen and report every accepted connection")
    s.add_argument("--id", required=True, help="logical netns id reported in landings")
    s.add_argument("--log", help="append one JSON line per accepted connection here")
    s.add_argument("--comm", help="process name to show in `ss -p`")
    c = sub.add_parser("connect", help="open one TCP connection, print the Landing as JSON")
    c.add_argument("--dst", required=True)
    c.add_argument("--port", required=True, type=int)
    c.add_argument("--src")
    c.add_argument("--mark", type=lambda v: int(v, 0))
    c.add_argument("--timeout", type=float, default=2.0)
    return parser, s, c


def print_landing(landing: Landing) -> None:
    """`connect`'s output: the Landing as one JSON line."""
    sys.stdout.write(json.dumps(asdict(landing), sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (`python -m ambientlab.emulate`)."""
    parser, s, _c = cli_parser("ambientlab.emulate")
    s.add_argument("--listen", action="append", required=True, type=ListenSpec.parse)
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        try:
            serve(args.id, args.listen, args.log, args.comm)
        except KeyboardInterrupt:
            return 0
        return 0
    print_landing(connect(args.dst, args.port, src=args.src, mark=args.mark, timeout=args.timeout))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
