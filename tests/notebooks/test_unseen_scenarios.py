"""The whole playbook on scenarios it was not written against (tests/scenarios/): other names, namespaces,
release ids, message forms and failure mixes.

Every expectation is computed from the scenario's own objects (the Rollout, its ReplicaSets and pods,
the AnalysisRun, MC's state) as they were loaded, never from the scenario's name. Where the product is
known to be wrong the test is `xfail(strict=True)` with the reason; the report lists them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rollbook import app, runner
from rollbook.sandbox.controller import Timings
from rollbook.sandbox.server import Sandbox

pytestmark = pytest.mark.notebooks

FAST_TIMINGS = Timings(analysis_seconds=0.1, error_interval_seconds=0.02, scale=0.01, idle_poll_seconds=0.05)

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
HASH = "rollouts-pod-template-hash"
REVISION = "rollout.argoproj.io/revision"
EVIDENCE_STATUS = "/evidence-status"


# --------------------------------------------------------------------------- what the objects say


@dataclass
class World:
    """The scenario as loaded, read from the sandbox's store before the playbook touched anything."""

    namespace: str
    name: str
    rollout: dict[str, Any]
    replicasets: list[dict[str, Any]]
    pods: list[dict[str, Any]]
    runs: list[dict[str, Any]]

    @classmethod
    def read(cls, sb: Sandbox) -> World:
        """Deep copies of the target Rollout and its namespace's objects."""
        ns, name = sb.rollouts[0]
        return cls(ns, name, sb.store.get("rollouts", ns, name), sb.store.list("replicasets", ns)[0],
                   sb.store.list("pods", ns)[0], sb.store.list("analysisruns", ns)[0])

    def rs(self, pod_hash: str) -> dict[str, Any]:
        """The ReplicaSet of a pod-template hash."""
        return next(rs for rs in self.replicasets if rs["metadata"]["labels"][HASH] == pod_hash)

    @property
    def canary_rs(self) -> dict[str, Any]:
        return self.rs(self.rollout["status"]["currentPodHash"])

    @property
    def stable_rs(self) -> dict[str, Any]:
        return self.rs(self.rollout["status"]["stableRS"])

    def release_of(self, rs: dict[str, Any]) -> str:
        """The release-id label of a ReplicaSet's pod template."""
        return str(rs["spec"]["template"]["metadata"]["labels"]["release-id"])

    def revision_of(self, obj: dict[str, Any]) -> int:
        return int(obj["metadata"]["annotations"][REVISION])

    @property
    def previous_rs(self) -> dict[str, Any]:
        """The ReplicaSet with the highest revision below the canary's (the release before it)."""
        below = self.revision_of(self.canary_rs)
        return max((rs for rs in self.replicasets if self.revision_of(rs) < below), key=self.revision_of)

    def pods_of(self, rs: dict[str, Any]) -> list[dict[str, Any]]:
        uid = rs["metadata"]["uid"]
        return [p for p in self.pods if any(o["uid"] == uid for o in p["metadata"].get("ownerReferences") or [])]

    @property
    def failed_run(self) -> dict[str, Any]:
        """The canary's run that ended Failed or Error."""
        canary = self.rollout["status"]["currentPodHash"]
        return next(r for r in self.runs if r["metadata"]["labels"][HASH] == canary
                    and r["status"]["phase"] in ("Failed", "Error"))

    def metrics_in(self, run: dict[str, Any], *phases: str) -> list[str]:
        """Names of the run's metric results in the given phases, in the run's order."""
        return [m["name"] for m in run["status"]["metricResults"] if m["phase"] in phases]

    def stored_verdict(self, run: dict[str, Any], metric: str) -> dict[str, Any]:
        """MC's verdict as Argo's web provider stored it in the metric's last measurement value."""
        result = next(m for m in run["status"]["metricResults"] if m["name"] == metric)
        return dict(json.loads(result["measurements"][-1]["value"]))


