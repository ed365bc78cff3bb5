"""Stand-ins for the services rollbook reaches people through, on one loopback HTTP server.

Routes, answering the way the real services do (status codes, bodies, content types):
  PagerDuty Events API v2   POST /v2/enqueue
  Slack incoming webhook    POST /services/T000/B000/XXXX   (the path is the secret; configurable)
  generic webhook           POST /hooks/<name>
  Jira REST v2              GET /rest/api/2/issue/{key}, POST .../comment, POST .../attachments
  Grafana render API        GET /render/d-solo/{uid}/{slug}
Every request is recorded in `requests` (Authorization masked). `fail_next` injects 5xx/429 replies.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import json
import struct
import threading
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

KINDS = ("pagerduty", "slack", "webhook", "jira", "grafana")
PD_SEVERITIES = ("critical", "error", "warning", "info")
PD_ACTIONS = ("trigger", "acknowledge", "resolve")


@dataclass(frozen=True)
class Recorded:
    """One request as the stand-in received it."""

    kind: str
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass
class Fault:
    """Answer the next `times` requests under `path_prefix` with `status` (and Retry-After, body)."""

    path_prefix: str
    status: int = 503
    times: int = 1
    retry_after: str | None = None
    body: bytes | None = None
    content_type: str = "application/json"


@dataclass
class Reply:
    """What a route answers."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _json(status: int, data: Any, **headers: str) -> Reply:
    return Reply(status, json.dumps(data).encode(), "application/json", dict(headers))


def _text(status: int, text: str) -> Reply:
    return Reply(status, text.encode(), "text/plain; charset=utf-8")


def png(width: int, height: int) -> bytes:
    """A valid RGB PNG of the given size (a plain chart-like gradient), made with the standard library."""
    # Hand-written (zlib + struct) so the stand-in starts in milliseconds; matplotlib would cost ~0.5 s.
    row = bytes(b for x in range(width) for b in (30 + (x * 200) // max(width, 1), 120, 200))
    raw = b"".join(b"\x00" + row for _ in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6))
            + chunk(b"IEND", b""))


