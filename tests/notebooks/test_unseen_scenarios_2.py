"""The whole playbook on a second round of unseen scenarios (tests/scenarios/, see its README): sibling
Rollouts sharing a name prefix, an SLO metric in Error (Prometheus unreachable), a failed dry-run metric,
a retry that aborted again on an invalid item, a release id under another label key, a workloadRef Rollout.

Every expectation is computed from the scenario's own objects as loaded (the target is the Rollout whose
status says it was aborted, its objects are those it owns by UID), never from the scenario's name. Where
the product is known to be wrong the test is `xfail(strict=True)` with the reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_unseen_scenarios import FAST_TIMINGS, HASH, SCENARIOS, Played, World, pod_ready, point_at, run_playbook

from rollbook.sandbox.server import Sandbox

pytestmark = pytest.mark.notebooks

ESCALATE_AFTER = timedelta(minutes=15)  # the playbook: "escalate ... within 15 minutes"


# --------------------------------------------------------------------------- the target and what it owns


def owned_by(obj: dict[str, Any], uid: str) -> bool:
    return any(o.get("uid") == uid for o in obj["metadata"].get("ownerReferences") or [])


@dataclass
class Owned(World):
    """World restricted to one Rollout's own objects (by owner UID), so siblings in the namespace never leak in."""

    others: list[dict[str, Any]] | None = None

    @classmethod
    def of_target(cls, sb: Sandbox) -> Owned:
        """The one Rollout of the scenario whose status says it was aborted, and everything it owns."""
        rollouts = [sb.store.get("rollouts", ns, name) for ns, name in sb.rollouts]
        aborted = [ro for ro in rollouts if ro["status"].get("abort")]
        assert len(aborted) == 1, [ro["metadata"]["name"] for ro in aborted]
        ro = aborted[0]
        ns, uid = ro["metadata"]["namespace"], ro["metadata"]["uid"]
        rss = [rs for rs in sb.store.list("replicasets", ns)[0] if owned_by(rs, uid)]
        rs_uids = {rs["metadata"]["uid"] for rs in rss}
        pods = [p for p in sb.store.list("pods", ns)[0] if any(owned_by(p, u) for u in rs_uids)]
        runs = [r for r in sb.store.list("analysisruns", ns)[0] if owned_by(r, uid)]
        others = [o for o in rollouts if o["metadata"]["uid"] != uid]
        return cls(ns, ro["metadata"]["name"], ro, rss, pods, runs, others)

    def failed_runs(self) -> list[dict[str, Any]]:
        """The canary's Failed/Error runs, oldest first."""
        canary = self.rollout["status"]["currentPodHash"]
        runs = [r for r in self.runs if r["metadata"]["labels"][HASH] == canary
                and r["status"]["phase"] in ("Failed", "Error")]
        return sorted(runs, key=lambda r: (r["metadata"]["creationTimestamp"], r["metadata"]["name"]))

    @property
    def failed_run(self) -> dict[str, Any]:
        """The newest of them: the run of the abort now in force."""
        return self.failed_runs()[-1]

    def counted_failures(self, run: dict[str, Any]) -> list[str]:
        """Metrics that count towards the run's phase: Failed or Error and not dry-run (Argo's runSummary)."""
        return [m["name"] for m in run["status"]["metricResults"]
                if m["phase"] in ("Failed", "Error") and not m.get("dryRun")]

    def metric_kinds(self, run: dict[str, Any]) -> dict[str, str]:
        """Metric name -> provider (web, prometheus) from the run's spec."""
        return {m["name"]: next(iter(m["provider"])) for m in run["spec"]["metrics"]}

    def analysis_step(self) -> dict[str, Any]:
        """The canary step that runs the analysis (templates and args)."""
        return next(s["analysis"] for s in self.rollout["spec"]["strategy"]["canary"]["steps"] if "analysis" in s)

    def release_label_key(self) -> str:
        """The pod-template label the analysis step passes as `release-id` (its fieldRef), e.g. release-id."""
        arg = next(a for a in self.analysis_step()["args"] if a["name"] == "release-id")
        found = re.fullmatch(r"spec\.template\.metadata\.labels\['([^']+)'\]", arg["valueFrom"]["fieldRef"]["fieldPath"])
        assert found, arg
        return found.group(1)

    def release_of(self, rs: dict[str, Any]) -> str:
        """The release id a ReplicaSet's pod template carries, under the key the analysis step reads."""
        return str(rs["spec"]["template"]["metadata"]["labels"][self.release_label_key()])


