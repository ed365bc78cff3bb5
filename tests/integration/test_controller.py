"""The simulated Argo controller, driven through the real kubernetes client as the kubectl plugin would."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client, config

from rollbook.sandbox.controller import Timings
from rollbook.sandbox.mc import Fault
from rollbook.sandbox.server import Sandbox

GROUP, VERSION = "argoproj.io", "v1alpha1"
Wait = Callable[..., Any]


def rollouts_api(sb: Sandbox) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(config.new_client_from_config(config_file=str(sb.kubeconfig), context="sandbox"))


def set_abort(sb: Sandbox, ns: str, name: str, abort: bool) -> None:
    """`kubectl argo rollouts retry/abort`: merge patch of status.abort on the status subresource."""
    with rollouts_api(sb).api_client:
        rollouts_api(sb).patch_namespaced_custom_object_status(GROUP, VERSION, ns, "rollouts", name,
                                                               {"status": {"abort": abort}}, _request_timeout=5)


def undo_to(sb: Sandbox, ns: str, name: str, rs_name: str) -> None:
    """`kubectl argo rollouts undo`: JSON patch of spec.template with the target RS template minus the hash."""
    tmpl = copy.deepcopy(sb.store.get("replicasets", ns, rs_name)["spec"]["template"])
    tmpl["metadata"]["labels"].pop("rollouts-pod-template-hash")
    api = rollouts_api(sb)
    api.api_client.set_default_header("Content-Type", "application/json-patch+json")
    api.patch_namespaced_custom_object(GROUP, VERSION, ns, "rollouts", name,
                                       [{"op": "replace", "path": "/spec/template", "value": tmpl}], _request_timeout=5)


def rollout(sb: Sandbox, ns: str, name: str) -> dict[str, Any]:
    return sb.store.get("rollouts", ns, name)


def run(sb: Sandbox, ns: str, name: str) -> dict[str, Any] | None:
    items = sb.store.list("analysisruns", ns, field_selector=f"metadata.name={name}")[0]
    return items[0] if items else None


def finished(sb: Sandbox, ns: str, name: str) -> dict[str, Any] | None:
    r = run(sb, ns, name)
    return r if r and r["status"]["phase"] not in ("Running", "Pending") else None


def metric(r: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in r["status"]["metricResults"] if m["name"] == name)


def replicas(sb: Sandbox, ns: str, rs: str) -> int:
    return int(sb.store.get("replicasets", ns, rs)["spec"]["replicas"])


def pods_of(sb: Sandbox, ns: str, h: str) -> list[dict[str, Any]]:
    return sb.store.list("pods", ns, label_selector=f"rollouts-pod-template-hash={h}")[0]


def aborted_events(sb: Sandbox, ns: str) -> int:
    return sum(1 for e in sb.store.list("events", ns)[0] if e["reason"] == "RolloutAborted")


def attach_test_report(sb: Sandbox, release: str) -> None:
    r = httpx.post(f"{sb.mc_url}/api/v1/releases/{release}/evidence", timeout=5,
                   headers={"Authorization": f"Bearer {sb.mc_write_token}"},
                   json={"name": "test-report", "type": "junit", "summary": {"total": 120, "failures": 0, "errors": 0}})
    assert r.status_code == 201, r.text


# --------------------------------------------------------------------------- retry


def test_retry_without_the_fix_aborts_again_with_a_new_run(sandbox: Sandbox, wait_until: Wait) -> None:
    before = rollout(sandbox, "prod", "api")
    events_before = aborted_events(sandbox, "prod")
    set_abort(sandbox, "prod", "api", False)
    new = wait_until(lambda: finished(sandbox, "prod", "api-6d4f8b7c9-7-2.1"), what="run .1 finished")
    assert new["status"]["phase"] == "Failed"
    assert new["metadata"]["annotations"]["rollout.argoproj.io/revision"] == "7"
    assert new["metadata"]["labels"].items() >= {"rollout": "api", "rollout-type": "Step", "step-index": "2",
                                                 "rollouts-pod-template-hash": "6d4f8b7c9"}.items()
    assert new["metadata"]["ownerReferences"][0]["uid"] == before["metadata"]["uid"]
    value = metric(new, "mc-evidence-ok")["measurements"][-1]["value"]
    assert json.loads(value)["reason"] == "missing required evidence: test-report (junit)"
    assert value == json.dumps(json.loads(value), sort_keys=True, separators=(",", ":"))
    after = wait_until(lambda: (r := rollout(sandbox, "prod", "api"))["status"].get("abort") and r, what="abort")
    assert after["status"]["message"] == before["status"]["message"]   # same form, same metric
    assert after["status"]["phase"] == "Degraded" and after["status"]["abortedAt"] > before["status"]["abortedAt"]
    assert after["status"]["canary"]["currentStepAnalysisRunStatus"] is None
    # the controller writes the status, then the event: wait for it rather than race the controller's thread
    wait_until(lambda: aborted_events(sandbox, "prod") > events_before, what="the RolloutAborted event")
    wait_until(lambda: replicas(sandbox, "prod", "api-6d4f8b7c9") == 0, what="canary scaled down")
    assert aborted_events(sandbox, "prod") == events_before + 1
    asked = [r for r in sandbox.mc.requests if r.path.endswith("/api-1.42.0/evidence-status")]
    assert asked and asked[-1].scope == "evidence:read" and asked[-1].query == {"environment": "production"}


def test_retry_after_attaching_the_evidence_promotes(sandbox: Sandbox, wait_until: Wait) -> None:
    attach_test_report(sandbox, "api-1.42.0")
    set_abort(sandbox, "prod", "api", False)
    ro = wait_until(lambda: (r := rollout(sandbox, "prod", "api"))["status"].get("phase") == "Healthy" and r,
                    what="Healthy")
    st = ro["status"]
    assert st["stableRS"] == st["currentPodHash"] == "6d4f8b7c9" and st["abort"] is False and "abortedAt" not in st
    assert st["observedGeneration"] == str(ro["metadata"]["generation"]) and st["message"] == ""
    assert run(sandbox, "prod", "api-6d4f8b7c9-7-2.1")["status"]["phase"] == "Successful"
    assert replicas(sandbox, "prod", "api-6d4f8b7c9") == 4 and replicas(sandbox, "prod", "api-7c9f5d6b84") == 0
    assert len(pods_of(sandbox, "prod", "6d4f8b7c9")) == 4 and pods_of(sandbox, "prod", "7c9f5d6b84") == []
    pod = pods_of(sandbox, "prod", "6d4f8b7c9")[0]
    assert pod["metadata"]["labels"]["release-id"] == "api-1.42.0" and pod["status"]["phase"] == "Running"
    current = wait_until(lambda: (c := sandbox.mc.current("production", "api")["current"])["release_id"] == "api-1.42.0"
                         and c, what="MC promotion")
    assert current["kind"] == "promotion"
    posted = [r for r in sandbox.mc.requests if r.method == "POST" and r.path.endswith("/deployments")]
    assert posted[-1].scope == "evidence:write"


def test_the_new_run_is_running_while_analysis_takes_time(sandbox_factory: Callable[..., Sandbox],
                                                          wait_until: Wait) -> None:
    sb = sandbox_factory("evidence-gap", timings=Timings(analysis_seconds=2.0, idle_poll_seconds=0.05))
    set_abort(sb, "prod", "api", False)
    ro = wait_until(lambda: (r := rollout(sb, "prod", "api"))["status"].get("phase") == "Progressing" and r)
    assert ro["status"]["canary"]["currentStepAnalysisRunStatus"]["name"] == "api-6d4f8b7c9-7-2.1"
    assert run(sb, "prod", "api-6d4f8b7c9-7-2.1")["status"]["phase"] == "Running"
    assert replicas(sb, "prod", "api-6d4f8b7c9") == 1   # setWeight 20 of 4 replicas, rounded up
    assert not [r for r in sb.mc.requests if "evidence-status" in r.path]
    wait_until(lambda: finished(sb, "prod", "api-6d4f8b7c9-7-2.1"), timeout=15)


@pytest.mark.scenario("slo-regression")
def test_slo_regression_persists_and_canary_scales_down_after_the_delay(sandbox_factory: Callable[..., Sandbox],
                                                                       wait_until: Wait) -> None:
    # trafficRouting with abortScaleDownDelaySeconds: 30 -> 30 * scale = 1.5 s (room for a busy machine)
    sb = sandbox_factory("slo-regression", timings=Timings(analysis_seconds=0.05, scale=0.05, idle_poll_seconds=0.02))
    set_abort(sb, "payments", "payments-api", False)
    new = wait_until(lambda: finished(sb, "payments", "payments-api-5c6d8f9b47-12-2.1"))
    err = metric(new, "ig-error-rate")
    assert err["phase"] == "Failed" and [m["value"] for m in err["measurements"]] == ["[0.034]", "[0.041]"]
    assert json.loads(metric(new, "mc-evidence-ok")["measurements"][-1]["value"])["ok"] is True
    assert "rollout" not in new["metadata"]["labels"]
    ro = wait_until(lambda: (r := rollout(sb, "payments", "payments-api"))["status"].get("abort") and r)
    assert ro["status"]["message"].endswith('Metric "ig-error-rate" assessed Failed due to failed (2) > failureLimit (1)')
    assert replicas(sb, "payments", "payments-api-5c6d8f9b47") > 0   # still serving during the delay
    wait_until(lambda: replicas(sb, "payments", "payments-api-5c6d8f9b47") == 0, timeout=10)
    assert pods_of(sb, "payments", "5c6d8f9b47") == []


def test_evidence_lost_template_stores_only_the_boolean(sandbox_factory: Callable[..., Sandbox],
                                                        wait_until: Wait) -> None:
    sb = sandbox_factory("evidence-lost")
    set_abort(sb, "orders", "orders", False)
    new = wait_until(lambda: finished(sb, "orders", "orders-b9c7d6f58-7-2.1"))
    assert new["status"]["phase"] == "Failed"
    assert metric(new, "mc-evidence-ok")["measurements"][-1]["value"] == "false"


def test_mc_outage_makes_the_metric_error(sandbox_factory: Callable[..., Sandbox], wait_until: Wait) -> None:
    sb = sandbox_factory("mc-errors")
    sb.mc.add_fault(Fault(path_prefix="/api/v1/releases/", times=5, status=503))
    set_abort(sb, "billing", "billing-api", False)
    new = wait_until(lambda: finished(sb, "billing", "billing-api-c5f7b9d68-7-2.1"))
    web = metric(new, "mc-evidence-ok")
    assert new["status"]["phase"] == "Error" and web["phase"] == "Error"
    assert web["consecutiveError"] == 5 and len(web["measurements"]) == 5
    assert {m["message"] for m in web["measurements"]} == {"received non 2xx response code: 503"}
    ro = wait_until(lambda: (r := rollout(sb, "billing", "billing-api"))["status"].get("abort") and r)
    assert ro["status"]["message"].endswith(
        'Metric "mc-evidence-ok" assessed Error due to consecutiveErrors (5) > consecutiveErrorLimit (4): '
        '"Error Message: received non 2xx response code: 503"')


def test_a_short_mc_blip_is_retried_and_the_release_passes(sandbox_factory: Callable[..., Sandbox],
                                                           wait_until: Wait) -> None:
    sb = sandbox_factory("mc-errors")
    sb.mc.add_fault(Fault(path_prefix="/api/v1/releases/", times=2, status=503))
    set_abort(sb, "billing", "billing-api", False)
    new = wait_until(lambda: finished(sb, "billing", "billing-api-c5f7b9d68-7-2.1"))
    assert new["status"]["phase"] == "Successful"
    assert [m["phase"] for m in metric(new, "mc-evidence-ok")["measurements"]] == ["Error", "Error", "Successful"]
    wait_until(lambda: rollout(sb, "billing", "billing-api")["status"].get("phase") == "Healthy")


def test_a_retry_asks_mc_about_the_release_its_argument_carries(sandbox_factory: Callable[..., Sandbox],
                                                                wait_until: Wait) -> None:
    # as Argo: the web URL is filled from the run's own args, so a retry does not repair a wrong argument
    # (here the Rollout's own stale release-id label) by reading the canary's pod template instead
    sb = sandbox_factory("release-mismatch")
    old = sb.store.get("analysisruns", "search", "search-api-6c9f4b8d7-7-2")
    arg = next(a["value"] for a in old["spec"]["args"] if a["name"] == "release-id")
    canary = sb.store.get("rollouts", "search", "search-api")["spec"]["template"]["metadata"]["labels"]["release-id"]
    assert arg != canary
    set_abort(sb, "search", "search-api", False)
    new = wait_until(lambda: finished(sb, "search", "search-api-6c9f4b8d7-7-2.1"))
    assert json.loads(metric(new, "mc-evidence-ok")["measurements"][-1]["value"])["release_id"] == arg


def test_rollback_loop_retry_gets_the_next_collision_suffix(sandbox_factory: Callable[..., Sandbox],
                                                            wait_until: Wait) -> None:
    sb = sandbox_factory("rollback-loop")
    set_abort(sb, "shop", "checkout", False)
    new = wait_until(lambda: finished(sb, "shop", "checkout-78f6d9c5b-7-2.3"))
    verdict = json.loads(metric(new, "mc-evidence-ok")["measurements"][-1]["value"])
    assert new["status"]["phase"] == "Failed" and verdict["status"] == "invalid_evidence"


# --------------------------------------------------------------------------- undo, abort, no-ops


def test_undo_fast_tracks_to_the_stable_release(sandbox: Sandbox, wait_until: Wait) -> None:
    generation = rollout(sandbox, "prod", "api")["metadata"]["generation"]
    undo_to(sandbox, "prod", "api", "api-7c9f5d6b84")
    ro = wait_until(lambda: (r := rollout(sandbox, "prod", "api"))["status"].get("phase") == "Healthy" and r)
    st = ro["status"]
    assert st["stableRS"] == st["currentPodHash"] == "7c9f5d6b84" and st["abort"] is False and "abortedAt" not in st
    assert ro["metadata"]["generation"] == generation + 1 and st["observedGeneration"] == str(generation + 1)
    assert ro["metadata"]["annotations"]["rollout.argoproj.io/revision"] == "8"
    stable = sandbox.store.get("replicasets", "prod", "api-7c9f5d6b84")
    assert stable["metadata"]["annotations"]["rollout.argoproj.io/revision"] == "8"
    assert replicas(sandbox, "prod", "api-7c9f5d6b84") == 4 and replicas(sandbox, "prod", "api-6d4f8b7c9") == 0
    assert len(sandbox.store.list("analysisruns", "prod")[0]) == 1            # no steps, no analysis
    assert sandbox.mc.current("production", "api")["current"]["release_id"] == "api-1.41.3"
    assert not [r for r in sandbox.mc.requests if r.method == "POST"]       # the prior release stayed current


def test_user_abort_during_analysis_terminates_the_run(sandbox_factory: Callable[..., Sandbox],
                                                       wait_until: Wait) -> None:
    sb = sandbox_factory("evidence-gap", timings=Timings(analysis_seconds=0.8, idle_poll_seconds=0.02, scale=0.01))
    set_abort(sb, "prod", "api", False)
    wait_until(lambda: run(sb, "prod", "api-6d4f8b7c9-7-2.1"))
    set_abort(sb, "prod", "api", True)
    ro = wait_until(lambda: (r := rollout(sb, "prod", "api"))["status"].get("phase") == "Degraded" and r)
    assert ro["status"]["message"] == "RolloutAborted: Rollout aborted update to revision 7"
    r = run(sb, "prod", "api-6d4f8b7c9-7-2.1")
    assert r["spec"]["terminate"] is True and r["status"]["message"] == "Run Terminated"
    wait_until(lambda: replicas(sb, "prod", "api-6d4f8b7c9") == 0)
    assert not [q for q in sb.mc.requests if "evidence-status" in q.path]


@pytest.mark.scenario("healthy")
def test_retry_on_a_healthy_rollout_changes_nothing(sandbox: Sandbox, wait_until: Wait) -> None:
    before = rollout(sandbox, "catalog", "catalog-api")
    set_abort(sandbox, "catalog", "catalog-api", False)     # already false: a no-op write
    set_abort(sandbox, "catalog", "catalog-api", True)
    set_abort(sandbox, "catalog", "catalog-api", False)
    wait_until(lambda: sandbox.controller.idle(), what="controller idle")
    after = rollout(sandbox, "catalog", "catalog-api")
    assert after["status"]["phase"] == "Healthy" and after["status"]["stableRS"] == before["status"]["stableRS"]
    assert len(sandbox.store.list("analysisruns", "catalog")[0]) == 2
    assert not sandbox.mc.requests


def test_a_held_controller_owes_its_timers_until_released(sandbox_factory: Callable[..., Sandbox],
                                                          wait_until: Wait) -> None:
    # the gate tests use instead of racing the controller: held, nothing timed happens however long we look

    scenario = Path(__file__).parents[1] / "scenarios" / "rollback-in-progress"
    sb = sandbox_factory(scenario, timings=Timings(analysis_seconds=0.05, scale=0.001, idle_poll_seconds=0.02,
                                                   held=True))
    assert sb.controller is not None and sb.controller.held
    ro = sb.store.list("rollouts")[0][0]
    ns, canary_hash = ro["metadata"]["namespace"], ro["status"]["currentPodHash"]
    canary_rs = next(rs for rs in sb.store.list("replicasets", ns)[0]
                     if rs["metadata"]["labels"].get("rollouts-pod-template-hash") == canary_hash)
    before = replicas(sb, ns, canary_rs["metadata"]["name"])
    assert before > 0

    time.sleep(0.5)   # 20x what the scale-down owes at this scale: it would have happened if not held
    assert replicas(sb, ns, canary_rs["metadata"]["name"]) == before and not sb.controller.idle()
    sb.controller.release()
    wait_until(lambda: replicas(sb, ns, canary_rs["metadata"]["name"]) == 0, timeout=10)
    wait_until(lambda: sb.controller.idle(), what="controller idle")
