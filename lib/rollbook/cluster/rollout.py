"""Pure functions over Rollout/ReplicaSet/Pod dicts: phase and message, revisions, tags, weights, pods.

Ported from Argo Rollouts (utils/rollout/rolloututil.go, pkg/kubectl-argo-rollouts/info/*.go) so the
runbooks see what `kubectl argo rollouts get rollout` shows; no network here, see ``connect.py``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

from rollbook.cluster.analysis import build_analysis_runs, parse_abort_message
from rollbook.cluster.models import (
    AnalysisRunInfo,
    ContainerInfo,
    ContainerState,
    EventInfo,
    ImageInfo,
    PodInfo,
    RawObject,
    ReplicaSetInfo,
    ReplicaSetStatus,
    RolloutPhase,
    RolloutSummary,
    RolloutView,
    Strategy,
)
from rollbook.errors import ClusterUnavailable, PreconditionError, RollbookError, malformed

if TYPE_CHECKING:  # the fetch layer only calls Cluster's methods; kubernetes stays in connect.py
    from rollbook.cluster.connect import Cluster

HASH_LABEL = "rollouts-pod-template-hash"
REVISION_ANNOTATION = "rollout.argoproj.io/revision"
_PHASES: tuple[RolloutPhase, ...] = ("Healthy", "Degraded", "Progressing", "Paused")
_INT = re.compile(r"[+-]?\d+")


# --------------------------------------------------------------------------- small readers


def _d(obj: Mapping[str, Any] | None, *keys: str) -> dict[str, Any]:
    """Nested dict lookup that treats missing or null values as empty dicts."""
    cur: Any = obj or {}
    for key in keys:
        cur = cur.get(key) if isinstance(cur, Mapping) else None
        cur = cur or {}
    return cast(dict[str, Any], cur if isinstance(cur, dict) else {})


def _int(value: Any, default: int = 0) -> int:
    """An integer field; missing means ``default`` (Go zero values)."""
    if isinstance(value, bool) or value is None:
        return default
    if isinstance(value, int):
        return value
    text = str(value).strip()
    return int(text) if _INT.fullmatch(text) else default


def revision_of(obj: Mapping[str, Any]) -> int:
    """The ``rollout.argoproj.io/revision`` annotation; 0 when absent or unparsable (as upstream)."""
    return _int(_d(obj, "metadata", "annotations").get(REVISION_ANNOTATION), 0)


def owner_uids(obj: Mapping[str, Any]) -> tuple[str, ...]:
    """UIDs of an object's owner references."""
    refs = _d(obj, "metadata").get("ownerReferences") or []
    return tuple(str(r.get("uid")) for r in refs if isinstance(r, Mapping) and r.get("uid"))


def pod_template_hash(obj: Mapping[str, Any]) -> str | None:
    """The ``rollouts-pod-template-hash`` label of a ReplicaSet, pod or AnalysisRun."""
    value = _d(obj, "metadata", "labels").get(HASH_LABEL)
    return str(value) if value else None


def strategy_of(rollout: Mapping[str, Any]) -> Strategy:
    """Canary, BlueGreen or Unknown, from ``spec.strategy``."""
    strategy = _d(rollout, "spec", "strategy")
    if "canary" in strategy and strategy["canary"] is not None:
        return "Canary"
    if "blueGreen" in strategy and strategy["blueGreen"] is not None:
        return "BlueGreen"
    return "Unknown"


def desired_replicas(rollout: Mapping[str, Any]) -> int:
    """``spec.replicas`` or Argo's default of 1."""
    return _int(_d(rollout, "spec").get("replicas"), 1)


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


# --------------------------------------------------------------------------- pods


def _container(spec: Mapping[str, Any], status: Mapping[str, Any] | None) -> ContainerInfo:
    """A container from its spec and (optional) status."""
    st = status or {}
    state_name, detail = _container_state(_d(st, "state"))
    return ContainerInfo(
        name=str(spec.get("name", "")),
        image=str(st.get("image") or spec.get("image", "")),
        ready=bool(st.get("ready", False)),
        restart_count=_int(st.get("restartCount")),
        state=state_name,
        reason=detail.get("reason"),
        message=detail.get("message"),
        readiness_probe=spec.get("readinessProbe"),
        liveness_probe=spec.get("livenessProbe"),
        startup_probe=spec.get("startupProbe"),
        raw={"spec": dict(spec), "status": dict(st)},
    )


