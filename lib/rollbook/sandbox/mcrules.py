"""MC's rules: constants, the error reply, evidence validity rules, verdict reasons, payload checks."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

RELEASE_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
ITEM_TYPES = ("junit", "sbom", "security-scan", "approval", "generic")
DEPLOYMENT_KINDS = ("promotion", "rollback")
READ_SCOPE, WRITE_SCOPE = "evidence:read", "evidence:write"
REASON_MAX = 512
MAX_BODY = 1 << 20
MAX_FAULT_DELAY = 30.0

Json = dict[str, Any]

LOGIN_PAGE = (
    "<!DOCTYPE html><html><head><title>Sign in - Corporate SSO</title></head><body>"
    "<h1>Sign in</h1><form method=\"post\" action=\"/sso/login\"><input name=\"username\">"
    "<input name=\"password\" type=\"password\"><button>Sign in</button></form></body></html>"
)


class MCAPIError(Exception):
    """An MC error reply: becomes ``{"error", "message", "details", "request_id"}`` on the wire."""

    def __init__(self, status: int, code: str, message: str, details: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})
        self.headers = dict(headers or {})
        super().__init__(f"{status} {code}: {message}")


def rfc3339(moment: datetime) -> str:
    """A UTC timestamp as MC writes it (seconds precision, `Z`)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fake_digest(seed: str) -> str:
    """A stable made-up sha256 digest for a release that the scenario gave none."""
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def jsonable(value: Any) -> Any:
    """A deep copy where YAML's parsed timestamps (datetime/date) become RFC 3339 strings again."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return rfc3339(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, date):
        return value.isoformat()
    return value


def utcnow() -> datetime:
    return datetime.now(UTC)


def count_of(value: Any) -> int | None:
    """An integer count, or None (bool is an int in Python but never a count)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def counted(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def short_digest(digest: str) -> str:
    return digest[:19] + "…" if len(digest) > 20 else digest


# --------------------------------------------------------------------------- validity rules


def _check_junit(summary: Mapping[str, Any], _req: Mapping[str, Any] | None) -> tuple[str, str]:
    total = count_of(summary.get("total", summary.get("tests")))
    failures, errors = count_of(summary.get("failures", 0)), count_of(summary.get("errors", 0))
    if total is None or failures is None or errors is None:
        return "invalid", "junit summary lacks integer total/failures/errors counts"
    if total <= 0:
        return "invalid", "junit report contains no tests"
    if failures or errors:
        return "invalid", (f"junit report has {counted(failures, 'failure')} and {counted(errors, 'error')} "
                           f"in {counted(total, 'test')}")
    return "valid", f"{counted(total, 'test')}, no failures or errors"


def _check_scan(summary: Mapping[str, Any], req: Mapping[str, Any] | None) -> tuple[str, str]:
    critical = count_of(summary.get("critical"))
    limit = count_of((req or {}).get("max_critical", 0)) or 0
    if critical is None:
        return "invalid", "security scan summary lacks an integer critical count"
    if critical > limit:
        return "invalid", f"security scan has {counted(critical, 'critical finding')} (at most {limit} allowed)"
    return "valid", f"{counted(critical, 'critical finding')} (at most {limit} allowed)"


def _check_approval(summary: Mapping[str, Any], _req: Mapping[str, Any] | None) -> tuple[str, str]:
    if summary.get("approved") is True:
        by = summary.get("approver") or summary.get("approved_by")
        return "valid", f"approved by {by}" if by else "approved"
    return "invalid", "change is not approved"


_CHECKS: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any] | None], tuple[str, str]]] = {
    "junit": _check_junit,
    "security-scan": _check_scan,
    "approval": _check_approval,
}


