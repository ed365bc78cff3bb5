"""AnalysisRuns of a rollout, metric results, measurement values and the abort message (pure functions)."""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

from rollbook.cluster.models import (
    AbortForm,
    AbortInfo,
    AnalysisKind,
    AnalysisPhase,
    AnalysisRunInfo,
    Measurement,
    MetricResult,
)
from rollbook.errors import RollbookError, malformed

if TYPE_CHECKING:
    from rollbook.evidence import Verdict

HASH_LABEL = "rollouts-pod-template-hash"
VERDICT_METRICS = ("mc-evidence-ok",)
_RUN_PHASES = ("Pending", "Running", "Successful", "Failed", "Error", "Inconclusive")
_KINDS: dict[str, AnalysisKind] = {
    "step-based": "Step",
    "background": "Background",
    "blue/green pre-promotion": "PrePromotion",
    "blue/green post-promotion": "PostPromotion",
}

# v1.2+: "Rollout aborted update to revision 7[: <rest>]"
_REVISION = re.compile(r"^Rollout aborted update to revision (?P<rev>\d+)(?::\s*(?P<rest>.*))?$", re.DOTALL)
# v1.9+: "<Kind> analysis phase error/failed[: <rest>]"
_KIND = re.compile(
    r"^(?P<kind>Step-based|Background|Blue/green pre-promotion|Blue/green post-promotion)"
    r" analysis phase error/failed(?::\s*(?P<rest>.*))?$",
    re.DOTALL | re.IGNORECASE,
)
# every version: '[Mm]etric "<name>" assessed <Phase> due to <why>[: "Error Message: <msg>"]'
_METRIC = re.compile(
    r'^(?P<m>[Mm])etric "(?P<metric>[^"]*)" assessed (?P<phase>\w+) due to (?P<why>.*?)'
    r'(?::\s*"Error Message: (?P<err>.*)")?$',
    re.DOTALL,
)


# --------------------------------------------------------------------------- abort message


def parse_abort_message(message: str | None) -> AbortInfo | None:
    """Parse a Degraded rollout's message in any of Argo's three abort forms; None if it is not one."""
    if not message:
        return None
    text = message.strip()
    body = text.removeprefix("RolloutAborted:").strip()
    if body == text and not _METRIC.match(text) and not _REVISION.match(text):
        return None  # not an abort message (e.g. ProgressDeadlineExceeded, InvalidSpec)
    revision, kind = None, None
    rev = _REVISION.match(body)
    if rev:
        revision, body = int(rev["rev"]), (rev["rest"] or "")
    kind_match = _KIND.match(body)
    if kind_match:
        kind, body = _KINDS[kind_match["kind"].lower()], (kind_match["rest"] or "")
    metric = _METRIC.match(body)
    return AbortInfo(
        text=text,
        form=_form(revision is not None, kind is not None, metric),
        revision=revision,
        analysis_kind=kind,
        metric=metric["metric"] if metric else None,
        assessed_phase=metric["phase"] if metric else None,
        reason=metric["why"] if metric else (body or None),
        error_message=metric["err"] if metric else None,
    )


def _form(has_revision: bool, has_kind: bool, metric: re.Match[str] | None) -> AbortForm:
    """Which Argo release family wrote the message."""
    if has_kind:
        return "v1.9+"
    if has_revision:
        return "v1.2-v1.8"
    if metric is not None and metric["m"] == "m":
        return "v1.0-v1.1"
    return "other"


# --------------------------------------------------------------------------- measurement values


def parse_number(value: str | None) -> float | None:
    """A Prometheus-style value: ``"[0.42]"`` (one-element vector) or ``"0.42"``; None otherwise."""
    if value is None:
        return None
    text = value.strip()
    try:
        parsed = json.loads(text) if text.startswith("[") else float(text)
    except ValueError:
        return None
    if isinstance(parsed, list):
        if len(parsed) != 1 or isinstance(parsed[0], bool) or not isinstance(parsed[0], int | float | str):
            return None
        return parse_number(str(parsed[0]))
    return float(parsed)


