"""SLO evidence: query resolution, thresholds, measured values, canary-vs-stable verdicts, plots."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from matplotlib.collections import PolyCollection

from rollbook import slo
from rollbook.prometheus import Series, format_value

CANARY, STABLE = "7c9d8f6b5", "6d4f8b7c9"

ERROR_RATE_TEMPLATE_QUERY = (
    'sum(rate(http_requests_total{namespace="prod",app="api",code=~"5..",'
    'rollouts_pod_template_hash="{{args.canary-hash}}"}[2m]))\n'
    '/\nsum(rate(http_requests_total{namespace="prod",app="api",'
    'rollouts_pod_template_hash="{{ args.canary-hash }}"}[2m]))'
)
LATENCY_TEMPLATE_QUERY = (
    "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket"
    '{namespace="prod",app="api",rollouts_pod_template_hash="{{args.canary-hash}}"}[2m])))'
)

# An AnalysisTemplate as the playbook writes it (argo-rollouts.md, "Templates in this playbook").
TEMPLATE = yaml.safe_load("""
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: ig-slo-checks, namespace: prod}
spec:
  args:
  - name: canary-hash
  metrics:
  - name: ig-latency-p99
    interval: 1m
    count: 5
    failureLimit: 1
    successCondition: result[0] <= 0.5
    provider:
      prometheus:
        address: http://prometheus.monitoring:9090
        query: set below
  - name: ig-error-rate
    interval: 1m
    count: 5
    failureLimit: 1
    successCondition: len(result) == 0 || result[0] <= 0.01
    provider:
      prometheus:
        address: http://prometheus.monitoring:9090
        query: set below
""")
TEMPLATE["spec"]["metrics"][0]["provider"]["prometheus"]["query"] = LATENCY_TEMPLATE_QUERY
TEMPLATE["spec"]["metrics"][1]["provider"]["prometheus"]["query"] = ERROR_RATE_TEMPLATE_QUERY


def _resolved(query: str) -> str:
    return query.replace("{{args.canary-hash}}", CANARY).replace("{{ args.canary-hash }}", CANARY)


def _measurements(values: list[str], start: datetime, limit: float) -> list[dict[str, object]]:
    out = []
    for i, value in enumerate(values):
        at = (start + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        phase = "Failed" if float(value.strip("[]")) > limit else "Successful"
        out.append({"phase": phase, "startedAt": at, "finishedAt": at, "value": value})
    return out


T0 = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
ERROR_VALUES = ["[0.001]", "[0.002]", "[0.031]", "[0.034]", "[0.036]"]
LATENCY_VALUES = ["[0.21]", "[0.24]", "[0.22]", "[0.25]", "[0.23]"]


def _run(*, with_metadata: bool = True, with_spec_metrics: bool = True) -> dict[str, object]:
    """An AnalysisRun shaped as Argo writes it for the playbook's canary step (slo-regression)."""
    run = yaml.safe_load(f"""
apiVersion: argoproj.io/v1alpha1
kind: AnalysisRun
metadata:
  name: api-{CANARY}-7-2
  namespace: prod
  labels: {{rollout-type: Step, rollouts-pod-template-hash: "{CANARY}", step-index: "2", rollout: api}}
  annotations: {{rollout.argoproj.io/revision: "7"}}
spec:
  args:
  - {{name: release-id, value: api-1.42.0}}
  - {{name: canary-hash, value: "{CANARY}"}}
  - name: mc-token
    valueFrom: {{secretKeyRef: {{name: mc-token, key: token}}}}
  metrics:
  - name: mc-evidence-ok
    failureLimit: 0
    successCondition: result.ok == true
    provider:
      web:
        url: http://mc/api/v1/releases/{{{{args.release-id}}}}/evidence-status?environment=production
        jsonPath: "{{$}}"
status:
  phase: Failed
  message: Metric "ig-error-rate" assessed Failed due to failed (3) > failureLimit (1)
  startedAt: "2026-11-26T09:29:50Z"
  metricResults:
  - name: mc-evidence-ok
    phase: Successful
    count: 1
    successful: 1
    measurements:
    - {{phase: Successful, startedAt: "2026-11-26T09:30:00Z", finishedAt: "2026-11-26T09:30:00Z",
       value: '{{"missing":[],"ok":true,"reason":""}}'}}
  - name: ig-latency-p99
    phase: Successful
    count: 5
    successful: 5
  - name: ig-error-rate
    phase: Failed
    count: 5
    successful: 2
    failed: 3
""")
    results = run["status"]["metricResults"]
    results[1]["measurements"] = _measurements(LATENCY_VALUES, T0, 0.5)
    results[2]["measurements"] = _measurements(ERROR_VALUES, T0, 0.01)
    if with_metadata:
        results[1]["metadata"] = {"ResolvedPrometheusQuery": _resolved(LATENCY_TEMPLATE_QUERY)}
        results[2]["metadata"] = {"ResolvedPrometheusQuery": _resolved(ERROR_RATE_TEMPLATE_QUERY)}
    if with_spec_metrics:
        run["spec"]["metrics"] += copy.deepcopy(TEMPLATE["spec"]["metrics"])
    return run