@pytest.fixture
def play(shared_runs: Any) -> Callable[..., Played]:
    """As the first round's `play`, but the target is the aborted Rollout (not the sandbox's first one).

    Once per (scenario, parameters) in this module, shared by the tests that read it (conftest `SharedRuns`)."""

    def go(scenario: str, **kw: Any) -> Played:
        def make(folder: Path, start: Callable[..., Sandbox]) -> Played:
            sb = start(SCENARIOS / scenario, timings=FAST_TIMINGS)
            with pytest.MonkeyPatch.context() as mp:
                point_at(mp, sb)
                before = Owned.of_target(sb)
                mc_before = sb.mc.state
                return run_playbook(sb, before, mc_before, "INC-8802", folder / "out", **kw)

        return shared_runs.get(shared_runs.key(scenario, **kw), make)

    return go


def target(p: Played) -> Owned:
    assert isinstance(p.before, Owned)
    return p.before


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def stored_verdict(run: dict[str, Any], metric: str = "mc-evidence-ok") -> dict[str, Any]:
    """MC's verdict as Argo's web provider stored it (last measurement's value)."""
    result = next(m for m in run["status"]["metricResults"] if m["name"] == metric)
    return dict(json.loads(result["measurements"][-1]["value"]))


def mc_current(p: Played, service: str) -> str:
    return str(p.sb.mc.current("production", service)["current"]["release_id"])


def service_of(p: Played, release: str) -> str:
    return str(next(r["service"] for r in p.mc_before["releases"] if r["release_id"] == release))


def stable_is_sound(w: Owned) -> bool:
    rs = w.stable_rs
    return all(pod_ready(p) for p in w.pods_of(rs)) and \
        int(rs["status"].get("availableReplicas") or 0) >= int(rs["spec"]["replicas"])


def assert_nothing_mutated(p: Played) -> None:
    """No unapproved write reached the cluster; every Rollout of the namespace is as loaded."""
    assert p.cluster_writes() == [], [(r.method, r.path) for r in p.cluster_writes()]
    w = target(p)
    for then in [w.rollout, *(w.others or [])]:
        now = p.sb.store.get("rollouts", then["metadata"]["namespace"], then["metadata"]["name"])
        assert now["metadata"]["generation"] == then["metadata"]["generation"]
        assert now["spec"].get("template") == then["spec"].get("template")
        assert now["spec"].get("workloadRef") == then["spec"].get("workloadRef")
        assert bool(now["status"].get("abort")) == bool(then["status"].get("abort"))


def mutations(p: Played) -> list[tuple[str, bool]]:
    return [(m["action"], m["dry_run"]) for m in p.step("remediate-and-retry")["findings"]["mutations"]]


def assert_identity(p: Played) -> None:
    """The canary's release id (its ReplicaSet's template, under the analysis step's label) matches the payload."""
    w, f = target(p), p.findings
    canary = w.release_of(w.canary_rs)
    assert f["release_id"] == canary == f["evidence_release_id"], (f["release_id"], f["evidence_release_id"])
    assert stored_verdict(w.failed_run)["release_id"] == canary
    assert f["release_identity_ok"] is True


def assert_rollback_state(p: Played) -> None:
    w, f = target(p), p.findings
    assert f["stable_revision"] == w.revision_of(w.stable_rs) and f["canary_revision"] == w.revision_of(w.canary_rs)
    assert f["stable_is_previous_release"] is (w.stable_rs["metadata"]["uid"] == w.previous_rs["metadata"]["uid"])
    assert p.step("confirm-rollback-status")["verdict"] == "pass"


def assert_closed_out(p: Played) -> None:
    w = target(p)
    stable_release = w.release_of(w.stable_rs)
    assert stable_is_sound(w) and mc_current(p, service_of(p, stable_release)) == stable_release
    assert p.findings["closeout_ok"] is True and p.step("verify-closeout")["verdict"] == "pass"


# --------------------------------------------------------------------------- 1. sibling Rollouts sharing a prefix


