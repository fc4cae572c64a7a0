"""What `doctor` concludes: findings with evidence, and the status of every check.

A check looks at one target (the bundle, a node, or a pod) and ends in one of four
states (insights-core's make_fail/make_pass/skip, pip-audit's skip-as-data):

- PASSED: it had its data and found nothing;
- FAILED: it found something (one `Finding` per problem);
- SKIPPED: the data it needs is not in the bundle (the reason names the file), so it
  says nothing either way - a missing file is never a pass;
- ERRORED: the check itself crashed (a bug in ambientctl); the other checks still ran.

Every finding carries evidence a reader can open: the bundle file, the line and the
verbatim rule/route/set entry, or, for something that should be there and is not, the
file it was looked for in (`Evidence.absent`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from ambientctl.model import SourceRef


class Severity(StrEnum):
    """How bad a finding is; the JSON value is the lowercase name."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        """Order for sorting and thresholds: error > warning > info."""
        return {"info": 10, "warning": 20, "error": 30}[self.value]


class CheckStatus(StrEnum):
    """The outcome of one check on one target."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    ERRORED = "errored"


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    """One fact behind a finding.

    Either a line of a bundle file (`path`, `line`, verbatim `text`), or the absence of
    something (`absent=True`): then `path` is the file that was searched and `note` says
    what was looked for.
    """

    path: str
    """Bundle-relative file ("nodes/w1/host/ip-rule.json")."""
    line: int | None = None
    """1-based line in that file, when the fact is one line."""
    text: str | None = None
    """The line (rule, route, set member, sysctl) verbatim."""
    absent: bool = False
    """True: the fact is that something is missing from `path`."""
    note: str = ""
    """What this evidence shows (for an absence: what was looked for)."""

    @classmethod
    def of(cls, source: SourceRef, note: str = "") -> Evidence:
        """Evidence pointing at a parsed fact's source line."""
        return cls(path=source.path, line=source.line, text=source.text, note=note)

    @classmethod
    def missing(cls, path: str, what: str) -> Evidence:
        """The absence of `what`, looked for in `path`."""
        return cls(path=path, absent=True, note=f"absent: {what} (looked in {path})")

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        if self.absent:
            return self.note or f"absent: looked in {where}"
        body = f"{where}: {self.text}" if self.text else where
        return f"{body}  ({self.note})" if self.note else body


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One problem, on one node / pod / network namespace."""

    check_id: str
    """Stable id, `AMB` + three digits."""
    severity: Severity
    title: str
    """The check's title (one line, the same for every finding of the check)."""
    message: str
    """What is wrong here, naming node, pod and netns."""
    node: str | None = None
    pod: str | None = None
    """"namespace/name" of the pod concerned, if any."""
    netns: str | None = None
    """The network namespace id ("w1/host", "w1/pod/ns/name") the evidence is from."""
    evidence: tuple[Evidence, ...] = ()
    remediation: str = ""
    """The command or setting that fixes it."""
    docs: str = ""
    """Link to the check's section in docs/checks.md."""

    @property
    def sort_key(self) -> tuple[int, str, str, str, str]:
        """Most severe first, then by node, check id, pod, netns."""
        return (-self.severity.rank, self.node or "", self.check_id, self.pod or "",
                self.netns or "")


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckInfo:
    """What a check is: the catalogue entry (id, title, severity, area, docs)."""

    id: str
    title: str
    severity: Severity
    area: str
    """collection | legacy | inpod | node"""
    scope: str
    """What one run looks at: "bundle", "node" or "pod"."""
    requires: tuple[str, ...]
    remediation: str
    docs: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    """One check on one target: its status, its findings and why it was skipped/errored."""

    check: CheckInfo
    target: str
    """"bundle", "node/<node>" or "pod/<namespace>/<name>"."""
    status: CheckStatus
    findings: tuple[Finding, ...] = ()
    reason: str | None = None
    """Why SKIPPED (which file is missing) or ERRORED (the exception)."""
    node: str | None = None


@dataclass(frozen=True)
class NodeSummary:
    """One row of the per-node table: what mode, how many pods captured of those expected."""

    name: str
    mode: str
    """legacy | inpod | mixed | none | unknown"""
    pods_expected: int | None
    pods_captured: int | None
    counts: dict[str, int] = field(default_factory=dict)
    """Unsuppressed findings by severity."""
    ztunnel: bool = False
    """A ztunnel pod (or its network namespace) is on this node."""


@dataclass(frozen=True)
class Report:
    """Everything `doctor` produced for one bundle."""

    source: str
    bundle_id: str | None
    results: tuple[CheckResult, ...]
    findings: tuple[Finding, ...]
    """Unsuppressed findings, most severe first."""
    suppressed: tuple[Finding, ...]
    nodes: tuple[NodeSummary, ...]
    fail_on: str
    """error | warning | none"""
    catalogue: tuple[CheckInfo, ...] = ()
    """Every check known to this ambientctl (run or not applicable)."""
    below_threshold: tuple[Finding, ...] = ()
    """Unsuppressed findings less severe than `--output-threshold`: not shown, still
    counted, and still able to fail the run (the two thresholds are apart, as in
    `istioctl analyze`)."""
    output_threshold: str = "info"
    unmatched_suppressions: tuple[str, ...] = ()
    """`-S` values that silenced nothing (a typo there would hide nothing, silently)."""

    def counts(self) -> dict[str, int]:
        """Unsuppressed findings by severity (shown or below the output threshold)."""
        out = {s.value: 0 for s in Severity}
        for f in (*self.findings, *self.below_threshold):
            out[f.severity.value] += 1
        return out

    def status_counts(self) -> dict[str, int]:
        """Check results by status."""
        out = {s.value: 0 for s in CheckStatus}
        for r in self.results:
            out[r.status.value] += 1
        return out

    @property
    def failing(self) -> bool:
        """Do unsuppressed findings reach the `fail_on` threshold?"""
        if self.fail_on == "none":
            return False
        threshold = Severity(self.fail_on).rank
        return any(f.severity.rank >= threshold
                   for f in (*self.findings, *self.below_threshold))

    @property
    def no_ambient(self) -> bool:
        """Nodes were collected but none runs ambient redirection or a ztunnel: a clean
        report would be a false PASS (nothing ambient was there to check)."""
        return bool(self.nodes) and all(n.mode == "none" and not n.ztunnel for n in self.nodes)

    @property
    def result(self) -> str:
        """pass | fail | no-ambient (the JSON `result`; the text verdict in capitals)."""
        if self.failing:
            return "fail"
        return "no-ambient" if self.no_ambient else "pass"

    @property
    def errored(self) -> tuple[CheckResult, ...]:
        """Checks that crashed."""
        return tuple(r for r in self.results if r.status == CheckStatus.ERRORED)
