"""Hostile text (HTML, <script>, Markdown links, terminal escapes, shell metacharacters) in the fields a
record renders: escaped in report.html (an HTML parser finds no injected element), no raw ESC in
summary.md or what the terminal prints."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import nbformat

from rollbook import record
from rollbook.record import RunInfo, StepResult

HOSTILE = ('<script>alert("x")</script><img src=x onerror=alert(1)> [click](javascript:alert(1)) '
           '\x1b[31mRED\x1b[0m\x1b]8;;http://evil\x07link\x1b]8;;\x07 $(rm -rf /) `id` ; | && \x00')


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.in_script = False
        self.imgs: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.in_script = tag == "script"
        if tag == "img":
            self.imgs.append(dict(attrs))

    def handle_endtag(self, tag: str) -> None:
        self.in_script = False

    def handle_data(self, data: str) -> None:
        if self.in_script:
            self.scripts.append(data)


def _record(tmp_path: Path) -> Path:
    run_dir = record.new_run_dir(tmp_path / "out", "INC-1")
    nbformat.write(nbformat.v4.new_notebook(), run_dir / "01-confirm-rollback-status.ipynb")
    info = RunInfo(incident="INC-1", namespace="prod", rollout="api", context=None, run_id="r",
                   started_at="2026-01-01T00:00:00.000Z", finished_at="2026-01-01T00:00:01.000Z", tool_version="0",
                   parameters={}, exit_code=0, partial=False, next_step=f"do this: {HOSTILE}")
    step = StepResult(1, "confirm-rollback-status", "01-confirm-rollback-status.ipynb", "pass", f"reason {HOSTILE}",
                      findings={"status_message": f"RolloutAborted: {HOSTILE}", "mc_reason": HOSTILE,
                                "phase": "Degraded"})
    return record.write_record(run_dir, info, [step])


def test_report_html_has_no_injected_element(tmp_path: Path) -> None:
    html = (_record(tmp_path) / "report.html").read_text()
    parsed = _Elements()
    parsed.feed(html)
    assert not [s for s in parsed.scripts if 'alert("x")' in s]
    assert not [i for i in parsed.imgs if i.get("onerror")]
    assert 'href="javascript' not in html  # the Markdown link stays text, never a link
    assert "\x1b" not in html


def test_summary_and_terminal_text_carry_no_raw_escape(tmp_path: Path) -> None:
    summary = (_record(tmp_path) / "summary.md").read_text()
    assert "\x1b" not in summary and "\x07" not in summary and "\x00" not in summary
    assert "RED" in summary  # the text is kept, only the control characters go