def _container_state(state: Mapping[str, Any]) -> tuple[ContainerState, dict[str, Any]]:
    """Which of running/waiting/terminated a container state is, with its detail."""
    names: tuple[ContainerState, ...] = ("waiting", "terminated", "running")
    for name in names:
        if state.get(name) is not None:
            return name, dict(state[name] or {})
    return "unknown", {}


def pod_status(pod: Mapping[str, Any]) -> tuple[str, int, int]:
    """The plugin's STATUS text, ready containers and restarts (newPodInfo)."""
    spec, status = _d(pod, "spec"), _d(pod, "status")
    reason = str(status.get("reason") or status.get("phase") or "")
    reason, initializing, restarts = _init_status(spec, status, reason)
    ready = 0
    if not initializing:
        restarts, has_running = 0, False
        for cs in reversed(status.get("containerStatuses") or []):
            restarts += _int(cs.get("restartCount"))
            state = _d(cs, "state")
            waiting, term = state.get("waiting"), state.get("terminated")
            if waiting is not None and waiting.get("reason"):
                reason = str(waiting["reason"])
            elif term is not None:
                reason = _terminated_reason(term, "")
            elif cs.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running"
    if _d(pod, "metadata").get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    return reason, ready, restarts


def _terminated_reason(term: Mapping[str, Any], prefix: str) -> str:
    """Reason of a terminated container: its reason, else Signal:N / ExitCode:N."""
    if term.get("reason"):
        return prefix + str(term["reason"])
    if _int(term.get("signal")):
        return f"{prefix}Signal:{_int(term.get('signal'))}"
    return f"{prefix}ExitCode:{_int(term.get('exitCode'))}"


def _init_status(spec: Mapping[str, Any], status: Mapping[str, Any], reason: str) -> tuple[str, bool, int]:
    """Init-container part of newPodInfo: the Init:... reason and whether the pod is initializing."""
    inits = spec.get("initContainers") or []
    sidecar = {c.get("name"): c.get("restartPolicy") == "Always" for c in inits}
    restarts = 0
    for i, cs in enumerate(status.get("initContainerStatuses") or []):
        restarts += _int(cs.get("restartCount"))
        state = _d(cs, "state")
        term, waiting = state.get("terminated"), state.get("waiting")
        if term is not None and _int(term.get("exitCode")) == 0:
            continue
        if term is not None:
            return _terminated_reason(term, "Init:"), True, restarts
        if sidecar.get(cs.get("name")) and cs.get("started"):
            if cs.get("ready"):
                continue
            return reason, False, restarts  # upstream breaks out without marking initializing
        if waiting is not None and waiting.get("reason") and waiting.get("reason") != "PodInitializing":
            return f"Init:{waiting['reason']}", True, restarts
        return f"Init:{i}/{len(inits)}", True, restarts
    return reason, False, restarts


def build_pod(pod: Mapping[str, Any]) -> PodInfo:
    """A PodInfo from a Pod dict."""
    meta, spec, status = _d(pod, "metadata"), _d(pod, "spec"), _d(pod, "status")
    text, ready, restarts = pod_status(pod)
    by_name = {cs.get("name"): cs for cs in status.get("containerStatuses") or []}
    containers = tuple(_container(c, by_name.get(c.get("name"))) for c in spec.get("containers") or [])
    ready_cond: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    owners = owner_uids(pod)
    return PodInfo(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        uid=str(meta.get("uid", "")),
        phase=str(status.get("phase", "")),
        status=text,
        ready_containers=ready,
        total_containers=len(spec.get("containers") or []),
        is_ready=ready_cond.get("status") == "True",
        restarts=restarts,
        images=tuple(c.image for c in containers),
        labels=dict(meta.get("labels") or {}),
        pod_template_hash=pod_template_hash(pod),
        owner_uid=owners[0] if owners else None,
        creation_timestamp=meta.get("creationTimestamp"),
        containers=containers,
        raw=dict(pod),
    )


