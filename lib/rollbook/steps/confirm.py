"""Step 1 — confirm the rollback status: Degraded with the analysis reason, stable = previous release."""

from __future__ import annotations

import time
from typing import Any

from rollbook import diagnosis as dx
from rollbook.cluster import RolloutView, WaitTimeout, wait_for_rollout
from rollbook.steps.core import Incident, Outcome

PLAYBOOK_ROLLBACK_SECONDS = 300  # "the controller completes rollback in under five minutes"


def status_facts(view: RolloutView) -> dict[str, Any]:
    """The rollout's status as `kubectl argo rollouts get rollout` would show it."""
    cond = dx.progressing_condition(view)
    return {
        "rollout": f"{view.namespace}/{view.name}", "phase": view.phase, "message": view.message,
        "strategy": view.strategy, "step": view.step, "set_weight": view.set_weight,
        "actual_weight": view.actual_weight, "abort": view.aborted, "aborted_at": view.aborted_at,
        "progressing_reason": cond.get("reason"), "stable_hash": view.stable_hash,
        "canary_hash": view.canary_hash, "desired": view.desired, "ready": view.ready,
        "available": view.available, "abort_message_form": view.abort.form if view.abort else None,
    }


def wait_for_rollback(incident: Incident, view: RolloutView, timeout: float,
                      interval: float = 2.0) -> tuple[RolloutView, float | None, str | None]:
    """If an abort's rollback is still under way, wait (bounded) for it; returns (view, seconds, problem)."""
    done, problems = dx.rollback_complete(view)
    if done or not view.aborted:
        return view, 0.0, None
    if not dx.rollback_progressing(view):  # failing pods do not heal by waiting: say so now
        return view, None, f"The rollback is not progressing ({'; '.join(problems)}); waiting would not help."
    started = time.monotonic()

    def progress(v: RolloutView, left: float) -> None:
        _, problems = dx.rollback_complete(v)
        print(f"rollback under way ({'; '.join(problems)}); {left:.0f}s left of {timeout:g}s", flush=True)

    try:
        view = wait_for_rollout(incident.cluster, incident.namespace, incident.rollout,
                                lambda v: dx.rollback_complete(v)[0] or not dx.rollback_progressing(v),
                                timeout=timeout, interval=interval,
                                what=f"the rollback of Rollout {incident.rollout!r}", progress=progress)
    except WaitTimeout as e:
        return incident.view(), None, str(e)
    waited = round(time.monotonic() - started, 1)
    complete, problems = dx.rollback_complete(view)
    if not complete:
        return view, waited, f"The rollback stopped progressing after {waited:g}s ({'; '.join(problems)})."
    return view, waited, None


def rollback_seconds(view: RolloutView) -> float | None:
    """Seconds from the abort to now when the rollback is already complete (an upper bound)."""
    aborted = dx.parse_time(view.aborted_at)
    return None if aborted is None else round((dx.now_utc() - aborted).total_seconds(), 1)


def confirm(incident: Incident, view: RolloutView, waited: float | None, wait_problem: str | None) -> Outcome:
    """The verdict of step 1 from the (possibly waited-for) view."""
    stable, previous, canary = view.stable_rs, view.previous_rs, view.canary_rs
    complete, problems = dx.rollback_complete(view)
    cond = dx.progressing_condition(view)
    facts = status_facts(view) | {
        "stable_replicaset": stable.name if stable else None,
        "stable_revision": stable.revision if stable else None,
        "stable_images": list(stable.images) if stable else [],
        "previous_replicaset": previous.name if previous else None,
        "previous_revision": previous.revision if previous else None,
        "canary_replicaset": canary.name if canary else None,
        "canary_revision": view.canary_revision,
        "canary_images": list(canary.images) if canary else [],
        "canary_available": canary.available if canary else None,
        "superseded_revisions": [{"replicaset": rs.name, "revision": rs.revision} for rs in view.superseded_rs],
        "rollback_complete": complete, "rollback_problems": problems,
        "waited_seconds": waited, "wait_problem": wait_problem,
        "kept_canary": kept.to_json() if (kept := dx.kept_canary(view)) else None,
    }
    findings: dict[str, Any] = {
        "phase": view.phase, "status_message": view.message or None,
        "stable_revision": stable.revision if stable else None,
        "canary_revision": view.canary_revision if view.aborted or view.phase != "Healthy" else None,
        "stable_image": dx.release_image(view, stable),
        "stable_is_previous_release": view.stable_is_previous,
        "aborted_at": view.aborted_at,
    }
    notes = []
    if view.phase == "Healthy" and not view.aborted:
        findings["stable_is_previous_release"] = None
        return Outcome(1, "confirm-rollback-status", "skip",
                       f"Rollout {view.name} is Healthy and not aborted: there is no rollback to confirm.",
                       facts, findings, ["Nothing was changed."])
    if not view.aborted or cond.get("reason") != "RolloutAborted":
        return Outcome(1, "confirm-rollback-status", "needs_human",
                       f"Rollout {view.name} is {view.phase} ({view.message or 'no message'}), not aborted by an "
                       "analysis: this playbook does not apply as written.", facts, findings)
    if wait_problem:
        notes.append(wait_problem)
        return Outcome(1, "confirm-rollback-status", "fail",
                       f"The rollback did not complete: {'; '.join(problems)}.",
                       facts, findings, notes)
    if view.superseded_rs:
        notes.append("Between stable and canary: " + ", ".join(f"revision {rs.revision} ({rs.name})"
                                                               for rs in view.superseded_rs)
                     + " — earlier releases that never went live (aborted and superseded); the previous "
                       "release is the stable one.")
    if waited:
        notes.append(f"Waited {waited:g}s for the rollback; the playbook expects under "
                     f"{PLAYBOOK_ROLLBACK_SECONDS // 60} minutes.")
    if view.stable_is_previous is False:
        return Outcome(1, "confirm-rollback-status", "fail",
                       f"The stable ReplicaSet {stable.name if stable else '?'} is not the previous release "
                       f"({previous.name if previous else '?'}): do not assume traffic is on the last good version.",
                       facts, findings, notes)
    if not complete:
        return Outcome(1, "confirm-rollback-status", "fail",
                       f"The abort happened but traffic is not fully back on stable: {'; '.join(problems)}.",
                       facts, findings, notes)
    metric = view.abort.metric if view.abort else None
    assessed = (view.abort.assessed_phase if view.abort else None) or ""
    cause = (f"{metric} {assessed}".strip() if metric else
             "aborted without a failed metric in its message: by hand or by a tool (`kubectl argo rollouts abort`), "
             "not by the gate")
    reason = (f"Rollout {view.name} is Degraded ({cause} in revision {view.canary_revision}); stable revision "
              f"{facts['stable_revision']} ({', '.join(facts['stable_images'])}) is the previous release and serves "
              "all traffic.")
    if kept is not None:
        reason += f" The rollback is complete. {kept.sentence()}"
    notes.append("The Rollout stays Degraded by design until its spec is reverted (undo) or a retry passes.")
    return Outcome(1, "confirm-rollback-status", "pass", reason, facts, findings, notes)


def run(incident: Incident, wait_seconds: float = PLAYBOOK_ROLLBACK_SECONDS) -> tuple[RolloutView, Outcome]:
    """Read, wait for an in-progress rollback (bounded), decide."""
    view = incident.view()
    view, waited, problem = wait_for_rollback(incident, view, wait_seconds)
    return view, confirm(incident, view, waited, problem)
