"""The playbook's questions answered from objects alone (rollbook.diagnosis), on synthetic Argo objects."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rollbook import diagnosis as dx
from rollbook.cluster import build_analysis_run, build_view

UID = "ro-uid"
HASH_LABEL = "rollouts-pod-template-hash"


def rollout(*, abort: bool = True, stable: str = "s1", canary: str = "c1", revision: int = 7,
            labels: dict[str, str] | None = None, aborted_at: str | None = "2026-08-21T10:00:00Z") -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "namespace": "shop", "uid": UID, "generation": 3,
                     "annotations": {"rollout.argoproj.io/revision": str(revision)}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web", **(labels or {})}}},
                 "strategy": {"canary": {"steps": [{"setWeight": 20}, {"analysis": {}}]}}},
        "status": {"phase": "Degraded" if abort else "Healthy", "observedGeneration": "3", "abort": abort,
                   "abortedAt": aborted_at if abort else None, "stableRS": stable, "currentPodHash": canary,
                   "replicas": 2, "updatedReplicas": 0, "readyReplicas": 2, "availableReplicas": 2,
                   "conditions": [{"type": "Progressing", "status": "False",
                                   "reason": "RolloutAborted" if abort else "NewReplicaSetAvailable"}]},
    }


def replicaset(hash_: str, revision: int, *, available: int, replicas: int, release: str,
               image: str = "reg/web:1") -> dict[str, Any]:
    return {
        "metadata": {"name": f"web-{hash_}", "namespace": "shop", "uid": f"rs-{hash_}",
                     "labels": {"app": "web", HASH_LABEL: hash_},
                     "annotations": {"rollout.argoproj.io/revision": str(revision)},
                     "ownerReferences": [{"uid": UID, "kind": "Rollout", "name": "web", "controller": True}]},
        "spec": {"replicas": replicas, "template": {"metadata": {"labels": {"app": "web", HASH_LABEL: hash_,
                                                                              "release-id": release}},
                                                   "spec": {"containers": [{"name": "web", "image": image}]}}},
        "status": {"replicas": replicas, "availableReplicas": available, "readyReplicas": available},
    }


def pod(hash_: str, name: str, *, ready: bool = True, restarts: int = 0, release: str = "web-1.0") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "shop", "uid": f"pod-{name}",
                     "labels": {"app": "web", HASH_LABEL: hash_, "release-id": release},
                     "ownerReferences": [{"uid": f"rs-{hash_}", "kind": "ReplicaSet", "controller": True}]},
        "spec": {"containers": [{"name": "web", "image": "reg/web:1",
                                 "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}}}]},
        "status": {"phase": "Running",
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                   "containerStatuses": [{"name": "web", "ready": ready, "restartCount": restarts,
                                          "image": "reg/web:1", "state": {"running": {}}}]},
    }


def run(name: str, phase: str, metrics: list[tuple[str, str, str | None, str | None]], *, hash_: str = "c1",
        spec_metrics: list[dict[str, Any]] | None = None, args: list[dict[str, Any]] | None = None,
        created: str = "2026-08-21T09:58:00Z") -> dict[str, Any]:
    """metrics: (name, phase, value, message)."""
    return {
        "metadata": {"name": name, "namespace": "shop", "uid": f"ar-{name}", "creationTimestamp": created,
                     "labels": {HASH_LABEL: hash_, "rollout-type": "Step"},
                     "annotations": {"rollout.argoproj.io/revision": "7"},
                     "ownerReferences": [{"uid": UID, "kind": "Rollout", "controller": True}]},
        "spec": {"metrics": spec_metrics or [], "args": args or []},
        "status": {"phase": phase, "metricResults": [
            {"name": n, "phase": p, "count": 1, "failed": int(p == "Failed"), "error": int(p == "Error"),
             "measurements": [{"phase": p, "value": v, "message": m}]} for n, p, v, m in metrics]},
    }


WEB = {"name": "mc-evidence-ok", "provider": {"web": {"url": "https://mc/api/v1/releases/x/evidence-status",
                                                        "jsonPath": "{$}"}}}
EVIDENCE_GATE = {"name": "evidence-gate", "provider": {"web": {
    "url": "https://mc.internal/api/v1/releases/{{args.release-id}}/evidence-status", "jsonPath": "{$}"}}}
PROM = [{"name": "ig-latency-p99", "provider": {"prometheus": {"query": "q1"}}, "successCondition": "result[0] <= 0.5"},
        {"name": "ig-error-rate", "provider": {"prometheus": {"query": "q2"}}, "successCondition": "result[0] <= 0.01"}]


def verdict_value(release: str = "web-2.0", ok: bool = False, reason: str = "missing required evidence: sbom (sbom)") -> str:
    body = {"release_id": release, "environment": "production", "ok": ok,
            "status": "passed" if ok else "missing_evidence", "reason": reason,
            "missing": [] if ok else ["sbom"], "invalid": []}
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def view_with(*runs: dict[str, Any], ro: dict[str, Any] | None = None, pods: list[dict[str, Any]] | None = None,
              canary_available: int = 0) -> Any:
    rss = [replicaset("s1", 6, available=2, replicas=2, release="web-1.0"),
           replicaset("c1", 7, available=canary_available, replicas=canary_available, release="web-2.0"),
           replicaset("o1", 5, available=0, replicas=0, release="web-0.9")]
    default_pods = [pod("s1", "web-s1-a"), pod("s1", "web-s1-b")]
    return build_view(ro or rollout(), rss, default_pods if pods is None else pods, list(runs), [])


# --------------------------------------------------------------------------- triggers


@pytest.mark.parametrize(("metrics", "spec", "want"), [
    ([("mc-evidence-ok", "Failed", verdict_value(), None), ("ig-error-rate", "Successful", "[0.001]", None)],
     [WEB, *PROM], "evidence"),
    ([("mc-evidence-ok", "Successful", verdict_value(ok=True), None), ("ig-error-rate", "Failed", "[0.03]", None)],
     [WEB, *PROM], "slo"),
    ([("mc-evidence-ok", "Failed", verdict_value(), None), ("ig-latency-p99", "Failed", "[0.9]", None)],
     [WEB, *PROM], "evidence+slo"),
    ([("mc-evidence-ok", "Error", None, "received non 2xx response code: 503")], [WEB], "error"),
    ([("evidence-gate", "Failed", verdict_value(), None)], [EVIDENCE_GATE], "evidence"),
    ([("mc-evidence-ok", "Successful", verdict_value(ok=True), None)], [WEB], "none"),
])
def test_trigger_from_metric_phases_and_providers(metrics: Any, spec: Any, want: str) -> None:
    phase = "Failed" if any(m[1] in ("Failed", "Error") for m in metrics) else "Successful"
    assert dx.trigger_of(build_analysis_run(run("web-c1-7-2", phase, metrics, spec_metrics=spec))) == want


def test_the_failed_run_is_the_newest_failure_of_the_canary_hash() -> None:
    first = run("web-c1-7-2", "Failed", [("mc-evidence-ok", "Failed", verdict_value(), None)], spec_metrics=[WEB],
                created="2026-08-21T09:40:00Z")
    retry = run("web-c1-7-2.1", "Failed", [("mc-evidence-ok", "Failed", verdict_value(), None)], spec_metrics=[WEB],
                created="2026-08-21T09:55:00Z")
    old = run("web-o1-5-2", "Failed", [("mc-evidence-ok", "Failed", verdict_value(), None)], hash_="o1",
              spec_metrics=[WEB], created="2026-08-21T09:59:00Z")
    view = view_with(first, retry, old)
    assert dx.failed_run(view).name == "web-c1-7-2.1"
    loop = dx.loop_info(view)
    assert loop.looping and loop.retries == 1 and loop.failed_runs == ("web-c1-7-2", "web-c1-7-2.1")


def test_no_loop_with_one_failure() -> None:
    view = view_with(run("web-c1-7-2", "Failed", [("mc-evidence-ok", "Failed", verdict_value(), None)],
                         spec_metrics=[WEB]))
    assert not dx.loop_info(view).looping


# --------------------------------------------------------------------------- MC's reason


def test_reason_read_from_the_measurement_value() -> None:
    r = build_analysis_run(run("r", "Failed", [("evidence-gate", "Failed", verdict_value(reason="invalid evidence: x"),
                                                None)], spec_metrics=[EVIDENCE_GATE]))
    ev = dx.evidence_in_run(r)
    assert ev.reason == "invalid evidence: x" and ev.verdict is not None and ev.verdict.release_id == "web-2.0"
    assert not ev.reason_lost


def test_reason_lost_with_a_bare_false() -> None:
    spec = [{"name": "mc-evidence-ok", "provider": {"web": {"url": "https://mc/x/evidence-status", "jsonPath": "{$.ok}"}}}]
    ev = dx.evidence_in_run(build_analysis_run(run("r", "Failed", [("mc-evidence-ok", "Failed", "false", None)],
                                                   spec_metrics=spec)))
    assert ev.reason is None and ev.reason_lost and "{$.ok}" in ev.explanation


def test_errored_measurement_explains_itself() -> None:
    ev = dx.evidence_in_run(build_analysis_run(run("r", "Error", [("mc-evidence-ok", "Error", None,
                                                                   "received non 2xx response code: 503")],
                                                   spec_metrics=[WEB])))
    assert ev.verdict is None and not ev.reason_lost and "503" in ev.explanation


# --------------------------------------------------------------------------- identity, rollback, selectors


def test_release_id_prefers_live_canary_pods_then_template_then_rollout() -> None:
    canary_pods = [pod("c1", "web-c1-a", release="web-2.0-live")]
    stable_pods = [pod("s1", "web-s1-a")]
    assert dx.canary_release_id(view_with(pods=canary_pods + stable_pods, canary_available=1)) == (
        "web-2.0-live", "label release-id of live canary pods of web-c1")
    assert dx.canary_release_id(view_with(pods=stable_pods))[0] == "web-2.0"
    no_rs = build_view(rollout(labels={"release-id": "web-3.0"}), [], [], [], [])
    assert dx.canary_release_id(no_rs)[0] == "web-3.0"


def test_release_label_key_comes_from_the_analysis_fieldref() -> None:
    ro = rollout(labels={"release-id": "stale", "app.example/release": "web-4.0"})
    ro["spec"]["strategy"] = {"canary": {"steps": [{"setWeight": 20}, {"analysis": {"templates": [
        {"templateName": "mc-evidence-ok"}], "args": [
        {"name": "service", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "release", "valueFrom": {"fieldRef": {
            "fieldPath": "spec.template.metadata.labels['app.example/release']"}}}]}}]}}
    view = build_view(ro, [], [], [], [])
    assert dx.release_label(view) == dx.ReleaseLabel(
        "app.example/release", "release", "analysis argument 'release' reads label 'app.example/release'")
    assert dx.canary_release_id(view) == ("web-4.0", "label app.example/release in spec.template of Rollout web")
    plain = build_view(rollout(labels={"release-id": "web-3.0"}), [], [], [], [])
    assert dx.release_label(plain).key == "release-id"
    assert dx.canary_release_id(build_view(rollout(), [], [], [], []))[0] is None


def test_rollback_complete_needs_the_canary_down_and_stable_available() -> None:
    assert dx.rollback_complete(view_with())[0] is True
    done, problems = dx.rollback_complete(view_with(canary_available=1,
                                                    pods=[pod("c1", "c-a"), pod("s1", "s-a"), pod("s1", "s-b")]))
    assert not done and "still has 1 available" in problems[0]


def test_selector_advice_shows_the_command_that_works() -> None:
    r = run("web-c1-7-2", "Failed", [("mc-evidence-ok", "Failed", verdict_value(), None)], spec_metrics=[WEB])
    view = view_with(r)
    advice = dx.selector_advice(view, dx.failed_run(view))
    assert advice["playbook_selector_works"] is False
    assert advice["working_command"] == "kubectl get analysisrun -n shop -l rollouts-pod-template-hash=c1"
    r["metadata"]["labels"]["rollout"] = "web"
    view = view_with(r)
    assert dx.selector_advice(view, dx.failed_run(view))["working_command"].endswith("-l rollout=web")


# --------------------------------------------------------------------------- escalation and health


def test_deadline_is_fifteen_minutes_from_the_earlier_of_abort_and_incident_start() -> None:
    abort = datetime(2026, 8, 21, 10, 0, tzinfo=UTC)
    assert dx.escalation_deadline(abort, None) == abort + timedelta(minutes=15)
    assert dx.escalation_deadline(abort, abort - timedelta(minutes=5)) == abort + timedelta(minutes=10)
    assert dx.escalation_deadline(None, None) is None


def test_stable_health_counts_new_restarts_and_missing_pods() -> None:
    view = view_with(pods=[pod("s1", "web-s1-a", restarts=3), pod("s1", "web-s1-b", ready=False)])
    health = dx.stable_health(view, {"web-s1-a": 1, "web-s1-b": 0, "web-s1-gone": 0})
    assert health["new_restarts"] == {"web-s1-a": 2}
    assert health["missing_pods"] == ["web-s1-gone"]
    assert health["all_ready"] is False and health["ready"] == 1


@pytest.mark.parametrize(("image", "tag"), [("reg/web:1.4.2", "1.4.2"), ("reg:5000/web:2", "2"),
                                            ("reg:5000/web", None), ("web@sha256:abc", None), (None, None)])
def test_image_tag(image: str | None, tag: str | None) -> None:
    assert dx.image_tag(image) == tag


def crashlooping(hash_: str, name: str) -> dict[str, Any]:
    p = pod(hash_, name, ready=False, restarts=4)
    p["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}
    return p


def starting(hash_: str, name: str) -> dict[str, Any]:
    p = pod(hash_, name, ready=False)
    p["status"]["phase"] = "Pending"
    p["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ContainerCreating"}}
    return p


def test_waiting_helps_only_while_the_rollback_is_moving() -> None:
    stable_rs = replicaset("s1", 6, available=1, replicas=2, release="web-1.0")

    def view(*pods: dict[str, Any], canary: int = 0) -> Any:
        canary_rs = replicaset("c1", 7, available=canary, replicas=canary, release="web-2.0")
        return build_view(rollout(), [stable_rs, canary_rs], list(pods), [], [])

    assert dx.rollback_progressing(view(pod("s1", "a"), starting("s1", "b"))) is True
    assert dx.rollback_progressing(view(pod("s1", "a"), pod("s1", "b"), pod("c1", "c"), canary=1)) is True
    assert dx.rollback_progressing(view(pod("s1", "a"), crashlooping("s1", "b"))) is False
    assert dx.pod_starting(build_view(rollout(), [stable_rs], [starting("s1", "x")], [], []).stable_rs.pods[0])


def test_release_label_reads_the_dot_form_argo_resolves() -> None:
    ro = rollout(labels={"release-id": "web-2.0"})
    ro["spec"]["strategy"] = {"canary": {"steps": [{"analysis": {"args": [
        {"name": "release-id", "valueFrom": {"fieldRef": {"fieldPath": "spec.template.metadata.labels.release-id"}}}],
        "analysisRunMetadata": {"labels": {"rollout": "web"}}}}]}}
    view = build_view(ro, [], [], [], [])
    assert dx.release_label(view).key == "release-id" and dx.release_label(view).arg == "release-id"
    assert "analysis argument 'release-id'" in dx.release_label(view).source


def _kept(**canary: Any) -> Any:
    ro = rollout()
    ro["spec"]["strategy"]["canary"].update(canary)
    pods = [pod("c1", "c-a"), pod("s1", "s-a"), pod("s1", "s-b")]
    return view_with(ro=ro, pods=pods, canary_available=1)


def test_a_canary_kept_by_abort_scale_down_delay_zero_is_a_complete_rollback() -> None:
    routed = {"trafficRouting": {"nginx": {"stableIngress": "web"}}}
    kept = dx.kept_canary(_kept(abortScaleDownDelaySeconds=0, **routed))
    assert kept is not None and kept.available == 1 and "abortScaleDownDelaySeconds: 0" in kept.sentence()
    assert dx.rollback_complete(_kept(abortScaleDownDelaySeconds=0, **routed)) == (True, [])
    assert dx.rollback_progressing(_kept(abortScaleDownDelaySeconds=0, **routed)) is False
    # a delay still running, or no traffic routing (0 there means "at once"): the canary must still go
    for spec in ({"abortScaleDownDelaySeconds": 30, **routed}, {"abortScaleDownDelaySeconds": 0}, dict(routed)):
        assert dx.kept_canary(_kept(**spec)) is None and dx.rollback_complete(_kept(**spec))[0] is False
