"""The run's inputs and outputs: what `rollbook run` was asked (RunSpec), the checked run, the result."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollbook.record import StepResult
from rollbook.runner.playbook import StepDef

_REQUIRED_RE = re.compile(r"^\s*required\b|\(required\)", re.IGNORECASE)


@dataclass(frozen=True)
class RunSpec:
    """Everything `rollbook run` was asked to do. Credentials are never part of it."""

    incident: str
    namespace: str
    rollout: str
    context: str | None = None
    mc_url: str | None = None
    release_id: str | None = None
    out: Path = Path("outputs")
    steps: Sequence[int] | None = None  # None: every notebook in runbooks_dir
    params: Mapping[str, Any] = field(default_factory=dict)  # --param KEY=VALUE (strings are coerced)
    approve_retry: bool = False
    approver: str | None = None
    ticket: str | None = None
    runbooks_dir: Path = Path("runbooks")
    step_timeout: float = 600.0  # wall-clock bound per step, seconds
    cell_timeout: float | None = None  # per cell; None: the step timeout
    max_parallel: int = 3  # kernels of parallel steps running at once
    start_timeout: float = 60.0  # kernel start-up bound
    # imported in each kernel while it waits for its step (the step notebooks' own first import)
    warmup: str = "import rollbook.steps"

    def __post_init__(self) -> None:
        # Resolved once, here: kernels do not run in the caller's folder's terms (papermill, temp dirs), so
        # a relative `outputs/` or `reports/junit.xml` would silently point elsewhere inside a step.
        object.__setattr__(self, "out", absolute(self.out))
        object.__setattr__(self, "runbooks_dir", absolute(self.runbooks_dir))
        object.__setattr__(self, "params", {k: str(absolute(v)) if is_path_param(k) and isinstance(v, str) and v
                                            else v for k, v in self.params.items()})


# Parameters that name a file or folder: resolved against the caller's working directory.
PATH_PARAMS = frozenset({"config", "evidence_file"})


def is_path_param(name: str) -> bool:
    """A parameter holding a path: a known one, or named `*_file`, `*_dir`, `*_path`."""
    return name in PATH_PARAMS or name.endswith(("_file", "_dir", "_path"))


def absolute(path: str | Path) -> Path:
    """`path` as an absolute path (`~` expanded) in the caller's working directory."""
    return Path(os.path.abspath(Path(path).expanduser()))


@dataclass(frozen=True)
class Param:
    """A parameter a notebook declares: `name: type = default  # help`."""

    name: str
    type_name: str
    default: str
    help: str

    @property
    def required(self) -> bool:
        """Default None and help starting with 'required' or containing '(required)'."""
        return self.default == "None" and bool(_REQUIRED_RE.search(self.help))


@dataclass(frozen=True)
class ValidatedRun:
    """A spec whose steps and parameters were checked; nothing has run yet."""

    spec: RunSpec
    steps: tuple[StepDef, ...]
    params: Mapping[int, Mapping[str, Any]]  # step number -> typed values (run_dir added at run time)
    declares_run_dir: frozenset[int]
    parameters: Mapping[str, Any]  # what record.json shows


@dataclass(frozen=True)
class RunResult:
    """What a run produced: where the record is, the exit code and the result of every step it ran."""

    record_dir: Path
    exit_code: int
    steps: tuple[StepResult, ...]
    partial: bool
    continued_from: Mapping[str, Any] | None = None  # the earlier record this run continued
    next_step: str | None = None  # what to do next (the NEXT: line)
