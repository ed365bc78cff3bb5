"""A Prometheus stand-in: the query API over canned series, matched to queries by substrings.

It cannot run PromQL, so a scenario says which series answer which query. `prometheus.yaml` beside
the scenario's YAML::

    series:
      - match: ['ig-error-rate', 'rollouts_pod_template_hash="7c9d8f6b5"']
        labels: {rollouts_pod_template_hash: "7c9d8f6b5"}
        values: {start: "-30m", step: 60, points: [0.001, 0.002, 0.031, 0.034, 0.036]}
      - match: ['ig-error-rate', '"6d4f8b7c9"']
        values: {samples: [["2026-11-26T10:00:00Z", 0.002], [1795000000, "NaN"], ["-1m", "+Inf"]]}
      - match: ['scalar(']
        type: scalar                # answer instant queries with a scalar instead of a vector
        values: {start: "-5m", step: 60, points: [1]}
      - match: ['bad_query']
        error: {status: 400, errorType: bad_data, error: 'parse error: unexpected "}"'}

- `match`: every string must occur in the query; whitespace is ignored on both sides. All matching
  entries answer (one series each), in file order. No match → an empty result, as Prometheus gives.
- `labels`: the series' labels (`__name__` included if you want one).
- `values`: either `{start, step, points}` (start relative to the server's `now` like `-30m`, `-90s`,
  `-2h`, or absolute RFC 3339 / unix seconds; step in seconds or `1m`) or `{samples: [[time, value]]}`
  with the same time forms. Values are numbers or Prometheus' strings `NaN`, `+Inf`, `-Inf`.
- `type`: `vector` (default) or `scalar` (instant queries only; range queries always give a matrix).
- `error`: answer matching queries with the error envelope `{"status": "error", ...}` and that status.

Evaluation: an instant query at `time` (default now) returns each series' last point at or before
`time` (no staleness window: canned data is sparse). A range query returns, for each step
`start + k*step <= end`, the last point at or before it and at most `lookback` old (5 min, Prometheus'
default, or the series' own step when larger); series with no point in range are left out.

Routes: `GET|POST /api/v1/query`, `GET|POST /api/v1/query_range` (form bodies), `GET /-/ready`,
`GET /-/healthy`. With `token`, the API routes need `Authorization: Bearer <token>` (401 otherwise,
as a proxy in front of Prometheus answers). `fail_next(status, times)` makes the next answers fail
(e.g. 503) to exercise client retries.

`spec_from_runs(analysisruns, rollout)` builds a spec from what Argo measured, so scenarios without a
`prometheus.yaml` still answer the canary queries with the values the runs recorded.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import yaml

from rollbook import slo
from rollbook.errors import ConfigError
from rollbook.httpserver import HTTPServer
from rollbook.prometheus import format_value

SPEC_FILE = "prometheus.yaml"
LOOKBACK = 300.0
_DURATION = re.compile(r"^(?P<sign>[-+]?)(?P<num>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h|d|w)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}


@dataclass(frozen=True)
class RecordedRequest:
    """What the stand-in received (the Authorization header reduced to whether it was right)."""

    method: str
    path: str
    params: dict[str, str]
    authorized: bool


@dataclass(frozen=True)
class _Series:
    match: tuple[str, ...]
    labels: dict[str, str]
    points: tuple[tuple[float, float], ...]  # (unix seconds, value), sorted
    kind: str
    step: float
    error: dict[str, Any] | None


class _QueryFailed(Exception):
    """An API error to send as Prometheus' error envelope."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message


# --------------------------------------------------------------------------- spec


def load_prometheus_spec(scenario_dir: str | Path) -> dict[str, Any] | None:
    """The scenario's `prometheus.yaml` as a dict, or None when the scenario has none."""
    path = Path(scenario_dir) / SPEC_FILE
    if not path.is_file():
        return None
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"Prometheus spec {path} is not valid YAML: {e}") from e
    if not isinstance(spec, dict) or not isinstance(spec.get("series", []), list):
        raise ConfigError(f"Prometheus spec {path} must be a mapping with a 'series' list.",
                          hint="See the docstring of rollbook.sandbox.prometheus for the format.")
    return spec


