"""AnalysisRun parsing: metric results, Prometheus numbers, error messages and the MC verdict wiring."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from typing import Any

import pytest

from rollbook.cluster import build_analysis_run, build_view, parse_number
from rollbook.cluster.analysis import parse_verdict_value

VERDICT = {"environment": "production", "invalid": [], "missing": ["test-report"], "ok": False,
           "policy": "production/v3", "reason": "missing required evidence: test-report (junit)",
           "release_id": "api-1.42.0", "service": "api", "status": "missing_evidence"}
VERDICT_VALUE = json.dumps(VERDICT, sort_keys=True, separators=(",", ":"))  # as Argo stores it


def run(metric_results: list[dict[str, Any]], **meta: Any) -> dict[str, Any]:
    """A realistic AnalysisRun: evidence gate and SLO metrics merged into one run."""
    return {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisRun",
        "metadata": {"name": "api-6d4f8b7c9-7-0", "namespace": "prod", "uid": "run-uid",
                     "labels": {"rollouts-pod-template-hash": "6d4f8b7c9", "rollout-type": "Step", "step-index": "0"},
                     "annotations": {"rollout.argoproj.io/revision": "7"},
                     "ownerReferences": [{"kind": "Rollout", "name": "api", "uid": "ro-uid", "controller": True}],
                     **meta},
        "spec": {"metrics": [
            {"name": "mc-evidence-ok", "provider": {"web": {"url": "http://mc/x", "jsonPath": "{$}"}}},
            {"name": "ig-error-rate", "provider": {"prometheus": {"query": "q"}}},
            {"name": "ig-latency-p99", "provider": {"prometheus": {"query": "q"}}},
        ]},
        "status": {"phase": "Failed",
                   "message": 'Metric "mc-evidence-ok" assessed Failed due to failed (1) > failureLimit (0)',
                   "metricResults": metric_results},
    }


EVIDENCE = {"name": "mc-evidence-ok", "phase": "Failed", "count": 1, "failed": 1,
            "measurements": [{"phase": "Failed", "value": VERDICT_VALUE, "startedAt": "t0", "finishedAt": "t1"}]}
ERROR_RATE = {"name": "ig-error-rate", "phase": "Successful", "count": 2, "successful": 2,
              "measurements": [{"phase": "Successful", "value": "[0.004]"}, {"phase": "Successful", "value": "[0.002]"}]}
LATENCY = {"name": "ig-latency-p99", "phase": "Successful", "count": 1, "successful": 1,
           "measurements": [{"phase": "Successful", "value": "0.42"}]}


@pytest.mark.parametrize(
    ("value", "expected"),
    [("[0.42]", 0.42), ("0.42", 0.42), (" [0.034] ", 0.034), ("[1]", 1.0), ("3e-2", 0.03),
     ("false", None), ("true", None), ("[]", None), ("[0.1, 0.2]", None), ('{"ok":false}', None),
     ("", None), (None, None), ("[true]", None), ("abc", None)],
)
def test_parse_number(value: str | None, expected: float | None) -> None:
    assert parse_number(value) == expected


def test_metric_results_and_totals() -> None:
    info = build_analysis_run(run([EVIDENCE, ERROR_RATE, LATENCY]))
    assert (info.name, info.phase, info.revision, info.kind, info.step_index) == (
        "api-6d4f8b7c9-7-0", "Failed", 7, "Step", 0)
    assert info.summary == "✔ 3,✖ 1"
    assert info.failed_metrics == ("mc-evidence-ok",)
    assert [m.provider for m in info.metric_results] == ["web", "prometheus", "prometheus"]
    err = info.metric("ig-error-rate")
    assert err is not None and [m.number for m in err.measurements] == [0.004, 0.002]
    assert err.last is not None and err.last.number == 0.002
    lat = info.metric("ig-latency-p99")
    assert lat is not None and lat.last is not None and lat.last.number == 0.42
    assert info.metric("nope") is None


def test_missing_integer_fields_are_zero() -> None:
    info = build_analysis_run(run([{"name": "ig-error-rate", "phase": "Running"}]))
    (mr,) = info.metric_results
    assert (mr.count, mr.successful, mr.failed, mr.inconclusive, mr.error, mr.consecutive_error) == (0, 0, 0, 0, 0, 0)
    assert mr.measurements == () and mr.last is None
    assert info.summary == ""


def test_error_measurement_message_is_kept() -> None:
    errored = {"name": "mc-evidence-ok", "phase": "Error", "count": 5, "error": 5, "consecutiveError": 5,
               "message": "received non 2xx response code: 503",
               "measurements": [{"phase": "Error", "message": "received non 2xx response code: 503"}] * 5}
    info = build_analysis_run(run([errored]))
    mr = info.metric("mc-evidence-ok")
    assert mr is not None and (mr.phase, mr.error, mr.consecutive_error) == ("Error", 5, 5)
    assert mr.last is not None and mr.last.message == "received non 2xx response code: 503"
    assert mr.last.value is None and mr.last.verdict is None and mr.last.verdict_error == "the measurement has no value"
    assert info.summary == "⚠ 5" and info.failed_metrics == ("mc-evidence-ok",)


def test_unknown_phase_and_kind() -> None:
    obj = run([])
    obj["status"]["phase"] = "Weird"
    obj["metadata"]["labels"] = {}
    info = build_analysis_run(obj)
    assert (info.phase, info.kind, info.step_index, info.pod_template_hash) == ("Unknown", "Unknown", None, None)


def test_empty_phase_is_pending() -> None:
    obj = run([])
    del obj["status"]["phase"]
    assert build_analysis_run(obj).phase == "Pending"


# --------------------------------------------------------------------------- MC verdict wiring


@pytest.fixture
def fake_evidence(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A stand-in rollbook.evidence whose parse_verdict follows the contract; records its inputs."""
    seen: list[str] = []

    def parse_verdict(value: str) -> dict[str, Any] | None:
        seen.append(value)
        parsed = json.loads(value)
        if isinstance(parsed, bool):
            return None
        if not isinstance(parsed, dict) or "ok" not in parsed:
            raise ValueError("not a verdict")
        return parsed

    module = types.ModuleType("rollbook.evidence")
    module.parse_verdict = parse_verdict  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "rollbook.evidence", module)
    return seen


