"""The simulated controller's event loop and clock: a queue of store events, timers, and the hold/release gate.

A listener only queues events; one thread handles them and the due timers, so every write comes from
that thread and a write never happens inside a store callback. Time spent held does not count: tests
hold the clock so that what the controller owes happens after the step under test has started.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from rollbook.sandbox.argo_objects import Obj
from rollbook.sandbox.store import StoreError

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timings:
    """How fast the simulated controller moves, in seconds (small in tests)."""

    analysis_seconds: float = 5.0          # a new AnalysisRun runs this long before its verdict
    error_interval_seconds: float = 10.0   # Argo re-measures an errored web metric every 10 s
    scale: float = 1.0                     # multiplies delays written in objects (abortScaleDownDelaySeconds)
    idle_poll_seconds: float = 0.5         # bound on each wait of the controller thread
    held: bool = False                     # start with the clock stopped: nothing timed fires until release()


class EventClock:
    """One thread handling queued Rollout events and due timers; subclasses say what an event means."""

    def __init__(self, timings: Timings) -> None:
        self.timings = timings
        self._queue: queue.Queue[tuple[str, Obj] | None] = queue.Queue()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._busy = threading.Event()
        self._lock = threading.Lock()          # guards _timers and _held_since (hold/release come from other threads)
        self._held_since: float | None = time.monotonic() if timings.held else None

    def _on_rollout(self, ro: Obj) -> None:
        """Handle one Rollout event (on the loop's thread)."""
        raise NotImplementedError

    def _start_loop(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="argo-controller", daemon=True)
        self._thread.start()

    def _stop_loop(self) -> None:
        """Stop the thread (bounded join)."""
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None

    # ------------------------------------------------------------------ the gate (tests hold simulated time)

    def hold(self) -> None:
        """Stop the controller's clock: no timer (scale-down, analysis verdict, pods settling) fires until
        release(). Events are still handled. Tests use it so that what the controller owes happens after
        the step under test has started, whatever the machine's speed — never a race."""
        with self._lock:
            if self._held_since is None:
                self._held_since = time.monotonic()

    def release(self) -> None:
        """Start the clock again; every pending timer is pushed back by the time spent held."""
        with self._lock:
            if self._held_since is None:
                return
            paused = time.monotonic() - self._held_since
            self._timers = [(due + paused, seq, fn) for due, seq, fn in self._timers]
            heapq.heapify(self._timers)
            self._held_since = None
        self._queue.put(("TICK", {}))  # wake the loop now rather than after idle_poll_seconds

    @property
    def held(self) -> bool:
        return self._held_since is not None

    def idle(self) -> bool:
        """True when no event is queued or being handled and no timer is pending."""
        return self._queue.empty() and not self._timers and not self._busy.is_set()

    # ------------------------------------------------------------------ event plumbing

    def _on_store_event(self, event_type: str, plural: str, obj: Obj) -> None:
        """Store listener: only queue (writing from inside a store callback is not allowed)."""
        if plural == "rollouts" and event_type == "MODIFIED" and not self._stop.is_set():
            self._queue.put((event_type, obj))

    def _loop(self) -> None:
        """Handle queued events and due timers until stopped; each wait is bounded."""
        while not self._stop.is_set():
            item = self._next_event()
            self._busy.set()
            try:
                if item is not None and item[0] != "TICK":
                    self._guard(functools.partial(self._on_rollout, item[1]))
                for fn in self._due_timers():
                    self._guard(fn)
            finally:
                self._busy.clear()

    def _next_event(self) -> tuple[str, Obj] | None:
        """The next queued event, waiting at most until the next timer is due."""
        wait = self.timings.idle_poll_seconds
        with self._lock:
            if self._timers and self._held_since is None:
                wait = max(0.0, min(wait, self._timers[0][0] - time.monotonic()))
        try:
            return self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None

    def _due_timers(self) -> list[Callable[[], None]]:
        due: list[Callable[[], None]] = []
        with self._lock:
            if self._held_since is not None:
                return due
            while self._timers and self._timers[0][0] <= time.monotonic():
                due.append(heapq.heappop(self._timers)[2])
        return due

    def _after(self, seconds: float, fn: Callable[[], None]) -> None:
        """Run fn after `seconds` of controller time (time spent held does not count)."""
        with self._lock:
            start = self._held_since if self._held_since is not None else time.monotonic()
            heapq.heappush(self._timers, (start + max(0.0, seconds), next(self._seq), fn))

    @staticmethod
    def _guard(fn: Callable[[], None]) -> None:
        """Run a handler; an object deleted under us or a bug must not kill the controller thread."""
        try:
            fn()
        except StoreError as e:
            _log.warning("controller: store refused a write: %s", e.message)
        except Exception:  # noqa: BLE001 - a simulated controller must keep running, like Argo after a panic
            _log.exception("controller: handler failed")
