"""One attempt at one incident, in its own process: `python -m rollbook.serve.child <job.json>`.

Runs `rollbook.app.run` (the same runner and record as `rollbook run`), then marks the record with the
service's view (`serve.json`: attempt, resumed from, interrupted or completed), posts the first look,
re-seals the bundle and manifest, and writes the result file the service reads.

SIGTERM (the service shutting down past its grace period, or the service dying: PR_SET_PDEATHSIG and a
parent watch) does not kill this process: it kills the kernels, so every step still running ends as an
error at once, the runner writes the partial record as it does for any failed step, and this process
records that the attempt was interrupted and why.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import psutil

from rollbook import atomic, history, record
from rollbook.errors import RollbookError
from rollbook.runner import forkserver
from rollbook.serve.executor import ExecResult, Outcome, spec_from_json, write_result

PR_SET_PDEATHSIG = 1
KILL_INTERVAL = 0.2  # seconds between sweeps for kernels still starting after an interrupt
SERVE_FILE = "serve.json"


class Interrupt:
    """The SIGTERM handler: remembers why, and keeps killing this process's kernels until the run ends."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.done = threading.Event()
        self._sweeper: threading.Thread | None = None

    def install(self) -> None:
        """Take SIGTERM and SIGINT (the service decides when an attempt stops)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.trigger(f"interrupted by {signal.Signals(signum).name}: the service stopped before the run finished")

    def trigger(self, reason: str) -> None:
        """Interrupt the run (idempotent): kernels die, the runner writes what it has."""
        if self.reason is not None:
            return
        self.reason = reason
        self._sweeper = threading.Thread(target=self._sweep, name="rollbook-interrupt", daemon=True)
        self._sweeper.start()

    def _sweep(self) -> None:
        """SIGKILL every descendant (kernels), again each interval: one may still be booting."""
        while not self.done.is_set():
            try:
                for child in psutil.Process().children(recursive=True):
                    try:
                        child.kill()
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            self.done.wait(KILL_INTERVAL)


def die_with_parent(parent_pid: int, interrupt: Interrupt) -> bool:
    """Be told when the service dies (kill -9 included); False when it is already gone."""
    try:  # Linux: the kernel sends SIGTERM when the parent goes
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        return False

    def watch() -> None:  # elsewhere, and as a second guard: poll the parent (bounded by the run's life)
        while not interrupt.done.wait(1.0):
            if os.getppid() != parent_pid:
                interrupt.trigger("interrupted: the service process died during the run")
                return

    threading.Thread(target=watch, name="rollbook-parent-watch", daemon=True).start()
    return True


def cpu_seconds() -> float:
    """User+sys of this process and every child it reaped (the kernels)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return round(own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime, 3)


def mark_record(run_dir: Path, job: dict[str, Any], outcome: Outcome, reason: str | None, seconds: float,
                cpu: float | None = None) -> None:
    """serve.json beside record.json; an interrupted record says so in record.json's `error` too."""
    doc = {"schema": 1, "incident": job["spec"]["incident"], "attempt": job["attempt"],
           "resumed": job["attempt"] > 1, "resumed_from": job.get("resumed_from"), "state": outcome,
           "reason": reason, "notification": job["notification"], "steps": job["spec"]["steps"],
           "service_pid": job["parent_pid"], "wall_seconds": round(seconds, 3),
           "cpu_seconds": cpu_seconds() if cpu is None else round(cpu, 3), "executor": job.get("executor", "local")}
    atomic.write_text(run_dir / SERVE_FILE, json.dumps(doc, indent=2) + "\n")
    if outcome == "interrupted":
        path = run_dir / "record.json"
        rec = json.loads(path.read_text(encoding="utf-8"))
        rec["partial"] = True
        rec["error"] = rec.get("error") or reason
        atomic.write_text(path, json.dumps(rec, indent=2, ensure_ascii=False) + "\n")


def verdicts(run_dir: Path | None) -> dict[str, str]:
    """{step name: verdict} of a record."""
    if run_dir is None or not (run_dir / "record.json").is_file():
        return {}
    doc = json.loads((run_dir / "record.json").read_text(encoding="utf-8"))
    return {str(s.get("name")): str(s.get("verdict")) for s in doc.get("steps") or []}


def first_look(job: dict[str, Any], run_dir: Path) -> dict[str, Any] | None:
    """Post (or dry-run) the first look; a failure is recorded, never fatal."""
    from rollbook.config import load
    from rollbook.serve import firstlook

    try:
        return firstlook.post(load(job.get("config")), run_dir, Path(job["spec"]["out"]),
                              job["notification"].get("trigger", ""), targets=job.get("first_look") or (),
                              notify=bool(job.get("notify")))
    except (RollbookError, OSError, ValueError) as e:
        return {"notify": bool(job.get("notify")), "sent": [], "errors": [f"{type(e).__name__}: {e}"]}


class Interruptible(Protocol):
    """What execute() needs of an interrupt: why it came (None: it did not), and a flag for the run's end."""

    reason: str | None
    done: threading.Event


def execute(job: dict[str, Any], interrupt: Interruptible, *, kernels: Callable[[], Any] | None = None,
            cpu: Callable[[], float] = cpu_seconds, progress: Any = None) -> ExecResult:
    """Run the attempt and seal its record; never raises.

    In this process (`main`) or, with a warm pool's `kernels`, in a thread of the service (serve/warm.py)."""
    from rollbook import app

    t0 = time.monotonic()
    run_dir: Path | None = None
    code: int | None
    error: str | None = None
    try:
        result = app.run(spec_from_json(job["spec"]), config=job.get("config"), kernels=kernels, progress=progress)
        run_dir, code = result.record_dir, result.exit_code
    except RollbookError as e:
        code, error = e.exit_code, str(e)
    except Exception as e:  # a bug: the service records it as the attempt's failure
        code, error = 1, f"{type(e).__name__}: {e}"
    if kernels is None:  # this process's run is over: reap the kernel fork server, its kernels' CPU is then ours
        forkserver.shutdown()
    outcome: Outcome = "interrupted" if interrupt.reason else "completed" if run_dir else "error"
    interrupt.done.set()
    look = None
    if run_dir is not None:
        mark_record(run_dir, job, outcome, interrupt.reason, time.monotonic() - t0, cpu())
        if outcome == "completed":
            look = first_look(job, run_dir)
        record.write_bundle(run_dir)
        record.write_manifest(run_dir)
        history.index_quietly(run_dir)  # again: serve.json and an interruption changed the record
    return ExecResult(outcome, code, run_dir, verdicts(run_dir), error or interrupt.reason, round(cpu(), 3),
                      round(time.monotonic() - t0, 3), look)


def main(argv: list[str]) -> int:
    """Entry point; the exit code is the run's."""
    job = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    interrupt = Interrupt()
    interrupt.install()
    if not die_with_parent(int(job["parent_pid"]), interrupt):
        print("rollbook serve child: the service is gone; nothing run (it re-runs the attempt)", file=sys.stderr)
        return 1
    result = execute(job, interrupt)
    write_result(Path(job["result"]), result)
    return result.exit_code if result.exit_code is not None else 1


if __name__ == "__main__":  # pragma: no cover - run by LocalExecutor
    sys.exit(main(sys.argv))
