"""The incident record: record.json, summary.md, report.html, snapshot/, bundle.zip, manifest.json.

Layout and keys are public (shared/docs/interfaces.md). This module knows nothing about papermill
or the cluster: the runner hands it step results and a snapshot dict; it writes and seals the folder.
"""

from __future__ import annotations

import json
import re
import secrets as _random
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

from rollbook import atomic
from rollbook.errors import ParameterError

# re-exported: the record's scrubbing lives in rollbook.redact
from rollbook.mc_words import summary_lines
from rollbook.redact import MIN_SECRET_LEN as MIN_SECRET_LEN
from rollbook.redact import REDACTED as REDACTED
from rollbook.redact import Redactor as Redactor

# re-exported: sealing (bundle, manifest) lives in rollbook.seal
from rollbook.seal import verify_manifest as verify_manifest
from rollbook.seal import write_bundle as write_bundle
from rollbook.seal import write_manifest as write_manifest

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

_INCIDENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_SAFE_NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")


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
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text with control characters (terminal escapes, NUL, BEL) removed; the visible text is kept."""
    return _CONTROL_RE.sub("", text)


def utc_now() -> str:
    """The current UTC time as ISO 8601 with milliseconds and a Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_incident(incident: str) -> str:
    """Refuse an incident id that cannot be one folder name."""
    if not _INCIDENT_RE.match(incident):
        raise ParameterError(
            f"Incident id {incident!r} cannot name a record folder.",
            parameter="incident",
            hint="Use letters, digits, '.', '_' or '-' (e.g. INC-1234), at most 100 characters.",
        )
    return incident


def new_run_dir(out: Path, incident: str, *, now: datetime | None = None) -> Path:
    """Create `<out>/<incident>/<UTC timestamp>-<short id>/`; never reuse an existing folder."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    parent = Path(out) / check_incident(incident)
    parent.mkdir(parents=True, exist_ok=True)
    for _ in range(16):  # bounded: a 6-hex-digit collision within one second is already rare
        path = parent / f"{stamp}-{_random.token_hex(3)}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"Could not create a fresh record folder under {parent}; remove stale ones.")


def merge_findings(steps: Iterable[StepResult]) -> dict[str, Any]:
    """Merge the steps' findings in step order; a later null never erases an established value."""
    merged: dict[str, Any] = dict.fromkeys(FINDINGS_KEYS)
    for step in steps:
        for key, value in step.findings.items():
            if value is not None or key not in merged:
                merged[key] = value
    return merged


def results_document(steps: Sequence[StepResult]) -> dict[str, Any]:
    """The content of results.json: step results so far and their merged findings."""
    return {"schema": SCHEMA, "steps": [s.to_json() for s in steps], "findings": merge_findings(steps)}


def write_results(run_dir: Path, steps: Sequence[StepResult]) -> Path:
    """Write results.json atomically so a step reading it never sees half a file."""
    path = Path(run_dir) / RESULTS_FILE
    return atomic.write_text(path, _dumps(results_document(steps)))


