"""A preflight report for people (terminal text, notebook Markdown, a table) and for machines (JSON)."""

from __future__ import annotations

import json
import textwrap

from rollbook.htmltable import HtmlTable
from rollbook.preflight.model import Finding, Report

_WORD = {"error": "ERROR", "warn": "WARN ", "info": "INFO "}


def to_json(report: Report) -> str:
    """The stable JSON document (README, "Preflight")."""
    return json.dumps(report.to_dict(), indent=2, sort_keys=False) + "\n"


def headline(report: Report) -> str:
    """One line: the verdict, the counts, what was checked."""
    n = report.counts
    verdict = "the playbook will break" if n["error"] else "clean" if not n["warn"] else "clean, with warnings"
    where = ", ".join(report.namespaces) or "every namespace"
    return (f"rollbook preflight: {verdict} — {n['error']} error(s), {n['warn']} warning(s), {n['info']} info; "
            f"{len(report.rollouts)} Rollout(s) in {where} (context {report.context or '(current)'})")


def _where(f: Finding) -> str:
    return "/".join(p for p in (f.namespace, f.object) if p)


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


def markdown(report: Report) -> str:
    """The notebook view: the headline, then each finding with its fix as a YAML block."""
    out = [f"**{headline(report)}**", ""]
    for f in report.findings:
        out += [f"- **{f.severity}** `{f.id}` — `{_where(f)}` `{f.field}` (step {f.step}): {f.message}", "",
                "  ```yaml", *[f"  {ln}" for ln in f.fix.rstrip("\n").splitlines()], "  ```", ""]
    return "\n".join(out)


def table(report: Report) -> HtmlTable:
    """The findings as a table for display (the fixes are in the Markdown view)."""
    rows = [{k: v for k, v in f.to_dict().items() if k != "fix"} for f in report.findings]
    return HtmlTable(rows, ["severity", "id", "namespace", "object", "field", "step", "message"])


def show(report: Report) -> None:
    """Display the verdict in a notebook (the last cell of 00-preflight)."""
    from IPython.display import Markdown, display

    code = report.exit_code
    display(Markdown(f"### Preflight verdict: {'BROKEN' if code else 'OK'} (exit {code})\n\n{headline(report)}"))
