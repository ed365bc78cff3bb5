"""Step 2 — inspect the AnalysisRun evidence and MC's failure message."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rollbook import diagnosis as dx
from rollbook.cluster import AnalysisRunInfo, RolloutView, template_metrics
from rollbook.errors import EvidenceError
from rollbook.evidence import Verdict
from rollbook.mc_words import live_label, quoted, stamp, stored_label
from rollbook.steps.core import Incident, Outcome, StepVerdict
from rollbook.steps.slo_view import SloEvidence, gather


@dataclass(frozen=True)
class LiveVerdict:
    """MC's verdict asked now, or the error that prevented it."""

    release_id: str | None
    verdict: Verdict | None
    error: str | None
    at: str | None = None  # when MC evaluated it (its evaluated_at), else when it was asked

    @property
    def label(self) -> str:
        return live_label(self.at)

    def now_text(self) -> str:
        """What MC says now, labelled: passes, fails with its reason, or could not answer."""
        if self.verdict is not None and self.verdict.ok:
            return f"MC now passes release {self.release_id} ({self.label})"
        if self.verdict is not None:
            return f'MC now fails release {self.release_id}: "{self.verdict.reason}" ({self.label})'
        return f"MC now could not answer about release {self.release_id}: {self.error} ({self.label})"


def live_verdict(incident: Incident, release_id: str | None) -> LiveVerdict:
    """Ask MC for the release's verdict now (the AnalysisRun only kept what MC said then)."""
    if not release_id:
        return LiveVerdict(None, None, "no release id to ask MC about")
    try:
        v = incident.mc.verdict(release_id, incident.environment)
        return LiveVerdict(release_id, v, None, stamp(v.evaluated_at))
    except EvidenceError as e:
        return LiveVerdict(release_id, None, str(e), stamp(None))


def side_by_side(in_run: dx.EvidenceInRun, live: LiveVerdict) -> list[dict[str, Any]]:
    """The AnalysisRun's copy of MC's verdict next to MC's live answer."""
    v, lv = in_run.verdict, live.verdict
    return [
        {"source": "AnalysisRun measurement", "at": in_run.measured_at, "release_id": v.release_id if v else None,
         "ok": v.ok if v else (in_run.value if in_run.reason_lost else None),
         "status": v.status if v else in_run.phase, "reason": v.reason if v else in_run.explanation},
        {"source": "MC now", "at": live.at, "release_id": lv.release_id if lv else live.release_id,
         "ok": lv.ok if lv else None, "status": lv.status if lv else "unavailable",
         "reason": lv.reason if lv else live.error},
    ]


