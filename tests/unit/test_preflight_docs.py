"""The README documents every preflight rule id and the JSON's fields; the report's JSON has that shape."""

from __future__ import annotations

import json
import re
from pathlib import Path

from preflight_helpers import check, reference

from rollbook.preflight import RULES, Report, text, to_json
from rollbook.preflight.run import sort_findings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
SECTION = README.split("## Preflight", 1)[1].split("\n## ", 1)[0]


def test_every_rule_id_is_in_the_readme_table_and_nothing_else() -> None:
    documented = set(re.findall(r"^\| `([a-z-]+)` \|", SECTION, re.M))
    assert documented == set(RULES)


def test_the_json_has_the_documented_fields() -> None:
    objs = reference()
    objs["mc"]["spec"]["metrics"][0]["provider"]["web"]["jsonPath"] = "{$.ok}"
    report = Report(tuple(sort_findings(check(objs))), context="ctx", namespaces=("prod",), rollouts=("prod/api",))
    doc = json.loads(to_json(report))
    assert set(doc) == {"findings", "summary", "checked"}
    assert all(set(f) == {"id", "severity", "namespace", "object", "field", "step", "message", "fix"} for f in doc["findings"])
    assert doc["summary"] == {"error": 1, "warn": 0, "info": 0} and report.exit_code == 1
    example = json.loads(re.search(r"```json\n(.*?)```", SECTION, re.S)[1])  # type: ignore[index]
    assert set(example) == set(doc) and set(example["findings"][0]) == set(doc["findings"][0])
    assert "ERROR evidence-jsonpath" in text(report) and 'jsonPath: "{$}"' in text(report)


def test_a_clean_report_exits_0_and_says_so() -> None:
    report = Report((), context="ctx", namespaces=("prod",), rollouts=("prod/api",))
    assert report.exit_code == 0 and "clean — 0 error(s)" in text(report)
