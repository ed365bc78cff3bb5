"""The playbook's shape: the step notebooks of a runbooks folder and the policy that skips steps."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import nbformat

from rollbook import record
from rollbook.errors import UsageError
from rollbook.record import StepResult


@dataclass(frozen=True)
class StepDef:
    """One step notebook. `parallel`: read-only and independent of earlier results, so it may run
    alongside its parallel neighbours; a step that mutates or reads results.json must not be."""

    number: int
    name: str
    notebook: Path
    parallel: bool = False
    warmup: str | None = None  # the notebook's own warm-up imports (metadata rollbook.warmup), else the run's

    @property
    def filename(self) -> str:
        """`NN-<name>.ipynb`, the name it keeps in the record."""
        return self.notebook.name


# Defaults for the six playbook steps; a notebook may override with metadata {"rollbook": {"parallel": ...}}.
PLAYBOOK: dict[str, bool] = {
    "confirm-rollback-status": True,
    "inspect-evidence": True,
    "validate-release-identity": True,
    "remediate-and-retry": False,
    "escalate": False,
    "verify-closeout": False,
}
_NOTEBOOK_RE = re.compile(r"^(\d{2})-([a-z0-9][a-z0-9-]*)\.ipynb$")


def discover(runbooks_dir: Path) -> list[StepDef]:
    """The `NN-<name>.ipynb` notebooks of a runbooks folder, in playbook order."""
    folder = Path(runbooks_dir)
    if not folder.is_dir():
        raise UsageError(f"Runbooks folder {folder} does not exist.",
                         hint="Pass the folder holding 01-confirm-rollback-status.ipynb ... (runbooks/).")
    steps = []
    for path in sorted(folder.glob("[0-9][0-9]-*.ipynb")):
        m = _NOTEBOOK_RE.match(path.name)
        if m and m[1] != "00":  # steps are 01-99; 00-preflight.ipynb is run before an incident, not in one
            meta = nbformat.read(path, as_version=4).metadata.get("rollbook", {})
            steps.append(StepDef(int(m[1]), m[2], path, bool(meta.get("parallel", PLAYBOOK.get(m[2], False))),
                                 meta.get("warmup")))
    numbers = [s.number for s in steps]
    if len(set(numbers)) != len(numbers):
        raise UsageError(f"Two notebooks in {folder} share a step number: {numbers}.",
                         hint="Give each step notebook its own NN- prefix.")
    return steps


class Policy(Protocol):
    """Decides, before a step starts, whether it is skipped: a reason, or None to run it."""

    def __call__(self, step: StepDef, done: Sequence[StepResult]) -> str | None: ...


@dataclass(frozen=True)
class PlaybookPolicy:
    """The playbook's rules: a healthy rollout skips remediation; listed steps are never skipped."""

    skip_when_healthy: frozenset[str] = frozenset({"remediate-and-retry"})
    never_skip: frozenset[str] = frozenset({"escalate"})

    def __call__(self, step: StepDef, done: Sequence[StepResult]) -> str | None:
        """Skip reason for `step` given the results so far, or None."""
        if step.name in self.never_skip:
            return None
        phase = record.merge_findings(done).get("phase")
        if step.name in self.skip_when_healthy and phase == "Healthy":
            return "the rollout is Healthy: nothing to remediate"
        return None
