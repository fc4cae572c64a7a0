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
from hashlib import sha256
from pathlib import Path

import pytest

from ambientctl.analyzers.doctor import run_checks
from ambientctl.analyzers.selectors import resolve
from ambientctl.analyzers.trace import Tracer
from ambientctl.bundle.reader import open_bundle
from ambientctl.bundle.redact import Redactor, redact_bundle
from ambientctl.errors import UsageError
from ambientctl.loading import load_snapshot

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
    # + manifest.json + the archive's member index (scanned below too: it repeats the
    # names the tar headers already hold, and their sizes)
    assert len(files) == result.counts["files"] + 2
    assert (work / "out" / ".ambientctl-tar-index.json").is_file()
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


def test_ipv6_map_is_prefix_preserving_and_never_the_identity() -> None:
    import random
    rnd = random.Random(11)
    red = Redactor(KEY)
    originals = [(0xFD << 120) | rnd.getrandbits(120) for _ in range(400)]
    originals += [(0x2001_0DB8 << 96) | rnd.getrandbits(96) for _ in range(400)]
    mapped = {a: int(ipaddress.IPv6Address(red.text(str(ipaddress.IPv6Address(a)))))
              for a in originals}
    assert len(set(mapped.values())) == len(mapped)
    for a, b in mapped.items():
        assert a != b
        assert (a >> 121 == 0x7E) == (b >> 121 == 0x7E)  # ULA stays ULA (fc00::/7)
    items = list(mapped.items())
    for _ in range(2000):
        (a, ma), (b, mb) = rnd.choice(items), rnd.choice(items)
        assert (a ^ b).bit_length() == (ma ^ mb).bit_length()


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
        # a customer's cluster dir: path, labels, annotations, images all carry canaries
        cluster = tmp_path / "cnry-customer7" / "cluster"
        cluster.mkdir(parents=True)
        pod = _kitchen_sink("pods")
        pod["metadata"].update(name="cnry-pod7-abc", namespace="cnry-ns7",
                               labels={"app": "cnry-app7", "cnry-team.io/o": "cnry-val7"},
                               annotations={"cnry.io/contact": "cnry-oncall7"})
        pod["spec"].update(nodeName="secret-node-x1")
        pod["spec"]["containers"][0]["image"] = "cnry-reg7.io/cnry-repo7/app:1"
        pod["status"].update(podIP="10.251.3.4", podIPs=[{"ip": "10.251.3.4"}])
        from ambientctl.collectors.discovery import PROJECTIONS, as_kubectl_list
        (cluster / "pods.json").write_bytes(as_kubectl_list([PROJECTIONS["pods"](pod)]))
        out = tmp_path / "b"
        before = set(os.listdir(tmp_path))
        res = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "ambientctl", "collect",
             "--local", "--node-name", "secret-node-x1", "--cluster-dir", str(cluster),
             "--redact", "-q", "-o", str(out)],
            capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
            env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert res.returncode in (0, 7), res.stderr
        assert res.stdout == f"{out}\n"
        assert f"{out}.private-map.json" in res.stderr
        assert set(os.listdir(tmp_path)) - before == {"b", "b.private-map.json"}
        leaked = []
        for path in out.rglob("*"):
            assert "secret-node-x1" not in str(path) and "cnry" not in str(path)
            if path.is_file():
                text = path.read_text(errors="replace")
                for needle in ("secret-node-x1", "10.251.3.4", "cnry"):
                    leaked += [f"{path}: {line}" for line in text.splitlines() if needle in line]
        assert leaked == []
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


# ------------------------------------------------ every field of every file type, classified

C = "cnry"  # every planted value contains it; nothing containing it may survive
ACCOUNT = "123456789012"


