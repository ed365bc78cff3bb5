"""Continuing an earlier record of the same incident: a follow-up run (`--steps 4,5,6`) reuses the
newest finished record under the same `--out` — its step results and its snapshot — whether
`rollbook run` or an automated service wrote it (both write the same layout)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollbook.record import StepResult, check_incident


@dataclass(frozen=True)
class Earlier:
    """An earlier record of the same incident and Rollout: where it is and what it holds."""

    path: Path
    document: Mapping[str, Any]

    @property
    def run_id(self) -> str:
        """The earlier run's id (its folder name)."""
        return str(self.document.get("run_id") or self.path.name)

    def steps(self, numbers: Iterable[int]) -> list[StepResult]:
        """Its results for the given step numbers, marked as carried from it."""
        wanted = set(numbers)
        return [StepResult.from_json(s, from_record=self.run_id) for s in self.document.get("steps") or []
                if int(s.get("step", 0)) in wanted]

    def describe(self, carried: Sequence[StepResult]) -> dict[str, Any]:
        """What record.json says about the continuation."""
        return {"record": str(self.path), "run_id": self.run_id, "started_at": self.document.get("started_at"),
                "steps": [s.step for s in carried], "snapshot": (self.path / "snapshot").is_dir()}


def find_earlier(out: Path, incident: str, namespace: str, rollout: str) -> Earlier | None:
    """The newest finished record of `incident` for this Rollout under `out` (made by `run` or a service).

    Only finished records count: one still being written (its record.json says `interrupted`) is not taken."""
    parent = Path(out) / check_incident(incident)
    found = []
    for doc_path in parent.glob("*/record.json"):
        try:
            doc = json.loads(doc_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict) or doc.get("status") == "interrupted":
            continue  # a run under way (or killed): its steps are not a finished first look
        if doc.get("namespace") == namespace and doc.get("rollout") == rollout:
            found.append(Earlier(doc_path.parent, doc))
    return max(found, key=lambda e: (str(e.document.get("started_at") or ""), e.path.name), default=None)


def carry(earlier: Earlier, run_dir: Path, carried: Sequence[StepResult]) -> bool:
    """Copy the earlier record's snapshot and the carried steps' notebooks into `run_dir`; True if a snapshot came."""
    for s in carried:
        source = earlier.path / s.notebook
        if source.is_file():
            shutil.copy2(source, Path(run_dir) / s.notebook)
    pictures = earlier.path / "pictures"
    if pictures.is_dir() and any(s.name == "escalate" for s in carried):
        shutil.copytree(pictures, Path(run_dir) / "pictures", dirs_exist_ok=True)
    snap = earlier.path / "snapshot"
    if snap.is_dir():
        shutil.copytree(snap, Path(run_dir) / "snapshot", dirs_exist_ok=True)
        return True
    return False
