"""HTTPS routes of the Kubernetes API over a :class:`~rollbook.sandbox.store.Store`.

Standard library ``ThreadingHTTPServer`` with TLS, no asyncio: the synchronous official client
cannot deadlock against it. Every request is recorded in :attr:`ApiServer.requests`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from rollbook.sandbox import fieldmanager, openapi, protobuf, tables, validation
from rollbook.sandbox.store import (
    RESOURCES,
    Resource,
    Store,
    StoreError,
    apply_patch,
    bad_request,
    invalid,
    resource,
)

JSON = dict[str, Any]
_log = logging.getLogger(__name__)
LOOPBACK = ("127.0.0.1", "localhost", "::1")
READ_VERBS = frozenset({"get", "list", "watch"})
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
# What each role may do beyond reading. The operator (the kubeconfig's default context) writes
# everything, as a sandbox cluster's default user does, so clients and kubectl can exercise every verb;
# the viewer only reads, which is what the read-only runbook steps run as. "admin" is kept for tests.
ROLE_WRITES: dict[str, frozenset[str]] = {
    "viewer": frozenset(),
    "operator": frozenset({"*"}),
    "admin": frozenset({"*"}),
}
PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/json-patch+json": "json",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}
ACCESS_REVIEW_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
SELF_REVIEW_PATH = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
RULES_REVIEW_PATH = "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews"
_NOT_FOUND = StoreError(404, "NotFound", "the server could not find the requested resource")


@dataclass(frozen=True)
class User:
    """A bearer-token identity: role ``viewer`` (get/list/watch), ``operator`` or ``admin``."""

    name: str
    role: str


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it (the query keeps the last value of each key)."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: bytes
    user: str | None
    accept: str = ""

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass(frozen=True)
class Route:
    """What a resource URL names."""

    res: Resource
    namespace: str | None
    name: str | None
    sub: str | None


def allowed(user: User, verb: str, res: Resource, sub: str | None) -> bool:
    """RBAC of the sandbox: everyone reads; writes per :data:`ROLE_WRITES`."""
    return may(user, verb, f"{res.plural}/{sub}" if sub else res.plural)


def may(user: User, verb: str, resource_path: str) -> bool:
    """Whether a user may ``verb`` a resource path such as ``rollouts/status``."""
    if verb in READ_VERBS:
        return True
    writes = ROLE_WRITES.get(user.role, frozenset())
    return "*" in writes or (verb in WRITE_VERBS and resource_path in writes)


def forbidden(user: User, verb: str, route: Route) -> StoreError:
    """403 in the real message form."""
    res = route.res
    subject = f'{res.qualified} "{route.name}"' if route.name else res.qualified
    what = f"{res.plural}/{route.sub}" if route.sub else res.plural
    scope = f'in the namespace "{route.namespace}"' if route.namespace else "at the cluster scope"
    msg = (f'{subject} is forbidden: User "{user.name}" cannot {verb} resource "{what}" '
           f'in API group "{res.group}" {scope}')
    details = {k: v for k, v in (("name", route.name), ("group", res.group), ("kind", res.plural)) if v}
    return StoreError(403, "Forbidden", msg, details)


def parse_route(segments: list[str]) -> Route:
    """Map ``api/v1/...`` or ``apis/g/v/...`` path segments to a resource route (404 otherwise)."""
    if segments[:1] == ["api"] and len(segments) >= 3:
        group, version, rest = "", segments[1], segments[2:]
    elif segments[:1] == ["apis"] and len(segments) >= 4:
        group, version, rest = segments[1], segments[2], segments[3:]
    else:
        raise _NOT_FOUND
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] in RESOURCES:
        namespace, rest = rest[1], rest[2:]
    res = RESOURCES.get(rest[0])
    if res is None or (res.group, res.version) != (group, version) or len(rest) > 3:
        raise _NOT_FOUND
    if namespace and not res.namespaced:
        raise _NOT_FOUND
    if res.namespaced and not namespace and len(rest) > 1:
        raise _NOT_FOUND
    name, sub = (rest[1:] + [None, None])[:2]
    served = {"status": res.has_status, "log": res.plural == "pods", "scale": res.has_scale}
    if sub and not served.get(sub):
        raise _NOT_FOUND
    return Route(res, namespace, name, sub)


def verb_of(method: str, route: Route, query: dict[str, str]) -> str:
    """The RBAC verb of a request (405 for a method the URL does not take)."""
    watching = query.get("watch") in ("true", "1")
    if route.name is None and route.res.namespaced and route.namespace is None:
        verbs = {"GET": "watch" if watching else "list"}  # writes need a namespace in the URL
    elif route.name is None:
        verbs = {"GET": "watch" if watching else "list", "POST": "create", "DELETE": "deletecollection"}
    elif route.sub == "log":
        verbs = {"GET": "get"}
    elif route.sub:
        verbs = {"GET": "get", "PUT": "update", "PATCH": "patch"}
    else:
        verbs = {"GET": "watch" if watching else "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
    if method not in verbs:
        raise StoreError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
    return verbs[method]


# --------------------------------------------------------------------------- the server


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
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self) -> str:
        """Bind and serve in a background thread; returns ``https://127.0.0.1:PORT``."""
        self._httpd = _Server((self._host, self._port), _Handler, self)
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

    def wrap(self, sock: socket.socket) -> ssl.SSLSocket:
        """TLS-wrap an accepted socket; the handshake runs later in the handler thread."""
        return self._ssl.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    """A threading HTTP server whose connections are TLS."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler], api: ApiServer) -> None:
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


class _Handler(BaseHTTPRequestHandler):
    """One connection; dispatches each request to the routes below."""

    server: _Server
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

    # ------------------------------------------------------------------ plumbing

    def _handle(self) -> None:
        """Read, record, authenticate, dispatch; every StoreError becomes a Status response."""
        api = self.server.api
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        user = self._authenticate()
        api.record(RecordedRequest(self.command, split.path, query, self.headers.get("Content-Type", ""),
                                   body, user.name if user else None, self.headers.get("Accept", "")))
        try:
            if user is None and split.path not in ("/healthz", "/livez", "/readyz", "/version"):
                raise StoreError(401, "Unauthorized", "Unauthorized")
            _Dispatch(self, api, user, split.path, query, body).run()
        except StoreError as e:
            self.send_json(e.code, e.to_status())
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError):
            self.close_connection = True
        except Exception as e:  # noqa: BLE001 - a bug must answer 500 with a Status, not hang the client
            _log.exception("sandbox apiserver failed on %s %s", self.command, self.path)
            self.send_json(500, StoreError(500, "InternalError", f"Internal error occurred: {e}").to_status())

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

    def send_json(self, code: int, obj: Any) -> None:
        """A JSON response."""
        self.send_bytes(code, json.dumps(obj, separators=(",", ":")).encode(), "application/json")

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


# --------------------------------------------------------------------------- request dispatch


@dataclass
class _Dispatch:
    """One authenticated request."""

    h: _Handler
    api: ApiServer
    user: User | None
    path: str
    query: dict[str, str]
    body: bytes
    accept: str = field(init=False)

    def __post_init__(self) -> None:
        self.accept = self.h.headers.get("Accept", "")

    def run(self) -> None:
        """Serve discovery, OpenAPI or a resource route."""
        if self.h.command == "GET" and self._discovery():
            return
        if self.h.command == "POST" and self.path.rstrip("/") == ACCESS_REVIEW_PATH:
            self._access_review()
            return
        if self.h.command == "POST" and self.path.rstrip("/") == SELF_REVIEW_PATH:
            self._self_review()
            return
        if self.h.command == "POST" and self.path.rstrip("/") == RULES_REVIEW_PATH:
            self._rules_review()
            return
        segments = [unquote(s) for s in self.path.strip("/").split("/") if s]
        route = parse_route(segments)
        verb = verb_of(self.h.command, route, self.query)
        assert self.user is not None  # authenticated before dispatch
        if not allowed(self.user, verb, route.res, route.sub):
            raise forbidden(self.user, verb, route)
        getattr(self, f"_{verb}")(route)

    # ------------------------------------------------------------------ discovery

    def _discovery(self) -> bool:
        """Answer the discovery and OpenAPI endpoints; False when the path is not one."""
        path = self.path.rstrip("/") or "/"
        host = self.api.url.removeprefix("https://")
        if path in ("/healthz", "/livez", "/readyz"):
            self.h.send_bytes(200, b"ok", "text/plain; charset=utf-8")
            return True
        if path.startswith("/openapi/"):
            return self._openapi(path)
        fixed = {"/version": openapi.version_info, "/api": lambda: openapi.api_versions(host),
                 "/apis": openapi.api_group_list}
        doc = fixed[path]() if path in fixed else self._group_doc(path)
        if doc is None:
            return False
        self.h.send_json(200, doc)
        return True

    def _group_doc(self, path: str) -> JSON | None:
        """``/api/v1``, ``/apis/{g}`` and ``/apis/{g}/{v}``."""
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) == 2:
            return openapi.resource_list("", parts[1])
        if parts[0] == "apis" and len(parts) == 2:
            return openapi.api_group(parts[1])
        if parts[0] == "apis" and len(parts) == 3:
            return openapi.resource_list(parts[1], parts[2])
        return None

    def _openapi(self, path: str) -> bool:
        """``/openapi/v3`` and its per-group documents; ``/openapi/v2`` is deliberately absent."""
        if path == "/openapi/v3":
            self.h.send_json(200, openapi.openapi_index())
            return True
        doc = openapi.openapi_document(path.removeprefix("/openapi/v3/")) if path.startswith("/openapi/v3/") else None
        if doc is None:
            raise _NOT_FOUND
        self.h.send_json(200, doc)
        return True

    def _access_review(self) -> None:
        """``kubectl auth can-i``: a SelfSubjectAccessReview answered from the sandbox RBAC."""
        assert self.user is not None
        review = self._object_body()  # kubectl auth can-i sends protobuf
        spec = (review.get("spec") or {}) if isinstance(review, dict) else {}
        attrs = spec.get("resourceAttributes")
        if attrs is None:  # non-resource URLs (discovery, /version) are readable by everyone
            verdict = str((spec.get("nonResourceAttributes") or {}).get("verb", "")) in READ_VERBS
        else:
            path = "/".join(p for p in (attrs.get("resource", ""), attrs.get("subresource", "")) if p)
            served = attrs.get("resource") in RESOURCES or attrs.get("resource") == "*"
            verdict = served and may(self.user, str(attrs.get("verb", "")), path)
        status: JSON = {"allowed": verdict}  # no reason on a denial, like upstream RBAC (kubectl prints "no")
        self.h.send_json(201, {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                               "metadata": {}, "spec": spec, "status": status})

    def _rules_review(self) -> None:
        """``kubectl auth can-i --list``: the sandbox RBAC of the token's user as rules."""
        assert self.user is not None
        review = self._object_body()
        spec = (review.get("spec") or {}) if isinstance(review, dict) else {}
        writes = ROLE_WRITES.get(self.user.role, frozenset())
        verbs = ["*"] if "*" in writes else sorted(READ_VERBS)
        rules = [{"verbs": verbs, "apiGroups": ["*"], "resources": ["*"]},
                 {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
                  "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]},
                 {"verbs": ["create"], "apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"]}]
        urls = ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz",
                "/version", "/version/"]
        self.h.send_json(201, {"kind": "SelfSubjectRulesReview", "apiVersion": "authorization.k8s.io/v1",
                               "metadata": {"creationTimestamp": None}, "spec": spec,
                               "status": {"resourceRules": rules, "incomplete": False,
                                          "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": urls}]}})

    def _self_review(self) -> None:
        """``kubectl auth whoami``: the SelfSubjectReview of the token's user."""
        assert self.user is not None
        groups = [f"sandbox:{self.user.role}s", "system:authenticated"]
        self.h.send_json(201, {"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
                               "metadata": {"creationTimestamp": None},
                               "status": {"userInfo": {"username": self.user.name, "groups": groups}}})

    # ------------------------------------------------------------------ helpers

    def _validate_fields(self, route: Route, body: Any) -> None:
        """``fieldValidation=Strict`` (kubectl's default): unknown fields are a 400, as on the real server."""
        mode = self.query.get("fieldValidation", "")
        if mode not in ("", "Ignore", "Warn", "Strict"):
            raise bad_request(f'fieldValidation: Unsupported value: "{mode}": supported values: "Ignore", "Strict", '
                              '"Warn"')
        if mode == "Strict" and route.sub in (None, "status"):
            validation.check_strict(route.res, body)

    @property
    def dry_run(self) -> bool:
        """``dryRun=All`` (any other value is a 400, as on the real server)."""
        value = self.query.get("dryRun", "")
        if value not in ("", "All"):
            raise bad_request(f'dryRun: Unsupported value: "{value}": supported values: "All"')
        return value == "All"

    @property
    def wants_table(self) -> bool:
        """kubectl's human ``get`` asks for ``application/json;as=Table;...``."""
        return "as=Table" in self.accept

    def _object_body(self) -> JSON:
        """The request body as an object (JSON, or YAML when sent as YAML)."""
        ctype = self.h.headers.get("Content-Type", "application/json").split(";")[0].strip()
        if "protobuf" in ctype:  # kubectl's typed clients (create namespace|configmap|secret, auth can-i)
            try:
                return protobuf.decode(self.body)
            except protobuf.ProtobufError as e:
                raise StoreError(415, "UnsupportedMediaType",
                                 f'the body of the request was in an unknown format ({e}) - accepted media types '
                                 'include: application/json, application/yaml, '
                                 'application/vnd.kubernetes.protobuf') from e
        try:
            data = yaml.safe_load(self.body) if "yaml" in ctype else json.loads(self.body or b"null")
        except (ValueError, yaml.YAMLError) as e:
            raise bad_request(f"the body of the request could not be decoded as {ctype}: {e}") from e
        if not isinstance(data, (dict, list)):
            raise bad_request("the body of the request must be a JSON object")
        return data  # type: ignore[return-value]

    def _table_or(self, route: Route, objects: list[JSON], list_meta: JSON | None = None) -> JSON:
        """A Table of ``objects`` for kubectl's human output."""
        include = self.query.get("includeObject", "Metadata")
        return tables.table(route.res, objects, include_object=include, list_meta=list_meta)

    def _filters(self) -> tuple[str, str]:
        """labelSelector and fieldSelector."""
        return self.query.get("labelSelector", ""), self.query.get("fieldSelector", "")

    # ------------------------------------------------------------------ verbs

    def _get(self, route: Route) -> None:
        """GET one object, or a pod's log as text/plain."""
        assert route.name is not None
        if route.sub == "log":
            self._log(route)
            return
        obj = self.api.store.get(route.res.plural, route.namespace, route.name)
        if route.sub == "scale":
            self.h.send_json(200, scale_of(route.res, obj))
            return
        if "as=PartialObjectMetadata" in self.accept and not self.wants_table:
            self.h.send_json(200, _partial(obj))
            return
        self.h.send_json(200, self._table_or(route, [obj]) if self.wants_table else obj)

    def _log(self, route: Route) -> None:
        """``pods/{name}/log``: container checks, tailLines and limitBytes as upstream."""
        assert route.name is not None and route.namespace is not None
        pod = self.api.store.get("pods", route.namespace, route.name)
        names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        names += [c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or []]
        container = self.query.get("container", "")
        if container and container not in names:
            raise bad_request(f"container {container} is not valid for pod {route.name}")
        if not container and len(names) > 1:
            choices = " ".join(str(n) for n in names)
            raise bad_request(f"a container name must be specified for pod {route.name}, choose one of: [{choices}]")
        _check_log_available(pod, container or str(names[0] if names else ""), self.query.get("previous") == "true")
        text = self.api.store.pod_log(route.namespace, route.name)
        if self.query.get("timestamps") == "true":
            text = _with_timestamps(pod, text)
        if self.query.get("tailLines"):
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(self.query["tailLines"]):]) if int(self.query["tailLines"]) else ""
        data = text.encode()
        if self.query.get("limitBytes"):
            data = data[: int(self.query["limitBytes"])]
        self.h.send_bytes(200, data, "text/plain")

    def _list(self, route: Route) -> None:
        """A list envelope (or Table) with resourceVersion and continue."""
        labels, fields = self._filters()
        limit = _int_param(self.query, "limit")
        items, rv, token = self.api.store.list(
            route.res.plural, route.namespace, label_selector=labels, field_selector=fields,
            limit=limit, continue_token=self.query.get("continue", ""))
        meta: JSON = {"resourceVersion": rv}
        if token:
            meta["continue"] = token
            meta["remainingItemCount"] = self.api.store.remaining(route.res.plural, route.namespace, labels,
                                                                  fields, token)
        if self.wants_table:
            self.h.send_json(200, self._table_or(route, items, meta))
            return
        if "as=PartialObjectMetadataList" in self.accept:  # metadata-only informers and clients
            self.h.send_json(200, {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                                   "metadata": meta, "items": [_partial(i) for i in items]})
            return
        if route.res.builtin:  # typed lists of built-in kinds carry no kind/apiVersion per item
            items = [{k: v for k, v in i.items() if k not in ("kind", "apiVersion")} for i in items]
        res = route.res
        self.h.send_json(200, {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": meta,
                               "items": items})

    def _watch(self, route: Route) -> None:
        """A watch: chunked JSON lines; a too-old resourceVersion is a 200 with one ERROR event (410)."""
        labels, fields = self._filters()
        if route.name:
            fields = ",".join(f for f in (fields, f"metadata.name={route.name}") if f)
        timeout = _watch_timeout(self.query)
        try:
            events = self.api.store.watch(
                route.res.plural, route.namespace, resource_version=self.query.get("resourceVersion", ""),
                label_selector=labels, field_selector=fields, timeout=timeout, stop=self.api.stopping)
        except StoreError as e:
            if e.code != 410:
                raise
            self.h.stream_json_lines(iter([{"type": "ERROR", "object": e.to_status()}]))
            return
        self.h.stream_json_lines(self._watch_lines(route, events))

    def _watch_lines(self, route: Route, events: Iterator[tuple[str, JSON]]) -> Iterator[JSON]:
        """Watch events as JSON objects, each a one-row Table when kubectl asked for tables."""
        try:
            for kind, obj in events:
                if self.wants_table and kind != "ERROR":
                    obj = self._table_or(route, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]})
                yield {"type": kind, "object": obj}
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()

    def _create(self, route: Route) -> None:
        """POST: 201 with the stored (or dry-run) object."""
        body = self._object_body()
        if not isinstance(body, dict):
            raise bad_request("the body of a create must be a JSON object")
        self._validate_fields(route, body)
        obj = self.api.store.create(route.res.plural, route.namespace, body, dry_run=self.dry_run,
                                    implicit_namespace=False, manager=self.manager)
        self.h.send_json(201, obj)

    def _update(self, route: Route) -> None:
        """PUT on an object or its status."""
        assert route.name is not None
        body = self._object_body()
        if not isinstance(body, dict):
            raise bad_request("the body of an update must be a JSON object")
        if route.sub == "scale":
            self._write_scale(route, body)
            return
        self._validate_fields(route, body)
        obj = self.api.store.replace(route.res.plural, route.namespace, route.name, body,
                                     subresource=route.sub, dry_run=self.dry_run, manager=self.manager)
        self.h.send_json(200, obj)

    def _patch(self, route: Route) -> None:
        """PATCH by Content-Type; server-side apply is approximated as a merge (creating if absent)."""
        assert route.name is not None
        ctype = self.h.headers.get("Content-Type", "").split(";")[0].strip()
        patch_type = PATCH_TYPES.get(ctype)
        if patch_type is None:
            raise StoreError(415, "UnsupportedMediaType",
                             f'the body of the request was in an unknown format - accepted media types include: '
                             f'{", ".join(PATCH_TYPES)}')
        body = self._object_body()
        store, res = self.api.store, route.res
        if patch_type != "json":
            self._validate_fields(route, body)
        if patch_type == "apply":
            if not self.query.get("fieldManager"):
                raise StoreError(422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                                 "is required for apply patch",
                                 {"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [{
                                     "reason": "FieldValueRequired", "field": "fieldManager",
                                     "message": "Required value: is required for apply patch"}]})
            self._apply(route, body)
            return
        if route.sub == "scale":
            current = scale_of(res, store.get(res.plural, route.namespace, route.name))
            self._write_scale(route, apply_patch(res, route.name, current, body, patch_type))
            return
        obj = store.patch(res.plural, route.namespace, route.name, body, patch_type,
                          subresource=route.sub, dry_run=self.dry_run, manager=self.manager)
        self.h.send_json(200, obj)

    @property
    def manager(self) -> str:
        """The field manager of this write (``fieldManager``, else from the User-Agent, as upstream)."""
        return fieldmanager.manager_of(self.query.get("fieldManager", ""), self.h.headers.get("User-Agent", ""))

    def _apply(self, route: Route, body: Any) -> None:
        """Server-side apply with field ownership (fieldmanager); on a subresource, a merge of the fields."""
        assert route.name is not None
        store, res = self.api.store, route.res
        if not isinstance(body, dict):
            raise bad_request("an apply patch must be an object")
        if not route.sub:
            obj, created = store.apply(res.plural, route.namespace, route.name, body, manager=self.manager,
                                       force=self.query.get("force") == "true", dry_run=self.dry_run)
            self.h.send_json(201 if created else 200, obj)
            return
        try:
            store.get(res.plural, route.namespace, route.name)
        except StoreError as e:
            if e.code != 404 or route.sub:
                raise
            self.h.send_json(201, store.create(res.plural, route.namespace, body, dry_run=self.dry_run,
                                               implicit_namespace=False))
            return
        kind = "strategic" if res.builtin else "merge"
        obj = store.patch(res.plural, route.namespace, route.name, body, kind, subresource=route.sub,
                          dry_run=self.dry_run)
        self.h.send_json(200, obj)

    def _write_scale(self, route: Route, scale: JSON) -> None:
        """Write ``spec.replicas`` of a Scale back to its object (a given resourceVersion is checked)."""
        assert route.name is not None
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise invalid(route.res, route.name, "spec.replicas",
                          f"Invalid value: {replicas!r}: must be greater than or equal to 0")
        rv = (scale.get("metadata") or {}).get("resourceVersion")
        patch: JSON = {"spec": {"replicas": replicas}, **({"metadata": {"resourceVersion": rv}} if rv else {})}
        obj = self.api.store.patch(route.res.plural, route.namespace, route.name, patch, "merge",
                                   dry_run=self.dry_run)
        self.h.send_json(200, scale_of(route.res, obj))

    def _delete(self, route: Route) -> None:
        """DELETE: the object for pods and custom resources, a Success Status for the rest (as upstream)."""
        assert route.name is not None
        options = self._object_body() if self.body.strip() else {}
        options = options if isinstance(options, dict) else {}
        dry = self.dry_run or "All" in (options.get("dryRun") or [])
        propagation = self.query.get("propagationPolicy") or options.get("propagationPolicy") or "Background"
        obj = self.api.store.delete(route.res.plural, route.namespace, route.name, dry_run=dry,
                                    preconditions=options.get("preconditions"), propagation=str(propagation))
        if route.res.plural in ("pods", "namespaces") or not route.res.builtin:
            self.h.send_json(200, obj)
            return
        details = {"name": route.name, "group": route.res.group, "kind": route.res.plural,
                   "uid": obj["metadata"].get("uid")}
        self.h.send_json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                               "details": {k: v for k, v in details.items() if v}})

    def _deletecollection(self, route: Route) -> None:
        """DELETE on a collection: delete every matching object, answer with the list of them."""
        labels, fields = self._filters()
        store, res = self.api.store, route.res
        items, _rv, _ = store.list(res.plural, route.namespace, label_selector=labels, field_selector=fields)
        deleted = []
        for item in items:
            meta = item["metadata"]
            try:
                deleted.append(store.delete(res.plural, meta.get("namespace"), meta["name"], dry_run=self.dry_run))
            except StoreError as e:
                if e.code != 404:  # deleted concurrently: fine
                    raise
        self.h.send_json(200, {"kind": f"{res.kind}List", "apiVersion": res.api_version,
                               "metadata": {"resourceVersion": store.resource_version}, "items": deleted})