@pytest.mark.xdist_group("unseen2-sibling-rollouts")
def test_sibling_rollouts_only_the_aborted_ones_runs_are_read(play: Callable[..., Played]) -> None:
    p = play("sibling-rollouts-shared-prefix")
    w, f = target(p), p.findings
    uid = w.rollout["metadata"]["uid"]
    assert w.name != p.sb.rollouts[0][1]  # the sandbox's first Rollout is another one
    sibling_runs = [r for r in p.sb.store.list("analysisruns", w.namespace)[0] if not owned_by(r, uid)]
    # what makes this adversarial: a sibling's runs start with the target's name and carry `rollout=<target>`
    assert any(r["metadata"]["name"].startswith(f"{w.name}-") for r in sibling_runs)
    assert any(r["metadata"]["labels"].get("rollout") == w.name for r in sibling_runs)
    assert any(r["status"]["phase"] == "Failed" for r in sibling_runs)
    run = w.failed_run
    step2 = p.step("inspect-evidence")
    assert sorted(step2["facts"]["runs_of_rollout"]) == sorted(r["metadata"]["name"] for r in w.runs)
    assert f["analysis_run"] == run["metadata"]["name"]
    assert f["trigger"] == "evidence" and f["failed_metrics"] == w.counted_failures(run)
    assert f["mc_reason"] == stored_verdict(run)["reason"]
    # none of the target's runs has the label: the playbook's selector lists only the sibling's runs
    assert not any(r["metadata"]["labels"].get("rollout") == w.name for r in w.runs)
    assert step2["facts"]["playbook_selector_works"] is False
    assert f"{HASH}={w.rollout['status']['currentPodHash']}" in step2["facts"]["working_command"]
    assert_identity(p)
    assert_rollback_state(p)
    assert p.step("remediate-and-retry")["verdict"] == "needs_human" and f["retried"] is False  # MC still fails it
    assert_nothing_mutated(p)
    assert p.mc_writes() == []
    assert f["escalate"] is False
    assert_closed_out(p)
    assert p.result.exit_code == 5  # step 4 needs a human (MC still fails the release): its own code


@pytest.mark.xdist_group("unseen2-sibling-rollouts")
def test_sibling_rollouts_snapshot_holds_only_the_targets_objects(play: Callable[..., Played]) -> None:
    p = play("sibling-rollouts-shared-prefix")
    w = target(p)
    snap = p.result.record_dir / "snapshot"
    runs = json.loads((snap / "analysisruns.json").read_text())
    pods = json.loads((snap / "pods.json").read_text())
    rss = json.loads((snap / "replicasets.json").read_text())
    assert sorted(r["metadata"]["name"] for r in runs) == sorted(r["metadata"]["name"] for r in w.runs)
    assert sorted(x["metadata"]["name"] for x in pods) == sorted(x["metadata"]["name"] for x in w.pods)
    assert sorted(x["metadata"]["name"] for x in rss) == sorted(x["metadata"]["name"] for x in w.replicasets)


# --------------------------------------------------------------------------- 2. an SLO metric in Error


@pytest.mark.xdist_group("unseen2-slo-metric-error")
def test_slo_metric_error_is_an_error_not_an_slo_regression(play: Callable[..., Played]) -> None:
    p = play("slo-metric-error-prometheus-down")
    w, f = target(p), p.findings
    run = w.failed_run
    kinds = w.metric_kinds(run)
    errored = [m["name"] for m in run["status"]["metricResults"] if m["phase"] == "Error"]
    assert errored and all(kinds[m] == "prometheus" for m in errored)
    assert not [m for m in run["status"]["metricResults"] if m["phase"] == "Failed"]
    assert stored_verdict(run)["ok"] is True  # the evidence gate itself passed
    assert f["trigger"] == "error" and f["failed_metrics"] == errored
    assert f["mc_reason"] is None  # MC's verdict was ok: there is no MC failure reason to report
    step2 = p.step("inspect-evidence")
    assert step2["verdict"] == "needs_human"
    last = next(m for m in run["status"]["metricResults"] if m["name"] == errored[0])["measurements"][-1]["message"]
    assert "connection refused" in last and last in step2["facts"]["run_message"]
    assert step2["facts"]["mc_live_ok"] is True
    assert_identity(p)
    assert_rollback_state(p)
    step4 = p.step("remediate-and-retry")
    # nothing shows the release is bad: no undo is recommended, and nothing is sent unapproved
    assert ("undo", True) not in mutations(p) and ("undo", False) not in mutations(p)
    assert step4["verdict"] == "needs_human" and f["retried"] is False
    assert_nothing_mutated(p)
    assert p.mc_writes() == []
    assert f["escalate"] is False
    assert_closed_out(p)


@pytest.mark.xdist_group("unseen2-slo-metric-error")
def test_slo_metric_error_retry_advice_names_what_errored(play: Callable[..., Played]) -> None:
    p = play("slo-metric-error-prometheus-down")
    w = target(p)
    errored = [m["name"] for m in w.failed_run["status"]["metricResults"] if m["phase"] == "Error"]
    step4 = p.step("remediate-and-retry")
    # a retry re-measures the same queries: it is only worth sending once the provider that errored answers
    assert all(m in step4["reason"] for m in errored), step4["reason"]