def read_results(run_dir: str | Path) -> dict[str, Any]:
    """Read results.json of a run folder (what a later step uses); empty if no step has finished."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.exists():
        return results_document([])
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def write_snapshot(run_dir: Path, objects: Mapping[str, Any]) -> list[Path]:
    """Write each captured object as snapshot/<name>.json."""
    folder = Path(run_dir) / "snapshot"
    folder.mkdir(exist_ok=True)
    paths = []
    for name, obj in objects.items():
        path = folder / f"{_SAFE_NAME_RE.sub('_', name).strip('._') or 'object'}.json"
        paths.append(atomic.write_text(path, _dumps(obj)))
    return paths


def record_document(info: RunInfo, steps: Sequence[StepResult]) -> dict[str, Any]:
    """The content of record.json (schema 1)."""
    return {
        "schema": SCHEMA,
        "incident": info.incident, "namespace": info.namespace, "rollout": info.rollout,
        "context": info.context, "run_id": info.run_id,
        "started_at": info.started_at, "finished_at": info.finished_at,
        "tool_version": info.tool_version, "exit_code": info.exit_code, "partial": info.partial,
        "snapshot_error": info.snapshot_error, "error": info.error,
        "continued_from": dict(info.continued_from) if info.continued_from else None,
        "next_step": info.next_step, "notes": list(info.notes),
        "parameters": dict(info.parameters),
        "steps": [s.to_json() for s in steps],
        "findings": merge_findings(steps),
    }


# --------------------------------------------------------------------------- summary.md


def _say(value: Any) -> str:
    """A finding for humans: null reads as 'not established'."""
    if value is None:
        return "not established"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


def deadline_words(deadline: datetime | None, now: datetime) -> str:
    """A deadline relative to `now`: "in 7 min", "passed 42 min ago", "due now" (minutes, rounded)."""
    if deadline is None:
        return "no deadline known"
    minutes = round((deadline - now).total_seconds() / 60)
    if minutes > 0:
        return f"in {minutes} min"
    return f"passed {-minutes} min ago" if minutes < 0 else "due now"


def _parse_utc(value: Any) -> datetime | None:
    """An ISO timestamp from the record (with a Z) as an aware datetime, or None."""
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


def _escalation_line(f: Mapping[str, Any], finished_at: str) -> str:
    """`Escalation due: yes — deadline … passed 42 min before this run ended`, never a bare yes/no."""
    due, at = f.get("escalate"), _parse_utc(f.get("escalation_due_at"))
    end = _parse_utc(finished_at) or datetime.now(UTC)
    if due is None:
        return "- Escalation due: not assessed (step 5 did not run)"
    words = deadline_words(at, end).replace(" ago", " before this run ended") if at else "no deadline known"
    if due:
        return f"- Escalation due: YES — deadline {f['escalation_due_at']} ({words})" if at else \
            "- Escalation due: YES — now (no abort time to count the 15 minutes from)"
    return f"- Escalation due: no (if that changes: deadline {f['escalation_due_at']}, {words})" if at else \
        "- Escalation due: no"


def _summary_cause(f: Mapping[str, Any]) -> list[str]:
    """The 'Cause' section: what aborted the canary and why, in MC's and Argo's words."""
    return [
        "## Cause", "",
        f"- Rollout phase: {_say(f['phase'])} — {_say(f['status_message'])}",
        f"- Trigger: {_say(f['trigger'])}; failed metrics: {_say(f['failed_metrics'])}",
        *summary_lines(f), "",
    ]



def _summary_evidence(f: Mapping[str, Any], steps: Sequence[StepResult]) -> list[str]:
    """The 'Evidence' section: the AnalysisRun, release identity, revisions and every step's reason."""
    lines = [
        "## Evidence", "",
        f"- AnalysisRun: {_say(f['analysis_run'])}",
        f"- Release id (canary): {_say(f['release_id'])}; release id in MC evidence: "
        f"{_say(f['evidence_release_id'])}; identity matches: {_say(f['release_identity_ok'])}",
        f"- Stable revision {_say(f['stable_revision'])} (image {_say(f['stable_image'])}), "
        f"canary revision {_say(f['canary_revision'])}; stable is the previous release: "
        f"{_say(f['stable_is_previous_release'])}",
        "", "| # | step | verdict | reason |", "|---|---|---|---|",
    ]
    for s in steps:
        reason = s.reason.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {s.step} | {s.name} | {s.verdict} | {reason} |")
    return [*lines, ""]


def _summary_actions(f: Mapping[str, Any], steps: Sequence[StepResult], finished_at: str = "") -> list[str]:
    """The 'Actions taken' section: retry, escalation, skipped and failed steps."""
    lines = ["## Actions taken", "", f"- Rollout retried: {_say(f['retried'])}", _escalation_line(f, finished_at)]
    lines += _mutation_lines(f, steps)
    lines += [f"- Step {s.step} ({s.name}) skipped: {s.reason}" for s in steps if s.verdict == "skip"]
    lines += [f"- Step {s.step} ({s.name}) FAILED TO RUN: {s.reason}" for s in steps if s.verdict == "error"]
    return [*lines, ""]


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


def render_summary(info: RunInfo, steps: Sequence[StepResult]) -> str:
    """summary.md: the ticket text built from the findings and the step reasons only."""
    f = merge_findings(steps)
    where = f"rollout `{info.rollout}` in namespace `{info.namespace}`"
    where += f" (context `{info.context}`)" if info.context else ""
    head = [f"# {info.incident}: {where}", "",
            f"Run {info.run_id}, {info.started_at} to {info.finished_at}, exit code {info.exit_code} "
            f"({EXIT_MEANING.get(info.exit_code, 'unknown')})."]
    if info.continued_from:
        c = info.continued_from
        head.append(f"Continues record `{c.get('record')}` (run {c.get('run_id')}, started {c.get('started_at')}): "
                    f"steps {', '.join(str(n) for n in c.get('steps') or [])} and its snapshot come from there.")
    head += [f"**Note:** {n}" for n in info.notes]
    if info.partial:
        head.append("**PARTIAL RECORD: a step failed to execute; later steps did not run.**")
    mc_url = info.parameters.get("mc_url")
    links = [
        "## Links", "",
        "- Machine-readable record: `record.json`; readable report: `report.html`; "
        "attachment: `bundle.zip` (checksums in `manifest.json`)",
        "- Raw objects captured at the start: `snapshot/`",
        f"- AnalysisRun: `kubectl get analysisrun {f['analysis_run']} -n {info.namespace} -o yaml`"
        if f["analysis_run"] else "- AnalysisRun: not established",
    ] + ([f"- Mission Control: {mc_url}"] if mc_url else [])
    close = ["## State at close", "", f"- Rollout phase: {_say(f.get('phase_at_close') or f['phase'])}",
             f"- Close-out checks passed: {_say(f['closeout_ok'])}", ""]
    if info.next_step:
        close += ["## Next step", "", info.next_step, ""]
    return "\n".join([*head, "", *_summary_cause(f), *_summary_evidence(f, steps),
                      *_summary_actions(f, steps, info.finished_at), *close, *links, ""])