def _plant_everywhere(bundle: Path) -> list[str]:
    """Plant canaries in every identifying field of every file type; return what was planted."""
    planted: list[str] = []

    def p(value: str) -> str:
        planted.append(value)
        return value

    man = json.loads((bundle / "manifest.json").read_text())
    ctx = p(f"arn:aws:eks:us-east-1:{ACCOUNT}:cluster/{C}-prod7")
    man["collection"].update({
        "mode": "kube", "context": ctx, "kind_cluster": p(f"{C}-kind7"),
        "argv": ["ambientctl", "collect", "--context", ctx, "--ssh", p(f"{C}user@{C}-bastion7"),
                 "-o", p(f"/home/{C}-user7/acme/out")],
        "cluster_dir": p(f"/home/{C}-user7/{C}-customer7/cluster"),
        "cluster_error": p(f"dial tcp: lookup {C}-api7.eks.amazonaws.com: no such host"),
        "discovery_errors": {"ambient-worker": p(f"ssh: connect to host {C}-node7.corp.example")},
        "not_seen": [{"target": "node/ambient-worker", "what": ["nft"],
                      "why": p(f"missing on {C}-host8.corp.example"), "seen_by": "--ssh"}],
        p(f"{C}_future_field"): p(f"{C}-future-value7"),
    })
    e0 = man["entries"][0]
    e0["stderr"] = p(f"ssh: Could not resolve hostname {C}-host9.acme-corp.example; "
                     f"{C}op@10.9.8.7 denied; {ctx}")
    e0["note"] = p(f"killed on {C}-host10.example.internal")
    man["entries"][1]["spec"] = p(f"{C}-spec7")
    e0["wrapper"] = ["ssh", p(f"{C}admin@{C}-node11.corp.example:22"), "sudo", "-n"]
    man["entries"][-1]["source"] = p(f"/home/{C}-user7/{C}-customer7/cluster/pods.json")
    man["targets"][0]["tool_versions"]["iptables"] = p(f"{C}-tool-version7")
    (bundle / "manifest.json").write_text(json.dumps(man, indent=2))

    pods = json.loads((bundle / "cluster/pods.json").read_text())
    pod = pods["items"][0]
    pod["metadata"]["labels"].update({p(f"{C}-team.acme.io/owner"): p(f"{C}-labelval7"),
                                      "topology.kubernetes.io/zone": p(f"{C}-zone-1a")})
    pod["metadata"]["annotations"] = {
        "ambient.istio.io/redirection": "enabled",
        p(f"{C}.acme.io/contact"): p(f"{C}-annval7 on-call"),
        "proxy.istio.io/config": p(f"discoveryAddress: {C}-istiod7.acme.example:15012"),
        "sidecar.istio.io/status": p(f'{{"containers":["{C}-sidecar7"]}}'),
    }
    pod["spec"]["containers"][0]["image"] = p(
        f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/{C}-repo7/{C}-app7:v1")
    pod["spec"]["dnsPolicy"] = p(f"{C}-unknown-pod-field7")
    # kept fields hold vocabulary: a value of another shape is not passed through
    pod["status"]["qosClass"] = p(f"{C}qos")
    pods["items"][1]["metadata"]["labels"]["istio.io/dataplane-mode"] = p(f"{C}ambient")
    zt = next(x for x in pods["items"] if x["metadata"]["name"].startswith("ztunnel"))
    zt["spec"]["containers"][0]["image"] = p(f"{C}-registry7.acme.io/mirror/istio/ztunnel:1.24.0")
    (bundle / "cluster/pods.json").write_text(json.dumps(pods, indent=1))

    svcs = json.loads((bundle / "cluster/services.json").read_text())
    svc = svcs["items"][0]
    svc["status"] = {"loadBalancer": {"ingress": [
        {"hostname": p(f"a1b2{C}-lb7.us-east-1.elb.amazonaws.com"), "ip": "198.51.100.9"}]}}
    svc["spec"]["selector"][p(f"{C}-tier")] = p(f"{C}-frontend7")
    svc["spec"]["externalName"] = p(f"{C}-db7.rds.amazonaws.com")
    (bundle / "cluster/services.json").write_text(json.dumps(svcs, indent=1))

    nodes = json.loads((bundle / "cluster/nodes.json").read_text())
    nodes["items"][0]["spec"]["providerID"] = p(f"aws:///us-east-1a/i-0{C}7")
    nodes["items"][0]["status"]["nodeInfo"]["osImage"] = p(f"{C}-os-image7")
    nodes["items"][0]["status"]["addresses"].append(
        {"type": "ExternalDNS", "address": p(f"ec2-{C}-7.compute.amazonaws.com")})
    (bundle / "cluster/nodes.json").write_text(json.dumps(nodes, indent=1))

    td = p(f"{C}-td7.acme")
    dump = {
        "workloads": {"/10.244.1.7": {
            "uid": "Kubernetes//Pod/default/productpage-v1-7c548b785b-w9zl6",
            "workloadIps": ["10.244.1.7"], "protocol": "HBONE", "trustDomain": td,
            "name": "productpage-v1-7c548b785b-w9zl6", "namespace": "default",
            "serviceAccount": p(f"{C}-sa7"), "network": p(f"{C}-net7"), "node": "ambient-worker2",
            "clusterId": p(f"{C}-cluster7")}},
        "services": {"/240.240.0.1": {"name": p(f"{C}-ext7"), "namespace": "default",
                                      "hostname": p(f"api.{C}-stripe7.example"),
                                      "vips": ["/240.240.0.1"], "ports": {"443": 443},
                                      "endpoints": {},
                                      "subjectAltNames": [f"spiffe://{td}/ns/default/sa/{C}-sa7"]}},
        "policies": [],
        "certificates": [{"identity": f"spiffe://{td}/ns/default/sa/{C}-sa7", "state": "Available",
                          "certChain": [{"pem": p(f"-----BEGIN CERTIFICATE-----\n{C}PEMspiffe://"
                                                  f"{td}\n-----END CERTIFICATE-----\n"),
                                         "serialNumber": p("30555477586339569726250389566156404"),
                                         "validFrom": "2023-03-21T13:02:57Z",
                                         "expirationTime": "2033-03-22T13:04:57Z"}]}],
        "workloadState": {},
    }
    zdir = bundle / "nodes/ambient-worker2/ztunnel"
    zdir.mkdir(parents=True, exist_ok=True)
    (zdir / "config_dump.json").write_text(json.dumps(dump, indent=2))

    host = bundle / "nodes/ambient-worker/host"
    ipt = (host / "iptables-save.txt").read_text().replace(
        "COMMIT\n", f'-A ztunnel-PREROUTING -m comment --comment "to {p(f"{C}-cmt7.acme.io")}"'
        " -j RETURN\nCOMMIT\n", 1)
    (host / "iptables-save.txt").write_text(ipt)
    (host / p(f"{C}-unknown-file.txt")).write_text(p(f"{C}-unknown-content7\n"))
    # the manifest's hashes no longer match what was planted: rehash what it lists
    man = json.loads((bundle / "manifest.json").read_text())
    for e in man["entries"]:
        if e.get("path") and (bundle / e["path"]).exists():
            data = (bundle / e["path"]).read_bytes()
            e["size"], e["sha256"] = len(data), sha256(data).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(man, indent=2))
    return planted


