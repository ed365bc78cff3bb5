"""Fault injection at the HTTP layer of every sandbox server: the real `kubernetes` client and real
`httpx` meet the fault exactly as they would meet a broken proxy or server.

A :class:`FaultPlan` is a list of :class:`Rule` s: which service (kube, mc, prometheus, slack,
pagerduty, jira, grafana, webhook, or *), method, path pattern (fnmatch, query excluded), how many
matching requests (`after` skipped first, then `count`, or every one) and with which probability; and
what happens: an HTTP status (with Retry-After / WWW-Authenticate where the real one sends them),
added latency, a hang past the client's timeout, a connection reset mid-body, a truncated body, a
200 that is not JSON, or a 200 HTML login page (an SSO proxy in front of the API).

The kube API server gets it as a layer of its one request seam (ApiServer.layers); the other servers
(plain http.server) get their handler class wrapped. `rollbook sandbox --faults FILE` loads a plan
from YAML or JSON: ``{"faults": [{"service": "kube", "path": "*/rollouts/*", "fault": "status",
"status": 503, "count": 2}]}``. Every wait is bounded and ends at once when the sandbox stops.
"""

from __future__ import annotations

import fnmatch
import json
import random
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Literal

import yaml

Service = Literal["kube", "mc", "prometheus", "slack", "pagerduty", "jira", "grafana", "webhook", "*"]
Kind = Literal["status", "latency", "hang", "reset", "truncate", "not_json", "html_login"]
SERVICES: tuple[str, ...] = ("kube", "mc", "prometheus", "slack", "pagerduty", "jira", "grafana", "webhook", "*")
KINDS: tuple[str, ...] = ("status", "latency", "hang", "reset", "truncate", "not_json", "html_login")
HANG_SECONDS = 15.0  # past every client timeout rollbook sets (kube 10 s, MC 5 s, Prometheus 10 s)
MAX_DELAY = 60.0
LOGIN_PAGE = (b"<!DOCTYPE html><html><head><title>Sign in - Corporate SSO</title></head><body>"
              b"<form method=post action=/login><input name=user><input name=password type=password>"
              b"<button>Sign in</button></form></body></html>")
# Which stand-in of the services server a path belongs to.
_SERVICE_PATHS = (("/services/", "slack"), ("/v2/enqueue", "pagerduty"), ("/rest/api/", "jira"),
                  ("/hooks/", "webhook"), ("/api/", "grafana"), ("/render/", "grafana"), ("/d/", "grafana"))


class FaultError(ValueError):
    """A fault plan that cannot be used; names the rule and the field."""


@dataclass
class Rule:
    """One fault: where it applies, how often, and what the client sees."""

    service: str = "*"
    fault: str = "status"
    method: str = "*"
    path: str = "*"
    status: int = 503
    retry_after: int | None = None
    delay: float = 0.0  # latency: added seconds; hang: how long before the connection is dropped
    after: int = 0  # let this many matching requests through first
    count: int | None = 1  # then fault this many (None: every one)
    probability: float = 1.0
    seen: int = field(default=0, compare=False)
    fired: int = field(default=0, compare=False)

    def check(self, where: str) -> Rule:
        """Refuse a rule that would not do what it says."""
        problems = []
        if self.service not in SERVICES:
            problems.append(f"service {self.service!r} is not one of {', '.join(SERVICES)}")
        if self.fault not in KINDS:
            problems.append(f"fault {self.fault!r} is not one of {', '.join(KINDS)}")
        if not (isinstance(self.status, int) and 100 <= self.status <= 599):
            problems.append(f"status {self.status!r} is not an HTTP status")
        if not (isinstance(self.delay, int | float) and 0 <= self.delay <= MAX_DELAY):
            problems.append(f"delay {self.delay!r} is not between 0 and {MAX_DELAY:g} seconds")
        if self.count is not None and not (isinstance(self.count, int) and self.count >= 1):
            problems.append(f"count {self.count!r} is not a whole number >= 1 (or null: every request)")
        if not (isinstance(self.probability, int | float) and 0 < self.probability <= 1):
            problems.append(f"probability {self.probability!r} is not in (0, 1]")
        if problems:
            raise FaultError(f"{where}: {'; '.join(problems)}")
        return self

    def matches(self, service: str, method: str, path: str) -> bool:
        """Whether a request is one this rule is about (counting aside)."""
        return (self.service in ("*", service) and self.method.upper() in ("*", method.upper())
                and fnmatch.fnmatchcase(path, self.path))

    def describe(self) -> str:
        """`kube GET */rollouts/* -> status 503 x2`, for tables and logs."""
        what = {"status": f"HTTP {self.status}" + (f" Retry-After {self.retry_after}" if self.retry_after is not None
                                                   else ""),
                "latency": f"+{self.delay:g} s", "hang": f"hang {self.delay or HANG_SECONDS:g} s"}.get(self.fault,
                                                                                                      self.fault)
        times = "every request" if self.count is None else f"x{self.count}"
        return f"{self.service} {self.method} {self.path} -> {what} ({times})"


