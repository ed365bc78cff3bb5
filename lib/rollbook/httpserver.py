"""The standard library's ThreadingHTTPServer, answering without Nagle's delay.

``BaseHTTPRequestHandler`` sends a response's headers (``end_headers``) and its body in two writes. With
Nagle's algorithm on, the kernel holds the second write until the client acknowledges the first, and a
Linux client delays that acknowledgement by up to 40 ms: every request to a stdlib server took 42-44 ms
of wall time for 2 ms of CPU (measured on the sandbox's API server, a list of pods over the official
client). ``TCP_NODELAY`` on each accepted connection sends the body at once, as Go's and urllib3's sockets
do by default.

The listen backlog is 128 instead of socketserver's 5: Argo sends an abort's notifications at once, for
every rollout that aborted, and 40 simultaneous POSTs to `rollbook serve` overflowed a backlog of 5; with
SYN cookies on (Linux's default) a connection the full queue dropped is then reset by the server when the
client sends its request ("Connection reset by peer" in the burst test; the machine's
TcpExtListenOverflows counter had grown to 4217). The kernel caps it at net.core.somaxconn.

Every HTTP server of rollbook (``serve``, and the sandbox's Kubernetes API, MC, Prometheus and service
stand-ins) is one of these. Hand-written: the standard library has no option for either.
"""

from __future__ import annotations

import socket
from http.server import ThreadingHTTPServer
from typing import Any


class HTTPServer(ThreadingHTTPServer):
    """A thread per connection, a listen backlog of 128; every accepted TCP connection has ``TCP_NODELAY``."""

    daemon_threads = True
    request_queue_size = 128  # the listen backlog (socketserver's default is 5)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr
