"""MC's evidence objects as frozen dataclasses: verdicts, items, listings, releases, bundles, deployments."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

VerdictStatus = Literal["passed", "missing_evidence", "invalid_evidence", "pending"]
ItemType = Literal["junit", "sbom", "security-scan", "approval", "generic"]
ItemState = Literal["valid", "invalid", "pending"]
SlotState = Literal["valid", "invalid", "pending", "missing"]
DeploymentKind = Literal["promotion", "rollback"]

RELEASE_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Verdict:
    """MC's gate verdict for one release in one environment."""

    release_id: str
    environment: str
    ok: bool
    status: VerdictStatus
    reason: str
    service: str | None = None
    missing: tuple[str, ...] = ()
    invalid: tuple[str, ...] = ()
    policy: str | None = None
    evaluated_at: datetime | None = None
    details_url: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class EvidenceItem:
    """One evidence item; as input to `attach` only name, type and the optional fields matter."""

    name: str
    type: ItemType
    summary: Mapping[str, Any] = field(default_factory=dict)
    digest: str | None = None
    subject_digest: str | None = None
    uri: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    id: str | None = None
    release_id: str | None = None
    state: ItemState | None = None
    reason: str | None = None
    created_by: str | None = None
    created_at: datetime | None = None

    def payload(self) -> dict[str, Any]:
        """The POST body: the fields a client may set, without empty ones."""
        body: dict[str, Any] = {"name": self.name, "type": self.type, "summary": dict(self.summary),
                                "digest": self.digest, "subject_digest": self.subject_digest,
                                "uri": self.uri, "annotations": dict(self.annotations)}
        return {k: v for k, v in body.items() if v not in (None, {})}


@dataclass(frozen=True)
class Requirement:
    """One slot a policy requires (name, type and type-specific parameters such as max_critical)."""

    name: str
    type: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Slot:
    """A required slot and the latest item filling it (None when missing)."""

    name: str
    state: SlotState
    item: EvidenceItem | None


@dataclass(frozen=True)
class Listing:
    """What a release's policy requires, what is there, what is missing, what is extra."""

    release_id: str
    environment: str
    policy: str | None
    required: tuple[Requirement, ...]
    slots: tuple[Slot, ...]
    missing: tuple[str, ...]
    extra: tuple[str, ...]
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Release:
    """Release metadata."""

    release_id: str
    service: str
    artifact_digest: str
    created_at: datetime | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class AttachResult:
    """The stored item and the verdict right after attaching; `created` False when it was already there."""

    item: EvidenceItem
    verdict: Verdict
    created: bool


@dataclass(frozen=True)
class CurrentRelease:
    """The release currently deployed (per MC) and since when."""

    release_id: str
    artifact_digest: str | None
    evidence_ok: bool | None
    since: datetime | None
    kind: DeploymentKind | None


@dataclass(frozen=True)
class PreviousRelease:
    """The release that was current before, and until when."""

    release_id: str
    artifact_digest: str | None
    until: datetime | None


@dataclass(frozen=True)
class Bundle:
    """The current production evidence bundle of a service."""

    environment: str
    service: str
    current: CurrentRelease
    previous: PreviousRelease | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Deployment:
    """A recorded promotion or rollback."""

    environment: str
    service: str
    release_id: str
    artifact_digest: str
    kind: DeploymentKind
    source: str | None
    observed_at: datetime | None
    id: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
