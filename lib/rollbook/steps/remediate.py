"""Step 4 — remediate and re-run: close the evidence gap in MC, then (approved) retry; SLO: no retry."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast, get_args

from rollbook import diagnosis as dx
from rollbook.cluster import (
    ActionResult,
    AnalysisRunInfo,
    RolloutView,
    WaitTimeout,
    retry,
    template_metrics,
    undo,
    wait_for_rollout,
)
from rollbook.errors import EvidenceError, PreconditionError, RollbookError
from rollbook.evidence import ItemType, Listing, Verdict
from rollbook.mc_words import live_label, quoted
from rollbook.steps.core import Incident, Outcome, StepVerdict
from rollbook.steps.identity import mc_release, validate
from rollbook.steps.slo_view import SloEvidence, gather


@dataclass(frozen=True)
class Approval:
    """Who approved a mutation, for which ticket, when (recorded in the incident record)."""

    approved: bool
    approver: str | None
    ticket: str | None
    at: str | None

    @classmethod
    def of(cls, approved: bool, approver: str, ticket: str) -> Approval:
        """An approval; refuses a half-given one (approval without approver or ticket)."""
        if approved and (not approver or not ticket):
            raise PreconditionError("Approval needs an approver and a ticket.",
                                    hint="Pass --approver WHO --ticket REF with --approve-retry/--approve-undo.")
        return cls(approved, approver or None, ticket or None,
                   datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if approved else None)


@dataclass
class Plan:
    """What the step found and what it would do, with the reason for each refusal."""

    path: str  # evidence | slo | none
    release_id: str | None
    listing: Listing | None = None
    attached: dict[str, Any] | None = None
    verdict_before: Verdict | None = None
    verdict_after: Verdict | None = None
    blockers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the operator should know even when nothing blocks
    mutations: list[dict[str, Any]] = field(default_factory=list)
    slo: SloEvidence = field(default_factory=lambda: SloEvidence(note="Not an SLO failure: no SLO evidence to show."))


def slot_rows(listing: Listing | None) -> list[dict[str, Any]]:
    """MC's required evidence slots: what is there, what is missing or invalid and why."""
    if listing is None:
        return []
    return [{"slot": s.name, "state": s.state, "type": s.item.type if s.item else None,
             "item reason": s.item.reason if s.item else None,
             "summary": json.dumps(dict(s.item.summary), sort_keys=True) if s.item else None}
            for s in listing.slots]


def slot_to_fill(listing: Listing | None, name: str) -> str | None:
    """The slot an attached report fills: the given name, else the first missing/invalid slot."""
    if name or listing is None:
        return name or None
    bad = [s.name for s in listing.slots if s.state != "valid"]
    return bad[0] if bad else None


def mutation_line(result: ActionResult, approval: Approval) -> dict[str, Any]:
    """A record line for one mutation: the exact request(s) and the approval."""
    return {
        "action": result.action, "dry_run": result.dry_run, "namespace": result.namespace, "rollout": result.name,
        "requests": [{"method": r.method, "path": r.path, "content_type": r.content_type,
                      "body": r.body.decode("utf-8"), "status": r.status} for r in result.requests],
        "resource_version_before": result.previous_resource_version,
        "resource_version_after": result.resource_version, "target_revision": result.target_revision,
        "skipped": result.skipped,
        "approval": {"approver": approval.approver, "ticket": approval.ticket, "at": approval.at},
    }


def preconditions(incident: Incident, view: RolloutView) -> list[str]:
    """Still aborted, same revision and pod hash, and the spec unchanged since the run's snapshot."""
    problems = []
    if not view.aborted:
        problems.append(f"Rollout {view.name} is no longer aborted")
    snap = incident.snapshot_object("rollout")
    if snap:
        meta, status = snap.get("metadata") or {}, snap.get("status") or {}
        if str(meta.get("generation")) != str(view.generation):
            problems.append(f"the Rollout spec changed since the snapshot (generation {meta.get('generation')} → "
                            f"{view.generation})")
        if status.get("currentPodHash") != view.canary_hash:
            problems.append(f"the canary pod hash changed since the snapshot ({status.get('currentPodHash')} → "
                            f"{view.canary_hash})")
        rev = (meta.get("annotations") or {}).get("rollout.argoproj.io/revision")
        if rev is not None and str(rev) != str(view.revision):
            problems.append(f"the revision changed since the snapshot ({rev} → {view.revision})")
    return problems


