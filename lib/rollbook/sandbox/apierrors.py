"""Errors in the real API server's ``Status`` forms (NotFound, Conflict, Invalid, ...)."""

from __future__ import annotations

from typing import Any, Protocol

JSON = dict[str, Any]


class Resource(Protocol):
    """What an error message needs of a resource (``sandbox.resources.Resource``)."""

    @property
    def plural(self) -> str: ...

    @property
    def group(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def qualified(self) -> str: ...

    @property
    def qualified_kind(self) -> str: ...


class StoreError(Exception):
    """A refused request; becomes a Kubernetes ``Status`` object on the wire."""

    def __init__(self, code: int, reason: str, message: str, details: JSON | None = None) -> None:
        self.code = code
        self.reason = reason
        self.message = message
        self.details: JSON = details or {}
        super().__init__(message)

    def to_status(self) -> JSON:
        """The ``Status`` object the real API server sends for this error."""
        status: JSON = {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        }
        if self.details:
            status["details"] = self.details
        return status


def _details(res: Resource, name: str) -> JSON:
    """Status details as the real server fills them (kind is the resource plural)."""
    return {k: v for k, v in (("name", name), ("group", res.group), ("kind", res.plural)) if v}


def not_found(res: Resource, name: str) -> StoreError:
    """404 in the real message form: ``rollouts.argoproj.io "api" not found``."""
    return StoreError(404, "NotFound", f'{res.qualified} "{name}" not found', _details(res, name))


def already_exists(res: Resource, name: str) -> StoreError:
    """409 AlreadyExists for a create of an existing name."""
    return StoreError(409, "AlreadyExists", f'{res.qualified} "{name}" already exists', _details(res, name))


def conflict(res: Resource, name: str, why: str = "") -> StoreError:
    """409 Conflict for a stale resourceVersion or failed precondition."""
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    msg = f'Operation cannot be fulfilled on {res.qualified} "{name}": {why}'
    return StoreError(409, "Conflict", msg, _details(res, name))


def bad_request(message: str) -> StoreError:
    """400 BadRequest."""
    return StoreError(400, "BadRequest", message)


def invalid(res: Resource, name: str, field_path: str, why: str, cause: str = "FieldValueInvalid") -> StoreError:
    """422 Invalid in the real form: ``Rollout.argoproj.io "api" is invalid: spec: ...``."""
    details = {
        "name": name, "group": res.group, "kind": res.kind,
        "causes": [{"reason": cause, "message": why, "field": field_path}],
    }
    details = {k: v for k, v in details.items() if v}
    return StoreError(422, "Invalid", f'{res.qualified_kind} "{name}" is invalid: {field_path}: {why}', details)


def expired(message: str) -> StoreError:
    """410 Expired: a watch or continue from a resourceVersion older than the kept history."""
    return StoreError(410, "Expired", message)


def unsupported_patch() -> StoreError:
    """415 for strategic merge on a custom resource, in the real message form."""
    return StoreError(
        415, "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
    )

