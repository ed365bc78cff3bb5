"""The read model through the real kubernetes client against the sandbox API server.

Every assertion is computed from the objects in the store, never from a scenario's name.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from apiserver_harness import Harness, running_apiserver

from rollbook.cluster import (
    WaitTimeout,
    connect,
    derive_phase,
    list_rollouts,
    pod_logs,
    read_rollout,
    wait_for,
)
from rollbook.cluster.connect import Cluster
from rollbook.errors import ClusterUnavailable, ConfigError, Conflict, NotFound, Unauthorized
from rollbook.sandbox.loader import builtin_scenarios, load_scenario

# Argo's upstream test data, shipped in the project (fixtures/argo-rollouts/README.md says from where)
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "argo-rollouts"
SCENARIOS = builtin_scenarios()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    with running_apiserver(tmp_path) as h:
        yield h


def cluster_for(h: Harness, context: str = "sandbox") -> Cluster:
    return connect(context, h.kubeconfig, timeout=5.0)


def items(h: Harness, plural: str, namespace: str) -> list[dict[str, Any]]:
    return h.store.list(plural, namespace)[0]


def owned_by(objs: list[dict[str, Any]], uid: str) -> set[str]:
    return {o["metadata"]["name"] for o in objs if uid in [r.get("uid") for r in o["metadata"].get("ownerReferences") or []]}


# --------------------------------------------------------------------------- every built-in scenario


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_read_model_matches_the_stored_objects(harness: Harness, scenario: str) -> None:
    info = load_scenario(harness.store, scenario)
    assert info.rollouts, "a scenario without a Rollout tests nothing"
    with cluster_for(harness) as cluster:
        for namespace, name in info.rollouts:
            ro = harness.store.get("rollouts", namespace, name)
            view = read_rollout(cluster, namespace, name)
            status = ro["status"]
            # phase/message: the controller-written ones when present (generation observed), as Argo says
            assert (view.phase, view.message) == derive_phase(ro)
            if status.get("phase") and int(status.get("observedGeneration", 0)) >= ro["metadata"]["generation"]:
                assert (view.phase, view.message) == (status["phase"], status.get("message", ""))
            assert view.uid == ro["metadata"]["uid"]
            assert (view.stable_hash, view.canary_hash) == (status.get("stableRS"), status.get("currentPodHash"))
            # ReplicaSets and their tags
            all_rs = items(harness, "replicasets", namespace)
            assert {rs.name for rs in view.replicasets} == owned_by(all_rs, view.uid)
            for rs in view.replicasets:
                raw = harness.store.get("replicasets", namespace, rs.name)
                rs_hash = raw["metadata"]["labels"]["rollouts-pod-template-hash"]
                assert rs.stable == (rs_hash == status.get("stableRS"))
                assert rs.revision == int(raw["metadata"]["annotations"]["rollout.argoproj.io/revision"])
                assert rs.images == tuple(c["image"] for c in raw["spec"]["template"]["spec"]["containers"])
                assert rs.release_id == raw["spec"]["template"]["metadata"]["labels"].get("release-id")
                assert {p.name for p in rs.pods} == owned_by(items(harness, "pods", namespace), raw["metadata"]["uid"])
            assert [rs.revision for rs in view.replicasets] == sorted((rs.revision for rs in view.replicasets), reverse=True)
            # AnalysisRuns, metric by metric
            all_runs = items(harness, "analysisruns", namespace)
            assert {r.name for r in view.analysis_runs} == owned_by(all_runs, view.uid)
            for run in view.analysis_runs:
                raw_run = harness.store.get("analysisruns", namespace, run.name)
                results = raw_run["status"].get("metricResults") or []
                assert [m.name for m in run.metric_results] == [m["name"] for m in results]
                assert run.failed == sum(m.get("failed", 0) for m in results)
                assert_measurements(run.metric_results, results)
            # events about this rollout and nothing else
            stored_events = [e for e in items(harness, "events", namespace)
                             if e["involvedObject"].get("kind") == "Rollout" and e["involvedObject"]["name"] == name]
            assert sorted(e.message for e in view.events) == sorted(e["message"] for e in stored_events)
            # the canary's release identity comes from its template even when its pods are gone
            if view.canary_rs is not None:
                assert view.release_id == view.canary_rs.template_labels.get("release-id")


def assert_measurements(parsed: Any, raw_results: list[dict[str, Any]]) -> None:
    """Values are kept verbatim; the evidence gate's verdict reason is the one in the JSON value."""
    for mr, raw in zip(parsed, raw_results, strict=True):
        raw_ms = raw.get("measurements") or []
        assert [m.value for m in mr.measurements] == [m.get("value") for m in raw_ms]
        assert [m.message for m in mr.measurements] == [m.get("message") or None for m in raw_ms]
        if mr.name != "mc-evidence-ok":
            continue
        for m in mr.measurements:
            decoded = json.loads(m.value) if m.value else None
            if isinstance(decoded, dict):
                assert m.verdict is not None and m.verdict.reason == decoded["reason"]
                assert m.verdict.ok is decoded["ok"]
            else:
                assert m.verdict is None and m.verdict_error