def test_verdict_is_parsed_only_for_the_evidence_metric(fake_evidence: list[str]) -> None:
    info = build_analysis_run(run([EVIDENCE, ERROR_RATE, LATENCY]))
    mr = info.metric("mc-evidence-ok")
    assert mr is not None and mr.last is not None
    assert mr.last.verdict == VERDICT and mr.last.verdict_error is None
    assert fake_evidence == [VERDICT_VALUE]  # SLO values never reach the evidence parser
    other = info.metric("ig-error-rate")
    assert other is not None and all(m.verdict is None and m.verdict_error is None for m in other.measurements)


def test_bare_false_says_the_reason_was_dropped(fake_evidence: list[str]) -> None:
    bare = {**EVIDENCE, "measurements": [{"phase": "Failed", "value": "false"}]}
    mr = build_analysis_run(run([bare])).metric("mc-evidence-ok")
    assert mr is not None and mr.last is not None
    assert mr.last.verdict is None
    assert mr.last.verdict_error is not None and "jsonPath" in mr.last.verdict_error


def test_malformed_value_does_not_break_the_read_model(fake_evidence: list[str]) -> None:
    odd = {**EVIDENCE, "measurements": [{"phase": "Failed", "value": '{"completed":false}'}]}
    mr = build_analysis_run(run([odd])).metric("mc-evidence-ok")
    assert mr is not None and mr.last is not None
    assert mr.last.verdict is None and mr.last.verdict_error is not None
    assert mr.last.verdict_error.startswith("the value is not an MC verdict")


@pytest.mark.skipif(importlib.util.find_spec("rollbook.evidence") is None, reason="rollbook.evidence not written yet")
def test_real_parse_verdict_reads_the_reason() -> None:
    verdict, why = parse_verdict_value(VERDICT_VALUE)
    assert why is None and verdict is not None
    assert getattr(verdict, "reason", None) == VERDICT["reason"]
    assert getattr(verdict, "ok", None) is False
    assert parse_verdict_value("false") [0] is None


# --------------------------------------------------------------------------- finding a rollout's runs


def rollout(uid: str = "ro-uid", current: str = "6d4f8b7c9") -> dict[str, Any]:
    return {"metadata": {"name": "api", "namespace": "prod", "uid": uid, "generation": 1},
            "spec": {"replicas": 1, "strategy": {"canary": {"steps": [{"setWeight": 10}]}}},
            "status": {"observedGeneration": "1", "currentPodHash": current, "stableRS": "aaa"}}


def test_runs_are_linked_by_owner_uid_or_current_hash() -> None:
    owned = run([], name="api-6d4f8b7c9-7-0")
    foreign = run([], name="other-6d4f8b7c9-7-0")
    foreign["metadata"]["ownerReferences"] = [{"kind": "Rollout", "uid": "someone-else"}]
    orphan = run([], name="api-6d4f8b7c9-7-0.1")
    del orphan["metadata"]["ownerReferences"]
    orphan_other_hash = run([], name="api-111-7-0")
    del orphan_other_hash["metadata"]["ownerReferences"]
    orphan_other_hash["metadata"]["labels"]["rollouts-pod-template-hash"] = "111"
    v = build_view(rollout(), analysisruns=[owned, foreign, orphan, orphan_other_hash])
    assert sorted(r.name for r in v.analysis_runs) == ["api-6d4f8b7c9-7-0", "api-6d4f8b7c9-7-0.1"]


def test_runs_sorted_like_the_plugin() -> None:
    older = run([], name="api-aaa-6-0", annotations={"rollout.argoproj.io/revision": "6"})
    older["metadata"]["labels"]["rollouts-pod-template-hash"] = "aaa"
    first = run([], name="api-b-7-0", creationTimestamp="2026-01-01T00:00:00Z")
    retry = run([], name="api-b-7-0.1", creationTimestamp="2026-01-01T00:05:00Z")
    v = build_view(rollout(), analysisruns=[older, retry, first])
    assert [r.name for r in v.analysis_runs] == ["api-b-7-0", "api-b-7-0.1", "api-aaa-6-0"]
    assert [r.name for r in v.canary_runs] == ["api-b-7-0.1", "api-b-7-0"]  # newest first


def test_analysisrun_command_names_the_selector_that_works() -> None:
    from rollbook.cluster import analysisrun_command

    assert analysisrun_command("prod", "6d4f8b7c9") == (
        "kubectl get analysisrun -n prod -l rollouts-pod-template-hash=6d4f8b7c9")
    assert analysisrun_command("prod", "6d4f8b7c9", "rollout=api") == (
        "kubectl get analysisrun -n prod -l rollouts-pod-template-hash=6d4f8b7c9,rollout=api")
    assert analysisrun_command("prod", None) == "kubectl get analysisrun -n prod"
