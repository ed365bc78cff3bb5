"""Mission Control (MC) evidence: the client (client.py), its typed model (model.py), MC's JSON parsed at
the boundary (parsing.py), the token (secret.py) and report files as evidence items (reports.py).

Every name is importable from ``rollbook.evidence`` as before the split.
"""

from rollbook.evidence.client import (
    MAX_BACKOFF,
    MAX_BODY_IN_MESSAGE,
    READ_SCOPE,
    WRITE_SCOPE,
    MCClient,
    log,
)
from rollbook.evidence.model import (
    DNS_LABEL_RE,
    RELEASE_ID_RE,
    AttachResult,
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
from rollbook.evidence.parsing import parse_verdict
from rollbook.evidence.reports import ReportFileError, evidence_from_file
from rollbook.evidence.secret import Secret

__all__ = [
    "DNS_LABEL_RE", "MAX_BACKOFF", "MAX_BODY_IN_MESSAGE", "READ_SCOPE", "RELEASE_ID_RE", "WRITE_SCOPE",
    "AttachResult", "Bundle", "CurrentRelease", "Deployment", "DeploymentKind", "EvidenceItem", "ItemState",
    "ItemType", "Listing", "MCClient", "PreviousRelease", "Release", "ReportFileError", "Requirement", "Secret",
    "Slot", "SlotState", "Verdict", "VerdictStatus", "evidence_from_file", "log", "parse_verdict",
]
