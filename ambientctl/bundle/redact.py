"""`bundle redact`: a new bundle with addresses and names replaced, consistently everywhere.

Why a new bundle and not an in-place edit: the original's manifest hashes name its exact
content; the redacted one gets fresh sha256s, a fresh `bundle_id` and
`redaction: {applied: true, parent: <original bundle_id>, rules: "v1"}`. The map from
originals to replacements is written BESIDE the output (`<out>.private-map.json`, mode
0600), never inside it: the bundle can be shared, the map stays with the user (sos clean
does the same).

What is replaced (rules "v2", see docs/limits-and-safety.md "Redaction"). Structured
files (manifest, cluster/*.json, config_dump) go field by field through the
classification table of `redact_fields.py` (`redact_walk.py`); kernel dumps through the
text pass below, their comments as free text (`prose`); unknown files are dropped.
The text pass:

- IPv4 / IPv6 addresses and prefixes, by a keyed prefix-preserving bijection over all
  bits (`redact_ip.py`: Crypto-PAn style, private zones self-mapped, documented
  special ranges kept, never the identity otherwise). A network written with its length
  maps to the mapped network of the same length.
  A link-local IPv6 whose interface id is an EUI-64 gets the id of the mapped MAC.
- MAC addresses (consistently; broadcast, multicast and all-zero kept), UUIDs (pod and
  object uids, `cni-<uuid>` netns names).
- Node names, namespace names, pod / Service / ServiceAccount / owner / container / app
  label names, netns names, in file contents AND paths. Names are matched as whole
  tokens (a node `ambient-worker` is not touched inside `ambient-worker2`). A name that
  extends a known name with hash-like segments (`sleep-7b85956664-z6qh7` from
  `sleep-7b85956664` from `sleep`) maps to the mapped base plus the same segments, so
  Deployment / ReplicaSet / pod-prefix selectors still resolve.

Deliberately kept: the namespaces `default`, `kube-system`, `kube-public`,
`kube-node-lease`, `istio-system`, `local-path-storage` (infrastructure, not identifying;
`default` is also an iproute2 keyword), and the names of objects inside the infrastructure
namespaces (ztunnel, istiod, coredns); veth names (random); chain names and their
hashes (KUBE-SVC-XXXX). Words that are also keywords or well-known values (`local`,
`main`, `ambient`, `kubernetes`, ...) are never mapped; a name equal to one of them is
kept and reported as a warning.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import ipaddress
import json
import os
import re
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ambientctl.bundle.layout import CLUSTER_FILES, MANIFEST, split_netns_dir
from ambientctl.bundle.manifest import EntrySpool, Manifest
from ambientctl.bundle.reader import open_bundle
from ambientctl.bundle.redact_fields import MANIFEST_FIELDS, file_kind, table_for
from ambientctl.bundle.redact_ip import V4_ZONES, V6_ZONES, PrefixMap
from ambientctl.bundle.redact_walk import Walker
from ambientctl.bundle.writer import (
    SpooledManifest,
    bundle_name,
    check_output_path,
    rfc3339,
    write_prepared,
)
from ambientctl.bundle.ztunnel_shared import split_dump
from ambientctl.errors import BundleError, UsageError

RULES = "v2"
MAP_SCHEMA = "ambientctl.redaction-map/v1"

KEPT_NAMESPACES = frozenset(
    {"default", "kube-system", "kube-public", "kube-node-lease", "istio-system",
     "local-path-storage"}
)
# Objects in these namespaces are mesh / cluster infrastructure: their names are kept.
INFRA_NAMESPACES = KEPT_NAMESPACES - {"default"}

# Never mapped: iproute2 / iptables / ss keywords and the well-known values the analyzers
# and Istio read (label values, component names). Mapping one of them in free text would
# change meaning (`table local`, `dataplane-mode: ambient`).
RESERVED_WORDS = frozenset(
    """
    all any default local main host link global site nowhere universe lo eth0 eth1 ens
    broadcast multicast unicast blackhole unreachable prohibit throw nat filter mangle raw
    security inet inet6 tcp udp sctp icmp http https http2 grpc tls mtls dns metrics
    true false none null enabled disabled on off yes no
    ambient sidecar istio istiod ztunnel waypoint istio-proxy istio-init istio-validation
    istio-cni istio-cni-node install-cni discovery kubernetes kube-dns coredns kube-proxy
    kindnet kindnet-cni local-path-provisioner cluster node nodes pod pods service
    services namespace namespaces mesh app version istioin istioout pistioin pistioout
    """.split()  # noqa: SIM905 - a word list reads better as text
)

# ---------------------------------------------------------------------------- addresses


def _keyed(key: bytes, label: str, value: str, n: int) -> bytes:
    return hmac.new(key, f"{label}:{value}".encode(), hashlib.sha256).digest()[:n]


# ------------------------------------------------------------------------- text patterns

_UUID = re.compile(
    r"(?<![0-9A-Za-z])[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
    r"[0-9a-fA-F]{12}(?![0-9A-Za-z])"
)
_V4 = r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}"
# One pass for every address form, so that nothing is mapped twice:
#  1. nft JSON prefixes: {"addr": "10.96.0.0", "len": 12} (network and length apart)
#  2. anything with two colons: IPv6 (with an optional /len and a dotted v4 tail) or MAC
#  3. dotted quads with an optional /len (`10.244.1.0/24`, `10.244.2.3:15008`)
_ADDR = re.compile(
    r'(?P<nft>"addr":\s*")(?P<nftip>[0-9A-Fa-f:.]+)(?P<nftmid>",\s*"len":\s*)(?P<nftlen>\d+)'
    r"|(?<![\w:.])(?P<v6>(?=[0-9A-Fa-f:]*:[0-9A-Fa-f]*:)[0-9A-Fa-f:]+(?:\.\d{1,3}){0,3})"
    r"(?:/(?P<v6len>\d{1,3}))?(?![\w:])"
    r"|(?<![\w.])(?P<v4>" + _V4 + r")(?:/(?P<v4len>\d{1,2})(?!\d))?(?!\w|\.\d)"
)
_V4_ONLY = re.compile(r"(?<![\w.])(?P<v4>" + _V4 + r")(?P<v4len>)(?!\w|\.\d)")
_MAC = re.compile(r"^[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}$")
# Name-like tokens: DNS labels and subdomains, never ending in "-" or ".".
_TOKEN = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
# Generated suffixes (pod-template hashes, pod suffixes: Kubernetes' vowel-free
# alphabet) and short versions ("v1"): kept when a name extends a known base with them.
_HASHLIKE = re.compile(r"^(?:(?=[a-z]*\d)[a-z0-9]{1,10}|[bcdfghjklmnpqrstvwxz2456789]{5,10})$")


@dataclass
class Redactor:
    """The consistent replacement of every identifier; `text()` applies it to a string."""

    key: bytes
    names: dict[str, str] = field(default_factory=dict)
    name_kinds: dict[str, set[str]] = field(default_factory=dict)
    ips: dict[str, str] = field(default_factory=dict)
    macs: dict[str, str] = field(default_factory=dict)
    uuids: dict[str, str] = field(default_factory=dict)
    opaque: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    unclassified: set[str] = field(default_factory=set)
    infra_names: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.v4 = PrefixMap(self.key, 32, V4_ZONES)
        self.v6 = PrefixMap(self.key, 128, V6_ZONES)
        self._mac_out: set[str] = set()
        self._taken: set[str] = set()
        self._counters: dict[str, int] = {}
        self._opaque_out: set[str] = set()
        self._literal_re: re.Pattern[str] | None = None
        self._literals: dict[str, str] = {}
        # Memos: a node dump repeats each address and comment many times (630k-rule
        # kube-proxy dumps name every endpoint in 4 lines).
        self._addr_done: dict[str, str] = {}
        self._prose_done: dict[str, str] = {}

    # ------------------------------------------------------------------ names
    def add_name(self, name: object, kind: str) -> None:
        """Register an identifier of `kind` (node, namespace, pod, service, ...).

        `name` is whatever the document held there: anything but a non-empty string is
        ignored, so callers pass raw JSON values without checking them first."""
        if not isinstance(name, str) or not name:
            return
        name = name.strip()
        if name in RESERVED_WORDS or (kind == "namespace" and name in KEPT_NAMESPACES):
            if kind in ("node", "pod") or (kind == "namespace" and name not in KEPT_NAMESPACES):
                self.warnings.append(f"{kind} name {name!r} kept: it is also a keyword")
            return
        if len(name) < 3 or name.isdigit() or not _TOKEN.fullmatch(name):
            self.warnings.append(f"{kind} name {name!r} kept: too short or not a name")
            return
        self.name_kinds.setdefault(name, set()).add(kind)
        if kind == "node" and "." in name:
            self.add_name(name.split(".", 1)[0], "node")

    def is_kept_name(self, name: str, kind: str) -> bool:
        """A name deliberately kept: a keyword, a kept namespace, an infrastructure object."""
        return (name in RESERVED_WORDS or name in KEPT_NAMESPACES or name in self.infra_names
                or (kind == "namespace" and name in KEPT_NAMESPACES))

    def _fresh(self, kind: str) -> str:
        prefix = {"node": "node", "namespace": "ns", "netns": "netns"}.get(kind, "app")
        while True:
            n = self._counters.get(prefix, 0) + 1
            self._counters[prefix] = n
            cand = f"{prefix}-r{n}"
            if cand not in self.name_kinds and cand not in self._taken:
                return cand

    def finish_names(self) -> None:
        """Give every registered name its replacement, bases before what extends them."""
        order = ("node", "namespace", "service", "app", "owner", "serviceaccount", "pod",
                 "netns")
        for name in sorted(self.name_kinds, key=lambda n: (len(n), n)):
            kinds = self.name_kinds[name]
            new = None
            # `sleep-7b85956664-z6qh7` = mapped(`sleep-7b85956664`) + "-z6qh7"
            parts = name.split("-")
            for cut in range(len(parts) - 1, 0, -1):
                base = "-".join(parts[:cut])
                rest = parts[cut:]
                if base in self.names and all(_HASHLIKE.match(p) for p in rest):
                    new = self.names[base] + "-" + "-".join(rest)
                    break
            if new is None or new in self.name_kinds or new in self._taken:
                kind = next((k for k in order if k in kinds), "app")
                new = self._fresh(kind)
            self._taken.add(new)
            self.names[name] = new

    def _token(self, m: re.Match[str]) -> str:
        tok = m.group(0)
        got = self.names.get(tok)
        if got is not None:
            return got
        if "." in tok:
            parts = tok.split(".")
            if any(p in self.names for p in parts):
                return ".".join(self.names.get(p, p) for p in parts)
        return tok

    # ------------------------------------------------------------------ addresses
    def _ip(self, text: str, length: int | None) -> str | None:
        """The mapped form of an address (with /length when given), None if not one."""
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            return None
        if ip.version == 6 and ip.ipv4_mapped is not None:
            inner = self._ip(str(ip.ipv4_mapped), None)
            assert inner is not None  # an IPv4 address without a length always maps
            out = text[: text.rfind(":") + 1] + inner if "." in text else \
                str(ipaddress.IPv6Address((0xFFFF << 32) | int(ipaddress.IPv4Address(inner))))
            return out if length is None else f"{out}/{length}"
        pm = self.v4 if ip.version == 4 else self.v6
        width = pm.width
        if length is not None and length > width:
            return None
        a = int(ip)
        if ip.version == 6 and (a >> 118) == (0xFE80 >> 6) and ((a >> 24) & 0xFFFF) == 0xFFFE:
            b = self._eui64(a)
        else:
            b = pm.map(a)
            host_mask = (1 << (width - length)) - 1 if length is not None else 0
            if length is not None and length < width and not (a & host_mask):
                b &= ~host_mask  # a network stays a network of the same length
        if b == a:
            return text if length is None else f"{text}/{length}"
        new = str(ipaddress.ip_address(b)) if ip.version == 6 else str(ipaddress.IPv4Address(b))
        self.ips[str(ip)] = new
        return new if length is None else f"{new}/{length}"

    def _eui64(self, a: int) -> int:
        """fe80::/64 with an EUI-64 interface id: rebuild the id from the mapped MAC."""
        iid = a & ((1 << 64) - 1)
        b = iid.to_bytes(8, "big")
        mac = bytes([b[0] ^ 0x02, b[1], b[2], b[5], b[6], b[7]])
        text = ":".join(f"{x:02x}" for x in mac)
        new = bytes(int(x, 16) for x in self.mac(text).split(":"))
        iid2 = bytes([new[0] ^ 0x02, new[1], new[2], 0xFF, 0xFE, new[3], new[4], new[5]])
        return (a >> 64 << 64) | int.from_bytes(iid2, "big")

    def mac(self, text: str) -> str:
        """The consistent replacement of a MAC (multicast, broadcast, zero kept)."""
        low = text.lower()
        first = int(low[:2], 16)
        if low in ("00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff") or first & 1:
            return text
        got = self.macs.get(low)
        if got is None:
            n = 0
            while True:
                raw = bytearray(_keyed(self.key, f"mac{n}", low, 6))
                raw[0] = (raw[0] & 0xFC) | (first & 0x03)  # keep the local / group bits
                got = ":".join(f"{x:02x}" for x in raw)
                if got != low and got not in self._mac_out:
                    break
                n += 1
            self._mac_out.add(got)
            self.macs[low] = got
        return got.upper() if text.isupper() else got

    def _addr(self, m: re.Match[str]) -> str:
        whole = m.group(0)
        got = self._addr_done.get(whole)
        if got is None:
            got = self._addr_done[whole] = self._addr_new(m)
        return got

    def _addr_new(self, m: re.Match[str]) -> str:
        g = m.groupdict()
        if g.get("nft") is not None:
            ip, nft_len = m.group("nftip"), int(m.group("nftlen"))
            mapped = self._ip(ip, nft_len)
            if mapped is None:
                return m.group(0)
            return m.group("nft") + mapped.rsplit("/", 1)[0] + m.group("nftmid") + str(nft_len)
        if g.get("v6") is not None:
            cand, length = m.group("v6"), m.group("v6len")
            if length is None and _MAC.match(cand):
                return self.mac(cand)
            mapped = self._ip(cand, int(length) if length is not None else None)
            if mapped is not None:
                return mapped
            # not an address (a time "06:44:37"): only a dotted quad inside may still be one
            return _V4_ONLY.sub(self._addr, cand) + (f"/{length}" if length is not None else "")
        ip, length = m.group("v4"), m.group("v4len") or None
        mapped = self._ip(ip, int(length) if length is not None else None)
        return m.group(0) if mapped is None else mapped

    def _uuid(self, m: re.Match[str]) -> str:
        low = m.group(0).lower()
        got = self.uuids.get(low)
        if got is None:
            h = bytearray(_keyed(self.key, "uuid", low, 16))
            h[6] = (h[6] & 0x0F) | 0x40
            h[8] = (h[8] & 0x3F) | 0x80
            x = h.hex()
            got = f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"
            self.uuids[low] = got
        return got

    # ------------------------------------------------------------------ apply
    def text(self, s: str) -> str:
        """Redact one string: literals, names, then UUIDs, then addresses (each output final)."""
        if self._literals:
            s = self._literal_sub(s)
        if self.names:
            s = _TOKEN.sub(self._token, s)
        s = _UUID.sub(self._uuid, s)
        return _ADDR.sub(self._addr, s)

    def dump(self, s: str) -> str:
        """A kernel dump: `text()`, with rule / set comments redacted as prose.

        Comments are redacted first and parked behind NUL-delimited placeholders (NUL never
        occurs in a text dump), so the one `text()` pass over the whole file never maps
        an already-mapped address twice.
        """
        if "\0" in s:
            return self._dump_segments(s)
        parked: list[str] = []

        def park(m: re.Match[str]) -> str:
            comment = m.group("c")
            done = self._prose_done.get(comment)
            if done is None:
                done = self._prose_done[comment] = self.prose(comment)
            parked.append(done)
            return m.group(0)[: m.start("c") - m.start(0)] + f"\0{len(parked) - 1}\0"

        s = self.text(_COMMENT.sub(park, s))
        return _PARKED.sub(lambda m: parked[int(m.group(1))], s) if parked else s

    def _dump_segments(self, s: str) -> str:
        out: list[str] = []
        last = 0
        for m in _COMMENT.finditer(s):
            out.append(self.text(s[last:m.start("c")]))
            out.append(self.prose(m.group("c")))
            last = m.end("c")
        out.append(self.text(s[last:]))
        return "".join(out)

    def prose(self, s: str) -> str:
        """Free text (stderr, notes, comments): `text()` plus hostnames, SPIFFE ids, ARNs,
        users and e-mail addresses, which only free text holds."""
        if self._literals:
            s = self._literal_sub(s)
        s = _ARN.sub(lambda m: self.opaque_value("arn", m.group(0)), s)
        s = _SPIFFE.sub(self._spiffe, s)
        s = _USER_AT.sub(lambda m: self.opaque_value("user", m.group(1)) + "@", s)
        s = _HOSTNAME.sub(lambda m: self.hostname(m.group(0)), s)
        return self.text(s)

    # ------------------------------------------------------------------ opaque values
    def opaque_value(self, kind: str, value: str, *, literal: bool = False) -> str:
        """A consistent token (`kind-rN`) for a value that must not survive at all.

        With `literal`, the value is also replaced wherever it appears verbatim in any
        other file (a kube context or an image named in stderr).
        """
        if value == "" or value in self._opaque_out:
            return value
        got = self.opaque.get(value)
        if got is None:
            got = self._fresh_opaque(kind)
            self.opaque[value] = got
            self._opaque_out.add(got)
        if literal and len(value) >= 4 and value not in self._literals:
            self._literals[value] = got
            self._literal_re = None
        return got

    def _fresh_opaque(self, kind: str) -> str:
        while True:
            n = self._counters.get("opaque:" + kind, 0) + 1
            self._counters["opaque:" + kind] = n
            cand = f"{kind}-r{n}"
            if cand not in self.name_kinds and cand not in self.opaque:
                return cand

    def _literal_sub(self, s: str) -> str:
        if self._literal_re is None:
            alts = sorted(self._literals, key=len, reverse=True)
            self._literal_re = re.compile(
                r"(?<![\w-])(?:" + "|".join(re.escape(a) for a in alts) + r")(?![\w-])")
        return self._literal_re.sub(lambda m: self._literals[m.group(0)], s)

    def hostname(self, host: str) -> str:
        """A DNS name: each label a known name (mapped), a DNS keyword, or opaque."""
        labels = host.split(".")
        if labels[-1].lower() in _FILE_SUFFIXES:
            return host  # a file name (`pods.json`), not a host
        out = []
        for i, label in enumerate(labels):
            low = label.lower()
            if label in self.names:
                out.append(self.names[label])
            elif label in self._opaque_out or low in _DNS_WORDS or (
                    i == len(labels) - 1 and low in _TLDS):
                out.append(label)
            else:
                out.append(self.opaque_value("host", label))
        return ".".join(out)

    def domain(self, value: str) -> str:
        """A trust / cluster domain: `cluster.local` is Kubernetes' default and kept."""
        if value in ("cluster.local", ""):
            return value
        return self.opaque_value("domain", value, literal=True)

    def _spiffe(self, m: re.Match[str]) -> str:
        td, rest = m.group("td"), m.group("rest") or ""
        parts = rest.split("/")
        for i in range(2, len(parts), 2):
            if parts[i - 1] in ("ns", "sa"):
                kind = "namespace" if parts[i - 1] == "ns" else "serviceaccount"
                p = parts[i]
                if p in self.names:
                    parts[i] = self.names[p]
                elif p not in KEPT_NAMESPACES and p not in RESERVED_WORDS:
                    parts[i] = self.opaque_value("ns" if kind == "namespace" else "sa", p)
        return "spiffe://" + self.domain(td) + "/".join(parts)

    def walk(self, doc: Any) -> Any:
        """Redact every string (keys included) of a JSON-like value."""
        if isinstance(doc, str):
            return self.text(doc)
        if isinstance(doc, list):
            return [self.walk(x) for x in doc]
        if isinstance(doc, dict):
            return {self.text(k): self.walk(v) for k, v in doc.items()}
        return doc


