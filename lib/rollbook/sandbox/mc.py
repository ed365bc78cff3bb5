"""The Mission Control (MC) stand-in: the evidence API of evidence-api.md over HTTP on 127.0.0.1.

State has the shape of a scenario's ``mc.yaml``; verdicts are evaluated at read time with the
stand-in validity rules, so attaching a missing report flips the gate at once. The standard
library's threading HTTP server is enough (and, unlike asyncio, cannot deadlock a synchronous client
running in the same process). Admin routes for tests (reset, fault injection, request log) exist
only with ``admin=True``.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from typing import Any, Self
from urllib.parse import parse_qsl, unquote, urlsplit

from rollbook.httpserver import HTTPServer
from rollbook.sandbox.mcfaults import (
    FAULT_CODES,
    Fault,
    RecordedRequest,
)
from rollbook.sandbox.mcrules import (
    DNS_LABEL_RE,
    LOGIN_PAGE,
    MAX_BODY,
    READ_SCOPE,
    RELEASE_ID_RE,
    WRITE_SCOPE,
    MCAPIError,
    evaluate_item,
    fake_digest,
    rfc3339,
    utcnow,
    verdict_reason,
)
from rollbook.sandbox.mcstate import (
    MCState,
)

log = logging.getLogger(__name__)
Json = dict[str, Any]


# --------------------------------------------------------------------------- HTTP


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]
    body: bytes
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    scope: str | None = None


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _json_reply(status: int, obj: Any, **headers: str) -> _Reply:
    return _Reply(status, json.dumps(obj).encode(), headers=dict(headers))


_SEG = "([^/]+)"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"^/health$"), "_health"),
    ("GET", re.compile(rf"^/api/v1/releases/{_SEG}$"), "_get_release"),
    ("GET", re.compile(rf"^/api/v1/releases/{_SEG}/evidence-status$"), "_get_verdict"),
    ("GET", re.compile(rf"^/api/v1/releases/{_SEG}/evidence$"), "_get_listing"),
    ("POST", re.compile(rf"^/api/v1/releases/{_SEG}/evidence$"), "_post_evidence"),
    ("GET", re.compile(rf"^/api/v1/environments/{_SEG}/services/{_SEG}/current$"), "_get_current"),
    ("POST", re.compile(rf"^/api/v1/environments/{_SEG}/deployments$"), "_post_deployment"),
]
_ADMIN_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"^/admin/reset$"), "_admin_reset"),
    ("POST", re.compile(r"^/admin/faults$"), "_admin_add_fault"),
    ("DELETE", re.compile(r"^/admin/faults$"), "_admin_clear_faults"),
    ("GET", re.compile(r"^/admin/requests$"), "_admin_requests"),
    ("DELETE", re.compile(r"^/admin/requests$"), "_admin_clear_requests"),
]


class _Handler(BaseHTTPRequestHandler):
    """Reads a request, hands it to the MCServer, writes the reply; nothing else."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else small replies wait ~40 ms for a delayed ACK
    server: _HTTPServer

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        raw_length = self.headers.get("Content-Length") or "0"
        length = int(raw_length) if raw_length.isdigit() else -1
        if 0 <= length <= MAX_BODY:
            request = _Request(self.command, parts.path, dict(parse_qsl(parts.query)),
                               {k.lower(): v for k, v in self.headers.items()},
                               self.rfile.read(length) if length else b"")
            reply = self.server.mc.handle(request)
        else:  # unread body: the connection cannot be reused
            self.close_connection = True
            reply = _json_reply(400, {"error": "bad_request", "details": {"content_length": raw_length},
                                      "message": f"Content-Length must be an integer up to {MAX_BODY} bytes",
                                      "request_id": uuid.uuid4().hex[:16]})
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("mc stand-in: " + format, *args)


