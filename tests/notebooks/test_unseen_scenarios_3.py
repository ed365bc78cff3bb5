"""The whole playbook on a third round of unseen scenarios (tests/scenarios/, see its README): Mission Control
down for the whole incident, the failed AnalysisRun garbage-collected, an abort by hand, a sidecar listed
before the app container, a long-named Rollout in `default` with revisions above 100 and a metric that
failed 3 times against `failureLimit: 2`.

Every expectation is computed from the scenario's own objects as loaded (the target is the Rollout whose
status says it was aborted, its objects those it owns by UID), never from the scenario's name. Where the
product is known to be wrong the test is `xfail(strict=True)` with the reason.
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_unseen_scenarios import FAST_TIMINGS, HASH, SCENARIOS, Played, point_at, run_playbook
from test_unseen_scenarios_2 import (
    Owned,
    assert_closed_out,
    assert_identity,
    assert_nothing_mutated,
    assert_rollback_state,
    mc_current,
    mutations,
    service_of,
    stored_verdict,
    target,
)

from rollbook.sandbox.mc import Fault
from rollbook.sandbox.server import Sandbox

pytestmark = pytest.mark.notebooks

STEPS = ["confirm-rollback-status", "inspect-evidence", "validate-release-identity", "remediate-and-retry",
         "escalate", "verify-closeout"]
VERDICTS = {"pass", "fail", "needs_human", "escalate"}  # what a step may conclude; anything else is a crash
# A fault for every MC request of the run: far more than any bounded client could send.
FOREVER = 100_000
# The evidence client's own bound: one call is tried at most this many times (a retry budget, not a loop).
MAX_ATTEMPTS_PER_CALL = 4
ABORT_METRIC = re.compile(r'[Mm]etric "([^"]+)" assessed (Failed|Error)')

Setup = Callable[[Sandbox], None]


@pytest.fixture
def play(shared_runs: Any) -> Callable[..., Played]:
    """As the second round's `play`, with an optional `setup(sb)` run after start (e.g. MC faults).

    Once per (scenario, setup, parameters) in this module, shared by the tests that read it (conftest
    `SharedRuns`; a setup counts by its name and closure values)."""

    def go(scenario: str, *, setup: Setup | None = None, **kw: Any) -> Played:
        def make(folder: Path, start: Callable[..., Sandbox]) -> Played:
            sb = start(SCENARIOS / scenario, timings=FAST_TIMINGS)
            with pytest.MonkeyPatch.context() as mp:
                point_at(mp, sb)
                before = Owned.of_target(sb)
                mc_before = sb.mc.state
                if setup is not None:
                    setup(sb)
                return run_playbook(sb, before, mc_before, "INC-9913", folder / "out", **kw)

        return shared_runs.get(shared_runs.key(scenario, setup=setup, **kw), make)

    return go


def canary_runs(w: Owned) -> list[dict[str, Any]]:
    """The target's runs of the canary pod-template hash, whatever their phase."""
    return [r for r in w.runs if r["metadata"]["labels"][HASH] == w.rollout["status"]["currentPodHash"]]


def abort_metric(w: Owned) -> str | None:
    """The metric the Rollout's abort message names (None when it names none, e.g. an abort by hand)."""
    found = ABORT_METRIC.search(w.rollout["status"].get("message") or "")
    return found.group(1) if found else None


def template_kinds(sb: Sandbox, w: Owned) -> dict[str, str]:
    """Metric name -> provider of the analysis step's templates, read from the AnalysisTemplates themselves."""
    kinds: dict[str, str] = {}
    for ref in w.analysis_step()["templates"]:
        tpl = sb.store.get("analysistemplates", w.namespace, ref["templateName"])
        kinds.update({m["name"]: next(iter(m["provider"])) for m in tpl["spec"]["metrics"]})
    return kinds


def assert_every_step_concluded(p: Played) -> None:
    """All six steps ran and each reached a verdict (no crash, no missing step)."""
    assert [s["name"] for s in p.record["steps"]] == STEPS
    assert set(p.verdicts().values()) <= VERDICTS, p.verdicts()


def mc_live(p: Played, release: str) -> dict[str, Any]:
    """MC's answer for a release now (the stand-in's state, not over HTTP)."""
    return dict(p.sb.mc.verdict(release, "production"))


