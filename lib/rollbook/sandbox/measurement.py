"""What Argo does with one measurement: jsonPath, successCondition, a metric's and a run's verdict (pure)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from rollbook.sandbox.argo_objects import Obj, now_rfc3339

DEFAULT_ERROR_LIMIT = 4          # Argo's consecutiveErrorLimit default
_COND_RE = re.compile(r"^\s*result((?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*)\s*(==|!=|<=|>=|<|>)\s*(.+?)\s*$")


def _json_path(body: Any, path: str) -> tuple[Any, str | None]:
    """Argo's jsonPath for the forms templates use: ``{$}`` and ``{$.a.b}``."""
    inner = path.strip().removeprefix("{").removesuffix("}").strip()
    value = body
    for key in [k for k in inner.removeprefix("$").split(".") if k]:
        if not isinstance(value, dict) or key not in value:
            return None, f"failed to parse JSON path {path}: {key} is not found"
        value = value[key]
    return value, None


def _stored_value(value: Any) -> str:
    """measurements[].value: strings as they are, everything else compact JSON with sorted keys."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))


def _evaluate(condition: str, value: Any) -> bool:
    """The successCondition forms templates use (``result.ok == true``, ``result[0] <= 0.5``).

    Hand-written because Argo's expression language (expr-lang) has no Python port; anything else
    counts as not successful, which fails closed like a gate should.
    """
    m = _COND_RE.match(condition or "")
    if not m:
        return False
    path, op, literal = m.groups()
    left = value
    for part in re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]", path):
        try:
            left = left[part[0]] if part[0] else left[int(part[1])]
        except (KeyError, IndexError, TypeError):
            return False
    try:
        right = json.loads(literal)
    except ValueError:
        right = literal.strip("'\"")
    ops: dict[str, Callable[[Any, Any], bool]] = {
        "==": lambda a, b: bool(a == b), "!=": lambda a, b: bool(a != b), "<=": lambda a, b: bool(a <= b),
        ">=": lambda a, b: bool(a >= b), "<": lambda a, b: bool(a < b), ">": lambda a, b: bool(a > b)}
    try:
        return ops[op](left, right)
    except TypeError:
        return False


def _copied_result(metric: Obj, previous: Obj | None) -> Obj:
    """A non-web metric: the same values as the previous run of this pod hash (same release, same SLOs)."""
    now = now_rfc3339()
    if previous is None:
        return {"name": metric["name"], "phase": "Successful", "count": 1, "successful": 1,
                "measurements": [{"phase": "Successful", "value": "[0]", "startedAt": now, "finishedAt": now}]}
    result = json.loads(json.dumps(previous))
    for m in result.get("measurements") or []:
        m["startedAt"] = m["finishedAt"] = now
    return dict(result)


_WORST = {"Error": 3, "Failed": 2, "Inconclusive": 1, "Successful": 0, "Running": 0}


def _run_verdict(run: Obj, results: list[Obj]) -> tuple[str, str]:
    """The run's phase and message from its worst metric, in Argo's wording."""
    worst = max(results, key=lambda r: _WORST.get(r.get("phase", ""), 0), default=None)
    if worst is None or _WORST.get(worst.get("phase", ""), 0) == 0:
        return "Successful", ""
    metric: Obj = next((m for m in (run.get("spec") or {}).get("metrics") or [] if m["name"] == worst["name"]), {})
    name, phase = worst["name"], worst["phase"]
    if phase == "Error":
        limit = int(metric.get("consecutiveErrorLimit", DEFAULT_ERROR_LIMIT))
        msg = (f'Metric "{name}" assessed Error due to consecutiveErrors ({worst.get("consecutiveError", 0)}) '
               f"> consecutiveErrorLimit ({limit})")
    elif phase == "Failed":
        msg = (f'Metric "{name}" assessed Failed due to failed ({worst.get("failed", 0)}) '
               f'> failureLimit ({int(metric.get("failureLimit", 0))})')
    else:
        msg = (f'Metric "{name}" assessed Inconclusive due to inconclusive ({worst.get("inconclusive", 0)}) '
               f'> inconclusiveLimit ({int(metric.get("inconclusiveLimit", 0))})')
    if worst.get("message"):
        msg += f': "Error Message: {worst["message"]}"'
    return phase, msg


def _summary(results: list[Obj]) -> Obj:
    """status.runSummary: how many metrics ended in each phase."""
    summary: Obj = {"count": len(results)}
    for r in results:
        key = r.get("phase", "").lower()
        if key in ("successful", "failed", "error", "inconclusive"):
            summary[key] = summary.get(key, 0) + 1
    return summary