def test_pods_carry_probes_restarts_and_waiting_reasons(harness: Harness) -> None:
    info = load_scenario(harness.store, "evidence-gap")
    namespace, name = info.rollouts[0]
    pod = copy.deepcopy(next(p for p in items(harness, "pods", namespace)))
    rs_hash = pod["metadata"]["labels"]["rollouts-pod-template-hash"]
    pod["metadata"] = {"name": f"{name}-{rs_hash}-crash", "namespace": namespace, "labels": pod["metadata"]["labels"],
                       "ownerReferences": pod["metadata"]["ownerReferences"]}
    pod["status"] = {"phase": "Running", "containerStatuses": [
        {"name": c["name"], "image": c["image"], "ready": False, "restartCount": 7,
         "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}}}
        for c in pod["spec"]["containers"]]}
    harness.store.create("pods", namespace, pod, system=True)
    with cluster_for(harness) as cluster:
        view = read_rollout(cluster, namespace, name)
    found = [p for rs in view.replicasets for p in rs.pods if p.name.endswith("-crash")]
    assert len(found) == 1
    crash = found[0]
    assert (crash.status, crash.restarts, crash.ready) == ("CrashLoopBackOff", 7, f"0/{len(pod['spec']['containers'])}")
    container = crash.containers[0]
    assert (container.state, container.reason, container.message) == ("waiting", "CrashLoopBackOff", "back-off 5m0s")
    assert container.readiness_probe == pod["spec"]["containers"][0].get("readinessProbe")


# --------------------------------------------------------------------------- upstream fixtures as a scenario


def test_upstream_rollout_aborted_fixture_through_the_api(harness: Harness) -> None:
    info = load_scenario(harness.store, FIXTURES / "rollout-aborted")
    assert ("default", "rollout-background-analysis") in info.rollouts
    with cluster_for(harness) as cluster:
        view = read_rollout(cluster, "default", "rollout-background-analysis")
    assert view.phase == "Degraded"
    assert view.message == 'RolloutAborted: metric "web" assessed Failed due to failed (1) > failureLimit (0)'
    assert [(rs.revision, rs.status, rs.tags) for rs in view.replicasets] == [
        (2, "ScaledDown", ("canary",)), (1, "Healthy", ("stable",))]
    assert [(r.name, r.summary) for r in view.analysis_runs] == [("rollout-background-analysis-db976bc44-2", "✖ 1")]
    assert view.abort is not None and view.abort.form == "v1.0-v1.1"


# --------------------------------------------------------------------------- bounded requests and bytes


def noise(h: Harness, namespace: str, copies: int) -> None:
    """Another application's objects in the same namespace: ReplicaSets, pods, runs, events."""
    for i in range(copies):
        labels = {"app": f"other-{i}", "rollouts-pod-template-hash": f"h{i}"}
        template = {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}}
        h.store.create("replicasets", namespace, {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                       "metadata": {"name": f"other-{i}-h{i}", "labels": labels},
                       "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template}})
        h.store.create("pods", namespace, {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": f"other-{i}-h{i}-p", "labels": labels}, "spec": template["spec"]})
        h.store.create("analysisruns", namespace, {"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisRun",
                       "metadata": {"name": f"other-{i}-h{i}-1", "labels": labels}, "spec": {"metrics": []}})
        h.store.create("events", namespace, {"apiVersion": "v1", "kind": "Event", "metadata": {"name": f"e{i}"},
                       "involvedObject": {"kind": "Rollout", "name": f"other-{i}", "namespace": namespace},
                       "reason": "RolloutUpdated", "message": "x" * 200, "type": "Normal"})


def test_requests_and_bytes_do_not_grow_with_the_namespace(harness: Harness) -> None:
    info = load_scenario(harness.store, "evidence-gap")
    namespace, name = info.rollouts[0]
    with cluster_for(harness) as cluster:
        before = read_rollout(cluster, namespace, name)
        requests, received = cluster.stats.requests, cluster.stats.bytes_received
    noise(harness, namespace, 60)
    with cluster_for(harness) as cluster:
        after = read_rollout(cluster, namespace, name)
        assert cluster.stats.requests == requests == 5
        # only list resourceVersions may differ in length; 60 foreign objects would add tens of kB
        assert abs(cluster.stats.bytes_received - received) < 100
    assert [rs.name for rs in after.replicasets] == [rs.name for rs in before.replicasets]
    lists = [r for r in harness.server.requests if r.method == "GET" and r.path.split("/")[-1] != name]
    assert lists and all(r.query.get("labelSelector") or r.query.get("fieldSelector") for r in lists)


def test_extra_analysis_selector_narrows_the_runs(harness: Harness) -> None:
    info = load_scenario(harness.store, "evidence-gap")
    namespace, name = info.rollouts[0]
    runs = [r for r in items(harness, "analysisruns", namespace)]
    labels = runs[0]["metadata"].get("labels") or {}
    with cluster_for(harness) as cluster:
        none = read_rollout(cluster, namespace, name, analysis_selector="no-such-label=1")
        assert none.analysis_runs == ()
        if "rollout" in labels:  # analysisRunMetadata.labels configured: the playbook's selector works
            some = read_rollout(cluster, namespace, name, analysis_selector=f"rollout={labels['rollout']}")
            assert {r.name for r in some.analysis_runs} == owned_by(runs, some.uid)
    sent = [r for r in harness.server.requests if r.path.endswith("/analysisruns")]
    assert "no-such-label=1" in sent[0].query["labelSelector"]


# --------------------------------------------------------------------------- other reads


def test_list_rollouts_and_pod_logs(harness: Harness) -> None:
    info = load_scenario(harness.store, "evidence-gap")
    namespace, _ = info.rollouts[0]
    pod = items(harness, "pods", namespace)[0]["metadata"]["name"]
    lines = "\n".join(f"line {i}" for i in range(300)) + "\n"
    harness.store.set_pod_log(namespace, pod, lines)
    with cluster_for(harness, "sandbox-viewer") as cluster:
        summaries = list_rollouts(cluster, namespace)
        assert [(s.name, s.phase) for s in summaries] == [
            (ro["metadata"]["name"], derive_phase(ro)[0]) for ro in items(harness, "rollouts", namespace)]
        text = pod_logs(cluster, namespace, pod, tail=5)
    assert text.splitlines() == [f"line {i}" for i in range(295, 300)]


# --------------------------------------------------------------------------- readable errors


def test_not_found_names_object_namespace_context_and_next_step(harness: Harness) -> None:
    load_scenario(harness.store, "evidence-gap")
    with cluster_for(harness) as cluster, pytest.raises(NotFound) as caught:
        read_rollout(cluster, "prod", "nope")
    e = caught.value
    assert (e.kind, e.name, e.namespace, e.context, e.status) == ("Rollout", "nope", "prod", "sandbox", 404)
    assert str(e).startswith('Rollout "nope" not found in namespace "prod" (context "sandbox")')
    assert 'rollouts.argoproj.io "nope" not found' in str(e)  # the Kubernetes Status message is kept
    assert "kubectl get rollouts -n prod" in str(e)


def test_unauthorized_token(harness: Harness, tmp_path: Path) -> None:
    doc = yaml.safe_load(harness.kubeconfig.read_text())
    for user in doc["users"]:
        user["user"]["token"] = "not-a-valid-token"
    bad = tmp_path / "bad-kubeconfig"
    bad.write_text(yaml.safe_dump(doc))
    with connect("sandbox", bad, timeout=5.0) as cluster, pytest.raises(Unauthorized) as caught:
        read_rollout(cluster, "prod", "api")
    assert caught.value.status == 401 and 'context "sandbox"' in str(caught.value)
    assert "Log in again" in str(caught.value)


def test_conflict_keeps_the_status_message(harness: Harness) -> None:
    load_scenario(harness.store, "evidence-gap")
    with cluster_for(harness) as cluster:
        ro = cluster.get("rollouts", "prod", "api")
        ro["metadata"]["resourceVersion"] = "1"  # stale
        from rollbook.cluster.connect import Target
        with pytest.raises(Conflict) as caught:
            cluster.request("PUT", cluster.path("rollouts", "prod", "api"), Target("rollouts", "prod", "api", "update"),
                            body=ro, content_type="application/json")
    assert caught.value.status == 409 and caught.value.reason == "Conflict"
    assert 'Rollout "api" in namespace "prod" changed since it was read' in str(caught.value)


def test_unreachable_server_is_retryable_and_fast(tmp_path: Path, harness: Harness) -> None:
    doc = yaml.safe_load(harness.kubeconfig.read_text())
    for c in doc["clusters"]:
        c["cluster"]["server"] = "https://127.0.0.1:1"  # nothing listens on port 1
    dead = tmp_path / "dead-kubeconfig"
    dead.write_text(yaml.safe_dump(doc))
    with connect("sandbox", dead, timeout=2.0) as cluster, pytest.raises(ClusterUnavailable) as caught:
        read_rollout(cluster, "prod", "api")
    assert "could not be reached" in str(caught.value) and "127.0.0.1:1" in str(caught.value)


def test_unknown_context_is_a_config_error(harness: Harness) -> None:
    with pytest.raises(ConfigError) as caught:
        connect("no-such-context", harness.kubeconfig)
    assert "no-such-context" in str(caught.value) and "kubectl config get-contexts" in str(caught.value)


# --------------------------------------------------------------------------- bounded waits


def test_wait_for_is_bounded_reports_progress_and_tolerates_blips() -> None:
    now = [0.0]
    calls: list[int] = []
    progress: list[tuple[int, float]] = []

    def fetch() -> int:
        calls.append(1)
        if len(calls) == 2:
            raise ClusterUnavailable("blip")
        return len(calls)

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(WaitTimeout) as caught:
        wait_for(fetch, lambda n: n > 100, timeout=10, interval=2, what="the rollback",
                 progress=lambda n, left: progress.append((n, left)), clock=lambda: now[0], sleep=sleep)
    assert "Waited 10s for the rollback" in str(caught.value)
    assert len(calls) == 6 and now[0] == 10  # t = 0, 2, 4, 6, 8, 10; never beyond the deadline
    assert [n for n, _ in progress] == [1, 3, 4, 5, 6] and progress[0][1] == 10
    assert wait_for(fetch, lambda n: n >= 7, timeout=10, interval=2, clock=lambda: now[0], sleep=sleep) == 7