def test_no_canary_planted_in_any_field_of_any_file_type_survives(tmp_path: Path) -> None:
    src = tmp_path / "planted"
    shutil.copytree(EXAMPLES / "seed-kind-ambient", src)
    planted = _plant_everywhere(src)
    out = tmp_path / "shared"
    result = redact_bundle(str(src), str(out), key=KEY)
    leaked: list[str] = []
    for path in out.rglob("*"):
        rel = path.relative_to(out).as_posix()
        text = rel + "\n" + (path.read_text(errors="replace") if path.is_file() else "")
        for needle in (C, ACCOUNT, "acme"):
            for line in text.splitlines():
                if needle in line.lower():
                    leaked.append(f"{rel}: {line.strip()[:160]}")
    print(f"canaries planted: {len(planted)}, leaked lines: {len(leaked)}")
    assert len(planted) >= 40
    assert leaked == []
    # what redaction could not classify is reported, never passed through
    pmap = json.loads(Path(result.map_path).read_text())
    assert "manifest.json: collection.cnry_future_field" in pmap["unclassified"]
    assert any("dnsPolicy" in u for u in pmap["unclassified"])
    assert any("cnry-unknown-file.txt dropped" in w for w in result.warnings)
    # the kept vocabulary is kept: Istio's own image tag, the redirection annotation
    pods = (out / "cluster/pods.json").read_text()
    assert "/ztunnel:1.24.0" in pods and '"ambient.istio.io/redirection": "enabled"' in pods
    assert "spiffe://domain-r1/ns/default/sa/" in (out / f"nodes/{pmap['names']['ambient-worker2']}"
                                                     "/ztunnel/config_dump.json").read_text()
    res = subprocess.run([sys.executable, "-m", "ambientctl", "bundle", "verify", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def _kitchen_sink(kind: str) -> dict:
    """An API object with the fields real clusters return (more than any projection keeps)."""
    meta = {"name": "x-1", "namespace": "ns-1", "uid": str(uuid.uuid4()),
            "creationTimestamp": "2024-01-01T00:00:00Z", "resourceVersion": "12",
            "generateName": "x-", "labels": {"app": "x", "team": "y"},
            "annotations": {"istio.io/rev": "default", "ambient.istio.io/redirection": "enabled",
                            "kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x",
                                 "uid": str(uuid.uuid4()), "controller": True,
                                 "blockOwnerDeletion": True}],
            "managedFields": [{"manager": "kubectl"}], "finalizers": ["f"]}
    container = {"name": "c", "image": "reg/x:1", "imagePullPolicy": "Always",
                 "restartPolicy": "Always", "env": [{"name": "SECRET", "value": "s"}],
                 "args": ["--token=s"], "command": ["x"], "volumeMounts": [{"name": "v"}],
                 "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP",
                            "hostPort": 8080, "hostIP": "10.0.0.1"}]}
    if kind == "pods":
        return {"metadata": meta, "spec": {
            "nodeName": "n", "hostNetwork": False, "serviceAccountName": "sa",
            "containers": [container], "initContainers": [container], "volumes": [{}],
            "dnsPolicy": "ClusterFirst", "tolerations": [{}]},
            "status": {"phase": "Running", "podIP": "10.0.0.2", "podIPs": [{"ip": "10.0.0.2"}],
                       "hostIP": "10.0.0.1", "hostIPs": [{"ip": "10.0.0.1"}],
                       "qosClass": "BestEffort", "startTime": "2024-01-01T00:00:00Z",
                       "conditions": [{"type": "Ready", "status": "True",
                                       "lastTransitionTime": "2024-01-01T00:00:00Z"}],
                       "containerStatuses": [{"name": "c", "ready": True, "restartCount": 0,
                                              "started": True, "image": "reg/x:1",
                                              "imageID": "reg/x@sha256:00",
                                              "containerID": "containerd://00"}]}}
    if kind == "services":
        return {"metadata": meta, "spec": {
            "type": "LoadBalancer", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "selector": {"app": "x"},
            "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Cluster",
            "sessionAffinity": "None", "externalIPs": ["1.2.3.4"], "loadBalancerIP": "1.2.3.5",
            "healthCheckNodePort": 30000, "allocateLoadBalancerNodePorts": True,
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP",
                       "nodePort": 30080, "appProtocol": "http"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.6", "hostname": "lb.example",
                                                     "ipMode": "VIP"}]}}}
    if kind == "namespaces":
        return {"metadata": meta, "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"}}
    if kind == "nodes":
        return {"metadata": meta, "spec": {
            "podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"], "providerID": "kind://x",
            "taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}],
            "unschedulable": False},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                       "nodeInfo": {"kernelVersion": "6.1.0", "osImage": "Debian",
                                    "containerRuntimeVersion": "containerd://1.7.0",
                                    "kubeletVersion": "v1.30.0", "kubeProxyVersion": "v1.30.0",
                                    "architecture": "amd64", "operatingSystem": "linux",
                                    "machineID": "m", "systemUUID": "s", "bootID": "b"},
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "images": [{"names": ["reg/x:1"]}], "capacity": {"cpu": "4"}}}
    return {"metadata": meta, "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.2"], "conditions": {"ready": True},
                           "nodeName": "n", "zone": "z", "hostname": "h",
                           "targetRef": {"kind": "Pod", "namespace": "ns-1", "name": "x-1",
                                         "uid": str(uuid.uuid4()), "resourceVersion": "1"}}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "appProtocol": "http"}]}


