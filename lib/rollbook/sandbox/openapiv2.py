"""``GET /openapi/v2``: a minimal Swagger 2.0 document, as JSON or as the protobuf kubectl asks for.

kubectl still falls back to OpenAPI v2 (``kubectl explain --output=plaintext-openapiv2``, validation and
apply against servers without v3), and client-go fetches it as gnostic's ``openapi.v2.Document``
protobuf only (``Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf``), so both forms
are served. Definitions are the custom resources' (Rollout, AnalysisRun, ...): for built-in kinds kubectl
keeps using its compiled-in types, whose strategic-merge keys a stub schema would lose.

Hand-written encoder: the protobuf runtime plus gnostic's generated Python types (no maintained PyPI
package ships them) would be a large dependency for the dozen messages below. Field numbers are those
of gnostic's ``openapiv2/OpenAPIv2.proto``.
"""

from __future__ import annotations

import json
from typing import Any

from rollbook.sandbox import openapi, schemas
from rollbook.sandbox.resources import RESOURCES, Resource

JSON = dict[str, Any]
# Asked for as ...spec.v2@v1.0+protobuf; answered as upstream does ("@" is not valid in a media type).
PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
_V3_REF, _V2_REF = "#/components/schemas/", "#/definitions/"


def _v2_schema(value: Any) -> Any:
    """A v3 schema fragment in v2 form (only the $ref prefix differs for what schemas.py writes)."""
    if isinstance(value, dict):
        return {k: (v.replace(_V3_REF, _V2_REF) if k == "$ref" and isinstance(v, str) else _v2_schema(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_v2_schema(v) for v in value]
    return value


def _served(res: Resource) -> bool:
    return not res.builtin


def _operation(res: Resource, sub: str) -> JSON:
    """The PATCH operation of an item path, with the GVK extension kubectl reads."""
    return {
        "operationId": f"patch{res.kind}{sub.capitalize()}",
        "consumes": ["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"],
        "produces": ["application/json"],
        "parameters": [{"name": p, "in": "query", "type": "string", "uniqueItems": True}
                       for p in ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")],
        "responses": {"200": {"description": "OK", "schema": {"$ref": _V2_REF + schemas.schema_name(res)}}},
        "x-kubernetes-action": "patch",
        "x-kubernetes-group-version-kind": {"group": res.group, "version": res.version, "kind": res.kind},
    }


def document() -> JSON:
    """The Swagger 2.0 document (JSON form)."""
    paths: JSON = {}
    definitions: JSON = {}
    for res in (r for r in RESOURCES.values() if _served(r)):
        prefix = f"/apis/{res.group}/{res.version}"
        base = f"{prefix}/namespaces/{{namespace}}/{res.plural}" if res.namespaced else f"{prefix}/{res.plural}"
        paths[f"{base}/{{name}}"] = {"patch": _operation(res, "")}
        if res.has_status:
            paths[f"{base}/{{name}}/status"] = {"patch": _operation(res, "status")}
        definitions[schemas.schema_name(res)] = _v2_schema(schemas.kind_schema(res))
    version = openapi.version_info()["gitVersion"]
    return {"swagger": "2.0", "info": {"title": "Kubernetes (rollbook sandbox)", "version": version},
            "paths": paths, "definitions": definitions}


# --------------------------------------------------------------------------- protobuf


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _bytes(field: int, data: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _str(field: int, text: str) -> bytes:
    return _bytes(field, text.encode()) if text else b""


def _bool(field: int, value: bool) -> bytes:
    return _varint(field << 3) + b"\x01" if value else b""


def _extensions(field: int, obj: JSON) -> bytes:
    """``x-`` keys as NamedAny {name, value: Any {yaml}} (JSON is YAML)."""
    return b"".join(_bytes(field, _str(1, k) + _bytes(2, _str(2, json.dumps(v))))
                    for k, v in obj.items() if k.startswith("x-"))


def _schema(s: JSON) -> bytes:
    """openapi.v2.Schema."""
    out = _str(1, s.get("$ref", "")) + _str(2, s.get("format", "")) + _str(4, s.get("description", ""))
    out += b"".join(_str(19, r) for r in s.get("required") or [])
    extra = s.get("additionalProperties")
    if isinstance(extra, dict):
        out += _bytes(21, _bytes(1, _schema(extra)))
    elif isinstance(extra, bool):
        out += _bytes(21, _varint(2 << 3) + (b"\x01" if extra else b"\x00"))
    if s.get("type"):
        types = s["type"] if isinstance(s["type"], list) else [s["type"]]
        out += _bytes(22, b"".join(_str(1, t) for t in types))
    if isinstance(s.get("items"), dict):
        out += _bytes(23, _bytes(1, _schema(s["items"])))
    out += b"".join(_bytes(24, _schema(a)) for a in s.get("allOf") or [])
    if s.get("properties"):
        out += _bytes(25, b"".join(_bytes(1, _str(1, k) + _bytes(2, _schema(v))) for k, v in s["properties"].items()))
    return out + _extensions(31, s)


def _operation_pb(op: JSON) -> bytes:
    """openapi.v2.Operation: query parameters, the 200 response, vendor extensions."""
    out = _str(5, op.get("operationId", ""))
    out += b"".join(_str(6, p) for p in op.get("produces") or []) + b"".join(_str(7, c) for c in op.get("consumes") or [])
    for p in op.get("parameters") or []:
        query = _bool(1, p.get("required", False)) + _str(2, p["in"]) + _str(4, p["name"]) + _str(6, p["type"])
        query += _bool(20, p.get("uniqueItems", False))
        out += _bytes(8, _bytes(1, _bytes(2, _bytes(3, query))))  # ParametersItem.Parameter.NonBody.Query
    codes = b""
    for code, resp in (op.get("responses") or {}).items():
        response = _str(1, resp.get("description", "")) + _bytes(2, _bytes(1, _schema(resp.get("schema") or {})))
        codes += _bytes(1, _str(1, code) + _bytes(2, _bytes(1, response)))
    return out + _bytes(9, codes) + _extensions(13, op)


_METHODS = {"get": 2, "put": 3, "post": 4, "delete": 5, "patch": 8}


def encode(doc: JSON) -> bytes:
    """The document as a gnostic ``openapi.v2.Document`` protobuf."""
    info = _str(1, doc["info"]["title"]) + _str(2, doc["info"]["version"])
    paths = b"".join(
        _bytes(2, _str(1, path) + _bytes(2, b"".join(_bytes(_METHODS[m], _operation_pb(op)) for m, op in item.items())))
        for path, item in doc["paths"].items())
    definitions = b"".join(_bytes(1, _str(1, name) + _bytes(2, _schema(s))) for name, s in doc["definitions"].items())
    return _str(1, doc["swagger"]) + _bytes(2, info) + _bytes(8, paths) + _bytes(9, definitions)
