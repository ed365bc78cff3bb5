"""A metric's threshold out of Argo's success/failure condition, and the breach rule applied to a value."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Op = Literal["<", "<=", ">", ">=", "==", "!="]
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
}
_MIRROR: dict[str, Op] = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_SUBJECT = r"(?:result(?:\[(?P<idx{n}>\d+)\])?|(?:asFloat|float)\(result(?:\[(?P<fidx{n}>\d+)\])?\))"
_CMP_LEFT = re.compile(rf"^{_SUBJECT.format(n=1)}\s*(?P<op>[<>]=?|[=!]=)\s*(?P<num>{_NUM})$")
_CMP_RIGHT = re.compile(rf"^(?P<num>{_NUM})\s*(?P<op>[<>]=?|[=!]=)\s*{_SUBJECT.format(n=2)}$")
_ALL = re.compile(rf"^all\(result,\s*\{{?\s*#\s*(?P<op>[<>]=?|[=!]=)\s*(?P<num>{_NUM})\s*\}}?\)$")
_EMPTY = re.compile(r"^len\(result\)\s*==\s*0$")
_NAN = re.compile(r"^isNaN\(result(?:\[\d+\])?\)$")


@dataclass(frozen=True)
class Threshold:
    """`value op threshold` is the good side (from a successCondition) or the bad side (failureCondition)."""

    op: Op
    value: float
    condition: Literal["success", "failure"]
    expression: str
    index: int | None = 0  # which element of `result`; None: every element (`result` or `all(...)`)
    empty_ok: bool = False  # `len(result) == 0 || ...`: no data counts as success
    nan_ok: bool = False  # `isNaN(result[0]) || ...`

    def breaches(self, value: float) -> bool:
        """Whether one value breaches the condition (NaN compares false, as in Argo's expr)."""
        if math.isnan(value) and self.nan_ok:
            return False
        holds = _OPS[self.op](value, self.value)
        return not holds if self.condition == "success" else holds

    @property
    def good_side(self) -> Op:
        """The operator describing healthy values, whichever condition the threshold came from."""
        if self.condition == "success":
            return self.op
        return {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}[self.op]  # type: ignore[return-value]

    def describe(self) -> str:
        """E.g. `<= 0.01`."""
        return f"{self.good_side} {self.value:g}"


def parse_threshold(
    success_condition: str | None, failure_condition: str | None = None
) -> tuple[Threshold | None, str | None]:
    """(threshold, None) for the common condition forms, else (None, why not)."""
    reasons: list[str] = []
    for kind, expr in (("success", success_condition), ("failure", failure_condition)):
        if not expr or not expr.strip():
            continue
        threshold, why = _parse_condition(expr.strip(), kind)  # type: ignore[arg-type]
        if threshold:
            return threshold, None
        reasons.append(f"{kind}Condition {expr.strip()!r}: {why}")
    if not reasons:
        return None, "the metric has neither successCondition nor failureCondition"
    return None, "; ".join(reasons)


def _parse_condition(expr: str, kind: Literal["success", "failure"]) -> tuple[Threshold | None, str]:
    """One condition: `||` of at most one comparison with a number plus `len(result) == 0` / `isNaN(...)`."""
    if "&&" in expr or " and " in expr:
        return None, "conjunctions (&&) are not understood"
    empty_ok = nan_ok = False
    found: tuple[Op, float, int | None] | None = None
    for part in (p.strip() for p in re.split(r"\|\||\bor\b", _unwrap(expr))):
        part = _unwrap(part)
        if _EMPTY.match(part):
            empty_ok = True
        elif _NAN.match(part):
            nan_ok = True
        elif (cmp := _comparison(part)) is not None:
            if found is not None:
                return None, "more than one comparison"
            found = cmp
        else:
            return None, f"cannot read {part!r}"
    if found is None:
        return None, "no comparison of the result with a number"
    op, value, index = found
    return Threshold(op, value, kind, expr, index, empty_ok and kind == "success", nan_ok and kind == "success"), ""


def _comparison(part: str) -> tuple[Op, float, int | None] | None:
    """(op as `result op number`, number, element index) for `result[0] <= 0.5`, `0.5 >= result`, `all(...)`."""
    if m := _CMP_LEFT.match(part):
        idx = m.group("idx1") or m.group("fidx1")
        return m.group("op"), float(m.group("num")), int(idx) if idx else None  # type: ignore[return-value]
    if m := _CMP_RIGHT.match(part):
        idx = m.group("idx2") or m.group("fidx2")
        return _MIRROR[m.group("op")], float(m.group("num")), int(idx) if idx else None
    if m := _ALL.match(part):
        return m.group("op"), float(m.group("num")), None  # type: ignore[return-value]
    return None


def _unwrap(expr: str) -> str:
    """Drop one pair of parentheses around the whole expression."""
    expr = expr.strip()
    if expr.startswith("(") and expr.endswith(")") and expr.count("(") == expr.count(")"):
        inner = expr[1:-1]
        if inner.count("(") == inner.count(")"):
            return inner.strip()
    return expr
