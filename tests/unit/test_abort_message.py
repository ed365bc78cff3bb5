"""All three real forms of Argo's abort message parse into the same typed AbortInfo."""

from __future__ import annotations

import pytest

from rollbook.cluster import parse_abort_message

REASON = "failed (1) > failureLimit (0)"


def test_v19_step_based() -> None:
    info = parse_abort_message(
        "RolloutAborted: Rollout aborted update to revision 7: Step-based analysis phase error/failed: "
        'Metric "mc-evidence-ok" assessed Failed due to failed (1) > failureLimit (0)')
    assert info is not None
    assert (info.form, info.revision, info.analysis_kind) == ("v1.9+", 7, "Step")
    assert (info.metric, info.assessed_phase, info.reason, info.error_message) == (
        "mc-evidence-ok", "Failed", REASON, None)


@pytest.mark.parametrize(
    ("phrase", "kind"),
    [("Background", "Background"), ("Blue/green pre-promotion", "PrePromotion"),
     ("Blue/green post-promotion", "PostPromotion")],
)
def test_v19_other_kinds(phrase: str, kind: str) -> None:
    info = parse_abort_message(
        f"RolloutAborted: Rollout aborted update to revision 12: {phrase} analysis phase error/failed: "
        'Metric "ig-error-rate" assessed Failed due to failed (2) > failureLimit (1)')
    assert info is not None
    assert (info.form, info.revision, info.analysis_kind, info.metric) == ("v1.9+", 12, kind, "ig-error-rate")
    assert info.reason == "failed (2) > failureLimit (1)"


def test_v19_error_with_error_message() -> None:
    info = parse_abort_message(
        "RolloutAborted: Rollout aborted update to revision 11: Blue/green pre-promotion analysis phase "
        'error/failed: Metric "mc-evidence-ok" assessed Error due to consecutiveErrors (5) > '
        'consecutiveErrorLimit (4): "Error Message: received non 2xx response code: 503"')
    assert info is not None
    assert (info.assessed_phase, info.reason) == ("Error", "consecutiveErrors (5) > consecutiveErrorLimit (4)")
    assert info.error_message == "received non 2xx response code: 503"


def test_v19_without_metric_detail() -> None:
    info = parse_abort_message("RolloutAborted: Rollout aborted update to revision 3: Step-based analysis phase error/failed")
    assert info is not None
    assert (info.form, info.revision, info.analysis_kind, info.metric, info.reason) == ("v1.9+", 3, "Step", None, None)


def test_v12_to_v18() -> None:
    info = parse_abort_message(
        'RolloutAborted: Rollout aborted update to revision 7: Metric "mc-evidence-ok" assessed Failed due to '
        "failed (1) > failureLimit (0)")
    assert info is not None
    assert (info.form, info.revision, info.analysis_kind) == ("v1.2-v1.8", 7, None)
    assert (info.metric, info.assessed_phase, info.reason) == ("mc-evidence-ok", "Failed", REASON)


def test_v10_v11_lower_case() -> None:
    info = parse_abort_message('RolloutAborted: metric "web" assessed Failed due to failed (1) > failureLimit (0)')
    assert info is not None
    assert (info.form, info.revision, info.analysis_kind) == ("v1.0-v1.1", None, None)
    assert (info.metric, info.assessed_phase, info.reason) == ("web", "Failed", REASON)


def test_inconclusive_phase_is_read() -> None:
    info = parse_abort_message(
        'RolloutAborted: Rollout aborted update to revision 2: Metric "ig-latency-p99" assessed Inconclusive '
        "due to inconclusive (1) > inconclusiveLimit (0)")
    assert info is not None and info.assessed_phase == "Inconclusive"


def test_manual_abort_has_revision_and_no_metric() -> None:
    info = parse_abort_message("RolloutAborted: Rollout aborted update to revision 9")
    assert info is not None
    assert (info.form, info.revision, info.metric, info.analysis_kind) == ("v1.2-v1.8", 9, None, None)


@pytest.mark.parametrize(
    "message",
    ["", None, 'ProgressDeadlineExceeded: ReplicaSet "canary-demo-65fb5ffc84" has timed out progressing.',
     "InvalidSpec: The Rollout is invalid", "BlueGreenPause", "waiting for all steps to complete"],
)
def test_other_messages_are_not_aborts(message: str | None) -> None:
    assert parse_abort_message(message) is None


def test_full_text_is_kept() -> None:
    text = 'RolloutAborted: metric "web" assessed Failed due to failed (1) > failureLimit (0)'
    info = parse_abort_message(text)
    assert info is not None and info.text == text
