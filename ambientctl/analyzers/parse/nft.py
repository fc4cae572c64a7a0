"""`nft -j list ruleset` / `nft list ruleset` output -> `model.Ruleset` (+ nft sets as ipsets).

Sample (nft 1.0.6, an in-pod ambient pod netns with Istio's native nftables backend)::

    table inet istio-ambient-nat {
        chain prerouting {
            type nat hook prerouting priority dstnat; policy accept;
            jump istio-prerouting
        }
        chain istio-prerouting {
            meta l4proto tcp ip saddr 169.254.7.127 counter packets 0 bytes 0 accept
            ip daddr != 127.0.0.1 tcp dport != 15008 meta mark & 0x00000fff != 0x00000539 counter packets 0 bytes 0 redirect to :15006
        }
    }

The JSON form (`nft -j`) carries the same rules as expression trees
(`{"match": {"op": "!=", "left": {"&": [{"meta": {"key": "mark"}}, 4095]}, "right": 1337}}`).

Why translate: the simulator evaluates iptables and nft tables alike, so every nft rule is
rewritten into the iptables vocabulary of `model.Match` / `Rule.target` (the names
iptables-save prints): `ip daddr != 127.0.0.1` -> `! -d 127.0.0.1/32`, `meta mark & 0xfff
!= 0x539` -> `-m mark ! --mark 0x539/0xfff`, `redirect to :15006` -> `-j REDIRECT
--to-ports 15006`, `ct mark set ct mark & 0xfffff000 | 0x111` -> `-j CONNMARK --set-xmark
0x111/0xfff`. An expression without an exact equivalent is kept as
`Match(module="nft", option="expr", args=(its nft text,))`, never dropped: the simulator
reports insufficient-info when such a rule decides the path. The text form is first
turned into the same expression trees as the JSON form, so both give identical models.

nft semantics the translation keeps explicit (nft(8), "PAYLOAD EXPRESSION"):

* A payload match carries an implicit protocol dependency: `tcp dport != 15008` only
  matches TCP packets (nft inserts `meta l4proto tcp` and prints it only when it is not
  implied), so the translation adds `-p tcp`. In an `inet` table `ip daddr ...` only
  matches IPv4 packets (implicit `meta nfproto ipv4`): the translation adds `Match(None,
  "-4")` (`-6` for `ip6`), the family selector iptables-restore also accepts. Without it a
  negated `! -d 127.0.0.1/32` would wrongly match every IPv6 packet.
* nft rewrites `x & 0xfffff000 | 0x111` as `x & 0xfffff111 | 0x111` when listing (same
  function). Mark statements are therefore reduced to the kernel's bitwise form
  `new = (old & A) ^ B` and printed as iptables' `--set-xmark B/M` with `M = ~A`
  (iptables-extensions(8) MARK: "zero the bits given by mask and XOR value").
* `tproxy` is not a verdict in nft (evaluation continues unless the rule also says
  `accept`); iptables' TPROXY is terminal. A tproxy rule without `accept` gets the extra
  target option `--nft-no-verdict` so that the difference is visible.
* `counter` and `log` do not change the path and are dropped (counters go to
  `Rule.counters`); a rule comment becomes `-m comment --comment TEXT`.

Known variants:

* Tables owned by iptables-nft (`ip nat`, `ip6 filter`, ...) are SKIPPED: iptables-save is
  their source of truth (`nft -j` shows their matches as opaque `xt` objects). nft prints
  `# Warning: table ip nat is managed by iptables-nft, do not touch!` (to stderr in nft
  1.0.6; honoured when merged into the file). A table is also treated as iptables-nft's when
  it is an ip/ip6 table named filter/nat/mangle/raw/security that holds `xt` expressions
  or whose base chains all carry iptables' built-in names (PREROUTING, OUTPUT, ...).
  Skipped tables are named in `Ruleset.warnings`.
* Priority names in the text form (`priority dstnat`, `priority filter - 5`) are mapped to
  numbers (nft(8) "CHAINS": raw -300, mangle -150, dstnat -100, filter 0, security 50,
  srcnat 100; bridge family: dstnat -300, filter -200, out 100, srcnat 300).
* `nft -a` adds `# handle N` to every line; it is ignored.
* An empty ruleset (no output, or JSON with only `metainfo`) is valid: no tables.

>>> rs = parse_nft_text(
...     "table inet t {\\n\\tchain c {\\n\\t\\ttype nat hook output priority -100; policy accept;\\n"
...     "\\t\\tip daddr != 127.0.0.1 tcp dport 80 redirect to :15001\\n\\t}\\n}\\n", "nft-ruleset.txt")
>>> rule = rs.tables[0].chains["c"].rules[0]
>>> [str(m) for m in rule.matches]
['-4', '! -d 127.0.0.1/32', '-p tcp', '--dport 80']
>>> rule.target, [str(o) for o in rule.target_options]
('REDIRECT', ['--to-ports 15001'])
"""  # noqa: E501 - a verbatim fingerprint table / nft dump, not prose to wrap

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ambientctl import model
from ambientctl.analyzers.parse._common import compact_json, shorten, split_lines
from ambientctl.errors import ParseError

__all__ = [
    "MERGE_KEY",
    "PRIORITY_NAMES",
    "merge_table_listings",
    "nft_sets",
    "parse_nft",
    "parse_nft_json",
    "parse_nft_text",
]

ALL = model.ALL_ONES

# nft(8) "CHAINS" table: standard priority names per family.
PRIORITY_NAMES: dict[str, int] = {
    "raw": -300,
    "mangle": -150,
    "dstnat": -100,
    "filter": 0,
    "security": 50,
    "srcnat": 100,
}
_BRIDGE_PRIORITY_NAMES = {"dstnat": -300, "filter": -200, "out": 100, "srcnat": 300}

# iptables-nft's tables and the names of their base chains per hook.
_XT_TABLES = {"filter", "nat", "mangle", "raw", "security"}
_XT_CHAIN_NAMES = {
    "prerouting": "PREROUTING",
    "input": "INPUT",
    "forward": "FORWARD",
    "output": "OUTPUT",
    "postrouting": "POSTROUTING",
}
_XT_WARNING_RE = re.compile(r"# Warning: table (\S+) (\S+) is managed by iptables-nft")

# iptables prints conntrack states in this order (libxt_conntrack.c print_state).
_CT_STATES = ("INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED", "SNAT", "DNAT")

_PROTO_NUMBERS = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6", 132: "sctp", 33: "dccp"}


# --------------------------------------------------------------------------- public API


def parse_nft(text: str, path: str) -> model.Ruleset:
    """Parse any form: per-table listings (`nft-tables.jsonl`, by name), JSON when the
    first non-blank character is `{`, text otherwise."""
    if path.endswith(".jsonl"):
        return ruleset_and_sets_from_doc(merge_table_listings(text, path), path)[0]
    if text.lstrip()[:1] == "{":
        return parse_nft_json(text, path)
    return parse_nft_text(text, path)


# The metainfo key of a merged document (`merge_table_listings`): which tables were listed
# without their rules, and the kernel's table order.
MERGE_KEY = "ambientctl-merged"
_LISTING_RE = re.compile(r"# nft -j list (chains|table (\S+) (\S+))$")
_SKIPPED_RE = re.compile(r"# skipped table (\S+) (\S+)$")
_EXIT_RE = re.compile(r"# exit (\d+)$")


def merge_table_listings(text: str, path: str) -> dict[str, Any]:
    """`nft-tables.jsonl` -> the one `{"nftables": [...]}` document `nft -j list ruleset`
    would have printed, minus the rules of the tables the collector did not list.

    The file (`collectors.specs.NFT_TABLES_SCRIPT`) is a `# nft -j list chains` line and
    its document (every chain of every table, without rules), then per table either
    `# nft -j list table FAMILY NAME` and its document, or `# skipped table FAMILY NAME`
    (an iptables-nft table name: `iptables-save` holds its rules), or `# not listed: ...`
    (a name the collector would not hand to nft). A listing that failed is followed by
    `# exit N` instead of a document.

    Tables come out in the kernel's order (the order `list chains` prints them, which is
    creation order: `nf_tables_newtable` appends to the netns' table list). A table that
    was not listed keeps its chains (from `list chains`: base chains with their hook,
    priority and handle) and no rule, and is named under `metainfo[MERGE_KEY]["unlisted"]`
    so that no reader mistakes it for an empty table (`_build_ruleset`); its `table` item
    has no handle (only its own listing prints one), so `metainfo[MERGE_KEY]["order"]`
    gives every table's position instead (`nft_hooks` orders equal priorities by it).

    Raises:
        ParseError: a line that is neither one of these comments nor a JSON document
            after one, a document that is not nft's, or no chain listing.
    """
    chains_doc: Any = None
    listed: dict[tuple[str, str], Any] = {}
    skipped: list[tuple[str, str]] = []
    failed: list[str] = []
    current: tuple[str, str] | None | str = "?"  # the listing the next document belongs to
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if line.startswith("#"):
            m = _LISTING_RE.match(line)
            if m is not None:
                current = None if m.group(2) is None else (m.group(2), m.group(3))
                continue
            m = _SKIPPED_RE.match(line)
            if m is not None:
                skipped.append((m.group(1), m.group(2)))
                current = "?"
                continue
            if line.startswith("# not listed: "):  # a name the collector would not pass
                current = "?"
                continue
            m = _EXIT_RE.match(line)
            if m is not None:
                failed.append(f"{current} exit {m.group(1)}")
                current = "?"
                continue
            raise ParseError(path, lineno, f"unknown comment line {shorten(line)!r}")
        if current == "?":
            raise ParseError(path, lineno, "a JSON document without its `# nft -j list ...` line")
        doc = _load_json(line, path)
        if not isinstance(doc, dict) or not isinstance(doc.get("nftables"), list):
            raise ParseError(path, lineno, 'not `nft -j` output: expected {"nftables": [...]}')
        if current is None:
            chains_doc = doc
        else:
            listed[current] = doc  # type: ignore[index]
        current = "?"
    if chains_doc is None:
        raise ParseError(path, None, "no `nft -j list chains` document (truncated capture?)",
                         hint="re-collect; the file must start with the chain listing")
    meta: dict[str, Any] = {}
    chains_of: dict[tuple[str, str], list[Any]] = {}
    for item in chains_doc["nftables"]:
        if isinstance(item, dict) and isinstance(item.get("metainfo"), dict):
            meta = dict(item["metainfo"])
        body = item.get("chain") if isinstance(item, dict) else None
        if isinstance(body, dict):
            chains_of.setdefault((str(body.get("family")), str(body.get("table"))), []).append(item)
    order = list(chains_of)
    order += [t for t in listed if t not in chains_of]  # created after the chain listing
    unlisted = [t for t in order if t not in listed]
    items: list[Any] = []
    for key in order:
        doc = listed.get(key)
        if doc is None:
            items.append({"table": {"family": key[0], "name": key[1]}})
            items.extend(chains_of[key])
        else:
            items.extend(i for i in doc["nftables"] if not (isinstance(i, dict) and "metainfo" in i))
    meta[MERGE_KEY] = {
        "order": [list(t) for t in order],
        "unlisted": [list(t) for t in unlisted],
        "skipped": [list(t) for t in skipped],
        "failed": failed,
    }
    return {"nftables": [{"metainfo": meta}, *items]}