def parse_verdict_value(value: str | None) -> tuple[Verdict | None, str | None]:
    """The MC verdict in a web measurement value, via rollbook.evidence; (verdict, why-not)."""
    if value is None:
        return None, "the measurement has no value"
    try:
        from rollbook.evidence import parse_verdict  # imported lazily: another module, written in parallel
    except ImportError as e:
        return None, f"rollbook.evidence.parse_verdict is not available ({e})"
    try:
        verdict = parse_verdict(value)
    except (RollbookError, ValueError, TypeError) as e:  # a malformed value must not break the read model
        return None, f"the value is not an MC verdict: {e}"
    if verdict is None:
        return None, "the value is a bare true/false: the template's jsonPath dropped MC's reason"
    return verdict, None


MAX_VALUE_CHARS = 64 * 1024  # a measurement value kept beyond this would make a multi-MB notebook cell


def truncated(value: str | None) -> str | None:
    """A measurement value cut to MAX_VALUE_CHARS, with a note saying how long it was."""
    if value is None or len(value) <= MAX_VALUE_CHARS:
        return value
    return (f"{value[:MAX_VALUE_CHARS]} … [truncated by rollbook: {len(value):,} characters, the first "
            f"{MAX_VALUE_CHARS:,} kept; the whole value is in snapshot/]")


def _capped(verdict: Any) -> Any:
    """MC's verdict with a reason of at most MAX_VALUE_CHARS (it reaches summary.md and the ticket)."""
    import dataclasses

    if isinstance(verdict, dict) and len(str(verdict.get("reason") or "")) > MAX_VALUE_CHARS:
        return {**verdict, "reason": truncated(str(verdict["reason"]))}
    if dataclasses.is_dataclass(verdict) and len(str(getattr(verdict, "reason", ""))) > MAX_VALUE_CHARS:
        return dataclasses.replace(verdict, reason=truncated(str(getattr(verdict, "reason", ""))) or "")  # type: ignore[type-var]
    return verdict


def build_measurement(raw: Mapping[str, Any], *, with_verdict: bool) -> Measurement:
    """A Measurement; ``with_verdict`` parses the value as an MC verdict (from the whole value, which is
    then kept only up to MAX_VALUE_CHARS)."""
    value = raw.get("value")
    value = None if value is None else str(value)
    verdict, why = parse_verdict_value(value) if with_verdict else (None, None)
    verdict = _capped(verdict)
    why = why if why is None or len(why) <= 500 else why[:500] + " … [truncated by rollbook]"
    number = parse_number(value)
    if value is not None and len(value) > MAX_VALUE_CHARS:
        value = truncated(value)
        raw = {**raw, "value": value}
    return Measurement(
        phase=str(raw.get("phase", "")),
        value=value,
        message=raw.get("message") or None,
        started_at=raw.get("startedAt"),
        finished_at=raw.get("finishedAt"),
        metadata={str(k): str(v) for k, v in (raw.get("metadata") or {}).items()},
        number=number,
        verdict=verdict,
        verdict_error=why,
        raw=dict(raw),
    )


# --------------------------------------------------------------------------- runs


def _i(value: Any) -> int:
    """Missing integer fields mean 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _providers(run: Mapping[str, Any]) -> dict[str, str]:
    """Metric name -> provider name (web, prometheus, job, ...) from the run's spec."""
    result: dict[str, str] = {}
    for metric in (run.get("spec") or {}).get("metrics") or []:
        provider = metric.get("provider") or {}
        if provider:
            result[str(metric.get("name"))] = str(next(iter(provider)))
    return result


def _dry_run_names(run: Mapping[str, Any]) -> list[str]:
    """``spec.dryRun[].metricName`` patterns ("*" means every metric), as Argo's dry-run mode reads them."""
    return [str(d.get("metricName", "")) for d in (run.get("spec") or {}).get("dryRun") or [] if isinstance(d, dict)]


def _is_dry_run(name: str, patterns: list[str], raw: Mapping[str, Any]) -> bool:
    """A metric result in dry-run mode: flagged by the controller, or named by the run's spec.dryRun."""
    return bool(raw.get("dryRun")) or any(p == "*" or fnmatch.fnmatchcase(name, p) for p in patterns if p)


