"""The Prometheus client against the stand-in over real HTTP on 127.0.0.1."""

from __future__ import annotations

import math
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from rollbook import slo
from rollbook.config import SecretRef, Service
from rollbook.errors import ConfigError, Retryable, RollbookError
from rollbook.prometheus import (
    PrometheusAuthError,
    PrometheusClient,
    PrometheusError,
    PrometheusProtocolError,
    PrometheusQueryError,
    PrometheusUnavailable,
)
from rollbook.sandbox.prometheus import PrometheusServer, load_prometheus_spec, spec_from_runs

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
CANARY, STABLE, ODD = "7c9d8f6b5", "6d4f8b7c9", "5b8c7d6e4"
ERR = (
    'sum(rate(http_requests_total{code=~"5..",rollouts_pod_template_hash="%s"}[2m]))'
    ' / sum(rate(http_requests_total{rollouts_pod_template_hash="%s"}[2m]))'
)

SPEC = {
    "series": [
        {"match": ["http_requests_total", f'rollouts_pod_template_hash="{CANARY}"'],
         "labels": {"rollouts_pod_template_hash": CANARY},
         "values": {"start": "-30m", "step": 60, "points": [0.001, 0.002, 0.031, 0.034, 0.036]}},
        {"match": ["http_requests_total", f'rollouts_pod_template_hash="{STABLE}"'],
         "labels": {"rollouts_pod_template_hash": STABLE},
         "values": {"start": "-30m", "step": "1m", "points": [0.001, 0.002, 0.001, 0.002, 0.003]}},
        {"match": ["http_requests_total", f'rollouts_pod_template_hash="{ODD}"'],
         "values": {"samples": [["-30m", 0.001], [NOW.timestamp() - 29 * 60, "NaN"],
                                ["2026-11-26T09:32:00Z", "+Inf"], ["-27m", 0.002]]}},
        {"match": ["scalar("], "type": "scalar", "values": {"start": "-5m", "step": 60, "points": [1, 2]}},
        {"match": ["broken{"], "error": {"status": 400, "errorType": "bad_data",
                                         "error": '1:8: parse error: unexpected "{"'}},
    ]
}


@pytest.fixture
def server() -> Iterator[PrometheusServer]:
    with PrometheusServer(SPEC, now=NOW) as s:
        yield s


@pytest.fixture
def client(server: PrometheusServer) -> Iterator[PrometheusClient]:
    with PrometheusClient(server.url, timeout=2.0, retries=2, backoff=0.0) as c:
        yield c


def _at(minutes_ago: float) -> datetime:
    return NOW - timedelta(minutes=minutes_ago)


# --------------------------------------------------------------------------- results


def test_instant_vector_returns_the_last_point_at_or_before_time(client: PrometheusClient) -> None:
    q = ERR % (CANARY, CANARY)
    result = client.query(q, _at(27.5))
    assert result.result_type == "vector"
    assert [(dict(s.labels), s.value, s.at) for s in result.samples] == [
        ({"rollouts_pod_template_hash": CANARY}, 0.031, _at(27.5))
    ]
    assert result.argo_value() == "[0.031]"
    assert client.query(q, _at(27) - timedelta(milliseconds=500)).values() == [0.031]  # just before a point
    assert client.query(q, _at(27)).values() == [0.034]  # exactly at it
    assert client.query(q).values() == [0.036]  # no time: the stand-in's now, after the last point


def test_matching_ignores_whitespace_and_no_match_is_an_empty_vector(client: PrometheusClient) -> None:
    spaced = (ERR % (CANARY, CANARY)).replace(" / ", "\n/\n").replace("{code", "{ code")
    assert client.query(spaced, _at(26)).values() == [0.036]
    empty = client.query('up{job="nothing"}', NOW)
    assert empty.result_type == "vector" and empty.samples == () and empty.argo_value() == "[]"


def test_range_query_resamples_at_step_inside_the_window(client: PrometheusClient) -> None:
    series = client.query_range(ERR % (CANARY, CANARY), _at(31), _at(25), timedelta(seconds=30))
    assert len(series) == 1 and dict(series[0].labels) == {"rollouts_pod_template_hash": CANARY}
    times = [t for t, _ in series[0].points]
    assert times[0] == _at(30) and times[-1] == _at(25) and times[1] - times[0] == timedelta(seconds=30)
    assert series[0].values()[:4] == [0.001, 0.001, 0.002, 0.002]  # forward-filled between samples
    assert series[0].values()[-1] == 0.036


