"""Reaching people: PagerDuty Events API v2, Slack incoming webhooks (Block Kit) and a generic JSON webhook.

Every sender is a dry run unless told otherwise: it builds the exact request, masks every secret in it
and returns a `Delivery` record; only `dry_run=False` sends. The record is copied into incident records,
so a secret (routing key, webhook URL, token) never appears in it.

The small outbound-HTTP core at the top (request building, masking, bounded retries, `Delivery`) is
shared with `rollbook.tickets` and `rollbook.dashboards`, the two other modules that talk to people's
tools.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import hashlib
import json
import re
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx

from rollbook.config import Config, SecretRef, Service
from rollbook.errors import ConfigError, Retryable, RollbookError

MASK = "***"
_BODY_EXCERPT = 300
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)

# --------------------------------------------------------------------------- errors


class ServiceError(RollbookError):
    """A notification, ticket or dashboard service refused or failed a request."""

    def __init__(
        self,
        message: str,
        *,
        service: str,
        url: str,
        status: int | None = None,
        body: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.service = service
        self.url = url
        self.status = status
        self.body = body
        super().__init__(message, hint=hint)


class ServiceRejected(ServiceError):
    """A 4xx (other than 429): the request or its credentials are wrong; retrying will not help."""


class ServiceUnavailable(ServiceError, Retryable):
    """No useful answer after bounded retries (429, 5xx, timeouts, connection errors)."""


class ServiceProtocolError(ServiceError):
    """A reply that is not what the service's API promises (a redirect to a login page, not JSON, ...)."""


class EscalationFailed(ServiceError):
    """At least one escalation target failed; `deliveries` holds what happened to every target."""

    def __init__(self, message: str, *, deliveries: list[Delivery], failed: list[RollbookError]) -> None:
        self.deliveries = deliveries
        self.failed = failed
        first = failed[0]
        super().__init__(message, service=getattr(first, "service", "escalation"),
                         url=getattr(first, "url", ""), status=getattr(first, "status", None),
                         hint="Reach the on-call by hand now; each Delivery's request holds the message.")


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class RequestRecord:
    """A request as it was (or would have been) sent, with every secret masked."""

    method: str
    url: str
    headers: dict[str, str]
    body: Any = None


@dataclass(frozen=True)
class Delivery:
    """What one sender did: the masked request and, when sent, the service's answer."""

    service: str
    sent: bool
    request: RequestRecord
    status: int | None = None
    response: Any = None
    attempts: int = 0
    dedup_key: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy for record.json."""
        return asdict(self)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries: `attempts` in all, waits doubling from `backoff`, every wait capped at `max_wait`."""

    attempts: int = 3
    backoff: float = 0.5
    max_wait: float = 5.0
    sleep: Callable[[float], None] = time.sleep

    def wait(self, attempt: int, retry_after: str | None) -> float:
        """Seconds to wait before the next attempt: Retry-After if given, else backoff; both capped."""
        hinted = _retry_after_seconds(retry_after)
        chosen = hinted if hinted is not None else self.backoff * (2 ** (attempt - 1))
        return max(0.0, min(chosen, self.max_wait))


DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class Outbound:
    """One request to build, mask and (maybe) send."""

    service: str
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    json_body: Any = None
    params: dict[str, str] | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    # Secret values to scrub from anything recorded (the Authorization header is masked regardless).
    secrets: tuple[str, ...] = ()
    # Safe to repeat (a GET, or a POST the service deduplicates): retried on 5xx and read timeouts too.
    idempotent: bool = False
    # What to tell the user when the service rejects the request (4xx).
    hint: str = ""
    # What the record shows instead of `url` when the URL itself is the secret (Slack).
    display_url: str | None = None

    def record(self) -> RequestRecord:
        """The masked request for a Delivery."""
        url = self.display_url or (str(httpx.URL(self.url, params=self.params)) if self.params else self.url)
        return RequestRecord(
            method=self.method,
            url=scrub(url, self.secrets),
            headers={k: scrub(v, self.secrets) for k, v in mask_headers(self.headers).items()},
            body=scrub(self._body_record(), self.secrets),
        )

    def _body_record(self) -> Any:
        if self.files is not None:
            # Describe the upload rather than copying it: the file is in the record already.
            return {"multipart": {name: {"filename": fn, "content_type": ct, "size": len(data),
                                         "sha256": hashlib.sha256(data).hexdigest()}
                                  for name, (fn, data, ct) in self.files.items()}}
        return self.json_body


