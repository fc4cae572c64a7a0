"""Host facts: `sysctl -a` and `ss -Hltnp` output.

`sysctl -a` sample (procps-ng; only `net.*` lines matter, any subset is fine)::

    net.ipv4.conf.all.rp_filter = 0
    net.ipv4.conf.eth0.rp_filter = 2
    net.ipv4.conf.eth0/100.rp_filter = 0
    net.ipv4.ip_forward = 1
    net.ipv4.tcp_rmem = 4096	131072	6291456
    net.ipv6.conf.all.stable_secret =
    sysctl: permission denied on key 'net.ipv6.conf.all.stable_secret'

Variants: a multi-line value is printed as one `name = line` per line (`kernel.core_modes`)
and is joined back with newlines; stderr lines (`sysctl: permission denied on key ...`,
`sysctl: cannot stat /proc/sys/...`, `sysctl: reading key "..."`) merged into the file are
skipped; a value may be empty or hold tabs (kept verbatim); a dot inside an interface name is
printed as `/`. An empty file is a ParseError: `sysctl -a` always prints hundreds of lines, so
the command failed.

`ss -Hltnp` sample (iproute2 6.1; `ss -ltnp`/`ss -ntlp` print a `State ...` header first, and
`ss -a` a leading `Netid` column)::

    LISTEN 0      4096       127.0.0.1:15001      0.0.0.0:*    users:(("ztunnel",pid=1,fd=3))
    LISTEN 0      128     127.0.0.1%lo:53         0.0.0.0:*    users:(("coredns",pid=9,fd=5))
    LISTEN 0      5               [::]:15009         [::]:*
    LISTEN 0      4096               *:15008            *:*    users:(("ztunnel",pid=1,fd=4))
    LISTEN 0      5     [::ffff:127.0.0.1]:80            *:*

How ss prints wildcards (ss.c `inet_addr_print`, checked on this kernel with real sockets):
`0.0.0.0` is the IPv4 wildcard (family 4); `*` is an IPv6 wildcard socket *without*
IPV6_V6ONLY, which also accepts IPv4 (family None, dual stack); `[::]` is an IPv6 wildcard
*with* IPV6_V6ONLY (family 6, IPv6 only). All three get `address=None`. Very old ss printed
`:::PORT` for every IPv6 wildcard: read as dual stack. An empty file is valid (nothing listens).

>>> line = 'LISTEN 0 4096 *:15008 *:* users:(("ztunnel",pid=1,fd=4))\\n'
>>> ls = parse_ss_listen(line, "ss-listen.txt")
>>> ls[0].address, ls[0].family, ls[0].port, ls[0].process
(None, None, 15008, 'users:(("ztunnel",pid=1,fd=4))')
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping

from ambientctl import model
from ambientctl.analyzers.parse._common import shorten, split_lines
from ambientctl.errors import ParseError

__all__ = ["Sysctls", "parse_ss_listen", "parse_sysctl"]

_SYSCTL_LINE = re.compile(r"^([^\s=]+)\s*=\s?(.*)$")
# The same grammar over a whole file at once (re.M, so `^`/`$` are line ends): a line that is
# blank, a `sysctl: ` stderr line or `name = value` passes; anything else is the first bad line.
# `[^\S\n]` is `\s` without the newline, so no match ever spans two lines.
_SYSCTL_BAD_LINE = re.compile(r"^(?!sysctl: )(?![^\s=]+[^\S\n]*=)(?![^\S\n]*$)", re.M)
_SYSCTL_ANY_VALUE = re.compile(r"^(?!sysctl: )[^\s=]+[^\S\n]*=", re.M)


class Sysctls(Mapping[str, model.Sysctl]):
    """`sysctl -a` output as name -> `Sysctl`, indexed on first use, objects built on lookup.

    Why lazy: every netns of every node carries ~1,000 `net.*` lines and a check or the walk
    reads a handful of them (rp_filter, ip_forward, route_localnet) in a few namespaces; at
    50 nodes building every line's object was 44% of loading a bundle. The file is checked
    whole at parse time by two C-level regex scans (so a malformed line is still a
    ParseError naming its line when the snapshot is built); lines are split and indexed the
    first time any key is asked for, and a `Sysctl` is made when that key is read.
    """

    __slots__ = ("_text", "_path", "_index", "_made")

    def __init__(self, text: str, path: str) -> None:
        self._text = text
        self._path = path
        self._index: dict[str, list[tuple[int, str]]] | None = None
        self._made: dict[str, model.Sysctl] = {}

    def _lines_index(self) -> dict[str, list[tuple[int, str]]]:
        if self._index is None:
            index: dict[str, list[tuple[int, str]]] = {}
            lines = self._text.split("\n")  # "\r\n" was folded once by parse_sysctl
            if lines[-1] == "":
                lines.pop()
            for idx, line in enumerate(lines):
                if not line.strip() or line.startswith("sysctl: "):
                    continue
                name = line.partition("=")[0].rstrip()  # == _SYSCTL_LINE's group 1 (checked)
                index.setdefault(name, []).append((idx, line))
            self._index = index
        return self._index

    def __getitem__(self, name: str) -> model.Sysctl:
        got = self._made.get(name)
        if got is not None:
            return got
        where = self._lines_index()[name]  # KeyError: not collected
        values = []
        for _, line in where:
            m = _SYSCTL_LINE.match(line)
            assert m is not None  # the whole file matched the grammar at parse time
            values.append(m.group(2))
        idx, line = where[0]
        # A multi-line value (kernel.core_modes) is printed as one "name = line" per line.
        got = model.Sysctl(name=name, value="\n".join(values),
                           source=model.SourceRef(self._path, idx + 1, line))
        self._made[name] = got
        return got

    def __iter__(self) -> Iterator[str]:
        return iter(self._lines_index())

    def __len__(self) -> int:
        return len(self._lines_index())

    def __contains__(self, name: object) -> bool:
        return name in self._lines_index()

    def __bool__(self) -> bool:
        # Without this, `bool()` falls back to `__len__` and indexes every line: the
        # snapshot asks it of every namespace it parses ("parsed" or "empty"), and doctor
        # parses every namespace, so it cost more than all the lookups checks make.
        if self._index is not None:
            return bool(self._index)
        return _SYSCTL_ANY_VALUE.search(self._text) is not None

    def __reduce__(self) -> tuple[object, ...]:
        return (Sysctls, (self._text, self._path))

    def relocated(self, old: str, new: str) -> Sysctls:
        """The same text read from file `new` (`parse.reuse`): the line index, which names
        no file, is built once and shared; each copy makes its own `Sysctl`s."""
        if self._path != old:
            from ambientctl.analyzers.parse.reuse import NotRelocatable

            raise NotRelocatable(f"Sysctls of {self._path}, not {old}")
        out = Sysctls(self._text, new)
        out._index = self._lines_index()
        return out


def parse_sysctl(text: str, path: str) -> Mapping[str, model.Sysctl]:
    """Parse `sysctl -a` (or `sysctl KEY...`) output: name -> value, verbatim."""
    if "\r" in text:
        text = text.replace("\r\n", "\n")  # as split_lines does, once, so lines agree
    bad = _SYSCTL_BAD_LINE.search(text)
    if bad is not None:
        lineno = text.count("\n", 0, bad.start()) + 1
        end = text.find("\n", bad.start())
        line = text[bad.start(): end if end >= 0 else len(text)]
        raise ParseError(
            path, lineno, f"not sysctl output: {shorten(line)} (expected 'name = value')"
        )
    if _SYSCTL_ANY_VALUE.search(text) is None:
        raise ParseError(
            path, None, "no sysctl values: `sysctl -a` always prints many lines",
            hint="the command probably failed; re-collect",
        )  # fmt: skip
    return Sysctls(text, path)


_STATES = {
    "LISTEN", "UNCONN", "ESTAB", "SYN-SENT", "SYN-RECV", "FIN-WAIT-1", "FIN-WAIT-2",
    "TIME-WAIT", "CLOSE-WAIT", "LAST-ACK", "CLOSING", "CLOSED", "UNKNOWN",
}  # fmt: skip
_NETIDS = {
    "tcp",
    "udp",
    "raw",
    "sctp",
    "dccp",
    "mptcp",
    "u_str",
    "u_dgr",
    "u_seq",
    "nl",
    "p_raw",
    "p_dgr",
}


def parse_ss_listen(text: str, path: str, *, proto: str = "tcp") -> tuple[model.Listener, ...]:
    """Parse `ss -Hltnp` / `ss -ltnp` (header optional) into listening sockets.

    `proto` is the protocol of lines without a Netid column: "udp" for `ss -Hlunp`,
    whose bound sockets show as UNCONN.
    """
    default_proto = proto
    out: list[model.Listener] = []
    for idx, line in enumerate(split_lines(text)):
        lineno = idx + 1
        toks = line.split()
        if not toks:
            continue
        if toks[0] in ("State", "Netid") and "Local" in toks:
            continue  # the header of `ss -ltnp`
        proto = default_proto
        if toks[0] in _NETIDS:
            proto = toks.pop(0)
        if (
            len(toks) < 5
            or toks[0] not in _STATES
            or not toks[1].isdigit()
            or not toks[2].isdigit()
        ):
            raise ParseError(
                path,
                lineno,
                f"not ss output: {shorten(line)} (expected 'STATE RECV-Q SEND-Q LOCAL PEER')",
            )
        if toks[0] != "LISTEN" and proto == "tcp":
            continue  # `ss -tnp` without -l: connections are not listeners
        address, family, interface, port = _local(toks[3], path, lineno)
        out.append(
            model.Listener(
                proto=proto,
                address=address,
                port=port,
                source=model.SourceRef(path, lineno, line),
                family=family,
                process=" ".join(toks[5:]) or None,
                interface=interface,
            )
        )
    return tuple(out)


def _local(
    value: str, path: str, line: int
) -> tuple[model.IPAddress | None, int | None, str | None, int]:
    """`127.0.0.1%lo:53` -> (127.0.0.1, 4, "lo", 53); wildcards -> address None."""
    host, sep, port_s = value.rpartition(":")
    if not sep or not host:
        raise ParseError(path, line, f"local address {value!r} has no port")
    if not port_s.isdigit():
        raise ParseError(path, line, f"port {port_s!r} is not numeric (collect with `ss -n`)")
    port = int(port_s)
    interface = None
    if "%" in host:  # bound to a device: `127.0.0.1%lo`, `[fe80::1]%eth0`, `*%eth0`
        host, _, interface = host.rpartition("%")
    if host == "*":
        return None, None, interface, port
    if host == "[::]":
        return None, 6, interface, port
    if host == "::":  # very old ss: `:::22`
        return None, None, interface, port
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ParseError(path, line, f"local address {host!r} is not an IP address") from None
    if addr.is_unspecified:
        return None, addr.version, interface, port
    return addr, addr.version, interface, port
