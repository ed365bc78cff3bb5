"""Step 5 — escalate within 15 minutes if the rollback loops or the service stays degraded."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rollbook import diagnosis as dx
from rollbook.cluster import RolloutView
from rollbook.steps.core import Incident, Outcome


def baseline_restarts(incident: Incident) -> dict[str, int] | None:
    """Stable pods' restart counts captured in the run's snapshot (None outside a run).

    Only the stable ReplicaSet's pods count: canary pods are meant to go away after an abort."""
    pods = incident.snapshot_object("pods")
    rollout = incident.snapshot_object("rollout")
    if not isinstance(pods, list):
        return None
    stable = ((rollout or {}).get("status") or {}).get("stableRS")
    counts = {}
    for pod in pods:
        if stable and ((pod.get("metadata") or {}).get("labels") or {}).get(dx.HASH_LABEL) != stable:
            continue
        name = (pod.get("metadata") or {}).get("name")
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        counts[str(name)] = sum(int(s.get("restartCount") or 0) for s in statuses)
    return counts


def assess(view: RolloutView, *, incident_start: datetime | None, now: datetime,
           baseline: dict[str, int] | None, earlier_findings: dict[str, Any]) -> Outcome:
    """Loop or degraded service → escalate; the deadline is 15 min from the abort or incident start."""
    loop = dx.loop_info(view)
    complete, problems = dx.rollback_complete(view) if view.aborted else (True, [])
    health = dx.stable_health(view, baseline)
    aborted_at, abort_source = dx.first_abort(view)
    deadline = dx.escalation_deadline(aborted_at, incident_start)
    reasons = []
    if loop.looping:
        reasons.append(f"rollback loop: {len(loop.failed_runs)} failed analyses for revision {loop.revision} "
                       f"({', '.join(loop.failed_runs)})")
    if earlier_findings.get("retried") and earlier_findings.get("promoted") is False:
        reasons.append("the approved retry aborted again")
    if not complete:
        reasons.append(f"the rollback did not complete: {'; '.join(problems)}")
    if view.stable_rs is not None and not health["all_ready"]:
        reasons.append(f"stable pods not all Ready/available ({health['ready']}/{health['pods']} ready, "
                       f"{health['available']}/{health['desired']} available)")
    if health["new_restarts"]:
        reasons.append(f"stable pods restarting since the snapshot: {health['new_restarts']}")
    due = bool(reasons)
    minutes_since = round((now - aborted_at).total_seconds() / 60, 1) if aborted_at else None
    facts = {"loop": loop.__dict__, "rollback_complete": complete, "stable_health": health,
             "aborted_at": view.aborted_at, "first_abort_at": dx.iso(aborted_at), "first_abort_from": abort_source,
             "incident_start": dx.iso(incident_start),
             "deadline": dx.iso(deadline), "past_deadline": bool(deadline and now >= deadline),
             "minutes_since_abort": minutes_since, "reasons": reasons,
             "note": "The Rollout stays Degraded by design until its spec is reverted; its phase alone is not "
                     "the signal."}
    findings = {"escalate": due, "escalation_due_at": dx.iso(deadline)}
    if view.phase == "Healthy" and not view.aborted and health["all_ready"] and not health["new_restarts"]:
        findings["escalate"] = False
        past = f" (earlier: {'; '.join(reasons)})" if reasons else ""
        return Outcome(5, "escalate", "pass", f"The rollout is Healthy now: no escalation{past}.", facts, findings)
    if not due:
        by = f"escalate by {dx.iso(deadline)} if that changes" if deadline else "no abort time to count 15 minutes from"
        state = "rollback complete" if view.aborted else f"not aborted ({view.phase})"
        return Outcome(5, "escalate", "pass",
                       f"No escalation needed: no loop (failed runs: {len(loop.failed_runs)}), {state}, "
                       f"stable pods healthy; {by}.", facts, findings)
    when = ("now" if deadline is None else f"the deadline {dx.iso(deadline)} has passed" if facts["past_deadline"]
            else f"do it before {dx.iso(deadline)}")
    return Outcome(5, "escalate", "escalate", f"Escalate to the deployment lead and SRE ({when}): {'; '.join(reasons)}.",
                   facts, findings)


def message(view: RolloutView, outcome: Outcome, mc_reason: str | None, record_link: str | None) -> str:
    """The escalation message for the deployment lead and SRE, in the playbook's terms."""
    f = outcome.facts
    lines = [
        f"Rollout {view.namespace}/{view.name} — canary revision {view.canary_revision} aborted by its analysis gate.",
        f"Status: {view.phase}: {view.message or '-'}",
        f"Evidence failure reason: {mc_reason or 'not established (see the record)'}",
        f"Why escalate: {'; '.join(f['reasons']) or 'not needed'}",
        f"Aborted at {f['aborted_at']} ({f['minutes_since_abort']} min ago); escalation deadline {f['deadline']}.",
    ]
    if record_link:
        lines.append(f"Incident record: {record_link}")
    return "\n".join(lines)


def run(incident: Incident, incident_start: str = "", *, notify: bool = False) -> tuple[RolloutView, Outcome, str, Any]:
    """Read, assess, compose the message, attach pictures, send it (a dry run unless `notify`)."""
    from rollbook.steps.notify import send

    view = incident.view()
    earlier = incident.earlier().get("findings") or {}
    outcome = assess(view, incident_start=dx.parse_time(incident_start), now=dx.now_utc(),
                     baseline=baseline_restarts(incident), earlier_findings=earlier)
    link = str(incident.run_dir) if incident.run_dir else None
    text = message(view, outcome, earlier.get("mc_reason"), link)
    outcome.facts["message"] = text
    notice = send(incident, view, outcome, earlier.get("mc_reason"), notify=notify)
    outcome.findings |= {"escalation_sent": notice.sent,
                         "escalation_deliveries": notice.deliveries}
    outcome.facts |= {"pictures": [str(p) for _, p in notice.pictures], "picture_source": notice.picture_source,
                      "notify": notify}
    if notice.note:
        outcome.notes.append(notice.note)
    return view, outcome, text, notice