# --------------------------------------------------------------------------- masking


def mask_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers with credentials replaced: `Authorization: Bearer ***`, `Basic ***`."""
    out: dict[str, str] = {}
    for key, value in headers.items():
        if key.lower() in ("authorization", "proxy-authorization"):
            scheme = value.split(" ", 1)[0] if " " in value else ""
            out[key] = f"{scheme} {MASK}".strip()
        else:
            out[key] = value
    return out


def scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    """`value` with every occurrence of every secret replaced by `***`, recursively."""
    live = sorted({s for s in secrets if s}, key=len, reverse=True)
    if not live:
        return value
    return _scrub(value, live)


def _scrub(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {_scrub(k, secrets): _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v, secrets) for v in value]
    return value


def mask_url_path(url: str) -> str:
    """`scheme://host/***`: for URLs whose path is the secret (Slack incoming webhooks)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + MASK, "", ""))


def basic_auth(user: str, token: str) -> str:
    """The `Authorization` value for HTTP basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


def require_secret(ref: SecretRef, where: str, what: str) -> str:
    """The secret's value, or a ConfigError naming where it was looked for."""
    value = ref.value()
    if not value:
        raise ConfigError(f"{where}: the {what} is not set (looked in {ref.describe()}).",
                          hint=f"Export it or write it to the file named in {where}.")
    return value


# --------------------------------------------------------------------------- sending


def deliver(
    req: Outbound,
    *,
    dry_run: bool,
    transport: httpx.BaseTransport | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    dedup_key: str | None = None,
) -> Delivery:
    """Send `req` (unless `dry_run`) and return the masked Delivery record."""
    if dry_run:
        return Delivery(service=req.service, sent=False, request=req.record(), dedup_key=dedup_key)
    resp, attempts = fetch(req, transport=transport, retry=retry, timeout=timeout)
    return Delivery(service=req.service, sent=True, request=req.record(), status=resp.status_code,
                    response=scrub(response_body(resp), req.secrets), attempts=attempts,
                    dedup_key=dedup_key)