_COMMENT = re.compile(
    r'(?:--comment\s+|(?<!-m )(?<![\w-])comment\s+|"comment":\s*)(?P<c>"(?:[^"\\]|\\.)*"|[^\s"]+)')
_PARKED = re.compile("\0(\\d+)\0")
_ARN = re.compile(r"\barn:aws[\w-]*:[\w-]*:[\w-]*:\d*:[^\s\"',;]+")
_SPIFFE = re.compile(r"spiffe://(?P<td>[A-Za-z0-9._-]+)(?P<rest>(?:/[A-Za-z0-9._~-]+)*)")
_USER_AT = re.compile(r"(?<![\w.@-])([A-Za-z0-9._%+-]+)@(?=[A-Za-z0-9\[])")
_HOSTNAME = re.compile(
    r"(?<![\w.-])(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z][A-Za-z0-9-]{0,61}[A-Za-z0-9](?![\w-]|\.[A-Za-z0-9])")
_FILE_SUFFIXES = frozenset({"json", "txt", "gz", "tgz", "tar", "yaml", "yml", "log", "pem",
                            "crt", "key", "sh", "py", "conf", "md", "golden", "partial"})
_DNS_WORDS = frozenset({"svc", "cluster", "local", "default", "kube-system", "istio-system",
                        "kube-public", "kube-node-lease", "www", "localhost", "localdomain"})
