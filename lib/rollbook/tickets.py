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
from rollbook.outbound import (
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
    response_body,
)
from rollbook.record import printable

# Jira issue keys: a project key (letters, digits, underscore; starts with a letter) and a number.
_ISSUE_KEY = re.compile(r"[A-Z][A-Z0-9_]*-[1-9][0-9]*")
# Uploads read the whole file into memory; Jira's own default attachment limit is 10 MB.
MAX_ATTACHMENT_BYTES = 50 * 1024 * 1024
_NOFORMAT = re.compile(r"\{noformat", re.IGNORECASE)


def record_digest(summary_markdown: str, bundle: Path | None) -> str:
    """A short digest of what a ticket update carries, so a re-run can recognise its own comment."""
    h = hashlib.sha256(summary_markdown.encode())
    if bundle is not None:
        h.update(bundle.read_bytes())
    return h.hexdigest()[:16]


def jira_comment(summary_markdown: str, bundle_name: str | None = None,
                 digest: str | None = None) -> dict[str, str]:
    """The v2 comment body: the summary verbatim in a {noformat} block, a link to the attachment, a digest."""
    # v2 comments are wiki markup, not Markdown. Rather than a lossy hand-written converter, the
    # summary goes in verbatim: Markdown reads well as plain text, and nothing in it is reinterpreted.
    # The one thing that could end the block early is the macro itself (Jira matches its name in any case).
    text = _NOFORMAT.sub("{ noformat", printable(summary_markdown))
    lines = ["rollbook incident record summary"
             + (f" (full record attached: [^{bundle_name}])" if bundle_name else "") + ":",
             "{noformat}", text.rstrip("\n"), "{noformat}"]
    if digest:
        lines.append(f"rollbook record {digest}")
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
                                                                               bundle),
                                    service="ticket-webhook", where="ticket.webhook", dry_run=dry_run,
                                    transport=transport, retry=retry))
    return deliveries


def ticket_webhook_body(ticket_key: str, summary_markdown: str, bundle: Path | None) -> dict[str, Any]:
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
    digest = record_digest(summary, bundle)
    comment = Outbound("jira-comment", "POST", issue + "/comment",
                       {**common, "Content-Type": "application/json"},
                       json_body=jira_comment(summary, bundle.name if bundle else None, digest),
                       secrets=secrets, hint=hint)
    existing = None
    if not dry_run:
        found = _require_issue(Outbound("jira", "GET", issue, dict(common), params={"fields": "comment"},
                                        secrets=secrets, idempotent=True, hint=hint), key, transport, retry)
        existing = _comment_with(found, f"rollbook record {digest}")
    if existing is not None:
        # A re-run of the same record: the ticket already has it, so post nothing twice.
        return [Delivery(service="jira-comment", sent=False, request=comment.record(),
                         result={"already_posted": True, "comment_id": existing.get("id"),
                                 "comment_url": existing.get("self")})]
    out: list[Delivery] = []
    if bundle is not None:
        out.append(_attach(issue, bundle, common, secrets, hint, dry_run, transport, retry))
    sent = deliver(comment, dry_run=dry_run, transport=transport, retry=retry)
    if sent.sent and not (isinstance(sent.response, dict) and sent.response.get("id")):
        raise ServiceProtocolError(f"Jira answered the comment on {key} at {comment.record().url} with "
                                   f"{str(sent.response)[:200]!r}, not a comment.", service="jira",
                                   url=comment.record().url, status=sent.status,
                                   hint="Check ticket.jira.url points at Jira itself, not a proxy page.")
    out.append(_with_result(sent, {"comment_id": _get(sent.response, "id"),
                                   "comment_url": _get(sent.response, "self")}))
    return out


def _comment_with(issue: Any, marker: str) -> dict[str, Any] | None:
    """The issue's first comment containing `marker`, if any (from GET issue?fields=comment)."""
    comments = _get(_get(_get(issue, "fields"), "comment"), "comments") or []
    for c in comments:
        if isinstance(c, dict) and marker in str(c.get("body", "")):
            return c
    return None


def _jira_auth(cfg: Service) -> tuple[str, str, tuple[str, ...]]:
    if not cfg.url:
        raise ConfigError("ticket.jira has no url.", hint="Set ticket.jira.url to Jira's base URL.")
    user = require_secret(cfg.user, "ticket.jira", "user")
    token = require_secret(cfg.secret, "ticket.jira", "API token")
    auth = basic_auth(user, token)
    return cfg.url.rstrip("/"), auth, (token, auth.split(" ", 1)[1])


def _require_issue(req: Outbound, key: str, transport: httpx.BaseTransport | None,
                   retry: RetryPolicy) -> Any:
    """The issue as JSON; fails before anything is written when it is unknown (Jira answers 404)."""
    try:
        resp, _ = fetch(req, transport=transport, retry=retry)
        return response_body(resp)
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