def parse_nft_json(text: str, path: str) -> model.Ruleset:
    """Parse `nft -j list ruleset` into a Ruleset of native nft tables.

    Args:
        text: the file's content.
        path: bundle-relative path, for `SourceRef`s and errors.

    Returns:
        A Ruleset with one `Table(backend="nft")` per native table; iptables-nft tables are
        skipped and named in `warnings`. `header` is "nft <version> (json schema N)".

    Raises:
        ParseError: not JSON, truncated, or not the shape `nft -j` prints.
    """
    doc = _load_json(text, path)
    return _build_ruleset(_objects_from_json(doc, path), path, text_warnings=(),
                          unlisted=_unlisted(doc))


def parse_nft_text(text: str, path: str) -> model.Ruleset:
    """Parse `nft list ruleset` (the text form, for nft builds without JSON support).

    Rules are stored verbatim and translated lazily (`Chain.rules`); a rule whose syntax
    cannot be tokenised raises ParseError on first use. Structure errors (a line outside any
    table, an unclosed block) raise here.
    """
    objects, warnings = _objects_from_text(text, path)
    return _build_ruleset(objects, path, text_warnings=warnings)


def nft_sets(text: str, path: str) -> dict[str, model.IpSet]:
    """The named sets of a dump (JSON or text) as `model.IpSet`s, keyed by set name.

    `type` is "nft:<nft type>" ("nft:ipv4_addr"), `family` "inet"/"inet6" for address
    sets; members keep their element comments (Istio stores the pod UID there). Maps are not
    sets and are left out; sets of iptables-nft tables are kept. When two tables hold a set
    of the same name, the second is keyed "<family> <table> <name>".
    """
    if path.endswith(".jsonl"):
        objects = _objects_from_json(merge_table_listings(text, path), path)
    elif text.lstrip()[:1] == "{":
        objects = _objects_from_json(_load_json(text, path), path)
    else:
        objects, _ = _objects_from_text(text, path)
    return _sets_of(objects, path)


def _sets_of(objects: list[_Obj], path: str) -> dict[str, model.IpSet]:
    out: dict[str, model.IpSet] = {}
    for obj in objects:
        if obj.kind != "set":
            continue
        ipset = _ipset(obj, path)
        key = ipset.name if ipset.name not in out else f"{obj.family} {obj.table} {ipset.name}"
        out[key] = ipset
    return out


def ruleset_and_sets_from_doc(doc: Any, path: str) -> tuple[model.Ruleset, dict[str, model.IpSet]]:
    """`parse_nft_json` and `nft_sets` of one already-decoded `nft -j` document.

    Why: the loader decodes `nft-ruleset.json` once per namespace and derives the ruleset,
    the named sets and the chain registrations from that one document (decoding a large
    dump three times was a third of its load). Raises `ParseError` like both callers.
    """
    objects = _objects_from_json(doc, path)
    return (_build_ruleset(objects, path, text_warnings=(), unlisted=_unlisted(doc)),
            _sets_of(objects, path))


def _unlisted(doc: Any) -> frozenset[tuple[str, str]]:
    """The tables a merged document holds without their rules (`merge_table_listings`)."""
    items = doc.get("nftables") if isinstance(doc, dict) else None
    first = items[0] if isinstance(items, list) and items else None
    meta = first.get("metainfo") if isinstance(first, dict) else None
    merged = meta.get(MERGE_KEY) if isinstance(meta, dict) else None
    if not isinstance(merged, dict):
        return frozenset()
    return frozenset((str(t[0]), str(t[1])) for t in merged.get("unlisted", ())
                     if isinstance(t, list) and len(t) == 2)


# --------------------------------------------------------------------------- intermediate form


@dataclass
class _Obj:
    """One listed object (table, chain, rule or set), from either form, before translation."""

    kind: str  # "table" | "chain" | "rule" | "set"
    family: str
    table: str
    source: model.SourceRef
    data: dict[str, Any] = field(default_factory=dict)
    # rule only: the expression list (JSON) or None until the text is tokenised
    exprs: list[Any] | None = None
    text: str | None = None  # rule text (text form) for lazy translation


def _load_json(text: str, path: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip()):
            reason = f"nft JSON ends early (truncated capture?): {exc.msg}"
        else:
            reason = f"not valid JSON: {exc.msg} (column {exc.colno})"
        hint = "re-collect `nft -j list ruleset`; the file must be complete JSON"
        if text.lstrip()[:1] in ("*", ":", "#"):
            hint = "this looks like iptables-save output, not `nft -j list ruleset`"
        raise ParseError(path, exc.lineno, reason, hint=hint) from None
    except RecursionError:
        raise ParseError(path, None, "nft JSON is nested too deeply to be a real capture",
                         hint="re-collect `nft -j list ruleset`") from None


def _objects_from_json(doc: Any, path: str) -> list[_Obj]:
    if not isinstance(doc, dict) or not isinstance(doc.get("nftables"), list):
        raise ParseError(
            path, None, 'not `nft -j list ruleset` output: expected {"nftables": [...]}'
        )
    out: list[_Obj] = []
    for idx, item in enumerate(doc["nftables"]):
        if not isinstance(item, dict) or len(item) != 1:
            raise ParseError(path, None, f"nftables[{idx}] is not a one-key object")
        ((kind, body),) = item.items()
        if kind == "metainfo":
            if body is not None and not isinstance(body, dict):
                raise ParseError(path, None, f"nftables[{idx}].metainfo is not an object")
            out.append(_Obj("metainfo", "", "", model.SourceRef(path), dict(body or {})))
            continue
        if kind not in ("table", "chain", "rule", "set", "map"):
            continue  # flowtables, named counters, quotas, ct helpers...: no path effect here
        if not isinstance(body, dict) or "family" not in body:
            raise ParseError(path, None, f"nftables[{idx}]: {kind} without a family")
        family = str(body["family"])
        if kind == "table":
            name = _need_str(body, "name", path, idx, kind)
            out.append(
                _Obj(
                    "table",
                    family,
                    name,
                    model.SourceRef(path, None, f"table {family} {name}"),
                    body,
                )
            )
        elif kind == "chain":
            table = _need_str(body, "table", path, idx, kind)
            name = _need_str(body, "name", path, idx, kind)
            out.append(
                _Obj("chain", family, table, model.SourceRef(path, None, _chain_text(body)), body)
            )
        elif kind == "rule":
            table = _need_str(body, "table", path, idx, kind)
            _need_str(body, "chain", path, idx, kind)
            exprs = body.get("expr")
            if not isinstance(exprs, list):
                raise ParseError(path, None, f"nftables[{idx}]: rule without an expr list")
            rtext = render_exprs(exprs)
            if body.get("comment"):
                rtext += f' comment "{body["comment"]}"'
            if "handle" in body:
                rtext += f" # handle {body['handle']}"
            out.append(
                _Obj("rule", family, table, model.SourceRef(path, None, rtext), body, exprs=exprs)
            )
        else:  # set / map
            table = _need_str(body, "table", path, idx, kind)
            _need_str(body, "name", path, idx, kind)
            out.append(
                _Obj(
                    kind,
                    family,
                    table,
                    model.SourceRef(path, None, f"{kind} {body['name']}"),
                    body,
                )
            )
    return out


