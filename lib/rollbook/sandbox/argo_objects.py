"""Argo's objects as JSON, as the simulated controller reads and builds them (pure functions).

Revisions, canary steps, conditions, the healthy status, owner references, and the Ready pods a
ReplicaSet's template gives. No store, no clock: the controller's modules share these.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from rollbook.sandbox.store import SANDBOX_NODE

Obj = dict[str, Any]
REVISION = "rollout.argoproj.io/revision"
HASH_LABEL = "rollouts-pod-template-hash"
DEFAULT_ABORT_DELAY = 30         # Argo's abortScaleDownDelaySeconds default (traffic routing only)


def now_rfc3339() -> str:
    """Now as Kubernetes writes timestamps."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: Obj) -> Obj:
    meta: Obj = obj.setdefault("metadata", {})
    return meta


def _revision(obj: Obj) -> int:
    """The rollout.argoproj.io/revision annotation as an int (0 when absent or unparsable)."""
    try:
        return int((_meta(obj).get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _rv(obj: Obj) -> int:
    return int(_meta(obj).get("resourceVersion") or 0)


def _canary(ro: Obj) -> Obj:
    return dict(((ro.get("spec") or {}).get("strategy") or {}).get("canary") or {})


def _abort_scale_down_delay(ro: Obj) -> float | None:
    """Seconds before an aborted canary is scaled down; None when Argo never scales it down.

    As Argo's shouldDelayScaleDownOnAbort / GetAbortScaleDownDelaySecondsOrDefault: a basic canary (no
    traffic routing) at once; with traffic routing after abortScaleDownDelaySeconds (default 30), and
    an explicit 0 means "leave the canary up indefinitely" (its setCanaryScale count is kept)."""
    canary = _canary(ro)
    if not canary.get("trafficRouting"):
        return 0.0
    delay = int(canary.get("abortScaleDownDelaySeconds", DEFAULT_ABORT_DELAY))
    return None if delay == 0 else float(delay)


def _field_value(obj: Obj, path: str) -> str | None:
    """A fieldRef path walked through the Rollout's JSON as Argo's extractValueFromRollout does.

    Split on runs of `.`, `[`, `]`: `spec.template.metadata.labels.release-id` works; in
    `labels['release-id']` the quotes stay part of the key, so it resolves to nothing (None)."""
    node: Any = obj
    for section in (s for s in re.split(r"[.\[\]]+", path) if s):
        if isinstance(node, list):
            if not section.isdigit() or int(section) >= len(node):
                return None
            node = node[int(section)]
        elif isinstance(node, dict):
            node = node.get(section)
        else:
            return None
    if node is None or isinstance(node, (dict, list)):
        return None
    return str(node).lower() if isinstance(node, bool) else str(node)


def _steps(ro: Obj) -> list[Obj]:
    return list(_canary(ro).get("steps") or [])


def _rs_release_id(rs: Obj) -> str | None:
    """The release-id label of a ReplicaSet's pod template."""
    labels = (((rs.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
    value = labels.get("release-id")
    return str(value) if value else None


def _owner_ref(ro: Obj) -> Obj:
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": _meta(ro)["name"],
            "uid": _meta(ro)["uid"], "controller": True, "blockOwnerDeletion": True}


def _strip_hash(template: Obj) -> Obj:
    """A pod template without the rollouts-pod-template-hash label (what `undo` sends)."""
    t = json.loads(json.dumps(template))
    labels = (t.get("metadata") or {}).get("labels") or {}
    labels.pop(HASH_LABEL, None)
    (t.get("metadata") or {}).pop("creationTimestamp", None)
    return dict(t)


def _set_condition(status: Obj, typ: str, value: str, reason: str, message: str) -> None:
    """Insert or replace one condition; lastTransitionTime changes only with the status value."""
    now = now_rfc3339()
    conds = [dict(c) for c in status.get("conditions") or []]
    old = next((c for c in conds if c.get("type") == typ), None)
    new = {"type": typ, "status": value, "reason": reason, "message": message, "lastUpdateTime": now,
           "lastTransitionTime": old["lastTransitionTime"] if old and old.get("status") == value
           and old.get("lastTransitionTime") else now}
    status["conditions"] = [c for c in conds if c.get("type") != typ] + [new]


def _healthy_status(ro: Obj, h: str | None, completed: str) -> Obj:
    """The status of a fully promoted (or rolled back) canary."""
    replicas = int((ro.get("spec") or {}).get("replicas", 1))
    status = {k: v for k, v in (ro.get("status") or {}).items() if k not in ("abortedAt", "pauseConditions")}
    status.update(phase="Healthy", message="", abort=False, stableRS=h, currentPodHash=h,
                  currentStepIndex=len(_steps(ro)), replicas=replicas, updatedReplicas=replicas,
                  readyReplicas=replicas, availableReplicas=replicas, canary={"currentStepAnalysisRunStatus": None})
    _set_condition(status, "Available", "True", "AvailableReason", "Rollout has minimum availability")
    _set_condition(status, "Completed", "True", "RolloutCompleted", completed)
    _set_condition(status, "Healthy", "True", "RolloutHealthy", "Rollout is healthy")
    _set_condition(status, "Progressing", "True", "NewReplicaSetAvailable",
                   f'Rollout "{_meta(ro)["name"]}" has successfully progressed.')
    return status


_STARTING = ("ContainerCreating", "PodInitializing")


def _only_starting(pod: Obj) -> bool:
    """A pod that is merely starting (not failing): Pending/ContainerCreating, no restarts, no error."""
    status = pod.get("status") or {}
    if _pod_ready(pod):
        return False
    statuses = status.get("containerStatuses") or []
    if any(int(c.get("restartCount") or 0) for c in statuses):
        return False
    waiting = [((c.get("state") or {}).get("waiting") or {}).get("reason") for c in statuses]
    return all(r in _STARTING for r in waiting) if waiting else status.get("phase") == "Pending"


def _pod_ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _ready_pod(rs: Obj) -> Obj:
    """A Running, Ready pod of a ReplicaSet's template (probes and all)."""
    tmpl = (rs.get("spec") or {}).get("template") or {}
    meta = _meta(rs)
    name = meta["name"] + "-" + "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
    now = now_rfc3339()
    containers = (tmpl.get("spec") or {}).get("containers") or []
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": meta["namespace"], "uid": str(uuid.uuid4()),
                         "labels": dict((tmpl.get("metadata") or {}).get("labels") or {}),
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": meta["name"],
                                              "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]},
            "spec": dict(tmpl.get("spec") or {}, nodeName=SANDBOX_NODE, restartPolicy="Always"),
            "status": {"phase": "Running", "startTime": now,  # kubelet.complete_pod adds IPs, qosClass, IDs
                       "conditions": [{"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
                                      for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")],
                       "containerStatuses": [{"name": c.get("name"), "image": c.get("image"), "ready": True,
                                              "started": True, "restartCount": 0,
                                              "state": {"running": {"startedAt": now}}} for c in containers]}}

