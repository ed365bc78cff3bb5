"""The simulated Argo Rollouts controller: retry, re-analysis against MC, promote/abort, undo, scale-down.

It reacts to store events the way Argo's reconciler reacts to informer events (argo-rollouts.md):
a listener only queues events; one thread handles them and the timers, so every write comes from
that thread and a write never happens inside a store callback. Only what the runbooks exercise is
simulated; a brand-new pod template (a fresh release) is acknowledged but not rolled out.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import json
import logging
import math
import queue
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from rollbook.sandbox import kubelet
from rollbook.sandbox.store import SANDBOX_NODE, Store, StoreError

_log = logging.getLogger(__name__)

Obj = dict[str, Any]
REVISION = "rollout.argoproj.io/revision"
HASH_LABEL = "rollouts-pod-template-hash"
DEFAULT_ERROR_LIMIT = 4          # Argo's consecutiveErrorLimit default
DEFAULT_ABORT_DELAY = 30         # Argo's abortScaleDownDelaySeconds default (traffic routing only)
_ARG_RE = re.compile(r"\{\{\s*args\.([A-Za-z0-9_.-]+)\s*\}\}")
_COND_RE = re.compile(r"^\s*result((?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*)\s*(==|!=|<=|>=|<|>)\s*(.+?)\s*$")


@dataclass(frozen=True)
class Timings:
    """How fast the simulated controller moves, in seconds (small in tests)."""

    analysis_seconds: float = 5.0          # a new AnalysisRun runs this long before its verdict
    error_interval_seconds: float = 10.0   # Argo re-measures an errored web metric every 10 s
    scale: float = 1.0                     # multiplies delays written in objects (abortScaleDownDelaySeconds)
    idle_poll_seconds: float = 0.5         # bound on each wait of the controller thread
    held: bool = False                     # start with the clock stopped: nothing timed fires until release()


def now_rfc3339() -> str:
    """Now as Kubernetes writes timestamps."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: Obj) -> Obj:
    meta: Obj = obj.setdefault("metadata", {})
    return meta