@dataclass
class Played:
    """One headless run of the playbook on a scenario, with the world before it and the sandbox after."""

    sb: Sandbox
    before: World
    result: runner.RunResult
    record: dict[str, Any]
    mc_before: dict[str, Any] = field(default_factory=dict)

    @property
    def findings(self) -> dict[str, Any]:
        return dict(self.record["findings"])

    def step(self, name: str) -> dict[str, Any]:
        return next(s for s in self.record["steps"] if s["name"] == name)

    def verdicts(self) -> dict[str, str]:
        return {s["name"]: s["verdict"] for s in self.record["steps"]}

    def cluster_writes(self) -> list[Any]:
        """Requests to the API server that could change something and were not server-side dry runs."""
        return [r for r in self.sb.apiserver.requests if r.method not in ("GET", "HEAD")
                and r.query.get("dryRun") != "All"]

    def mc_writes(self) -> list[Any]:
        return [r for r in self.sb.mc.requests if r.method not in ("GET", "HEAD")]

    def rollout_now(self) -> dict[str, Any]:
        return self.sb.store.get("rollouts", self.before.namespace, self.before.name)


Hook = Callable[[Sandbox, World], None]


def run_playbook(sb: Sandbox, before: Any, mc_before: Any, incident: str, out: Path, **kw: Any) -> Played:
    """The whole playbook headless through `app.run` against the sandbox, as a user runs it."""
    params = {"config": str(sb.config_file), **kw.pop("params", {})}
    spec = runner.RunSpec(incident=incident, namespace=before.namespace, rollout=before.name, out=out,
                          runbooks_dir=app.default_runbooks(), step_timeout=120, params=params, **kw)
    result = app.run(spec, config=str(sb.config_file))
    record = json.loads((result.record_dir / "record.json").read_text())
    return Played(sb, before, result, record, mc_before)


@pytest.fixture
def play(shared_runs: Any) -> Callable[..., Played]:
    """Start a scenario folder, run all six steps through `app.run` with the sandbox's own config.

    Once per (scenario, hook, timings, parameters) in this module: tests asking for the same run share it
    (conftest `SharedRuns`; they only read the result) and carry the same xdist_group."""

    def go(scenario: str, *, during: Hook | None = None, timings: Timings | None = None, **kw: Any) -> Played:
        def make(folder: Path, start: Callable[..., Sandbox]) -> Played:
            # a test that plays Argo's part itself gets a controller too slow to pre-empt it
            slow = Timings(analysis_seconds=600.0, error_interval_seconds=0.02, scale=100.0, idle_poll_seconds=0.05)
            sb = start(SCENARIOS / scenario, timings=timings or (slow if during is not None else FAST_TIMINGS))
            with pytest.MonkeyPatch.context() as mp:
                point_at(mp, sb)
                before = World.read(sb)
                mc_before = sb.mc.state
                thread = None
                if during is not None:  # the cluster moving on while the playbook runs (e.g. Argo finishing a rollback)
                    thread = threading.Thread(target=during, args=(sb, before), daemon=True, name=f"during-{scenario}")
                    thread.start()
                try:
                    return run_playbook(sb, before, mc_before, "INC-7731", folder / "out", **kw)
                finally:
                    if thread is not None:
                        thread.join(timeout=10)

        return shared_runs.get(shared_runs.key(scenario, during=during, timings=timings, **kw), make)

    return go


def mc_verdict(p: Played, release: str) -> dict[str, Any]:
    """What MC's stand-in answers for a release now."""
    return dict(p.sb.mc.verdict(release, "production"))


def service_of(p: Played, release: str) -> str:
    """The MC service a release belongs to (from MC's state as loaded)."""
    return str(next(r["service"] for r in p.mc_before["releases"] if r["release_id"] == release))


def mc_current(p: Played, service: str) -> str:
    """The release MC shows as current production for a service."""
    return str(p.sb.mc.current("production", service)["current"]["release_id"])


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def stable_is_sound(w: World) -> bool:
    """Stable pods all Ready and the stable ReplicaSet fully available, as loaded."""
    rs = w.stable_rs
    return all(pod_ready(p) for p in w.pods_of(rs)) and \
        int(rs["status"].get("availableReplicas") or 0) >= int(rs["spec"]["replicas"])


def assert_nothing_mutated(p: Played) -> None:
    """No unapproved write reached the cluster; the Rollout is still as loaded (spec, abort, template)."""
    assert p.cluster_writes() == [], [(r.method, r.path) for r in p.cluster_writes()]
    now, then = p.rollout_now(), p.before.rollout
    assert now["metadata"]["generation"] == then["metadata"]["generation"]
    assert now["spec"]["template"] == then["spec"]["template"]
    assert bool(now["status"].get("abort")) == bool(then["status"].get("abort"))


