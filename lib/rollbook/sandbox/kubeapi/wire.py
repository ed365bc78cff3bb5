"""The HTTPS connection: a threading server with TLS, and a handler that turns each request into an
:class:`~rollbook.sandbox.kubeapi.exchange.Exchange` for the API server's one request seam."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from rollbook.httpserver import HTTPServer
from rollbook.sandbox.kubeapi.authz import User
from rollbook.sandbox.kubeapi.exchange import Exchange
from rollbook.sandbox.store import Store

JSON = dict[str, Any]
_log = logging.getLogger(__name__)


class Host(Protocol):
    """What the connection needs of the API server (``sandbox.apiserver.ApiServer``)."""

    store: Store
    users: dict[str, User]
    url: str
    stopping: threading.Event
    connections: set[ssl.SSLSocket]
    connections_lock: threading.Lock

    def wrap(self, sock: socket.socket) -> ssl.SSLSocket: ...

    def handle(self, exchange: Exchange) -> None: ...


class HttpsServer(HTTPServer):
    """A threading HTTP server whose connections are TLS."""


    def __init__(self, address: tuple[str, int], handler: type[Handler], api: Host) -> None:
        self.api = api
        super().__init__(address, handler)

    def get_request(self) -> tuple[Any, Any]:
        """Accept and wrap; the TLS handshake is left to the handler thread so accept never blocks."""
        sock, addr = super().get_request()
        wrapped = self.api.wrap(sock)
        with self.api.connections_lock:
            self.api.connections.add(wrapped)
        return wrapped, addr

    def shutdown_request(self, request: Any) -> None:
        """Forget a finished connection."""
        with self.api.connections_lock:
            self.api.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up mid-request are normal; keep them out of stderr."""
        _log.debug("connection from %s ended with an error", client_address, exc_info=True)


class Handler(BaseHTTPRequestHandler):
    """One connection; hands each request to ``api.handle``."""

    server: HttpsServer
    protocol_version = "HTTP/1.1"
    timeout = 120  # an idle keep-alive connection is dropped after this (seconds)

    def setup(self) -> None:
        super().setup()
        self.request.do_handshake()

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        """Read the request and pass it, as an Exchange, to the API server's request seam."""
        api = self.server.api
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        api.handle(Exchange(self, self.command, split.path, query, self.headers, body, self._authenticate(),
                            api.store, api.url, api.stopping))

    def _authenticate(self) -> User | None:
        """The user of a ``Bearer`` token, or None."""
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        return self.server.api.users.get(token.strip()) if scheme.lower() == "bearer" else None

    def send_bytes(self, code: int, data: bytes, content_type: str) -> None:
        """A complete response with Content-Length (keep-alive friendly)."""
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.write(data)

    def stream_json_lines(self, events: Iterator[JSON]) -> None:
        """A chunked stream of JSON lines (a watch); ends when the iterator does or the client leaves."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.close_connection = True
        try:
            for event in events:
                line = json.dumps(event, separators=(",", ":")).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
