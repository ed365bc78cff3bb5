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
from rollbook.steps.core import Incident, MissingInputError, Outcome, status_line
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


def check_pictures(incident: Incident, pics: list[tuple[str, Path]]) -> None:
    """Every picture the page points at is a file in this run's record: a page must not name a lost file."""
    folder = picture_dir(incident) if incident.run_dir else None
    for title, path in pics:
        inside = folder is None or Path(path).resolve().parent == folder.resolve()
        if not (Path(path).is_file() and inside):
            raise MissingInputError(
                f"The dashboard picture {title!r} ({path}) is not in the record's pictures/ folder"
                f"{f' {folder}' if folder else ''} (rollout {view_name(incident)}).",
                hint="The page would point at a file nobody can open; check the record folder is writable.")


def view_name(incident: Incident) -> str:
    """`namespace/rollout` for messages."""
    return f"{incident.namespace}/{incident.rollout}"


def message(incident: Incident, view: RolloutView, outcome: Outcome, mc_reason: str | None,
            pics: list[tuple[str, Path]]) -> paging.Escalation:
    """The escalation as the paging module renders it for PagerDuty, Slack and webhooks."""
    link_base = incident.config.link_base
    record_link = None
    if incident.run_dir is not None:
        record_link = dashboards.public_url(link_base, incident.run_dir.parent.parent, incident.run_dir) or str(
            incident.run_dir)
    check_pictures(incident, pics)
    images = tuple(paging.Image(title=t, path=str(p), url=dashboards.public_url(
        link_base, incident.run_dir.parent.parent, p) if incident.run_dir else None) for t, p in pics)
    f = outcome.facts
    # the first abort: status.abortedAt is reset by every retry that aborts again, the deadline is not
    aborted: datetime | None = dx.parse_time(f.get("first_abort_at")) or dx.parse_time(view.aborted_at)
    revision = f"revision {view.canary_revision}" if view.canary_revision is not None else "canary"
    return paging.Escalation(
        title=f"Rollout {view.namespace}/{view.name} {revision}: escalation due",
        reason=mc_reason or outcome.reason, rollout=view.name, namespace=view.namespace,
        context=incident.cluster.context or "", revision=view.canary_revision, aborted_at=aborted,
        minutes_since_abort=f.get("minutes_since_abort"), record_link=record_link, images=images,
        facts=page_facts(view, outcome), incident=incident.incident)


def page_facts(view: RolloutView, outcome: Outcome) -> dict[str, str]:
    """The page's extra fields as sentences people read (Slack shows each as a field)."""
    f = outcome.facts
    deadline = (f"{f['deadline']} ({f.get('deadline_words')}, 15 min after {f.get('deadline_from')})"
                if f.get("deadline") else "unknown: escalate now")
    return {"Why escalate": "; ".join(f.get("reasons") or []) or "see the reason",
            "Deadline": deadline, "Status now": status_line(view)}


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
