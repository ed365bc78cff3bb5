"""The six runbooks run headless (real papermill kernels) against a fresh sandbox per scenario.

Findings are asserted against facts read from the sandbox's own objects where possible, so a runbook
that keyed on a scenario's name could not pass.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rollbook import app, runner
from rollbook.errors import UsageError
from rollbook.sandbox.server import Sandbox

pytestmark = pytest.mark.notebooks


def _env(monkeypatch: pytest.MonkeyPatch, sb: Sandbox) -> None:
    monkeypatch.setenv("KUBECONFIG", str(sb.kubeconfig))
    monkeypatch.setenv("ROLLBOOK_MC_URL", sb.mc_url)
    monkeypatch.setenv("ROLLBOOK_MC_TOKEN_FILE", str(sb.mc_write_token_file))
    monkeypatch.delenv("ROLLBOOK_MC_TOKEN", raising=False)
    monkeypatch.delenv("ROLLBOOK_CONFIG", raising=False)


def _run(sb: Sandbox, out: Path, **kw: Any) -> tuple[runner.RunResult, dict[str, Any]]:
    ns, name = sb.info.rollouts[0] if sb.info else ("", "")
    spec = runner.RunSpec(incident="INC-42", namespace=ns, rollout=name, out=out,
                          runbooks_dir=app.default_runbooks(), step_timeout=120, **kw)
    result = app.run(spec)
    record = json.loads((result.record_dir / "record.json").read_text())
    return result, record


def _verdicts(record: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["verdict"] for s in record["steps"]}


def _obj(sb: Sandbox, plural: str, ns: str, name: str) -> dict[str, Any]:
    return sb.store.get(plural, ns, name)


@pytest.fixture
def scenario_run(sandbox_factory: Callable[..., Sandbox], monkeypatch: pytest.MonkeyPatch,
                 tmp_path: Path) -> Callable[..., tuple[Sandbox, runner.RunResult, dict[str, Any]]]:
    def go(scenario: str, **kw: Any) -> tuple[Sandbox, runner.RunResult, dict[str, Any]]:
        sb = sandbox_factory(scenario)
        _env(monkeypatch, sb)
        result, record = _run(sb, tmp_path / "out", **kw)
        return sb, result, record
    return go


def test_evidence_gap_findings_match_the_cluster(scenario_run: Any) -> None:
    sb, result, rec = scenario_run("evidence-gap")
    f = rec["findings"]
    ns, name = sb.info.rollouts[0]
    ro = _obj(sb, "rollouts", ns, name)
    assert result.exit_code == 5  # step 4 needs a human (no report, no approval): its own code since issue 13
    assert f["phase"] == "Degraded" and f["status_message"].startswith("RolloutAborted:")
    assert f["trigger"] == "evidence" and f["failed_metrics"] == ["mc-evidence-ok"]
    assert f["mc_reason"] == sb.mc.verdict(f["release_id"], "production")["reason"]
    canary_rs = [rs for rs in sb.store.list("replicasets", ns)[0]
                 if rs["metadata"]["labels"].get("rollouts-pod-template-hash") == ro["status"]["currentPodHash"]][0]
    assert f["release_id"] == canary_rs["spec"]["template"]["metadata"]["labels"]["release-id"]
    assert f["release_identity_ok"] is True and f["stable_is_previous_release"] is True
    assert f["canary_revision"] == int(ro["metadata"]["annotations"]["rollout.argoproj.io/revision"])
    assert f["stable_revision"] < f["canary_revision"]
    assert f["retried"] is False and f["escalate"] is False
    v = _verdicts(rec)
    assert v["remediate-and-retry"] == "needs_human"  # no report given, no approval: a dry run
    # nothing was changed: the rollout is still aborted at the same resourceVersion's spec
    assert sb.store.get("rollouts", ns, name)["status"]["abort"] is True
    for name_ in ("record.json", "summary.md", "report.html", "bundle.zip", "manifest.json"):
        assert (result.record_dir / name_).is_file()
    assert (result.record_dir / "snapshot" / "rollout.json").is_file()
    assert len(list(result.record_dir.glob("0[1-6]-*.ipynb"))) == 6


def test_evidence_gap_attach_and_approved_retry_promotes(scenario_run: Any, tmp_path: Path) -> None:
    report = app.demo_report(tmp_path)
    sb, result, rec = scenario_run("evidence-gap", params={"evidence_file": str(report)}, approve_retry=True,
                                   approver="alice", ticket="CHG-7")
    ns, name = sb.info.rollouts[0]
    ro = sb.store.get("rollouts", ns, name)
    assert result.exit_code == 0, _verdicts(rec)
    assert rec["findings"]["retried"] is True
    assert ro["status"]["stableRS"] == ro["status"]["currentPodHash"]  # promoted in the cluster
    step4 = next(s for s in rec["steps"] if s["name"] == "remediate-and-retry")
    assert step4["verdict"] == "pass"
    sent = step4["findings"]["mutations"][0]
    assert sent["approval"]["approver"] == "alice" and sent["approval"]["ticket"] == "CHG-7"
    assert sent["requests"][0]["body"] == '{"status": {"abort": false}}' or json.loads(
        sent["requests"][0]["body"]) == {"status": {"abort": False}}
    assert rec["findings"]["closeout_ok"] is True


def test_slo_regression_no_retry_and_undo_recommended(scenario_run: Any) -> None:
    sb, result, rec = scenario_run("slo-regression")
    f = rec["findings"]
    assert f["trigger"] == "slo"
    assert "mc-evidence-ok" not in f["failed_metrics"] and f["failed_metrics"]
    assert f["mc_reason"] is None  # the evidence gate passed: no MC failure reason
    step4 = next(s for s in rec["steps"] if s["name"] == "remediate-and-retry")
    assert step4["verdict"] == "needs_human" and "retry" in step4["reason"]
    assert [m["action"] for m in step4["findings"]["mutations"]] == ["undo"]
    assert all(m["dry_run"] for m in step4["findings"]["mutations"])
    assert f["retried"] is False


def test_rollback_loop_escalates(scenario_run: Any) -> None:
    sb, result, rec = scenario_run("rollback-loop")
    assert result.exit_code == 4
    assert rec["findings"]["escalate"] is True
    assert _verdicts(rec)["escalate"] == "escalate"
    assert rec["findings"]["analysis_run"].endswith(".2")


def test_release_mismatch_is_the_verdict(scenario_run: Any) -> None:
    sb, result, rec = scenario_run("release-mismatch")
    f = rec["findings"]
    assert f["release_identity_ok"] is False
    assert f["release_id"] != f["evidence_release_id"]
    assert _verdicts(rec)["validate-release-identity"] == "fail"


def test_evidence_lost_reason_comes_from_mc(scenario_run: Any) -> None:
    sb, result, rec = scenario_run("evidence-lost")
    f = rec["findings"]
    step2 = next(s for s in rec["steps"] if s["name"] == "inspect-evidence")
    assert step2["facts"]["reason_lost_in_run"] is True
    assert step2["facts"]["mc_reason_source"] == "mc"
    assert f["mc_reason"] == sb.mc.verdict(f["release_id"], "production")["reason"]


def test_mc_errors_is_an_error_trigger(scenario_run: Any) -> None:
    sb, result, rec = scenario_run("mc-errors")
    assert rec["findings"]["trigger"] == "error"
    step2 = next(s for s in rec["steps"] if s["name"] == "inspect-evidence")
    assert "non 2xx" in (step2["facts"]["evidence_error_message"] or "")


def test_healthy_changes_nothing(scenario_run: Any) -> None:
    sb, result, rec = scenario_run("healthy")
    assert result.exit_code == 0
    v = _verdicts(rec)
    assert v["remediate-and-retry"] == "skip"
    assert rec["findings"]["phase"] == "Healthy" and rec["findings"]["escalate"] is False
    writes = [r for r in sb.apiserver.requests if r.method not in ("GET",)]
    assert writes == []


def test_secret_never_reaches_the_record(sandbox_factory: Callable[..., Sandbox], monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    sb = sandbox_factory("evidence-gap")
    _env(monkeypatch, sb)
    token = sb.mc_write_token_file.read_text().strip()
    # plant a secret where a careless step could pick it up: as the MC token in the environment
    monkeypatch.setenv("ROLLBOOK_MC_TOKEN", token)
    result, _ = _run(sb, tmp_path / "out", steps=(1, 2))
    secrets = [token, sb.operator_token, sb.viewer_token]
    assert token and len(token) > 10
    for path in result.record_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not [s for s in secrets if s.encode() in data], path
            if path.suffix == ".zip":
                with zipfile.ZipFile(path) as z:
                    assert all(s.encode() not in z.read(n) for n in z.namelist() for s in secrets)


def test_unknown_rollout_exits_2_before_any_kernel_and_names_what_exists(
        sandbox_factory: Callable[..., Sandbox], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # was: a partial record and exit 3 after every step met the same NotFound (issue 13 item 5)
    sb = sandbox_factory("evidence-gap")
    _env(monkeypatch, sb)
    spec = runner.RunSpec(incident="INC-9", namespace="prod", rollout="no-such-rollout", out=tmp_path / "out",
                          runbooks_dir=app.default_runbooks(), steps=(1,), step_timeout=60)
    with pytest.raises(UsageError) as e:
        app.run(spec)
    assert e.value.exit_code == 2 and "no-such-rollout" in str(e.value)
    assert all(name in str(e.value) for ns, name in sb.rollouts if ns == "prod")
    assert not (tmp_path / "out").exists()


UPSTREAM = Path(__file__).resolve().parents[2] / "fixtures" / "argo-rollouts" / "rollout-aborted"  # shipped


def test_argos_own_aborted_fixture_runs_the_whole_playbook_without_guessing(scenario_run: Any) -> None:
    # a pre-1.0 object, no MC state, a metric named "web" (no release-id, no evidence gate): every step reaches a
    # verdict, nothing is invented, and nothing is retried
    sb, result, rec = scenario_run(str(UPSTREAM))
    f = rec["findings"]
    # close-out cannot be verified without MC state (no expected release): a failed check exits 6 (issue 13)
    verdicts = {s["name"]: s["verdict"] for s in rec["steps"]}
    assert verdicts["verify-closeout"] == "fail" and result.exit_code == 6, verdicts
    assert f["phase"] == "Degraded" and f["status_message"].startswith('RolloutAborted: metric "web"')
    assert f["failed_metrics"] == ["web"] and f["trigger"] == "other"
    assert f["release_id"] is None and f["mc_reason"] is None and f["retried"] is False
    assert f["stable_is_previous_release"] is True and f["stable_image"] == "argoproj/rollouts-demo:blue"
    step4 = next(s for s in rec["steps"] if s["name"] == "remediate-and-retry")
    assert step4["verdict"] == "needs_human" and "outside the evidence and SLO gates" in step4["reason"]
