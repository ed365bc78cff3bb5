"""The Mission Control (MC) stand-in: the evidence API of evidence-api.md over HTTP on 127.0.0.1.

State has the shape of a scenario's ``mc.yaml``; verdicts are evaluated at read time with the
stand-in validity rules, so attaching a missing report flips the gate at once. The standard
library's threading HTTP server is enough (and, unlike asyncio, cannot deadlock a synchronous client
running in the same process). Admin routes for tests (reset, fault injection, request log) exist
only with ``admin=True``.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, unquote, urlsplit

log = logging.getLogger(__name__)

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


def _jsonable(value: Any) -> Any:
    """A deep copy where YAML's parsed timestamps (datetime/date) become RFC 3339 strings again."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return rfc3339(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, date):
        return value.isoformat()
    return value


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _count(value: Any) -> int | None:
    """An integer count, or None (bool is an int in Python but never a count)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _n(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _short(digest: str) -> str:
    return digest[:19] + "…" if len(digest) > 20 else digest


# --------------------------------------------------------------------------- validity rules


def _check_junit(summary: Mapping[str, Any], _req: Mapping[str, Any] | None) -> tuple[str, str]:
    total = _count(summary.get("total", summary.get("tests")))
    failures, errors = _count(summary.get("failures", 0)), _count(summary.get("errors", 0))
    if total is None or failures is None or errors is None:
        return "invalid", "junit summary lacks integer total/failures/errors counts"
    if total <= 0:
        return "invalid", "junit report contains no tests"
    if failures or errors:
        return "invalid", (f"junit report has {_n(failures, 'failure')} and {_n(errors, 'error')} "
                           f"in {_n(total, 'test')}")
    return "valid", f"{_n(total, 'test')}, no failures or errors"


def _check_scan(summary: Mapping[str, Any], req: Mapping[str, Any] | None) -> tuple[str, str]:
    critical = _count(summary.get("critical"))
    limit = _count((req or {}).get("max_critical", 0)) or 0
    if critical is None:
        return "invalid", "security scan summary lacks an integer critical count"
    if critical > limit:
        return "invalid", f"security scan has {_n(critical, 'critical finding')} (at most {limit} allowed)"
    return "valid", f"{_n(critical, 'critical finding')} (at most {limit} allowed)"


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
        return "invalid", (f"subject digest {_short(subject)} is not the release's artifact digest "
                           f"{_short(artifact_digest)}")
    if requirement and requirement.get("type") != item.get("type"):
        return "invalid", f"expected a {requirement.get('type')} item, got {item.get('type')}"
    check = _CHECKS.get(str(item.get("type")))
    return check(item.get("summary") or {}, requirement) if check else ("valid", "present")


def _label(req: Mapping[str, Any]) -> str:
    return f"{req['name']} ({req['type']})"


def verdict_reason(status: str, policy: str, slots: list[tuple[Json, Json | None, str, str]]) -> str:
    """The one deterministic sentence of a verdict, in policy order, invalid first."""
    invalid = [f"{_label(r)}: {why}" for r, _i, state, why in slots if state == "invalid"]
    missing = [_label(r) for r, _i, state, _w in slots if state == "missing"]
    pending = [_label(r) for r, _i, state, _w in slots if state == "pending"]
    parts = []
    if invalid:
        parts.append("invalid evidence: " + "; ".join(invalid))
    if missing:
        parts.append("missing required evidence: " + ", ".join(missing))
    if pending:
        parts.append("evidence pending evaluation: " + ", ".join(pending))
    if status == "passed":
        labels = ", ".join(_label(r) for r, *_ in slots)
        parts = [f"all required evidence is valid: {labels}" if labels else f"policy {policy} requires no evidence"]
    reason = "; ".join(parts)
    return reason if len(reason) <= REASON_MAX else reason[: REASON_MAX - 1] + "…"


# --------------------------------------------------------------------------- payload validation


def _check_fields(body: Mapping[str, Any], rules: Mapping[str, tuple[bool, Callable[[Any], bool], str]]
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


_ITEM_RULES = {
    "name": (True, _matches(RELEASE_ID_RE), "a slot name like test-report"),
    "type": (True, lambda v: v in ITEM_TYPES, "one of " + ", ".join(ITEM_TYPES)),
    "digest": (False, _matches(DIGEST_RE), "sha256:<64 hex>"),
    "subject_digest": (False, _matches(DIGEST_RE), "sha256:<64 hex>"),
    "uri": (False, _is_str, "a string"),
    "summary": (False, lambda v: isinstance(v, dict), "an object"),
    "annotations": (False, _is_str_map, "an object of strings"),
    "created_by": (False, _is_str, "a string"),
}

_DEPLOYMENT_RULES = {
    "service": (True, _matches(DNS_LABEL_RE), "a DNS label"),
    "release_id": (True, _matches(RELEASE_ID_RE), "a release id"),
    "artifact_digest": (True, _matches(DIGEST_RE), "sha256:<64 hex>"),
    "kind": (True, lambda v: v in DEPLOYMENT_KINDS, "promotion or rollback"),
    "source": (False, _is_str, "a string"),
    "observed_at": (False, lambda v: _parse_time(v) is not None, "an RFC 3339 timestamp"),
}


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def _rejected(code: str, what: str, problems: Mapping[str, str]) -> MCAPIError:
    listed = ", ".join(f"{k} ({v})" for k, v in problems.items())
    return MCAPIError(422, code, f"{what} rejected: {listed}", {"fields": dict(problems)})


# --------------------------------------------------------------------------- the data


class MCState:
    """Services and policies, releases, evidence and current pointers; not thread-safe on its own."""

    def __init__(self, state: Mapping[str, Any], *, clock: Callable[[], datetime] = _utcnow,
                 base_url: Callable[[], str | None] = lambda: None, loaded_at: str | None = None) -> None:
        self._clock = clock
        self._base_url = base_url
        self._seq = 0
        state = _jsonable(dict(state))
        loaded_at = loaded_at or rfc3339(clock())  # the default for timestamps the scenario left out
        self.services = self._load_services(state.get("services") or {})
        self.releases: dict[str, Json] = {}
        for raw in state.get("releases") or []:
            self._load_release(raw, loaded_at)
        self.evidence: dict[str, list[Json]] = {rid: [] for rid in self.releases}
        for rid, items in (state.get("evidence") or {}).items():
            self.release(str(rid), loading=True)
            for raw in items or []:
                self.evidence[rid].append(self._new_item(rid, raw, "scenario", loaded_at, from_scenario=True))
        self.current: dict[str, dict[str, Json]] = {}
        for env, services in (state.get("current") or {}).items():
            for service, pointer in (services or {}).items():
                self._load_pointer(str(env), str(service), pointer, loaded_at)
        self.deployments: list[Json] = []
        self.replays: dict[tuple[str, str], tuple[str, int, Json]] = {}

    # ---- loading

    @staticmethod
    def _load_services(raw: Mapping[str, Any]) -> dict[str, Json]:
        services: dict[str, Json] = {}
        for name, spec in raw.items():
            envs = (spec or {}).get("environments") or {}
            for env, policy in envs.items():
                for req in (policy or {}).get("required") or []:
                    if not isinstance(req, dict) or req.get("type") not in ITEM_TYPES or not req.get("name"):
                        raise ValueError(f"mc state: service {name!r} environment {env!r} has a bad "
                                         f"requirement {req!r}; each needs a name and a type in {ITEM_TYPES}")
            services[str(name)] = {"environments": copy.deepcopy(dict(envs))}
        return services

    def _load_release(self, raw: Mapping[str, Any], loaded_at: str) -> None:
        rid, service = raw.get("release_id"), raw.get("service")
        if not isinstance(rid, str) or not RELEASE_ID_RE.match(rid) or service not in self.services:
            raise ValueError(f"mc state: release {raw!r} needs a valid release_id and a service "
                             f"declared under services (known: {sorted(self.services)})")
        self.releases[rid] = {
            "release_id": rid, "service": service,
            "artifact_digest": raw.get("artifact_digest") or fake_digest(rid),
            "created_at": raw.get("created_at") or loaded_at,
        }

    def _load_pointer(self, env: str, service: str, pointer: Any, loaded_at: str) -> None:
        spec = {"release_id": pointer} if isinstance(pointer, str) else dict(pointer or {})
        release = self.releases.get(str(spec.get("release_id")))
        if release is None or release["service"] != service:
            raise ValueError(f"mc state: current.{env}.{service} names {spec.get('release_id')!r}, "
                             f"which is not a release of service {service!r}")
        previous = spec.get("previous")
        if isinstance(previous, str):
            previous = {"release_id": previous}
        if previous:
            prev_release = self.releases.get(str(previous.get("release_id")))
            previous = {"release_id": previous.get("release_id"),
                        "artifact_digest": previous.get("artifact_digest")
                        or (prev_release or {}).get("artifact_digest"),
                        "until": previous.get("until") or loaded_at}
        self.current.setdefault(env, {})[service] = {
            "release_id": release["release_id"], "artifact_digest": release["artifact_digest"],
            "since": spec.get("since") or loaded_at, "kind": spec.get("kind") or "promotion",
            "previous": previous or None,
        }

    def _new_item(self, rid: str, raw: Mapping[str, Any], created_by: str, created_at: str,
                  *, from_scenario: bool = False) -> Json:
        if not isinstance(raw, dict) or not raw.get("name") or raw.get("type") not in ITEM_TYPES:
            raise ValueError(f"mc state: evidence item {raw!r} of {rid!r} needs a name and a type in {ITEM_TYPES}")
        self._seq += 1
        item: Json = {
            "id": raw.get("id") or f"ev-{self._seq:05d}",
            "release_id": rid, "name": raw["name"], "type": raw["type"],
            "digest": raw.get("digest"), "subject_digest": raw.get("subject_digest"), "uri": raw.get("uri"),
            "summary": copy.deepcopy(raw.get("summary") or {}),
            "created_by": raw.get("created_by") or created_by,
            "created_at": raw.get("created_at") if from_scenario and raw.get("created_at") else created_at,
            "annotations": dict(raw.get("annotations") or {}),
        }
        if from_scenario and raw.get("state"):  # scenarios may pin a state (e.g. pending); clients may not
            if raw["state"] not in ("valid", "invalid", "pending"):
                raise ValueError(f"mc state: evidence item {raw['name']!r} of {rid!r} has state {raw['state']!r}; "
                                 "use valid, invalid or pending")
            item["_state"], item["_reason"] = raw["state"], raw.get("reason")
        return item

    # ---- reads

    def now(self) -> str:
        """The clock as an RFC 3339 string."""
        return rfc3339(self._clock())

    def release(self, release_id: str, *, loading: bool = False) -> Json:
        """Release metadata, or 404 release_not_found."""
        found = self.releases.get(release_id)
        if found is None:
            if loading:
                raise ValueError(f"mc state: evidence for unknown release {release_id!r}")
            raise MCAPIError(404, "release_not_found", f"release {release_id!r} is not known to MC",
                             {"release_id": release_id})
        return dict(found)

    def policy(self, service: str, environment: str) -> Json:
        """The environment policy of a service, or 404 policy_not_found."""
        envs = self.services.get(service, {}).get("environments", {})
        if environment not in envs:
            raise MCAPIError(404, "policy_not_found",
                             f"service {service!r} has no evidence policy for environment {environment!r}",
                             {"service": service, "environment": environment, "known": sorted(envs)})
        policy = envs[environment] or {}
        return {"policy": policy.get("policy") or f"{environment}/default",
                "required": [dict(r) for r in policy.get("required") or []]}

    def _latest(self, release_id: str) -> dict[str, Json]:
        """Evidence is append-only; the latest item per name counts."""
        return {item["name"]: item for item in self.evidence.get(release_id, [])}

    def present(self, item: Json, requirement: Json | None, release: Json) -> Json:
        """An item as the API shows it, with state and reason evaluated now."""
        state, reason = evaluate_item(item, requirement, release["artifact_digest"])
        shown = {k: copy.deepcopy(v) for k, v in item.items() if not k.startswith("_")}
        shown.update(state=state, reason=reason)
        return shown

    def _slots(self, release: Json, policy: Json) -> list[tuple[Json, Json | None, str, str]]:
        latest = self._latest(release["release_id"])
        slots: list[tuple[Json, Json | None, str, str]] = []
        for req in policy["required"]:
            item = latest.get(req["name"])
            if item is None:
                slots.append((req, None, "missing", "missing"))
                continue
            shown = self.present(item, req, release)
            slots.append((req, shown, shown["state"], shown["reason"]))
        return slots

    def verdict(self, release_id: str, environment: str) -> Json:
        """The compact gate verdict, evaluated now."""
        release = self.release(release_id)
        policy = self.policy(release["service"], environment)
        slots = self._slots(release, policy)
        states = [s for _r, _i, s, _w in slots]
        status = ("invalid_evidence" if "invalid" in states else "missing_evidence" if "missing" in states
                  else "pending" if "pending" in states else "passed")
        base = self._base_url()
        return {
            "release_id": release_id, "service": release["service"], "environment": environment,
            "ok": status == "passed", "status": status,
            "reason": verdict_reason(status, policy["policy"], slots),
            "missing": [r["name"] for r, _i, s, _w in slots if s == "missing"],
            "invalid": [r["name"] for r, _i, s, _w in slots if s == "invalid"],
            "policy": policy["policy"], "evaluated_at": self.now(),
            "details_url": f"{base}/ui/releases/{release_id}" if base else None,
        }

    def listing(self, release_id: str, environment: str) -> Json:
        """Required slots, what fills them, what is missing, and items no requirement asks for."""
        release = self.release(release_id)
        policy = self.policy(release["service"], environment)
        slots = self._slots(release, policy)
        required_names = {r["name"] for r in policy["required"]}
        return {
            "release_id": release_id, "service": release["service"], "environment": environment,
            "policy": policy["policy"], "required": policy["required"],
            "slots": [{"name": r["name"], "state": s, "item": i} for r, i, s, _w in slots],
            "missing": [r["name"] for r, _i, s, _w in slots if s == "missing"],
            "extra": sorted(n for n in self._latest(release_id) if n not in required_names),
        }

    def bundle(self, environment: str, service: str) -> Json:
        """The current production evidence bundle of a service in an environment."""
        if service not in self.services:
            raise MCAPIError(404, "service_not_found", f"service {service!r} is not known to MC",
                             {"service": service, "known": sorted(self.services)})
        pointer = self.current.get(environment, {}).get(service)
        if pointer is None:
            raise MCAPIError(404, "no_current_release",
                             f"service {service!r} has no current release in environment {environment!r}",
                             {"service": service, "environment": environment})
        try:
            ok: bool | None = self.verdict(pointer["release_id"], environment)["ok"]
        except MCAPIError:  # no policy for this environment: evidence status unknown, not false
            ok = None
        current = {k: pointer[k] for k in ("release_id", "artifact_digest", "since", "kind")}
        current["evidence_ok"] = ok
        return {"environment": environment, "service": service, "current": current,
                "previous": copy.deepcopy(pointer["previous"])}

    # ---- writes

    def attach(self, release_id: str, body: Any, environment: str, principal: str) -> tuple[int, Json]:
        """Append an item (201) or find the same (name, digest) as the latest of its slot (200)."""
        release = self.release(release_id)
        self.policy(release["service"], environment)  # fail before storing, the reply needs a verdict
        if not isinstance(body, dict):
            raise _rejected("invalid_evidence_payload", "evidence payload", {"(body)": "must be a JSON object"})
        problems = _check_fields(body, _ITEM_RULES)
        if body.get("release_id") not in (None, release_id):
            problems["release_id"] = f"must match the path ({release_id})"
        if problems:
            raise _rejected("invalid_evidence_payload", "evidence payload", problems)
        latest = self._latest(release_id).get(body["name"])
        status = 200
        if not (latest and body.get("digest") and latest.get("digest") == body["digest"]):
            latest = self._new_item(release_id, body, principal, self.now())
            self.evidence[release_id].append(latest)
            status = 201
        req = next((r for r in self.policy(release["service"], environment)["required"]
                    if r["name"] == latest["name"]), None)
        return status, {"item": self.present(latest, req, release),
                        "verdict": self.verdict(release_id, environment)}

    def deploy(self, environment: str, body: Any) -> Json:
        """Record a promotion or rollback and move the current pointer, keeping the previous one."""
        if not isinstance(body, dict):
            raise _rejected("invalid_deployment_payload", "deployment report", {"(body)": "must be a JSON object"})
        problems = _check_fields(body, _DEPLOYMENT_RULES)
        if problems:
            raise _rejected("invalid_deployment_payload", "deployment report", problems)
        service, rid = body["service"], body["release_id"]
        if service not in self.services:
            raise MCAPIError(404, "service_not_found", f"service {service!r} is not known to MC",
                             {"service": service})
        release = self.release(rid)
        if release["service"] != service:
            raise MCAPIError(409, "release_conflict",
                             f"release {rid!r} belongs to service {release['service']!r}, not {service!r}",
                             {"release_id": rid, "service": release["service"]})
        if body["artifact_digest"] != release["artifact_digest"]:
            raise MCAPIError(409, "digest_mismatch",
                             f"artifact digest {body['artifact_digest']} does not match release {rid!r} "
                             f"({release['artifact_digest']})",
                             {"release_id": rid, "expected": release["artifact_digest"],
                              "got": body["artifact_digest"]})
        return self._move_pointer(environment, service, release, body)

    def _move_pointer(self, environment: str, service: str, release: Json, body: Json) -> Json:
        observed = rfc3339(_parse_time(body.get("observed_at")) or self._clock())
        old = self.current.get(environment, {}).get(service)
        previous = old["previous"] if old else None
        if old and old["release_id"] != release["release_id"]:
            previous = {"release_id": old["release_id"], "artifact_digest": old["artifact_digest"],
                        "until": observed}
        self.current.setdefault(environment, {})[service] = {
            "release_id": release["release_id"], "artifact_digest": release["artifact_digest"],
            "since": observed, "kind": body["kind"], "previous": previous,
        }
        self._seq += 1
        deployment = {
            "id": f"dep-{self._seq:05d}", "environment": environment, "service": service,
            "release_id": release["release_id"], "artifact_digest": release["artifact_digest"],
            "kind": body["kind"], "source": body.get("source") or "unknown", "observed_at": observed,
            "recorded_at": self.now(), "previous": copy.deepcopy(previous),
        }
        self.deployments.append(deployment)
        return copy.deepcopy(deployment)

    def snapshot(self) -> Json:
        """Everything, in the shape of mc.yaml plus the deployment log (deep copies)."""
        return copy.deepcopy({
            "services": self.services, "releases": list(self.releases.values()),
            "evidence": {rid: [_as_yaml_item(i) for i in items] for rid, items in self.evidence.items() if items},
            "current": self.current, "deployments": self.deployments,
        })


def _as_yaml_item(item: Json) -> Json:
    """A stored item as mc.yaml writes it: a scenario's pinned state and reason keep their plain names."""
    out = {k: v for k, v in item.items() if not k.startswith("_")}
    if item.get("_state"):
        out["state"], out["reason"] = item["_state"], item.get("_reason")
    return out


