"""SLO evidence: which Prometheus query a metric ran, its threshold, canary vs stable, and the plots.

Pure functions over AnalysisRun / AnalysisTemplate dicts (as the Kubernetes API returns them) and
`rollbook.prometheus.Series`; no network here — the caller passes a `fetch(query) -> list[Series]`.

The breach rule is Argo's: a point breaches when it fails the success condition (or meets the failure
condition); a metric is breached when more points breach than its `failureLimit` (default 0). The same
rule is applied to the stable series, read at the moments Argo measured the canary, so "canary only"
means the stable pods, queried the same way at the same times, stayed within the limit.
"""

from __future__ import annotations

import io
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from rollbook.prometheus import Series

if TYPE_CHECKING:  # matplotlib costs ~0.5 s to import: only the plotting functions load it
    from matplotlib.figure import Figure

Op = Literal["<", "<=", ">", ">=", "==", "!="]
Source = Literal["resolved", "template"]
TimedValue = tuple[datetime | None, float]

RESOLVED_KEY = "ResolvedPrometheusQuery"
HASH_LABEL = "rollouts-pod-template-hash"

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
}
_MIRROR: dict[str, Op] = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_ARG = re.compile(r"\{\{\s*args\.([A-Za-z0-9_.-]+)\s*\}\}")
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_SUBJECT = r"(?:result(?:\[(?P<idx{n}>\d+)\])?|(?:asFloat|float)\(result(?:\[(?P<fidx{n}>\d+)\])?\))"
_CMP_LEFT = re.compile(rf"^{_SUBJECT.format(n=1)}\s*(?P<op>[<>]=?|[=!]=)\s*(?P<num>{_NUM})$")
_CMP_RIGHT = re.compile(rf"^(?P<num>{_NUM})\s*(?P<op>[<>]=?|[=!]=)\s*{_SUBJECT.format(n=2)}$")
_ALL = re.compile(rf"^all\(result,\s*\{{?\s*#\s*(?P<op>[<>]=?|[=!]=)\s*(?P<num>{_NUM})\s*\}}?\)$")
_EMPTY = re.compile(r"^len\(result\)\s*==\s*0$")
_NAN = re.compile(r"^isNaN\(result(?:\[\d+\])?\)$")


# --------------------------------------------------------------------------- query resolution


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


# --------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class Threshold:
    """`value op threshold` is the good side (from a successCondition) or the bad side (failureCondition)."""

    op: Op
    value: float
    condition: Literal["success", "failure"]
    expression: str
    index: int | None = 0  # which element of `result`; None: every element (`result` or `all(...)`)
    empty_ok: bool = False  # `len(result) == 0 || ...`: no data counts as success
    nan_ok: bool = False  # `isNaN(result[0]) || ...`

    def breaches(self, value: float) -> bool:
        """Whether one value breaches the condition (NaN compares false, as in Argo's expr)."""
        if math.isnan(value) and self.nan_ok:
            return False
        holds = _OPS[self.op](value, self.value)
        return not holds if self.condition == "success" else holds

    @property
    def good_side(self) -> Op:
        """The operator describing healthy values, whichever condition the threshold came from."""
        if self.condition == "success":
            return self.op
        return {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}[self.op]  # type: ignore[return-value]

    def describe(self) -> str:
        """E.g. `<= 0.01`."""
        return f"{self.good_side} {self.value:g}"


def parse_threshold(
    success_condition: str | None, failure_condition: str | None = None
) -> tuple[Threshold | None, str | None]:
    """(threshold, None) for the common condition forms, else (None, why not)."""
    reasons: list[str] = []
    for kind, expr in (("success", success_condition), ("failure", failure_condition)):
        if not expr or not expr.strip():
            continue
        threshold, why = _parse_condition(expr.strip(), kind)  # type: ignore[arg-type]
        if threshold:
            return threshold, None
        reasons.append(f"{kind}Condition {expr.strip()!r}: {why}")
    if not reasons:
        return None, "the metric has neither successCondition nor failureCondition"
    return None, "; ".join(reasons)


def _parse_condition(expr: str, kind: Literal["success", "failure"]) -> tuple[Threshold | None, str]:
    """One condition: `||` of at most one comparison with a number plus `len(result) == 0` / `isNaN(...)`."""
    if "&&" in expr or " and " in expr:
        return None, "conjunctions (&&) are not understood"
    empty_ok = nan_ok = False
    found: tuple[Op, float, int | None] | None = None
    for part in (p.strip() for p in re.split(r"\|\||\bor\b", _unwrap(expr))):
        part = _unwrap(part)
        if _EMPTY.match(part):
            empty_ok = True
        elif _NAN.match(part):
            nan_ok = True
        elif (cmp := _comparison(part)) is not None:
            if found is not None:
                return None, "more than one comparison"
            found = cmp
        else:
            return None, f"cannot read {part!r}"
    if found is None:
        return None, "no comparison of the result with a number"
    op, value, index = found
    return Threshold(op, value, kind, expr, index, empty_ok and kind == "success", nan_ok and kind == "success"), ""


def _comparison(part: str) -> tuple[Op, float, int | None] | None:
    """(op as `result op number`, number, element index) for `result[0] <= 0.5`, `0.5 >= result`, `all(...)`."""
    if m := _CMP_LEFT.match(part):
        idx = m.group("idx1") or m.group("fidx1")
        return m.group("op"), float(m.group("num")), int(idx) if idx else None  # type: ignore[return-value]
    if m := _CMP_RIGHT.match(part):
        idx = m.group("idx2") or m.group("fidx2")
        return _MIRROR[m.group("op")], float(m.group("num")), int(idx) if idx else None
    if m := _ALL.match(part):
        return m.group("op"), float(m.group("num")), None  # type: ignore[return-value]
    return None