def test_range_query_parses_nan_and_infinity(client: PrometheusClient) -> None:
    series = client.query_range(ERR % (ODD, ODD), _at(30), _at(27), 60)
    values = series[0].values()
    assert values[0] == 0.001 and math.isnan(values[1]) and values[2] == math.inf and values[3] == 0.002


def test_range_query_outside_the_data_and_beyond_lookback_is_empty(client: PrometheusClient) -> None:
    assert client.query_range(ERR % (CANARY, CANARY), _at(60), _at(40), 60) == []
    late = client.query_range(ERR % (CANARY, CANARY), _at(20), _at(10), 60)
    assert late == []  # last point 26 minutes ago is older than the 5-minute lookback


def test_scalar_result(client: PrometheusClient) -> None:
    result = client.query("scalar(sum(up))", _at(3.5))
    assert result.result_type == "scalar" and result.values() == [2.0] and result.argo_value() == "2"


def test_error_envelope_is_a_typed_final_error_naming_url_and_query(
    client: PrometheusClient, server: PrometheusServer
) -> None:
    with pytest.raises(PrometheusQueryError) as info:
        client.query("broken{", NOW)
    e = info.value
    assert (e.status, e.error_type, e.query) == (400, "bad_data", "broken{")
    assert server.url in str(e) and "broken{" in str(e) and "parse error" in str(e)
    assert not isinstance(e, Retryable) and isinstance(e, RollbookError)
    assert len(server.requests) == 1  # a bad query is not retried


def test_bad_range_parameters_are_refused_by_the_server(client: PrometheusClient) -> None:
    with pytest.raises(PrometheusQueryError) as info:
        client.query_range("up", _at(10), _at(0), 0.0001)  # > 11,000 points per series
    assert info.value.error_type == "bad_data" and "11,000" in str(info.value)


# --------------------------------------------------------------------------- retries and failures


def test_503_then_ok_is_retried(client: PrometheusClient, server: PrometheusServer) -> None:
    server.fail_next(503, times=2)
    assert client.query(ERR % (CANARY, CANARY), _at(26)).values() == [0.036]
    assert len(server.requests) == 3


def test_retries_are_bounded(server: PrometheusServer) -> None:
    server.fail_next(503, times=5)
    with PrometheusClient(server.url, retries=1, backoff=0.0) as c, pytest.raises(PrometheusUnavailable) as info:
        c.query("up")
    assert len(server.requests) == 2 and info.value.status == 503 and "2 attempts" in str(info.value)
    assert isinstance(info.value, Retryable)


def test_429_is_retried(client: PrometheusClient, server: PrometheusServer) -> None:
    server.fail_next(429, times=1)
    assert client.query("scalar(x)", _at(1)).values() == [2.0]
    assert len(server.requests) == 2


def test_unreachable_prometheus_is_unavailable_after_retries() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = PrometheusClient(f"http://127.0.0.1:{port}", retries=1, backoff=0.0, timeout=1.0)
    with client, pytest.raises(PrometheusUnavailable) as info:
        client.query("up")
    assert f"127.0.0.1:{port}" in str(info.value) and "could not be reached" in str(info.value)


