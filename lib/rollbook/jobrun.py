"""`--executor kubernetes`: run an incident as one batch/v1 Job (rollbook.cluster.jobs) and report it.

Used by `rollbook run --executor kubernetes` (the person's context submits; the Job runs in-cluster under
its own service account) and by `rollbook serve --executor kubernetes` (:class:`KubernetesExecutor`, the
serve Executor protocol). The Job runs `rollbook run`, so the record, its layout and the exit codes are
those of a local run; the submitter takes the exit code from the Job's pod, and reads the record back
from its own `--out` when that is the records volume (serve in the cluster mounts the same PVC), else
says where on the PVC it is.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollbook.cluster import jobs
from rollbook.cluster.jobs import JobClient, JobEnd, JobRequest
from rollbook.errors import ClusterError, RollbookError
from rollbook.runner import RunSpec

FLAG_PARAMS = ("approve_undo", "notify", "apply_closeout")  # params that are `rollbook run` flags
LOCAL_ONLY_PARAMS = ("config",)  # paths on the submitter's machine: the Job has its own rollbook.yaml
RECORD_LINE = re.compile(r"^Incident record: (?P<path>.+?) \(exit (?P<code>\d+)", re.MULTILINE)
WAIT_MARGIN = 120.0  # seconds past the Job's activeDeadlineSeconds the submitter still waits for its end


def request(spec: RunSpec, *, image: str | None = None, apply_closeout: bool = False) -> JobRequest:
    """The Job of a RunSpec: the same `rollbook run` arguments, the records volume as `--out`."""
    import os

    args: list[str] = []
    if spec.mc_url:
        args += ["--mc-url", spec.mc_url]
    if spec.release_id:
        args += ["--release-id", spec.release_id]
    flags = {k for k in FLAG_PARAMS if spec.params.get(k) is True}
    if apply_closeout:
        flags.add("apply_closeout")
    for key, value in sorted(spec.params.items()):
        if key not in FLAG_PARAMS and key not in LOCAL_ONLY_PARAMS:
            args += ["--param", f"{key}={value}"]
    args += [f"--{flag.replace('_', '-')}" for flag in sorted(flags)]
    if spec.approve_retry:
        args.append("--approve-retry")
    if spec.approver:
        args += ["--approver", spec.approver]
    if spec.ticket:
        args += ["--ticket", spec.ticket]
    steps = tuple(spec.steps) if spec.steps is not None else (1, 2, 3, 4, 5, 6)
    return JobRequest(incident=spec.incident, namespace=spec.namespace, rollout=spec.rollout, args=tuple(args),
                      steps=steps, step_timeout=spec.step_timeout,
                      mutating=bool(spec.approve_retry or "approve_undo" in flags),
                      image=image or os.environ.get(jobs.IMAGE_ENV) or jobs.DEFAULT_IMAGE)


@dataclass(frozen=True)
class JobOutcome:
    """What the Job did: the run's exit code, where the record is, and why, in one sentence."""

    job: str
    exit_code: int
    record_dir: Path | None  # on this machine, when --out is the records volume
    record_on_volume: str | None  # the path the Job printed (on the PVC)
    message: str
    log: str


def outcome(end: JobEnd, out: Path, incident: str) -> JobOutcome:
    """The run's exit code and record from how its Job ended."""
    m = RECORD_LINE.search(end.log)
    printed = m["path"] if m else None
    local = None
    if printed:  # <out>/<incident>/<run folder>/ (interfaces.md): the same two last parts under our --out
        candidate = out / incident / Path(printed).name
        local = candidate if (candidate / "record.json").is_file() else None
    if end.condition == "Complete":
        code, why = 0, f"Job {end.name} completed"
    elif end.reason == "DeadlineExceeded":
        code, why = 3, f"Job {end.name} ran past its activeDeadlineSeconds and was stopped: {end.message}"
    elif end.exit_code is not None:
        code, why = end.exit_code, f"Job {end.name} failed ({end.reason}): its pod exited {end.exit_code}"
    else:
        code, why = 1, f"Job {end.name} failed before rollbook ran ({end.reason}): {end.message}"
    if m and end.condition != "Complete" and end.reason != "DeadlineExceeded":
        code = int(m["code"])
    return JobOutcome(end.name, code, local, printed, why, end.log)