def _unwrap(expr: str) -> str:
    """Drop one pair of parentheses around the whole expression."""
    expr = expr.strip()
    if expr.startswith("(") and expr.endswith(")") and expr.count("(") == expr.count(")"):
        inner = expr[1:-1]
        if inner.count("(") == inner.count(")"):
            return inner.strip()
    return expr


# --------------------------------------------------------------------------- measured values


def parse_measurement(value: str | None) -> list[float] | None:
    """Argo's stored Prometheus value as floats: `"[0.034]"`, `"[0.1,0.2]"`, `"[]"`, `"0.034"`, `"NaN"`."""
    if value is None:
        return None
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        items = [item.strip() for item in text[1:-1].split(",") if item.strip()]
    else:
        items = [text]
    try:
        return [float(item) for item in items]
    except ValueError:
        return None  # not a Prometheus value (e.g. a web provider's JSON)


def measured_points(result: Mapping[str, Any], index: int | None = 0) -> list[TimedValue]:
    """(finishedAt, value) of each measurement that has a number (element `index`; None: all elements)."""
    points: list[TimedValue] = []
    for m in result.get("measurements") or ():
        values = parse_measurement(m.get("value"))
        if not values:
            continue
        at = parse_time(m.get("finishedAt") or m.get("startedAt"))
        chosen = values if index is None else values[index:index + 1]
        points.extend((at, v) for v in chosen)
    return points


def parse_time(raw: Any) -> datetime | None:
    """An RFC 3339 timestamp as Kubernetes writes it (`...Z`), or None."""
    if not raw:
        return None
    try:
        return datetime.fromisoformat(str(raw))
    except ValueError:
        return None


# --------------------------------------------------------------------------- findings


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


def series_points(series: Sequence[Series]) -> list[TimedValue]:
    """All points of all series, in time order (several series: e.g. one per pod)."""
    points: list[TimedValue] = [p for s in series for p in s.points]
    return sorted(points, key=lambda p: p[0].timestamp() if p[0] else 0.0)


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


# --------------------------------------------------------------------------- plots


@cache
def _figure_class() -> type[Figure]:
    """A matplotlib Figure that renders itself as PNG in Jupyter without pyplot or an inline backend."""
    from matplotlib.figure import Figure

    class SloFigure(Figure):
        def _repr_png_(self) -> bytes:
            return figure_png(self)

    return SloFigure


def plot_metric(finding: SloFinding, canary_series: Sequence[Series] = (),
                stable_series: Sequence[Series] = ()) -> Figure:
    """Canary vs stable over time, the threshold as a horizontal line, canary breaches shaded red."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = _figure_class()(figsize=(8, 3.2), layout="constrained")
    FigureCanvasAgg(fig)  # Agg explicitly: no display, and no change to the process-wide pyplot backend
    ax = fig.add_subplot()
    canary = series_points(canary_series) or [p for p in finding.canary_points if p[0] is not None]
    stable = series_points(stable_series) or [p for p in finding.stable_points if p[0] is not None]
    _line(ax, stable, "stable", "tab:blue", ".-")
    _line(ax, canary, "canary", "tab:orange", ".-")
    if canary_series and finding.canary_source == "measurements":
        measured = [p for p in finding.canary_points if p[0] is not None]
        _line(ax, measured, "Argo measurements", "tab:red", "o")
    if finding.threshold is not None:
        t = finding.threshold
        ax.axhline(t.value, color="tab:red", linestyle="--", linewidth=1.2, label=f"threshold {t.describe()}",
                   gid="threshold")
        _shade(ax, canary, t)
    verdict = {True: "canary breached", False: "canary within threshold", None: "no verdict"}[finding.breached]
    ax.set_title(f"{finding.name} — {verdict}")
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel(f"{finding.name} ({unit_of(finding.query, finding.name)})")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")
    return fig


_RATIO = re.compile(r"\)\s*/\s*(sum|rate|increase|count)\b")


def unit_of(query: str | None, name: str = "") -> str:
    """The unit a PromQL query's values are in, read from Prometheus' naming rules (`_seconds`, `_bytes`,
    a ratio of rates); "as the query returns it" when the query does not say."""
    q = (query or "").lower()
    if _RATIO.search(q) or re.search(r"(^|[_\W])ratio\b", q) or "ratio" in name.lower().split("-"):
        return "ratio, 0–1"
    if "_seconds" in q:
        return "seconds"
    if "_bytes" in q:
        return "bytes"
    if "rate(" in q or "irate(" in q:
        return "per second"
    return "as the query returns it"


def _line(ax: Any, points: Sequence[TimedValue], label: str, color: str, fmt: str) -> None:
    if points:
        xs: list[Any] = [p[0] for p in points]
        ax.plot(xs, [_finite(p[1]) for p in points], fmt, color=color, label=label, gid=label)


def _shade(ax: Any, points: Sequence[TimedValue], t: Threshold) -> None:
    """Shade between the canary line and the threshold where the canary breaches."""
    if not points:
        return
    xs = [p[0] for p in points]
    ys = [_finite(p[1]) for p in points]
    where = [t.breaches(p[1]) for p in points]
    if any(where):
        ax.fill_between(xs, ys, t.value, where=where, interpolate=True, color="tab:red", alpha=0.25,
                        label="breach", gid="breach")


def _finite(value: float) -> float:
    """+/-Inf cannot be drawn; show it as a gap like NaN."""
    return value if math.isfinite(value) else math.nan


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (for records, HTML reports and tickets)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