def spec_from_runs(
    analysisruns: list[dict[str, Any]], rollout: dict[str, Any] | None = None, *, shift_to: datetime | None = None
) -> dict[str, Any]:
    """A spec serving, for each Prometheus metric of the runs, the values Argo measured at their times.

    Only the canary queries are served (Argo never measured the stable pods, and inventing values would
    fake evidence). `shift_to` moves all points so the newest lands there (for scenarios whose YAML
    carries old timestamps but should look recent).
    """
    merged: dict[str, dict[float, list[float]]] = {}
    hashes: dict[str, str | None] = {}
    for run in analysisruns:
        canary_hash, _ = slo.pod_hashes(run, rollout)
        for name in slo.prometheus_metric_names(run):
            resolved = slo.resolve_query(run, name)
            result = slo.metric_result(run, name)
            if resolved is None or result is None:
                continue
            points = merged.setdefault(resolved.query, {})
            hashes[resolved.query] = canary_hash
            for m in result.get("measurements") or ():
                values = slo.parse_measurement(m.get("value"))
                at = slo.parse_time(m.get("finishedAt") or m.get("startedAt"))
                if values and at is not None:
                    points[at.timestamp()] = values
    if shift_to is not None:
        merged = _shifted(merged, shift_to.timestamp())
    return {"series": [entry for q, pts in merged.items() for entry in _entries(q, pts, hashes.get(q))]}


def _shifted(merged: dict[str, dict[float, list[float]]], newest: float) -> dict[str, dict[float, list[float]]]:
    """Every point moved by the same offset so that the newest one is at `newest`."""
    latest = max((t for pts in merged.values() for t in pts), default=newest)
    return {q: {t + newest - latest: v for t, v in pts.items()} for q, pts in merged.items()}


def _entries(query: str, points: dict[float, list[float]], canary_hash: str | None) -> list[dict[str, Any]]:
    """One series per vector element the query returned (Argo keeps `[a,b]` as one measurement)."""
    width = max((len(v) for v in points.values()), default=0)
    labels = {"rollouts_pod_template_hash": canary_hash} if canary_hash else {}
    return [
        {"match": [query], "labels": {**labels, **({"series": str(i)} if width > 1 else {})},
         "values": {"samples": [[t, format_value(v[i])] for t, v in sorted(points.items()) if len(v) > i]}}
        for i in range(width)
    ]


def _compile(spec: dict[str, Any], now: float) -> list[_Series]:
    """Validate the spec and turn every entry into absolute, sorted points."""
    compiled = []
    for i, entry in enumerate(spec.get("series") or ()):
        where = f"prometheus spec series[{i}]"
        if not isinstance(entry, dict) or not entry.get("match"):
            raise ConfigError(f"{where} needs a non-empty 'match' list.")
        match = entry["match"] if isinstance(entry["match"], list) else [entry["match"]]
        values = entry.get("values") or {}
        try:
            compiled.append(_entry(entry, match, values, now, where))
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{where} is not valid: {e}",
                              hint="See the docstring of rollbook.sandbox.prometheus for the format.") from e
    return compiled


def _entry(entry: dict[str, Any], match: list[Any], values: Any, now: float, where: str) -> _Series:
    """One validated series entry."""
    return _Series(
        match=tuple(_squash(str(m)) for m in match),
        labels={str(k): str(v) for k, v in (entry.get("labels") or {}).items()},
        points=tuple(sorted(_points(values, now, where))),
        kind=str(entry.get("type", "vector")),
        step=_seconds(values.get("step", 0)) if isinstance(values, dict) else 0.0,
        error=entry.get("error"),
    )


def _points(values: Any, now: float, where: str) -> list[tuple[float, float]]:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}.values must be a mapping ({{start, step, points}} or {{samples}}).")
    if "samples" in values:
        return [(_when(t, now), float(v)) for t, v in values["samples"]]
    if values.get("points") is None:
        return []
    start, step = _when(values.get("start", "-30m"), now), _seconds(values.get("step", 60))
    return [(start + k * step, float(v)) for k, v in enumerate(values["points"])]