class FaultPlan:
    """The rules of one sandbox, thread-safe; records every fault it injected."""

    def __init__(self, rules: Iterable[Rule] = (), *, seed: int = 0) -> None:
        self.rules = [r.check(f"fault rule {i + 1}") for i, r in enumerate(rules)]
        self.injected: list[tuple[str, str, str, str]] = []  # (service, method, path, fault)
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._random = random.Random(seed)

    @classmethod
    def from_dicts(cls, items: Iterable[Mapping[str, Any]], *, seed: int = 0) -> FaultPlan:
        """Rules from plain mappings (a file's `faults:` list)."""
        rules = []
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise FaultError(f"fault rule {i + 1}: must be a mapping, got {type(item).__name__}")
            unknown = sorted(set(item) - {f for f in Rule.__dataclass_fields__ if f not in ("seen", "fired")})
            if unknown:
                raise FaultError(f"fault rule {i + 1}: unknown field(s) {', '.join(unknown)}")
            rules.append(Rule(**dict(item)))
        return cls(rules, seed=seed)

    @classmethod
    def load(cls, path: str | Path) -> FaultPlan:
        """A plan from a YAML or JSON file: `{"faults": [...], "seed": 0}`."""
        p = Path(path)
        try:
            doc = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise FaultError(f"fault file {p}: cannot be read as YAML/JSON ({e})") from e
        if not isinstance(doc, dict) or not isinstance(doc.get("faults"), list):
            raise FaultError(f"fault file {p}: must hold a mapping with a `faults:` list")
        return cls.from_dicts(doc["faults"], seed=int(doc.get("seed") or 0))

    def add(self, **rule: Any) -> Rule:
        """Add one rule (the Python API for tests): ``plan.add(service="mc", fault="status", status=503)``."""
        r = Rule(**rule).check(f"fault rule {len(self.rules) + 1}")
        with self._lock:
            self.rules.append(r)
        return r

    def clear(self) -> None:
        """Remove every rule (what was injected stays recorded)."""
        with self._lock:
            self.rules.clear()

    def take(self, service: str, method: str, path: str) -> Rule | None:
        """The rule that fires for this request, if any (its counters advance)."""
        with self._lock:
            for rule in self.rules:
                if not rule.matches(service, method, path):
                    continue
                rule.seen += 1
                if rule.seen <= rule.after or (rule.count is not None and rule.fired >= rule.count):
                    continue
                if rule.probability < 1 and self._random.random() >= rule.probability:
                    continue
                rule.fired += 1
                self.injected.append((service, method, path, rule.fault))
                return rule
        return None

    def to_json(self) -> list[dict[str, Any]]:
        """The rules with their counters."""
        return [asdict(r) for r in self.rules]


# --------------------------------------------------------------------------- what the client sees


def _error_body(service: str, status: int) -> bytes:
    """An error body in the service's own shape (a Kubernetes Status, MC's error object, ...)."""
    if service == "kube":
        reasons = {401: "Unauthorized", 403: "Forbidden", 409: "Conflict", 429: "TooManyRequests",
                   500: "InternalError", 503: "ServiceUnavailable"}
        return json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": f"injected fault: HTTP {status}", "reason": reasons.get(status, "Unknown"),
                           "code": status}).encode()
    if service == "mc":
        return json.dumps({"error": "injected_fault", "message": f"injected fault: HTTP {status}",
                           "details": {"injected": True}, "request_id": "fault"}).encode()
    return json.dumps({"error": f"injected fault: HTTP {status}"}).encode()


