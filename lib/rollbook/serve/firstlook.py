"""The first look: what the read-only steps found at the abort, posted to Slack and/or the generic webhook.

Real wire formats through rollbook.paging / rollbook.outbound (Slack Block Kit; the webhook's JSON with a
bearer token and an Idempotency-Key); a dry run unless `serve.notify: true`, and the exact requests
(secrets masked) are recorded either way in the record's `first-look.json`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rollbook import dashboards, paging
from rollbook.config import Config
from rollbook.errors import RollbookError
from rollbook.history import parse_time
from rollbook.mc_words import finding_quote
from rollbook.outbound import DEFAULT_RETRY, Delivery, RetryPolicy, post_json

FILENAME = "first-look.json"


def message(doc: Mapping[str, Any], record_link: str | None, trigger: str) -> paging.Escalation:
    """The first look of one record.json: each step's verdict, MC's reason, the record link."""
    f: Mapping[str, Any] = doc.get("findings") or {}
    steps: Sequence[Mapping[str, Any]] = doc.get("steps") or []
    verdicts = {f"{s.get('step')} {s.get('name')}": str(s.get("verdict")) for s in steps}
    revision = f.get("canary_revision")
    ns, ro = doc.get("namespace"), doc.get("rollout")
    mc_reason = f.get("mc_reason")
    inspect = next((s for s in steps if s.get("name") == "inspect-evidence"), None)
    reason = (f"MC says: {finding_quote(f)}" if mc_reason else str(inspect.get("reason")) if inspect
              else str(f.get("status_message") or "no step established why the canary aborted"))
    state = "PARTIAL record" if doc.get("partial") else "record complete"
    facts: dict[str, Any] = {"Trigger": f"{trigger} ({f.get('trigger') or 'not established'})",
                             "Failed metrics": ", ".join(f.get("failed_metrics") or []) or "none established",
                             "Release": f"{f.get('release_id') or '?'} (identity ok: {f.get('release_identity_ok')})",
                             **verdicts}
    return paging.Escalation(
        title=f"First look: {ns}/{ro} revision {revision if revision is not None else '?'} aborted ({state})",
        reason=reason, rollout=str(ro), namespace=str(ns), context=str(doc.get("context") or "default"),
        revision=revision, aborted_at=parse_time(f.get("aborted_at")), record_link=record_link, facts=facts, incident=str(doc.get("incident")))


def _webhook(cfg: Config, msg: paging.Escalation, *, dry_run: bool, retry: RetryPolicy) -> Delivery:
    """The generic webhook gets the first look as its own type (not an escalation)."""
    body = {"type": "rollbook.first-look", "version": 1, "dedup_key": paging.dedup_key_or_none(msg),
            "message": msg.as_json()}
    key = f"{body['dedup_key']}/first-look" if body["dedup_key"] else None
    return post_json(cfg.webhook, body, service="webhook", where="escalation.webhook", dry_run=dry_run,
                     transport=None, retry=retry, dedup=key)


def post(cfg: Config, run_dir: Path, out: Path, trigger: str, *, targets: Sequence[str], notify: bool,
         retry: RetryPolicy = DEFAULT_RETRY) -> dict[str, Any]:
    """Send (or dry-run) the first look of the record in `run_dir`; write first-look.json; a summary."""
    doc = json.loads((run_dir / "record.json").read_text(encoding="utf-8"))
    link = dashboards.public_url(cfg.link_base, out, run_dir) or str(run_dir)
    msg = message(doc, link, trigger)
    deliveries: list[dict[str, Any]] = []
    for name in targets:
        service = cfg.slack if name == "slack" else cfg.webhook
        if not service.enabled:
            continue
        try:
            d = (paging.send_slack(cfg.slack, msg, dry_run=not notify, retry=retry) if name == "slack"
                 else _webhook(cfg, msg, dry_run=not notify, retry=retry))
            deliveries.append(d.to_dict())
        except RollbookError as e:  # one target failing must not silence the other, nor fail the incident
            deliveries.append({"service": name, "sent": False, "error": str(e),
                               "request": getattr(e, "request", None)})
    summary = {"notify": notify, "message": msg.as_json(), "deliveries": deliveries,
               "sent": [d["service"] for d in deliveries if d.get("sent")],
               "note": None if deliveries else "no first-look target configured (escalation.slack / escalation.webhook)"}
    (run_dir / FILENAME).write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return {k: summary[k] for k in ("notify", "sent", "note")} | {
        "targets": [d["service"] for d in deliveries], "errors": [d["error"] for d in deliveries if d.get("error")]}
