"""Reading one Rollout's own objects over Cluster with server-side selectors; listing rollouts; pod logs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from rollbook.cluster.fields import HASH_LABEL, _d, owner_uids, pod_template_hash, revision_of
from rollbook.cluster.models import (
    RawObject,
    RolloutSummary,
    RolloutView,
)
from rollbook.cluster.phase import derive_phase
from rollbook.cluster.view import build_view
from rollbook.errors import RollbookError

if TYPE_CHECKING:  # the fetch layer only calls Cluster's methods; kubernetes stays in connect.py
    from rollbook.cluster.connect import Cluster


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
