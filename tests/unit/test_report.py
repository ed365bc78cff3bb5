"""report.html (issue 13 item 8): the 30-second answer on top in colour, steps folded, readable tables,
readable tables (plots with units: test_plot_units.py)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import nbformat

from rollbook import record, report
from rollbook.record import RunInfo, StepResult
from rollbook.steps.core import cell_text, table


def _info(**kw: object) -> RunInfo:
    base: dict[str, object] = dict(incident="INC-1", namespace="prod", rollout="api", context=None, run_id="r1",
                                   started_at="2026-01-01T00:00:00.000Z", finished_at="2026-01-01T00:00:09.000Z",
                                   tool_version="0", parameters={}, exit_code=5, partial=False,
                                   next_step="approve the retry: rollbook run --incident INC-1 --steps 4,5,6")
    base.update(kw)
    return RunInfo(**base)  # type: ignore[arg-type]


def _steps() -> list[StepResult]:
    return [
        StepResult(1, "confirm-rollback-status", "01-confirm-rollback-status.ipynb", "pass", "aborted",
                   findings={"phase": "Degraded", "canary_revision": 7, "stable_revision": 6,
                             "stable_image": "registry/api:1.41.3"}),
        StepResult(2, "inspect-evidence", "02-inspect-evidence.ipynb", "pass", "MC says missing",
                   findings={"trigger": "evidence", "failed_metrics": ["mc-evidence-ok"],
                             "analysis_run": "api-7-0", "mc_reason": "missing required evidence: test-report <junit>"}),
        StepResult(4, "remediate-and-retry", "04-remediate-and-retry.ipynb", "needs_human", "No retry: dry run",
                   findings={"retried": False, "mutations": [{"action": "retry", "dry_run": True, "requests": [
                       {"method": "PATCH", "path": "/apis/argoproj.io/v1alpha1/namespaces/prod/rollouts/api/status"}]}]}),
        StepResult(6, "verify-closeout", "06-verify-closeout.ipynb", "pass", "verified",
                   findings={"closeout_ok": True, "phase_at_close": "Degraded"}),
    ]


def _notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('namespace: str = ""  # ns')
    params.metadata["tags"] = ["parameters"]
    opener = nbformat.v4.new_code_cell("inc = steps.open_incident(namespace)")
    opener.outputs = [nbformat.v4.new_output("display_data", data={"text/markdown": "- **reads as**: `ctx`"})]
    work = nbformat.v4.new_code_cell("print(1)")
    work.outputs = [nbformat.v4.new_output("stream", name="stdout", text="STEP-OUTPUT\n")]
    nb.cells = [nbformat.v4.new_markdown_cell("# Step 1 — Confirm\n\n> **Playbook:** quote"),
                nbformat.v4.new_markdown_cell("## Parameters\nSet by `rollbook run` (papermill)."), params,
                nbformat.v4.new_markdown_cell("Open the incident: the cluster."), opener,
                nbformat.v4.new_markdown_cell("What the step does."), work,
                nbformat.v4.new_markdown_cell("## Verdict"), nbformat.v4.new_code_cell("outcome.show()")]
    nbformat.write(nb, path)


def test_the_top_answers_cause_reason_action_state_and_next_step_in_colour(tmp_path: Path) -> None:
    for s in _steps():
        _notebook(tmp_path / s.notebook)
    page = record.render_report(_info(), _steps(), tmp_path)
    top = page[page.index('<div class="rb-answer'):page.index('<table class="rb-steps"')]
    assert top.startswith('<div class="rb-answer wait">') and "Waiting for a human decision" in top
    answer = report.answer(_info(), _steps())
    assert answer["Cause"] == ("The Mission Control evidence gate failed (mc-evidence-ok) in AnalysisRun api-7-0; "
                               "canary revision 7 aborted.")
    assert answer["MC's reason"] == "missing required evidence: test-report <junit>"
    assert answer["Action taken"].startswith("retry: server-side dry run only, not sent")
    assert answer["State now"] == ("Rollout Degraded; stable revision 6 (registry/api:1.41.3) serves the traffic; "
                                   "close-out verified.")
    assert "test-report &lt;junit&gt;" in top and "<code>approve the retry: rollbook run" in top
    assert ".rb-answer.wait{" in page, "the colours ship with the page"


def test_each_step_is_folded_once_without_the_boilerplate(tmp_path: Path) -> None:
    for s in _steps():
        _notebook(tmp_path / s.notebook)
    page = record.render_report(_info(), _steps(), tmp_path)
    assert page.count("<details") == 4 == page.count("</details>")
    summaries = re.findall(r"<summary>(.*?)</summary>", page)
    assert html.unescape(summaries[2]) == "Step 4: remediate-and-retry — needs_human — No retry: dry run"
    assert page.count("STEP-OUTPUT") == 4 and "Playbook:" in page and "What the step does." in page
    for boilerplate in ("Confirm</h1>", "Parameters</h2>", "Set by", "Open the incident", "reads as",
                        "Verdict</h2>"):
        assert boilerplate not in page, boilerplate


def test_table_cells_are_readable_and_wrap() -> None:
    assert cell_text({"revision": 7, "failed_runs": ("a", "b"), "looping": True}) == \
        "revision: 7\nfailed_runs: a, b\nlooping: yes"
    assert cell_text([{"method": "PATCH", "path": "/x"}, {"method": "GET", "path": "/y"}]) == \
        "method: PATCH\npath: /x\nmethod: GET\npath: /y"
    assert cell_text({"a": {"b": {"c": [1]}}}) == 'a: b: {"c": [1]}'
    rendered = table({"loop": {"revision": 7, "failed_runs": ("a",)}, "note": "<b>x</b>"}).to_html()
    assert "{&#x27;" not in rendered and "{'" not in rendered and "('" not in rendered
    assert "white-space: pre-wrap" in rendered and "&lt;b&gt;x&lt;/b&gt;" in rendered


def test_mc_reason_on_top_carries_its_source_and_time_when_the_record_has_them() -> None:
    steps = _steps()
    steps[1].findings.update(mc_reason_from="stored in AnalysisRun api-7-0, measured 2026-08-21T10:15:02Z")
    assert report.answer(_info(), steps)["MC's reason"] == (
        '"missing required evidence: test-report <junit>" (stored in AnalysisRun api-7-0, measured 2026-08-21T10:15:02Z)')
    steps[1].findings.update(mc_reason=None, mc_reason_from=None, mc_recorded="mc-evidence-ok is Error: all 5 errored",
                             mc_now="MC now passes release api-1.2 (MC live, asked 2026-08-21T10:20:00Z)")
    assert report.answer(_info(), steps)["MC's reason"] == (
        "none recorded by the AnalysisRun (mc-evidence-ok is Error: all 5 errored); "
        "MC now passes release api-1.2 (MC live, asked 2026-08-21T10:20:00Z)")
