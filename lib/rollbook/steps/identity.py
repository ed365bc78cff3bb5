"""Step 3 — validate the release identity: the canary's `release-id` against the evidence payload and MC."""

from __future__ import annotations

from typing import Any

from rollbook import diagnosis as dx
from rollbook.cluster import RolloutView
from rollbook.errors import EvidenceError, MCNotFound
from rollbook.gate_call import GateCall, arg_source, gate_call, template_names
from rollbook.steps.core import Incident, Outcome


def mc_release(incident: Incident, release_id: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """MC's record of a release (metadata), or why it could not be had."""
    if not release_id:
        return None, "no release id"
    try:
        rel = incident.mc.release(release_id)
    except MCNotFound as e:
        return None, f"MC does not know release {release_id!r} ({e.code})"
    except EvidenceError as e:
        return None, str(e)
    return {"release_id": rel.release_id, "service": rel.service, "artifact_digest": rel.artifact_digest}, None


def identity_rows(sources: dict[str, tuple[str | None, str]]) -> list[dict[str, Any]]:
    """One row per place a release id was read from."""
    return [{"where": k, "release_id": v, "from": how} for k, (v, how) in sources.items()]


def validate(view: RolloutView, expected: str | None, mc_known: dict[str, Any] | None,
             mc_problem: str | None) -> tuple[Outcome, list[dict[str, Any]]]:
    """Compare every release id we can read; a mismatch is the verdict, not a footnote."""
    run = dx.failed_run(view) or dx.latest_run(view)
    in_run = dx.evidence_in_run(run)
    canary, how = dx.canary_release_id(view)
    sources: dict[str, tuple[str | None, str]] = {"canary": (canary, how)}
    if in_run.verdict is not None:
        sources["evidence payload"] = (in_run.verdict.release_id, f"value of {in_run.metric} in {run.name if run else '?'}")
    arg_name = dx.release_label(view).arg
    arg = dx.run_args(run).get(arg_name)
    if arg:
        sources["analysis argument"] = (arg, f"spec.args {arg_name} of {run.name if run else '?'}")
    if expected:
        sources["expected (parameter)"] = (expected, "release_id parameter")
    if mc_known:
        sources["MC release"] = (mc_known["release_id"], "MC /api/v1/releases")
    call = gate_call(run)
    if call is not None and call.release_in_url and call.release_in_url != arg:
        sources["gate URL"] = (call.release_in_url, f"{call.metric}'s URL in {run.name if run else '?'}: {call.url}")
    rows = identity_rows(sources)
    evidence_id = in_run.verdict.release_id if in_run.verdict else None
    ids = {v for v, _ in sources.values() if v}
    agrees = bool(canary and arg == canary and call is not None and call.release_in_url == canary)
    facts = {"canary_release_id": canary, "canary_release_id_from": how, "evidence_release_id": evidence_id,
             "analysis_arg_release_id": arg, "expected_release_id": expected, "mc_release": mc_known,
             "mc_problem": mc_problem, "ids_seen": sorted(ids), "gate_url": call.url if call else None,
             "gate_url_called": call.called if call else None, "gate_url_release_id": call.release_in_url if call else None,
             "wiring_agrees": agrees}
    findings: dict[str, Any] = {"release_id": canary, "evidence_release_id": evidence_id,
                                "release_identity_ok": None}
    if view.phase == "Healthy" and not view.aborted and run is None:
        return Outcome(3, "validate-release-identity", "skip",
                       "The rollout is Healthy: no failed release to identify.", facts, findings), rows
    if canary is None:
        return Outcome(3, "validate-release-identity", "needs_human",
                       f"The canary's release id could not be read: {how}.", facts, findings), rows
    if len(ids) > 1:
        findings["release_identity_ok"] = False
        detail = "; ".join(f"{k} = {v}" for k, (v, _) in sources.items() if v)
        facts["wire_to_fix"], advice = _which_wire(view, canary, arg_name, arg, evidence_id, call)
        return Outcome(3, "validate-release-identity", "fail",
                       f"Release identity MISMATCH: {detail}. The evidence checked is not the canary's: {advice}",
                       facts, findings), rows
    if mc_problem and mc_known is None:
        findings["release_identity_ok"] = False if "does not know" in mc_problem else None
        return Outcome(3, "validate-release-identity", "fail" if findings["release_identity_ok"] is False
                       else "needs_human", f"Canary release {canary}: {mc_problem}.", facts, findings), rows
    if evidence_id is None:
        read = [f"canary {canary}"] + ([f"analysis argument {arg}"] if arg else []) + (
            [f"the gate URL asks about {call.release_in_url}"] if call and call.release_in_url else []) + (
            [f"MC knows {mc_known['release_id']}"] if mc_known else [])
        why = (f"every measurement of {in_run.metric} errored ({in_run.error_message})" if in_run.error_message
               else in_run.explanation.rstrip("."))
        return Outcome(3, "validate-release-identity", "needs_human",
                       f"Release identity not established: the AnalysisRun stored no evidence payload ({why}), so the "
                       f"release MC judged cannot be read back. What can be read agrees: {', '.join(read)}.",
                       facts, findings), rows
    findings["release_identity_ok"] = True
    return Outcome(3, "validate-release-identity", "pass",
                   f"The canary's release-id {canary} matches the evidence payload and MC.", facts, findings), rows


def _which_wire(view: RolloutView, canary: str | None, arg_name: str, arg: str | None, payload: str | None,
                call: GateCall | None) -> tuple[str, str]:
    """Which wire carries the wrong release, from the facts: the Rollout's argument, or the template's URL."""
    if arg and arg != canary:
        source = arg_source(view.raw, arg_name)
        how = f" (today `{source}`)" if source else ""
        return "rollout-args", (f"the analysis argument {arg_name!r} carries {arg}, not the canary's {canary}. Fix the "
                                f"Rollout's analysis args{how}: it must read the canary's pod-template label, e.g. "
                                "`valueFrom.fieldRef.fieldPath: spec.template.metadata.labels.release-id`; then retry.")
    asked = (call.release_in_url if call else None) or payload
    if call is not None and asked and asked != canary:
        names = template_names(view.raw)
        owner = (f"AnalysisTemplate {call.metric}" if call.metric in names else
                 f"the AnalysisTemplate defining metric {call.metric} ({', '.join(names) or 'not referenced'})")
        right = f"the argument {arg_name!r} is right ({arg})" if arg else "no argument carries the release"
        return "template-url", (f"{right}, but MC was asked about {asked}: the URL of {owner}, as the run used it, is "
                                f"{call.quote()}. Fix the template's URL/query to use `{{{{args.{arg_name}}}}}` for "
                                "the release instead of a fixed id; then retry.")
    return "unknown", ("compare the ids above: the release the analysis asked MC about is not the canary's; fix the "
                       "analysis wiring before any retry.")


def run(incident: Incident, release_id: str = "") -> tuple[RolloutView, list[dict[str, Any]], Outcome]:
    """Read, ask MC about the canary's release, decide."""
    view = incident.view()
    canary, _ = dx.canary_release_id(view)
    known, problem = mc_release(incident, canary) if not (view.phase == "Healthy" and not view.aborted) else (None, None)
    outcome, rows = validate(view, release_id or None, known, problem)
    return view, rows, outcome
