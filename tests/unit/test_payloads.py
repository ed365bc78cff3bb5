"""Payload builders, masking and the bounded retry loop, with injected transports (no sockets)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from rollbook import dashboards, paging, tickets
from rollbook.config import Config, SecretRef, Service
from rollbook.errors import ConfigError, Retryable
from rollbook.paging import Escalation, Image, Outbound, RetryPolicy

ABORTED = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
REASON = "missing required evidence: test-report (junit)"


def message(**changes: object) -> Escalation:
    base: dict[str, object] = {
        "title": "Canary api aborted by mc-evidence-ok", "reason": REASON, "rollout": "api", "namespace": "prod",
        "context": "prod-eu", "revision": 7, "aborted_at": ABORTED, "minutes_since_abort": 42.0,
        "record_link": "https://files.example.internal/incidents/INC-1/run", "incident": "INC-1",
        "images": (Image("p99 latency", path="/tmp/p.png", url="https://files.example.internal/p.png"),
                Image("error rate", path="/tmp/e.png")),
        "facts": {"failed_metrics": "mc-evidence-ok"}}
    base.update(changes)
    return Escalation(**base)  # type: ignore[arg-type]


class Sleeps:
    """Records the waits instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


# --------------------------------------------------------------------------- PagerDuty


def test_dedup_key_is_stable_per_namespace_rollout_revision() -> None:
    assert paging.dedup_key(message()) == "rollbook/prod/api/rev-7"
    assert paging.dedup_key(message(reason="other", minutes_since_abort=99.0)) == "rollbook/prod/api/rev-7"
    assert paging.dedup_key(message(revision=8)) != paging.dedup_key(message())
    assert paging.dedup_key(message(revision=None)) == "rollbook/prod/api/aborted-20261126T093000Z"
    with pytest.raises(ConfigError, match="revision"):
        paging.dedup_key(message(revision=None, aborted_at=None))
    long_key = paging.dedup_key(message(rollout="r" * 300))
    assert len(long_key) <= 255 and long_key == paging.dedup_key(message(rollout="r" * 300))


def test_pagerduty_trigger_event_fields() -> None:
    event = paging.pagerduty_event(message(), routing_key="RK", severity="error")
    assert event["routing_key"] == "RK"
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == "rollbook/prod/api/rev-7"
    payload = event["payload"]
    assert payload["summary"] == f"Canary api aborted by mc-evidence-ok: {REASON}"
    assert payload["severity"] == "error"
    assert payload["source"] == "prod-eu/prod/api"
    assert payload["timestamp"] == "2026-11-26T09:30:00Z"
    details = payload["custom_details"]
    assert details["revision"] == 7 and details["minutes_since_abort"] == 42.0
    assert details["reason"] == REASON and details["record_link"].startswith("https://")
    # Only the image with an http(s) URL is sent; the local-only one is not (no inline data, no paths).
    assert event["images"] == [{"src": "https://files.example.internal/p.png",
                                "href": "https://files.example.internal/p.png", "alt": "p99 latency"}]
    assert event["links"] == [{"href": "https://files.example.internal/incidents/INC-1/run",
                               "text": "Incident record"}]


def test_pagerduty_summary_is_capped_and_local_links_are_left_out() -> None:
    event = paging.pagerduty_event(message(reason="x" * 5000, record_link="/tmp/record", images=()),
                                   routing_key="RK")
    assert len(event["payload"]["summary"]) == 1024
    assert "links" not in event and "images" not in event and "client_url" not in event


def test_pagerduty_resolve_carries_only_the_dedup_key() -> None:
    event = paging.pagerduty_event(message(), routing_key="RK", action="resolve")
    assert event == {"routing_key": "RK", "event_action": "resolve", "dedup_key": "rollbook/prod/api/rev-7"}


