"""Every ztunnel generation (issue 8 §4): config_dump layouts from Istio 1.18 to today are
read into one model, used by trace and doctor alike, and an unreadable dump is stated.

Fixtures: `tests/fixtures/ztunnel-config-dump/` (sources in its README). The in-pod example
bundle's dumps are re-rendered into each older layout (same workloads, same services) and
the trace and doctor must reach the same conclusions from every one of them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ambientctl.analyzers.parse.ztunnel import parse_config_dump
from ambientctl.errors import ParseError
from ambientctl.loading import load_snapshot

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "ztunnel-config-dump"
INPOD = REPO / "examples" / "inpod-kind-ambient"
NODES = ("ambient-worker", "ambient-worker2")
PP = "productpage-v1-7c548b785b-w9zl6"


# --------------------------------------------------------------------------- the layouts


@pytest.mark.parametrize("name, shape, services", [
    ("ip-map_istio-1.18.json", "ip-map", False),
    ("by-addr_istio-1.20.json", "by-addr", True),
    ("map_istioctl-testdata.json", "map", True),
    ("list_current.json", "list", True),
])
def test_each_generations_dump_is_read(name: str, shape: str, services: bool) -> None:
    cfg = parse_config_dump((FIXTURES / name).read_text(), f"x/{name}", "n1")
    assert cfg.shape == shape and cfg.services_known is services
    assert cfg.workloads and all(w.ips and w.protocol in ("HBONE", "TCP") for w in cfg.workloads)
    by_name = {w.name: w for w in cfg.workloads}
    if shape == "ip-map":
        w = by_name["appa-bf7c45dcb-lmtg2"]
        assert str(w.ips[0]) == "10.244.1.8" and w.protocol == "HBONE" and w.uid is None
        assert by_name["helloworld-v1-cross-node-55446d46d8-ntdbk"].protocol == "TCP"
        assert by_name["appb-6d6c8669b5-pngxg"].waypoint == "10.244.2.7"
        return
    w = by_name["ratings-v1-6484c4d9bb-mdxm5"]
    assert [str(a) for a in w.ips] == ["10.244.2.54"]  # "network1/10.244.2.54" key, net dropped
    assert w.protocol == "HBONE" and w.waypoint == "/10.96.65.117"
    assert w.node == "ambient-worker2"
    svc = next(s for s in cfg.services if s.name == "namespace-istio-waypoint")
    assert [str(v) for v in svc.vips] == ["10.96.65.117"]
    assert svc.ports == {15008: 15008, 15021: 15021}
    [ep] = svc.endpoints
    assert ep.workload_uid.endswith("/namespace-istio-waypoint-d94944bf6-z89g2")
    assert str(ep.address) == "10.244.2.52"
    if shape != "by-addr":
        assert cfg.states["54ce2023-7c77-4bb8-b6c3-eccf619cd6f2"] == "Up"


@pytest.mark.parametrize("text, why", [
    ('{"workloads": [', "not valid JSON"),
    ('[1, 2]', "is a JSON object, not list"),
    ('{"config": {}, "version": "1.99"}', "no ztunnel workloads in any known layout"),
])
def test_unreadable_dump_is_a_parse_error_naming_the_file(text: str, why: str) -> None:
    with pytest.raises(ParseError, match=why) as err:
        parse_config_dump(text, "nodes/n1/ztunnel/config_dump.json", "n1")
    assert str(err.value).startswith("nodes/n1/ztunnel/config_dump.json")
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- trace and doctor


def _as_layout(dump: dict[str, Any], shape: str) -> Any:
    """The same content as the generation `shape` printed it."""
    def key(w: dict[str, Any]) -> str:
        return "/" + w["workloadIps"][0]

    if shape == "list":
        return dump
    if shape == "map":
        return {**dump, "workloads": {key(w): w for w in dump["workloads"]},
                "services": {"/" + s["vips"][0].lstrip("/"): s for s in dump["services"].values()}
                if isinstance(dump["services"], dict) else
                {"/" + s["vips"][0].lstrip("/"): s for s in dump["services"]}}
    if shape == "by-addr":
        svcs = dump["services"].values() if isinstance(dump["services"], dict) else dump["services"]
        return {"by_addr": {key(w): {k: v for k, v in w.items() if k != "uid"}
                            for w in dump["workloads"]},
                "by_vip": {"/" + s["vips"][0].lstrip("/"): s for s in svcs},
                "policies": {}, "certificates": []}
    if shape == "ip-map":
        out = {}
        for w in dump["workloads"]:
            w2 = {k: v for k, v in w.items() if k not in ("uid", "workloadIps")}
            out[w["workloadIps"][0]] = {"workloadIp": w["workloadIps"][0], **w2}
        return {"workloads": out, "policies": {}}
    if shape == "garbage":
        return {"hello": "world"}
    raise AssertionError(shape)


def _bundle_with(tmp: Path, shape: str) -> Path:
    """The in-pod example with both nodes' dumps in `shape`, manifest hashes kept true."""
    out = tmp / shape
    shutil.copytree(INPOD, out)
    manifest = json.loads((out / "manifest.json").read_text())
    for node in NODES:
        rel = f"nodes/{node}/ztunnel/config_dump.json"
        data = (json.dumps(_as_layout(json.loads((out / rel).read_text()), shape), indent=2)
                + "\n").encode()
        (out / rel).write_bytes(data)
        for e in manifest["entries"]:
            if e.get("path") == rel:
                e["sha256"], e["size"] = hashlib.sha256(data).hexdigest(), len(data)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def _ztunnel_steps(bundle: Path) -> list[str]:
    from ambientctl.analyzers.selectors import resolve
    from ambientctl.analyzers.trace import Tracer

    snap = load_snapshot(str(bundle))
    t = Tracer(snap).trace(resolve(snap, "sleep", role="source"),
                           resolve(snap, "productpage", role="destination"))
    assert t.disposition.value == "delivered", t.summary
    return [s.summary for leg in t.legs for s in leg.explanation]


