"""Step 3 — validate the release identity: the canary's `release-id` against the evidence payload and MC."""

from __future__ import annotations

from typing import Any

from rollbook import diagnosis as dx
from rollbook.cluster import RolloutView
from rollbook.errors import EvidenceError, MCNotFound
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
    rows = identity_rows(sources)
    evidence_id = (in_run.verdict.release_id if in_run.verdict else None) or arg
    ids = {v for v, _ in sources.values() if v}
    facts = {"canary_release_id": canary, "canary_release_id_from": how, "evidence_release_id": evidence_id,
             "analysis_arg_release_id": arg, "expected_release_id": expected, "mc_release": mc_known,
             "mc_problem": mc_problem, "ids_seen": sorted(ids)}
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
        return Outcome(3, "validate-release-identity", "fail",
                       f"Release identity MISMATCH: {detail}. The evidence checked is not the canary's: fix the "
                       "analysis wiring (release-id argument) before any retry.", facts, findings), rows
    if mc_problem and mc_known is None:
        findings["release_identity_ok"] = False if "does not know" in mc_problem else None
        return Outcome(3, "validate-release-identity", "fail" if findings["release_identity_ok"] is False
                       else "needs_human", f"Canary release {canary}: {mc_problem}.", facts, findings), rows
    if evidence_id is None:
        return Outcome(3, "validate-release-identity", "needs_human",
                       f"The canary is {canary} but the AnalysisRun carries no release id to compare "
                       "(the evidence payload was not kept).", facts, findings), rows
    findings["release_identity_ok"] = True
    return Outcome(3, "validate-release-identity", "pass",
                   f"The canary's release-id {canary} matches the evidence payload and MC.", facts, findings), rows


def run(incident: Incident, release_id: str = "") -> tuple[RolloutView, list[dict[str, Any]], Outcome]:
    """Read, ask MC about the canary's release, decide."""
    view = incident.view()
    canary, _ = dx.canary_release_id(view)
    known, problem = mc_release(incident, canary) if not (view.phase == "Healthy" and not view.aborted) else (None, None)
    outcome, rows = validate(view, release_id or None, known, problem)
    return view, rows, outcome
