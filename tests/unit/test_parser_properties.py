"""Property-based tests (hypothesis) for the parsers that meet untrusted text: the abort message, the
measurement values, `--param`/`--steps`, label values, the notification body and the config.

Each parser answers a value or its own error for ANY input, never another exception; and what a
well-formed input holds comes back out unchanged."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollbook import config, runner, slo
from rollbook.cluster import parse_abort_message
from rollbook.cluster.analysis import parse_number
from rollbook.errors import ConfigError, ParameterError, UsageError
from rollbook.serve import notification

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
K8S_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")  # apimachinery's regex
metric_names = st.from_regex(r"\A[a-z][a-z0-9-]{0,30}[a-z0-9]\Z")
names = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?\Z")


@SETTINGS
@given(st.one_of(st.none(), st.text(max_size=400)))
def test_abort_message_parser_never_raises(text: str | None) -> None:
    info = parse_abort_message(text)
    assert info is None or info.text == (text or "").strip()


@SETTINGS
@given(st.integers(1, 10**6), st.sampled_from(["Step-based", "Background"]), metric_names,
       st.sampled_from(["Failed", "Error", "Inconclusive"]), st.integers(0, 99), st.integers(0, 99))
def test_abort_message_round_trips_the_v19_form(rev: int, kind: str, metric: str, phase: str, failed: int,
                                                 limit: int) -> None:
    why = f"failed ({failed}) > failureLimit ({limit})"
    info = parse_abort_message(f"RolloutAborted: Rollout aborted update to revision {rev}: {kind} analysis "
                               f'phase error/failed: Metric "{metric}" assessed {phase} due to {why}')
    assert info is not None
    assert (info.form, info.revision, info.metric, info.assessed_phase, info.reason) == (
        "v1.9+", rev, metric, phase, why)


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@SETTINGS
@given(st.lists(finite, max_size=5))
def test_measurement_vector_round_trips(values: list[float]) -> None:
    assert slo.parse_measurement("[" + ",".join(repr(v) for v in values) + "]") == values
    if len(values) == 1:
        assert parse_number(f"[{values[0]!r}]") == values[0]


@SETTINGS
@given(st.one_of(st.none(), st.text(max_size=200), st.builds(json.dumps, st.dictionaries(st.text(max_size=5),
                                                                                        st.integers()))))
def test_measurement_parsers_never_raise(text: str | None) -> None:
    values = slo.parse_measurement(text)
    assert values is None or all(isinstance(v, float) for v in values)
    number = parse_number(text)
    assert number is None or isinstance(number, float)


@SETTINGS
@given(st.dictionaries(st.text(min_size=1, max_size=20).filter(lambda k: "=" not in k and k.strip() == k and k),
                       st.text(max_size=50), max_size=6))
def test_params_round_trip(params: dict[str, str]) -> None:
    assert runner.parse_params([f"{k}={v}" for k, v in params.items()]) == params


@SETTINGS
@given(st.text(max_size=40))
def test_params_parser_answers_a_dict_or_a_parameter_error(item: str) -> None:
    try:
        parsed = runner.parse_params([item])
    except ParameterError as e:
        assert "is not KEY=VALUE" in e.message
        assert "=" not in item or not item.partition("=")[0].strip()
    else:
        key, _, value = item.partition("=")
        assert parsed == {key.strip(): value}


@SETTINGS
@given(st.lists(st.integers(-5, 200), min_size=1, max_size=8))
def test_steps_round_trip(steps: list[int]) -> None:
    assert runner.parse_steps(",".join(map(str, steps))) == tuple(steps)


@SETTINGS
@given(st.text(max_size=30))
def test_steps_parser_answers_numbers_or_a_usage_error(text: str) -> None:
    try:
        steps = runner.parse_steps(text)
    except UsageError as e:
        assert "is not a list of step numbers" in e.message
    else:
        assert steps and all(isinstance(s, int) for s in steps)


@SETTINGS
@given(st.text(max_size=80))
def test_release_id_is_accepted_only_as_a_kubernetes_label_value(release: str) -> None:
    spec = runner.RunSpec(incident="INC-1", namespace="prod", rollout="api", release_id=release)
    try:
        runner.validation._check_spec(spec)
    except UsageError as e:
        assert "label value" in e.message
        assert not (K8S_LABEL_VALUE.match(release) and 0 < len(release) <= 63 and release.isascii())
    else:
        assert K8S_LABEL_VALUE.match(release) and 0 < len(release) <= 63


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                                     st.text(max_size=20)),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                       max_size=4), max_leaves=15)
keys = st.sampled_from(["namespace", "rollout", "revision", "trigger", "analysisRun", "message", "time", "body",
                        "data", "context"])


@SETTINGS
@given(st.one_of(st.binary(max_size=200), st.builds(lambda d: json.dumps(d).encode(),
                                                    st.dictionaries(keys, json_values, max_size=8))))
def test_notification_parser_answers_a_notification_or_bad_notification(raw: bytes) -> None:
    try:
        n = notification.parse(raw)
    except notification.BadNotification as e:
        assert str(e)
    else:
        assert n.trigger in notification.TRIGGERS and isinstance(n.revision, int)


@SETTINGS
@given(names, names, st.integers(1, 10**6), st.sampled_from(notification.TRIGGERS),
       st.one_of(st.none(), st.text(max_size=200)))
def test_notification_round_trips(ns: str, name: str, rev: int, trigger: str, message: str | None) -> None:
    body = {"namespace": ns, "rollout": name, "revision": str(rev), "trigger": trigger, "message": message}
    n = notification.parse(json.dumps(body).encode())
    assert (n.namespace, n.rollout, n.revision, n.trigger, n.message) == (ns, name, rev, trigger, message or None)


sections = st.sampled_from(["mc", "kube", "prometheus", "grafana", "escalation", "ticket", "record", "serve",
                            "mcc", "slack"])


@SETTINGS
@given(st.dictionaries(sections, json_values, max_size=5))
def test_config_parser_answers_a_config_or_a_config_error(raw: dict[str, Any]) -> None:
    try:
        cfg = config.parse(raw)
    except ConfigError as e:
        assert e.message
    else:
        assert not set(raw) - {"mc", "kube", "prometheus", "grafana", "escalation", "ticket", "record", "serve"}
        assert cfg.mc is not None


@pytest.mark.parametrize("value", [math.nan])
def test_nan_is_a_measurement_not_a_crash(value: float) -> None:
    parsed = slo.parse_measurement("[NaN]")
    assert parsed is not None and math.isnan(parsed[0])
