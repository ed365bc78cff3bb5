"""`rollbook serve`: intake (HTTP), the persistent queue, the workers, shutdown and crash recovery.

Recovery rule, at start-up, for a row a previous process left `running`: its child is made sure to be
gone (it dies with the service; a survivor is killed), then
- the attempt's result file says it completed -> the incident is settled from it, not run again;
- otherwise the attempt was cut short -> queued again as attempt N+1 (`resumed`), which writes a new
  record folder (its serve.json names the one it replaces); after `serve.max_attempts` it is `failed`
  with kind `crashed`. Nothing accepted is dropped silently.
SIGTERM/SIGINT: stop accepting (the listener closes; Argo retries elsewhere or later), let running
incidents finish for `--grace` seconds, then interrupt them (partial record marked interrupted, queued
again as a resumed attempt for the next start), wait for the children (bounded), exit 0.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from rollbook.errors import RollbookError
from rollbook.runner import RunSpec
from rollbook.runner.pool import KernelPool, warmup_for
from rollbook.serve import notification as notif
from rollbook.serve.api import Server
from rollbook.serve.executor import Attempt, ExecResult, Executor, Handle, LocalExecutor, alive, kill_tree, read_result
from rollbook.serve.metrics import Metrics
from rollbook.serve.preflight import PreflightWatch
from rollbook.serve.queue import Job, Queue, QueueFull
from rollbook.serve.settings import TOKEN_ENV, Settings
from rollbook.serve.warm import WarmExecutor

WAIT_SLICE = 1.0  # seconds: every wait of a worker or the main loop is this short, so stop is prompt
INTERRUPT_BOUND = 60.0  # seconds an interrupted child may take to write its partial record before SIGKILL
SWITCH_INTERVAL = 0.001  # seconds (CPython's default is 0.005)
HEALTH_CACHE = 5.0  # seconds a /healthz answer is reused (a probe every second must not hammer the API)


class Service:
    """The running service: owns the queue, the HTTP server and the worker threads."""

    def __init__(self, settings: Settings, executor: Executor | None = None) -> None:
        self.settings = settings
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.queue = Queue(settings.state_dir / "queue.sqlite")
        self.metrics = Metrics(lambda status: float(self.queue.depth()[status]))
        self.preflight = PreflightWatch(settings, self.metrics)
        self.pool: KernelPool | None = None
        if executor is None and settings.executor == "local" and settings.pool > 0:
            self.pool, executor = warm_executor(settings)
        self.executor = executor or _executor(settings)
        if self.pool is not None:
            self.metrics.watch_pool(self.pool)
        self.stopping = threading.Event()
        self._wake = threading.Condition()
        self._handles: dict[str, Handle] = {}
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._httpd: Server | None = None
        self._http_thread: threading.Thread | None = None
        self._health: tuple[float, bool, dict[str, Any]] = (0.0, False, {})
        self.url = ""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        """Recover, listen, start the workers; the base URL."""
        self.recover()
        self._httpd = Server((self.settings.host, self.settings.port), self)
        port = self._httpd.server_address[1]
        host = self.settings.host if ":" not in self.settings.host else f"[{self.settings.host}]"
        self.url = f"http://{host}:{port}"
        self._http_thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                             name="rollbook-serve-http", daemon=True)
        self._http_thread.start()
        for i in range(self.settings.workers):
            t = threading.Thread(target=self._work, name=f"rollbook-serve-worker-{i}", daemon=True)
            t.start()
            self._workers.append(t)
        if self.settings.preflight:
            self.preflight.start()  # in the background: notifications are answered meanwhile
        return self.url

    def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let running incidents finish for `grace` s, interrupt the rest, join (all bounded)."""
        grace = self.settings.grace if grace is None else grace
        self.stopping.set()
        with self._wake:
            self._wake.notify_all()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        self._join(time.monotonic() + grace)
        if any(t.is_alive() for t in self._workers):
            with self._lock:
                running = list(self._handles.values())
            for h in running:
                h.interrupt()
            self._join(time.monotonic() + INTERRUPT_BOUND)
        if any(t.is_alive() for t in self._workers):
            with self._lock:
                for h in self._handles.values():
                    h.kill()
            self._join(time.monotonic() + 10.0)
        if self.pool is not None:
            self.pool.close()
        self.queue.close()

    def _join(self, deadline: float) -> None:
        for t in self._workers:
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ intake

    def accept(self, raw: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Validate and enqueue a notification body: (status, body, headers). Never runs anything."""
        if self.stopping.is_set():
            self.metrics.rejected.labels("shutting_down").inc()
            return 503, {"error": "rollbook serve is shutting down; retry"}, {"Retry-After": "5"}
        try:
            n = notif.parse(raw)
        except notif.BadNotification as e:
            self.metrics.rejected.labels("bad_request").inc()
            return 400, {"error": str(e)}, {}
        incident = notif.incident_id(n, self.settings.incident_pattern)
        try:
            got = self.queue.enqueue(n, incident, bound=self.settings.queue_bound)
        except QueueFull:
            self.metrics.rejected.labels("queue_full").inc()
            return 429, {"error": f"the queue holds {self.settings.queue_bound} incidents; retry shortly"}, {
                "Retry-After": str(self.settings.retry_after)}
        if got.duplicate:
            self.metrics.deduplicated.labels(n.trigger).inc()
            return 200, {"incident": got.incident, "status": got.status, "duplicate": True}, {}
        self.metrics.accepted.labels(n.trigger).inc()
        with self._wake:
            self._wake.notify()
        return 202, {"incident": got.incident, "status": "queued"}, {}

    def latency(self, seconds: float) -> None:
        """How long the intake took (logged when over the 100 ms the service promises)."""
        self.metrics.intake_seconds.observe(seconds)
        if seconds > 0.1:
            print(f"rollbook serve: a notification took {seconds * 1000:.0f} ms to answer", file=sys.stderr)

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Cluster reachable and queue answering (cached for a few seconds)."""
        at, ok, detail = self._health
        if time.monotonic() - at < HEALTH_CACHE:
            return ok, detail
        detail = {"cluster": _cluster_check(self.settings), "queue": self._queue_check()}
        ok = detail["cluster"]["ok"] and detail["queue"]["ok"]
        self._health = (time.monotonic(), ok, detail)
        return ok, detail

    def _queue_check(self) -> dict[str, Any]:
        try:
            self.queue.check()
            depth = self.queue.depth()
        except Exception as e:  # noqa: BLE001 - reported by /healthz, whatever it is
            return {"ok": False, "error": f"{type(e).__name__}: {e}"}
        return {"ok": True, "depth": depth, "bound": self.settings.queue_bound,
                "full": depth["queued"] >= self.settings.queue_bound}

    # ------------------------------------------------------------------ workers

    def _work(self) -> None:
        """Claim and run incidents until stopping."""
        while not self.stopping.is_set():
            job = self.queue.claim()
            if job is None:
                with self._wake:
                    self._wake.wait(WAIT_SLICE)
                continue
            self._run(job)

    def _spec(self, job: Job) -> RunSpec:
        from rollbook.app import default_runbooks

        s = self.settings
        params: dict[str, Any] = {}
        if s.config.path:
            params["config"] = str(s.config.path)
        if s.notify and 5 in s.steps:
            params["notify"] = True
        return RunSpec(incident=job.incident, namespace=job.namespace, rollout=job.rollout, context=s.context,
                       out=s.out, steps=s.steps, params=params, runbooks_dir=s.runbooks or default_runbooks(),
                       step_timeout=s.step_timeout)

    def _run(self, job: Job) -> None:
        """One attempt, start to settle."""
        s = self.settings
        attempt = Attempt(self._spec(job), job.attempt, job.notification,
                          config=str(s.config.path) if s.config.path else None,
                          resumed_from=self._previous_record(job), notify=s.notify, first_look=s.first_look)
        try:
            handle = self.executor.submit(attempt)
        except (OSError, RollbookError) as e:
            self._settle(job, ExecResult("error", None, None, error=f"could not start the run: {e}"), kind="executor")
            return
        if handle.pid:
            self.queue.set_pid(job.incident, handle.pid, handle.started or 0.0)
        with self._lock:
            self._handles[job.incident] = handle
        try:
            result = None
            while result is None:  # each wait is short; the run itself is bounded by its step timeouts
                result = handle.wait(WAIT_SLICE)
        finally:
            with self._lock:
                self._handles.pop(job.incident, None)
        if result.outcome == "error" and result.exit_code is None and self.stopping.is_set():
            result = ExecResult("interrupted", None, result.record_dir, error="killed while the service stopped")
        self._settle(job, result)

    def _previous_record(self, job: Job) -> str | None:
        found = self.queue.get(job.incident) or {}
        earlier = [a for a in found.get("attempts", []) if a["attempt"] < job.attempt and a.get("record")]
        return earlier[-1]["record"] if earlier else None

    def _settle(self, job: Job, r: ExecResult, *, kind: str | None = None, note: str | None = None) -> None:
        """Record an attempt's end: done, failed, or queued again when it was cut short."""
        record = str(r.record_dir) if r.record_dir else None
        status, failure = "done", None
        if r.outcome == "interrupted" or kind == "crashed":
            failure = kind or "interrupted"
            again = job.attempt < self.settings.max_attempts
            status = "queued" if again else "failed"
            note = note or (f"attempt {job.attempt} was cut short ({r.error}); "
                            + ("queued again as a resumed attempt" if again else "no attempts left"))
        elif r.outcome == "error":
            status, failure = "failed", kind or ("usage" if r.exit_code == 2 else "runner")
        elif r.exit_code == 3:
            status, failure = "failed", "step_error"
        elif r.exit_code not in (0, 4):
            status, failure = "failed", "runner"
        self.queue.finish(job, status=status, exit_code=r.exit_code, record=record, verdicts=r.verdicts,
                          failure=failure if status != "done" else None, error=r.error, outcome=r.outcome,
                          cpu=r.cpu_seconds, wall=r.wall_seconds, note=note)
        self.metrics.runs.labels(r.outcome).inc()
        if failure:
            self.metrics.failures.labels(failure).inc()
        if r.wall_seconds is not None:
            self.metrics.run_seconds.observe(r.wall_seconds)
        if r.cpu_seconds is not None:
            self.metrics.run_cpu_seconds.observe(r.cpu_seconds)
        if r.first_look is not None:
            self.queue.set_first_look(job.incident, r.first_look)
            for target in r.first_look.get("targets") or []:
                sent = target in (r.first_look.get("sent") or [])
                self.metrics.first_look.labels(target, "sent" if sent else "dry_run").inc()
        if status == "queued":
            with self._wake:
                self._wake.notify()

    # ------------------------------------------------------------------ recovery

    def recover(self) -> list[str]:
        """Settle the rows a previous process left running (module docstring); what was done, per incident."""
        done = []
        for job in self.queue.running():
            pid, started = self.queue.pid_of(job.incident)
            if alive(pid, started) and pid is not None:
                kill_tree(pid)  # it should have died with its service; it must not run beside a re-run
            result = read_result(self.settings.state_dir, job.incident, job.attempt)
            if result is not None and result.outcome == "completed":
                self._settle(job, result, note="finished before the service stopped; settled at start-up")
                done.append(f"{job.incident}: settled from attempt {job.attempt}'s result")
            else:
                cut = result or ExecResult("interrupted", None, None, error="the service died during the attempt")
                self._settle(job, cut, kind="crashed")
                done.append(f"{job.incident}: attempt {job.attempt} was cut short; re-queued as a resumed attempt")
        for line in done:
            print(f"rollbook serve: recovered {line}", file=sys.stderr, flush=True)
        return done


def _executor(settings: Settings) -> Executor:
    """The configured executor: a child process per attempt, or a Kubernetes Job (rollbook.jobrun)."""
    if settings.executor == "kubernetes":
        from rollbook.jobrun import KubernetesExecutor

        return KubernetesExecutor(settings.context, settings.out)
    return LocalExecutor(settings.state_dir, child_env(settings))


def warm_executor(settings: Settings) -> tuple[KernelPool, WarmExecutor]:
    """The kernel pool (booting in the background from now on) and the executor that takes from it.

    At most `pool` kernels idle or booting; the background stops booting while one kernel per step of
    every worker's incident plus one is alive (memory), and a step then boots its own."""
    from rollbook.app import default_runbooks

    s = settings
    live = s.workers * len(s.steps) + 1
    pool = KernelPool(s.pool, child_env(s), warmup=warmup_for(s.runbooks or default_runbooks(), s.steps), cwd=Path.cwd(),
                      max_live=max(s.pool, live)).start()
    return pool, WarmExecutor(s.state_dir, pool)


def child_env(settings: Settings) -> dict[str, str]:
    """The children's environment: ours without the service's own token (a kernel never needs it)."""
    env = dict(os.environ)
    for name in {TOKEN_ENV, settings.config.serve.secret.env or TOKEN_ENV}:
        env.pop(name, None)
    return env


def _cluster_check(settings: Settings) -> dict[str, Any]:
    """GET /version with the read identity (any authenticated user may; needs no RBAC)."""
    from rollbook.cluster.connect import Target
    from rollbook.steps.core import Incident

    inc = Incident("", "", settings.context, None, None, None, settings.config)
    try:
        with inc.cluster as cluster:
            cluster.timeout = 3.0
            version = cluster.request("GET", "/version", Target("version")).data or {}
        return {"ok": True, "context": cluster.context, "server": cluster.host, "version": version.get("gitVersion")}
    except RollbookError as e:
        return {"ok": False, "error": str(e)}


def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; 0 after a clean stop."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    if service_is_warm := settings.executor == "local" and settings.pool > 0:
        # the warm executor runs attempts (papermill, nbformat, the report) in threads of this process: a
        # shorter GIL switch interval lets the intake thread answer Argo within its 100 ms between them
        sys.setswitchinterval(SWITCH_INTERVAL)
    service = Service(settings)
    try:
        try:
            url = service.start()
        except OSError as e:
            raise RollbookError(f"rollbook serve cannot listen on {settings.host}:{settings.port}: {e.strerror or e}",
                                hint="Pick a free port with --listen HOST:PORT (port 0 picks one).") from e
        _write_ready(settings, url)
        print(f"rollbook serve: listening on {url} (POST {url}/v1/argo-rollouts), {settings.workers} worker(s), "
              f"{f'{settings.pool} warm kernel(s)' if service_is_warm else settings.executor + ' executor'}, queue bound {settings.queue_bound}, steps {','.join(map(str, settings.steps))}, records in "
              f"{settings.out}, first look {'posted' if settings.notify else 'dry run'}", file=sys.stderr, flush=True)
        while not stop.wait(WAIT_SLICE):
            pass
        print(f"rollbook serve: stopping (running incidents get {settings.grace:g} s to finish)", file=sys.stderr,
              flush=True)
    finally:
        service.stop()
        (settings.state_dir / "ready.json").unlink(missing_ok=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("rollbook serve: stopped", file=sys.stderr, flush=True)
    return 0


def _write_ready(settings: Settings, url: str) -> None:
    """`<out>/.serve/ready.json`: where the service listens (port 0 picks one), written once it does."""
    import json

    path: Path = settings.state_dir / "ready.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}) + "\n", encoding="utf-8")
    tmp.replace(path)
