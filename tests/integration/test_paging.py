"""PagerDuty, Slack and webhook senders through real HTTP against the services stand-in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from rollbook import paging
from rollbook.config import Config, SecretRef, Service
from rollbook.paging import Escalation, Image, RetryPolicy
from rollbook.sandbox.services import ServicesServer

ROUTING_KEY = "Rplanted0routing0key0000000000001"
SLACK_TOKEN = "planted-slack-token-9a8b"
HOOK_TOKEN = "planted-hook-token-77"
NO_WAIT = RetryPolicy(backoff=0.0, max_wait=0.0)


@pytest.fixture
def services() -> Iterator[ServicesServer]:
    with ServicesServer(routing_key=ROUTING_KEY, slack_path=f"/services/T000/B000/{SLACK_TOKEN}",
                        webhook_token=HOOK_TOKEN) as server:
        yield server


@pytest.fixture
def config(services: ServicesServer, monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.setenv("IT_PD_KEY", ROUTING_KEY)
    monkeypatch.setenv("IT_SLACK_URL", services.slack_url)
    monkeypatch.setenv("IT_HOOK_TOKEN", HOOK_TOKEN)
    return Config(
        pagerduty=Service(url=services.url, secret=SecretRef(env="IT_PD_KEY"), options={"severity": "critical"}),
        slack=Service(secret=SecretRef(env="IT_SLACK_URL")),
        webhook=Service(url=services.url + "/hooks/rollbook", secret=SecretRef(env="IT_HOOK_TOKEN")),
    )


def message(revision: int = 7) -> Escalation:
    return Escalation(
        title="Canary api aborted by mc-evidence-ok",
        reason="missing required evidence: test-report (junit)",
        rollout="api", namespace="prod", context="sandbox", revision=revision,
        aborted_at=datetime(2026, 11, 26, 9, 30, tzinfo=UTC), minutes_since_abort=35.0,
        record_link="https://files.example.internal/incidents/INC-1234/run-1", incident="INC-1234",
        images=(Image("p99 latency", url="https://files.example.internal/incidents/INC-1234/p99.png"),),
        facts={"analysis_run": "api-6d4f8b7c9-7-0"})


def test_pagerduty_trigger_wire_format(services: ServicesServer, config: Config) -> None:
    delivery = paging.send_pagerduty(config.pagerduty, message(), dry_run=False)
    (req,) = services.received("pagerduty")
    event = req.json()
    assert req.method == "POST" and req.path == "/v2/enqueue"
    assert event["routing_key"] == ROUTING_KEY
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == "rollbook/prod/api/rev-7"
    assert event["payload"]["summary"] == ("Canary api aborted by mc-evidence-ok: missing required evidence: "
                                           "test-report (junit)")
    assert event["payload"]["severity"] == "critical"
    assert event["payload"]["source"] == "sandbox/prod/api"
    assert event["images"][0]["src"].endswith("/p99.png")
    assert delivery.sent and delivery.status == 202 and delivery.attempts == 1
    assert delivery.response == {"status": "success", "message": "Event processed",
                                 "dedup_key": "rollbook/prod/api/rev-7"}
    assert delivery.dedup_key == "rollbook/prod/api/rev-7"


def test_a_second_trigger_does_not_open_a_second_incident(services: ServicesServer, config: Config) -> None:
    paging.send_pagerduty(config.pagerduty, message(), dry_run=False)
    paging.send_pagerduty(config.pagerduty, message(), dry_run=False)
    assert len(services.received("pagerduty")) == 2
    assert list(services.incidents) == ["rollbook/prod/api/rev-7"]
    assert services.incidents["rollbook/prod/api/rev-7"]["alerts"] == 2
    paging.send_pagerduty(config.pagerduty, message(revision=8), dry_run=False)
    assert len(services.incidents) == 2


def test_resolve_closes_the_incident(services: ServicesServer, config: Config) -> None:
    paging.send_pagerduty(config.pagerduty, message(), dry_run=False)
    paging.send_pagerduty(config.pagerduty, message(), dry_run=False, action="resolve")
    assert services.incidents == {}
    assert services.resolved["rollbook/prod/api/rev-7"]["status"] == "resolved"


def test_a_wrong_routing_key_is_rejected_with_pagerdutys_errors(
        services: ServicesServer, config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IT_PD_KEY", "Rwrong-key-planted-000")
    with pytest.raises(paging.ServiceRejected) as info:
        paging.send_pagerduty(config.pagerduty, message(), dry_run=False)
    assert info.value.status == 400 and "Invalid routing key" in str(info.value)
    assert "Rwrong-key-planted-000" not in str(info.value)
    assert services.incidents == {}


def test_stand_in_validates_a_trigger_like_pagerduty(services: ServicesServer) -> None:
    reply = httpx.post(services.url + "/v2/enqueue", timeout=5,
                       json={"routing_key": ROUTING_KEY, "event_action": "trigger", "payload": {"summary": "x"}})
    assert reply.status_code == 400
    body = reply.json()
    assert body["status"] == "invalid event"
    assert "'payload.source' is missing or blank" in body["errors"]
    assert "'payload.severity' is missing or blank" in body["errors"]


def test_pagerduty_503_is_retried_honouring_retry_after(services: ServicesServer, config: Config) -> None:
    services.fail_next("/v2/enqueue", status=503, times=2, retry_after="0")
    delivery = paging.send_pagerduty(config.pagerduty, message(), dry_run=False, retry=NO_WAIT)
    assert delivery.attempts == 3 and delivery.status == 202
    assert len(services.incidents) == 1


def test_slack_blocks_reach_the_webhook(services: ServicesServer, config: Config) -> None:
    delivery = paging.send_slack(config.slack, message(), dry_run=False)
    (req,) = services.received("slack")
    body = req.json()
    assert [b["type"] for b in body["blocks"]] == ["header", "section", "image", "context"]
    assert body["blocks"][0]["text"]["text"] == "Canary api aborted by mc-evidence-ok"
    assert body["blocks"][1]["fields"][0]["text"] == "*Rollout*\n`prod/api`"
    assert body["text"].startswith("Canary api aborted")
    assert delivery.status == 200 and delivery.response == "ok"
    assert SLACK_TOKEN not in json.dumps(delivery.to_dict())
    assert delivery.request.url == services.url + "/***"


def test_slack_stand_in_refuses_an_empty_message(services: ServicesServer) -> None:
    reply = httpx.post(services.slack_url, json={"username": "x"}, timeout=5)
    assert (reply.status_code, reply.text) == (400, "invalid_payload")


def test_webhook_carries_the_message_and_bearer_token(services: ServicesServer, config: Config) -> None:
    delivery = paging.send_webhook(config.webhook, message(), dry_run=False)
    (req,) = services.received("webhook")
    assert req.path == "/hooks/rollbook"
    assert req.headers["Authorization"] == "Bearer ***"   # the stand-in masks what it records
    assert req.json()["message"]["rollout"] == "api"
    assert req.headers["Idempotency-Key"] == "rollbook/prod/api/rev-7"
    assert delivery.status == 200 and delivery.response["received"] is True


def test_escalate_sends_to_every_target(services: ServicesServer, config: Config) -> None:
    deliveries = paging.escalate(config, message(), dry_run=False)
    assert [(d.service, d.sent, d.status) for d in deliveries] == [
        ("pagerduty", True, 202), ("slack", True, 200), ("webhook", True, 200)]
    assert {r.kind for r in services.requests} == {"pagerduty", "slack", "webhook"}


def test_dry_run_sends_nothing_and_leaks_no_secret(services: ServicesServer, config: Config) -> None:
    deliveries = paging.escalate(config, message())
    assert services.requests == []
    assert [d.sent for d in deliveries] == [False, False, False]
    dumped = json.dumps([d.to_dict() for d in deliveries]) + repr(deliveries)
    for secret in (ROUTING_KEY, SLACK_TOKEN, HOOK_TOKEN):
        assert secret not in dumped
    assert deliveries[0].request.body["payload"]["summary"].startswith("Canary api aborted")


def test_one_failing_target_does_not_silence_the_others(services: ServicesServer, config: Config) -> None:
    services.fail_next("/services/", status=403, times=1)
    with pytest.raises(paging.EscalationFailed) as info:
        paging.escalate(config, message(), dry_run=False, retry=NO_WAIT)
    outcome = [(d.service, d.sent, d.status) for d in info.value.deliveries]
    assert outcome == [("pagerduty", True, 202), ("slack", False, 403), ("webhook", True, 200)]
    assert info.value.deliveries[1].request.body["blocks"]   # what should have been sent is kept
    assert SLACK_TOKEN not in str(info.value) and SLACK_TOKEN not in repr(info.value.deliveries)


def test_slack_stand_in_refuses_malformed_blocks(services: ServicesServer) -> None:
    too_long = {"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}
    reply = httpx.post(services.slack_url, json={"text": "t", "blocks": [too_long]}, timeout=5)
    assert (reply.status_code, reply.text) == (400, "invalid_blocks")
    wrong_path = httpx.post(services.url + "/services/T000/B000/other", json={"text": "t"}, timeout=5)
    assert wrong_path.status_code == 404


def test_webhook_without_its_token_is_refused(services: ServicesServer, config: Config) -> None:
    no_token = Service(url=config.webhook.url)
    with pytest.raises(paging.ServiceRejected) as info:
        paging.send_webhook(no_token, message(), dry_run=False)
    assert info.value.status == 401 and "/hooks/rollbook" in str(info.value)
