"""The read model over objects with unexpected shapes (issue 11, part 4): a Rollout without status, an
AnalysisRun without metricResults, and any field the read model touches holding a value of another
type (hypothesis). The view is built, or a RollbookError names the problem; never another exception."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollbook.cluster import build_analysis_run, build_view, parse_abort_message
from rollbook.errors import MalformedObject

SCENARIO = Path(__file__).parents[2] / "lib" / "rollbook" / "sandbox" / "scenarios" / "evidence-gap"


def _load(name: str) -> list[dict[str, Any]]:
    return [o for o in yaml.safe_load_all((SCENARIO / name).read_text()) if o]


ROLLOUT = _load("rollout.yaml")[0]
REPLICASETS = _load("replicasets.yaml")
PODS = _load("pods-stable.yaml")
RUNS = _load("analysisruns.yaml")


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a JSON-like object."""
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    doc = copy.deepcopy(obj)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


junk = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**12), st.floats(allow_nan=True), st.text(max_size=30),
                 st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _build(rollout: Any, runs: Any = RUNS) -> None:
    try:
        view = build_view(rollout, REPLICASETS, PODS, runs)
    except MalformedObject as e:  # one sentence naming the object and how to look at it
        assert e.kind in ("Rollout", "AnalysisRun") and "kubectl get" in str(e)
        return
    parse_abort_message(view.message)


def test_a_rollout_without_status_and_a_run_without_metric_results() -> None:
    bare = {k: v for k, v in ROLLOUT.items() if k != "status"}
    view = build_view(bare, REPLICASETS, PODS, RUNS)
    assert view.name == ROLLOUT["metadata"]["name"]
    run = copy.deepcopy(RUNS[0])
    run.get("status", {}).pop("metricResults", None)
    info = build_analysis_run(run)
    assert info.name == run["metadata"]["name"]


@SETTINGS
@given(st.sampled_from(_paths(ROLLOUT)), junk)
def test_any_rollout_field_of_another_type_never_crashes_the_read_model(path: tuple[Any, ...], value: Any) -> None:
    _build(_set(ROLLOUT, path, value))


@SETTINGS
@given(st.integers(0, len(RUNS) - 1), st.data(), junk)
def test_any_analysis_run_field_of_another_type_never_crashes_the_read_model(i: int, data: st.DataObject,
                                                                            value: Any) -> None:
    path = data.draw(st.sampled_from(_paths(RUNS[i])))
    runs = [*RUNS[:i], _set(RUNS[i], path, value), *RUNS[i + 1:]]
    try:
        build_analysis_run(runs[i])
    except MalformedObject as e:
        assert e.kind == "AnalysisRun" and "kubectl get analysisrun" in str(e)
    _build(ROLLOUT, runs)


def test_a_one_mib_measurement_value_is_truncated_with_a_note_but_still_parsed() -> None:
    run = copy.deepcopy(RUNS[0])
    results = run["status"]["metricResults"]
    huge = '{"ok": false, "reason": "' + "x" * (1 << 20) + '"}'
    results[0]["measurements"][-1]["value"] = huge
    info = build_analysis_run(run)
    m = info.metric_results[0].measurements[-1]
    assert m.value is not None
    assert len(m.value) < 70_000 and "truncated by rollbook: 1,048,6" in m.value
    assert len(str(info.metric_results[0].raw)) < 200_000  # the raw copy a notebook may show is cut too
    assert len(huge) > 1_000_000  # the input really was 1 MiB
    reason = m.verdict.get("reason") if isinstance(m.verdict, dict) else getattr(m.verdict, "reason", "")
    assert len(str(reason)) < 70_000
    assert m.verdict_error is None or len(m.verdict_error) < 600
