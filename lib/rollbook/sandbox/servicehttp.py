"""The services stand-in's HTTP plumbing: what it records and answers, injected faults, a PNG maker,
and the request handler (plain and chunked bodies)."""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol

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


def json_reply(status: int, data: Any, **headers: str) -> Reply:
    return Reply(status, json.dumps(data).encode(), "application/json", dict(headers))


def text_reply(status: int, text: str) -> Reply:
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


def kind_of(path: str) -> str:
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


def header(headers: dict[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def masked(headers: dict[str, str]) -> dict[str, str]:
    return {k: (v.split(" ", 1)[0] + " ***" if k.lower() == "authorization" else v)
            for k, v in headers.items()}


def jira_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


class _Host(Protocol):
    """What the handler needs of the stand-in (``services.ServicesServer``)."""

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply: ...


def handler_for(server: _Host) -> type[BaseHTTPRequestHandler]:
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
