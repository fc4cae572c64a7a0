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


def serve(
    netns_id: str, specs: list[ListenSpec], log_path: str | None, comm: str | None, uid: int | None
) -> None:
    """Listen on every spec, answer each connection with its landing, forever."""
    if comm:
        set_comm(comm)
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
    parser, s, c = cli_parser("ambientlab.inpod_emulate")
    s.add_argument("--listen", action="append", required=True, type=ListenSpec.parse)
    s.add_argument("--uid", type=int, help="owner of the sockets (fsuid)")
    c.add_argument("--uid", type=int)
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        with contextlib.suppress(KeyboardInterrupt):
            serve(args.id, args.listen, args.log, args.comm, args.uid)
        return 0
    print_landing(connect(
        args.dst, args.port, src=args.src, mark=args.mark, uid=args.uid, timeout=args.timeout
    ))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
