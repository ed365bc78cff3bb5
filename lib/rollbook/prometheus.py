"""A small Prometheus HTTP API client (httpx): instant and range queries, typed results, typed errors.

Only `/api/v1/query` and `/api/v1/query_range` are used, as Argo's Prometheus provider does. The
response envelope is `{"status": "success"|"error", "data": {"resultType": ..., "result": ...},
"errorType": ..., "error": ..., "warnings": [...]}`; sample values are strings (`"0.034"`, `"NaN"`,
`"+Inf"`) and become floats here. httpx errors never leave this module.

Hand-written rather than `prometheus-api-client`: that package pulls in pandas/numpy/matplotlib
pinning, uses `requests` (no injectable transport for tests) and has no typed errors or bounded retries.
"""

from __future__ import annotations

import json
import math
import time as _time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Self
from urllib.parse import urlsplit, urlunsplit

import httpx

from rollbook.errors import Retryable, RollbookError

if TYPE_CHECKING:
    from rollbook.config import Service

ResultType = Literal["vector", "matrix", "scalar", "string"]
Point = tuple[datetime, float]

# Above this many characters the query goes in a form POST body, as Prometheus' own Go client does,
# so long PromQL never hits a proxy's URL length limit.
_POST_ABOVE = 2000
_MAX_BACKOFF = 5.0
_BODY_SNIPPET = 200


# --------------------------------------------------------------------------- errors


class PrometheusError(RollbookError):
    """Prometheus refused or failed a query; names the URL (never a token) and the query."""

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        query: str | None = None,
        status: int | None = None,
        error_type: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.url = url
        self.query = query
        self.status = status
        self.error_type = error_type
        super().__init__(message, hint=hint)


class PrometheusQueryError(PrometheusError):
    """Prometheus rejected the query itself (`bad_data`, `execution`, 400/422): retrying will not help."""


class PrometheusAuthError(PrometheusError):
    """401/403 from Prometheus or the proxy in front of it."""


class PrometheusProtocolError(PrometheusError):
    """A 2xx answer that is not the API envelope (e.g. an SSO login page or a wrong base URL)."""


class PrometheusUnavailable(PrometheusError, Retryable):
    """No useful answer after bounded retries (429, 5xx, timeouts, connection errors)."""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Sample:
    """One value of an instant vector (or the single value of a scalar, with no labels)."""

    labels: Mapping[str, str]
    at: datetime
    value: float


@dataclass(frozen=True)
class Series:
    """One labelled time series of a range query; values may be NaN or +/-Inf as Prometheus sent them."""

    labels: Mapping[str, str]
    points: list[Point] = field(default_factory=list)

    def values(self) -> list[float]:
        """The values alone, in time order."""
        return [v for _, v in self.points]


@dataclass(frozen=True)
class InstantResult:
    """The answer to an instant query."""

    result_type: ResultType
    samples: tuple[Sample, ...] = ()
    series: tuple[Series, ...] = ()  # only when an instant query selects a range (`foo[5m]`)
    string: str | None = None
    warnings: tuple[str, ...] = ()

    def values(self) -> list[float]:
        """The sample values in answer order (what Argo calls `result`)."""
        return [s.value for s in self.samples]

    def argo_value(self) -> str:
        """The value as Argo stores it in a measurement: `"[0.034]"` for a vector, `"0.034"` for a scalar."""
        if self.result_type == "scalar" and self.samples:
            return format_value(self.samples[0].value)
        return "[" + ",".join(format_value(v) for v in self.values()) + "]"


