"""Discovery, health and OpenAPI documents (non-resource URLs)."""

from __future__ import annotations

from typing import Any

from rollbook.sandbox import openapi, openapiv2
from rollbook.sandbox.kubeapi.routing import NOT_FOUND

JSON = dict[str, Any]
HEALTH_PATHS = ("/healthz", "/livez", "/readyz")


def document(path: str, url: str, accept: str = "") -> JSON | tuple[bytes, str] | None:
    """What a GET of ``path`` answers (bytes and their content type when not JSON), or None when it is no
    such URL. An unknown ``/openapi/...`` document is a 404.
    """
    path = path.rstrip("/") or "/"
    host = url.removeprefix("https://")
    if path in HEALTH_PATHS:
        return b"ok", "text/plain; charset=utf-8"
    if path == "/openapi/v2":
        if "protobuf" in accept:  # client-go asks for gnostic's protobuf only
            return openapiv2.encode(openapiv2.document()), openapiv2.PROTOBUF
        return openapiv2.document()
    if path.startswith("/openapi/"):
        return _openapi(path)
    fixed = {"/version": openapi.version_info, "/api": lambda: openapi.api_versions(host),
             "/apis": openapi.api_group_list}
    return fixed[path]() if path in fixed else _group_doc(path)


def _group_doc(path: str) -> JSON | None:
    """``/api/v1``, ``/apis/{g}`` and ``/apis/{g}/{v}``."""
    parts = path.strip("/").split("/")
    if parts[0] == "api" and len(parts) == 2:
        return openapi.resource_list("", parts[1])
    if parts[0] == "apis" and len(parts) == 2:
        return openapi.api_group(parts[1])
    if parts[0] == "apis" and len(parts) == 3:
        return openapi.resource_list(parts[1], parts[2])
    return None


def _openapi(path: str) -> JSON:
    """``/openapi/v3`` and its per-group documents."""
    if path == "/openapi/v3":
        return openapi.openapi_index()
    doc = openapi.openapi_document(path.removeprefix("/openapi/v3/")) if path.startswith("/openapi/v3/") else None
    if doc is None:
        raise NOT_FOUND
    return doc
