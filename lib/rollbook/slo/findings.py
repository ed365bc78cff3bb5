"""SLO findings: canary vs stable per metric, judged by Argo's breach rule at the moments Argo measured."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from rollbook.prometheus import Series
from rollbook.slo.measure import TimedValue, measured_points, series_points
from rollbook.slo.query import (
    ResolvedQuery,
    metric_result,
    metric_spec,
    pod_hashes,
    prometheus_metric_names,
    resolve_query,
)
from rollbook.slo.threshold import Threshold, parse_threshold


@dataclass(frozen=True)
class SloFinding:
    """One SLO metric of the failed analysis: its query, threshold, canary vs stable, and the verdict."""

    name: str
    query: str | None
    stable_query: str | None
    threshold: Threshold | None
    threshold_reason: str | None
    phase: str | None  # Argo's verdict for the metric (Successful, Failed, Error, ...)
    failure_limit: int
    canary_points: tuple[TimedValue, ...]
    canary_source: Literal["measurements", "prometheus", "none"]
    stable_points: tuple[TimedValue, ...]
    canary_breaches: int | None
    stable_breaches: int | None
    breached: bool | None
    stable_breached: bool | None
    canary_only: bool | None  # True: only the canary breached; False: stable too; None: unknown / no breach
    reason: str

    @property
    def canary_values(self) -> list[float]:
        """The canary values alone."""
        return [v for _, v in self.canary_points]

    @property
    def stable_values(self) -> list[float]:
        """The stable values alone."""
        return [v for _, v in self.stable_points]


def _aligned(points: Sequence[TimedValue], times: Sequence[datetime], lookback: float = 300.0) -> list[TimedValue]:
    """For each time, the last point at or before it and at most `lookback` seconds old (PromQL's rule)."""
    out: list[TimedValue] = []
    for at in times:
        before = [p for p in points if p[0] is not None and p[0] <= at]
        if before and (at - before[-1][0]).total_seconds() <= lookback:  # type: ignore[operator]
            out.append((at, before[-1][1]))
    return out


def count_breaches(threshold: Threshold | None, values: Sequence[float]) -> int | None:
    """How many values breach; None without a threshold or without values."""
    if threshold is None or not values:
        return None
    return sum(1 for v in values if threshold.breaches(v))


def build_finding(
    name: str,
    *,
    query: str | None,
    stable_query: str | None = None,
    threshold: Threshold | None,
    threshold_reason: str | None = None,
    measured: Sequence[TimedValue] = (),
    canary_series: Sequence[Series] = (),
    stable_series: Sequence[Series] = (),
    failure_limit: int = 0,
    phase: str | None = None,
) -> SloFinding:
    """Judge canary (measurements, else re-queried series) and stable (series) with the same rule.

    With timed measurements the stable series is read at the same moments, so both sides are judged on
    the same number of points against the same failureLimit (like for like).
    """
    canary = list(measured) or series_points(canary_series)
    source: Literal["measurements", "prometheus", "none"] = (
        "measurements" if measured else "prometheus" if canary else "none"
    )
    stable = series_points(stable_series)
    if measured:
        stable = _aligned(stable, [t for t, _ in measured if t is not None]) or stable
    c_count = count_breaches(threshold, [v for _, v in canary])
    s_count = count_breaches(threshold, [v for _, v in stable])
    breached = None if c_count is None else c_count > failure_limit
    stable_breached = None if s_count is None else s_count > failure_limit
    canary_only = None if not breached or stable_breached is None else not stable_breached
    finding = SloFinding(
        name, query, stable_query, threshold, threshold_reason, phase, failure_limit,
        tuple(canary), source, tuple(stable), c_count, s_count, breached, stable_breached, canary_only, "",
    )
    return _with_reason(finding)


def _with_reason(f: SloFinding) -> SloFinding:
    """The finding with its one-sentence explanation filled in."""
    if f.threshold is None:
        return replace(f, reason=f"{f.name}: no threshold could be read ({f.threshold_reason}).")
    rule = f"{f.threshold.describe()} (failureLimit {f.failure_limit})"
    if f.breached is None:
        return replace(f, reason=f"{f.name}: no canary values to judge against {rule}.")
    canary = f"canary {'breached' if f.breached else 'within'} {rule} in {f.canary_breaches} of {len(f.canary_points)} points"
    if f.stable_breached is None:
        stable = "no stable values to compare"
    else:
        stable = f"stable {'breached it too' if f.stable_breached else 'within it'} ({f.stable_breaches} of {len(f.stable_points)})"
    verdict = {True: " — the regression is the canary's alone", False: " — not the canary's alone"}.get(f.canary_only, "")  # type: ignore[arg-type]
    return replace(f, reason=f"{f.name}: {canary}; {stable}{verdict}.")


def findings_for_run(
    run: Mapping[str, Any],
    templates: Iterable[Mapping[str, Any]] = (),
    *,
    rollout: Mapping[str, Any] | None = None,
    fetch: Callable[[str], Sequence[Series]] | None = None,
) -> list[SloFinding]:
    """A finding per Prometheus metric of `run`; `fetch(query)` (e.g. a bound `query_range`) adds series.

    Errors from `fetch` (e.g. PrometheusUnavailable) propagate: the caller decides whether SLO evidence
    is optional for its step.
    """
    templates = list(templates)
    canary_hash, stable_hash = pod_hashes(run, rollout)
    findings = []
    for name in prometheus_metric_names(run, templates):
        resolved = resolve_query(run, name, templates, canary_hash=canary_hash, stable_hash=stable_hash)
        findings.append(_finding(run, name, templates, resolved, fetch))
    return findings


def _finding(
    run: Mapping[str, Any],
    name: str,
    templates: list[Mapping[str, Any]],
    resolved: ResolvedQuery | None,
    fetch: Callable[[str], Sequence[Series]] | None,
) -> SloFinding:
    spec = metric_spec(run, name, templates) or {}
    result = metric_result(run, name) or {}
    threshold, why = parse_threshold(spec.get("successCondition"), spec.get("failureCondition"))
    if not spec:
        why = f"the definition of metric {name!r} is in neither the run's spec nor the templates given"
    index = threshold.index if threshold else 0
    query = resolved.query if resolved else None
    stable_query = resolved.stable_query if resolved else None
    return build_finding(
        name, query=query, stable_query=stable_query, threshold=threshold, threshold_reason=why,
        measured=measured_points(result, index),
        canary_series=fetch(query) if fetch and query else (),
        stable_series=fetch(stable_query) if fetch and stable_query else (),
        failure_limit=_int(spec.get("failureLimit"), 0), phase=result.get("phase"),
    )


def _int(raw: Any, default: int) -> int:
    """Argo's intstr fields (failureLimit may be `"1"` or `1`); anything else gives the default."""
    try:
        return int(raw)
    except (TypeError, ValueError):
        return default
