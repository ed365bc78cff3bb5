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
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Self, cast, get_args

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
    PreconditionError,
)

log = logging.getLogger(__name__)

VerdictStatus = Literal["passed", "missing_evidence", "invalid_evidence", "pending"]
ItemType = Literal["junit", "sbom", "security-scan", "approval", "generic"]
ItemState = Literal["valid", "invalid", "pending"]
SlotState = Literal["valid", "invalid", "pending", "missing"]
DeploymentKind = Literal["promotion", "rollback"]

RELEASE_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
READ_SCOPE, WRITE_SCOPE = "evidence:read", "evidence:write"
MAX_BACKOFF = 8.0
MAX_BODY_IN_MESSAGE = 300


class Secret:
    """A credential whose repr and str are masked; `reveal()` is the only way to the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value, for building the Authorization header and nothing else."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> Any:  # pickling would carry the value into files and kernels
        raise TypeError("a Secret cannot be pickled")


class ReportFileError(PreconditionError):
    """A report file to attach is missing or cannot be parsed."""

    def __init__(self, message: str, *, path: Path, hint: str | None = None) -> None:
        self.path = path
        super().__init__(message, hint=hint)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Verdict:
    """MC's gate verdict for one release in one environment."""

    release_id: str
    environment: str
    ok: bool
    status: VerdictStatus
    reason: str
    service: str | None = None
    missing: tuple[str, ...] = ()
    invalid: tuple[str, ...] = ()
    policy: str | None = None
    evaluated_at: datetime | None = None
    details_url: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class EvidenceItem:
    """One evidence item; as input to `attach` only name, type and the optional fields matter."""

    name: str
    type: ItemType
    summary: Mapping[str, Any] = field(default_factory=dict)
    digest: str | None = None
    subject_digest: str | None = None
    uri: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    id: str | None = None
    release_id: str | None = None
    state: ItemState | None = None
    reason: str | None = None
    created_by: str | None = None
    created_at: datetime | None = None

    def payload(self) -> dict[str, Any]:
        """The POST body: the fields a client may set, without empty ones."""
        body: dict[str, Any] = {"name": self.name, "type": self.type, "summary": dict(self.summary),
                                "digest": self.digest, "subject_digest": self.subject_digest,
                                "uri": self.uri, "annotations": dict(self.annotations)}
        return {k: v for k, v in body.items() if v not in (None, {})}


@dataclass(frozen=True)
class Requirement:
    """One slot a policy requires (name, type and type-specific parameters such as max_critical)."""

    name: str
    type: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Slot:
    """A required slot and the latest item filling it (None when missing)."""

    name: str
    state: SlotState
    item: EvidenceItem | None


@dataclass(frozen=True)
class Listing:
    """What a release's policy requires, what is there, what is missing, what is extra."""

    release_id: str
    environment: str
    policy: str | None
    required: tuple[Requirement, ...]
    slots: tuple[Slot, ...]
    missing: tuple[str, ...]
    extra: tuple[str, ...]
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Release:
    """Release metadata."""

    release_id: str
    service: str
    artifact_digest: str
    created_at: datetime | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class AttachResult:
    """The stored item and the verdict right after attaching; `created` False when it was already there."""

    item: EvidenceItem
    verdict: Verdict
    created: bool


@dataclass(frozen=True)
class CurrentRelease:
    """The release currently deployed (per MC) and since when."""

    release_id: str
    artifact_digest: str | None
    evidence_ok: bool | None
    since: datetime | None
    kind: DeploymentKind | None


@dataclass(frozen=True)
class PreviousRelease:
    """The release that was current before, and until when."""

    release_id: str
    artifact_digest: str | None
    until: datetime | None


@dataclass(frozen=True)
class Bundle:
    """The current production evidence bundle of a service."""

    environment: str
    service: str
    current: CurrentRelease
    previous: PreviousRelease | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Deployment:
    """A recorded promotion or rollback."""

    environment: str
    service: str
    release_id: str
    artifact_digest: str
    kind: DeploymentKind
    source: str | None
    observed_at: datetime | None
    id: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


# --------------------------------------------------------------------------- parsing (the boundary)


