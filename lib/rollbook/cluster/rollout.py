"""The read model of an Argo Rollout, as `kubectl argo rollouts get rollout` shows it (re-exports).

Ported from Argo Rollouts (utils/rollout/rolloututil.go, pkg/kubectl-argo-rollouts/info/*.go). Each part
lives in its own module: fields.py (small readers), phase.py (status derivation, steps, weights),
pods.py, replicasets.py (health, stable/canary/revision tags), view.py (RolloutView from raw objects),
fetch.py (reads over Cluster) and waiting.py (bounded polling). Every name stays importable from here.
"""

from __future__ import annotations

from rollbook.cluster.fetch import (
    fetch_events,
    fetch_replicasets,
    list_rollouts,
    pod_logs,
    read_rollout,
    selector_string,
    template_metrics,
)
from rollbook.cluster.fields import (
    HASH_LABEL,
    REVISION_ANNOTATION,
    desired_replicas,
    owner_uids,
    pod_template_hash,
    revision_of,
    strategy_of,
)
from rollbook.cluster.phase import (
    actual_weight,
    calculate_phase,
    derive_phase,
    generation_observed,
    set_weight,
    step_string,
)
from rollbook.cluster.pods import (
    build_pod,
    pod_status,
)
from rollbook.cluster.replicasets import (
    build_replicaset,
    build_replicasets,
    images_of,
    replicaset_health,
)
from rollbook.cluster.view import (
    build_event,
    build_view,
)
from rollbook.cluster.waiting import (
    WaitTimeout,
    wait_for,
    wait_for_rollout,
)

__all__ = [
    "HASH_LABEL",
    "REVISION_ANNOTATION",
    "WaitTimeout",
    "actual_weight",
    "build_event",
    "build_pod",
    "build_replicaset",
    "build_replicasets",
    "build_view",
    "calculate_phase",
    "derive_phase",
    "desired_replicas",
    "fetch_events",
    "fetch_replicasets",
    "generation_observed",
    "images_of",
    "list_rollouts",
    "owner_uids",
    "pod_logs",
    "pod_status",
    "pod_template_hash",
    "read_rollout",
    "replicaset_health",
    "revision_of",
    "selector_string",
    "set_weight",
    "step_string",
    "strategy_of",
    "template_metrics",
    "wait_for",
    "wait_for_rollout",
]
