"""The scenario loader: built-in scenarios, upstream fixtures, folders written by hand."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from rollbook.errors import UsageError
from rollbook.sandbox.loader import (
    BUILTIN_DIR,
    ScenarioError,
    UnknownScenario,
    builtin_scenarios,
    load_scenario,
    resolve_times,
)
from rollbook.sandbox.mc import MCServer
from rollbook.sandbox.store import Store

# Argo's upstream test data, shipped in the project (fixtures/argo-rollouts/README.md says from where)
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "argo-rollouts"
BUILTINS = ["evidence-gap", "slo-regression", "rollback-loop", "release-mismatch", "evidence-lost", "mc-errors",
            "healthy"]
NOW = datetime(2026, 8, 21, 10, 15, 0, tzinfo=UTC)


def parse(ts: str) -> datetime:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def loaded(name: str) -> tuple[Store, object]:
    store = Store()
    return store, load_scenario(store, name, now=NOW)


def runs_of(store: Store, ns: str) -> list[dict]:
    return store.list("analysisruns", ns)[0]


def metric(run: dict, name: str) -> dict:
    return next(r for r in run["status"]["metricResults"] if r["name"] == name)


# --------------------------------------------------------------------------- relative times


def test_relative_times_become_rfc3339_anywhere_in_strings() -> None:
    doc = {"a": "{{now-4m}}", "b": ["x {{now+1h30m}} y", "{{ now }}"], "c": "{{args.release-id}}", "d": 3}
    out = resolve_times(doc, NOW)
    assert out == {"a": "2026-08-21T10:11:00Z", "b": ["x 2026-08-21T11:45:00Z y", "2026-08-21T10:15:00Z"],
                   "c": "{{args.release-id}}", "d": 3}


def test_days_and_seconds() -> None:
    assert resolve_times("{{now-7d}}|{{now+30s}}", NOW) == "2026-08-14T10:15:00Z|2026-08-21T10:15:30Z"


# --------------------------------------------------------------------------- built-ins


def test_the_seven_builtins_are_shipped() -> None:
    assert set(BUILTINS) <= set(builtin_scenarios())


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_is_a_realistic_argo_world(name: str) -> None:
    store, info = loaded(name)
    assert len(info.rollouts) == 1 and info.mc_state is not None and info.skipped == []
    ns, ro_name = info.rollouts[0]
    assert info.namespaces == [ns]
    ro = store.get("rollouts", ns, ro_name)
    st = ro["status"]
    assert isinstance(st["observedGeneration"], str) and int(st["observedGeneration"]) == ro["metadata"]["generation"]
    assert st["canary"]["currentStepAnalysisRunStatus"] is None
    assert {c["type"] for c in st["conditions"]} >= {"Available", "Progressing", "Healthy"}
    templates = {t["metadata"]["name"]: t for t in store.list("analysistemplates", ns)[0]}
    assert set(templates) == {"mc-evidence-ok", "ig-slo-checks"}
    web = templates["mc-evidence-ok"]["spec"]["metrics"][0]
    assert web["failureLimit"] == 0 and web["provider"]["web"]["headers"][0]["key"] == "Authorization"
    slo = {m["name"]: m for m in templates["ig-slo-checks"]["spec"]["metrics"]}
    assert slo["ig-latency-p99"]["successCondition"] == "result[0] <= 0.5"
    assert slo["ig-error-rate"]["successCondition"] == "result[0] <= 0.01"
    assert all(m["interval"] == "1m" and m["count"] == 5 and m["failureLimit"] == 1 for m in slo.values())
    assert all("rollouts_pod_template_hash=" in m["provider"]["prometheus"]["query"] for m in slo.values())
    # stable pods are Ready, with probes
    stable = st["stableRS"]
    pods = store.list("pods", ns, label_selector=f"rollouts-pod-template-hash={stable}")[0]
    assert len(pods) == ro["spec"]["replicas"]
    for pod in pods:
        assert {"readinessProbe", "livenessProbe"} <= set(pod["spec"]["containers"][0])
        assert any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"]["conditions"])
    # every run: one merged run per step, Prometheus values as Argo stores them
    for run in runs_of(store, ns):
        names = [r["name"] for r in run["status"]["metricResults"]]
        assert names == ["mc-evidence-ok", "ig-latency-p99", "ig-error-rate"]
        for r in run["status"]["metricResults"][1:]:
            assert r["metadata"]["ResolvedPrometheusQuery"].count(run["metadata"]["labels"]["rollouts-pod-template-hash"]) >= 1
            assert all(m["value"].startswith("[") for m in r["measurements"])
    # MC accepts the state and knows every release the ReplicaSets carry
    mc = MCServer(info.mc_state, read_token="read-token-x", write_token="write-token-y")
    for rs in store.list("replicasets", ns)[0]:
        rid = rs["spec"]["template"]["metadata"]["labels"]["release-id"]
        assert mc.verdict(rid)["release_id"] == rid


@pytest.mark.parametrize("name", [n for n in BUILTINS if n != "healthy"])
def test_aborted_scenarios_look_like_a_v19_abort(name: str) -> None:
    store, info = loaded(name)
    ns, ro_name = info.rollouts[0]
    ro = store.get("rollouts", ns, ro_name)
    st = ro["status"]
    assert st["phase"] == "Degraded" and st["abort"] is True
    rev = ro["metadata"]["annotations"]["rollout.argoproj.io/revision"]
    assert st["message"].startswith(f"RolloutAborted: Rollout aborted update to revision {rev}: "
                                    "Step-based analysis phase error/failed: Metric \"")
    progressing = next(c for c in st["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "RolloutAborted" and progressing["status"] == "False"
    assert "RolloutAborted: " + progressing["message"] == st["message"]
    canary = store.list("replicasets", ns, label_selector=f"rollouts-pod-template-hash={st['currentPodHash']}")[0]
    stable = store.list("replicasets", ns, label_selector=f"rollouts-pod-template-hash={st['stableRS']}")[0]
    assert canary[0]["spec"]["replicas"] == 0 and stable[0]["spec"]["replicas"] == ro["spec"]["replicas"]
    assert int(stable[0]["metadata"]["annotations"]["rollout.argoproj.io/revision"]) == int(rev) - 1
    assert stable[0]["spec"]["template"]["spec"]["containers"][0]["image"].startswith("registry.example/")
    reasons = {e["reason"] for e in store.list("events", ns)[0]}
    assert {"RolloutAborted", "RolloutUpdated"} <= reasons
    assert reasons & {"AnalysisRunFailed", "AnalysisRunError"}
    assert parse(st["abortedAt"]) < NOW


def test_evidence_gap_verdict_is_the_compact_sorted_json_of_mc() -> None:
    store, _ = loaded("evidence-gap")
    run = store.get("analysisruns", "prod", "api-6d4f8b7c9-7-2")
    value = metric(run, "mc-evidence-ok")["measurements"][-1]["value"]
    verdict = json.loads(value)
    assert value == json.dumps(verdict, sort_keys=True, separators=(",", ":"))
    assert verdict["reason"] == "missing required evidence: test-report (junit)" and verdict["ok"] is False
    assert "message" not in metric(run, "mc-evidence-ok")["measurements"][-1]
    assert run["status"]["message"] == 'Metric "mc-evidence-ok" assessed Failed due to failed (1) > failureLimit (0)'


def test_slo_regression_fails_on_error_rate_with_prometheus_values() -> None:
    store, info = loaded("slo-regression")
    assert info.rollouts == [("payments", "payments-api")]
    run = runs_of(store, "payments")[0]
    err = metric(run, "ig-error-rate")
    assert err["phase"] == "Failed" and [m["value"] for m in err["measurements"]] == ["[0.034]", "[0.041]"]
    assert json.loads(metric(run, "mc-evidence-ok")["measurements"][0]["value"])["ok"] is True
    assert "rollout" not in run["metadata"]["labels"]


def test_rollback_loop_has_three_failed_runs_and_escalation_is_due() -> None:
    store, _ = loaded("rollback-loop")
    runs = {r["metadata"]["name"]: r for r in runs_of(store, "shop")}
    base = "checkout-78f6d9c5b-7-2"
    assert set(runs) == {base, base + ".1", base + ".2"}
    assert {r["status"]["phase"] for r in runs.values()} == {"Failed"}
    assert {r["metadata"]["annotations"]["rollout.argoproj.io/revision"] for r in runs.values()} == {"7"}
    starts = sorted(parse(r["status"]["startedAt"]) for r in runs.values())
    assert all(b - a >= timedelta(minutes=3) for a, b in itertools.pairwise(starts))
    ro = store.get("rollouts", "shop", "checkout")
    assert NOW - parse(ro["status"]["abortedAt"]) >= timedelta(minutes=15)
    assert runs[base]["metadata"]["labels"]["rollout"] == "checkout"


def test_release_mismatch_verdict_names_another_release() -> None:
    store, _ = loaded("release-mismatch")
    ro = store.get("rollouts", "search", "search-api")
    canary = store.get("replicasets", "search", f"search-api-{ro['status']['currentPodHash']}")
    label = canary["spec"]["template"]["metadata"]["labels"]["release-id"]
    run = runs_of(store, "search")[0]
    verdict = json.loads(metric(run, "mc-evidence-ok")["measurements"][-1]["value"])
    assert verdict["release_id"] != label and label == "search-api-5.2.0"


def test_evidence_lost_keeps_only_the_boolean() -> None:
    store, _ = loaded("evidence-lost")
    tmpl = store.get("analysistemplates", "orders", "mc-evidence-ok")
    assert tmpl["spec"]["metrics"][0]["provider"]["web"]["jsonPath"] == "{$.ok}"
    run = runs_of(store, "orders")[0]
    assert metric(run, "mc-evidence-ok")["measurements"][-1]["value"] == "false"


def test_mc_errors_are_error_measurements() -> None:
    store, _ = loaded("mc-errors")
    run = runs_of(store, "billing")[0]
    web = metric(run, "mc-evidence-ok")
    assert run["status"]["phase"] == "Error" and web["phase"] == "Error" and web["consecutiveError"] == 5
    assert {m["message"] for m in web["measurements"]} == {"received non 2xx response code: 503"}
    assert all("value" not in m for m in web["measurements"])
    assert run["status"]["message"].endswith('"Error Message: received non 2xx response code: 503"')


def test_healthy_is_a_completed_rollout() -> None:
    store, _ = loaded("healthy")
    st = store.get("rollouts", "catalog", "catalog-api")["status"]
    assert st["phase"] == "Healthy" and st["stableRS"] == st["currentPodHash"] and not st.get("abort")
    assert {r["status"]["phase"] for r in runs_of(store, "catalog")} == {"Successful"}


def test_owner_references_are_linked_when_the_yaml_leaves_them_out() -> None:
    text = (BUILTIN_DIR / "evidence-gap" / "replicasets.yaml").read_text()
    assert "ownerReferences" not in text   # the scenario relies on the loader
    store, _ = loaded("evidence-gap")
    ro = store.get("rollouts", "prod", "api")
    for rs in store.list("replicasets", "prod")[0]:
        assert rs["metadata"]["ownerReferences"][0]["uid"] == ro["metadata"]["uid"]
        for pod in store.list("pods", "prod", label_selector=f"rollouts-pod-template-hash="
                                                             f"{rs['metadata']['labels']['rollouts-pod-template-hash']}")[0]:
            assert pod["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]
    run = runs_of(store, "prod")[0]
    assert run["metadata"]["ownerReferences"][0] == {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "api", "uid": ro["metadata"]["uid"],
        "controller": True, "blockOwnerDeletion": True}
    ev = [e for e in store.list("events", "prod")[0] if e["involvedObject"]["kind"] == "AnalysisRun"]
    assert ev and all(e["involvedObject"]["uid"] == run["metadata"]["uid"] for e in ev)


def test_pod_log_comes_from_the_annotation_which_is_removed() -> None:
    store, _ = loaded("evidence-gap")
    pod = store.list("pods", "prod")[0][0]
    assert "sandbox.rollbook.dev/log" not in (pod["metadata"].get("annotations") or {})
    log = store.pod_log("prod", pod["metadata"]["name"])
    assert "starting api 1.41.3" in log and len(log.splitlines()) >= 3


def test_times_are_relative_to_load_time() -> None:
    store, _ = loaded("evidence-gap")
    st = store.get("rollouts", "prod", "api")["status"]
    assert NOW - parse(st["abortedAt"]) == timedelta(minutes=7)
    again = Store()
    load_scenario(again, "evidence-gap")
    real = parse(again.get("rollouts", "prod", "api")["status"]["abortedAt"])
    assert abs((datetime.now(UTC) - real) - timedelta(minutes=7)) < timedelta(seconds=5)


# --------------------------------------------------------------------------- upstream fixtures


@pytest.mark.parametrize("folder, rollouts", [
    ("rollout-aborted", [("default", "rollout-background-analysis")]),
    ("canary", [("jesse-test", "canary-demo"), ("jesse-test", "canary-demo-pingpong"),
                ("jesse-test", "canary-demo-weights"), ("jesse-test", "canary-demo-weights-na")]),
    ("blue-green", [("jesse-test", "bluegreen-demo")]),
    ("rollout-invalid", [("default", "rollout-invalid")]),
    ("experiment-analysis", []),
])
def test_upstream_fixtures_load_as_scenarios(folder: str, rollouts: list[tuple[str, str]]) -> None:
    store = Store()
    info = load_scenario(store, FIXTURES / folder)
    assert info.rollouts == rollouts and info.mc_state is None
    for path in sorted((FIXTURES / folder).glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        plural = {"Rollout": "rollouts", "ReplicaSet": "replicasets", "Pod": "pods", "AnalysisRun": "analysisruns",
                  "Deployment": "deployments"}[doc["kind"]]
        name, ns = doc["metadata"]["name"], doc["metadata"]["namespace"]
        if name != name.lower():
            assert any(f'"{name}"' in s for s in info.skipped)   # a real API server refuses it
            continue
        got = store.get(plural, ns, name)
        assert got["metadata"]["uid"] == doc["metadata"].get("uid", got["metadata"]["uid"])   # kept, even shared
        assert got["metadata"]["uid"]
        if doc["metadata"].get("creationTimestamp"):
            assert got["metadata"]["creationTimestamp"] == doc["metadata"]["creationTimestamp"]
        if "status" in doc and doc["kind"] == "Pod":   # kept; the kubelet's missing fields are added
            assert _kept(doc["status"], got["status"]), (name, doc["status"], got["status"])
            assert got["status"].get("hostIPs") or not got["spec"].get("nodeName")
        elif "status" in doc:
            assert got["status"] == doc["status"]


def _kept(given: Any, got: Any) -> bool:
    """Every value ``given`` states is in ``got`` unchanged (dicts may have gained keys)."""
    if isinstance(given, dict):
        return isinstance(got, dict) and all(k in got and _kept(v, got[k]) for k, v in given.items())
    if isinstance(given, list):
        return isinstance(got, list) and len(given) == len(got) and all(map(_kept, given, got))
    return bool(given == got)


def test_canary_fixture_rollouts_share_one_uid() -> None:
    store = Store()
    load_scenario(store, FIXTURES / "canary")
    uids = {r["metadata"]["uid"] for r in store.list("rollouts", "jesse-test")[0]}
    assert uids == {"b350ba76-f6ed-11e9-a15b-42010aa80033"}


def test_blue_green_legacy_replicasets_are_served_as_apps_v1() -> None:
    store = Store()
    load_scenario(store, FIXTURES / "blue-green")
    assert {rs["apiVersion"] for rs in store.list("replicasets", "jesse-test")[0]} == {"apps/v1"}


# --------------------------------------------------------------------------- folders and errors


def test_unknown_scenario_lists_the_builtins() -> None:
    with pytest.raises(UnknownScenario) as e:
        load_scenario(Store(), "no-such-scenario")
    assert isinstance(e.value, UsageError)
    assert "no-such-scenario" in str(e.value) and all(n in str(e.value) for n in BUILTINS)


def test_a_hand_written_folder(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text(
        "apiVersion: v1\nkind: List\nitems:\n"
        "- apiVersion: v1\n  kind: Pod\n  metadata: {name: web-abc12-x1, namespace: team,"
        " labels: {app: web, rollouts-pod-template-hash: abc12}}\n  spec: {containers: [{name: web, image: w:1}]}\n")
    (tmp_path / "a.yaml").write_text(
        "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: web, namespace: team}\n"
        "spec: {selector: {matchLabels: {app: web}}}\nstatus: {phase: Healthy, observedGeneration: '1'}\n---\n"
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: web-abc12, namespace: team,"
        " labels: {app: web, rollouts-pod-template-hash: abc12}, creationTimestamp: '{{now-1h}}'}\n"
        "spec: {replicas: 1}\n")
    store = Store()
    info = load_scenario(store, tmp_path)
    assert info.rollouts == [("team", "web")] and info.namespaces == ["team"] and info.mc_state is None
    ro, rs = store.get("rollouts", "team", "web"), store.get("replicasets", "team", "web-abc12")
    pod = store.get("pods", "team", "web-abc12-x1")
    assert ro["status"]["phase"] == "Healthy"
    assert rs["metadata"]["ownerReferences"][0]["uid"] == ro["metadata"]["uid"]
    assert pod["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]
    assert datetime.now(UTC) - parse(rs["metadata"]["creationTimestamp"]) > timedelta(minutes=59)


def test_a_kind_the_sandbox_does_not_serve_is_skipped_and_reported(tmp_path: Path) -> None:
    (tmp_path / "vs.yaml").write_text("apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\n"
                                      "metadata: {name: api, namespace: prod}\n")
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: api, namespace: prod}\n"
                                      "data: {mode: fast}\n")
    store = Store()
    info = load_scenario(store, tmp_path)
    assert info.skipped == ["VirtualService 'api' from vs.yaml: the sandbox does not serve "
                            "networking.istio.io/v1beta1 VirtualService"]
    assert store.get("configmaps", "prod", "api")["data"] == {"mode": "fast"}   # the rest of the world loads


def test_a_document_without_a_kind_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text("apiVersion: v1\nmetadata: {name: api}\n")
    with pytest.raises(ScenarioError) as e:
        load_scenario(Store(), tmp_path)
    assert "without a kind" in str(e.value) and "x.yaml" in str(e.value)


def test_cluster_scoped_kinds_load_without_a_namespace(tmp_path: Path) -> None:
    (tmp_path / "cat.yaml").write_text("apiVersion: argoproj.io/v1alpha1\nkind: ClusterAnalysisTemplate\n"
                                       "metadata: {name: mc-evidence-ok}\nspec: {metrics: []}\n")
    store = Store()
    load_scenario(store, tmp_path)
    assert store.get("clusteranalysistemplates", None, "mc-evidence-ok")["spec"] == {"metrics": []}
