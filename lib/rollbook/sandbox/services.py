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
import json
import threading
from datetime import UTC, datetime
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from rollbook.httpserver import HTTPServer
from rollbook.sandbox.servicecheck import (
    blocks_ok,
    multipart_files,
    pd_errors,
    pd_invalid,
)
from rollbook.sandbox.servicehttp import (
    KINDS,
    Fault,
    Recorded,
    Reply,
    handler_for,
    header,
    jira_now,
    json_reply,
    kind_of,
    masked,
    png,
    text_reply,
)


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
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> str:
        """Start serving; returns http://127.0.0.1:PORT."""
        self._httpd = HTTPServer((self.host, self.port), handler_for(self))
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
        kind = kind_of(path)
        with self._lock:
            self.requests.append(Recorded(kind, method, path, query, masked(headers), body))
            fault = self._take_fault(path)
        if fault:
            extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            if fault.body is not None:
                return Reply(fault.status, fault.body, fault.content_type, extra)
            return json_reply(fault.status, {"message": "injected fault"}, **extra)
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
        return json_reply(404, {"message": f"no route for {method} {path}"})

    # ----------------------------------------------------------------- PagerDuty

    def _pagerduty(self, body: bytes) -> Reply:
        try:
            event = json.loads(body)
        except ValueError:
            return pd_invalid("Event object is invalid", ["Request body is not valid JSON"])
        if not isinstance(event, dict):
            return pd_invalid("Event object is invalid", ["Event must be a JSON object"])
        errors = pd_errors(event)
        if errors:
            return pd_invalid("Event object is invalid", errors)
        if event["routing_key"] != self.routing_key:
            return pd_invalid("Event object is invalid", ["Invalid routing key"])
        key = str(event.get("dedup_key") or self.next_id())
        self._pd_apply(event, key)
        return json_reply(202, {"status": "success", "message": "Event processed", "dedup_key": key})

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
            return text_reply(400, "invalid_payload")
        if not isinstance(message, dict) or not (message.get("text") or message.get("blocks")):
            return text_reply(400, "invalid_payload")
        if "blocks" in message and not blocks_ok(message["blocks"]):
            return text_reply(400, "invalid_blocks")
        return text_reply(200, "ok")

    def _webhook(self, headers: dict[str, str], body: bytes) -> Reply:
        if self.webhook_token and header(headers, "authorization") != f"Bearer {self.webhook_token}":
            return json_reply(401, {"error": "unauthorized"}, **{"WWW-Authenticate": "Bearer"})
        try:
            json.loads(body)
        except ValueError:
            return json_reply(400, {"error": "body is not JSON"})
        return json_reply(200, {"received": True, "id": self.next_id()})

    # ----------------------------------------------------------------- Jira

    def _jira(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        expected = "Basic " + base64.b64encode(f"{self.jira_user}:{self.jira_token}".encode()).decode()
        if header(headers, "authorization") != expected:
            return json_reply(401, {"errorMessages": [("You are not authenticated. Authentication required to "
                                                 "perform this operation.")], "errors": {}})
        segments = path.split("/")   # ['', 'rest', 'api', '2', 'issue', KEY, (comment|attachments)]
        if len(segments) < 6 or segments[4] != "issue":
            return json_reply(404, {"errorMessages": ["Not found"], "errors": {}})
        key, sub = segments[5], (segments[6] if len(segments) > 6 else "")
        if key not in self.jira_issues:
            return json_reply(404, {"errorMessages": [("Issue does not exist or you do not have permission "
                                                 "to see it.")], "errors": {}})
        if method == "GET" and not sub:
            return json_reply(200, self._issue(key))
        if method == "POST" and sub == "comment":
            return self._comment(key, body)
        if method == "POST" and sub == "attachments":
            return self._attach(key, headers, body)
        return json_reply(405, {"errorMessages": [f"{method} not allowed on {path}"], "errors": {}})

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
            return json_reply(400, {"errorMessages": ["Unexpected JSON body"], "errors": {}})
        if not isinstance(text, str) or not text.strip():
            return json_reply(400, {"errorMessages": [], "errors": {"comment": "Comment body can not be empty!"}})
        cid = self.next_id()
        comment = {"self": f"{self.url}/rest/api/2/issue/{key}/comment/{cid}", "id": cid, "body": text,
                   "author": {"name": self.jira_user}, "created": jira_now()}
        with self._lock:
            self.comments.setdefault(key, []).append(comment)
        return json_reply(201, comment)

    def _attach(self, key: str, headers: dict[str, str], body: bytes) -> Reply:
        if (header(headers, "x-atlassian-token") or "").lower() != "no-check":
            return text_reply(403, "XSRF check failed")
        files = multipart_files(header(headers, "content-type") or "", body)
        if not files:
            return json_reply(400, {"errorMessages": ["No attachment found in field 'file'."], "errors": {}})
        out = []
        for filename, ctype, content in files:
            aid = self.next_id()
            item = {"self": f"{self.url}/rest/api/2/attachment/{aid}", "id": aid, "filename": filename,
                    "author": {"name": self.jira_user}, "created": jira_now(), "size": len(content),
                    "mimeType": ctype, "content": f"{self.url}/secure/attachment/{aid}/{filename}"}
            with self._lock:
                self.attachments.setdefault(key, []).append({**item, "content_bytes": content})
            out.append(item)
        return json_reply(200, out)

    # ----------------------------------------------------------------- Grafana

    def _grafana(self, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> Reply:
        if header(headers, "authorization") != f"Bearer {self.grafana_token}":
            return json_reply(401, {"message": "Unauthorized"})
        segments = path.split("/")   # ['', 'render', 'd-solo', UID, SLUG]
        if len(segments) != 5 or segments[2] != "d-solo" or segments[3] not in self.grafana_dashboards:
            return json_reply(404, {"message": "Dashboard not found"})
        try:
            width = int(query.get("width", ["1000"])[0])
            height = int(query.get("height", ["500"])[0])
            int(query["panelId"][0])
        except (KeyError, ValueError):
            return json_reply(400, {"message": "panelId, width and height must be integers"})
        # Small caps keep a stray request from making the stand-in allocate a huge image.
        return Reply(200, png(min(width, 2000), min(height, 2000)), "image/png")



__all__ = ["KINDS", "Fault", "Recorded", "Reply", "ServicesServer", "png"]  # re-exported from servicehttp