_TLDS = frozenset({"com", "net", "org", "io", "dev", "internal", "local", "lan", "corp",
                   "cloud", "example", "invalid", "test", "arpa"})


# -------------------------------------------------------------------------- collecting

_OBJECT_KIND = {"pods": "pod", "services": "service", "namespaces": "namespace",
                "nodes": "node", "endpointslices": "service"}
_APP_LABELS = ("app", "app.kubernetes.io/name", "app.kubernetes.io/instance",
               "service.istio.io/canonical-name", "kubernetes.io/service-name")


def _register_cluster(red: Redactor, kind: str, doc: Any) -> None:
    items = doc.get("items") if isinstance(doc, dict) else None
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        meta = item.get("metadata") or {}
        spec = item.get("spec") or {}
        ns = meta.get("namespace")
        if isinstance(ns, str):
            red.add_name(ns, "namespace")
        if kind == "node":
            red.add_name(meta.get("name"), "node")
            for a in (item.get("status") or {}).get("addresses") or []:
                if isinstance(a, dict) and a.get("type") in ("Hostname", "InternalDNS",
                                                             "ExternalDNS"):
                    red.add_name(a.get("address"), "node")
            continue
        if kind == "namespace":
            red.add_name(meta.get("name"), "namespace")
            continue
        if ns in INFRA_NAMESPACES:
            if isinstance(spec, dict) and isinstance(spec.get("nodeName"), str):
                red.add_name(spec["nodeName"], "node")
            _note_infra(red, meta, spec)
            continue
        red.add_name(meta.get("name"), kind)
        if isinstance(meta.get("generateName"), str):
            red.add_name(meta["generateName"].rstrip("-"), "owner")
        for o in meta.get("ownerReferences") or []:
            if isinstance(o, dict) and isinstance(o.get("name"), str):
                red.add_name(o["name"], "owner")
                if o.get("kind") == "ReplicaSet" and "-" in o["name"]:
                    red.add_name(o["name"].rsplit("-", 1)[0], "app")
        labels = meta.get("labels") or {}
        for key in _APP_LABELS:
            if isinstance(labels, dict) and isinstance(labels.get(key), str):
                red.add_name(labels[key], "app")
        if isinstance(spec, dict):
            if isinstance(spec.get("nodeName"), str):
                red.add_name(spec["nodeName"], "node")
            for key in ("serviceAccountName", "serviceAccount", "hostname", "subdomain"):
                if isinstance(spec.get(key), str):
                    red.add_name(spec[key], "serviceaccount" if "ccount" in key else "pod")
            for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
                if isinstance(c, dict) and isinstance(c.get("name"), str):
                    red.add_name(c["name"], "app")