def _revision(obj: Obj) -> int:
    """The rollout.argoproj.io/revision annotation as an int (0 when absent or unparsable)."""
    try:
        return int((_meta(obj).get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _rv(obj: Obj) -> int:
    return int(_meta(obj).get("resourceVersion") or 0)


class Controller:
    """Runs in its own thread; reacts to Rollout changes the way Argo does."""

    def __init__(self, store: Store, *, mc_url: str | None, mc_token: str | None, timings: Timings,
                 mc_write_token: str | None = None) -> None:
        self.store = store
        self.mc_url = mc_url.rstrip("/") if mc_url else None
        self._mc_token = mc_token
        self._mc_write_token = mc_write_token
        self.timings = timings
        self._queue: queue.Queue[tuple[str, Obj] | None] = queue.Queue()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._seen: dict[tuple[str, str], Obj] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._http: httpx.Client | None = None
        self._busy = threading.Event()
        self._lock = threading.Lock()          # guards _timers and _held_since (hold/release come from other threads)
        self._held_since: float | None = time.monotonic() if timings.held else None
        store.add_listener(self._on_store_event)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Remember the current rollouts and start the reconcile thread."""
        for ro in self.store.list("rollouts")[0]:
            self._seen[(_meta(ro)["namespace"], _meta(ro)["name"])] = ro
            self._resume_abort(ro)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="argo-controller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (bounded join) and close the HTTP client."""
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._http is not None:
            self._http.close()
        self._thread = self._http = None

    def _client(self) -> httpx.Client:
        """The HTTP client, made on first use: building its TLS context costs ~0.1 s of start-up."""
        if self._http is None:
            self._http = httpx.Client(follow_redirects=False)
        return self._http

    # ------------------------------------------------------------------ the gate (tests hold simulated time)

    def hold(self) -> None:
        """Stop the controller's clock: no timer (scale-down, analysis verdict, pods settling) fires until
        release(). Events are still handled. Tests use it so that what the controller owes happens after
        the step under test has started, whatever the machine's speed — never a race."""
        with self._lock:
            if self._held_since is None:
                self._held_since = time.monotonic()

    def release(self) -> None:
        """Start the clock again; every pending timer is pushed back by the time spent held."""
        with self._lock:
            if self._held_since is None:
                return
            paused = time.monotonic() - self._held_since
            self._timers = [(due + paused, seq, fn) for due, seq, fn in self._timers]
            heapq.heapify(self._timers)
            self._held_since = None
        self._queue.put(("TICK", {}))  # wake the loop now rather than after idle_poll_seconds

    @property
    def held(self) -> bool:
        return self._held_since is not None

    def idle(self) -> bool:
        """True when no event is queued or being handled and no timer is pending."""
        return self._queue.empty() and not self._timers and not self._busy.is_set()

    # ------------------------------------------------------------------ event plumbing

    def _on_store_event(self, event_type: str, plural: str, obj: Obj) -> None:
        """Store listener: only queue (writing from inside a store callback is not allowed)."""
        if plural == "rollouts" and event_type == "MODIFIED" and not self._stop.is_set():
            self._queue.put((event_type, obj))

    def _loop(self) -> None:
        """Handle queued events and due timers until stopped; each wait is bounded."""
        while not self._stop.is_set():
            item = self._next_event()
            self._busy.set()
            try:
                if item is not None and item[0] != "TICK":
                    self._guard(functools.partial(self._on_rollout, item[1]))
                for fn in self._due_timers():
                    self._guard(fn)
            finally:
                self._busy.clear()

    def _next_event(self) -> tuple[str, Obj] | None:
        """The next queued event, waiting at most until the next timer is due."""
        wait = self.timings.idle_poll_seconds
        with self._lock:
            if self._timers and self._held_since is None:
                wait = max(0.0, min(wait, self._timers[0][0] - time.monotonic()))
        try:
            return self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None

    def _due_timers(self) -> list[Callable[[], None]]:
        due: list[Callable[[], None]] = []
        with self._lock:
            if self._held_since is not None:
                return due
            while self._timers and self._timers[0][0] <= time.monotonic():
                due.append(heapq.heappop(self._timers)[2])
        return due

    def _after(self, seconds: float, fn: Callable[[], None]) -> None:
        """Run fn after `seconds` of controller time (time spent held does not count)."""
        with self._lock:
            start = self._held_since if self._held_since is not None else time.monotonic()
            heapq.heappush(self._timers, (start + max(0.0, seconds), next(self._seq), fn))

    @staticmethod
    def _guard(fn: Callable[[], None]) -> None:
        """Run a handler; an object deleted under us or a bug must not kill the controller thread."""
        try:
            fn()
        except StoreError as e:
            _log.warning("controller: store refused a write: %s", e.message)
        except Exception:  # noqa: BLE001 - a simulated controller must keep running, like Argo after a panic
            _log.exception("controller: handler failed")

    # ------------------------------------------------------------------ reconcile

    def _on_rollout(self, ro: Obj) -> None:
        """Compare with the last version seen; act on retry, abort and spec changes."""
        key = (_meta(ro)["namespace"], _meta(ro)["name"])
        prev = self._seen.get(key)
        if prev is not None and _rv(ro) <= _rv(prev):
            return  # an event of one of our own writes, already accounted for
        self._seen[key] = ro
        if prev is None:
            return
        was, now = bool((prev.get("status") or {}).get("abort")), bool((ro.get("status") or {}).get("abort"))
        if _meta(ro).get("generation") != _meta(prev).get("generation"):
            self._spec_changed(ro)
        elif was and not now:
            self._retry(ro)
        elif now and not was:
            self._user_abort(ro)

    def _remember(self, ro: Obj) -> Obj:
        self._seen[(_meta(ro)["namespace"], _meta(ro)["name"])] = ro
        return ro

    def _write_status(self, ro: Obj, status: Obj) -> Obj:
        """Replace the rollout's status (controller-written: observedGeneration as a string)."""
        status["observedGeneration"] = str(_meta(ro).get("generation", 1))
        meta = _meta(ro)
        return self._remember(self.store.set_status("rollouts", meta["namespace"], meta["name"], status))

    # ------------------------------------------------------------------ retry and analysis

    def _retry(self, ro: Obj) -> None:
        """status.abort true -> false: re-run the canary steps and a new AnalysisRun for the same revision."""
        ns, name = _meta(ro)["namespace"], _meta(ro)["name"]
        status = dict(ro.get("status") or {})
        canary_hash = status.get("currentPodHash")
        canary_rs = self._rs_by_hash(ns, ro, canary_hash)
        if canary_rs is None or canary_hash == status.get("stableRS"):
            _log.info("controller: retry of %s/%s with nothing to retry", ns, name)
            return
        steps = _steps(ro)
        step_index = next((i for i, s in enumerate(steps) if "analysis" in s), None)
        weight = next((s["setWeight"] for s in steps[: step_index or len(steps)] if "setWeight" in s), 100)
        want = max(1, math.ceil(int((ro.get("spec") or {}).get("replicas", 1)) * int(weight) / 100))
        self._scale(canary_rs, want)
        self._event(ro, "Normal", "ScalingReplicaSet",
                    f"Scaled up ReplicaSet {_meta(canary_rs)['name']} (revision {_revision(canary_rs)}) from 0 to {want}")
        run = self._create_run(ro, canary_rs, step_index) if step_index is not None else None
        status.pop("abortedAt", None)
        status.update(phase="Progressing", message="more replicas need to be updated", abort=False,
                      currentStepIndex=step_index if step_index is not None else len(steps),
                      updatedReplicas=want, canary={"currentStepAnalysisRunStatus": (
                          {"name": _meta(run)["name"], "status": "Running", "message": ""} if run else None)})
        _set_condition(status, "Progressing", "True", "ReplicaSetUpdated",
                       f'ReplicaSet "{_meta(canary_rs)["name"]}" is progressing.')
        ro = self._write_status(ro, status)
        if run is None:
            self._after(self.timings.analysis_seconds, lambda: self._promote(ns, name, None))
            return
        self._event(ro, "Normal", "AnalysisRunRunning",
                    f"Step Analysis Run '{_meta(run)['name']}' Status New: 'Running' Previous: ''")
        run_name = _meta(run)["name"]
        self._after(self.timings.analysis_seconds, lambda: self._measure(ns, name, run_name))

    def _create_run(self, ro: Obj, canary_rs: Obj, step_index: int) -> Obj:
        """A Running AnalysisRun named like Argo's, with the collision suffix .1, .2, ..."""
        ns, name = _meta(ro)["namespace"], _meta(ro)["name"]
        h, rev = _meta(canary_rs)["labels"][HASH_LABEL], _revision(canary_rs)
        base = f"{name}-{h}-{rev}-{step_index}"
        existing = {_meta(r)["name"]: r for r in self.store.list("analysisruns", ns)[0]}
        run_name = next(n for n in (base if i == 0 else f"{base}.{i}" for i in itertools.count()) if n not in existing)
        previous = self._latest_run(ns, ro, h)
        labels = dict(((ro.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})
        # Argo reads analysisRunMetadata from the analysis block (steps[].analysis); the canary-level one is
        # not an Argo field, still honoured so the bundled scenarios' retried runs keep their label
        labels.update((_canary(ro).get("analysisRunMetadata") or {}).get("labels") or {})
        labels.update(((_steps(ro)[step_index].get("analysis") or {}).get("analysisRunMetadata") or {}).get("labels") or {})
        labels.update({"rollout-type": "Step", HASH_LABEL: h, "step-index": str(step_index)})
        spec = (previous or {}).get("spec") or self._run_spec(ro, canary_rs, step_index)
        run = {"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisRun",
               "metadata": {"name": run_name, "namespace": ns, "uid": str(uuid.uuid4()), "labels": labels,
                            "annotations": {REVISION: str(rev)}, "ownerReferences": [_owner_ref(ro)]},
               "spec": spec,
               "status": {"phase": "Running", "startedAt": now_rfc3339(), "metricResults": [],
                          "runSummary": {"count": len(spec.get("metrics") or [])}, "dryRunSummary": {}}}
        return self.store.create("analysisruns", ns, run, system=True)

    def _run_spec(self, ro: Obj, canary_rs: Obj, step_index: int) -> Obj:
        """Merge the step's AnalysisTemplates into one run spec (no previous run to copy from)."""
        ns = _meta(ro)["namespace"]
        step = _steps(ro)[step_index]["analysis"]
        metrics: list[Obj] = []
        for ref in step.get("templates") or []:
            try:
                tmpl = self.store.get("analysistemplates", ns, ref.get("templateName", ""))
            except StoreError:
                continue
            metrics.extend((tmpl.get("spec") or {}).get("metrics") or [])
        labels = ((canary_rs.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
        args = [{"name": "release-id", "value": labels.get("release-id", "")},
                {"name": "canary-hash", "value": labels.get(HASH_LABEL, "")}, {"name": "namespace", "value": ns}]
        for arg in step.get("args") or []:  # the step's own args, resolved as Argo does, win
            value = self._arg_value(ro, canary_rs, arg)
            args = [a for a in args if a["name"] != arg.get("name")]
            args.append({"name": arg.get("name"), **value})
        return {"args": args, "metrics": metrics}

    def _arg_value(self, ro: Obj, canary_rs: Obj, arg: Obj) -> Obj:
        """One analysis argument as Argo's BuildArgumentsForRolloutAnalysisRun resolves it."""
        source = arg.get("valueFrom") or {}
        if "fieldRef" in source:
            path = str((source.get("fieldRef") or {}).get("fieldPath") or "")
            value = _field_value(ro, path)
            if value is None:  # Argo cannot create the run ("invalid path ... in rollout"); the sandbox says so
                self._event(ro, "Warning", "AnalysisRunError", f"invalid path {path} in rollout")
                return {"value": _rs_release_id(canary_rs) or ""}
            return {"value": value}
        if "podTemplateHashValue" in source:
            return {"value": _meta(canary_rs)["labels"].get(HASH_LABEL, "")}
        if source:
            return {"valueFrom": source}
        return {"value": str(arg.get("value", ""))}

    def _measure(self, ns: str, name: str, run_name: str) -> None:
        """Take the run's measurements; finish it and promote or abort, or retry an errored web metric."""
        run = self.store.get("analysisruns", ns, run_name)
        ro = self.store.get("rollouts", ns, name)
        if (run.get("status") or {}).get("phase") != "Running" or (ro.get("status") or {}).get("abort"):
            return  # terminated or aborted meanwhile
        previous = self._latest_run(ns, ro, _meta(run)["labels"].get(HASH_LABEL), before=run_name)
        results, pending_error = self._results(ro, run, previous)
        status = dict(run["status"], metricResults=results)
        if pending_error:
            self.store.set_status("analysisruns", ns, run_name, status)
            self._after(self.timings.error_interval_seconds, lambda: self._measure(ns, name, run_name))
            return
        phase, message = _run_verdict(run, results)
        status.update(phase=phase, message=message, runSummary=_summary(results))
        if not message:
            status.pop("message", None)
        self.store.set_status("analysisruns", ns, run_name, status)
        if phase == "Successful":
            self._promote(ns, name, run_name)
        else:
            self._abort_after_analysis(ns, name, run_name, phase, message)

    def _results(self, ro: Obj, run: Obj, previous: Obj | None) -> tuple[list[Obj], bool]:
        """Metric results of this measurement round; True when an errored web metric should be retried."""
        old = {r["name"]: r for r in (run.get("status") or {}).get("metricResults") or []}
        prev = {r["name"]: r for r in ((previous or {}).get("status") or {}).get("metricResults") or []}
        results, retry = [], False
        for metric in (run.get("spec") or {}).get("metrics") or []:
            provider = metric.get("provider") or {}
            if "web" in provider:
                result = self._web_result(ro, run, metric, old.get(metric["name"]))
                retry = retry or result["phase"] == "Running"
            else:
                result = _copied_result(metric, prev.get(metric["name"]))
            results.append(result)
        return results, retry

    # ------------------------------------------------------------------ the web provider

    def _web_result(self, ro: Obj, run: Obj, metric: Obj, old: Obj | None) -> Obj:
        """One web measurement appended to the metric's result, as Argo's web provider stores it."""
        result = dict(old or {"name": metric["name"], "count": 0, "measurements": []})
        started = now_rfc3339()
        value, error = self._ask_mc(ro, run, metric)
        m: Obj = {"startedAt": started, "finishedAt": now_rfc3339()}
        result["count"] = int(result.get("count", 0)) + 1
        if error is not None:
            m.update(phase="Error", message=error)
            result.update(error=int(result.get("error", 0)) + 1,
                          consecutiveError=int(result.get("consecutiveError", 0)) + 1, message=error)
            limit = int(metric.get("consecutiveErrorLimit", DEFAULT_ERROR_LIMIT))
            result["phase"] = "Error" if result["consecutiveError"] > limit else "Running"
        else:
            ok = _evaluate(metric.get("successCondition", ""), value)
            m.update(phase="Successful" if ok else "Failed", value=_stored_value(value))
            key = "successful" if ok else "failed"
            result[key] = int(result.get(key, 0)) + 1
            result["consecutiveError"] = 0
            result.pop("message", None)
            failed = int(result.get("failed", 0))
            result["phase"] = "Failed" if failed > int(metric.get("failureLimit", 0)) else "Successful"
        result["measurements"] = (list(result.get("measurements") or []) + [m])[-10:]   # Argo keeps 10
        return result

    def _ask_mc(self, ro: Obj, run: Obj, metric: Obj) -> tuple[Any, str | None]:
        """GET the verdict like Argo's web provider: (selected value, None) or (None, error message)."""
        web = metric["provider"]["web"]
        url = self._web_url(ro, run, web.get("url", ""))
        headers = {h["key"]: self._fill(ro, run, h.get("value", "")) for h in web.get("headers") or []}
        if url is None:
            return None, "MC is not configured in this sandbox"
        try:
            resp = self._client().get(url, headers=headers, timeout=float(web.get("timeoutSeconds", 10)))
        except httpx.TimeoutException:
            return None, f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)'
        except httpx.HTTPError as e:
            return None, f'Get "{url}": {e}'
        if not 200 <= resp.status_code < 300:
            return None, f"received non 2xx response code: {resp.status_code}"
        try:
            body = resp.json()
        except ValueError:
            return None, "could not parse JSON body: invalid character '<' looking for beginning of value"
        return _json_path(body, web.get("jsonPath", "{$}"))

    def _web_url(self, ro: Obj, run: Obj, template: str) -> str | None:
        """The template URL with args filled in, pointed at the sandbox's MC (same path and query)."""
        if not self.mc_url:
            return None
        parts = urlsplit(self._fill(ro, run, template))
        return f"{self.mc_url}{parts.path}" + (f"?{parts.query}" if parts.query else "")

    def _fill(self, ro: Obj, run: Obj, text: str) -> str:
        """Substitute {{args.x}}: release-id from the canary ReplicaSet, secrets -> the MC read token."""
        args = {a.get("name"): a for a in (run.get("spec") or {}).get("args") or []}

        def one(m: re.Match[str]) -> str:
            arg = args.get(m.group(1)) or {}
            if m.group(1) == "release-id" and "value" not in arg:
                return self._release_id(ro) or ""
            if "secretKeyRef" in (arg.get("valueFrom") or {}):
                return self._mc_token or ""
            return str(arg.get("value", ""))
        return _ARG_RE.sub(one, text)

    def _release_id(self, ro: Obj) -> str | None:
        """The release-id label of the canary ReplicaSet's pod template."""
        rs = self._rs_by_hash(_meta(ro)["namespace"], ro, (ro.get("status") or {}).get("currentPodHash"))
        return _rs_release_id(rs) if rs else None

    # ------------------------------------------------------------------ outcomes

    def _promote(self, ns: str, name: str, run_name: str | None) -> None:
        """The analysis passed: the canary becomes stable (remaining steps are fast-forwarded)."""
        ro = self.store.get("rollouts", ns, name)
        status = dict(ro.get("status") or {})
        canary_hash = status.get("currentPodHash")
        canary_rs = self._rs_by_hash(ns, ro, canary_hash)
        if canary_rs is None or status.get("abort"):
            return
        if run_name:
            self._event(ro, "Normal", "AnalysisRunSuccessful",
                        f"Step Analysis Run '{run_name}' Status New: 'Successful' Previous: 'Running'")
        self._make_current(ro, canary_rs)
        rev = _revision(canary_rs)
        ro = self.store.get("rollouts", ns, name)
        self._write_status(ro, _healthy_status(ro, canary_hash, f"Rollout completed update to revision {rev} "
                                                               f"({canary_hash}): Completed all steps"))
        self._event(ro, "Normal", "RolloutCompleted",
                    f"Rollout completed update to revision {rev} ({canary_hash}): Completed all steps")
        self._report_deployment(ro, _rs_release_id(canary_rs), "promotion")

    def _abort_after_analysis(self, ns: str, name: str, run_name: str, phase: str, message: str) -> None:
        """The analysis failed or errored: abort as Argo v1.9+ does, with the same message form."""
        ro = self.store.get("rollouts", ns, name)
        rev = _revision(ro)
        full = f"Rollout aborted update to revision {rev}: Step-based analysis phase error/failed: {message}"
        self._event(ro, "Warning", f"AnalysisRun{phase}",
                    f"Step Analysis Run '{run_name}' Status New: '{phase}' Previous: 'Running'")
        self._abort(ro, full)

    def _user_abort(self, ro: Obj) -> None:
        """status.abort false -> true from a user: terminate the analysis and abort the update."""
        status = ro.get("status") or {}
        if status.get("currentPodHash") == status.get("stableRS"):
            return  # nothing is being rolled out; Argo has nothing to abort either
        ns = _meta(ro)["namespace"]
        for run in self.store.list("analysisruns", ns, label_selector=f"{HASH_LABEL}={status.get('currentPodHash')}")[0]:
            if (run.get("status") or {}).get("phase") in ("Running", "Pending"):
                self.store.patch("analysisruns", ns, _meta(run)["name"], {"spec": {"terminate": True}}, "merge")
                self.store.set_status("analysisruns", ns, _meta(run)["name"],
                                      dict(run["status"], phase="Successful", message="Run Terminated"))
        self._abort(ro, f"Rollout aborted update to revision {_revision(ro)}")

    def _abort(self, ro: Obj, full_message: str) -> None:
        """Write the aborted status and events; scale the canary down now or after the delay."""
        status = dict(ro.get("status") or {})
        status.update(abort=True, abortedAt=now_rfc3339(), phase="Degraded", message=f"RolloutAborted: {full_message}",
                      currentStepIndex=0, canary={"currentStepAnalysisRunStatus": None})
        _set_condition(status, "Progressing", "False", "RolloutAborted", full_message)
        ro = self._write_status(ro, status)
        self._event(ro, "Warning", "RolloutAborted", full_message)
        delay = _abort_scale_down_delay(ro)
        ns, name, h = _meta(ro)["namespace"], _meta(ro)["name"], status.get("currentPodHash")
        if delay is not None:  # None: abortScaleDownDelaySeconds 0 keeps the canary up for good
            self._after(delay * self.timings.scale, lambda: self._scale_down_canary(ns, name, h))

    def _resume_abort(self, ro: Obj) -> None:
        """A scenario loaded mid-rollback: finish what Argo still owes it, on Argo's clock.

        The canary is scaled down when what is left of abortScaleDownDelaySeconds has passed; stable
        pods still starting (Pending, ContainerCreating) become Ready after `analysis_seconds`. Pods
        failing for a reason of their own (CrashLoopBackOff, ImagePullBackOff, ...) are left failing."""
        status = ro.get("status") or {}
        if not status.get("abort"):
            return
        delay = _abort_scale_down_delay(ro)
        try:
            aborted = datetime.fromisoformat(str(status.get("abortedAt")).replace("Z", "+00:00"))
            elapsed = (datetime.now(UTC) - aborted).total_seconds()
        except ValueError:
            elapsed = 0.0
        ns, name = _meta(ro)["namespace"], _meta(ro)["name"]
        h, stable = status.get("currentPodHash"), status.get("stableRS")
        if delay is not None:
            self._after(max(0.0, delay - elapsed) * self.timings.scale, lambda: self._scale_down_canary(ns, name, h))
        self._after(self.timings.analysis_seconds, lambda: self._settle_starting_pods(ns, name, stable))

    def _settle_starting_pods(self, ns: str, name: str, stable_hash: str | None) -> None:
        """Stable pods that were only starting are Running and Ready now; the ReplicaSet counts them."""
        ro = self.store.get("rollouts", ns, name)
        rs = self._rs_by_hash(ns, ro, stable_hash)
        if rs is None:
            return
        pods = [p for p in self.store.list("pods", ns, label_selector=f"{HASH_LABEL}={stable_hash}")[0]
                if any(o.get("uid") == _meta(rs)["uid"] for o in _meta(p).get("ownerReferences") or [])]
        changed = False
        for pod in pods:
            if _only_starting(pod):
                ready = _ready_pod(rs)
                status = dict(ready["status"], startTime=(pod.get("status") or {}).get("startTime") or now_rfc3339())
                status = kubelet.complete_pod({**pod, "status": status}, self.store)["status"]
                self.store.set_status("pods", ns, _meta(pod)["name"], status)
                changed = True
        if not changed:
            return
        pods = [self.store.get("pods", ns, _meta(p)["name"]) for p in pods]
        ready_count = sum(1 for p in pods if _pod_ready(p))
        rs_status = dict(rs.get("status") or {}, readyReplicas=ready_count, availableReplicas=ready_count)
        self.store.set_status("replicasets", ns, _meta(rs)["name"], rs_status)
        ro_status = dict(ro.get("status") or {}, readyReplicas=ready_count, availableReplicas=ready_count)
        self._write_status(ro, ro_status)

    def _scale_down_canary(self, ns: str, name: str, canary_hash: str | None) -> None:
        """Scale the aborted canary to zero, unless a retry or undo moved on meanwhile."""
        ro = self.store.get("rollouts", ns, name)
        status = ro.get("status") or {}
        rs = self._rs_by_hash(ns, ro, canary_hash)
        if rs is None or not status.get("abort") or status.get("currentPodHash") != canary_hash:
            return
        before = int((rs.get("spec") or {}).get("replicas", 0))
        if before:
            self._scale(rs, 0)
            self._event(ro, "Normal", "ScalingReplicaSet",
                        f"Scaled down ReplicaSet {_meta(rs)['name']} (revision {_revision(rs)}) from {before} to 0")
            self._write_status(ro, dict(status, updatedReplicas=0))

    # ------------------------------------------------------------------ undo and other spec changes

    def _spec_changed(self, ro: Obj) -> None:
        """A new generation: fast-track a rollback to an existing ReplicaSet, else just observe it."""
        target = self._rs_matching_template(ro)
        status = dict(ro.get("status") or {})
        if target is None:
            if _meta(ro)["namespace"]:
                _log.info("controller: new pod template on %s/%s is not simulated", _meta(ro)["namespace"],
                          _meta(ro)["name"])
            self._write_status(ro, status)
            return
        h = _meta(target)["labels"][HASH_LABEL]
        if h == status.get("currentPodHash"):
            # the template still asks for the current release (e.g. only replicas changed): Argo keeps an
            # aborted rollout aborted; only a retry or a template change moves it
            self._write_status(ro, status)
            return
        self._rollback(ro, target)

    def _rollback(self, ro: Obj, target: Obj) -> None:
        """Argo's fast-track rollback: no steps, no analysis; the target's revision becomes max+1."""
        ns, name = _meta(ro)["namespace"], _meta(ro)["name"]
        new_rev = max([_revision(r) for r in self._owned_rs(ns, ro)] + [_revision(ro)]) + 1
        target = self.store.patch("replicasets", ns, _meta(target)["name"],
                                  {"metadata": {"annotations": {REVISION: str(new_rev)}}}, "merge")
        was_stable = _meta(target)["labels"][HASH_LABEL] == (ro.get("status") or {}).get("stableRS")
        ro = self._remember(self.store.patch("rollouts", ns, name,
                                             {"metadata": {"annotations": {REVISION: str(new_rev)}}}, "merge"))
        self._event(ro, "Normal", "RolloutUpdated", f"Rollout updated to revision {new_rev}")
        self._make_current(ro, target)
        h = _meta(target)["labels"][HASH_LABEL]
        ro = self.store.get("rollouts", ns, name)
        self._write_status(ro, _healthy_status(ro, h, f"Rollout completed update to revision {new_rev} ({h}): "
                                                      "Rollback to stable ReplicaSets"))
        self._event(ro, "Normal", "RolloutCompleted",
                    f"Rollout completed update to revision {new_rev} ({h}): Rollback to stable ReplicaSets")
        if not was_stable:   # the prior release never stopped being current after an abort
            self._report_deployment(ro, _rs_release_id(target), "rollback")

    def _rs_matching_template(self, ro: Obj) -> Obj | None:
        """The owned ReplicaSet whose pod template, minus the hash label, equals spec.template."""
        want = _strip_hash((ro.get("spec") or {}).get("template") or {})
        for rs in self._owned_rs(_meta(ro)["namespace"], ro):
            if _strip_hash(((rs.get("spec") or {}).get("template")) or {}) == want:
                return rs
        return None

    # ------------------------------------------------------------------ replica sets and pods

    def _owned_rs(self, ns: str, ro: Obj) -> list[Obj]:
        uid = _meta(ro).get("uid")
        return [rs for rs in self.store.list("replicasets", ns)[0]
                if any(o.get("uid") == uid for o in _meta(rs).get("ownerReferences") or [])]

    def _rs_by_hash(self, ns: str, ro: Obj, h: str | None) -> Obj | None:
        return next((rs for rs in self._owned_rs(ns, ro) if (_meta(rs).get("labels") or {}).get(HASH_LABEL) == h), None) \
            if h else None

    def _latest_run(self, ns: str, ro: Obj, h: str | None, before: str | None = None) -> Obj | None:
        """The most recent AnalysisRun of this rollout and pod hash (optionally other than ``before``)."""
        uid = _meta(ro).get("uid")
        runs = [r for r in self.store.list("analysisruns", ns, label_selector=f"{HASH_LABEL}={h}")[0]
                if _meta(r)["name"] != before
                and any(o.get("uid") == uid for o in _meta(r).get("ownerReferences") or [])]
        return max(runs, key=lambda r: (str(_meta(r).get("creationTimestamp", "")), _rv(r)), default=None)

    def _make_current(self, ro: Obj, target: Obj) -> None:
        """Scale ``target`` to spec.replicas and every other owned ReplicaSet to zero."""
        replicas = int((ro.get("spec") or {}).get("replicas", 1))
        ns = _meta(ro)["namespace"]
        for rs in self._owned_rs(ns, ro):
            if _meta(rs)["uid"] == _meta(target)["uid"]:
                self._scale(rs, replicas)
            elif int((rs.get("spec") or {}).get("replicas", 0)):
                self._scale(rs, 0)

    def _scale(self, rs: Obj, replicas: int) -> None:
        """Set a ReplicaSet's replicas, create or delete its Ready pods, write its status."""
        ns, name = _meta(rs)["namespace"], _meta(rs)["name"]
        rs = self.store.patch("replicasets", ns, name, {"spec": {"replicas": replicas}}, "merge")
        h = (_meta(rs).get("labels") or {}).get(HASH_LABEL, "")
        pods = [p for p in self.store.list("pods", ns, label_selector=f"{HASH_LABEL}={h}")[0]
                if any(o.get("uid") == _meta(rs)["uid"] for o in _meta(p).get("ownerReferences") or [])]
        for pod in pods[replicas:]:
            self.store.delete("pods", ns, _meta(pod)["name"])
        for _ in range(len(pods), replicas):
            self.store.create("pods", ns, kubelet.complete_pod(_ready_pod(rs), self.store), system=True)
        self.store.set_status("replicasets", ns, name, {
            "replicas": replicas, "fullyLabeledReplicas": replicas, "readyReplicas": replicas,
            "availableReplicas": replicas, "observedGeneration": _meta(rs).get("generation", 1)})

    # ------------------------------------------------------------------ side channels

    def _event(self, ro_or_obj: Obj, typ: str, reason: str, message: str) -> None:
        """A Kubernetes Event on the object, as the rollouts-controller records it."""
        meta = _meta(ro_or_obj)
        now = now_rfc3339()
        self.store.create("events", meta["namespace"], {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": ro_or_obj.get("apiVersion", "argoproj.io/v1alpha1"),
                               "kind": ro_or_obj.get("kind", "Rollout"), "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta.get("uid")},
            "reason": reason, "message": message, "type": typ, "count": 1,
            "source": {"component": "rollouts-controller"}, "reportingComponent": "rollouts-controller",
            "reportingInstance": "", "firstTimestamp": now, "lastTimestamp": now}, system=True)

    def _report_deployment(self, ro: Obj, release_id: str | None, kind: str) -> None:
        """Tell MC the pointer moved (promotion/rollback), with the write token; failures are logged."""
        if not (self.mc_url and self._mc_write_token and release_id):
            return
        http = self._client()
        try:
            rel = http.get(f"{self.mc_url}/api/v1/releases/{release_id}", timeout=5.0,
                                 headers={"Authorization": f"Bearer {self._mc_token}"})
            rel.raise_for_status()
            body = {"service": rel.json()["service"], "release_id": release_id,
                    "artifact_digest": rel.json()["artifact_digest"], "kind": kind,
                    "source": f"argo-rollouts/{_meta(ro)['namespace']}/{_meta(ro)['name']}",
                    "observed_at": now_rfc3339()}
            resp = http.post(f"{self.mc_url}/api/v1/environments/production/deployments", json=body,
                                   timeout=5.0, headers={"Authorization": f"Bearer {self._mc_write_token}",
                                                         "Idempotency-Key": str(uuid.uuid4())})
            resp.raise_for_status()
        except (httpx.HTTPError, KeyError, ValueError) as e:
            _log.warning("controller: could not report %s of %s to MC: %s", kind, release_id, e)


# --------------------------------------------------------------------------- pure helpers


def _canary(ro: Obj) -> Obj:
    return dict(((ro.get("spec") or {}).get("strategy") or {}).get("canary") or {})


def _abort_scale_down_delay(ro: Obj) -> float | None:
    """Seconds before an aborted canary is scaled down; None when Argo never scales it down.

    As Argo's shouldDelayScaleDownOnAbort / GetAbortScaleDownDelaySecondsOrDefault: a basic canary (no
    traffic routing) at once; with traffic routing after abortScaleDownDelaySeconds (default 30), and
    an explicit 0 means "leave the canary up indefinitely" (its setCanaryScale count is kept)."""
    canary = _canary(ro)
    if not canary.get("trafficRouting"):
        return 0.0
    delay = int(canary.get("abortScaleDownDelaySeconds", DEFAULT_ABORT_DELAY))
    return None if delay == 0 else float(delay)


def _field_value(obj: Obj, path: str) -> str | None:
    """A fieldRef path walked through the Rollout's JSON as Argo's extractValueFromRollout does.

    Split on runs of `.`, `[`, `]`: `spec.template.metadata.labels.release-id` works; in
    `labels['release-id']` the quotes stay part of the key, so it resolves to nothing (None)."""
    node: Any = obj
    for section in (s for s in re.split(r"[.\[\]]+", path) if s):
        if isinstance(node, list):
            if not section.isdigit() or int(section) >= len(node):
                return None
            node = node[int(section)]
        elif isinstance(node, dict):
            node = node.get(section)
        else:
            return None
    if node is None or isinstance(node, (dict, list)):
        return None
    return str(node).lower() if isinstance(node, bool) else str(node)


def _steps(ro: Obj) -> list[Obj]:
    return list(_canary(ro).get("steps") or [])


def _rs_release_id(rs: Obj) -> str | None:
    """The release-id label of a ReplicaSet's pod template."""
    labels = (((rs.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
    value = labels.get("release-id")
    return str(value) if value else None


def _owner_ref(ro: Obj) -> Obj:
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": _meta(ro)["name"],
            "uid": _meta(ro)["uid"], "controller": True, "blockOwnerDeletion": True}


def _strip_hash(template: Obj) -> Obj:
    """A pod template without the rollouts-pod-template-hash label (what `undo` sends)."""
    t = json.loads(json.dumps(template))
    labels = (t.get("metadata") or {}).get("labels") or {}
    labels.pop(HASH_LABEL, None)
    (t.get("metadata") or {}).pop("creationTimestamp", None)
    return dict(t)


def _set_condition(status: Obj, typ: str, value: str, reason: str, message: str) -> None:
    """Insert or replace one condition; lastTransitionTime changes only with the status value."""
    now = now_rfc3339()
    conds = [dict(c) for c in status.get("conditions") or []]
    old = next((c for c in conds if c.get("type") == typ), None)
    new = {"type": typ, "status": value, "reason": reason, "message": message, "lastUpdateTime": now,
           "lastTransitionTime": old["lastTransitionTime"] if old and old.get("status") == value
           and old.get("lastTransitionTime") else now}
    status["conditions"] = [c for c in conds if c.get("type") != typ] + [new]


def _healthy_status(ro: Obj, h: str | None, completed: str) -> Obj:
    """The status of a fully promoted (or rolled back) canary."""
    replicas = int((ro.get("spec") or {}).get("replicas", 1))
    status = {k: v for k, v in (ro.get("status") or {}).items() if k not in ("abortedAt", "pauseConditions")}
    status.update(phase="Healthy", message="", abort=False, stableRS=h, currentPodHash=h,
                  currentStepIndex=len(_steps(ro)), replicas=replicas, updatedReplicas=replicas,
                  readyReplicas=replicas, availableReplicas=replicas, canary={"currentStepAnalysisRunStatus": None})
    _set_condition(status, "Available", "True", "AvailableReason", "Rollout has minimum availability")
    _set_condition(status, "Completed", "True", "RolloutCompleted", completed)
    _set_condition(status, "Healthy", "True", "RolloutHealthy", "Rollout is healthy")
    _set_condition(status, "Progressing", "True", "NewReplicaSetAvailable",
                   f'Rollout "{_meta(ro)["name"]}" has successfully progressed.')
    return status


_STARTING = ("ContainerCreating", "PodInitializing")


def _only_starting(pod: Obj) -> bool:
    """A pod that is merely starting (not failing): Pending/ContainerCreating, no restarts, no error."""
    status = pod.get("status") or {}
    if _pod_ready(pod):
        return False
    statuses = status.get("containerStatuses") or []
    if any(int(c.get("restartCount") or 0) for c in statuses):
        return False
    waiting = [((c.get("state") or {}).get("waiting") or {}).get("reason") for c in statuses]
    return all(r in _STARTING for r in waiting) if waiting else status.get("phase") == "Pending"


def _pod_ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _ready_pod(rs: Obj) -> Obj:
    """A Running, Ready pod of a ReplicaSet's template (probes and all)."""
    tmpl = (rs.get("spec") or {}).get("template") or {}
    meta = _meta(rs)
    name = meta["name"] + "-" + "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
    now = now_rfc3339()
    containers = (tmpl.get("spec") or {}).get("containers") or []
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": meta["namespace"], "uid": str(uuid.uuid4()),
                         "labels": dict((tmpl.get("metadata") or {}).get("labels") or {}),
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": meta["name"],
                                              "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]},
            "spec": dict(tmpl.get("spec") or {}, nodeName=SANDBOX_NODE, restartPolicy="Always"),
            "status": {"phase": "Running", "startTime": now,  # kubelet.complete_pod adds IPs, qosClass, IDs
                       "conditions": [{"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
                                      for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")],
                       "containerStatuses": [{"name": c.get("name"), "image": c.get("image"), "ready": True,
                                              "started": True, "restartCount": 0,
                                              "state": {"running": {"startedAt": now}}} for c in containers]}}


def _json_path(body: Any, path: str) -> tuple[Any, str | None]:
    """Argo's jsonPath for the forms templates use: ``{$}`` and ``{$.a.b}``."""
    inner = path.strip().removeprefix("{").removesuffix("}").strip()
    value = body
    for key in [k for k in inner.removeprefix("$").split(".") if k]:
        if not isinstance(value, dict) or key not in value:
            return None, f"failed to parse JSON path {path}: {key} is not found"
        value = value[key]
    return value, None


def _stored_value(value: Any) -> str:
    """measurements[].value: strings as they are, everything else compact JSON with sorted keys."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))


def _evaluate(condition: str, value: Any) -> bool:
    """The successCondition forms templates use (``result.ok == true``, ``result[0] <= 0.5``).

    Hand-written because Argo's expression language (expr-lang) has no Python port; anything else
    counts as not successful, which fails closed like a gate should.
    """
    m = _COND_RE.match(condition or "")
    if not m:
        return False
    path, op, literal = m.groups()
    left = value
    for part in re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]", path):
        try:
            left = left[part[0]] if part[0] else left[int(part[1])]
        except (KeyError, IndexError, TypeError):
            return False
    try:
        right = json.loads(literal)
    except ValueError:
        right = literal.strip("'\"")
    ops: dict[str, Callable[[Any, Any], bool]] = {
        "==": lambda a, b: bool(a == b), "!=": lambda a, b: bool(a != b), "<=": lambda a, b: bool(a <= b),
        ">=": lambda a, b: bool(a >= b), "<": lambda a, b: bool(a < b), ">": lambda a, b: bool(a > b)}
    try:
        return ops[op](left, right)
    except TypeError:
        return False


def _copied_result(metric: Obj, previous: Obj | None) -> Obj:
    """A non-web metric: the same values as the previous run of this pod hash (same release, same SLOs)."""
    now = now_rfc3339()
    if previous is None:
        return {"name": metric["name"], "phase": "Successful", "count": 1, "successful": 1,
                "measurements": [{"phase": "Successful", "value": "[0]", "startedAt": now, "finishedAt": now}]}
    result = json.loads(json.dumps(previous))
    for m in result.get("measurements") or []:
        m["startedAt"] = m["finishedAt"] = now
    return dict(result)


_WORST = {"Error": 3, "Failed": 2, "Inconclusive": 1, "Successful": 0, "Running": 0}


def _run_verdict(run: Obj, results: list[Obj]) -> tuple[str, str]:
    """The run's phase and message from its worst metric, in Argo's wording."""
    worst = max(results, key=lambda r: _WORST.get(r.get("phase", ""), 0), default=None)
    if worst is None or _WORST.get(worst.get("phase", ""), 0) == 0:
        return "Successful", ""
    metric: Obj = next((m for m in (run.get("spec") or {}).get("metrics") or [] if m["name"] == worst["name"]), {})
    name, phase = worst["name"], worst["phase"]
    if phase == "Error":
        limit = int(metric.get("consecutiveErrorLimit", DEFAULT_ERROR_LIMIT))
        msg = (f'Metric "{name}" assessed Error due to consecutiveErrors ({worst.get("consecutiveError", 0)}) '
               f"> consecutiveErrorLimit ({limit})")
    elif phase == "Failed":
        msg = (f'Metric "{name}" assessed Failed due to failed ({worst.get("failed", 0)}) '
               f'> failureLimit ({int(metric.get("failureLimit", 0))})')
    else:
        msg = (f'Metric "{name}" assessed Inconclusive due to inconclusive ({worst.get("inconclusive", 0)}) '
               f'> inconclusiveLimit ({int(metric.get("inconclusiveLimit", 0))})')
    if worst.get("message"):
        msg += f': "Error Message: {worst["message"]}"'
    return phase, msg


def _summary(results: list[Obj]) -> Obj:
    """status.runSummary: how many metrics ended in each phase."""
    summary: Obj = {"count": len(results)}
    for r in results:
        key = r.get("phase", "").lower()
        if key in ("successful", "failed", "error", "inconclusive"):
            summary[key] = summary.get(key, 0) + 1
    return summary