# --------------------------------------------------------------------------- 3. a dry-run metric failed


@pytest.mark.xdist_group("unseen2-dry-run-metric-failed")
def test_dry_run_failure_does_not_hide_the_evidence_reason(play: Callable[..., Played]) -> None:
    p = play("dry-run-metric-failed")
    w, f = target(p), p.findings
    run = w.failed_run
    dry = [m["name"] for m in run["status"]["metricResults"] if m.get("dryRun")]
    assert dry and {d["metricName"] for d in run["spec"]["dryRun"]} == set(dry)
    assert all(m["phase"] == "Failed" for m in run["status"]["metricResults"] if m["name"] in dry)
    assert run["status"]["dryRunSummary"]["failed"] == len(dry)
    assert f["analysis_run"] == run["metadata"]["name"]
    assert f["mc_reason"] == stored_verdict(run)["reason"]
    assert_identity(p)
    assert_rollback_state(p)
    assert_nothing_mutated(p)
    assert f["escalate"] is False


@pytest.mark.xdist_group("unseen2-dry-run-metric-failed")
def test_dry_run_failure_is_not_a_trigger(play: Callable[..., Played]) -> None:
    p = play("dry-run-metric-failed")
    w, f = target(p), p.findings
    run = w.failed_run
    counted = w.counted_failures(run)
    assert [w.metric_kinds(run)[m] for m in counted] == ["web"]
    assert f["failed_metrics"] == counted
    assert f["trigger"] == "evidence"


