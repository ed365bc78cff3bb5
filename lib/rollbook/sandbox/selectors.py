"""Label selectors (the full grammar) and field selectors (per resource), as the real server parses them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rollbook.sandbox.apierrors import StoreError, bad_request
from rollbook.sandbox.resources import Resource

JSON = dict[str, Any]

_KEY = r"[A-Za-z0-9](?:[-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"[-A-Za-z0-9_.]*"
_REQUIREMENT = re.compile(
    rf"^\s*(?:!\s*(?P<nkey>{_KEY})|(?P<key>{_KEY})(?:\s*(?P<op>==|=|!=|>|<)\s*(?P<val>{_VALUE})"
    rf"|\s+(?P<setop>in|notin)\s*\((?P<vals>[^()]*)\))?)\s*$"
)
_LABEL_VALUE = re.compile(r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


@dataclass(frozen=True)
class Requirement:
    """One label requirement: ``key op values`` with op in =, !=, in, notin, exists, !, gt, lt."""

    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether a label set satisfies this requirement (Kubernetes semantics)."""
        present = self.key in labels
        value = labels.get(self.key, "")
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        return present and _compare_int(value, self.values[0], self.op)


def _compare_int(value: str, bound: str, op: str) -> bool:
    """The ``>`` / ``<`` operators compare integers; a non-integer label never matches."""
    try:
        return int(value) > int(bound) if op == ">" else int(value) < int(bound)
    except ValueError:
        return False


def _split_top(text: str) -> list[str]:
    """Split a selector on commas that are not inside ``(...)``."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_label_selector(text: str) -> list[Requirement]:
    """Parse the full label selector grammar; a malformed selector is a 400."""
    if not text.strip():
        return []
    return [_parse_requirement(part, text) for part in _split_top(text)]


def _parse_requirement(part: str, whole: str) -> Requirement:
    """Parse one comma-separated requirement."""
    m = _REQUIREMENT.match(part)
    if not m:
        raise bad_request(f"unable to parse requirement: {part.strip()!r} in label selector {whole!r}")
    if m["nkey"]:
        return Requirement(m["nkey"], "!")
    if m["setop"]:
        values = tuple(v.strip() for v in m["vals"].split(","))
        _check_values(values, whole)
        return Requirement(m["key"], "in" if m["setop"] == "in" else "notin", values)
    if m["op"]:
        op = {"==": "=", ">": "gt", "<": "lt"}.get(m["op"], m["op"])
        if op in ("gt", "lt") and not re.fullmatch(r"-?\d+", m["val"]):
            raise bad_request(f"unable to parse requirement: {m['val']!r} is not an integer in {whole!r}")
        _check_values((m["val"],), whole)
        return Requirement(m["key"], {"gt": ">", "lt": "<"}.get(op, op), (m["val"],))
    return Requirement(m["key"], "exists")


def _check_values(values: tuple[str, ...], whole: str) -> None:
    """Label values must be valid; the real server rejects the selector otherwise."""
    for value in values:
        if len(value) > 63 or not _LABEL_VALUE.match(value):
            raise bad_request(f"unable to parse requirement: invalid label value: {value!r} in {whole!r}")


def labels_match(requirements: list[Requirement], obj: JSON) -> bool:
    """Whether an object's labels satisfy every requirement."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(r.matches(labels) for r in requirements)


# --------------------------------------------------------------------------- field selectors

_COMMON_FIELDS = ("metadata.name", "metadata.namespace")
_EXTRA_FIELDS: dict[str, tuple[str, ...]] = {
    "pods": (
        "status.phase", "spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
        "spec.serviceAccountName", "spec.hostNetwork", "status.podIP", "status.nominatedNodeName",
    ),
    "events": (
        "involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
        "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
        "reason", "reportingComponent", "source", "type",
    ),
    "namespaces": ("status.phase",),
    "replicasets": ("status.replicas",),
}


@dataclass(frozen=True)
class FieldRequirement:
    """One field requirement: ``path=value`` or ``path!=value``."""

    path: str
    equal: bool
    value: str

    def matches(self, obj: JSON) -> bool:
        """Whether the object's field (as the server renders it to a string) satisfies this requirement."""
        return (_field_value(obj, self.path) == self.value) == self.equal


def _field_value(obj: JSON, path: str) -> str:
    """A field's value as the real field-label functions render it (missing is "")."""
    if path == "source":
        path = "source.component"
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return "" if cur is None else str(cur)


def parse_field_selector(text: str, res: Resource) -> list[FieldRequirement]:
    """Parse ``a=b,c!=d``; unsupported fields are a 400, as on the real server."""
    reqs = []
    for part in (p for p in text.split(",") if p.strip()):
        m = re.fullmatch(r"\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*", part)
        if not m:
            raise bad_request(f'invalid selector: {text!r}; can\'t understand "{part}"')
        path, op, value = m.groups()
        if path not in _COMMON_FIELDS + _EXTRA_FIELDS.get(res.plural, ()):
            raise _unsupported_field(res, path)
        reqs.append(FieldRequirement(path, op != "!=", value))
    return reqs


def _unsupported_field(res: Resource, path: str) -> StoreError:
    """The 400 for a field the resource cannot be selected by, in the real message forms."""
    if res.builtin:
        return bad_request(f"field label not supported: {path}")
    return bad_request(f'"{path}" is not a known field selector: only "metadata.name", "metadata.namespace"')

