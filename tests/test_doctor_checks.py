"""Every doctor check fires on a bundle where its fault is present and stays quiet on one
where it is not.

The bundles are the repository's examples (collected from the labs with `ambientctl
collect --local`) with one small edit each, made in a temporary copy whose manifest hashes
are updated: the fault is the only difference, so the finding must come from it. Each
case also checks that the evidence points at the edited file.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import pytest

from ambientctl.analyzers.doctor import REGISTRY, diagnose, run_checks
from ambientctl.analyzers.findings import CheckStatus, Report
from ambientctl.loading import load_snapshot
from ambientctl.render.doctor_json import doctor_document

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "examples/seed-kind-ambient"
INPOD = ROOT / "examples/inpod-kind-ambient"
MIXED = ROOT / "examples/mixed-kind-ambient"
NFT_POD = ROOT / "tests/fixtures/bundles/inpod-nft-pod/nft-ruleset.json"
SCHEMA = json.loads((ROOT / "docs/schemas/doctor-v1.json").read_text())

W = "nodes/ambient-worker/host"
W2 = "nodes/ambient-worker2/host"
ZT1 = "nodes/ambient-worker/pods/istio-system/ztunnel-nptf6"
ZT2 = "nodes/ambient-worker2/pods/istio-system/ztunnel-vxv4b"
PP = "nodes/ambient-worker2/pods/default/productpage-v1-7c548b785b-w9zl6"
SLEEP_IP = "10.244.2.4"

Edit = Callable[[str], str]


# --------------------------------------------------------------------------- bundle surgery


def _rehash(root: Path, deleted: set[str]) -> None:
    mpath = root / "manifest.json"
    if not mpath.exists():
        return
    doc = json.loads(mpath.read_text())
    entries = []
    for e in doc["entries"]:
        rel = e.get("path")
        if rel in deleted:
            continue
        if rel and (root / rel).exists():
            data = (root / rel).read_bytes()
            e["sha256"] = hashlib.sha256(data).hexdigest()
            e["size"] = len(data)
        entries.append(e)
    doc["entries"] = entries
    mpath.write_text(json.dumps(doc, indent=2) + "\n")


def mutate(base: Path, dest: Path, edits: dict[str, Edit | None]) -> Path:
    """A copy of `base` with `edits` applied (None deletes the file; a new path creates it).

    Editing `ip-rule.txt`/`ip-route.txt`/`ip-addr.txt` also edits (or drops) the JSON twin,
    so that the fault is there whichever format the snapshot prefers.
    """
    out = dest / "bundle"
    shutil.copytree(base, out)
    deleted: set[str] = set()
    for rel, fn in edits.items():
        p = out / rel
        if fn is None:
            p.unlink()
            deleted.add(rel)
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        before = p.read_text() if p.exists() else ""
        after = fn(before)
        assert after != before, f"edit of {rel} changed nothing"
        p.write_text(after)
        for stem in ("ip-rule", "ip-route", "ip-addr"):
            if rel.endswith(f"/{stem}.txt") and (out / rel).with_suffix(".json").exists():
                (out / rel).with_suffix(".json").unlink()
                deleted.add(rel[:-4] + ".json")
            if rel.endswith(f"/{stem}.json") and (out / rel).with_suffix(".txt").exists():
                (out / rel).with_suffix(".txt").unlink()
                deleted.add(rel[:-5] + ".txt")
    _rehash(out, deleted)
    return out


def drop_lines(pattern: str) -> Edit:
    """Remove every line matching `pattern` (a regex); at least one must match."""
    rx = re.compile(pattern)

    def fn(text: str) -> str:
        lines = text.splitlines(keepends=True)
        kept = [ln for ln in lines if not rx.search(ln)]
        assert len(kept) < len(lines), f"no line matches {pattern!r}"
        return "".join(kept)

    return fn


def sub(pattern: str, repl: str, count: int = 0) -> Edit:
    """re.sub on the whole file; it must change something."""
    def fn(text: str) -> str:
        new, n = re.subn(pattern, repl, text, count=count, flags=re.MULTILINE)
        assert n, f"{pattern!r} not found"
        return new

    return fn


def json_edit(fn: Callable[[object], object]) -> Edit:
    """Edit a JSON file as data."""
    return lambda text: json.dumps(fn(json.loads(text)), indent=2) + "\n"


def drop_rule_json(priority: int) -> Edit:
    """`ip -j rule`: remove the rule with this priority."""
    return json_edit(lambda d: [r for r in d if r.get("priority") != priority])  # type: ignore[union-attr]


def pods_edit(fn: Callable[[dict], None]) -> Edit:
    """Apply `fn` to cluster/pods.json's items."""
    def edit(doc: object) -> object:
        for item in doc["items"]:  # type: ignore[index]
            fn(item)
        return doc

    return json_edit(edit)


