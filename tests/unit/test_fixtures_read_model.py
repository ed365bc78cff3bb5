"""The read model over the upstream Argo Rollouts fixtures reproduces every value in their EXPECTED.md."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from rollbook.cluster import RolloutView, build_analysis_run, build_view, derive_phase

# Argo's upstream test data, shipped in the project (fixtures/argo-rollouts/README.md says from where)
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "argo-rollouts"
SEVEN_DAYS_AGO = (datetime.now(UTC) - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")


def load(folder: str) -> dict[str, list[dict[str, Any]]]:
    """Load a scenario folder as the upstream testdata loader does: by kind, file-name order, ages reset."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((FIXTURES / folder).glob("*.yaml")):
        for obj in yaml.safe_load_all(path.read_text()):
            if not obj:
                continue
            obj["metadata"]["creationTimestamp"] = SEVEN_DAYS_AGO
            by_kind.setdefault(obj["kind"], []).append(obj)
    return by_kind


def view(folder: str, rollout: str) -> RolloutView:
    """The view of one Rollout of a folder; every other object is offered and linked by owner UID."""
    objs = load(folder)
    ro = next(r for r in objs["Rollout"] if r["metadata"]["name"] == rollout)
    return build_view(ro, objs.get("ReplicaSet", []), objs.get("Pod", []), objs.get("AnalysisRun", []))


def images(v: RolloutView) -> list[tuple[str, tuple[str, ...]]]:
    return [(i.image, i.tags) for i in v.images]


def replicas(v: RolloutView) -> tuple[int, int, int, int, int]:
    return (v.desired, v.current, v.updated, v.ready, v.available)


# --------------------------------------------------------------------------- rollout-aborted


def test_rollout_aborted_status_and_numbers() -> None:
    v = view("rollout-aborted", "rollout-background-analysis")
    assert (v.phase, v.message) == (
        "Degraded", 'RolloutAborted: metric "web" assessed Failed due to failed (1) > failureLimit (0)')
    assert (v.strategy, v.step, v.set_weight, v.actual_weight) == ("Canary", "0/2", 0, 0)
    assert images(v) == [("argoproj/rollouts-demo:blue", ("stable",))]
    assert replicas(v) == (1, 1, 0, 1, 1)
    assert v.namespace == "default" and v.aborted


def test_rollout_aborted_revisions_tree() -> None:
    v = view("rollout-aborted", "rollout-background-analysis")
    assert v.revisions == (2, 1)
    (canary,) = v.replicasets_of(2)
    assert (canary.name, canary.status, canary.tags, canary.pods) == (
        "rollout-background-analysis-db976bc44", "ScaledDown", ("canary",), ())
    (run,) = v.analysis_runs_of(2)
    assert (run.name, run.phase, run.summary) == ("rollout-background-analysis-db976bc44-2", "Failed", "✖ 1")
    (stable,) = v.replicasets_of(1)
    assert (stable.name, stable.status, stable.tags) == ("rollout-background-analysis-7d84d44bb8", "Healthy", ("stable",))
    assert [(p.name, p.status, p.ready) for p in stable.pods] == [
        ("rollout-background-analysis-7d84d44bb8-z5wps", "Running", "1/1")]
    assert v.analysis_runs_of(1) == ()


def test_rollout_aborted_failed_metric_and_release_facts() -> None:
    v = view("rollout-aborted", "rollout-background-analysis")
    run = v.analysis_runs[0]
    assert run.failed_metrics == ("web",)
    web = run.metric("web")
    assert web is not None and web.provider == "web" and (web.count, web.failed) == (1, 1)
    assert [(m.value, m.phase) for m in web.measurements] == [("false", "Failed")]
    assert run.kind == "Background" and run.pod_template_hash == "db976bc44" and run.revision == 2
    # the previous release is the stable ReplicaSet, the highest revision below the canary's
    assert v.canary_rs is not None and v.canary_rs.name.endswith("db976bc44")
    assert v.canary_revision == 2
    assert v.previous_rs is not None and v.previous_rs.name.endswith("7d84d44bb8")
    assert v.stable_is_previous is True
    assert v.canary_rs.images == ("argoproj/rollouts-demo:yellow",)  # canary gone, its template remains
    assert v.abort is not None and (v.abort.form, v.abort.metric) == ("v1.0-v1.1", "web")


