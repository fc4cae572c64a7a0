"""`trace SRC DST --local`: `--local` is a source like `--kind`/`--ssh`/kube.

The seed lab (network namespaces emulating two nodes, their pods and ztunnels) is
collected by `trace --local --targets --cluster-dir` itself, the answer is checked against
the same trace replayed from the bundle it saved, and every leg it computed is opened as a
real TCP connection from the namespace it names: the kernel must land it where the trace
says. A fault injected between two runs must change the answer: the collection is made
anew by each command, not read from anything older.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kernel]

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ambientctl", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=600, check=False)


def _local_args(lab: object, work: Path) -> list[str]:
    targets = work / "targets.json"
    targets.write_text(json.dumps(lab.targets()))  # type: ignore[attr-defined]
    cluster = work / "cluster"
    cluster.mkdir(exist_ok=True)
    lab.write_cluster(cluster)  # type: ignore[attr-defined]
    return ["--local", "--targets", str(targets), "--cluster-dir", str(cluster)]


def test_trace_local_collects_this_machine_then_traces_as_the_kernel_routes(
        lab, tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    res = _cli("trace", "sleep", "productpage", *_local_args(lab, tmp_path),
               "--save-bundle", str(saved), "-o", "json")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    live = json.loads(res.stdout)
    assert live["disposition"] == "delivered", live["summary"]

    # The same answer as a replay of the bundle it collected (one pipeline, one analysis).
    replay = _cli("trace", "sleep", "productpage", "--bundle", str(saved), "-o", "json")
    assert replay.returncode == 0, replay.stderr
    assert {k: v for k, v in json.loads(replay.stdout).items() if k != "bundle"} == \
        {k: v for k, v in live.items() if k != "bundle"}
    manifest = json.loads((saved / "manifest.json").read_text())
    assert manifest["collection"]["mode"] == "local"

    # And where the kernel really sends each leg.
    for leg in live["legs"]:
        ip, port = leg["target"].rsplit(":", 1)
        mark = int(leg["mark"], 16) if leg["mark"] else None
        landing = lab.connect(leg["start_netns"], ip.strip("[]"), int(port),  # type: ignore[attr-defined]
                              src_ip=leg["bind"], mark=mark or None)
        if leg["disposition"] == "delivered":
            to = leg["delivered_to"]
            assert landing.outcome == "accepted", (leg["index"], landing)
            assert landing.netns == to["netns"], (leg["index"], landing)
            assert landing.listener == f"{to['address']}:{to['port']}", (leg["index"], landing)
        else:
            assert landing.outcome != "accepted", (leg["index"], landing)


def test_trace_local_sees_a_fault_injected_since_the_last_run(lab, tmp_path: Path) -> None:
    args = _local_args(lab, tmp_path)
    with lab.injected("ip-rule-101-missing"):  # type: ignore[attr-defined]
        res = _cli("trace", "sleep", "productpage", *args, "-o", "json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["disposition"] == "left-bundle"


@pytest.mark.parametrize(("args", "says"), [
    (["--local", "--bundle", "example:seed-kind-ambient"], "--local collects this machine; it "
     "cannot be combined with --bundle"),
    (["--local", "--kind", "k"], "--local collects this machine; it cannot be combined with "
     "--kind"),
    (["--bundle", "example:seed-kind-ambient", "--node-name", "w1"], "--node-name needs --local"),
])
def test_trace_local_with_another_source_is_a_usage_error(args: list[str], says: str) -> None:
    res = _cli("trace", "sleep", "productpage", *args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stdout == "" and "Traceback" not in res.stderr
    assert says in res.stderr
