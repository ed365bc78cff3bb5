"""SLO evidence: which Prometheus query a metric ran, its threshold, canary vs stable, and the plots.

Pure functions over AnalysisRun / AnalysisTemplate dicts (as the Kubernetes API returns them) and
`rollbook.prometheus.Series`; no network here — the caller passes a `fetch(query) -> list[Series]`.
query.py resolves the query, threshold.py reads the condition and judges a value, measure.py reads
measured values, findings.py compares canary and stable, plot.py draws them. Every name is importable
from ``rollbook.slo`` as before the split.

The breach rule is Argo's: a point breaches when it fails the success condition (or meets the failure
condition); a metric is breached when more points breach than its `failureLimit` (default 0). The same
rule is applied to the stable series, read at the moments Argo measured the canary, so "canary only"
means the stable pods, queried the same way at the same times, stayed within the limit.
"""

from rollbook.slo.findings import (
    SloFinding,
    build_finding,
    count_breaches,
    findings_for_run,
)
from rollbook.slo.measure import (
    TimedValue,
    measured_points,
    parse_measurement,
    parse_time,
    series_points,
)
from rollbook.slo.plot import (
    figure_png,
    plot_metric,
    unit_of,
)
from rollbook.slo.query import (
    HASH_LABEL,
    RESOLVED_KEY,
    ResolvedQuery,
    Source,
    is_prometheus_metric,
    metric_result,
    metric_spec,
    pod_hashes,
    prometheus_metric_names,
    resolve_query,
    retarget,
    substitute_args,
)
from rollbook.slo.threshold import (
    Op,
    Threshold,
    parse_threshold,
)

__all__ = [
    "HASH_LABEL",
    "RESOLVED_KEY",
    "Op",
    "ResolvedQuery",
    "SloFinding",
    "Source",
    "Threshold",
    "TimedValue",
    "build_finding",
    "count_breaches",
    "figure_png",
    "findings_for_run",
    "is_prometheus_metric",
    "measured_points",
    "metric_result",
    "metric_spec",
    "parse_measurement",
    "parse_threshold",
    "parse_time",
    "plot_metric",
    "pod_hashes",
    "prometheus_metric_names",
    "resolve_query",
    "retarget",
    "series_points",
    "substitute_args",
    "unit_of",
]
