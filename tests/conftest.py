"""Shared fixtures: a fresh sandbox per test (fast controller timings), a factory for other scenarios.

Use ``sandbox`` for the default scenario, ``@pytest.mark.scenario("slo-regression")`` to pick another,
or ``sandbox_factory("mc-errors", timings=...)`` for several or special ones. Every sandbox lives in
the test's tmp_path and is stopped at teardown. ``wait_until(predicate)`` polls with a bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rollbook.sandbox.controller import Timings
from rollbook.sandbox.server import Sandbox

# Small enough for fast tests, large enough that a test can observe the Running AnalysisRun.
FAST_TIMINGS = Timings(analysis_seconds=0.1, error_interval_seconds=0.02, scale=0.01, idle_poll_seconds=0.05)


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``scenario`` marker read by the ``sandbox`` fixture."""
    config.addinivalue_line("markers", "scenario(name): the sandbox scenario the `sandbox` fixture loads")


@pytest.fixture
def sandbox_factory(tmp_path: Path) -> Iterator[Callable[..., Sandbox]]:
    """Start sandboxes on demand (``admin=True`` so MC faults can be injected); all stopped at teardown."""
    started: list[Sandbox] = []

    def make(scenario: str | Path = "evidence-gap", *, timings: Timings = FAST_TIMINGS, admin: bool = True,
             port: int = 0) -> Sandbox:
        sb = Sandbox(scenario, tmp_path / f"sandbox-{len(started)}", port, admin=admin, timings=timings)
        started.append(sb)
        return sb.start()

    yield make
    for sb in reversed(started):
        sb.stop()


@pytest.fixture
def sandbox(request: pytest.FixtureRequest, sandbox_factory: Callable[..., Sandbox]) -> Sandbox:
    """A running sandbox of the marked scenario (default evidence-gap), or of ``request.param``."""
    marker = request.node.get_closest_marker("scenario")
    scenario = marker.args[0] if marker else getattr(request, "param", "evidence-gap")
    return sandbox_factory(scenario)


@pytest.fixture
def wait_until() -> Callable[..., Any]:
    """``wait_until(fn, timeout=15.0)``: poll fn until truthy and return its value; fail the test on timeout."""

    def wait(fn: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = fn()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout}s waiting for {what or fn}")
            time.sleep(interval)

    return wait
