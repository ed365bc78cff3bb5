"""A Rollout's phase and message as Argo derives them (rolloututil.go), its step and its weights.

Ported from Argo Rollouts so the runbooks see what `kubectl argo rollouts get rollout` shows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from rollbook.cluster.fields import _INT, _d, _int, desired_replicas, strategy_of
from rollbook.cluster.models import (
    ReplicaSetInfo,
    RolloutPhase,
)

_PHASES: tuple[RolloutPhase, ...] = ("Healthy", "Degraded", "Progressing", "Paused")


# --------------------------------------------------------------------------- phase and message


def generation_observed(rollout: Mapping[str, Any]) -> bool:
    """Whether ``status.observedGeneration`` (a string; unparsable = observed) covers the generation."""
    observed = str(_d(rollout, "status").get("observedGeneration", "")).strip()
    if not _INT.fullmatch(observed):
        return True
    return int(observed) >= _int(_d(rollout, "metadata").get("generation"), 0)


def derive_phase(rollout: Mapping[str, Any]) -> tuple[RolloutPhase, str]:
    """Phase and message exactly as Argo's ``GetRolloutPhase`` derives them."""
    status = _d(rollout, "status")
    if not generation_observed(rollout):
        return "Progressing", "waiting for rollout spec update to be observed"
    # Upstream also checks this before trusting the phase: the user cleared the pause conditions but
    # the controller has not reacted yet. (Its workload-generation check relies on an in-memory flag
    # that is never serialised, so it cannot apply to an object read over the API.)
    if status.get("controllerPause") and not status.get("pauseConditions"):
        return "Progressing", "waiting for rollout to unpause"
    phase = status.get("phase")
    if phase in _PHASES:
        return cast(RolloutPhase, phase), str(status.get("message") or "")
    return calculate_phase(rollout)


def calculate_phase(rollout: Mapping[str, Any]) -> tuple[RolloutPhase, str]:
    """Client-side phase for objects without ``status.phase`` (the 11 rules of CalculateRolloutPhase)."""
    spec, status = _d(rollout, "spec"), _d(rollout, "status")
    degraded = _degraded(status)
    if degraded is not None:
        return "Degraded", degraded
    if spec.get("paused"):
        return "Paused", "manually paused"
    for cond in status.get("pauseConditions") or []:
        return "Paused", str(cond.get("reason", ""))
    if _restart_pending(spec, status):
        return "Progressing", "rollout is restarting"
    updated, available = _int(status.get("updatedReplicas")), _int(status.get("availableReplicas"))
    if updated < desired_replicas(rollout):
        return "Progressing", "more replicas need to be updated"
    if available < updated:
        return "Progressing", "updated replicas are still becoming available"
    strategy = strategy_of(rollout)
    if strategy == "BlueGreen":
        waiting = _bluegreen_waiting(spec, status)
        if waiting:
            return "Progressing", waiting
    elif strategy == "Canary":
        canary = _d(spec, "strategy", "canary")
        if not canary.get("trafficRouting") and _int(status.get("replicas")) > updated:
            return "Progressing", "old replicas are pending termination"
        if not status.get("stableRS") or status.get("stableRS") != status.get("currentPodHash"):
            return "Progressing", "waiting for all steps to complete"
    return "Healthy", ""


def _degraded(status: Mapping[str, Any]) -> str | None:
    """Rules 1-2: InvalidSpec, RolloutAborted or ProgressDeadlineExceeded; first condition wins."""
    for cond in status.get("conditions") or []:
        if cond.get("type") == "InvalidSpec":
            return f"InvalidSpec: {cond.get('message', '')}"
        if cond.get("reason") in ("RolloutAborted", "ProgressDeadlineExceeded"):
            return f"{cond.get('reason')}: {cond.get('message', '')}"
    return None


def _restart_pending(spec: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """Rule 5: ``spec.restartAt`` set and not (yet) equal to ``status.restartedAt``."""
    wanted = _time(spec.get("restartAt"))
    if wanted is None:
        return False
    return wanted != _time(status.get("restartedAt"))


def _time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp, or None."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value))  # 3.11 reads the Z suffix
    except ValueError:
        return None


def _bluegreen_waiting(spec: Mapping[str, Any], status: Mapping[str, Any]) -> str | None:
    """Rule 8: blue-green cut-over or post-promotion analysis/verification still pending."""
    active = _d(status, "blueGreen").get("activeSelector")
    if not active or active != status.get("currentPodHash"):
        return "active service cutover pending"
    if not status.get("stableRS") or status.get("stableRS") != status.get("currentPodHash"):
        post = _d(status, "blueGreen").get("postPromotionAnalysisRunStatus")
        if _d(spec, "strategy", "blueGreen").get("postPromotionAnalysis") is not None and (
            not post or post.get("status") not in ("Successful", "Failed", "Error", "Inconclusive")
        ):
            return "waiting for analysis to complete"
        return "waiting for post-promotion verification to complete"
    return None


# --------------------------------------------------------------------------- steps and weights


def _steps(rollout: Mapping[str, Any]) -> list[Any]:
    """The canary steps (empty for blue-green)."""
    return list(_d(rollout, "spec", "strategy", "canary").get("steps") or [])


def step_string(rollout: Mapping[str, Any]) -> str:
    """``i/N`` as the plugin shows it, or empty when there is no step index or no steps."""
    index = _d(rollout, "status").get("currentStepIndex")
    steps = _steps(rollout)
    if strategy_of(rollout) != "Canary" or index is None or not steps:
        return ""
    return f"{_int(index)}/{len(steps)}"


def _current_step_index(rollout: Mapping[str, Any]) -> int | None:
    """Index of the current canary step, None when there are no steps left (GetCurrentCanaryStep)."""
    steps = _steps(rollout)
    index = _int(_d(rollout, "status").get("currentStepIndex"), 0)
    return index if steps and index < len(steps) else None


def set_weight(rollout: Mapping[str, Any]) -> int:
    """The desired canary weight (GetCurrentSetWeight): 0 once aborted, 100 after the last step."""
    if _d(rollout, "status").get("abort"):
        return 0
    index = _current_step_index(rollout)
    if index is None:
        return 100
    for step in reversed(_steps(rollout)[: index + 1]):
        if isinstance(step, Mapping) and step.get("setWeight") is not None:
            return _int(step["setWeight"])
    return 0


def actual_weight(rollout: Mapping[str, Any], replicasets: Sequence[ReplicaSetInfo]) -> int:
    """The weight the plugin reports: traffic weights when routed, else canary's share of available pods."""
    if _current_step_index(rollout) is None:
        return 100
    status = _d(rollout, "status")
    available = _int(status.get("availableReplicas"))
    if available <= 0:
        return 0
    if not _d(rollout, "spec", "strategy", "canary").get("trafficRouting"):
        weight = 0
        for rs in replicasets:  # upstream keeps the last canary ReplicaSet's share
            if rs.canary:
                weight = rs.available * 100 // available
        return weight
    weights = _d(status, "canary").get("weights")
    if weights:
        return _int(_d(weights, "canary").get("weight"))
    return set_weight(rollout)
