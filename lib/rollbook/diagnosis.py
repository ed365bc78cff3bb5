"""What the playbook asks of the read model, answered from the objects alone (pure functions).

Nothing here knows a scenario's name: every finding comes from the Rollout, its ReplicaSets, pods and
AnalysisRuns (and MC's answers, passed in). The step notebooks call these through `rollbook.steps`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from rollbook.cluster.models import AnalysisRunInfo, MetricResult, PodInfo, ReplicaSetInfo, RolloutView
from rollbook.evidence import Verdict, parse_verdict
from rollbook.rollback_state import STARTING_REASONS as STARTING_REASONS  # re-exported: the steps read dx.*
from rollbook.rollback_state import kept_canary as kept_canary
from rollbook.rollback_state import pod_starting as pod_starting
from rollbook.rollback_state import rollback_complete as rollback_complete
from rollbook.rollback_state import rollback_progressing as rollback_progressing

Trigger = Literal["evidence", "slo", "evidence+slo", "error", "other", "none"]
MetricKind = Literal["evidence", "slo", "other"]

HASH_LABEL = "rollouts-pod-template-hash"
SLO_PROVIDERS = ("prometheus", "datadog", "newRelic", "wavefront", "influxdb", "cloudWatch", "graphite",
                 "kayenta", "skywalking")
ESCALATE_AFTER = timedelta(minutes=15)
_RETRY_SUFFIX = re.compile(r"\.(\d+)$")


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 timestamp as an aware datetime, None when absent or unparsable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def iso(value: datetime | None) -> str | None:
    """RFC 3339 UTC with a Z, as Kubernetes writes it."""
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- metrics and triggers


def metric_spec(run: AnalysisRunInfo, name: str) -> dict[str, Any]:
    """The run's spec entry of one metric (provider, conditions, limits)."""
    for metric in (run.raw.get("spec") or {}).get("metrics") or []:
        if metric.get("name") == name:
            return dict(metric)
    return {}


def metric_kind(run: AnalysisRunInfo, metric: MetricResult) -> MetricKind:
    """Evidence gate (a web call to MC's evidence-status, or the playbook's metric name), SLO, or other."""
    return kind_of_metric(metric.name, metric_spec(run, metric.name), metric.provider)


def kind_of_metric(name: str, spec: Mapping[str, Any], provider_name: str | None = None) -> MetricKind:
    """The kind of a metric from its spec (an AnalysisRun's or an AnalysisTemplate's)."""
    provider = spec.get("provider") or {}
    web = provider.get("web") or {}
    if name == "mc-evidence-ok" or "evidence" in str(web.get("url", "")):
        return "evidence"
    if provider_name in SLO_PROVIDERS or any(p in provider for p in SLO_PROVIDERS):
        return "slo"
    return "other"


def trigger_from_abort(view: RolloutView, template_metrics: Mapping[str, Mapping[str, Any]]) -> tuple[Trigger, list[str]]:
    """When the failed run is gone (garbage-collected): the trigger from the abort message and the templates.

    The message keeps the metric and its assessed phase; the referenced template says what measured it.
    """
    abort = view.abort
    if abort is None or not abort.metric:
        return "none", []
    if abort.assessed_phase == "Error":
        return "error", [abort.metric]
    kind = kind_of_metric(abort.metric, template_metrics.get(abort.metric) or {})
    return ("other" if kind == "other" else kind), [abort.metric]


def failing(run: AnalysisRunInfo) -> tuple[MetricResult, ...]:
    """Metric results whose phase is Failed or Error; dry-run metrics never fail a run, so they do not count."""
    return tuple(m for m in run.metric_results if m.phase in ("Failed", "Error") and not m.dry_run)