@pytest.mark.parametrize("shape", ["ip-map", "by-addr", "map", "list"])
def test_trace_and_doctor_read_every_generations_dump(shape: str, tmp_path: Path) -> None:
    from ambientctl.analyzers.doctor import diagnose

    bundle = _bundle_with(tmp_path, shape)
    steps = _ztunnel_steps(bundle)
    assert any(f"ztunnel's config_dump lists {PP} with protocol HBONE" in s for s in steps), steps
    report = diagnose(load_snapshot(str(bundle)))
    amb310 = [r for r in report.results if r.check.id == "AMB310"]
    assert amb310 and all(r.status.value == "passed" for r in amb310), \
        [(r.target, r.status.value, r.reason) for r in amb310]


def test_unreadable_dump_is_stated_in_trace_and_doctor(tmp_path: Path) -> None:
    from ambientctl.analyzers.doctor import diagnose

    bundle = _bundle_with(tmp_path, "garbage")
    steps = _ztunnel_steps(bundle)
    assert any("config_dump.json is unreadable (no ztunnel workloads in any known layout"
               in s and "not used" in s for s in steps), steps
    report = diagnose(load_snapshot(str(bundle)))
    amb310 = [r for r in report.results if r.check.id == "AMB310"]
    assert amb310 and all(r.status.value == "skipped" and "unreadable" in (r.reason or "")
                          for r in amb310), [(r.status.value, r.reason) for r in amb310]


# --------------------------------------------------------------------------- which endpoint

SEED = REPO / "examples" / "seed-kind-ambient"
PP_OTHER = "productpage-v1-0a0a0a0a0a-aaaaa"  # sorts before the real one


def _seed_with_second_productpage(tmp: Path, *, ready: bool) -> Path:
    """The seed example plus a second running productpage pod behind the same selector
    (on ambient-worker, 10.244.2.9); the EndpointSlice lists it ready or not ready."""
    out = tmp / f"seed-{ready}"
    shutil.copytree(SEED, out)
    pods = json.loads((out / "cluster/pods.json").read_text())
    orig = next(p for p in pods["items"] if p["metadata"]["name"] == PP)
    twin = json.loads(json.dumps(orig))
    twin["metadata"]["name"] = PP_OTHER
    twin["metadata"]["uid"] = "0a0a0a0a-0000-4000-8000-000000000001"
    twin["spec"]["nodeName"] = "ambient-worker"
    twin["status"]["podIP"] = "10.244.2.9"
    twin["status"]["podIPs"] = [{"ip": "10.244.2.9"}]
    pods["items"].append(twin)
    slices = json.loads((out / "cluster/endpointslices.json").read_text())
    es = next(i for i in slices["items"] if i["metadata"]["name"].startswith("productpage"))
    es["endpoints"].append({"addresses": ["10.244.2.9"], "conditions": {"ready": ready},
                            "nodeName": "ambient-worker",
                            "targetRef": {"kind": "Pod", "name": PP_OTHER,
                                          "namespace": "default"}})
    manifest = json.loads((out / "manifest.json").read_text())
    for rel, doc in (("cluster/pods.json", pods), ("cluster/endpointslices.json", slices)):
        data = (json.dumps(doc, indent=4, sort_keys=True) + "\n").encode()
        (out / rel).write_bytes(data)
        for e in manifest["entries"]:
            if e.get("path") == rel:
                e["sha256"], e["size"] = hashlib.sha256(data).hexdigest(), len(data)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def _trace_to_productpage(bundle: Path, endpoint: str | None = None) -> Any:
    from ambientctl.analyzers.selectors import resolve
    from ambientctl.analyzers.trace import Tracer

    snap = load_snapshot(str(bundle))
    return Tracer(snap).trace(resolve(snap, "sleep", role="source"),
                              resolve(snap, "productpage", role="destination"),
                              endpoint=endpoint)


