"""What a record is made of: the step result, the run's facts, the verdict words, and how findings merge.

Its own module so that the report (rollbook.report) can read these without importing rollbook.record,
which renders the report (no import cycle); rollbook.record re-exports every name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

SCHEMA = 1
STEP_RESULT_MIME = "application/vnd.rollbook.step-result.v1+json"
RESULTS_FILE = "results.json"

Verdict = Literal["pass", "fail", "needs_human", "escalate", "skip", "error"]
VERDICTS: tuple[str, ...] = get_args(Verdict)
# What a notebook may report itself; "error" is the runner's alone (the step failed to execute).
STEP_VERDICTS: tuple[str, ...] = tuple(v for v in VERDICTS if v != "error")

# Exit codes of `rollbook run` / `demo` in words (the runner decides them; README has the same table).
EXIT_MEANING: dict[int, str] = {
    0: "every step passed (or was skipped as not needed)",
    1: "an unexpected error outside the steps",
    2: "bad usage, parameters or target; nothing was run",
    3: "a step failed to execute; the record is partial",
    4: "escalation is due",
    5: "a step needs a human decision (approval, evidence, a fix)",
    6: "a check failed (e.g. the close-out is not verified)",
}

# The findings every record carries (interfaces.md); a key no step established stays null.
FINDINGS_KEYS: tuple[str, ...] = (
    "phase", "status_message", "trigger", "failed_metrics", "analysis_run", "mc_reason",
    "release_id", "evidence_release_id", "release_identity_ok", "stable_revision", "canary_revision",
    "stable_image", "stable_is_previous_release", "retried", "escalate", "escalation_due_at",
    "closeout_ok",
)



@dataclass(frozen=True)
class StepResult:
    """One step's outcome as recorded: its verdict, reason, facts and findings."""

    step: int
    name: str
    notebook: str
    verdict: Verdict
    reason: str
    started_at: str | None = None
    seconds: float = 0.0
    facts: Mapping[str, Any] = field(default_factory=dict)
    findings: Mapping[str, Any] = field(default_factory=dict)
    timed_out: bool = False
    from_record: str | None = None  # run id of the earlier record this result was carried from

    def to_json(self) -> dict[str, Any]:
        """The step entry of record.json / results.json."""
        doc = {
            "step": self.step, "name": self.name, "notebook": self.notebook,
            "verdict": self.verdict, "reason": self.reason, "started_at": self.started_at,
            "seconds": round(self.seconds, 3), "facts": dict(self.facts),
            "findings": dict(self.findings), "timed_out": self.timed_out,
        }
        return doc | ({"from_record": self.from_record} if self.from_record else {})

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], *, from_record: str | None = None) -> StepResult:
        """A step entry of an earlier record.json, carried into this run."""
        verdict = doc.get("verdict")
        return cls(int(doc["step"]), str(doc["name"]), str(doc["notebook"]),
                   verdict if verdict in VERDICTS else "error", str(doc.get("reason") or ""),
                   doc.get("started_at"), float(doc.get("seconds") or 0.0), dict(doc.get("facts") or {}),
                   dict(doc.get("findings") or {}), bool(doc.get("timed_out")),
                   doc.get("from_record") or from_record)


@dataclass(frozen=True)
class RunInfo:
    """What record.json says about the run as a whole."""

    incident: str
    namespace: str
    rollout: str
    context: str | None
    run_id: str
    started_at: str
    finished_at: str
    tool_version: str
    parameters: Mapping[str, Any]
    exit_code: int
    partial: bool
    snapshot_error: str | None = None
    error: str | None = None  # the runner itself failed; the record is partial
    continued_from: Mapping[str, Any] | None = None  # the earlier record whose steps and snapshot this run reused
    next_step: str | None = None  # what to do next, usually the exact follow-up command
    notes: tuple[str, ...] = ()  # what the reader must know about the run itself


# C0 controls but tab/newline/CR, DEL and C1: a status message or MC reason carrying a terminal escape must
# not recolour (or hyperlink, or clear) the terminal that prints summary.md, nor hide in report.html


def merge_findings(steps: Iterable[StepResult]) -> dict[str, Any]:
    """Merge the steps' findings in step order; a later null never erases an established value."""
    merged: dict[str, Any] = dict.fromkeys(FINDINGS_KEYS)
    for step in steps:
        for key, value in step.findings.items():
            if value is not None or key not in merged:
                merged[key] = value
    return merged


def _mutation_lines(f: Mapping[str, Any], steps: Sequence[StepResult]) -> list[str]:
    """Every change made (or only dry-run) outside this record: cluster, MC, paging."""
    lines = []
    for m in f.get("mutations") or []:
        approval = m.get("approval") or {}
        req = (m.get("requests") or [{}])[-1]
        if m.get("dry_run"):
            lines.append(f"- {m.get('action')}: server-side dry run only, not sent ({req.get('method')} {req.get('path')})")
        else:
            lines.append(f"- {m.get('action')} SENT, approved by {approval.get('approver')} ({approval.get('ticket')}, "
                         f"{approval.get('at')}): {req.get('method')} {req.get('path')}")
    remediate = next((s for s in steps if s.name == "remediate-and-retry"), None)
    attached = (remediate.facts.get("attached") if remediate else None) or None
    if attached:
        lines.append(f"- Evidence attached in MC: {attached.get('file')} → slot {attached.get('slot')} "
                     f"({attached.get('state')})")
    deliveries = f.get("escalation_deliveries") or []
    if deliveries:
        sent = [d.get("service") for d in deliveries if d.get("sent")]
        lines.append(f"- Escalation sent to: {', '.join(sent)}" if sent else
                     f"- Escalation NOT sent (dry run; payloads for {', '.join(d.get('service', '?') for d in deliveries)} "
                     "recorded in record.json)")
    report = f.get("mc_rollback_report")
    if report:
        lines.append(f"- MC rollback report to {report.get('release_id')}: "
                     f"{'sent' if report.get('sent') else 'not sent (' + str(report.get('note') or report.get('error')) + ')'}")
    return lines


mutation_lines = _mutation_lines  # the report's "Action taken" says what the summary says