class ServicesServer:
    """PagerDuty, Slack, webhook, Jira and Grafana stand-ins on 127.0.0.1."""

    def __init__(
        self,
        *,
        routing_key: str = "R0123456789abcdef0123456789abcdef",
        slack_path: str = "/services/T000/B000/XXXX",
        webhook_token: str | None = None,
        jira_user: str = "rollbook@example.com",
        jira_token: str = "jira-api-token",
        jira_issues: dict[str, str] | None = None,
        grafana_token: str = "grafana-token",
        grafana_dashboards: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.routing_key = routing_key
        self.slack_path = slack_path
        self.webhook_token = webhook_token
        self.jira_user, self.jira_token = jira_user, jira_token
        self.jira_issues = dict(jira_issues or {"INC-1234": "Canary api aborted"})
        self.grafana_token = grafana_token
        self.grafana_dashboards = dict(grafana_dashboards or {"api-slo": "api-slo"})
        self.host, self.port = host, port
        self.requests: list[Recorded] = []
        self.incidents: dict[str, dict[str, Any]] = {}    # open PagerDuty incidents by dedup_key
        self.resolved: dict[str, dict[str, Any]] = {}
        self.comments: dict[str, list[dict[str, Any]]] = {}
        self.attachments: dict[str, list[dict[str, Any]]] = {}
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self._ids = 10000
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> str:
        """Start serving; returns http://127.0.0.1:PORT."""
        self._httpd = ThreadingHTTPServer((self.host, self.port), _handler(self))
        self._httpd.daemon_threads = True
        self.url = f"http://{self.host}:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="services-stand-in", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- inspection

    @property
    def slack_url(self) -> str:
        """The full incoming-webhook URL (the secret a Slack config points at)."""
        return self.url + self.slack_path

    def received(self, kind: str) -> list[Recorded]:
        """Requests of one kind: pagerduty, slack, webhook, jira or grafana."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        with self._lock:
            return [r for r in self.requests if r.kind == kind]

    def fail_next(self, path_prefix: str, *, status: int = 503, times: int = 1, retry_after: str | None = None,
                  body: bytes | None = None, content_type: str = "application/json") -> None:
        """Answer the next `times` requests under `path_prefix` with `status` (e.g. 200 + a login page)."""
        with self._lock:
            self.faults.append(Fault(path_prefix, status, times, retry_after, body, content_type))

    def next_id(self) -> str:
        """A fresh Jira-style numeric id."""
        with self._lock:
            self._ids += 1
            return str(self._ids)

    # ----------------------------------------------------------------- dispatch

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        """Record the request, then answer it."""
        parts = urlsplit(target)
        path, query = parts.path, parse_qs(parts.query, keep_blank_values=True)
        kind = _kind(path)
        with self._lock:
            self.requests.append(Recorded(kind, method, path, query, _masked(headers), body))
            fault = self._take_fault(path)
        if fault:
            extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            if fault.body is not None:
                return Reply(fault.status, fault.body, fault.content_type, extra)
            return _json(fault.status, {"message": "injected fault"}, **extra)
        return self._route(kind, method, path, query, headers, body)

    def _take_fault(self, path: str) -> Fault | None:
        for fault in self.faults:
            if path.startswith(fault.path_prefix) and fault.times > 0:
                fault.times -= 1
                return fault
        return None

    def _route(self, kind: str, method: str, path: str, query: dict[str, list[str]],
               headers: dict[str, str], body: bytes) -> Reply:
        if kind == "pagerduty" and method == "POST":
            return self._pagerduty(body)
        if kind == "slack" and method == "POST":
            return self._slack(path, body)
        if kind == "webhook" and method == "POST":
            return self._webhook(headers, body)
        if kind == "jira":
            return self._jira(method, path, headers, body)
        if kind == "grafana" and method == "GET":
            return self._grafana(path, query, headers)
        return _json(404, {"message": f"no route for {method} {path}"})

    # ----------------------------------------------------------------- PagerDuty

    def _pagerduty(self, body: bytes) -> Reply:
        try:
            event = json.loads(body)
        except ValueError:
            return _pd_invalid("Event object is invalid", ["Request body is not valid JSON"])
        if not isinstance(event, dict):
            return _pd_invalid("Event object is invalid", ["Event must be a JSON object"])
        errors = _pd_errors(event)
        if errors:
            return _pd_invalid("Event object is invalid", errors)
        if event["routing_key"] != self.routing_key:
            return _pd_invalid("Event object is invalid", ["Invalid routing key"])
        key = str(event.get("dedup_key") or self.next_id())
        self._pd_apply(event, key)
        return _json(202, {"status": "success", "message": "Event processed", "dedup_key": key})

    def _pd_apply(self, event: dict[str, Any], key: str) -> None:
        action = event["event_action"]
        with self._lock:
            open_incident = self.incidents.get(key)
            if action == "trigger" and open_incident:
                open_incident["alerts"] += 1   # deduplicated: the open incident absorbs it
            elif action == "trigger":
                payload = event["payload"]
                self.incidents[key] = {"status": "triggered", "alerts": 1, "summary": payload["summary"],
                                       "severity": payload["severity"], "source": payload["source"],
                                       "opened_at": datetime.now(UTC).isoformat()}
            elif action == "acknowledge" and open_incident:
                open_incident["status"] = "acknowledged"
            elif action == "resolve" and open_incident:
                self.resolved[key] = {**self.incidents.pop(key), "status": "resolved"}

    # ----------------------------------------------------------------- Slack and webhooks

    def _slack(self, path: str, body: bytes) -> Reply:
        if path != self.slack_path:
            return Reply(404, b"no_service", "text/html")
        try:
            message = json.loads(body)
        except ValueError:
            return _text(400, "invalid_payload")
        if not isinstance(message, dict) or not (message.get("text") or message.get("blocks")):
            return _text(400, "invalid_payload")
        if "blocks" in message and not _blocks_ok(message["blocks"]):
            return _text(400, "invalid_blocks")
        return _text(200, "ok")

    def _webhook(self, headers: dict[str, str], body: bytes) -> Reply:
        if self.webhook_token and _header(headers, "authorization") != f"Bearer {self.webhook_token}":
            return _json(401, {"error": "unauthorized"}, **{"WWW-Authenticate": "Bearer"})
        try:
            json.loads(body)
        except ValueError:
            return _json(400, {"error": "body is not JSON"})
        return _json(200, {"received": True, "id": self.next_id()})

    # ----------------------------------------------------------------- Jira

    def _jira(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        expected = "Basic " + base64.b64encode(f"{self.jira_user}:{self.jira_token}".encode()).decode()
        if _header(headers, "authorization") != expected:
            return _json(401, {"errorMessages": [("You are not authenticated. Authentication required to "
                                                 "perform this operation.")], "errors": {}})
        segments = path.split("/")   # ['', 'rest', 'api', '2', 'issue', KEY, (comment|attachments)]
        if len(segments) < 6 or segments[4] != "issue":
            return _json(404, {"errorMessages": ["Not found"], "errors": {}})
        key, sub = segments[5], (segments[6] if len(segments) > 6 else "")
        if key not in self.jira_issues:
            return _json(404, {"errorMessages": [("Issue does not exist or you do not have permission "
                                                 "to see it.")], "errors": {}})
        if method == "GET" and not sub:
            return _json(200, self._issue(key))
        if method == "POST" and sub == "comment":
            return self._comment(key, body)
        if method == "POST" and sub == "attachments":
            return self._attach(key, headers, body)
        return _json(405, {"errorMessages": [f"{method} not allowed on {path}"], "errors": {}})

    def _issue(self, key: str) -> dict[str, Any]:
        with self._lock:
            comments = [{k: v for k, v in c.items()} for c in self.comments.get(key, [])]
            attached = [{k: v for k, v in a.items() if k != "content_bytes"}
                        for a in self.attachments.get(key, [])]
        return {"id": str(20000 + list(self.jira_issues).index(key)), "key": key, "self": f"{self.url}/rest/api/2/issue/{key}",
                "fields": {"summary": self.jira_issues[key], "attachment": attached,
                           "comment": {"comments": comments, "total": len(comments)}}}

    def _comment(self, key: str, body: bytes) -> Reply:
        try:
            text = json.loads(body).get("body")
        except (ValueError, AttributeError):
            return _json(400, {"errorMessages": ["Unexpected JSON body"], "errors": {}})
        if not isinstance(text, str) or not text.strip():
            return _json(400, {"errorMessages": [], "errors": {"comment": "Comment body can not be empty!"}})
        cid = self.next_id()
        comment = {"self": f"{self.url}/rest/api/2/issue/{key}/comment/{cid}", "id": cid, "body": text,
                   "author": {"name": self.jira_user}, "created": _now()}
        with self._lock:
            self.comments.setdefault(key, []).append(comment)
        return _json(201, comment)

    def _attach(self, key: str, headers: dict[str, str], body: bytes) -> Reply:
        if (_header(headers, "x-atlassian-token") or "").lower() != "no-check":
            return _text(403, "XSRF check failed")
        files = _multipart_files(_header(headers, "content-type") or "", body)
        if not files:
            return _json(400, {"errorMessages": ["No attachment found in field 'file'."], "errors": {}})
        out = []
        for filename, ctype, content in files:
            aid = self.next_id()
            item = {"self": f"{self.url}/rest/api/2/attachment/{aid}", "id": aid, "filename": filename,
                    "author": {"name": self.jira_user}, "created": _now(), "size": len(content),
                    "mimeType": ctype, "content": f"{self.url}/secure/attachment/{aid}/{filename}"}
            with self._lock:
                self.attachments.setdefault(key, []).append({**item, "content_bytes": content})
            out.append(item)
        return _json(200, out)

    # ----------------------------------------------------------------- Grafana

    def _grafana(self, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> Reply:
        if _header(headers, "authorization") != f"Bearer {self.grafana_token}":
            return _json(401, {"message": "Unauthorized"})
        segments = path.split("/")   # ['', 'render', 'd-solo', UID, SLUG]
        if len(segments) != 5 or segments[2] != "d-solo" or segments[3] not in self.grafana_dashboards:
            return _json(404, {"message": "Dashboard not found"})
        try:
            width = int(query.get("width", ["1000"])[0])
            height = int(query.get("height", ["500"])[0])
            int(query["panelId"][0])
        except (KeyError, ValueError):
            return _json(400, {"message": "panelId, width and height must be integers"})
        # Small caps keep a stray request from making the stand-in allocate a huge image.
        return Reply(200, png(min(width, 2000), min(height, 2000)), "image/png")


# --------------------------------------------------------------------------- helpers


def _kind(path: str) -> str:
    if path == "/v2/enqueue":
        return "pagerduty"
    if path.startswith("/services/"):
        return "slack"
    if path.startswith("/hooks/"):
        return "webhook"
    if path.startswith("/rest/api/2/"):
        return "jira"
    if path.startswith("/render/"):
        return "grafana"
    return "unknown"


def _header(headers: dict[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _masked(headers: dict[str, str]) -> dict[str, str]:
    return {k: (v.split(" ", 1)[0] + " ***" if k.lower() == "authorization" else v)
            for k, v in headers.items()}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def _pd_invalid(message: str, errors: list[str]) -> Reply:
    return _json(400, {"status": "invalid event", "message": message, "errors": errors})


def _pd_errors(event: dict[str, Any]) -> list[str]:
    errors = []
    if not event.get("routing_key"):
        errors.append("'routing_key' is missing or blank")
    action = event.get("event_action")
    if action not in PD_ACTIONS:
        errors.append("'event_action' must be one of trigger, acknowledge or resolve")
    key = event.get("dedup_key")
    if key is not None and (not isinstance(key, str) or len(key) > 255):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and not key:
        errors.append("'dedup_key' is missing or blank")
    if action == "trigger":
        errors += _pd_payload_errors(event.get("payload"))
    return errors


def _pd_payload_errors(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return ["'payload' is missing or not an object"]
    errors = [f"'payload.{f}' is missing or blank" for f in ("summary", "source", "severity")
              if not payload.get(f)]
    if payload.get("severity") and payload["severity"] not in PD_SEVERITIES:
        errors.append("'payload.severity' must be one of critical, error, warning or info")
    if isinstance(payload.get("summary"), str) and len(payload["summary"]) > 1024:
        errors.append("'payload.summary' must be at most 1024 characters")
    return errors


def _blocks_ok(blocks: Any) -> bool:
    """Enough of Block Kit's rules to catch a malformed message the way Slack would."""
    if not isinstance(blocks, list) or len(blocks) > 50:
        return False
    for block in blocks:
        if not isinstance(block, dict):
            return False
        kind = block.get("type")
        if kind == "header":
            text = block.get("text") or {}
            if text.get("type") != "plain_text" or not 0 < len(text.get("text", "")) <= 150:
                return False
        elif kind == "section":
            if not (block.get("text") or block.get("fields")) or len(block.get("fields", [])) > 10:
                return False
        elif kind == "image":
            if not block.get("image_url") or not block.get("alt_text"):
                return False
        elif kind == "context":
            if not 0 < len(block.get("elements", [])) <= 10:
                return False
        elif kind not in ("divider", "actions", "rich_text"):
            return False
    return True


def _multipart_files(content_type: str, body: bytes) -> list[tuple[str, str, bytes]]:
    """(filename, content type, bytes) of every part named `file` in a multipart/form-data body."""
    # The standard library's email parser reads multipart/form-data correctly (the cgi module is gone
    # in Python 3.13); no third-party parser is needed for a stand-in.
    if not content_type.startswith("multipart/form-data"):
        return []
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    files = []
    for part in message.iter_parts() if message.is_multipart() else []:
        if part.get_param("name", header="content-disposition") == "file":
            payload = part.get_payload(decode=True)
            files.append((part.get_filename() or "file", part.get_content_type(),
                          payload if isinstance(payload, bytes) else b""))
    return files


def _handler(server: ServicesServer) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to `server`."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            reply = server.handle(self.command, self.path, dict(self.headers.items()), self._body())
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(reply.body)

        def _body(self) -> bytes:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                return self._chunked()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _chunked(self) -> bytes:
            data = b""
            while True:   # bounded by the client's final zero-length chunk
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: tests read `requests` instead of logs."""

    return Handler
