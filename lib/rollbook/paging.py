"""Reaching people: PagerDuty Events API v2, Slack incoming webhooks (Block Kit) and a generic JSON webhook.

Every sender is a dry run unless told otherwise: it builds the exact request, masks every secret in it
and returns a `Delivery` record; only `dry_run=False` sends. The record is copied into incident records,
so a secret (routing key, webhook URL, token) never appears in it.

The outbound-HTTP core (request building, masking, bounded retries, `Delivery`) is `rollbook.outbound`,
shared with `rollbook.tickets` and `rollbook.dashboards`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import httpx

from rollbook.config import Config, Service
from rollbook.errors import ConfigError, RollbookError
from rollbook.outbound import (  # re-exported: paging was their home before rollbook.outbound
    DEFAULT_RETRY,
    Delivery,
    EscalationFailed,
    Outbound,
    RequestRecord,
    RetryPolicy,
    ServiceError,
    ServiceProtocolError,
    ServiceRejected,
    ServiceUnavailable,
    basic_auth,
    deliver,
    fetch,
    mask_headers,
    mask_url_path,
    post_json,
    require_secret,
    scrub,
)
from rollbook.record import printable

# --------------------------------------------------------------------------- the message


@dataclass(frozen=True)
class Image:
    """A dashboard picture: its local PNG and, when the record is published, its http(s) URL."""

    title: str
    path: str | None = None
    url: str | None = None

    @property
    def public(self) -> bool:
        """Only http(s) URLs go into pages and Slack messages; never local paths or inline data."""
        return bool(self.url) and urlsplit(self.url or "").scheme in ("http", "https")


@dataclass(frozen=True)
class Escalation:
    """What a human must know about an aborted canary, built by the caller and rendered per target."""

    title: str
    reason: str
    rollout: str
    namespace: str
    context: str
    revision: int | str | None = None
    aborted_at: datetime | None = None
    minutes_since_abort: float | None = None
    record_link: str | None = None
    images: tuple[Image, ...] = ()
    facts: dict[str, Any] = field(default_factory=dict)
    incident: str | None = None

    def __post_init__(self) -> None:
        # The text comes from the cluster and MC (a status message, an MC reason): no terminal escape, NUL
        # or BEL may ride along into Slack, PagerDuty or a webhook. Each target escapes its own markup.
        for name in ("title", "reason", "rollout", "namespace", "context", "record_link", "incident"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, printable(value))
        object.__setattr__(self, "facts", _printable_data(self.facts))
        object.__setattr__(self, "images", tuple(Image(printable(i.title), i.path, i.url) for i in self.images))

    def as_json(self) -> dict[str, Any]:
        """The whole message as JSON-ready data."""
        data = asdict(self)
        data["aborted_at"] = _iso(self.aborted_at)
        return data


def _printable_data(value: Any) -> Any:
    """`printable` on every string of a JSON-like value (keys too)."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {_printable_data(k): _printable_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_printable_data(v) for v in value]
    return value


def dedup_key(msg: Escalation) -> str:
    """Stable per (namespace, rollout, revision), so a re-run of the same abort never pages twice."""
    if msg.revision is not None:
        tail = f"rev-{msg.revision}"
    elif msg.aborted_at is not None:
        # Without a revision the abort time still names this abort and no other.
        tail = "aborted-" + msg.aborted_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    else:
        raise ConfigError(
            f"Cannot build a PagerDuty dedup_key for rollout {msg.rollout!r} in namespace "
            f"{msg.namespace!r}: neither the revision nor the abort time is known.",
            hint="Pass the canary revision (step 1 establishes it) in the Escalation message.")
    key = f"rollbook/{msg.namespace}/{msg.rollout}/{tail}"
    # PagerDuty caps dedup_key at 255 characters; a hash keeps long names distinct and stable.
    return key if len(key) <= 255 else key[:200] + "/" + hashlib.sha256(key.encode()).hexdigest()[:32]


def _iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z") if when else None


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_http(url: str | None) -> bool:
    return bool(url) and urlsplit(url or "").scheme in ("http", "https")


# --------------------------------------------------------------------------- PagerDuty

PAGERDUTY_URL = "https://events.pagerduty.com"
PagerDutyAction = Literal["trigger", "acknowledge", "resolve"]
_SEVERITIES = ("critical", "error", "warning", "info")


def pagerduty_event(msg: Escalation, *, routing_key: str, severity: str = "critical",
                    action: PagerDutyAction = "trigger") -> dict[str, Any]:
    """The Events API v2 body for `msg` (acknowledge/resolve carry only the dedup_key)."""
    event: dict[str, Any] = {"routing_key": routing_key, "event_action": action,
                             "dedup_key": dedup_key(msg)}
    if action != "trigger":
        return event
    payload: dict[str, Any] = {
        "summary": _truncate(f"{msg.title}: {msg.reason}", 1024),
        "source": f"{msg.context}/{msg.namespace}/{msg.rollout}",
        "severity": severity,
        "component": msg.rollout,
        "group": msg.namespace,
        "class": "argo-rollout-abort",
        "custom_details": _custom_details(msg),
    }
    if msg.aborted_at:
        payload["timestamp"] = _iso(msg.aborted_at)
    event.update(payload=payload, client="rollbook")
    if _is_http(msg.record_link):
        event["client_url"] = msg.record_link
        event["links"] = [{"href": msg.record_link, "text": "Incident record"}]
    images = [{"src": i.url, "href": i.url, "alt": i.title} for i in msg.images if i.public]
    if images:
        event["images"] = images
    return event


