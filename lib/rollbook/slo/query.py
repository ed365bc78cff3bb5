"""Which Prometheus query an AnalysisRun's metric ran: its spec and result, args substituted, retargeted
from the canary's pod hash to the stable's."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Source = Literal["resolved", "template"]

RESOLVED_KEY = "ResolvedPrometheusQuery"
HASH_LABEL = "rollouts-pod-template-hash"

_ARG = re.compile(r"\{\{\s*args\.([A-Za-z0-9_.-]+)\s*\}\}")


@dataclass(frozen=True)
class ResolvedQuery:
    """The PromQL a metric ran, and the same query re-targeted at the stable pods."""

    metric: str
    query: str
    stable_query: str | None  # None when the hashes are unknown or the query is not filtered by hash
    source: Source  # "resolved": Argo's ResolvedPrometheusQuery; "template": re-built from the template
    unresolved_args: tuple[str, ...] = ()
    note: str | None = None


def metric_spec(run: Mapping[str, Any], name: str, templates: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any] | None:
    """The metric definition: the run's own `spec.metrics` (Argo copies them there), else a template's."""
    sources = [run, *templates]
    for obj in sources:
        for metric in (obj.get("spec") or {}).get("metrics") or ():
            if metric.get("name") == name:
                return dict(metric)
    return None


def metric_result(run: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """`status.metricResults[]` entry of that name, if the run measured it."""
    for result in (run.get("status") or {}).get("metricResults") or ():
        if result.get("name") == name:
            return dict(result)
    return None


def is_prometheus_metric(run: Mapping[str, Any], name: str, templates: Iterable[Mapping[str, Any]] = ()) -> bool:
    """True when the metric used the Prometheus provider (by its result metadata or its definition)."""
    result = metric_result(run, name) or {}
    if RESOLVED_KEY in (result.get("metadata") or {}):
        return True
    spec = metric_spec(run, name, templates) or {}
    return "prometheus" in (spec.get("provider") or {})


def prometheus_metric_names(run: Mapping[str, Any], templates: Iterable[Mapping[str, Any]] = ()) -> list[str]:
    """Names of the run's Prometheus metrics, results first, then definitions not yet measured."""
    templates = list(templates)
    names = [r.get("name", "") for r in (run.get("status") or {}).get("metricResults") or ()]
    names += [m.get("name", "") for m in (run.get("spec") or {}).get("metrics") or ()]
    seen: list[str] = []
    for name in names:
        if name and name not in seen and is_prometheus_metric(run, name, templates):
            seen.append(name)
    return seen


def substitute_args(query: str, args: Iterable[Mapping[str, Any]]) -> tuple[str, tuple[str, ...]]:
    """Replace `{{args.NAME}}` with the run's arg values; args without a value stay marked `<NAME:valueFrom>`."""
    values: dict[str, str | None] = {}
    for arg in args:
        values[str(arg.get("name"))] = None if arg.get("value") is None else str(arg["value"])
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        value = values.get(name)
        if value is not None:
            return value
        missing.append(name)
        return f"<{name}:valueFrom>" if name in values else f"<{name}:missing>"

    return _ARG.sub(replace, query), tuple(dict.fromkeys(missing))


def retarget(query: str, canary_hash: str | None, stable_hash: str | None) -> str | None:
    """The query with the canary pod-template hash replaced by the stable one; None when not possible."""
    if not canary_hash or not stable_hash or canary_hash == stable_hash or canary_hash not in query:
        return None
    return query.replace(canary_hash, stable_hash)


def pod_hashes(run: Mapping[str, Any], rollout: Mapping[str, Any] | None = None) -> tuple[str | None, str | None]:
    """(canary, stable) pod-template hashes: the run's hash label (else currentPodHash) and stableRS."""
    labels = (run.get("metadata") or {}).get("labels") or {}
    status = (rollout or {}).get("status") or {}
    canary = labels.get(HASH_LABEL) or status.get("currentPodHash")
    return canary, status.get("stableRS")


def resolve_query(
    run: Mapping[str, Any],
    name: str,
    templates: Iterable[Mapping[str, Any]] = (),
    *,
    canary_hash: str | None = None,
    stable_hash: str | None = None,
) -> ResolvedQuery | None:
    """The query metric `name` ran (Argo's resolved copy first), plus its stable twin; None if not Prometheus."""
    result = metric_result(run, name) or {}
    resolved = (result.get("metadata") or {}).get(RESOLVED_KEY)
    missing: tuple[str, ...] = ()
    source: Source
    if resolved:
        query, source = str(resolved), "resolved"
    else:
        spec = metric_spec(run, name, templates) or {}
        template_query = ((spec.get("provider") or {}).get("prometheus") or {}).get("query")
        if not template_query:
            return None
        query, missing = substitute_args(str(template_query), (run.get("spec") or {}).get("args") or ())
        source = "template"
    stable = retarget(query, canary_hash, stable_hash)
    note = None
    if stable is None:
        note = (f"the query does not contain the canary hash {canary_hash!r}" if canary_hash and stable_hash
                else "the canary or stable pod-template hash is unknown")
    return ResolvedQuery(name, query, stable, source, missing, note)