def _note_infra(red: Redactor, meta: Any, spec: Any) -> None:
    """Names of infrastructure objects (ztunnel, istiod, coredns): kept, analyzers read them."""
    found = [meta.get("name"), meta.get("generateName")]
    found += [o.get("name") for o in meta.get("ownerReferences") or [] if isinstance(o, dict)]
    labels = meta.get("labels")
    if isinstance(labels, dict):
        found += [labels.get(k) for k in _APP_LABELS]
    if isinstance(spec, dict):
        found.append(spec.get("serviceAccountName"))
        for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
            if isinstance(c, dict):
                found.append(c.get("name"))
                found += [p.get("name") for p in c.get("ports") or [] if isinstance(p, dict)]
        for p in spec.get("ports") or []:
            if isinstance(p, dict):
                found += [p.get("name"), p.get("targetPort")]
    red.infra_names.update(str(f).rstrip("-") for f in found if isinstance(f, str) and f)


def _register_manifest(red: Redactor, manifest: Mapping[str, Any] | None) -> None:
    for t in (manifest or {}).get("targets", []) or []:
        if not isinstance(t, dict):
            continue
        if isinstance(t.get("node"), str):
            red.add_name(t["node"], "node")
        pod = t.get("pod")
        if isinstance(pod, dict):
            if isinstance(pod.get("namespace"), str):
                red.add_name(pod["namespace"], "namespace")
            if isinstance(pod.get("name"), str) and pod.get("namespace") not in INFRA_NAMESPACES:
                red.add_name(pod["name"], "pod")
        netns = t.get("netns")
        if isinstance(netns, dict) and isinstance(netns.get("name"), str):
            red.add_name(netns["name"], "netns")


