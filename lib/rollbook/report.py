"""report.html's content: the 30-second answer on top, in colour, then every step folded.

The top answers what an on-call engineer asks first — the cause, MC's reason, the action taken, the
state now and the next step — from the record's findings alone. Each step follows in a <details>
element (nbconvert renders it with the `rollbook` template beside this module), without the
boilerplate every notebook repeats (parameters, connection cell, headings). record.py renders it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rollbook.mc_words import finding_quote
from rollbook.steprecord import (
    EXIT_MEANING,
    STEP_RESULT_MIME,
    RunInfo,
    StepResult,
    merge_findings,
    mutation_lines,
)

TEMPLATES = Path(__file__).parent / "templates"
_TITLE = re.compile(r"^#\s+Step\s+\d+\b")
TEMPLATE = "rollbook"

# exit code -> (headline, colour class); the colour tells the state before a word is read
HEADLINES: dict[int, tuple[str, str]] = {
    0: ("Done: every step passed", "ok"),
    3: ("A step failed to execute: this record is partial", "bad"),
    4: ("Escalate now", "bad"),
    5: ("Waiting for a human decision", "wait"),
    6: ("A check failed", "bad"),
}
VERDICT_CLASS = {"pass": "ok", "skip": "muted", "needs_human": "wait", "fail": "bad", "escalate": "bad",
                 "error": "bad"}
TRIGGER_WORDS = {
    "evidence": "the Mission Control evidence gate failed",
    "slo": "the SLO checks failed",
    "evidence+slo": "both the evidence gate and the SLO checks failed",
    "error": "a metric could not be measured (provider error)",
    "other": "a metric outside the evidence and SLO gates failed",
    "none": "no failed analysis explains the abort",
}

STYLE = """
<style>
.rb-answer{border-left:8px solid #888;padding:.8em 1.2em;margin:0 0 1.2em;border-radius:4px;font-size:15px}
.rb-answer.ok{border-color:#1a7f37;background:#e6f4ea}.rb-answer.wait{border-color:#bf8700;background:#fff8c5}
.rb-answer.bad{border-color:#cf222e;background:#ffebe9}
.rb-answer h1{margin:.1em 0 .4em;font-size:1.5em}.rb-answer .rb-sub{color:#444;margin-bottom:.6em}
.rb-answer table{border-collapse:collapse;width:100%}
.rb-answer th{text-align:left;vertical-align:top;padding:.3em 1em .3em 0;white-space:nowrap;width:9em}
.rb-answer td{padding:.3em 0;vertical-align:top}
.rb-answer code,.rb-steps code{white-space:pre-wrap;word-break:break-all}
.rb-badge{display:inline-block;padding:0 .5em;border-radius:3px;font-weight:600;color:#fff;background:#888}
.rb-badge.ok{background:#1a7f37}.rb-badge.wait{background:#9a6700}.rb-badge.bad{background:#cf222e}
.rb-badge.muted{background:#8c959f}
.rb-steps{border-collapse:collapse;margin:.5em 0 1em;width:100%}
.rb-steps td,.rb-steps th{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
details.rb-step{border:1px solid #ddd;border-radius:4px;margin:.5em 0;padding:.2em .8em}
details.rb-step>summary{cursor:pointer;font-weight:600;padding:.3em 0}
.jp-RenderedHTMLCommon td,.jp-RenderedHTMLCommon th{white-space:pre-wrap;word-break:break-word;max-width:48em;
 text-align:left;vertical-align:top}
.jp-OutputArea-output pre{white-space:pre-wrap;word-break:break-word}
</style>
"""


def answer(info: RunInfo, steps: Sequence[StepResult]) -> dict[str, str]:
    """The 30-second answer as plain text: cause, MC's reason, action taken, state now, next step."""
    f = merge_findings(steps)
    return {"Cause": cause(f), "MC's reason": mc_reason(f), "Action taken": action_taken(f, steps),
            "State now": state_now(f, steps), "Next step": info.next_step or "see the steps below"}


def _say(value: Any) -> str:
    """A finding for people; a missing one says so."""
    if value is None or value == []:
        return "not established"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def cause(f: Mapping[str, Any]) -> str:
    """`the Mission Control evidence gate failed (mc-evidence-ok) in AnalysisRun …; revision 7 aborted`."""
    if f.get("trigger") is None and f.get("phase") is None:
        return "not established (steps 1–2 did not run or did not finish)"
    words = TRIGGER_WORDS.get(str(f.get("trigger")), f"trigger {_say(f.get('trigger'))}")
    metrics = f" ({_say(f.get('failed_metrics'))})" if f.get("failed_metrics") else ""
    run = f" in AnalysisRun {f['analysis_run']}" if f.get("analysis_run") else ""
    revision = f"; canary revision {f['canary_revision']} aborted" if f.get("canary_revision") is not None else ""
    return f"{words[0].upper()}{words[1:]}{metrics}{run}{revision}."


def mc_reason(f: Mapping[str, Any]) -> str:
    """MC's reason in its words, or why there is none."""
    if f.get("mc_reason") or f.get("mc_recorded"):
        return finding_quote(f)
    if f.get("trigger") == "slo":
        return "none: the evidence gate passed (the SLO checks failed)"
    return "not established"


def action_taken(f: Mapping[str, Any], steps: Sequence[StepResult]) -> str:
    """Every change made or dry-run outside the record, one per line; 'nothing' when there was none."""
    lines = [line.removeprefix("- ") for line in mutation_lines(f, steps)]
    return "\n".join(lines) or "nothing: no change was sent anywhere"


def state_now(f: Mapping[str, Any], steps: Sequence[StepResult]) -> str:
    """The Rollout at the end of the run and whether close-out was verified."""
    phase = f.get("phase_at_close") or f.get("phase")
    parts = [f"Rollout {_say(phase)}"]
    if f.get("promoted"):
        parts.append("the fixed release was promoted")
    elif f.get("stable_revision") is not None:
        parts.append(f"stable revision {f['stable_revision']} ({_say(f.get('stable_image'))}) serves the traffic")
    closeout = next((s for s in steps if s.name == "verify-closeout"), None)
    if closeout is None or closeout.verdict in ("skip", "error"):
        parts.append("close-out not verified (step 6 did not run)")
    elif f.get("closeout_ok"):
        parts.append("close-out verified")
    else:
        parts.append(f"close-out NOT verified: {closeout.reason}")
    return "; ".join(parts) + "."


def top_html(info: RunInfo, steps: Sequence[StepResult]) -> str:
    """The coloured answer box and the verdict table, as HTML (every value escaped)."""
    headline, colour = HEADLINES.get(info.exit_code, (EXIT_MEANING.get(info.exit_code, "Run finished"), "bad"))
    esc = html.escape
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{_lines(v, code=k == 'Next step')}</td></tr>"
                   for k, v in answer(info, steps).items())
    where = f"rollout {info.namespace}/{info.rollout}" + (f", context {info.context}" if info.context else "")
    sub = (f"{esc(info.incident)} · {esc(where)} · run {esc(info.run_id)}, {esc(info.started_at)} to "
           f"{esc(info.finished_at)} · exit {info.exit_code}: {esc(EXIT_MEANING.get(info.exit_code, '?'))}")
    if info.continued_from:
        c = info.continued_from
        sub += f"<br>continues record {esc(str(c.get('record')))} (steps {esc(_say(c.get('steps')))})"
    sub += "".join(f"<br>note: {esc(n)}" for n in info.notes)
    table = "".join(
        f"<tr><td>{s.step}</td><td>{esc(s.name)}</td><td><span class=\"rb-badge {VERDICT_CLASS.get(s.verdict, '')}\">"
        f"{esc(s.verdict)}</span></td><td>{esc(s.reason)}"
        f"{' <em>(from the earlier record)</em>' if s.from_record else ''}</td></tr>" for s in steps)
    return (f'{STYLE}<div class="rb-answer {colour}"><h1>{esc(headline)}</h1><div class="rb-sub">{sub}</div>'
            f'<table>{rows}</table></div>'
            f'<table class="rb-steps"><tr><th>#</th><th>step</th><th>verdict</th><th>reason</th></tr>{table}</table>')


def _lines(text: str, *, code: bool = False) -> str:
    """Escaped text with its line breaks kept; the next step's command set as code."""
    body = "<br>".join(html.escape(line) for line in text.splitlines())
    return f"<code>{body}</code>" if code and "rollbook " in text else body


def notebook(info: RunInfo, steps: Sequence[StepResult], run_dir: Path) -> Any:
    """The answer, then every step in its own folded section, as one notebook for nbconvert."""
    import nbformat  # lazily: only the report needs it

    merged = nbformat.v4.new_notebook()
    merged.cells.append(nbformat.v4.new_raw_cell("", metadata={"rollbook": {"top": top_html(info, steps)}}))
    for s in steps:
        cells = step_cells(s, Path(run_dir), merged) or [nbformat.v4.new_markdown_cell(
            f"Not run: {html.escape(s.reason)}" if s.verdict == "skip" else "No notebook was kept for this step.")]
        summary = html.escape(f"Step {s.step}: {s.name} — {s.verdict} — {s.reason}")
        cells[0].metadata["rollbook"] = {"open": summary, "verdict": VERDICT_CLASS.get(s.verdict, "")}
        cells[-1].metadata.setdefault("rollbook", {})["close"] = True
        merged.cells.extend(cells)
    return merged


def step_cells(s: StepResult, run_dir: Path, merged: Any) -> list[Any]:
    """A step notebook's narrative and outputs, without the parameters, connection cell and repeated headings."""
    import nbformat

    path = run_dir / s.notebook
    if s.verdict == "skip" or not path.exists():
        return []
    nb = nbformat.read(path, as_version=4)
    if nb.metadata.get("language_info", {}).get("name"):
        merged.metadata.setdefault("language_info", nb.metadata["language_info"])
    cells = list(nb.cells)
    dropped = {i for i, c in enumerate(cells) if c.cell_type == "code" and _boilerplate(c)}
    kept: list[Any] = []
    for i, cell in enumerate(cells):
        if i in dropped or (cell.cell_type == "markdown" and _narrates(cells, i, dropped)):
            continue
        if cell.cell_type == "markdown":
            source = _untitled(cell.source) if not kept else cell.source
            if source.strip() in ("", "## Verdict"):
                continue
            cell = nbformat.v4.new_markdown_cell(source)
        elif cell.cell_type == "code":
            # the step result is in record.json; nbconvert cannot render its mime type
            cell["outputs"] = [o for o in cell.get("outputs", []) if STEP_RESULT_MIME not in o.get("data", {})]
            if not cell["outputs"]:
                continue  # inputs are hidden: a cell without outputs is an empty box
        kept.append(cell)
    return kept


def _boilerplate(cell: Any) -> bool:
    """Parameters (the notebook's and papermill's) and the connection cell every step repeats."""
    tags = cell.get("metadata", {}).get("tags", [])
    return "parameters" in tags or "injected-parameters" in tags or "open_incident(" in cell.source


def _narrates(cells: Sequence[Any], i: int, dropped: set[int]) -> bool:
    """The parameters heading, or a markdown cell right before a dropped connection cell (it only introduces it)."""
    if cells[i].source.lstrip().startswith("## Parameters"):
        return True
    nxt = i + 1
    return nxt in dropped and "open_incident(" in cells[nxt].source


def _untitled(source: str) -> str:
    """A notebook's first markdown without its `# Step N — Title` line (the summary names the step)."""
    lines = source.splitlines()
    return "\n".join(lines[1:]).strip() if lines and _TITLE.match(lines[0]) else source