def evidence_path(incident: Incident, view: RolloutView, plan: Plan, evidence_file: str, evidence_name: str,
                  evidence_type: str) -> None:
    """List MC's gaps, attach the given report, re-check the verdict."""
    rid = plan.release_id
    if rid is None:
        plan.blockers.append("the canary's release id is unknown")
        return
    try:
        plan.verdict_before = incident.mc.verdict(rid, incident.environment)
        plan.listing = incident.mc.listing(rid, incident.environment)
        if evidence_file:
            slot = slot_to_fill(plan.listing, evidence_name)
            if slot is None:
                plan.blockers.append("no evidence slot to fill: MC lists none missing or invalid")
            else:
                res = incident.mc.attach_file(rid, Path(evidence_file), slot, _item_type(evidence_type),
                                              environment=incident.environment)
                plan.attached = {"slot": slot, "file": Path(evidence_file).name, "created": res.created,
                                 "state": res.item.state, "item_reason": res.item.reason}
        plan.verdict_after = incident.mc.verdict(rid, incident.environment)
    except EvidenceError as e:
        plan.blockers.append(f"MC could not be asked: {e}")
        return
    if not plan.verdict_after.ok:
        gaps = [s.name for s in plan.listing.slots if s.state in ("missing", "invalid")] if plan.listing else []
        plan.blockers.append(f"MC still says ok=false for release {rid} (the canary's release id): "
                             f"{quoted(plan.verdict_after.reason, live_label(plan.verdict_after.evaluated_at))}; "
                             f"the evidence must be attached to {rid} itself"
                             + (f" (slots {', '.join(gaps)})" if gaps else "")
                             + (" — evidence attached under another release id does not count" if gaps else ""))


def _item_type(text: str) -> ItemType | None:
    """The evidence_type parameter as MC's item type; empty: MC's client infers it from the file."""
    if not text:
        return None
    if text not in get_args(ItemType):
        raise PreconditionError(f"evidence_type {text!r} is not an MC evidence type.",
                                hint=f"Use one of {', '.join(get_args(ItemType))}, or leave it empty.")
    return cast(ItemType, text)


def watch_retry(incident: Incident, before: set[str], timeout: float) -> tuple[RolloutView | None, str]:
    """After a retry: wait (bounded) for the new AnalysisRun to decide — promoted, aborted again, or not yet."""
    def decided(v: RolloutView) -> bool:
        new = [r for r in v.canary_runs if r.name not in before]
        promoted = v.phase == "Healthy" and v.stable_hash == v.canary_hash
        return promoted or (v.aborted and any(r.phase in ("Failed", "Error") for r in new))

    def progress(v: RolloutView, left: float) -> None:
        new = [f"{r.name} {r.phase}" for r in v.canary_runs if r.name not in before]
        print(f"after retry: {v.phase}; new runs: {', '.join(new) or 'none yet'}; {left:.0f}s left", flush=True)

    try:
        v = wait_for_rollout(incident.cluster, incident.namespace, incident.rollout, decided, timeout=timeout,
                             interval=1.0, what="the retried analysis", progress=progress)
    except WaitTimeout as e:
        return None, str(e)
    if v.phase == "Healthy":
        return v, f"the release was promoted: stable is now {v.stable_hash}"
    new = [r for r in v.canary_runs if r.name not in before]
    return v, f"aborted again: {new[0].name if new else 'a new run'} {new[0].phase if new else ''}".strip()


