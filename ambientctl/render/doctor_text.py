"""`doctor` for humans: a table per node, then the findings (most severe first), then what
could not be checked and why, then one summary line.
"""

from __future__ import annotations

from ambientctl.analyzers.findings import CheckStatus, Finding, Report
from ambientctl.render.terminal import terminal_safe

_LABEL = {"error": "ERROR", "warning": "WARNING", "info": "INFO"}


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _pods(captured: int | None, expected: int | None) -> str:
    if expected is None:
        return "?"
    return f"{'?' if captured is None else captured}/{expected}"


def _finding(f: Finding, verbose: bool) -> list[str]:
    where = "  ".join(x for x in (f"node {f.node}" if f.node else "",
                                   f"pod {f.pod}" if f.pod else "",
                                   f"netns {f.netns}" if f.netns else "") if x)
    out = [f"{_LABEL[f.severity.value]:<8}{f.check_id}  {f.title}"]
    if where:
        out.append(f"  {where}")
    out.append(f"  {f.message}")
    shown = f.evidence if verbose else f.evidence[:4]
    if shown:
        out.append("  evidence:")
        out += [f"    {e}" for e in shown]
        if len(f.evidence) > len(shown):
            out.append(f"    ... {len(f.evidence) - len(shown)} more (-v)")
    if f.remediation:
        out.append(f"  fix: {f.remediation}")
    out.append(f"  docs: {f.docs} (or: ambientctl doctor explain {f.check_id})")
    return out


def render(report: Report, *, verbose: bool = False, provenance: str | None = None) -> str:
    """The whole report as text; `provenance` (`provenance.collected_with`) follows the
    title line when the bundle records what it was collected with."""
    lines = [f"ambientctl doctor: {report.source}", *([provenance] if provenance else []), ""]
    rows = [["NODE", "MODE", "PODS CAPTURED/EXPECTED", "ERRORS", "WARNINGS", "INFO"]]
    for n in report.nodes:
        rows.append([n.name, n.mode, _pods(n.pods_captured, n.pods_expected),
                     str(n.counts.get("error", 0)), str(n.counts.get("warning", 0)),
                     str(n.counts.get("info", 0))])
    if len(rows) > 1:
        lines += _table(rows)
        lines.append("")
    from ambientctl.analyzers.doctor.incidents import group

    for number, inc in enumerate(group(report.findings), start=1):
        root = report.findings[inc.root]
        if not inc.consequences:
            lines += _finding(root, verbose)
            lines.append("")
            continue
        lines.append(f"incident {number}: {root.check_id} {root.title} - fix this first; "
                     f"{len(inc.consequences)} finding(s) below follow from it")
        lines += _finding(root, verbose)
        for consequence in inc.consequences:
            lines += ["  " + ln for ln in _finding(report.findings[consequence], verbose)]
        lines.append("")
    if not report.findings:
        lines += ["No findings." if not report.below_threshold else
                  f"No findings at or above {report.output_threshold}.", ""]
    if report.no_ambient:
        lines += ["No ambient redirection and no ztunnel on any collected node: nothing ambient "
                  "was there to check (is this node in the mesh? is istio-cni running?).", ""]
    skipped: dict[tuple[str, str], list[str]] = {}
    errored = []
    for r in report.results:
        if r.status == CheckStatus.SKIPPED:
            skipped.setdefault((r.target, r.reason or "?"), []).append(r.check.id)
        elif r.status == CheckStatus.ERRORED:
            errored.append(r)
    if skipped:
        lines.append("Could not check (skipped: the data is not in the bundle):")
        for (target, reason), ids in sorted(skipped.items()):
            lines.append(f"  {', '.join(sorted(set(ids)))} on {target}: {reason}")
        lines.append("")
    if errored:
        lines.append("Checks that failed to run (a bug in ambientctl, please report):")
        lines += [f"  {r.check.id} on {r.target}: {r.reason}" for r in errored]
        lines.append("")
    c = report.counts()
    s = report.status_counts()
    sup = f" ({len(report.suppressed)} suppressed)" if report.suppressed else ""
    if report.below_threshold:
        sup += (f" ({len(report.below_threshold)} below --output-threshold "
                f"{report.output_threshold})")
    verdict = report.result.upper()
    lines.append(f"{c['error']} error(s), {c['warning']} warning(s), {c['info']} info{sup}; "
                 f"checks: {s['passed']} passed, {s['failed']} failed, {s['skipped']} skipped, "
                 f"{s['errored']} errored. Result: {verdict} (--fail-on {report.fail_on})")
    return terminal_safe("\n".join(lines) + "\n")


def render_lines(report: Report) -> str:
    """`-o line`: one line per finding, as `istioctl analyze` prints them, then a summary
    line on its own (so `grep`/`wc -l` over the findings work)."""
    out = []
    for f in report.findings:
        where = ", ".join(x for x in (f"node {f.node}" if f.node else "",
                                      f"pod {f.pod}" if f.pod else "") if x)
        ev = next((e for e in f.evidence), None)
        cite = f" [{ev.path}:{ev.line}]" if ev is not None and ev.line else \
            (f" [{ev.path}]" if ev is not None and ev.path else "")
        out.append(f"{_LABEL[f.severity.value].capitalize()} [{f.check_id}]"
                   f"{f' ({where})' if where else ''} {f.message}{cite}")
    c = report.counts()
    out.append(f"{report.result.upper()}: {c['error']} error(s), {c['warning']} warning(s), "
               f"{c['info']} info, {len(report.suppressed)} suppressed")
    return terminal_safe("\n".join(out) + "\n")
