"""Frozen dataclasses of the cluster read model; each keeps the raw object it was built from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # evidence.py is another module's; only its type is needed here
    from rollbook.evidence import Verdict

RolloutPhase = Literal["Healthy", "Degraded", "Progressing", "Paused"]
Strategy = Literal["Canary", "BlueGreen", "Unknown"]
ReplicaSetStatus = Literal["Healthy", "Progressing", "ScaledDown", "ReplicaFailure"]
AnalysisPhase = Literal["Pending", "Running", "Successful", "Failed", "Error", "Inconclusive", "Unknown"]
AnalysisKind = Literal["Step", "Background", "PrePromotion", "PostPromotion", "Unknown"]
AbortForm = Literal["v1.9+", "v1.2-v1.8", "v1.0-v1.1", "other"]
ContainerState = Literal["running", "waiting", "terminated", "unknown"]

RawObject = dict[str, Any]


@dataclass(frozen=True)
class ContainerInfo:
    """One container of a pod: image, readiness, restarts, state and probe definitions."""

    name: str
    image: str
    ready: bool
    restart_count: int
    state: ContainerState
    reason: str | None
    message: str | None
    readiness_probe: RawObject | None
    liveness_probe: RawObject | None
    startup_probe: RawObject | None
    raw: RawObject = field(repr=False, compare=False)


@dataclass(frozen=True)
class PodInfo:
    """A live pod as the plugin shows it (status column, ready x/y, restarts)."""

    name: str
    namespace: str
    uid: str
    phase: str
    status: str
    ready_containers: int
    total_containers: int
    is_ready: bool
    restarts: int
    images: tuple[str, ...]
    labels: dict[str, str]
    pod_template_hash: str | None
    owner_uid: str | None
    creation_timestamp: str | None
    containers: tuple[ContainerInfo, ...]
    raw: RawObject = field(repr=False, compare=False)

    @property
    def ready(self) -> str:
        """Ready containers as the plugin prints them, e.g. ``1/1``."""
        return f"{self.ready_containers}/{self.total_containers}"

    @property
    def release_id(self) -> str | None:
        """The pod's ``release-id`` label, if any."""
        return self.labels.get("release-id")


@dataclass(frozen=True)
class ReplicaSetInfo:
    """A ReplicaSet of the rollout with its revision, tags, template and live pods."""

    name: str
    namespace: str
    uid: str
    revision: int
    pod_template_hash: str | None
    status: ReplicaSetStatus
    desired: int
    replicas: int
    available: int
    images: tuple[str, ...]
    template_labels: dict[str, str]
    template: RawObject
    stable: bool
    canary: bool
    active: bool
    preview: bool
    ping: bool
    pong: bool
    creation_timestamp: str | None
    pods: tuple[PodInfo, ...]
    raw: RawObject = field(repr=False, compare=False)

    @property
    def tags(self) -> tuple[str, ...]:
        """Tags in the plugin's order: canary, stable, active, preview, ping, pong."""
        flags = (
            ("canary", self.canary),
            ("stable", self.stable),
            ("active", self.active),
            ("preview", self.preview),
            ("ping", self.ping),
            ("pong", self.pong),
        )
        return tuple(name for name, on in flags if on)

    @property
    def release_id(self) -> str | None:
        """The pod template's ``release-id`` label (survives the canary pods)."""
        return self.template_labels.get("release-id")


@dataclass(frozen=True)
class ImageInfo:
    """An image running in a ReplicaSet with replicas, with its merged tags (sorted)."""

    image: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Measurement:
    """One measurement of a metric; ``number`` and ``verdict`` are parsed from ``value``."""

    phase: str
    value: str | None
    message: str | None
    started_at: str | None
    finished_at: str | None
    metadata: dict[str, str]
    number: float | None
    verdict: Verdict | None
    verdict_error: str | None
    raw: RawObject = field(repr=False, compare=False)


@dataclass(frozen=True)
class MetricResult:
    """One ``status.metricResults[]`` entry with its measurements, oldest first."""

    name: str
    phase: str
    provider: str | None
    count: int
    successful: int
    failed: int
    inconclusive: int
    error: int
    consecutive_error: int
    message: str | None
    measurements: tuple[Measurement, ...]
    raw: RawObject = field(repr=False, compare=False)
    dry_run: bool = False  # listed in the run's spec.dryRun: measured, but it cannot fail the run

    @property
    def last(self) -> Measurement | None:
        """The newest measurement, or None when none was kept."""
        return self.measurements[-1] if self.measurements else None


@dataclass(frozen=True)
class AnalysisRunInfo:
    """An AnalysisRun of the rollout, with totals summed over its metric results."""

    name: str
    namespace: str
    uid: str
    phase: AnalysisPhase
    message: str | None
    revision: int
    kind: AnalysisKind
    step_index: int | None
    pod_template_hash: str | None
    labels: dict[str, str]
    owner_uids: tuple[str, ...]
    creation_timestamp: str | None
    successful: int
    failed: int
    inconclusive: int
    error: int
    metric_results: tuple[MetricResult, ...]
    raw: RawObject = field(repr=False, compare=False)

    @property
    def summary(self) -> str:
        """The plugin's summary, e.g. ``✔ 4,✖ 4,? 1,⚠ 1``; zeros are left out."""
        parts = (("✔", self.successful), ("✖", self.failed), ("?", self.inconclusive), ("⚠", self.error))
        return ",".join(f"{icon} {n}" for icon, n in parts if n)

    def metric(self, name: str) -> MetricResult | None:
        """The metric result of that name, if the run has one."""
        return next((m for m in self.metric_results if m.name == name), None)

    @property
    def failed_metrics(self) -> tuple[str, ...]:
        """Names of metrics whose phase is Failed or Error (dry-run metrics do not count, as in Argo)."""
        return tuple(m.name for m in self.metric_results if m.phase in ("Failed", "Error") and not m.dry_run)