# --------------------------------------------------------------------------- 1. both gates failed


def _clean_scan(tmp_path: Path) -> Path:
    report = tmp_path / "rescan.json"
    report.write_text(json.dumps({"scanner": "trivy 0.56", "summary": {"critical": 0, "high": 3, "medium": 12}}))
    return report


def test_both_gates_failed_is_evidence_plus_slo_and_never_retried(play: Callable[..., Played],
                                                                   tmp_path: Path) -> None:
    p = play("both-gates-failed", approve_retry=True, approver="dana", ticket="CHG-5512",
             params={"evidence_file": str(_clean_scan(tmp_path)), "evidence_name": "security-scan",
                     "evidence_type": "security-scan"})
    w, f = p.before, p.findings
    run = w.failed_run
    canary = w.release_of(w.canary_rs)
    stored = w.stored_verdict(run, "mc-evidence-ok")
    assert f["phase"] == "Degraded" and f["status_message"] == w.rollout["status"]["message"]
    assert f["trigger"] == "evidence+slo"
    assert set(f["failed_metrics"]) == set(w.metrics_in(run, "Failed")) == {"mc-evidence-ok", "ig-latency-p99"}
    assert f["analysis_run"] == run["metadata"]["name"]
    assert f["mc_reason"] == stored["reason"] and "security-scan" in f["mc_reason"]
    assert f["release_id"] == canary == f["evidence_release_id"] == stored["release_id"]
    assert f["release_identity_ok"] is True
    assert f["stable_is_previous_release"] is (w.stable_rs["metadata"]["uid"] == w.previous_rs["metadata"]["uid"])
    assert f["stable_revision"] == w.revision_of(w.stable_rs) and f["canary_revision"] == w.revision_of(w.canary_rs)
    # the clean scan was attached and MC passes the release now, yet the SLO failure forbids a retry
    step4 = p.step("remediate-and-retry")
    assert step4["facts"]["verdict_after"]["ok"] is True and mc_verdict(p, canary)["ok"] is True
    assert step4["verdict"] == "needs_human" and "SLO" in step4["reason"]
    # the SLO failure makes undo the recommendation: recorded as a server-side dry run only (not approved)
    assert f["retried"] is False
    assert [(m["action"], m["dry_run"]) for m in step4["findings"]["mutations"]] == [("undo", True)]
    assert_nothing_mutated(p)
    assert [r.path for r in p.mc_writes()] == [f"/api/v1/releases/{canary}/evidence"]
    assert f["escalate"] is False and p.verdicts()["escalate"] == "pass"
    assert stable_is_sound(w) and mc_current(p, service_of(p, canary)) == w.release_of(w.stable_rs)
    assert f["closeout_ok"] is True
    assert p.result.exit_code == 5  # step 4 needs a human (no retry): its own code since issue 13


# --------------------------------------------------------------------------- 2. v1.2-v1.8 message, renamed gate


def test_legacy_message_and_renamed_gate_still_read_as_the_evidence_trigger(play: Callable[..., Played]) -> None:
    p = play("legacy-message-renamed-gate")
    w, f = p.before, p.findings
    run = w.failed_run
    gate = w.metrics_in(run, "Failed")
    (gate_name,) = gate
    web = next(m for m in run["spec"]["metrics"] if m["name"] == gate_name)["provider"]["web"]
    assert EVIDENCE_STATUS in web["url"] and gate_name != "mc-evidence-ok"  # the scenario is what it claims
    stored = w.stored_verdict(run, gate_name)
    canary = w.release_of(w.canary_rs)
    assert "Step-based" not in w.rollout["status"]["message"]
    assert f["phase"] == "Degraded" and f["status_message"] == w.rollout["status"]["message"]
    assert p.step("confirm-rollback-status")["facts"]["abort_message_form"] == "v1.2-v1.8"
    assert p.verdicts()["confirm-rollback-status"] == "pass"
    assert f["trigger"] == "evidence" and f["failed_metrics"] == gate
    assert f["mc_reason"] == stored["reason"] == mc_verdict(p, canary)["reason"]
    step2 = p.step("inspect-evidence")
    assert step2["verdict"] == "pass" and step2["facts"]["mc_reason_source"] == "analysisrun"
    # no `rollout` label on the runs: the playbook's selector finds nothing, the hash selector does
    assert step2["facts"]["playbook_selector_works"] is False
    assert f"{HASH}={w.rollout['status']['currentPodHash']}" in step2["facts"]["working_command"]
    assert f["release_id"] == canary == f["evidence_release_id"] and f["release_identity_ok"] is True
    assert f["stable_is_previous_release"] is True and f["stable_revision"] == w.revision_of(w.stable_rs)
    step4 = p.step("remediate-and-retry")
    assert step4["verdict"] == "needs_human" and f["retried"] is False  # MC still fails it: nothing to retry
    assert_nothing_mutated(p)
    assert p.mc_writes() == []
    assert f["escalate"] is False and f["closeout_ok"] is True and p.result.exit_code == 5  # step 4 needs a human