def fetch(
    req: Outbound,
    *,
    transport: httpx.BaseTransport | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
) -> tuple[httpx.Response, int]:
    """Send `req` with bounded retries; return the 2xx response and the number of attempts."""
    with httpx.Client(transport=transport, timeout=timeout, follow_redirects=False,
                      verify=_tls_context()) as client:
        for attempt in range(1, retry.attempts + 1):
            last = attempt == retry.attempts
            try:
                resp = _send_once(client, req)
            except httpx.TransportError as e:
                if last or not _may_retry_transport(req, e):
                    raise _unavailable(req, None, f"{type(e).__name__}: {e}", attempt) from e
                retry.sleep(retry.wait(attempt, None))
                continue
            if _may_retry_status(req, resp.status_code):
                if last:
                    raise _unavailable(req, resp.status_code, _excerpt(resp), attempt)
                retry.sleep(retry.wait(attempt, resp.headers.get("retry-after")))
                continue
            _raise_for(req, resp, attempt)
            return resp, attempt
    raise AssertionError("unreachable: the loop either returns or raises")  # pragma: no cover


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The default verifying TLS context, built once: loading the CA bundle costs ~30 ms per client."""
    return httpx.create_ssl_context()


def _send_once(client: httpx.Client, req: Outbound) -> httpx.Response:
    if req.files is not None:
        return client.request(req.method, req.url, headers=req.headers, params=req.params,
                              files=req.files)
    return client.request(req.method, req.url, headers=req.headers, params=req.params,
                          json=req.json_body)


def _may_retry_transport(req: Outbound, e: httpx.TransportError) -> bool:
    # A failed connect never reached the service, so even a non-idempotent POST is safe to repeat;
    # after a read timeout the service may have acted, so only idempotent requests are repeated.
    return req.idempotent or isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout))


def _may_retry_status(req: Outbound, status: int) -> bool:
    # 429 and 503 mean "not processed, come back later"; other 5xx may have half-acted.
    return status in (429, 503) or (req.idempotent and status >= 500)


def _raise_for(req: Outbound, resp: httpx.Response, attempts: int) -> None:
    status = resp.status_code
    url = req.record().url
    if 200 <= status < 300:
        return
    body = scrub(_excerpt(resp), req.secrets)
    if 300 <= status < 400:
        raise ServiceProtocolError(
            f"{req.service} answered {req.method} {url} with a redirect (HTTP {status}) to "
            f"{scrub(resp.headers.get('location', '?'), req.secrets)}.", service=req.service, url=url,
            status=status, body=body,
            hint="Usually a login page in front of the API: use the API's own URL and a token.")
    if status >= 500:
        raise _unavailable(req, status, body, attempts)
    raise ServiceRejected(f"{req.service} rejected {req.method} {url}: HTTP {status} {body}",
                          service=req.service, url=url, status=status, body=body,
                          hint=req.hint or "Check the service's settings in rollbook.yaml.")


def _unavailable(req: Outbound, status: int | None, detail: str, attempts: int) -> ServiceUnavailable:
    url = req.record().url
    what = f"HTTP {status}" if status is not None else "no answer"
    maybe = "" if req.idempotent else " It may or may not have acted on the last attempt."
    return ServiceUnavailable(
        f"{req.service} did not answer {req.method} {url} usefully after {attempts} attempt(s): "
        f"{what} {scrub(detail, req.secrets)}".rstrip() + "." + maybe,
        service=req.service, url=url, status=status, body=scrub(detail, req.secrets),
        hint="Try again later, or do it by hand: the full request is in the Delivery record.")


def _excerpt(resp: httpx.Response) -> str:
    text = resp.text if resp.content else ""
    return text[:_BODY_EXCERPT] + ("…" if len(text) > _BODY_EXCERPT else "")


def response_body(resp: httpx.Response) -> Any:
    """The reply as JSON when it is JSON, else (truncated) text."""
    try:
        return resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _excerpt(resp)


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


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

    def as_json(self) -> dict[str, Any]:
        """The whole message as JSON-ready data."""
        data = asdict(self)
        data["aborted_at"] = _iso(self.aborted_at)
        return data


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


def slack_message(msg: Escalation) -> dict[str, Any]:
    """A Block Kit message (header, section with fields, images with public URLs, context) plus text."""
    fields = [
        ("Rollout", f"`{msg.namespace}/{msg.rollout}`"),
        ("Context", f"`{msg.context}`"),
        ("Revision", str(msg.revision) if msg.revision is not None else "unknown"),
        ("Aborted", _aborted_text(msg)),
    ]
    fields += [(str(k), str(v)) for k, v in list(msg.facts.items())[: 10 - len(fields)]]
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
    return {"text": _truncate(f"{msg.title}: {msg.reason}", 3000), "blocks": blocks}


def _aborted_text(msg: Escalation) -> str:
    parts = [_iso(msg.aborted_at) or "unknown"]
    if msg.minutes_since_abort is not None:
        parts.append(f"({msg.minutes_since_abort:.0f} min ago)")
    return " ".join(parts)


def _context_text(msg: Escalation) -> str:
    where = f"<{msg.record_link}|incident record>" if _is_http(msg.record_link) else "record not published"
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


def post_json(cfg: Service, body: dict[str, Any], *, service: str, where: str, dry_run: bool,
              transport: httpx.BaseTransport | None, retry: RetryPolicy,
              dedup: str | None = None) -> Delivery:
    """POST `body` to `cfg.url` with an optional bearer token (generic webhooks)."""
    if not cfg.url:
        raise ConfigError(f"{where} has no url.", hint=f"Set {where}.url in rollbook.yaml.")
    headers = {"Content-Type": "application/json"}
    token = cfg.secret.value()
    if (cfg.secret.env or cfg.secret.file) and not token:
        require_secret(cfg.secret, where, "token")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if dedup:
        # Receivers that honour it can drop a repeated delivery of the same escalation.
        headers["Idempotency-Key"] = dedup
    req = Outbound(service=service, method="POST", url=cfg.url, headers=headers, json_body=body,
                   secrets=(token,) if token else (),
                   hint=f"Check {where}.url and its token ({cfg.secret.describe()}).")
    return deliver(req, dry_run=dry_run, transport=transport, retry=retry, dedup_key=dedup)


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
