"""MC's evidence model: services and policies, releases, evidence items, verdicts, current pointers."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from rollbook.sandbox.mcrules import (
    DEPLOYMENT_RULES,
    ITEM_RULES,
    ITEM_TYPES,
    RELEASE_ID_RE,
    MCAPIError,
    check_fields,
    evaluate_item,
    fake_digest,
    jsonable,
    parse_time,
    rejected,
    rfc3339,
    utcnow,
    verdict_reason,
)

Json = dict[str, Any]


class MCState:
    """Services and policies, releases, evidence and current pointers; not thread-safe on its own."""

    def __init__(self, state: Mapping[str, Any], *, clock: Callable[[], datetime] = utcnow,
                 base_url: Callable[[], str | None] = lambda: None, loaded_at: str | None = None) -> None:
        self._clock = clock
        self._base_url = base_url
        self._seq = 0
        state = jsonable(dict(state))
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
            raise rejected("invalid_evidence_payload", "evidence payload", {"(body)": "must be a JSON object"})
        problems = check_fields(body, ITEM_RULES)
        if body.get("release_id") not in (None, release_id):
            problems["release_id"] = f"must match the path ({release_id})"
        if problems:
            raise rejected("invalid_evidence_payload", "evidence payload", problems)
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
            raise rejected("invalid_deployment_payload", "deployment report", {"(body)": "must be a JSON object"})
        problems = check_fields(body, DEPLOYMENT_RULES)
        if problems:
            raise rejected("invalid_deployment_payload", "deployment report", problems)
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
        observed = rfc3339(parse_time(body.get("observed_at")) or self._clock())
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
            "evidence": {rid: [as_yaml_item(i) for i in items] for rid, items in self.evidence.items() if items},
            "current": self.current, "deployments": self.deployments,
        })


def as_yaml_item(item: Json) -> Json:
    """A stored item as mc.yaml writes it: a scenario's pinned state and reason keep their plain names."""
    out = {k: v for k, v in item.items() if not k.startswith("_")}
    if item.get("_state"):
        out["state"], out["reason"] = item["_state"], item.get("_reason")
    return out

