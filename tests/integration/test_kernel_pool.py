"""The warm kernel pool (rollbook.runner.pool) with real ipykernel processes: each kernel handed out once,
already importing what the steps import, replaced in the background, a dead one never handed out, and
nothing left running after close."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psutil
import pytest
from kernel_harness import ask, pid

from rollbook.runner.pool import KernelPool


@pytest.fixture
def pool() -> Iterator[KernelPool]:
    p = KernelPool(2, dict(os.environ), warmup="import json, email.mime.text", start_timeout=60).start()
    yield p
    p.close()


def test_each_kernel_is_handed_out_once_warm_and_replaced(pool: KernelPool) -> None:
    assert pool.wait_full(60)
    first, second = pool.take(), pool.take()
    assert pid(first) != pid(second)
    # imported ahead, and a fresh interpreter: nothing of another step's state
    assert ask(first, "import sys; print('email.mime.text' in sys.modules, 'leftover' in globals())") == "True False\n"
    ask(first, "leftover = 1")
    used = {pid(first), pid(second)}
    first.stop()
    second.stop()
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in used)
    assert pool.wait_full(60)  # replaced in the background
    third = pool.take()
    assert pid(third) not in used
    assert ask(third, "print('leftover' in globals())") == "False\n"
    third.stop()
    assert pool.stats.handed_out == 3 and pool.stats.booted >= 4


def test_a_kernel_that_died_while_idle_is_never_handed_out(pool: KernelPool) -> None:
    assert pool.wait_full(60)
    idle = list(pool._idle)
    dead = {pid(k) for k in idle}
    for k in idle:
        psutil.Process(pid(k)).kill()
        k.km.provisioner.process.wait()  # type: ignore[union-attr]
    got = pool.take()
    assert pid(got) not in dead
    assert ask(got, "print(1 + 1)") == "2\n"
    got.stop()


def test_a_take_with_no_boot_coming_boots_its_own_instead_of_waiting() -> None:
    p = KernelPool(1, dict(os.environ), warmup="", start_timeout=60, max_live=1).start()
    try:
        assert p.wait_full(60)
        first = p.take()  # one alive = max_live: the background boots no replacement while it runs
        assert p.counts() == {"idle": 0, "booting": 0, "in_use": 1}
        second = p.take()  # so this one is booted by the caller, not waited for (no deadlock)
        assert pid(first) != pid(second) and p.stats.booted_by_callers == 1
        first.stop()
        second.stop()
        assert p.wait_full(60)
    finally:
        p.close()


def test_close_stops_every_idle_kernel() -> None:
    p = KernelPool(2, dict(os.environ), warmup="", start_timeout=60).start()
    assert p.wait_full(60)
    pids = [pid(k) for k in p._idle]
    p.close()
    assert not any(psutil.pid_exists(x) and psutil.Process(x).status() != psutil.STATUS_ZOMBIE for x in pids)
    with pytest.raises(RuntimeError, match="shutting down"):
        p.take()
