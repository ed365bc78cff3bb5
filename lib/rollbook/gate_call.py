"""What the evidence gate's web call asked MC: the URL in the run's spec, filled with the run's own args.

Argo substitutes `{{args.NAME}}` from the AnalysisRun's args; a release id written into the URL itself (or
a hard-coded provider config) is asked about whatever the argument says. Reading the call back tells which
wire carries a wrong release: the Rollout's argument, or the template's URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rollbook import diagnosis as dx
from rollbook.cluster.models import AnalysisRunInfo

_ARG = re.compile(r"\{\{\s*args\.([A-Za-z0-9_.-]+)\s*\}\}")
_RELEASE_IN_PATH = re.compile(r"/releases/([^/?#]+)/evidence")


@dataclass(frozen=True)
class GateCall:
    """The gate metric's URL as written in the run's spec, as called, and the release id in its path."""

    metric: str
    url: str
    called: str
    release_in_url: str | None
    from_argument: bool  # the release segment of the URL is `{{args.…}}`, not written into it

    def quote(self) -> str:
        return f"`{self.url}`"


def gate_call(run: AnalysisRunInfo | None) -> GateCall | None:
    """The evidence gate's web call of a run, or None when the run has no web evidence metric."""
    metric = dx.evidence_metric(run)
    if run is None or metric is None:
        return None
    web = (dx.metric_spec(run, metric.name).get("provider") or {}).get("web") or {}
    url = str(web.get("url") or "")
    if not url:
        return None
    args = dx.run_args(run)
    called = _ARG.sub(lambda m: args.get(m.group(1), m.group(0)), url)
    found = _RELEASE_IN_PATH.search(called)
    written = _RELEASE_IN_PATH.search(url)
    return GateCall(metric.name, url, called, found.group(1) if found else None,
                    bool(written and _ARG.search(written.group(1))))


def _analyses(rollout: dict[str, Any]) -> list[dict[str, Any]]:
    canary = ((rollout.get("spec") or {}).get("strategy") or {}).get("canary") or {}
    blocks = [s.get("analysis") or {} for s in canary.get("steps") or [] if isinstance(s, dict)]
    return [b for b in [*blocks, canary.get("analysis") or {}] if b]


def arg_source(rollout: dict[str, Any], name: str) -> str | None:
    """How the Rollout's analysis block sets an argument: `valueFrom.fieldRef.fieldPath: …` or `value: …`."""
    for block in _analyses(rollout):
        for arg in block.get("args") or []:
            if arg.get("name") != name:
                continue
            ref = ((arg.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
            if ref:
                return f"valueFrom.fieldRef.fieldPath: {ref}"
            if "value" in arg:
                return f"value: {arg['value']}"
            return f"valueFrom: {arg.get('valueFrom')}"
    return None


def template_names(rollout: dict[str, Any]) -> list[str]:
    """The (Cluster)AnalysisTemplates the Rollout's analysis blocks reference."""
    return [str(t["templateName"]) for b in _analyses(rollout) for t in b.get("templates") or [] if t.get("templateName")]
