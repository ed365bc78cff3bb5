"""SLO plots say what their values are in (issue 13 item 8): the y axis names the metric and its unit."""

from __future__ import annotations

from rollbook import slo


def test_slo_plots_name_their_unit() -> None:
    latency = "histogram_quantile(0.99, sum by (le) (rate(http_server_request_duration_seconds_bucket[2m])))"
    errors = 'sum(rate(http_requests_total{code=~"5.."}[2m])) / sum(rate(http_requests_total[2m]))'
    assert slo.unit_of(latency) == "seconds" and slo.unit_of(errors) == "ratio, 0–1"
    assert slo.unit_of("rate(x_total[1m])") == "per second" and slo.unit_of("up") == "as the query returns it"
    finding = slo.SloFinding("ig-latency-p99", latency, None, None, None, "Failed", 0, (), "none", (), None, None,
                             None, None, None, "")
    assert slo.plot_metric(finding).axes[0].get_ylabel() == "ig-latency-p99 (seconds)"
