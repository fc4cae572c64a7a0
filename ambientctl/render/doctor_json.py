"""`doctor -o json`: one document, schema `ambientctl.doctor/v1` (docs/schemas/doctor-v1.json).

Keys are snake_case and stable; enums appear as their lowercase values. `findings` holds
the unsuppressed findings, most severe first; `checks` holds every check run with its
status per target, so a consumer can tell "passed" from "skipped because the file was
missing" (a skipped check is never reported as passed).
"""

from __future__ import annotations

from typing import Any

from ambientctl.analyzers.doctor.incidents import group
from ambientctl.analyzers.findings import CheckResult, Evidence, Finding, Report

SCHEMA = "ambientctl.doctor/v1"


def _evidence(e: Evidence) -> dict[str, Any]:
    return {"path": e.path, "line": e.line, "text": e.text, "absent": e.absent, "note": e.note}


def finding_document(f: Finding) -> dict[str, Any]:
    """One finding as JSON."""
    return {
        "id": f.check_id,
        "severity": f.severity.value,
        "title": f.title,
        "node": f.node,
        "pod": f.pod,
        "netns": f.netns,
        "message": f.message,
        "evidence": [_evidence(e) for e in f.evidence],
        "remediation": f.remediation,
        "docs": f.docs,
    }


def _check(r: CheckResult) -> dict[str, Any]:
    return {
        "id": r.check.id,
        "target": r.target,
        "node": r.node,
        "status": r.status.value,
        "reason": r.reason,
        "findings": len(r.findings),
    }


def doctor_document(report: Report) -> dict[str, Any]:
    """The whole report as the `ambientctl.doctor/v1` document."""
    catalogue: dict[str, Any] = {}
    for c in (*report.catalogue, *(r.check for r in report.results)):
        catalogue.setdefault(c.id, {"id": c.id, "title": c.title, "severity": c.severity.value,
                                    "area": c.area, "docs": c.docs})
    return {
        "schema": SCHEMA,
        "source": report.source,
        "bundle_id": report.bundle_id,
        "fail_on": report.fail_on,
        "result": report.result,
        "summary": {
            "findings": report.counts(),
            "suppressed": len(report.suppressed),
            "below_output_threshold": len(report.below_threshold),
            "checks": report.status_counts(),
        },
        "output_threshold": report.output_threshold,
        "unmatched_suppressions": list(report.unmatched_suppressions),
        "nodes": [
            {"name": n.name, "mode": n.mode, "pods_expected": n.pods_expected,
             "pods_captured": n.pods_captured, "findings": dict(n.counts)}
            for n in report.nodes
        ],
        "findings": [{"ref": f"F{i + 1}", **finding_document(f)}
                     for i, f in enumerate(report.findings)],
        "incidents": [
            {"root": f"F{inc.root + 1}", "check": report.findings[inc.root].check_id,
             "findings": [f"F{i + 1}" for i in inc.members]}
            for inc in group(report.findings)],
        "suppressed": [finding_document(f) for f in report.suppressed],
        "checks": [_check(r) for r in report.results],
        "catalogue": [catalogue[k] for k in sorted(catalogue)],
    }
