"""The warm kernel pool (rollbook.runner.pool) with real ipykernel processes: each kernel handed out once,
already importing what the steps import, replaced in the background, a dead one never handed out, and
nothing left running after close."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psutil
import pytest
from jupyter_core.utils import run_sync

from rollbook.runner.kernels import _Kernel
from rollbook.runner.pool import KernelPool


def _pid(kernel: _Kernel) -> int:
    return int(kernel.km.provisioner.process.pid)  # type: ignore[union-attr]


def _ask(kernel: _Kernel, code: str) -> str:
    """The text a kernel prints for `code`."""
    kc = kernel.km.client()
    kc.start_channels()
    out: list[str] = []
    try:
        run_sync(kc.wait_for_ready)(timeout=30)
        run_sync(kc.execute_interactive)(code, timeout=30, output_hook=lambda m: out.append(
            m["content"].get("text", "")) if m["msg_type"] == "stream" else None)
    finally:
        kc.stop_channels()
        kernel.km.clients.remove(kc)
    return "".join(out)


@pytest.fixture
def pool() -> Iterator[KernelPool]:
    p = KernelPool(2, dict(os.environ), warmup="import json, email.mime.text", start_timeout=60).start()
    yield p
    p.close()


def test_each_kernel_is_handed_out_once_warm_and_replaced(pool: KernelPool) -> None:
    assert pool.wait_full(60)
    first, second = pool.take(), pool.take()
    assert _pid(first) != _pid(second)
    # imported ahead, and a fresh interpreter: nothing of another step's state
    assert _ask(first, "import sys; print('email.mime.text' in sys.modules, 'leftover' in globals())") == "True False\n"
    _ask(first, "leftover = 1")
    used = {_pid(first), _pid(second)}
    first.stop()
    second.stop()
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in used)
    assert pool.wait_full(60)  # replaced in the background
    third = pool.take()
    assert _pid(third) not in used
    assert _ask(third, "print('leftover' in globals())") == "False\n"
    third.stop()
    assert pool.stats.handed_out == 3 and pool.stats.booted >= 4


def test_a_kernel_that_died_while_idle_is_never_handed_out(pool: KernelPool) -> None:
    assert pool.wait_full(60)
    idle = list(pool._idle)
    dead = {_pid(k) for k in idle}
    for k in idle:
        psutil.Process(_pid(k)).kill()
        k.km.provisioner.process.wait()  # type: ignore[union-attr]
    got = pool.take()
    assert _pid(got) not in dead
    assert _ask(got, "print(1 + 1)") == "2\n"
    got.stop()


def test_a_take_with_no_boot_coming_boots_its_own_instead_of_waiting() -> None:
    p = KernelPool(1, dict(os.environ), warmup="", start_timeout=60, max_live=1).start()
    try:
        assert p.wait_full(60)
        first = p.take()  # one alive = max_live: the background boots no replacement while it runs
        assert p.counts() == {"idle": 0, "booting": 0, "in_use": 1}
        second = p.take()  # so this one is booted by the caller, not waited for (no deadlock)
        assert _pid(first) != _pid(second) and p.stats.booted_by_callers == 1
        first.stop()
        second.stop()
        assert p.wait_full(60)
    finally:
        p.close()


def test_close_stops_every_idle_kernel() -> None:
    p = KernelPool(2, dict(os.environ), warmup="", start_timeout=60).start()
    assert p.wait_full(60)
    pids = [_pid(k) for k in p._idle]
    p.close()
    assert not any(psutil.pid_exists(x) and psutil.Process(x).status() != psutil.STATUS_ZOMBIE for x in pids)
    with pytest.raises(RuntimeError, match="shutting down"):
        p.take()
