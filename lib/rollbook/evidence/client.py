"""The Mission Control (MC) client: verdicts, evidence listings, attachments, the current bundle.

The only importer of httpx for MC. JSON becomes frozen dataclasses here, at the boundary; httpx errors
and MC's error replies become :mod:`rollbook.errors` classes here, with the URL, status, MC's code,
details and request id, and a sentence saying what to do next. The token lives in a :class:`Secret`
and never reaches a repr, a log line or an exception.
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
import json
import logging
import os
import re
import ssl
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import httpx

from rollbook import __version__
from rollbook.errors import (
    ConfigError,
    EvidenceError,
    MCAuthError,
    MCConflict,
    MCNotFound,
    MCProtocolError,
    MCUnavailable,
    MCValidationError,
)
from rollbook.evidence.model import (
    DNS_LABEL_RE,
    RELEASE_ID_RE,
    AttachResult,
    Bundle,
    Deployment,
    DeploymentKind,
    EvidenceItem,
    ItemType,
    Listing,
    Release,
    Verdict,
)
from rollbook.evidence.parsing import _bundle, _deployment, _item, _listing, _release, _Shape, _verdict
from rollbook.evidence.reports import evidence_from_file
from rollbook.evidence.secret import Secret, _token_from_env

log = logging.getLogger(__name__)


READ_SCOPE, WRITE_SCOPE = "evidence:read", "evidence:write"
MAX_BACKOFF = 8.0
MAX_BODY_IN_MESSAGE = 300


# --------------------------------------------------------------------------- the client


@functools.cache
def _default_tls() -> ssl.SSLContext:
    """One system-trust TLS context per process: building it costs ~0.1 s, far more than a verdict."""
    return ssl.create_default_context()


def _idempotency_key(*parts: str) -> str:
    return "rollbook-" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    raw = response.headers.get("Retry-After")
    if not raw:
        return None
    if raw.strip().isdigit():
        return float(raw.strip())
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _check_id(value: str, rx: re.Pattern[str], what: str, hint: str) -> str:
    if not isinstance(value, str) or not rx.match(value):
        raise MCValidationError(f"{what} {value!r} is not valid (must match {rx.pattern}).", hint=hint,
                                details={"fields": {what.replace(" ", "_"): "invalid"}})
    return value


def _release_id(value: str) -> str:
    return _check_id(value, RELEASE_ID_RE, "release id", "Check the rollout's release-id label.")


def _label(value: str, what: str) -> str:
    return _check_id(value, DNS_LABEL_RE, what, f"Check the {what} parameter (a DNS label).")


class MCClient:
    """A client of MC's evidence API with bounded, logged retries and typed results."""

    def __init__(self, base_url: str, token: Secret, *, timeout: float = 5.0, retries: int = 3,
                 backoff: float = 0.5, max_retry_after: float = 30.0,
                 transport: httpx.BaseTransport | None = None, verify: bool | str | ssl.SSLContext = True,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not isinstance(token, Secret):
            raise TypeError("token must be a rollbook.evidence.Secret (its repr stays masked)")
        if not re.match(r"^https?://[^/\s]+", base_url or ""):
            raise ConfigError(f"MC URL {base_url!r} is not an http(s) URL.",
                              hint="Set ROLLBOOK_MC_URL (or --mc-url) to e.g. https://mc.example.internal.")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.retries, self.backoff, self.max_retry_after = max(0, retries), backoff, max_retry_after
        self._sleep = sleep
        # follow_redirects=False: an SSO proxy's redirect to its login page must surface, not be followed
        if verify is True:
            verify = _default_tls()
        self._http = httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(timeout), transport=transport,
                                  verify=verify, follow_redirects=False,
                                  headers={"Accept": "application/json", "User-Agent": f"rollbook/{__version__}"})

    @classmethod
    def from_env(cls, base_url: str | None = None, **options: Any) -> MCClient:
        """URL from the argument or ROLLBOOK_MC_URL; token from ROLLBOOK_MC_TOKEN or ROLLBOOK_MC_TOKEN_FILE."""
        url = base_url or os.environ.get("ROLLBOOK_MC_URL")
        if not url:
            raise ConfigError("No MC URL: ROLLBOOK_MC_URL is not set.",
                              hint="Pass --mc-url or export ROLLBOOK_MC_URL (the sandbox's env.sh does).")
        return cls(url, _token_from_env(), **options)

    def __repr__(self) -> str:
        return f"MCClient({self.base_url!r})"

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the API

    def health(self) -> bool:
        """True when GET /health answers 200 JSON {"status": "ok"}; never raises for an unreachable MC."""
        try:
            response = self._http.get("/health")
            return response.status_code == 200 and response.json().get("status") == "ok"
        except (httpx.HTTPError, ValueError, AttributeError):
            return False

    def verdict(self, release_id: str, environment: str = "production") -> Verdict:
        """The gate verdict (what `mc-evidence-ok` reads), evaluated by MC now."""
        path = f"/api/v1/releases/{_release_id(release_id)}/evidence-status"
        return _verdict(*self._get(path, environment=_label(environment, "environment")))

    def listing(self, release_id: str, environment: str = "production") -> Listing:
        """Required slots, present items, missing and extra ones."""
        path = f"/api/v1/releases/{_release_id(release_id)}/evidence"
        return _listing(*self._get(path, environment=_label(environment, "environment")))

    def release(self, release_id: str) -> Release:
        """Release metadata (service, artifact digest)."""
        return _release(*self._get(f"/api/v1/releases/{_release_id(release_id)}"))

    def current(self, service: str, environment: str = "production") -> Bundle:
        """The current production evidence bundle of a service (which release MC thinks is deployed)."""
        path = f"/api/v1/environments/{_label(environment, 'environment')}/services/{_label(service, 'service')}/current"
        return _bundle(*self._get(path))

    def attach(self, release_id: str, item: Mapping[str, Any] | EvidenceItem,
               environment: str = "production") -> AttachResult:
        """Attach an evidence item; safe to retry (Idempotency-Key from release, name and digest)."""
        body = item.payload() if isinstance(item, EvidenceItem) else dict(item)
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise MCValidationError("Evidence item has no name (the requirement slot, e.g. test-report).",
                                    details={"fields": {"name": "required"}})
        fingerprint = body.get("digest") or hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        key = _idempotency_key(_release_id(release_id), name, str(fingerprint))
        path = f"/api/v1/releases/{release_id}/evidence"
        obj, url, status = self._request("POST", path, json_body=body, idempotency_key=key,
                                         params={"environment": _label(environment, "environment")})
        s = _Shape(obj, "attach result", url)
        return AttachResult(_item(s.obj.get("item"), url), _verdict(s.obj.get("verdict"), url), status == 201)

    def attach_file(self, release_id: str, path: str | Path, name: str, type: ItemType | None = None,
                    *, environment: str = "production", subject_digest: str | None = None,
                    uri: str | None = None, annotations: Mapping[str, str] | None = None) -> AttachResult:
        """Attach a junit XML or JSON report file; the digest is the file's sha256."""
        item = evidence_from_file(path, name, type, subject_digest=subject_digest, uri=uri,
                                  annotations=annotations)
        return self.attach(release_id, item, environment=environment)

    def report_deployment(self, service: str, release_id: str, artifact_digest: str, kind: DeploymentKind,
                          source: str, observed_at: datetime | None = None,
                          environment: str = "production") -> Deployment:
        """Report a promotion or rollback, moving MC's current pointer; safe to retry."""
        observed = (observed_at or datetime.now(UTC)).astimezone(UTC)
        stamp = observed.strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"service": _label(service, "service"), "release_id": _release_id(release_id),
                "artifact_digest": artifact_digest, "kind": kind, "source": source, "observed_at": stamp}
        key = _idempotency_key(environment, service, release_id, artifact_digest, kind, stamp)
        path = f"/api/v1/environments/{_label(environment, 'environment')}/deployments"
        obj, url, _status = self._request("POST", path, json_body=body, idempotency_key=key)
        return _deployment(obj, url)

    # ---- transport, retries, error mapping

    def _get(self, path: str, **params: str) -> tuple[Any, str]:
        obj, url, _status = self._request("GET", path, params=params or None)
        return obj, url

    def _request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                 json_body: Any = None, idempotency_key: str | None = None) -> tuple[Any, str, int]:
        """One logical call: bounded attempts; returns (parsed JSON, URL, status)."""
        headers = {"Authorization": f"Bearer {self._token.reveal()}"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        request = self._http.build_request(method, path, params=params, json=json_body, headers=headers)
        url = str(request.url)
        # a POST without an Idempotency-Key could be applied twice, so it gets a single attempt
        attempts = 1 + self.retries if method == "GET" or idempotency_key else 1
        started, last, delay = time.monotonic(), "no attempt made", 0.0
        failed: httpx.Response | None = None
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                self._sleep(delay)
            try:
                response = self._http.send(request)
            except httpx.TimeoutException:
                last, retry_after = f"timed out after {self._http.timeout.read}s", None
            except httpx.TransportError as e:
                last, retry_after = f"connection failed ({type(e).__name__}: {self._scrub(str(e))[:120]})", None
            else:
                if response.status_code != 429 and response.status_code < 500:
                    return self._parse(response, url), url, response.status_code
                failed, last, retry_after = response, self._describe(response), _retry_after(response)
            delay = self._delay(attempt, retry_after)
            log.warning("MC %s %s: %s (attempt %d of %d%s)", method, url, last, attempt, attempts,
                        f", next in {delay:.2f}s" if attempt < attempts else "")
        raise self._unavailable(method, url, attempts, time.monotonic() - started, last, failed)

    def _unavailable(self, method: str, url: str, attempts: int, elapsed: float, last: str,
                     failed: httpx.Response | None) -> MCUnavailable:
        """What was tried and the last answer, if any (its status, MC's code and request id)."""
        body = self._error_body(failed) if failed is not None else {}
        return MCUnavailable(
            f"MC did not answer {method} {url} usefully: {attempts} attempt(s) over {elapsed:.1f}s, last: {last}.",
            url=url, status=failed.status_code if failed is not None else None, code=body.get("error"),
            request_id=body.get("request_id") or (failed.headers.get("X-Request-Id") if failed else None),
            hint="Check MC's health (GET /health) and try again later; until then the evidence gate "
                 "cannot be evaluated, so do not treat it as passed.")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before the next attempt: exponential backoff, raised to Retry-After (capped)."""
        delay = min(self.backoff * 2.0 ** (attempt - 1), MAX_BACKOFF)
        if retry_after is not None:  # capped: a runbook must not hang on a server asking for minutes
            delay = max(delay, min(retry_after, self.max_retry_after))
        return delay

    def _describe(self, response: httpx.Response) -> str:
        code = self._error_body(response).get("error")
        return f"HTTP {response.status_code}" + (f" {code}" if code else "")

    def _scrub(self, text: str) -> str:
        """Defence in depth: never let the token through in text that came from elsewhere."""
        secret = self._token.reveal()
        return text.replace(secret, "***") if secret else text

    def _error_body(self, response: httpx.Response) -> dict[str, Any]:
        try:
            obj = response.json()
        except ValueError:
            return {}
        return obj if isinstance(obj, dict) else {}

    def _parse(self, response: httpx.Response, url: str) -> Any:
        """JSON of a 2xx reply, else the mapped error."""
        if not response.is_success:
            raise self._error(response, url)
        ctype = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        try:
            if ctype != "application/json" and not ctype.endswith("+json"):
                raise ValueError(ctype)
            return response.json()
        except ValueError:
            raise MCProtocolError(
                f"MC answered {response.status_code} to {response.request.method} {url} with "
                f"{ctype or 'no content type'} instead of JSON (starts {self._scrub(response.text[:60])!r}).",
                url=url, status=response.status_code,
                hint="An SSO or proxy login page is probably in front of MC: point ROLLBOOK_MC_URL at the API "
                     "itself. A non-JSON reply is never treated as evidence.") from None

    def _error(self, response: httpx.Response, url: str) -> EvidenceError:
        """The rollbook error for a non-2xx reply, with MC's code, details and request id."""
        body = self._error_body(response)
        status, code = response.status_code, body.get("error")
        message = self._scrub(str(body.get("message") or response.text[:MAX_BODY_IN_MESSAGE]))
        raw_details = body.get("details")
        details: dict[str, Any] = raw_details if isinstance(raw_details, dict) else {}
        fields: dict[str, Any] = {"url": url, "status": status, "code": code, "details": details,
                                  "request_id": body.get("request_id") or response.headers.get("X-Request-Id")}
        method = response.request.method
        text = f"MC refused {method} {url} with HTTP {status}" + (f" {code}" if code else "") + f": {message}"
        if status == 401:
            return MCAuthError(text, hint="The MC token was not accepted: set ROLLBOOK_MC_TOKEN or "
                                          "ROLLBOOK_MC_TOKEN_FILE to a valid token.", **fields)
        if status == 403:
            scope = details.get("required_scope") or (WRITE_SCOPE if method != "GET" else READ_SCOPE)
            return MCAuthError(text, hint=f"The token lacks the {scope} scope: use a token that has it "
                                          "(writes need the read-write token).", **fields)
        if status == 404:
            return MCNotFound(text, hint=_NOT_FOUND_HINTS.get(str(code), "Check the URL and identifiers."), **fields)
        if status == 409:
            return MCConflict(text, hint=_CONFLICT_HINTS.get(str(code), "Re-read the release and retry."), **fields)
        if status in (400, 415, 422):
            listed = ", ".join(f"{k} ({v})" for k, v in (details.get("fields") or {}).items())
            hint = f"Fix the fields: {listed}." if listed else "Fix the request; it was not applied."
            return MCValidationError(text, hint=hint, **fields)
        if 300 <= status < 400:
            return MCProtocolError(f"MC redirected {method} {url} to {response.headers.get('Location')} "
                                   f"(HTTP {status}).", **fields,
                                   hint="A proxy or SSO is redirecting: point ROLLBOOK_MC_URL at the API itself.")
        return EvidenceError(text, hint="Unexpected MC status; see MC's logs with the request id.", **fields)


_NOT_FOUND_HINTS = {
    "release_not_found": "Check the rollout's release-id label (pod template label release-id): an unknown "
                         "release is a wiring error and the gate fails closed.",
    "policy_not_found": "Check the environment parameter: MC has no evidence policy for it.",
    "service_not_found": "Check the service name: MC does not know it.",
    "no_current_release": "MC has no current release for this service here: report the deployment first.",
}
_CONFLICT_HINTS = {
    "digest_mismatch": "The artifact digest does not match MC's release: read it with MCClient.release() "
                       "and report the digest actually deployed.",
    "release_conflict": "The release belongs to another service: check the service and release-id.",
}
