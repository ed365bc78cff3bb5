"""The warm executor: each attempt in a thread of the service, each step on a kernel from a warm pool.

The cold path (`LocalExecutor`) pays, per incident, an interpreter, the runner's imports (papermill,
nbclient, nbconvert, kubernetes) and one kernel boot with its imports per step, all between Argo's
notification and the record. Here the service has imported the runner once, and the pool
(rollbook.runner.pool) has booted the kernels and imported `rollbook.steps` and matplotlib in them
before the notification came; each step still gets a fresh kernel of its own, shut down after it.

What the child process gave, kept:
- SIGTERM / interrupt: the attempt's kernels are SIGKILLed (and any it takes later is refused), so every
  running step ends as an error at once, the runner writes the partial record, and execute() marks it
  interrupted, exactly as in the child (a Python thread cannot be killed; its kernels can).
- kill -9 of the service: the kernels die with it (ipykernel's parent poller), the job and result files
  are the child's, so the restart's recovery is unchanged: a finished attempt is settled from its result
  file, a cut one runs again as a resumed attempt.
- CPU per incident: the service process's user+sys over the attempt plus each of its kernels' user+sys
  from hand-out to stop. The kernels' boot and imports happened before the incident and are counted by
  the pool (`PoolStats.boot_cpu_seconds`), not here. With several workers the service's share is shared.
Given up: a crash of the interpreter (a segfault in a C extension) now takes the service with it; the
queue is persisted, so a supervisor's restart re-runs the attempt. `--pool 0` keeps the child per attempt.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from rollbook.runner.kernels import _Kernel
from rollbook.runner.pool import KernelPool, kernel_cpu
from rollbook.serve import child
from rollbook.serve.executor import Attempt, ExecResult, write_job, write_result


def process_cpu() -> float:
    """User+sys of this process so far (its threads included, its children not)."""
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


class AttemptKernels:
    """The kernels one attempt took: killable together (an interrupt), their CPU summed."""

    def __init__(self, pool: KernelPool) -> None:
        self.pool = pool
        self.reason: str | None = None
        self.done = threading.Event()
        self.kernel_cpu = 0.0
        self._live: list[_Kernel] = []
        self._lock = threading.Lock()

    def take(self) -> _Kernel:
        """A warm kernel for one step of this attempt (refused once the attempt was interrupted)."""
        if self.reason is not None:
            raise RuntimeError(f"not started: {self.reason}")
        kernel = self.pool.take()
        base = kernel_cpu(kernel)

        def account() -> None:
            with self._lock:
                self.kernel_cpu += max(0.0, kernel_cpu(kernel) - base)
                if kernel in self._live:
                    self._live.remove(kernel)

        kernel.before_stop = account
        with self._lock:
            self._live.append(kernel)
            late = self.reason is not None
        if late:  # interrupted while we waited for it
            _sigkill(kernel)
        return kernel

    def trigger(self, reason: str) -> None:
        """Interrupt the attempt (idempotent): its kernels die, the runner writes what it has."""
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
            live = list(self._live)
        for kernel in live:
            _sigkill(kernel)


def _sigkill(kernel: _Kernel) -> None:
    """SIGKILL a kernel's process without marking it as timed out (the reason is the interrupt's)."""
    process = getattr(kernel.km.provisioner, "process", None)
    if process is not None and process.poll() is None:
        process.kill()


class _ThreadHandle:
    """An attempt running in a thread of the service."""

    pid: int | None = None  # no process of its own: recovery reads the result file only
    started: float | None = None

    def __init__(self, kernels: AttemptKernels) -> None:
        self.kernels = kernels
        self.result: ExecResult | None = None
        self.thread: threading.Thread | None = None

    def wait(self, timeout: float | None = None) -> ExecResult | None:
        assert self.thread is not None
        self.thread.join(timeout)
        return None if self.thread.is_alive() else self.result

    def interrupt(self) -> None:
        self.kernels.trigger("interrupted by SIGTERM: the service stopped before the run finished")

    def kill(self) -> None:
        self.kernels.trigger("killed: the service stopped before the run finished")


class WarmExecutor:
    """Attempts in threads of the service; steps on kernels from a warm pool."""

    name = "warm"

    def __init__(self, state_dir: Path, pool: KernelPool) -> None:
        self.state_dir, self.pool = state_dir, pool
        # the runner's imports and the report exporter, once, before the first notification
        from rollbook import app, record  # noqa: F401 - imported for its cost

        record.warm_report().join(timeout=30)

    def submit(self, attempt: Attempt) -> _ThreadHandle:
        job, _, result_path, log_path = write_job(self.state_dir, attempt, self.name)
        kernels = AttemptKernels(self.pool)
        handle = _ThreadHandle(kernels)
        handle.thread = threading.Thread(target=self._run, args=(job, kernels, handle, result_path, log_path),
                                         name=f"rollbook-attempt-{attempt.spec.incident}", daemon=True)
        handle.thread.start()
        return handle

    @staticmethod
    def _run(job: Mapping[str, Any], kernels: AttemptKernels, handle: _ThreadHandle, result_path: Path,
             log_path: Path) -> None:
        start = process_cpu()
        with log_path.open("a", encoding="utf-8") as log:
            def line(text: str) -> None:
                log.write(text + "\n")
                log.flush()

            try:
                result = child.execute(dict(job), kernels, kernels=kernels.take, progress=line,
                                       cpu=lambda: process_cpu() - start + kernels.kernel_cpu)
            except BaseException as e:  # execute() never raises; the service must still get an answer
                result = ExecResult("error", 1, None, error=f"the attempt's thread failed: {type(e).__name__}: {e}")
            kernels.done.set()
            try:
                write_result(result_path, result)
            except OSError as e:
                line(f"rollbook serve: could not write the result file {result_path}: {e}")
        handle.result = result