# --------------------------------------------------------------------------- 3. pre-1.0 object, background analysis


def test_pre_v1_object_phase_is_derived_and_background_run_found(play: Callable[..., Played]) -> None:
    p = play("pre-v1-background-analysis")
    w, f = p.before, p.findings
    status = w.rollout["status"]
    assert "phase" not in status and "message" not in status
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    run = w.failed_run
    assert run["metadata"]["labels"]["rollout-type"] == "Background"
    assert f["phase"] == "Degraded"
    assert f["status_message"] == f"{progressing['reason']}: {progressing['message']}"
    step1 = p.step("confirm-rollback-status")
    assert step1["facts"]["abort_message_form"] == "v1.0-v1.1" and step1["verdict"] == "pass"
    assert f["trigger"] == "evidence" and f["failed_metrics"] == w.metrics_in(run, "Failed")
    assert f["analysis_run"] == run["metadata"]["name"]
    stored = w.stored_verdict(run, "mc-evidence-ok")
    assert f["mc_reason"] == stored["reason"] and "junit" in f["mc_reason"]
    canary = w.release_of(w.canary_rs)
    assert f["release_id"] == canary == f["evidence_release_id"] and f["release_identity_ok"] is True
    assert f["stable_is_previous_release"] is True
    assert f["canary_revision"] == w.revision_of(w.canary_rs) and f["stable_revision"] == w.revision_of(w.stable_rs)
    assert p.verdicts()["remediate-and-retry"] == "needs_human" and f["retried"] is False
    assert_nothing_mutated(p)
    assert f["escalate"] is False and f["closeout_ok"] is True and p.result.exit_code == 5  # step 4 needs a human


# --------------------------------------------------------------------------- Argo's part where the sandbox has none


def point_at(mp: pytest.MonkeyPatch, sb: Sandbox) -> None:
    """The environment a kernel of the run sees: this sandbox's cluster and MC (the write token, so that an
    approved step 4 can attach evidence), no token or config of the machine's own."""
    for key, value in {"KUBECONFIG": str(sb.kubeconfig), "ROLLBOOK_MC_URL": sb.mc_url,
                       "ROLLBOOK_MC_TOKEN_FILE": str(sb.mc_write_token_file)}.items():
        mp.setenv(key, value)
    mp.delenv("ROLLBOOK_MC_TOKEN", raising=False)
    mp.delenv("ROLLBOOK_CONFIG", raising=False)


def _rollout_gets(sb: Sandbox, w: World) -> int:
    path = f"/apis/argoproj.io/v1alpha1/namespaces/{w.namespace}/rollouts/{w.name}"
    return sum(1 for r in sb.apiserver.requests if r.method == "GET" and r.path == path)


