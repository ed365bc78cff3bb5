"""Step 5 — escalate within 15 minutes if the rollback loops or the service stays degraded."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from rollbook import diagnosis as dx
from rollbook import history
from rollbook.cluster import RolloutView, build_view
from rollbook.mc_words import finding_quote
from rollbook.record import deadline_words
from rollbook.steps.core import Incident, Outcome, status_line


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


def snapshot_view(incident: Incident) -> RolloutView | None:
    """The Rollout as the run's snapshot captured it (None outside a run): its runs and events outlive GC."""
    rollout = incident.snapshot_object("rollout")
    if not isinstance(rollout, dict):
        return None
    return build_view(rollout, *(incident.snapshot_object(n) or [] for n in
                                 ("replicasets", "pods", "analysisruns", "events")))


def loop_seen(view: RolloutView, at_start: RolloutView | None) -> dx.LoopInfo:
    """The rollback loop now or at the snapshot (a retry that promoted the release does not undo a loop)."""
    now = dx.loop_info(view)
    if at_start is None:
        return now
    then = dx.loop_info(at_start)
    if then.revision is not None and now.revision not in (None, then.revision):
        return now  # a new release since the snapshot: its own runs count, not the old one's
    runs = tuple(sorted(set(now.failed_runs) | set(then.failed_runs)))
    return dx.LoopInfo(now.revision or then.revision, runs, max(now.retries, then.retries),
                       now.looping or then.looping)


REPEAT_WINDOW = timedelta(hours=24)  # an earlier abort of the same rollout on the same metric this recent is a loop


def repeated_aborts(incident: Incident, findings: dict[str, Any], now: datetime,
                    window: timedelta = REPEAT_WINDOW) -> list[str]:
    """`ig-error-rate aborted checkout 3 times in 24 h: INC-3, INC-2, INC-1`, per failed metric of this abort
    that the same rollout also aborted on in earlier incidents within `window` (the incident history).

    Outside a run (no record folder, so no `<out>/history.sqlite`) or without failed metrics: none. This
    abort is counted once, under this incident; an earlier record of the same AnalysisRun is this abort."""
    if incident.run_dir is None:
        return []
    out = incident.run_dir.parent.parent  # <out>/<incident>/<run>
    run = findings.get("analysis_run")
    at = dx.parse_time(findings.get("aborted_at")) or now
    this = history.Abort(str(incident.incident or ""), findings.get("canary_revision"), run, dx.iso(at) or "",
                         str(incident.run_dir))
    lines = []
    for metric in dict.fromkeys(str(m) for m in findings.get("failed_metrics") or []):
        earlier = [a for a in history.recent_aborts(out, incident.namespace, incident.rollout, metric, window, now=now,
                                                    exclude_incident=incident.incident)
                   if not (run and a.analysis_run == run)]
        if earlier:
            lines.append(history.describe_repeats(metric, incident.rollout, [this, *earlier], window))
    return lines


def first_abort(view: RolloutView, at_start: RolloutView | None) -> tuple[datetime | None, str]:
    """The first abort of this canary, from the live objects and the snapshot (events and runs are GC'd)."""
    found = [dx.first_abort(v) for v in (view, at_start) if v is not None]
    known = [f for f in found if f[0] is not None]
    return min(known) if known else (None, "no abort time known")


