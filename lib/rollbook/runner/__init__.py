"""The headless runner: validate parameters, run the step notebooks with papermill, write the record.

The only importer of papermill. Traps it works around are listed in shared/docs/jupyter-notes.md:
parameters are validated against `papermill.inspect_notebook()` before any kernel starts; kernels use
the IPC transport, start ahead of their step and stop immediately; a cell timeout is marked by us.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rollbook import __version__, continuation, record, terminal
from rollbook.record import StepResult
from rollbook.runner.execution import _Context, _Gate, union_of
from rollbook.runner.kernels import IPCKernelManager, QuickReadyClient, _Kernel, _kernel_env
from rollbook.runner.playbook import PLAYBOOK, PlaybookPolicy, Policy, StepDef, discover
from rollbook.runner.schedule import _batches, _Launcher, _Scheduler
from rollbook.runner.spec import PATH_PARAMS, Param, RunResult, RunSpec, ValidatedRun, absolute, is_path_param
from rollbook.runner.validation import (
    RUN_DIR,
    SPEC_PARAMS,
    _check_secret_name,
    coerce,
    notebook_params,
    parse_params,
    parse_steps,
    validate,
)

__all__ = ["EXIT_ESCALATE", "EXIT_FAIL", "EXIT_NEEDS_HUMAN", "EXIT_OK", "EXIT_STEP_ERROR", "EXIT_UNEXPECTED",
           "EXIT_USAGE", "IPCKernelManager", "PATH_PARAMS", "PLAYBOOK", "RUN_DIR", "SPEC_PARAMS", "Param",
           "PlaybookPolicy", "Policy", "QuickReadyClient", "RunResult", "RunSpec", "StepDef", "ValidatedRun",
           "_Context", "_Gate", "_Kernel", "_Launcher", "_Scheduler", "_batches", "_check_secret_name",
           "_kernel_env", "absolute", "coerce", "discover", "earlier_record", "exit_code", "is_path_param",
           "notebook_params", "parse_params", "parse_steps", "reporter_for", "run", "secrets_from_env", "validate"]


def secrets_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """The MC token from ROLLBOOK_MC_TOKEN and the content of ROLLBOOK_MC_TOKEN_FILE, if any."""
    env = os.environ if environ is None else environ
    found = [env.get("ROLLBOOK_MC_TOKEN", "")]
    token_file = env.get("ROLLBOOK_MC_TOKEN_FILE")
    if token_file and Path(token_file).is_file():
        found.append(Path(token_file).read_text(encoding="utf-8").strip())
    return [s for s in found if s]


def reporter_for(progress: Callable[[str], None] | terminal.Reporter | None) -> terminal.Reporter:
    """The terminal's live display by default; a plain callable gets each step's result line only."""
    if progress is None:
        return terminal.for_terminal()
    if callable(progress) and not hasattr(progress, "finished"):
        return terminal.Lines(progress)
    return progress  # type: ignore[return-value]


# Exit codes of `rollbook run` / `demo` (README, "Commands and exit codes"). 0, 2, 3 and 4 are the public
# contract (shared/docs/interfaces.md); 5 and 6 are ours. When steps end differently the first in
# EXIT_PRIORITY wins: a run that escalated exits 4 even if step 4 also needs a human.
EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, EXIT_STEP_ERROR, EXIT_ESCALATE = 0, 1, 2, 3, 4
EXIT_NEEDS_HUMAN, EXIT_FAIL = 5, 6
EXIT_PRIORITY: tuple[tuple[str, int], ...] = (
    ("error", EXIT_STEP_ERROR), ("escalate", EXIT_ESCALATE), ("fail", EXIT_FAIL), ("needs_human", EXIT_NEEDS_HUMAN))


def exit_code(steps: Sequence[StepResult]) -> int:
    """3 a step failed to execute, 4 escalate, 6 a check failed, 5 a human must decide, else 0 (pass/skip).

    Steps carried from an earlier record do not count: their run already exited with its own code."""
    verdicts = {s.verdict for s in steps if not s.from_record}
    return next((code for verdict, code in EXIT_PRIORITY if verdict in verdicts), EXIT_OK)


def earlier_record(vr: ValidatedRun) -> tuple[continuation.Earlier | None, list[StepResult], tuple[str, ...]]:
    """A run that starts after step 1 continues the incident's newest earlier record (same `--out`).

    The earlier steps' results (the cause, the evidence) and its snapshot (the baseline step 4 and
    the restarts compare against) are what the later steps need; a record a service made counts too."""
    first = min(s.number for s in vr.steps)
    before = [s.number for s in discover(vr.spec.runbooks_dir) if s.number < first]
    if not before:
        return None, [], ()
    earlier = continuation.find_earlier(vr.spec.out, vr.spec.incident, vr.spec.namespace, vr.spec.rollout)
    if earlier is None:
        where = vr.spec.out / vr.spec.incident
        return None, [], (f"No earlier record of {vr.spec.incident} for {vr.spec.namespace}/{vr.spec.rollout} "
                          f"under {where}: steps {', '.join(map(str, before))} were not run and their findings "
                          "are missing (run them, or pass the --out of the earlier run).",)
    carried = earlier.steps(before)
    missing = sorted(set(before) - {s.step for s in carried})
    notes = (f"The earlier record {earlier.path} has no result for step(s) {', '.join(map(str, missing))}.",) \
        if missing else ()
    return earlier, carried, notes


def _snapshot_into(run_dir: Path, snapshot: Callable[[], Mapping[str, Any]] | None, errors: list[str],
                   reporter: terminal.Reporter) -> Callable[[], None]:
    """A thunk that writes the caller's snapshot; a failing snapshot is recorded, not fatal."""
    def take() -> None:
        if snapshot is None:
            return
        reporter.phase("taking the snapshot while the kernels start")
        try:
            record.write_snapshot(run_dir, snapshot())
        except Exception as e:  # the steps still run; record.json says why the snapshot is missing
            errors.append(f"{type(e).__name__}: {e}")
    return take


