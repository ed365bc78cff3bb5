"""What people read when escalation is due (issue 13 items 2 and 3): the message, the Slack fields, the
summary's escalation line and the ticket text — no None, no bare dashes, no Python reprs, deadlines in words."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from rollbook import paging, record
from rollbook.cluster import build_view
from rollbook.paging import Escalation
from rollbook.steps import closeout, escalate
from rollbook.steps.core import Outcome

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def _rollout(revision: int, *, aborted: bool, message: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"stableRS": "aaa", "currentPodHash": "bbb", "abort": aborted}
    if message:
        status["conditions"] = [{"type": "Progressing", "status": "False", "reason": "RolloutAborted",
                                 "message": message}]
    return {"metadata": {"name": "api", "namespace": "prod",
                         "annotations": {"rollout.argoproj.io/revision": str(revision)}},
            "spec": {"replicas": 1, "strategy": {"canary": {}}}, "status": status}


def test_deadline_words_say_in_or_passed_minutes() -> None:
    assert record.deadline_words(NOW + timedelta(minutes=7, seconds=10), NOW) == "in 7 min"
    assert record.deadline_words(NOW - timedelta(minutes=42), NOW) == "passed 42 min ago"
    assert record.deadline_words(NOW + timedelta(seconds=20), NOW) == "due now"
    assert record.deadline_words(None, NOW) == "no deadline known"


def test_timing_line_orders_the_first_abort_before_its_deadline_and_never_prints_none() -> None:
    facts = {"first_abort_at": "2026-11-26T09:03:00Z", "first_abort_from": "the first RolloutAborted event",
             "minutes_since_abort": 57.0, "incident_start": None, "deadline": "2026-11-26T09:18:00Z",
             "deadline_from": "the first abort", "deadline_words": "passed 42 min ago"}
    line = escalate.timing_line(facts)
    assert line == ("First aborted at 2026-11-26T09:03:00Z (57 min ago, from the first RolloutAborted event); "
                    "escalation deadline 2026-11-26T09:18:00Z, 15 min after the first abort (passed 42 min ago).")
    unknown = escalate.timing_line({"first_abort_at": None, "deadline": None})
    assert "None" not in unknown and unknown.startswith("Abort time unknown")


def test_status_line_without_a_message_is_just_the_phase() -> None:
    quiet = replace(build_view(_rollout(7, aborted=False)), message="")  # Argo gives no message when Healthy
    assert escalate.status_line(quiet) == quiet.phase and ": -" not in escalate.status_line(quiet)
    aborted = build_view(_rollout(7, aborted=True, message="RolloutAborted: Rollout aborted update to revision 7"))
    assert escalate.status_line(aborted) == f"{aborted.phase} — {aborted.message}"


def test_message_has_no_none_and_says_status_now() -> None:
    view = build_view(_rollout(7, aborted=True, message="RolloutAborted: Rollout aborted update to revision 7"))
    outcome = Outcome(5, "escalate", "escalate", "escalate now", facts={
        "reasons": ["rollback loop: 3 failed analyses for revision 7 (a, b, c)"], "first_abort_at": None,
        "deadline": None})
    text = escalate.message(view, outcome, None, None)
    assert "None" not in text and "Status now: " in text and "Why escalate: rollback loop" in text


def test_slack_fields_read_as_text_not_python_reprs() -> None:
    msg = Escalation(title="t", reason="r", rollout="api", namespace="prod", context="c", revision=7,
                     aborted_at=NOW, minutes_since_abort=42.0,
                     facts={"Why escalate": ["rollback loop", "stable pods restarting"],
                            "Deadline": "09:18Z (passed 42 min ago)", "Loop": {"revision": 7, "looping": True},
                            "Known": None})
    fields = [f["text"] for f in paging.slack_message(msg)["blocks"][1]["fields"]]
    joined = "\n".join(fields)
    assert "*Why escalate*\n• rollback loop\n• stable pods restarting" in fields
    assert "*Loop*\nrevision: 7\nlooping: yes" in fields and "*Known*\nunknown" in fields
    assert not any(bad in joined for bad in ("['", "{'", "None", "True"))


def test_summary_escalation_line_reads_the_deadline_against_the_runs_end() -> None:
    f = dict.fromkeys(record.FINDINGS_KEYS) | {"escalate": True, "escalation_due_at": "2026-11-26T09:18:00Z"}
    assert record._escalation_line(f, "2026-11-26T10:00:00.000Z") == \
        "- Escalation due: YES — deadline 2026-11-26T09:18:00Z (passed 42 min before this run ended)"
    f |= {"escalate": False}
    assert record._escalation_line(f, "2026-11-26T09:10:00.000Z") == \
        "- Escalation due: no (if that changes: deadline 2026-11-26T09:18:00Z, in 8 min)"
    assert record._escalation_line(f | {"escalate": None}, "") == "- Escalation due: not assessed (step 5 did not run)"


# --------------------------------------------------------------------------- 3. the ticket names the canary


def test_ticket_names_the_aborted_canary_after_an_undo_even_without_earlier_findings() -> None:
    after_undo = build_view(_rollout(13, aborted=False))  # the undo's new revision, no longer aborted
    snapshot = _rollout(12, aborted=True)
    outcome = Outcome(6, "verify-closeout", "pass", "ok", facts={"stable_replicaset": "api-aaa"})
    text = closeout.ticket_text(after_undo, outcome, {"steps": [], "findings": {}}, snapshot)
    assert text.startswith("Rollout prod/api, revision 12: canary aborted")
    assert "None" not in text and "trigger not established" in text
    found = closeout.ticket_text(after_undo, outcome, {"findings": {"canary_revision": 12}})
    assert found.startswith("Rollout prod/api, revision 12:")
    unknown = closeout.ticket_text(after_undo, outcome, {"findings": {}})
    assert unknown.startswith("Rollout prod/api, revision not established:") and "revision 13" not in unknown