def assess(view: RolloutView, *, incident_start: datetime | None, now: datetime,
           baseline: dict[str, int] | None, earlier_findings: dict[str, Any],
           at_start: RolloutView | None = None, repeats: Sequence[str] = ()) -> Outcome:
    """Loop or degraded service → escalate; the deadline is 15 min from the abort or incident start.

    A loop is this revision's failed analyses, or `repeats`: the same rollout aborting on the same metric
    in earlier incidents within the window (repeated_aborts). A loop past its deadline escalates whatever
    was approved since: people had to hear of it by then."""
    loop = loop_seen(view, at_start)
    own_loop = loop.looping
    if repeats and not own_loop:
        loop = dx.LoopInfo(loop.revision, loop.failed_runs, loop.retries, True)
    complete, problems = dx.rollback_complete(view) if view.aborted else (True, [])
    health = dx.stable_health(view, baseline)
    aborted_at, abort_source = first_abort(view, at_start)
    deadline = dx.escalation_deadline(aborted_at, incident_start)
    past = bool(deadline and now >= deadline)
    reasons = []
    if own_loop:
        reasons.append(f"rollback loop: {len(loop.failed_runs)} failed analyses for revision {loop.revision} "
                       f"({', '.join(loop.failed_runs)})")
    reasons += [f"repeated abort: {line}" for line in repeats]
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
    facts = {"loop": loop.__dict__, "repeated_aborts": list(repeats), "rollback_complete": complete, "stable_health": health,
             "aborted_at": view.aborted_at, "first_abort_at": dx.iso(aborted_at), "first_abort_from": abort_source,
             "incident_start": dx.iso(incident_start),
             "deadline": dx.iso(deadline), "deadline_from": _deadline_from(aborted_at, incident_start),
             "deadline_words": deadline_words(deadline, now), "past_deadline": past,
             "minutes_since_abort": minutes_since, "reasons": reasons,
             "restart_baseline": "none (outside a run)" if baseline is None else f"snapshot: {len(baseline)} stable pods",
             "note": "The Rollout stays Degraded by design until its spec is reverted; its phase alone is not "
                     "the signal."}
    findings = {"escalate": due, "escalation_due_at": dx.iso(deadline)}
    healthy = view.phase == "Healthy" and not view.aborted and health["all_ready"] and not health["new_restarts"]
    if healthy and not (loop.looping and past):
        findings["escalate"] = False
        earlier = f" (earlier: {'; '.join(reasons)})" if reasons else ""
        return Outcome(5, "escalate", "pass", f"The rollout is Healthy now: no escalation{earlier}.", facts, findings)
    if healthy:
        reasons[0] += " before the rollout became Healthy, past the 15-minute deadline"
    if not due:
        by = f"escalate by {dx.iso(deadline)} ({deadline_words(deadline, now)}) if that changes" if deadline \
            else "no abort time to count 15 minutes from"
        state = "rollback complete" if view.aborted else f"not aborted ({view.phase})"
        return Outcome(5, "escalate", "pass",
                       f"No escalation needed: no loop (failed runs: {len(loop.failed_runs)}), {state}, "
                       f"stable pods healthy; {by}.", facts, findings)
    when = "now" if deadline is None else (f"the deadline {dx.iso(deadline)} {deadline_words(deadline, now)}" if past
                                           else f"do it before {dx.iso(deadline)}, {deadline_words(deadline, now)}")
    return Outcome(5, "escalate", "escalate", f"Escalate to the deployment lead and SRE ({when}): {'; '.join(reasons)}.",
                   facts, findings)


def _deadline_from(aborted_at: datetime | None, incident_start: datetime | None) -> str | None:
    """Which time the 15 minutes count from (the earlier of the first abort and the incident start)."""
    if aborted_at is None and incident_start is None:
        return None
    if incident_start is not None and (aborted_at is None or incident_start < aborted_at):
        return "the incident start"
    return "the first abort"


def timing_line(facts: dict[str, Any]) -> str:
    """When it first aborted and when escalation is due, in order and in words (never a bare None)."""
    if facts.get("first_abort_at"):
        first = (f"First aborted at {facts['first_abort_at']} ({facts['minutes_since_abort']:.0f} min ago, from "
                 f"{facts['first_abort_from']})")
    else:
        first = "Abort time unknown (no status.abortedAt, abort event or finished analysis)"
    if facts.get("incident_start"):
        first += f"; incident started at {facts['incident_start']}"
    if not facts.get("deadline"):
        return f"{first}; escalation deadline unknown: escalate now if it is due."
    return (f"{first}; escalation deadline {facts['deadline']}, 15 min after {facts['deadline_from']} "
            f"({facts['deadline_words']}).")


def message(view: RolloutView, outcome: Outcome, mc_reason: str | None, record_link: str | None) -> str:
    """The escalation message for the deployment lead and SRE, in the playbook's terms."""
    f = outcome.facts
    revision = f"canary revision {view.canary_revision}" if view.canary_revision is not None else "the canary"
    lines = [
        f"Rollout {view.namespace}/{view.name} — {revision} aborted by its analysis gate.",
        f"Status now: {status_line(view)}",
        f"Evidence failure reason: {mc_reason or 'not established (see the record)'}",
        f"Why escalate: {'; '.join(f['reasons']) or 'not needed'}",
        timing_line(f),
    ]
    if record_link:
        lines.append(f"Incident record: {record_link}")
    return "\n".join(lines)


def run(incident: Incident, incident_start: str = "", *, notify: bool = False) -> tuple[RolloutView, Outcome, str, Any]:
    """Read, assess, compose the message, attach pictures, send it (a dry run unless `notify`)."""
    from rollbook.steps.notify import send

    view = incident.view()
    earlier = incident.earlier().get("findings") or {}
    now = dx.now_utc()
    outcome = assess(view, incident_start=dx.parse_time(incident_start), now=now,
                     baseline=baseline_restarts(incident), earlier_findings=earlier, at_start=snapshot_view(incident),
                     repeats=repeated_aborts(incident, earlier, now))
    link = str(incident.run_dir) if incident.run_dir else None
    reason = finding_quote(earlier) if earlier.get("mc_reason") or earlier.get("mc_recorded") else None
    text = message(view, outcome, reason, link)
    outcome.facts["message"] = text
    notice = send(incident, view, outcome, reason, notify=notify)
    outcome.findings |= {"escalation_sent": notice.sent,
                         "escalation_deliveries": notice.deliveries}
    outcome.facts |= {"pictures": [str(p) for _, p in notice.pictures], "picture_source": notice.picture_source,
                      "notify": notify}
    if notice.note:
        outcome.notes.append(notice.note)
    return view, outcome, text, notice
