"""Step 2 — inspect the AnalysisRun evidence and MC's failure message."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rollbook import diagnosis as dx
from rollbook.cluster import AnalysisRunInfo, RolloutView, template_metrics
from rollbook.errors import EvidenceError
from rollbook.evidence import Verdict
from rollbook.steps.core import Incident, Outcome, StepVerdict
from rollbook.steps.slo_view import SloEvidence, gather


@dataclass(frozen=True)
class LiveVerdict:
    """MC's verdict asked now, or the error that prevented it."""

    release_id: str | None
    verdict: Verdict | None
    error: str | None


def live_verdict(incident: Incident, release_id: str | None) -> LiveVerdict:
    """Ask MC for the release's verdict now (the AnalysisRun only kept what MC said then)."""
    if not release_id:
        return LiveVerdict(None, None, "no release id to ask MC about")
    try:
        return LiveVerdict(release_id, incident.mc.verdict(release_id, incident.environment), None)
    except EvidenceError as e:
        return LiveVerdict(release_id, None, str(e))


def side_by_side(in_run: dx.EvidenceInRun, live: LiveVerdict) -> list[dict[str, Any]]:
    """The AnalysisRun's copy of MC's verdict next to MC's live answer."""
    v, lv = in_run.verdict, live.verdict
    return [
        {"source": "AnalysisRun measurement", "release_id": v.release_id if v else None,
         "ok": v.ok if v else (in_run.value if in_run.reason_lost else None),
         "status": v.status if v else in_run.phase, "reason": v.reason if v else in_run.explanation},
        {"source": "MC now", "release_id": lv.release_id if lv else live.release_id,
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
    findings: dict[str, Any] = {"trigger": trigger, "failed_metrics": failed, "analysis_run": run.name if run else None,
                "mc_reason": mc_reason}
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
                    + (f"; MC says now: {live.verdict.reason}" if live.verdict and not live.verdict.ok else "")
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
    reason += f"; MC says: {mc_reason}" if mc_reason else ""
    if live.error and not mc_reason:
        reason += f"; MC could not give a verdict now: {live.error}"
    breached = [f for f in (slo_ev.findings if slo_ev else []) if f.breached]
    if breached:
        reason += "; " + "; ".join(f.reason.rstrip(".") for f in breached)
    reason += "."
    decided: StepVerdict = "pass" if trigger in ("evidence", "slo", "evidence+slo") else "needs_human"
    return Outcome(2, "inspect-evidence", decided, reason, facts, findings, notes)


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