@dataclass(frozen=True)
class EventInfo:
    """A Kubernetes event about the rollout."""

    type: str
    reason: str
    message: str
    count: int
    first_timestamp: str | None
    last_timestamp: str | None
    source: str | None
    raw: RawObject = field(repr=False, compare=False)


@dataclass(frozen=True)
class AbortInfo:
    """What an abort message says: revision, analysis kind, metric, assessed phase, reason, form."""

    text: str
    form: AbortForm
    revision: int | None
    analysis_kind: AnalysisKind | None
    metric: str | None
    assessed_phase: str | None
    reason: str | None
    error_message: str | None


@dataclass(frozen=True)
class RolloutSummary:
    """One line of ``list_rollouts``: name, phase and message as Argo derives them."""

    name: str
    namespace: str
    phase: RolloutPhase
    message: str
    revision: int | None
    raw: RawObject = field(repr=False, compare=False)


@dataclass(frozen=True)
class RolloutView:
    """Everything the runbooks read about one Rollout, derived as Argo and its plugin do."""

    name: str
    namespace: str
    uid: str
    generation: int | None
    observed_generation: str | None
    phase: RolloutPhase
    message: str
    strategy: Strategy
    step: str
    current_step_index: int | None
    total_steps: int
    set_weight: int | None
    actual_weight: int | None
    desired: int
    current: int
    updated: int
    ready: int
    available: int
    aborted: bool
    aborted_at: str | None
    stable_hash: str | None
    canary_hash: str | None
    revision: int | None
    template_labels: dict[str, str]
    images: tuple[ImageInfo, ...]
    replicasets: tuple[ReplicaSetInfo, ...]
    analysis_runs: tuple[AnalysisRunInfo, ...]
    events: tuple[EventInfo, ...]
    abort: AbortInfo | None
    raw: RawObject = field(repr=False, compare=False)

    @property
    def stable_rs(self) -> ReplicaSetInfo | None:
        """The ReplicaSet whose pod-template hash is ``status.stableRS``."""
        return next((rs for rs in self.replicasets if rs.stable), None)

    @property
    def canary_rs(self) -> ReplicaSetInfo | None:
        """The ReplicaSet of ``status.currentPodHash`` (the release being rolled out)."""
        if self.canary_hash is None:
            return None
        return next((rs for rs in self.replicasets if rs.pod_template_hash == self.canary_hash), None)

    @property
    def canary_revision(self) -> int | None:
        """Revision of the release being rolled out (canary RS, else the Rollout's annotation)."""
        rs = self.canary_rs
        return rs.revision if rs is not None else self.revision

    @property
    def previous_rs(self) -> ReplicaSetInfo | None:
        """The previous release: the last one that went live before the canary.

        That is the stable ReplicaSet when its revision is below the canary's: Argo's stable only moves
        forward, and an undo renumbers the restored ReplicaSet to max+1, so a ReplicaSet between the two
        (an earlier canary that was aborted and superseded) never went live. Otherwise the highest
        revision below the canary's.
        """
        below = self.canary_revision
        if below is None:
            return None
        stable = self.stable_rs
        if stable is not None and 0 < stable.revision < below:
            return stable
        older = [rs for rs in self.replicasets if 0 < rs.revision < below]
        return max(older, key=lambda rs: rs.revision, default=None)

    @property
    def superseded_rs(self) -> tuple[ReplicaSetInfo, ...]:
        """ReplicaSets between the stable and the canary revision: releases that never went live."""
        stable, below = self.stable_rs, self.canary_revision
        if stable is None or below is None:
            return ()
        return tuple(sorted((rs for rs in self.replicasets if stable.revision < rs.revision < below),
                            key=lambda rs: rs.revision))

    @property
    def stable_is_previous(self) -> bool | None:
        """Whether the stable ReplicaSet is the previous release; None when unknown or nothing is in flight."""
        stable, previous = self.stable_rs, self.previous_rs
        if stable is None or previous is None or self.stable_hash == self.canary_hash:
            return None
        return stable.uid == previous.uid

    @property
    def release_id(self) -> str | None:
        """The canary's ``release-id``: its ReplicaSet template, else the Rollout's template."""
        rs = self.canary_rs
        if rs is not None and rs.release_id:
            return rs.release_id
        return self.template_labels.get("release-id")

    @property
    def revisions(self) -> tuple[int, ...]:
        """All revisions seen on ReplicaSets and AnalysisRuns, highest first."""
        seen = {rs.revision for rs in self.replicasets} | {ar.revision for ar in self.analysis_runs}
        return tuple(sorted(seen, reverse=True))

    def replicasets_of(self, revision: int) -> tuple[ReplicaSetInfo, ...]:
        """ReplicaSets of one revision."""
        return tuple(rs for rs in self.replicasets if rs.revision == revision)

    def analysis_runs_of(self, revision: int) -> tuple[AnalysisRunInfo, ...]:
        """AnalysisRuns of one revision."""
        return tuple(ar for ar in self.analysis_runs if ar.revision == revision)

    @property
    def canary_runs(self) -> tuple[AnalysisRunInfo, ...]:
        """AnalysisRuns of the canary's pod-template hash, newest first."""
        runs = [ar for ar in self.analysis_runs if ar.pod_template_hash == self.canary_hash]
        return tuple(sorted(runs, key=lambda ar: (ar.creation_timestamp or "", ar.name), reverse=True))