def _classify(rel: str, doc: object) -> set[str]:
    from ambientctl.bundle.redact_fields import table_for
    from ambientctl.bundle.redact_walk import Walker

    red = Redactor(KEY)
    Walker(red, table_for(rel), rel, dry=False).walk(doc)
    return red.unclassified


_WRITERS = ("collectors/*.py", "cli/source.py", "bundle/writer.py")
_COLLECTION_NAMES = frozenset({"notes", "meta", "collection"})


def _collection_keys_written() -> set[str]:
    """Every constant key the collectors put in the manifest's `collection`, read from
    their source: `notes[...] = `, `notes.setdefault(...)`, `{...}` assigned to notes /
    meta / collection (the names the collectors use for it), `CollectOptions.record()`
    and the write-error record. So a key added to a collector later is seen here even if
    no test builds it."""
    import ast

    pkg = Path(__file__).resolve().parent.parent / "ambientctl"
    keys: set[str] = set()

    def target_name(node: ast.expr) -> str | None:
        return node.id if isinstance(node, ast.Name) else None

    def dict_keys(node: ast.expr | None) -> None:
        if isinstance(node, ast.Dict):
            keys.update(k.value for k in node.keys
                        if isinstance(k, ast.Constant) and isinstance(k.value, str))

    for pattern in _WRITERS:
        for path in sorted(pkg.glob(pattern)):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store) \
                        and target_name(node.value) in _COLLECTION_NAMES \
                        and isinstance(node.slice, ast.Constant):
                    keys.add(node.slice.value)
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and node.func.attr == "setdefault" \
                        and target_name(node.func.value) in _COLLECTION_NAMES \
                        and node.args and isinstance(node.args[0], ast.Constant):
                    keys.add(node.args[0].value)
                elif isinstance(node, ast.AnnAssign | ast.Assign):
                    names = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
                    if any(target_name(t) in _COLLECTION_NAMES for t in names):
                        dict_keys(node.value)
                elif isinstance(node, ast.Dict) and any(
                        isinstance(k, ast.Constant) and k.value == "write_error"
                        for k in node.keys):
                    dict_keys(node)
                elif isinstance(node, ast.FunctionDef) and node.name == "record":
                    for ret in ast.walk(node):
                        if isinstance(ret, ast.Return):
                            dict_keys(ret.value)
    return keys


