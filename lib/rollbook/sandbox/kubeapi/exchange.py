"""One HTTP request and its response: what every layer and route of the API server works on."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from typing import Any, Protocol

import yaml

from rollbook.sandbox import fieldmanager, protobuf, tables, validation
from rollbook.sandbox.apierrors import StoreError, bad_request
from rollbook.sandbox.kubeapi.authz import User
from rollbook.sandbox.kubeapi.routing import Route
from rollbook.sandbox.store import Store

JSON = dict[str, Any]


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


class Wire(Protocol):
    """The connection an exchange answers on (the HTTP handler)."""

    close_connection: bool

    def send_bytes(self, code: int, data: bytes, content_type: str) -> None: ...

    def stream_json_lines(self, events: Iterator[JSON]) -> None: ...


@dataclass
class Exchange:
    """One request: method, path, query, headers, body, the token's user; and how to answer it."""

    wire: Wire
    method: str
    path: str
    query: dict[str, str]
    headers: Message
    body: bytes
    user: User | None
    store: Store
    url: str  # the server's own https://127.0.0.1:PORT
    stopping: threading.Event

    # ------------------------------------------------------------------ answering

    def send_bytes(self, code: int, data: bytes, content_type: str) -> None:
        """A complete response with Content-Length."""
        self.wire.send_bytes(code, data, content_type)

    def send_json(self, code: int, obj: Any) -> None:
        """A JSON response."""
        self.wire.send_bytes(code, json.dumps(obj, separators=(",", ":")).encode(), "application/json")

    def stream_json_lines(self, events: Iterator[JSON]) -> None:
        """A chunked stream of JSON lines (a watch)."""
        self.wire.stream_json_lines(events)

    # ------------------------------------------------------------------ what the request asks

    @property
    def accept(self) -> str:
        """The Accept header."""
        return self.headers.get("Accept", "")

    @property
    def content_type(self) -> str:
        """The media type of the body, without parameters."""
        return self.headers.get("Content-Type", "application/json").split(";")[0].strip()

    @property
    def wants_table(self) -> bool:
        """kubectl's human ``get`` asks for ``application/json;as=Table;...``."""
        return "as=Table" in self.accept

    @property
    def dry_run(self) -> bool:
        """``dryRun=All`` (any other value is a 400, as on the real server)."""
        value = self.query.get("dryRun", "")
        if value not in ("", "All"):
            raise bad_request(f'dryRun: Unsupported value: "{value}": supported values: "All"')
        return value == "All"

    @property
    def manager(self) -> str:
        """The field manager of this write (``fieldManager``, else from the User-Agent, as upstream)."""
        return fieldmanager.manager_of(self.query.get("fieldManager", ""), self.headers.get("User-Agent", ""))

    def filters(self) -> tuple[str, str]:
        """labelSelector and fieldSelector."""
        return self.query.get("labelSelector", ""), self.query.get("fieldSelector", "")

    def int_param(self, name: str) -> int:
        """An integer query parameter (400 when it is not one)."""
        return int_param(self.query, name)

    def object_body(self) -> JSON:
        """The request body as an object (JSON, or YAML when sent as YAML, or kubectl's protobuf)."""
        ctype = self.content_type
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

    def validate_fields(self, route: Route, body: Any) -> None:
        """``fieldValidation=Strict`` (kubectl's default): unknown fields are a 400, as on the real server."""
        mode = self.query.get("fieldValidation", "")
        if mode not in ("", "Ignore", "Warn", "Strict"):
            raise bad_request(f'fieldValidation: Unsupported value: "{mode}": supported values: "Ignore", "Strict", '
                              '"Warn"')
        if mode == "Strict" and route.sub in (None, "status"):
            validation.check_strict(route.res, body)

    def table_or(self, route: Route, objects: list[JSON], list_meta: JSON | None = None) -> JSON:
        """A Table of ``objects`` for kubectl's human output."""
        include = self.query.get("includeObject", "Metadata")
        return tables.table(route.res, objects, include_object=include, list_meta=list_meta)


def int_param(query: dict[str, str], name: str) -> int:
    """An integer query parameter (400 when it is not one)."""
    try:
        return int(query.get(name) or 0)
    except ValueError:
        raise bad_request(f'invalid value for {name}: "{query[name]}"') from None