# --------------------------------------------------------------------------- canary


CANARY_MSG = 'ProgressDeadlineExceeded: ReplicaSet "canary-demo-65fb5ffc84" has timed out progressing.'


@pytest.mark.parametrize("name", ["canary-demo", "canary-demo-workloadRef", "canary-demo-workloadRef-deploy"])
def test_canary_status_line(name: str) -> None:
    v = view("canary", name)
    assert (v.phase, v.message) == ("Degraded", CANARY_MSG)
    assert (v.step, v.set_weight, v.actual_weight) == ("0/8", 20, 0)
    assert images(v) == [("argoproj/rollouts-demo:does-not-exist", ("canary",)),
                         ("argoproj/rollouts-demo:green", ("stable",))]
    assert replicas(v) == (5, 6, 1, 5, 5)
    assert v.abort is None


def test_canary_revisions_and_pods() -> None:
    v = view("canary", "canary-demo")
    assert v.revisions == (31, 30, 29)
    (canary,) = v.replicasets_of(31)
    assert (canary.name, canary.status, canary.tags) == ("canary-demo-65fb5ffc84", "Progressing", ("canary",))
    (pod,) = canary.pods
    assert (pod.name, pod.status, pod.ready, pod.phase, pod.is_ready) == (
        "canary-demo-65fb5ffc84-9wf5r", "ImagePullBackOff", "0/1", "Pending", False)
    assert pod.containers[0].state == "waiting" and pod.containers[0].reason == "ImagePullBackOff"
    assert pod.containers[0].readiness_probe is None  # the fixtures define no probes
    (stable,) = v.replicasets_of(30)
    assert (stable.name, stable.status, stable.tags) == ("canary-demo-877894d5b", "Healthy", ("stable",))
    assert [p.name.rsplit("-", 1)[1] for p in stable.pods] == ["6jfpt", "7jmqw", "j8g2b", "jw5qm", "kh7x4"]
    assert {(p.status, p.ready) for p in stable.pods} == {("Running", "1/1")}
    (old,) = v.replicasets_of(29)
    assert (old.name, old.status, old.tags) == ("canary-demo-859c99b45c", "ScaledDown", ())
    assert v.previous_rs is stable and v.stable_is_previous is True


def test_canary_pingpong_tags() -> None:
    v = view("canary", "canary-demo-pingpong")
    assert images(v) == [("argoproj/rollouts-demo:does-not-exist", ("canary", "ping")),
                         ("argoproj/rollouts-demo:green", ("stable", "pong"))]
    assert v.replicasets_of(31)[0].tags == ("canary", "ping")
    assert v.replicasets_of(30)[0].tags == ("stable", "pong")
    assert v.replicasets_of(29)[0].tags == ()


def test_canary_weights_from_status() -> None:
    v = view("canary", "canary-demo-weights")
    assert (v.set_weight, v.actual_weight) == (20, 20)


def test_canary_weights_absent_fall_back_to_set_weight() -> None:
    v = view("canary", "canary-demo-weights-na")
    assert (v.set_weight, v.actual_weight) == (20, 20)
    assert v.raw["status"]["canary"].get("weights") is None


def test_all_canary_rollouts_share_the_same_three_revisions() -> None:
    objs = load("canary")
    for ro in objs["Rollout"]:
        v = build_view(ro, objs["ReplicaSet"], objs["Pod"])
        assert v.revisions == (31, 30, 29), v.name
        assert len(v.replicasets) == 3


# --------------------------------------------------------------------------- blue-green


