"""Argo's notification config as notifications-engine reads it (rollbook.sandbox.notifyconfig): trigger names
from Event reasons, subscriptions from annotations, `$secret` substitution, the webhook's defaults."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from rollbook.sandbox.notifyconfig import (
    DEFAULT_RETRY_MAX,
    NotifyConfigError,
    WebhookService,
    destinations,
    parse_config,
    trigger_for,
)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "argo-notifications.yaml"


@pytest.mark.parametrize(("reason", "trigger"), [
    ("RolloutAborted", "on-rollout-aborted"), ("AnalysisRunFailed", "on-analysis-run-failed"),
    ("AnalysisRunError", "on-analysis-run-error"), ("ScalingReplicaSet", "on-scaling-replica-set"),
    ("RolloutStepCompleted", "on-rollout-step-completed"), ("HPAUpdated", "on-hpa-updated"),
])
def test_the_trigger_is_the_kebab_case_reason(reason: str, trigger: str) -> None:
    assert trigger_for(reason) == trigger


def _secret(**values: str) -> dict[str, Any]:
    return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}}


def test_the_shipped_configmap_parses_with_the_token_substituted_and_recorded_unsubstituted() -> None:
    cm = yaml.safe_load(DEPLOY.read_text(encoding="utf-8"))
    cfg = parse_config(cm, _secret(**{"rollbook-token": "tok-123"}))
    svc = cfg.services["rollbook"]
    assert isinstance(svc, WebhookService)
    assert dict(svc.headers)["Authorization"] == "Bearer tok-123"
    assert dict(svc.raw_headers)["Authorization"] == "Bearer $rollbook-token"
    assert svc.retry_max == 15 and svc.retry_wait_min_ns == 1_000_000_000 and svc.retry_wait_max_ns == 5_000_000_000
    assert cfg.service_default_triggers["rollbook"] == ["on-rollout-aborted", "on-analysis-run-failed",
                                                        "on-analysis-run-error"]
    assert [c.send for c in cfg.triggers["on-rollout-aborted"]] == [("rollbook-abort",)]
    # an unknown key stays as written (the engine warns and sends it literally)
    assert dict(parse_config(cm, None).services["rollbook"].headers)["Authorization"] == "Bearer $rollbook-token"  # type: ignore[union-attr]


def test_webhook_defaults_and_go_typed_fields() -> None:
    cfg = parse_config({"data": {"service.webhook.hook": "url: http://x\nretryMax: 0\n"}}, None)
    assert cfg.services["hook"] == WebhookService(url="http://x", headers=(), raw_url="http://x", raw_headers=())
    assert DEFAULT_RETRY_MAX == 3
    with pytest.raises(NotifyConfigError, match="retryWaitMin"):   # a Go duration in JSON is nanoseconds
        parse_config({"data": {"service.webhook.hook": "url: http://x\nretryWaitMin: 1s\n"}}, None)
    with pytest.raises(NotifyConfigError, match="invalid service key"):
        parse_config({"data": {"service.webhook.a.b": "url: http://x\n"}}, None)
    assert parse_config({"data": {"service.slack": "token: x\n"}}, None).services == {"slack": "slack"}


def _ro(annotations: dict[str, str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "api", "namespace": "prod", "annotations": annotations, "labels": labels or {}}}


def test_destinations_from_annotations_follow_get_destinations() -> None:
    cfg = parse_config({"data": {"defaultTriggers": "- on-rollout-completed\n",
                                 "defaultTriggers.rollbook": "- on-rollout-aborted\n- on-analysis-run-failed\n"}}, None)
    pre = "notifications.argoproj.io/subscribe"
    assert destinations(cfg, _ro({f"{pre}.rollbook": ""})) == {
        "on-rollout-aborted": [("rollbook", "")], "on-analysis-run-failed": [("rollbook", "")]}
    assert destinations(cfg, _ro({f"{pre}.slack": "#a; #b"})) == {
        "on-rollout-completed": [("slack", "#a"), ("slack", "#b")]}         # the global defaultTriggers
    assert destinations(cfg, _ro({f"{pre}.on-analysis-run-error.rollbook": ""})) == {
        "on-analysis-run-error": [("rollbook", "")]}
    assert destinations(cfg, _ro({"other/annotation": "x"})) == {}


def test_global_subscriptions_match_the_rollouts_labels() -> None:
    cfg = parse_config({"data": {"subscriptions": yaml.safe_dump([
        {"recipients": ["rollbook", "slack:#oncall"], "triggers": ["on-rollout-aborted"], "selector": "tier=front"}])}},
        None)
    assert destinations(cfg, _ro({}, {"tier": "front"})) == {
        "on-rollout-aborted": [("rollbook", ""), ("slack", "#oncall")]}
    assert destinations(cfg, _ro({}, {"tier": "back"})) == {}


@pytest.mark.parametrize(("attempt", "status", "header", "seconds"), [
    (0, 500, "", 1.0), (1, 500, "", 2.0), (2, 502, "", 4.0), (3, 500, "", 5.0), (9, 500, "", 5.0),
    (0, 503, "7", 7.0), (0, 429, "120", 60.0),    # Retry-After honoured on 429/503, capped by the sandbox
    (0, 500, "7", 1.0),                           # ... and only there
    (0, 503, "Fri, 31 Dec 1999 23:59:59 GMT", 0.0), (1, 503, "soon", 2.0),
])
def test_the_wait_before_a_retry_is_go_retryablehttps(attempt: int, status: int, header: str, seconds: float) -> None:
    import httpx

    from rollbook.sandbox.notifywebhook import backoff

    svc = WebhookService(url="http://x", headers=(), raw_url="http://x", raw_headers=())
    resp = httpx.Response(status, headers={"Retry-After": header} if header else {})
    assert backoff(svc, attempt, resp, max_retry_after=60.0) == seconds
