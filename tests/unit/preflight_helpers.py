"""The reference objects of examples/ as raw dicts, and a Gate built from objects without a cluster."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from rollbook.cluster.gate import Fetched
from rollbook.preflight import GATE_RULES, Finding
from rollbook.preflight.wiring import Gate, Use, d, ref_key, template_refs

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NS = "prod"
Obj = dict[str, Any]


def reference() -> dict[str, Obj]:
    """Fresh copies of examples/ by kind and name: rollout, mc, slo, configmap (+ services)."""
    objs: dict[str, Obj] = {}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                doc["metadata"].setdefault("namespace", NS)
                objs[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return {"rollout": objs["Rollout/api"], "mc": objs["AnalysisTemplate/mc-evidence-ok"],
            "slo": objs["AnalysisTemplate/ig-slo-checks"],
            "configmap": objs["ConfigMap/argo-rollouts-notification-configmap"]}


def gate_of(rollout: Obj, templates: list[Obj], *, configmap: Fetched | None = None,
            deployment: Obj | None = None, controller_namespace: str = "argo-rollouts") -> Gate:
    """The Gate the runner would build from these objects (templates missing from the list are absent)."""
    by_key = {("" if t["kind"] == "ClusterAnalysisTemplate" else t["metadata"].get("namespace", NS),
               t["metadata"]["name"]): t for t in templates}
    uses = tuple(Use(rollout, path, block, i, ref,
                     Fetched(copy.deepcopy(by_key[ref_key(rollout, ref)])) if ref_key(rollout, ref) in by_key
                     else Fetched(None, absent=True))
                 for path, block, i, ref in template_refs(rollout))
    if d(rollout, "spec", "workloadRef"):
        labels = d(deployment, "spec", "template", "metadata", "labels") if deployment else None
        where = f"Deployment/{d(rollout, 'spec', 'workloadRef').get('name')}"
    else:
        labels, where = d(rollout, "spec", "template", "metadata", "labels"), ""
    notification = ((controller_namespace, configmap or Fetched(None, absent=True)),
                    (rollout["metadata"]["namespace"], Fetched(None, absent=True)))
    return Gate(rollout, uses, labels, where, notification, controller_namespace)


def check(objs: dict[str, Obj], *, configmap: Fetched | None = None, deployment: Obj | None = None) -> list[Finding]:
    """Every gate rule over the reference objects (the ConfigMap read as given, else the example's)."""
    cm = configmap if configmap is not None else Fetched(copy.deepcopy(objs["configmap"]))
    gate = gate_of(objs["rollout"], [objs["mc"], objs["slo"]], configmap=cm, deployment=deployment)
    return [f for rule in GATE_RULES for f in rule(gate)]


def step_analysis(rollout: Obj) -> Obj:
    """The reference Rollout's analysis step (steps[2].analysis)."""
    return rollout["spec"]["strategy"]["canary"]["steps"][2]["analysis"]


def arg(rollout: Obj, name: str) -> Obj:
    """One argument of the analysis step."""
    return next(a for a in step_analysis(rollout)["args"] if a["name"] == name)