def _release_reads(sb: Sandbox, release: str) -> int:
    """GETs of MC's release metadata (the snapshot asks once, step 3 once more)."""
    return sum(1 for r in sb.mc.requests if r.method == "GET" and r.path == f"/api/v1/releases/{release}")


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _ready_status(pod: dict[str, Any]) -> dict[str, Any]:
    """A pod's status once its containers run and pass readiness."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = dict(pod["status"], phase="Running")
    status["conditions"] = [dict(c, status="True", lastTransitionTime=now) for c in status.get("conditions") or []]
    for c in status["conditions"]:
        c.pop("reason", None)
        c.pop("message", None)
    status["containerStatuses"] = [dict(cs, ready=True, started=True, state={"running": {"startedAt": now}})
                                   for cs in status.get("containerStatuses") or []]
    return status


def finish_rollback(sb: Sandbox, w: World) -> None:
    """What Argo and the ReplicaSet controller do next: the canary scaled to 0, stable pods Ready, counts updated."""
    st, ns = sb.store, w.namespace
    canary, stable = w.canary_rs, w.stable_rs
    for pod in w.pods_of(canary):
        st.delete("pods", ns, pod["metadata"]["name"])
    st.patch("replicasets", ns, canary["metadata"]["name"], {"spec": {"replicas": 0}}, "merge")
    st.set_status("replicasets", ns, canary["metadata"]["name"], {"replicas": 0, "observedGeneration": 3})
    for pod in w.pods_of(stable):
        if not pod_ready(pod):
            st.set_status("pods", ns, pod["metadata"]["name"], _ready_status(pod))
    n = int(stable["spec"]["replicas"])
    st.set_status("replicasets", ns, stable["metadata"]["name"], dict(
        stable["status"], replicas=n, fullyLabeledReplicas=n, readyReplicas=n, availableReplicas=n))
    ro = st.get("rollouts", ns, w.name)
    st.set_status("rollouts", ns, w.name, dict(ro["status"], replicas=n, updatedReplicas=0, readyReplicas=n,
                                               availableReplicas=n, HPAReplicas=n))


def after_identity_read(sb: Sandbox, w: World) -> None:
    """Scale the canary down once step 3 has read it (its MC release lookup follows its cluster read)."""
    canary = w.release_of(w.canary_rs)
    _wait(lambda: _release_reads(sb, canary) >= 2, 90)
    finish_rollback(sb, w)


def while_step1_waits(sb: Sandbox, w: World) -> None:
    """Finish the rollback after steps 2-3 have read and step 1 has polled a few more times (bounded)."""
    canary = w.release_of(w.canary_rs)
    _wait(lambda: _release_reads(sb, canary) >= 2, 90)
    seen = _rollout_gets(sb, w)
    _wait(lambda: _rollout_gets(sb, w) >= seen + 3, 20)
    finish_rollback(sb, w)


def release_when_step1_polls(sb: Sandbox, w: World) -> None:
    """Start the held controller's clock once steps 2-3 have read and step 1 has polled a few more times."""
    canary = w.release_of(w.canary_rs)
    assert sb.controller is not None and sb.controller.held
    try:
        _wait(lambda: _release_reads(sb, canary) >= 2, 90)
        seen = _rollout_gets(sb, w)
        _wait(lambda: _rollout_gets(sb, w) >= seen + 3, 20)
    finally:
        sb.controller.release()


# --------------------------------------------------------------------------- 4. canary pods still present


@pytest.mark.xdist_group("unseen1-canary-pods-lingering")
def test_identity_comes_from_live_canary_pods_while_they_linger(play: Callable[..., Played]) -> None:
    p = play("canary-pods-lingering", during=after_identity_read, params={"wait_seconds": 60})
    w, f = p.before, p.findings
    live = {pod["metadata"]["labels"]["release-id"] for pod in w.pods_of(w.canary_rs)}
    assert len(live) == 1 and w.rollout["status"]["canary"]["weights"]["canary"]["weight"] == 0
    step3 = p.step("validate-release-identity")
    assert "live" in step3["facts"]["canary_release_id_from"] and w.canary_rs["metadata"]["name"] in \
        step3["facts"]["canary_release_id_from"]
    assert f["release_id"] == live.pop() == f["evidence_release_id"] and f["release_identity_ok"] is True
    assert step3["verdict"] == "pass"
    step1 = p.step("confirm-rollback-status")
    assert step1["verdict"] == "pass" and f["stable_is_previous_release"] is True
    run = w.failed_run
    assert f["trigger"] == "evidence" and f["failed_metrics"] == w.metrics_in(run, "Failed", "Error")
    assert f["mc_reason"] == w.stored_verdict(run, "mc-evidence-ok")["reason"]
    assert p.step("inspect-evidence")["facts"]["playbook_selector_works"] is True  # analysisRunMetadata label
    assert f["retried"] is False
    assert_nothing_mutated(p)
    assert f["escalate"] is False


