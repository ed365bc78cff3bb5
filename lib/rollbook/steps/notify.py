"""Step 5's outbound part: dashboard pictures and the escalation sent (or dry-run) to the configured targets."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from rollbook import dashboards, paging
from rollbook import diagnosis as dx
from rollbook.cluster import RolloutView
from rollbook.errors import RollbookError
from rollbook.steps.core import Incident, Outcome
from rollbook.steps.slo_view import gather


@dataclass
class Notice:
    """What step 5 sent or would send, with the pictures attached."""

    pictures: list[tuple[str, Path]] = field(default_factory=list)
    picture_source: str = "none"  # grafana | slo-plots | none
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    sent: bool = False
    note: str | None = None

    def rows(self) -> list[dict[str, Any]]:
        """One row per target: sent or dry run, the dedup key, the service's answer."""
        return [{"target": d.get("service"), "sent": d.get("sent"), "status": d.get("status"),
                 "dedup_key": d.get("dedup_key"), "url": (d.get("request") or {}).get("url"),
                 "error": d.get("error")} for d in self.deliveries]

    def show(self) -> None:
        """The pictures, inline (and so in report.html)."""
        from IPython.display import Image, Markdown, display

        if self.note:
            display(Markdown(f"*{self.note}*"))
        for title, path in self.pictures:
            display(Markdown(f"**{title}**"))
            display(Image(filename=str(path)))


def picture_dir(incident: Incident) -> Path:
    """pictures/ in the run's record (so they are bundled), else a temporary folder."""
    base = incident.run_dir if incident.run_dir else Path(tempfile.mkdtemp(prefix="rollbook-pictures-"))
    return base / "pictures"


def pictures(incident: Incident, view: RolloutView) -> tuple[list[tuple[str, Path]], str, str | None]:
    """Grafana panels when configured ("relevant dashboard screenshots"), else the SLO plots."""
    folder = picture_dir(incident)
    run = dx.failed_run(view) or dx.latest_run(view)
    aborted = dx.parse_time(view.aborted_at) or dx.now_utc()
    if incident.config.grafana.url and incident.config.grafana_panels:
        try:
            got = dashboards.render_panels(incident.config, start=aborted - timedelta(minutes=30),
                                           end=min(aborted + timedelta(minutes=15), dx.now_utc()),
                                           variables={"namespace": view.namespace, "rollout": view.name,
                                                      "canary_hash": view.canary_hash or "",
                                                      "stable_hash": view.stable_hash or ""},
                                           out_dir=folder)
            return [(p.title, p.path) for p in got], "grafana", None
        except RollbookError as e:
            note = f"Grafana panels could not be rendered ({e}); the SLO plots are attached instead."
        else:
            note = None
    else:
        note = "No Grafana panels configured: the SLO plots stand in for the dashboard screenshots."
    saved = gather(incident, view, run).save_pngs(folder)
    return saved, ("slo-plots" if saved else "none"), note


def message(incident: Incident, view: RolloutView, outcome: Outcome, mc_reason: str | None,
            pics: list[tuple[str, Path]]) -> paging.Escalation:
    """The escalation as the paging module renders it for PagerDuty, Slack and webhooks."""
    link_base = incident.config.link_base
    record_link = None
    if incident.run_dir is not None:
        record_link = dashboards.public_url(link_base, incident.run_dir.parent.parent, incident.run_dir) or str(
            incident.run_dir)
    images = tuple(paging.Image(title=t, path=str(p), url=dashboards.public_url(
        link_base, incident.run_dir.parent.parent, p) if incident.run_dir else None) for t, p in pics)
    aborted: datetime | None = dx.parse_time(view.aborted_at)
    return paging.Escalation(
        title=f"Rollout {view.namespace}/{view.name} revision {view.canary_revision}: escalation due",
        reason=mc_reason or outcome.reason, rollout=view.name, namespace=view.namespace,
        context=incident.cluster.context or "", revision=view.canary_revision, aborted_at=aborted,
        minutes_since_abort=outcome.facts.get("minutes_since_abort"), record_link=record_link, images=images,
        facts={"why": outcome.facts.get("reasons"), "deadline": outcome.facts.get("deadline"),
               "status": view.message}, incident=incident.incident)


def send(incident: Incident, view: RolloutView, outcome: Outcome, mc_reason: str | None, *,
         notify: bool) -> Notice:
    """When escalation is due: pictures, then every configured target (a dry run unless `notify`)."""
    if outcome.verdict != "escalate":
        return Notice(note="No escalation due: nothing sent.")
    pics, source, note = pictures(incident, view)
    msg = message(incident, view, outcome, mc_reason, pics)
    try:
        deliveries = paging.escalate(incident.config, msg, dry_run=not notify)
    except paging.EscalationFailed as e:
        deliveries, note = e.deliveries, f"{note + ' ' if note else ''}Some targets failed: {e}"
    if not deliveries:
        note = f"{note + ' ' if note else ''}No escalation target configured (rollbook.yaml `escalation`): " \
               "page the deployment lead and SRE by hand with the message below."
    return Notice(pics, source, [d.to_dict() for d in deliveries], notify and any(d.sent for d in deliveries), note)
