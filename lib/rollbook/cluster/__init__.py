"""The cluster read model and actions: the only part of rollbook that talks to Kubernetes."""

from rollbook.cluster import gate  # raw reads and access reviews for `rollbook preflight`
from rollbook.cluster.actions import ActionResult, NoRevision, SentRequest, StaleRollout, abort, retry, undo
from rollbook.cluster.analysis import (
    analysisrun_command,
    build_analysis_run,
    parse_abort_message,
    parse_number,
)
from rollbook.cluster.connect import Cluster, Stats, connect
from rollbook.cluster.models import (
    AbortInfo,
    AnalysisRunInfo,
    ContainerInfo,
    EventInfo,
    ImageInfo,
    Measurement,
    MetricResult,
    PodInfo,
    ReplicaSetInfo,
    RolloutSummary,
    RolloutView,
)
from rollbook.cluster.rollout import (
    WaitTimeout,
    build_view,
    derive_phase,
    list_rollouts,
    pod_logs,
    read_rollout,
    template_metrics,
    wait_for,
    wait_for_rollout,
)

__all__ = [
    "gate",
    "AbortInfo", "ActionResult", "AnalysisRunInfo", "Cluster", "ContainerInfo", "EventInfo", "ImageInfo",
    "Measurement", "MetricResult", "NoRevision", "PodInfo", "ReplicaSetInfo", "RolloutSummary", "RolloutView",
    "SentRequest", "StaleRollout", "Stats", "WaitTimeout", "abort", "analysisrun_command", "build_analysis_run", "build_view",
    "connect", "derive_phase", "list_rollouts", "parse_abort_message", "parse_number", "pod_logs",
    "read_rollout", "retry", "template_metrics", "undo", "wait_for", "wait_for_rollout",
]