def test_every_collection_key_a_collector_writes_has_a_redaction_rule() -> None:
    """A new `collection.*` key (a note, a limit) must be classified before it ships:
    unclassified, its strings would be made opaque and it would be reported."""
    from ambientctl.bundle.redact_fields import DYNAMIC_KEYS, MANIFEST_FIELDS

    written = _collection_keys_written()
    assert {"mode", "argv", "interrupted", "write_error", "unavailable_nodes",
            "unmapped_netns", "target_timeout_s", "max_output_bytes"} <= written
    classified = {p.split(".")[1].split("[")[0] for p in [*MANIFEST_FIELDS, *DYNAMIC_KEYS]
                  if p.startswith("collection.")}
    assert written - classified == set()


def test_every_field_the_collectors_write_is_classified() -> None:
    """Built through the collectors' own code: a projection or manifest field added later
    and missing from redact_fields.py makes this fail (its values would be made opaque)."""
    from ambientctl.bundle.layout import CLUSTER_FILES, config_dump_path, host_dir, pod_dir
    from ambientctl.bundle.manifest import Manifest, entry_for, file_entry
    from ambientctl.bundle.redact_fields import file_kind
    from ambientctl.collectors.discovery import PROJECTIONS, as_kubectl_list
    from ambientctl.collectors.runner import CollectOptions, Target
    from ambientctl.collectors.specs import ALL_SPECS
    from ambientctl.collectors.transport import NetnsRef
    from ambientctl.raw import RawOutput, RawStatus

    for kind, project in PROJECTIONS.items():
        rel = CLUSTER_FILES[kind]
        doc = json.loads(as_kubectl_list([project(_kitchen_sink(kind))]))
        assert _classify(rel, doc) == set(), kind
    from ambientctl.bundle.layout import MESH_FILES
    from ambientctl.collectors.discovery import MESH_PROJECTIONS
    from tests.test_discovery import _mesh_docs

    for (kind, project), plural in zip(MESH_PROJECTIONS.items(),
                                       ("peerauthentications", "authorizationpolicies",
                                        "gateways"), strict=True):
        rel = MESH_FILES[kind]
        sink = _mesh_docs()[plural]["items"][0]
        sink["spec"] |= {"targetRefs": [{"kind": "Service", "group": "", "name": "s"}],
                         "portLevelMtls": {"8080": {"mode": "DISABLE"}}}
        doc = json.loads(as_kubectl_list([project(sink)]))
        assert file_kind(rel) == "cluster"
        assert _classify(rel, doc) == set(), kind
    targets = [Target.node_target("n", NetnsRef(name="x")).describe(),
               Target.pod_target("n", "ns", "p", NetnsRef(path="/proc/1/ns/net")).describe(),
               Target.ztunnel_target("n", "ns", "p", NetnsRef(pid=1)).describe()]
    targets[0]["transport"] = "local"
    targets[0]["tool_versions"] = {"iptables": "iptables v1.8.9 (nf_tables)"}
    targets[0]["route"] = "istio-system/istio-cni-node-x"
    targets[0]["deadline_reached_at"] = "2024-01-01T00:00:00.123456Z"
    out = RawOutput(path="nodes/n/host/ip-rule.txt", target="node/n", argv=("ip", "rule"),
                    transport="ssh", status=RawStatus.OK, exit_code=0, stdout=b"",
                    stderr=b"warn", started_at="2024-01-01T00:00:00Z", duration_ms=1,
                    wrapper=("ssh", "u@h:22"), note="n")
    entries = [entry_for(out, stored=True),
               file_entry("cluster/pods.json", b"{}", source="/tmp/c/pods.json",
                          started_at="2024-01-01T00:00:00Z")]
    collection = {"mode": "kube", "kind_cluster": "k", "context": "c", "argv": ["ambientctl"],
                  "timeout_s": 1.0, "concurrency": 1, "nodes_filter": ["n"],
                  "namespaces_filter": ["ns"], "cluster_error": "e", "cluster_dir": "/x",
                  "discovery_errors": {"n": "e"}, "cluster_list_errors": {"gateways": "e"},
                  "not_seen": [{"target": "node/n", "what": ["nft"], "why": "w", "seen_by": "s"},
                               {"target": "node/n", "what": "all", "why": "w", "seen_by": "s"}],
                  **CollectOptions().record(), "interrupted": True,
                  "write_error": "/home/u/b.partial/x: No space left on device",
                  "unavailable_nodes": {"n": "exited"}, "unmapped_netns": {"n": ["cni-1"]},
                  "pod_netns_via_proc": {"n": "/proc"},
                  "netns_conflicts": [{"netns_inode": 1, "targets": ["node/n", "pod/ns/p"]}],
                  "skipped_objects": [{"kind": "pods", "why": "invalid name 'X'"}]}
    assert set(collection) >= _collection_keys_written(), "a key the collectors write is missing"
    doc = Manifest(created_at="2024-01-01T00:00:00Z", collection=collection, targets=targets,
                   entries=entries, components={"ztunnel": ["1.24.0"]}).document()
    assert _classify("manifest.json", doc) == set()
    for spec in ALL_SPECS:
        if "ztunnel" in spec.targets:  # stored at layout.config_dump_path
            assert spec.file == config_dump_path("n").rsplit("/", 1)[1]
            assert file_kind(config_dump_path("n")) == "config_dump"
            continue
        for d in (host_dir("n"), pod_dir("n", "ns", "p")):
            assert file_kind(f"{d}/{spec.file}") == "dump", spec.file
    for rel in CLUSTER_FILES.values():
        assert file_kind(rel) == "cluster"
    # and the check can fail: a field nobody classified is reported
    doc["collection"]["new_thing"] = "v"
    assert _classify("manifest.json", doc) == {"manifest.json: collection.new_thing"}


def test_upstream_ztunnel_config_dump_is_fully_classified() -> None:
    dump = Path("/work/shared/upstream-captures/istio/istioctl-ztunnel-config/dump.json")
    local = EXAMPLES / "inpod-kind-ambient/nodes/ambient-worker/ztunnel/config_dump.json"
    for path in (dump, local):
        if path.exists():
            assert _classify("nodes/n/ztunnel/config_dump.json",
                             json.loads(path.read_text())) == set(), path
