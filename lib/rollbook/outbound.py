"""Outbound HTTP to people's tools, shared by paging, tickets and dashboards.

Request building (`Outbound`), masking of every secret before anything is recorded, bounded retries
that honour Retry-After and never repeat a non-idempotent request after it may have arrived, and the
`Delivery` record copied into incident records.
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
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from rollbook.config import SecretRef, Service
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


# --------------------------------------------------------------------------- generic JSON POST


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