def test_dry_run_failure_evidence_fixed_leads_to_retry_not_undo(play: Callable[..., Played], tmp_path: Path) -> None:
    sbom = tmp_path / "sbom.json"
    sbom.write_text(json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.5", "components": []}))
    p = play("dry-run-metric-failed", params={"evidence_file": str(sbom), "evidence_name": "",
                                              "evidence_type": "sbom"})
    w = target(p)
    canary = w.release_of(w.canary_rs)
    missing = stored_verdict(w.failed_run)["missing"]
    step4 = p.step("remediate-and-retry")
    assert [r.path for r in p.mc_writes()] == [f"/api/v1/releases/{canary}/evidence"] and len(missing) == 1
    assert step4["facts"]["verdict_after"]["ok"] is True
    assert mutations(p) == [("retry", True)]
    assert step4["verdict"] == "needs_human" and "--approve-retry" in step4["reason"]
    assert_nothing_mutated(p)


# --------------------------------------------------------------------------- 4. retried once, aborted again


def _first_abort(w: Owned) -> datetime:
    """When the canary revision first aborted: its first failed run's last measurement."""
    first = w.failed_runs()[0]
    return min(parse_time(m["measurements"][-1]["finishedAt"]) for m in first["status"]["metricResults"]
               if m["phase"] in ("Failed", "Error"))


def test_retried_once_reads_the_newest_run_and_escalates_before_the_deadline(play: Callable[..., Played]) -> None:
    p = play("retried-once-invalid-sbom", approve_retry=True, approver="kim", ticket="CHG-9120")
    w, f = target(p), p.findings
    runs = w.failed_runs()
    assert len(runs) == 2 and runs[-1]["metadata"]["name"].endswith(".1")
    newest, first = stored_verdict(runs[-1]), stored_verdict(runs[0])
    assert newest["reason"] != first["reason"] and newest["invalid"] and not first["invalid"]
    assert f["analysis_run"] == runs[-1]["metadata"]["name"]
    assert f["mc_reason"] == newest["reason"]
    assert f["trigger"] == "evidence" and f["failed_metrics"] == w.counted_failures(runs[-1])
    assert_identity(p)
    assert_rollback_state(p)
    # MC still fails the release (invalid SBOM): even approved, no third attempt is sent
    step4 = p.step("remediate-and-retry")
    assert step4["facts"]["verdict_after"]["ok"] is False and step4["facts"]["verdict_after"]["invalid"] == newest["invalid"]
    assert step4["verdict"] == "needs_human" and f["retried"] is False and ("retry", False) not in mutations(p)
    assert_nothing_mutated(p)
    assert p.mc_writes() == []
    # aborted, retried, aborted again: a loop to escalate, but the 15 minutes have not run out yet
    step5 = p.step("escalate")
    assert sorted(step5["facts"]["loop"]["failed_runs"]) == sorted(r["metadata"]["name"] for r in runs)
    assert step5["facts"]["loop"]["retries"] == 1
    assert f["escalate"] is True and step5["verdict"] == "escalate"
    assert datetime.now(UTC) < _first_abort(w) + ESCALATE_AFTER
    assert step5["facts"]["past_deadline"] is False
    assert p.result.exit_code == 4


def test_retried_once_escalation_deadline_counts_from_the_first_abort(play: Callable[..., Played]) -> None:
    p = play("retried-once-invalid-sbom")
    w = target(p)
    assert parse_time(w.rollout["status"]["abortedAt"]) > _first_abort(w)  # the retry's abort is the later one
    due = parse_time(p.findings["escalation_due_at"])
    assert abs((due - (_first_abort(w) + ESCALATE_AFTER)).total_seconds()) <= 2


# --------------------------------------------------------------------------- 5. release id under another label


@pytest.mark.xdist_group("unseen2-release-id-other-label")
def test_release_label_key_findings_that_do_not_need_the_label(play: Callable[..., Played]) -> None:
    p = play("release-id-other-label")
    w, f = target(p), p.findings
    key = w.release_label_key()
    assert key != "release-id" and not any("release-id" in (rs["spec"]["template"]["metadata"]["labels"])
                                           for rs in w.replicasets)
    run = w.failed_run
    assert f["trigger"] == "evidence" and f["failed_metrics"] == w.counted_failures(run)
    assert f["mc_reason"] == stored_verdict(run)["reason"] and stored_verdict(run)["invalid"]
    assert f["evidence_release_id"] == stored_verdict(run)["release_id"] == w.release_of(w.canary_rs)
    assert_rollback_state(p)
    assert f["retried"] is False
    assert_nothing_mutated(p)
    assert p.mc_writes() == []


@pytest.mark.xdist_group("unseen2-release-id-other-label")
def test_release_label_key_identity_from_the_analysis_fieldref(play: Callable[..., Played]) -> None:
    p = play("release-id-other-label")
    assert_identity(p)
    assert p.step("validate-release-identity")["verdict"] == "pass"


@pytest.mark.xdist_group("unseen2-release-id-other-label")
def test_release_label_key_closeout(play: Callable[..., Played]) -> None:
    p = play("release-id-other-label")
    w = target(p)
    assert p.step("verify-closeout")["facts"]["expected_current_release"] == w.release_of(w.stable_rs)
    assert_closed_out(p)


# --------------------------------------------------------------------------- 6. workloadRef Rollout, SLO failure


@pytest.mark.xdist_group("unseen2-workload-ref")
def test_workload_ref_slo_regression_is_read_without_a_rollout_template(play: Callable[..., Played]) -> None:
    p = play("workload-ref-slo-regression")
    w, f = target(p), p.findings
    assert "template" not in w.rollout["spec"] and w.rollout["spec"]["workloadRef"]["kind"] == "Deployment"
    assert all(t.get("clusterScope") for t in w.analysis_step()["templates"])
    run = w.failed_run
    failed = w.counted_failures(run)
    assert failed and all(w.metric_kinds(run)[m] == "prometheus" for m in failed)
    assert f["trigger"] == "slo" and f["failed_metrics"] == failed
    assert f["mc_reason"] is None and stored_verdict(run)["ok"] is True
    assert_identity(p)
    assert_rollback_state(p)
    step4 = p.step("remediate-and-retry")
    assert step4["verdict"] == "needs_human" and f["retried"] is False and ("retry", True) not in mutations(p)
    assert_nothing_mutated(p)
    assert p.mc_writes() == []
    assert f["escalate"] is False
    assert_closed_out(p)


@pytest.mark.xdist_group("unseen2-workload-ref")
def test_workload_ref_undo_advice_targets_the_deployment(play: Callable[..., Played]) -> None:
    p = play("workload-ref-slo-regression")
    w = target(p)
    deployment = w.rollout["spec"]["workloadRef"]["name"]
    step4 = p.step("remediate-and-retry")
    undos = [m for m in step4["findings"]["mutations"] if m["action"] == "undo"]
    patches = [r for m in undos for r in m["requests"] if "/spec/template" in r["body"]]
    assert patches == []  # a template on a workloadRef Rollout is an InvalidSpec
    # an undo that would change nothing must not be what the operator is told to approve
    assert not (any(m["skipped"] for m in undos) and "--approve-undo" in step4["reason"]), step4["reason"]
    assert f"Deployment {deployment}" in step4["reason"] or f"deployment/{deployment}" in step4["reason"]