def inspect(view: RolloutView, run: AnalysisRunInfo | None, in_run: dx.EvidenceInRun,
            live: LiveVerdict, slo_ev: SloEvidence | None = None,
            template_metrics: Mapping[str, Mapping[str, Any]] | None = None) -> Outcome:
    """Which trigger fired, the failed metrics, and MC's reason (from the run, else from MC)."""
    trigger = dx.trigger_of(run)
    failed = [m.name for m in dx.failing(run)] if run else []
    trigger_from = "analysisrun" if run is not None and trigger != "none" else None
    if trigger == "none" and view.aborted and view.abort is not None and view.abort.metric:
        # the failed run is gone (Argo keeps only a few): the abort message still names the metric
        trigger, failed = dx.trigger_from_abort(view, template_metrics or {})
        trigger_from = "abort message (the failed AnalysisRun is gone)"
    advice = dx.selector_advice(view, run)
    run_failed = in_run.verdict is not None and not in_run.verdict.ok
    live_failed = live.verdict is not None and not live.verdict.ok
    reason_source = "analysisrun" if run_failed else ("mc" if live_failed and in_run.verdict is None else None)
    mc_reason = (in_run.reason if run_failed else None) or (
        live.verdict.reason if live_failed and in_run.verdict is None and live.verdict else None)
    facts: dict[str, Any] = {
        "analysis_run": run.name if run else None, "run_phase": run.phase if run else None,
        "run_message": run.message if run else None, "summary": run.summary if run else None,
        "runs_of_rollout": [r.name for r in view.analysis_runs],
        "metric_phases": {m.name: m.phase for m in run.metric_results} if run else {},
        "metric_kinds": {m.name: dx.metric_kind(run, m) for m in run.metric_results} if run else {},
        "evidence_value": in_run.value, "evidence_json_path": in_run.json_path,
        "reason_lost_in_run": in_run.reason_lost, "evidence_error_message": in_run.error_message,
        "mc_reason_source": reason_source, "trigger_from": trigger_from,
        "mc_live_ok": live.verdict.ok if live.verdict else None,
        "mc_live_status": live.verdict.status if live.verdict else None,
        "mc_live_reason": live.verdict.reason if live.verdict else None,
        "mc_live_missing": list(live.verdict.missing) if live.verdict else None,
        "mc_live_invalid": list(live.verdict.invalid) if live.verdict else None,
        "mc_live_error": live.error,
    } | advice
    recorded = recorded_why(run, in_run) if view.aborted else None
    payload = in_run.verdict.release_id if in_run.verdict else None
    other = payload if payload and payload != dx.canary_release_id(view)[0] else None
    mc_from = (stored_label(run.name if run else None, in_run.measured_at, other) if run_failed else
               live.label if mc_reason else None)
    findings: dict[str, Any] = {"trigger": trigger, "failed_metrics": failed, "analysis_run": run.name if run else None,
                "mc_reason": mc_reason, "mc_reason_from": mc_from, "mc_recorded": recorded,
                "mc_now": live.now_text() if live.release_id else None}
    if slo_ev is not None and slo_ev.findings:
        findings |= {"slo": slo_ev.findings_json(), "slo_canary_only": slo_ev.canary_only}
        facts["slo_source"] = slo_ev.source
    notes = [in_run.explanation]
    if trigger == "error" and run is not None:
        errored = [m for m in dx.failing(run) if m.phase == "Error"]
        by_kind = {dx.metric_kind(run, m) for m in errored}
        if "evidence" in by_kind and live.verdict is not None and live.verdict.ok:
            notes.append(f"MC answers now and passes release {live.release_id}: the gate errored because MC could "
                         "not answer then; a retry is appropriate once MC is healthy (step 4).")
        others = [m for m in errored if dx.metric_kind(run, m) != "evidence"]
        if others:
            notes.append("Errored, not failed (their provider did not answer, nothing was judged): "
                         + "; ".join(f"{m.name} ({m.provider or 'provider unknown'}): "
                                     f"{(m.last.message if m.last else None) or m.message or 'no message'}"
                                     for m in others)
                         + ". Step 4 checks whether it answers now before a retry.")
    if not advice["playbook_selector_works"]:
        notes.append(f"The playbook's `{advice['playbook_command']}` matches nothing here (no `rollout` label "
                     f"on the runs); use `{advice['working_command']}`.")
    if run is None:
        verdict: StepVerdict = "skip" if view.phase == "Healthy" else "needs_human"
        why = ("No failed AnalysisRun for the current release: the analysis gate did not fire."
               if view.phase == "Healthy" else
               f"No failed AnalysisRun found for canary hash {view.canary_hash}: Argo may have garbage-collected "
               "it, or the abort was not caused by analysis.")
        if trigger != "none":
            why += (f" The abort message still names {', '.join(failed)} ({trigger})"
                    + (f"; {live.now_text()}" if live.release_id else "")
                    + ". The run's measurements are lost: capture evidence at the start of the next incident.")
        return Outcome(2, "inspect-evidence", verdict, why, facts, findings, notes)
    text = {
        "evidence": "the MC evidence gate failed",
        "slo": "the SLO checks failed",
        "evidence+slo": "both the MC evidence gate and the SLO checks failed",
        "error": "the analysis errored (no verdict was reached)",
        "other": "a metric outside the evidence and SLO gates failed",
        "none": "no metric failed",
    }[trigger]
    reason = f"AnalysisRun {run.name} is {run.phase}: {text} ({', '.join(failed) or 'no metric'})"
    if run_failed:
        reason += f"; MC's reason, {quoted(mc_reason, mc_from)}"
        if live.verdict is not None and live.verdict.reason != mc_reason:
            reason += f"; differs from {live.now_text()}"
    elif recorded:
        reason += f"; the AnalysisRun recorded no MC verdict ({recorded})"
        reason += f"; {live.now_text()}" if live.release_id else ""
    elif live.error:
        reason += f"; {live.now_text()}"
    breached = [f for f in (slo_ev.findings if slo_ev else []) if f.breached]
    if breached:
        reason += "; " + "; ".join(f.reason.rstrip(".") for f in breached)
    reason += "."
    decided: StepVerdict = "pass" if trigger in ("evidence", "slo", "evidence+slo") else "needs_human"
    return Outcome(2, "inspect-evidence", decided, reason, facts, findings, notes)


def recorded_why(run: AnalysisRunInfo | None, in_run: dx.EvidenceInRun) -> str | None:
    """Why the AnalysisRun holds no MC verdict (None when it holds one, or has no evidence gate to hold it)."""
    if in_run.verdict is not None:
        return None
    if run is None:
        return "the failed AnalysisRun is gone (garbage-collected)"
    gate = dx.evidence_metric(run)
    if gate is None:
        return None
    if in_run.reason_lost:
        return (f"its jsonPath {in_run.json_path or '(unknown)'} kept only `{in_run.value}` in {gate.name}'s "
                "measurement, not MC's reason")
    errored = [m for m in gate.measurements if m.phase == "Error"]
    if errored and len(errored) == len(gate.measurements):
        msgs = sorted({m.message for m in errored if m.message})
        return (f"{gate.name} is {gate.phase}: all {len(errored)} kept measurement(s) errored "
                f"({'; '.join(msgs) or 'no message'}), so MC never gave Argo a verdict")
    return in_run.explanation.rstrip(".")


def run(incident: Incident) -> tuple[RolloutView, AnalysisRunInfo | None, dx.EvidenceInRun, LiveVerdict,
                                     SloEvidence, Outcome]:
    """Read the rollout and its runs, ask MC and Prometheus, decide."""
    view = incident.view()
    run_ = dx.failed_run(view) or (None if view.phase == "Healthy" else dx.latest_run(view))
    in_run = dx.evidence_in_run(run_)
    release = (in_run.verdict.release_id if in_run.verdict else None) or dx.canary_release_id(view)[0]
    live = live_verdict(incident, release)
    slo_ev = gather(incident, view, run_)
    gone = dx.failed_run(view) is None and view.aborted and view.abort is not None and bool(view.abort.metric)
    metrics = template_metrics(incident.cluster, view.raw) if gone else {}
    return view, run_, in_run, live, slo_ev, inspect(view, run_, in_run, live, slo_ev, metrics)