def add_pod_annotation(name_prefix: str, key: str, value: str) -> Edit:
    def fn(item: dict) -> None:
        if item["metadata"]["name"].startswith(name_prefix):
            item["metadata"].setdefault("annotations", {})[key] = value
    return pods_edit(fn)


def insert_after(pattern: str, line: str) -> Edit:
    """Insert `line` after the first line matching `pattern`."""
    def fn(text: str) -> str:
        out, done = [], False
        for ln in text.splitlines(keepends=True):
            out.append(ln)
            if not done and re.search(pattern, ln):
                out.append(line + "\n")
                done = True
        assert done, f"no line matches {pattern!r}"
        return "".join(out)
    return fn


def chain(*edits: Edit) -> Edit:
    def fn(text: str) -> str:
        for e in edits:
            text = e(text)
        return text
    return fn


def _move_ztunnel_chains_to_legacy(text: str) -> str:
    """The iptables-legacy-save dump of the node's ztunnel-* chains only."""
    out: list[str] = []
    for block in re.findall(r"^\*(\w+)\n(.*?)^COMMIT$", text, flags=re.MULTILINE | re.DOTALL):
        table, body = block
        lines = [ln for ln in body.splitlines() if "ztunnel-" in ln]
        if not lines:
            continue
        builtins = [ln for ln in body.splitlines() if re.match(r"^:[A-Z]+ (ACCEPT|DROP)", ln)]
        out += [f"*{table}", *builtins, *lines, "COMMIT",
                "# Completed on Sat Nov 28 06:00:00 2026"]
    return "# Generated by iptables-save v1.8.9 on Sat Nov 28 06:00:00 2026\n" + \
        "\n".join(out) + "\n"


def _veth_of(bundle: Path, host: str, ip: str) -> str:
    text = (bundle / host / "ip-route.txt").read_text() if (bundle / host / "ip-route.txt"
                                                            ).exists() else ""
    m = re.search(rf"^{re.escape(ip)} dev (\S+)", text, flags=re.MULTILINE)
    if m:
        return m.group(1)
    routes = json.loads((bundle / host / "ip-route.json").read_text())
    return next(r["dev"] for r in routes if r.get("dst") == ip)


def _config_dump(base: Path, node: str, *, drop_state: str | None = None) -> Edit:
    """A ztunnel config_dump listing the node's ambient pods HBONE and Up."""
    pods = json.loads((base / "cluster/pods.json").read_text())["items"]
    workloads, states = [], {}
    for p in pods:
        md, spec = p["metadata"], p["spec"]
        if spec.get("nodeName") != node or md["namespace"] != "default":
            continue
        workloads.append({"uid": f"Kubernetes//Pod/{md['namespace']}/{md['name']}",
                          "name": md["name"], "namespace": md["namespace"], "node": node,
                          "protocol": "HBONE", "workloadIps": [p["status"]["podIP"]]})
        if not (drop_state and md["name"].startswith(drop_state)):
            states[md["uid"]] = {"info": {"name": md["name"], "namespace": md["namespace"]},
                                 "state": "Up"}
    doc = {"workloads": workloads, "services": [], "policies": [], "certificates": [],
           "workloadState": states}
    return lambda _text: json.dumps(doc, indent=2) + "\n"