def _custom_details(msg: Escalation) -> dict[str, Any]:
    details: dict[str, Any] = {
        "rollout": msg.rollout, "namespace": msg.namespace, "context": msg.context,
        "revision": msg.revision, "aborted_at": _iso(msg.aborted_at),
        "minutes_since_abort": msg.minutes_since_abort, "record_link": msg.record_link,
        "reason": msg.reason,
    }
    if msg.incident:
        details["incident"] = msg.incident
    if msg.facts:
        details["facts"] = msg.facts
    return details


def send_pagerduty(cfg: Service, msg: Escalation, *, dry_run: bool = True,
                   transport: httpx.BaseTransport | None = None, action: PagerDutyAction = "trigger",
                   retry: RetryPolicy = DEFAULT_RETRY) -> Delivery:
    """Trigger (or acknowledge/resolve) the PagerDuty alert for `msg`; deduplicated by its dedup_key."""
    where = "escalation.pagerduty"
    key = require_secret(cfg.secret, where, "routing key")
    severity = str(cfg.options.get("severity", "critical"))
    if severity not in _SEVERITIES:
        raise ConfigError(f"{where}.severity is {severity!r}.", hint=f"Use one of {list(_SEVERITIES)}.")
    base = (cfg.url or PAGERDUTY_URL).rstrip("/")
    req = Outbound(
        service="pagerduty", method="POST",
        url=base if base.endswith("/v2/enqueue") else base + "/v2/enqueue",
        headers={"Content-Type": "application/json"},
        json_body=pagerduty_event(msg, routing_key=key, severity=severity, action=action),
        secrets=(key,),
        # PagerDuty deduplicates on dedup_key, so repeating the POST cannot open a second incident.
        idempotent=True,
        hint=f"Check the routing key ({cfg.secret.describe()}) is an Events API v2 integration key.",
    )
    return deliver(req, dry_run=dry_run, transport=transport, retry=retry,
                   dedup_key=req.json_body["dedup_key"])


# --------------------------------------------------------------------------- Slack


def _mrkdwn(text: str) -> str:
    """Slack's three control characters, escaped as its docs require."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_url(url: str) -> str:
    """A URL inside Slack's `<url|label>`: `|`, `<`, `>` and spaces percent-encoded, `&` as `&amp;`."""
    return quote(url, safe="/:?#[]@!$&'()*+,;=%~").replace("&", "&amp;")


def slack_message(msg: Escalation) -> dict[str, Any]:
    """A Block Kit message (header, section with fields, images with public URLs, context) plus text."""
    fields = [
        ("Rollout", f"`{msg.namespace}/{msg.rollout}`"),
        ("Context", f"`{msg.context}`"),
        ("Revision", str(msg.revision) if msg.revision is not None else "unknown"),
        ("Aborted", _aborted_text(msg)),
    ]
    fields += [(str(k), _field_text(v)) for k, v in list(msg.facts.items())[: 10 - len(fields)]]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _truncate(msg.title, 150)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _truncate(_mrkdwn(msg.reason), 3000)},
         "fields": [{"type": "mrkdwn", "text": _truncate(f"*{_mrkdwn(k)}*\n{_mrkdwn(v)}", 2000)}
                    for k, v in fields]},
    ]
    blocks += [{"type": "image", "image_url": i.url, "alt_text": _truncate(i.title, 2000),
                "title": {"type": "plain_text", "text": _truncate(i.title, 2000)}}
               for i in msg.images if i.public]
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _context_text(msg)}]})
    # the top-level text (the notification and fallback) is mrkdwn too: `<!channel>` there would ping everyone
    return {"text": _truncate(_mrkdwn(f"{msg.title}: {msg.reason}"), 3000), "blocks": blocks}


def _field_text(value: Any) -> str:
    """A fact as Slack text people read: lists as bullet lines, mappings as `key: value` lines, no reprs."""
    if value is None:
        return "unknown"
    if isinstance(value, (list, tuple)):
        return "\n".join(f"• {_field_text(v)}" for v in value) or "none"
    if isinstance(value, dict):
        return "\n".join(f"{k}: {_field_text(v)}" for k, v in value.items()) or "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _aborted_text(msg: Escalation) -> str:
    parts = [_iso(msg.aborted_at) or "unknown"]
    if msg.minutes_since_abort is not None:
        parts.append(f"({msg.minutes_since_abort:.0f} min ago)")
    return " ".join(parts)


