"""iproute2 output (`ip rule`, `ip route show table all`, `ip -d addr`, text or `-j` JSON).

Every parser detects JSON by the first non-blank character (`[`); JSON facts get the line
where their object starts (line 1 for compact `ip -j` output) and their compact JSON as
`SourceRef.text`.

`ip rule` (iproute2 6.1; the legacy-ambient node of the seed)::

    0:	from all lookup local
    100:	from all fwmark 0x200/0x200 goto 32766
    101:	from all fwmark 0x100/0x100 lookup 101
    103:	from all lookup 100
    200:	not from 10.0.0.0/8 to 192.168.0.0/16 lookup main
    208:	from all goto 300 [unresolved]
    210:	from all iif veth0 [detached] lookup 100
    32766:	from all lookup main

`ip -j rule` keys changed over time: the action of a blackhole/unreachable/prohibit rule was
`"to_tbl"` from iproute2 4.17 and is `"action"` now; ports are `"sport"` or
`"sport_start"/"sport_end"`; `"not"`, `"nop"`, `"unresolved"`, `"iif_detached"` are null-valued
flags. Both spellings are read.

`ip route show table all` (iproute2 6.1 lists IPv4 then IPv6 routes)::

    local default dev lo table 100 scope host
    default via 192.168.127.2 dev istioout table 101
    10.244.1.2 dev veth5db63c11 table 101 scope link
    default via 10.9.9.9 dev v1 table 102 onlink
    10.0.0.0/24 dev v0 proto kernel scope link src 10.0.0.1
    10.11.0.0/16 proto static metric 5
        nexthop via 10.0.0.2 dev v0 weight 1
        nexthop via 10.0.1.2 dev v1 weight 3
    local 10.0.0.1 dev v0 table local proto kernel scope host src 10.0.0.1
    fe80::/64 dev eth0 proto kernel metric 256 pref medium

A route without `table` is in "main" (`default_table=` changes that for `ip route show table
N` captures, which omit it). The family of each route comes from its addresses; a `default`
route without any address is IPv6 when it carries `pref` (RTA_PREF exists only for IPv6),
else `family=`.

`ip -d addr` (the `-d` line after `link/` names the device kind; a `bridge_slave` /
`bond_slave` line describes the port, not the device, and is not its kind)::

    2: eth0@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP group default
        link/ether 46:8a:46:72:1d:3b brd ff:ff:ff:ff:ff:ff link-netnsid 0
        veth numtxqueues 2 numrxqueues 2 gso_max_size 65536 gso_max_segs 65535
        inet 10.244.2.3/24 brd 10.244.2.255 scope global eth0
           valid_lft forever preferred_lft forever
    4: pistioout: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 qdisc noqueue state UNKNOWN
        link/ether c2:d0:18:20:3b:97 brd ff:ff:ff:ff:ff:ff promiscuity 0
        geneve id 1001 remote 10.244.2.1 ttl auto dstport 6081 noudpcsum udp6zerocsumrx
        inet 192.168.127.2/30 scope global pistioout

`eth0@if3` names the peer's ifindex (in the netns `link-netnsid`/`link-netns` names), `v1@v0`
a peer in the same netns (resolved to its index), `@NONE` no peer.

Empty input: `ip rule` and `ip addr` always print something in a live netns (rules 0, 32766,
32767; the `lo` device), so an empty file means the command failed -> ParseError. An empty
route dump is possible (a netns whose `lo` is down and has no addresses) and is valid.

>>> text = "0:\\tfrom all lookup local\\n32764:\\tfrom all fwmark 0x111/0xfff lookup 100\\n"
>>> rules = parse_ip_rule(text, "ip-rule.txt")
>>> rules[1].fwmark, rules[1].fwmask, rules[1].table, rules[1].action.value
(273, 4095, '100', 'lookup')
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from ambientctl import model
from ambientctl.analyzers.parse._common import (
    compact_json,
    first_content_char,
    ip_address,
    ip_interface,
    ip_network,
    iter_json_array,
    shorten,
    split_lines,
    to_int,
)
from ambientctl.errors import ParseError

__all__ = ["parse_ip_addr", "parse_ip_route", "parse_ip_rule"]

_DEFAULT_NET: dict[int, model.IPNetwork] = {4: ipaddress.IPv4Network("0.0.0.0/0"), 6: ipaddress.IPv6Network("::/0")}


def _check_family(family: int) -> None:
    if family not in (4, 6):
        raise ValueError(f"family must be 4 or 6, not {family!r}")


def _is_json(text: str) -> bool:
    """`ip -j` prints an array; an object is JSON too, and gets "expected a JSON array"."""
    return first_content_char(text) in ("[", "{")


def _json_items(text: str, path: str, what: str) -> list[tuple[int, dict[str, Any]]]:
    items = []
    for line, obj in iter_json_array(text, path, what):
        if not isinstance(obj, dict):
            raise ParseError(path, line, f"{what}: array element is not an object")
        items.append((line, obj))
    return items


# =========================================================================== ip rule

_RULE_LINE = re.compile(r"^(\d+):\s+(.*?)\s*$")
_RULE_ACTIONS = {
    "nop": model.RuleAction.NOP,
    "blackhole": model.RuleAction.BLACKHOLE,
    "unreachable": model.RuleAction.UNREACHABLE,
    "prohibit": model.RuleAction.PROHIBIT,
}
# Selectors and attributes the model does not keep (ip-rule(8)); they take one argument.
_RULE_SKIP_ARG = {"realms", "map-to", "nat", "proto", "protocol", "tun_id", "flowlabel", "dscp"}


def parse_ip_rule(text: str, path: str, *, family: int = 4) -> tuple[model.IpRule, ...]:
    """Parse `ip rule` / `ip -6 rule` text or `ip -j rule` JSON (auto-detected).

    `family` is the family of rules without an address (`ip -6 rule` prints no marker).
    """
    _check_family(family)
    if not text.strip():
        raise ParseError(
            path, None, "empty ip rule output: a network namespace always has rules"
            " (0 local, 32766 main, 32767 default)", hint="the command probably failed; re-collect"
        )  # fmt: skip
    if _is_json(text):
        return tuple(
            _rule_from_json(obj, family, path, line)
            for line, obj in _json_items(text, path, "ip -j rule")
        )
    rules = []
    for idx, line in enumerate(split_lines(text)):
        if not line.strip():
            continue
        m = _RULE_LINE.match(line)
        if m is None:
            raise ParseError(
                path,
                idx + 1,
                f"not ip rule output: {shorten(line)} (expected 'PRIO:\\tSELECTOR ACTION')",
            )
        rules.append(
            _rule_from_text(int(m.group(1)), m.group(2).split(), family, path, idx + 1, line)
        )
    return tuple(rules)


def _mark(value: str, path: str, line: int) -> tuple[int, int]:
    """`0x200/0x200` -> (0x200, 0x200); a mark without mask compares all 32 bits."""
    mark, _, mask = value.partition("/")
    return to_int(mark, path, line, "fwmark", 0), (
        to_int(mask, path, line, "fwmask", 0) if mask else model.ALL_ONES
    )


def _range(value: str, path: str, line: int, what: str) -> tuple[int, int]:
    lo, _, hi = value.partition("-")
    first = to_int(lo, path, line, what)
    return first, (to_int(hi, path, line, what) if hi else first)


def _rule_from_text(
    prio: int, toks: list[str], family: int, path: str, line: int, text: str
) -> model.IpRule:
    f: dict[str, Any] = {}
    action: model.RuleAction | None = None
    i, n = 0, len(toks)

    def arg() -> str:
        if i + 1 >= n:
            raise ParseError(path, line, f"'{toks[i]}' without a value")
        return toks[i + 1]

    while i < n:
        t = toks[i]
        if t == "not":
            f["invert"] = True
        elif t in ("from", "to"):
            v = arg()
            if v != "all":
                f["src" if t == "from" else "dst"] = ip_network(v, path, line, t)
            i += 1
        elif t in ("tos", "dsfield"):
            f["tos"] = to_int(arg(), path, line, t, 16)
            i += 1
        elif t == "fwmark":
            f["fwmark"], f["fwmask"] = _mark(arg(), path, line)
            i += 1
        elif t in ("iif", "oif"):
            f[t] = arg()
            i += 1
            if i + 1 < n and toks[i + 1] == "[detached]":
                i += 1  # the device does not exist (any more): the rule matches nothing
        elif t == "ipproto":
            f["ipproto"] = arg()
            i += 1
        elif t in ("sport", "dport", "uidrange"):
            f[t] = _range(arg(), path, line, t)
            i += 1
        elif t in ("lookup", "table"):
            v = arg()
            f["table"] = None if v == "[l3mdev-table]" else model.table_name(v)
            action = model.RuleAction.LOOKUP
            i += 1
        elif t == "l3mdev":
            action = model.RuleAction.LOOKUP
        elif t == "goto":
            f["goto"] = to_int(arg(), path, line, "goto")
            action = model.RuleAction.GOTO
            i += 1
        elif t == "[unresolved]":
            f["unresolved"] = True
        elif t in _RULE_ACTIONS:
            action = _RULE_ACTIONS[t]
        elif t == "suppress_prefixlength":
            f["suppress_prefixlength"] = to_int(arg(), path, line, t)
            i += 1
        elif t == "suppress_ifgroup":
            v = arg()
            f["suppress_ifgroup"] = 0 if v == "default" else to_int(v, path, line, t, 0)
            i += 1
        elif t in _RULE_SKIP_ARG:
            arg()
            i += 1
        else:
            raise ParseError(path, line, f"unknown ip rule keyword {t!r}")
        i += 1
    if action is None:
        raise ParseError(path, line, "rule without an action (lookup/goto/nop/blackhole/...)")
    return model.IpRule(
        family=_rule_family(f, family),
        priority=prio,
        action=action,
        source=model.SourceRef(path, line, text),
        **f,
    )


def _rule_family(f: dict[str, Any], default: int) -> int:
    for key in ("src", "dst"):
        if f.get(key) is not None:
            return int(f[key].version)
    return default


def _json_net(obj: dict[str, Any], key: str, path: str, line: int) -> model.IPNetwork | None:
    value = obj.get(key)
    if value is None or value == "all":
        return None
    plen = obj.get(key + "len")
    return ip_network(f"{value}/{plen}" if plen is not None else str(value), path, line, key)


def _json_int(value: Any, path: str, line: int, what: str, base: int = 10) -> int:
    if isinstance(value, bool):
        raise ParseError(path, line, f"{what} {value!r} is not a number")
    if isinstance(value, int):
        return value
    return to_int(str(value), path, line, what, base)


def _json_range(obj: dict[str, Any], key: str, path: str, line: int) -> tuple[int, int] | None:
    if key in obj:
        v = _json_int(obj[key], path, line, key)
        return v, v
    start = {"uidrange": "uid_start"}.get(key, key + "_start")
    end = {"uidrange": "uid_end"}.get(key, key + "_end")
    if start in obj:
        return _json_int(obj[start], path, line, start), _json_int(
            obj.get(end, obj[start]), path, line, end
        )
    return None


def _rule_from_json(obj: dict[str, Any], family: int, path: str, line: int) -> model.IpRule:
    if "priority" not in obj:
        raise ParseError(path, line, "ip -j rule: object without 'priority'")
    f: dict[str, Any] = {
        "invert": "not" in obj,
        "src": _json_net(obj, "src", path, line),
        "dst": _json_net(obj, "dst", path, line),
        "iif": obj.get("iif"),
        "oif": obj.get("oif"),
        "ipproto": obj.get("ipproto"),
        "sport": _json_range(obj, "sport", path, line),
        "dport": _json_range(obj, "dport", path, line),
        "uidrange": _json_range(obj, "uidrange", path, line),
        "unresolved": "unresolved" in obj,
    }
    if "tos" in obj:
        f["tos"] = _json_int(obj["tos"], path, line, "tos", 16)
    if "fwmark" in obj:
        f["fwmark"] = _json_int(obj["fwmark"], path, line, "fwmark", 0)
        if "fwmask" in obj:
            f["fwmask"] = _json_int(obj["fwmask"], path, line, "fwmask", 0)
    if "suppress_prefixlen" in obj:
        f["suppress_prefixlength"] = _json_int(
            obj["suppress_prefixlen"], path, line, "suppress_prefixlen"
        )
    if "suppress_ifgroup" in obj:
        g = obj["suppress_ifgroup"]
        f["suppress_ifgroup"] = (
            0 if g == "default" else _json_int(g, path, line, "suppress_ifgroup", 0)
        )
    named = obj.get("action", obj.get("to_tbl"))
    if "goto" in obj:
        action = model.RuleAction.GOTO
        goto = obj["goto"]
        f["goto"] = None if goto == "none" else _json_int(goto, path, line, "goto")
    elif "nop" in obj:
        action = model.RuleAction.NOP
    elif named in _RULE_ACTIONS:
        action = _RULE_ACTIONS[named]
    elif "table" in obj or "l3mdev" in obj:
        action = model.RuleAction.LOOKUP
        if "table" in obj:
            f["table"] = model.table_name(obj["table"])
    elif named is not None:
        raise ParseError(path, line, f"ip -j rule: unknown action {named!r}")
    else:
        raise ParseError(path, line, "ip -j rule: rule without an action (table/goto/nop/action)")
    return model.IpRule(
        family=_rule_family(f, family),
        priority=_json_int(obj["priority"], path, line, "priority"),
        action=action,
        source=model.SourceRef(path, line, compact_json(obj)),
        **f,
    )


# =========================================================================== ip route

_ROUTE_TYPES = {t.value: t for t in model.RouteType}
_ROUTE_FLAGS = {
    "onlink", "linkdown", "dead", "pervasive", "offload", "trap", "notify",
    "rt_offload", "rt_trap", "rt_offload_failed", "unresolved", "cache",
}  # fmt: skip
# Keywords with one argument the model does not keep (ip-route(8) "ROUTE ATTRIBUTES").
_ROUTE_SKIP_ARG = {
    "pref", "tos", "dsfield", "realm", "realms", "expires", "error", "nhid", "from",
    "advmss", "rtt", "rttvar", "reordering", "window", "cwnd", "initcwnd", "initrwnd",
    "ssthresh", "rto_min", "hoplimit", "features", "quickack", "congctl",
    "fastopen_no_cookie", "ttl-propagate", "mtu", "age", "users", "used", "ipid", "as",
}  # fmt: skip
_ROUTE_KEYWORDS = (
    _ROUTE_FLAGS
    | _ROUTE_SKIP_ARG
    | {"via", "dev", "src", "table", "proto", "scope", "metric", "encap", "nexthop", "weight"}
)


class _RouteDraft:
    """A route being read: multipath `nexthop` lines follow their route line."""

    __slots__ = ("f", "has_pref", "line", "nexthops", "text")

    def __init__(self, line: int, text: str) -> None:
        self.line, self.text = line, text
        self.f: dict[str, Any] = {}
        self.nexthops: list[model.NextHop] = []
        self.has_pref = False


def parse_ip_route(
    text: str, path: str, *, family: int = 4, default_table: str = "main"
) -> tuple[model.Route, ...]:
    """Parse `ip route show table all` text or `ip -j route show table all` JSON.

    `family` applies to routes without any address (`default dev lo`); `default_table` to
    routes without `table` (a `ip route show table 101` capture prints none).
    """
    _check_family(family)
    if _is_json(text):
        return tuple(
            _route_from_json(obj, family, default_table, path, line)
            for line, obj in _json_items(text, path, "ip -j route")
        )
    routes: list[model.Route] = []
    draft: _RouteDraft | None = None
    for idx, line in enumerate(split_lines(text)):
        lineno = idx + 1
        if not line.strip():
            continue
        toks = line.split()
        if line[0] in " \t":
            if toks[0] != "nexthop" or draft is None:
                raise ParseError(path, lineno, f"unexpected continuation line {shorten(line)}")
            draft.nexthops.append(_nexthop_from_text(toks[1:], path, lineno))
            continue
        if draft is not None:
            routes.append(_finish_route(draft, family, default_table, path))
        draft = _route_draft(toks, path, lineno, line)
    if draft is not None:
        routes.append(_finish_route(draft, family, default_table, path))
    return tuple(routes)


def _route_draft(toks: list[str], path: str, line: int, text: str) -> _RouteDraft:
    d = _RouteDraft(line, text)
    f = d.f
    i = 0
    if toks[0] in _ROUTE_TYPES:
        f["type"] = _ROUTE_TYPES[toks[0]]
        i = 1
    if i >= len(toks):
        raise ParseError(path, line, "route without a destination")
    dst = toks[i]
    if dst in _ROUTE_KEYWORDS:
        raise ParseError(path, line, f"not ip route output: {shorten(text)}")
    f["dst"] = None if dst == "default" else ip_network(dst, path, line, "destination")
    i += 1
    n = len(toks)
    while i < n:
        t = toks[i]
        nxt = toks[i + 1] if i + 1 < n else None
        if t in _ROUTE_FLAGS:
            if t == "onlink":
                f["onlink"] = True
            else:
                f.setdefault("flags", []).append(t)
            i += 1
            continue
        if t == "nexthop":  # `ip -o route`: nexthops on the route's own line
            j = i + 1
            while j < n and toks[j] != "nexthop":
                j += 1
            d.nexthops.append(_nexthop_from_text(toks[i + 1 : j], path, line))
            i = j
            continue
        if t == "encap":  # `encap mpls 100` / `encap ip id 5 dst ...`: skip to a known keyword
            i += 1
            while i < n and toks[i] not in _ROUTE_KEYWORDS:
                i += 1
            continue
        if nxt is None:
            raise ParseError(path, line, f"'{t}' without a value")
        if t == "via":
            if nxt in ("inet", "inet6") and i + 2 < n:
                # RFC 5549 `via inet6 fe80::1`: ip names the gateway's family only when it
                # differs from the route's, so the gateway says nothing about the route.
                f["via_family"] = 6 if nxt == "inet6" else 4
                i += 1
                nxt = toks[i + 1]
            f["gateway"] = ip_address(nxt, path, line, "gateway")
        elif t == "dev":
            f["dev"] = nxt
        elif t == "src":
            f["src"] = ip_address(nxt, path, line, "src")
        elif t == "table":
            f["table"] = model.table_name(nxt)
        elif t == "proto":
            f["proto"] = nxt
        elif t == "scope":
            f["scope"] = nxt
        elif t == "metric":
            f["metric"] = to_int(nxt, path, line, "metric")
        elif t in _ROUTE_SKIP_ARG:
            if t == "pref":
                d.has_pref = True
            if nxt == "lock" and i + 2 < n:  # `mtu lock 1400`
                i += 1
        else:
            raise ParseError(path, line, f"unknown ip route keyword {t!r}")
        i += 2
    return d


def _nexthop_from_text(toks: list[str], path: str, line: int) -> model.NextHop:
    gateway = dev = None
    weight, onlink = 1, False
    i, n = 0, len(toks)
    while i < n:
        t = toks[i]
        if t in _ROUTE_FLAGS:
            onlink = onlink or t == "onlink"
            i += 1
            continue
        if i + 1 >= n:
            raise ParseError(path, line, f"nexthop '{t}' without a value")
        v = toks[i + 1]
        if t == "via":
            if v in ("inet", "inet6") and i + 2 < n:
                i += 1
                v = toks[i + 1]
            gateway = ip_address(v, path, line, "nexthop gateway")
        elif t == "dev":
            dev = v
        elif t == "weight":
            weight = to_int(v, path, line, "weight")
        elif t not in _ROUTE_SKIP_ARG:
            raise ParseError(path, line, f"unknown nexthop keyword {t!r}")
        i += 2
    return model.NextHop(gateway=gateway, dev=dev, weight=weight, onlink=onlink)


def _route_family(
    f: dict[str, Any], nexthops: list[model.NextHop], has_pref: bool, default: int
) -> int:
    """The route's family: from its destination, else any address it names, else `pref`."""
    if f.get("dst") is not None:
        return int(f["dst"].version)
    if f.get("src") is not None:
        return int(f["src"].version)
    if f.get("via_family") is not None:
        return 10 - int(f["via_family"])  # the other family: 6 -> 4, 4 -> 6
    if f.get("gateway") is not None:
        return int(f["gateway"].version)
    for nh in nexthops:
        if nh.gateway is not None:
            return int(nh.gateway.version)
    return 6 if has_pref else default


