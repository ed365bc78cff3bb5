"""Decoding the protobuf bodies kubectl's typed clients send (the real-kubectl round trips are in
tests/integration/test_kubectl.py; these cover the wire details and the malformed cases)."""

from __future__ import annotations

import pytest

from rollbook.sandbox.protobuf import ProtobufError, decode


def varint(n: int) -> bytes:
    """A protobuf varint (negative numbers as 64-bit two's complement, like Go)."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def field(number: int, value: bytes | int) -> bytes:
    """One field: an int as a varint, bytes as length-delimited."""
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    return varint(number << 3 | 2) + varint(len(value)) + value


def entry(key: str, value: bytes) -> bytes:
    """A map entry message."""
    return field(1, key.encode()) + field(2, value)


def envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    """The ``k8s\\0`` + runtime.Unknown wrapping."""
    type_meta = field(1, api_version.encode()) + field(2, kind.encode())
    return b"k8s\x00" + field(1, type_meta) + field(2, raw) + field(3, b"") + field(4, b"")


def meta(name: str, namespace: str = "") -> bytes:
    """An ObjectMeta with Go's habit of writing empty strings."""
    return field(1, name.encode()) + field(2, b"") + field(3, namespace.encode()) + field(11, entry("app", b"api"))


def test_a_configmap_with_text_and_binary_data() -> None:
    raw = field(1, meta("settings", "prod")) + field(2, entry("mode", b"fast")) + field(3, entry("blob", b"\x00\xff"))
    assert decode(envelope("v1", "ConfigMap", raw)) == {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "prod", "labels": {"app": "api"}},
        "data": {"mode": "fast"}, "binaryData": {"blob": "AP8="},
    }


def test_zero_scalars_are_dropped_but_pointer_zeros_kept() -> None:
    spec = field(1, 0) + field(5, 0) + field(7, 0)  # replicas (pointer) 0, minReadySeconds 0, paused false
    obj = decode(envelope("apps/v1", "Deployment", field(1, meta("web")) + field(2, spec)))
    assert obj["spec"] == {"replicas": 0}


def test_int_or_string_and_negative_numbers() -> None:
    port = field(3, 80) + field(4, field(1, 1) + field(3, b"http")) + field(5, 0)
    other = field(3, 443) + field(4, field(1, 0) + field(2, 8443))
    spec = field(1, port) + field(1, other)
    obj = decode(envelope("v1", "Service", field(1, meta("web")) + field(2, spec)))
    assert obj["spec"]["ports"] == [{"port": 80, "targetPort": "http"}, {"port": 443, "targetPort": 8443}]
    deploy = decode(envelope("apps/v1", "Deployment", field(2, field(6, -1))))
    assert deploy["spec"]["revisionHistoryLimit"] == -1


@pytest.mark.parametrize(("body", "message"), [
    (b'{"kind": "ConfigMap"}', "envelope"),
    (envelope("v1", "Pod", b""), "kind Pod cannot be read from protobuf"),
    (envelope("v1", "ConfigMap", field(2, b"xx")[:-1]), "past the end"),
    (envelope("v1", "ConfigMap", b"\x0b"), "wire type 3"),
    (b"k8s\x00" + field(1, field(1, b"v1") + field(2, b"ConfigMap")) + field(3, b"gzip"), "content encoding"),
])
def test_malformed_or_unsupported_bodies_are_refused(body: bytes, message: str) -> None:
    with pytest.raises(ProtobufError, match=message):
        decode(body)