@pytest.mark.xdist_group("unseen1-canary-pods-lingering")
def test_closeout_passes_once_the_lingering_canary_is_scaled_down(play: Callable[..., Played]) -> None:
    p = play("canary-pods-lingering", during=after_identity_read, params={"wait_seconds": 60})
    w = p.before
    assert w.pods_of(w.canary_rs) and stable_is_sound(w)
    assert mc_current(p, service_of(p, w.release_of(w.stable_rs))) == w.release_of(w.stable_rs)
    step6 = p.step("verify-closeout")
    assert step6["facts"]["stable_health"]["missing_pods"] == []
    assert p.findings["closeout_ok"] is True and step6["verdict"] == "pass"


# --------------------------------------------------------------------------- 5. MC does not know the release


def test_release_unknown_to_mc_fails_identity_closed(play: Callable[..., Played]) -> None:
    p = play("release-unknown-to-mc")
    w, f = p.before, p.findings
    canary = w.release_of(w.canary_rs)
    assert canary not in {r["release_id"] for r in p.mc_before["releases"]}
    run = w.failed_run
    assert f["trigger"] == "error" and f["failed_metrics"] == w.metrics_in(run, "Failed", "Error")
    assert f["mc_reason"] is None  # MC never gave a verdict; nothing may be made up
    step2 = p.step("inspect-evidence")
    assert "404" in (step2["facts"]["evidence_error_message"] or "")
    assert step2["facts"]["mc_live_ok"] is None and step2["facts"]["mc_live_error"]
    assert f["release_id"] == canary
    assert f["release_identity_ok"] is False
    step3 = p.step("validate-release-identity")
    assert step3["verdict"] == "fail" and canary in step3["reason"]
    step4 = p.step("remediate-and-retry")
    assert step4["verdict"] == "needs_human" and "identity" in step4["reason"]
    assert f["retried"] is False and step4["findings"]["mutations"] == []
    assert_nothing_mutated(p)
    assert p.mc_writes() == []
    assert f["stable_is_previous_release"] is True and f["escalate"] is False
    # the prior release never stopped being current: the rollback state itself can be closed out
    assert stable_is_sound(w) and mc_current(p, service_of(p, w.release_of(w.stable_rs))) == w.release_of(w.stable_rs)
    assert f["closeout_ok"] is True


# --------------------------------------------------------------------------- 6. stable unhealthy after the rollback


def test_crashlooping_stable_pod_escalates_and_blocks_closeout(play: Callable[..., Played]) -> None:
    p = play("stable-crashloop-after-abort", params={"wait_seconds": 3})
    w, f = p.before, p.findings
    stable_pods = w.pods_of(w.stable_rs)
    bad = [pod["metadata"]["name"] for pod in stable_pods if not pod_ready(pod)]
    assert bad and len(w.runs) == 1  # one unready stable pod, one run: no loop
    assert f["trigger"] == "evidence" and f["mc_reason"] == w.stored_verdict(w.failed_run, "mc-evidence-ok")["reason"]
    assert f["release_identity_ok"] is True and f["stable_is_previous_release"] is True
    assert p.verdicts()["confirm-rollback-status"] != "pass"
    step5 = p.step("escalate")
    assert step5["verdict"] == "escalate" and f["escalate"] is True
    assert step5["facts"]["loop"]["looping"] is False
    health = step5["facts"]["stable_health"]
    assert health["ready"] == len(stable_pods) - len(bad) and health["all_ready"] is False
    assert health["restarts"][bad[0]] == sum(cs["restartCount"] for cs in
                                             next(x for x in stable_pods if x["metadata"]["name"] == bad[0])
                                             ["status"]["containerStatuses"])
    assert f["closeout_ok"] is False and p.verdicts()["verify-closeout"] == "fail"
    assert f["retried"] is False
    assert_nothing_mutated(p)
    assert p.result.exit_code == 4


# --------------------------------------------------------------------------- 7. inconclusive: paused, not aborted


@pytest.mark.xdist_group("unseen1-inconclusive-paused")
def test_inconclusive_pause_is_not_treated_as_an_abort(play: Callable[..., Played]) -> None:
    p = play("inconclusive-paused")
    w, f = p.before, p.findings
    assert not w.rollout["status"].get("abort")
    assert [c["reason"] for c in w.rollout["status"]["pauseConditions"]] == ["InconclusiveAnalysisRun"]
    assert f["phase"] == "Paused"
    v = p.verdicts()
    assert v["confirm-rollback-status"] == "needs_human"
    assert "does not apply" in p.step("confirm-rollback-status")["reason"]
    assert f["failed_metrics"] == [] and f["trigger"] in ("none", "other")
    assert v["inspect-evidence"] != "pass"
    assert v["remediate-and-retry"] == "skip" and f["retried"] is False
    assert_nothing_mutated(p)
    assert p.mc_writes() == []
    # step 1 needs a human and close-out cannot be verified on a paused rollout: a failed check is exit 6
    assert v["verify-closeout"] == "fail" and p.result.exit_code == 6