def evaluate_item(item: Mapping[str, Any], requirement: Mapping[str, Any] | None,
                  artifact_digest: str) -> tuple[str, str]:
    """(state, reason) of one item under the stand-in rules; a scenario's explicit state wins."""
    if item.get("_state"):
        return str(item["_state"]), str(item.get("_reason") or f"marked {item['_state']} by the scenario")
    subject = item.get("subject_digest")
    if subject and subject != artifact_digest:
        return "invalid", (f"subject digest {short_digest(subject)} is not the release's artifact digest "
                           f"{short_digest(artifact_digest)}")
    if requirement and requirement.get("type") != item.get("type"):
        return "invalid", f"expected a {requirement.get('type')} item, got {item.get('type')}"
    check = _CHECKS.get(str(item.get("type")))
    return check(item.get("summary") or {}, requirement) if check else ("valid", "present")


def requirement_label(req: Mapping[str, Any]) -> str:
    return f"{req['name']} ({req['type']})"


def verdict_reason(status: str, policy: str, slots: list[tuple[Json, Json | None, str, str]]) -> str:
    """The one deterministic sentence of a verdict, in policy order, invalid first."""
    invalid = [f"{requirement_label(r)}: {why}" for r, _i, state, why in slots if state == "invalid"]
    missing = [requirement_label(r) for r, _i, state, _w in slots if state == "missing"]
    pending = [requirement_label(r) for r, _i, state, _w in slots if state == "pending"]
    parts = []
    if invalid:
        parts.append("invalid evidence: " + "; ".join(invalid))
    if missing:
        parts.append("missing required evidence: " + ", ".join(missing))
    if pending:
        parts.append("evidence pending evaluation: " + ", ".join(pending))
    if status == "passed":
        labels = ", ".join(requirement_label(r) for r, *_ in slots)
        parts = [f"all required evidence is valid: {labels}" if labels else f"policy {policy} requires no evidence"]
    reason = "; ".join(parts)
    return reason if len(reason) <= REASON_MAX else reason[: REASON_MAX - 1] + "…"


# --------------------------------------------------------------------------- payload validation


def check_fields(body: Mapping[str, Any], rules: Mapping[str, tuple[bool, Callable[[Any], bool], str]]
                  ) -> dict[str, str]:
    """Field -> complaint for every rule (required, test, what it must be) the body breaks."""
    problems: dict[str, str] = {}
    for name, (required, ok, must) in rules.items():
        if body.get(name) is None:
            if required:
                problems[name] = "required"
        elif not ok(body[name]):
            problems[name] = f"must be {must}"
    return problems


def _is_str(v: Any) -> bool:
    return isinstance(v, str) and 0 < len(v) <= 2048


def _matches(rx: re.Pattern[str]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, str) and bool(rx.match(v))


def _is_str_map(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())


ITEM_RULES = {
    "name": (True, _matches(RELEASE_ID_RE), "a slot name like test-report"),
    "type": (True, lambda v: v in ITEM_TYPES, "one of " + ", ".join(ITEM_TYPES)),
    "digest": (False, _matches(DIGEST_RE), "sha256:<64 hex>"),
    "subject_digest": (False, _matches(DIGEST_RE), "sha256:<64 hex>"),
    "uri": (False, _is_str, "a string"),
    "summary": (False, lambda v: isinstance(v, dict), "an object"),
    "annotations": (False, _is_str_map, "an object of strings"),
    "created_by": (False, _is_str, "a string"),
}

DEPLOYMENT_RULES = {
    "service": (True, _matches(DNS_LABEL_RE), "a DNS label"),
    "release_id": (True, _matches(RELEASE_ID_RE), "a release id"),
    "artifact_digest": (True, _matches(DIGEST_RE), "sha256:<64 hex>"),
    "kind": (True, lambda v: v in DEPLOYMENT_KINDS, "promotion or rollback"),
    "source": (False, _is_str, "a string"),
    "observed_at": (False, lambda v: parse_time(v) is not None, "an RFC 3339 timestamp"),
}


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def rejected(code: str, what: str, problems: Mapping[str, str]) -> MCAPIError:
    listed = ", ".join(f"{k} ({v})" for k, v in problems.items())
    return MCAPIError(422, code, f"{what} rejected: {listed}", {"fields": dict(problems)})
