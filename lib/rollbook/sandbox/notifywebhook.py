"""One webhook request as notifications-engine sends it (pkg/services/webhook.go), retried as
hashicorp/go-retryablehttp 0.7.7 retries it (client.go: baseRetryPolicy, DefaultBackoff, Do), for the
sandbox's simulated notifications (sandbox/notifications.py).

- retried: connection errors, 429, and 5xx except 501; final: anything else, and a redirect loop, a bad
  scheme or URL, a certificate that does not verify;
- at most `retryMax` retries (retryMax + 1 requests); the wait before retry n (from 0) is
  retryWaitMin x 2^n, capped at retryWaitMax, or a 429/503's `Retry-After` (seconds or an HTTP date);
- a 2xx is sent; another final status is "request to ... has failed with error code N : body"; running
  out of retries is "METHOD URL giving up after N attempt(s): ...".
Headers are set in order (Header.Set: a later one of the same name wins), then basicAuth; Go's client
follows up to 10 redirects. Bounded where Go is not: each request times out after `request_timeout` s and
a `Retry-After` counts at most `max_retry_after` s; `wait_scale` multiplies every wait; `stop` ends a wait.
"""

from __future__ import annotations

import email.utils
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from rollbook.sandbox.notifyconfig import WebhookService

_FINAL = (httpx.TooManyRedirects, httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.LocalProtocolError)


@dataclass
class Sent:
    attempts: list[int | str] = field(default_factory=list)  # a status code, or the connection error's name
    ok: bool = False
    error: str = ""


def send_webhook(service: WebhookService, method: str, url: str, body: str, *, stop: threading.Event,
                 wait_scale: float = 1.0, request_timeout: float = 10.0, max_retry_after: float = 60.0) -> Sent:
    """The request and its retries; every wait bounded and interrupted by `stop`."""
    sent = Sent()
    headers = {"User-Agent": "Go-http-client/1.1"}
    for name, value in service.headers:
        headers = {k: v for k, v in headers.items() if k.lower() != name.lower()} | {name: value}
    auth = httpx.BasicAuth(*service.basic_auth) if service.basic_auth else None
    last_error = ""
    with httpx.Client(verify=not service.insecure_skip_verify, follow_redirects=True, max_redirects=10,
                      timeout=request_timeout) as http:
        for attempt in range(service.retry_max + 1):
            resp: httpx.Response | None = None
            try:
                resp = http.request(method, url, content=body.encode(), headers=headers, auth=auth)
                sent.attempts.append(resp.status_code)
                retry = resp.status_code == 429 or (resp.status_code >= 500 and resp.status_code != 501)
                last_error = f"unexpected HTTP status {resp.status_code}"
            except _FINAL as e:
                sent.attempts.append(type(e).__name__)
                sent.error = f"{method} {url}: {e}"
                return sent
            except httpx.HTTPError as e:
                sent.attempts.append(type(e).__name__)
                if "CERTIFICATE_VERIFY_FAILED" in str(e):
                    sent.error = f"{method} {url}: {e}"
                    return sent
                retry, last_error = True, str(e) or type(e).__name__
            if not retry:
                assert resp is not None
                sent.ok = 200 <= resp.status_code <= 299
                if not sent.ok:
                    sent.error = (f"request to {method} {url} has failed with error code {resp.status_code} : "
                                  f"{resp.text[:500]}")
                return sent
            wait = backoff(service, attempt, resp, max_retry_after) * wait_scale
            if attempt == service.retry_max or stop.wait(wait):
                break
    sent.error = f"{method} {url} giving up after {len(sent.attempts)} attempt(s): {last_error}"
    return sent


def backoff(service: WebhookService, attempt: int, resp: httpx.Response | None, max_retry_after: float) -> float:
    """DefaultBackoff in seconds: Retry-After on 429/503, else min x 2^attempt up to max."""
    if resp is not None and resp.status_code in (429, 503):
        after = retry_after(resp.headers.get("Retry-After", ""))
        if after is not None:
            return min(after, max_retry_after)
    return min(service.retry_wait_min_ns * (1 << attempt), service.retry_wait_max_ns) / 1e9


def retry_after(header: str) -> float | None:
    """parseRetryAfterHeader: seconds, or an RFC 1123 date (in the past: 0); anything else is ignored."""
    if header.isdigit():
        return float(header)
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds()) if when.tzinfo else None
