"""A preflight report for people (terminal text, notebook Markdown, a table) and for machines (JSON)."""

from __future__ import annotations

import json
import textwrap

from rollbook.htmltable import HtmlTable
from rollbook.preflight.model import Report, _where, headline, markdown

__all__ = ["headline", "markdown", "show", "table", "text", "to_json"]

_WORD = {"error": "ERROR", "warn": "WARN ", "info": "INFO "}


def to_json(report: Report) -> str:
    """The stable JSON document (README, "Preflight")."""
    return json.dumps(report.to_dict(), indent=2, sort_keys=False) + "\n"


def text(report: Report) -> str:
    """The terminal report: one block per finding, the fix indented under it."""
    lines = [headline(report), ""]
    for f in report.findings:
        lines.append(f"{_WORD[f.severity]} {f.id}  {_where(f)}  {f.field}  (step {f.step})")
        lines += textwrap.wrap(f.message, width=110, initial_indent="      ", subsequent_indent="      ")
        lines.append("      fix:")
        lines += [f"        {ln}" if ln else "" for ln in f.fix.rstrip("\n").splitlines()]
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def table(report: Report) -> HtmlTable:
    """The findings as a table for display (the fixes are in the Markdown view)."""
    rows = [{k: v for k, v in f.to_dict().items() if k != "fix"} for f in report.findings]
    return HtmlTable(rows, ["severity", "id", "namespace", "object", "field", "step", "message"])


def show(report: Report) -> None:
    """Display the verdict in a notebook (the last cell of 00-preflight)."""
    from IPython.display import Markdown, display

    code = report.exit_code
    display(Markdown(f"### Preflight verdict: {'BROKEN' if code else 'OK'} (exit {code})\n\n{headline(report)}"))