def _progress_writer(vr: ValidatedRun, run_dir: Path, started: str, continued: Mapping[str, Any] | None,
                     notes: tuple[str, ...], redactor: record.Redactor) -> Callable[[Sequence[StepResult]], None]:
    """Writes the in-progress record.json (`interrupted` until the run ends) with the steps so far."""
    def write(results: Sequence[StepResult]) -> None:
        info = record.RunInfo(
            incident=vr.spec.incident, namespace=vr.spec.namespace, rollout=vr.spec.rollout,
            context=vr.spec.context, run_id=run_dir.name, started_at=started, finished_at="",
            tool_version=__version__, parameters=vr.parameters, exit_code=EXIT_STEP_ERROR, partial=True,
            continued_from=continued, notes=notes,
            error="the run did not finish: the runner was stopped before it wrote the final record")
        record.write_progress(run_dir, info, results, redactor)
    return write


def run(
    spec: RunSpec | ValidatedRun,
    *,
    snapshot: Callable[[], Mapping[str, Any]] | None = None,
    policy: Policy | None = None,
    secrets: Iterable[str] = (),
    progress: Callable[[str], None] | terminal.Reporter | None = None,
    next_step: Callable[[ValidatedRun, Sequence[StepResult]], str | None] | None = None,
    kernels: Callable[[], _Kernel] | None = None,
) -> RunResult:
    """Validate, run the steps, write the record (also when a step fails); never raises for a step.

    `progress`: None draws live progress on stderr; a callable gets each step's result line.
    `kernels`: where each step's kernel comes from (a warm pool's `take`); None starts one per step."""
    vr = spec if isinstance(spec, ValidatedRun) else validate(spec)
    reporter = reporter_for(progress)
    try:
        return _run(vr, reporter, snapshot, policy, secrets, next_step, kernels)
    finally:
        reporter.close()


def _run(vr: ValidatedRun, reporter: terminal.Reporter, snapshot: Callable[[], Mapping[str, Any]] | None,
         policy: Policy | None, secrets: Iterable[str],
         next_step: Callable[[ValidatedRun, Sequence[StepResult]], str | None] | None,
         kernels: Callable[[], _Kernel] | None = None) -> RunResult:
    """The body of run(): the record folder, the continuation, the steps, the record."""
    started = record.utc_now()
    run_dir = record.new_run_dir(vr.spec.out, vr.spec.incident)
    earlier, carried, notes = earlier_record(vr)
    if earlier is not None:
        if continuation.carry(earlier, run_dir, carried):
            snapshot = None  # the incident's snapshot is the earlier one: the baseline of the first look
        reporter.note(f"continuing record {earlier.path} (steps {', '.join(str(s.step) for s in carried)} "
                      "and its snapshot)")
    for note in notes:
        reporter.note(note)
    secrets = [*secrets, *secrets_from_env()]
    progress = _progress_writer(vr, run_dir, started, earlier.describe(carried) if earlier else None, notes,
                                record.Redactor(secrets))
    progress(carried)
    workdir = Path(tempfile.mkdtemp(prefix="rb-"))  # short path: unix socket names are limited to ~100 bytes
    snap_errors: list[str] = []
    try:
        ctx = _Context(run_dir, workdir, _kernel_env(workdir), vr.spec.step_timeout,
                       vr.spec.cell_timeout or vr.spec.step_timeout, vr.spec.start_timeout, vr.spec.warmup,
                       Path.cwd(), reporter, kernels, union_of(vr.steps, vr.spec.warmup))
        sched = _Scheduler(vr, ctx, policy or PlaybookPolicy(), carried, on_step=progress)
        crash: str | None = None
        try:
            results = sched.run(_snapshot_into(run_dir, snapshot, snap_errors, reporter))
        except Exception as e:  # a bounded wait expired or a runner bug: still write what we have
            results, crash = sched.results, f"the runner stopped: {type(e).__name__}: {e}"
        reporter.phase("writing the record (summary, report, bundle)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    code = 3 if crash else exit_code(results)
    info = record.RunInfo(
        incident=vr.spec.incident, namespace=vr.spec.namespace, rollout=vr.spec.rollout,
        context=vr.spec.context, run_id=run_dir.name, started_at=started, finished_at=record.utc_now(),
        tool_version=__version__, parameters=vr.parameters, exit_code=code, partial=code == 3,
        snapshot_error=snap_errors[0] if snap_errors else None, error=crash,
        continued_from=earlier.describe(carried) if earlier else None,
        next_step=next_step(vr, results) if next_step else None, notes=notes)
    record.write_record(run_dir, info, results, secrets=secrets)
    ran = tuple(r for r in results if not r.from_record)  # the carried steps are the earlier run's
    return RunResult(run_dir, code, ran, code == 3, info.continued_from, info.next_step)
