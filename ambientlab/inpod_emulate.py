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

import contextlib
import ctypes
import ipaddress
import json
import os
import selectors
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from ambientlab import emulate
from ambientlab.emulate import (
    IP_TRANSPARENT,
    IPV6_TRANSPARENT,
    SO_MARK,
    Landing,
    answer_forever,
    cli_parser,
    print_landing,
    probe,
    set_comm,
)

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


@dataclass(frozen=True, slots=True)
class ListenSpec(emulate.ListenSpec):
    """`IP:PORT[,transparent][,mark=0xNNN][,reuseport]`; `[::]:P` is dual-stack."""

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


IP_RECVORIGDSTADDR = 20  # linux/in.h: ancillary IP_ORIGDSTADDR on recvmsg (REDIRECTed UDP)


def _udp_answer_forever(sock: socket.socket, netns_id: str, label: str) -> None:
    """Answer each datagram with one JSON landing line (ztunnel's DNS proxy stand-in).

    `local` is the datagram's destination as delivered (IP_ORIGDSTADDR, ip(7)): after a
    REDIRECT that is the proxy's own address. UDP has no SO_ORIGINAL_DST; the NAT shows
    on the way back instead: conntrack rewrites the answer's source to what the client
    sent to, and a connected client socket accepts only that peer.
    """
    while True:
        data, anc, _flags, peer = sock.recvmsg(2048, socket.CMSG_SPACE(16))
        orig = None
        for level, kind, raw in anc:
            if level == socket.IPPROTO_IP and kind == IP_RECVORIGDSTADDR and len(raw) >= 8:
                port = int.from_bytes(raw[2:4], "big")
                orig = f"{ipaddress.IPv4Address(raw[4:8])}:{port}"
        record = {"outcome": "accepted", "netns": netns_id, "listener": label,
                  "local": orig or emulate.fmt_addr(sock.getsockname()), "original_dst": None,
                  "peer": emulate.fmt_addr(peer)}
        with contextlib.suppress(OSError):
            sock.sendto(json.dumps(record, sort_keys=True).encode(), peer)


def serve(
    netns_id: str, specs: list[ListenSpec], log_path: str | None, comm: str | None, uid: int | None,
    udp: list[ListenSpec] | None = None,
) -> None:
    """Listen on every spec, answer each connection with its landing, forever."""
    if comm:
        set_comm(comm)
    for spec in udp or ():
        usock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if spec.mark is not None:
            usock.setsockopt(socket.SOL_SOCKET, SO_MARK, spec.mark)
        usock.setsockopt(socket.IPPROTO_IP, IP_RECVORIGDSTADDR, 1)
        usock.bind((spec.ip, spec.port))
        threading.Thread(target=_udp_answer_forever, args=(usock, netns_id, f"udp:{spec.label}"),
                         daemon=True).start()
    sel = selectors.DefaultSelector()
    with _fsuid(uid):
        for spec in specs:
            sock = spec.open()
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ, spec.label)
    answer_forever(sel, netns_id, log_path)


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
    with sock:
        return probe(sock, dst, port, src=src, mark=mark, timeout=timeout)


def send_udp(dst: str, port: int, *, timeout: float = 2.0) -> Landing:
    """One UDP datagram from the calling thread's netns; who answered, and as what?"""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(timeout)
        try:
            sock.connect((dst, port))
            sock.send(b"ambientlab probe")
            data = sock.recv(4096)
        except TimeoutError:
            return Landing(outcome="timeout", detail=f"no answer within {timeout}s")
        except ConnectionRefusedError:
            return Landing(outcome="refused", detail="ICMP port unreachable")
        rec = json.loads(data)
        return Landing(outcome="accepted", netns=rec["netns"], listener=rec["listener"],
                       local=rec["local"], original_dst=rec["original_dst"], peer=rec["peer"])


def send_udp_in(netns: str, dst: str, port: int, **kw: object) -> Landing:
    """`send_udp()` from inside the named netns."""
    return connect_in(netns, dst, port, _fn=send_udp, **kw)


def connect_in(netns: str, dst: str, port: int, _fn: object = None, **kw: object) -> Landing:
    """`connect()` from inside the named netns (/var/run/netns/NAME), in a helper thread."""
    result: dict[str, object] = {}
    fn = _fn or connect

    def work() -> None:
        try:
            fd = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            finally:
                os.close(fd)
            result["landing"] = fn(dst, port, **kw)  # type: ignore[operator]
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
    parser, s, c = cli_parser("ambientlab.inpod_emulate")
    s.add_argument("--listen", action="append", required=True, type=ListenSpec.parse)
    s.add_argument("--udp", action="append", default=[], type=ListenSpec.parse,
                   help="also answer UDP datagrams on this address (DNS proxy on 15053)")
    s.add_argument("--uid", type=int, help="owner of the sockets (fsuid)")
    c.add_argument("--uid", type=int)
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        with contextlib.suppress(KeyboardInterrupt):
            serve(args.id, args.listen, args.log, args.comm, args.uid, args.udp)
        return 0
    print_landing(connect(
        args.dst, args.port, src=args.src, mark=args.mark, uid=args.uid, timeout=args.timeout
    ))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