# --------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    """`check` fires on `base` + `edits`; a finding names `node` (and `pod`) with evidence
    in a file under `where` (path prefix)."""

    check: str
    base: str  # "seed" | "inpod" | "mixed"
    edits: Callable[[Path], dict[str, Edit | None]]
    node: str | None = None
    pod: str | None = None
    where: str | None = None
    also: tuple[str, ...] = field(default=())  # other checks that may fire on the same edit


def _seed_manifest_failed(_b: Path) -> dict[str, Edit | None]:
    def fn(doc: object) -> object:
        for e in doc["entries"]:  # type: ignore[index]
            if e.get("path") == f"{ZT1}/ss-listen.txt":
                e.update(path=None, status="nonzero-exit", exit_code=1,
                         stderr="ss: cannot open netlink socket: Operation not permitted\n",
                         sha256=None, size=None)
        return doc
    return {f"{ZT1}/ss-listen.txt": None, "manifest.json": json_edit(fn)}


def _masq_first(text: str) -> str:
    """A CNI MASQUERADE for pod traffic inserted at the top of nat POSTROUTING."""
    return sub(r"^(-A POSTROUTING -j ISTIO_POSTRT)$",
               r"-A POSTROUTING -d 10.244.0.0/16 -j MASQUERADE\n\1", count=1)(text)



def _kube_first(text: str) -> str:
    """kube-proxy's nat PREROUTING jump moved ahead of ztunnel-PREROUTING (fault kube-proxy-ahead)."""
    head, nat = text.split("*nat\n", 1)
    body, tail = nat.split("\nCOMMIT\n", 1)
    jump = '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\n'
    ours = "-A PREROUTING -j ztunnel-PREROUTING\n"
    assert jump in body and ours in body
    body = body.replace(jump, "", 1).replace(ours, jump + ours, 1)
    return head + "*nat\n" + body + "\nCOMMIT\n" + tail


def _label_legacy_ambient(doc: object) -> object:
    for item in doc["items"]:  # type: ignore[index]
        if item["metadata"]["name"] == "legacy":
            item["metadata"].setdefault("labels", {})["istio.io/dataplane-mode"] = "ambient"
    return doc


def _use_waypoint(doc: object) -> object:
    """Service productpage labelled `istio.io/use-waypoint: waypoint`."""
    for item in doc["items"]:  # type: ignore[index]
        if item["metadata"]["name"] == "productpage":
            item["metadata"].setdefault("labels", {})["istio.io/use-waypoint"] = "waypoint"
    return doc


def _waypoint_service(doc: object, waypoint_for: str) -> object:
    """The waypoint's own Service, `istio.io/waypoint-for: <waypoint_for>`."""
    svc = json.loads(json.dumps(doc["items"][0]))  # type: ignore[index]
    svc["metadata"].update(name="waypoint", labels={
        "gateway.networking.k8s.io/gateway-name": "waypoint",
        "istio.io/waypoint-for": waypoint_for})
    doc["items"].append(svc)  # type: ignore[index]
    return doc


def _pending_waypoint_pod(doc: object) -> object:
    """A waypoint pod that never started (Pending, no address)."""
    pod = json.loads(json.dumps(doc["items"][0]))  # type: ignore[index]
    pod["metadata"].update(name="waypoint-5f9c8d7b6-x2k4p", namespace="default", labels={
        "gateway.networking.k8s.io/gateway-name": "waypoint",
        "gateway.istio.io/managed": "istio.io-mesh-controller",
        "istio.io/dataplane-mode": "none"}, annotations={})
    pod["status"] = {"phase": "Pending"}
    doc["items"].append(pod)  # type: ignore[index]
    return doc


