"""The forms a user types for SRC and DST, parsed without looking at the bundle.

kubectl, curl and DNS habits all name the same things, so all are accepted:

    10.244.1.7  fd00::7          an address
    pod/NAME   po/NAME           exactly a pod (kubectl's TYPE/NAME)
    deploy/NAME  deployment/NAME a Deployment's pod
    svc/NAME   service/NAME      a Service
    node/NAME                    a node's own network namespace (host network)
    NS/NAME                      NAME in namespace NS
    NAME.NS                      the same, DNS style
    NAME.NS.svc[.cluster.local]  a Service, as its cluster DNS name
    HOST:PORT  [V6]:PORT         HOST (any form above) and a port
    http://HOST[:PORT]/PATH      a URL: its host, and its port (default 80/443 by scheme)

A pod name may itself contain dots (a DNS subdomain): `NAME.NS` is only a guess, so the
resolver tries the whole text as a name first (`Query.whole`).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from ambientctl.errors import UsageError

_KINDS = {
    "pod": "pod", "po": "pod", "pods": "pod",
    "deploy": "deployment", "deployment": "deployment", "deployments": "deployment",
    "deployment.apps": "deployment",
    "svc": "service", "service": "service", "services": "service",
    "node": "node", "no": "node", "nodes": "node",
}
_SCHEME_PORTS = {"http": 80, "https": 443, "tcp": None, "grpc": None}
_DNS_SUFFIX = re.compile(r"^(?P<name>[^.]+)\.(?P<ns>[^.]+)\.svc(\.[a-z0-9.-]+)?\.?$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class Query:
    """What the user asked for: `kind` is ip|pod|deployment|service|node or None (any)."""

    text: str  # as typed, for messages
    name: str
    kind: str | None = None
    namespace: str | None = None
    port: int | None = None
    whole: str | None = None  # `NAME.NS` guessed from a dotted name: the text as one name


def _port(text: str, value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise UsageError(f"{text!r}: {value!r} is not a port (1-65535)")
    return int(value)


def _split_port(text: str, host: str) -> tuple[str, int | None]:
    """`HOST:PORT` and `[V6]:PORT`; a bare IPv6 address keeps its colons."""
    if host.startswith("["):
        inner, sep, rest = host[1:].partition("]")
        if not sep:
            raise UsageError(f"{text!r}: unclosed '[' in an IPv6 address")
        if rest and not rest.startswith(":"):
            raise UsageError(f"{text!r}: expected ':PORT' after ']'")
        return inner, (_port(text, rest[1:]) if rest else None)
    if host.count(":") == 1:
        name, value = host.split(":")
        return name, _port(text, value)
    return host, None


def parse(text: str) -> Query:
    """Parse SRC/DST syntax (see the module docstring); never consults the bundle."""
    raw = text.strip()
    if not raw:
        raise UsageError("an empty SRC or DST", hint="name a pod, Service, node/NAME or an IP")
    port: int | None = None
    host = raw
    if "://" in raw:
        url = urlsplit(raw)
        if not url.hostname:
            raise UsageError(f"{text!r}: a URL without a host")
        try:
            port = url.port
        except ValueError as exc:
            raise UsageError(f"{text!r}: {exc}") from exc
        if port is None:
            port = _SCHEME_PORTS.get(url.scheme.lower())
        host = url.hostname
    else:
        host, port = _split_port(text, raw)
    try:
        ipaddress.ip_address(host)
        return Query(text, host, "ip", None, port)
    except ValueError:
        pass
    if "/" in host:
        first, rest = host.split("/", 1)
        kind = _KINDS.get(first.lower())
        if kind is not None:
            if not rest or "/" in rest:
                raise UsageError(f"{text!r}: expected {first}/NAME")
            if kind == "node":
                return Query(text, rest, "node", None, port)
            name, ns = rest, None
            m = _DNS_SUFFIX.match(rest)
            if m and kind == "service":
                name, ns = m.group("name"), m.group("ns")
            return Query(text, name, kind, ns, port)
        if "/" in rest:
            raise UsageError(f"{text!r}: expected NAMESPACE/NAME or TYPE/NAME",
                             hint="TYPE is pod, deploy, svc or node")
        return Query(text, rest, None, first, port)
    m = _DNS_SUFFIX.match(host.lower())
    if m:
        return Query(text, m.group("name"), "service", m.group("ns"), port)
    parts = host.split(".")
    if len(parts) == 2 and all(_LABEL.match(p) for p in parts):
        return Query(text, parts[0], None, parts[1], port, whole=host)
    return Query(text, host, None, None, port)