_LINK_NETNS = re.compile(r"link-netns (\S+)")


# -------------------------------------------------------------------------- the command


@dataclass(frozen=True)
class RedactResult:
    """What `redact_bundle` wrote and how much it replaced."""

    path: str
    map_path: str
    bundle_id: str
    parent: str | None
    counts: dict[str, int]
    warnings: tuple[str, ...] = ()


def private_map_path(out: str) -> str:
    """Where the map of a redacted bundle `out` goes: beside it, never inside."""
    return os.path.normpath(out) + ".private-map.json"


def redact_bundle(src_path: str, out_path: str, *, key: bytes | None = None) -> RedactResult:
    """Write a redacted copy of the bundle at `src_path` to `out_path` (dir or .tar.gz).

    `key` seeds the keyed mappings (random by default: two redactions of one bundle do
    not share replacements). Raises `UsageError` when `out_path` or its map exists,
    `BundleError` when the source is unreadable or damaged (hashes are checked on read).
    """
    map_path = private_map_path(out_path)
    check_output_path(out_path)
    if os.path.lexists(map_path):
        raise UsageError(f"{map_path} already exists", hint="choose another output")
    # Streams: one source file in memory at a time. Pass one registers names (cluster
    # objects, paths, link-netns names) and walks the structured files dry; pass two
    # redacts and writes each file as it is read. The Redactor sees every value in the
    # same order as when all files were held at once, so the output is byte for byte the
    # same (tests/test_redact_stream.py compares against that implementation). The
    # manifest streams too: its entries are read a batch at a time (twice: the dry walk,
    # then the rewrite) and the rewritten ones go to an `EntrySpool` (issue 12).
    # each file is read once or twice; the manifest a chunk at a time
    src = open_bundle(src_path, keep_entries=False, stream_manifest=True)
    try:
        red = Redactor(key if key is not None else os.urandom(32))
        parts = src.manifest_parts()
        _register_manifest(red, parts[0] if parts is not None else None)
        rels = [rel for rel in src.paths() if rel != MANIFEST]  # sorted, as paths() is

        def text_of(rel: str) -> str:
            return src.read_bytes(rel).decode("utf-8", errors="surrogateescape")

        def json_of(rel: str, hint: str) -> Any:
            try:
                return json.loads(text_of(rel))
            except ValueError as exc:
                raise BundleError(f"{src_path}: {rel} is not valid JSON ({exc})",
                                  hint=hint) from exc

        present = set(rels)
        for kind_file, rel in CLUSTER_FILES.items():
            if rel in present:
                _register_cluster(red, _OBJECT_KIND[kind_file],
                                  json_of(rel, "redaction needs readable cluster files"))
        del present
        for rel in rels:
            parts_of = rel.split("/")
            if len(parts_of) >= 2 and parts_of[0] == "nodes":
                red.add_name(parts_of[1], "node")
            split = split_netns_dir(rel)
            if split and split[1] is not None:
                red.add_name(split[1], "namespace")
                if split[1] not in INFRA_NAMESPACES:
                    red.add_name(split[2] or "", "pod")
            if rel.endswith("ip-addr.txt"):
                for m in _LINK_NETNS.finditer(text_of(rel)):
                    red.add_name(m.group(1), "netns")
        structured = "redaction reads structured files field by field"
        for rel in rels:  # dry pass: contexts, images -> literals
            table = table_for(rel)
            if table is not None:
                Walker(red, table, rel, dry=True).walk(json_of(rel, structured))
        if parts is not None:
            _walked, pairs = _walk_manifest(Walker(red, MANIFEST_FIELDS, MANIFEST, dry=True),
                                            *parts)
            for _pair in pairs:
                pass  # each entry walked as it is reached, then dropped
        red.finish_names()
        written = _Written(rels)

        def prepared() -> Iterator[tuple[str, bytes]]:
            for i, rel in enumerate(rels):
                kind = file_kind(rel)
                if kind is None:
                    src.read_bytes(rel)  # not copied, but a damaged bundle still fails
                    written.drop(i)
                    red.warnings.append(f"{rel} dropped: not a file type redaction knows")
                    continue
                if kind == "ztunnel_shared":
                    continue  # redacted within the dumps that reference it (below)
                new_rel = red.text(rel)
                table = table_for(rel)
                if table is not None:
                    walked = Walker(red, table, rel, dry=False).walk(json_of(rel, structured))
                    indent = 4 if rel.startswith("cluster/") else 2
                    body = json.dumps(walked, indent=indent, ensure_ascii=False) + "\n"
                else:
                    body = red.dump(text_of(rel))
                if written.clashes(new_rel, red):
                    raise BundleError(f"{src_path}: two files map to one path after redaction",
                                      hint="report this: the name map is not injective")
                data = body.encode("utf-8", errors="surrogateescape")
                if kind == "config_dump":
                    yield from split_again(rel, data)
                    data = stub_of.pop(rel, data)
                written.store(i, data)
                yield new_rel, data
            for i, rel in enumerate(rels):  # shared files no dump references: not copied
                if file_kind(rel) == "ztunnel_shared" and not written.state[i] & written.WRITTEN:
                    src.read_bytes(rel)
                    written.drop(i)
                    red.warnings.append(f"{rel} dropped: no ztunnel config_dump references it")

        stub_of: dict[str, bytes] = {}
        emitted: set[str] = set()  # redacted shared files written (a few per bundle)

        def split_again(rel: str, data: bytes) -> Iterator[tuple[str, bytes]]:
            """A dump stored split is stored split again, its redacted shared sections
            under the name of their new content (the same for every dump that shared
            them: redaction maps equal values alike); `stub_of[rel]` gets the stub."""
            old = src.reassembled_from.get(rel)  # set when json_of read it
            if old is None:
                return  # stored whole: stays whole
            split = split_dump(data)
            if split is None:
                raise BundleError(f"{src_path}: {rel} does not split again after redaction",
                                  hint="report this: redaction changed the dump's shape")
            stub_of[rel] = split.stub
            j = written.index(old)
            if j is not None and not written.state[j] & written.WRITTEN:
                written.store(j, split.shared, new_rel=split.shared_path)
            if split.shared_path not in emitted:
                emitted.add(split.shared_path)
                yield split.shared_path, split.shared

        with EntrySpool() as spool:

            def manifest_doc() -> SpooledManifest:
                head, tail = _redacted_manifest(red, src.manifest_parts(), written, src_path,
                                                spool)
                for path in sorted(red.unclassified):
                    red.warnings.append(f"{path}: field not classified; its values were made "
                                        "opaque")
                return SpooledManifest(head, spool, tail)

            doc = write_prepared(out_path, prepared(), manifest_doc)
    finally:
        src.close()
    counts = {"names": len(red.names), "ips": len(red.ips), "macs": len(red.macs),
              "uuids": len(red.uuids), "opaque": len(red.opaque), "files": written.count(_Written.WRITTEN),
              "dropped": written.count(_Written.DROPPED)}
    _write_map(map_path, red, parent=doc["redaction"]["parent"], bundle_id=doc["bundle_id"],
               out_path=out_path)
    return RedactResult(out_path, map_path, doc["bundle_id"], doc["redaction"]["parent"],
                        counts, tuple(dict.fromkeys(red.warnings)))


