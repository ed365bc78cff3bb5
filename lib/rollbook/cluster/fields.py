"""Small readers of raw Argo/Kubernetes dicts: nested lookups, Go-style ints, revision, owners, hash, strategy."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, cast

from rollbook.cluster.models import Strategy

HASH_LABEL = "rollouts-pod-template-hash"
REVISION_ANNOTATION = "rollout.argoproj.io/revision"
_INT = re.compile(r"[+-]?\d+")


def _d(obj: Mapping[str, Any] | None, *keys: str) -> dict[str, Any]:
    """Nested dict lookup that treats missing or null values as empty dicts."""
    cur: Any = obj or {}
    for key in keys:
        cur = cur.get(key) if isinstance(cur, Mapping) else None
        cur = cur or {}
    return cast(dict[str, Any], cur if isinstance(cur, dict) else {})


def _int(value: Any, default: int = 0) -> int:
    """An integer field; missing means ``default`` (Go zero values)."""
    if isinstance(value, bool) or value is None:
        return default
    if isinstance(value, int):
        return value
    text = str(value).strip()
    return int(text) if _INT.fullmatch(text) else default


def revision_of(obj: Mapping[str, Any]) -> int:
    """The ``rollout.argoproj.io/revision`` annotation; 0 when absent or unparsable (as upstream)."""
    return _int(_d(obj, "metadata", "annotations").get(REVISION_ANNOTATION), 0)


def owner_uids(obj: Mapping[str, Any]) -> tuple[str, ...]:
    """UIDs of an object's owner references."""
    refs = _d(obj, "metadata").get("ownerReferences") or []
    return tuple(str(r.get("uid")) for r in refs if isinstance(r, Mapping) and r.get("uid"))


def pod_template_hash(obj: Mapping[str, Any]) -> str | None:
    """The ``rollouts-pod-template-hash`` label of a ReplicaSet, pod or AnalysisRun."""
    value = _d(obj, "metadata", "labels").get(HASH_LABEL)
    return str(value) if value else None


def strategy_of(rollout: Mapping[str, Any]) -> Strategy:
    """Canary, BlueGreen or Unknown, from ``spec.strategy``."""
    strategy = _d(rollout, "spec", "strategy")
    if "canary" in strategy and strategy["canary"] is not None:
        return "Canary"
    if "blueGreen" in strategy and strategy["blueGreen"] is not None:
        return "BlueGreen"
    return "Unknown"


def desired_replicas(rollout: Mapping[str, Any]) -> int:
    """``spec.replicas`` or Argo's default of 1."""
    return _int(_d(rollout, "spec").get("replicas"), 1)