# --------------------------------------------------------------------------- ReplicaSets


def replicaset_health(rs: Mapping[str, Any]) -> ReplicaSetStatus:
    """Healthy, Progressing, ScaledDown or ReplicaFailure (getReplicaSetHealth)."""
    spec, status = _d(rs, "spec"), _d(rs, "status")
    wanted = spec.get("replicas")
    if _int(_d(rs, "metadata").get("generation")) > _int(status.get("observedGeneration")):
        return "Progressing"
    failure = next((c for c in status.get("conditions") or [] if c.get("type") == "ReplicaFailure"), None)
    if failure is not None and failure.get("status") == "True":
        return "ReplicaFailure"
    if wanted is not None and _int(status.get("availableReplicas")) < _int(wanted):
        return "Progressing"
    if wanted is not None and _int(wanted) == 0:
        return "ScaledDown"
    return "Healthy"


def _tags(rollout: Mapping[str, Any], rs_hash: str | None) -> dict[str, bool]:
    """stable/canary/active/preview/ping/pong flags of one ReplicaSet hash (GetReplicaSetInfo)."""
    status = _d(rollout, "status")
    tags = dict.fromkeys(("stable", "canary", "active", "preview", "ping", "pong"), False)
    canary_spec = _d(rollout, "spec", "strategy", "canary")
    strategy = strategy_of(rollout)
    if strategy == "Canary":
        pingpong = bool(canary_spec.get("pingPong"))
        stable_is_ping = _d(status, "canary").get("stablePingPong") == "ping"
        if status.get("stableRS") == rs_hash:
            tags.update(stable=True, ping=pingpong and stable_is_ping, pong=pingpong and not stable_is_ping)
        elif status.get("currentPodHash") == rs_hash:
            tags.update(canary=True, ping=pingpong and not stable_is_ping, pong=pingpong and stable_is_ping)
    elif strategy == "BlueGreen":
        bg = _d(status, "blueGreen")
        tags["stable"] = status.get("stableRS") == rs_hash
        tags["active"] = bg.get("activeSelector") == rs_hash
        tags["preview"] = not tags["active"] and bg.get("previewSelector") == rs_hash
    return tags


def build_replicaset(rollout: Mapping[str, Any], rs: Mapping[str, Any], pods: Iterable[PodInfo]) -> ReplicaSetInfo:
    """A ReplicaSetInfo with its tags and the given pods (already linked to it)."""
    meta, spec, status = _d(rs, "metadata"), _d(rs, "spec"), _d(rs, "status")
    rs_hash = pod_template_hash(rs)
    template = _d(spec, "template")
    containers = _d(template, "spec").get("containers") or []
    ordered = sorted(pods, key=lambda p: (p.creation_timestamp or "", p.name))
    return ReplicaSetInfo(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        uid=str(meta.get("uid", "")),
        revision=revision_of(rs),
        pod_template_hash=rs_hash,
        status=replicaset_health(rs),
        desired=_int(spec.get("replicas")),
        replicas=_int(status.get("replicas")),
        available=_int(status.get("availableReplicas")),
        images=tuple(str(c.get("image", "")) for c in containers),
        template_labels=dict(_d(template, "metadata").get("labels") or {}),
        template=dict(template),
        creation_timestamp=meta.get("creationTimestamp"),
        pods=tuple(ordered),
        raw=dict(rs),
        **_tags(rollout, rs_hash),
    )


def build_replicasets(
    rollout: Mapping[str, Any], replicasets: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]
) -> tuple[ReplicaSetInfo, ...]:
    """The rollout's ReplicaSets (linked by owner UID), highest revision first, with their pods."""
    uid = _d(rollout, "metadata").get("uid")
    owned = [rs for rs in replicasets if uid and uid in owner_uids(rs)]
    rs_uids = {_d(rs, "metadata").get("uid") for rs in owned}
    by_rs: dict[str, list[PodInfo]] = {}
    for pod in pods:
        owner = next((u for u in owner_uids(pod) if u in rs_uids), None)
        if owner is not None:
            by_rs.setdefault(owner, []).append(build_pod(pod))
    infos = [build_replicaset(rollout, rs, by_rs.get(str(_d(rs, "metadata").get("uid")), [])) for rs in owned]
    # upstream sorts by revision (desc) then name; its creation-time branch has no effect
    return tuple(sorted(infos, key=lambda r: (-r.revision, r.name)))


