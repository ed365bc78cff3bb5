"""MC's JSON into the evidence model, at the boundary: shape checks that name the field, and the verdict
in an Argo measurement value (`parse_verdict`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, cast, get_args

from rollbook.errors import MCProtocolError
from rollbook.evidence.model import (
    Bundle,
    CurrentRelease,
    Deployment,
    DeploymentKind,
    EvidenceItem,
    ItemState,
    ItemType,
    Listing,
    PreviousRelease,
    Release,
    Requirement,
    Slot,
    SlotState,
    Verdict,
    VerdictStatus,
)

# --------------------------------------------------------------------------- parsing (the boundary)


class _Shape:
    """Typed reads from one JSON object; any mismatch is an MCProtocolError naming the field."""

    def __init__(self, obj: Any, what: str, url: str | None) -> None:
        if not isinstance(obj, dict):
            raise MCProtocolError(f"MC sent {type(obj).__name__} where {what} (a JSON object) belongs.",
                                  url=url, hint="Check that the URL points at MC's API.")
        self.obj, self.what, self.url = obj, what, url

    def _bad(self, key: str, must: str) -> MCProtocolError:
        got = repr(self.obj.get(key))[:80]
        return MCProtocolError(f"MC's {self.what} has {key}={got}; it must be {must}.", url=self.url,
                               hint="The server does not speak the evidence API contract (evidence-api.md).")

    def text(self, key: str) -> str:
        value = self.obj.get(key)
        if not isinstance(value, str):
            raise self._bad(key, "a string")
        return value

    def opt_text(self, key: str) -> str | None:
        return None if self.obj.get(key) is None else self.text(key)

    def flag(self, key: str) -> bool:
        value = self.obj.get(key)
        if not isinstance(value, bool):
            raise self._bad(key, "true or false")
        return value

    def opt_flag(self, key: str) -> bool | None:
        return None if self.obj.get(key) is None else self.flag(key)

    def choice(self, key: str, allowed: tuple[str, ...]) -> str:
        value = self.obj.get(key)
        if value not in allowed:
            raise self._bad(key, "one of " + ", ".join(allowed))
        return cast(str, value)

    def names(self, key: str) -> tuple[str, ...]:
        value = self.obj.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(key, "a list of strings")
        return tuple(value)

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.obj.get(key) or {}
        if not isinstance(value, dict):
            raise self._bad(key, "an object")
        return value

    def time(self, key: str) -> datetime | None:
        value = self.obj.get(key)
        if value is None:
            return None
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            raise self._bad(key, "an RFC 3339 timestamp") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    def sub(self, key: str, what: str) -> _Shape:
        return _Shape(self.obj.get(key), what, self.url)


def _verdict(obj: Any, url: str | None) -> Verdict:
    s = _Shape(obj, "verdict", url)
    return Verdict(
        release_id=s.text("release_id"), environment=s.text("environment"), ok=s.flag("ok"),
        status=cast(VerdictStatus, s.choice("status", get_args(VerdictStatus))), reason=s.text("reason"),
        service=s.opt_text("service"), missing=s.names("missing"), invalid=s.names("invalid"),
        policy=s.opt_text("policy"), evaluated_at=s.time("evaluated_at"), details_url=s.opt_text("details_url"),
        raw=s.obj,
    )


def _item(obj: Any, url: str | None) -> EvidenceItem:
    s = _Shape(obj, "evidence item", url)
    state = s.obj.get("state")
    return EvidenceItem(
        name=s.text("name"), type=cast(ItemType, s.choice("type", get_args(ItemType))),
        summary=s.mapping("summary"), digest=s.opt_text("digest"), subject_digest=s.opt_text("subject_digest"),
        uri=s.opt_text("uri"), annotations=s.mapping("annotations"), id=s.opt_text("id"),
        release_id=s.opt_text("release_id"),
        state=None if state is None else cast(ItemState, s.choice("state", get_args(ItemState))),
        reason=s.opt_text("reason"), created_by=s.opt_text("created_by"), created_at=s.time("created_at"),
    )


def _listing(obj: Any, url: str | None) -> Listing:
    s = _Shape(obj, "evidence listing", url)
    required = []
    for req in s.obj.get("required") or []:
        r = _Shape(req, "requirement", url)
        required.append(Requirement(r.text("name"), r.text("type"),
                                    {k: v for k, v in r.obj.items() if k not in ("name", "type")}))
    slots = []
    for raw in s.obj.get("slots") or []:
        slot = _Shape(raw, "slot", url)
        item = None if slot.obj.get("item") is None else _item(slot.obj["item"], url)
        slots.append(Slot(slot.text("name"), cast(SlotState, slot.choice("state", get_args(SlotState))), item))
    extra = tuple(e if isinstance(e, str) else _Shape(e, "extra item", url).text("name")
                  for e in s.obj.get("extra") or [])
    return Listing(s.text("release_id"), s.text("environment"), s.opt_text("policy"), tuple(required),
                   tuple(slots), s.names("missing"), extra, raw=s.obj)


def _release(obj: Any, url: str | None) -> Release:
    s = _Shape(obj, "release", url)
    return Release(s.text("release_id"), s.text("service"), s.text("artifact_digest"), s.time("created_at"),
                   raw=s.obj)


def _bundle(obj: Any, url: str | None) -> Bundle:
    s = _Shape(obj, "bundle", url)
    c = s.sub("current", "bundle's current release")
    kind = c.obj.get("kind")
    current = CurrentRelease(
        c.text("release_id"), c.opt_text("artifact_digest"), c.opt_flag("evidence_ok"), c.time("since"),
        None if kind is None else cast(DeploymentKind, c.choice("kind", get_args(DeploymentKind))))
    previous = None
    if s.obj.get("previous") is not None:
        p = s.sub("previous", "bundle's previous release")
        previous = PreviousRelease(p.text("release_id"), p.opt_text("artifact_digest"), p.time("until"))
    return Bundle(s.text("environment"), s.text("service"), current, previous, raw=s.obj)


def _deployment(obj: Any, url: str | None) -> Deployment:
    s = _Shape(obj, "deployment", url)
    return Deployment(
        environment=s.text("environment"), service=s.text("service"), release_id=s.text("release_id"),
        artifact_digest=s.text("artifact_digest"),
        kind=cast(DeploymentKind, s.choice("kind", get_args(DeploymentKind))),
        source=s.opt_text("source"), observed_at=s.time("observed_at"), id=s.opt_text("id"), raw=s.obj)


def parse_verdict(value: str) -> Verdict | None:
    """A Verdict out of an AnalysisRun web measurement value; None when it is a bare true/false/null.

    A bare boolean means the template's jsonPath (e.g. ``{$.ok}``) dropped the reason: ask MC directly.
    Anything else that is not a verdict object raises MCProtocolError.
    """
    try:
        obj = json.loads(value)
    except (TypeError, ValueError) as e:
        raise MCProtocolError(
            f"Measurement value {value[:80]!r} of metric mc-evidence-ok is not JSON.",
            hint="Ask MC for the verdict directly (MCClient.verdict) and check the template's jsonPath.",
        ) from e
    if obj is None or isinstance(obj, bool):
        return None
    if not isinstance(obj, dict):
        raise MCProtocolError(
            f"Measurement value {value[:80]!r} of metric mc-evidence-ok is not a verdict object.",
            hint="The template's jsonPath should be {$}; ask MC for the verdict directly (MCClient.verdict).")
    return _verdict(obj, None)
