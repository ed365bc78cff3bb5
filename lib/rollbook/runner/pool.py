"""A pool of pre-started, pre-imported kernels for a long-running caller (`rollbook serve`).

Each kernel runs exactly one step: `take()` hands one out and the pool boots its replacement in the
background; the step's worker shuts the kernel down after the step, as it does any kernel. A kernel is
never reused across steps or incidents, so nothing one step leaves in its kernel (variables, a client,
a patched module) reaches another; only the boot and the imports are done ahead.

The kernels are jupyter_client `KernelManager`s started by the pool (`_Kernel`); nbclient, through
papermill's `km=`, executes the parameterised notebook on the already-started kernel (it starts a kernel
only when `km.has_kernel` is false) and does not shut it down (it owns neither the manager nor, with
`shutdown_kernel="immediate"`, the shutdown path we use).

Bounds: at most `size` idle or booting kernels, one background boot at a time (boots would crowd
running steps on 2 cores), and no background boot while `max_live` kernels are alive (idle + booting +
in use: memory, ~130 MiB each). `take()` waits (bounded) for a background boot under way that no other
caller waits for already; otherwise the caller boots its kernel itself, as the cold runner would, so a
burst boots in parallel instead of queueing behind one boot at a time, and no wait can deadlock two
incidents that each hold part of a batch.
Kernels die with the process that started them (ipykernel's parent poller, JPY_PARENT_PID), so a kill -9
of the service leaves none behind.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from rollbook.runner.execution import union_of
from rollbook.runner.kernels import _Kernel, _kernel_env
from rollbook.runner.playbook import discover

BACKOFF = 2.0  # seconds between boots after a failed one (bounded retry: the pool never spins)
DEFAULT_WARMUP = "import rollbook.steps, matplotlib.figure, matplotlib.backends.backend_agg"  # no step uses pandas


class PoolClosed(RuntimeError):
    """take() on a pool that is shutting down."""


@dataclass
class PoolStats:
    """What the pool did (for /metrics and the benchmark)."""

    booted: int = 0
    boot_failures: int = 0
    handed_out: int = 0
    waited_for: int = 0  # takes that found no warm kernel and waited for the background boot
    booted_by_callers: int = 0  # takes that found none warm nor coming, and booted their own (a burst)
    boot_cpu_seconds: float = 0.0  # user+sys the kernels spent booting and importing, before any step


def warmup_for(runbooks_dir: Path, steps: Iterable[int] | None = None) -> str:
    """The union of the step notebooks' own warm-up imports (metadata rollbook.warmup) of `steps` (default
    all), or the default."""
    chosen = None if steps is None else set(steps)
    return union_of([s for s in discover(runbooks_dir) if chosen is None or s.number in chosen], "") or DEFAULT_WARMUP


def kernel_cpu(kernel: _Kernel) -> float:
    """User+sys of a kernel's process so far (0 when it is gone)."""
    process = getattr(kernel.km.provisioner, "process", None)
    try:
        t = psutil.Process(process.pid).cpu_times() if process is not None else None
    except psutil.Error:
        return 0.0
    return (t.user + t.system) if t is not None else 0.0


