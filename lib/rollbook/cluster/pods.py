"""Pods as `kubectl argo rollouts get` shows them: containers, their states, the status column, restarts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rollbook.cluster.fields import _d, _int, owner_uids, pod_template_hash
from rollbook.cluster.models import (
    ContainerInfo,
    ContainerState,
    PodInfo,
)


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