def _finish_route(d: _RouteDraft, family: int, default_table: str, path: str) -> model.Route:
    f = d.f
    fam = _route_family(f, d.nexthops, d.has_pref, family)
    dst = f.get("dst")
    return model.Route(
        family=fam,
        table=f.get("table", default_table),
        type=f.get("type", model.RouteType.UNICAST),
        dst=dst if dst is not None else _DEFAULT_NET[fam],
        gateway=f.get("gateway"),
        dev=f.get("dev"),
        source=model.SourceRef(path, d.line, d.text),
        src=f.get("src"),
        scope=f.get("scope"),
        proto=f.get("proto"),
        metric=f.get("metric", 0),
        onlink=f.get("onlink", False),
        flags=tuple(f.get("flags", ())),
        nexthops=tuple(d.nexthops),
    )


def _json_gateway(obj: dict[str, Any], path: str, line: int) -> model.IPAddress | None:
    if obj.get("gateway") is not None:
        return ip_address(str(obj["gateway"]), path, line, "gateway")
    via = obj.get("via")
    if isinstance(via, dict) and via.get("host") is not None:
        return ip_address(str(via["host"]), path, line, "via")
    return None


def _route_from_json(
    obj: dict[str, Any], family: int, default_table: str, path: str, line: int
) -> model.Route:
    if "dst" not in obj:
        raise ParseError(path, line, "ip -j route: object without 'dst'")
    rtype = obj.get("type", "unicast")
    if not isinstance(rtype, str) or rtype not in _ROUTE_TYPES:
        raise ParseError(path, line, f"ip -j route: unknown route type {rtype!r}")
    flags = obj.get("flags") or []
    if not isinstance(flags, list):
        raise ParseError(path, line, "ip -j route: 'flags' is not a list")
    nexthops = []
    for nh in obj.get("nexthops") or ():
        if not isinstance(nh, dict):
            raise ParseError(path, line, "ip -j route: nexthop is not an object")
        nexthops.append(
            model.NextHop(
                gateway=_json_gateway(nh, path, line),
                dev=nh.get("dev"),
                weight=_json_int(nh.get("weight", 1), path, line, "weight"),
                onlink="onlink" in (nh.get("flags") or ()),
            )
        )
    via = obj.get("via")
    f: dict[str, Any] = {
        "dst": None if obj["dst"] == "default" else ip_network(str(obj["dst"]), path, line, "dst"),
        "gateway": _json_gateway(obj, path, line),
        "src": ip_address(str(obj["prefsrc"]), path, line, "prefsrc")
        if obj.get("prefsrc")
        else None,
        "via_family": {"inet6": 6, "inet": 4}.get(str(via.get("family")))
        if isinstance(via, dict)
        else None,
    }
    fam = _route_family(f, nexthops, "pref" in obj, family)
    return model.Route(
        family=fam,
        table=model.table_name(obj["table"]) if "table" in obj else default_table,
        type=_ROUTE_TYPES[rtype],
        dst=f["dst"] if f["dst"] is not None else _DEFAULT_NET[fam],
        gateway=f["gateway"],
        dev=obj.get("dev"),
        source=model.SourceRef(path, line, compact_json(obj)),
        src=f["src"],
        scope=obj.get("scope"),
        proto=obj.get("protocol"),
        metric=_json_int(obj.get("metric", 0), path, line, "metric"),
        onlink="onlink" in flags,
        flags=tuple(str(x) for x in flags if x != "onlink"),
        nexthops=tuple(nexthops),
    )


