"""The Kubernetes protobuf request bodies kubectl sends, decoded to the JSON objects they stand for.

kubectl's typed clients (``kubectl create namespace|configmap|secret|serviceaccount|service|deployment``,
``kubectl auth can-i``) POST ``application/vnd.kubernetes.protobuf`` and do not fall back to JSON on a
415, so a server that wants to be taken for a real one must read them. Only request bodies are decoded:
responses are JSON, which every client accepts.

Hand-written: the protobuf runtime plus generated Kubernetes types (no maintained PyPI package ships
them) would be a large dependency for the dozen small messages below. The field numbers come from the
``generated.proto`` files of k8s.io/api and k8s.io/apimachinery; fields kubectl never sets on these
requests (status, managedFields, timestamps) are skipped rather than guessed.
"""

from __future__ import annotations

import base64
from typing import Any

JSON = dict[str, Any]
ENVELOPE = b"k8s\x00"


class ProtobufError(ValueError):
    """A body that is not a Kubernetes protobuf object we can read."""


# A schema maps a field number to (json name, type). Types: "string", "bytes", "int", "bool", a nested
# schema (dict), ("map", value type), ("list", item type), "intorstring" or "quantity". Go writes every
# non-pointer scalar, zero or not, and its JSON drops zeros (omitempty): so zero values are dropped here,
# except for pointer fields ("int?", "bool?"), where a zero was set on purpose (``--replicas=0``).
Schema = dict[int, tuple[str, Any]]

_OWNER_REF: Schema = {1: ("kind", "string"), 3: ("name", "string"), 4: ("uid", "string"),
                      5: ("apiVersion", "string"), 6: ("controller", "bool"), 7: ("blockOwnerDeletion", "bool")}
OBJECT_META: Schema = {
    1: ("name", "string"), 2: ("generateName", "string"), 3: ("namespace", "string"), 5: ("uid", "string"),
    6: ("resourceVersion", "string"), 11: ("labels", ("map", "string")), 12: ("annotations", ("map", "string")),
    13: ("ownerReferences", ("list", _OWNER_REF)), 14: ("finalizers", ("list", "string")),
}
_LABEL_SELECTOR: Schema = {
    1: ("matchLabels", ("map", "string")),
    2: ("matchExpressions", ("list", {1: ("key", "string"), 2: ("operator", "string"),
                                      3: ("values", ("list", "string"))})),
}
_OBJECT_REF: Schema = {1: ("kind", "string"), 2: ("namespace", "string"), 3: ("name", "string"),
                       5: ("apiVersion", "string")}
_CONTAINER_PORT: Schema = {1: ("name", "string"), 2: ("hostPort", "int"), 3: ("containerPort", "int"),
                           4: ("protocol", "string"), 5: ("hostIP", "string")}
_QUANTITIES: Any = ("map", "quantity")
_CONTAINER: Schema = {
    1: ("name", "string"), 2: ("image", "string"), 3: ("command", ("list", "string")),
    4: ("args", ("list", "string")), 5: ("workingDir", "string"), 6: ("ports", ("list", _CONTAINER_PORT)),
    7: ("env", ("list", {1: ("name", "string"), 2: ("value", "string")})),
    8: ("resources", {1: ("limits", _QUANTITIES), 2: ("requests", _QUANTITIES)}),
    14: ("imagePullPolicy", "string"),
}
_POD_SPEC: Schema = {2: ("containers", ("list", _CONTAINER)), 3: ("restartPolicy", "string"),
                     8: ("serviceAccountName", "string"), 20: ("initContainers", ("list", _CONTAINER))}
_POD_TEMPLATE: Schema = {1: ("metadata", OBJECT_META), 2: ("spec", _POD_SPEC)}
_SERVICE_PORT: Schema = {1: ("name", "string"), 2: ("protocol", "string"), 3: ("port", "int"),
                         4: ("targetPort", "intorstring"), 5: ("nodePort", "int"), 6: ("appProtocol", "string")}