def remediate(incident: Incident, *, evidence_file: str = "", evidence_name: str = "", evidence_type: str = "",
              approve_retry: bool = False, approve_undo: bool = False, approver: str = "", ticket: str = "",
              watch_seconds: float = 120) -> tuple[Plan, Outcome]:
    """The whole step: classify, fix the evidence gap, check preconditions, act only when approved."""
    view = incident.view()
    run = dx.failed_run(view)
    trigger = dx.trigger_of(run)
    if run is None and view.aborted and view.abort is not None and view.abort.metric:
        # the failed run was garbage-collected: the abort message and the templates still say what failed
        trigger = dx.trigger_from_abort(view, template_metrics(incident.cluster, view.raw))[0]
    retry_approval = Approval.of(approve_retry, approver, ticket)
    undo_approval = Approval.of(approve_undo, approver, ticket)
    release = dx.canary_release_id(view)[0]
    facts: dict[str, Any] = {"trigger": trigger, "analysis_run": run.name if run else None, "release_id": release}
    if not view.aborted:
        return Plan("none", release), Outcome(4, "remediate-and-retry", "skip",
                                              f"Rollout {view.name} is not aborted ({view.phase}): nothing to remediate.",
                                              facts, {"retried": False})
    # both gates failed: fix the evidence gap all the same, but the SLO failure decides (no retry; undo)
    path = "slo" if trigger in ("slo", "evidence+slo") else "evidence"
    plan = Plan(path, release)
    known, problem = mc_release(incident, release)
    identity, _ = validate(view, None, known, problem)
    facts["release_identity_ok"] = identity.findings.get("release_identity_ok")
    # no stored payload (the gate errored): the wiring that a retry re-uses still names the canary
    wired = identity.findings.get("release_identity_ok") is None and bool(identity.facts.get("wiring_agrees")) \
        and not identity.facts.get("mc_problem")
    if identity.findings.get("release_identity_ok") is not True and not wired:
        plan.blockers.append(f"release identity not confirmed: {identity.reason}")
    elif wired:
        plan.notes.append("the identity could not be read from a payload (none stored), but the argument and the gate "
                          "URL a retry re-uses name the canary's release")
    if trigger != "slo":
        evidence_path(incident, view, plan, evidence_file, evidence_name, evidence_type)
    if trigger == "evidence+slo":
        plan.blockers.append("the SLO checks failed too: a retry re-runs the same release and would fail again")
    if trigger == "other":
        names = ", ".join(m.name for m in dx.failing(run)) if run else "?"
        plan.blockers.append(f"a metric outside the evidence and SLO gates failed ({names}): fixing MC's evidence "
                             "does not change it, and a retry re-runs the same release")
    if trigger == "none":
        plan.blockers.append("no failed AnalysisRun explains the abort (aborted by hand, or the run was "
                             "garbage-collected): find out why before retrying")
    if path == "slo":
        plan.blockers.append("an SLO regression: a retry re-runs the same release with the same code")
    if trigger in ("slo", "evidence+slo"):
        plan.slo = gather(incident, view, run)
        facts["slo"] = plan.slo.findings_json()
    if trigger == "error" and run is not None:
        _errored_slo_metrics(incident, view, run, plan, facts)
    plan.blockers += preconditions(incident, view)
    facts |= {"path": path, "blockers": plan.blockers, "attached": plan.attached,
              "verdict_before": _v(plan.verdict_before), "verdict_after": _v(plan.verdict_after),
              "approval": {"retry": retry_approval.__dict__, "undo": undo_approval.__dict__}}
    findings: dict[str, Any] = {"retried": False, "mutations": plan.mutations}
    if path == "slo":
        return plan, _slo_outcome(incident, view, plan, undo_approval, facts, findings)
    return plan, _evidence_outcome(incident, view, plan, retry_approval, watch_seconds, facts, findings)


