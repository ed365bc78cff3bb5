"""The README's permission table is the one lib/rollbook/permissions.py generates (it cannot drift)."""

from __future__ import annotations

import re
from pathlib import Path

from rollbook.permissions import markdown_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_table_is_generated_from_the_permission_table() -> None:
    m = re.search(r"<!-- permissions:begin -->\n(.*?)\n<!-- permissions:end -->", README.read_text(encoding="utf-8"),
                  re.S)
    assert m, "README.md lost its <!-- permissions:begin/end --> markers"
    assert m[1] == markdown_table(), "README's permission table is stale: paste `python -m rollbook.permissions`"