class _Shape:
    """Typed reads from one JSON object; any mismatch is an MCProtocolError naming the field."""

    def __init__(self, obj: Any, what: str, url: str | None) -> None:
        if not isinstance(obj, dict):
            raise MCProtocolError(f"MC sent {type(obj).__name__} where {what} (a JSON object) belongs.",
                                  url=url, hint="Check that the URL points at MC's API.")
        self.obj, self.what, self.url = obj, what, url

    def _bad(self, key: str, must: str) -> MCProtocolError:
        got = repr(self.obj.get(key))[:80]
        return MCProtocolError(f"MC's {self.what} has {key}={got}; it must be {must}.", url=self.url,
                               hint="The server does not speak the evidence API contract (evidence-api.md).")

    def text(self, key: str) -> str:
        value = self.obj.get(key)
        if not isinstance(value, str):
            raise self._bad(key, "a string")
        return value

    def opt_text(self, key: str) -> str | None:
        return None if self.obj.get(key) is None else self.text(key)

    def flag(self, key: str) -> bool:
        value = self.obj.get(key)
        if not isinstance(value, bool):
            raise self._bad(key, "true or false")
        return value

    def opt_flag(self, key: str) -> bool | None:
        return None if self.obj.get(key) is None else self.flag(key)

    def choice(self, key: str, allowed: tuple[str, ...]) -> str:
        value = self.obj.get(key)
        if value not in allowed:
            raise self._bad(key, "one of " + ", ".join(allowed))
        return cast(str, value)

    def names(self, key: str) -> tuple[str, ...]:
        value = self.obj.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(key, "a list of strings")
        return tuple(value)

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.obj.get(key) or {}
        if not isinstance(value, dict):
            raise self._bad(key, "an object")
        return value

    def time(self, key: str) -> datetime | None:
        value = self.obj.get(key)
        if value is None:
            return None
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            raise self._bad(key, "an RFC 3339 timestamp") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    def sub(self, key: str, what: str) -> _Shape:
        return _Shape(self.obj.get(key), what, self.url)


def _verdict(obj: Any, url: str | None) -> Verdict:
    s = _Shape(obj, "verdict", url)
    return Verdict(
        release_id=s.text("release_id"), environment=s.text("environment"), ok=s.flag("ok"),
        status=cast(VerdictStatus, s.choice("status", get_args(VerdictStatus))), reason=s.text("reason"),
        service=s.opt_text("service"), missing=s.names("missing"), invalid=s.names("invalid"),
        policy=s.opt_text("policy"), evaluated_at=s.time("evaluated_at"), details_url=s.opt_text("details_url"),
        raw=s.obj,
    )


def _item(obj: Any, url: str | None) -> EvidenceItem:
    s = _Shape(obj, "evidence item", url)
    state = s.obj.get("state")
    return EvidenceItem(
        name=s.text("name"), type=cast(ItemType, s.choice("type", get_args(ItemType))),
        summary=s.mapping("summary"), digest=s.opt_text("digest"), subject_digest=s.opt_text("subject_digest"),
        uri=s.opt_text("uri"), annotations=s.mapping("annotations"), id=s.opt_text("id"),
        release_id=s.opt_text("release_id"),
        state=None if state is None else cast(ItemState, s.choice("state", get_args(ItemState))),
        reason=s.opt_text("reason"), created_by=s.opt_text("created_by"), created_at=s.time("created_at"),
    )


def _listing(obj: Any, url: str | None) -> Listing:
    s = _Shape(obj, "evidence listing", url)
    required = []
    for req in s.obj.get("required") or []:
        r = _Shape(req, "requirement", url)
        required.append(Requirement(r.text("name"), r.text("type"),
                                    {k: v for k, v in r.obj.items() if k not in ("name", "type")}))
    slots = []
    for raw in s.obj.get("slots") or []:
        slot = _Shape(raw, "slot", url)
        item = None if slot.obj.get("item") is None else _item(slot.obj["item"], url)
        slots.append(Slot(slot.text("name"), cast(SlotState, slot.choice("state", get_args(SlotState))), item))
    extra = tuple(e if isinstance(e, str) else _Shape(e, "extra item", url).text("name")
                  for e in s.obj.get("extra") or [])
    return Listing(s.text("release_id"), s.text("environment"), s.opt_text("policy"), tuple(required),
                   tuple(slots), s.names("missing"), extra, raw=s.obj)


def _release(obj: Any, url: str | None) -> Release:
    s = _Shape(obj, "release", url)
    return Release(s.text("release_id"), s.text("service"), s.text("artifact_digest"), s.time("created_at"),
                   raw=s.obj)


def _bundle(obj: Any, url: str | None) -> Bundle:
    s = _Shape(obj, "bundle", url)
    c = s.sub("current", "bundle's current release")
    kind = c.obj.get("kind")
    current = CurrentRelease(
        c.text("release_id"), c.opt_text("artifact_digest"), c.opt_flag("evidence_ok"), c.time("since"),
        None if kind is None else cast(DeploymentKind, c.choice("kind", get_args(DeploymentKind))))
    previous = None
    if s.obj.get("previous") is not None:
        p = s.sub("previous", "bundle's previous release")
        previous = PreviousRelease(p.text("release_id"), p.opt_text("artifact_digest"), p.time("until"))
    return Bundle(s.text("environment"), s.text("service"), current, previous, raw=s.obj)


def _deployment(obj: Any, url: str | None) -> Deployment:
    s = _Shape(obj, "deployment", url)
    return Deployment(
        environment=s.text("environment"), service=s.text("service"), release_id=s.text("release_id"),
        artifact_digest=s.text("artifact_digest"),
        kind=cast(DeploymentKind, s.choice("kind", get_args(DeploymentKind))),
        source=s.opt_text("source"), observed_at=s.time("observed_at"), id=s.opt_text("id"), raw=s.obj)


