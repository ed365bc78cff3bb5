"""HTTPS routes of the Kubernetes API over a :class:`~rollbook.sandbox.store.Store`: the server's life cycle
and its one request seam, :meth:`ApiServer.handle`.

Standard library ``ThreadingHTTPServer`` with TLS, no asyncio: the synchronous official client
cannot deadlock against it. Every request is recorded in :attr:`ApiServer.requests`. The parts live in
``sandbox/kubeapi/`` (routing, authz, exchange, wire, dispatch, discovery, reviews, reads, watch, writes,
patches); the names other code imports from here are re-exported.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Self

from rollbook.sandbox.kubeapi import dispatch
from rollbook.sandbox.kubeapi.authz import ROLE_WRITES, Attributes, Authorizer, User
from rollbook.sandbox.kubeapi.exchange import Exchange, RecordedRequest
from rollbook.sandbox.kubeapi.routing import Route, parse_route, verb_of
from rollbook.sandbox.kubeapi.wire import Handler, HttpsServer
from rollbook.sandbox.store import Resource, Store, StoreError, resource

_log = logging.getLogger(__name__)
LOOPBACK = ("127.0.0.1", "localhost", "::1")
Next = Callable[[Exchange], None]
# A layer of the request seam: called with the exchange and the rest of the chain; it may answer itself
# (a fault), delay, or call ``next_(exchange)``. Layers run after recording, before authentication.
Layer = Callable[[Exchange, Next], None]


def allowed(user: User, verb: str, res: Resource, sub: str | None) -> bool:
    """Whether ``user`` may ``verb`` ``res`` (cluster-wide): asks the default :class:`Authorizer`."""
    return Authorizer().decide(Attributes(user, verb, resource=res.plural, subresource=sub or "", group=res.group))


class ApiServer:
    """The Kubernetes API over a store, on HTTPS, loopback only."""

    def __init__(
        self, store: Store, *, users: dict[str, User], host: str = "127.0.0.1", port: int = 0,
        certfile: str, keyfile: str, max_requests: int = 10_000,
    ) -> None:
        if host not in LOOPBACK:
            raise ValueError(f"the sandbox API server listens on loopback only, not {host!r}; use 127.0.0.1")
        self.store = store
        self.users = dict(users)
        self.requests: list[RecordedRequest] = []
        self.max_requests = max_requests  # the oldest records are dropped beyond this (a long demo)
        self._host, self._port = host, port
        self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ssl.load_cert_chain(certfile, keyfile)
        self._ssl.set_alpn_protocols(["http/1.1"])  # kubectl would speak HTTP/2 if offered
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self.connections: set[ssl.SSLSocket] = set()
        self.connections_lock = threading.Lock()
        self.authorizer = Authorizer()  # the one authorization seam (kubeapi/authz.py)
        self.layers: list[Layer] = []  # wrapped around every request by handle(), outermost first
        self._httpd: HttpsServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self) -> str:
        """Bind and serve in a background thread; returns ``https://127.0.0.1:PORT``."""
        self._httpd = HttpsServer((self._host, self._port), Handler, self)
        port = self._httpd.server_address[1]
        self.url = f"https://{'127.0.0.1' if self._host == 'localhost' else self._host}:{port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"sandbox-apiserver-{port}", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving; open watches end within a fraction of a second."""
        self.stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        with self.connections_lock:  # kept-alive connections would otherwise outlive the server
            open_connections, self.connections = list(self.connections), set()
        for conn in open_connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def record(self, req: RecordedRequest) -> None:
        """Append to :attr:`requests` (thread-safe)."""
        with self._lock:
            self.requests.append(req)
            if len(self.requests) > self.max_requests:
                del self.requests[: len(self.requests) - self.max_requests]

    def handle(self, ex: Exchange) -> None:
        """THE request seam: every HTTP request passes through here exactly once.

        Records it, runs :attr:`layers` (a fault-injection layer hooks here), then authenticates,
        authorizes (:attr:`authorizer`) and dispatches; every StoreError becomes a Status response.
        """
        self.record(RecordedRequest(ex.method, ex.path, ex.query, ex.headers.get("Content-Type", ""), ex.body,
                                    ex.user.name if ex.user else None, ex.accept))
        chain: Next = self._serve
        for layer in reversed(self.layers):
            chain = _bind(layer, chain)
        try:
            chain(ex)
        except StoreError as e:
            ex.send_json(e.code, e.to_status())
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError):
            ex.wire.close_connection = True
        except Exception as e:  # noqa: BLE001 - a bug must answer 500 with a Status, not hang the client
            _log.exception("sandbox apiserver failed on %s %s", ex.method, ex.path)
            ex.send_json(500, StoreError(500, "InternalError", f"Internal error occurred: {e}").to_status())

    def _serve(self, ex: Exchange) -> None:
        dispatch.serve(ex, self.authorizer)

    def wrap(self, sock: socket.socket) -> ssl.SSLSocket:
        """TLS-wrap an accepted socket; the handshake runs later in the handler thread."""
        return self._ssl.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _bind(layer: Layer, next_: Next) -> Next:
    return lambda ex: layer(ex, next_)


__all__ = ["ROLE_WRITES", "ApiServer", "Attributes", "Authorizer", "Exchange", "Layer", "RecordedRequest", "Route",
           "User", "allowed", "parse_route", "resource", "verb_of"]