# --------------------------------------------------------------------------- faults and the log


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
            raise _rejected("invalid_fault", "fault", {"(body)": "must be a JSON object"})
        fault = cls(**{k: body[k] for k in body if k in cls.__dataclass_fields__ and body[k] is not None})
        problems = _check_fields(asdict(fault), {
            "path_prefix": (True, lambda v: isinstance(v, str) and v.startswith("/"), "a path starting with /"),
            "times": (True, lambda v: _count(v) is not None and v >= 1, "an integer >= 1"),
            "status": (False, lambda v: _count(v) is not None and 100 <= v <= 599, "an HTTP status"),
            "delay": (True, lambda v: isinstance(v, (int, float)) and 0 <= v <= MAX_FAULT_DELAY,
                      f"seconds between 0 and {MAX_FAULT_DELAY}"),
            "html": (True, lambda v: isinstance(v, bool), "true or false"),
            "retry_after": (False, lambda v: _count(v) is not None and v >= 0, "an integer >= 0"),
        })
        if problems:
            raise _rejected("invalid_fault", "fault", problems)
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


_FAULT_CODES = {429: "rate_limited", 500: "internal_error", 502: "unavailable", 503: "unavailable",
                504: "unavailable", 401: "unauthorized", 403: "forbidden"}


# --------------------------------------------------------------------------- HTTP


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]
    body: bytes
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    scope: str | None = None


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _json_reply(status: int, obj: Any, **headers: str) -> _Reply:
    return _Reply(status, json.dumps(obj).encode(), headers=dict(headers))