ROLLOUT = {"metadata": {"name": "api", "namespace": "prod"},
           "status": {"stableRS": STABLE, "currentPodHash": CANARY, "abort": True}}


def _series(values: list[float], hash_: str, start: datetime = T0) -> list[Series]:
    points = [(start + timedelta(minutes=i), v) for i, v in enumerate(values)]
    return [Series({"rollouts_pod_template_hash": hash_}, points)]


# --------------------------------------------------------------------------- query resolution


def test_resolved_query_comes_from_metric_result_metadata_and_is_retargeted_to_stable() -> None:
    run = _run()
    rq = slo.resolve_query(run, "ig-error-rate", canary_hash=CANARY, stable_hash=STABLE)
    assert rq is not None and rq.source == "resolved"
    assert rq.query == run["status"]["metricResults"][2]["metadata"]["ResolvedPrometheusQuery"]
    assert rq.stable_query is not None
    assert CANARY not in rq.stable_query and rq.stable_query.count(STABLE) == 2
    assert rq.stable_query == rq.query.replace(CANARY, STABLE)


def test_without_metadata_the_query_is_built_from_the_runs_metric_and_args() -> None:
    run = _run(with_metadata=False)
    rq = slo.resolve_query(run, "ig-latency-p99", canary_hash=CANARY, stable_hash=STABLE)
    assert rq is not None and rq.source == "template"
    assert "{{" not in rq.query and f'rollouts_pod_template_hash="{CANARY}"' in rq.query
    assert rq.unresolved_args == ()
    assert rq.stable_query == rq.query.replace(CANARY, STABLE)


def test_template_is_used_when_the_run_does_not_carry_the_metric_definition() -> None:
    run = _run(with_metadata=False, with_spec_metrics=False)
    assert slo.resolve_query(run, "ig-error-rate") is None  # nothing to resolve from without templates
    rq = slo.resolve_query(run, "ig-error-rate", [TEMPLATE], canary_hash=CANARY, stable_hash=STABLE)
    assert rq is not None and rq.source == "template"
    assert rq.query == _resolved(ERROR_RATE_TEMPLATE_QUERY)  # both `{{args.x}}` and `{{ args.x }}` forms


def test_value_from_args_stay_marked_and_unknown_args_are_reported() -> None:
    args = [{"name": "release-id", "value": "api-1.42.0"},
            {"name": "mc-token", "valueFrom": {"secretKeyRef": {"name": "mc", "key": "token"}}}]
    text, missing = slo.substitute_args("a={{args.release-id}} b={{args.mc-token}} c={{args.nope}}", args)
    assert text == "a=api-1.42.0 b=<mc-token:valueFrom> c=<nope:missing>"
    assert missing == ("mc-token", "nope")


def test_retarget_needs_the_canary_hash_in_the_query() -> None:
    assert slo.retarget('x{hash="abc"}', "abc", "def") == 'x{hash="def"}'
    assert slo.retarget('x{app="api"}', "abc", "def") is None
    assert slo.retarget('x{hash="abc"}', None, "def") is None
    run = _run()
    run["status"]["metricResults"][2]["metadata"]["ResolvedPrometheusQuery"] = 'sum(rate(errors{app="api"}[2m]))'
    rq = slo.resolve_query(run, "ig-error-rate", canary_hash=CANARY, stable_hash=STABLE)
    assert rq is not None and rq.stable_query is None and rq.note and CANARY in rq.note


def test_pod_hashes_and_prometheus_metric_names() -> None:
    run = _run()
    assert slo.pod_hashes(run, ROLLOUT) == (CANARY, STABLE)
    assert slo.prometheus_metric_names(run) == ["ig-latency-p99", "ig-error-rate"]
    bare = _run(with_metadata=False, with_spec_metrics=False)
    assert slo.prometheus_metric_names(bare) == []
    assert slo.prometheus_metric_names(bare, [TEMPLATE]) == ["ig-latency-p99", "ig-error-rate"]