def app_container(w: Owned) -> str:
    """The container whose image differs between the canary and stable templates (the one that was released)."""
    def images(rs: dict[str, Any]) -> dict[str, str]:
        return {c["name"]: c["image"] for c in rs["spec"]["template"]["spec"]["containers"]}
    canary, stable = images(w.canary_rs), images(w.stable_rs)
    changed = [name for name in stable if canary.get(name) != stable[name]]
    assert len(changed) == 1, changed
    return changed[0]


# --------------------------------------------------------------------------- 1. MC down for the whole incident


def _mc_down(kind: str) -> Setup:
    """Every MC call fails: a 503 from the proxy, or an SSO login page answered 200 text/html."""
    def setup(sb: Sandbox) -> None:
        if kind == "503":
            sb.mc.add_fault(Fault(path_prefix="/", times=FOREVER, status=503, retry_after=1))
        else:
            sb.mc.add_fault(Fault(path_prefix="/", times=FOREVER, html=True))
    return setup


MC_DOWN = {"503": "503", "html": "text/html"}  # fault -> what the operator must be told


@pytest.mark.parametrize("fault", sorted(MC_DOWN))
def test_mc_down_every_step_concludes_from_the_cluster_alone(play: Callable[..., Played], fault: str) -> None:
    p = play("mc-unreachable-during-triage", setup=_mc_down(fault), approve_retry=True, approver="lee",
             ticket="CHG-4410")
    w, f = target(p), p.findings
    assert_every_step_concluded(p)
    assert all(r.status != 200 or fault == "html" for r in p.sb.mc.requests)  # MC never really answered
    run = w.failed_run
    # what the cluster itself stores is enough for the trigger and MC's reason at the time of the abort
    assert f["analysis_run"] == run["metadata"]["name"]
    assert f["trigger"] == "evidence" and f["failed_metrics"] == w.counted_failures(run)
    assert f["mc_reason"] == stored_verdict(run)["reason"]
    assert f["release_id"] == w.release_of(w.canary_rs) == f["evidence_release_id"]
    assert_rollback_state(p)
    step2 = p.step("inspect-evidence")
    assert step2["facts"]["mc_live_ok"] is None and MC_DOWN[fault] in step2["facts"]["mc_live_error"]
    # MC could not confirm the release: the identity is not established (neither true nor made false)
    step3 = p.step("validate-release-identity")
    assert f["release_identity_ok"] is None and step3["verdict"] == "needs_human"
    assert MC_DOWN[fault] in step3["reason"]
    # even approved, nothing is retried while MC cannot be asked; the operator is told MC is the problem
    step4 = p.step("remediate-and-retry")
    assert step4["verdict"] == "needs_human" and f["retried"] is False and ("retry", False) not in mutations(p)
    assert "MC" in step4["reason"] and MC_DOWN[fault] in step4["reason"]
    assert_nothing_mutated(p)
    assert p.mc_writes() == []
    assert f["closeout_ok"] is not True and p.step("verify-closeout")["verdict"] != "pass"
    assert_mc_calls_bounded(p)


def assert_mc_calls_bounded(p: Played) -> None:
    """Each MC endpoint is tried a bounded number of times over the whole run: no step retries blindly."""
    per_path = collections.Counter(r.path for r in p.sb.mc.requests)
    assert per_path, "the playbook never tried MC"
    assert max(per_path.values()) <= MAX_ATTEMPTS_PER_CALL * len(STEPS), per_path
    assert sum(per_path.values()) <= 60, per_path


def test_mc_down_closeout_says_mc_is_unreachable(play: Callable[..., Played]) -> None:
    p = play("mc-unreachable-during-triage", setup=_mc_down("html"))  # the quick variant: a login page is not retried
    step6 = p.step("verify-closeout")
    assert step6["verdict"] != "pass"
    assert "does not know" not in step6["reason"] and MC_DOWN["html"] in step6["reason"], step6["reason"]


# --------------------------------------------------------------------------- 2. the failed run was garbage-collected


