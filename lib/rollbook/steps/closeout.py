"""Step 6 — verify before close-out: stable pods on the previous image and healthy, MC's bundle, the ticket."""

from __future__ import annotations

from typing import Any

from rollbook import diagnosis as dx
from rollbook.cluster import RolloutView
from rollbook.errors import EvidenceError
from rollbook.mc_words import finding_quote
from rollbook.steps.core import Incident, Outcome
from rollbook.steps.escalate import baseline_restarts


def expected_production(view: RolloutView) -> tuple[str | None, str]:
    """Which release MC should show as current: the stable ReplicaSet's (prior release, or the promoted one)."""
    return dx.stable_release_id(view)


def mc_current(incident: Incident, service: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """MC's current production evidence bundle for the service, or why not."""
    if not service:
        return None, "the service is unknown (MC does not know the release)"
    try:
        b = incident.mc.current(service, incident.environment)
    except EvidenceError as e:
        return None, str(e)
    return {"service": b.service, "release_id": b.current.release_id, "kind": b.current.kind,
            "evidence_ok": b.current.evidence_ok, "since": str(b.current.since) if b.current.since else None,
            "previous": b.previous.release_id if b.previous else None}, None


def verify(view: RolloutView, baseline: dict[str, int] | None, expected: str | None, current: dict[str, Any] | None,
           mc_problem: str | None) -> Outcome:
    """Every close-out check, each a fact; the verdict passes only when all hold."""
    stable, previous = view.stable_rs, view.previous_rs
    promoted = view.phase == "Healthy" and view.stable_hash == view.canary_hash
    changed = promoted and baseline is not None and not set(baseline) & {p.name for p in (stable.pods if stable else ())}
    # after an approved retry promoted the release, the stable pods are new by design: no baseline to compare
    health = dx.stable_health(view, None if changed else baseline)
    pod_images = sorted({i for p in (stable.pods if stable else ()) for i in p.images})
    on_stable_image = stable is not None and bool(pod_images) and set(pod_images) <= set(stable.images)
    probes = [all(c.readiness_probe for c in p.containers) for p in (stable.pods if stable else ())]
    complete, problems = dx.rollback_complete(view)
    settled = (view.aborted and complete) or (view.phase == "Healthy" and view.stable_hash == view.canary_hash)
    checks = {
        "traffic settled on one release (rolled back, or promoted)": settled,
        "stable pods run the stable image": on_stable_image,
        "stable is the previous release" if not promoted else "stable is the promoted release":
            (view.stable_is_previous is not False) if not promoted else True,
        "stable pods Ready and available": health["all_ready"],
        "no new restarts since the snapshot": not health["new_restarts"] and not health["missing_pods"],
        "MC shows the expected release as current production":
            current is not None and expected is not None and current.get("release_id") == expected,
    }
    facts: dict[str, Any] = {"checks": checks, "stable_replicaset": stable.name if stable else None,
             "stable_images": list(stable.images) if stable else [], "stable_image_tag":
             dx.image_tag(img) if (img := dx.release_image(view, stable)) else None,
             "previous_replicaset": previous.name if previous else None, "pod_images": pod_images,
             "readiness_probes_defined": all(probes) if probes else False, "stable_health": health,
             "expected_current_release": expected, "mc_current": current, "mc_problem": mc_problem,
             "promoted": promoted, "stable_pods_replaced_by_promotion": changed,
             "rollback_problems": problems if view.aborted else [f"the rollout is {view.phase}, not aborted"]
             if not settled else []}
    ok = all(checks.values())
    found = _found_against_expected(view, promoted, problems, pod_images, health, expected, current, mc_problem)
    failed = [found[i] for i, v in enumerate(checks.values()) if not v]
    findings = {"closeout_ok": ok, "mc_current_release": current.get("release_id") if current else None,
                "phase_at_close": view.phase, "promoted": promoted}
    kept = dx.kept_canary(view)
    facts["kept_canary"] = kept.to_json() if kept else None
    leftover = (f" Still up by design: canary ReplicaSet {kept.replicaset} ({kept.available} pod(s), weight 0, kept by "
                f"`{kept.setting}`); an `undo` would also remove it." if kept else "")
    if ok:
        return Outcome(6, "verify-closeout", "pass",
                       f"Close-out verified: stable {facts['stable_replicaset']} on {', '.join(facts['stable_images'])}, "
                       f"{health['ready']}/{health['pods']} Ready, MC current = {expected}.{leftover}", facts, findings)
    return Outcome(6, "verify-closeout", "fail", f"Not ready to close: {'; '.join(failed)}.", facts, findings)


def _found_against_expected(view: RolloutView, promoted: bool, problems: list[str], pod_images: list[str],
                            health: dict[str, Any], expected: str | None, current: dict[str, Any] | None,
                            mc_problem: str | None) -> list[str]:
    """For each check of `verify`, in order, the sentence said when it fails: what was found, what was expected."""
    stable, previous = view.stable_rs, view.previous_rs
    traffic = ("; ".join(problems) if view.aborted else f"the rollout is {view.phase} and not aborted") or "unsettled"
    rs = f"{stable.name} (revision {stable.revision})" if stable else "missing"
    prev = f"{previous.name} (revision {previous.revision})" if previous else "not established"
    pods = int(health.get("pods") or 0)
    restarts = ", ".join(f"{k} +{v}" for k, v in (health.get("new_restarts") or {}).items())
    gone = ", ".join(health.get("missing_pods") or [])
    canary = dx.canary_release_id(view)[0]
    cur = (current or {}).get("release_id")
    what = ("the aborted canary" if cur == canary and not promoted else
            "neither the stable nor the canary release" if cur != expected else "the stable release")
    return [
        f"traffic is not on one release ({traffic}); expected all of it on stable after the abort, or the canary "
        "promoted",
        f"stable pods run {', '.join(pod_images) or 'no image (no stable pods found)'}; expected the stable "
        f"ReplicaSet's {', '.join(stable.images) if stable else 'image (no stable ReplicaSet)'}",
        f"the stable ReplicaSet is {rs}; expected the previous release {prev}",
        f"{health.get('ready', 0)}/{pods} stable pods Ready and available; expected all {pods}",
        "since the snapshot " + "; ".join(x for x in (f"stable pods restarted ({restarts})" if restarts else "",
                                                        f"stable pods disappeared ({gone})" if gone else "") if x)
        + "; expected no new restarts and the same pods",
        (f"MC's current production bundle is {cur} ({what}); expected {expected} (stable)" if current is not None
         else f"MC's current production bundle could not be read ({mc_problem or 'no answer'}); expected "
              f"{expected or 'the stable release (not established)'}"),
    ]


def aborted_revision(view: RolloutView, earlier: dict[str, Any], snapshot_rollout: Any = None) -> str:
    """The revision whose canary aborted: step 1's finding, else the snapshot's, never a later one.

    After an undo the live Rollout's revision is the undo's new one (it re-creates the stable template),
    so the live view names the aborted canary only while the Rollout is still aborted."""
    found = (earlier.get("findings") or {}).get("canary_revision")
    if found is None and isinstance(snapshot_rollout, dict):
        found = ((snapshot_rollout.get("metadata") or {}).get("annotations") or {}).get("rollout.argoproj.io/revision")
    if found is None and view.aborted:
        found = view.canary_revision
    return f"revision {found}" if found is not None else "revision not established"


def _said(value: Any) -> str:
    """A finding in the ticket: a missing one says so instead of printing None."""
    if value is None or value == []:
        return "not established"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return {True: "yes", False: "no"}.get(value, str(value)) if isinstance(value, bool) else str(value)


def ticket_text(view: RolloutView, outcome: Outcome, earlier: dict[str, Any], snapshot_rollout: Any = None) -> str:
    """The ticket update: cause, remediation, AnalysisRun summary, state at close."""
    f = earlier.get("findings") or {}
    steps = {s.get("name"): s for s in earlier.get("steps") or []}
    rem = steps.get("remediate-and-retry") or {}
    run = next((r for r in view.analysis_runs if r.name == f.get("analysis_run")), None)
    where = (f"{run.phase}, {run.summary}" if run else "no longer in the cluster; kept in snapshot/"
             if f.get("analysis_run") else "no failed run recorded")
    lines = [
        f"Rollout {view.namespace}/{view.name}, {aborted_revision(view, earlier, snapshot_rollout)}: "
        f"canary aborted by its analysis gate.",
        f"Cause: trigger {_said(f.get('trigger'))}, failed metrics {_said(f.get('failed_metrics'))}; "
        f"MC reason: {finding_quote(f)}.",
        f"AnalysisRun: {_said(f.get('analysis_run'))} ({where}).",
        f"Release identity: canary {_said(f.get('release_id'))}, evidence {_said(f.get('evidence_release_id'))} "
        f"(matches: {_said(f.get('release_identity_ok'))}).",
        f"Remediation: {rem.get('reason') or 'none recorded'}",
        f"State at close: {view.phase}; stable {outcome.facts.get('stable_replicaset')} "
        f"({', '.join(outcome.facts.get('stable_images') or []) or 'images not established'}); MC current "
        f"{_said((outcome.facts.get('mc_current') or {}).get('release_id'))}; close-out "
        f"{'verified' if outcome.verdict == 'pass' else 'NOT verified'}.",
    ]
    return "\n".join(lines)


def report_rollback(incident: Incident, view: RolloutView, service: str | None, expected: str | None,
                    current: dict[str, Any] | None, *, apply: bool) -> dict[str, Any] | None:
    """When MC still shows the failed canary as current production, report the rollback (dry run unless apply)."""
    canary = dx.canary_release_id(view)[0]
    promoted = view.phase == "Healthy" and view.stable_hash == view.canary_hash
    if promoted or not (service and expected and current) or current.get("release_id") != canary:
        return None
    try:
        digest = incident.mc.release(expected).artifact_digest
    except EvidenceError as e:
        return {"kind": "rollback", "release_id": expected, "sent": False, "error": str(e)}
    source = f"rollbook/{incident.incident or 'interactive'}"
    planned = {"kind": "rollback", "service": service, "release_id": expected, "artifact_digest": digest,
               "source": source, "sent": False}
    if not apply:
        return planned | {"note": "dry run: pass --apply-closeout to report it"}
    try:
        dep = incident.mc.report_deployment(service, expected, digest, "rollback", source,
                                            environment=incident.environment)
    except EvidenceError as e:
        return planned | {"error": str(e)}
    return planned | {"sent": True, "deployment_id": dep.id}


def run(incident: Incident, *, apply_closeout: bool = False) -> tuple[RolloutView, Outcome, str]:
    """Read, ask MC for the current bundle (report a rollback it missed), verify, write the ticket text."""
    view = incident.view()
    expected, _ = expected_production(view)
    service = None
    mc_error = None
    if expected:
        try:
            service = incident.mc.release(expected).service
        except EvidenceError as e:
            mc_error = str(e)  # MC down, or it does not know the release: say which, not a guess
    current, problem = mc_current(incident, service) if service else (None, mc_error or "no expected release")
    reported = report_rollback(incident, view, service, expected, current, apply=apply_closeout)
    if reported and reported.get("sent"):
        current, problem = mc_current(incident, service)
    outcome = verify(view, baseline_restarts(incident), expected, current, problem)
    outcome.findings["mc_rollback_report"] = reported
    if reported and not reported.get("sent"):
        outcome.notes.append(f"MC still shows the failed release {dx.canary_release_id(view)[0]} as current; "
                             f"a rollback report to {expected} is {'planned (dry run)' if 'note' in reported else 'failing'}.")
    text = ticket_text(view, outcome, incident.earlier(), incident.snapshot_object("rollout"))
    outcome.facts["ticket_text"] = text
    return view, outcome, text
