"""The routing decision, differentially against the kernel's own `ip route get`.

For every namespace of the seed lab and a grid of destinations, marks and input devices,
`routing.lookup` over the collected bundle must pick the same route type, device and
gateway as `ip -j route get` in the live namespace (ip-rule(8) priority order, fwmark
masks, goto, per-table longest prefix match, `local` tables).
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kernel]

if os.geteuid() != 0:  # pragma: no cover - CI runs as root
    pytest.skip("needs root to build network namespaces", allow_module_level=True)

from ambientctl.analyzers import routing  # noqa: E402
from ambientctl.loading import load_snapshot  # noqa: E402

SeedLab = pytest.importorskip("ambientlab.seed").SeedLab

DESTS = ["10.96.182.142", "10.244.1.7", "10.244.2.4", "10.244.2.3", "172.18.0.3",
         "192.168.126.2", "127.0.0.1", "8.8.8.8"]
MARKS = [0, 0x100, 0x200, 0x40, 0x400, 0x402, 0x4d3]


def kernel_route(netns: str, dst: str, mark: int, iif: str | None, src: str | None) -> dict | None:
    cmd = ["ip", "-n", netns, "-j", "route", "get", dst, "mark", hex(mark)]
    if iif is not None:
        cmd += ["iif", iif, "from", src or "10.244.9.9"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return None  # unreachable / no route / invalid source
    return json.loads(res.stdout)[0]


def test_route_lookup_matches_ip_route_get_in_every_namespace(tmp_path: Path) -> None:
    with SeedLab() as lab:
        bundle = tmp_path / "bundle"
        lab.collect(str(bundle))
        snap = load_snapshot(str(bundle))
        compared = 0
        for ns in snap.namespaces():
            real = lab.netns_name(ns.id)
            iifs: list[str | None] = [None] + [lnk.name for lnk in ns.links or ()
                                               if lnk.name != "lo" and lnk.admin_up][:2]
            for dst in DESTS:
                for mark in MARKS:
                    for iif in iifs:
                        want = kernel_route(real, dst, mark, iif, None)
                        got = routing.lookup(ns, dst=ipaddress.ip_address(dst), mark=mark, iif=iif,
                                             src=None if iif is None else
                                             ipaddress.ip_address("10.244.9.9"))
                        where = f"{ns.id} dst={dst} mark={mark:#x} iif={iif}"
                        if want is None:
                            assert got.kind not in ("unicast", "local") or iif is not None, where
                            continue
                        kind = want.get("type", "unicast")
                        if kind == "local":
                            assert got.kind == "local", f"{where}: kernel {want}, ours {got}"
                        else:
                            assert got.kind == "unicast", f"{where}: kernel {want}, ours {got}"
                            assert got.dev == want.get("dev"), f"{where}: kernel {want}, ours {got}"
                            if want.get("gateway"):
                                assert str(got.gateway) == want["gateway"], where
                        compared += 1
        assert compared > 500
