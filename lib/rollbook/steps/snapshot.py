"""The snapshot taken at the start of a run: every object the steps read, raw, before Argo GCs them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rollbook import diagnosis as dx
from rollbook.errors import EvidenceError, RollbookError
from rollbook.steps.core import Incident


def capture(incident: Incident) -> dict[str, Any]:
    """Rollout, ReplicaSets, pods, AnalysisRuns, events, and MC's verdict, listing and bundle, as JSON."""
    view = incident.view()
    objects: dict[str, Any] = {
        "rollout": view.raw,
        "replicasets": [rs.raw for rs in view.replicasets],
        "pods": [p.raw for rs in view.replicasets for p in rs.pods],
        "analysisruns": [r.raw for r in view.analysis_runs],
        "events": [e.raw for e in view.events],
    }
    release = dx.canary_release_id(view)[0]
    objects["mc"] = _mc(incident, release, view.stable_rs.release_id if view.stable_rs else None)
    return objects


def _mc(incident: Incident, release: str | None, stable_release: str | None) -> dict[str, Any]:
    """MC's answers for the canary release (verdict, listing) and the service's current bundle."""
    out: dict[str, Any] = {"release_id": release}
    try:
        mc = incident.mc
    except RollbookError as e:
        return out | {"error": str(e)}
    calls: dict[str, Callable[[], Any]] = {
        "verdict": lambda: mc.verdict(release, incident.environment).raw if release else None,
        "listing": lambda: mc.listing(release, incident.environment).raw if release else None,
        "release": lambda: mc.release(release).raw if release else None,
    }
    for key, call in calls.items():
        try:
            out[key] = call()
        except EvidenceError as e:
            out[key] = {"error": e.code or type(e).__name__, "message": str(e)}
    service = (out.get("release") or {}).get("service")
    if service is None and stable_release:
        try:
            service = mc.release(stable_release).service
        except EvidenceError:
            service = None
    if service:
        try:
            out["current"] = mc.current(service, incident.environment).raw
        except EvidenceError as e:
            out["current"] = {"error": e.code or type(e).__name__, "message": str(e)}
    return out