# --------------------------------------------------------------------------- thresholds


@pytest.mark.parametrize(
    ("success", "failure", "op", "value", "index", "empty_ok"),
    [
        ("result[0] <= 0.5", None, "<=", 0.5, 0, False),
        ("result <= 0.01", None, "<=", 0.01, None, False),
        ("result[0] < 0.5", None, "<", 0.5, 0, False),
        ("len(result) == 0 || result[0] <= 0.01", None, "<=", 0.01, 0, True),
        ("0.5 >= result[0]", None, "<=", 0.5, 0, False),
        ("all(result, {# <= 0.5})", None, "<=", 0.5, None, False),
        ("asFloat(result) < 1e-2", None, "<", 0.01, None, False),
        (None, "result[0] > 0.5", ">", 0.5, 0, False),
        ("(result[1] >= 0.95)", None, ">=", 0.95, 1, False),
    ],
)
def test_common_condition_forms_are_read(
    success: str | None, failure: str | None, op: str, value: float, index: int | None, empty_ok: bool
) -> None:
    threshold, reason = slo.parse_threshold(success, failure)
    assert reason is None and threshold is not None
    assert (threshold.op, threshold.value, threshold.index, threshold.empty_ok) == (op, value, index, empty_ok)
    assert threshold.condition == ("success" if success else "failure")


@pytest.mark.parametrize(
    ("success", "failure", "why"),
    [
        ("result.ok == true", None, "cannot read"),
        ("result[0] <= 0.5 && result[1] < 2", None, "&&"),
        ("result[0] <= 0.5 || result[1] <= 0.7", None, "more than one comparison"),
        (None, None, "neither"),
        ("len(result) == 0", None, "no comparison"),
    ],
)
def test_unreadable_conditions_give_none_and_a_reason(success: str | None, failure: str | None, why: str) -> None:
    threshold, reason = slo.parse_threshold(success, failure)
    assert threshold is None and reason is not None and why in reason


def test_failure_condition_is_used_when_success_condition_is_unreadable() -> None:
    threshold, reason = slo.parse_threshold("result.ok == true", "result[0] > 0.5")
    assert reason is None and threshold is not None and threshold.condition == "failure"


def test_breach_semantics_for_success_and_failure_conditions_including_nan() -> None:
    success, _ = slo.parse_threshold("result[0] <= 0.5")
    failure, _ = slo.parse_threshold(None, "result[0] > 0.5")
    nan_ok, _ = slo.parse_threshold("isNaN(result[0]) || result[0] <= 0.5")
    assert success and failure and nan_ok
    for t in (success, failure):
        assert t.breaches(0.6) and not t.breaches(0.5) and not t.breaches(0.1)
        assert t.describe() == "<= 0.5"
    assert success.breaches(math.nan)  # Argo: `NaN <= 0.5` is false, so the success condition fails
    assert not failure.breaches(math.nan)  # `NaN > 0.5` is false too: not a failure
    assert not nan_ok.breaches(math.nan) and nan_ok.breaches(0.7)
    assert success.breaches(math.inf)


# --------------------------------------------------------------------------- measured values


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("[0.034]", [0.034]), ("0.034", [0.034]), ("[]", []), ("[0.1,0.2]", [0.1, 0.2]),
     ("[+Inf]", [math.inf]), ('{"ok":true}', None), ("", None), (None, None)],
)
def test_measurement_values(raw: str | None, expected: list[float] | None) -> None:
    assert slo.parse_measurement(raw) == expected


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.034, "0.034"), (2.0, "2"), (1e-7, "0.0000001"), (1e20, "100000000000000000000"),
     (math.nan, "NaN"), (math.inf, "+Inf"), (-math.inf, "-Inf")],
)
def test_values_are_written_as_argo_stores_them(value: float, text: str) -> None:
    assert format_value(value) == text
    assert slo.parse_measurement(f"[{text}]") == [value] or math.isnan(value)


def test_measurement_nan_is_a_float_nan() -> None:
    values = slo.parse_measurement("[NaN]")
    assert values is not None and len(values) == 1 and math.isnan(values[0])