class _Written:
    """What pass two did with each source file, in arrays aligned with the sorted source
    paths: written (its size and sha256), dropped, or not reached; and whether a manifest
    entry names it. Issue 12: a dict of new paths and one of (size, hex digest) cost
    ~400 bytes a file (80k files at 200 nodes); here 41, and a path is found by bisection.
    A redacted path is not kept: `Redactor.text` gives it again (a pure function once the
    names are final)."""

    WRITTEN, DROPPED, LISTED = 1, 2, 4

    def __init__(self, rels: list[str]) -> None:
        self.rels = rels
        self.state = bytearray(len(rels))
        self.sizes = array("q", bytes(8 * len(rels)))
        self.digests = bytearray(32 * len(rels))
        self._taken: set[int] = set()  # 64-bit digests of the redacted paths written
        # source index -> new path, where it is not `Redactor.text` of the old one: a
        # ztunnel shared-sections file, named after its redacted content (a few a bundle)
        self.renamed: dict[int, str] = {}

    def index(self, path: object) -> int | None:
        """Where `path` is among the source files, None when it is not one."""
        if not isinstance(path, str) or not path:
            return None
        i = bisect.bisect_left(self.rels, path)
        return i if i < len(self.rels) and self.rels[i] == path else None

    def drop(self, i: int) -> None:
        self.state[i] = self.DROPPED

    def store(self, i: int, data: bytes, *, new_rel: str | None = None) -> None:
        if new_rel is not None:
            self.renamed[i] = new_rel
        self.state[i] = self.WRITTEN
        self.sizes[i] = len(data)
        self.digests[32 * i:32 * i + 32] = hashlib.sha256(data).digest()

    def new_path(self, i: int, red: Redactor) -> str:
        """The path source file `i` was written under."""
        got = self.renamed.get(i)
        return got if got is not None else red.text(self.rels[i])

    def stored(self, i: int) -> tuple[int, str]:
        """(size, sha256 hex) of the redacted bytes written for source file `i`."""
        return self.sizes[i], self.digests[32 * i:32 * i + 32].hex()

    def clashes(self, new_rel: str, red: Redactor) -> bool:
        """Was a file already written under `new_rel`? A 64-bit digest answers "no" at
        once; a digest seen before is confirmed against the paths themselves."""
        key = int.from_bytes(hashlib.blake2b(new_rel.encode("utf-8", "surrogateescape"),
                                             digest_size=8).digest(), "big")
        if key not in self._taken:
            self._taken.add(key)
            return False
        return any(s & self.WRITTEN and self.new_path(j, red) == new_rel
                   for j, s in enumerate(self.state))

    def count(self, what: int) -> int:
        """How many source files were `what` (WRITTEN or DROPPED)."""
        return sum(1 for s in self.state if s & (self.WRITTEN | self.DROPPED) == what)