# =========================================================================== ip addr

_LINK_HEADER = re.compile(r"^(\d+):\s+([^:\s]+):\s+<([^>]*)>(.*)$")
# First words of `-d` lines that are not a device kind.
_NOT_KIND = {
    "link-netnsid", "link-netns", "promiscuity", "addrgenmode", "numtxqueues", "altname",
    "alias", "vf", "prop", "inet", "inet6", "valid_lft", "protodown", "parentbus",
}  # fmt: skip
_ADDR_FLAGS = {
    "secondary", "primary", "dynamic", "noprefixroute", "tentative", "deprecated", "nodad",
    "optimistic", "dadfailed", "home", "mngtmpaddr", "permanent", "temporary",
    "stable-privacy", "autojoin",
}  # fmt: skip
_ADDR_KEYS = {
    "brd",
    "any",
    "scope",
    "peer",
    "metric",
    "proto",
    "label",
    "valid_lft",
    "preferred_lft",
}


class _LinkDraft:
    __slots__ = ("addresses", "f", "kind_seen", "peer_name")

    def __init__(self) -> None:
        self.f: dict[str, Any] = {}
        self.addresses: list[model.Address] = []
        self.peer_name: str | None = None
        self.kind_seen = False


def parse_ip_addr(text: str, path: str) -> tuple[model.Link, ...]:
    """Parse `ip addr`, `ip -d addr` text or `ip -j [-d] addr` JSON (auto-detected)."""
    if not text.strip():
        raise ParseError(
            path, None, "empty ip addr output: every network namespace has at least 'lo'",
            hint="the command probably failed; re-collect",
        )  # fmt: skip
    if _is_json(text):
        drafts = [
            _link_from_json(obj, path, line) for line, obj in _json_items(text, path, "ip -j addr")
        ]
    else:
        drafts = _links_from_text(split_lines(text), path)
    by_name = {d.f["name"]: d.f["index"] for d in drafts}
    links = []
    for d in drafts:
        if d.peer_name is not None and d.f.get("peer_index") is None:
            # `v1@v0` / JSON "link": "v0": a peer in this netns, named instead of numbered.
            d.f["peer_index"] = by_name.get(d.peer_name)
        links.append(model.Link(addresses=tuple(d.addresses), **d.f))
    return tuple(links)