def test_measured_points_carry_times_and_skip_empty_or_non_numeric_values() -> None:
    result = {"measurements": [
        {"finishedAt": "2026-11-26T09:30:00Z", "value": "[0.2,0.9]"},
        {"finishedAt": "2026-11-26T09:31:00Z", "value": "[]"},
        {"phase": "Error", "message": "received non 2xx response code: 503"},
        {"finishedAt": "2026-11-26T09:32:00Z", "value": "0.4"},
    ]}
    assert slo.measured_points(result, 0) == [(T0, 0.2), (T0 + timedelta(minutes=2), 0.4)]
    assert [v for _, v in slo.measured_points(result, None)] == [0.2, 0.9, 0.4]
    assert [v for _, v in slo.measured_points(result, 1)] == [0.9]


# --------------------------------------------------------------------------- findings


def _fetcher(table: dict[str, list[Series]]) -> Callable[[str], list[Series]]:
    seen: list[str] = []

    def fetch(query: str) -> list[Series]:
        seen.append(query)
        return table.get(query, [])

    fetch.seen = seen  # type: ignore[attr-defined]
    return fetch


def test_error_rate_regression_is_the_canarys_alone() -> None:
    run = _run()
    err_q = _resolved(ERROR_RATE_TEMPLATE_QUERY)
    lat_q = _resolved(LATENCY_TEMPLATE_QUERY)
    fetch = _fetcher({
        err_q: _series([0.001, 0.002, 0.031, 0.034, 0.036], CANARY),
        err_q.replace(CANARY, STABLE): _series([0.001, 0.002, 0.003, 0.002, 0.001], STABLE),
        lat_q.replace(CANARY, STABLE): _series([0.2, 0.2, 0.21, 0.2, 0.2], STABLE),
    })
    findings = {f.name: f for f in slo.findings_for_run(run, rollout=ROLLOUT, fetch=fetch)}
    assert set(findings) == {"ig-latency-p99", "ig-error-rate"}  # the web metric is not an SLO finding
    err = findings["ig-error-rate"]
    assert err.canary_source == "measurements" and err.canary_values == [0.001, 0.002, 0.031, 0.034, 0.036]
    assert err.phase == "Failed" and err.failure_limit == 1
    assert err.threshold is not None and err.threshold.describe() == "<= 0.01"
    assert (err.canary_breaches, err.breached) == (3, True)
    assert (err.stable_breaches, err.stable_breached) == (0, False)
    assert err.canary_only is True and "canary's alone" in err.reason
    lat = findings["ig-latency-p99"]
    assert lat.breached is False and lat.stable_breached is False and lat.canary_only is None
    assert err_q.replace(CANARY, STABLE) in fetch.seen  # type: ignore[attr-defined]


def test_both_breached_is_not_the_canarys_alone() -> None:
    err_q = _resolved(ERROR_RATE_TEMPLATE_QUERY)
    fetch = _fetcher({err_q.replace(CANARY, STABLE): _series([0.02, 0.03, 0.001, 0.05], STABLE)})
    err = {f.name: f for f in slo.findings_for_run(_run(), rollout=ROLLOUT, fetch=fetch)}["ig-error-rate"]
    # read at the canary's 5 measurement times: 0.02, 0.03, 0.001, 0.05, 0.05 (last value carried)
    assert err.stable_values == [0.02, 0.03, 0.001, 0.05, 0.05]
    assert err.breached is True and err.stable_breaches == 4 and err.stable_breached is True
    assert err.canary_only is False and "not the canary's alone" in err.reason


def test_stable_is_judged_at_the_canary_measurement_times() -> None:
    err_q = _resolved(ERROR_RATE_TEMPLATE_QUERY)
    # an hour of stable data, with spikes only at times when Argo did not measure the canary
    values = [0.05 if i % 10 == 5 else 0.002 for i in range(60)]
    stable = _series(values, STABLE, start=T0 - timedelta(minutes=30))
    err = {f.name: f for f in slo.findings_for_run(
        _run(), rollout=ROLLOUT, fetch=_fetcher({err_q.replace(CANARY, STABLE): stable}))}["ig-error-rate"]
    assert [t for t, _ in err.stable_points] == [t for t, _ in err.canary_points]
    assert err.stable_values == [0.002] * 5 and err.stable_breached is False and err.canary_only is True


def test_without_stable_values_canary_only_is_unknown() -> None:
    err = {f.name: f for f in slo.findings_for_run(_run(), rollout=ROLLOUT)}["ig-error-rate"]
    assert err.breached is True and err.stable_breached is None and err.canary_only is None
    assert "no stable values" in err.reason