@pytest.mark.xdist_group("unseen3-analysisrun-gc")
def test_run_gone_reason_comes_from_mc_live_and_nothing_is_guessed(play: Callable[..., Played]) -> None:
    p = play("analysisrun-garbage-collected")
    w, f = target(p), p.findings
    assert canary_runs(w) == [] and w.runs  # only other revisions' runs are left
    assert w.rollout["spec"]["analysis"]["unsuccessfulRunHistoryLimit"] == 0
    canary = w.release_of(w.canary_rs)
    assert_every_step_concluded(p)
    assert f["analysis_run"] is None  # not another revision's run passed off as the failed one
    assert f["status_message"] == w.rollout["status"]["message"]
    # MC's reason lives only in MC now
    assert f["mc_reason"] == mc_live(p, canary)["reason"] and mc_live(p, canary)["ok"] is False
    assert f["release_id"] == canary and f["evidence_release_id"] is None
    assert f["release_identity_ok"] is not False
    assert p.step("inspect-evidence")["verdict"] == "needs_human"
    assert_rollback_state(p)
    step4 = p.step("remediate-and-retry")
    assert step4["verdict"] == "needs_human" and f["retried"] is False and mutations(p) == []
    assert_nothing_mutated(p)
    assert p.mc_writes() == []
    assert f["escalate"] is False
    assert_closed_out(p)


@pytest.mark.xdist_group("unseen3-analysisrun-gc")
def test_run_gone_trigger_is_read_from_the_abort_message(play: Callable[..., Played]) -> None:
    p = play("analysisrun-garbage-collected")
    w, f = target(p), p.findings
    metric = abort_metric(w)
    assert metric is not None
    kind = template_kinds(p.sb, w)[metric]
    assert f["failed_metrics"] == [metric]
    assert f["trigger"] == {"web": "evidence", "prometheus": "slo"}[kind]


# --------------------------------------------------------------------------- 3. aborted by hand


def test_abort_by_hand_is_not_read_as_a_gate_failure(play: Callable[..., Played]) -> None:
    p = play("aborted-by-hand", approve_retry=True, approver="ola", ticket="CHG-7003")
    w, f = target(p), p.findings
    assert w.rollout["status"]["abort"] is True and abort_metric(w) is None
    runs = canary_runs(w)
    assert runs and all(r["status"]["phase"] == "Successful" and r["spec"].get("terminate") for r in runs)
    assert mc_live(p, w.release_of(w.canary_rs))["ok"] is True
    assert_every_step_concluded(p)
    assert f["trigger"] == "none" and f["failed_metrics"] == [] and f["mc_reason"] is None
    assert_identity_without_failed_run(p)
    assert_rollback_state(p)
    # nobody knows why it was aborted: neither a retry (even approved) nor an undo is sent or recommended
    step4 = p.step("remediate-and-retry")
    assert step4["verdict"] == "needs_human" and f["retried"] is False and mutations(p) == []
    assert_nothing_mutated(p)
    assert p.mc_writes() == []
    assert f["escalate"] is False
    assert_closed_out(p)


def assert_identity_without_failed_run(p: Played) -> None:
    """Identity from the canary ReplicaSet and the (terminated) run's payload, which MC knows."""
    w, f = target(p), p.findings
    canary = w.release_of(w.canary_rs)
    assert f["release_id"] == canary
    assert f["evidence_release_id"] in (None, canary) and f["release_identity_ok"] is not False


def test_abort_by_hand_step1_does_not_blame_an_analysis(play: Callable[..., Played]) -> None:
    p = play("aborted-by-hand")
    reason = p.step("confirm-rollback-status")["reason"]
    assert "  " not in reason and not re.search(r"\banalysis\b", reason, re.IGNORECASE), reason


# --------------------------------------------------------------------------- 4. a sidecar listed before the app


@pytest.mark.xdist_group("unseen3-sidecar-first")
def test_sidecar_first_findings_and_closeout(play: Callable[..., Played]) -> None:
    p = play("sidecar-first-app-changed")
    w, f = target(p), p.findings
    containers = w.stable_rs["spec"]["template"]["spec"]["containers"]
    assert len(containers) > 1 and containers[0]["name"] != app_container(w)  # what makes this adversarial
    run = w.failed_run
    assert f["trigger"] == "evidence" and f["failed_metrics"] == w.counted_failures(run)
    assert f["mc_reason"] == stored_verdict(run)["reason"]
    assert_identity(p)
    assert_rollback_state(p)
    assert p.step("remediate-and-retry")["verdict"] == "needs_human" and f["retried"] is False
    assert_nothing_mutated(p)
    assert_closed_out(p)


