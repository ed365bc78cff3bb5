"""Every preflight rule by what it catches: examples/ passes all of them; each break of it is caught.

A case mutates the reference objects the way a team gets the gate wrong, then asserts the finding (rule,
severity, object, field) and that the reference itself is clean. Every rule id has at least one case.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml
from preflight_helpers import Obj, arg, check, gate_of, reference, step_analysis

from rollbook.cluster.gate import Access, Fetched
from rollbook.permissions import PERMISSIONS, rows_for
from rollbook.preflight import GATE_RULES, RULES, Finding, rules_rollout
from rollbook.preflight import rules_access as ra

Mutate = Callable[[dict[str, Obj]], Any]


def _mc(objs: dict[str, Obj]) -> Obj:
    return objs["mc"]["spec"]["metrics"][0]


def _web(objs: dict[str, Obj]) -> Obj:
    return _mc(objs)["provider"]["web"]


def _canary(objs: dict[str, Obj]) -> Obj:
    return objs["rollout"]["spec"]["strategy"]["canary"]


def _set(obj: Obj, key: str, value: Any) -> None:
    if value is None:
        obj.pop(key, None)
    else:
        obj[key] = value


def _cm_data(objs: dict[str, Obj], key: str, value: str | None) -> None:
    _set(objs["configmap"]["data"], key, value)


def _drop_subscription(objs: dict[str, Obj]) -> None:
    objs["rollout"]["metadata"]["annotations"].clear()


# (rule, severity, object, field (substring), mutation)
CASES: list[tuple[str, str, str, str, Mutate]] = [
    ("evidence-jsonpath", "error", "AnalysisTemplate/mc-evidence-ok", "provider.web.jsonPath",
     lambda o: (_web(o).update(jsonPath="{$.ok}"), _mc(o).update(successCondition="result == true"))),
    ("evidence-condition", "error", "AnalysisTemplate/mc-evidence-ok", "successCondition",
     lambda o: _mc(o).pop("successCondition")),
    ("evidence-condition", "error", "AnalysisTemplate/mc-evidence-ok", "successCondition",
     lambda o: _mc(o).update(successCondition="result.passed == true")),
    ("evidence-condition", "error", "AnalysisTemplate/mc-evidence-ok", "successCondition",
     lambda o: _mc(o).update(successCondition="len(result.missing) == 0")),
    ("evidence-condition", "error", "AnalysisTemplate/mc-evidence-ok", "successCondition",
     lambda o: _mc(o).update(successCondition="result == true")),
    ("evidence-condition", "error", "AnalysisTemplate/mc-evidence-ok", "successCondition",
     lambda o: (_web(o).update(jsonPath="{$.passed}"), _mc(o).update(successCondition="result == true"))),
    ("evidence-failure-limit", "error", "AnalysisTemplate/mc-evidence-ok", "failureLimit",
     lambda o: _mc(o).update(failureLimit=1)),
    ("no-evidence-gate", "warn", "Rollout/api", "analysis",
     lambda o: step_analysis(o["rollout"]).update(templates=[{"templateName": "ig-slo-checks"}])),
    ("error-limit", "warn", "AnalysisTemplate/mc-evidence-ok", "spec.metrics[0].consecutiveErrorLimit",
     lambda o: _mc(o).pop("consecutiveErrorLimit")),
    ("error-limit", "warn", "AnalysisTemplate/ig-slo-checks", "spec.metrics[1].consecutiveErrorLimit",
     lambda o: o["slo"]["spec"]["metrics"][1].update(consecutiveErrorLimit=0)),
    ("tls-insecure", "error", "AnalysisTemplate/mc-evidence-ok", "provider.web.insecure",
     lambda o: _web(o).update(insecure=True)),
    ("tls-insecure", "warn", "AnalysisTemplate/ig-slo-checks", "provider.prometheus.insecure",
     lambda o: o["slo"]["spec"]["metrics"][0]["provider"]["prometheus"].update(insecure=True)),
    ("secret-literal", "error", "AnalysisTemplate/mc-evidence-ok", "provider.web.headers[0].value",
     lambda o: _web(o)["headers"][0].update(value="Bearer s3cr3t-planted")),
    ("secret-literal", "error", "Rollout/api", "spec.strategy.canary.steps[2].analysis.args[3].value",
     lambda o: step_analysis(o["rollout"])["args"].append({"name": "mc-token", "value": "s3cr3t"})),
    ("secret-literal", "error", "AnalysisTemplate/mc-evidence-ok", "spec.args[1].value",
     lambda o: o["mc"]["spec"]["args"].__setitem__(1, {"name": "mc-token", "value": "s3cr3t"})),
    ("secret-literal", "error", "AnalysisTemplate/mc-evidence-ok", "provider.web.url",
     lambda o: _web(o).update(url=_web(o)["url"] + "&access_token=abc")),
    ("template-missing", "error", "Rollout/api", "steps[2].analysis.templates[1].templateName",
     lambda o: step_analysis(o["rollout"])["templates"][1].update(templateName="ig-slo-check")),
    ("template-missing", "error", "Rollout/api", "steps[2].analysis.templates[0].templateName",
     lambda o: step_analysis(o["rollout"])["templates"][0].update(clusterScope=True)),
    ("template-arg-unset", "error", "AnalysisTemplate/ig-slo-checks", "spec.args",
     lambda o: step_analysis(o["rollout"]).update(
         args=[a for a in step_analysis(o["rollout"])["args"] if a["name"] != "namespace"])),
    ("template-arg-unset", "error", "AnalysisTemplate/mc-evidence-ok", "spec.args",
     lambda o: _web(o).update(url=_web(o)["url"] + "&team={{args.team}}")),
    ("release-id-source", "error", "Rollout/api", "args[0].value",
     lambda o: step_analysis(o["rollout"])["args"].__setitem__(0, {"name": "release-id", "value": "api-1.42.0"})),
    ("release-id-source", "error", "Rollout/api", "args[0].valueFrom",
     lambda o: arg(o["rollout"], "release-id")["valueFrom"]["fieldRef"].update(fieldPath="metadata.labels['release-id']")),
    ("release-id-source", "error", "Rollout/api", "args[0].valueFrom",
     lambda o: arg(o["rollout"], "release-id").update(valueFrom={"podTemplateHashValue": "Latest"})),
    ("release-id-source", "error", "AnalysisTemplate/mc-evidence-ok", "provider.web.url",
     lambda o: _web(o).update(url="https://mc/api/v1/releases/api-1.42.0/evidence-status")),
    ("release-id-path", "error", "Rollout/api", "args[0].valueFrom.fieldRef.fieldPath",
     lambda o: arg(o["rollout"], "release-id")["valueFrom"]["fieldRef"].update(
         fieldPath="spec.template.metadata.labels['release-id']")),
    ("release-id-path", "error", "Rollout/api", "args[0].valueFrom.fieldRef.fieldPath",
     lambda o: arg(o["rollout"], "release-id")["valueFrom"]["fieldRef"].update(
         fieldPath="spec.template.metadata.labels.release.example/id")),
    ("release-label-missing", "error", "Rollout/api", "spec.template.metadata.labels",
     lambda o: o["rollout"]["spec"]["template"]["metadata"]["labels"].pop("release-id")),
    ("analysisrun-label", "warn", "Rollout/api", "steps[2].analysis.analysisRunMetadata.labels.rollout",
     lambda o: step_analysis(o["rollout"]).pop("analysisRunMetadata")),
    ("analysisrun-label", "warn", "Rollout/api", "steps[2].analysis.analysisRunMetadata.labels.rollout",
     lambda o: _canary(o).update(analysisRunMetadata=step_analysis(o["rollout"]).pop("analysisRunMetadata"))),
    ("history-limit", "error", "Rollout/api", "spec.analysis.unsuccessfulRunHistoryLimit",
     lambda o: o["rollout"]["spec"]["analysis"].update(unsuccessfulRunHistoryLimit=0)),
    ("history-limit", "warn", "Rollout/api", "spec.analysis.unsuccessfulRunHistoryLimit",
     lambda o: o["rollout"]["spec"]["analysis"].update(unsuccessfulRunHistoryLimit=2)),
    ("abort-scaledown", "warn", "Rollout/api", "spec.strategy.canary.abortScaleDownDelaySeconds",
     lambda o: _canary(o).pop("abortScaleDownDelaySeconds")),
    ("abort-scaledown", "warn", "Rollout/api", "spec.strategy.canary.abortScaleDownDelaySeconds",
     lambda o: _canary(o).update(abortScaleDownDelaySeconds=90)),
    ("abort-scaledown", "info", "Rollout/api", "spec.strategy.canary.trafficRouting",
     lambda o: _canary(o).pop("trafficRouting")),
    ("slo-not-canary", "warn", "AnalysisTemplate/ig-slo-checks", "spec.metrics[0].provider.prometheus.query",
     lambda o: o["slo"]["spec"]["metrics"][0]["provider"]["prometheus"].update(
         query='histogram_quantile(0.99, sum by (le) (rate(x_bucket{namespace="{{args.namespace}}"}[2m])))')),
    ("slo-not-canary", "warn", "AnalysisTemplate/ig-slo-checks", "spec.metrics[1].provider.prometheus.query",
     lambda o: arg(o["rollout"], "canary-hash").update(valueFrom={"podTemplateHashValue": "Stable"})),
    ("dry-run", "warn", "AnalysisTemplate/ig-slo-checks", "spec.dryRun[0].metricName",
     lambda o: o["slo"]["spec"].update(dryRun=[{"metricName": "ig-latency-p99"}])),
    ("dry-run", "error", "Rollout/api", "steps[2].analysis.dryRun[0].metricName",
     lambda o: step_analysis(o["rollout"]).update(dryRun=[{"metricName": "evidence"}])),  # Go regex: unanchored
    ("measurement-retention", "warn", "AnalysisTemplate/mc-evidence-ok", "spec.measurementRetention",
     lambda o: o["mc"]["spec"].pop("measurementRetention")),
    ("measurement-retention", "warn", "AnalysisTemplate/ig-slo-checks", "spec.measurementRetention",
     lambda o: o["slo"]["spec"]["metrics"][0].pop("count")),
    ("notification-subscription", "warn", "Rollout/api", "subscribe.on-rollout-aborted.rollbook",
     _drop_subscription),
    ("notification-subscription", "warn", "Rollout/api", "subscribe.on-rollout-aborted.rollbook",
     lambda o: (_drop_subscription(o), _cm_data(o, "subscriptions", "- recipients: [rollbook]\n"
                                                "  triggers: [on-rollout-aborted]\n  selector: team=payments\n"))),
    ("notification-subscription", "warn", "Rollout/api", "subscribe.on-rollout-aborted.rollbook",
     lambda o: (_drop_subscription(o), o["rollout"]["metadata"]["annotations"].update(
         {"notifications.argoproj.io/subscribe.on-rollout-aborted.slack": "oncall"}))),
    ("notification-webhook", "warn", "ConfigMap/argo-rollouts-notification-configmap",
     "service.webhook.rollbook].retryMax",
     lambda o: _cm_data(o, "service.webhook.rollbook", "url: http://rollbook:8686/v1/argo-rollouts\n")),
    ("notification-webhook", "warn", "ConfigMap/argo-rollouts-notification-configmap", "service.webhook.rollbook]",
     lambda o: _cm_data(o, "service.webhook.rollbook", None)),
    ("notification-webhook", "warn", "ConfigMap/argo-rollouts-notification-configmap", "trigger.on-rollout-aborted",
     lambda o: _cm_data(o, "trigger.on-rollout-aborted", None)),
    ("nothing-to-check", "info", "Rollout/api", "spec.strategy",
     lambda o: _canary(o).update(steps=[{"setWeight": 20}, {"pause": {}}])),
]


def _ids(case: tuple[str, str, str, str, Mutate]) -> str:
    return f"{case[0]}:{case[3]}"


def test_the_reference_examples_pass_every_rule() -> None:
    assert check(reference()) == []


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_each_break_is_caught(case: tuple[str, str, str, str, Mutate]) -> None:
    rule, severity, obj, field, mutate = case
    objs = reference()
    mutate(objs)
    found = [f for f in check(objs) if f.id == rule]
    assert any(f.severity == severity and f.object == obj and field in f.field for f in found), \
        "\n".join(f"{f.severity} {f.object} {f.field}" for f in check(objs)) or "nothing found"
    hit = next(f for f in found if f.severity == severity and field in f.field)
    assert hit.message and hit.fix.strip() and hit.step
    assert hit.namespace in ("prod", "argo-rollouts")


def test_every_rule_has_a_failing_example() -> None:
    assert {c[0] for c in CASES} | {"permission"} == set(RULES)


def test_findings_name_the_step_and_carry_a_fix() -> None:
    objs = reference()
    _web(objs).update(jsonPath="{$.ok}")
    (hit,) = [f for f in check(objs) if f.id == "evidence-jsonpath"]
    assert hit.step == "2" and "{$.ok}" in hit.message and "reason" in hit.message
    fix = yaml.safe_load(hit.fix)
    assert fix["spec"]["metrics"][0]["provider"]["web"]["jsonPath"] == "{$}"
    assert fix["spec"]["metrics"][0]["successCondition"] == "result.ok == true"


def test_error_budget_counts_ten_second_retries_not_the_interval() -> None:
    objs = reference()
    objs["slo"]["spec"]["metrics"][0].pop("consecutiveErrorLimit")
    (hit,) = [f for f in check(objs) if f.id == "error-limit"]
    assert "about 50 s" in hit.message and "(1m)" in hit.message
    fix = yaml.safe_load(hit.fix)
    assert fix["spec"]["metrics"][0]["consecutiveErrorLimit"] * 10 + 10 >= 120


def test_conditions_on_real_verdict_fields_pass() -> None:
    for condition in ('result.status == "passed"', 'result["ok"] == true && len(result.invalid) == 0'):
        objs = reference()
        _mc(objs)["successCondition"] = condition
        assert [f for f in check(objs) if f.id == "evidence-condition"] == [], condition


def test_dot_form_of_any_plain_label_resolves_and_metadata_paths_are_the_rollouts_own() -> None:
    assert rules_rollout._label_from_path("spec.template.metadata.labels.release-id") == ("release-id", None)
    key, why = rules_rollout._label_from_path("spec.template.metadata.labels['release-id']")
    assert key == "release-id" and why and "'release-id'" in why


def test_a_release_label_with_dots_gets_a_plain_label_in_the_fix() -> None:
    objs = reference()
    arg(objs["rollout"], "release-id")["valueFrom"]["fieldRef"]["fieldPath"] = \
        "spec.template.metadata.labels['release.maps.example/id']"
    (hit,) = [f for f in check(objs) if f.id == "release-id-path"]
    assert "fieldPath: spec.template.metadata.labels.release-id" in hit.fix


def test_a_workload_ref_rollout_is_checked_against_its_deployments_template() -> None:
    objs = reference()
    ro = objs["rollout"]
    template = ro["spec"].pop("template")
    ro["spec"]["workloadRef"] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"}
    deployment = {"kind": "Deployment", "metadata": {"name": "api", "namespace": "prod"},
                  "spec": {"template": template}}
    assert [f for f in check(objs, deployment=deployment) if f.id.startswith("release")] == []
    template["metadata"]["labels"].pop("release-id")
    (hit,) = [f for f in check(objs, deployment=deployment) if f.id == "release-label-missing"]
    assert hit.object == "Deployment/api"


def test_subscriptions_by_annotation_list_or_configmap_entry_count() -> None:
    forms: list[Mutate] = [
        lambda o: o["rollout"]["metadata"]["annotations"].update({"notifications.argoproj.io/subscriptions": (
            "- trigger: [on-rollout-aborted]\n  destinations:\n  - service: rollbook\n    recipients: ['']\n")}),
        lambda o: (o["rollout"]["metadata"]["annotations"].update({"notifications.argoproj.io/subscribe.rollbook": ""}),
                   _cm_data(o, "defaultTriggers", "- on-rollout-aborted\n")),
        lambda o: _cm_data(o, "subscriptions", "- recipients: [rollbook]\n  triggers: [on-rollout-aborted]\n"
                                               "  selector: app.kubernetes.io/name in (api, web)\n"),
    ]
    for form in forms:
        objs = reference()
        _drop_subscription(objs)
        form(objs)
        assert [f for f in check(objs) if f.id == "notification-subscription"] == []


def test_an_unreadable_notification_configmap_is_info_not_a_warning() -> None:
    objs = reference()
    _drop_subscription(objs)
    refused = Fetched(None, problem='configmaps "argo-rollouts-notification-configmap" is forbidden')
    (hit,) = [f for f in check(objs, configmap=refused) if f.id == "notification-subscription"]
    assert hit.severity == "info" and "forbidden" in hit.message
    assert [f for f in check(reference(), configmap=refused) if f.id.startswith("notification")] == []


def test_a_missing_template_is_not_also_blamed_for_its_metrics() -> None:
    objs = reference()
    step_analysis(objs["rollout"])["templates"][0]["templateName"] = "mc-evidence-okay"
    ids = {f.id for f in check(objs)}
    assert "template-missing" in ids and "no-evidence-gate" not in ids


def test_a_template_shared_by_two_rollouts_is_judged_once_per_field() -> None:
    from rollbook.preflight.run import sort_findings

    objs = reference()
    _web(objs).update(jsonPath="{$.ok}")
    twin = {**objs["rollout"], "metadata": {**objs["rollout"]["metadata"], "name": "api-twin"}}
    found = [f for ro in (objs["rollout"], twin) for rule in GATE_RULES for f in rule(gate_of(ro, [objs["mc"], objs["slo"]]))]
    assert len([f for f in sort_findings(found) if f.id == "evidence-jsonpath"]) == 1


# --------------------------------------------------------------------------- permission (answers as data)


def _answers(role: str, denied: set[tuple[str, str]], unknown: bool = False) -> dict[Any, Access]:
    return {p: Access(None, "webhook authorizer down") if unknown and (p.verb, p.resource_path) in denied
            else Access((p.verb, p.resource_path) not in denied) for p in rows_for(role)}  # type: ignore[arg-type]


def test_a_denied_permission_names_the_identity_the_steps_and_a_role() -> None:
    checked = ra.Checked("prod-eu-viewer", "operator", "prod", _answers("operator", {("patch", "rollouts/status")}))
    (hit,) = ra.permission(checked)
    assert (hit.id, hit.severity, hit.object, hit.step) == ("permission", "error", "Context/prod-eu-viewer", "4")
    assert hit.field == "patch rollouts/status (argoproj.io)" and "retry" in hit.message
    role = yaml.safe_load(hit.fix.split("# and a")[0])
    assert role["kind"] == "Role" and role["rules"][0] == {
        "apiGroups": ["argoproj.io"], "resources": ["rollouts/status"], "verbs": ["patch"]}


def test_a_read_identity_that_would_act_by_default_gets_a_warning_and_unknown_answers_are_info() -> None:
    checked = ra.Checked("ctx", "operator", "prod", _answers("operator", {("patch", "rollouts")}), acts_by_default=True)
    (hit,) = ra.permission(checked)
    assert hit.severity == "warn" and "action_context" in hit.message
    (hit,) = ra.permission(ra.Checked("ctx", "viewer", "prod", _answers("viewer", {("list", "analysisruns")}, True)))
    assert hit.severity == "info" and "webhook authorizer down" in hit.message


def test_every_finding_field_documented_in_interfaces_is_present() -> None:
    objs = reference()
    _web(objs).update(jsonPath="{$.ok}")
    for f in check(objs):
        assert set(f.to_dict()) == {"id", "severity", "namespace", "object", "field", "step", "message", "fix"}
        assert isinstance(f, Finding) and f.id in RULES


def test_the_operator_holds_every_viewer_row_and_the_table_is_complete() -> None:
    viewer, operator = set(rows_for("viewer")), set(rows_for("operator"))
    assert viewer < operator
    assert {(p.verb, p.resource_path) for p in operator - viewer} == {
        ("patch", "rollouts/status"), ("patch", "rollouts"),
        *((verb, "leases") for verb in ("create", "get", "update", "delete"))}  # the Lease around a mutation
    assert all(p.why and p.steps for p in PERMISSIONS)


def test_a_planted_secret_never_reaches_the_findings() -> None:
    from rollbook.preflight import Report, to_json

    planted = "s3cr3t-planted-9f2c"
    objs = reference()
    _web(objs)["headers"][0]["value"] = f"Bearer {planted}"
    _web(objs).update(insecure=True, url=_web(objs)["url"] + f"&access_token={planted}")
    step_analysis(objs["rollout"])["args"].append({"name": "mc-token", "value": planted})
    found = check(objs)
    assert {"secret-literal", "tls-insecure"} <= {f.id for f in found}
    assert planted not in to_json(Report(tuple(found)))
