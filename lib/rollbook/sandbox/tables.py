"""Server-side ``Table`` rendering for kubectl's human ``get`` (``Accept: ...;as=Table``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rollbook.sandbox.resources import Resource

JSON = dict[str, Any]
Row = list[Any]


def human_duration(seconds: float) -> str:
    """Kubernetes' ``duration.HumanDuration`` (what the AGE column shows)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    m, h = s // 60, s // 3600
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        return f"{h // 24}d{h % 24}h" if h % 24 else f"{h // 24}d"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    if h < 24 * 365 * 8:
        return f"{h // 24 // 365}y{(h // 24) % 365}d"
    return f"{h // 24 // 365}y"


def age(timestamp: str | None) -> str:
    """The AGE cell of an RFC 3339 timestamp ("<unknown>" when absent)."""
    if not timestamp:
        return "<unknown>"
    then = datetime.strptime(timestamp[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return human_duration((datetime.now(UTC) - then).total_seconds())


def _get(obj: Any, path: str) -> Any:
    """A dotted path into nested dicts (None when missing)."""
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _created(obj: JSON) -> str:
    """The AGE of an object."""
    return age(_get(obj, "metadata.creationTimestamp"))


# --------------------------------------------------------------------------- pods (kubectl's printPod)


def _pod_status(pod: JSON) -> tuple[str, int, int]:
    """STATUS reason, ready containers, restarts — the main-container part of kubectl's printPod."""
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or ""
    ready = restarts = 0
    running = False
    for c in reversed(status.get("containerStatuses") or []):
        restarts += int(c.get("restartCount") or 0)
        state = c.get("state") or {}
        waiting, terminated = state.get("waiting") or {}, state.get("terminated")
        if waiting.get("reason"):
            reason = waiting["reason"]
        elif terminated is not None:
            reason = terminated.get("reason") or _exit_reason(terminated)
        elif c.get("ready") and "running" in state:
            running, ready = True, ready + 1
    if reason == "Completed" and running:
        reason = "Running"
    return reason, ready, restarts


def _restarts(pod: JSON, restarts: int) -> str:
    """RESTARTS as printPod shows it: ``3 (10m ago)`` after the last termination, else the bare count."""
    finished = [str(_get(c, "lastState.terminated.finishedAt") or "")
                for key in ("initContainerStatuses", "containerStatuses")
                for c in _get(pod, f"status.{key}") or []]
    last = max((f for f in finished if f), default="")
    return f"{restarts} ({age(last)} ago)" if restarts and last else str(restarts)


def _exit_reason(terminated: JSON) -> str:
    """``Signal:N`` or ``ExitCode:N`` for a terminated container without a reason."""
    if terminated.get("signal"):
        return f"Signal:{terminated['signal']}"
    return f"ExitCode:{terminated.get('exitCode', 0)}"


def _init_reason(pod: JSON) -> str | None:
    """The ``Init:...`` STATUS while init containers have not all succeeded, else None."""
    total = len(_get(pod, "spec.initContainers") or [])
    for i, c in enumerate(_get(pod, "status.initContainerStatuses") or []):
        state = c.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting") or {}
        if terminated is not None and terminated.get("exitCode", 0) == 0:
            continue
        if terminated is not None:
            return "Init:" + (terminated.get("reason") or _exit_reason(terminated))
        if waiting.get("reason") and waiting["reason"] != "PodInitializing":
            return "Init:" + str(waiting["reason"])
        return f"Init:{i}/{total}"
    return None


def _pod_row(pod: JSON) -> Row:
    """NAME READY STATUS RESTARTS AGE IP NODE NOMINATED NODE READINESS GATES."""
    reason, ready, restarts = _pod_status(pod)
    reason = _init_reason(pod) or reason
    if _get(pod, "metadata.deletionTimestamp"):
        reason = "Terminating"
    total = len(_get(pod, "spec.containers") or [])
    gates = _get(pod, "spec.readinessGates")
    return [
        _get(pod, "metadata.name"), f"{ready}/{total}", reason, _restarts(pod, restarts), _created(pod),
        _get(pod, "status.podIP") or "<none>", _get(pod, "spec.nodeName") or "<none>",
        _get(pod, "status.nominatedNodeName") or "<none>", "<none>" if not gates else f"0/{len(gates)}",
    ]


# --------------------------------------------------------------------------- other kinds


def _rs_row(rs: JSON) -> Row:
    """NAME DESIRED CURRENT READY AGE CONTAINERS IMAGES SELECTOR."""
    containers = _get(rs, "spec.template.spec.containers") or []
    selector = _get(rs, "spec.selector.matchLabels") or {}
    return [
        _get(rs, "metadata.name"), _get(rs, "spec.replicas") or 0, _get(rs, "status.replicas") or 0,
        _get(rs, "status.readyReplicas") or 0, _created(rs), ",".join(c.get("name", "") for c in containers),
        ",".join(c.get("image", "") for c in containers), ",".join(f"{k}={v}" for k, v in selector.items()),
    ]


def _deploy_row(d: JSON) -> Row:
    """NAME READY UP-TO-DATE AVAILABLE AGE CONTAINERS IMAGES SELECTOR."""
    ready = f"{_get(d, 'status.readyReplicas') or 0}/{_get(d, 'spec.replicas') or 0}"
    containers = _get(d, "spec.template.spec.containers") or []
    return [_get(d, "metadata.name"), ready, _get(d, "status.updatedReplicas") or 0,
            _get(d, "status.availableReplicas") or 0, _created(d), ",".join(c.get("name", "") for c in containers),
            ",".join(c.get("image", "") for c in containers), _selector(_get(d, "spec.selector") or {})]


def _selector(selector: JSON) -> str:
    """A LabelSelector as kubectl prints it: ``a=b,c in (d,e)`` (``<none>`` when empty)."""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for e in selector.get("matchExpressions") or []:
        op, values = e.get("operator"), ",".join(e.get("values") or [])
        parts.append({"In": f"{e.get('key')} in ({values})", "NotIn": f"{e.get('key')} notin ({values})",
                      "Exists": str(e.get("key")), "DoesNotExist": f"!{e.get('key')}"}.get(str(op), ""))
    return ",".join(p for p in parts if p) or "<none>"


def _event_row(e: JSON) -> Row:
    """LAST SEEN TYPE REASON OBJECT SUBOBJECT SOURCE MESSAGE FIRST SEEN COUNT NAME."""
    last = e.get("lastTimestamp") or e.get("eventTime") or _get(e, "metadata.creationTimestamp")
    first = e.get("firstTimestamp") or e.get("eventTime") or _get(e, "metadata.creationTimestamp")
    involved = e.get("involvedObject") or {}
    obj = f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}"
    source = e.get("source") or {}
    origin = ", ".join(str(v) for v in (source.get("component") or e.get("reportingComponent"), source.get("host"))
                       if v) or "<none>"
    return [age(last), e.get("type", ""), e.get("reason", ""), obj, involved.get("fieldPath", ""), origin,
            e.get("message", ""), age(first), e.get("count") or 1, _get(e, "metadata.name")]


def _rollout_row(ro: JSON) -> Row:
    """Argo's printer columns: DESIRED CURRENT UP-TO-DATE AVAILABLE AGE (missing counters are None)."""
    return [_get(ro, "metadata.name"), _get(ro, "spec.replicas"), _get(ro, "status.replicas"),
            _get(ro, "status.updatedReplicas"), _get(ro, "status.availableReplicas"), _created(ro)]


def _phase_row(obj: JSON) -> Row:
    """NAME STATUS AGE (analysisruns, experiments, namespaces)."""
    return [_get(obj, "metadata.name"), _get(obj, "status.phase"), _created(obj)]


def _configmap_row(cm: JSON) -> Row:
    """NAME DATA AGE."""
    return [_get(cm, "metadata.name"), len(cm.get("data") or {}) + len(cm.get("binaryData") or {}), _created(cm)]


def _secret_row(secret: JSON) -> Row:
    """NAME TYPE DATA AGE."""
    return [_get(secret, "metadata.name"), secret.get("type") or "Opaque", len(secret.get("data") or {}),
            _created(secret)]


def _service_row(svc: JSON) -> Row:
    """NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE SELECTOR."""
    kind = _get(svc, "spec.type") or "ClusterIP"
    ports = [f"{p.get('port')}:{p['nodePort']}/{p.get('protocol', 'TCP')}" if p.get("nodePort")
             else f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in _get(svc, "spec.ports") or []]
    ingress = [i.get("ip") or i.get("hostname") for i in _get(svc, "status.loadBalancer.ingress") or []]
    external = ",".join(ingress + list(_get(svc, "spec.externalIPs") or []))
    if kind == "ExternalName":
        external = _get(svc, "spec.externalName") or "<none>"
    elif not external:
        external = "<pending>" if kind == "LoadBalancer" else "<none>"
    selector = _get(svc, "spec.selector") or {}
    return [_get(svc, "metadata.name"), kind, _get(svc, "spec.clusterIP") or "<none>", external,
            ",".join(ports) or "<none>", _created(svc),
            ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>"]


def _endpoints_row(ep: JSON) -> Row:
    """NAME ENDPOINTS AGE (the first three addresses, then "+ N more...")."""
    pairs = [f"{a.get('ip')}:{p.get('port')}" for sub in ep.get("subsets") or []
             for a in sub.get("addresses") or [] for p in (sub.get("ports") or [{}])]
    shown = ",".join(pairs[:3]) + (f" + {len(pairs) - 3} more..." if len(pairs) > 3 else "")
    return [_get(ep, "metadata.name"), shown or "<none>", _created(ep)]


def _serviceaccount_row(sa: JSON) -> Row:
    """NAME SECRETS AGE."""
    return [_get(sa, "metadata.name"), len(sa.get("secrets") or []), _created(sa)]


def _node_row(node: JSON) -> Row:
    """NAME STATUS ROLES AGE VERSION INTERNAL-IP EXTERNAL-IP OS-IMAGE KERNEL-VERSION CONTAINER-RUNTIME."""
    ready = next((c.get("status") for c in _get(node, "status.conditions") or [] if c.get("type") == "Ready"), None)
    status = {"True": "Ready", "False": "NotReady"}.get(str(ready), "Unknown")
    if _get(node, "spec.unschedulable"):
        status += ",SchedulingDisabled"
    prefix = "node-role.kubernetes.io/"
    roles = sorted(k.removeprefix(prefix) for k in _get(node, "metadata.labels") or {} if k.startswith(prefix))
    addresses = {a.get("type"): a.get("address") for a in _get(node, "status.addresses") or []}
    info = _get(node, "status.nodeInfo") or {}
    return [_get(node, "metadata.name"), status, ",".join(roles) or "<none>", _created(node),
            info.get("kubeletVersion", ""), addresses.get("InternalIP") or "<none>",
            addresses.get("ExternalIP") or "<none>", info.get("osImage") or "<unknown>",
            info.get("kernelVersion") or "<unknown>", info.get("containerRuntimeVersion") or "<unknown>"]


def _generic_row(obj: JSON) -> Row:
    """NAME AGE."""
    return [_get(obj, "metadata.name"), _created(obj)]


def _col(name: str, kind: str = "string", priority: int = 0, fmt: str = "") -> JSON:
    """One column definition."""
    return {"name": name, "type": kind, "format": fmt, "description": name, "priority": priority}


_NAME = _col("Name", fmt="name")
_AGE = _col("Age")
_LAYOUTS: dict[str, tuple[list[JSON], Callable[[JSON], Row]]] = {
    "pods": ([_NAME, _col("Ready"), _col("Status"), _col("Restarts", "string"), _AGE, _col("IP", priority=1),
              _col("Node", priority=1), _col("Nominated Node", priority=1), _col("Readiness Gates", priority=1)],
             _pod_row),
    "replicasets": ([_NAME, _col("Desired", "integer"), _col("Current", "integer"), _col("Ready", "integer"), _AGE,
                     _col("Containers", priority=1), _col("Images", priority=1), _col("Selector", priority=1)],
                    _rs_row),
    "deployments": ([_NAME, _col("Ready"), _col("Up-to-date", "integer"), _col("Available", "integer"), _AGE,
                     _col("Containers", priority=1), _col("Images", priority=1), _col("Selector", priority=1)],
                    _deploy_row),
    "events": ([_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Subobject", priority=1),
                _col("Source", priority=1), _col("Message"), _col("First Seen", priority=1),
                _col("Count", "integer", priority=1), _col("Name", priority=1)], _event_row),
    "rollouts": ([_NAME, _col("Desired", "integer"), _col("Current", "integer"), _col("Up-to-date", "integer"),
                  _col("Available", "integer"), _AGE], _rollout_row),
    "analysisruns": ([_NAME, _col("Status"), _AGE], _phase_row),
    "experiments": ([_NAME, _col("Status"), _AGE], _phase_row),
    "namespaces": ([_NAME, _col("Status"), _AGE], _phase_row),
    "configmaps": ([_NAME, _col("Data", "integer"), _AGE], _configmap_row),
    "nodes": ([_NAME, _col("Status"), _col("Roles"), _AGE, _col("Version"), _col("Internal-IP", priority=1),
               _col("External-IP", priority=1), _col("OS-Image", priority=1), _col("Kernel-Version", priority=1),
               _col("Container-Runtime", priority=1)], _node_row),
    "secrets": ([_NAME, _col("Type"), _col("Data", "integer"), _AGE], _secret_row),
    "services": ([_NAME, _col("Type"), _col("Cluster-IP"), _col("External-IP"), _col("Port(s)"), _AGE,
                  _col("Selector", priority=1)], _service_row),
    "endpoints": ([_NAME, _col("Endpoints"), _AGE], _endpoints_row),
    "serviceaccounts": ([_NAME, _col("Secrets", "integer"), _AGE], _serviceaccount_row),
}


def _row_object(obj: JSON, include: str) -> JSON | None:
    """The row's object per ``includeObject``: Metadata (default), Object or None."""
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata", {})}


def table(res: Resource, objects: list[JSON], *, include_object: str = "Metadata",
          list_meta: JSON | None = None) -> JSON:
    """A ``meta.k8s.io/v1`` Table of ``objects`` with the resource's columns."""
    columns, render = _LAYOUTS.get(res.plural, ([_NAME, _AGE], _generic_row))
    rows = []
    for obj in objects:
        row: JSON = {"cells": render(obj)}
        included = _row_object(obj, include_object)
        if included is not None:
            row["object"] = included
        rows.append(row)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta or {},
            "columnDefinitions": columns, "rows": rows}
