"""The simulated Argo Rollouts controller: retry, re-analysis against MC, promote/abort, undo, scale-down.

It reacts to store events the way Argo's reconciler reacts to informer events (argo-rollouts.md); the
event loop, timers and hold/release gate are clock.py's, the AnalysisRuns analysisrun.py's, the HTTP to
MC webprovider.py's, the ReplicaSet and pod writes replicas.py's. Only what the runbooks exercise is
simulated; a brand-new pod template (a fresh release) is acknowledged but not rolled out.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime

from rollbook.sandbox import kubelet
from rollbook.sandbox.analysisrun import create_run, measure_round
from rollbook.sandbox.argo_objects import DEFAULT_ABORT_DELAY as DEFAULT_ABORT_DELAY
from rollbook.sandbox.argo_objects import (
    HASH_LABEL,
    REVISION,
    Obj,
    _abort_scale_down_delay,
    _healthy_status,
    _meta,
    _only_starting,
    _pod_ready,
    _ready_pod,
    _revision,
    _rs_release_id,
    _rv,
    _set_condition,
    _steps,
    _strip_hash,
    now_rfc3339,
)
from rollbook.sandbox.argo_objects import _field_value as _field_value
from rollbook.sandbox.clock import EventClock
from rollbook.sandbox.clock import Timings as Timings
from rollbook.sandbox.measurement import DEFAULT_ERROR_LIMIT as DEFAULT_ERROR_LIMIT
from rollbook.sandbox.measurement import _run_verdict, _summary
from rollbook.sandbox.replicas import latest_run, make_current, owned_pods, owned_rs, record_event, rs_by_hash, scale
from rollbook.sandbox.store import Store
from rollbook.sandbox.webprovider import WebProvider

_log = logging.getLogger(__name__)

__all__ = ["HASH_LABEL", "REVISION", "Controller", "Obj", "Timings", "now_rfc3339"]


class Controller(EventClock):
    """Runs in its own thread; reacts to Rollout changes the way Argo does."""

    def __init__(self, store: Store, *, mc_url: str | None, mc_token: str | None, timings: Timings,
                 mc_write_token: str | None = None) -> None:
        super().__init__(timings)
        self.store = store
        self._mc = WebProvider(store, mc_url=mc_url, mc_token=mc_token, mc_write_token=mc_write_token)
        self.mc_url = self._mc.mc_url
        self._seen: dict[tuple[str, str], Obj] = {}
        store.add_listener(self._on_store_event)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Remember the current rollouts and start the reconcile thread."""
        for ro in self.store.list("rollouts")[0]:
            self._seen[(_meta(ro)["namespace"], _meta(ro)["name"])] = ro
            self._resume_abort(ro)
        self._start_loop()

    def stop(self) -> None:
        """Stop the thread (bounded join) and close the HTTP client."""
        self._stop_loop()
        self._mc.close()

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
        canary_rs = rs_by_hash(self.store, ns, ro, canary_hash)
        if canary_rs is None or canary_hash == status.get("stableRS"):
            _log.info("controller: retry of %s/%s with nothing to retry", ns, name)
            return
        steps = _steps(ro)
        step_index = next((i for i, s in enumerate(steps) if "analysis" in s), None)
        weight = next((s["setWeight"] for s in steps[: step_index or len(steps)] if "setWeight" in s), 100)
        want = max(1, math.ceil(int((ro.get("spec") or {}).get("replicas", 1)) * int(weight) / 100))
        scale(self.store, canary_rs, want)
        record_event(self.store, ro, "Normal", "ScalingReplicaSet",
                    f"Scaled up ReplicaSet {_meta(canary_rs)['name']} (revision {_revision(canary_rs)}) from 0 to {want}")
        run = create_run(self.store, ro, canary_rs, step_index) if step_index is not None else None
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
        record_event(self.store, ro, "Normal", "AnalysisRunRunning",
                    f"Step Analysis Run '{_meta(run)['name']}' Status New: 'Running' Previous: ''")
        run_name = _meta(run)["name"]
        self._after(self.timings.analysis_seconds, lambda: self._measure(ns, name, run_name))

    def _measure(self, ns: str, name: str, run_name: str) -> None:
        """Take the run's measurements; finish it and promote or abort, or retry an errored web metric."""
        run = self.store.get("analysisruns", ns, run_name)
        ro = self.store.get("rollouts", ns, name)
        if (run.get("status") or {}).get("phase") != "Running" or (ro.get("status") or {}).get("abort"):
            return  # terminated or aborted meanwhile
        previous = latest_run(self.store, ns, ro, _meta(run)["labels"].get(HASH_LABEL), before=run_name)
        results, pending_error = measure_round(self._mc, ro, run, previous)
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

    # ------------------------------------------------------------------ outcomes

    def _promote(self, ns: str, name: str, run_name: str | None) -> None:
        """The analysis passed: the canary becomes stable (remaining steps are fast-forwarded)."""
        ro = self.store.get("rollouts", ns, name)
        status = dict(ro.get("status") or {})
        canary_hash = status.get("currentPodHash")
        canary_rs = rs_by_hash(self.store, ns, ro, canary_hash)
        if canary_rs is None or status.get("abort"):
            return
        if run_name:
            record_event(self.store, ro, "Normal", "AnalysisRunSuccessful",
                        f"Step Analysis Run '{run_name}' Status New: 'Successful' Previous: 'Running'")
        make_current(self.store, ro, canary_rs)
        rev = _revision(canary_rs)
        ro = self.store.get("rollouts", ns, name)
        self._write_status(ro, _healthy_status(ro, canary_hash, f"Rollout completed update to revision {rev} "
                                                               f"({canary_hash}): Completed all steps"))
        record_event(self.store, ro, "Normal", "RolloutCompleted",
                    f"Rollout completed update to revision {rev} ({canary_hash}): Completed all steps")
        self._mc.report_deployment(ro, _rs_release_id(canary_rs), "promotion")

    def _abort_after_analysis(self, ns: str, name: str, run_name: str, phase: str, message: str) -> None:
        """The analysis failed or errored: abort as Argo v1.9+ does, with the same message form."""
        ro = self.store.get("rollouts", ns, name)
        rev = _revision(ro)
        full = f"Rollout aborted update to revision {rev}: Step-based analysis phase error/failed: {message}"
        record_event(self.store, ro, "Warning", f"AnalysisRun{phase}",
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
        record_event(self.store, ro, "Warning", "RolloutAborted", full_message)
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
        rs = rs_by_hash(self.store, ns, ro, stable_hash)
        if rs is None:
            return
        pods = owned_pods(self.store, ns, rs, stable_hash)
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
        rs = rs_by_hash(self.store, ns, ro, canary_hash)
        if rs is None or not status.get("abort") or status.get("currentPodHash") != canary_hash:
            return
        before = int((rs.get("spec") or {}).get("replicas", 0))
        if before:
            scale(self.store, rs, 0)
            record_event(self.store, ro, "Normal", "ScalingReplicaSet",
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
        new_rev = max([_revision(r) for r in owned_rs(self.store, ns, ro)] + [_revision(ro)]) + 1
        target = self.store.patch("replicasets", ns, _meta(target)["name"],
                                  {"metadata": {"annotations": {REVISION: str(new_rev)}}}, "merge")
        was_stable = _meta(target)["labels"][HASH_LABEL] == (ro.get("status") or {}).get("stableRS")
        ro = self._remember(self.store.patch("rollouts", ns, name,
                                             {"metadata": {"annotations": {REVISION: str(new_rev)}}}, "merge"))
        record_event(self.store, ro, "Normal", "RolloutUpdated", f"Rollout updated to revision {new_rev}")
        make_current(self.store, ro, target)
        h = _meta(target)["labels"][HASH_LABEL]
        ro = self.store.get("rollouts", ns, name)
        self._write_status(ro, _healthy_status(ro, h, f"Rollout completed update to revision {new_rev} ({h}): "
                                                      "Rollback to stable ReplicaSets"))
        record_event(self.store, ro, "Normal", "RolloutCompleted",
                    f"Rollout completed update to revision {new_rev} ({h}): Rollback to stable ReplicaSets")
        if not was_stable:   # the prior release never stopped being current after an abort
            self._mc.report_deployment(ro, _rs_release_id(target), "rollback")

    def _rs_matching_template(self, ro: Obj) -> Obj | None:
        """The owned ReplicaSet whose pod template, minus the hash label, equals spec.template."""
        want = _strip_hash((ro.get("spec") or {}).get("template") or {})
        for rs in owned_rs(self.store, _meta(ro)["namespace"], ro):
            if _strip_hash(((rs.get("spec") or {}).get("template")) or {}) == want:
                return rs
        return None