KINDS: dict[str, Schema] = {
    "Namespace": {1: ("metadata", OBJECT_META), 2: ("spec", {1: ("finalizers", ("list", "string"))})},
    "ConfigMap": {1: ("metadata", OBJECT_META), 2: ("data", ("map", "string")),
                  3: ("binaryData", ("map", "bytes")), 4: ("immutable", "bool?")},
    "Secret": {1: ("metadata", OBJECT_META), 2: ("data", ("map", "bytes")), 3: ("type", "string"),
               4: ("stringData", ("map", "string")), 5: ("immutable", "bool?")},
    "ServiceAccount": {1: ("metadata", OBJECT_META), 2: ("secrets", ("list", _OBJECT_REF)),
                       3: ("imagePullSecrets", ("list", {1: ("name", "string")})),
                       4: ("automountServiceAccountToken", "bool?")},
    "Service": {1: ("metadata", OBJECT_META), 2: ("spec", {
        1: ("ports", ("list", _SERVICE_PORT)), 2: ("selector", ("map", "string")), 3: ("clusterIP", "string"),
        4: ("type", "string"), 5: ("externalIPs", ("list", "string")), 7: ("sessionAffinity", "string"),
        10: ("externalName", "string")})},
    "Deployment": {1: ("metadata", OBJECT_META), 2: ("spec", {
        1: ("replicas", "int?"), 2: ("selector", _LABEL_SELECTOR), 3: ("template", _POD_TEMPLATE),
        4: ("strategy", {1: ("type", "string")}), 5: ("minReadySeconds", "int"),
        6: ("revisionHistoryLimit", "int?"), 7: ("paused", "bool"), 9: ("progressDeadlineSeconds", "int?")})},
    "SelfSubjectAccessReview": {1: ("metadata", OBJECT_META), 2: ("spec", {
        1: ("resourceAttributes", {1: ("namespace", "string"), 2: ("verb", "string"), 3: ("group", "string"),
                                   4: ("version", "string"), 5: ("resource", "string"),
                                   6: ("subresource", "string"), 7: ("name", "string")}),
        2: ("nonResourceAttributes", {1: ("path", "string"), 2: ("verb", "string")})})},
    "SelfSubjectReview": {1: ("metadata", OBJECT_META)},
    # `kubectl create token` (k8s.io/api authentication/v1 TokenRequestSpec; sandbox/rbac.py answers it)
    "TokenRequest": {1: ("metadata", OBJECT_META), 2: ("spec", {
        1: ("audiences", ("list", "string")), 4: ("expirationSeconds", "int?"),
        3: ("boundObjectRef", {1: ("kind", "string"), 2: ("apiVersion", "string"), 3: ("name", "string"),
                               4: ("uid", "string")})})},
    "SelfSubjectRulesReview": {1: ("metadata", OBJECT_META), 2: ("spec", {1: ("namespace", "string")})},
}


def decode(body: bytes) -> JSON:
    """The JSON object of a ``k8s\\0``-enveloped protobuf body (apiVersion and kind from its TypeMeta)."""
    if not body.startswith(ENVELOPE):
        raise ProtobufError("the body does not start with the k8s protobuf envelope")
    try:
        unknown = _fields(body[len(ENVELOPE):])
        type_meta = _fields(unknown.get(1, [b""])[0])
        api_version = type_meta.get(1, [b""])[0].decode()
        kind = type_meta.get(2, [b""])[0].decode()
        if unknown.get(3, [b""])[0]:
            raise ProtobufError("a content encoding is not supported")
        schema = KINDS.get(kind)
        if schema is None:
            raise ProtobufError(f"kind {kind or '(none)'} cannot be read from protobuf here; send JSON")
        obj = _message(unknown.get(2, [b""])[0], schema)
    except (IndexError, UnicodeDecodeError) as e:
        raise ProtobufError(f"the protobuf body is malformed: {e}") from e
    return {"apiVersion": api_version, "kind": kind, **obj}


def _varint(data: bytes, i: int) -> tuple[int, int]:
    """A varint at ``i``: (value, next index)."""
    value = shift = 0
    while True:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not byte & 0x80:
            return value, i
        if shift > 63:
            raise ProtobufError("a varint is longer than 10 bytes")


def _fields(data: bytes) -> dict[int, list[Any]]:
    """The raw fields of one message, in order: varints as int, length-delimited as bytes."""
    fields: dict[int, list[Any]] = {}
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        wire_type = key & 7
        value: Any
        if wire_type == 0:
            value, i = _varint(data, i)
        elif wire_type == 2:
            size, i = _varint(data, i)
            if i + size > len(data):
                raise ProtobufError("a length-delimited field runs past the end of its message")
            value, i = data[i:i + size], i + size
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            value, i = data[i:i + size], i + size
        else:
            raise ProtobufError(f"wire type {wire_type} is not used by Kubernetes objects")
        fields.setdefault(key >> 3, []).append(value)
    return fields


def _message(data: bytes, schema: Schema) -> JSON:
    """One message as JSON, by its schema (unknown field numbers are skipped)."""
    out: JSON = {}
    for number, values in _fields(data).items():
        if number not in schema:
            continue
        name, kind = schema[number]
        if isinstance(kind, tuple) and kind[0] == "list":
            out[name] = [_scalar(v, kind[1]) for v in values]
        elif isinstance(kind, tuple) and kind[0] == "map":
            entries = [_fields(v) for v in values]
            out[name] = {e.get(1, [b""])[0].decode(): _scalar(e.get(2, [b""])[0], kind[1]) for e in entries}
        else:
            value = _scalar(values[-1], kind)
            if value in ("", 0, False) and kind in ("string", "int", "bool"):
                continue
            out[name] = value
    return out


def _scalar(value: Any, kind: Any) -> Any:
    """One field value by its type."""
    if isinstance(kind, dict):
        return _message(value, kind)
    if kind == "quantity":  # resource.Quantity: a message whose field 1 is the string form ("500m")
        return _fields(value).get(1, [b""])[0].decode()
    if kind == "string":
        return value.decode()
    if kind == "bytes":  # JSON carries bytes as base64, as the real server's JSON encoding does
        return base64.b64encode(value).decode()
    if kind in ("int", "int?"):
        return value - (1 << 64) if value >= 1 << 63 else value
    if kind in ("bool", "bool?"):
        return bool(value)
    if kind == "intorstring":
        parts = _fields(value)
        if parts.get(1, [0])[0] == 1:
            return parts.get(3, [b""])[0].decode()
        return parts.get(2, [0])[0]
    raise ProtobufError(f"unknown field type {kind!r}")
