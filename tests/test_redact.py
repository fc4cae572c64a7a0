"""`bundle redact` / `collect --redact`: a shareable bundle that answers like the original.

Pins the three promises of redaction (perf-reliability.md S1): the same trace
dispositions and doctor findings before and after, not one planted identifier left in
any file or path, and a private map beside (never inside) the bundle that is consistent
and injective.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from ambientctl.analyzers.doctor import run_checks
from ambientctl.analyzers.selectors import resolve
from ambientctl.analyzers.trace import Tracer
from ambientctl.bundle.load import load_snapshot
from ambientctl.bundle.reader import open_bundle
from ambientctl.bundle.redact import Redactor, redact_bundle
from ambientctl.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
KEY = b"redaction-test-key-0123456789abc"

# (example, SRC, DST, plaintext) — SRC/DST as a user types them on the original.
CASES = [
    ("seed-kind-ambient", "sleep", "productpage", False),
    ("seed-kind-ambient", "notsleep", "productpage", False),
    ("seed-kind-ambient", "sleep", "reviews", False),
    ("inpod-kind-ambient", "sleep", "productpage", False),
    ("inpod-kind-ambient", "curl", "productpage", False),
    ("inpod-kind-ambient", "sleep", "productpage", True),
    ("mixed-kind-ambient", "sleep", "productpage", False),
    ("mixed-kind-ambient", "sleep", "httpbin", False),
    ("mixed-kind-ambient", "curl", "productpage", False),
]


def _redacted(tmp_path_factory: pytest.TempPathFactory, name: str) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("red") / f"{name}-redacted"
    result = redact_bundle(str(EXAMPLES / name), str(out), key=KEY)
    return out, json.loads(Path(result.map_path).read_text())


@pytest.fixture(scope="module")
def redacted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    return {name: _redacted(tmp_path_factory, name)
            for name in sorted({c[0] for c in CASES}) if (EXAMPLES / name).is_dir()}


def _mapped_ip(pmap: dict, text: str | None) -> str | None:
    """`ip:port` / `ip` of the original, as the redacted bundle must show it."""
    if text is None:
        return None
    host, sep, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    return pmap["ips"].get(host, host) + (sep + port if sep else "")


def _trace(snap, src: str, dst: str, plaintext: bool):
    s = resolve(snap, src, role="source")
    d = resolve(snap, dst, role="destination")
    return Tracer(snap).trace(s, d, plaintext=plaintext)


@pytest.mark.parametrize(("example", "src", "dst", "plaintext"), CASES)
def test_redacted_bundle_traces_to_the_same_disposition(
    redacted: dict, example: str, src: str, dst: str, plaintext: bool
) -> None:
    if example not in redacted:
        pytest.skip(f"examples/{example} not generated")
    out, pmap = redacted[example]
    names = pmap["names"]
    before = _trace(load_snapshot(str(EXAMPLES / example)), src, dst, plaintext)
    after = _trace(load_snapshot(str(out)), names.get(src, src), names.get(dst, dst), plaintext)
    assert after.disposition == before.disposition
    assert len(after.legs) == len(before.legs)
    for a, b in zip(after.legs, before.legs, strict=True):
        assert a.direction == b.direction
        assert a.result.disposition == b.result.disposition
        ra, rb = a.result.delivered_to, b.result.delivered_to
        assert (ra is None) == (rb is None)
        if ra is not None and rb is not None:
            assert (ra.component, ra.port) == (rb.component, rb.port)
            assert ra.address == _mapped_ip(pmap, rb.address)
            assert ra.node == names.get(rb.node, rb.node)
        od_a, od_b = a.result.original_destination, b.result.original_destination
        assert (str(od_a) if od_a else None) == _mapped_ip(pmap, str(od_b) if od_b else None)
    # the request went to the mapped address of the original's
    assert str(after.request.ip) == pmap["ips"].get(str(before.request.ip),
                                                    str(before.request.ip))


@pytest.mark.parametrize("example", ["seed-kind-ambient", "inpod-kind-ambient",
                                     "mixed-kind-ambient"])
def test_redacted_bundle_gets_the_same_doctor_findings(redacted: dict, example: str) -> None:
    if example not in redacted:
        pytest.skip(f"examples/{example} not generated")
    out, _ = redacted[example]

    def summary(path: Path) -> list[tuple[str, str, int]]:
        return sorted((r.check.id, str(r.status), len(r.findings))
                      for r in run_checks(load_snapshot(str(path))))

    assert summary(out) == summary(EXAMPLES / example)


# --------------------------------------------------------------------------- canaries

CANARY_NODE = "canary-nodezq7"
CANARY_NS = "canaryzone-qx"
CANARY_POD = "canarypod-zz9-7b8f6d5c4-hxq2k"
CANARY_IP = "10.203.77.55"
CANARY_PUBLIC_IP = "198.51.7.23"
CANARY_MAC = "52:54:00:c7:a9:3e"
CANARY_UID = "c4a2a9e1-6f3b-4d2e-9c3b-7e5a1d0f2b99"


def _plant(bundle: Path) -> None:
    """Plant distinctive identifiers into several file types of a copy of the seed."""
    (bundle / "manifest.json").unlink()  # planted files no longer match their hashes
    pods = json.loads((bundle / "cluster/pods.json").read_text())
    pods["items"].append({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": CANARY_POD, "namespace": CANARY_NS, "uid": CANARY_UID,
                     "labels": {"app": "canarypod-zz9", "owner-node": CANARY_NODE},
                     "annotations": {"note": f"runs on {CANARY_NODE} at {CANARY_IP}"}},
        "spec": {"nodeName": CANARY_NODE, "containers": [{"name": "canarypod-zz9"}]},
        "status": {"podIP": CANARY_IP, "podIPs": [{"ip": CANARY_IP}],
                   "hostIP": CANARY_PUBLIC_IP},
    })
    (bundle / "cluster/pods.json").write_text(json.dumps(pods, indent=1))
    nodes = json.loads((bundle / "cluster/nodes.json").read_text())
    nodes["items"].append({"apiVersion": "v1", "kind": "Node",
                           "metadata": {"name": CANARY_NODE, "uid": CANARY_UID},
                           "status": {"addresses": [{"type": "InternalIP",
                                                     "address": CANARY_PUBLIC_IP}]}})
    (bundle / "cluster/nodes.json").write_text(json.dumps(nodes, indent=1))
    host = bundle / "nodes/ambient-worker/host"
    ipt = (host / "iptables-save.txt").read_text().replace(
        "COMMIT\n",
        f'-A ztunnel-PREROUTING -s {CANARY_IP}/32 -m comment --comment '
        f'"{CANARY_NS}/{CANARY_POD}:http on {CANARY_NODE}" -j RETURN\n'
        f"-A ztunnel-PREROUTING -d {CANARY_PUBLIC_IP}/32 -j DNAT --to-destination "
        f"{CANARY_IP}:8080\nCOMMIT\n", 1)
    (host / "iptables-save.txt").write_text(ipt)
    with (host / "ipset.txt").open("a") as fh:
        fh.write(f'{CANARY_IP} comment "{CANARY_UID}"\n')
    with (host / "ip-addr.txt").open("a") as fh:
        fh.write(f"9: veth{CANARY_POD[:4]}@if2: <BROADCAST,UP> mtu 1500\n"
                 f"    link/ether {CANARY_MAC} brd ff:ff:ff:ff:ff:ff link-netns "
                 f"cni-{CANARY_UID}\n    inet {CANARY_IP}/24 scope global\n")
    with (host / "ss-listen.txt").open("a") as fh:
        fh.write(f"LISTEN 0 4096 {CANARY_IP}:8080 0.0.0.0:* users:((\"{CANARY_POD}\",pid=9))\n")
    pod_dir = bundle / f"nodes/{CANARY_NODE}/pods/{CANARY_NS}/{CANARY_POD}"
    pod_dir.mkdir(parents=True)
    shutil.copy(bundle / "nodes/ambient-worker/pods/default/sleep-7b85956664-z6qh7/sysctl.txt",
                pod_dir / "sysctl.txt")
    (pod_dir / "ip-route.txt").write_text(f"default via {CANARY_PUBLIC_IP} dev eth0\n"
                                          f"{CANARY_IP.rsplit('.', 1)[0]}.0/24 dev eth0\n")


def _identifiers(src: Path) -> dict[str, set[str]]:
    """Every identifier of the source bundle that redaction must remove."""
    red = Redactor(KEY)
    ips: set[str] = set()
    for path in src.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            for m in re.finditer(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w]|\.\d)", text):
                try:
                    ip = ipaddress.IPv4Address(m.group(0))
                except ValueError:
                    continue
                if not red.v4.kept(int(ip)):
                    ips.add(str(ip))
    pods = json.loads((src / "cluster/pods.json").read_text())["items"]
    user = [p for p in pods if p["metadata"]["namespace"] not in ("istio-system", "kube-system")]
    return {
        "ips": ips,
        "nodes": {"ambient-worker", "ambient-worker2", CANARY_NODE},
        "pods": {p["metadata"]["name"] for p in user},
        "namespaces": {p["metadata"]["namespace"] for p in user} - {"default"},
        "uids": {p["metadata"]["uid"] for p in pods if p["metadata"].get("uid")} | {CANARY_UID},
        "macs": {CANARY_MAC, "02:42:ac:12:00:02"},
    }


def _token_re(word: str) -> re.Pattern[str]:
    return re.compile(r"(?<![A-Za-z0-9_-])" + re.escape(word) + r"(?![A-Za-z0-9_]|-[A-Za-z0-9_])")


def test_no_planted_or_original_identifier_survives(tmp_path: Path) -> None:
    src = tmp_path / "planted"
    shutil.copytree(EXAMPLES / "seed-kind-ambient", src)
    _plant(src)
    ids = _identifiers(src)
    assert CANARY_IP in ids["ips"] and CANARY_PUBLIC_IP in ids["ips"]
    out = tmp_path / "shared" / "out.tar.gz"
    out.parent.mkdir()
    result = redact_bundle(str(src), str(out), key=KEY)
    work = tmp_path / "extracted"
    with tarfile.open(out) as tar:
        tar.extractall(work, filter="data")
    files = [p for p in work.rglob("*") if p.is_file()]
    assert len(files) == result.counts["files"] + 1  # + manifest.json
    hits: list[str] = []
    for path in files:
        text = path.relative_to(work).as_posix() + "\n" + path.read_text(errors="replace")
        low = text.lower()
        for ip in ids["ips"]:
            if re.search(r"(?<![\w.])" + re.escape(ip) + r"(?![\w]|\.\d)", text):
                hits.append(f"{path}: ip {ip}")
        for kind in ("nodes", "pods", "namespaces"):
            for name in ids[kind]:
                if _token_re(name).search(text):
                    hits.append(f"{path}: {kind} {name}")
        for value in ids["uids"] | ids["macs"]:
            if value.lower() in low:
                hits.append(f"{path}: {value}")
        for canary in (CANARY_NODE, CANARY_NS, "canarypod-zz9", CANARY_IP, CANARY_PUBLIC_IP):
            if canary in text:
                hits.append(f"{path}: canary {canary}")
    assert hits == []
    # the map lives beside the bundle, never inside it, and has no empty key or value
    assert Path(result.map_path).parent == out.parent
    assert not any(p.name.endswith("private-map.json") for p in files)
    assert oct(os.stat(result.map_path).st_mode & 0o777) == "0o600"
    pmap = json.loads(Path(result.map_path).read_text())
    for section in ("names", "ips", "macs", "uuids"):
        assert pmap[section], section
        for k, v in pmap[section].items():
            assert k and v and k != v, (section, k, v)
    assert pmap["ips"][CANARY_IP] != CANARY_IP
    assert CANARY_MAC in pmap["macs"] and CANARY_UID in pmap["uuids"]


def test_redacted_bundle_verifies_and_its_map_is_injective(redacted: dict) -> None:
    if "seed-kind-ambient" not in redacted:
        pytest.skip("example not generated")
    out, pmap = redacted["seed-kind-ambient"]
    res = subprocess.run([sys.executable, "-m", "ambientctl", "bundle", "verify", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    opened = open_bundle(str(out))
    try:
        manifest = dict(opened.manifest or {})
    finally:
        opened.close()
    src_manifest = json.loads((EXAMPLES / "seed-kind-ambient/manifest.json").read_text())
    assert manifest["redaction"] == {"applied": True, "parent": src_manifest["bundle_id"],
                                     "rules": "v2"}
    assert manifest["bundle_id"] != src_manifest["bundle_id"]
    for section in ("names", "ips", "macs", "uuids"):
        values = list(pmap[section].values())
        assert len(values) == len(set(values)), f"{section}: two originals share a value"
        assert not set(values) & set(pmap[section]), f"{section}: a value is an original"


def test_ip_map_preserves_prefixes_and_keeps_special_addresses() -> None:
    red = Redactor(KEY)
    for kept in ("127.0.0.1", "169.254.7.127", "0.0.0.0/0", "255.255.255.0", "224.0.0.1",
                 "192.168.126.2", "::1", "fe80::/64", "::/0", "ff02::1"):
        assert red.text(kept) == kept
    net = red.text("10.244.1.0/24")
    host = red.text("10.244.1.7")
    assert ipaddress.ip_address(host) in ipaddress.ip_network(net)
    assert host != "10.244.1.7" and ipaddress.ip_address(host) in ipaddress.ip_network("10.0.0.0/8")
    wide = ipaddress.ip_network(red.text("10.96.0.0/12"))
    assert wide.prefixlen == 12 and ipaddress.ip_address(red.text("10.100.3.4")) in wide
    assert ipaddress.ip_address(red.text("192.168.5.9")).is_private
    assert red.text("iptables v1.8.9 mark 0x100/0x100 at 06:44:37") == \
        "iptables v1.8.9 mark 0x100/0x100 at 06:44:37"
    v6 = red.text("fd00:10:244:1::7")
    assert ipaddress.ip_address(v6) in ipaddress.ip_network(red.text("fd00:10:244:1::/64"))
    # a name is mapped on token boundaries only, longest first
    red.add_name("ambient-worker", "node")
    red.add_name("ambient-worker2", "node")
    red.finish_names()
    a, b = red.names["ambient-worker"], red.names["ambient-worker2"]
    assert red.text("ambient-worker2 ambient-worker iptables-ambient-worker-x") == \
        f"{b} {a} iptables-ambient-worker-x"
    assert str(uuid.UUID(red.text(str(uuid.uuid4())))) != ""


def test_ip_map_is_keyed_full_width_and_never_the_identity() -> None:
    """172.18.0.3 came out unchanged 6.8% of the time (16 outputs); public IPv4 kept its
    low 16 bits. Now: every bit is keyed, so over many keys the outputs spread over the
    whole 172.16/12 and none equals the original; public low bits change too."""
    outs = {Redactor(os.urandom(32)).text("172.18.0.3") for _ in range(300)}
    assert "172.18.0.3" not in outs
    assert len(outs) > 250
    assert all(ipaddress.ip_address(o) in ipaddress.ip_network("172.16.0.0/12") for o in outs)
    lows = {Redactor(os.urandom(32)).text("198.51.7.23").split(".", 2)[2] for _ in range(50)}
    assert len(lows) > 40
    red = Redactor(KEY)
    import random
    rnd = random.Random(7)
    originals = {str(ipaddress.IPv4Address(rnd.getrandbits(32))) for _ in range(3000)}
    mapped = {o: red.text(o) for o in originals}
    assert len(set(mapped.values())) == len(mapped)  # a bijection on what it saw
    for o, m in mapped.items():
        kept = red.v4.kept(int(ipaddress.IPv4Address(o)))
        assert (m == o) == kept, o
        if ipaddress.ip_address(o).is_private != ipaddress.ip_address(m).is_private:
            assert kept or not ipaddress.ip_address(o).is_private, (o, m)
    # prefix preservation on random pairs: common leading bits are kept exactly
    items = list(mapped.items())
    for _ in range(3000):
        (a, ma), (b, mb) = rnd.choice(items), rnd.choice(items)
        ia, ib = int(ipaddress.IPv4Address(a)), int(ipaddress.IPv4Address(b))
        ja, jb = int(ipaddress.IPv4Address(ma)), int(ipaddress.IPv4Address(mb))
        assert (ia ^ ib).bit_length() == (ja ^ jb).bit_length(), (a, b)


def test_redact_refuses_to_overwrite_the_output_or_its_map(tmp_path: Path) -> None:
    out = tmp_path / "r"
    (tmp_path / "r.private-map.json").write_text("{}")
    with pytest.raises(UsageError):
        redact_bundle(str(EXAMPLES / "seed-kind-ambient"), str(out))
    assert not out.exists()


def test_cli_bundle_redact_prints_the_bundle_on_stdout_and_the_map_on_stderr(
        tmp_path: Path) -> None:
    out = tmp_path / "shared.tar.gz"
    res = subprocess.run([sys.executable, "-m", "ambientctl", "bundle", "redact",
                          str(EXAMPLES / "seed-kind-ambient"), str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"{out}\n"
    assert f"{out}.private-map.json" in res.stderr
    assert "Traceback" not in res.stderr
    trace = subprocess.run([sys.executable, "-m", "ambientctl", "trace", "node/" +
                            json.loads(Path(f"{out}.private-map.json").read_text())
                            ["names"]["ambient-worker"], "10.96.182.142",
                            "--bundle", str(out)], capture_output=True, text=True, cwd=ROOT,
                           timeout=60, check=False)
    assert "Traceback" not in trace.stderr


@pytest.mark.kernel
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a network namespace")
def test_collect_redact_leaves_only_the_redacted_bundle(tmp_path: Path) -> None:
    ns = f"ambredact{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "addr", "add", "10.251.3.4/24", "dev", "lo"],
                       check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        out = tmp_path / "b"
        before = set(os.listdir(tmp_path))
        res = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "ambientctl", "collect",
             "--local", "--node-name", "secret-node-x1", "--redact", "-q", "-o", str(out)],
            capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
            env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert res.returncode in (0, 7), res.stderr
        assert res.stdout == f"{out}\n"
        assert f"{out}.private-map.json" in res.stderr
        assert set(os.listdir(tmp_path)) - before == {"b", "b.private-map.json"}
        for path in out.rglob("*"):
            assert "secret-node-x1" not in str(path)
            if path.is_file():
                text = path.read_text(errors="replace")
                assert "secret-node-x1" not in text and "10.251.3.4" not in text, path
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
