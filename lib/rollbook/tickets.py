"""Updating the incident ticket: a Jira comment with the summary plus the record bundle as an attachment
(Jira REST v2, basic auth with user + API token), or a generic webhook.

Dry run (the default) builds and masks the exact requests and sends nothing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from rollbook.config import Config, Service
from rollbook.errors import ConfigError
from rollbook.paging import (
    DEFAULT_RETRY,
    Delivery,
    Outbound,
    RetryPolicy,
    ServiceProtocolError,
    ServiceRejected,
    basic_auth,
    deliver,
    fetch,
    post_json,
    require_secret,
)

# Jira issue keys: a project key (letters, digits, underscore; starts with a letter) and a number.
_ISSUE_KEY = re.compile(r"[A-Z][A-Z0-9_]*-[1-9][0-9]*")
# Uploads read the whole file into memory; Jira's own default attachment limit is 10 MB.
MAX_ATTACHMENT_BYTES = 50 * 1024 * 1024


def jira_comment(summary_markdown: str, bundle_name: str | None = None) -> dict[str, str]:
    """The v2 comment body: the summary verbatim in a {noformat} block, plus a link to the attachment."""
    # v2 comments are wiki markup, not Markdown. Rather than a lossy hand-written converter, the
    # summary goes in verbatim: Markdown reads well as plain text, and nothing in it is reinterpreted.
    text = summary_markdown.replace("{noformat}", "{ noformat}")
    lines = ["rollbook incident record summary"
             + (f" (full record attached: [^{bundle_name}])" if bundle_name else "") + ":",
             "{noformat}", text.rstrip("\n"), "{noformat}"]
    return {"body": "\n".join(lines)}


def update_ticket(
    config: Config,
    ticket_key: str,
    summary_markdown: str,
    bundle_path: str | Path | None,
    *,
    dry_run: bool = True,
    transport: httpx.BaseTransport | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> list[Delivery]:
    """Attach the bundle to the ticket and comment with the summary; every configured way (none: [])."""
    bundle = Path(bundle_path) if bundle_path else None
    if bundle is not None and not bundle.is_file():
        raise ConfigError(f"Bundle {bundle} does not exist.", hint="Write the record (record.py) first.")
    deliveries: list[Delivery] = []
    if config.jira.enabled:
        deliveries += _jira(config.jira, ticket_key, summary_markdown, bundle, dry_run, transport, retry)
    if config.ticket_webhook.enabled:
        deliveries.append(post_json(config.ticket_webhook, ticket_webhook_body(ticket_key, summary_markdown,
                                                                               bundle, config.link_base),
                                    service="ticket-webhook", where="ticket.webhook", dry_run=dry_run,
                                    transport=transport, retry=retry))
    return deliveries


def ticket_webhook_body(ticket_key: str, summary_markdown: str, bundle: Path | None,
                        link_base: str | None = None) -> dict[str, Any]:
    """The generic ticket webhook's JSON: ticket, summary and the bundle's name, size and sha256."""
    body: dict[str, Any] = {"type": "rollbook.ticket-update", "version": 1, "ticket": ticket_key,
                            "summary_markdown": summary_markdown, "bundle": None}
    if bundle is not None:
        data = bundle.read_bytes()
        body["bundle"] = {"filename": bundle.name, "size": len(data),
                          "sha256": hashlib.sha256(data).hexdigest()}
    return body


def _jira(cfg: Service, key: str, summary: str, bundle: Path | None, dry_run: bool,
          transport: httpx.BaseTransport | None, retry: RetryPolicy) -> list[Delivery]:
    if not _ISSUE_KEY.fullmatch(key):
        raise ConfigError(f"{key!r} is not a Jira issue key.", hint="Pass the ticket as e.g. --ticket OPS-123.")
    base, auth, secrets = _jira_auth(cfg)
    issue = f"{base}/rest/api/2/issue/{quote(key)}"
    hint = f"Check ticket.jira (user {cfg.user.describe()}, token {cfg.secret.describe()}) and issue {key}."
    common = {"Authorization": auth, "Accept": "application/json"}
    if not dry_run:
        _require_issue(Outbound("jira", "GET", issue, dict(common), secrets=secrets, idempotent=True,
                                hint=hint), key, transport, retry)
    out: list[Delivery] = []
    if bundle is not None:
        out.append(_attach(issue, bundle, common, secrets, hint, dry_run, transport, retry))
    comment = Outbound("jira-comment", "POST", issue + "/comment",
                       {**common, "Content-Type": "application/json"},
                       json_body=jira_comment(summary, bundle.name if bundle else None),
                       secrets=secrets, hint=hint)
    sent = deliver(comment, dry_run=dry_run, transport=transport, retry=retry)
    out.append(_with_result(sent, {"comment_id": _get(sent.response, "id"),
                                   "comment_url": _get(sent.response, "self")}))
    return out


def _jira_auth(cfg: Service) -> tuple[str, str, tuple[str, ...]]:
    if not cfg.url:
        raise ConfigError("ticket.jira has no url.", hint="Set ticket.jira.url to Jira's base URL.")
    user = require_secret(cfg.user, "ticket.jira", "user")
    token = require_secret(cfg.secret, "ticket.jira", "API token")
    auth = basic_auth(user, token)
    return cfg.url.rstrip("/"), auth, (token, auth.split(" ", 1)[1])


def _require_issue(req: Outbound, key: str, transport: httpx.BaseTransport | None,
                   retry: RetryPolicy) -> None:
    """Fail before writing anything when the issue is unknown (Jira answers 404 for it)."""
    try:
        fetch(req, transport=transport, retry=retry)
    except ServiceRejected as e:
        if e.status != 404:
            raise
        raise ServiceRejected(f"Jira issue {key} does not exist at {req.record().url} (or this user may "
                              "not see it).", service="jira", url=e.url, status=404, body=e.body,
                              hint="Check the ticket key; nothing was posted.") from e


def _attach(issue: str, bundle: Path, common: dict[str, str], secrets: tuple[str, ...], hint: str,
            dry_run: bool, transport: httpx.BaseTransport | None, retry: RetryPolicy) -> Delivery:
    size = bundle.stat().st_size
    if size > MAX_ATTACHMENT_BYTES:
        raise ConfigError(f"Bundle {bundle} is {size} bytes, over the {MAX_ATTACHMENT_BYTES}-byte limit.",
                          hint="Attach it by hand or publish it under record.link_base.")
    req = Outbound("jira-attachment", "POST", issue + "/attachments",
                   # Jira refuses attachment uploads without this header ("XSRF check failed").
                   {**common, "X-Atlassian-Token": "no-check"},
                   files={"file": (bundle.name, bundle.read_bytes(), "application/zip")},
                   secrets=secrets, hint=hint)
    sent = deliver(req, dry_run=dry_run, transport=transport, retry=retry)
    if sent.sent and not isinstance(sent.response, list):
        raise ServiceProtocolError(f"Jira answered the attachment upload to {req.record().url} with "
                                   f"{str(sent.response)[:200]!r}, not a list of attachments.",
                                   service="jira", url=req.record().url, status=sent.status,
                                   hint="Check ticket.jira.url points at Jira itself, not a proxy page.")
    items = sent.response if isinstance(sent.response, list) else []
    return _with_result(sent, {"attachment_ids": [_get(a, "id") for a in items],
                               "filename": bundle.name, "size": size})


def _get(data: Any, key: str) -> Any:
    return data.get(key) if isinstance(data, dict) else None


def _with_result(d: Delivery, result: dict[str, Any]) -> Delivery:
    return replace(d, result=result if d.sent else {})
