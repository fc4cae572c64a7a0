"""`ambientctl trace` as a user runs it: on the committed example bundle, no kernel needed.

Pins the seed's path, the JSON contract (validated against docs/schemas/trace-v1.json),
selectors, exit codes, and what bad input does: one `error:` line naming the file and
line or the name, a distinct exit code, never a traceback, and other nodes still usable.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "seed-kind-ambient"
SCHEMA = json.loads((ROOT / "docs" / "schemas" / "trace-v1.json").read_text())

pytestmark = pytest.mark.skipif(not EXAMPLE.is_dir(), reason="example bundle not generated")


def run(*args: str, bundle: Path | str = EXAMPLE) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ambientctl", "trace", *args,
                           "--bundle", str(bundle)], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)


def doc(*args: str, bundle: Path | str = EXAMPLE) -> dict:
    res = run(*args, "-o", "json", bundle=bundle)
    data = json.loads(res.stdout)
    jsonschema.validate(data, SCHEMA)
    return data


def test_seed_request_is_traced_through_both_ztunnels() -> None:
    res = run("sleep", "productpage")
    assert res.returncode == 0, res.stderr
    first = res.stdout.splitlines()[0]
    assert first == ("sleep -> [ambient-worker] ztunnel:15001 -> HBONE -> [ambient-worker2] "
                     "ztunnel:15008 -> productpage:9080  (delivered)")
    assert "Traceback" not in res.stderr


def test_json_names_every_leg_socket_and_original_destination() -> None:
    d = doc("sleep", "productpage")
    assert d["schema"] == "ambientctl.trace/v1"
    assert d["disposition"] == "delivered"
    legs = d["legs"]
    assert [leg["direction"] for leg in legs] == ["outbound", "hbone", "inbound"]
    out, hbone, inbound = legs
    assert out["delivered_to"]["component"] == "ztunnel-outbound"
    assert out["delivered_to"]["pod"] == "istio-system/ztunnel-nptf6"
    assert (out["delivered_to"]["address"], out["delivered_to"]["port"]) == ("127.0.0.1", 15001)
    assert out["original_destination"] == "10.96.182.142:9080"
    assert hbone["delivered_to"]["component"] == "ztunnel-inbound-hbone"
    assert hbone["delivered_to"]["node"] == "ambient-worker2"
    assert hbone["original_destination"] == "10.244.1.7:15008"
    assert inbound["delivered_to"]["component"] == "app"
    assert inbound["delivered_to"]["pod"] == "default/productpage-v1-7c548b785b-w9zl6"
    assert inbound["bind"] == "10.244.2.4"  # ztunnel spoofs the client
    for leg in legs:
        assert leg["reply"]["disposition"] == "delivered"


def test_every_rule_step_cites_its_file_and_line_verbatim() -> None:
    d = doc("sleep", "productpage")
    steps = [s for leg in d["legs"] for hop in leg["hops"] for s in hop["steps"]]
    rules = [s for s in steps if s["kind"] in ("rule", "route", "ip-rule")]
    assert rules
    for s in rules:
        src = s["source"]
        assert src["path"].startswith("nodes/") and src["line"] >= 1 and src["text"], s
        line = (EXAMPLE / src["path"]).read_text().splitlines()[src["line"] - 1]
        assert line == src["text"], s
    marks = [s for s in steps if s["kind"] == "rule" and s["mark_after"] == "0x100"]
    assert marks and marks[0]["chain"] == "ztunnel-PREROUTING" and marks[0]["hook"] == "PREROUTING"
    tproxy = [s for s in steps if s["kind"] == "rule" and "TPROXY" in (s["source"]["text"] or "")]
    assert tproxy and tproxy[0]["mark_after"] == "0x400"
    assert any(s["kind"] == "ip-rule" and s["rule_priority"] == 101 for s in steps)
    assert any(s["kind"] == "route" and s["route_table"] == "100" for s in steps)


def test_plaintext_client_reaches_the_remote_ztunnel_15006() -> None:
    d = doc("sleep", "productpage-v1-7c548b785b-w9zl6", "--plaintext")
    assert d["plaintext"] is True
    first = d["legs"][0]["delivered_to"]
    assert first["component"] == "ztunnel-inbound-plaintext" and first["port"] == 15006
    assert d["disposition"] == "delivered"


@pytest.mark.parametrize("src", ["sleep", "sleep-7b85956664-z6qh7", "default/sleep-7b85956664-z6qh7",
                                 "sleep-7b8", "10.244.2.4"])
def test_source_selectors_resolve_to_the_sleep_pod(src: str) -> None:
    d = doc(src, "productpage")
    assert d["source"]["name"] == "sleep-7b85956664-z6qh7"


def test_destination_service_port_can_be_overridden() -> None:
    d = doc("sleep", "productpage", "--port", "8080")
    assert d["request"] == "10.96.182.142:8080"


def test_ambiguous_selector_lists_candidates_with_exit_6() -> None:
    res = run("reviews", "productpage")
    assert res.returncode == 6
    assert res.stderr.startswith("error: source 'reviews' is ambiguous: 3 candidates")
    assert "reviews-v1-6494d87c7b-zrpks" in res.stderr and "Traceback" not in res.stderr


def test_unknown_pod_is_one_line_with_exit_6() -> None:
    res = run("nosuchpod", "productpage")
    assert res.returncode == 6
    assert res.stderr.splitlines()[0] == ("error: source 'nosuchpod' matches no pod, deployment, "
                                          "app label or address in the bundle")


def test_expect_turns_a_disposition_into_an_exit_code() -> None:
    assert run("sleep", "productpage", "--expect", "delivered").returncode == 0
    res = run("sleep", "productpage", "--expect", "bypassed-mesh")
    assert res.returncode == 1 and "expected bypassed-mesh, got delivered" in res.stderr


def test_missing_bundle_and_garbage_archive_exit_4(tmp_path: Path) -> None:
    res = run("sleep", "productpage", bundle=tmp_path / "nope")
    assert res.returncode == 4 and res.stderr.startswith("error: bundle not found")
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x00garbage" * 20)
    res = run("sleep", "productpage", bundle=junk)
    assert res.returncode == 4 and "not a bundle" in res.stderr and "Traceback" not in res.stderr


def _copy(tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(EXAMPLE, dst)
    (dst / "manifest.json").unlink()  # hand-edited below: hashes would not match
    return dst


def test_truncated_dump_on_the_path_stops_the_trace_and_names_file_and_line(tmp_path: Path) -> None:
    b = _copy(tmp_path)
    f = b / "nodes/ambient-worker2/host/iptables-save.txt"
    f.write_text("\n".join(f.read_text().splitlines()[:30]) + "\n")
    res = run("sleep", "productpage", "-o", "json", bundle=b)
    assert res.returncode == 4
    d = json.loads(res.stdout)
    jsonschema.validate(d, SCHEMA)
    assert d["disposition"] == "insufficient-info"
    assert any("nodes/ambient-worker2/host/iptables-save.txt:" in e for e in d["data_errors"])
    assert "error: nodes/ambient-worker2/host/iptables-save.txt:" in res.stderr
    assert "Traceback" not in res.stderr
    # The other node's data still works: a trace that stays on ambient-worker is clean.
    res = run("sleep", "notsleep", "--port", "80", bundle=b)
    assert res.returncode == 0, res.stderr
    assert "warning: manifest.json" in res.stderr


def test_garbage_in_a_file_is_reported_with_its_path(tmp_path: Path) -> None:
    b = _copy(tmp_path)
    for name in ("ip-route.txt", "ip-route.json"):
        (b / "nodes/ambient-worker/pods/default/sleep-7b85956664-z6qh7" / name).write_bytes(
            b"\xff\xfe not a route table \x00\n")
    res = run("sleep", "productpage", bundle=b)
    assert res.returncode == 4
    assert "sleep-7b85956664-z6qh7/ip-route" in res.stderr
    assert "insufficient-info" in res.stdout


def test_tarball_bundle_gives_the_same_answer(tmp_path: Path) -> None:
    tar = tmp_path / "seed.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(EXAMPLE, arcname="seed-kind-ambient")
    assert doc("sleep", "productpage", bundle=tar)["legs"] == doc("sleep", "productpage")["legs"]


def test_tarball_with_path_escape_is_refused(tmp_path: Path) -> None:
    tar = tmp_path / "evil.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        info = tarfile.TarInfo("b/../../etc/evil")
        info.size = 0
        tf.addfile(info)
    res = run("sleep", "productpage", bundle=tar)
    assert res.returncode == 4 and "escapes the bundle" in res.stderr


def test_trace_on_the_example_starts_fast_without_heavy_sdks() -> None:
    code = ("import sys, time; t=time.perf_counter(); from ambientctl.cli import main; "
            f"rc = main(['trace','sleep','productpage','--bundle',{str(EXAMPLE)!r},'-o','json']); "
            "heavy=[m for m in ('kubernetes','docker','paramiko') if m in sys.modules]; "
            "print('HEAVY', heavy, file=sys.stderr); sys.exit(rc)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "HEAVY []" in res.stderr
