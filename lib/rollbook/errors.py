"""The rollbook error hierarchy.

Every error says what failed, on which object, and what to do next. Retryable errors (the
service may answer next time) derive from :class:`Retryable`; everything else is final.

    RollbookError
    ├── UsageError                 bad command-line usage or parameters (exit 2)
    │   └── ParameterError         a notebook parameter is unknown, missing or of the wrong type
    ├── ConfigError                missing kubeconfig/context, token file, config file
    ├── PreconditionError          a step refuses to act: the world is not as required
    ├── ClusterError               anything the Kubernetes API said or failed to say
    │   ├── NotFound               404
    │   ├── Unauthorized           401 (bad or missing credentials)
    │   ├── Forbidden              403 (RBAC)
    │   ├── Conflict               409 (stale resourceVersion, already exists)
    │   ├── Invalid                400/422/415 (the request was wrong)
    │   └── ClusterUnavailable     connection error, timeout, 5xx  (Retryable)
    ├── EvidenceError              anything Mission Control (MC) said or failed to say
    │   ├── MCAuthError            401/403, names the missing scope
    │   ├── MCNotFound             404 with MC's code (release_not_found, ...)
    │   ├── MCConflict             409 (digest_mismatch, release_conflict)
    │   ├── MCValidationError      400/415/422, lists the fields
    │   ├── MCProtocolError        a 2xx that is not JSON or not the contract's shape
    │   └── MCUnavailable          429/5xx/timeouts after bounded retries  (Retryable)
    └── StepError                  a runbook step could not run (runner side)
"""

from __future__ import annotations

from typing import Any


class RollbookError(Exception):
    """Base class: a message that names the object and the next step."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} {hint}" if hint else message)


class Retryable:
    """Marker mixin: the same call may succeed later."""


class UsageError(RollbookError):
    """Bad command-line usage; nothing was run."""

    exit_code = 2


class ParameterError(UsageError):
    """A notebook parameter is unknown, missing or of the wrong type."""

    def __init__(self, message: str, *, parameter: str, hint: str | None = None) -> None:
        self.parameter = parameter
        super().__init__(message, hint=hint)


class ConfigError(RollbookError):
    """Configuration (kubeconfig, context, token file, config file) is missing or wrong."""


class PreconditionError(RollbookError):
    """A step refuses to act because the world is not as its preconditions require."""


class StepError(RollbookError):
    """A runbook step failed to execute (cell error, timeout, kernel death)."""

    exit_code = 3


# --------------------------------------------------------------------------- cluster


class ClusterError(RollbookError):
    """The Kubernetes API refused or failed a request."""

    def __init__(
        self,
        message: str,
        *,
        kind: str | None = None,
        name: str | None = None,
        namespace: str | None = None,
        context: str | None = None,
        status: int | None = None,
        reason: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.kind = kind
        self.name = name
        self.namespace = namespace
        self.context = context
        self.status = status
        self.reason = reason
        super().__init__(message, hint=hint)


class NotFound(ClusterError):
    """HTTP 404 from the Kubernetes API."""


class Unauthorized(ClusterError):
    """HTTP 401: the credentials were not accepted."""


class Forbidden(ClusterError):
    """HTTP 403: the identity may not do this (RBAC)."""


class Conflict(ClusterError):
    """HTTP 409: the object changed since it was read, or already exists."""


class Invalid(ClusterError):
    """HTTP 400/415/422: the request itself was wrong."""


class MalformedObject(ClusterError):
    """An object's field holds a value of a type the API never serves there (a hand-edited or foreign object)."""


def malformed(kind: str, obj: Any, error: Exception) -> MalformedObject:
    """A MalformedObject naming the object and what broke, with the command to look at it."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    name, namespace = str(meta.get("name") or "?"), str(meta.get("namespace") or "?")
    return MalformedObject(
        f"{kind} {name!r} in namespace {namespace!r} has a field of an unexpected type ({type(error).__name__}: "
        f"{str(error)[:120]}); rollbook cannot read it.", kind=kind, name=name, namespace=namespace,
        hint=f"Look at it with: kubectl get {kind.lower()} {name} -n {namespace} -o yaml (was it edited by hand?).")


class ClusterUnavailable(ClusterError, Retryable):
    """The API server could not be reached, timed out, or answered 5xx."""


# --------------------------------------------------------------------------- evidence (MC)


class EvidenceError(RollbookError):
    """Mission Control (MC) refused or failed a request."""

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        status: int | None = None,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        request_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.url = url
        self.status = status
        self.code = code
        self.details = details or {}
        self.request_id = request_id
        super().__init__(message, hint=hint)


class MCAuthError(EvidenceError):
    """401/403 from MC: missing or insufficient token scope."""


class MCNotFound(EvidenceError):
    """404 from MC: unknown release, policy, service or no current release."""


class MCConflict(EvidenceError):
    """409 from MC: digest mismatch or release conflict."""


class MCValidationError(EvidenceError):
    """400/415/422 from MC: the request payload was rejected."""


class MCProtocolError(EvidenceError):
    """MC answered 2xx with something that is not the contract (e.g. an SSO login page)."""


class MCUnavailable(EvidenceError, Retryable):
    """MC did not answer usefully after bounded retries (429, 5xx, timeouts, connection errors)."""