_SEG = "([^/]+)"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"^/health$"), "_health"),
    ("GET", re.compile(rf"^/api/v1/releases/{_SEG}$"), "_get_release"),
    ("GET", re.compile(rf"^/api/v1/releases/{_SEG}/evidence-status$"), "_get_verdict"),
    ("GET", re.compile(rf"^/api/v1/releases/{_SEG}/evidence$"), "_get_listing"),
    ("POST", re.compile(rf"^/api/v1/releases/{_SEG}/evidence$"), "_post_evidence"),
    ("GET", re.compile(rf"^/api/v1/environments/{_SEG}/services/{_SEG}/current$"), "_get_current"),
    ("POST", re.compile(rf"^/api/v1/environments/{_SEG}/deployments$"), "_post_deployment"),
]
_ADMIN_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"^/admin/reset$"), "_admin_reset"),
    ("POST", re.compile(r"^/admin/faults$"), "_admin_add_fault"),
    ("DELETE", re.compile(r"^/admin/faults$"), "_admin_clear_faults"),
    ("GET", re.compile(r"^/admin/requests$"), "_admin_requests"),
    ("DELETE", re.compile(r"^/admin/requests$"), "_admin_clear_requests"),
]


class _Handler(BaseHTTPRequestHandler):
    """Reads a request, hands it to the MCServer, writes the reply; nothing else."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else small replies wait ~40 ms for a delayed ACK
    server: _HTTPServer

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        raw_length = self.headers.get("Content-Length") or "0"
        length = int(raw_length) if raw_length.isdigit() else -1
        if 0 <= length <= MAX_BODY:
            request = _Request(self.command, parts.path, dict(parse_qsl(parts.query)),
                               {k.lower(): v for k, v in self.headers.items()},
                               self.rfile.read(length) if length else b"")
            reply = self.server.mc.handle(request)
        else:  # unread body: the connection cannot be reused
            self.close_connection = True
            reply = _json_reply(400, {"error": "bad_request", "details": {"content_length": raw_length},
                                      "message": f"Content-Length must be an integer up to {MAX_BODY} bytes",
                                      "request_id": uuid.uuid4().hex[:16]})
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("mc stand-in: " + format, *args)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    mc: MCServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (timeout fault) is expected here, not a traceback on stderr."""
        # socketserver calls this inside its except block, so exc_info is the aborted connection's error
        log.debug("MC stand-in: connection from %s ended abruptly", client_address, exc_info=True)  # noqa: LOG014


