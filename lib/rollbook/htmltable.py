"""A small table that a notebook displays as HTML (every cell escaped, nothing cut) and a terminal as text.

Hand-written rather than a pandas ``Styler``: the step notebooks only ever show a few static rows, and
importing pandas for them cost each step kernel ≈ 45 MiB and ≈ 0.5 s (six kernels per run; issue 7
item 4). report.py writes its own tables the same way.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

NA = "—"  # an empty cell (None, or a key a row does not have)
CELL_STYLE = ("text-align: left; vertical-align: top; white-space: pre-wrap; word-break: break-word; "
              "max-width: 48em")


class HtmlTable:
    """Rows of cells under named columns; ``_repr_html_`` for Jupyter, ``to_html()`` for anything else."""

    def __init__(self, rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None) -> None:
        self.rows = [dict(r) for r in rows]
        if columns is None:  # the keys in the order they first appear (as a DataFrame of records does)
            columns = list(dict.fromkeys(k for r in self.rows for k in r))
        self.columns = list(columns)

    def cells(self) -> list[list[str]]:
        """Each row's cells as text, in column order."""
        return [[NA if r.get(c) is None else str(r[c]) for c in self.columns] for r in self.rows]

    def to_html(self) -> str:
        esc = html.escape
        head = "".join(f'<th style="text-align: left">{esc(str(c))}</th>' for c in self.columns)
        body = "".join("<tr>" + "".join(f'<td style="{CELL_STYLE}">{esc(v)}</td>' for v in row) + "</tr>"
                       for row in self.cells())
        return f'<table class="rb-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        """Plain text (the notebook's text/plain output): a header line, then one line per row."""
        if not self.rows:
            return "(no rows)"
        lines = [" | ".join(map(str, self.columns))]
        lines += [" | ".join(v.replace("\n", "; ") for v in row) for row in self.cells()]
        return "\n".join(lines)
