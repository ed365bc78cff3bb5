"""Bounded polling: wait_for a condition on what a fetch returns, and wait_for_rollout on a RolloutView."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from rollbook.cluster.fetch import read_rollout
from rollbook.cluster.models import RolloutView
from rollbook.errors import ClusterUnavailable, PreconditionError

if TYPE_CHECKING:  # the fetch layer only calls Cluster's methods; kubernetes stays in connect.py
    from rollbook.cluster.connect import Cluster


class WaitTimeout(PreconditionError):
    """A bounded wait ended before the condition held."""


T = TypeVar("T")


def wait_for(
    fetch: Callable[[], T],
    condition: Callable[[T], bool],
    *,
    timeout: float,
    interval: float = 2.0,
    what: str = "the condition",
    progress: Callable[[T, float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Poll ``fetch`` until ``condition`` holds or ``timeout`` seconds pass; transient API errors are retried."""
    deadline = clock() + timeout
    last: T | None = None
    last_error: ClusterUnavailable | None = None
    while True:
        try:
            last = fetch()
            last_error = None
            if condition(last):
                return last
            if progress is not None:
                progress(last, max(0.0, deadline - clock()))
        except ClusterUnavailable as e:  # the API may blip during a rollback; the deadline still bounds us
            last_error = e
        if clock() + interval > deadline:
            break
        sleep(interval)
    detail = f" The last attempt failed: {last_error}" if last_error else ""
    raise WaitTimeout(
        f"Waited {timeout:g}s for {what}; it did not happen.{detail}",
        hint="Look at the current state (read the rollout again) and decide; raise the timeout if it is slow.",
    )


def wait_for_rollout(
    cluster: Cluster,
    namespace: str,
    name: str,
    condition: Callable[[RolloutView], bool],
    *,
    timeout: float,
    interval: float = 2.0,
    what: str = "the rollout",
    progress: Callable[[RolloutView, float], None] | None = None,
) -> RolloutView:
    """Poll one Rollout's view (without events) until ``condition`` holds; bounded by ``timeout``."""
    return wait_for(
        lambda: read_rollout(cluster, namespace, name, events=False),
        condition, timeout=timeout, interval=interval, what=what, progress=progress,
    )