def _content_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


def _json_body(req: _Request) -> Any:
    """The parsed JSON body, or 415 (not JSON) / 400 (unparsable)."""
    ctype = _content_type(req.headers)
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise MCAPIError(415, "unsupported_media_type",
                         f"send Content-Type: application/json (got {ctype or 'none'})",
                         {"content_type": ctype or None})
    try:
        return json.loads(req.body or b"null")
    except (ValueError, UnicodeDecodeError) as e:
        raise MCAPIError(400, "bad_request", f"request body is not valid JSON: {e}") from e


def _path_id(raw: str, rx: re.Pattern[str], what: str) -> str:
    value = unquote(raw)
    if not rx.match(value):
        raise MCAPIError(400, "bad_request", f"{what} {value[:80]!r} is not valid (must match {rx.pattern})",
                         {what.replace(" ", "_"): value[:80]})
    return value


class MCServer:
    """The MC stand-in: HTTP on 127.0.0.1, thread-safe accessors for tests, admin routes on request."""

    def __init__(self, state: Mapping[str, Any], *, read_token: str, write_token: str,
                 host: str = "127.0.0.1", port: int = 0, admin: bool = False,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"MC stand-in binds to loopback only, not {host!r}; use 127.0.0.1")
        if not read_token or not write_token or read_token == write_token:
            raise ValueError("MC stand-in needs two different non-empty tokens (read, read-write)")
        self._initial = copy.deepcopy(dict(state))
        self._tokens = {read_token: READ_SCOPE, write_token: WRITE_SCOPE}
        self._host, self._port, self.admin, self._clock = host, port, admin, clock
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._url: str | None = None
        self._loaded_at = rfc3339(clock())  # kept, so a reset gives back exactly the initial state
        self._data = self._fresh_state()
        self._faults: list[Fault] = []
        self._log: list[RecordedRequest] = []
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _fresh_state(self) -> MCState:
        return MCState(self._initial, clock=self._clock, base_url=lambda: self._url, loaded_at=self._loaded_at)

    # ---- lifecycle

    def start(self) -> str:
        """Bind and serve in a daemon thread; returns http://127.0.0.1:PORT."""
        if self._httpd is not None:
            raise RuntimeError(f"MC stand-in already running at {self._url}")
        self._stopping.clear()
        httpd = _HTTPServer((self._host, self._port), _Handler)
        httpd.mc = self
        self._httpd = httpd
        self._url = f"http://{self._host}:{httpd.server_address[1]}"
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="mc-stand-in", daemon=True)
        self._thread.start()
        return self._url

    def stop(self) -> None:
        """Stop serving (wakes handlers sleeping in a delay fault) and release the port."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str | None:
        """The base URL once started."""
        return self._url

    # ---- accessors for tests and the sandbox (all under the lock)

    def verdict(self, release_id: str, environment: str = "production") -> Json:
        """The verdict GET evidence-status would answer now (MCAPIError for 404s)."""
        with self._lock:
            return self._data.verdict(release_id, environment)

    def current(self, env: str, service: str) -> Json:
        """The bundle GET .../current would answer now (MCAPIError for 404s)."""
        with self._lock:
            return self._data.bundle(env, service)

    @property
    def state(self) -> Json:
        """A deep copy of the whole state (mc.yaml shape plus the deployment log)."""
        with self._lock:
            return self._data.snapshot()

    @property
    def requests(self) -> list[RecordedRequest]:
        """What the stand-in received so far (tokens masked), oldest first."""
        with self._lock:
            return list(self._log)

    def reset(self) -> None:
        """Back to the initial state; faults cleared (the request log is kept)."""
        with self._lock:
            self._data = self._fresh_state()
            self._faults.clear()

    def add_fault(self, fault: Fault) -> None:
        """Queue a fault (the same as POST /admin/faults)."""
        with self._lock:
            self._faults.append(fault)

    # ---- request handling

    def handle(self, req: _Request) -> _Reply:
        """Answer one request: faults first (a proxy is in front of auth), then auth, then the route."""
        try:
            reply = self._apply_fault(req) or self._route(req)
        except MCAPIError as e:
            reply = _json_reply(e.status, {"error": e.code, "message": e.message, "details": e.details,
                                           "request_id": req.request_id}, **e.headers)
        except Exception:  # a stand-in bug must still answer like MC does, and be visible in the log
            log.exception("MC stand-in failed on %s %s", req.method, req.path)
            reply = _json_reply(500, {"error": "internal_error", "message": "stand-in failure, see its log",
                                      "details": {}, "request_id": req.request_id})
        reply.headers["X-Request-Id"] = req.request_id
        if req.path.startswith("/api/"):
            reply.headers["Cache-Control"] = "no-store"
        if not req.path.startswith("/admin/"):
            self._record(req, reply.status)
        return reply

    def _record(self, req: _Request, status: int) -> None:
        auth = req.headers.get("authorization")
        masked = (auth.split(" ", 1)[0] + " ***") if auth else None
        entry = RecordedRequest(req.method, req.path, dict(req.query), _content_type(req.headers) or None,
                                req.body, masked, req.scope, req.headers.get("idempotency-key"), status,
                                req.request_id, self._data.now())
        with self._lock:
            self._log.append(entry)

    def _take_fault(self, path: str) -> Fault | None:
        if path.startswith("/admin/"):
            return None
        with self._lock:
            for fault in self._faults:
                if path.startswith(fault.path_prefix):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _apply_fault(self, req: _Request) -> _Reply | None:
        fault = self._take_fault(req.path)
        if fault is None:
            return None
        if fault.delay:
            self._stopping.wait(fault.delay)  # outside the lock; stop() cuts it short
        if fault.html:
            return _Reply(200, LOGIN_PAGE.encode(), content_type="text/html; charset=utf-8")
        if fault.status is None:
            return None
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        if fault.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="mission-control"'
        code = _FAULT_CODES.get(fault.status, "fault")
        return _json_reply(fault.status, {"error": code, "message": f"injected fault: HTTP {fault.status}",
                                          "details": {"injected": True}, "request_id": req.request_id},
                           **headers)

    def _route(self, req: _Request) -> _Reply:
        routes = _ROUTES + (_ADMIN_ROUTES if self.admin else [])
        if req.path.startswith("/api/"):
            req.scope = self._authenticate(req)
        allowed = []
        for method, rx, name in routes:
            match = rx.match(req.path)
            if match and method == req.method:
                handler: Callable[..., _Reply] = getattr(self, name)
                return handler(req, *match.groups())
            if match:
                allowed.append(method)
        if allowed:
            raise MCAPIError(405, "method_not_allowed", f"{req.method} is not allowed on {req.path}",
                             {"allowed": allowed}, {"Allow": ", ".join(allowed)})
        raise MCAPIError(404, "not_found", f"no route for {req.method} {req.path}", {"path": req.path})

    def _authenticate(self, req: _Request) -> str:
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise MCAPIError(401, "unauthorized", "missing bearer token: send Authorization: Bearer <token>",
                             {}, {"WWW-Authenticate": 'Bearer realm="mission-control"'})
        for known, scope in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.strip().encode()):
                if req.method != "GET" and scope != WRITE_SCOPE:
                    raise MCAPIError(403, "forbidden", f"this token lacks the {WRITE_SCOPE} scope",
                                     {"required_scope": WRITE_SCOPE, "token_scopes": [READ_SCOPE]})
                return scope
        raise MCAPIError(401, "unauthorized", "the bearer token is not valid (never echoed here)", {},
                         {"WWW-Authenticate": 'Bearer realm="mission-control", error="invalid_token"'})

    # ---- routes

    def _environment(self, req: _Request) -> str:
        return _path_id(req.query.get("environment") or "production", DNS_LABEL_RE, "environment")

    def _health(self, req: _Request) -> _Reply:
        return _json_reply(200, {"status": "ok"})

    def _get_release(self, req: _Request, rid: str) -> _Reply:
        with self._lock:
            return _json_reply(200, self._data.release(_path_id(rid, RELEASE_ID_RE, "release id")))

    def _get_verdict(self, req: _Request, rid: str) -> _Reply:
        rid, env = _path_id(rid, RELEASE_ID_RE, "release id"), self._environment(req)
        return _json_reply(200, self.verdict(rid, env))

    def _get_listing(self, req: _Request, rid: str) -> _Reply:
        rid, env = _path_id(rid, RELEASE_ID_RE, "release id"), self._environment(req)
        with self._lock:
            return _json_reply(200, self._data.listing(rid, env))

    def _post_evidence(self, req: _Request, rid: str) -> _Reply:
        rid, env = _path_id(rid, RELEASE_ID_RE, "release id"), self._environment(req)
        body = _json_body(req)
        with self._lock:
            status, result = self._data.attach(rid, body, env, "mc-write-token")
        return _json_reply(status, result)

    def _get_current(self, req: _Request, env: str, service: str) -> _Reply:
        env, service = _path_id(env, DNS_LABEL_RE, "environment"), _path_id(service, DNS_LABEL_RE, "service")
        return _json_reply(200, self.current(env, service))

    def _post_deployment(self, req: _Request, env: str) -> _Reply:
        env = _path_id(env, DNS_LABEL_RE, "environment")
        body = _json_body(req)
        key = req.headers.get("idempotency-key")
        fingerprint = hashlib.sha256(req.body).hexdigest()
        with self._lock:
            if key and (req.path, key) in self._data.replays:  # a retried report must not move the pointer twice
                seen, status, result = self._data.replays[(req.path, key)]
                if seen != fingerprint:
                    raise MCAPIError(422, "idempotency_key_reused",
                                     "this Idempotency-Key was used with a different body", {"key": key})
                return _json_reply(status, result)
            result = self._data.deploy(env, body)
            if key:
                self._data.replays[(req.path, key)] = (fingerprint, 201, result)
        return _json_reply(201, result)

    def _admin_reset(self, req: _Request) -> _Reply:
        self.reset()
        return _json_reply(200, {"status": "reset"})

    def _admin_add_fault(self, req: _Request) -> _Reply:
        fault = Fault.from_json(_json_body(req))
        self.add_fault(fault)
        return _json_reply(201, {"fault": asdict(fault)})

    def _admin_clear_faults(self, req: _Request) -> _Reply:
        with self._lock:
            self._faults.clear()
        return _json_reply(200, {"faults": []})

    def _admin_requests(self, req: _Request) -> _Reply:
        return _json_reply(200, {"requests": [r.to_json() for r in self.requests]})

    def _admin_clear_requests(self, req: _Request) -> _Reply:
        with self._lock:
            self._log.clear()
        return _json_reply(200, {"requests": []})