def _need_str(body: dict[str, Any], key: str, path: str, idx: int, kind: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ParseError(path, None, f"nftables[{idx}]: {kind} without '{key}'")
    return value


def _chain_text(body: dict[str, Any]) -> str:
    head = f"chain {body.get('family')} {body.get('table')} {body.get('name')}"
    if "hook" in body:
        head += (
            f" {{ type {body.get('type')} hook {body.get('hook')} priority {body.get('prio')};"
            f" policy {body.get('policy', 'accept')}; }}"
        )
    return head


# --------------------------------------------------------------------------- ruleset building


def _build_ruleset(objects: list[_Obj], path: str, text_warnings: Iterable[str],
                   unlisted: frozenset[tuple[str, str]] = frozenset()) -> model.Ruleset:
    header: str | None = None
    xt_warned: set[tuple[str, str]] = set()
    warnings: list[str] = []
    for w in text_warnings:
        m = _XT_WARNING_RE.match(w)
        if m:
            xt_warned.add((m.group(1), m.group(2)))
        else:
            warnings.append(w)

    tables: dict[tuple[str, str], _Obj] = {}
    chains: dict[tuple[str, str], list[_Obj]] = {}
    rules: dict[tuple[str, str, str], list[_Obj]] = {}
    # Named sets and maps per table: rules look them up by name (`vmap @service-ips`).
    named: dict[tuple[str, str], dict[str, _Obj]] = {}
    for obj in objects:
        if obj.kind in ("set", "map"):
            named.setdefault((obj.family, obj.table), {})[str(obj.data.get("name"))] = obj
        if obj.kind == "metainfo":
            d = obj.data
            header = (
                f"nft {d.get('version', '?')} (json schema {d.get('json_schema_version', '?')})"
            )
        elif obj.kind == "table":
            tables[(obj.family, obj.table)] = obj
        elif obj.kind == "chain":
            chains.setdefault((obj.family, obj.table), []).append(obj)
        elif obj.kind == "rule":
            key = (obj.family, obj.table, str(obj.data["chain"]))
            rules.setdefault(key, []).append(obj)

    built: list[model.Table] = []
    for (family, tname), tobj in tables.items():
        tchains = chains.get((family, tname), [])
        reason = _iptables_nft_reason(family, tname, tchains, rules, xt_warned)
        unread = (family, tname) in unlisted
        if unread and reason is None and not any("hook" in c.data for c in tchains):
            # No base chain: no packet ever enters it, whatever its rules.
            reason = "collected without its rules, and no base chain"
        if reason is not None:
            warnings.append(
                f"table {family} {tname} is managed by iptables-nft ({reason}); skipped: "
                "it is read through iptables-save"
            )
            continue
        if unread:
            # Its base chains are not iptables-nft's, but its rules were not collected:
            # every base chain gets one rule the simulator cannot evaluate, so that a
            # packet it sees stops with insufficient-info instead of passing "no rules".
            warnings.append(
                f"table {family} {tname} was collected without its rules (an iptables table "
                "name, but base chains iptables-nft does not create): a packet it sees "
                "cannot be decided")
            rules = {**rules, **{
                (family, tname, str(c.data["name"])): [_Obj(
                    "rule", family, tname, c.source, {"chain": c.data["name"]},
                    exprs=[{"__text__": f"rules of table {family} {tname} not collected"}])]
                for c in tchains if "hook" in c.data}}
        built_chains: dict[str, model.Chain] = {}
        for cobj in tchains:
            cname = str(cobj.data["name"])
            base = _base_hook(cobj.data, family, path, cobj.source.line)
            policy = None
            if base is not None:
                policy = str(cobj.data.get("policy") or "accept").upper()
            crules = rules.get((family, tname, cname), [])
            built_chains[cname] = _make_chain(
                tname, cname, policy, cobj.source, base, crules, family,
                named.get((family, tname), {}),
            )
        for (rf, rt, rc), lst in rules.items():
            if (rf, rt) == (family, tname) and rc not in built_chains:
                src = lst[0].source
                raise ParseError(
                    path,
                    src.line,
                    f"rule for chain {rc}, which table {family} {tname} does not declare",
                )
        built.append(
            model.Table(
                family=family, name=tname, backend="nft", chains=built_chains, source=tobj.source
            )
        )
    for (rf, rt, _rc), lst in rules.items():
        if (rf, rt) not in tables:
            raise ParseError(
                path, lst[0].source.line, f"rule for table {rf} {rt}, which is not listed"
            )
    return model.Ruleset(
        tables=tuple(built),
        source=model.SourceRef(path, None, header),
        warnings=tuple(warnings),
        header=header,
    )


def _iptables_nft_reason(
    family: str,
    tname: str,
    tchains: list[_Obj],
    rules: dict[tuple[str, str, str], list[_Obj]],
    warned: set[tuple[str, str]],
) -> str | None:
    if (family, tname) in warned:
        return "nft warns so"
    if family not in ("ip", "ip6") or tname not in _XT_TABLES:
        return None
    for cobj in tchains:
        for robj in rules.get((family, tname, str(cobj.data["name"])), []):
            if _has_xt(robj):
                return "its rules hold xt expressions"
    bases = [c for c in tchains if "hook" in c.data]
    if bases and all(_XT_CHAIN_NAMES.get(str(c.data["hook"])) == c.data["name"] for c in bases):
        return "its base chains carry iptables' built-in names"
    return None


def _has_xt(robj: _Obj) -> bool:
    if robj.exprs is not None:
        return any(isinstance(e, dict) and "xt" in e for e in robj.exprs)
    text = robj.text or ""
    return text.startswith("xt ") or " xt " in text


def _base_hook(
    data: dict[str, Any], family: str, path: str, line: int | None
) -> model.BaseHook | None:
    hook = data.get("hook")
    if not hook:
        return None
    prio = data.get("prio", 0)
    if isinstance(prio, str):
        prio = _priority(prio, family, path, line)
    elif not isinstance(prio, int):
        raise ParseError(path, line, f"chain {data.get('name')}: priority {prio!r} is not a number")
    return model.BaseHook(str(hook), int(prio), str(data.get("type") or "filter"))


def _priority(text: str, family: str, path: str, line: int | None) -> int:
    """`dstnat`, `filter - 5`, `-100` -> a number (nft(8) "CHAINS")."""
    names = _BRIDGE_PRIORITY_NAMES if family == "bridge" else PRIORITY_NAMES
    toks = text.replace("+", " + ").replace(" - ", " -  ").split()
    try:
        if len(toks) == 1:
            return names[toks[0]] if toks[0] in names else int(toks[0])
        if len(toks) == 3 and toks[1] in ("+", "-"):
            base = names[toks[0]]
            off = int(toks[2])
            return base + off if toks[1] == "+" else base - off
    except (KeyError, ValueError):
        pass
    raise ParseError(path, line, f"unknown chain priority {text!r}")


def _make_chain(
    tname: str,
    cname: str,
    policy: str | None,
    source: model.SourceRef,
    base: model.BaseHook | None,
    crules: list[_Obj],
    family: str,
    named: dict[str, _Obj] | None = None,
) -> model.Chain:
    named = named or {}
    if all(r.exprs is not None for r in crules):
        prebuilt = tuple(
            _rule_from_exprs(
                tname, cname, pos, r.exprs or [], r.source, family, r.data.get("comment"),
                named,
            )
            for pos, r in enumerate(crules, start=1)
        )
        return model.Chain(
            table=tname, name=cname, policy=policy, source=source, prebuilt=prebuilt, base=base
        )
    raw = tuple((r.source.line or 0, r.text or "") for r in crules)
    path = source.path

    def tokenizer(chain: model.Chain, pos: int, line: int, text: str) -> model.Rule:
        exprs, comment = text_rule_to_exprs(text, path, line)
        return _rule_from_exprs(
            chain.table, chain.name, pos, exprs, model.SourceRef(path, line, text), family, comment,
            named,
        )

    return model.Chain(
        table=tname,
        name=cname,
        policy=policy,
        source=source,
        raw_rules=raw,
        tokenizer=tokenizer,
        base=base,
    )


# --------------------------------------------------------------------------- translation


class _Untranslatable(Exception):
    """Internal: this expression has no exact iptables equivalent."""


def _nft_expr(expr: Any) -> model.Match:
    return model.Match("nft", "expr", (render_expr(expr),))


def _rule_from_exprs(
    table: str,
    chain: str,
    position: int,
    exprs: list[Any],
    source: model.SourceRef,
    family: str,
    comment: Any = None,
    named: dict[str, _Obj] | None = None,
) -> model.Rule:
    """Translate one rule's expression list into the generic vocabulary.

    Set and map lookups that the iptables vocabulary cannot say (a concatenated key, an
    anonymous set of prefixes/ranges, a verdict map) become `model.NftLookup`s with the
    elements of the table's named set resolved here; several statements (or a verdict map)
    become `model.NftStatement`s run in order, with `target` "NFT".
    """
    named = named or {}
    matches: list[model.Match] = []
    lookups: list[model.NftLookup] = []
    stmts: list[dict[str, Any]] = []
    counters: tuple[int, int] | None = None
    have: set[str] = set()  # implicit dependencies already stated ("-p tcp", "-4")

    def add_dep(m: model.Match) -> None:
        key = str(m)
        if key not in have:
            have.add(key)
            matches.append(m)

    for expr in exprs:
        if not isinstance(expr, dict) or len(expr) != 1:
            matches.append(_nft_expr(expr))
            continue
        ((kind, body),) = expr.items()
        if kind == "__text__":  # a piece of a text rule this reader does not know
            matches.append(model.Match("nft", "expr", (str(body),)))
        elif kind == "match":
            try:
                deps, ms = _translate_match(body, family)
            except _Untranslatable:
                try:
                    lookups.append(_lookup_match(body, named))
                except _Untranslatable:
                    matches.append(_nft_expr(expr))
                continue
            for d in deps:
                add_dep(d)
            for m in ms:
                if m.option in ("-p", "-4", "-6") and not m.negated:
                    add_dep(m)
                else:
                    matches.append(m)
        elif kind == "counter":
            if isinstance(body, dict) and "packets" in body:
                counters = (int(body.get("packets", 0)), int(body.get("bytes", 0)))
        else:
            stmts.append(expr)
    if comment:
        matches.append(model.Match("comment", "--comment", (str(comment),)))

    target, options, goto, extra, statements = _translate_statements(stmts, named)
    matches.extend(extra)
    return model.Rule(
        table=table,
        chain=chain,
        position=position,
        matches=tuple(matches),
        target=target,
        target_options=tuple(options),
        goto=goto,
        source=source,
        counters=counters,
        lookups=tuple(lookups),
        statements=statements,
    )


def _translate_match(body: Any, family: str) -> tuple[list[model.Match], list[model.Match]]:
    """A `match` expression -> (implicit dependencies, matches). Raises _Untranslatable."""
    if not isinstance(body, dict):
        raise _Untranslatable
    op = body.get("op", "==")
    left, right = body.get("left"), body.get("right")
    if op not in ("==", "!=", "in"):
        raise _Untranslatable
    neg = op == "!="
    if not isinstance(left, dict) or len(left) != 1:
        raise _Untranslatable
    ((lk, lv),) = left.items()

    if lk == "payload" and isinstance(lv, dict) and "protocol" in lv and "field" in lv:
        return _payload_match(str(lv["protocol"]), str(lv["field"]), right, neg, family)
    if lk == "meta" and isinstance(lv, dict):
        return [], [_meta_match(str(lv.get("key")), right, neg)]
    if lk == "ct" and isinstance(lv, dict) and set(lv) == {"key"}:
        key = lv["key"]
        if key == "state":
            return [], [model.Match("conntrack", "--ctstate", (_ct_states(right),), neg)]
        if key == "mark":
            return [], [model.Match("connmark", "--mark", (_mark_arg(right, ALL),), neg)]
        if key == "status":
            return [], [model.Match("conntrack", "--ctstatus", (_ct_states(right),), neg)]
        raise _Untranslatable
    if lk == "&" and isinstance(lv, list) and len(lv) == 2 and isinstance(lv[1], int):
        inner, mask = lv
        if inner == {"meta": {"key": "mark"}}:
            return [], [model.Match("mark", "--mark", (_mark_arg(right, mask),), neg)]
        if inner == {"ct": {"key": "mark"}}:
            return [], [model.Match("connmark", "--mark", (_mark_arg(right, mask),), neg)]
        raise _Untranslatable
    if lk == "fib" and isinstance(lv, dict) and lv.get("result") == "type":
        flags = lv.get("flags") or []
        if flags in (["daddr"], ["saddr"]) and isinstance(right, str):
            opt = "--dst-type" if flags == ["daddr"] else "--src-type"
            return [], [model.Match("addrtype", opt, (right.upper(),), neg)]
        raise _Untranslatable
    if lk == "socket" and isinstance(lv, dict) and lv.get("key") == "transparent":
        if right in (1, "1") and not neg:
            return [], [model.Match("socket", "--transparent", ())]
        raise _Untranslatable
    raise _Untranslatable


def _payload_match(
    proto: str, fld: str, right: Any, neg: bool, family: str
) -> tuple[list[model.Match], list[model.Match]]:
    deps: list[model.Match] = []
    if proto in ("ip", "ip6"):
        if family == "inet":
            deps.append(model.Match(None, "-4" if proto == "ip" else "-6", ()))
        if fld in ("saddr", "daddr"):
            opt = "-s" if fld == "saddr" else "-d"
            if isinstance(right, str) and right.startswith("@"):
                return deps, [
                    model.Match(
                        "set", "--match-set", (right[1:], "src" if fld == "saddr" else "dst"), neg
                    )
                ]
            if isinstance(right, dict) and "range" in right:
                lo, hi = right["range"]
                ropt = "--src-range" if fld == "saddr" else "--dst-range"
                return deps, [model.Match("iprange", ropt, (f"{_addr(lo)}-{_addr(hi)}",), neg)]
            return deps, [model.Match(None, opt, (_cidr(right),), neg)]
        if (proto, fld) in (("ip", "protocol"), ("ip6", "nexthdr")):
            return deps, [model.Match(None, "-p", (_proto(right),), neg)]
        raise _Untranslatable
    if proto in ("tcp", "udp") and fld in ("sport", "dport"):
        deps.append(model.Match(None, "-p", (proto,)))
        if isinstance(right, dict) and "set" in right:
            ports = ",".join(_port(p) for p in _set_items(right))
            opt = "--dports" if fld == "dport" else "--sports"
            return deps, [model.Match("multiport", opt, (ports,), neg)]
        return deps, [model.Match(proto, f"--{fld}", (_port(right),), neg)]
    raise _Untranslatable


def _meta_match(key: str, right: Any, neg: bool) -> model.Match:
    if key in ("iifname", "oifname", "iif", "oif"):
        if not isinstance(right, str):
            raise _Untranslatable
        name = right[:-1] + "+" if right.endswith("*") and not right.endswith("\\*") else right
        return model.Match(None, "-i" if key.startswith("i") else "-o", (name,), neg)
    if key == "l4proto":
        return model.Match(None, "-p", (_proto(right),), neg)
    if key == "protocol" and right in ("ip", "ip6"):  # the ethertype
        return model.Match(None, "-4" if right == "ip" else "-6", (), neg)
    if key == "nfproto":
        if right == "ipv4":
            return model.Match(None, "-4", (), neg)
        if right == "ipv6":
            return model.Match(None, "-6", (), neg)
        raise _Untranslatable
    if key == "mark":
        return model.Match("mark", "--mark", (_mark_arg(right, ALL),), neg)
    if key in ("skuid", "skgid"):
        opt = "--uid-owner" if key == "skuid" else "--gid-owner"
        if isinstance(right, int):
            return model.Match("owner", opt, (str(right),), neg)
        if isinstance(right, dict) and "range" in right:
            lo, hi = right["range"]
            return model.Match("owner", opt, (f"{int(lo)}-{int(hi)}",), neg)
        if isinstance(right, str) and right.isdigit():
            return model.Match("owner", opt, (right,), neg)
        raise _Untranslatable
    if key == "pkttype" and isinstance(right, str):
        return model.Match("pkttype", "--pkt-type", (right,), neg)
    raise _Untranslatable


def _ct_states(right: Any) -> str:
    items = (
        right
        if isinstance(right, list)
        else _set_items(right)
        if isinstance(right, dict)
        else [right]
    )
    states = []
    for s in items:
        if not isinstance(s, str):
            raise _Untranslatable
        states.append(s.upper())
    order = {s: i for i, s in enumerate(_CT_STATES)}
    return ",".join(sorted(states, key=lambda s: order.get(s, len(order))))


def _set_items(right: Any) -> list[Any]:
    if not isinstance(right, dict) or not isinstance(right.get("set"), list):
        raise _Untranslatable
    return list(right["set"])


def _int_value(value: Any) -> int:
    if isinstance(value, bool):
        raise _Untranslatable
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            raise _Untranslatable from None
    raise _Untranslatable


def _mark_arg(right: Any, mask: int) -> str:
    value = _int_value(right)
    if mask == ALL:
        return f"{value:#x}"
    return f"{value:#x}/{mask:#x}"


def _addr(value: Any) -> str:
    if not isinstance(value, str):
        raise _Untranslatable
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise _Untranslatable from None


def _cidr(right: Any) -> str:
    """An address or prefix in iptables-save's form (`127.0.0.1/32`)."""
    if isinstance(right, dict) and "prefix" in right:
        p = right["prefix"]
        try:
            return str(ipaddress.ip_network(f"{p['addr']}/{p['len']}", strict=False))
        except (KeyError, TypeError, ValueError):
            raise _Untranslatable from None
    addr = _addr(right)
    return f"{addr}/{32 if ':' not in addr else 128}"


def _proto(right: Any) -> str:
    if isinstance(right, int):
        return _PROTO_NUMBERS.get(right, str(right))
    if isinstance(right, str) and right and not right.startswith("@"):
        return right
    raise _Untranslatable


def _port(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict) and "range" in value:
        lo, hi = value["range"]
        return f"{_int_value(lo)}:{_int_value(hi)}"
    if isinstance(value, str) and value.isdigit():
        return value
    raise _Untranslatable


# ----------------------------------------------------------------- statements -> target


_VERDICTS = {"accept": "ACCEPT", "drop": "DROP", "return": "RETURN"}
_NO_EFFECT = {"log"}  # statements that never change the packet's path


_Statements = tuple[
    str | None, list[model.Match], bool, list[model.Match], tuple[model.NftStatement, ...]
]


def _translate_statements(
    stmts: list[dict[str, Any]], named: dict[str, _Obj] | None = None
) -> _Statements:
    """Statements -> (target, target options, goto, extra leftover matches, statements)."""
    effective = [s for s in stmts if next(iter(s)) not in _NO_EFFECT]
    if not effective:
        if stmts:  # a rule that only logs
            return "LOG", _log_options(stmts[0]["log"]), False, [], ()
        return None, [], False, [], ()
    # `continue` is the default verdict: it changes nothing.
    if effective and next(iter(effective[-1])) == "continue":
        effective = effective[:-1]
        if not effective:
            return None, [], False, [], ()
    try:
        if "tproxy" in effective[0]:
            return (*_tproxy(effective), ())
        if len(effective) == 1 and "vmap" not in effective[0]:
            target, opts, goto = _statement(effective[0])
            return target, opts, goto, [], ()
    except _Untranslatable:
        pass
    # Several statements (`meta mark set 1 accept`), a verdict map, or one statement without
    # an iptables equivalent: statements in order. One that is not modelled keeps its text
    # (target None), so a walk that reaches it stops naming it: it may change the path.
    out: list[model.NftStatement] = []
    for st in effective:
        text = render_expr(st)
        try:
            if "vmap" in st:
                out.append(model.NftStatement(None, vmap=_lookup_vmap(st["vmap"], named or {}),
                                              text=text))
                continue
            target, opts, goto = _statement(st)
            out.append(model.NftStatement(target, tuple(opts), goto, text=text))
        except _Untranslatable:
            out.append(model.NftStatement(None, text=text))
    return "NFT", [], False, [], tuple(out)


# ----------------------------------------------------------------- set and map lookups


def _selector(expr: Any) -> str:
    """A key component in nft's text syntax: `ip daddr`, `meta l4proto`, `numgen random mod 2`."""
    if isinstance(expr, dict) and len(expr) == 1:
        ((k, v),) = expr.items()
        if k == "payload" and isinstance(v, dict) and "protocol" in v and "field" in v:
            return f"{v['protocol']} {v['field']}"
        if k == "meta" and isinstance(v, dict) and "key" in v:
            return f"meta {v['key']}"
        if k == "ct" and isinstance(v, dict) and set(v) == {"key"}:
            return f"ct {v['key']}"
        if k == "numgen" and isinstance(v, dict):
            text = f"numgen {v.get('mode', 'random')} mod {_int_value(v.get('mod'))}"
            off = _int_value(v.get("offset", 0))
            return text + (f" offset {off}" if off else "")
    raise _Untranslatable


def _key(expr: Any) -> tuple[str, ...]:
    if isinstance(expr, dict) and "concat" in expr and isinstance(expr["concat"], list):
        return tuple(_selector(x) for x in expr["concat"])
    return (_selector(expr),)


def _element_parts(val: Any) -> tuple[tuple[str, ...], str | None]:
    """An element key (JSON) -> (part texts, comment)."""
    comment = None
    if isinstance(val, dict) and "elem" in val and isinstance(val["elem"], dict):
        comment = val["elem"].get("comment")
        val = val["elem"].get("val")
    if isinstance(val, dict) and "concat" in val and isinstance(val["concat"], list):
        return tuple(_member_text(x) for x in val["concat"]), comment
    if isinstance(val, list):  # older nft prints a concatenation as a plain list
        return tuple(_member_text(x) for x in val), comment
    return (_member_text(val),), comment


def _verdict(data: Any) -> str:
    if isinstance(data, dict) and len(data) == 1:
        ((k, v),) = data.items()
        if k in ("jump", "goto") and isinstance(v, dict) and isinstance(v.get("target"), str):
            return f"{k} {v['target']}"
        if k in ("accept", "drop", "return", "continue"):
            return k
    raise _Untranslatable


def _elements(data: Any, named: dict[str, _Obj], is_map: bool
              ) -> tuple[tuple[model.NftElement, ...], str | None]:
    """The elements a lookup consults: a named set/map of the table, or an anonymous one."""
    name = None
    if isinstance(data, str) and data.startswith("@"):
        name = data[1:]
        obj = named.get(name)
        if obj is None or (obj.kind == "map") != is_map:
            raise _Untranslatable
        if is_map and obj.data.get("map") != "verdict":
            raise _Untranslatable
        items = obj.data.get("elem") or []
    elif isinstance(data, dict) and "set" in data:
        items = data["set"] if isinstance(data["set"], list) else [data["set"]]
    else:
        items = [data]
    out: list[model.NftElement] = []
    for item in items:
        if is_map:
            if not isinstance(item, list) or len(item) != 2:
                raise _Untranslatable
            parts, comment = _element_parts(item[0])
            out.append(model.NftElement(parts, _verdict(item[1]), comment))
        else:
            parts, comment = _element_parts(item)
            out.append(model.NftElement(parts, None, comment))
    return tuple(out), name


def _lookup_vmap(body: Any, named: dict[str, _Obj]) -> model.NftLookup:
    """`KEY vmap @map` / `KEY vmap { k : verdict, ... }`."""
    if not isinstance(body, dict):
        raise _Untranslatable
    elements, name = _elements(body.get("data"), named, is_map=True)
    return model.NftLookup(_key(body.get("key")), elements, name, is_map=True)


def _lookup_match(body: Any, named: dict[str, _Obj]) -> model.NftLookup:
    """`KEY @set`, `KEY { a, 10.0.0.0/8, 1.2.3.4-1.2.3.9 }`, `KEY != ...` as a set lookup."""
    if not isinstance(body, dict) or body.get("op", "==") not in ("==", "!=", "in"):
        raise _Untranslatable
    right = body.get("right")
    if not (isinstance(right, str) and right.startswith("@")) and not (
        isinstance(right, dict) and "set" in right
    ):
        if not (isinstance(body.get("left"), dict) and "concat" in body["left"]):
            raise _Untranslatable
    elements, name = _elements(right, named, is_map=False)
    return model.NftLookup(_key(body.get("left")), elements, name,
                           negated=body.get("op") == "!=")


def _statement(stmt: dict[str, Any]) -> tuple[str, list[model.Match], bool]:
    ((kind, body),) = stmt.items()
    if kind in _VERDICTS:
        return _VERDICTS[kind], [], False
    if kind in ("jump", "goto"):
        if not isinstance(body, dict) or not isinstance(body.get("target"), str):
            raise _Untranslatable
        return body["target"], [], kind == "goto"
    if kind == "redirect":
        opts = []
        if isinstance(body, dict):
            if "port" in body:
                opts.append(model.Match("REDIRECT", "--to-ports", (_nat_port(body["port"]),)))
            opts.extend(_nat_flags("REDIRECT", body))
        return "REDIRECT", opts, False
    if kind in ("dnat", "snat"):
        if not isinstance(body, dict) or "addr" not in body:
            raise _Untranslatable
        tname = kind.upper()
        spec = _nat_addr(body["addr"])
        if "port" in body:
            spec = (f"[{spec}]" if ":" in spec else spec) + ":" + _nat_port(body["port"])
        opt = "--to-destination" if kind == "dnat" else "--to-source"
        return tname, [model.Match(tname, opt, (spec,)), *_nat_flags(tname, body)], False
    if kind == "masquerade":
        opts = []
        if isinstance(body, dict):
            if "port" in body:
                opts.append(model.Match("MASQUERADE", "--to-ports", (_nat_port(body["port"]),)))
            opts.extend(_nat_flags("MASQUERADE", body))
        return "MASQUERADE", opts, False
    if kind == "notrack":
        return "CT", [model.Match("CT", "--notrack", ())], False
    if kind == "reject":
        opts = []
        if isinstance(body, dict) and body.get("expr") == "port-unreachable":
            pass  # nft's default, as iptables' (icmp-port-unreachable)
        elif isinstance(body, dict) and body.get("expr"):
            how = str(body["expr"])
            if body.get("type") == "tcp reset" or how == "tcp reset":
                how = "tcp-reset"
            elif body.get("type") in ("icmp", "icmpx"):
                how = f"icmp-{how}" if not how.startswith("icmp") else how
            opts.append(model.Match("REJECT", "--reject-with", (how,)))
        elif isinstance(body, dict) and body.get("type") == "tcp reset":
            opts.append(model.Match("REJECT", "--reject-with", ("tcp-reset",)))
        return "REJECT", opts, False
    if kind == "mangle":
        return _mangle(body)
    raise _Untranslatable


def _tproxy(
    stmts: list[dict[str, Any]],
) -> tuple[str | None, list[model.Match], bool, list[model.Match]]:
    """`tproxy [ip] to [A]:P [meta mark set X] [accept]` -> TPROXY --on-port --on-ip --tproxy-mark."""
    body = stmts[0]["tproxy"]
    if not isinstance(body, dict):
        raise _Untranslatable
    opts: list[model.Match] = []
    if "port" in body:
        opts.append(model.Match("TPROXY", "--on-port", (str(_int_value(body["port"])),)))
    else:
        opts.append(model.Match("TPROXY", "--on-port", ("0",)))
    if "addr" in body:
        opts.append(model.Match("TPROXY", "--on-ip", (_addr(body["addr"]),)))
    rest = stmts[1:]
    if rest and "mangle" in rest[0]:
        target, mopts, _ = _mangle(rest[0]["mangle"])
        if target != "MARK":
            raise _Untranslatable
        xmark = mopts[0].args[0]
        opts.append(model.Match("TPROXY", "--tproxy-mark", (xmark,)))
        rest = rest[1:]
    if rest == [{"accept": None}]:
        return "TPROXY", opts, False, []
    if rest:
        raise _Untranslatable
    opts.append(model.Match("TPROXY", "--nft-no-verdict", ()))
    return "TPROXY", opts, False, []


def _nat_addr(addr: Any) -> str:
    if isinstance(addr, dict) and "range" in addr:
        lo, hi = addr["range"]
        return f"{_addr(lo)}-{_addr(hi)}"
    return _addr(addr)


def _nat_port(port: Any) -> str:
    if isinstance(port, dict) and "range" in port:
        lo, hi = port["range"]
        return f"{_int_value(lo)}-{_int_value(hi)}"
    return str(_int_value(port))


def _nat_flags(target: str, body: dict[str, Any]) -> list[model.Match]:
    flags = body.get("flags") or []
    if isinstance(flags, str):
        flags = [flags]
    names = {"random": "--random", "fully-random": "--random-fully", "persistent": "--persistent"}
    out = []
    for f in flags:
        if f not in names:
            raise _Untranslatable
        out.append(model.Match(target, names[f], ()))
    return out


def _log_options(body: Any) -> list[model.Match]:
    if isinstance(body, dict) and "prefix" in body:
        return [model.Match("LOG", "--log-prefix", (str(body["prefix"]),))]
    return []


_META_MARK = {"meta": {"key": "mark"}}
_CT_MARK = {"ct": {"key": "mark"}}


def _affine(expr: Any) -> tuple[str | None, int, int]:
    """Reduce a mark expression to (source, A, B) with value = (source & A) ^ B.

    The kernel's nft_bitwise computes `(reg & mask) ^ xor`; `&`, `|` and `^` by constants
    compose into that form: `(x&A^B) & c` = `x&(A&c) ^ (B&c)`, `(x&A^B) | c` =
    `x&(A&~c) ^ (B|c)`, `(x&A^B) ^ c` = `x&A ^ (B^c)`. A constant has source None.
    """
    if isinstance(expr, (int, str)) and not isinstance(expr, bool):
        return None, 0, _int_value(expr) & ALL
    if expr == _META_MARK:
        return "meta", ALL, 0
    if expr == _CT_MARK:
        return "ct", ALL, 0
    if isinstance(expr, dict) and len(expr) == 1:
        ((op, args),) = expr.items()
        if op in ("&", "|", "^") and isinstance(args, list) and len(args) == 2:
            src, a, b = _affine(args[0])
            c = _int_value(args[1]) & ALL
            if op == "&":
                return src, a & c, b & c
            if op == "|":
                return src, a & ~c & ALL, (b | c) & ALL
            return src, a, b ^ c
    raise _Untranslatable


def _mangle(body: Any) -> tuple[str, list[model.Match], bool]:
    """`meta mark set ...` -> MARK, `ct mark set ...` -> CONNMARK, `ct zone set N` -> CT."""
    if not isinstance(body, dict):
        raise _Untranslatable
    key, value = body.get("key"), body.get("value")
    if key == {"ct": {"key": "zone"}}:
        return "CT", [model.Match("CT", "--zone", (str(_int_value(value)),))], False
    if key == _META_MARK:
        own, other, tname = "meta", "ct", "MARK"
    elif key == _CT_MARK:
        own, other, tname = "ct", "meta", "CONNMARK"
    else:
        raise _Untranslatable
    src, a, b = _affine(value)
    if src is None or src == own:
        # new = (old & a) ^ b == (old & ~M) ^ V with M = ~a, V = b (--set-xmark V/M).
        mask = ~a & ALL
        return tname, [model.Match(tname, "--set-xmark", (f"{b:#x}/{mask:#x}",))], False
    if src == other and b == 0:
        # meta mark set ct mark & A: nfmark = (nfmark & ~0xffffffff) ^ (ctmark & A)
        #   = CONNMARK --restore-mark --nfmask 0xffffffff --ctmask A (xt_connmark.c).
        # ct mark set meta mark & A: ctmark = (ctmark & ~0xffffffff) ^ (nfmark & A)
        #   = CONNMARK --save-mark --nfmask A --ctmask 0xffffffff.
        if own == "meta":
            opts = [
                model.Match("CONNMARK", "--restore-mark", ()),
                model.Match("CONNMARK", "--nfmask", (f"{ALL:#x}",)),
                model.Match("CONNMARK", "--ctmask", (f"{a:#x}",)),
            ]
        else:
            opts = [
                model.Match("CONNMARK", "--save-mark", ()),
                model.Match("CONNMARK", "--nfmask", (f"{a:#x}",)),
                model.Match("CONNMARK", "--ctmask", (f"{ALL:#x}",)),
            ]
        return "CONNMARK", opts, False
    raise _Untranslatable


# --------------------------------------------------------------------------- rendering


def render_exprs(exprs: list[Any]) -> str:
    """An expression list back in nft's text syntax (for `SourceRef.text` and leftovers)."""
    return " ".join(render_expr(e) for e in exprs)


def render_expr(expr: Any) -> str:
    """One expression or statement in nft text syntax; unknown shapes as compact JSON."""
    try:
        return _render(expr)
    except (KeyError, TypeError, ValueError, AttributeError):
        return compact_json(expr)


def _render(e: Any) -> str:
    if isinstance(e, bool):
        return str(e).lower()
    if isinstance(e, int):
        return str(e)
    if isinstance(e, str):
        return e
    if isinstance(e, list):
        return ",".join(_render(x) for x in e)
    if not isinstance(e, dict) or len(e) != 1:
        return compact_json(e)
    ((k, v),) = e.items()
    if k == "__text__":
        return str(v)
    if k == "match":
        op = v.get("op", "==")
        left = _render(v["left"])
        marky = any(x in left for x in ("mark", " & ", " | "))
        right = _render_num(v["right"]) if marky else _render(v["right"])
        if left.endswith("ifname") and isinstance(v["right"], str):
            right = f'"{right}"'

        if op == "in" or (op == "==" and not marky):
            return f"{left} {right}"
        return f"{left} {op} {right}"
    if k == "payload":
        if "protocol" in v:
            return f"{v['protocol']} {v['field']}"
        return f"@{v.get('base')},{v.get('offset')},{v.get('len')}"
    if k == "meta":
        return f"meta {v['key']}"
    if k == "ct":
        parts = ["ct"]
        if "dir" in v:
            parts.append(v["dir"])
        if "family" in v:
            parts.append(v["family"])
        parts.append(v["key"])
        return " ".join(parts)
    if k in ("&", "|", "^", "<<", ">>"):
        a, b = v
        return f"{_render(a)} {k} {_render_num(b)}"
    if k == "prefix":
        return f"{v['addr']}/{v['len']}"
    if k == "range":
        return f"{_render(v[0])}-{_render(v[1])}"
    if k == "set":
        items = v if isinstance(v, list) else [v]
        return "{ " + ", ".join(
            f"{_render(x[0])} : {_render(x[1])}" if isinstance(x, list) and len(x) == 2
            else _render(x) for x in items) + " }"
    if k == "numgen":
        off = v.get("offset", 0)
        return f"numgen {v.get('mode', 'random')} mod {v['mod']}" + (f" offset {off}" if off else "")
    if k == "concat":
        return " . ".join(_render(x) for x in v)
    if k == "fib":
        return f"fib {' . '.join(v.get('flags') or [])} {v['result']}"
    if k == "socket":
        return f"socket {v['key']}"
    if k in ("accept", "drop", "return", "continue", "notrack"):
        return k
    if k in ("jump", "goto"):
        return f"{k} {v['target']}"
    if k == "counter":
        if isinstance(v, dict):
            return f"counter packets {v.get('packets', 0)} bytes {v.get('bytes', 0)}"
        return f"counter name {v}"
    if k in ("redirect", "masquerade"):
        out = k
        if isinstance(v, dict):
            if "port" in v:
                out += f" to :{_render(v['port'])}"
            if v.get("flags"):
                out += " " + ",".join(v["flags"] if isinstance(v["flags"], list) else [v["flags"]])
        return out
    if k in ("dnat", "snat", "tproxy"):
        out = k
        if v.get("family"):
            out += f" {v['family']}"
        out += " to "
        if "addr" in v:
            addr = _render(v["addr"])
            out += f"[{addr}]" if ":" in addr and "port" in v else addr
        if "port" in v:
            out += f":{_render(v['port'])}"
        if v.get("flags"):
            out += " " + ",".join(v["flags"] if isinstance(v["flags"], list) else [v["flags"]])
        return out
    if k == "mangle":
        value = v["value"]
        return f"{_render(v['key'])} set {_render_num(value)}"
    if k == "log":
        return "log" + (f' prefix "{v["prefix"]}"' if isinstance(v, dict) and "prefix" in v else "")
    if k == "reject":
        if isinstance(v, dict) and v.get("type"):
            return f"reject with {v['type']}" + (f" {v['expr']}" if v.get("expr") else "")
        return "reject"
    if k == "xt":
        return f"xt {v.get('type')} {v.get('name')}"
    if k == "vmap":
        return f"{_render(v['key'])} vmap {_render(v['data'])}"
    if k == "map":
        return f"{_render(v['key'])} map {_render(v['data'])}"
    if k == "elem":
        return _render(v["val"])
    return compact_json(e)


def _render_num(v: Any) -> str:
    return f"{v:#x}" if isinstance(v, int) and not isinstance(v, bool) else _render(v)


# --------------------------------------------------------------------------- sets


def _ipset(obj: _Obj, path: str) -> model.IpSet:
    d = obj.data
    stype = d.get("type", "")
    if isinstance(stype, list):  # concatenation: ["ipv4_addr", "inet_service"]
        stype = " . ".join(str(t) for t in stype)
    stype = str(stype)
    fam = (
        "inet"
        if stype.startswith("ipv4_addr")
        else "inet6"
        if stype.startswith("ipv6_addr")
        else None
    )
    members: list[model.IpSetMember] = []
    for el in d.get("elem") or []:
        comment = None
        if isinstance(el, dict) and "elem" in el:
            comment = el["elem"].get("comment")
            el = el["elem"]["val"]
        members.append(model.IpSetMember(_member_text(el), comment, obj.source))
    size = d.get("size")
    return model.IpSet(
        name=str(d["name"]),
        type=f"nft:{stype}",
        family=fam,
        maxelem=int(size) if isinstance(size, int) else None,
        hashsize=None,
        declared_entries=None,
        members=tuple(members),
        source=obj.source,
    )


def _member_text(el: Any) -> str:
    if isinstance(el, dict):
        if "prefix" in el:
            return f"{el['prefix']['addr']}/{el['prefix']['len']}"
        if "range" in el:
            return f"{_render(el['range'][0])}-{_render(el['range'][1])}"
        if "concat" in el:
            return ",".join(_member_text(x) for x in el["concat"])
    return _render(el)


# --------------------------------------------------------------------------- text form


_BLOCK_KINDS = {"set", "map", "flowtable", "counter", "quota", "limit", "secmark", "synproxy", "ct"}


def _objects_from_text(text: str, path: str) -> tuple[list[_Obj], list[str]]:
    """Walk the block structure of `nft list ruleset`; rules stay text until used."""
    lines = split_lines(text)
    out: list[_Obj] = []
    warnings: list[str] = []
    i, n = 0, len(lines)
    while i < n:
        raw = lines[i]
        line = _strip_handle(raw).strip()
        i += 1
        if not line:
            continue
        if line.startswith("#"):
            if line.startswith("# Warning:"):
                warnings.append(line)
            continue
        toks = line.split()
        if toks[0] != "table" or toks[-1] != "{" or len(toks) not in (3, 4):
            hint = None
            if line[:1] in ("*", ":") or line.startswith("-A ") or line == "COMMIT":
                hint = "this looks like iptables-save output, not `nft list ruleset`"
            elif line[:1] in ("{", "["):
                hint = "this looks like JSON: use the `nft -j` parser"
            raise ParseError(
                path,
                i,
                f"not `nft list ruleset` output: unexpected line {shorten(line)}",
                hint=hint,
            )
        family, tname = (toks[1], toks[2]) if len(toks) == 4 else ("ip", toks[1])
        out.append(_Obj("table", family, tname, model.SourceRef(path, i, line)))
        i = _parse_table_body(lines, i, path, family, tname, out)
    return out, warnings


def _strip_handle(line: str) -> str:
    pos = line.find(" # handle ")
    return line[:pos] if pos >= 0 else line


def _parse_table_body(
    lines: list[str], i: int, path: str, family: str, tname: str, out: list[_Obj]
) -> int:
    n = len(lines)
    start = i
    while i < n:
        line = _strip_handle(lines[i]).strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        if line == "}":
            return i
        toks = line.split()
        if toks[0] == "chain" and toks[-1] == "{" and len(toks) == 3:
            i = _parse_chain(lines, i, path, family, tname, _unquote(toks[1]), out)
        elif toks[-1] == "{" and toks[0] in _BLOCK_KINDS:
            body_start = i
            i, body = _collect_block(lines, i, path)
            if toks[0] == "set" and len(toks) == 3:
                out.append(
                    _set_from_text(
                        _unquote(toks[1]), body, family, tname, path, body_start - 1, line
                    )
                )
            elif toks[0] == "map" and len(toks) == 3:
                out.append(
                    _map_from_text(
                        _unquote(toks[1]), body, family, tname, path, body_start - 1, line
                    )
                )
        elif toks[0] in ("flags", "comment"):
            continue
        else:
            raise ParseError(path, i, f"unexpected line in table {family} {tname}: {shorten(line)}")
    raise ParseError(path, start, f"table {family} {tname} is not closed (truncated capture?)")


def _collect_block(lines: list[str], i: int, path: str) -> tuple[int, str]:
    """Lines up to the matching `}`; returns the index after it and the joined body."""
    parts: list[str] = []
    depth, start = 1, i
    while i < len(lines):
        line = _strip_handle(lines[i]).strip()
        i += 1
        depth += _brace_delta(line)
        if depth <= 0:
            return i, " ".join(parts)
        parts.append(line)
    raise ParseError(path, start, "block is not closed (truncated capture?)")


def _brace_delta(line: str) -> int:
    delta, quoted = 0, False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        elif not quoted:
            if ch == "{":
                delta += 1
            elif ch == "}":
                delta -= 1
    return delta


_HOOK_RE = re.compile(
    r"^type\s+(\S+)\s+hook\s+(\S+)(?:\s+device\s+\S+|\s+devices\s*=\s*\{[^}]*\})?"
    r"\s+priority\s+([^;]+);(?:\s*policy\s+(\S+?)\s*;)?"
)


def _parse_chain(
    lines: list[str], i: int, path: str, family: str, tname: str, cname: str, out: list[_Obj]
) -> int:
    n = len(lines)
    decl_line = i
    data: dict[str, Any] = {"name": cname}
    chain_obj = _Obj(
        "chain", family, tname, model.SourceRef(path, decl_line, lines[i - 1].strip()), data
    )
    out.append(chain_obj)
    while i < n:
        raw = lines[i]
        line = _strip_handle(raw).strip()
        i += 1
        if not line:
            continue
        if line == "}":
            return i
        if line.startswith("type ") and " hook " in line:
            m = _HOOK_RE.match(line)
            if m is None:
                raise ParseError(path, i, f"malformed base chain declaration {shorten(line)}")
            data.update(type=m.group(1), hook=m.group(2), prio=m.group(3).strip())
            data["policy"] = m.group(4) or "accept"
            continue
        if line.startswith("policy "):
            data["policy"] = line.split()[1].rstrip(";")
            continue
        if (
            line.startswith("comment ")
            and '"' in line
            and line.endswith('"')
            and "rule" not in data
        ):
            data["comment"] = line[len("comment ") :].strip('"')
            continue
        data["rule"] = True
        out.append(
            _Obj(
                "rule",
                family,
                tname,
                model.SourceRef(path, i, line),
                {"chain": cname},
                exprs=None,
                text=line,
            )
        )
    raise ParseError(
        path,
        decl_line,
        f"chain {cname} of table {family} {tname} is not closed (truncated capture?)",
    )


def _unquote(tok: str) -> str:
    return tok[1:-1] if len(tok) >= 2 and tok[0] == tok[-1] == '"' else tok


def _set_from_text(
    name: str, body: str, family: str, tname: str, path: str, line: int, head: str
) -> _Obj:
    toks = _tokenize(body, path, line)
    data: dict[str, Any] = {"name": name, "family": family, "table": tname}
    j = 0
    while j < len(toks):
        t = toks[j]
        if t in ("type", "typeof"):
            k = j + 1
            parts = []
            while k < len(toks) and toks[k] not in (
                ";",
                "flags",
                "elements",
                "comment",
                "size",
                "timeout",
                "gc-interval",
                "counter",
                "policy",
                "auto-merge",
            ):
                parts.append(toks[k])
                k += 1
            data["type"] = " ".join(parts) if t == "type" else "typeof " + " ".join(parts)
            j = k
            continue
        if t == "size" and j + 1 < len(toks):
            data["size"] = int(toks[j + 1]) if toks[j + 1].isdigit() else None
            j += 2
            continue
        if t == "comment" and j + 1 < len(toks):
            data["comment"] = _unquote(toks[j + 1])
            j += 2
            continue
        if t == "elements" and j + 2 < len(toks) and toks[j + 1] == "=":
            data["elem"] = _text_elements(toks[j + 2], path, line)
            j += 3
            continue
        j += 1
    return _Obj("set", family, tname, model.SourceRef(path, line, head), data)


def _map_from_text(
    name: str, body: str, family: str, tname: str, path: str, line: int, head: str
) -> _Obj:
    """`map NAME { type A . B : verdict; elements = { k : v, ... } }` -> a JSON-style map.

    Elements stay text parts (`10.96.0.10 . tcp . 53`) until a rule looks them up; only
    verdict maps are read (kube-proxy's and Istio's maps are all verdict maps).
    """
    data: dict[str, Any] = {"name": name, "family": family, "table": tname}
    head_part, sep, rest = body.partition("elements =")
    mtype = re.search(r"\btype\s+([^:;]+?)\s*:\s*(\w+)", head_part)
    if mtype:
        data["type"] = mtype.group(1).strip()
        data["map"] = mtype.group(2)
    if sep:
        group = rest.strip()
        end = _group_end(group, path, line)
        elems: list[Any] = []
        for item in _split_group(group[: end + 1], path, line):
            key, colon, value = item.rpartition(" : ")
            if not colon:
                raise ParseError(path, line, f"map {name}: element without ' : ' {shorten(item)}")
            comment = None
            if " comment " in key:
                key, _, c = key.partition(" comment ")
                comment = _unquote(c.strip())
            parts = [x.strip() for x in key.split(" . ")]
            val: Any = {"concat": parts} if len(parts) > 1 else parts[0]
            if comment is not None:
                val = {"elem": {"val": val, "comment": comment}}
            vtoks = value.split()
            verdict: Any = (
                {vtoks[0]: {"target": _unquote(vtoks[1])}}
                if len(vtoks) == 2 and vtoks[0] in ("jump", "goto")
                else {vtoks[0]: None}
                if len(vtoks) == 1
                else {"__text__": value}
            )
            elems.append([val, verdict])
        data["elem"] = elems
    return _Obj("map", family, tname, model.SourceRef(path, line, head), data)


def _group_end(group: str, path: str, line: int) -> int:
    """Index of the `}` closing the `{` at group[0]."""
    depth, quoted = 0, False
    for i, ch in enumerate(group):
        if ch == '"':
            quoted = not quoted
        elif not quoted:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return i
    raise ParseError(path, line, f"unbalanced braces in {shorten(group)}")


def _text_elements(group: str, path: str, line: int) -> list[Any]:
    """`{ 10.244.1.7 comment "uid", 10.0.0.0/8, 1.2.3.4 . tcp . 80 }` -> JSON-style elements."""
    if not (group.startswith("{") and group.endswith("}")):
        raise ParseError(path, line, f"malformed set elements {shorten(group)}")
    elems: list[Any] = []
    for item in _split_group(group, path, line):
        toks = _tokenize(item, path, line)
        comment: str | None = None
        vals: list[str] = []
        k = 0
        while k < len(toks):
            t = toks[k]
            if t == "comment" and k + 1 < len(toks):
                comment = _unquote(toks[k + 1])
                k += 2
            elif t in ("timeout", "expires"):
                k += 2
            elif t == "counter":
                k += 5 if k + 1 < len(toks) and toks[k + 1] == "packets" else 1
            elif t == ".":
                k += 1
            else:
                vals.append(t)
                k += 1
        if not vals:
            continue
        val = ",".join(vals)
        elems.append({"elem": {"val": val, "comment": comment}} if comment is not None else val)
    return elems


def _split_group(group: str, path: str, line: int) -> list[str]:
    """`{ a, b comment "x, y", c }` -> ["a", 'b comment "x, y"', "c"]."""
    inner = group[1:-1]
    parts: list[str] = []
    cur: list[str] = []
    depth, quoted = 0, False
    for ch in inner:
        if ch == '"':
            quoted = not quoted
        if not quoted:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                parts.append("".join(cur).strip())
                cur = []
                continue
        cur.append(ch)
    if quoted or depth:
        raise ParseError(path, line, f"unbalanced quotes or braces in {shorten(group)}")
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


_SPECIAL_CHARS = re.compile(r'[;"{}]')


def _tokenize(text: str, path: str, line: int) -> list[str]:
    """Whitespace tokens; a quoted string and a `{ ... }` group are one token each."""
    if not _SPECIAL_CHARS.search(text):
        # Most rules (`ip daddr 10.96.0.10 tcp dport 53 goto ...`): the same tokens, in C
        # (str.split() and str.isspace() agree on what whitespace is).
        return text.split()
    toks: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch == ";":
            toks.append(";")
            i += 1
            continue
        if ch == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                raise ParseError(path, line, "unterminated quoted string (truncated rule?)")
            toks.append(text[i : j + 1])
            i = j + 1
            continue
        if ch == "{":
            depth, j, quoted = 0, i, False
            while j < n:
                c = text[j]
                if c == '"':
                    quoted = not quoted
                elif not quoted:
                    if c == "{":
                        depth += 1
                    elif c == "}":
                        depth -= 1
                        if depth == 0:
                            break
                j += 1
            if j >= n:
                raise ParseError(path, line, "unbalanced '{' (truncated rule?)")
            toks.append(text[i : j + 1])
            i = j + 1
            continue
        if ch == "}":
            raise ParseError(path, line, "unbalanced '}'")
        j = i
        while j < n and not text[j].isspace() and text[j] not in ';"{}':
            j += 1
        toks.append(text[i:j])
        i = j
    return toks


# --------------------------------------------------------------- text rule -> expressions

_PAYLOAD_PROTOS = {
    "ip",
    "ip6",
    "tcp",
    "udp",
    "th",
    "sctp",
    "icmp",
    "icmpv6",
    "ether",
    "vlan",
    "arp",
    "dccp",
    "udplite",
    "ah",
    "esp",
    "comp",
    "igmp",
}
_BARE_META = {
    "mark",
    "iif",
    "oif",
    "iifname",
    "oifname",
    "iiftype",
    "oiftype",
    "skuid",
    "skgid",
    "l4proto",
    "nfproto",
    "priority",
    "length",
    "protocol",
    "rtclassid",
    "pkttype",
    "cpu",
    "iifgroup",
    "oifgroup",
    "cgroup",
    "nftrace",
    "secmark",
}
_OPS = {
    "==": "==",
    "!=": "!=",
    "eq": "==",
    "ne": "!=",
    "<": "<",
    ">": ">",
    "<=": "<=",
    ">=": ">=",
    "lt": "<",
    "gt": ">",
    "le": "<=",
    "ge": ">=",
}
_BITOPS = {"&": "&", "and": "&", "|": "|", "or": "|", "^": "^", "xor": "^"}
_STMT_WORDS = {
    "accept",
    "drop",
    "return",
    "continue",
    "jump",
    "goto",
    "counter",
    "redirect",
    "dnat",
    "snat",
    "masquerade",
    "tproxy",
    "notrack",
    "log",
    "reject",
    "comment",
    "queue",
    "limit",
    "xt",
    "quota",
    "meter",
    "dup",
    "fwd",
    "synproxy",
}
_NAT_FLAGS = {"random", "fully-random", "persistent"}


class _Tokens:
    def __init__(self, toks: list[str]) -> None:
        self.toks = toks
        self.i = 0

    def peek(self, k: int = 0) -> str | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def take(self) -> str:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def done(self) -> bool:
        return self.i >= len(self.toks)


def text_rule_to_exprs(text: str, path: str, line: int) -> tuple[list[Any], str | None]:
    """One `nft list ruleset` rule line -> (JSON-style expression list, rule comment).

    Pieces this reader does not know become `{"__text__": "..."}` expressions, which the
    translation keeps as `Match("nft", "expr", ...)`.
    """
    ts = _Tokens([t for t in _tokenize(_strip_handle(text), path, line) if t != ";"])
    exprs: list[Any] = []
    comment: str | None = None
    while not ts.done():
        start = ts.i
        tok = ts.peek()
        assert tok is not None
        try:
            if tok == "comment":
                ts.take()
                comment = _unquote(ts.take())
                continue
            stmt = _text_statement(ts)
            if stmt is not None:
                exprs.append(stmt)
                continue
            exprs.append(_text_match(ts))
        except (_Untranslatable, IndexError, ValueError):
            ts.i = start + 1
            while not ts.done() and ts.peek() not in _STMT_WORDS:
                ts.take()
            exprs.append({"__text__": " ".join(ts.toks[start : ts.i])})
    return exprs, comment


def _text_statement(ts: _Tokens) -> dict[str, Any] | None:
    tok = ts.peek()
    if tok in ("accept", "drop", "return", "continue", "notrack"):
        ts.take()
        return {tok: None}
    if tok in ("jump", "goto"):
        ts.take()
        return {tok: {"target": _unquote(ts.take())}}
    if tok == "counter":
        ts.take()
        if ts.peek() == "packets":
            ts.take()
            packets = int(ts.take())
            if ts.take() != "bytes":
                raise _Untranslatable
            return {"counter": {"packets": packets, "bytes": int(ts.take())}}
        if ts.peek() == "name":
            ts.take()
            return {"counter": _unquote(ts.take())}
        return {"counter": {"packets": 0, "bytes": 0}}
    if tok in ("redirect", "masquerade"):
        ts.take()
        body: dict[str, Any] = {}
        if ts.peek() == "to":
            ts.take()
            port = ts.take()
            if not port.startswith(":"):
                raise _Untranslatable
            body["port"] = _text_port(port[1:])
        _text_nat_flags(ts, body)
        return {tok: body or None}
    if tok in ("dnat", "snat", "tproxy"):
        ts.take()
        body = {}
        if ts.peek() in ("ip", "ip6"):
            body["family"] = ts.take()
        if ts.take() != "to":
            raise _Untranslatable
        addr, port = _split_addr_port(ts.take())
        if addr:
            body["addr"] = addr
        if port is not None:
            body["port"] = port
        _text_nat_flags(ts, body)
        return {tok: body}
    if tok == "log":
        ts.take()
        body = {}
        while ts.peek() in ("prefix", "level", "group", "snaplen", "queue-threshold", "flags"):
            k = ts.take()
            body[k] = _unquote(ts.take())
        return {"log": body or None}
    if tok == "reject":
        ts.take()
        if ts.peek() == "with":
            ts.take()
            kind = ts.take()
            if kind == "tcp":
                ts.take()  # "reset"
                return {"reject": {"type": "tcp reset"}}
            return {"reject": {"type": kind, "expr": ts.take()}}
        return {"reject": None}
    if tok == "xt":
        ts.take()
        kind = ts.take()
        return {"xt": {"type": kind, "name": ts.take()}}
    # `meta mark set X`, `mark set X`, `ct mark set X`, `ct zone set N`
    key: dict[str, Any] | None = None
    if tok == "meta" and ts.peek(2) == "set":
        key = {"meta": {"key": ts.peek(1)}}
        width = 3
    elif tok in _BARE_META and ts.peek(1) == "set":
        key = {"meta": {"key": tok}}
        width = 2
    elif tok == "ct" and ts.peek(2) == "set":
        key = {"ct": {"key": ts.peek(1)}}
        width = 3
    if key is None:
        return None
    ts.i += width
    return {"mangle": {"key": key, "value": _text_value_expr(ts)}}


def _text_value_expr(ts: _Tokens) -> Any:
    """`ct mark & 0xfffff000 | 0x111`, `meta mark`, `0x111` -> an expression tree."""
    first = ts.take()
    if first == "meta":
        value: Any = {"meta": {"key": ts.take()}}
    elif first == "ct":
        value = {"ct": {"key": ts.take()}}
    elif first in _BARE_META:
        value = {"meta": {"key": first}}
    else:
        value = _text_scalar(first)
    while ts.peek() in _BITOPS:
        op = _BITOPS[ts.take()]
        value = {op: [value, _text_scalar(ts.take())]}
    return value


def _text_match(ts: _Tokens) -> dict[str, Any]:
    tok = ts.take()
    left: Any
    kind = "other"
    if tok in _PAYLOAD_PROTOS and ts.peek() is not None and ts.peek() not in _OPS:
        fld = ts.take()
        left = {"payload": {"protocol": tok, "field": fld}}
        kind = (
            "addr"
            if fld in ("saddr", "daddr")
            else "port"
            if fld in ("sport", "dport")
            else "other"
        )
    elif tok == "meta":
        key = ts.take()
        left = {"meta": {"key": key}}
        kind = "id" if key in ("skuid", "skgid") else "other"
    elif tok in _BARE_META:
        left = {"meta": {"key": tok}}
        kind = "id" if tok in ("skuid", "skgid") else "other"
    elif tok == "ct":
        key = ts.take()
        if key in ("original", "reply") or key in ("ip", "ip6"):
            raise _Untranslatable
        left = {"ct": {"key": key}}
        kind = "flags" if key in ("state", "status") else "other"
    elif tok == "fib":
        flags = []
        while ts.peek() in ("saddr", "daddr", "mark", "iif", "oif", "."):
            f = ts.take()
            if f != ".":
                flags.append(f)
        left = {"fib": {"result": ts.take(), "flags": flags}}
    elif tok == "socket":
        left = {"socket": {"key": ts.take()}}
    elif tok == "numgen":
        ts.i -= 1
        left = _text_selector(ts)
    else:
        raise _Untranslatable
    while ts.peek() in _BITOPS:
        op = _BITOPS[ts.take()]
        left = {op: [left, _text_scalar(ts.take())]}
    concat = ts.peek() == "."
    if concat:  # `ip daddr . meta l4proto . th dport`: one key of several parts
        parts = [left]
        while ts.peek() == ".":
            ts.take()
            parts.append(_text_selector(ts))
        left = {"concat": parts}
    if ts.peek() == "vmap":
        ts.take()
        return {"vmap": {"key": left, "data": _text_vmap_data(ts.take())}}
    if ts.peek() in ("map", None) or ts.peek() in _STMT_WORDS:
        raise _Untranslatable  # a data map, or a bare selector
    op = "=="
    if ts.peek() in _OPS:
        op = _OPS[ts.take()]
    elif kind == "flags":
        op = "in"
    rtok = ts.take()
    if ts.peek() in (".", "vmap", "map"):
        raise _Untranslatable
    if concat:
        right: Any = rtok if rtok.startswith("@") else {
            "set": [_text_elem_key(x) for x in _split_group(rtok, "", 0)]
        } if rtok.startswith("{") else _text_elem_key(rtok)
        return {"match": {"op": op, "left": left, "right": right}}
    right = _text_rhs(rtok, kind)
    if kind == "flags" and isinstance(right, str) and "," in right:
        right = right.split(",")
    return {"match": {"op": op, "left": left, "right": right}}


def _text_selector(ts: _Tokens) -> Any:
    """One key component: `ip daddr`, `meta l4proto`, `l4proto`, `ct mark`, `numgen ...`."""
    tok = ts.take()
    if tok in _PAYLOAD_PROTOS:
        return {"payload": {"protocol": tok, "field": ts.take()}}
    if tok == "meta":
        return {"meta": {"key": ts.take()}}
    if tok in _BARE_META:
        return {"meta": {"key": tok}}
    if tok == "ct":
        return {"ct": {"key": ts.take()}}
    if tok == "numgen":
        mode = ts.take()
        if ts.take() != "mod":
            raise _Untranslatable
        body: dict[str, Any] = {"mode": mode, "mod": int(ts.take(), 0), "offset": 0}
        if ts.peek() == "offset":
            ts.take()
            body["offset"] = int(ts.take(), 0)
        return {"numgen": body}
    raise _Untranslatable


def _text_elem_key(text: str) -> Any:
    """`10.96.0.10 . tcp . 53` -> {"concat": [...]}; `0` -> 0; `10.0.0.0/8` as is."""
    parts = [p.strip() for p in text.split(" . ")]
    vals = [int(p) if p.isdigit() else p for p in parts]
    return {"concat": vals} if len(vals) > 1 else vals[0]


def _text_vmap_data(tok: str) -> Any:
    """`@name` or `{ 0 : goto a, 1 : goto b }` -> the JSON form's `data`."""
    if tok.startswith("@"):
        return tok
    if not tok.startswith("{"):
        raise _Untranslatable
    items: list[Any] = []
    for item in _split_group(tok, "", 0):
        key, colon, value = item.rpartition(" : ")
        vtoks = value.split()
        if not colon or not vtoks:
            raise _Untranslatable
        if vtoks[0] in ("jump", "goto") and len(vtoks) == 2:
            verdict: Any = {vtoks[0]: {"target": _unquote(vtoks[1])}}
        elif len(vtoks) == 1:
            verdict = {vtoks[0]: None}
        else:
            raise _Untranslatable
        items.append([_text_elem_key(key), verdict])
    return {"set": items}


def _text_rhs(tok: str, kind: str) -> Any:
    if tok.startswith("{"):
        items = [x for x in (p.strip() for p in tok[1:-1].split(",")) if x]
        return {"set": [_text_rhs(x, kind) for x in items]}
    if tok.startswith("@"):
        return tok
    if tok.startswith('"'):
        return _unquote(tok)
    if kind == "addr":
        if "/" in tok:
            addr, length = tok.split("/", 1)
            return {"prefix": {"addr": addr, "len": int(length)}}
        if "-" in tok:
            lo, hi = tok.split("-", 1)
            return {"range": [lo, hi]}
        return tok
    if kind in ("port", "id") and "-" in tok:
        lo, hi = tok.split("-", 1)
        return {"range": [_text_scalar(lo), _text_scalar(hi)]}
    return _text_scalar(tok)


def _text_scalar(tok: str) -> Any:
    if tok.startswith('"'):
        return _unquote(tok)
    if re.fullmatch(r"0x[0-9a-fA-F]+|\d+", tok):
        return int(tok, 0)
    return tok


def _text_port(tok: str) -> Any:
    if "-" in tok:
        lo, hi = tok.split("-", 1)
        return {"range": [int(lo), int(hi)]}
    return int(tok)


def _split_addr_port(tok: str) -> tuple[Any, Any]:
    """`10.0.0.1:8080`, `:15008`, `[::1]:80`, `10.0.0.2-10.0.0.9:1000-2000`, `::1`."""
    addr: str
    port: str | None = None
    if tok.startswith("["):
        addr, _, rest = tok[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif tok.count(":") == 1:
        addr, port = tok.split(":")
    else:
        addr = tok
    addr_v: Any = None
    if addr:
        addr_v = {"range": addr.split("-", 1)} if "-" in addr else addr
    return addr_v, (_text_port(port) if port else None)


def _text_nat_flags(ts: _Tokens, body: dict[str, Any]) -> None:
    tok = ts.peek()
    if tok is not None and all(f in _NAT_FLAGS for f in tok.split(",")):
        ts.take()
        body["flags"] = tok.split(",")


def iter_rules(ruleset: model.Ruleset) -> Iterator[model.Rule]:
    """Every rule of every table, in listing order (tests and checks use it)."""
    for table in ruleset.tables:
        for chain in table.chains.values():
            yield from chain.rules
