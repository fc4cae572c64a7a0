"""doctor against the real kernel: every fault that breaks a path in the labs is flagged.

The labs build the clusters out of network namespaces, a fault is injected (one real
change: a rule deleted, a device down, a listener gone), `ambientctl collect --local`
collects, and doctor must flag it - as an error for every fault that breaks the seed's
path (`tests/test_trace_kernel.py` proves on the kernel that each one does) - with
evidence in the file of the namespace the fault touched. The healthy labs must produce
no error and no warning: a check that fires on a healthy cluster is a bug.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from ambientctl.analyzers.doctor import diagnose
from ambientctl.analyzers.findings import Report
from ambientctl.loading import load_snapshot

pytestmark = [pytest.mark.kernel]

ROOT = Path(__file__).resolve().parents[1]
W = "nodes/ambient-worker/host/"
W2 = "nodes/ambient-worker2/host/"
ZT1 = "nodes/ambient-worker/pods/istio-system/ztunnel-nptf6/"
PP = "nodes/ambient-worker2/pods/default/productpage-v1-7c548b785b-w9zl6/"

# seed fault -> (check expected, evidence file prefix in the faulted netns)
SEED_FAULTS = {
    "ipset-missing-sleep": ("AMB201", W + "ipset.txt"),
    "ip-rule-101-missing": ("AMB206", W + "ip-rule"),
    "tproxy-15001-missing": ("AMB213", ZT1 + "iptables-save.txt"),
    "istioout-down": ("AMB210", W + "ip-addr"),
    "table100-route-missing-productpage": ("AMB202", W2 + "ip-route"),
    "kube-proxy-ahead": ("AMB401", W + "iptables-save.txt"),
    "rp-filter-pistioout": ("AMB408", ZT1 + "sysctl.txt"),
    "ztunnel-outbound-down": ("AMB216", ZT1 + "ss-listen.txt"),
}

# in-pod fault -> (check, severity, evidence prefix); files differ per backend
INPOD_FAULTS = {
    "chains-missing-productpage": ("AMB301", "error", PP),
    "ip-rule-32764-missing": ("AMB303", "error", PP + "ip-rule"),
    "redirect-15008": ("AMB302", "error", PP),
    "probe-ipset-missing-productpage": ("AMB306", "error", W2),
    "nft-and-iptables-both": ("AMB309", "error", PP),
    "sidecar-in-ambient-namespace": ("AMB308", "warning", "cluster/namespaces.json"),
    "ztunnel-not-listening-productpage": ("AMB304", "error", PP + "ss-listen.txt"),
}
# Faults that, by design, also show elsewhere: with its rules gone, productpage is still
# HBONE in ztunnel's config_dump (the lab serves one): istio/istio#61182, AMB310.
INPOD_ALSO = {"chains-missing-productpage": {"AMB310"}}


def _doctor(bundle: Path) -> Report:
    return diagnose(load_snapshot(str(bundle)))


def _summary(report: Report) -> list[tuple[str, str, str]]:
    return [(f.check_id, f.severity.value, f.message) for f in report.findings]


def test_healthy_seed_lab_has_no_findings(lab: object, tmp_path: Path) -> None:
    res = lab.collect(str(tmp_path / "b"))  # type: ignore[attr-defined]
    assert res.returncode == 0, res.stderr
    report = _doctor(tmp_path / "b")
    assert [f for f in report.findings if f.severity.value != "info"] == [], _summary(report)
    assert {n.mode for n in report.nodes} == {"legacy"}
    assert [(n.pods_captured, n.pods_expected) for n in report.nodes] == [(2, 2), (6, 6)]
    assert not [r for r in report.results if r.status.value in ("skipped", "errored")]


@pytest.mark.parametrize("fault", sorted(SEED_FAULTS))
def test_seed_fault_is_an_error_with_evidence_in_the_faulted_netns(
        lab: object, fault: str, tmp_path: Path) -> None:
    check, where = SEED_FAULTS[fault]
    with lab.injected(fault):  # type: ignore[attr-defined]
        res = lab.collect(str(tmp_path / "b"))  # type: ignore[attr-defined]
    assert res.returncode == 0, res.stderr
    report = _doctor(tmp_path / "b")
    errors = [f for f in report.findings if f.severity.value == "error"]
    hits = [f for f in errors if f.check_id == check
            and any(e.path.startswith(where) for e in f.evidence)]
    assert hits, _summary(report)
    assert report.failing


@pytest.mark.parametrize("fault", sorted(SEED_FAULTS))
def test_seed_fault_findings_stay_on_the_faulted_node(
        lab: object, fault: str, tmp_path: Path) -> None:
    """No collateral: findings name only nodes the fault (or its effect) touches."""
    node = "ambient-worker2" if "productpage" in fault else "ambient-worker"
    with lab.injected(fault):  # type: ignore[attr-defined]
        lab.collect(str(tmp_path / "b"))  # type: ignore[attr-defined]
    report = _doctor(tmp_path / "b")
    assert {f.node for f in report.findings} == {node}, _summary(report)


def test_doctor_local_collects_this_machine_and_exits_1_on_a_fault(
        lab: object, tmp_path: Path) -> None:
    """`doctor --local --targets --cluster-dir` = collect --local + doctor, exit code 1."""
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps(lab.targets()))  # type: ignore[attr-defined]
    cluster = tmp_path / "cluster"
    cluster.mkdir()
    lab.write_cluster(cluster)  # type: ignore[attr-defined]
    argv = [sys.executable, "-m", "ambientctl", "doctor", "--local", "--targets", str(targets),
            "--cluster-dir", str(cluster), "-o", "json"]
    with lab.injected("ip-rule-101-missing"):  # type: ignore[attr-defined]
        res = subprocess.run(argv, check=False, capture_output=True, text=True, cwd=ROOT,
                             timeout=300)
    assert res.returncode == 1, res.stderr
    doc = json.loads(res.stdout)
    schema = json.loads((ROOT / "docs/schemas/doctor-v1.json").read_text())
    jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
    assert doc["result"] == "fail"
    assert [f["id"] for f in doc["findings"]] == ["AMB206"]
    healthy = subprocess.run(argv, check=False, capture_output=True, text=True, cwd=ROOT,
                             timeout=300)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr


# --------------------------------------------------------------------------- in-pod lab


def _inpod_bundle(variant: str, fault: str | None, out: Path) -> Path:
    from ambientlab.inpod import InpodLab

    mixed = fault == "sidecar-in-ambient-namespace"
    with InpodLab(variant=variant, mixed=mixed) as lab:
        if fault:
            lab.inject(fault)
        targets = lab.write_targets(out.parent / "targets.json")
        cluster = lab.write_cluster(out.parent / "cluster")
        res = subprocess.run([sys.executable, "-m", "ambientctl", "collect", "--local",
                              "--targets", str(targets), "--cluster-dir", str(cluster),
                              "-o", str(out), "-q"], check=False, capture_output=True,
                             text=True, cwd=ROOT, timeout=300)
        assert res.returncode == 0, res.stderr
    return out


@pytest.mark.parametrize("variant", ["redirect", "tproxy", "nft"])
def test_healthy_inpod_lab_has_no_errors_or_warnings(variant: str, tmp_path: Path) -> None:
    report = _doctor(_inpod_bundle(variant, None, tmp_path / "b"))
    assert [f for f in report.findings if f.severity.value != "info"] == [], _summary(report)
    assert {n.mode for n in report.nodes} == {"inpod"}
    assert all(n.pods_captured == n.pods_expected for n in report.nodes)


@pytest.mark.parametrize("variant", ["redirect", "tproxy", "nft"])
@pytest.mark.parametrize("fault", sorted(INPOD_FAULTS))
def test_inpod_fault_is_flagged_with_evidence_in_the_faulted_netns(
        variant: str, fault: str, tmp_path: Path) -> None:
    check, severity, where = INPOD_FAULTS[fault]
    report = _doctor(_inpod_bundle(variant, fault, tmp_path / "b"))
    hits = [f for f in report.findings if f.check_id == check and f.severity.value == severity
            and any(e.path.startswith(where) for e in f.evidence)]
    assert hits, _summary(report)
    others = {f.check_id for f in report.findings} - {check} - INPOD_ALSO.get(fault, set())
    assert not others, _summary(report)
