"""Preflight inside the service: the gate is checked at start and on `GET /v1/preflight`, so a team sees
what will break the playbook on its dashboard (`rollbook_preflight_findings`) before the first abort.

The check runs in a thread of its own (it makes one list call per kind and one access review per rule,
seconds on a large cluster): the service answers notifications meanwhile, and `/v1/preflight` answers
`{"status": "running"}` until the first report exists. A refresh is bounded to one per `MIN_INTERVAL` s.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import Gauge

from rollbook.errors import RollbookError

if TYPE_CHECKING:
    from rollbook.serve.metrics import Metrics
    from rollbook.serve.settings import Settings

MIN_INTERVAL = 30.0  # seconds between two checks, however often /v1/preflight?refresh=1 is asked
SEVERITIES = ("error", "warn", "info")


class PreflightWatch:
    """The latest preflight report of every Rollout the service's read identity can see."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {"status": "not_started"}
        self._started = 0.0
        self._thread: threading.Thread | None = None
        self._gauge = Gauge("rollbook_preflight_findings", "Preflight findings of the last check, by severity",
                            ["severity"], registry=metrics.registry)
        for s in SEVERITIES:
            self._gauge.labels(s).set(float("nan"))

    def start(self) -> bool:
        """Start a check in the background unless one runs or the last began under MIN_INTERVAL s ago."""
        with self._lock:
            busy = self._thread is not None and self._thread.is_alive()
            if busy or (self._started and time.monotonic() - self._started < MIN_INTERVAL):
                return False
            self._started = time.monotonic()
            if self._state.get("status") == "not_started":
                self._state = {"status": "running"}
            self._thread = threading.Thread(target=self._check, name="rollbook-serve-preflight", daemon=True)
            self._thread.start()
            return True

    def join(self, timeout: float) -> None:
        """Wait (bounded) for a running check; for tests and a clean stop."""
        t = self._thread
        if t is not None:
            t.join(timeout)

    def report(self) -> dict[str, Any]:
        """What `/v1/preflight` answers: the last report (preflight --json's layout) with when and status."""
        with self._lock:
            return dict(self._state)

    def _check(self) -> None:
        from rollbook.preflight.run import run_preflight

        at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            rep = run_preflight(all_namespaces=True, context=self.settings.context or "",
                                config=self.settings.config)
        except RollbookError as e:  # unreachable cluster, no list permission: say so, keep the service up
            state: dict[str, Any] = {"status": "failed", "checked_at": at, "error": str(e)}
            for s in SEVERITIES:
                self._gauge.labels(s).set(float("nan"))
        else:
            state = {"status": "done", "checked_at": at, "exit_code": rep.exit_code, **rep.to_dict()}
            for s, n in rep.counts.items():
                self._gauge.labels(s).set(n)
        with self._lock:
            self._state = state