def images_of(replicasets: Iterable[ReplicaSetInfo]) -> tuple[ImageInfo, ...]:
    """Images of ReplicaSets with replicas, tags merged as the plugin does, sorted by image."""
    images: list[ImageInfo] = []
    for rs in replicasets:
        if rs.replicas <= 0:
            continue
        for image in rs.images:
            existing = next((i for i, img in enumerate(images) if img.image == image), None)
            if existing is None:
                images.append(ImageInfo(image, rs.tags))  # a first sighting keeps insertion order
            else:
                merged = tuple(sorted(set(images[existing].tags) | set(rs.tags)))
                images[existing] = ImageInfo(image, merged)
            images.sort(key=lambda i: i.image)
    return tuple(images)


# --------------------------------------------------------------------------- events and the view


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


# --------------------------------------------------------------------------- fetch (thin, over Cluster)


def selector_string(rollout: Mapping[str, Any]) -> str:
    """The Rollout's ``spec.selector`` as a label-selector string for server-side filtering."""
    selector = _d(rollout, "spec", "selector")
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), ",".join(expr.get("values") or [])
        parts.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                      "Exists": f"{key}", "DoesNotExist": f"!{key}"}.get(str(op), ""))
    return ",".join(p for p in parts if p)


def fetch_replicasets(cluster: Cluster, rollout: Mapping[str, Any]) -> list[RawObject]:
    """ReplicaSets by the Rollout's selector (server-side), kept when controlled by its UID."""
    selector = selector_string(rollout)
    if not selector:  # an empty selector would list the whole namespace; Argo rejects it anyway
        return []
    namespace, uid = str(_d(rollout, "metadata").get("namespace")), _d(rollout, "metadata").get("uid")
    return [rs for rs in cluster.list("replicasets", namespace, label_selector=selector) if uid in owner_uids(rs)]


def _hash_selector(hashes: Iterable[str | None]) -> str:
    """``rollouts-pod-template-hash in (a,b)``, or empty when there is no hash."""
    known = sorted({h for h in hashes if h})
    return f"{HASH_LABEL} in ({','.join(known)})" if known else ""