CASES: list[Case] = [
    # ---- 1xx
    Case("AMB101", "seed", lambda b: {"manifest.json": None}, where="manifest.json"),
    Case("AMB102", "seed", _seed_manifest_failed, node="ambient-worker", where="manifest.json"),
    Case("AMB103", "seed", lambda b: {f"{W2}/ip-rule.txt": sub(r"^101:.*$", "101:\tfrom all frobnicate")},
         node="ambient-worker2", where=f"{W2}/ip-rule"),
    Case("AMB104", "seed", lambda b: {f"{W2}/ipset.txt": sub(r"Number of entries: 6", "Number of entries: 9")},
         node="ambient-worker2", where=f"{W2}/ipset.txt"),
    Case("AMB105", "seed", lambda b: {"cluster/services.json": None}, where="cluster/services.json"),
    Case("AMB106", "seed", lambda b: {"cluster/nodes.json": json_edit(lambda d: {**d, "items": d["items"] + [  # type: ignore[index,operator]
        {**d["items"][0], "metadata": {**d["items"][0]["metadata"], "name": "ambient-worker3"}}]})},  # type: ignore[index]
         node="ambient-worker3", where="nodes/ambient-worker3/"),
    # ---- 2xx
    Case("AMB201", "seed", lambda b: {f"{W}/ipset.txt": chain(drop_lines(rf"^{SLEEP_IP} "),
                                                             sub(r"Number of entries: 2", "Number of entries: 1"))},
         node="ambient-worker", pod="default/sleep-7b85956664-z6qh7", where=f"{W}/ipset.txt",
         also=("AMB218",)),
    Case("AMB202", "seed", lambda b: {f"{W2}/ip-route.txt": drop_lines(r"^10\.244\.1\.7 via .* table 100")},
         node="ambient-worker2", pod="default/productpage-v1-7c548b785b-w9zl6", where=f"{W2}/ip-route"),
    Case("AMB203", "seed", lambda b: {f"{W2}/ipset.txt": chain(
        insert_after(r"^Members:", '10.244.1.66 comment "0bad0bad-0000-4000-8000-000000000000"'),
        sub(r"Number of entries: 6", "Number of entries: 7"))},
         node="ambient-worker2", where=f"{W2}/ipset.txt"),
    Case("AMB204", "seed", lambda b: {f"{W2}/ip-route.txt": insert_after(
        r"^10\.244\.1\.4 via", "10.244.1.66 via 192.168.126.2 dev istioin table 100 src 10.244.1.1 ")},
         node="ambient-worker2", where=f"{W2}/ip-route"),
    Case("AMB205", "seed", lambda b: {f"{W2}/ipset.txt": sub(r"maxelem 65536", "maxelem 6")},
         node="ambient-worker2", where=f"{W2}/ipset.txt"),
    Case("AMB206", "seed", lambda b: {f"{W}/ip-rule.txt": drop_lines(r"^101:")},
         node="ambient-worker", where=f"{W}/ip-rule"),
    Case("AMB207", "seed", lambda b: {f"{W}/ip-rule.txt": insert_after(
        r"^103:", "105:\tfrom all fwmark 0x100/0x100 lookup 101")},
         node="ambient-worker", where=f"{W}/ip-rule"),
    Case("AMB208", "seed", lambda b: {f"{W}/ip-rule.txt": chain(
        drop_lines(r"^101:"), insert_after(r"^32766:", "32770:\tfrom all fwmark 0x100/0x100 lookup 101"))},
         node="ambient-worker", where=f"{W}/ip-rule"),
    Case("AMB209", "seed", lambda b: {f"{W2}/ip-route.txt": drop_lines(r"^default via .* table 102")},
         node="ambient-worker2", where=f"{W2}/ip-route"),
    Case("AMB210", "seed", lambda b: {f"{W2}/ip-addr.txt": sub(
        r"(istioin@if\d+: <BROADCAST,MULTICAST),UP,LOWER_UP>(.*)state UP", r"\1>\2state DOWN")},
         node="ambient-worker2", where=f"{W2}/ip-addr"),
    Case("AMB211", "seed", lambda b: {f"{W2}/ip-route.txt": sub(
        r"^default via 10\.244\.1\.2 (dev \S+ table 102)", r"default via 10.244.1.99 \1")},
         node="ambient-worker2", where=f"{W2}/ip-route"),
    Case("AMB212", "seed", lambda b: {f"{W2}/ip-route.txt": sub(
        r"^10\.244\.1\.2 dev veth5db63c11 table 101", "10.244.1.2 dev vethdeadbeef table 101")},
         node="ambient-worker2", where=f"{W2}/ip-route"),
    Case("AMB213", "seed", lambda b: {f"{ZT2}/iptables-save.txt": drop_lines(r"--on-port 15008")},
         node="ambient-worker2", pod="istio-system/ztunnel-vxv4b", where=f"{ZT2}/iptables-save.txt"),
    Case("AMB214", "seed", lambda b: {f"{ZT2}/ip-rule.txt": drop_lines(r"^20000:")},
         node="ambient-worker2", pod="istio-system/ztunnel-vxv4b", where=f"{ZT2}/ip-rule"),
    Case("AMB215", "seed", lambda b: {f"{ZT2}/ip-rule.txt": drop_lines(r"^20003:")},
         node="ambient-worker2", pod="istio-system/ztunnel-vxv4b", where=f"{ZT2}/ip-rule"),
    Case("AMB216", "seed", lambda b: {f"{ZT2}/ss-listen.txt": drop_lines(r":15006 ")},
         node="ambient-worker2", pod="istio-system/ztunnel-vxv4b", where=f"{ZT2}/ss-listen.txt"),
    Case("AMB217", "seed", lambda b: {f"{ZT2}/ip-addr.txt": sub(
        r"(pistioin@if\d+: <BROADCAST,MULTICAST),UP,LOWER_UP>(.*)state UNKNOWN|"
        r"(pistioin@if\d+: <BROADCAST,MULTICAST),UP,LOWER_UP>(.*)state UP",
        lambda m: f"{m.group(1) or m.group(3)}>{m.group(2) or m.group(4)}state DOWN")},  # type: ignore[arg-type]
         node="ambient-worker2", pod="istio-system/ztunnel-vxv4b", where=f"{ZT2}/ip-addr"),
    Case("AMB218", "seed", lambda b: {f"{W}/iptables-save.txt": drop_lines(r"--set-xmark 0x100/0x100")},
         node="ambient-worker", where=f"{W}/iptables-save.txt"),
    Case("AMB219", "seed", lambda b: {"cluster/pods.json": json_edit(lambda d: {**d, "items": [  # type: ignore[index]
        i for i in d["items"] if not (i["spec"].get("nodeName") == "ambient-worker2"  # type: ignore[index]
                                      and i["metadata"]["namespace"] in ("default", "istio-system"))]})},
         node="ambient-worker2", where=f"{W2}/", also=("AMB203", "AMB204")),
    # ---- 3xx
    Case("AMB301", "inpod", lambda b: {f"{PP}/iptables-save.txt": drop_lines(r"ISTIO_")},
         node="ambient-worker2", pod="default/productpage-v1-7c548b785b-w9zl6",
         where=f"{PP}/iptables-save.txt",
         also=("AMB310",)),  # the example's config_dump still lists it HBONE (#61182)
    Case("AMB302", "inpod", lambda b: {f"{PP}/iptables-save.txt": sub(r" ! --dport 15008", "")},
         node="ambient-worker2", pod="default/productpage-v1-7c548b785b-w9zl6",
         where=f"{PP}/iptables-save.txt"),
    Case("AMB303", "inpod", lambda b: {f"{PP}/ip-rule.json": drop_rule_json(32764)}
         if (b / PP / "ip-rule.json").exists() else {f"{PP}/ip-rule.txt": drop_lines(r"^32764:")},
         node="ambient-worker2", pod="default/productpage-v1-7c548b785b-w9zl6", where=f"{PP}/ip-rule"),
    Case("AMB304", "inpod", lambda b: {f"{PP}/ss-listen.txt": drop_lines(r":15001 ")},
         node="ambient-worker2", pod="default/productpage-v1-7c548b785b-w9zl6",
         where=f"{PP}/ss-listen.txt"),
    Case("AMB305", "inpod", lambda b: {"cluster/pods.json": add_pod_annotation(
        "productpage", "ambient.istio.io/redirection", "pending")},
         node="ambient-worker2", pod="default/productpage-v1-7c548b785b-w9zl6",
         where="cluster/pods.json"),
    Case("AMB306", "inpod", lambda b: {f"{W2}/ipset.txt": chain(
        drop_lines(r"^10\.244\.1\.7 "), sub(r"Number of entries: 2", "Number of entries: 1"))},
         node="ambient-worker2", pod="default/productpage-v1-7c548b785b-w9zl6", where=f"{W2}/ipset.txt",
         also=("AMB307",)),
    Case("AMB307", "inpod", lambda b: {f"{W2}/iptables-save.txt": _masq_first},
         node="ambient-worker2", where=f"{W2}/iptables-save.txt"),
    Case("AMB308", "mixed", lambda b: {"cluster/namespaces.json": json_edit(_label_legacy_ambient)},
         node="ambient-worker2", pod="legacy/httpbin-6fcb98998c-k7v2x", where="cluster/"),
    Case("AMB309", "inpod", lambda b: {f"{PP}/nft-ruleset.json": lambda _t: NFT_POD.read_text()},
         node="ambient-worker2", pod="default/productpage-v1-7c548b785b-w9zl6", where=PP),
    Case("AMB310", "inpod", lambda b: {"nodes/ambient-worker2/ztunnel/config_dump.json":
                                       _config_dump(b, "ambient-worker2", drop_state="productpage")},
         node="ambient-worker2", pod="default/productpage-v1-7c548b785b-w9zl6",
         where="nodes/ambient-worker2/ztunnel/config_dump.json"),
    Case("AMB311", "inpod", lambda b: {f"{W2}/ipset.txt": chain(
        insert_after(r"^Members:", '10.244.1.66 comment "0bad0bad-0000-4000-8000-000000000000"'),
        sub(r"Number of entries: 2", "Number of entries: 3"))},
         node="ambient-worker2", where=f"{W2}/ipset.txt"),
    Case("AMB312", "inpod", lambda b: {f"{W2}/iptables-save.txt": chain(
        insert_after(r"^:POSTROUTING ACCEPT", ":ISTIO_OUTPUT - [0:0]"),
        insert_after(r"^-A POSTROUTING -j ISTIO_POSTRT",
                     "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -j REDIRECT --to-ports 15001"))},
         node="ambient-worker2", where=f"{W2}/iptables-save.txt"),
    # ---- 4xx
    Case("AMB401", "seed", lambda b: {f"{W}/iptables-save.txt": _kube_first},
         node="ambient-worker", where=f"{W}/iptables-save.txt"),
    Case("AMB402", "seed", lambda b: {f"{W}/ip-route.txt": lambda t: t + (
        "local 10.96.182.142 dev kube-ipvs0 table local proto kernel scope host src 10.96.182.142 \n")},
         node="ambient-worker", where=f"{W}/ip-route"),
    Case("AMB403", "seed", lambda b: {f"{W}/sysctl.txt": sub(
        rf"^net\.ipv4\.conf\.{_veth_of(b, W, SLEEP_IP)}\.rp_filter = 0",
        f"net.ipv4.conf.{_veth_of(b, W, SLEEP_IP)}.rp_filter = 1")},
         node="ambient-worker", where=f"{W}/sysctl.txt"),
    Case("AMB404", "seed", lambda b: {f"{W}/iptables-save.txt": insert_after(
        r"^-A OUTPUT -j ztunnel-OUTPUT", "-A OUTPUT -j MARK --set-xmark 0x200/0xf00")},
         node="ambient-worker", where=f"{W}/iptables-save.txt"),
    Case("AMB405", "seed", lambda b: {
        f"{W}/iptables-legacy-save.txt": lambda _t: _move_ztunnel_chains_to_legacy(
            (b / W / "iptables-save.txt").read_text()),
        f"{W}/iptables-save.txt": drop_lines(r"ztunnel-")},
         node="ambient-worker", where=W, also=("AMB401",)),
    Case("AMB406", "inpod", lambda b: {
        f"{W2}/iptables-save.txt": drop_lines(r"ISTIO_POSTRT"),
        f"{W2}/ipset.txt": lambda _t: "\n",
        **{str(p.relative_to(b)): None for p in sorted((b / "nodes/ambient-worker2/pods").rglob("*"))
           if p.is_file()}},
         node="ambient-worker2", where=f"{W2}/iptables-save.txt"),
    Case("AMB407", "seed", lambda b: {"cluster/pods.json": json_edit(lambda d: {**d, "items": [  # type: ignore[index]
        i for i in d["items"] if i["metadata"]["name"] != "ztunnel-vxv4b"]})},  # type: ignore[index]
         node="ambient-worker2", where="cluster/pods.json"),
    Case("AMB408", "seed", lambda b: {f"{ZT1}/sysctl.txt": sub(
        r"^net\.ipv4\.conf\.pistioout\.rp_filter = 0", "net.ipv4.conf.pistioout.rp_filter = 1")},
         node="ambient-worker", pod="istio-system/ztunnel-nptf6", where=f"{ZT1}/sysctl.txt"),
    # ---- 5xx
    Case("AMB501", "inpod", lambda b: {"cluster/services.json": json_edit(_use_waypoint)},
         where="cluster/services.json"),
    Case("AMB502", "inpod", lambda b: {"cluster/services.json": json_edit(_use_waypoint),
                                       "cluster/pods.json": json_edit(_pending_waypoint_pod)},
         where="cluster/services.json"),
    Case("AMB503", "inpod", lambda b: {"cluster/services.json": json_edit(
        lambda d: _waypoint_service(_use_waypoint(d), "workload"))},
         where="cluster/services.json"),
]


