"""Order and overlap: parallel steps batched, later batches' kernels started ahead, results collected."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from rollbook import record
from rollbook.record import StepResult
from rollbook.runner.execution import _Context, _Gate, _worker
from rollbook.runner.playbook import Policy, StepDef
from rollbook.runner.spec import ValidatedRun
from rollbook.runner.validation import RUN_DIR


def _batches(steps: Sequence[StepDef], max_parallel: int) -> list[list[StepDef]]:
    """Consecutive parallel steps grouped (at most max_parallel); every other step alone."""
    batches: list[list[StepDef]] = []
    for s in steps:
        if s.parallel and batches and batches[-1][-1].parallel and len(batches[-1]) < max_parallel:
            batches[-1].append(s)
        else:
            batches.append([s])
    return batches


class _Launcher:
    """Starts each batch's kernels once, in order, ahead of their step.

    A kernel started only when the step before it begins (~0.7 s) is not warm when that step ends
    (boot + imports take 1.3-1.8 s on 2 busy cores; measured: step 5 waited ~1 s). So batch k+1 starts
    when batch k runs, or earlier, as soon as a kernel of batch k is warm (one boot at a time, so the
    boots do not crowd the running steps), never more than `ahead` batches beyond the running one
    (memory: ~150 MiB a kernel).
    """

    def __init__(self, pool: ThreadPoolExecutor, batches: Sequence[Sequence[StepDef]], ctx: _Context,
                 gate_bound: float, ahead: int = 2, on_last_warm: Callable[[], object] = lambda: None) -> None:
        self.pool, self.batches, self.ctx, self.gate_bound, self.ahead = pool, batches, ctx, gate_bound, ahead
        self.on_last_warm = on_last_warm
        self.gates: list[list[tuple[StepDef, _Gate]]] = []
        self.warm: set[int] = set()  # batches with at least one warm (or failed) kernel
        self.running = 0
        self.stopped = False
        self.lock = threading.Lock()

    def _launch_next(self) -> None:
        """Submit the workers of the next unlaunched batch (the lock is held)."""
        k = len(self.gates)
        gates = [(s, _Gate()) for s in self.batches[k]]
        self.gates.append(gates)
        for s, g in gates:
            self.pool.submit(_worker, s, self.ctx, g, self.gate_bound, functools.partial(self.warmed, k))

    def _advance(self) -> None:
        """Launch every batch now allowed: its predecessor runs or has a warm kernel, within `ahead`."""
        while not self.stopped and len(self.gates) < len(self.batches):
            k = len(self.gates)
            allowed = k <= self.running + 1 or (k - 1 in self.warm and k <= self.running + self.ahead)
            if not allowed:
                return
            self._launch_next()

    def warmed(self, k: int) -> None:
        """A kernel of batch k is warm (called from its worker thread)."""
        with self.lock:
            first = k not in self.warm
            self.warm.add(k)
            self._advance()
        if first and k == len(self.batches) - 1:
            # every kernel has booted: the report's one-off cost now competes with the last steps
            # only, instead of being paid after them
            self.on_last_warm()

    def stop(self, reason: str) -> None:
        """Launch nothing more and let every worker still waiting for its go finish now, as `reason`:
        without this, leaving the pool (after a failed record write: a full disk) would wait for them
        until their gate bound, minutes, with the kernels idle."""
        with self.lock:
            self.stopped = True
            for gates in self.gates:
                for _, g in gates:
                    if not g.opened.is_set():
                        g.open(reason, {})

    def opened(self, k: int) -> list[tuple[StepDef, _Gate]]:
        """Batch k runs now: make sure it and its successor are launched; its gates."""
        with self.lock:
            self.running = k
            self._advance()
            return self.gates[k]


class _Scheduler:
    """Runs batches in order; later batches' kernels start ahead (see _Launcher)."""

    def __init__(self, vr: ValidatedRun, ctx: _Context, policy: Policy,
                 carried: Sequence[StepResult] = (),
                 on_step: Callable[[Sequence[StepResult]], object] = lambda results: None) -> None:
        self.vr, self.ctx, self.policy, self.on_step = vr, ctx, policy, on_step
        self.results: list[StepResult] = list(carried)  # an earlier record's steps, when continuing it
        self.stop_reason: str | None = None
        self.position = {s.number: i + 1 for i, s in enumerate(vr.steps)}
        # bounded: a worker waits at most as long as every step could take before it
        self.gate_bound = len(vr.steps) * (vr.spec.step_timeout + vr.spec.start_timeout) + 60

    def _open(self, gates: Sequence[tuple[StepDef, _Gate]]) -> None:
        """Decide each step of a batch (stopped, skipped by policy, or run) and open its gate."""
        record.write_results(self.ctx.run_dir, self.results)
        for s, g in gates:
            # after a failed step the run stops, except for steps the policy never skips (escalation:
            # a broken step 2 is no reason not to tell people the service is still degraded)
            always = s.name in getattr(self.policy, "never_skip", frozenset())
            stopped = self.stop_reason and not always
            skip = f"not run: {self.stop_reason}" if stopped else self.policy(s, self.results)
            params = dict(self.vr.params[s.number])
            if s.number in self.vr.declares_run_dir:
                params[RUN_DIR] = str(self.ctx.run_dir)
            if skip is None:
                self.ctx.reporter.started(s.number, self.label(s))
            g.open(skip, params)

    def label(self, s: StepDef) -> str:
        """`[4/6] remediate-and-retry`."""
        return f"[{self.position[s.number]}/{len(self.vr.steps)}] {s.name}"

    def _collect(self, gates: Sequence[tuple[StepDef, _Gate]]) -> None:
        """Wait (bounded) for a batch, report progress, note the first failure."""
        for s, g in gates:
            r = g.done.result(timeout=self.gate_bound)
            self.results.append(r)
            self.on_step(self.results)  # record.json (still `interrupted`) lists it from now on
            self.ctx.reporter.finished(s.number, _progress_line(self.position[s.number], len(self.vr.steps), r))
            if r.verdict == "error" and self.stop_reason is None:
                self.stop_reason = f"step {r.step} ({r.name}) failed to execute"

    def run(self, take_snapshot: Callable[[], None]) -> list[StepResult]:
        """Run every batch; the snapshot is taken while the first kernels boot, before any step runs."""
        batches = _batches(self.vr.steps, self.vr.spec.max_parallel)
        # room for every kernel the launcher may keep ahead: no worker ever queues behind a later one
        workers = sum(len(b) for b in batches[:3]) if len(batches) > 1 else len(batches[0])
        with ThreadPoolExecutor(max_workers=max(workers, 2 * self.vr.spec.max_parallel)) as pool:
            launcher = _Launcher(pool, batches, self.ctx, self.gate_bound, on_last_warm=record.warm_report)
            with launcher.lock:
                launcher._launch_next()  # the first batch's kernels boot while the snapshot is taken
            self.ctx.reporter.phase(f"starting {len(batches[0])} kernel(s)")
            take_snapshot()
            self.ctx.reporter.phase("waiting for the first kernel(s) to be ready")
            try:
                for k in range(len(batches)):
                    gates = launcher.opened(k)
                    self._open(gates)
                    self._collect(gates)
            except BaseException as e:
                launcher.stop(f"not run: the runner stopped ({type(e).__name__}: {e})")
                raise
        record.write_results(self.ctx.run_dir, self.results)
        return self.results


def _progress_line(i: int, n: int, r: StepResult) -> str:
    """`[2/6] inspect-evidence … pass (1.3 s)`."""
    tail = f"skip: {r.reason}" if r.verdict == "skip" else f"{r.verdict} ({r.seconds:.1f} s)"
    if r.verdict == "error":
        tail += f": {r.reason}"
    return record.printable(f"[{i}/{n}] {r.name} … {tail}")


# Exit codes of `rollbook run` / `demo` (README, "Commands and exit codes"). 0, 2, 3 and 4 are the public
