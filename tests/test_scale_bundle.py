"""The generated N-node bundle (benchmarks/scale_bundle.py) is a correct input at 2 and 10 nodes.

Why: the scale benchmarks only mean something if the bundle they time is one trace and
doctor read like a real cluster: it verifies against its manifest, the trace between the
example's pods crosses the same two nodes as intended whatever the cluster size, doctor
finds nothing wrong, and the .tar.gz of the same bundle gives byte-identical answers. No
timing is asserted here (benchmarks/bench_scale.py prints the figures).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import scale_bundle  # noqa: E402


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ambientctl", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("nodes", [2, 10])
def test_generated_bundle_traces_and_doctors_the_same_as_its_tarball(tmp_path: Path,
                                                                      nodes: int) -> None:
    bundle = scale_bundle.generate(tmp_path / f"b{nodes}", nodes)
    pods = json.loads((bundle / "cluster" / "pods.json").read_text())["items"]
    per_node: dict[str, int] = {}
    for p in pods:
        per_node[p["spec"]["nodeName"]] = per_node.get(p["spec"]["nodeName"], 0) + 1
    assert len(per_node) == nodes and min(per_node.values()) >= 20
    ips = [p["status"]["podIP"] for p in pods]
    assert len(ips) == len(set(ips)), "two pods share an address"

    verify = _cli("bundle", "verify", str(bundle))
    assert verify.returncode == 0, verify.stdout + verify.stderr

    tgz = scale_bundle.to_tar(bundle, tmp_path / f"b{nodes}.tar.gz")
    outs = {}
    for where in (bundle, tgz):
        trace = _cli("trace", "sleep", "productpage", "--bundle", str(where), "-o", "json")
        doctor = _cli("doctor", "--bundle", str(where), "-o", "json")
        assert trace.returncode == 0, trace.stderr
        assert doctor.returncode == 0, doctor.stdout[-2000:] + doctor.stderr
        outs[where] = (json.loads(trace.stdout), json.loads(doctor.stdout))
    (t_dir, d_dir), (t_tar, d_tar) = outs[bundle], outs[tgz]
    # the bundle's own location is part of the output: compare everything else
    assert json.dumps(t_dir).replace(str(bundle), "B") == json.dumps(t_tar).replace(str(tgz), "B")
    assert json.dumps(d_dir).replace(str(bundle), "B") == json.dumps(d_tar).replace(str(tgz), "B")
    text = json.dumps(t_dir)
    assert "as intended" in text and "ambient-worker2" in text