def test_failure_limit_tolerates_single_spikes() -> None:
    threshold, _ = slo.parse_threshold("result[0] <= 0.5")
    one_spike = [(None, 0.1), (None, 0.9), (None, 0.2)]
    two_spikes = [(None, 0.6), (None, 0.9), (None, 0.2)]
    common = {"query": "q", "threshold": threshold, "failure_limit": 1}
    assert slo.build_finding("m", measured=one_spike, **common).breached is False  # type: ignore[arg-type]
    assert slo.build_finding("m", measured=two_spikes, **common).breached is True  # type: ignore[arg-type]


def test_without_measurements_the_requeried_canary_series_is_judged() -> None:
    threshold, _ = slo.parse_threshold("result[0] <= 0.5")
    f = slo.build_finding("m", query="q", threshold=threshold, canary_series=_series([0.1, 0.7], CANARY),
                          stable_series=_series([0.1, 0.2], STABLE))
    assert f.canary_source == "prometheus" and f.breached is True and f.canary_only is True
    none = slo.build_finding("m", query="q", threshold=threshold)
    assert none.canary_source == "none" and none.breached is None and "no canary values" in none.reason


def test_an_unreadable_threshold_gives_no_verdict_and_says_why() -> None:
    run = _run()
    run["spec"]["metrics"][1]["successCondition"] = "result[0] <= 0.5 && result[0] >= 0"
    lat = {f.name: f for f in slo.findings_for_run(run, rollout=ROLLOUT)}["ig-latency-p99"]
    assert lat.threshold is None and lat.breached is None and lat.canary_only is None
    assert "&&" in lat.reason


# --------------------------------------------------------------------------- plots


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _by_gid(ax: object, gid: str) -> list[object]:
    return [a for a in ax.get_children() if getattr(a, "get_gid", lambda: None)() == gid]  # type: ignore[attr-defined]


def test_plot_draws_threshold_canary_stable_and_shades_the_breach() -> None:
    canary = _series([0.001, 0.002, 0.031, 0.034, 0.036], CANARY)
    stable = _series([0.001, 0.002, 0.003, 0.002, 0.001], STABLE)
    finding = {f.name: f for f in slo.findings_for_run(
        _run(), rollout=ROLLOUT, fetch=_fetcher({}))}["ig-error-rate"]
    fig = slo.plot_metric(finding, canary, stable)
    ax = fig.axes[0]
    assert "ig-error-rate" in ax.get_title()
    threshold_lines = [ln for ln in ax.get_lines() if ln.get_gid() == "threshold"]
    assert len(threshold_lines) == 1 and list(threshold_lines[0].get_ydata()) == [0.01, 0.01]
    canary_line = next(ln for ln in ax.get_lines() if ln.get_label() == "canary")
    stable_line = next(ln for ln in ax.get_lines() if ln.get_label() == "stable")
    assert list(canary_line.get_ydata()) == [0.001, 0.002, 0.031, 0.034, 0.036]
    assert list(stable_line.get_ydata()) == [0.001, 0.002, 0.003, 0.002, 0.001]
    shading = [c for c in ax.collections if isinstance(c, PolyCollection) and c.get_gid() == "breach"]
    assert len(shading) == 1
    png = slo.figure_png(fig)
    assert png.startswith(PNG_SIGNATURE) and len(png) > 1000
    assert fig._repr_png_().startswith(PNG_SIGNATURE)  # type: ignore[attr-defined]


def test_plot_without_breach_has_no_shading_and_falls_back_to_measurements() -> None:
    lat = {f.name: f for f in slo.findings_for_run(_run(), rollout=ROLLOUT)}["ig-latency-p99"]
    fig = slo.plot_metric(lat)
    ax = fig.axes[0]
    assert [c for c in ax.collections if c.get_gid() == "breach"] == []
    canary_line = next(ln for ln in ax.get_lines() if ln.get_label() == "canary")
    assert list(canary_line.get_ydata()) == [0.21, 0.24, 0.22, 0.25, 0.23]
    assert [ln.get_ydata()[0] for ln in ax.get_lines() if ln.get_gid() == "threshold"] == [0.5]
    assert slo.figure_png(fig).startswith(PNG_SIGNATURE)


def test_plot_without_threshold_draws_no_threshold_line_and_infinite_values_are_gaps() -> None:
    f = slo.build_finding("m", query="q", threshold=None, threshold_reason="unreadable")
    fig = slo.plot_metric(f, _series([0.1, math.inf, 0.2], CANARY))
    ax = fig.axes[0]
    assert [ln for ln in ax.get_lines() if ln.get_gid() == "threshold"] == []
    ys = next(ln for ln in ax.get_lines() if ln.get_label() == "canary").get_ydata()
    assert ys[0] == 0.1 and math.isnan(ys[1]) and ys[2] == 0.2