# --------------------------------------------------------------------------- report.html


def _report_notebook(info: RunInfo, steps: Sequence[StepResult], run_dir: Path) -> Any:
    """The report's notebook: the 30-second answer, then each step folded (rollbook.report)."""
    from rollbook import report  # lazily: report imports this module

    return report.notebook(info, steps, run_dir)


# One HTMLExporter per process, reused: importing nbconvert (~0.45 s) and its first render, which
# loads and compiles the templates (~0.4 s), cost 0.85 s at the end of every run; a reused exporter
# renders the same report in ~0.06 s, byte for byte the same (tests/unit/test_record_report_speed.py).
_EXPORTER_LOCK = threading.Lock()
_EXPORTERS: list[Any] = []
REPORT_LOCK_BOUND = 120.0  # seconds render_report waits for a warm-up in flight before using its own


def _new_exporter() -> Any:
    """nbconvert's HTML exporter configured for the report (inputs and prompts hidden)."""
    from nbconvert import HTMLExporter  # lazily: only the report needs it

    from rollbook import report

    return HTMLExporter(template_name=report.TEMPLATE, extra_template_basedirs=[str(report.TEMPLATES)],
                        exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)


def _shared_exporter() -> Any:
    """The process's exporter, created on first use (call with _EXPORTER_LOCK held)."""
    if not _EXPORTERS:
        _EXPORTERS.append(_new_exporter())
    return _EXPORTERS[0]


def _warm_exporter() -> None:
    """Import nbconvert and render a one-cell notebook, so the templates are compiled."""
    import nbformat

    try:
        with _EXPORTER_LOCK:
            _shared_exporter().from_notebook_node(nbformat.v4.new_notebook(
                cells=[nbformat.v4.new_markdown_cell("warm-up")]))
    except Exception:  # noqa: BLE001 - an optimisation only: render_report meets any real problem itself
        pass


def warm_report() -> threading.Thread:
    """Prepare report rendering in a background thread while the steps still run."""
    thread = threading.Thread(target=_warm_exporter, name="rollbook-report-warm-up", daemon=True)
    thread.start()
    return thread


def render_report(info: RunInfo, steps: Sequence[StepResult], run_dir: Path) -> str:
    """report.html: one page, inputs hidden, via nbconvert's HTMLExporter in-process."""
    nb = _report_notebook(info, steps, Path(run_dir))
    resources = {"metadata": {"name": f"{info.incident} {info.run_id}"}}
    if _EXPORTER_LOCK.acquire(timeout=REPORT_LOCK_BOUND):
        try:
            body, _ = _shared_exporter().from_notebook_node(nb, resources=resources)
        finally:
            _EXPORTER_LOCK.release()
    else:  # a warm-up is stuck: do not wait for it, render with an exporter of our own
        body, _ = _new_exporter().from_notebook_node(nb, resources=resources)
    return str(body)


# --------------------------------------------------------------------------- sealing

def write_progress(run_dir: Path, info: RunInfo, steps: Sequence[StepResult], redactor: Redactor) -> Path:
    """record.json while the run is under way: it says `interrupted` until write_record replaces it.

    Written when the run starts and after every step (atomically; the snapshot and the finished steps'
    notebooks are scrubbed first, never a notebook a kernel is still writing), so a runner killed mid-run
    leaves a record that parses and lists every step that finished; `rollbook verify` names what is missing."""
    run_dir = Path(run_dir)
    if (run_dir / "snapshot").is_dir():
        redactor.scrub_tree(run_dir / "snapshot")
    for s in steps:
        if (run_dir / s.notebook).is_file():
            redactor.scrub_file(run_dir / s.notebook)
    doc = record_document(info, steps) | {"status": "interrupted", "finished_at": None, "exit_code": None,
                                          "partial": True}
    return atomic.write_text(run_dir / "record.json", redactor.scrub(_dumps(doc)))


def write_record(
    run_dir: Path, info: RunInfo, steps: Sequence[StepResult], *, secrets: Iterable[str] = ()
) -> Path:
    """Write record.json, summary.md, report.html; scrub secrets everywhere; then bundle and manifest."""
    run_dir = Path(run_dir)
    redactor = Redactor(secrets)
    redactor.scrub_tree(run_dir)  # notebooks, snapshot, results: before anything is derived from them
    atomic.write_text(run_dir / "record.json", _dumps(record_document(info, steps) | {"status": "complete"}))
    atomic.write_text(run_dir / "summary.md", printable(render_summary(info, steps)))
    atomic.write_text(run_dir / "report.html", printable(render_report(info, steps, run_dir)))
    redactor.scrub_tree(run_dir)  # what was just derived (parameters, reasons) may quote a secret
    write_bundle(run_dir)
    write_manifest(run_dir)
    return run_dir


def _dumps(obj: Any) -> str:
    """Stable, readable JSON; objects JSON cannot hold become their str()."""
    return json.dumps(obj, indent=2, sort_keys=False, default=str, ensure_ascii=False) + "\n"