def format_value(value: float) -> str:
    """A float the way Prometheus (and Go's model.SampleValue) writes it: `0.034`, `NaN`, `+Inf`."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    # Go's FormatFloat(v, 'f', -1, 64): shortest round-trip digits, never an exponent.
    text = format(Decimal(repr(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def parse_value(raw: Any) -> float:
    """A Prometheus sample value (a string such as `"0.034"`, `"NaN"`, `"+Inf"`) as a float."""
    return float(raw)  # float() accepts exactly Prometheus' spellings of NaN and +/-Inf


def _ts(raw: Any) -> datetime:
    return datetime.fromtimestamp(float(raw), tz=UTC)


# --------------------------------------------------------------------------- client


class PrometheusClient:
    """Instant and range queries against one Prometheus (or a compatible API such as Thanos/Mimir)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 2,
        transport: httpx.BaseTransport | None = None,
        backoff: float = 0.2,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = max(0, retries)
        self.backoff = backoff
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    @classmethod
    def from_config(cls, service: Service, **kwargs: Any) -> PrometheusClient:
        """Build from `Config.prometheus`: its url and optional bearer secret (resolved here, never stored)."""
        if not service.url:
            raise PrometheusError(
                "Prometheus is not configured (no prometheus.url).",
                hint="Set prometheus.url in rollbook.yaml or ROLLBOOK_PROMETHEUS_URL.",
            )
        return cls(service.url, service.secret.value(), **kwargs)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def safe_url(self) -> str:
        """The base URL without any user:password part, for messages."""
        parts = urlsplit(self.base_url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def query(self, expr: str, time: datetime | None = None) -> InstantResult:
        """Evaluate `expr` at `time` (default: Prometheus' now) — `GET /api/v1/query`."""
        params: dict[str, str] = {"query": expr}
        if time is not None:
            params["time"] = _unix(time)
        data, warnings = self._call("/api/v1/query", params, expr)
        return _instant(data, warnings, self._fail_protocol(expr))

    def query_range(
        self, expr: str, start: datetime, end: datetime, step: timedelta | float
    ) -> list[Series]:
        """Evaluate `expr` from `start` to `end` every `step` — `GET /api/v1/query_range`."""
        seconds = step.total_seconds() if isinstance(step, timedelta) else float(step)
        if seconds <= 0 or end < start:
            raise PrometheusQueryError(
                f"Bad range for query {_short(expr)!r}: start {start}, end {end}, step {seconds}s.",
                url=self.safe_url, query=expr, hint="Use start <= end and a positive step.",
            )
        params = {"query": expr, "start": _unix(start), "end": _unix(end), "step": repr(seconds)}
        data, _ = self._call("/api/v1/query_range", params, expr)
        if data.get("resultType") != "matrix":
            raise self._fail_protocol(expr)(f"resultType {data.get('resultType')!r}, expected 'matrix'")
        return _matrix(data.get("result"), self._fail_protocol(expr))

    # ------------------------------------------------------------------ transport and envelope

    def _call(self, path: str, params: dict[str, str], expr: str) -> tuple[dict[str, Any], tuple[str, ...]]:
        """Send with bounded retries; return the envelope's `data` and warnings or raise a typed error."""
        last: PrometheusError | None = None
        wait = 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                _time.sleep(min(wait, _MAX_BACKOFF))
            wait = self.backoff * 2**attempt
            try:
                response = self._send(path, params)
            except httpx.TimeoutException as e:
                last = self._unavailable(expr, f"timed out ({type(e).__name__})")
                continue
            except httpx.TransportError as e:
                last = self._unavailable(expr, f"could not be reached ({type(e).__name__}: {e})")
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last = self._from_response(response, expr)
                wait = _retry_after(response, wait)
                continue
            return self._envelope(response, expr)
        assert last is not None  # the loop ran at least once and only continues after setting it
        raise last

    def _send(self, path: str, params: dict[str, str]) -> httpx.Response:
        if len(params.get("query", "")) > _POST_ABOVE:
            return self._http.post(path, data=params)
        return self._http.get(path, params=params)

    def _envelope(self, response: httpx.Response, expr: str) -> tuple[dict[str, Any], tuple[str, ...]]:
        if not 200 <= response.status_code < 300:
            raise self._from_response(response, expr)
        body = _json(response)
        if not isinstance(body, dict) or body.get("status") != "success" or not isinstance(body.get("data"), dict):
            if isinstance(body, dict) and body.get("status") == "error":
                raise self._from_response(response, expr)
            raise self._fail_protocol(expr)(f"not the API envelope: {_snippet(response.text)!r}")
        return body["data"], tuple(str(w) for w in body.get("warnings") or ())

    def _from_response(self, response: httpx.Response, expr: str) -> PrometheusError:
        """The typed error for a non-success answer, keeping Prometheus' errorType and error text."""
        status = response.status_code
        body = _json(response)
        error_type = body.get("errorType") if isinstance(body, dict) else None
        detail = body.get("error") if isinstance(body, dict) else None
        said = f"{error_type}: {detail}" if error_type else _snippet(response.text)
        where = f"Prometheus {self.safe_url} answered {status} to query {_short(expr)!r}: {said}"
        kw: dict[str, Any] = {"url": self.safe_url, "query": expr, "status": status, "error_type": error_type}
        if status in (401, 403):
            return PrometheusAuthError(where, hint="Check the token configured as prometheus.token_env/_file.", **kw)
        if status == 429 or status >= 500:
            return PrometheusUnavailable(
                f"{where} (after {self.retries + 1} attempts)",
                hint="Prometheus is overloaded or down; try again later or check its /-/ready.", **kw,
            )
        return PrometheusQueryError(where, hint="Fix the PromQL (try it in the Prometheus UI).", **kw)

    def _unavailable(self, expr: str, what: str) -> PrometheusUnavailable:
        return PrometheusUnavailable(
            f"Prometheus {self.safe_url} {what} for query {_short(expr)!r} "
            f"(after {self.retries + 1} attempts).",
            url=self.safe_url, query=expr,
            hint="Check prometheus.url and that Prometheus is reachable from here.",
        )

    def _fail_protocol(self, expr: str) -> _ProtocolFail:
        return _ProtocolFail(self.safe_url, expr)


@dataclass(frozen=True)
class _ProtocolFail:
    """Builds the protocol error for one URL and query (so the parsers need not know either)."""

    url: str
    query: str

    def __call__(self, what: str) -> PrometheusProtocolError:
        return PrometheusProtocolError(
            f"Prometheus {self.url} answered query {_short(self.query)!r} with {what}.",
            url=self.url, query=self.query,
            hint="Check that prometheus.url points at the Prometheus API (not a UI or SSO proxy).",
        )


# --------------------------------------------------------------------------- parsing


def _instant(data: dict[str, Any], warnings: tuple[str, ...], fail: _ProtocolFail) -> InstantResult:
    """The `data` of an instant query as an InstantResult."""
    kind = data.get("resultType")
    result: Any = data.get("result")
    try:
        if kind == "vector":
            samples = tuple(
                Sample(dict(item.get("metric") or {}), _ts(item["value"][0]), parse_value(item["value"][1]))
                for item in result
            )
            return InstantResult("vector", samples=samples, warnings=warnings)
        if kind == "scalar":
            return InstantResult("scalar", samples=(Sample({}, _ts(result[0]), parse_value(result[1])),),
                                 warnings=warnings)
        if kind == "string":
            return InstantResult("string", string=str(result[1]), warnings=warnings)
        if kind == "matrix":
            return InstantResult("matrix", series=tuple(_matrix(result, fail)), warnings=warnings)
    except (TypeError, KeyError, IndexError, ValueError) as e:
        raise fail(f"a malformed {kind} result ({type(e).__name__}: {e})") from e
    raise fail(f"unknown resultType {kind!r}")


def _matrix(result: Any, fail: _ProtocolFail) -> list[Series]:
    """A matrix `result` as Series (native histograms are not supported and are skipped)."""
    try:
        return [
            Series(dict(item.get("metric") or {}), [(_ts(t), parse_value(v)) for t, v in item.get("values") or ()])
            for item in result
        ]
    except (TypeError, KeyError, IndexError, ValueError, AttributeError) as e:
        raise fail(f"a malformed matrix result ({type(e).__name__}: {e})") from e


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _unix(when: datetime) -> str:
    """A datetime as the unix seconds Prometheus accepts (naive means UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return f"{when.timestamp():.3f}"


def _retry_after(response: httpx.Response, default: float) -> float:
    """A proxy's numeric Retry-After (Prometheus itself sends none), else the default back-off."""
    raw = response.headers.get("Retry-After", "")
    return float(raw) if raw.replace(".", "", 1).isdigit() else default


def _short(expr: str, limit: int = 160) -> str:
    flat = " ".join(expr.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat[:_BODY_SNIPPET]
