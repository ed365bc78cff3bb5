"""The service's HTTP surface on the standard library's ThreadingHTTPServer.

Why the standard library: five routes, small bodies, a request rate bounded by how often canaries abort,
and every request answered from SQLite in milliseconds (the work is queued, never done in the request).
A thread per connection is plenty; an ASGI stack would add an event loop and several packages, and the
runner is synchronous anyway. prometheus_client renders /metrics.

Routes (README, "Start it from Argo"; shared/docs/interfaces.md, "serve"):
  POST /v1/argo-rollouts      bearer token; 202 queued, 200 duplicate, 400, 401, 411, 413, 429, 503
  GET  /v1/incidents          bearer token; ?status= &namespace= &rollout= &limit=
  GET  /v1/incidents/{id}     bearer token
  GET  /v1/preflight          bearer token; the last preflight report; ?refresh=1 starts a new check
  GET  /healthz               no token (kubelet probes): cluster reachable and queue answering
  GET  /metrics               no token (Prometheus scrapes): text exposition format
"""

from __future__ import annotations

import hmac
import json
import sys
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from rollbook.httpserver import HTTPServer

if TYPE_CHECKING:  # types only; none imports this module back
    from rollbook.serve.metrics import Metrics
    from rollbook.serve.preflight import PreflightWatch
    from rollbook.serve.queue import Queue
    from rollbook.serve.settings import Settings

MAX_BODY = 1 << 20  # 1 MiB: a rendered notification is ~500 bytes
REQUEST_TIMEOUT = 10.0  # seconds a client may take to send its request (a slow one must not hold a thread)
NOTIFY_PATH = "/v1/argo-rollouts"


class Service(Protocol):
    """What the handlers ask of the service (serve/service.py's Service; a Protocol so that this module does
    not import the service, which imports it)."""

    settings: Settings
    queue: Queue
    metrics: Metrics
    preflight: PreflightWatch

    def accept(self, raw: bytes) -> tuple[int, dict[str, Any], dict[str, str]]: ...

    def latency(self, seconds: float) -> None: ...

    def health(self) -> tuple[bool, dict[str, Any]]: ...


class Server(HTTPServer):
    """The listening socket, holding the service the handlers answer for."""

    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], service: Service) -> None:
        self.service = service
        super().__init__(address, Handler)


class Handler(BaseHTTPRequestHandler):
    """One request."""

    server: Server
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT
    server_version = "rollbook-serve"
    sys_version = ""

    # ------------------------------------------------------------------ plumbing

    def _send(self, status: int, body: Any, *, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        raw = body if isinstance(body, bytes) else (json.dumps(body) + "\n").encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)

    def _error(self, status: int, message: str, *, reason: str | None = None,
               headers: dict[str, str] | None = None) -> None:
        """A one-line JSON error; counted when it rejects a notification."""
        if reason and self._path() == NOTIFY_PATH:
            self.server.service.metrics.rejected.labels(reason).inc()
        if status >= 400 and self.headers.get("Content-Length") and not getattr(self, "_read", False):
            self.close_connection = True  # the unread body would be taken for the next request
        self._send(status, {"error": message}, headers=headers)

    def _path(self) -> str:
        return urlsplit(self.path).path.rstrip("/") or "/"

    def _authorised(self) -> bool:
        """Bearer token, compared in constant time."""
        given = self.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        expected = self.server.service.settings.token
        ok = hmac.compare_digest(token.strip().encode(), expected.encode())
        return scheme.lower() == "bearer" and ok

    def _deny(self) -> None:
        self._error(401, "missing or wrong bearer token", reason="unauthorized",
                    headers={"WWW-Authenticate": 'Bearer realm="rollbook"'})

    def log_message(self, format: str, *args: Any) -> None:
        """Access log on stderr, one line, never a header (the token)."""
        print(f"rollbook serve: {self.address_string()} {format % args}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ routes

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        started = time.monotonic()
        if self._path() != NOTIFY_PATH:
            return self._error(404, f"no route POST {self._path()}; notifications go to POST {NOTIFY_PATH}")
        if not self._authorised():
            return self._deny()
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            return self._error(411, "a Content-Length header is required", reason="length_required")
        if int(length) > MAX_BODY:
            return self._error(413, f"the body is {int(length)} bytes; at most {MAX_BODY} are accepted",
                               reason="too_large")
        raw = self.rfile.read(int(length))
        self._read = True
        status, body, headers = self.server.service.accept(raw)
        self._send(status, body, headers=headers)
        self.server.service.latency(time.monotonic() - started)

    def do_GET(self) -> None:  # noqa: N802
        path = self._path()
        service = self.server.service
        if path == "/healthz":
            ok, detail = service.health()
            return self._send(200 if ok else 503, detail)
        if path == "/metrics":
            return self._send(200, service.metrics.render(), content_type=service.metrics.content_type)
        if not path.startswith(("/v1/incidents", "/v1/preflight")):
            return self._error(404, f"no route GET {path}")
        if not self._authorised():
            return self._deny()
        if path == "/v1/preflight":
            if parse_qs(urlsplit(self.path).query).get("refresh", ["0"])[0] in ("1", "true"):
                service.preflight.start()
            return self._send(200, service.preflight.report())
        if path == "/v1/incidents":
            q = parse_qs(urlsplit(self.path).query)
            limit = q.get("limit", ["100"])[0]
            if not limit.isdigit() or not 1 <= int(limit) <= 1000:
                return self._error(400, "limit must be an integer from 1 to 1000")
            items = service.queue.list(status=q.get("status", [None])[0], namespace=q.get("namespace", [None])[0],
                                       rollout=q.get("rollout", [None])[0], limit=int(limit))
            return self._send(200, {"incidents": items, "count": len(items)})
        incident = unquote(path.removeprefix("/v1/incidents/"))
        found = service.queue.get(incident) if "/" not in incident else None
        if found is None:
            return self._error(404, f"no incident {incident!r}; list them with GET /v1/incidents")
        return self._send(200, found)

    def do_PUT(self) -> None:  # noqa: N802
        self._error(405, f"{self.command} is not allowed on {self._path()}", headers={"Allow": "GET, POST"})

    do_DELETE = do_PATCH = do_PUT  # noqa: N815