def test_bluegreen() -> None:
    v = view("blue-green", "bluegreen-demo")
    assert (v.phase, v.message, v.strategy) == ("Paused", "BlueGreenPause", "BlueGreen")
    assert (v.step, v.set_weight, v.actual_weight) == ("", None, None)
    assert images(v) == [("argoproj/rollouts-demo:blue", ("stable", "active")),
                         ("argoproj/rollouts-demo:green", ("preview",))]
    assert replicas(v) == (3, 6, 3, 6, 3)
    assert [(r.revision, r.name, r.status, r.tags, len(r.pods)) for r in v.replicasets] == [
        (11, "bluegreen-demo-74b948fccb", "Healthy", ("preview",), 3),
        (10, "bluegreen-demo-6cbccd9f99", "Healthy", ("stable", "active"), 3),
        (8, "bluegreen-demo-746d5fddf6", "ScaledDown", (), 0),
    ]


# --------------------------------------------------------------------------- rollout-invalid


def test_rollout_invalid() -> None:
    v = view("rollout-invalid", "rollout-invalid")
    assert v.phase == "Degraded"
    assert v.message == (
        'InvalidSpec: The Rollout "rollout-invalid" is invalid: spec.template.metadata.labels: Invalid value: '
        'map[string]string{"app":"doesnt-match"}: `selector` does not match template `labels`')
    assert (v.strategy, v.step, v.set_weight, v.actual_weight) == ("Canary", "", 100, 100)
    assert v.images == ()
    assert replicas(v) == (1, 0, 0, 0, 0)
    assert (v.replicasets, v.analysis_runs, v.revisions) == ((), (), ())


def test_objects_of_other_folders_are_not_linked() -> None:
    ro = load("rollout-invalid")["Rollout"][0]
    other = load("canary")
    v = build_view(ro, other["ReplicaSet"], other["Pod"], load("rollout-aborted")["AnalysisRun"])
    assert (v.replicasets, v.analysis_runs) == ((), ())


# --------------------------------------------------------------------------- experiment-analysis


def test_lone_analysisrun_summary_and_jobs() -> None:
    (run_obj,) = load("experiment-analysis")["AnalysisRun"]
    run = build_analysis_run(run_obj)
    assert run.phase == "Inconclusive"
    assert run.summary == "✔ 4,✖ 4,? 1,⚠ 1"
    assert (run.successful, run.failed, run.inconclusive, run.error) == (4, 4, 1, 1)
    jobs = [m.metadata["job-name"] for mr in run.metric_results for m in mr.measurements if "job-name" in m.metadata]
    assert len(jobs) == 8 and len(set(jobs)) == 8
    assert run.message is None


def test_raw_objects_are_kept() -> None:
    objs = load("rollout-aborted")
    v = build_view(objs["Rollout"][0], objs["ReplicaSet"], objs["Pod"], objs["AnalysisRun"])
    assert v.raw is objs["Rollout"][0] or v.raw == objs["Rollout"][0]
    assert v.replicasets[0].raw["kind"] == "ReplicaSet"
    assert v.analysis_runs[0].raw["kind"] == "AnalysisRun"
    assert v.replicasets[1].pods[0].raw["kind"] == "Pod"


# --------------------------------------------------------------------------- phase rules beyond the fixtures


def ro(status: dict[str, Any], spec: dict[str, Any] | None = None, generation: int = 3) -> dict[str, Any]:
    base_spec: dict[str, Any] = {"replicas": 2, "strategy": {"canary": {"steps": [{"setWeight": 50}]}}}
    base_spec.update(spec or {})
    return {"metadata": {"name": "api", "generation": generation}, "spec": base_spec, "status": status}


HEALTHY = {"observedGeneration": "3", "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2,
           "stableRS": "abc", "currentPodHash": "abc"}