class KernelPool:
    """Warm kernels, each handed out once; replaced in the background."""

    def __init__(self, size: int, env: Mapping[str, str], *, warmup: str = DEFAULT_WARMUP, cwd: Path | None = None,
                 start_timeout: float = 60.0, max_live: int | None = None) -> None:
        if size < 1:
            raise ValueError("a kernel pool holds at least one kernel")
        self.size, self.warmup, self.cwd, self.start_timeout = size, warmup, cwd, start_timeout
        self.max_live = max(max_live or size, size)
        # short path: unix socket names are limited to ~100 bytes
        self.workdir = Path(tempfile.mkdtemp(prefix="rb-pool-"))
        self.env = {**env, **_kernel_env(self.workdir)}
        self.stats = PoolStats()
        self._idle: deque[_Kernel] = deque()
        self._booting = 0
        self._in_use = 0
        self._waiting = 0  # callers waiting for a background boot
        self._closed = False
        self._cond = threading.Condition()
        self._filler = threading.Thread(target=self._fill, name="rollbook-kernel-pool", daemon=True)

    def start(self) -> KernelPool:
        """Begin booting kernels in the background; returns at once."""
        self._filler.start()
        return self

    # ------------------------------------------------------------------ the background filler

    def _wanted(self) -> bool:
        """Another boot is due (the lock is held)."""
        return not self._closed and len(self._idle) + self._booting < self.size and \
            len(self._idle) + self._booting + self._in_use < self.max_live

    def _fill(self) -> None:
        while True:
            with self._cond:
                while not self._wanted():
                    if self._closed:
                        return
                    self._cond.wait(1.0)
                self._booting += 1
            kernel = self._boot()
            with self._cond:
                self._booting -= 1
                if kernel is not None and not self._closed:
                    self._idle.append(kernel)
                    kernel = None
                self._cond.notify_all()
            if kernel is not None:  # closed while it booted
                kernel.stop()

    def _boot(self) -> _Kernel | None:
        """One kernel, started and warmed up; None after a failure (logged in stats, retried after BACKOFF)."""
        try:
            kernel = _Kernel(self.workdir, self.env, self.cwd, self.warmup)
            kernel.warm_up(self.warmup, self.start_timeout)
        except Exception:  # noqa: BLE001 - counted; a step that cannot get a kernel says so itself
            with self._cond:
                self.stats.boot_failures += 1
            time.sleep(BACKOFF)
            return None
        kernel.on_stop = self._stopped
        with self._cond:
            self.stats.booted += 1
            self.stats.boot_cpu_seconds += kernel_cpu(kernel)
        return kernel

    def _stopped(self) -> None:
        """A handed-out kernel was shut down after its step: room for another boot."""
        with self._cond:
            self._in_use -= 1
            self._cond.notify_all()

    # ------------------------------------------------------------------ the callers

    def take(self, timeout: float | None = None) -> _Kernel:
        """A warm kernel of the caller's own (it must `stop()` it after its one step).

        Waits at most `timeout` seconds (default: the start timeout) for the background boot when no
        kernel is warm; raises TimeoutError then, PoolClosed when the pool is shutting down."""
        deadline = time.monotonic() + (self.start_timeout if timeout is None else timeout)
        with self._cond:
            waited = False
            while True:
                if self._closed:
                    raise PoolClosed("the kernel pool is shutting down")
                while self._idle:
                    kernel = self._idle.popleft()
                    if not run_alive(kernel):  # died while idle (OOM, a stray signal): never hand it out
                        self._in_use += 1
                        threading.Thread(target=kernel.stop, daemon=True).start()
                        continue
                    self._in_use += 1
                    self.stats.handed_out += 1
                    self.stats.waited_for += waited
                    self._cond.notify_all()  # the filler boots the replacement
                    return kernel
                if self._booting <= self._waiting:  # no background boot left for this caller: boot it here
                    self._in_use += 1
                    self.stats.handed_out += 1
                    self.stats.booted_by_callers += 1
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no warm kernel within {self.start_timeout:g} s "
                                       f"({self._booting} booting, {self._in_use} in use, bound {self.max_live})")
                waited = True
                self._waiting += 1
                try:
                    self._cond.wait(min(left, 1.0))
                finally:
                    self._waiting -= 1
        try:
            kernel = _Kernel(self.workdir, self.env, self.cwd, self.warmup)
            kernel.warm_up(self.warmup, self.start_timeout)
        except BaseException:
            self._stopped()
            raise
        kernel.on_stop = self._stopped
        return kernel

    def counts(self) -> dict[str, int]:
        """{"idle", "booting", "in_use"} now."""
        with self._cond:
            return {"idle": len(self._idle), "booting": self._booting, "in_use": self._in_use}

    def wait_full(self, timeout: float) -> bool:
        """Block until `size` kernels are warm (or `timeout`); True when full."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._idle) < self.size and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 1.0))
            return len(self._idle) >= self.size

    def close(self) -> None:
        """Stop the idle kernels and the filler (a booting kernel is stopped when its boot ends)."""
        with self._cond:
            self._closed = True
            idle = list(self._idle)
            self._idle.clear()
            self._cond.notify_all()
        for kernel in idle:
            kernel.on_stop = None
            kernel.stop()
        self._filler.join(timeout=self.start_timeout + 5)
        shutil.rmtree(self.workdir, ignore_errors=True)


def run_alive(kernel: _Kernel) -> bool:
    """The kernel's process still runs."""
    process = getattr(kernel.km.provisioner, "process", None)
    return process is not None and process.poll() is None