def _workload_ref_outcome(view: RolloutView, plan: Plan, kind: str, name: str, facts: dict[str, Any],
                          findings: dict[str, Any]) -> Outcome:
    """SLO regression on a Rollout whose pod template lives in a workloadRef: revert that, not the Rollout.

    The plugin's `undo` patches the Rollout's own spec.template; with a workloadRef the Rollout has none
    (setting one is an InvalidSpec) and the plugin skips it as "already matches". Argo follows the
    referenced workload's template, so reverting that is the rollback, fast-tracked like an undo.
    """
    stable = view.stable_rs
    images = ", ".join(stable.images) if stable and stable.images else None
    facts["workload_ref"] = {"kind": kind, "name": name}
    findings["undone"] = False
    target = (f" (stable ReplicaSet {stable.name}, revision {stable.revision}"
              + (f", image {images}" if images else "") + ")") if stable else ""
    alone = {True: " The regression is the canary's alone (stable within thresholds).",
             False: " Stable breached too: look beyond this release.", None: ""}[plan.slo.canary_only]
    return Outcome(4, "remediate-and-retry", "needs_human",
                   f"SLO regression in release {plan.release_id}:{alone} A retry would re-run the same release, so none "
                   f"is sent. Rollout {view.name} takes its pod template from {kind} {name} (workloadRef), so "
                   f"`undo` cannot revert it: revert {kind} {name}'s pod template to the stable release{target} — "
                   f"in its source of truth (GitOps), or `kubectl rollout undo {kind.lower()}/{name} -n "
                   f"{view.namespace}` — and Argo fast-tracks the rollback; or ship a fixed release.", facts, findings)


def _errored_slo_metrics(incident: Incident, view: RolloutView, run: AnalysisRunInfo, plan: Plan,
                         facts: dict[str, Any]) -> None:
    """An SLO metric that errored (its provider did not answer) judged nothing: a retry re-measures it.

    So ask Prometheus now: if it still cannot answer, a retry would error again (blocker); if it answers
    and the canary breaches, this is an SLO regression after all (blocker); otherwise say what was seen.
    """
    errored = [m for m in dx.failing(run) if m.phase == "Error" and dx.metric_kind(run, m) == "slo"]
    if not errored:
        return
    why = "; ".join(f"{m.name}: {(m.last.message if m.last else None) or m.message or 'no message'}" for m in errored)
    names = ", ".join(m.name for m in errored)
    plan.slo = gather(incident, view, run)
    facts["slo"] = plan.slo.findings_json()
    facts["errored_metrics"] = [m.name for m in errored]
    if plan.slo.source != "prometheus":
        plan.blockers.append(f"the SLO metric(s) {names} errored ({why}) and Prometheus still cannot be asked "
                             f"({plan.slo.note or 'no answer'}): a retry would re-measure them and error again; "
                             "restore the analysis' access to Prometheus first")
        return
    breached = [f.name for f in plan.slo.findings if f.breached and f.name in names.split(", ")]
    if breached:
        plan.blockers.append(f"the SLO metric(s) {names} errored at the time ({why}); Prometheus answers now and "
                             f"the canary breaches {', '.join(breached)}: an SLO regression, not only an outage")
    else:
        plan.notes.append(f"the SLO metric(s) {names} errored at the time ({why}); Prometheus answers again now "
                          "and the canary is within its thresholds, so a retry can measure them")


def _holder(incident: Incident, approval: Approval) -> str:
    """Who holds the Rollout's Lease during the mutation, as the other runner's refusal names it."""
    from rollbook.cluster.lease import default_holder

    return default_holder(f"{incident.incident} (approved by {approval.approver}, {approval.ticket})")


def _v(v: Verdict | None) -> dict[str, Any] | None:
    return None if v is None else {"release_id": v.release_id, "ok": v.ok, "status": v.status, "reason": v.reason,
                                   "missing": list(v.missing), "invalid": list(v.invalid)}