def _links_from_text(lines: list[str], path: str) -> list[_LinkDraft]:
    drafts: list[_LinkDraft] = []
    cur: _LinkDraft | None = None
    for idx, line in enumerate(lines):
        lineno = idx + 1
        if not line.strip():
            continue
        if line[0] not in " \t":
            m = _LINK_HEADER.match(line)
            if m is None:
                raise ParseError(path, lineno, f"not ip addr output: {shorten(line)}")
            cur = _link_header(m, path, lineno, line)
            drafts.append(cur)
            continue
        if cur is None:
            raise ParseError(path, lineno, f"indented line before any link: {shorten(line)}")
        toks = line.split()
        word = toks[0]
        if word.startswith("link/"):
            _link_layer(cur, toks, path, lineno)
        elif word in ("inet", "inet6"):
            cur.addresses.append(_address_from_text(toks, path, lineno, line))
        elif word in ("valid_lft", "altname", "alias", "vf", "prop"):
            continue
        elif not cur.kind_seen and word not in _NOT_KIND and not word.endswith("_slave"):
            # `ip -d`: the device kind line (`veth`, `vxlan id 5 remote ...`, `bridge ...`).
            cur.kind_seen = True
            cur.f["kind"] = word
            _tunnel_details(cur, toks, path, lineno)
    return drafts


