"""The whole read model of one Rollout (RolloutView) from raw objects, events included; no network."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rollbook.cluster.analysis import build_analysis_runs, parse_abort_message
from rollbook.cluster.fields import _d, _int, desired_replicas, revision_of, strategy_of
from rollbook.cluster.models import (
    AnalysisRunInfo,
    EventInfo,
    RawObject,
    RolloutView,
)
from rollbook.cluster.phase import _steps, actual_weight, derive_phase, set_weight, step_string
from rollbook.cluster.replicasets import build_replicasets, images_of
from rollbook.errors import malformed


def build_event(event: Mapping[str, Any]) -> EventInfo:
    """An EventInfo from an Event dict."""
    source = _d(event, "source").get("component") or event.get("reportingComponent")
    return EventInfo(
        type=str(event.get("type", "")),
        reason=str(event.get("reason", "")),
        message=str(event.get("message", "")),
        count=_int(event.get("count"), 1),
        first_timestamp=event.get("firstTimestamp") or event.get("eventTime"),
        last_timestamp=event.get("lastTimestamp") or event.get("eventTime"),
        source=str(source) if source else None,
        raw=dict(event),
    )


def build_view(
    rollout: RawObject,
    replicasets: Iterable[RawObject] = (),
    pods: Iterable[RawObject] = (),
    analysisruns: Iterable[RawObject] = (),
    events: Iterable[RawObject] = (),
) -> RolloutView:
    """The whole read model of one Rollout from raw objects (extra objects are ignored by owner UID).

    A field of a type the API never serves there is a MalformedObject naming the Rollout, not a TypeError."""
    try:
        return _build_view(rollout, replicasets, pods, analysisruns, events)
    except (TypeError, AttributeError, ValueError, KeyError, IndexError) as e:
        raise malformed("Rollout", rollout, e) from e


def _build_view(
    rollout: RawObject,
    replicasets: Iterable[RawObject],
    pods: Iterable[RawObject],
    analysisruns: Iterable[RawObject],
    events: Iterable[RawObject],
) -> RolloutView:
    meta, spec, status = _d(rollout, "metadata"), _d(rollout, "spec"), _d(rollout, "status")
    phase, message = derive_phase(rollout)
    rs_infos = build_replicasets(rollout, replicasets, pods)
    runs: tuple[AnalysisRunInfo, ...] = build_analysis_runs(rollout, analysisruns)
    strategy = strategy_of(rollout)
    index = status.get("currentStepIndex")
    ordered_events = sorted(events, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    return RolloutView(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        uid=str(meta.get("uid", "")),
        generation=_int(meta.get("generation"), 0) if meta.get("generation") is not None else None,
        observed_generation=None if status.get("observedGeneration") is None else str(status["observedGeneration"]),
        phase=phase,
        message=message,
        strategy=strategy,
        step=step_string(rollout),
        current_step_index=None if index is None else _int(index),
        total_steps=len(_steps(rollout)),
        set_weight=set_weight(rollout) if strategy == "Canary" else None,
        actual_weight=actual_weight(rollout, rs_infos) if strategy == "Canary" else None,
        desired=desired_replicas(rollout),
        current=_int(status.get("replicas")),
        updated=_int(status.get("updatedReplicas")),
        ready=_int(status.get("readyReplicas")),
        available=_int(status.get("availableReplicas")),
        aborted=bool(status.get("abort")),
        aborted_at=status.get("abortedAt"),
        stable_hash=status.get("stableRS") or None,
        canary_hash=status.get("currentPodHash") or None,
        revision=revision_of(rollout) or None,
        template_labels=dict(_d(spec, "template", "metadata").get("labels") or {}),
        images=images_of(rs_infos),
        replicasets=rs_infos,
        analysis_runs=runs,
        events=tuple(build_event(e) for e in ordered_events),
        abort=parse_abort_message(message) if phase == "Degraded" else None,
        raw=dict(rollout),
    )