def _evidence_outcome(incident: Incident, view: RolloutView, plan: Plan, approval: Approval, watch_seconds: float,
                      facts: dict[str, Any], findings: dict[str, Any]) -> Outcome:
    """Retry when everything holds and it was approved; otherwise a dry run that says what is missing."""
    rv = str((view.raw.get("metadata") or {}).get("resourceVersion") or "") or None
    if plan.blockers:
        return Outcome(4, "remediate-and-retry", "needs_human",
                       f"No retry: {'; '.join(b.rstrip('.') for b in plan.blockers)}.", facts, findings)
    if not approval.approved:
        try:
            dry = retry(incident.action_cluster, view.namespace, view.name, dry_run=True, expected_resource_version=rv)
            plan.mutations.append(mutation_line(dry, approval))
        except RollbookError as e:
            facts["dry_run_error"] = str(e)
        noted = "".join(f" Note: {n}." for n in plan.notes)
        return Outcome(4, "remediate-and-retry", "needs_human",
                       f"MC now passes release {plan.release_id} and the preconditions hold: a retry would be sent "
                       f"(dry run only). Re-run with --approve-retry --approver WHO --ticket REF to send it.{noted}",
                       facts, findings, ["`retry` re-runs the same release's steps and a new AnalysisRun; "
                                         "it does not roll back."])
    before = {r.name for r in view.canary_runs}
    try:
        result = retry(incident.action_cluster, view.namespace, view.name, expected_resource_version=rv,
                       holder=_holder(incident, approval))
    except RollbookError as e:  # refused (RBAC, stale version): say so as the verdict, nothing was changed
        facts["action_error"] = str(e)
        return Outcome(4, "remediate-and-retry", "fail", f"The approved retry was refused: {e}", facts, findings)
    plan.mutations.append(mutation_line(result, approval))
    findings["retried"] = True
    after, what = watch_retry(incident, before, watch_seconds)
    facts["after_retry"] = what
    if after is not None and after.phase == "Healthy":
        findings |= {"phase_after": after.phase, "promoted": True}
        return Outcome(4, "remediate-and-retry", "pass",
                       f"Evidence fixed and retry approved by {approval.approver} ({approval.ticket}): {what}.",
                       facts, findings)
    findings["promoted"] = False
    verdict: StepVerdict = "fail" if after is not None else "needs_human"
    return Outcome(4, "remediate-and-retry", verdict, f"Retried (approved by {approval.approver}): {what}.",
                   facts, findings)


def _slo_outcome(incident: Incident, view: RolloutView, plan: Plan, approval: Approval, facts: dict[str, Any],
                 findings: dict[str, Any]) -> Outcome:
    """SLO regression: no retry; `undo` is the recommended action, sent only when approved."""
    rv = str((view.raw.get("metadata") or {}).get("resourceVersion") or "") or None
    stable = view.stable_rs
    target = stable.revision if stable else None
    workload = ((view.raw.get("spec") or {}).get("workloadRef") or {})
    if workload.get("name"):
        return _workload_ref_outcome(view, plan, str(workload.get("kind") or "Deployment"), str(workload["name"]),
                                     facts, findings)
    # what stops an undo: not the regression itself, the identity or MC's verdict (undo goes back to the
    # stable release), only a changed world (preconditions)
    other = [b for b in plan.blockers if "changed since the snapshot" in b or "no longer aborted" in b]
    try:
        if approval.approved and other:
            findings["undone"] = False
            return Outcome(4, "remediate-and-retry", "needs_human",
                           f"Undo approved but refused: {'; '.join(other)}.", facts, findings)
        if approval.approved:
            res = undo(incident.action_cluster, view.namespace, view.name, target, expected_resource_version=rv,
                       holder=_holder(incident, approval))
            plan.mutations.append(mutation_line(res, approval))
            findings["undone"] = True
            return Outcome(4, "remediate-and-retry", "pass",
                           f"SLO regression: undo to revision {target} sent (approved by {approval.approver}, "
                           f"{approval.ticket}); Argo fast-tracks the rollback to the stable release.", facts, findings)
        dry = undo(incident.action_cluster, view.namespace, view.name, target, dry_run=True,
                   expected_resource_version=rv)
        plan.mutations.append(mutation_line(dry, approval))
    except RollbookError as e:
        facts["undo_error"] = str(e)
        if approval.approved:
            findings["undone"] = False
            return Outcome(4, "remediate-and-retry", "fail", f"The approved undo was refused: {e}", facts, findings)
    findings["undone"] = False
    alone = {True: " The regression is the canary's alone (stable within thresholds).",
             False: " Stable breached too: look beyond this release.", None: ""}[plan.slo.canary_only]
    return Outcome(4, "remediate-and-retry", "needs_human",
                   f"SLO regression in release {plan.release_id}:{alone} A retry would re-run the same release, so none "
                   f"is sent. Recommended: undo to revision {target} (dry run recorded; send it with "
                   "--approve-undo --approver WHO --ticket REF) or ship a fixed release.", facts, findings)