@pytest.mark.xdist_group("unseen1-inconclusive-paused")
def test_inconclusive_pause_is_never_closed_out_for_the_right_reason(play: Callable[..., Played]) -> None:
    p = play("inconclusive-paused")
    w = p.before
    assert int(w.canary_rs["status"].get("availableReplicas") or 0) > 0
    step6 = p.step("verify-closeout")
    # nothing disappeared: a close-out refusal must come from the rollout's state, not from a phantom pod
    assert step6["facts"]["stable_health"]["missing_pods"] == []
    refused = [name for name, ok in step6["facts"]["checks"].items() if not ok]
    assert p.findings["closeout_ok"] is not True and step6["verdict"] != "pass" and refused


# --------------------------------------------------------------------------- 8. rollback still under way


@pytest.mark.xdist_group("unseen1-rollback-in-progress")
def test_rollback_under_way_step1_waits_then_confirms(play: Callable[..., Played]) -> None:
    p = play("rollback-in-progress", during=while_step1_waits, params={"wait_seconds": 60})
    w, f = p.before, p.findings
    assert int(w.canary_rs["status"]["availableReplicas"]) > 0 and not stable_is_sound(w)  # as loaded
    step1 = p.step("confirm-rollback-status")
    assert step1["verdict"] == "pass", step1["reason"]
    assert step1["facts"]["waited_seconds"] and step1["facts"]["waited_seconds"] > 0
    assert step1["facts"]["rollback_complete"] is True
    run = w.failed_run
    assert f["trigger"] == "slo" and f["failed_metrics"] == w.metrics_in(run, "Failed", "Error") == ["ig-error-rate"]
    assert f["mc_reason"] is None  # the evidence gate passed
    assert f["release_id"] == w.release_of(w.canary_rs) and f["release_identity_ok"] is True
    assert f["stable_is_previous_release"] is True
    step4 = p.step("remediate-and-retry")
    assert step4["verdict"] == "needs_human" and f["retried"] is False
    assert [(m["action"], m["dry_run"]) for m in step4["findings"]["mutations"]] == [("undo", True)]
    assert_nothing_mutated(p)
    assert f["escalate"] is False


def test_the_sandbox_controller_itself_finishes_a_rollback_loaded_mid_way(play: Callable[..., Played]) -> None:
    # no test playing Argo: the simulated controller owes the canary scale-down (what is left of
    # abortScaleDownDelaySeconds, here scaled by 0.2) and the starting stable pods; step 1 waits for both.
    # The controller's clock is held until step 1 is polling, so a slow machine cannot finish it first.
    timings = Timings(analysis_seconds=1.0, error_interval_seconds=0.02, scale=0.2, idle_poll_seconds=0.05,
                      held=True)
    p = play("rollback-in-progress", timings=timings, during=release_when_step1_polls, params={"wait_seconds": 60})
    step1 = p.step("confirm-rollback-status")
    assert step1["verdict"] == "pass", step1["reason"]
    assert step1["facts"]["waited_seconds"] and step1["facts"]["waited_seconds"] > 0
    assert step1["facts"]["rollback_complete"] is True and step1["facts"]["canary_available"] == 0
    assert p.findings["closeout_ok"] is True
    assert_nothing_mutated(p)


@pytest.mark.xdist_group("unseen1-rollback-in-progress")
def test_closeout_passes_after_the_rollback_finished(play: Callable[..., Played]) -> None:
    p = play("rollback-in-progress", during=while_step1_waits, params={"wait_seconds": 60})
    w = p.before
    assert mc_current(p, service_of(p, w.release_of(w.stable_rs))) == w.release_of(w.stable_rs)
    step6 = p.step("verify-closeout")
    assert step6["facts"]["stable_health"]["all_ready"] is True
    assert step6["facts"]["stable_health"]["missing_pods"] == []
    assert p.findings["closeout_ok"] is True and step6["verdict"] == "pass"
