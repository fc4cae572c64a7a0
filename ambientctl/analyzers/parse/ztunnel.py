"""ztunnel's admin `config_dump` (localhost:15000) -> `model.ZtunnelConfig`, every generation.

The dump is ztunnel's own serialization of its state, and its layout followed ztunnel's
internal stores rather than a versioned API. istioctl reads all of them
(`istioctl/pkg/writer/ztunnel/configdump`: `unmarshalListOrMap`, and the older `by_addr` /
`by_vip` struct tags); so must we. The shapes, oldest first (fixtures in
`tests/fixtures/ztunnel-config-dump/`, sources in its README):

* **ip-map** (Istio 1.18, first Rust ztunnel): `{"workloads": {"10.244.1.8": {"workloadIp":
  "10.244.1.8", "protocol": "HBONE", "name", "namespace", "node", "waypointAddresses",
  "gatewayAddress", "nativeHbone", "authorizationPolicies", "status"}}, "policies": {...}}`
  - one `workloadIp`, keyed by that IP, no uid, no Services.
* **by-addr** (about 1.19-1.21): the workload and service stores flattened into the top
  level: `{"by_addr": {"<network>/<ip>": {workload with "workloadIps"}}, "by_uid"?: {...},
  "by_vip": {"<network>/<vip>": {service}}, "policies", "certificates"}`; some builds nest
  them as `"workloads": {"by_addr": ..., "by_uid": ...}`, `"services": {"by_vip": ...}`.
* **map** (about 1.22-1.23): `workloads` a map keyed `"<network>/<ip>"`, `services` keyed
  `"<network>/<vip>"` with `endpoints` keyed `"<uid>:<network>/<ip>"`, plus `workloadState`
  (per pod UID: `state` Up/Pending, `info`, `connections`).
* **list** (current): `workloads`, `services`, `policies`, `certificates` are lists;
  `workloadState` as above.

Addresses are printed as `"10.0.0.1"`, `"/10.0.0.1"`, `"net1/10.0.0.1"` or
`{"network": "net1", "address": "10.0.0.1"}`. A dump in none of these shapes raises
`ParseError`: the analyzers then say it is unreadable rather than treating the mesh as empty.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from typing import Any

from ambientctl import model
from ambientctl.errors import ParseError

__all__ = ["parse_config_dump", "parse_address"]

SHAPES = {  # how the trace names the layout it read (the current one needs no name)
    "ip-map": "Istio 1.18 layout: workloads keyed by IP, one workloadIp",
    "by-addr": "Istio ~1.19-1.21 layout: by_addr/by_vip stores",
    "map": "layout of workloads/services maps keyed network/IP",
    "list": "",
}


def parse_address(value: object) -> model.IPAddress | None:
    """An address as ztunnel prints one (see the module docstring); None if it is not one."""
    if isinstance(value, Mapping):
        value = value.get("address")
    if not isinstance(value, str) or not value:
        return None
    text = value.rsplit("/", 1)[-1]  # drop "<network>/"
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _items(value: object) -> Iterable[tuple[str | None, Any]]:
    """(key, item) of a map, (None, item) of a list: istioctl's unmarshalListOrMap."""
    if isinstance(value, Mapping):
        return list(value.items())
    if isinstance(value, list):
        return [(None, v) for v in value]
    return []


def _ports(value: object) -> dict[int, int]:
    out: dict[int, int] = {}
    if isinstance(value, Mapping):
        for k, v in value.items():
            try:
                out[int(k)] = int(v)
            except (TypeError, ValueError, OverflowError):  # JSON 1e999 is inf: int() overflows
                continue
    return out


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _waypoint(w: Mapping[str, Any]) -> str | None:
    wp = w.get("waypoint")
    if isinstance(wp, Mapping):  # {"destination": "/10.96.65.117", "port": 15008}
        return _str(wp.get("destination")) or _str(wp.get("hostname")) or json.dumps(wp)
    if isinstance(wp, str) and wp:
        return wp
    addrs = w.get("waypointAddresses")  # 1.18: a list of addresses
    if isinstance(addrs, list) and addrs:
        return ", ".join(str(a) for a in addrs)
    return None


def _workload(key: str | None, w: object, ref: model.SourceRef) -> model.ZtunnelWorkload | None:
    if not isinstance(w, Mapping):
        return None
    ips: list[model.IPAddress] = []
    raw = w.get("workloadIps")
    for a in (raw if isinstance(raw, list) else []):
        ip = parse_address(a)
        if ip is not None and ip not in ips:
            ips.append(ip)
    single = parse_address(w.get("workloadIp"))  # Istio 1.18
    if single is not None and single not in ips:
        ips.append(single)
    if not ips and key is not None and parse_address(key) is not None:
        ips.append(parse_address(key))  # type: ignore[arg-type]
    return model.ZtunnelWorkload(
        uid=_str(w.get("uid")), namespace=_str(w.get("namespace")), name=_str(w.get("name")),
        ips=tuple(ips), protocol=(_str(w.get("protocol")) or "TCP").upper(),
        node=_str(w.get("node")), waypoint=_waypoint(w), status=_str(w.get("status")),
        source=model.SourceRef(ref.path, None, f"{w.get('namespace')}/{w.get('name')} "
                               f"protocol {w.get('protocol')} waypoint {_waypoint(w)}"),
    )