def test_a_2xx_that_is_not_the_envelope_is_a_protocol_error() -> None:
    def sso_page(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html><body>Sign in</body></html>")

    client = PrometheusClient("http://127.0.0.1:9", transport=httpx.MockTransport(sso_page))
    with client, pytest.raises(PrometheusProtocolError) as info:
        client.query("up")
    assert "Sign in" in str(info.value) and "up" in str(info.value)


# --------------------------------------------------------------------------- auth, POST, config


def test_token_is_sent_as_bearer_and_never_appears_in_errors() -> None:
    secret = "s3cr3t-prom-token"
    with PrometheusServer(SPEC, token=secret, now=NOW) as s:
        with PrometheusClient(s.url, secret) as good:
            assert good.query("scalar(1)", _at(1)).values() == [2.0]
        with PrometheusClient(s.url, "wrong") as bad, pytest.raises(PrometheusAuthError) as info:
            bad.query("up")
        url_with_password = s.url.replace("http://", f"http://admin:{secret}@")
        with PrometheusClient(url_with_password, retries=0) as leaky, pytest.raises(PrometheusError) as info2:
            leaky.query("up")
        assert [r.authorized for r in s.requests] == [True, False, False]
    assert info.value.status == 401 and "wrong" not in str(info.value)
    assert secret not in str(info2.value) and secret not in (info2.value.url or "")


def test_long_queries_are_sent_as_a_form_post(client: PrometheusClient, server: PrometheusServer) -> None:
    long_query = ERR % (CANARY, CANARY) + " or " + " or ".join(f'vector({i})' for i in range(400))
    assert len(long_query) > 2000
    assert client.query(long_query, _at(26)).values() == [0.036]
    assert server.requests[-1].method == "POST" and server.requests[-1].params["query"] == long_query


def test_ready_endpoint(server: PrometheusServer) -> None:
    response = httpx.get(server.url + "/-/ready", timeout=2.0)
    assert response.status_code == 200 and "Ready" in response.text


def test_client_from_config(server: PrometheusServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_PROM_TOKEN", "abc")
    with PrometheusClient.from_config(Service(url=server.url, secret=SecretRef(env="TEST_PROM_TOKEN"))) as c:
        assert c.query("scalar(1)", _at(1)).values() == [2.0]
    with pytest.raises(PrometheusError, match="not configured"):
        PrometheusClient.from_config(Service())


# --------------------------------------------------------------------------- scenario specs


def test_load_prometheus_spec(tmp_path: Path) -> None:
    assert load_prometheus_spec(tmp_path) is None
    (tmp_path / "prometheus.yaml").write_text(
        "series:\n  - match: ['ig-error-rate']\n    values: {start: '-5m', step: 1m, points: [0.5]}\n"
    )
    spec = load_prometheus_spec(tmp_path)
    assert spec is not None
    with PrometheusServer(spec, now=NOW) as s, PrometheusClient(s.url) as c:
        assert c.query("x  # ig-error-rate", _at(1)).values() == [0.5]
    (tmp_path / "prometheus.yaml").write_text("series: {not: a list}\n")
    with pytest.raises(ConfigError, match="prometheus.yaml"):
        load_prometheus_spec(tmp_path)


def test_invalid_series_entries_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"series\[0\]"):
        PrometheusServer({"series": [{"labels": {}}]})
    with pytest.raises(ConfigError, match=r"series\[0\]"):
        PrometheusServer({"series": [{"match": ["x"], "values": {"start": "-5m", "step": "soon", "points": [1]}}]})


def _run(hash_: str, values: list[str], start: datetime) -> dict[str, object]:
    measurements = [
        {"phase": "Successful", "value": v,
         "startedAt": (start + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
         "finishedAt": (start + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ")}
        for i, v in enumerate(values)
    ]
    return {
        "metadata": {"name": f"api-{hash_}-7", "labels": {"rollouts-pod-template-hash": hash_}},
        "spec": {"metrics": [{"name": "ig-error-rate", "failureLimit": 1,
                              "successCondition": "len(result) == 0 || result[0] <= 0.01",
                              "provider": {"prometheus": {"query": ERR % (hash_, hash_)}}}]},
        "status": {"phase": "Failed", "metricResults": [
            {"name": "ig-error-rate", "phase": "Failed", "metadata": {"ResolvedPrometheusQuery": ERR % (hash_, hash_)},
             "measurements": measurements},
            {"name": "mc-evidence-ok", "phase": "Successful",
             "measurements": [{"phase": "Successful", "value": '{"ok":true}'}]},
        ]},
    }


def test_spec_from_runs_serves_what_argo_measured_at_its_times() -> None:
    first = _run(CANARY, ["[0.001]", "[0.031]"], _at(20))
    retry = _run(CANARY, ["[0.034]", "[]", "[0.036]"], _at(10))
    rollout = {"status": {"stableRS": STABLE, "currentPodHash": CANARY}}
    spec = spec_from_runs([first, retry], rollout)
    assert len(spec["series"]) == 1  # one query, both runs merged; the web metric is left out
    with PrometheusServer(spec, now=NOW) as s, PrometheusClient(s.url) as c:
        q = ERR % (CANARY, CANARY)
        assert c.query(q, _at(19.5)).argo_value() == "[0.001]"
        assert c.query(q, _at(18.5)).argo_value() == "[0.031]"
        assert c.query(q).argo_value() == "[0.036]"
        series = c.query_range(q, _at(21), _at(7), 60)
        # -21m has no point yet; -13m..-11m are more than 5 minutes after the last point: gaps
        assert series[0].values() == [0.001] + [0.031] * 6 + [0.034, 0.034, 0.036, 0.036]
        assert series[0].points[6][0] == _at(14) and series[0].points[7][0] == _at(10)
        assert dict(series[0].labels) == {"rollouts_pod_template_hash": CANARY}
        assert c.query(ERR % (STABLE, STABLE)).samples == ()  # nothing was measured for stable: no data


def test_spec_from_runs_can_shift_old_measurements_to_now() -> None:
    old = _run(CANARY, ["[0.031]", "[0.034]"], datetime(2026, 8, 1, 12, 0, tzinfo=UTC))
    spec = spec_from_runs([old], shift_to=NOW)
    with PrometheusServer(spec, now=NOW) as s, PrometheusClient(s.url) as c:
        series = c.query_range(ERR % (CANARY, CANARY), _at(2), NOW, 60)
    assert [(t, v) for t, v in series[0].points] == [(_at(1), 0.031), (NOW, 0.034)]


def test_findings_from_a_run_with_series_from_the_stand_in() -> None:
    run = _run(CANARY, ["[0.001]", "[0.002]", "[0.031]", "[0.034]", "[0.036]"], _at(30))
    rollout = {"status": {"stableRS": STABLE, "currentPodHash": CANARY}}
    with PrometheusServer(SPEC, now=NOW) as s, PrometheusClient(s.url) as c:
        findings = slo.findings_for_run(run, rollout=rollout,
                                        fetch=lambda q: c.query_range(q, _at(30), _at(27), 60))
    (finding,) = findings
    assert finding.stable_query == ERR % (STABLE, STABLE)
    assert finding.breached is True and finding.canary_breaches == 3 and finding.canary_source == "measurements"
    # read at the 5 measurement times; the fetched window ends at -27m, so -26m carries that value
    assert finding.stable_values == [0.001, 0.002, 0.001, 0.002, 0.002]
    assert finding.stable_breached is False and finding.canary_only is True


def test_nan_and_infinity_from_prometheus_count_as_breaches_of_a_success_condition() -> None:
    run = _run(ODD, [], _at(30))
    with PrometheusServer(SPEC, now=NOW) as s, PrometheusClient(s.url) as c:
        (finding,) = slo.findings_for_run(run, fetch=lambda q: c.query_range(q, _at(30), _at(27), 60))
    assert finding.canary_source == "prometheus" and finding.canary_breaches == 2  # NaN <= x and +Inf <= x fail
    assert finding.breached is True and finding.stable_query is None and finding.canary_only is None


def test_builtin_slo_regression_scenario_served_from_its_runs() -> None:
    """The shipped scenario's AnalysisRun, as the loader resolves it, drives the stand-in and the findings."""
    from rollbook.sandbox import loader

    docs = [loader.resolve_times(d.obj, NOW) for d in loader.read_folder(loader.resolve("slo-regression"))]
    runs = [o for o in docs if o["kind"] == "AnalysisRun"]
    (rollout,) = [o for o in docs if o["kind"] == "Rollout"]
    canary, stable = slo.pod_hashes(runs[0], rollout)
    assert canary and stable and canary != stable
    spec = spec_from_runs(runs, rollout)
    spec["series"].append({"match": ["http_server_requests_total", f'"{stable}"'],
                           "values": {"start": "-20m", "step": 60, "points": [0.002] * 20}})
    with PrometheusServer(spec, now=NOW) as s, PrometheusClient(s.url) as c:
        findings = {f.name: f for f in slo.findings_for_run(
            runs[0], rollout=rollout, fetch=lambda q: c.query_range(q, _at(15), NOW, 60))}
    err = findings["ig-error-rate"]
    assert err.canary_values == [0.034, 0.041] and err.breached is True and err.phase == "Failed"
    assert err.stable_query is not None and stable in err.stable_query
    assert err.stable_breached is False and err.canary_only is True
    lat = findings["ig-latency-p99"]
    assert lat.breached is False and lat.stable_values == []  # no stable latency series configured
    assert lat.canary_only is None