def submit(client: JobClient, req: JobRequest) -> str:
    """Create the Job; its name."""
    name = jobs.job_name(req.incident, secrets.token_hex(3))
    client.create(jobs.manifest(req, name))
    return name


def run(spec: RunSpec, *, apply_closeout: bool = False, progress: Callable[[str], None] | None = None,
        image: str | None = None) -> JobOutcome:
    """`rollbook run --executor kubernetes`: submit, watch to the end (bounded), report."""
    from rollbook.steps.core import _connect

    req = request(spec, image=image, apply_closeout=apply_closeout)
    say = progress or (lambda text: print(f"rollbook: {text}", file=sys.stderr, flush=True))
    with _connect(spec.context, None) as cluster:
        client = JobClient(cluster)
        name = submit(client, req)
        say(f"submitted Job {req.job_namespace}/{name} as {jobs.service_account(req)} "
            f"(deadline {jobs.deadline(req)} s); follow it: kubectl -n {req.job_namespace} logs -f job/{name}")
        end = client.wait(req.job_namespace, name, timeout=jobs.deadline(req) + WAIT_MARGIN, progress=say)
        if end is None:
            raise ClusterError(f"Job \"{name}\" in namespace \"{req.job_namespace}\" (context \"{cluster.context}\") "
                               f"did not end within {jobs.deadline(req) + WAIT_MARGIN:g} s.", kind="Job", name=name,
                               namespace=req.job_namespace, context=cluster.context,
                               hint=f"kubectl -n {req.job_namespace} describe job {name}")
    return outcome(end, spec.out, spec.incident)


# --------------------------------------------------------------------------- serve's executor


class _JobHandle:
    """A submitted incident Job, followed by a thread (serve's Handle protocol)."""

    pid: int | None = None  # no local process: a restarted service cannot re-attach, it re-runs the attempt
    started: float | None = None

    def __init__(self, client: JobClient, req: JobRequest, name: str, out: Path) -> None:
        self.client, self.req, self.name, self.out = client, req, name, out
        self.t0 = time.monotonic()
        self._result: Any = None
        self._thread = threading.Thread(target=self._follow, name=f"rollbook-job-{name}", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        from rollbook.serve.executor import ExecResult

        try:
            end = self.client.wait(self.req.job_namespace, self.name, timeout=jobs.deadline(self.req) + WAIT_MARGIN)
            if end is None:
                self._result = ExecResult("error", None, None, error=f"Job {self.name} did not end in time")
                return
            got = outcome(end, self.out, self.req.incident)
            verdicts = _verdicts(got.record_dir)
            self._result = ExecResult("completed" if got.record_dir else "error", got.exit_code, got.record_dir,
                                      verdicts, None if got.record_dir else got.message,
                                      wall_seconds=round(time.monotonic() - self.t0, 3))
        except RollbookError as e:
            self._result = ExecResult("error", None, None, error=str(e))

    def wait(self, timeout: float | None = None) -> Any:
        self._thread.join(timeout)
        return self._result

    def interrupt(self) -> None:
        self.client.delete(self.req.job_namespace, self.name)

    def kill(self) -> None:
        self.client.delete(self.req.job_namespace, self.name)


def _verdicts(run_dir: Path | None) -> dict[str, str]:
    if run_dir is None:
        return {}
    doc = json.loads((run_dir / "record.json").read_text(encoding="utf-8"))
    return {str(s.get("name")): str(s.get("verdict")) for s in doc.get("steps") or []}


class KubernetesExecutor:
    """Each attempt as one Job in namespace `rollbook` (serve never mutates: the Jobs run as the viewer)."""

    name = "kubernetes"

    def __init__(self, context: str | None, out: Path, *, image: str | None = None) -> None:
        from rollbook.steps.core import _connect

        self.cluster = _connect(context, None)
        self.client = JobClient(self.cluster)
        self.out, self.image = out, image

    def submit(self, attempt: Any) -> _JobHandle:
        req = request(attempt.spec, image=self.image)
        return _JobHandle(self.client, req, submit(self.client, req), self.out)