@pytest.mark.parametrize(
    ("status", "spec", "expected"),
    [
        ({**HEALTHY, "observedGeneration": "2"}, {}, ("Progressing", "waiting for rollout spec update to be observed")),
        ({**HEALTHY, "observedGeneration": "4"}, {}, ("Healthy", "")),
        ({**HEALTHY, "observedGeneration": "7c9f8d"}, {}, ("Healthy", "")),  # unparsable = observed
        ({**HEALTHY, "phase": "Degraded", "message": "RolloutAborted: x"}, {}, ("Degraded", "RolloutAborted: x")),
        ({**HEALTHY, "observedGeneration": "2", "phase": "Healthy"}, {},
         ("Progressing", "waiting for rollout spec update to be observed")),
        ({**HEALTHY, "conditions": [{"type": "Progressing", "reason": "RolloutAborted", "message": "m"},
                                    {"type": "InvalidSpec", "message": "bad"}]}, {}, ("Degraded", "RolloutAborted: m")),
        (HEALTHY, {"paused": True}, ("Paused", "manually paused")),
        ({**HEALTHY, "pauseConditions": [{"reason": "InconclusiveAnalysisRun"}, {"reason": "CanaryPauseStep"}]}, {},
         ("Paused", "InconclusiveAnalysisRun")),
        (HEALTHY, {"restartAt": "2026-01-01T00:00:00Z"}, ("Progressing", "rollout is restarting")),
        ({**HEALTHY, "restartedAt": "2026-01-01T00:00:00Z"}, {"restartAt": "2026-01-01T00:00:00Z"}, ("Healthy", "")),
        ({**HEALTHY, "updatedReplicas": 1}, {}, ("Progressing", "more replicas need to be updated")),
        ({**HEALTHY, "availableReplicas": 1}, {}, ("Progressing", "updated replicas are still becoming available")),
        ({**HEALTHY, "replicas": 3}, {}, ("Progressing", "old replicas are pending termination")),
        ({**HEALTHY, "currentPodHash": "def"}, {}, ("Progressing", "waiting for all steps to complete")),
        ({**HEALTHY, "stableRS": ""}, {}, ("Progressing", "waiting for all steps to complete")),
        ({**HEALTHY, "controllerPause": True}, {}, ("Progressing", "waiting for rollout to unpause")),
    ],
)
def test_canary_phase_rules(status: dict[str, Any], spec: dict[str, Any], expected: tuple[str, str]) -> None:
    assert derive_phase(ro(status, spec)) == expected


def test_traffic_routed_canary_ignores_old_replicas() -> None:
    routed = {"strategy": {"canary": {"steps": [{"setWeight": 50}], "trafficRouting": {"smi": {}}}}}
    assert derive_phase(ro({**HEALTHY, "replicas": 3}, routed)) == ("Healthy", "")


@pytest.mark.parametrize(
    ("bg_status", "extra_spec", "expected"),
    [
        ({"activeSelector": "old"}, {}, ("Progressing", "active service cutover pending")),
        ({"activeSelector": "abc"}, {}, ("Healthy", "")),
    ],
)
def test_bluegreen_phase_rules(bg_status: dict[str, Any], extra_spec: dict[str, Any], expected: tuple[str, str]) -> None:
    spec = {"strategy": {"blueGreen": {"activeService": "a", **extra_spec}}}
    assert derive_phase(ro({**HEALTHY, "blueGreen": bg_status}, spec)) == expected


def test_bluegreen_waits_for_post_promotion_analysis() -> None:
    spec = {"strategy": {"blueGreen": {"postPromotionAnalysis": {"templates": []}}}}
    status = {**HEALTHY, "stableRS": "old", "blueGreen": {"activeSelector": "abc"}}
    assert derive_phase(ro(status, spec)) == ("Progressing", "waiting for analysis to complete")
    status["blueGreen"]["postPromotionAnalysisRunStatus"] = {"status": "Successful"}
    assert derive_phase(ro(status, spec)) == ("Progressing", "waiting for post-promotion verification to complete")