def _when(raw: Any, now: float) -> float:
    """Unix seconds from a relative duration (`-30m`), RFC 3339 text, a datetime or unix seconds."""
    if isinstance(raw, datetime):
        return (raw if raw.tzinfo else raw.replace(tzinfo=UTC)).timestamp()
    if isinstance(raw, int | float):
        return float(raw)
    text = str(raw).strip()
    if text.startswith(("-", "+")) and _DURATION.match(text):
        return now + _seconds(text)
    try:
        return float(text)
    except ValueError:
        return datetime.fromisoformat(text).timestamp()


def _seconds(raw: Any) -> float:
    """A step or offset: seconds as a number, or a Prometheus duration such as `1m`, `-30m`, `90s`."""
    if isinstance(raw, int | float):
        return float(raw)
    m = _DURATION.match(str(raw).strip())
    if not m:
        raise ValueError(f'cannot parse "{raw}" to a valid duration')
    value = float(m.group("num")) * _UNITS[m.group("unit")]
    return -value if m.group("sign") == "-" else value


def _squash(text: str) -> str:
    return "".join(text.split())


# --------------------------------------------------------------------------- evaluation


class _Engine:
    """Matches queries to canned series and evaluates them like Prometheus' instant/range API."""

    def __init__(self, series: list[_Series], fixed_now: float | None) -> None:
        self.series, self.fixed_now = series, fixed_now

    def clock(self) -> float:
        """The evaluation time when a request gives none: the injected `now`, else the wall clock."""
        return self.fixed_now if self.fixed_now is not None else time.time()

    def matching(self, query: str) -> list[_Series]:
        flat = _squash(query)
        found = [s for s in self.series if all(m in flat for m in s.match)]
        for s in found:
            if s.error:
                raise _QueryFailed(int(s.error.get("status", 422)), str(s.error.get("errorType", "execution")),
                                   str(s.error.get("error", "query failed")))
        return found

    def instant(self, query: str, at: float) -> dict[str, Any]:
        found = self.matching(query)
        if found and found[0].kind == "scalar":
            value = _last(found[0].points, at, math.inf)
            return {"resultType": "scalar", "result": [at, format_value(math.nan if value is None else value)]}
        result = []
        for s in found:
            value = _last(s.points, at, math.inf)
            if value is not None:
                result.append({"metric": s.labels, "value": [at, format_value(value)]})
        return {"resultType": "vector", "result": result}

    def range(self, query: str, start: float, end: float, step: float) -> dict[str, Any]:
        if step <= 0:
            raise _QueryFailed(400, "bad_data", "zero or negative query resolution step widths are not accepted. "
                               "Try a positive integer")
        if end < start:
            raise _QueryFailed(400, "bad_data", "end timestamp must not be before start time")
        if (end - start) / step > 11000:
            raise _QueryFailed(400, "bad_data", "exceeded maximum resolution of 11,000 points per timeseries. "
                               "Try decreasing the query resolution (?step=XX)")
        result = []
        for s in self.matching(query):
            lookback = max(LOOKBACK, s.step)
            grid = (start + k * step for k in range(int((end - start) // step) + 1))
            values = [[t, format_value(v)] for t in grid if (v := _last(s.points, t, lookback)) is not None]
            if values:
                result.append({"metric": s.labels, "values": values})
        return {"resultType": "matrix", "result": result}


def _last(points: tuple[tuple[float, float], ...], at: float, lookback: float) -> float | None:
    """The value of the last point at or before `at`, if it is at most `lookback` seconds old."""
    chosen = None
    for t, v in points:
        if t > at:
            break
        chosen = (t, v)
    if chosen is None or at - chosen[0] > lookback:
        return None
    return chosen[1]


# --------------------------------------------------------------------------- HTTP


class PrometheusServer:
    """The stand-in on 127.0.0.1; `start()` returns its base URL."""

    def __init__(self, series_spec: dict[str, Any] | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = None, now: datetime | None = None) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ConfigError(f"The Prometheus stand-in serves loopback only, not {host!r}.")
        self.now = (now or datetime.now(UTC)).timestamp()  # relative times in the spec count from here
        self.engine = _Engine(_compile(series_spec or {}, self.now), self.now if now else None)
        self.token = token
        self.requests: list[RecordedRequest] = []
        self._faults: list[int] = []
        self._lock = threading.Lock()
        self._address = (host, port)
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL (after `start()`)."""
        if self._httpd is None:
            raise RuntimeError("PrometheusServer is not started.")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> str:
        """Listen and serve in a daemon thread; return the base URL."""
        self._httpd = HTTPServer(self._address, _handler_for(self))
        # A short poll interval makes stop() take milliseconds instead of serve_forever's default 0.5 s.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="prometheus-standin", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(self, status: int = 503, times: int = 1) -> None:
        """Answer the next `times` API requests with `status` (Prometheus' own error envelope)."""
        with self._lock:
            self._faults.extend([status] * times)

    def _take_fault(self) -> int | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None


def _handler_for(server: PrometheusServer) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to one server (http.server wants a class)."""

    class Handler(_Handler):
        owner = server

    return Handler


class _Handler(BaseHTTPRequestHandler):
    owner: PrometheusServer
    protocol_version = "HTTP/1.1"
    server_version = "Prometheus-standin/0.1"

    def log_message(self, format: str, *args: Any) -> None:  # the base class's parameter name
        """Quiet: tests read `requests` instead of stderr."""

    def do_GET(self) -> None:  # http.server's naming
        self._route("GET", b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._route("POST", self.rfile.read(length) if length else b"")

    def _route(self, method: str, body: bytes) -> None:
        parts = urlsplit(self.path)
        if parts.path in ("/-/ready", "/-/healthy"):
            word = "Ready" if parts.path == "/-/ready" else "Healthy"
            return self._text(200, f"Prometheus Server is {word}.\n")
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        ctype = self.headers.get("Content-Type", "")
        if body and ctype.startswith("application/x-www-form-urlencoded"):
            params.update({k: v[-1] for k, v in parse_qs(body.decode()).items()})
        token = self.owner.token
        authorized = not token or self.headers.get("Authorization") == f"Bearer {token}"
        self.owner.requests.append(RecordedRequest(method, parts.path, params, authorized))
        if parts.path not in ("/api/v1/query", "/api/v1/query_range"):
            return self._text(404, "404 page not found\n")
        if not authorized:
            return self._text(401, "Unauthorized\n")
        if (status := self.owner._take_fault()) is not None:
            return self._json(status, {"status": "error", "errorType": "unavailable",
                                       "error": f"injected fault: {status}"})
        try:
            data = self._evaluate(parts.path, params)
        except _QueryFailed as e:
            return self._json(e.status, {"status": "error", "errorType": e.error_type, "error": e.message})
        self._json(200, {"status": "success", "data": data})

    def _evaluate(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        query = params.get("query")
        if not query:
            raise _QueryFailed(400, "bad_data", 'invalid parameter "query": no query given')
        engine = self.owner.engine
        if path == "/api/v1/query":
            return engine.instant(query, _param_time(params, "time", engine.clock()))
        missing = [k for k in ("start", "end", "step") if k not in params]
        if missing:
            raise _QueryFailed(400, "bad_data", f'invalid parameter "{missing[0]}": missing')
        try:
            step = _seconds(params["step"])
        except ValueError as e:
            raise _QueryFailed(400, "bad_data", f'invalid parameter "step": {e}') from e
        now = engine.clock()
        return engine.range(query, _param_time(params, "start", now), _param_time(params, "end", now), step)

    def _json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, "application/json", json.dumps(body).encode())

    def _text(self, status: int, text: str) -> None:
        self._send(status, "text/plain; charset=utf-8", text.encode())

    def _send(self, status: int, ctype: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _param_time(params: dict[str, str], key: str, now: float) -> float:
    """A time parameter as Prometheus reads it: unix seconds or RFC 3339; absent means now."""
    raw = params.get(key)
    if raw is None:
        return now
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(raw).timestamp()
    except ValueError:
        raise _QueryFailed(400, "bad_data", f'invalid parameter "{key}": cannot parse "{raw}" to a valid timestamp') from None

