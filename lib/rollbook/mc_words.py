"""How an MC reason is quoted: always with where it came from and when.

Two sources can disagree: the verdict Argo's web provider stored in the AnalysisRun's measurement (what MC
said at the abort) and MC's live answer (what it says now, after evidence was attached or changed). A
reason without its source reads as one fact when it is two, so every quote carries its label.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any


def stamp(value: datetime | str | None) -> str:
    """RFC 3339 UTC with a Z; now when not given."""
    if isinstance(value, str) and value:
        return value
    when = value if isinstance(value, datetime) else datetime.now(UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stored_label(run: str | None, measured_at: str | None, other_release: str | None = None) -> str:
    """The label of a reason read from the AnalysisRun's stored measurement (and whose it is, when not the canary's)."""
    at = f", measured {measured_at}" if measured_at else ""
    whose = f", about release {other_release}, not the canary" if other_release else ""
    return f"stored in AnalysisRun {run or '?'}{at}{whose}"


def live_label(at: datetime | str | None) -> str:
    """The label of a reason MC gave when asked now."""
    return f"MC live, asked {stamp(at)}"


def quoted(reason: str | None, label: str | None) -> str:
    """`"reason" (label)`; 'not established' when there is no reason."""
    if not reason:
        return "not established"
    return f'"{reason}" ({label})' if label else reason  # a record from before labels: as it was


def finding_quote(f: Mapping[str, Any]) -> str:
    """The run's MC reason from the merged findings, labelled, for tickets, pages and reports."""
    text = quoted(f.get("mc_reason"), f.get("mc_reason_from"))
    if f.get("mc_recorded") and f.get("mc_reason"):
        text += f"; the AnalysisRun itself recorded none ({f['mc_recorded']})"
    elif f.get("mc_recorded"):
        text = f"none recorded by the AnalysisRun ({f['mc_recorded']})"
        if f.get("mc_now"):
            text += f"; {f['mc_now']}"
    return text


def summary_lines(f: Mapping[str, Any]) -> list[str]:
    """summary.md's MC lines: the reason with its source and time; what the run recorded apart from MC now."""
    if f.get("mc_recorded"):
        return [f"- Mission Control reason recorded by the AnalysisRun: none — {f['mc_recorded']}",
                f"- {f.get('mc_now') or 'MC now: not asked'}"]
    src = f" ({f['mc_reason_from']})" if f.get("mc_reason") and f.get("mc_reason_from") else ""
    return [f"- Mission Control reason{src}: {f.get('mc_reason') or 'not established'}"]