BASES = {"seed": SEED, "inpod": INPOD, "mixed": MIXED}


@pytest.fixture(scope="module")
def base_reports() -> dict[str, Report]:
    """doctor on each untouched example."""
    return {name: diagnose(load_snapshot(str(path))) for name, path in BASES.items()}


def test_every_check_has_a_firing_case() -> None:
    assert sorted(c.check for c in CASES) == sorted(REGISTRY), \
        "each check needs exactly one case in CASES"


@pytest.mark.parametrize("case", CASES, ids=[c.check for c in CASES])
def test_check_fires_on_its_fault(case: Case, tmp_path: Path) -> None:
    base = BASES[case.base]
    bundle = mutate(base, tmp_path, case.edits(base))
    report = diagnose(load_snapshot(str(bundle)))
    # Every finding's shape is what docs/schemas/doctor-v1.json promises.
    jsonschema.validate(doctor_document(report), SCHEMA, cls=jsonschema.Draft202012Validator)
    every = list(report.results)
    fired = {r.check.id for r in every if r.findings}
    # One fault, one diagnosis: nothing else fires (except what the case says may follow).
    assert fired <= {case.check, *case.also}, fired
    results = [r for r in every if r.check.id == case.check]
    found = [f for r in results for f in r.findings]
    assert found, f"{case.check} did not fire; results: " + "; ".join(
        f"{r.target} {r.status.value} {r.reason or ''}" for r in results)
    assert not [r for r in results if r.status == CheckStatus.ERRORED], results
    match = [f for f in found if (case.node is None or f.node == case.node)
             and (case.pod is None or f.pod == case.pod)]
    assert match, [(f.node, f.pod, f.message) for f in found]
    f = match[0]
    assert f.severity == REGISTRY[case.check].info.severity
    assert f.remediation and f.evidence and f.message
    assert f.docs == f"docs/checks.md#{case.check.lower()}"
    if case.where:
        assert any(e.path.startswith(case.where) for e in f.evidence), \
            [str(e) for e in f.evidence]
    for e in f.evidence:
        if e.absent:
            assert e.note and e.path in e.note, e
        elif e.line is not None and e.text is not None:
            # The evidence quotes the file it names, verbatim, at that line.
            lines = (bundle / e.path).read_text().splitlines()
            assert lines[e.line - 1].strip() == e.text.strip() or e.text.strip() in lines[e.line - 1], e