@pytest.mark.xdist_group("unseen3-sidecar-first")
def test_sidecar_first_stable_image_is_the_app_containers(play: Callable[..., Played]) -> None:
    p = play("sidecar-first-app-changed")
    w = target(p)
    name = app_container(w)
    expected = next(c["image"] for c in w.stable_rs["spec"]["template"]["spec"]["containers"] if c["name"] == name)
    assert p.findings["stable_image"] == expected


# --------------------------------------------------------------------------- 5. `default`, long name, revision 103


def test_revisions_above_100_and_failure_limit_2(play: Callable[..., Played]) -> None:
    p = play("default-ns-long-name-rev-103")
    w, f = target(p), p.findings
    assert w.namespace == "default" and w.name.count("-") >= 5
    revs = [rs["metadata"]["annotations"]["rollout.argoproj.io/revision"] for rs in w.replicasets]
    assert max(revs) != str(max(int(r) for r in revs))  # a string comparison would pick the wrong one
    run = w.failed_run
    failed = w.counted_failures(run)
    assert failed and all(w.metric_kinds(run)[m] == "prometheus" for m in failed)
    result = next(m for m in run["status"]["metricResults"] if m["name"] == failed[0])
    limit = next(m["failureLimit"] for m in run["spec"]["metrics"] if m["name"] == failed[0])
    bad = [m for m in result["measurements"] if m["phase"] == "Failed"]
    assert limit > 0 and len(bad) == limit + 1 < len(result["measurements"])  # mixed values, not all bad
    assert stored_verdict(run)["ok"] is True
    assert f["trigger"] == "slo" and f["failed_metrics"] == failed and f["mc_reason"] is None
    step2 = p.step("inspect-evidence")
    assert f"{len(bad)} of {len(result['measurements'])}" in step2["reason"]
    assert_identity(p)
    assert_rollback_state(p)
    assert f["canary_revision"] > f["stable_revision"] >= 100
    # the undo is recorded as a dry run, back to the previous revision's template
    step4 = p.step("remediate-and-retry")
    undo = [m for m in step4["findings"]["mutations"] if m["action"] == "undo"]
    assert mutations(p) == [("undo", True)] and undo[0]["target_revision"] == w.revision_of(w.previous_rs)
    patch = json.loads(undo[0]["requests"][0]["body"])[0]["value"]
    assert patch["spec"]["containers"] == w.previous_rs["spec"]["template"]["spec"]["containers"]
    assert HASH not in patch["metadata"]["labels"]
    assert step4["verdict"] == "needs_human" and f["retried"] is False and "--approve-undo" in step4["reason"]
    assert_nothing_mutated(p)
    assert p.mc_writes() == []
    # MC's service is not the Rollout's name: close-out must ask MC about the service the release belongs to
    service = service_of(p, w.release_of(w.stable_rs))
    assert service != w.name and mc_current(p, service) == w.release_of(w.stable_rs)
    assert_closed_out(p)
    assert p.result.exit_code == 5  # step 4 needs a human (undo not approved): its own code


# --------------------------------------------------------------------------- 6. evidence re-attached under another id


def _twins(p: Played, release: str) -> list[str]:
    """Other MC release ids of the same artifact (same digest) as `release`, from MC's state as loaded."""
    releases = p.mc_before["releases"]
    digest = next(r["artifact_digest"] for r in releases if r["release_id"] == release)
    return [r["release_id"] for r in releases if r["artifact_digest"] == digest and r["release_id"] != release]


