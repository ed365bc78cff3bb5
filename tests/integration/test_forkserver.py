"""Kernels forked from the fork server (rollbook.runner.forkserver), with real ipykernel processes: each one
a fresh kernel with the run's environment and folder, the imports done once in the server, its CPU
accounted to the caller once the server is reaped, gone when the server goes, and `ROLLBOOK_KERNELS=spawn`
back to one interpreter per kernel."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import psutil
import pytest
from kernel_harness import BOUND, ask, pid

from rollbook.runner import forkserver
from rollbook.runner.kernels import _Kernel, _kernel_env


def _gone(process_id: int) -> bool:
    try:
        return psutil.Process(process_id).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait(what: str, fn, bound: float = BOUND) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + bound
    while not fn():
        assert time.monotonic() < deadline, f"not within {bound:g} s: {what}"
        time.sleep(0.05)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    # a PYTHONPATH of this test's own: a server of its own, whatever other tests in this process started
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "rb_marker.py").write_text("VALUE = 'from the test path'\n")
    return {**_kernel_env(tmp_path), "PYTHONPATH": str(tmp_path / "mods"), "RB_TEST_VAR": "seen"}


def test_a_forked_kernel_is_fresh_with_the_runs_environment_and_folder(tmp_path: Path, env: dict[str, str]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    first = _Kernel(tmp_path, env, work)
    first_pid = pid(first)
    try:
        server = forkserver.shared(env)
        assert server is not None and psutil.Process(pid(first)).ppid() == server.proc.pid
        assert "ipykernel_launcher" in " ".join(psutil.Process(pid(first)).cmdline())
        # imported by the server already; the run's variables, TMPDIR and folder, not the server's
        said = ask(first, "import os, sys, tempfile, rb_marker; print('rollbook.steps' in sys.modules, "
                           "os.environ['RB_TEST_VAR'], tempfile.gettempdir() == os.environ['TMPDIR'], os.getcwd(), "
                           "rb_marker.VALUE); leftover = 1")
        assert said == f"True seen True {work} from the test path\n"
    finally:
        first.stop()
    second = _Kernel(tmp_path, {**env, "RB_TEST_VAR": "changed"}, work)
    try:
        assert pid(second) != first_pid and _gone(first_pid)
        assert ask(second, "import os; print('leftover' in globals(), os.environ['RB_TEST_VAR'])") == "False changed\n"
    finally:
        second.stop()


def test_the_kernels_cpu_reaches_the_caller_and_they_die_with_the_server(tmp_path: Path, env: dict[str, str]) -> None:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    kernel = _Kernel(tmp_path, env)
    idle = _Kernel(tmp_path, env)
    server = forkserver.shared(env)
    assert server is not None
    try:
        # burn 0.5 CPU-seconds in the kernel (its own clock: no race with the machine's speed)
        ask(kernel, "import time\nwhile time.process_time() < 0.5: pass\nprint('burnt')")
    finally:
        kernel.stop()
    survivor = pid(idle)
    server.close()  # what forkserver.shutdown() does for every server at exit
    _wait("the idle kernel exits with its server", lambda: _gone(survivor))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime) >= 0.5
    idle.stop()  # already dead: stopping it is quiet
    # the next kernel of this environment gets a new server
    again = _Kernel(tmp_path, env)
    try:
        assert forkserver.shared(env) is not server
        assert ask(again, "print(1 + 1)") == "2\n"
    finally:
        again.stop()


def test_a_kernel_killed_by_its_pid_is_seen_dead(tmp_path: Path, env: dict[str, str]) -> None:
    kernel = _Kernel(tmp_path, env)
    try:
        killed = pid(kernel)
        kernel.kill()
        _wait("the killed kernel is reaped", lambda: kernel.km.provisioner.process.poll() is not None)  # type: ignore[union-attr]
        assert _gone(killed)
    finally:
        kernel.stop()


def _spawned_answer(kernel: _Kernel, code: str) -> str:
    """What `kernel` prints for `code`, after checking it is a new interpreter, a child of this process (not a
    fork of a server); the kernel is stopped after."""
    try:
        process = psutil.Process(pid(kernel))
        assert process.ppid() == os.getpid() and "-m ipykernel_launcher" in " ".join(process.cmdline())
        return ask(kernel, code)
    finally:
        kernel.stop()


def test_rollbook_kernels_spawn_starts_each_kernel_as_its_own_interpreter(tmp_path: Path, env: dict[str, str]) -> None:
    spawn = {**env, "ROLLBOOK_KERNELS": "spawn"}
    assert forkserver.shared(spawn) is None
    assert _spawned_answer(_Kernel(tmp_path, spawn), "import sys; print('rollbook.steps' in sys.modules)") == "False\n"


def test_a_server_that_cannot_import_falls_back_to_spawning(tmp_path: Path, env: dict[str, str],
                                                            capfd: pytest.CaptureFixture[str]) -> None:
    broken = {**env, "PYTHONPATH": str(tmp_path / "broken")}
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "matplotlib.py").write_text("raise ImportError('planted: no matplotlib here')\n")
    assert forkserver.shared(broken) is None
    assert "planted: no matplotlib here" in capfd.readouterr().err
    assert forkserver.shared(broken) is None  # remembered: no second attempt, no second warning
    assert capfd.readouterr().err == ""


def test_a_kernel_asked_of_a_dead_server_is_spawned_instead(tmp_path: Path, env: dict[str, str],
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capfd: pytest.CaptureFixture[str]) -> None:
    server = forkserver.ForkServer(env, warmup="")
    server.close()  # died between the lookup and the fork
    monkeypatch.setattr(forkserver, "shared", lambda _env, _imports: server)
    assert _spawned_answer(_Kernel(tmp_path, env), "print(6 * 7)") == "42\n"
    assert "starting this kernel as a new interpreter" in capfd.readouterr().err


def test_the_server_imports_what_the_runs_steps_need_and_no_more(tmp_path: Path, env: dict[str, str]) -> None:
    from rollbook.app import default_runbooks
    from rollbook.runner.execution import union_of
    from rollbook.runner.playbook import discover
    from rollbook.runner.pool import warmup_for

    steps = {s.number: s for s in discover(default_runbooks())}
    without_plots = union_of([steps[n] for n in (1, 3, 4, 5, 6)], "")
    assert "matplotlib" not in without_plots and "rollbook.steps" in without_plots
    assert "matplotlib" in union_of([steps[1], steps[2]], "") and "matplotlib" in warmup_for(default_runbooks())
    assert warmup_for(default_runbooks(), (1,)) == without_plots  # serve's pool for --steps 1
    lean = _Kernel(tmp_path, env, imports=without_plots)
    full = _Kernel(tmp_path, env)
    try:
        assert psutil.Process(pid(lean)).ppid() != psutil.Process(pid(full)).ppid()  # a server per warm-up
        probe = "import sys; print('rollbook.steps' in sys.modules, 'matplotlib' in sys.modules)"
        assert ask(lean, probe) == "True False\n"
        assert ask(full, probe) == "True True\n"
    finally:
        lean.stop()
        full.stop()
