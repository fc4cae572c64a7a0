"""Apply the classification table (`redact_fields`) to one parsed JSON document.

Two passes over every structured file: `dry` registers identifiers (names, kube contexts,
images) so that the second pass, and the kernel dumps, replace them wherever they occur;
the second pass returns the redacted document. A path the table does not know is
redacted as opaque (strings and keys) and recorded in `Redactor.unclassified`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import TYPE_CHECKING, Any

from ambientctl.bundle.redact_fields import (
    ANNOTATION_KEYS,
    DYNAMIC_KEYS,
    ISTIO_IMAGES,
    LABEL_KEYS,
    PUBLIC_REGISTRIES,
    prefixes,
    valid,
)

if TYPE_CHECKING:
    from ambientctl.bundle.redact import Redactor

PEM_PLACEHOLDER = "-----BEGIN CERTIFICATE-----\nREDACTED\n-----END CERTIFICATE-----\n"
# Path components that say nothing about a customer (FHS directories, bundle files).
_PATH_WORDS = frozenset({"", ".", "..", "tmp", "var", "run", "netns", "proc", "ns", "net",
                         "home", "root", "work", "cluster", "pods.json", "services.json",
                         "namespaces.json", "nodes.json", "endpointslices.json", "etc",
                         "usr", "opt", "srv", "mnt", "data", "host"})
# argv words kept as they are: ambientctl's subcommands and the catalogue's programs.
_ARGV_WORDS = frozenset({
    "ambientctl", "collect", "trace", "doctor", "bundle", "redact", "verify", "ip", "netns",
    "exec", "nsenter", "--", "ssh", "docker", "kubectl", "port-forward", "sudo", "-n",
    "iptables-save", "ip6tables-save", "iptables-legacy-save", "ip6tables-legacy-save",
    "nft", "list", "ruleset", "ipset", "rule", "route", "show", "table", "all", "addr",
    "ss", "sysctl", "net", "curl", "uname", "-j", "-d", "-6", "-Hltnp", "-Hlunp", "-sS", "--fail",
    "--max-time", "-r", "--version", "-V", "-t", "-c", "-q", "-o", "--local", "--redact",
    "true", "false", "sh", "-ec", "/bin/sh",
})
_OPTION = re.compile(r"^--?[A-Za-z][A-Za-z0-9-]*$")
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")
_LITERAL_KINDS = frozenset({"context", "cluster", "image", "registry", "provider", "arn"})
_SUBTREE = frozenset({"labels", "annotations", "prose"})


class Walker:
    """Redacts one document against one table (see module doc)."""

    def __init__(self, red: Redactor, table: dict[str, tuple[str, str]], where: str,
                 *, dry: bool) -> None:
        self.red = red
        self.table = table
        self.known = prefixes(table)
        self.where = where
        self.dry = dry

    # ------------------------------------------------------------------ walking
    def walk(self, doc: Any, path: str = "") -> Any:
        rule = self.table.get(path)
        if rule is not None and (rule[0] in _SUBTREE or not isinstance(doc, (dict, list))):
            return self.apply(rule[0], doc)
        if isinstance(doc, dict):
            out: dict[str, Any] = {}
            for k, v in doc.items():
                child = f"{path}.{k}" if path else k
                if child in self.known:
                    out[k] = self.walk(v, child)
                    continue
                star = f"{path}.*" if path else "*"
                if star in self.known:
                    out[self.apply(DYNAMIC_KEYS.get(path, "opaque:key"), k)] = self.walk(v, star)
                    continue
                out[self.opaque_tree(k, "key")] = self.unknown(child, v)
            return out
        if isinstance(doc, list):
            child = path + "[]"
            if child in self.known or not path:
                return [self.walk(x, child) for x in doc]
            return self.unknown(child, doc)
        if rule is None and isinstance(doc, str):
            return self.unknown(path, doc)
        return doc  # numbers, booleans, null: no identifier fits in them

    def unknown(self, path: str, value: Any) -> Any:
        self.red.unclassified.add(f"{self.where}: {path}")
        return self.opaque_tree(value, "value")

    def opaque_tree(self, value: Any, kind: str) -> Any:
        if isinstance(value, str):
            return value if self.dry else self.red.opaque_value(kind, value)
        if isinstance(value, list):
            return [self.opaque_tree(x, kind) for x in value]
        if isinstance(value, dict):
            return {self.opaque_tree(k, "key"): self.opaque_tree(v, kind)
                    for k, v in value.items()}
        return value

    # ------------------------------------------------------------------ actions
    def apply(self, action: str, value: Any) -> Any:
        """Redact `value` as `action` says (see the table's action names)."""
        if action == "prose" and not isinstance(value, str):
            return self._each(value, "prose")
        if action == "labels":
            return self.labels(value, LABEL_KEYS, "label")
        if action == "annotations":
            return self.labels(value, ANNOTATION_KEYS, "annotation")
        if not isinstance(value, str):
            return value
        red = self.red
        kind, _, arg = action.partition(":")
        if kind == "regen":
            return value
        if kind == "keep":
            if arg and valid(arg, value):
                return value
            return value if self.dry else red.opaque_value("value", value)
        if kind == "name":
            return self.name(value, arg)
        if kind == "opaque":
            return red.opaque_value(arg, value, literal=arg in _LITERAL_KINDS)
        if kind == "image":
            return self.image(value)
        if kind == "argv":
            return self.argv(value)
        if kind == "path":
            return self.path(value)
        if kind == "label-key":
            return value if value in LABEL_KEYS or value.startswith(
                ("node.kubernetes.io/", "node-role.kubernetes.io/")) else \
                red.opaque_value("label", value)
        if kind == "sidecar-status":
            return self.sidecar_status(value)
        if kind == "pem":
            return PEM_PLACEHOLDER
        if self.dry:
            return value
        if kind == "text":
            return red.text(value)
        if kind == "prose":
            return red.prose(value)
        if kind == "hostname":
            return red.hostname(value) if "." in value else self.name(value, "node")
        if kind == "domain":
            return red.domain(value)
        if kind == "node-address":
            try:
                ipaddress.ip_address(value)
            except ValueError:
                return self.name(value, "node")
            return red.text(value)
        raise AssertionError(f"unknown redaction action {action!r}")

    def _each(self, value: Any, action: str) -> Any:
        if isinstance(value, list):
            return [self._each(x, action) for x in value]
        if isinstance(value, dict):
            return {self._each(k, action): self._each(v, action) for k, v in value.items()}
        return self.apply(action, value) if isinstance(value, str) else value

    def name(self, value: str, kind: str) -> str:
        red = self.red
        if _NUMBER.match(value):
            return value  # a targetPort number
        if self.dry:
            return value  # names are registered by redact.py's object-aware pass
        base, dash = (value[:-1], "-") if value.endswith("-") else (value, "")  # generateName
        if base in red.names:
            return red.names[base] + dash
        if red.is_kept_name(base, kind):
            return value
        return red.opaque_value(kind, value)

    def labels(self, value: Any, keys: dict[str, str], what: str) -> Any:
        if not isinstance(value, dict):
            return self.opaque_tree(value, "value")
        out: dict[str, Any] = {}
        for k, v in value.items():
            rule = keys.get(k) if isinstance(k, str) else None
            if rule is None:
                key = k if self.dry else self.red.opaque_value(what, str(k))
                out[key] = self.opaque_tree(v, "value")
            else:
                out[k] = self.apply(rule, v)
        return out

    def sidecar_status(self, value: str) -> str:
        """`sidecar.istio.io/status` JSON: Istio's own container names stay (classify.py
        reads `initContainers`), every other string becomes opaque."""
        from ambientctl.bundle.redact import RESERVED_WORDS

        try:
            doc = json.loads(value)
        except ValueError:
            return value if self.dry else self.red.opaque_value("value", value)

        def keep(x: Any) -> Any:
            if isinstance(x, str):
                return x if x in RESERVED_WORDS or self.dry else self.red.opaque_value("value", x)
            if isinstance(x, list):
                return [keep(y) for y in x]
            if isinstance(x, dict):
                return {(k if valid("key", str(k)) or k in ("initContainers", "imagePullSecrets")
                         else keep(k)): keep(v) for k, v in x.items()}
            return x

        return json.dumps(keep(doc), separators=(",", ":"))

    def image(self, value: str) -> str:
        ref, at, digest = value.partition("@")
        repo, colon, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "")
        head, _, base = repo.rpartition("/")
        if base in ISTIO_IMAGES and (not tag or valid("version", tag)):
            reg = head if head in PUBLIC_REGISTRIES or not head else \
                self.red.opaque_value("registry", head, literal=True)
            name = f"{reg}/{base}" if reg else base
            return name + colon + tag + at + digest
        return self.red.opaque_value("image", value, literal=True)

    def argv(self, value: str) -> str:
        if value in _ARGV_WORDS or _NUMBER.match(value):
            return value
        if _OPTION.match(value):
            return value
        if value.startswith("-") and "=" in value:
            opt, _, arg = value.partition("=")
            if _OPTION.match(opt):
                return f"{opt}={self.argv(arg)}"
        if value.startswith("/") or value.startswith("./"):
            return self.path(value)
        if self.dry:
            return value
        if value in self.red.names:
            return self.red.names[value]
        if value.startswith("http://127.0.0.1:") or value.startswith("http://localhost:"):
            return value  # the ztunnel admin URL: loopback, fixed
        return self.red.opaque_value("arg", value, literal=True)

    def path(self, value: str) -> str:
        if self.dry:
            return value
        red = self.red
        parts = []
        for comp in value.split("/"):
            if comp in _PATH_WORDS:
                parts.append(comp)
            elif comp in red.names:
                parts.append(red.names[comp])
            else:
                parts.append(red.opaque_value("path", comp))
        return "/".join(parts)


__all__ = ["PEM_PLACEHOLDER", "Walker"]