def _service(key: str | None, s: object, ref: model.SourceRef) -> model.ZtunnelService | None:
    if not isinstance(s, Mapping):
        return None
    vips: list[model.IPAddress] = []
    lists = []
    for field_name in ("vips", "addresses"):
        value = s.get(field_name) or []
        if not isinstance(value, list):
            # A wrong JSON type is a damaged dump, not "a service without addresses".
            raise ParseError(ref.path, None, f"service {s.get('namespace')}/{s.get('name')}: "
                             f"{field_name} is {type(value).__name__}, expected a list",
                             hint="recollect the ztunnel config_dump")
        lists.extend(value)
    for a in lists:
        ip = parse_address(a)
        if ip is not None and ip not in vips:
            vips.append(ip)
    if not vips and key is not None and parse_address(key) is not None:
        vips.append(parse_address(key))  # type: ignore[arg-type]
    eps = []
    for ekey, e in _items(s.get("endpoints")):
        if not isinstance(e, Mapping):
            continue
        uid = _str(e.get("workloadUid")) or (ekey.split(":", 1)[0] if ekey else None)
        if uid is None:
            continue
        addr = parse_address(e.get("address"))
        if addr is None and ekey and ":" in ekey:
            addr = parse_address(ekey.rsplit(":", 1)[1])
        eps.append(model.ZtunnelEndpoint(uid, addr, _ports(e.get("port")),
                                         _str(e.get("status"))))
    return model.ZtunnelService(
        namespace=_str(s.get("namespace")), name=_str(s.get("name")),
        hostname=_str(s.get("hostname")), vips=tuple(vips), ports=_ports(s.get("ports")),
        endpoints=tuple(eps),
        source=model.SourceRef(ref.path, None, f"service {s.get('namespace')}/{s.get('name')} "
                               f"vips {', '.join(map(str, vips))}"),
    )


def _shape(doc: Mapping[str, Any]) -> tuple[str, object, object] | None:
    """(shape, workloads container, services container), or None when unrecognised."""
    wl = doc.get("workloads")
    if isinstance(wl, Mapping) and ("by_addr" in wl or "by_uid" in wl):
        svc = doc.get("services")
        svc = svc.get("by_vip") if isinstance(svc, Mapping) and "by_vip" in svc else svc
        return "by-addr", wl.get("by_addr") or wl.get("by_uid"), svc
    if "by_addr" in doc or "by_uid" in doc:
        return "by-addr", doc.get("by_addr") or doc.get("by_uid"), doc.get("by_vip")
    if isinstance(wl, list):
        return "list", wl, doc.get("services")
    if isinstance(wl, Mapping):
        values = [v for v in wl.values() if isinstance(v, Mapping)]
        if values and all("workloadIp" in v and "workloadIps" not in v for v in values):
            return "ip-map", wl, doc.get("services")
        return "map", wl, doc.get("services")
    return None


def parse_config_dump(text: str, path: str, node: str) -> model.ZtunnelConfig:
    """Read one `config_dump.json`; `ParseError` when it is not JSON or in no known shape."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ParseError(path, getattr(exc, "lineno", None), f"not valid JSON ({exc})") from None
    except RecursionError:
        raise ParseError(path, None, "nested too deeply to be a real capture") from None
    if not isinstance(doc, Mapping):
        raise ParseError(path, None, f"a ztunnel config_dump is a JSON object, not "
                         f"{type(doc).__name__}")
    found = _shape(doc)
    if found is None:
        keys = ", ".join(sorted(map(str, doc))[:8]) or "none"
        raise ParseError(path, None, f"no ztunnel workloads in any known layout (top-level "
                         f"keys: {keys}; expected workloads, or by_addr/by_uid)",
                         hint="collect it again with `curl localhost:15000/config_dump` in the "
                              "ztunnel pod")
    shape, wl, svc = found
    ref = model.SourceRef(path)
    workloads = tuple(w for k, v in _items(wl) if (w := _workload(k, v, ref)) is not None)
    services = tuple(s for k, v in _items(svc) if (s := _service(k, v, ref)) is not None)
    states: dict[str, str] = {}
    ws = doc.get("workloadState")
    if isinstance(ws, Mapping):
        for uid, st in ws.items():
            if isinstance(st, Mapping):
                states[str(uid)] = str(st.get("state") or "")
    return model.ZtunnelConfig(node=node, shape=shape, workloads=workloads, services=services,
                               services_known=svc is not None, states=states, source=ref)
