"""Faults the MC stand-in can inject (admin route), and its request log."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rollbook.sandbox.mcrules import (
    MAX_FAULT_DELAY,
    check_fields,
    count_of,
    rejected,
)

Json = dict[str, Any]


@dataclass
class Fault:
    """For the next `times` requests under `path_prefix`: wait `delay`, then answer `status` or HTML."""

    path_prefix: str = "/api"
    times: int = 1
    status: int | None = None
    delay: float = 0.0
    html: bool = False
    retry_after: int | None = None

    @classmethod
    def from_json(cls, body: Any) -> Fault:
        """Validate an admin fault request."""
        if not isinstance(body, dict):
            raise rejected("invalid_fault", "fault", {"(body)": "must be a JSON object"})
        fault = cls(**{k: body[k] for k in body if k in cls.__dataclass_fields__ and body[k] is not None})
        problems = check_fields(asdict(fault), {
            "path_prefix": (True, lambda v: isinstance(v, str) and v.startswith("/"), "a path starting with /"),
            "times": (True, lambda v: count_of(v) is not None and v >= 1, "an integer >= 1"),
            "status": (False, lambda v: count_of(v) is not None and 100 <= v <= 599, "an HTTP status"),
            "delay": (True, lambda v: isinstance(v, (int, float)) and 0 <= v <= MAX_FAULT_DELAY,
                      f"seconds between 0 and {MAX_FAULT_DELAY}"),
            "html": (True, lambda v: isinstance(v, bool), "true or false"),
            "retry_after": (False, lambda v: count_of(v) is not None and v >= 0, "an integer >= 0"),
        })
        if problems:
            raise rejected("invalid_fault", "fault", problems)
        return fault


@dataclass(frozen=True)
class RecordedRequest:
    """One request the stand-in received; the Authorization header is masked, the scope kept."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: bytes
    authorization: str | None
    scope: str | None
    idempotency_key: str | None
    status: int
    request_id: str
    at: str

    def to_json(self) -> Json:
        """JSON-safe form for GET /admin/requests."""
        out = asdict(self)
        out["body"] = self.body.decode("utf-8", "replace")
        return out


FAULT_CODES = {429: "rate_limited", 500: "internal_error", 502: "unavailable", 503: "unavailable",
                504: "unavailable", 401: "unauthorized", 403: "forbidden"}

