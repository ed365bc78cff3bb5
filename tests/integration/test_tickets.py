"""Jira comment + attachment and the ticket webhook through real HTTP against the services stand-in."""

from __future__ import annotations

import base64
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rollbook import paging, tickets
from rollbook.config import Config, SecretRef, Service
from rollbook.sandbox.services import ServicesServer

JIRA_USER = "rollbook-bot@example.com"
JIRA_TOKEN = "planted-jira-token-31337"
SUMMARY = "# INC-1234: canary api aborted\n\n* cause: missing required evidence: test-report (junit)\n"


@pytest.fixture
def services() -> Iterator[ServicesServer]:
    with ServicesServer(jira_user=JIRA_USER, jira_token=JIRA_TOKEN,
                        jira_issues={"INC-1234": "Canary api aborted"}) as server:
        yield server


@pytest.fixture
def config(services: ServicesServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    token_file = tmp_path / "jira-token"
    token_file.write_text(JIRA_TOKEN + "\n")
    monkeypatch.setenv("IT_JIRA_USER", JIRA_USER)
    return Config(jira=Service(url=services.url, user=SecretRef(env="IT_JIRA_USER"),
                               secret=SecretRef(file=str(token_file))))


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    path = tmp_path / "bundle.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("summary.md", SUMMARY)
        z.writestr("record.json", json.dumps({"schema": 1, "incident": "INC-1234"}))
    return path


def test_comment_and_attachment_wire_format(services: ServicesServer, config: Config, bundle: Path) -> None:
    deliveries = tickets.update_ticket(config, "INC-1234", SUMMARY, bundle, dry_run=False)
    get, attach, comment = services.received("jira")
    assert (get.method, get.path, get.query) == ("GET", "/rest/api/2/issue/INC-1234", {"fields": ["comment"]})
    assert (attach.method, attach.path) == ("POST", "/rest/api/2/issue/INC-1234/attachments")
    assert attach.headers["X-Atlassian-Token"] == "no-check"
    assert attach.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert b'name="file"; filename="bundle.zip"' in attach.body and bundle.read_bytes() in attach.body
    (stored,) = services.attachments["INC-1234"]
    assert stored["content_bytes"] == bundle.read_bytes() and stored["filename"] == "bundle.zip"
    assert (comment.method, comment.path) == ("POST", "/rest/api/2/issue/INC-1234/comment")
    assert comment.json() == {"body": "rollbook incident record summary (full record attached: "
                                      "[^bundle.zip]):\n{noformat}\n" + SUMMARY.rstrip("\n") + "\n{noformat}\n"
                                      f"rollbook record {tickets.record_digest(SUMMARY, bundle)}"}
    assert comment.headers["Authorization"] == "Basic ***"
    assert [d.service for d in deliveries] == ["jira-attachment", "jira-comment"]
    assert deliveries[0].result["attachment_ids"] == [stored["id"]]
    assert deliveries[1].status == 201
    assert deliveries[1].result["comment_id"] == services.comments["INC-1234"][0]["id"]


def test_a_rerun_of_the_same_record_posts_nothing_twice(services: ServicesServer, config: Config,
                                                        bundle: Path) -> None:
    first = tickets.update_ticket(config, "INC-1234", SUMMARY, bundle, dry_run=False)
    again = tickets.update_ticket(config, "INC-1234", SUMMARY, bundle, dry_run=False)
    assert len(services.comments["INC-1234"]) == 1 and len(services.attachments["INC-1234"]) == 1
    assert [(d.service, d.sent) for d in again] == [("jira-comment", False)]
    assert again[0].result == {"already_posted": True, "comment_id": first[1].result["comment_id"],
                               "comment_url": first[1].result["comment_url"]}
    tickets.update_ticket(config, "INC-1234", SUMMARY + "\nstate at close: healthy\n", bundle, dry_run=False)
    assert len(services.comments["INC-1234"]) == 2


def test_basic_auth_is_user_and_token(services: ServicesServer, config: Config, bundle: Path) -> None:
    tickets.update_ticket(config, "INC-1234", SUMMARY, None, dry_run=False)
    # The stand-in accepted the credentials (else 401); check what a real Jira would decode too.
    expected = base64.b64encode(f"{JIRA_USER}:{JIRA_TOKEN}".encode()).decode()
    assert paging.basic_auth(JIRA_USER, JIRA_TOKEN) == f"Basic {expected}"
    assert len(services.comments["INC-1234"]) == 1 and "INC-1234" not in services.attachments


def test_wrong_token_is_rejected(services: ServicesServer, config: Config,
                                 monkeypatch: pytest.MonkeyPatch, bundle: Path) -> None:
    monkeypatch.setenv("IT_JIRA_TOKEN", "planted-wrong-token")
    bad = Config(jira=Service(url=config.jira.url, user=config.jira.user, secret=SecretRef(env="IT_JIRA_TOKEN")))
    with pytest.raises(paging.ServiceRejected) as info:
        tickets.update_ticket(bad, "INC-1234", SUMMARY, bundle, dry_run=False)
    assert info.value.status == 401 and "planted-wrong-token" not in str(info.value)
    assert services.comments == {} and services.attachments == {}


def test_unknown_issue_fails_before_anything_is_posted(services: ServicesServer, config: Config,
                                                        bundle: Path) -> None:
    with pytest.raises(paging.ServiceRejected, match="INC-9999 does not exist") as info:
        tickets.update_ticket(config, "INC-9999", SUMMARY, bundle, dry_run=False)
    assert info.value.status == 404
    assert [r.method for r in services.received("jira")] == ["GET"]


def test_stand_in_refuses_attachments_without_the_xsrf_header(services: ServicesServer, bundle: Path) -> None:
    reply = httpx.post(services.url + "/rest/api/2/issue/INC-1234/attachments", auth=(JIRA_USER, JIRA_TOKEN),
                       files={"file": ("bundle.zip", bundle.read_bytes(), "application/zip")}, timeout=5)
    assert (reply.status_code, reply.text) == (403, "XSRF check failed")
    assert services.attachments == {}


def test_dry_run_sends_nothing_and_leaks_no_secret(services: ServicesServer, config: Config,
                                                   bundle: Path) -> None:
    deliveries = tickets.update_ticket(config, "INC-1234", SUMMARY, bundle)
    assert services.requests == []
    assert [(d.service, d.sent) for d in deliveries] == [("jira-attachment", False), ("jira-comment", False)]
    basic = base64.b64encode(f"{JIRA_USER}:{JIRA_TOKEN}".encode()).decode()
    dumped = json.dumps([d.to_dict() for d in deliveries]) + repr(deliveries)
    assert JIRA_TOKEN not in dumped and basic not in dumped
    attachment = deliveries[0].request
    assert attachment.headers["X-Atlassian-Token"] == "no-check"
    assert attachment.body["multipart"]["file"]["size"] == bundle.stat().st_size


def test_ticket_webhook_alternative(services: ServicesServer, bundle: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = Config(ticket_webhook=Service(url=services.url + "/hooks/tickets"))
    (delivery,) = tickets.update_ticket(cfg, "INC-1234", SUMMARY, bundle, dry_run=False)
    (req,) = services.received("webhook")
    body = req.json()
    assert body["ticket"] == "INC-1234" and body["summary_markdown"] == SUMMARY
    assert body["bundle"]["size"] == bundle.stat().st_size and len(body["bundle"]["sha256"]) == 64
    assert "Authorization" not in req.headers
    assert delivery.service == "ticket-webhook" and delivery.status == 200


def test_nothing_configured_is_empty(services: ServicesServer, bundle: Path) -> None:
    assert tickets.update_ticket(Config(), "INC-1234", SUMMARY, bundle, dry_run=False) == []
    assert services.requests == []
