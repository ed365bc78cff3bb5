"""The shipped Argo notification config (deploy/argo-notifications.yaml) renders a body the service accepts.

The templates are filled the way notifications-engine does it (tests/go_template.py): `.rollout` is the
Rollout read from the sandbox's API, `.analysisRuns` the runs argo-rollouts selects for it
(utils/record/record.go, getAnalysisRunsFilterWithLabels), `.time` the controller's Parse/Now.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from go_template import GoTemplateError, render, time_vars

from rollbook.cluster import connect
from rollbook.sandbox.server import Sandbox
from rollbook.serve import notification

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "argo-notifications.yaml"
NOW = datetime(2026, 11, 30, 9, 15, 7, tzinfo=UTC)
TEMPLATES = {"on-rollout-aborted": "rollbook-abort", "on-analysis-run-failed": "rollbook-analysis-run-failed",
             "on-analysis-run-error": "rollbook-analysis-run-error"}
# the catalog's message for each trigger (argo-rollouts manifests/notifications/on-*.yaml)
CATALOG_MESSAGES = {"on-rollout-aborted": "Rollout {{.rollout.metadata.name}} has been aborted.",
                    "on-analysis-run-failed": "Rollout {{.rollout.metadata.name}}'s analysis run failed.",
                    "on-analysis-run-error": "Rollout {{.rollout.metadata.name}}'s analysis run is in error state."}
REVISION = "rollout.argoproj.io/revision"


def configmap() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(DEPLOY.read_text(encoding="utf-8"))
    return doc


def template(trigger: str) -> dict[str, Any]:
    tpl: dict[str, Any] = yaml.safe_load(configmap()["data"][f"template.{TEMPLATES[trigger]}"])
    return tpl


def argo_vars(rollout: dict[str, Any], runs: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The variables argo-rollouts gives a template (NewAPIFactorySettings) plus the engine's own."""
    return {"rollout": rollout, "analysisRuns": runs, "time": time_vars(lambda: NOW), "secrets": {},
            "serviceType": "rollbook", "recipient": ""}


def runs_as_argo_selects(cluster: Any, rollout: dict[str, Any]) -> list[dict[str, Any]] | None:
    """getAnalysisRunsFilterWithLabels: the current pod hash's runs of the Rollout's revision, newest first."""
    ns = rollout["metadata"]["namespace"]
    labelled = cluster.list("analysisruns", ns,
                            label_selector=f"rollouts-pod-template-hash={rollout['status']['currentPodHash']}")
    revision = rollout["metadata"]["annotations"][REVISION]
    runs = [r for r in labelled if (r["metadata"].get("annotations") or {}).get(REVISION) == revision]
    runs.sort(key=lambda r: r["metadata"]["creationTimestamp"], reverse=True)
    return runs or None  # Go: no runs -> nil


# --------------------------------------------------------------------------- the renderer follows Go


@pytest.mark.parametrize(("src", "data", "expected"), [
    ("{{ .a.missing | toJson }}", {"a": {}}, "null"),           # missing key: no value -> null
    ("{{ .a.missing }}", {"a": {}}, "<no value>"),
    ("{{ .a }}", {"a": None}, "<nil>"),
    ("x {{- .a -}} y", {"a": "1"}, "x1y"),
    ('{{ index .m "k.io/x" | toJson }}', {"m": {"k.io/x": "7"}}, '"7"'),
    ('{{ index .m "absent" | toJson }}', {"m": {}}, "null"),    # index: the zero value
    ("{{ if .l }}yes{{ else }}no{{ end }}", {"l": []}, "no"),
    ("{{ if .l }}{{ (index .l 0).n | toJson }}{{ end }}", {"l": [{"n": "r-1"}, {"n": "r-0"}]}, '"r-1"'),
    ("{{ .v | toJson }}", {"v": {"b": "<&>", "a": [1, True]}}, '{"a":[1,true],"b":"\\u003c\\u0026\\u003e"}'),
    ('{{ (call .time.Now).UTC.Format "2006-01-02T15:04:05Z07:00" }}', {"time": time_vars(lambda: NOW)},
     "2026-11-30T09:15:07Z"),
])
def test_renderer_follows_go_semantics(src: str, data: dict[str, Any], expected: str) -> None:
    assert render(src, data) == expected


@pytest.mark.parametrize("src", ["{{ .a.b }}", "{{ range .l }}x{{ end }}", "{{ nosuch .a }}", "{{ if .a }}x",
                                 "{{ index .missing 0 }}"])
def test_renderer_refuses_what_go_refuses_or_it_does_not_know(src: str) -> None:
    with pytest.raises(GoTemplateError):
        render(src, {"a": None, "l": []})


# --------------------------------------------------------------------------- the shipped ConfigMap