def _link_header(m: re.Match[str], path: str, line: int, text: str) -> _LinkDraft:
    d = _LinkDraft()
    name, at, peer = m.group(2).rpartition("@")
    if not at:
        name, peer = peer, ""
    f = d.f
    f["index"] = int(m.group(1))
    f["name"] = name
    f["source"] = model.SourceRef(path, line, text)
    f["flags"] = frozenset(x for x in m.group(3).split(",") if x)
    if peer and peer != "NONE":
        if peer.startswith("if") and peer[2:].isdigit():
            f["peer_index"] = int(peer[2:])
        else:
            d.peer_name = peer
    toks = m.group(4).split()
    for i in range(len(toks) - 1):
        key, val = toks[i], toks[i + 1]
        if key == "mtu":
            f["mtu"] = to_int(val, path, line, "mtu")
        elif key == "state":
            f["state"] = val
        elif key == "master":
            f["master"] = val
    return d


def _link_layer(d: _LinkDraft, toks: list[str], path: str, line: int) -> None:
    """`link/ether MAC brd MAC [link-netnsid N | link-netns NAME] [promiscuity ...]`."""
    if len(toks) > 1 and ":" in toks[1]:
        d.f["mac"] = toks[1]
    for i in range(1, len(toks) - 1):
        if toks[i] == "link-netnsid":
            d.f["link_netnsid"] = to_int(toks[i + 1], path, line, "link-netnsid")
        elif toks[i] == "link-netns":
            d.f["link_netns"] = toks[i + 1]