def test_pagerduty_rejects_an_unknown_severity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PD_KEY_T", "RK")
    cfg = Service(secret=SecretRef(env="PD_KEY_T"), options={"severity": "sev1"})
    with pytest.raises(ConfigError, match="severity"):
        paging.send_pagerduty(cfg, message())


# --------------------------------------------------------------------------- Slack and webhook


def test_slack_blocks() -> None:
    body = paging.slack_message(message(reason="a < b & c > d"))
    assert body["text"].startswith("Canary api aborted by mc-evidence-ok: ")
    types = [b["type"] for b in body["blocks"]]
    assert types == ["header", "section", "image", "context"]
    header, section, image, context = body["blocks"]
    assert header["text"] == {"type": "plain_text", "text": "Canary api aborted by mc-evidence-ok"}
    assert section["text"]["text"] == "a &lt; b &amp; c &gt; d"
    assert section["fields"][0]["text"] == "*Rollout*\n`prod/api`"
    assert section["fields"][2]["text"] == "*Revision*\n7"
    assert "(42 min ago)" in section["fields"][3]["text"]
    assert image["image_url"] == "https://files.example.internal/p.png"
    assert "<https://files.example.internal/incidents/INC-1/run|incident record>" in \
        context["elements"][0]["text"]


def test_slack_without_public_images_has_no_image_block_and_a_short_header() -> None:
    body = paging.slack_message(message(title="T" * 400, images=(Image("x", path="/tmp/x.png"),)))
    assert [b["type"] for b in body["blocks"]] == ["header", "section", "context"]
    assert len(body["blocks"][0]["text"]["text"]) == 150


def test_webhook_body_has_the_whole_message() -> None:
    body = paging.webhook_body(message())
    assert body["dedup_key"] == "rollbook/prod/api/rev-7"
    assert body["message"]["reason"] == REASON
    assert body["message"]["aborted_at"] == "2026-11-26T09:30:00Z"
    assert body["message"]["images"][0]["url"] == "https://files.example.internal/p.png"
    json.dumps(body)  # JSON-ready


# --------------------------------------------------------------------------- masking


def test_dry_run_masks_secrets_and_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    planted = "PLANTED-secret-5f1e"
    monkeypatch.setenv("T_PD", planted)
    monkeypatch.setenv("T_SLACK", f"https://hooks.slack.example/services/T1/B2/{planted}")
    monkeypatch.setenv("T_HOOK", planted)
    calls: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda r: calls.append(r) or httpx.Response(500))
    cfg = Config(pagerduty=Service(secret=SecretRef(env="T_PD")),
                 slack=Service(secret=SecretRef(env="T_SLACK")),
                 webhook=Service(url="https://hooks.example.internal/x", secret=SecretRef(env="T_HOOK")))
    deliveries = paging.escalate(cfg, message(), transport=transport)
    assert calls == []
    assert [d.service for d in deliveries] == ["pagerduty", "slack", "webhook"]
    assert all(not d.sent for d in deliveries)
    dumped = json.dumps([d.to_dict() for d in deliveries]) + repr(deliveries)
    assert planted not in dumped
    assert deliveries[0].request.body["routing_key"] == "***"
    assert deliveries[0].dedup_key == "rollbook/prod/api/rev-7"
    assert deliveries[1].request.url == "https://hooks.slack.example/***"
    assert deliveries[2].request.headers["Authorization"] == "Bearer ***"


def test_scrub_and_mask_headers() -> None:
    assert paging.scrub({"a": ["x-SECRET-y", 3], "SECRET": None}, ("SECRET",)) == \
        {"a": ["x-***-y", 3], "***": None}
    assert paging.mask_headers({"authorization": "Basic dTpw", "X": "1"}) == \
        {"authorization": "Basic ***", "X": "1"}


def test_missing_secret_names_where_it_was_looked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_PD", raising=False)
    with pytest.raises(ConfigError, match=r"\$NOPE_PD"):
        paging.send_pagerduty(Service(secret=SecretRef(env="NOPE_PD")), message())