class _HTTPServer(HTTPServer):
    block_on_close = False
    mc: MCServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (timeout fault) is expected here, not a traceback on stderr."""
        # socketserver calls this inside its except block, so exc_info is the aborted connection's error
        log.debug("MC stand-in: connection from %s ended abruptly", client_address, exc_info=True)  # noqa: LOG014


def _content_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


def _json_body(req: _Request) -> Any:
    """The parsed JSON body, or 415 (not JSON) / 400 (unparsable)."""
    ctype = _content_type(req.headers)
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise MCAPIError(415, "unsupported_media_type",
                         f"send Content-Type: application/json (got {ctype or 'none'})",
                         {"content_type": ctype or None})
    try:
        return json.loads(req.body or b"null")
    except (ValueError, UnicodeDecodeError) as e:
        raise MCAPIError(400, "bad_request", f"request body is not valid JSON: {e}") from e


def _path_id(raw: str, rx: re.Pattern[str], what: str) -> str:
    value = unquote(raw)
    if not rx.match(value):
        raise MCAPIError(400, "bad_request", f"{what} {value[:80]!r} is not valid (must match {rx.pattern})",
                         {what.replace(" ", "_"): value[:80]})
    return value


class MCServer:
    """The MC stand-in: HTTP on 127.0.0.1, thread-safe accessors for tests, admin routes on request."""

    def __init__(self, state: Mapping[str, Any], *, read_token: str, write_token: str,
                 host: str = "127.0.0.1", port: int = 0, admin: bool = False,
                 clock: Callable[[], datetime] = utcnow) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"MC stand-in binds to loopback only, not {host!r}; use 127.0.0.1")
        if not read_token or not write_token or read_token == write_token:
            raise ValueError("MC stand-in needs two different non-empty tokens (read, read-write)")
        self._initial = copy.deepcopy(dict(state))
        self._tokens = {read_token: READ_SCOPE, write_token: WRITE_SCOPE}
        self._host, self._port, self.admin, self._clock = host, port, admin, clock
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._url: str | None = None
        self._loaded_at = rfc3339(clock())  # kept, so a reset gives back exactly the initial state
        self._data = self._fresh_state()
        self._faults: list[Fault] = []
        self._log: list[RecordedRequest] = []
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _fresh_state(self) -> MCState:
        return MCState(self._initial, clock=self._clock, base_url=lambda: self._url, loaded_at=self._loaded_at)

    # ---- lifecycle

    def start(self) -> str:
        """Bind and serve in a daemon thread; returns http://127.0.0.1:PORT."""
        if self._httpd is not None:
            raise RuntimeError(f"MC stand-in already running at {self._url}")
        self._stopping.clear()
        httpd = _HTTPServer((self._host, self._port), _Handler)
        httpd.mc = self
        self._httpd = httpd
        self._url = f"http://{self._host}:{httpd.server_address[1]}"
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="mc-stand-in", daemon=True)
        self._thread.start()
        return self._url

    def stop(self) -> None:
        """Stop serving (wakes handlers sleeping in a delay fault) and release the port."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str | None:
        """The base URL once started."""
        return self._url

    # ---- accessors for tests and the sandbox (all under the lock)

    def verdict(self, release_id: str, environment: str = "production") -> Json:
        """The verdict GET evidence-status would answer now (MCAPIError for 404s)."""
        with self._lock:
            return self._data.verdict(release_id, environment)

    def current(self, env: str, service: str) -> Json:
        """The bundle GET .../current would answer now (MCAPIError for 404s)."""
        with self._lock:
            return self._data.bundle(env, service)

    @property
    def state(self) -> Json:
        """A deep copy of the whole state (mc.yaml shape plus the deployment log)."""
        with self._lock:
            return self._data.snapshot()

    @property
    def requests(self) -> list[RecordedRequest]:
        """What the stand-in received so far (tokens masked), oldest first."""
        with self._lock:
            return list(self._log)

    def reset(self) -> None:
        """Back to the initial state; faults cleared (the request log is kept)."""
        with self._lock:
            self._data = self._fresh_state()
            self._faults.clear()

    def add_fault(self, fault: Fault) -> None:
        """Queue a fault (the same as POST /admin/faults)."""
        with self._lock:
            self._faults.append(fault)

    # ---- request handling

    def handle(self, req: _Request) -> _Reply:
        """Answer one request: faults first (a proxy is in front of auth), then auth, then the route."""
        try:
            reply = self._apply_fault(req) or self._route(req)
        except MCAPIError as e:
            reply = _json_reply(e.status, {"error": e.code, "message": e.message, "details": e.details,
                                           "request_id": req.request_id}, **e.headers)
        except Exception:  # a stand-in bug must still answer like MC does, and be visible in the log
            log.exception("MC stand-in failed on %s %s", req.method, req.path)
            reply = _json_reply(500, {"error": "internal_error", "message": "stand-in failure, see its log",
                                      "details": {}, "request_id": req.request_id})
        reply.headers["X-Request-Id"] = req.request_id
        if req.path.startswith("/api/"):
            reply.headers["Cache-Control"] = "no-store"
        if not req.path.startswith("/admin/"):
            self._record(req, reply.status)
        return reply

    def _record(self, req: _Request, status: int) -> None:
        auth = req.headers.get("authorization")
        masked = (auth.split(" ", 1)[0] + " ***") if auth else None
        entry = RecordedRequest(req.method, req.path, dict(req.query), _content_type(req.headers) or None,
                                req.body, masked, req.scope, req.headers.get("idempotency-key"), status,
                                req.request_id, self._data.now())
        with self._lock:
            self._log.append(entry)

    def _take_fault(self, path: str) -> Fault | None:
        if path.startswith("/admin/"):
            return None
        with self._lock:
            for fault in self._faults:
                if path.startswith(fault.path_prefix):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _apply_fault(self, req: _Request) -> _Reply | None:
        fault = self._take_fault(req.path)
        if fault is None:
            return None
        if fault.delay:
            self._stopping.wait(fault.delay)  # outside the lock; stop() cuts it short
        if fault.html:
            return _Reply(200, LOGIN_PAGE.encode(), content_type="text/html; charset=utf-8")
        if fault.status is None:
            return None
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        if fault.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="mission-control"'
        code = FAULT_CODES.get(fault.status, "fault")
        return _json_reply(fault.status, {"error": code, "message": f"injected fault: HTTP {fault.status}",
                                          "details": {"injected": True}, "request_id": req.request_id},
                           **headers)

    def _route(self, req: _Request) -> _Reply:
        routes = _ROUTES + (_ADMIN_ROUTES if self.admin else [])
        if req.path.startswith("/api/"):
            req.scope = self._authenticate(req)
        allowed = []
        for method, rx, name in routes:
            match = rx.match(req.path)
            if match and method == req.method:
                handler: Callable[..., _Reply] = getattr(self, name)
                return handler(req, *match.groups())
            if match:
                allowed.append(method)
        if allowed:
            raise MCAPIError(405, "method_not_allowed", f"{req.method} is not allowed on {req.path}",
                             {"allowed": allowed}, {"Allow": ", ".join(allowed)})
        raise MCAPIError(404, "not_found", f"no route for {req.method} {req.path}", {"path": req.path})

    def _authenticate(self, req: _Request) -> str:
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise MCAPIError(401, "unauthorized", "missing bearer token: send Authorization: Bearer <token>",
                             {}, {"WWW-Authenticate": 'Bearer realm="mission-control"'})
        for known, scope in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.strip().encode()):
                if req.method != "GET" and scope != WRITE_SCOPE:
                    raise MCAPIError(403, "forbidden", f"this token lacks the {WRITE_SCOPE} scope",
                                     {"required_scope": WRITE_SCOPE, "token_scopes": [READ_SCOPE]})
                return scope
        raise MCAPIError(401, "unauthorized", "the bearer token is not valid (never echoed here)", {},
                         {"WWW-Authenticate": 'Bearer realm="mission-control", error="invalid_token"'})

    # ---- routes

    def _environment(self, req: _Request) -> str:
        return _path_id(req.query.get("environment") or "production", DNS_LABEL_RE, "environment")

    def _health(self, req: _Request) -> _Reply:
        return _json_reply(200, {"status": "ok"})

    def _get_release(self, req: _Request, rid: str) -> _Reply:
        with self._lock:
            return _json_reply(200, self._data.release(_path_id(rid, RELEASE_ID_RE, "release id")))

    def _get_verdict(self, req: _Request, rid: str) -> _Reply:
        rid, env = _path_id(rid, RELEASE_ID_RE, "release id"), self._environment(req)
        return _json_reply(200, self.verdict(rid, env))

    def _get_listing(self, req: _Request, rid: str) -> _Reply:
        rid, env = _path_id(rid, RELEASE_ID_RE, "release id"), self._environment(req)
        with self._lock:
            return _json_reply(200, self._data.listing(rid, env))

    def _post_evidence(self, req: _Request, rid: str) -> _Reply:
        rid, env = _path_id(rid, RELEASE_ID_RE, "release id"), self._environment(req)
        body = _json_body(req)
        with self._lock:
            status, result = self._data.attach(rid, body, env, "mc-write-token")
        return _json_reply(status, result)

    def _get_current(self, req: _Request, env: str, service: str) -> _Reply:
        env, service = _path_id(env, DNS_LABEL_RE, "environment"), _path_id(service, DNS_LABEL_RE, "service")
        return _json_reply(200, self.current(env, service))

    def _post_deployment(self, req: _Request, env: str) -> _Reply:
        env = _path_id(env, DNS_LABEL_RE, "environment")
        body = _json_body(req)
        key = req.headers.get("idempotency-key")
        fingerprint = hashlib.sha256(req.body).hexdigest()
        with self._lock:
            if key and (req.path, key) in self._data.replays:  # a retried report must not move the pointer twice
                seen, status, result = self._data.replays[(req.path, key)]
                if seen != fingerprint:
                    raise MCAPIError(422, "idempotency_key_reused",
                                     "this Idempotency-Key was used with a different body", {"key": key})
                return _json_reply(status, result)
            result = self._data.deploy(env, body)
            if key:
                self._data.replays[(req.path, key)] = (fingerprint, 201, result)
        return _json_reply(201, result)

    def _admin_reset(self, req: _Request) -> _Reply:
        self.reset()
        return _json_reply(200, {"status": "reset"})

    def _admin_add_fault(self, req: _Request) -> _Reply:
        fault = Fault.from_json(_json_body(req))
        self.add_fault(fault)
        return _json_reply(201, {"fault": asdict(fault)})

    def _admin_clear_faults(self, req: _Request) -> _Reply:
        with self._lock:
            self._faults.clear()
        return _json_reply(200, {"faults": []})

    def _admin_requests(self, req: _Request) -> _Reply:
        return _json_reply(200, {"requests": [r.to_json() for r in self.requests]})

    def _admin_clear_requests(self, req: _Request) -> _Reply:
        with self._lock:
            self._log.clear()
        return _json_reply(200, {"requests": []})


__all__ = [  # names others import from here; the parts live in mcrules, mcstate and mcfaults
    "READ_SCOPE", "WRITE_SCOPE", "Fault", "MCAPIError", "MCServer", "MCState", "RecordedRequest", "evaluate_item",
    "fake_digest", "rfc3339", "verdict_reason",
]