def test_configmap_wires_three_triggers_to_the_rollbook_webhook() -> None:
    cm = configmap()
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argo-rollouts-notification-configmap"
    data = cm["data"]
    service = yaml.safe_load(data["service.webhook.rollbook"])
    assert service["url"].endswith("/v1/argo-rollouts")
    headers = {h["name"]: h["value"] for h in service["headers"]}
    assert headers["Authorization"] == "Bearer $rollbook-token"  # from argo-rollouts-notification-secret, never literal
    assert headers["Content-Type"] == "application/json"
    assert isinstance(service["retryMax"], int) and service["retryMax"] >= 3
    assert not {"retryWaitMin", "retryWaitMax"} & set(service)  # Go durations: a "1s" string would not parse
    assert yaml.safe_load(data["defaultTriggers.rollbook"]) == list(TEMPLATES)
    for trigger, name in TEMPLATES.items():
        [condition] = yaml.safe_load(data[f"trigger.{trigger}"])
        assert condition == {"send": [name]}  # no `when`, no `oncePer`: every Event sends (dedupe is ours)
        tpl = template(trigger)
        assert tpl["message"] == CATALOG_MESSAGES[trigger]
        assert tpl["webhook"]["rollbook"]["method"] == "POST" and "path" not in tpl["webhook"]["rollbook"]


def test_the_three_bodies_differ_only_in_the_trigger() -> None:
    bodies = {t: template(t)["webhook"]["rollbook"]["body"] for t in TEMPLATES}
    normalised = {b.replace(f'"trigger": "{t}"', '"trigger": "TRIGGER"') for t, b in bodies.items()}
    assert len(normalised) == 1


# --------------------------------------------------------------------------- rendered from a real Rollout


@pytest.fixture
def argo_objects(sandbox_factory: Callable[..., Sandbox]) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """The Rollout and its runs as the controller holds them, read through the real client; one run is
    added (newest) and one of another revision (which Argo leaves out)."""
    sb = sandbox_factory("evidence-gap")
    ns, name = sb.rollouts[0]
    with connect("sandbox", str(sb.kubeconfig)) as cluster:
        ro = cluster.get("rollouts", ns, name)
        [existing] = runs_as_argo_selects(cluster, ro) or [None]
        for suffix, revision in (("7-3", ro["metadata"]["annotations"][REVISION]), ("6-9", "6")):
            run = json.loads(json.dumps(existing))
            run["metadata"] = {"name": f"{name}-{ro['status']['currentPodHash']}-{suffix}", "namespace": ns,
                               "labels": existing["metadata"]["labels"], "annotations": {REVISION: revision},
                               "ownerReferences": existing["metadata"].get("ownerReferences")}
            run.pop("status", None)
            cluster.request("POST", cluster.path("analysisruns", ns), _target(ns), body=run,
                            content_type="application/json")
        return ro, runs_as_argo_selects(cluster, ro)


def _target(ns: str) -> Any:
    from rollbook.cluster.connect import Target

    return Target("analysisruns", ns, verb="create")


@pytest.mark.parametrize("trigger", list(TEMPLATES))
def test_rendered_body_names_the_incident_and_parses(trigger: str, argo_objects: tuple[dict[str, Any], Any]) -> None:
    ro, runs = argo_objects
    body = render(template(trigger)["webhook"]["rollbook"]["body"], argo_vars(ro, runs))
    doc = json.loads(body)
    assert doc == {"namespace": ro["metadata"]["namespace"], "rollout": ro["metadata"]["name"],
                   "revision": ro["metadata"]["annotations"][REVISION], "trigger": trigger,
                   "analysisRun": runs[0]["metadata"]["name"], "message": ro["status"]["message"],
                   "time": "2026-11-30T09:15:07Z"}
    assert runs[0]["metadata"]["name"].endswith("-7-3") and all(
        r["metadata"]["annotations"][REVISION] == doc["revision"] for r in runs)
    n = notification.parse(body.encode())
    assert (n.namespace, n.rollout, n.revision, n.trigger) == (doc["namespace"], doc["rollout"],
                                                                int(doc["revision"]), trigger)
    assert notification.incident_id(n) == f"ARGO-{doc['namespace']}-{doc['rollout']}-r{doc['revision']}"
    message = render(template(trigger)["message"], argo_vars(ro, runs))
    assert ro["metadata"]["name"] in message


def test_without_analysis_runs_the_body_says_null(argo_objects: tuple[dict[str, Any], Any]) -> None:
    ro, _ = argo_objects
    body = render(template("on-rollout-aborted")["webhook"]["rollbook"]["body"], argo_vars(ro, None))
    assert json.loads(body)["analysisRun"] is None
    assert notification.parse(body.encode()).analysis_run is None