def build_metric_result(raw: Mapping[str, Any], provider: str | None, dry_run: bool = False) -> MetricResult:
    """A MetricResult; the MC verdict is parsed for the evidence gate's web metric."""
    name = str(raw.get("name", ""))
    with_verdict = name in VERDICT_METRICS and provider in (None, "web")
    return MetricResult(
        name=name,
        phase=str(raw.get("phase", "")),
        provider=provider,
        count=_i(raw.get("count")),
        successful=_i(raw.get("successful")),
        failed=_i(raw.get("failed")),
        inconclusive=_i(raw.get("inconclusive")),
        error=_i(raw.get("error")),
        consecutive_error=_i(raw.get("consecutiveError")),
        message=raw.get("message") or None,
        measurements=tuple(build_measurement(m, with_verdict=with_verdict) for m in raw.get("measurements") or []),
        raw={**raw, "measurements": [m if not isinstance(m, dict) or len(str(m.get("value") or "")) <= MAX_VALUE_CHARS
                                     else {**m, "value": truncated(str(m["value"]))}
                                     for m in raw.get("measurements") or []]},
        dry_run=dry_run,
    )


def build_analysis_run(run: Mapping[str, Any]) -> AnalysisRunInfo:
    """An AnalysisRunInfo with totals summed over all metric results (as the plugin does); a field of an
    unexpected type is a MalformedObject naming the run."""
    try:
        return _build_analysis_run(run)
    except (TypeError, AttributeError, ValueError, KeyError, IndexError) as e:
        raise malformed("AnalysisRun", run, e) from e


def _build_analysis_run(run: Mapping[str, Any]) -> AnalysisRunInfo:
    meta, status = run.get("metadata") or {}, run.get("status") or {}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    providers = _providers(run)
    dry = _dry_run_names(run)
    results = tuple(build_metric_result(mr, providers.get(str(mr.get("name"))),
                                        _is_dry_run(str(mr.get("name", "")), dry, mr))
                    for mr in status.get("metricResults") or [])
    phase = status.get("phase") or "Pending"
    kind = labels.get("rollout-type", "Unknown")
    step = labels.get("step-index", "")
    return AnalysisRunInfo(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        uid=str(meta.get("uid", "")),
        phase=cast(AnalysisPhase, phase if phase in _RUN_PHASES else "Unknown"),
        message=status.get("message") or None,
        revision=_revision(meta),
        kind=cast(AnalysisKind, kind if kind in ("Step", "Background", "PrePromotion", "PostPromotion") else "Unknown"),
        step_index=int(step) if step.isdigit() else None,
        pod_template_hash=labels.get(HASH_LABEL),
        labels=labels,
        owner_uids=tuple(str(r.get("uid")) for r in meta.get("ownerReferences") or [] if r.get("uid")),
        creation_timestamp=meta.get("creationTimestamp"),
        successful=sum(m.successful for m in results),
        failed=sum(m.failed for m in results),
        inconclusive=sum(m.inconclusive for m in results),
        error=sum(m.error for m in results),
        metric_results=results,
        raw=dict(run),
    )


def _revision(meta: Mapping[str, Any]) -> int:
    """The revision annotation, 0 when absent."""
    value = str((meta.get("annotations") or {}).get("rollout.argoproj.io/revision", ""))
    return int(value) if value.isdigit() else 0


def belongs_to(rollout: Mapping[str, Any], run: Mapping[str, Any]) -> bool:
    """Owned by the rollout's UID, or (no owner recorded) labelled with its current pod hash."""
    meta = run.get("metadata") or {}
    uids = [r.get("uid") for r in meta.get("ownerReferences") or []]
    ro_meta, ro_status = rollout.get("metadata") or {}, rollout.get("status") or {}
    if uids:
        return ro_meta.get("uid") in uids
    current = ro_status.get("currentPodHash")
    return bool(current) and (meta.get("labels") or {}).get(HASH_LABEL) == current


def build_analysis_runs(rollout: Mapping[str, Any], runs: Iterable[Mapping[str, Any]]) -> tuple[AnalysisRunInfo, ...]:
    """The rollout's runs, sorted as the plugin does: revision desc, then creation asc, then name desc."""
    infos = [build_analysis_run(r) for r in runs if belongs_to(rollout, r)]
    infos.sort(key=lambda a: a.name, reverse=True)
    infos.sort(key=lambda a: (-a.revision, a.creation_timestamp or ""))
    return tuple(infos)


def analysisrun_command(namespace: str, pod_hash: str | None, extra_selector: str | None = None) -> str:
    """The kubectl command that really lists a rollout's runs (``-l rollout=NAME`` only works if configured)."""
    selector = ",".join(s for s in (f"{HASH_LABEL}={pod_hash}" if pod_hash else "", extra_selector or "") if s)
    return f"kubectl get analysisrun -n {namespace}" + (f" -l {selector}" if selector else "")
