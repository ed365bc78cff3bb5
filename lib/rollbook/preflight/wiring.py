"""How a Rollout is wired to its gate: analysis blocks, template uses, args, the evidence and SLO metrics.

Pure helpers over raw objects (what the API sent). A *use* is one template referenced from one analysis
block of one Rollout: the rules judge a template through the Rollout that passes it its args.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from rollbook.cluster.gate import Fetched

RawObject = dict[str, Any]
# MC's gate endpoint (evidence-api.md): a web metric calling it is the evidence gate, whatever its name
EVIDENCE_PATH = re.compile(r"/releases/(?P<release>[^/?#]+)/evidence-status")
ARG_REF = re.compile(r"\{\{\s*args\.([A-Za-z0-9_.-]+?)\s*\}\}")
# utils/defaults/defaults.go DefaultConsecutiveErrorLimit; analysis/analysis.go DefaultMeasurementHistoryLimit
DEFAULT_CONSECUTIVE_ERROR_LIMIT = 4
DEFAULT_MEASUREMENTS_KEPT = 10


def d(obj: Any, *keys: str) -> dict[str, Any]:
    """A nested mapping, {} where anything on the way is missing or not a mapping."""
    cur = obj
    for key in keys:
        cur = cur.get(key) if isinstance(cur, Mapping) else None
    return dict(cur) if isinstance(cur, Mapping) else {}


def items(obj: Any, key: str) -> list[dict[str, Any]]:
    """The mappings of a list field (non-mappings dropped)."""
    value = obj.get(key) if isinstance(obj, Mapping) else None
    return [dict(v) for v in value or [] if isinstance(v, Mapping)] if isinstance(value, list) else []


def name_of(obj: Mapping[str, Any]) -> str:
    """metadata.name."""
    return str(d(obj, "metadata").get("name") or "")


def namespace_of(obj: Mapping[str, Any]) -> str:
    """metadata.namespace ("" for cluster-scoped objects)."""
    return str(d(obj, "metadata").get("namespace") or "")


def as_int(value: Any) -> int | None:
    """An int field (Argo's IntOrString too); None when absent or an unresolved ``{{args.x}}`` string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return None


@dataclass(frozen=True)
class Use:
    """One template as one analysis block of one Rollout uses it."""

    rollout: RawObject
    block_path: str  # e.g. spec.strategy.canary.steps[2].analysis
    block: RawObject
    ref_index: int
    ref: RawObject
    fetched: Fetched

    @property
    def cluster_scope(self) -> bool:
        """``clusterScope: true``: a ClusterAnalysisTemplate."""
        return bool(self.ref.get("clusterScope"))

    @property
    def template_name(self) -> str:
        """The referenced name."""
        return str(self.ref.get("templateName") or "")

    @property
    def kind(self) -> str:
        """AnalysisTemplate or ClusterAnalysisTemplate."""
        return "ClusterAnalysisTemplate" if self.cluster_scope else "AnalysisTemplate"

    @property
    def object(self) -> str:
        """Kind/name for a finding."""
        return f"{self.kind}/{self.template_name}"

    @property
    def namespace(self) -> str:
        """The template's namespace ("" when cluster-scoped)."""
        return "" if self.cluster_scope else namespace_of(self.rollout)

    @property
    def template(self) -> RawObject | None:
        """The template object, when it was read."""
        return self.fetched.obj

    def metrics(self) -> list[tuple[int, RawObject]]:
        """The template's metrics with their index."""
        return list(enumerate(items(d(self.template, "spec"), "metrics")))

    def block_arg(self, name: str) -> tuple[int, RawObject] | None:
        """The Rollout's analysis argument of that name, with its index."""
        return next(((i, a) for i, a in enumerate(items(self.block, "args")) if a.get("name") == name), None)

    def template_arg(self, name: str) -> tuple[int, RawObject] | None:
        """The template's own declaration of an argument, with its index."""
        args = items(d(self.template, "spec"), "args")
        return next(((i, a) for i, a in enumerate(args) if a.get("name") == name), None)


@dataclass(frozen=True)
class Gate:
    """One Rollout and everything its gate is made of, as read (pure data for the rules)."""

    rollout: RawObject
    uses: tuple[Use, ...] = ()
    pod_labels: dict[str, str] | None = None  # the pod template's labels; None when unknown
    pod_labels_object: str = ""  # where the pod template lives: the Rollout, or its workloadRef Deployment
    notification: tuple[tuple[str, Fetched], ...] = ()  # (namespace, ConfigMap read) in lookup order
    controller_namespace: str = "argo-rollouts"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The Rollout's name."""
        return name_of(self.rollout)

    @property
    def namespace(self) -> str:
        """The Rollout's namespace."""
        return namespace_of(self.rollout)

    @property
    def object(self) -> str:
        """Rollout/name for a finding."""
        return f"Rollout/{self.name}"


def analysis_blocks(rollout: Mapping[str, Any]) -> list[tuple[str, RawObject]]:
    """Every analysis block of a Rollout with its path: canary steps, background, blue-green pre/post."""
    canary = d(rollout, "spec", "strategy", "canary")
    blue_green = d(rollout, "spec", "strategy", "blueGreen")
    blocks = [(f"spec.strategy.canary.steps[{i}].analysis", d(step, "analysis"))
              for i, step in enumerate(items(canary, "steps")) if d(step, "analysis")]
    blocks += [(path, block) for path, block in (
        ("spec.strategy.canary.analysis", d(canary, "analysis")),
        ("spec.strategy.blueGreen.prePromotionAnalysis", d(blue_green, "prePromotionAnalysis")),
        ("spec.strategy.blueGreen.postPromotionAnalysis", d(blue_green, "postPromotionAnalysis"))) if block]
    return blocks


def template_refs(rollout: Mapping[str, Any]) -> Iterator[tuple[str, RawObject, int, RawObject]]:
    """(block path, block, index, template ref) for every template a Rollout names."""
    for path, block in analysis_blocks(rollout):
        for i, ref in enumerate(items(block, "templates")):
            if ref.get("templateName"):
                yield path, block, i, ref


def ref_key(rollout: Mapping[str, Any], ref: Mapping[str, Any]) -> tuple[str, str]:
    """(namespace, name) of a template ref; namespace "" for a ClusterAnalysisTemplate."""
    return ("" if ref.get("clusterScope") else namespace_of(rollout), str(ref.get("templateName")))


def provider(metric: Mapping[str, Any]) -> tuple[str, RawObject]:
    """The metric's provider name and settings (``("", {})`` when there is none)."""
    prov = d(metric, "provider")
    name = next(iter(prov), "")
    return name, d(prov, name) if name else {}


def is_evidence(metric: Mapping[str, Any]) -> bool:
    """A web metric calling MC's evidence-status endpoint (the playbook's `mc-evidence-ok`, by any name)."""
    kind, settings = provider(metric)
    return kind == "web" and bool(EVIDENCE_PATH.search(str(settings.get("url") or "")))


def is_slo(metric: Mapping[str, Any]) -> bool:
    """A Prometheus metric (the playbook's `ig-slo-checks`)."""
    return provider(metric)[0] == "prometheus"


def release_arg(metric: Mapping[str, Any]) -> str | None:
    """The argument the evidence URL puts in the release path (None when the path holds a literal id)."""
    match = EVIDENCE_PATH.search(str(provider(metric)[1].get("url") or ""))
    ref = ARG_REF.fullmatch(match["release"]) if match else None
    return ref[1] if ref else None


def arg_refs(text: str) -> list[str]:
    """The ``{{args.X}}`` names a string uses, in order, once each."""
    return list(dict.fromkeys(ARG_REF.findall(text)))


def strings(obj: Any) -> Iterator[str]:
    """Every string inside a nested object (to find the ``{{args.X}}`` a metric uses anywhere)."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, Mapping):
        for value in obj.values():
            yield from strings(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from strings(value)


def effective_count(metric: Mapping[str, Any]) -> int | None:
    """Measurements Argo takes when all succeed: count, else 1 without an interval, else unbounded (None).

    analysis_types.go Metric.EffectiveCount: no count and no interval means one measurement; an interval
    without a count measures until the analysis ends.
    """
    count = as_int(metric.get("count"))
    if count:
        return count
    if metric.get("count") not in (None, 0, "0", ""):
        return None  # an unresolved {{args.x}}: unknown, treat as unbounded
    return None if metric.get("interval") else 1


def error_limit(metric: Mapping[str, Any]) -> int | None:
    """consecutiveErrorLimit or Argo's default 4 (None when it is an unresolved argument)."""
    raw = metric.get("consecutiveErrorLimit")
    return DEFAULT_CONSECUTIVE_ERROR_LIMIT if raw is None else as_int(raw)


def go_regex_matches(pattern: str, name: str) -> bool:
    """Argo's dryRun / measurementRetention matching: Go regexp.MatchString, unanchored (helpers.go)."""
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return pattern == name


def dry_run_entries(use: Use) -> list[tuple[str, str]]:
    """(field path, metricName pattern) of the template's and the Rollout block's dryRun entries."""
    found = [(f"spec.dryRun[{i}].metricName", str(e.get("metricName") or ""))
             for i, e in enumerate(items(d(use.template, "spec"), "dryRun"))]
    found += [(f"{use.block_path}.dryRun[{i}].metricName", str(e.get("metricName") or ""))
              for i, e in enumerate(items(use.block, "dryRun"))]
    return [(p, m) for p, m in found if m]


def retention_limit(use: Use, metric_name: str) -> int | None:
    """The measurementRetention limit that applies to a metric (the Rollout block's wins), else None."""
    limit = None
    for source in (items(d(use.template, "spec"), "measurementRetention"), items(use.block, "measurementRetention")):
        for entry in source:
            if go_regex_matches(str(entry.get("metricName") or ""), metric_name) and (as_int(entry.get("limit")) or 0) > 0:
                limit = as_int(entry.get("limit"))
    return limit