@pytest.mark.parametrize("case", CASES, ids=[c.check for c in CASES])
def test_check_is_quiet_on_the_healthy_base(case: Case, base_reports: dict[str, Report]) -> None:
    results = [r for r in base_reports[case.base].results if r.check.id == case.check]
    if case.check == "AMB406":  # only for nodes with no ambient state at all: see below
        assert results == []
        return
    assert results, f"{case.check} has no target on {case.base}"
    assert not [r for r in results if r.status in (CheckStatus.FAILED, CheckStatus.ERRORED)], \
        [(r.target, r.findings) for r in results if r.findings]
    if case.check == "AMB310":  # the in-pod examples carry each node's config_dump
        assert {r.status for r in results} == {CheckStatus.PASSED}
    else:
        assert any(r.status == CheckStatus.PASSED for r in results), results


def test_amb310_passes_when_ztunnel_agrees(tmp_path: Path) -> None:
    bundle = mutate(INPOD, tmp_path, {"nodes/ambient-worker2/ztunnel/config_dump.json":
                                      _config_dump(INPOD, "ambient-worker2"),
                                      "nodes/ambient-worker/ztunnel/config_dump.json": None})
    results = run_checks(load_snapshot(str(bundle)), only=["AMB310"])
    by_target = {r.target: r.status for r in results}
    assert by_target["node/ambient-worker2"] == CheckStatus.PASSED
    assert by_target["node/ambient-worker"] == CheckStatus.SKIPPED