def test_escalate_with_nothing_configured_is_empty() -> None:
    assert paging.escalate(Config(), message(), dry_run=False) == []


# --------------------------------------------------------------------------- retries


def _outbound(idempotent: bool) -> Outbound:
    return Outbound("svc", "POST", "https://svc.example/x", json_body={"a": 1}, secrets=("S3CR3T",),
                    idempotent=idempotent)


def test_retry_honours_retry_after_with_a_cap() -> None:
    replies = iter([httpx.Response(429, headers={"Retry-After": "120"}),
                    httpx.Response(503, headers={"Retry-After": "0"}),
                    httpx.Response(200, json={"ok": True})])
    sleeps = Sleeps()
    d = paging.deliver(_outbound(False), dry_run=False, transport=httpx.MockTransport(lambda r: next(replies)),
                       retry=RetryPolicy(attempts=3, backoff=0.1, max_wait=2.0, sleep=sleeps))
    assert d.sent and d.status == 200 and d.attempts == 3 and d.response == {"ok": True}
    assert sleeps.waits == [2.0, 0.0]


def test_retries_are_bounded_and_end_in_a_retryable_error() -> None:
    sleeps = Sleeps()
    seen: list[int] = []
    transport = httpx.MockTransport(lambda r: seen.append(1) or httpx.Response(502, text="bad S3CR3T gw"))
    with pytest.raises(paging.ServiceUnavailable) as info:
        paging.deliver(_outbound(True), dry_run=False, transport=transport,
                       retry=RetryPolicy(attempts=3, backoff=0.1, sleep=sleeps))
    assert len(seen) == 3 and sleeps.waits == [0.1, 0.2]
    assert isinstance(info.value, Retryable) and info.value.status == 502
    assert "S3CR3T" not in str(info.value) and "https://svc.example/x" in str(info.value)


def test_non_idempotent_post_is_not_repeated_after_a_500_or_read_timeout() -> None:
    seen: list[int] = []
    transport = httpx.MockTransport(lambda r: seen.append(1) or httpx.Response(500))
    with pytest.raises(paging.ServiceUnavailable, match="may or may not"):
        paging.deliver(_outbound(False), dry_run=False, transport=transport,
                       retry=RetryPolicy(sleep=Sleeps()))
    assert len(seen) == 1

    def timeout(request: httpx.Request) -> httpx.Response:
        seen.append(2)
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(paging.ServiceUnavailable):
        paging.deliver(_outbound(False), dry_run=False, transport=httpx.MockTransport(timeout),
                       retry=RetryPolicy(sleep=Sleeps()))
    assert seen.count(2) == 1


def test_a_connect_error_is_retried_even_for_a_post() -> None:
    attempts: list[int] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        if len(attempts) == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(202, json={"status": "success"})

    d = paging.deliver(_outbound(False), dry_run=False, transport=httpx.MockTransport(flaky),
                       retry=RetryPolicy(sleep=Sleeps()))
    assert d.attempts == 2 and d.status == 202


def test_4xx_is_final_and_a_redirect_is_a_protocol_error() -> None:
    with pytest.raises(paging.ServiceRejected) as info:
        paging.deliver(_outbound(True), dry_run=False,
                       transport=httpx.MockTransport(lambda r: httpx.Response(400, json={"e": "S3CR3T"})))
    assert info.value.status == 400 and "S3CR3T" not in str(info.value)
    redirect = httpx.MockTransport(lambda r: httpx.Response(302, headers={"Location": "https://sso/login"}))
    with pytest.raises(paging.ServiceProtocolError, match="login"):
        paging.deliver(_outbound(True), dry_run=False, transport=redirect)


