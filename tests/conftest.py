"""Shared fixtures: a fresh sandbox per test (fast controller timings), a factory for other scenarios.

Use ``sandbox`` for the default scenario, ``@pytest.mark.scenario("slo-regression")`` to pick another,
or ``sandbox_factory("mc-errors", timings=...)`` for several or special ones. Every sandbox lives in
the test's tmp_path and is stopped at teardown. ``wait_until(predicate)`` polls with a bound.

``shared_runs`` (module scope) runs the playbook once per key and hands the same result to every test
of the module that asks for that key — see `SharedRuns` for how to use it from a new test module.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from rollbook.sandbox.controller import Timings
from rollbook.sandbox.server import Sandbox

# Small enough for fast tests, large enough that a test can observe the Running AnalysisRun.
FAST_TIMINGS = Timings(analysis_seconds=0.1, error_interval_seconds=0.02, scale=0.01, idle_poll_seconds=0.05)


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``scenario`` marker read by the ``sandbox`` fixture."""
    config.addinivalue_line("markers", "scenario(name): the sandbox scenario the `sandbox` fixture loads")


# Modules in this order (each module's tests stay together: module fixtures are set up once): the whole-
# playbook runs first, quick unit tests last, so that under xdist the quick ones fill the workers' last
# minutes instead of one worker finishing a 35-second run alone while the others are idle.
ORDER = ("notebooks", "integration", "faults", "unit")


def _by_folder(items: list[pytest.Item]) -> None:
    """Sort the collected tests by ORDER (stable: the order within a folder and a module is kept)."""
    def rank(item: pytest.Item) -> int:
        parts = item.path.parts
        return next((i for i, folder in enumerate(ORDER) if folder in parts), len(ORDER))

    items.sort(key=rank)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the tests (ORDER); warn when `--dist loadgroup` does not group: the shared runs would then be
    repeated on each worker.

    xdist marks a grouped test by suffixing its node id with `@group` (after its own hook); pytest 9.2's
    structured node ids ignore that (pytest-dev/pytest-xdist#1386), hence the `pytest<9.2` pin."""
    _by_folder(items)
    if not getattr(config.option, "loadgroup", False):
        return
    lost = [i.nodeid for i in items if i.get_closest_marker("xdist_group") and "@" not in i.nodeid]
    if lost:
        warnings.warn(pytest.PytestWarning(
            f"--dist loadgroup is not grouping ({len(lost)} tests, e.g. {lost[0]}): tests that share a playbook "
            "run may run it once per worker (pytest-xdist#1386; pyproject pins pytest<9.2)"), stacklevel=1)


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


# --------------------------------------------------------------------------- playbook runs shared by tests

T = TypeVar("T")
SandboxStarter = Callable[..., Sandbox]


def run_key(*parts: Any, **kw: Any) -> str:
    """A stable key of everything a run depends on: scenario, parameters, timings, hooks.

    Functions count by module, qualified name and closure values (so `_mc_down("503")` and
    `_mc_down("html")` differ); dataclasses by their fields; paths as text."""
    def norm(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): norm(x) for k, x in sorted(v.items(), key=lambda kv: str(kv[0]))}
        if isinstance(v, (list, tuple)):
            return [norm(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        if is_dataclass(v) and not isinstance(v, type):
            return [type(v).__qualname__, {f.name: norm(getattr(v, f.name)) for f in fields(v)}]
        if callable(v) and hasattr(v, "__qualname__"):
            cells = [norm(c.cell_contents) for c in getattr(v, "__closure__", None) or ()]
            return [f"{v.__module__}.{v.__qualname__}", cells]
        return v
    return repr(norm([parts, kw]))


@dataclass
class SharedRuns:
    """One playbook run per key, shared by the tests of a module that read it (issue 7 item 3).

    A module's `play` helper calls ``shared_runs.get(shared_runs.key(scenario, **kw), make)``; the first caller
    runs ``make(folder, start)`` with a folder of the run's own and ``start(scenario, timings=...)``, a
    sandbox starter whose sandboxes live until the module ends; every later caller with the same key gets
    the same object (a failed run is re-raised, not re-run). Set the environment inside ``make`` with
    ``pytest.MonkeyPatch.context()``: the run outlives any one test's monkeypatch.

    Share a run only between tests that read it: a test that changes the cluster or the record after the
    run, or whose run depends on the test's own tmp_path, needs its own key (or its own sandbox). Under
    pytest-xdist the cache is per worker: give the tests of one key the same
    ``@pytest.mark.xdist_group("...")`` so that ``--dist loadgroup`` (the Makefile's) runs them on one
    worker, one after another; without it they still pass, each worker running the playbook once.
    """

    root: Path
    runs: dict[str, Any] = field(default_factory=dict)
    sandboxes: list[Sandbox] = field(default_factory=list)
    key = staticmethod(run_key)

    def get(self, key: str, make: Callable[[Path, SandboxStarter], T]) -> T:
        if key not in self.runs:
            folder = self.root / f"run-{len(self.runs)}"
            folder.mkdir(parents=True)

            def start(scenario: str | Path = "evidence-gap", *, timings: Timings = FAST_TIMINGS,
                      admin: bool = True, port: int = 0) -> Sandbox:
                sb = Sandbox(scenario, folder / f"sandbox-{len(self.sandboxes)}", port, admin=admin,
                             timings=timings)
                self.sandboxes.append(sb)
                return sb.start()

            try:
                self.runs[key] = make(folder, start)
            except Exception as e:
                self.runs[key] = e  # the other tests of this run fail fast with it, without running it again
                raise
        value = self.runs[key]
        if isinstance(value, Exception):
            raise RuntimeError(f"the shared run {key} failed in an earlier test") from value
        return value  # type: ignore[no-any-return]

    def stop(self) -> None:
        for sb in reversed(self.sandboxes):
            sb.stop()


@pytest.fixture(scope="module")
def shared_runs(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[SharedRuns]:
    """The module's shared playbook runs (see `SharedRuns`); their sandboxes stop when the module ends."""
    runs = SharedRuns(tmp_path_factory.mktemp(f"shared-{request.module.__name__.rsplit('.', 1)[-1]}"))
    yield runs
    runs.stop()