def trigger_of(run: AnalysisRunInfo | None) -> Trigger:
    """Which trigger fired: evidence, slo, both, an Error rather than a Failure, or none."""
    if run is None:
        return "none"
    bad = failing(run)
    if not bad:
        return "none" if run.phase not in ("Failed", "Error") else "other"
    failed = [m for m in bad if m.phase == "Failed"]
    if not failed:
        return "error"
    kinds = {metric_kind(run, m) for m in failed}
    if kinds >= {"evidence", "slo"}:
        return "evidence+slo"
    if "evidence" in kinds:
        return "evidence"
    if "slo" in kinds:
        return "slo"
    return "other"


def failed_run(view: RolloutView) -> AnalysisRunInfo | None:
    """The run that aborted the canary: the newest Failed/Error run of the canary's pod hash."""
    bad = [r for r in view.canary_runs if r.phase in ("Failed", "Error")]
    if bad:
        return bad[0]
    return None


def latest_run(view: RolloutView) -> AnalysisRunInfo | None:
    """The newest run of the canary's pod hash, whatever its phase."""
    runs = view.canary_runs
    return runs[0] if runs else None


def evidence_metric(run: AnalysisRunInfo | None) -> MetricResult | None:
    """The evidence gate's metric result in a run, if it has one."""
    if run is None:
        return None
    return next((m for m in run.metric_results if metric_kind(run, m) == "evidence"), None)


@dataclass(frozen=True)
class EvidenceInRun:
    """What the AnalysisRun itself says about MC: the verdict in the last measurement, or why not."""

    metric: str | None
    phase: str | None
    value: str | None
    verdict: Verdict | None
    reason: str | None
    reason_lost: bool
    error_message: str | None
    json_path: str | None
    explanation: str
    measured_at: str | None = None  # when the last measurement finished (the stored verdict's time)


def evidence_in_run(run: AnalysisRunInfo | None) -> EvidenceInRun:
    """Read MC's reason out of the web measurement's value (the only place Argo keeps it)."""
    metric = evidence_metric(run)
    if run is None or metric is None:
        return EvidenceInRun(None, None, None, None, None, False, None, None,
                             "No evidence-gate metric in the run.")
    web = (metric_spec(run, metric.name).get("provider") or {}).get("web") or {}
    json_path = web.get("jsonPath")
    last = metric.last
    value = last.value if last else None
    verdict = last.verdict if last else None
    if verdict is None and value:
        try:
            verdict = parse_verdict(value)
        except Exception:  # noqa: BLE001 - a malformed value is reported below, never fatal
            verdict = None
    error_message = (last.message if last else None) or metric.message
    measured_at = (last.finished_at or last.started_at) if last else None
    if verdict is not None:
        return EvidenceInRun(metric.name, metric.phase, value, verdict, verdict.reason, False, error_message,
                             json_path, "MC's reason was read from the measurement value.", measured_at)
    lost = value is not None and value.strip().lower() in ("true", "false")
    if lost:
        why = (f"The template's jsonPath {json_path or '(unknown)'} kept only `{value}`: MC's reason was lost "
               "in the AnalysisRun; it must come from MC directly.")
    elif error_message:
        why = f"The measurement errored ({error_message}); MC gave no verdict to Argo."
    else:
        why = "The measurement carries no MC verdict."
    return EvidenceInRun(metric.name, metric.phase, value, None, None, lost, error_message, json_path, why, measured_at)


def run_args(run: AnalysisRunInfo | None) -> dict[str, str]:
    """The run's literal args (valueFrom ones are left out)."""
    if run is None:
        return {}
    return {str(a.get("name")): str(a["value"]) for a in (run.raw.get("spec") or {}).get("args") or []
            if "value" in a}


def metric_rows(run: AnalysisRunInfo) -> list[dict[str, Any]]:
    """One row per metric: phase, counts, the last measurement's value or message, kind."""
    rows = []
    for m in run.metric_results:
        last = m.last
        rows.append({
            "metric": m.name, "kind": metric_kind(run, m), "provider": m.provider,
            "phase": f"{m.phase} (dry run: does not count)" if m.dry_run else m.phase,
            "count": m.count, "successful": m.successful, "failed": m.failed, "error": m.error,
            "inconclusive": m.inconclusive,
            "last value": _short(last.value) if last else None,
            "last message": (last.message if last else None) or m.message,
            "condition": metric_spec(run, m.name).get("successCondition")
            or metric_spec(run, m.name).get("failureCondition"),
        })
    return rows