def _tunnel_details(d: _LinkDraft, toks: list[str], path: str, line: int) -> None:
    """vxlan/geneve `id N remote IP ... dstport N` (`remote any` of ipip is no address)."""
    for i in range(1, len(toks) - 1):
        key, val = toks[i], toks[i + 1]
        if key == "id" and val.isdigit():
            d.f["tunnel_id"] = int(val)
        elif key in ("remote", "group"):
            try:
                d.f["tunnel_remote"] = ipaddress.ip_address(val)
            except ValueError:
                pass  # "any", "external" tunnels
        elif key == "dstport" and val.isdigit():
            d.f["tunnel_dstport"] = int(val)


def _address_from_text(toks: list[str], path: str, line: int, text: str) -> model.Address:
    """`inet 10.244.2.3/24 brd 10.244.2.255 scope global secondary eth0:1`."""
    if len(toks) < 2:
        raise ParseError(path, line, f"{toks[0]} without an address")
    local = toks[1]
    scope = label = None
    i, n = 2, len(toks)
    while i < n:
        t = toks[i]
        if t in _ADDR_KEYS and i + 1 < n:
            if t == "scope":
                scope = toks[i + 1]
            elif t == "peer" and "/" not in local:
                # `inet 10.0.0.1 peer 10.0.0.2/32`: the prefix length is the peer's.
                local = (
                    f"{local}/{toks[i + 1].partition('/')[2] or ('32' if '.' in local else '128')}"
                )
            i += 2
            continue
        if t not in _ADDR_FLAGS and toks[0] == "inet" and i == n - 1:
            label = t  # ip prints the IPv4 label last (IFA_LABEL)
        i += 1
    return model.Address(
        interface=ip_interface(local, path, line, toks[0]),
        scope=scope,
        source=model.SourceRef(path, line, text),
        label=label,
    )


