"""One step: a worker takes its kernel, waits for the scheduler's go, runs the notebook through papermill
in that kernel (bounded by cell and wall-clock timeouts) and reads the step result back."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import papermill
from nbclient.exceptions import CellTimeoutError
from papermill.exceptions import PapermillExecutionError

from rollbook import atomic, record, terminal
from rollbook.record import STEP_RESULT_MIME, STEP_VERDICTS, StepResult
from rollbook.runner.kernels import _Kernel
from rollbook.runner.playbook import StepDef
from rollbook.runner.saving import ENGINE


@dataclass
class _Context:
    """Per-run settings shared by the step workers."""

    run_dir: Path
    workdir: Path
    env: Mapping[str, str]
    step_timeout: float
    cell_timeout: float
    start_timeout: float
    warmup: str = ""
    # the caller's folder: a relative path in rollbook.yaml or $KUBECONFIG means there what it means to them
    cwd: Path | None = None
    reporter: terminal.Reporter = field(default_factory=lambda: terminal.Lines(lambda line: None))
    # a warm pool's `take` (rollbook serve): each step gets a pre-started, pre-imported kernel of its own
    kernels: Callable[[], _Kernel] | None = None
    imports: str = ""  # the union of the run's steps' warm-ups: what the kernel fork server imports once


def warmup_of(step: StepDef, default: str) -> str:
    """The imports a step's kernel runs before the step: its notebook's own (rollbook.warmup), else the run's."""
    return step.warmup if step.warmup is not None else default


def union_of(steps: Iterable[StepDef], default: str) -> str:
    """The warm-ups of `steps`, each line once, in order (what a fork server for their kernels imports)."""
    return "\n".join(dict.fromkeys(w for s in steps if (w := warmup_of(s, default))))


@dataclass
class _Gate:
    """The scheduler's go/skip decision for one pre-started step."""

    opened: threading.Event = field(default_factory=threading.Event)
    skip: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    done: Future[StepResult] = field(default_factory=Future)

    def open(self, skip: str | None, params: Mapping[str, Any]) -> None:
        """Let the worker run the step (or record it as skipped)."""
        self.skip, self.params = skip, params
        self.opened.set()


# --------------------------------------------------------------------------- one step


def _worker(step: StepDef, ctx: _Context, gate: _Gate, gate_bound: float,
            on_warm: Callable[[], None] = lambda: None) -> None:
    """Start (or take from the pool) a kernel, wait for the go, run the step, hand back the result, then stop
    the kernel: a kernel runs one step only, pooled or not."""
    kernel: _Kernel | None = None
    start_error: str | None = None
    try:
        if ctx.kernels is not None:
            kernel = ctx.kernels()  # already warm: the pool imported the steps' modules
        else:
            kernel = _Kernel(ctx.workdir, ctx.env, ctx.cwd, ctx.imports or warmup_of(step, ctx.warmup))
            kernel.warm_up(warmup_of(step, ctx.warmup), ctx.start_timeout)
    except Exception as e:  # any start failure is this step's error, reported below
        start_error = f"the kernel did not start: {type(e).__name__}: {e}"
    try:
        on_warm()  # the next batch's kernels may start now (a failed start counts: it frees the CPU too)
        if not gate.opened.wait(gate_bound):
            gate.skip = "not run: the runner never reached this step"
        gate.done.set_result(_outcome(step, ctx, gate, kernel, start_error))
    except BaseException as e:  # the scheduler must always get an answer
        gate.done.set_result(_result(step, "error", f"runner failure: {type(e).__name__}: {e}", None, 0.0))
    finally:
        if kernel is not None:
            kernel.stop()


def _outcome(step: StepDef, ctx: _Context, gate: _Gate, kernel: _Kernel | None, start_error: str | None) -> StepResult:
    """Skip, kernel-start error, or the executed step's result."""
    if gate.skip is not None:
        return _result(step, "skip", gate.skip, None, 0.0)
    if kernel is None:
        return _result(step, "error", start_error or "the kernel did not start", record.utc_now(), 0.0)
    return _execute(step, ctx, kernel, gate.params)


def _result(step: StepDef, verdict: record.Verdict, reason: str, started: str | None, seconds: float,
            **extra: Any) -> StepResult:
    """A StepResult for `step`."""
    return StepResult(step.number, step.name, step.filename, verdict, reason, started, seconds, **extra)


