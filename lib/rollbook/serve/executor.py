"""How the service runs one incident: the `Executor` protocol and its local implementation.

`LocalExecutor` runs each attempt in a child process (`python -m rollbook.serve.child JOB`) that calls
`rollbook.app.run` with a `rollbook.runner.RunSpec` (read-only steps, never a mutation). A child
process rather than a worker thread, because:
- SIGTERM: a Python thread cannot be stopped. A child can: it kills its kernels, lets the runner write
  the partial record, marks it interrupted and exits, while the service keeps serving requests.
- kill -9 of the service: the child dies with it (PR_SET_PDEATHSIG, and a parent watch), so after a
  restart no orphan is still running the incident the service re-runs: nothing runs twice.
- Isolation and accounting: a run that crashes or leaks takes only its own process; its CPU (user+sys,
  kernels included) is its own rusage, per incident.
The job file and the result file live in `<out>/.serve/attempts/`, so a restarted service learns what a
child finished before the service died. Another executor (a warm kernel pool, a Kubernetes Job) only
has to implement `submit` and the `Handle`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import psutil

from rollbook.runner import RunSpec

Outcome = Literal["completed", "interrupted", "error"]


@dataclass(frozen=True)
class Attempt:
    """One attempt at one incident: the run, and what the child needs besides it."""

    spec: RunSpec
    attempt: int
    notification: Mapping[str, Any]
    config: str | None = None
    resumed_from: str | None = None  # the record folder of the attempt this one replaces
    notify: bool = False
    first_look: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExecResult:
    """What an attempt produced."""

    outcome: Outcome
    exit_code: int | None
    record_dir: Path | None
    verdicts: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None
    cpu_seconds: float | None = None  # user+sys of the child and its kernels
    wall_seconds: float | None = None
    first_look: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The result file's content."""
        data = asdict(self)
        data["record_dir"] = str(self.record_dir) if self.record_dir else None
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExecResult:
        """Back from a result file."""
        record = data.get("record_dir")
        return cls(outcome=data["outcome"], exit_code=data.get("exit_code"), record_dir=Path(record) if record else None,
                   verdicts=data.get("verdicts") or {}, error=data.get("error"), cpu_seconds=data.get("cpu_seconds"),
                   wall_seconds=data.get("wall_seconds"), first_look=data.get("first_look"))


class Handle(Protocol):
    """A submitted attempt."""

    pid: int | None
    started: float | None  # the process's start time (psutil), to recognise it after a restart

    def wait(self, timeout: float | None = None) -> ExecResult | None:
        """The result once the attempt ended; None while it still runs after `timeout` seconds."""
        ...

    def interrupt(self) -> None:
        """Ask the attempt to stop now, leaving a partial record marked interrupted."""
        ...

    def kill(self) -> None:
        """Stop the attempt and everything it started, without waiting for a record."""
        ...


class Executor(Protocol):
    """Runs incidents."""

    name: str

    def submit(self, attempt: Attempt) -> Handle:
        """Start an attempt; returns at once."""
        ...


def paths(state_dir: Path, incident: str, attempt: int) -> tuple[Path, Path, Path]:
    """(job file, result file, log file) of an attempt."""
    base = state_dir / "attempts" / f"{incident}.{attempt}"
    return Path(f"{base}.job.json"), Path(f"{base}.result.json"), state_dir / "logs" / f"{incident}.{attempt}.log"


def read_result(state_dir: Path, incident: str, attempt: int) -> ExecResult | None:
    """The result a child wrote for an attempt, if it got that far."""
    _, result, _ = paths(state_dir, incident, attempt)
    try:
        return ExecResult.from_json(json.loads(result.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError):
        return None


def spec_to_json(spec: RunSpec) -> dict[str, Any]:
    """A RunSpec as JSON (paths as strings)."""
    data = asdict(spec)
    data["out"], data["runbooks_dir"] = str(spec.out), str(spec.runbooks_dir)
    data["steps"] = list(spec.steps) if spec.steps is not None else None
    return data


def spec_from_json(data: Mapping[str, Any]) -> RunSpec:
    """Back from spec_to_json."""
    values = dict(data)
    values["out"], values["runbooks_dir"] = Path(values["out"]), Path(values["runbooks_dir"])
    values["steps"] = tuple(values["steps"]) if values.get("steps") is not None else None
    return RunSpec(**values)


class _ChildHandle:
    """A child process running one attempt."""

    def __init__(self, proc: subprocess.Popen[bytes], result: Path, log: Any) -> None:
        self.proc, self.result_path, self._log = proc, result, log
        self.pid: int | None = proc.pid
        try:
            self.started: float | None = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            self.started = None

    def wait(self, timeout: float | None = None) -> ExecResult | None:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._log.close()
        try:
            return ExecResult.from_json(json.loads(self.result_path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError):
            why = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            return ExecResult("error", None if code < 0 else code, None,
                              error=f"the incident's process ended without a result ({why}); see its log")

    def interrupt(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        kill_tree(self.proc.pid)


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant (kernels run in sessions of their own)."""
    try:
        root = psutil.Process(pid)
        tree = [*root.children(recursive=True), root]
    except psutil.Error:
        return
    for p in tree:
        try:
            p.kill()
        except psutil.Error:
            pass


def alive(pid: int | None, started: float | None) -> bool:
    """Whether the process recorded for an attempt is still that process (pids are reused)."""
    if not pid:
        return False
    try:
        p = psutil.Process(pid)
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE and (
            started is None or abs(p.create_time() - started) < 1.0)
    except psutil.Error:
        return False


def write_job(state_dir: Path, attempt: Attempt, executor: str) -> tuple[dict[str, Any], Path, Path, Path]:
    """The attempt's job file (atomically) and a clean result path: (job, job file, result file, log file)."""
    job, result, log = paths(state_dir, attempt.spec.incident, attempt.attempt)
    job.parent.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    result.unlink(missing_ok=True)
    doc = {"spec": spec_to_json(attempt.spec), "attempt": attempt.attempt, "config": attempt.config,
           "notification": dict(attempt.notification), "resumed_from": attempt.resumed_from,
           "notify": attempt.notify, "first_look": list(attempt.first_look), "result": str(result),
           "parent_pid": os.getpid(), "submitted_at": time.time(), "executor": executor}
    tmp = job.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    tmp.replace(job)
    return doc, job, result, log


def write_result(path: Path, result: ExecResult) -> None:
    """The result file, atomically (a restarted service settles a finished attempt from it)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


class LocalExecutor:
    """Each attempt in its own child process on this machine."""

    name = "local"

    def __init__(self, state_dir: Path, env: Mapping[str, str]) -> None:
        self.state_dir, self.env = state_dir, dict(env)

    def submit(self, attempt: Attempt) -> _ChildHandle:
        _, job, result, log = write_job(self.state_dir, attempt, self.name)
        out = log.open("ab")
        # a session of its own: a terminal's Ctrl-C reaches the service, which decides what the child does
        proc = subprocess.Popen([sys.executable, "-m", "rollbook.serve.child", str(job)], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        return _ChildHandle(proc, result, out)
