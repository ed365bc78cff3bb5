"""Hostile text from the cluster and MC (a Rollout message, an MC reason, a trigger, a record link) in every
field that reaches Slack, PagerDuty, the generic webhook and Jira (issue 11, part 4): sent over real HTTP to
the sandbox's stand-ins and proven by parsing what they received.

Per format: Slack mrkdwn (the top-level text too) has `&`, `<`, `>` escaped as Slack requires, so no
`<!channel>`, `<@U…>` or `<url|label>` of the attacker survives, only the record link rollbook writes;
plain_text, PagerDuty and the webhook are JSON with no control character; the Jira comment (v2 wiki) holds
the summary in one {noformat} block the text cannot end early. Nowhere a raw ESC, BEL or NUL."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import nbformat
import pytest

from rollbook import paging, record, tickets
from rollbook.config import Config, SecretRef, Service
from rollbook.outbound import RetryPolicy
from rollbook.record import RunInfo, StepResult
from rollbook.sandbox.services import ServicesServer
from rollbook.serve import firstlook

HOSTILE = ('<script>alert("x")</script><img src=x onerror=alert(1)> [click](javascript:alert(1)) '
           '<!channel> <!here> <@U123> <#C999> <http://evil.example|y> &lt;b&gt; '
           '\x1b[31mRED\x1b[0m\x1b]8;;http://evil\x07link\x1b]8;;\x07 $(rm -rf /) `id` ; | && '
           '{noformat} {NOFORMAT} *bold* _it_ \x00 \x9b2J')
VISIBLE = record.printable(HOSTILE)
LINK = "https://files.example.internal/incidents/INC-1/run?a=1&b=<2>|x"
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
OURS = re.compile(r"<https://[^|<>\s]+\|incident record>")  # the one link rollbook itself writes
NO_WAIT = RetryPolicy(backoff=0.0, max_wait=0.0)


@pytest.fixture
def services() -> Iterator[ServicesServer]:
    with ServicesServer(routing_key="Rhostile0routing0key000000000001", slack_path="/services/T0/B0/hostile",
                        webhook_token="hostile-hook-token", jira_user="oncall@example.com",
                        jira_token="hostile-jira-token", jira_issues={"INC-1": "Canary api aborted"}) as server:
        yield server


@pytest.fixture
def config(services: ServicesServer, monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.setenv("HT_PD", services.routing_key)
    monkeypatch.setenv("HT_SLACK", services.slack_url)
    monkeypatch.setenv("HT_HOOK", "hostile-hook-token")
    monkeypatch.setenv("HT_JIRA_USER", "oncall@example.com")
    monkeypatch.setenv("HT_JIRA", "hostile-jira-token")
    return Config(pagerduty=Service(url=services.url, secret=SecretRef(env="HT_PD")),
                  slack=Service(secret=SecretRef(env="HT_SLACK")),
                  webhook=Service(url=services.url + "/hooks/rollbook", secret=SecretRef(env="HT_HOOK")),
                  jira=Service(url=services.url, user=SecretRef(env="HT_JIRA_USER"), secret=SecretRef(env="HT_JIRA")))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A record whose Rollout message, MC reason, trigger and next step are hostile."""
    run_dir = record.new_run_dir(tmp_path / "out", "INC-1")
    nbformat.write(nbformat.v4.new_notebook(), run_dir / "01-confirm-rollback-status.ipynb")
    info = RunInfo(incident="INC-1", namespace="prod", rollout="api", context="sandbox", run_id="r",
                   started_at="2026-01-01T00:00:00.000Z", finished_at="2026-01-01T00:00:01.000Z", tool_version="0",
                   parameters={}, exit_code=0, partial=False, next_step=f"do this: {HOSTILE}")
    step = StepResult(1, "confirm-rollback-status", "01-confirm-rollback-status.ipynb", "pass", f"reason {HOSTILE}",
                      findings={"status_message": f"RolloutAborted: {HOSTILE}", "mc_reason": HOSTILE,
                                "trigger": HOSTILE, "failed_metrics": [HOSTILE], "release_id": HOSTILE,
                                "canary_revision": 7, "phase": "Degraded"})
    return record.write_record(run_dir, info, [step])


def _message(run_dir: Path) -> paging.Escalation:
    """The serve first look of the record (MC reason, trigger, verdicts as facts), hostile title and link too."""
    doc = json.loads((run_dir / "record.json").read_text())
    msg = firstlook.message(doc, LINK, HOSTILE)
    return replace(msg, title=f"First look {HOSTILE}", facts={**msg.facts, HOSTILE: HOSTILE}, incident=HOSTILE)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _mrkdwn_texts(body: dict[str, Any]) -> list[str]:
    found = [body["text"]]

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            if v.get("type") == "mrkdwn":
                found.append(v["text"])
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
    walk(body["blocks"])
    return found


