"""What the real PagerDuty and Slack reject, and Jira's multipart attachments, as the stand-in checks them."""

from __future__ import annotations

import email.parser
import email.policy
from typing import Any

from rollbook.sandbox.servicehttp import (
    PD_ACTIONS,
    PD_SEVERITIES,
    Reply,
    json_reply,
)


def pd_invalid(message: str, errors: list[str]) -> Reply:
    return json_reply(400, {"status": "invalid event", "message": message, "errors": errors})


def pd_errors(event: dict[str, Any]) -> list[str]:
    errors = []
    if not event.get("routing_key"):
        errors.append("'routing_key' is missing or blank")
    action = event.get("event_action")
    if action not in PD_ACTIONS:
        errors.append("'event_action' must be one of trigger, acknowledge or resolve")
    key = event.get("dedup_key")
    if key is not None and (not isinstance(key, str) or len(key) > 255):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and not key:
        errors.append("'dedup_key' is missing or blank")
    if action == "trigger":
        errors += pd_payload_errors(event.get("payload"))
    return errors


def pd_payload_errors(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return ["'payload' is missing or not an object"]
    errors = [f"'payload.{f}' is missing or blank" for f in ("summary", "source", "severity")
              if not payload.get(f)]
    if payload.get("severity") and payload["severity"] not in PD_SEVERITIES:
        errors.append("'payload.severity' must be one of critical, error, warning or info")
    if isinstance(payload.get("summary"), str) and len(payload["summary"]) > 1024:
        errors.append("'payload.summary' must be at most 1024 characters")
    return errors


def blocks_ok(blocks: Any) -> bool:
    """Enough of Block Kit's rules to catch a malformed message the way Slack would."""
    if not isinstance(blocks, list) or len(blocks) > 50:
        return False
    for block in blocks:
        if not isinstance(block, dict):
            return False
        kind = block.get("type")
        if kind == "header":
            text = block.get("text") or {}
            if text.get("type") != "plain_text" or not 0 < len(text.get("text", "")) <= 150:
                return False
        elif kind == "section":
            if not (block.get("text") or block.get("fields")) or len(block.get("fields", [])) > 10:
                return False
        elif kind == "image":
            if not block.get("image_url") or not block.get("alt_text"):
                return False
        elif kind == "context":
            if not 0 < len(block.get("elements", [])) <= 10:
                return False
        elif kind not in ("divider", "actions", "rich_text"):
            return False
    return True


def multipart_files(content_type: str, body: bytes) -> list[tuple[str, str, bytes]]:
    """(filename, content type, bytes) of every part named `file` in a multipart/form-data body."""
    # The standard library's email parser reads multipart/form-data correctly (the cgi module is gone
    # in Python 3.13); no third-party parser is needed for a stand-in.
    if not content_type.startswith("multipart/form-data"):
        return []
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    files = []
    for part in message.iter_parts() if message.is_multipart() else []:
        if part.get_param("name", header="content-disposition") == "file":
            payload = part.get_payload(decode=True)
            files.append((part.get_filename() or "file", part.get_content_type(),
                          payload if isinstance(payload, bytes) else b""))
    return files

