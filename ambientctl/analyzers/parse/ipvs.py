"""`ipvsadm -Ln --exact` -> the node's IPVS virtual services (kube-proxy's IPVS mode).

Sample (ipvsadm 1.31; `-n` numeric, `--exact` full counters)::

    IP Virtual Server version 1.2.1 (size=4096)
    Prot LocalAddress:Port Scheduler Flags
      -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
    TCP  10.96.0.1:443 rr
      -> 172.18.0.2:6443              Masq    1      0          0
    TCP  10.96.0.10:53 rr persistent 10800
      -> 10.244.0.2:53                Masq    1      0          0
      -> 10.244.0.3:53                Masq    1      0          0
    UDP  [fd00:10:96::a]:53 rr
      -> [fd00:10:244::2]:53          Masq    1      0          0
    FWM  100 rr

A virtual service line is `PROTO ADDR:PORT SCHEDULER [FLAGS...]` (`FWM MARK` for a
firewall-mark service); each `->` line below it is a real server with its forwarding
method (`Masq` = NAT, `Route` = direct routing, `Tunnel`, `Local` = the node itself) and
weight. kube-proxy writes only Masq services (pkg/proxy/ipvs: `FlagMasq`). No IPVS module
loaded prints the two header lines only; a missing binary is not collected at all.
"""

from __future__ import annotations

import ipaddress
import re

from ambientctl.analyzers.parse._common import shorten, split_lines
from ambientctl.errors import ParseError
from ambientctl.model import IpvsRealServer, IpvsService, SourceRef

__all__ = ["parse_ipvsadm"]

_HEADER = re.compile(r"^IP Virtual Server version \S+")
_ADDR = re.compile(r"^(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<v4>[0-9.]+)):(?P<port>\d+)$")


def _hostport(text: str, path: str, line: int) -> tuple[ipaddress.IPv4Address |
                                                        ipaddress.IPv6Address, int]:
    m = _ADDR.match(text)
    if m is None:
        raise ParseError(path, line, f"not an ADDRESS:PORT: {shorten(text)}",
                         hint="collect with `ipvsadm -Ln --exact` (numeric addresses)")
    try:
        ip = ipaddress.ip_address(m.group("v6") or m.group("v4"))
    except ValueError:
        raise ParseError(path, line, f"not an IP address: {shorten(text)}") from None
    port = int(m.group("port"))
    if port > 65535:
        raise ParseError(path, line, f"port out of range: {shorten(text)}")
    return ip, port


def parse_ipvsadm(text: str, path: str) -> tuple[IpvsService, ...]:
    """Parse `ipvsadm -Ln --exact`; raises ParseError on anything else (or a truncated line)."""
    lines = split_lines(text)
    if not lines or not _HEADER.match(lines[0].strip()):
        raise ParseError(path, 1, "not `ipvsadm -Ln` output: no 'IP Virtual Server version' "
                         "header", hint="collect with `ipvsadm -Ln --exact`")
    services: list[IpvsService] = []
    current: dict[str, object] | None = None
    reals: list[IpvsRealServer] = []

    def close() -> None:
        if current is not None:
            services.append(IpvsService(reals=tuple(reals), **current))  # type: ignore[arg-type]

    for no, raw in enumerate(lines, start=1):
        line = raw.strip()
        if no == 1 or not line or line.startswith(("Prot ", "-> RemoteAddress")):
            continue
        toks = line.split()
        if toks[0] == "->":
            if current is None or len(toks) < 4:
                raise ParseError(path, no, f"real server line outside a service or cut short: "
                                 f"{shorten(line)}")
            ip, port = _hostport(toks[1], path, no)
            if not toks[3].isdigit():
                raise ParseError(path, no, f"real server weight {shorten(toks[3])} is not a "
                                 f"number: {shorten(line)}")
            reals.append(IpvsRealServer(ip, port, toks[2], int(toks[3]),
                                        SourceRef(path, no, raw.rstrip())))
            continue
        if toks[0] in ("TCP", "UDP", "SCTP") and len(toks) >= 3:
            close()
            ip, port = _hostport(toks[1], path, no)
            current = {"proto": toks[0].lower(), "address": ip, "port": port,
                       "scheduler": toks[2], "flags": tuple(toks[3:]), "fwmark": None,
                       "source": SourceRef(path, no, raw.rstrip())}
            reals = []
            continue
        if toks[0] == "FWM" and len(toks) >= 3 and toks[1].isdigit():
            close()
            current = {"proto": "fwm", "address": None, "port": None, "scheduler": toks[2],
                       "flags": tuple(toks[3:]), "fwmark": int(toks[1]),
                       "source": SourceRef(path, no, raw.rstrip())}
            reals = []
            continue
        raise ParseError(path, no, f"unexpected line in ipvsadm output: {shorten(line)}")
    close()
    return tuple(services)