def _slack_problems(body: dict[str, Any]) -> list[str]:
    """What Slack would interpret in the received message: raw <, >, a bare &, a control character."""
    problems = [f"control character in {s[:40]!r}" for s in _strings(body) if CONTROL.search(s)]
    for text in _mrkdwn_texts(body):
        bare = OURS.sub("", text)
        if "<" in bare or ">" in bare:
            problems.append(f"raw < or > in mrkdwn {bare[:80]!r}")
        if re.search(r"&(?!amp;|lt;|gt;)", bare):
            problems.append(f"bare & in mrkdwn {bare[:80]!r}")
    return problems


def test_slack_mrkdwn_is_escaped_as_slack_requires(services: ServicesServer, config: Config, run_dir: Path,
                                                   row) -> None:  # type: ignore[no-untyped-def]
    paging.send_slack(config.slack, _message(run_dir), dry_run=False, retry=NO_WAIT)
    (req,) = services.received("slack")
    body = req.json()
    problems = _slack_problems(body)
    texts = _mrkdwn_texts(body)
    # escaped, not dropped: Slack shows the visible text back (it decodes &amp; &lt; &gt;)
    shown = [html.unescape(OURS.sub("", t)) for t in texts]
    kept = any("<!channel>" in s and "<@U123>" in s and "<http://evil.example|y>" in s for s in shown)
    links = [m for t in texts for m in OURS.findall(t)]
    ok = not problems and kept and len(links) == 1 and "|x" not in links[0]
    row("hostile", "Slack: Rollout message, MC reason, trigger, facts, incident, record link with "
        "HTML/<script>/Markdown/<!channel>/<@U123>/<url|label>/ESC/shell", "every mrkdwn text (and the "
        "top-level text) has &, <, > escaped; one link, rollbook's; no control character",
        f"{len(texts)} mrkdwn texts, {len(problems)} problem(s), visible text kept: {kept}, links: {links}", ok)
    assert not problems, problems
    assert kept, shown
    assert links == ["<https://files.example.internal/incidents/INC-1/run?a=1&amp;b=%3C2%3E%7Cx|incident record>"]


def test_pagerduty_and_webhook_carry_plain_text_without_control_characters(
        services: ServicesServer, config: Config, run_dir: Path, row) -> None:  # type: ignore[no-untyped-def]
    msg = _message(run_dir)
    paging.send_pagerduty(config.pagerduty, msg, dry_run=False, retry=NO_WAIT)
    paging.send_webhook(config.webhook, msg, dry_run=False, retry=NO_WAIT)
    for kind in ("pagerduty", "webhook"):
        (req,) = services.received(kind)
        body = req.json()  # the stand-in parsed it too (a 400 would have raised)
        bad = [s[:40] for s in _strings(body) if CONTROL.search(s)]
        kept = any(VISIBLE[:80] in s for s in _strings(body))  # plain text: the visible words arrive as they were
        ok = not bad and kept
        row("hostile", f"{'PagerDuty' if kind == 'pagerduty' else 'generic webhook'}: the same fields",
            "JSON the stand-in accepts; plain text kept, no control character",
            f"{len(list(_strings(body)))} strings, {len(bad)} with a control character, text kept: {kept}", ok)
        assert not bad, bad
        assert kept


def test_jira_comment_keeps_the_summary_inside_one_noformat_block(
        services: ServicesServer, config: Config, run_dir: Path, row) -> None:  # type: ignore[no-untyped-def]
    summary = (run_dir / "summary.md").read_text()
    assert "{noformat}" in summary and "{NOFORMAT}" in summary  # the hostile macro reached the summary
    tickets.update_ticket(config, "INC-1", summary, run_dir / "bundle.zip", dry_run=False, retry=NO_WAIT)
    (comment,) = services.comments["INC-1"]
    body: str = comment["body"]
    macros = [m.start() for m in re.finditer(r"(?i)\{noformat\}", body)]
    lines = body.split("\n")
    block = lines[lines.index("{noformat}") + 1: len(lines) - 1 - lines[::-1].index("{noformat}")]
    inside = "\n".join(block)
    ok = len(macros) == 2 and not CONTROL.search(body) and "<!channel>" in inside and "<script>" in inside
    row("hostile", "Jira comment (v2 wiki): summary.md with the same text and `{noformat}`/`{NOFORMAT}`",
        "the summary inside exactly one {noformat} block; no control character",
        f"{len(macros)} noformat macro(s) in the body, hostile text inside the block: "
        f"{'<!channel>' in inside}, control characters: {bool(CONTROL.search(body))}", ok)
    assert len(macros) == 2, body
    assert not CONTROL.search(body)
    assert "<!channel>" in inside and "<script>" in inside