def test_retry_after_as_http_date() -> None:
    when = (datetime.now(UTC) + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 25 <= RetryPolicy(max_wait=100).wait(1, when) <= 30
    assert RetryPolicy(backoff=0.5).wait(3, "soon") == 2.0


# --------------------------------------------------------------------------- tickets and dashboards


def test_jira_comment_keeps_the_summary_verbatim() -> None:
    md = "# Summary\n\n* **cause**: evidence gap\n{noformat}\n"
    body = tickets.jira_comment(md, "bundle.zip")["body"]
    assert body.splitlines()[0] == "rollbook incident record summary (full record attached: [^bundle.zip]):"
    assert body.count("{noformat}") == 2 and "# Summary\n\n* **cause**: evidence gap" in body
    assert tickets.jira_comment(md, None, "abc")["body"].endswith("{noformat}\nrollbook record abc")
    assert tickets.record_digest(md, None) == tickets.record_digest(md, None) != tickets.record_digest("x", None)


def test_ticket_rejects_a_malformed_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = Config(jira=Service(url="https://jira.example", user=SecretRef(env="U"), secret=SecretRef(env="T")))
    with pytest.raises(ConfigError, match="not a Jira issue key"):
        tickets.update_ticket(cfg, "inc 1; drop", "x", None)


def test_render_params_fill_panel_variables() -> None:
    panel = dashboards.Panel.from_config({"dashboard_uid": "api-slo", "slug": "api-slo", "panel_id": 4,
                                          "title": "p99", "vars": {"namespace": "{namespace}",
                                                                   "rollout": "{rollout}", "env": "prod"}}, 0)
    start = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    params = dashboards.render_params(panel, start=start, end=start + timedelta(hours=1),
                                      variables={"namespace": "prod", "rollout": "api"})
    assert params == {"orgId": "1", "panelId": "4", "from": "1795683600000", "to": "1795687200000",
                      "width": "1000", "height": "500", "tz": "UTC", "var-namespace": "prod",
                      "var-rollout": "api", "var-env": "prod"}
    with pytest.raises(ConfigError, match="rollout"):
        dashboards.render_params(panel, start=start, end=start, variables={"namespace": "prod"})
    with pytest.raises(ValueError, match="timezone"):
        dashboards.to_ms(datetime(2026, 1, 1))


def test_panel_config_errors_name_the_entry() -> None:
    with pytest.raises(ConfigError, match=r"grafana.panels\[2\]"):
        dashboards.Panel.from_config({"slug": "x"}, 2)


def test_is_png() -> None:
    from rollbook.sandbox.services import png

    assert dashboards.is_png(png(3, 2))
    assert not dashboards.is_png(b"<html>login</html>")
    assert not dashboards.is_png(dashboards.PNG_SIGNATURE + b"garbage-garbage")


def test_public_url_only_under_the_published_root(tmp_path: Path) -> None:
    picture = tmp_path / "INC-1" / "run 1" / "p99.png"
    assert dashboards.public_url("https://files.example/incidents/", tmp_path, picture) == \
        "https://files.example/incidents/INC-1/run%201/p99.png"
    assert dashboards.public_url(None, tmp_path, picture) is None
    assert dashboards.public_url("https://files.example", tmp_path / "INC-2", picture) is None


def test_rollbook_yaml_sections_drive_the_senders(monkeypatch: pytest.MonkeyPatch) -> None:
    from rollbook import config as config_module

    monkeypatch.setenv("Y_PD", "yaml-planted-routing-key")
    monkeypatch.setenv("Y_SLACK", "https://hooks.slack.example/services/T9/B9/yaml-planted-slack")
    cfg = config_module.parse({"escalation": {
        "pagerduty": {"routing_key_env": "Y_PD", "severity": "warning", "url": "https://events.eu.pagerduty.com"},
        "slack": {"webhook_url_env": "Y_SLACK"}}})
    pd, slack = paging.escalate(cfg, message())
    assert pd.request.url == "https://events.eu.pagerduty.com/v2/enqueue"
    assert pd.request.body["payload"]["severity"] == "warning"
    assert slack.request.url == "https://hooks.slack.example/***"
    assert "yaml-planted" not in json.dumps([pd.to_dict(), slack.to_dict()])
