"""Report files turned into evidence items: junit XML and JSON summaries, digest, the missing-file error."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rollbook.errors import PreconditionError
from rollbook.evidence.model import EvidenceItem, ItemType


class ReportFileError(PreconditionError):
    """A report file to attach is missing or cannot be parsed."""

    def __init__(self, message: str, *, path: Path, hint: str | None = None) -> None:
        self.path = path
        super().__init__(message, hint=hint)



# --------------------------------------------------------------------------- report files


def _junit_summary(path: Path) -> dict[str, int]:
    """Test counts of a JUnit XML report (<testsuites> or a single <testsuite>)."""
    try:
        root = ET.parse(path).getroot()  # expat refuses entity-expansion bombs since 2.4.1
    except (ET.ParseError, OSError) as e:
        raise ReportFileError(f"JUnit report {path} cannot be read as XML: {e}.", path=path,
                              hint="Attach the junit XML your CI produced (e.g. report.xml).") from e
    if root.tag not in ("testsuites", "testsuite"):
        raise ReportFileError(f"{path} is XML but not a JUnit report (root <{root.tag}>).", path=path,
                              hint="Expected <testsuites> or <testsuite> at the top.")
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {"total": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for key, value in _suite_counts(suite).items():
            counts[key] += value
    return counts


def _suite_counts(suite: ET.Element) -> dict[str, int]:
    """A suite's own attributes when present, else a count of its test cases' outcomes."""
    cases = suite.findall("testcase")
    counted = {"total": len(cases),
               "failures": sum(1 for c in cases if c.find("failure") is not None),
               "errors": sum(1 for c in cases if c.find("error") is not None),
               "skipped": sum(1 for c in cases if c.find("skipped") is not None)}
    attrs = {"total": "tests", "failures": "failures", "errors": "errors", "skipped": "skipped"}
    out = {}
    for key, attr in attrs.items():
        raw = suite.get(attr)
        out[key] = int(raw) if raw is not None and raw.strip().isdigit() else counted[key]
    return out


def _json_summary(path: Path) -> dict[str, Any]:
    """A JSON report's `summary` object, else its top-level scalar fields."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ReportFileError(f"Report {path} cannot be read as JSON: {e}.", path=path) from e
    if not isinstance(data, dict):
        raise ReportFileError(f"Report {path} must hold a JSON object, not {type(data).__name__}.", path=path)
    if isinstance(data.get("summary"), dict):
        return dict(data["summary"])
    return {k: v for k, v in data.items() if isinstance(v, (int, float, bool)) or
            (isinstance(v, str) and len(v) <= 200)}



def evidence_from_file(path: str | Path, name: str, type: ItemType | None = None, *,
                       subject_digest: str | None = None, uri: str | None = None,
                       annotations: Mapping[str, str] | None = None) -> EvidenceItem:
    """An EvidenceItem from a junit XML or JSON report (type from the suffix when not given)."""
    file = Path(path)
    if not file.is_file():
        raise ReportFileError(f"Report file {file} does not exist.", path=file,
                              hint="Check the report path parameter.")
    kind: ItemType = type or ("junit" if file.suffix.lower() == ".xml" else "generic")
    summary: dict[str, Any] = _junit_summary(file) if kind == "junit" else _json_summary(file)
    digest = "sha256:" + hashlib.sha256(file.read_bytes()).hexdigest()
    return EvidenceItem(name=name, type=kind, summary=summary, digest=digest, subject_digest=subject_digest,
                        uri=uri, annotations=dict(annotations or {}))
