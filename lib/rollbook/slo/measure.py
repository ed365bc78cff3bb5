"""Values out of Argo's measurements and Prometheus series: parsed numbers, timed points, timestamps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from rollbook.prometheus import Series

TimedValue = tuple[datetime | None, float]


def parse_measurement(value: str | None) -> list[float] | None:
    """Argo's stored Prometheus value as floats: `"[0.034]"`, `"[0.1,0.2]"`, `"[]"`, `"0.034"`, `"NaN"`."""
    if value is None:
        return None
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        items = [item.strip() for item in text[1:-1].split(",") if item.strip()]
    else:
        items = [text]
    try:
        return [float(item) for item in items]
    except ValueError:
        return None  # not a Prometheus value (e.g. a web provider's JSON)


def measured_points(result: Mapping[str, Any], index: int | None = 0) -> list[TimedValue]:
    """(finishedAt, value) of each measurement that has a number (element `index`; None: all elements)."""
    points: list[TimedValue] = []
    for m in result.get("measurements") or ():
        values = parse_measurement(m.get("value"))
        if not values:
            continue
        at = parse_time(m.get("finishedAt") or m.get("startedAt"))
        chosen = values if index is None else values[index:index + 1]
        points.extend((at, v) for v in chosen)
    return points


def parse_time(raw: Any) -> datetime | None:
    """An RFC 3339 timestamp as Kubernetes writes it (`...Z`), or None."""
    if not raw:
        return None
    try:
        return datetime.fromisoformat(str(raw))
    except ValueError:
        return None


def series_points(series: Sequence[Series]) -> list[TimedValue]:
    """All points of all series, in time order (several series: e.g. one per pod)."""
    points: list[TimedValue] = [p for s in series for p in s.points]
    return sorted(points, key=lambda p: p[0].timestamp() if p[0] else 0.0)
