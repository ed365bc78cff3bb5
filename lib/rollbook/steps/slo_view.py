"""SLO evidence for steps 2 and 4: the `ig-slo-checks` queries re-run for canary and stable, with plots."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from rollbook import diagnosis as dx
from rollbook import slo
from rollbook.cluster import AnalysisRunInfo, RolloutView
from rollbook.prometheus import PrometheusClient, PrometheusError, Series
from rollbook.steps.core import Incident

WINDOW_BEFORE = timedelta(minutes=15)
WINDOW_AFTER = timedelta(minutes=5)
STEP_SECONDS = 60


@dataclass
class SloEvidence:
    """Per SLO metric: the finding (threshold, canary vs stable) and the series behind the plot."""

    findings: list[slo.SloFinding] = field(default_factory=list)
    series: dict[str, tuple[list[Series], list[Series]]] = field(default_factory=dict)
    source: str = "none"  # prometheus | measurements | none
    note: str | None = None
    window: tuple[str | None, str | None] = (None, None)

    @property
    def canary_only(self) -> bool | None:
        """True when every breached metric breached on the canary alone; None when nothing says."""
        breached = [f for f in self.findings if f.breached]
        if not breached or any(f.canary_only is None for f in breached):
            return None
        return all(f.canary_only for f in breached)

    def rows(self) -> list[dict[str, Any]]:
        """One row per metric: threshold, canary and stable values, breach, canary alone?"""
        return [{"metric": f.name, "threshold": f.threshold.describe() if f.threshold else f.threshold_reason,
                 "canary values": ", ".join(f"{v:g}" for v in f.canary_values[-10:]) or None,
                 "stable values": ", ".join(f"{v:g}" for v in f.stable_values[-10:]) or None,
                 "canary breached": f.breached, "stable breached": f.stable_breached,
                 "canary only": f.canary_only, "query": f.query} for f in self.findings]

    def findings_json(self) -> dict[str, Any]:
        """What goes into the record."""
        return {f.name: {"threshold": f.threshold.describe() if f.threshold else None, "breached": f.breached,
                         "stable_breached": f.stable_breached, "canary_only": f.canary_only,
                         "canary_values": f.canary_values[-10:], "stable_values": f.stable_values[-10:],
                         "query": f.query, "reason": f.reason} for f in self.findings}

    def figures(self) -> list[Any]:
        """A plot per metric: canary vs stable against the threshold."""
        return [slo.plot_metric(f, *self.series.get(f.name, ([], []))) for f in self.findings]

    def show(self) -> None:
        """Display each plot (in the notebook and, through nbconvert, in report.html)."""
        from IPython.display import Markdown, display

        if self.note:
            display(Markdown(f"*{self.note}*"))
        for fig in self.figures():
            display(fig)

    def save_pngs(self, folder: Path) -> list[tuple[str, Path]]:
        """Write each plot as a PNG (the escalation's pictures when no Grafana is configured)."""
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        for f, fig in zip(self.findings, self.figures(), strict=True):
            path = folder / f"slo-{f.name}.png"
            path.write_bytes(slo.figure_png(fig))
            out.append((f.name, path))
        return out


def window(run: AnalysisRunInfo) -> tuple[datetime, datetime]:
    """The incident window around the run: its first measurement − 15 min to its last + 5 min."""
    times = [dx.parse_time(x.started_at) or dx.parse_time(x.finished_at)
             for m in run.metric_results for x in m.measurements]
    known = [t for t in times if t is not None] or [dx.parse_time(run.creation_timestamp) or dx.now_utc()]
    return min(known) - WINDOW_BEFORE, min(max(known) + WINDOW_AFTER, dx.now_utc())


def gather(incident: Incident, view: RolloutView, run: AnalysisRunInfo | None) -> SloEvidence:
    """Re-run the resolved queries over the window (canary and stable hash); fall back to measurements."""
    if run is None or not slo.prometheus_metric_names(run.raw):
        return SloEvidence(note="No Prometheus metric in the analysis run.")
    start, end = window(run)
    ev = SloEvidence(window=(dx.iso(start), dx.iso(end)))
    cfg = incident.config.prometheus
    if not cfg.url:
        ev.findings = slo.findings_for_run(run.raw, rollout=view.raw)
        ev.source, ev.note = "measurements", ("No Prometheus configured (prometheus.url / ROLLBOOK_PROMETHEUS_URL): "
                                              "values are the AnalysisRun's own measurements, no stable comparison.")
        return ev
    fetched: dict[str, list[Series]] = {}

    def fetch(query: str) -> list[Series]:
        fetched[query] = client.query_range(query, start, end, STEP_SECONDS)
        return fetched[query]

    with PrometheusClient.from_config(cfg) as client:
        try:
            ev.findings = slo.findings_for_run(run.raw, rollout=view.raw, fetch=fetch)
            ev.source = "prometheus"
        except PrometheusError as e:
            ev.findings = slo.findings_for_run(run.raw, rollout=view.raw)
            ev.source, ev.note = "measurements", f"Prometheus could not be asked ({e}); measurements only."
    ev.series = {f.name: (fetched.get(f.query or "", []), fetched.get(f.stable_query or "", [])) for f in ev.findings}
    return ev