def test_evidence_on_another_id_does_not_make_the_canary_pass(play: Callable[..., Played]) -> None:
    p = play("evidence-reattached-other-id", approve_retry=True, approver="noor", ticket="CHG-2291")
    w, f = target(p), p.findings
    canary = w.release_of(w.canary_rs)
    twins = _twins(p, canary)
    # what makes this adversarial: the same artifact under another id passes in MC, the canary's id does not
    assert twins and all(mc_live(p, t)["ok"] for t in twins) and mc_live(p, canary)["ok"] is False
    run = w.failed_run
    assert f["trigger"] == "evidence" and f["failed_metrics"] == w.counted_failures(run)
    assert f["mc_reason"] == stored_verdict(run)["reason"]
    step2 = p.step("inspect-evidence")
    assert step2["facts"]["mc_live_ok"] is False and step2["facts"]["mc_live_reason"] == mc_live(p, canary)["reason"]
    assert_identity(p)  # the canary is still the id the analysis asked about, not the twin
    assert not any(t in (f["release_id"], f["evidence_release_id"]) for t in twins)
    assert_rollback_state(p)
    # approved, but MC still fails the id the analysis will ask about: a retry would abort again
    step4 = p.step("remediate-and-retry")
    assert step4["verdict"] == "needs_human" and f["retried"] is False and ("retry", False) not in mutations(p)
    assert_nothing_mutated(p)
    assert p.mc_writes() == []
    assert f["escalate"] is False
    assert_closed_out(p)


def test_evidence_on_another_id_advice_names_the_canary_id(play: Callable[..., Played]) -> None:
    p = play("evidence-reattached-other-id")
    w = target(p)
    canary = w.release_of(w.canary_rs)
    missing = mc_live(p, canary)["missing"]
    reason = p.step("remediate-and-retry")["reason"]
    assert canary in reason and all(m in reason for m in missing), reason


# --------------------------------------------------------------------------- 7. the revision before the canary also aborted


def _aborted_before(w: Owned) -> dict[str, Any]:
    """The ReplicaSet right below the canary, which (in this world) is not stable and has a Failed run of its own."""
    below = w.previous_rs
    assert below["metadata"]["uid"] != w.stable_rs["metadata"]["uid"]
    own = [r for r in w.runs if r["metadata"]["labels"][HASH] == below["metadata"]["labels"][HASH]]
    assert own and all(r["status"]["phase"] == "Failed" for r in own)
    return below


@pytest.mark.xdist_group("unseen3-previous-revision")
def test_previous_revision_aborted_undo_goes_back_to_stable_not_to_it(play: Callable[..., Played]) -> None:
    p = play("previous-revision-also-aborted")
    w, f = target(p), p.findings
    bad = _aborted_before(w)
    run = w.failed_run
    assert f["trigger"] == "slo" and f["failed_metrics"] == w.counted_failures(run) and f["mc_reason"] is None
    assert f["analysis_run"] == run["metadata"]["name"]
    assert_identity(p)
    assert f["stable_revision"] == w.revision_of(w.stable_rs) and f["canary_revision"] == w.revision_of(w.canary_rs)
    # the revision just below the canary aborted itself and never went live: stable is the previous release
    assert f["stable_is_previous_release"] is True
    # the plugin's default undo target (second-highest revision) is the release that already failed: never that
    step4 = p.step("remediate-and-retry")
    undo = [m for m in step4["findings"]["mutations"] if m["action"] == "undo"]
    assert mutations(p) == [("undo", True)] and undo[0]["target_revision"] == w.revision_of(w.stable_rs)
    assert undo[0]["target_revision"] != w.revision_of(bad)
    patch = json.loads(undo[0]["requests"][0]["body"])[0]["value"]
    assert patch["spec"]["containers"] == w.stable_rs["spec"]["template"]["spec"]["containers"]
    assert step4["verdict"] == "needs_human" and f["retried"] is False
    # yesterday's abort of another revision is not a retry loop of this one
    step5 = p.step("escalate")
    assert sorted(step5["facts"]["loop"]["failed_runs"]) == sorted(r["metadata"]["name"] for r in w.failed_runs())
    assert f["escalate"] is False
    assert_nothing_mutated(p)
    assert p.mc_writes() == []


@pytest.mark.xdist_group("unseen3-previous-revision")
def test_previous_revision_aborted_rollback_is_confirmed_and_closed(play: Callable[..., Played]) -> None:
    p = play("previous-revision-also-aborted")
    w = target(p)
    _aborted_before(w)
    assert mc_current(p, service_of(p, w.release_of(w.stable_rs))) == w.release_of(w.stable_rs)
    assert p.step("confirm-rollback-status")["verdict"] == "pass"
    assert_closed_out(p)
