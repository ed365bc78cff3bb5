"""Plots of an SLO finding: canary vs stable over time, the threshold, breaches shaded; units; PNG bytes."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from rollbook.prometheus import Series
from rollbook.slo.findings import SloFinding
from rollbook.slo.measure import TimedValue, series_points
from rollbook.slo.threshold import Threshold

if TYPE_CHECKING:  # matplotlib costs ~0.5 s to import: only the plotting functions load it
    from matplotlib.figure import Figure


@cache
def _figure_class() -> type[Figure]:
    """A matplotlib Figure that renders itself as PNG in Jupyter without pyplot or an inline backend."""
    from matplotlib.figure import Figure

    class SloFigure(Figure):
        def _repr_png_(self) -> bytes:
            return figure_png(self)

    return SloFigure


def plot_metric(finding: SloFinding, canary_series: Sequence[Series] = (),
                stable_series: Sequence[Series] = ()) -> Figure:
    """Canary vs stable over time, the threshold as a horizontal line, canary breaches shaded red."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = _figure_class()(figsize=(8, 3.2), layout="constrained")
    FigureCanvasAgg(fig)  # Agg explicitly: no display, and no change to the process-wide pyplot backend
    ax = fig.add_subplot()
    canary = series_points(canary_series) or [p for p in finding.canary_points if p[0] is not None]
    stable = series_points(stable_series) or [p for p in finding.stable_points if p[0] is not None]
    _line(ax, stable, "stable", "tab:blue", ".-")
    _line(ax, canary, "canary", "tab:orange", ".-")
    if canary_series and finding.canary_source == "measurements":
        measured = [p for p in finding.canary_points if p[0] is not None]
        _line(ax, measured, "Argo measurements", "tab:red", "o")
    if finding.threshold is not None:
        t = finding.threshold
        ax.axhline(t.value, color="tab:red", linestyle="--", linewidth=1.2, label=f"threshold {t.describe()}",
                   gid="threshold")
        _shade(ax, canary, t)
    verdict = {True: "canary breached", False: "canary within threshold", None: "no verdict"}[finding.breached]
    ax.set_title(f"{finding.name} — {verdict}")
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel(f"{finding.name} ({unit_of(finding.query, finding.name)})")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")
    return fig


_RATIO = re.compile(r"\)\s*/\s*(sum|rate|increase|count)\b")


def unit_of(query: str | None, name: str = "") -> str:
    """The unit a PromQL query's values are in, read from Prometheus' naming rules (`_seconds`, `_bytes`,
    a ratio of rates); "as the query returns it" when the query does not say."""
    q = (query or "").lower()
    if _RATIO.search(q) or re.search(r"(^|[_\W])ratio\b", q) or "ratio" in name.lower().split("-"):
        return "ratio, 0–1"
    if "_seconds" in q:
        return "seconds"
    if "_bytes" in q:
        return "bytes"
    if "rate(" in q or "irate(" in q:
        return "per second"
    return "as the query returns it"


def _line(ax: Any, points: Sequence[TimedValue], label: str, color: str, fmt: str) -> None:
    if points:
        xs: list[Any] = [p[0] for p in points]
        ax.plot(xs, [_finite(p[1]) for p in points], fmt, color=color, label=label, gid=label)


def _shade(ax: Any, points: Sequence[TimedValue], t: Threshold) -> None:
    """Shade between the canary line and the threshold where the canary breaches."""
    if not points:
        return
    xs = [p[0] for p in points]
    ys = [_finite(p[1]) for p in points]
    where = [t.breaches(p[1]) for p in points]
    if any(where):
        ax.fill_between(xs, ys, t.value, where=where, interpolate=True, color="tab:red", alpha=0.25,
                        label="breach", gid="breach")


def _finite(value: float) -> float:
    """+/-Inf cannot be drawn; show it as a gap like NaN."""
    return value if math.isfinite(value) else math.nan


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (for records, HTML reports and tickets)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