def measurement_rows(run: AnalysisRunInfo) -> list[dict[str, Any]]:
    """Every kept measurement of every metric (Argo keeps at most 10 per metric)."""
    return [
        {"metric": m.name, "phase": x.phase, "value": _short(x.value), "message": x.message,
         "started": x.started_at, "finished": x.finished_at}
        for m in run.metric_results for x in m.measurements
    ]


def _short(value: str | None, limit: int = 160) -> str | None:
    if value is None:
        return None
    return value if len(value) <= limit else value[: limit - 1] + "…"


# --------------------------------------------------------------------------- selectors


def selector_advice(view: RolloutView, run: AnalysisRunInfo | None) -> dict[str, Any]:
    """Whether the playbook's `-l rollout=<name>` works here, and the command that does."""
    labelled = [r.name for r in view.analysis_runs if r.labels.get("rollout") == view.name]
    hash_ = (run.pod_template_hash if run else None) or view.canary_hash
    works = f"kubectl get analysisrun -n {view.namespace} -l {HASH_LABEL}={hash_}" if hash_ else None
    playbook = f"kubectl get analysisrun -n {view.namespace} -l rollout={view.name}"
    return {
        "playbook_selector_works": bool(labelled),
        "playbook_command": playbook,
        "working_command": playbook if labelled else works,
        "detail_command": (f"kubectl get analysisrun {run.name} -n {view.namespace} "
                           "-o jsonpath='{.status.metricResults[*]}'") if run else None,
        "runs_with_rollout_label": len(labelled),
    }


# --------------------------------------------------------------------------- rollback state


def image_tag(image: str | None) -> str | None:
    """The tag of an image reference (after the last ':' of the last path part), or None."""
    if not image:
        return None
    last = image.rsplit("/", 1)[-1].split("@", 1)[0]
    return last.split(":", 1)[1] if ":" in last else None


