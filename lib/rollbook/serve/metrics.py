"""The service's Prometheus metrics (prometheus_client), in a registry of its own (several services may
share one test process; the default registry would also export this process's internals twice)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REJECT_REASONS = ("unauthorized", "bad_request", "too_large", "length_required", "queue_full", "shutting_down")
FAILURE_KINDS = ("step_error", "usage", "runner", "interrupted", "crashed", "executor")
# notification -> record: steps 1-3 take seconds, a slow cluster or MC minutes
RUN_BUCKETS = (1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class Metrics:
    """Every metric the service exports."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, queue_depth: Callable[[str], float]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.accepted = Counter("rollbook_serve_notifications_accepted", "Notifications that started an incident",
                                ["trigger"], registry=r)
        self.deduplicated = Counter("rollbook_serve_notifications_deduplicated",
                                    "Notifications for an incident that already exists (answered 200)", ["trigger"],
                                    registry=r)
        self.rejected = Counter("rollbook_serve_notifications_rejected", "Notifications refused, by reason",
                                ["reason"], registry=r)
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        depth = Gauge("rollbook_serve_queue_depth", "Incidents by state in the persistent queue", ["status"],
                      registry=r)
        for status in ("queued", "running", "done", "failed"):
            depth.labels(status).set_function(lambda s=status: queue_depth(s))  # type: ignore[misc]
        self.run_seconds = Histogram("rollbook_serve_run_seconds", "Wall seconds of an attempt, start to record",
                                     buckets=RUN_BUCKETS, registry=r)
        self.run_cpu_seconds = Histogram("rollbook_serve_run_cpu_seconds",
                                         "User+sys CPU seconds of an attempt (its process and kernels)",
                                         buckets=RUN_BUCKETS, registry=r)
        self.runs = Counter("rollbook_serve_runs", "Attempts that ended, by outcome", ["outcome"], registry=r)
        self.failures = Counter("rollbook_serve_failures", "Incidents that failed or attempts cut short, by kind",
                                ["kind"], registry=r)
        for kind in FAILURE_KINDS:
            self.failures.labels(kind)
        self.intake_seconds = Histogram("rollbook_serve_intake_seconds",
                                        "Seconds to answer a notification (parse, validate, commit to the queue)",
                                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
                                        registry=r)
        self.first_look = Counter("rollbook_serve_first_look", "First-look deliveries, by target and result",
                                  ["target", "result"], registry=r)

    def watch_pool(self, pool: Any) -> None:
        """The warm kernel pool's state (a rollbook.runner.pool.KernelPool)."""
        r = self.registry
        kernels = Gauge("rollbook_serve_pool_kernels", "Kernels of the warm pool, by state", ["state"], registry=r)
        for state in ("idle", "booting", "in_use"):
            kernels.labels(state).set_function(lambda s=state: float(pool.counts()[s]))  # type: ignore[misc]
        Gauge("rollbook_serve_pool_booted", "Kernels the pool booted (one per step)",
              registry=r).set_function(lambda: float(pool.stats.booted))
        Gauge("rollbook_serve_pool_boot_failures", "Kernel boots that failed", registry=r).set_function(
            lambda: float(pool.stats.boot_failures))
        Gauge("rollbook_serve_pool_boot_cpu_seconds", "User+sys CPU the pool's kernels spent booting and importing",
              registry=r).set_function(lambda: float(pool.stats.boot_cpu_seconds))

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
