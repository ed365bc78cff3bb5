"""Rows for docs/reliability.md: each case records what it expected and what it observed.

`bench/reliability.py` runs these tests with ROLLBOOK_RELIABILITY_ROWS=FILE and renders the rows; the
test itself asserts the same comparison, so a row can only read "ok" if its test passed."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

Row = Callable[..., None]


def write_row(table: str, case: str, expected: str, observed: str, ok: bool, **extra: object) -> None:
    """Append one row to $ROLLBOOK_RELIABILITY_ROWS (a JSON-lines file), when set."""
    target = os.environ.get("ROLLBOOK_RELIABILITY_ROWS")
    if target:
        with Path(target).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"table": table, "case": case, "expected": expected, "observed": observed,
                                 "ok": ok, **extra}) + "\n")


@pytest.fixture
def row() -> Row:
    """`row(table, case, expected, observed, ok)`: record a line of the reliability table."""
    return write_row