def _link_from_json(obj: dict[str, Any], path: str, line: int) -> _LinkDraft:
    if "ifindex" not in obj or "ifname" not in obj:
        raise ParseError(path, line, "ip -j addr: object without 'ifindex'/'ifname'")
    d = _LinkDraft()
    f = d.f
    f["index"] = _json_int(obj["ifindex"], path, line, "ifindex")
    f["name"] = str(obj["ifname"])
    f["source"] = model.SourceRef(
        path, line, compact_json({k: v for k, v in obj.items() if k != "addr_info"})
    )
    flags = obj.get("flags") or ()
    if not isinstance(flags, list) or not all(isinstance(x, str) for x in flags):
        raise ParseError(path, line, "ip -j addr: 'flags' is not a list of strings")
    f["flags"] = frozenset(flags)
    f["state"] = obj.get("operstate")
    if obj.get("mtu") is not None:
        f["mtu"] = _json_int(obj["mtu"], path, line, "mtu")
    f["master"] = obj.get("master")
    if obj.get("link_type") != "none" and obj.get("address"):
        f["mac"] = obj["address"]
    if obj.get("link_index") is not None:
        f["peer_index"] = _json_int(obj["link_index"], path, line, "link_index")
    elif obj.get("link"):
        d.peer_name = str(obj["link"])
    if obj.get("link_netnsid") is not None:
        f["link_netnsid"] = _json_int(obj["link_netnsid"], path, line, "link_netnsid")
    info = obj.get("linkinfo") or {}
    if isinstance(info, dict) and info.get("info_kind"):
        f["kind"] = info["info_kind"]
        data = info.get("info_data") or {}
        if isinstance(data, dict):
            if isinstance(data.get("id"), int):
                f["tunnel_id"] = data["id"]
            remote = data.get("remote", data.get("remote6", data.get("group")))
            if remote:
                try:
                    f["tunnel_remote"] = ipaddress.ip_address(remote)
                except ValueError:
                    pass
            if isinstance(data.get("port"), int):
                f["tunnel_dstport"] = data["port"]
    addr_info = obj.get("addr_info") or ()
    if not isinstance(addr_info, (list, tuple)):
        raise ParseError(path, line, f"ip -j addr: {f['name']}: 'addr_info' is not a list")
    for a in addr_info:
        if not isinstance(a, dict) or "local" not in a:
            raise ParseError(path, line, f"ip -j addr: {f['name']}: address without 'local'")
        plen = a.get("prefixlen")
        d.addresses.append(
            model.Address(
                interface=ip_interface(
                    f"{a['local']}/{plen}" if plen is not None else a["local"],
                    path,
                    line,
                    "address",
                ),
                scope=a.get("scope"),
                source=model.SourceRef(path, line, compact_json(a)),
                label=a.get("label"),
            )
        )
    return d


