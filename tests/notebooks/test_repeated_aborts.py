"""Step 5 and the incident history (issue 8, part 3): the same rollout aborting on the same metric in
earlier incidents within 24 h is a loop, named in the escalation ("mc-evidence-ok aborted api 3 times in
24 h: INC-…, INC-…"); older aborts, other metrics, other rollouts and the same AnalysisRun do not count.

Earlier incidents are planted as record.json documents laid out by the record writer itself and indexed
the way every run indexes its record; the incident under test runs for real (papermill kernels, sandbox)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rollbook import app, history, record, runner
from rollbook.sandbox.server import Sandbox

pytestmark = pytest.mark.notebooks


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def plant(out: Path, incident: str, *, namespace: str, rollout: str, metrics: tuple[str, ...], ago: timedelta,
          run: str) -> Path:
    """An earlier incident's record (steps 1-2 as the record writer lays them out), indexed."""
    started = datetime.now(UTC) - ago
    findings = {"canary_revision": 5, "stable_revision": 4, "failed_metrics": list(metrics), "trigger": "evidence",
                "analysis_run": run, "aborted_at": _iso(started - timedelta(minutes=2))}
    steps = [record.StepResult(1, "confirm-rollback-status", "01-confirm-rollback-status.ipynb", "pass", "ok",
                               _iso(started), 1.0, findings=findings),
             record.StepResult(2, "inspect-evidence", "02-inspect-evidence.ipynb", "pass", "ok", _iso(started), 1.0)]
    run_dir = record.new_run_dir(out, incident, now=started)
    info = record.RunInfo(incident=incident, namespace=namespace, rollout=rollout, context="sandbox-viewer",
                          run_id=run_dir.name, started_at=_iso(started), finished_at=_iso(started + timedelta(seconds=5)),
                          tool_version="0.1.0", parameters={}, exit_code=0, partial=False)
    (run_dir / "record.json").write_text(json.dumps(record.record_document(info, steps)), encoding="utf-8")
    history.index_record(run_dir)
    return run_dir


@pytest.fixture
def incident(sandbox_factory: Callable[..., Sandbox], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Runs steps 1, 2 and 5 of the evidence-gap abort for a given incident id; returns step 5's result."""
    sb = sandbox_factory("evidence-gap")
    for k, v in {"KUBECONFIG": str(sb.kubeconfig), "ROLLBOOK_MC_URL": sb.mc_url,
                 "ROLLBOOK_MC_TOKEN_FILE": str(sb.mc_write_token_file)}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("ROLLBOOK_CONFIG", raising=False)
    ns, name = sb.rollouts[0]

    def run(incident_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        spec = runner.RunSpec(incident=incident_id, namespace=ns, rollout=name, out=tmp_path / "out",
                              steps=(1, 2, 5), runbooks_dir=app.default_runbooks(), step_timeout=120,
                              params={"config": str(sb.config_file)})
        result = app.run(spec, config=str(sb.config_file))
        rec = json.loads((result.record_dir / "record.json").read_text())
        steps = {s["name"]: s for s in rec["steps"]}
        return steps["inspect-evidence"], steps["escalate"]

    run.out = tmp_path / "out"  # type: ignore[attr-defined]
    run.target = (ns, name)  # type: ignore[attr-defined]
    return run


def test_earlier_aborts_on_the_same_metric_within_24_h_are_a_loop_named_in_the_escalation(incident: Any) -> None:
    out, (ns, name) = incident.out, incident.target
    inspect, first = incident("INC-100")
    metric = inspect["findings"]["failed_metrics"][0]
    assert inspect["findings"]["failed_metrics"] == ["mc-evidence-ok"]
    # nothing in the history but this abort itself: no repeat, whatever step 5 decides for other reasons
    assert first["facts"]["repeated_aborts"] == []
    assert "repeated abort" not in first["reason"]

    run = "api-6d4f8b7c9-5-0"  # an earlier release's failed analysis
    plant(out, "INC-90", namespace=ns, rollout=name, metrics=(metric,), ago=timedelta(hours=20), run=run)
    plant(out, "INC-95", namespace=ns, rollout=name, metrics=(metric, "ig-error-rate"), ago=timedelta(hours=3),
          run="api-6d4f8b7c9-6-0")
    # none of these counts: too old, another metric, another rollout, another namespace
    plant(out, "INC-10", namespace=ns, rollout=name, metrics=(metric,), ago=timedelta(hours=30), run="api-x-4-0")
    plant(out, "INC-11", namespace=ns, rollout=name, metrics=("ig-latency-p99",), ago=timedelta(hours=1), run="api-x-4-1")
    plant(out, "INC-12", namespace=ns, rollout="checkout", metrics=(metric,), ago=timedelta(hours=1), run="co-1-0")
    plant(out, "INC-13", namespace="staging", rollout=name, metrics=(metric,), ago=timedelta(hours=1), run="api-s-1-0")

    _, again = incident("INC-101")
    # INC-100 is the same AnalysisRun (the same abort, recorded under another id): not a repeat
    line = f"{metric} aborted {name} 3 times in 24 h: INC-101, INC-95, INC-90"
    assert again["facts"]["repeated_aborts"] == [line]
    assert again["verdict"] == "escalate"
    assert f"repeated abort: {line}" in again["reason"]
    assert line in again["facts"]["message"]  # the text the deployment lead and SRE receive
    assert again["facts"]["loop"]["looping"] is True
    assert again["findings"]["escalate"] is True