def progressing_condition(view: RolloutView) -> dict[str, Any]:
    """The Rollout's Progressing condition (reason RolloutAborted after an abort)."""
    for cond in (view.raw.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Progressing":
            return dict(cond)
    return {}


def pod_rows(pods: tuple[PodInfo, ...], release_key: str = "release-id") -> list[dict[str, Any]]:
    """Pods as a table: status, ready, restarts, images, release id (under its label key), probes."""
    return [
        {"pod": p.name, "status": p.status, "ready": p.ready, "restarts": p.restarts,
         "images": ", ".join(p.images), release_key: p.labels.get(release_key),
         "readiness probe": all(c.readiness_probe for c in p.containers) if p.containers else False,
         "liveness probe": all(c.liveness_probe for c in p.containers) if p.containers else False}
        for p in pods
    ]


def release_image(view: RolloutView, rs: ReplicaSetInfo | None) -> str | None:
    """The image of the container the release changes (a sidecar listed first is not the release).

    The container whose image differs between the stable and canary templates; when none differs (or
    there is no canary), the first container's.
    """
    if rs is None or not rs.images:
        return None
    stable, canary = view.stable_rs, view.canary_rs
    if stable is not None and canary is not None and len(stable.images) == len(canary.images):
        changed = [i for i, (a, b) in enumerate(zip(stable.images, canary.images, strict=True)) if a != b]
        if changed and changed[0] < len(rs.images):
            return rs.images[changed[0]]
    return rs.images[0]


def stable_pod_rows(view: RolloutView) -> list[dict[str, Any]]:
    """The stable ReplicaSet's pods as a table (release id under the label key the analysis uses)."""
    return pod_rows(view.stable_rs.pods if view.stable_rs else (), release_label(view).key)


def replicaset_rows(view: RolloutView) -> list[dict[str, Any]]:
    """ReplicaSets highest revision first, tagged as the plugin does."""
    key = release_label(view).key
    return [
        {"revision": rs.revision, "replicaset": rs.name, "tags": ",".join(rs.tags), "status": rs.status,
         "desired": rs.desired, "available": rs.available, "images": ", ".join(rs.images),
         key: rs.template_labels.get(key)}
        for rs in sorted(view.replicasets, key=lambda r: -r.revision)
    ]


# --------------------------------------------------------------------------- identity


DEFAULT_RELEASE_LABEL = "release-id"
# `labels['KEY']` (common in docs) or the dot form `labels.KEY` Argo's extractValueFromRollout resolves
_LABEL_FIELD = re.compile(r"labels\[['\"]([^'\"]+)['\"]\]|labels\.([^.\[\]]+)$")


@dataclass(frozen=True)
class ReleaseLabel:
    """Where the release id lives: the pod label key, and the analysis argument that carries it."""

    key: str
    arg: str
    source: str


def release_label(view: RolloutView) -> ReleaseLabel:
    """The release label the analysis is wired to: the label a step's analysis argument reads by fieldRef.

    The playbook says `release-id`; teams use their own keys (`app.example/release`). The Rollout's own
    analysis args say which (``valueFrom.fieldRef.fieldPath: spec.template.metadata.labels.KEY``, or the
    bracket form ``labels['KEY']``); an argument named like a release wins over others.
    """
    strategy = (view.raw.get("spec") or {}).get("strategy") or {}
    canary, bg = strategy.get("canary") or {}, strategy.get("blueGreen") or {}
    analyses = [s.get("analysis") or {} for s in canary.get("steps") or [] if isinstance(s, dict)]
    analyses += [canary.get("analysis") or {}, bg.get("prePromotionAnalysis") or {},
                 bg.get("postPromotionAnalysis") or {}]
    found: list[tuple[str, str]] = []
    for analysis in analyses:
        for arg in analysis.get("args") or []:
            path = str((((arg.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")) or "")
            if (m := _LABEL_FIELD.search(path)) is not None:
                found.append((m.group(1) or m.group(2), str(arg.get("name") or "")))
    found.sort(key=lambda f: ("release" not in f[1].lower(), "release" not in f[0].lower()))
    if found:
        key, arg = found[0]
        return ReleaseLabel(key, arg or DEFAULT_RELEASE_LABEL, f"analysis argument {arg!r} reads label {key!r}")
    return ReleaseLabel(DEFAULT_RELEASE_LABEL, DEFAULT_RELEASE_LABEL, "the playbook's release-id label")


def canary_release_id(view: RolloutView) -> tuple[str | None, str]:
    """The canary's release id: live pods if any, else its ReplicaSet's template, else the Rollout's."""
    key = release_label(view).key
    canary = view.canary_rs
    if canary is not None:
        live = sorted({p.labels[key] for p in canary.pods if p.labels.get(key)})
        if len(live) == 1:
            return live[0], f"label {key} of live canary pods of {canary.name}"
        if canary.template_labels.get(key):
            return canary.template_labels[key], f"label {key} in the pod template of canary ReplicaSet {canary.name}"
    label = view.template_labels.get(key)
    if label:
        return label, f"label {key} in spec.template of Rollout {view.name}"
    return None, f"no {key} label on canary pods, canary ReplicaSet or Rollout template"


def stable_release_id(view: RolloutView) -> tuple[str | None, str]:
    """The stable ReplicaSet's release id (the prior release, or the promoted one)."""
    stable = view.stable_rs
    if stable is None:
        return None, "no stable ReplicaSet"
    key = release_label(view).key
    return stable.template_labels.get(key), f"label {key} of stable ReplicaSet {stable.name} (revision {stable.revision})"


# --------------------------------------------------------------------------- loops and escalation


def retry_number(run_name: str) -> int:
    """The collision suffix Argo adds on a retry: `.1`, `.2`; 0 for the first run."""
    m = _RETRY_SUFFIX.search(run_name)
    return int(m.group(1)) if m else 0


@dataclass(frozen=True)
class LoopInfo:
    """Aborts of the same revision: how many runs failed, how many were retries."""

    revision: int | None
    failed_runs: tuple[str, ...]
    retries: int
    looping: bool


def loop_info(view: RolloutView, *, threshold: int = 2) -> LoopInfo:
    """A rollback loop: the same revision failed its analysis `threshold` or more times."""
    rev = view.canary_revision
    runs = [r for r in view.analysis_runs if r.pod_template_hash == view.canary_hash
            and r.phase in ("Failed", "Error") and (rev is None or r.revision in (0, rev))]
    retries = max((retry_number(r.name) for r in runs), default=0)
    return LoopInfo(rev, tuple(sorted(r.name for r in runs)), retries, len(runs) >= threshold)


_ABORTED_REVISION = re.compile(r"aborted update to revision (\d+)", re.IGNORECASE)


def first_abort(view: RolloutView) -> tuple[datetime | None, str]:
    """When the canary of this revision was first aborted, and how we know.

    ``status.abortedAt`` is reset by every abort, so after a retry that aborted again it is the *last*
    abort. The first one is the earliest of: that, the first RolloutAborted event for the revision, and
    the end of the earliest failed analysis of the same revision (the run that triggered it).
    """
    rev = view.canary_revision
    candidates: list[tuple[datetime, str]] = []
    if (t := parse_time(view.aborted_at)) is not None:
        candidates.append((t, "status.abortedAt"))
    for e in view.events:
        m = _ABORTED_REVISION.search(e.message or "")
        if e.reason == "RolloutAborted" and (rev is None or m is None or int(m.group(1)) == rev):
            if (t := parse_time(e.first_timestamp or e.last_timestamp)) is not None:
                candidates.append((t, "the first RolloutAborted event"))
    for name in loop_info(view).failed_runs:
        run = next((r for r in view.analysis_runs if r.name == name), None)
        ends = [parse_time(x.finished_at) for m in (run.metric_results if run else ()) for x in m.measurements]
        known = [t for t in ends if t is not None]
        if known:
            candidates.append((max(known), f"the end of failed analysis {name}"))
    if not candidates:
        return None, "no abort time known"
    return min(candidates)


def escalation_deadline(aborted_at: datetime | None, incident_start: datetime | None) -> datetime | None:
    """15 minutes from the abort or the incident start, whichever is earlier."""
    starts = [t for t in (aborted_at, incident_start) if t is not None]
    return min(starts) + ESCALATE_AFTER if starts else None


def stable_health(view: RolloutView, baseline_restarts: dict[str, int] | None = None) -> dict[str, Any]:
    """Stable pods Ready and available, restarts (and new ones since a baseline snapshot)."""
    stable = view.stable_rs
    pods = stable.pods if stable else ()
    ready = sum(1 for p in pods if p.is_ready)
    new_restarts = {}
    if baseline_restarts is not None:
        for p in pods:
            before = baseline_restarts.get(p.name)
            if before is not None and p.restarts > before:
                new_restarts[p.name] = p.restarts - before
    return {
        "replicaset": stable.name if stable else None,
        "desired": stable.desired if stable else 0,
        "available": stable.available if stable else 0,
        "pods": len(pods), "ready": ready,
        "all_ready": bool(pods) and ready == len(pods) and (stable.available >= stable.desired if stable else False),
        "restarts": {p.name: p.restarts for p in pods},
        "new_restarts": new_restarts,
        "missing_pods": sorted(set(baseline_restarts or {}) - {p.name for p in pods}),
    }


def now_utc() -> datetime:
    """The current time (one place, so tests can reason about it)."""
    return datetime.now(UTC)