@pytest.mark.parametrize("name", sorted(BASES))
def test_examples_have_no_errors_or_warnings(name: str, base_reports: dict[str, Report]) -> None:
    report = base_reports[name]
    assert not [f for f in report.findings if f.severity.value in ("error", "warning")], \
        [(f.check_id, f.message) for f in report.findings]
    assert not report.errored
    assert all(n.pods_expected and n.pods_captured == n.pods_expected for n in report.nodes), \
        report.nodes


def test_a_missing_file_skips_the_checks_that_need_it_naming_the_file(tmp_path: Path) -> None:
    bundle = mutate(SEED, tmp_path, {f"{ZT2}/ss-listen.txt": None})
    results = [r for r in run_checks(load_snapshot(str(bundle))) if r.check.id == "AMB216"]
    by_target = {r.target: r for r in results}
    skipped = by_target["node/ambient-worker2"]
    assert skipped.status == CheckStatus.SKIPPED
    assert f"{ZT2}/ss-listen.txt" in (skipped.reason or "")
    assert by_target["node/ambient-worker"].status == CheckStatus.PASSED


def test_a_check_that_raises_is_errored_and_the_others_still_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    chk = REGISTRY["AMB206"]

    def boom(ctx: object, node: object) -> list[object]:
        raise RuntimeError("kaboom")

    monkeypatch.setitem(REGISTRY, "AMB206", replace(chk, fn=boom))
    report = diagnose(load_snapshot(str(SEED)))
    errored = [r for r in report.results if r.status == CheckStatus.ERRORED]
    assert {r.check.id for r in errored} == {"AMB206"}
    assert all("kaboom" in (r.reason or "") for r in errored)
    assert sum(1 for r in report.results if r.status == CheckStatus.PASSED) > 40