def _context_text(msg: Escalation) -> str:
    where = f"<{_slack_url(msg.record_link or '')}|incident record>" if _is_http(msg.record_link) \
        else "record not published"
    incident = f" · {_mrkdwn(msg.incident)}" if msg.incident else ""
    return f"rollbook{incident} · {where} · dedup `{_mrkdwn(dedup_key_or_none(msg) or '-')}`"


def dedup_key_or_none(msg: Escalation) -> str | None:
    """`dedup_key(msg)`, or None when the message cannot have one."""
    try:
        return dedup_key(msg)
    except ConfigError:
        return None


def send_slack(cfg: Service, msg: Escalation, *, dry_run: bool = True,
               transport: httpx.BaseTransport | None = None,
               retry: RetryPolicy = DEFAULT_RETRY) -> Delivery:
    """Post `msg` to a Slack incoming webhook (whose URL is the secret)."""
    where = "escalation.slack"
    url = require_secret(cfg.secret, where, "webhook URL")
    if not _is_http(url):
        raise ConfigError(f"{where}: the webhook URL in {cfg.secret.describe()} is not an http(s) URL.",
                          hint="Copy the whole URL Slack shows for the incoming webhook.")
    path = urlsplit(url).path
    req = Outbound(
        service="slack", method="POST", url=url, headers={"Content-Type": "application/json"},
        json_body=slack_message(msg),
        # The whole path (T…/B…/token) authorises posting, so none of it is recorded.
        display_url=mask_url_path(url), secrets=(path, path.rstrip("/").rsplit("/", 1)[-1]),
        hint=f"Check the webhook URL in {cfg.secret.describe()} is current (Slack answers 403/404 "
             "for revoked ones).",
    )
    return deliver(req, dry_run=dry_run, transport=transport, retry=retry, dedup_key=dedup_key_or_none(msg))


# --------------------------------------------------------------------------- generic webhook


def webhook_body(msg: Escalation) -> dict[str, Any]:
    """The generic webhook's JSON: the whole escalation message plus its dedup_key."""
    return {"type": "rollbook.escalation", "version": 1, "dedup_key": dedup_key_or_none(msg),
            "message": msg.as_json()}


def send_webhook(cfg: Service, msg: Escalation, *, dry_run: bool = True,
                 transport: httpx.BaseTransport | None = None,
                 retry: RetryPolicy = DEFAULT_RETRY, where: str = "escalation.webhook") -> Delivery:
    """POST the whole message as JSON to a generic webhook, with a bearer token when configured."""
    body = webhook_body(msg)
    return post_json(cfg, body, service="webhook", where=where, dry_run=dry_run, transport=transport,
                     retry=retry, dedup=body["dedup_key"])


# --------------------------------------------------------------------------- all targets


def escalate(config: Config, msg: Escalation, *, dry_run: bool = True,
             transport: httpx.BaseTransport | None = None,
             retry: RetryPolicy = DEFAULT_RETRY) -> list[Delivery]:
    """Send `msg` to every configured target (none configured: an empty list).

    Every target is tried even when one fails; then EscalationFailed carries all the deliveries.
    """
    targets: list[tuple[str, Service, Callable[..., Delivery]]] = [
        ("pagerduty", config.pagerduty, send_pagerduty), ("slack", config.slack, send_slack),
        ("webhook", config.webhook, send_webhook)]
    deliveries: list[Delivery] = []
    failed: list[RollbookError] = []
    for name, cfg, send in targets:
        if not cfg.enabled:
            continue
        try:
            # The dry-run rendering doubles as the record of what was attempted if sending fails.
            planned = send(cfg, msg, dry_run=True)
            deliveries.append(planned if dry_run else _try_send(send, cfg, msg, planned, failed,
                                                                transport, retry))
        except RollbookError as e:  # a config error in one target must not silence the others
            failed.append(e)
            deliveries.append(Delivery(service=name, sent=False, request=RequestRecord("POST", "", {}),
                                       error=str(e), dedup_key=dedup_key_or_none(msg)))
    if failed:
        raise EscalationFailed(f"Escalation for rollout {msg.rollout!r} in namespace {msg.namespace!r} "
                               f"failed for {len(failed)} of {len(deliveries)} target(s): "
                               + "; ".join(str(e) for e in failed), deliveries=deliveries, failed=failed)
    return deliveries


def _try_send(send: Callable[..., Delivery], cfg: Service, msg: Escalation, planned: Delivery,
              failed: list[RollbookError], transport: httpx.BaseTransport | None,
              retry: RetryPolicy) -> Delivery:
    try:
        return send(cfg, msg, dry_run=False, transport=transport, retry=retry)
    except ServiceError as e:
        failed.append(e)
        return replace(planned, status=e.status, error=str(e))


__all__ = [
    "Delivery", "Escalation", "EscalationFailed", "Image", "Outbound", "RequestRecord", "RetryPolicy",
    "ServiceError", "ServiceProtocolError", "ServiceRejected", "ServiceUnavailable", "basic_auth",
    "dedup_key", "deliver", "escalate", "fetch", "mask_headers", "pagerduty_event", "post_json",
    "require_secret", "scrub", "send_pagerduty", "send_slack", "send_webhook", "slack_message",
    "webhook_body",
]