def _partial(obj: JSON) -> JSON:
    """An object reduced to a ``meta.k8s.io/v1`` PartialObjectMetadata."""
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata", {})}


def _check_log_available(pod: JSON, container: str, previous: bool) -> None:
    """The kubelet's 400s: no previous instance of a container that never restarted, or one not started."""
    status = pod.get("status") or {}
    statuses = (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
    found = next((c for c in statuses if c.get("name") == container), None)
    name, pod_name = container, (pod.get("metadata") or {}).get("name")
    if previous:
        if not (found and (found.get("lastState") or {}).get("terminated")):
            raise bad_request(f'previous terminated container "{name}" in pod "{pod_name}" not found')
        return
    waiting = ((found or {}).get("state") or {}).get("waiting")
    if waiting is not None and not (found or {}).get("restartCount"):
        reason = waiting.get("reason") or "ContainerCreating"
        raise bad_request(f'container "{name}" in pod "{pod_name}" is waiting to start: {reason}')


def _with_timestamps(pod: JSON, text: str) -> str:
    """``timestamps=true``: each line prefixed with its RFC 3339 nano time, as the kubelet does.

    The sandbox keeps text, not timed entries: a JSON line's own ``ts`` is used when it has one, else the
    pod's start time.
    """
    fallback = str((pod.get("status") or {}).get("startTime") or (pod.get("metadata") or {}).get("creationTimestamp")
                   or "1970-01-01T00:00:00Z")
    out = []
    for line in text.splitlines(keepends=True):
        try:
            stamp = str(json.loads(line).get("ts") or fallback)
        except (ValueError, AttributeError):
            stamp = fallback
        out.append(f"{stamp[:19]}.000000000Z {line}")
    return "".join(out)


def scale_of(res: Resource, obj: JSON) -> JSON:
    """The autoscaling/v1 Scale of an object (Argo's paths for rollouts: .status.HPAReplicas, .status.selector)."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    if res.plural == "rollouts":
        current, selector = status.get("HPAReplicas", 0), status.get("selector", "")
    else:
        labels = (spec.get("selector") or {}).get("matchLabels") or {}
        current, selector = status.get("replicas", 0), ",".join(f"{k}={v}" for k, v in labels.items())
    keep = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
    return {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {k: meta[k] for k in keep if k in meta},
            "spec": {"replicas": spec.get("replicas", 0)}, "status": {"replicas": current, "selector": selector}}


_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def _watch_timeout(query: dict[str, str]) -> float | None:
    """``timeoutSeconds``, else the request ``timeout`` (a Go duration such as ``2s``), as upstream."""
    if query.get("timeoutSeconds"):
        return float(_int_param(query, "timeoutSeconds"))
    text = query.get("timeout", "")
    parts = _GO_DURATION.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _GO_UNITS[u] for n, u in parts)


def _int_param(query: dict[str, str], name: str) -> int:
    """An integer query parameter (400 when it is not one)."""
    try:
        return int(query.get(name) or 0)
    except ValueError:
        raise bad_request(f'invalid value for {name}: "{query[name]}"') from None


__all__ = ["ApiServer", "RecordedRequest", "Route", "User", "allowed", "parse_route", "resource"]