def _walk_manifest(walker: Walker, header: dict[str, object], entries: Iterator[object],
                   ) -> tuple[dict[str, Any], Iterator[tuple[object, object]]]:
    """The walk of the whole manifest document without holding its entries: `header`
    (the document with `"entries": []`) first, then each entry as `entries` yields it
    (the pairs (entry, walked entry), lazily). The Redactor meets the values in the order
    a walk of the whole document meets them when `entries` is its last key (the writer
    puts it last; an indexed manifest has it last); otherwise the document is walked
    whole, as before."""
    keys = list(header)
    if "entries" in header and keys[-1] != "entries":
        whole = {k: (list(entries) if k == "entries" else v) for k, v in header.items()}
        walked = walker.walk(whole)
        raw, new = whole["entries"], walked.get("entries")
        return walked, iter(zip(raw if isinstance(raw, list) else [],
                                new if isinstance(new, list) else [], strict=False))
    # A walk of the document walks its entries array item by item at "entries[]".
    return walker.walk(header), ((e, walker.walk(e, "entries[]")) for e in entries)


def _redacted_manifest(red: Redactor, parts: tuple[dict[str, object], Iterator[object]] | None,
                       written: _Written, src_path: str, spool: EntrySpool,
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The new manifest's keys before its entries and after them; the entries themselves
    (fields redacted by MANIFEST_FIELDS, each written file's size and sha256 from
    `written`) go to `spool` as they are walked."""
    src, raw_entries = parts if parts is not None else ({}, iter(()))
    walked, pairs = _walk_manifest(Walker(red, MANIFEST_FIELDS, MANIFEST, dry=False), src,
                                   raw_entries)
    for entry, walked_entry in pairs:
        if not isinstance(entry, dict) or not isinstance(walked_entry, dict):
            continue
        new = {k: v for k, v in walked_entry.items() if k not in ("sha256", "size", "path")}
        i = written.index(entry.get("path"))
        state = written.state[i] if i is not None else 0
        if i is not None and state & written.WRITTEN:
            written.state[i] |= written.LISTED
            size, sha = written.stored(i)
            new = {"path": written.new_path(i, red), **new, "size": size, "sha256": sha}
        else:
            if state & written.DROPPED:
                new["note"] = "dropped by redaction: not a file type redaction knows"
            new = {"path": None, **new, "size": None, "sha256": None}
        spool.append(new)
    for i, state in enumerate(written.state):
        if state & written.WRITTEN and not state & written.LISTED:
            # a hand-assembled bundle: every file becomes an entry
            rel = written.new_path(i, red)
            size, sha = written.stored(i)
            spool.append({"path": rel, "spec": rel.rsplit("/", 1)[-1], "target": "file",
                          "transport": "file", "status": "ok", "size": size, "sha256": sha})
    m = Manifest(
        created_at=str(src.get("created_at") or rfc3339(datetime.now(UTC))),
        collection=walked.get("collection") or {"mode": "unknown"},
        targets=walked.get("targets") or [],
        partial=bool(src.get("partial")),
        components=walked.get("components") or {},
    )
    head = m.header(spool.bundle_id())
    # fields this version does not know (made opaque by the walk) follow the entries
    tail = {k: v for k, v in walked.items() if k not in head and k not in ("entries",
                                                                          "redaction")}
    parent = src.get("bundle_id")
    if not isinstance(parent, str) or not parent.startswith("sha256:"):
        parent = "unmanifested:" + red.opaque_value(
            "bundle", os.path.basename(os.path.normpath(src_path)))
    out: dict[str, Any] = {}
    for k, v in head.items():
        out[k] = v
        if k == "partial":
            out["redaction"] = {"applied": True, "parent": parent, "rules": RULES}
    return out, tail


def _write_map(path: str, red: Redactor, *, parent: str, bundle_id: str, out_path: str) -> None:
    doc = {
        "schema": MAP_SCHEMA,
        "rules": RULES,
        "note": "PRIVATE: maps redacted identifiers back to the originals. Do not share.",
        "source_bundle_id": parent,
        "redacted_bundle_id": bundle_id,
        "redacted_bundle": bundle_name(out_path),
        "names": dict(sorted(red.names.items())),
        "name_kinds": {k: sorted(v) for k, v in sorted(red.name_kinds.items())},
        "ips": dict(sorted(red.ips.items())),
        "macs": dict(sorted(red.macs.items())),
        "uuids": dict(sorted(red.uuids.items())),
        "opaque": dict(sorted(red.opaque.items())),
        "unclassified": sorted(red.unclassified),
        "kept_namespaces": sorted(KEPT_NAMESPACES),
        "warnings": list(dict.fromkeys(red.warnings)),
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2, ensure_ascii=False)
        fh.write("\n")


def load_private_map(path: str) -> dict[str, Any]:
    """Read a private map (for tests and for translating answers back)."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


__all__ = ["RedactResult", "Redactor", "load_private_map", "private_map_path",
           "redact_bundle"]