def template_metrics(cluster: Cluster, rollout: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Metric name -> metric spec from the (Cluster)AnalysisTemplates the Rollout's analyses reference.

    Used when the AnalysisRun itself is gone (Argo garbage-collects old runs): the abort message still
    names the metric, and its template says which provider measured it. A template that cannot be read
    (deleted, forbidden) is skipped: the caller then knows less, it does not fail.
    """
    strategy = (rollout.get("spec") or {}).get("strategy") or {}
    canary, bg = strategy.get("canary") or {}, strategy.get("blueGreen") or {}
    analyses = [s.get("analysis") or {} for s in canary.get("steps") or [] if isinstance(s, dict)]
    analyses += [canary.get("analysis") or {}, bg.get("prePromotionAnalysis") or {},
                 bg.get("postPromotionAnalysis") or {}]
    namespace = str((rollout.get("metadata") or {}).get("namespace") or "")
    metrics: dict[str, dict[str, Any]] = {}
    for ref in (t for a in analyses for t in a.get("templates") or [] if t.get("templateName")):
        name = str(ref["templateName"])
        try:
            if ref.get("clusterScope"):
                data = cluster.get("clusteranalysistemplates", "", name)
            else:
                data = cluster.get("analysistemplates", namespace, name)
        except RollbookError:
            continue
        for metric in (data.get("spec") or {}).get("metrics") or []:
            metrics.setdefault(str(metric.get("name")), dict(metric))
    return metrics


def read_rollout(
    cluster: Cluster, namespace: str, name: str, *, analysis_selector: str | None = None, events: bool = True
) -> RolloutView:
    """Read one Rollout and only its own objects (server-side selectors), then build the view."""
    rollout = cluster.get("rollouts", namespace, name)
    replicasets = fetch_replicasets(cluster, rollout)
    hashes = [pod_template_hash(rs) for rs in replicasets]
    pods: list[RawObject] = []
    pod_selector = _hash_selector(hashes)
    if pod_selector:  # the rollout's selector AND its ReplicaSets' hashes: only its own pods come back
        pods = cluster.list("pods", namespace, label_selector=f"{selector_string(rollout)},{pod_selector}")
    run_selector = _hash_selector([*hashes, _d(rollout, "status").get("currentPodHash")])
    runs: list[RawObject] = []
    if run_selector:
        extra = f",{analysis_selector}" if analysis_selector else ""
        runs = cluster.list("analysisruns", namespace, label_selector=run_selector + extra)
    found = fetch_events(cluster, rollout) if events else []
    return build_view(rollout, replicasets, pods, runs, found)


def fetch_events(cluster: Cluster, rollout: Mapping[str, Any]) -> list[RawObject]:
    """Events whose involvedObject is this Rollout (field selector; same-name older objects dropped)."""
    meta = _d(rollout, "metadata")
    selector = f"involvedObject.kind=Rollout,involvedObject.name={meta.get('name')}"
    found = cluster.list("events", str(meta.get("namespace")), field_selector=selector)
    uid = meta.get("uid")
    return [e for e in found if _d(e, "involvedObject").get("uid") in (None, "", uid)]


def list_rollouts(cluster: Cluster, namespace: str) -> tuple[RolloutSummary, ...]:
    """All Rollouts of a namespace with their derived phase and message, by name."""
    items = cluster.list("rollouts", namespace)
    summaries = [
        RolloutSummary(
            name=str(_d(ro, "metadata").get("name", "")),
            namespace=namespace,
            phase=derive_phase(ro)[0],
            message=derive_phase(ro)[1],
            revision=revision_of(ro) or None,
            raw=ro,
        )
        for ro in items
    ]
    return tuple(sorted(summaries, key=lambda s: s.name))


def pod_logs(cluster: Cluster, namespace: str, pod: str, tail: int = 200, *, container: str | None = None) -> str:
    """The last ``tail`` lines of a pod's log (canary pod logs are evidence too)."""
    return cluster.logs(namespace, pod, container=container, tail=tail)


class WaitTimeout(PreconditionError):
    """A bounded wait ended before the condition held."""


T = TypeVar("T")


def wait_for(
    fetch: Callable[[], T],
    condition: Callable[[T], bool],
    *,
    timeout: float,
    interval: float = 2.0,
    what: str = "the condition",
    progress: Callable[[T, float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Poll ``fetch`` until ``condition`` holds or ``timeout`` seconds pass; transient API errors are retried."""
    deadline = clock() + timeout
    last: T | None = None
    last_error: ClusterUnavailable | None = None
    while True:
        try:
            last = fetch()
            last_error = None
            if condition(last):
                return last
            if progress is not None:
                progress(last, max(0.0, deadline - clock()))
        except ClusterUnavailable as e:  # the API may blip during a rollback; the deadline still bounds us
            last_error = e
        if clock() + interval > deadline:
            break
        sleep(interval)
    detail = f" The last attempt failed: {last_error}" if last_error else ""
    raise WaitTimeout(
        f"Waited {timeout:g}s for {what}; it did not happen.{detail}",
        hint="Look at the current state (read the rollout again) and decide; raise the timeout if it is slow.",
    )


def wait_for_rollout(
    cluster: Cluster,
    namespace: str,
    name: str,
    condition: Callable[[RolloutView], bool],
    *,
    timeout: float,
    interval: float = 2.0,
    what: str = "the rollout",
    progress: Callable[[RolloutView, float], None] | None = None,
) -> RolloutView:
    """Poll one Rollout's view (without events) until ``condition`` holds; bounded by ``timeout``."""
    return wait_for(
        lambda: read_rollout(cluster, namespace, name, events=False),
        condition, timeout=timeout, interval=interval, what=what, progress=progress,
    )