def test_service_goes_to_the_endpointslices_ready_endpoint_not_any_selected_pod(
        tmp_path: Path) -> None:
    t = _trace_to_productpage(_seed_with_second_productpage(tmp_path, ready=False))
    said = [s.summary for leg in t.legs for s in leg.explanation]
    assert any("EndpointSlices of default/productpage list 1 ready endpoint" in s
               for s in said), said
    assert any(f"load-balances to endpoint {PP} 10.244.1.7:9080" in s for s in said), said
    assert not any(PP_OTHER in s for s in said), said
    assert t.disposition.value == "delivered", t.summary


def test_several_ready_endpoints_are_a_stated_fork_and_endpoint_picks_one(
        tmp_path: Path) -> None:
    bundle = _seed_with_second_productpage(tmp_path, ready=True)
    first = _trace_to_productpage(bundle)
    said = " | ".join(s.summary for leg in first.legs for s in leg.explanation)
    assert f"fork: {PP_OTHER}, {PP}" in said and "pass --endpoint" in said, said
    # The twin is not in the node's ipset: ztunnel sends it plaintext, to its own address.
    assert str(first.legs[1].target.ip) == "10.244.2.9", first.summary
    chosen = _trace_to_productpage(bundle, endpoint=PP)
    said = " | ".join(s.summary for leg in chosen.legs for s in leg.explanation)
    assert "as --endpoint asks" in said and f"fork: {PP_OTHER}, {PP}" in said, said
    assert str(chosen.legs[1].target) == "10.244.1.7:15008"
    assert chosen.disposition.value == "delivered", chosen.summary
    wrong = _trace_to_productpage(bundle, endpoint="10.9.9.9")
    assert wrong.disposition.value == "insufficient-info"
    assert "--endpoint 10.9.9.9 is not one of the ready endpoints" in (wrong.reason or "")


# --------------------------------------------------------------------------- nft listing only

SLEEP_DIR = "nodes/ambient-worker/pods/default/sleep-7b85956664-z6qh7"


def _inpod_without_iptables_save(tmp: Path) -> Path:
    """The in-pod example where sleep's netns has only `nft -j list ruleset`: its ISTIO_*
    chains live in tables iptables-nft wrote (ip nat/mangle/raw, xt expressions)."""
    out = tmp / "nft-only"
    shutil.copytree(INPOD, out)
    gone = {f"{SLEEP_DIR}/iptables-save.txt", f"{SLEEP_DIR}/ip6tables-save.txt"}
    for rel in gone:
        (out / rel).unlink()
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["entries"] = [e for e in manifest["entries"] if e.get("path") not in gone]
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def test_iptables_nft_tables_without_iptables_save_stop_trace_and_doctor_alike(
        tmp_path: Path) -> None:
    """Never dropped without a word: the trace stops with insufficient-info naming the nft
    listing, doctor skips the redirection checks with the same reason (it used to report
    AMB301/AMB310 errors on rules that are there)."""
    from ambientctl.analyzers.doctor import diagnose
    from ambientctl.analyzers.selectors import resolve
    from ambientctl.analyzers.trace import Tracer

    snap = load_snapshot(str(_inpod_without_iptables_save(tmp_path)))
    t = Tracer(snap).trace(resolve(snap, "sleep", role="source"),
                           resolve(snap, "productpage", role="destination"))
    assert t.disposition.value == "insufficient-info", t.summary
    assert any("written by iptables-nft, and no iptables-save" in e and "nft-ruleset.json" in e
               for e in t.data_errors), t.data_errors
    report = diagnose(snap)
    sleep_pod = "default/sleep-7b85956664-z6qh7"
    assert not [f for f in report.findings if f.check_id in ("AMB301", "AMB310")
                and sleep_pod in f.message], [f.message for f in report.findings]
    skipped = [r for r in report.results if r.check.id == "AMB301" and sleep_pod in r.target]
    assert skipped and skipped[0].status.value == "skipped"
    assert "written by iptables-nft" in (skipped[0].reason or "")
