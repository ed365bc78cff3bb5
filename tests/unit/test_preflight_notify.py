"""Argo's notification semantics as preflight reads them: label selectors and webhook retry windows."""

from __future__ import annotations

import pytest

from rollbook.preflight.rules_notify import retry_window, selector_matches

LABELS = {"app": "api", "team": "payments", "tier": "web"}


@pytest.mark.parametrize(("selector", "matches"), [
    ("", True), ("app=api", True), ("app==api", True), ("app!=api", False), ("app=web", False),
    ("team in (payments, search)", True), ("team notin (payments)", False), ("tier,app=api", True),
    ("!tier", False), ("!owner", True), ("owner", False), ("app=api,team in (search)", False), ("app=(", False),
])
def test_label_selectors(selector: str, matches: bool) -> None:
    assert selector_matches(selector, LABELS) is matches


def test_retry_window_follows_go_retryablehttp_backoff() -> None:
    assert retry_window({}) == (3, 7.0)  # defaults: retryMax 3, waits 1 s, 2 s, 4 s (max 5 s)
    assert retry_window({"retryMax": 0}) == (3, 7.0)  # 0 means the default (pkg/services/webhook.go)
    assert retry_window({"retryMax": 15}) == (15, 1 + 2 + 4 + 5 * 12)
    assert retry_window({"retryMax": 5, "retryWaitMin": 2_000_000_000, "retryWaitMax": "30s"}) == (5, 2 + 4 + 8 + 16 + 30)


def test_fix_snippets_name_templates_rollbook_ships() -> None:
    # a fix that tells the user to send a template deploy/ does not define would trigger nothing
    import re
    from pathlib import Path

    import yaml

    import rollbook.preflight.rules_notify as rules

    root = Path(__file__).parents[2]
    shipped = next(d for d in yaml.safe_load_all((root / "deploy" / "argo-notifications.yaml").read_text())
                   if d and d.get("kind") == "ConfigMap")["data"]
    sent = {n.strip() for names in re.findall(r"send: \[([^\]]+)\]", Path(rules.__file__).read_text())
            for n in names.split(",")}
    assert sent and all(f"template.{n}" in shipped for n in sent), (sent, sorted(shipped))