def _send(h: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str,
          headers: Mapping[str, str] = {}, length: int | None = None) -> None:
    h.send_response(status)
    h.send_header("Content-Type", content_type)
    h.send_header("Content-Length", str(len(body) if length is None else length))
    for k, v in headers.items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(body)
    h.wfile.flush()


def _drop(h: BaseHTTPRequestHandler, *, reset: bool) -> None:
    """End the connection now: with a TCP RST (SO_LINGER 0) for a reset, else a plain close."""
    h.close_connection = True
    sock = h.connection
    try:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
    except OSError:
        pass


def inject(h: BaseHTTPRequestHandler, rule: Rule, service: str, stopping: threading.Event) -> bool:
    """Apply `rule` on the handler's connection; False when the request should then be served normally."""
    if rule.fault == "latency":
        stopping.wait(rule.delay)
        return False
    if rule.fault == "hang":  # no answer at all; the client's own timeout must end it
        stopping.wait(rule.delay or HANG_SECONDS)
        _drop(h, reset=False)
        return True
    h.close_connection = True  # whatever the fault, this connection is not reused
    if rule.delay:
        stopping.wait(rule.delay)
    if rule.fault == "status":
        headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else {}
        if rule.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="kubernetes"' if service == "kube" else 'Bearer realm="sandbox"'
        _send(h, rule.status, _error_body(service, rule.status), "application/json", headers)
    elif rule.fault == "html_login":
        _send(h, 200, LOGIN_PAGE, "text/html; charset=utf-8")
    elif rule.fault == "not_json":
        _send(h, 200, b"upstream connect error or disconnect/reset before headers", "application/json")
    elif rule.fault in ("reset", "truncate"):
        body = b'{"kind":"Rollout","apiVersion":"argoproj.io/v1alpha1","metadata":{"name":"'
        _send(h, 200, body, "application/json", length=len(body) + 4096)  # promises more than it sends
        _drop(h, reset=rule.fault == "reset")
    return True


# --------------------------------------------------------------------------- installing it


def kube_layer(plan: FaultPlan) -> Callable[[Any, Callable[[Any], None]], None]:
    """A layer of the API server's request seam (ApiServer.layers) that applies the plan."""
    def layer(ex: Any, next_: Callable[[Any], None]) -> None:
        rule = plan.take("kube", ex.method, ex.path)
        if rule is None or not inject(ex.wire, rule, "kube", plan.stopping):
            next_(ex)
    return layer


def service_of(path: str) -> str:
    """Which stand-in of the services server a path belongs to."""
    return next((name for prefix, name in _SERVICE_PATHS if path.startswith(prefix)), "webhook")


def wrap_handler(handler: type[BaseHTTPRequestHandler], plan: FaultPlan,
                 service: str | Callable[[str], str]) -> type[BaseHTTPRequestHandler]:
    """A subclass of an http.server handler that consults the plan before every request."""
    name_of = service if callable(service) else (lambda path, s=service: s)

    def guarded(method: Callable[[Any], None]) -> Callable[[Any], None]:
        def run(self: BaseHTTPRequestHandler) -> None:
            path = self.path.split("?", 1)[0]
            svc = name_of(path)
            rule = plan.take(svc, self.command, path)
            if rule is not None and rule.fault != "latency":
                length = int(self.headers.get("Content-Length") or 0)
                if 0 < length <= 1 << 20:
                    self.rfile.read(length)  # the request is read whole, as a proxy would
            if rule is None or not inject(self, rule, svc, plan.stopping):
                method(self)
        return run

    attrs = {f"do_{verb}": guarded(getattr(handler, f"do_{verb}"))
             for verb in ("GET", "POST", "PUT", "PATCH", "DELETE") if hasattr(handler, f"do_{verb}")}
    return type(f"Faulty{handler.__name__}", (handler,), attrs)


def install(sandbox: Any, plan: FaultPlan) -> None:
    """Put the plan in front of every server of a started Sandbox (kube API, MC, Prometheus, services)."""
    if sandbox.apiserver is not None:
        sandbox.apiserver.layers.insert(0, kube_layer(plan))
    for part, service in ((sandbox.mc, "mc"), (sandbox.prometheus, "prometheus"), (sandbox.services, service_of)):
        httpd = getattr(part, "_httpd", None) if part is not None else None
        if httpd is not None:
            httpd.RequestHandlerClass = wrap_handler(httpd.RequestHandlerClass, plan, service)