def _execute(step: StepDef, ctx: _Context, kernel: _Kernel, params: Mapping[str, Any]) -> StepResult:
    """Run one notebook through papermill in the pre-started kernel, bounded by cell and wall timeouts."""
    started, t0 = record.utc_now(), time.monotonic()
    out = ctx.run_dir / step.filename
    timer = threading.Timer(ctx.step_timeout, kernel.kill)
    timer.start()
    try:
        papermill.execute_notebook(
            str(step.notebook), str(out), parameters=dict(params), kernel_name="python3", engine_name=ENGINE,
            km=kernel.km, progress_bar=False, request_save_on_cell_execute=True,
            execution_timeout=ctx.cell_timeout, start_timeout=ctx.start_timeout,
            shutdown_kernel="immediate",
            # what the step prints (a bounded wait's progress) reaches the terminal as it happens
            stdout_file=terminal.LineWriter(functools.partial(ctx.reporter.output, step.number)),
        )
        verdict, reason, extra = _read_result(out)
    except PapermillExecutionError as e:
        verdict, reason, extra = "error", f"cell {e.exec_count} raised {e.ename}: {e.evalue}", {}
    except CellTimeoutError:
        reason = f"a cell ran longer than the cell timeout of {ctx.cell_timeout:g} s and was stopped"
        verdict, extra = "error", {"timed_out": True}
        _mark_timeout(out, "CellTimeoutError", reason)
    except Exception as e:  # kernel death (ours, on the wall clock, or its own) and papermill failures
        verdict, reason, extra = _died(e, kernel, ctx, out)
    finally:
        timer.cancel()
    try:
        atomic.sync(out)  # the step notebook as it ended, durable (its per-cell saves were not)
    except OSError as e:  # as a failed save during the step would have been: the step's error
        verdict, reason, extra = "error", f"the step notebook could not be saved durably: {e}", {}
    return _result(step, verdict, reason, started, time.monotonic() - t0, **extra)  # type: ignore[arg-type]


def _died(e: Exception, kernel: _Kernel, ctx: _Context, out: Path) -> tuple[str, str, dict[str, Any]]:
    """Verdict for an execution that ended in an exception other than a cell error or cell timeout."""
    if kernel.killed:
        reason = f"the step ran longer than its wall-clock bound of {ctx.step_timeout:g} s; its kernel was stopped"
        _mark_timeout(out, "StepTimeout", reason)
        return "error", reason, {"timed_out": True}
    return "error", f"the step failed to execute: {type(e).__name__}: {e}", {}


def _mark_timeout(out: Path, ename: str, reason: str) -> None:
    """papermill saves a timed-out cell as if it completed: put the error on it ourselves."""
    if not out.exists():
        return
    nb = nbformat.read(out, as_version=4)
    ran = [c for c in nb.cells if c.get("metadata", {}).get("papermill", {}).get("status") not in (None, "pending")]
    if ran:
        cell = ran[-1]
        cell.metadata["papermill"]["status"] = "failed"
        cell.metadata["papermill"]["exception"] = True
        cell.setdefault("outputs", []).append(
            nbformat.v4.new_output("error", ename=ename, evalue=reason, traceback=[f"{ename}: {reason}"]))
    nb.metadata.setdefault("papermill", {})["exception"] = True
    atomic.write_text(out, nbformat.writes(nb), durable=False)  # _execute syncs it


def _read_result(out: Path) -> tuple[str, str, dict[str, Any]]:
    """The step-result the notebook displayed last: (verdict, reason, facts/findings)."""
    nb = nbformat.read(out, as_version=4)
    found = [o["data"][STEP_RESULT_MIME] for c in nb.cells for o in c.get("outputs", [])
             if STEP_RESULT_MIME in o.get("data", {})]
    if not found:
        return "error", f"the notebook displayed no {STEP_RESULT_MIME} result", {}
    res = found[-1]
    problem = _result_problem(res)
    if problem:
        return "error", f"the notebook's step result is malformed: {problem}", {}
    return res["verdict"], res["reason"], {"facts": res.get("facts") or {}, "findings": res.get("findings") or {}}


def _result_problem(res: Any) -> str | None:
    """What is wrong with a displayed step result, or None."""
    if not isinstance(res, dict):
        return "not an object"
    if res.get("verdict") not in STEP_VERDICTS:
        return f"verdict {res.get('verdict')!r} is not one of {', '.join(STEP_VERDICTS)}"
    if not isinstance(res.get("reason"), str):
        return "reason is not a string"
    bad = [k for k in ("facts", "findings") if not isinstance(res.get(k) or {}, dict)]
    return f"{', '.join(bad)} must be objects" if bad else None