# =========================================================================== ip neigh

# NUD states as iproute2 prints them (ip-neighbour(8)); anything else on a line is a flag.
_NUD_STATES = {"PERMANENT", "NOARP", "REACHABLE", "STALE", "NONE", "INCOMPLETE", "DELAY",
               "PROBE", "FAILED"}


def parse_ip_neigh(text: str, path: str) -> tuple[model.Neighbor, ...]:
    """`ip neigh show` (text) or `ip -j neigh show` (JSON) -> neighbours, both families.

    Text lines: `10.244.1.7 dev eth0 lladdr 02:.. REACHABLE`, `10.9.0.5 dev va INCOMPLETE`,
    `fe80::1 dev eth0 lladdr .. router STALE`. An entry without lladdr never resolved: an
    ARP/NDP request went unanswered (FAILED/INCOMPLETE).
    """
    out: list[model.Neighbor] = []
    if _is_json(text):
        for line, obj in _json_items(text, path, "ip -j neigh"):
            try:
                ip = ipaddress.ip_address(str(obj.get("dst")))
            except ValueError:
                raise ParseError(path, line, f"neighbour address {obj.get('dst')!r} is not an "
                                 "IP address") from None
            state = obj.get("state") or []
            out.append(model.Neighbor(
                ip=ip, dev=obj.get("dev"), lladdr=obj.get("lladdr"),
                state=tuple(str(s) for s in (state if isinstance(state, list) else [state])),
                source=model.SourceRef(path, line, compact_json(obj)),
                proxy="proxy" in obj))
        return tuple(out)
    for line, raw in enumerate(text.splitlines(), start=1):
        toks = raw.split()
        if not toks:
            continue
        try:
            ip = ipaddress.ip_address(toks[0])
        except ValueError:
            raise ParseError(path, line, f"`{raw.strip()}`: not an `ip neigh` line (the first "
                             "word must be an address)") from None
        dev = lladdr = None
        states: list[str] = []
        i = 1
        while i < len(toks):
            tok = toks[i]
            if tok in ("dev", "lladdr") and i + 1 < len(toks):
                if tok == "dev":
                    dev = toks[i + 1]
                else:
                    lladdr = toks[i + 1]
                i += 2
                continue
            if tok in _NUD_STATES:
                states.append(tok)
            i += 1
        out.append(model.Neighbor(ip=ip, dev=dev, lladdr=lladdr, state=tuple(states),
                                  source=model.SourceRef(path, line, raw.rstrip()),
                                  proxy="proxy" in toks[1:]))
    return tuple(out)