def test_amb406_is_quiet_on_a_node_without_ambient_pods(tmp_path: Path) -> None:
    """A node with no redirection state and no ambient pod is not a finding."""
    def no_default_pods_on_w2(doc: object) -> object:
        doc["items"] = [i for i in doc["items"]  # type: ignore[index]
                        if not (i["spec"].get("nodeName") == "ambient-worker2"
                                and i["metadata"]["namespace"] == "default")]
        return doc

    edits = next(c for c in CASES if c.check == "AMB406").edits(INPOD)
    edits["cluster/pods.json"] = json_edit(no_default_pods_on_w2)
    bundle = mutate(INPOD, tmp_path, edits)
    results = {r.target: r for r in run_checks(load_snapshot(str(bundle)), only=["AMB406"])}
    assert results["node/ambient-worker2"].status == CheckStatus.PASSED
    assert "node/ambient-worker" not in results  # in-pod there: not applicable


def test_amb304_wants_the_dns_proxy_only_when_the_pod_captures_dns(tmp_path: Path) -> None:
    no_dns_listener = mutate(INPOD, tmp_path / "a", {f"{PP}/ss-listen.txt": drop_lines(r":15053 ")})
    found = [f for r in run_checks(load_snapshot(str(no_dns_listener)), only=["AMB304"])
             for f in r.findings]
    assert [f.pod for f in found] == ["default/productpage-v1-7c548b785b-w9zl6"]
    assert "127.0.0.1:15053" in found[0].message
    no_dns_at_all = mutate(INPOD, tmp_path / "b", {
        f"{PP}/ss-listen.txt": drop_lines(r":15053 "),
        f"{PP}/iptables-save.txt": drop_lines(r"15053")})
    results = run_checks(load_snapshot(str(no_dns_at_all)), only=["AMB304"])
    assert not [f for r in results for f in r.findings]


def test_amb310_flags_hbone_in_ztunnel_for_a_pod_without_rules(tmp_path: Path) -> None:
    bundle = mutate(INPOD, tmp_path, {
        f"{PP}/iptables-save.txt": drop_lines(r"ISTIO_"),
        "nodes/ambient-worker2/ztunnel/config_dump.json": _config_dump(INPOD, "ambient-worker2")})
    found = [f for r in run_checks(load_snapshot(str(bundle)), only=["AMB310"])
             for f in r.findings]
    assert [(f.pod, "as HBONE" in f.message) for f in found] == [
        ("default/productpage-v1-7c548b785b-w9zl6", True)]
    assert found[0].evidence[0].path == "nodes/ambient-worker2/ztunnel/config_dump.json"
    assert '"protocol":"HBONE"' in (found[0].evidence[0].text or "")
    assert found[0].evidence[1].absent and found[0].evidence[1].path.startswith(PP)


def test_a_command_that_failed_on_the_node_is_the_skip_reason(tmp_path: Path) -> None:
    bundle = mutate(SEED, tmp_path, _seed_manifest_failed(SEED))
    results = {r.target: r for r in run_checks(load_snapshot(str(bundle)), only=["AMB216"])}
    reason = results["node/ambient-worker"].reason or ""
    assert results["node/ambient-worker"].status == CheckStatus.SKIPPED
    assert reason.startswith(f"{ZT1}/ss-listen.txt: not collected: nonzero-exit on the node")
    assert "Operation not permitted" in reason