def parse_verdict(value: str) -> Verdict | None:
    """A Verdict out of an AnalysisRun web measurement value; None when it is a bare true/false/null.

    A bare boolean means the template's jsonPath (e.g. ``{$.ok}``) dropped the reason: ask MC directly.
    Anything else that is not a verdict object raises MCProtocolError.
    """
    try:
        obj = json.loads(value)
    except (TypeError, ValueError) as e:
        raise MCProtocolError(
            f"Measurement value {value[:80]!r} of metric mc-evidence-ok is not JSON.",
            hint="Ask MC for the verdict directly (MCClient.verdict) and check the template's jsonPath.",
        ) from e
    if obj is None or isinstance(obj, bool):
        return None
    if not isinstance(obj, dict):
        raise MCProtocolError(
            f"Measurement value {value[:80]!r} of metric mc-evidence-ok is not a verdict object.",
            hint="The template's jsonPath should be {$}; ask MC for the verdict directly (MCClient.verdict).")
    return _verdict(obj, None)


# --------------------------------------------------------------------------- report files


def _junit_summary(path: Path) -> dict[str, int]:
    """Test counts of a JUnit XML report (<testsuites> or a single <testsuite>)."""
    try:
        root = ET.parse(path).getroot()  # expat refuses entity-expansion bombs since 2.4.1
    except (ET.ParseError, OSError) as e:
        raise ReportFileError(f"JUnit report {path} cannot be read as XML: {e}.", path=path,
                              hint="Attach the junit XML your CI produced (e.g. report.xml).") from e
    if root.tag not in ("testsuites", "testsuite"):
        raise ReportFileError(f"{path} is XML but not a JUnit report (root <{root.tag}>).", path=path,
                              hint="Expected <testsuites> or <testsuite> at the top.")
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {"total": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for key, value in _suite_counts(suite).items():
            counts[key] += value
    return counts


def _suite_counts(suite: ET.Element) -> dict[str, int]:
    """A suite's own attributes when present, else a count of its test cases' outcomes."""
    cases = suite.findall("testcase")
    counted = {"total": len(cases),
               "failures": sum(1 for c in cases if c.find("failure") is not None),
               "errors": sum(1 for c in cases if c.find("error") is not None),
               "skipped": sum(1 for c in cases if c.find("skipped") is not None)}
    attrs = {"total": "tests", "failures": "failures", "errors": "errors", "skipped": "skipped"}
    out = {}
    for key, attr in attrs.items():
        raw = suite.get(attr)
        out[key] = int(raw) if raw is not None and raw.strip().isdigit() else counted[key]
    return out


def _json_summary(path: Path) -> dict[str, Any]:
    """A JSON report's `summary` object, else its top-level scalar fields."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ReportFileError(f"Report {path} cannot be read as JSON: {e}.", path=path) from e
    if not isinstance(data, dict):
        raise ReportFileError(f"Report {path} must hold a JSON object, not {type(data).__name__}.", path=path)
    if isinstance(data.get("summary"), dict):
        return dict(data["summary"])
    return {k: v for k, v in data.items() if isinstance(v, (int, float, bool)) or
            (isinstance(v, str) and len(v) <= 200)}


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


def _token_from_env() -> Secret:
    """The MC token from ROLLBOOK_MC_TOKEN, else the file named by ROLLBOOK_MC_TOKEN_FILE."""
    value = os.environ.get("ROLLBOOK_MC_TOKEN", "").strip()
    if value:
        return Secret(value)
    file = os.environ.get("ROLLBOOK_MC_TOKEN_FILE", "").strip()
    if not file:
        raise ConfigError("No MC token: neither ROLLBOOK_MC_TOKEN nor ROLLBOOK_MC_TOKEN_FILE is set.",
                          hint="Export one of them (the sandbox's env.sh sets ROLLBOOK_MC_TOKEN_FILE).")
    path = Path(file).expanduser()
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(f"ROLLBOOK_MC_TOKEN_FILE points at {path}, which cannot be read ({e.strerror}).",
                          hint="Fix the path or export ROLLBOOK_MC_TOKEN instead.") from None
    if not value:
        raise ConfigError(f"ROLLBOOK_MC_TOKEN_FILE points at {path}, which is empty.",
                          hint="Write the MC token into it or export ROLLBOOK_MC_TOKEN instead.")
    return Secret(value)


def evidence_from_file(path: str | Path, name: str, type: ItemType | None = None, *,
                       subject_digest: str | None = None, uri: str | None = None,
                       annotations: Mapping[str, str] | None = None) -> EvidenceItem:
    """An EvidenceItem from a junit XML or JSON report (type from the suffix when not given)."""
    file = Path(path)
    if not file.is_file():
        raise ReportFileError(f"Report file {file} does not exist.", path=file,
                              hint="Check the report path parameter.")
    kind: ItemType = type or ("junit" if file.suffix.lower() == ".xml" else "generic")
    summary: dict[str, Any] = _junit_summary(file) if kind == "junit" else _json_summary(file)
    digest = "sha256:" + hashlib.sha256(file.read_bytes()).hexdigest()
    return EvidenceItem(name=name, type=kind, summary=summary, digest=digest, subject_digest=subject_digest,
                        uri=uri, annotations=dict(annotations or {}))
