"""Watch streaming: chunked JSON lines from a resourceVersion, Tables for kubectl, 410 as an ERROR event."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from rollbook.sandbox.apierrors import StoreError
from rollbook.sandbox.kubeapi.exchange import Exchange, int_param
from rollbook.sandbox.kubeapi.routing import Route

JSON = dict[str, Any]
_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def watch(ex: Exchange, route: Route) -> None:
    """A watch: chunked JSON lines; a too-old resourceVersion is a 200 with one ERROR event (410)."""
    labels, fields = ex.filters()
    if route.name:
        fields = ",".join(f for f in (fields, f"metadata.name={route.name}") if f)
    timeout = watch_timeout(ex.query)
    try:
        events = ex.store.watch(
            route.res.plural, route.namespace, resource_version=ex.query.get("resourceVersion", ""),
            label_selector=labels, field_selector=fields, timeout=timeout, stop=ex.stopping)
    except StoreError as e:
        if e.code != 410:
            raise
        ex.stream_json_lines(iter([{"type": "ERROR", "object": e.to_status()}]))
        return
    ex.stream_json_lines(_watch_lines(ex, route, events))


def _watch_lines(ex: Exchange, route: Route, events: Iterator[tuple[str, JSON]]) -> Iterator[JSON]:
    """Watch events as JSON objects, each a one-row Table when kubectl asked for tables."""
    try:
        for kind, obj in events:
            if ex.wants_table and kind != "ERROR":
                obj = ex.table_or(route, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]})
            yield {"type": kind, "object": obj}
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()


def watch_timeout(query: dict[str, str]) -> float | None:
    """``timeoutSeconds``, else the request ``timeout`` (a Go duration such as ``2s``), as upstream."""
    if query.get("timeoutSeconds"):
        return float(int_param(query, "timeoutSeconds"))
    text = query.get("timeout", "")
    parts = _GO_DURATION.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _GO_UNITS[u] for n, u in parts)
