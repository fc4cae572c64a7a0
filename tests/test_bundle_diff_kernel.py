"""`bundle diff` and `trace --compare` on bundles collected from the kernel labs before
and after each injected fault: the diff names the fault (in the ambient group, in the
namespace the fault touched), and --compare finds where the path parts and cites it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parent.parent
DIFF_SCHEMA = json.loads((ROOT / "docs" / "schemas" / "diff-v1.json").read_text())
COMPARE_SCHEMA = json.loads((ROOT / "docs" / "schemas" / "compare-v1.json").read_text())

W, W2 = "ambient-worker/host", "ambient-worker2/host"
ZT = "ambient-worker/pod/istio-system/ztunnel-nptf6"
PP = "ambient-worker2/pod/default/productpage-v1-7c548b785b-w9zl6"

# fault -> (scope, kind, change, text the entry's `what` holds), and the scopes any
# ambient entry may have (a fault that takes a device down also takes its routes)
SEED = {
    "ipset-missing-sleep": ((W, "ipset-member", "removed", "10.244.2.4 in ztunnel-pods-ips"),
                            {W}),
    "ip-rule-101-missing": ((W, "ip-rule", "removed", "101:"), {W}),
    "tproxy-15001-missing": ((ZT, "rule", "removed", "--on-port 15001"), {ZT}),
    "istioout-down": ((W, "link", "changed", "istioout"), {W, ZT}),
    "table100-route-missing-productpage": ((W2, "route", "removed", "10.244.1.7 via"), {W2}),
    "kube-proxy-ahead": ((W, "rule", "moved", "KUBE-SERVICES"), {W}),
    "rp-filter-pistioout": ((ZT, "sysctl", "changed", "pistioout.rp_filter"), {ZT}),
    "ztunnel-outbound-down": ((ZT, "listener", "removed", ":15001"), {ZT}),
}
INPOD = {
    "chains-missing-productpage": ((PP, "chain", "removed", "ISTIO_PRERT"), {PP}),
    "ip-rule-32764-missing": ((PP, "ip-rule", "removed", "32764:"), {PP}),
    "redirect-15008": ((PP, "rule", "removed", "15008"), {PP}),
    "probe-ipset-missing-productpage": ((W2, "ipset-member", "removed", "10.244.1.7"), {W2}),
    "nft-and-iptables-both": ((PP, "chain", "added", "nft"), {PP}),
    "sidecar-in-ambient-namespace": (("cluster", "namespace", "changed", "legacy"),
                                     {"cluster"}),
    "ztunnel-not-listening-productpage": ((PP, "listener", "removed", ":15006"), {PP}),
}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ambientctl", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def _check(old: Path, new: Path, expected: tuple[str, str, str, str], scopes: set[str]) -> dict:
    res = cli("bundle", "diff", str(old), str(new), "-o", "json")
    assert res.returncode == 1, res.stderr
    doc = json.loads(res.stdout)
    jsonschema.validate(doc, DIFF_SCHEMA, cls=jsonschema.Draft202012Validator)
    scope, kind, change, text = expected
    ambient = [e for e in doc["entries"] if e["ambient"]]
    hit = [e for e in ambient if (e["scope"], e["kind"], e["change"]) == (scope, kind, change)
           and text in e["what"] + " " + e["detail"]]
    assert hit, (expected, json.dumps(doc["entries"][:8], indent=1)[:3000])
    assert {e["scope"] for e in ambient} <= scopes, {e["scope"] for e in ambient}
    assert doc["entries"][: len(ambient)] == ambient  # the ambient group comes first
    return doc


@pytest.mark.kernel
def test_seed_lab_diff_names_every_fault_and_compare_cites_it(lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    healthy = tmp_path / "healthy"
    lab.collect(healthy, check=True)
    assert cli("bundle", "diff", str(healthy), str(healthy)).returncode == 0
    for fault, (expected, scopes) in SEED.items():
        broken = tmp_path / fault
        with lab.injected(fault):
            lab.collect(broken, check=True)
        _check(healthy, broken, expected, scopes)
        if fault in ("ipset-missing-sleep", "table100-route-missing-productpage",
                     "ip-rule-101-missing", "tproxy-15001-missing"):
            res = cli("trace", "sleep", "productpage", "--bundle", str(broken),
                      "--compare", str(healthy), "-o", "json")
            assert res.returncode == 1, res.stderr
            cmp = json.loads(res.stdout)
            jsonschema.validate(cmp, COMPARE_SCHEMA, cls=jsonschema.Draft202012Validator)
            div = cmp["divergence"]
            assert div is not None and not cmp["same_path"]
            assert any(e["scope"] == expected[0] and expected[3] in e["what"]
                       for e in div["explained_by"]), div


@pytest.mark.kernel
@pytest.mark.parametrize("fault", sorted(INPOD))
def test_inpod_lab_diff_names_the_fault(fault: str, tmp_path: Path) -> None:
    from ambientlab.inpod import InpodLab

    expected, scopes = INPOD[fault]
    with InpodLab(variant="redirect", mixed=fault == "sidecar-in-ambient-namespace") as lab:
        lab.collect(tmp_path / "healthy")
        lab.inject(fault)
        lab.collect(tmp_path / "broken")
    _check(tmp_path / "healthy", tmp_path / "broken", expected, scopes)
