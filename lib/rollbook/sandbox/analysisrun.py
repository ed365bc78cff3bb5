"""The AnalysisRuns the simulated controller creates: Argo's name, labels, merged templates, resolved args,
and one measurement round's metric results (web metrics asked of MC, the others copied)."""

from __future__ import annotations

import itertools
import uuid

from rollbook.sandbox.argo_objects import (
    HASH_LABEL,
    REVISION,
    Obj,
    _canary,
    _field_value,
    _meta,
    _owner_ref,
    _revision,
    _rs_release_id,
    _steps,
    now_rfc3339,
)
from rollbook.sandbox.measurement import _copied_result
from rollbook.sandbox.replicas import latest_run, record_event
from rollbook.sandbox.store import Store, StoreError
from rollbook.sandbox.webprovider import WebProvider


def create_run(store: Store, ro: Obj, canary_rs: Obj, step_index: int) -> Obj:
    """A Running AnalysisRun named like Argo's, with the collision suffix .1, .2, ..."""
    ns, name = _meta(ro)["namespace"], _meta(ro)["name"]
    h, rev = _meta(canary_rs)["labels"][HASH_LABEL], _revision(canary_rs)
    base = f"{name}-{h}-{rev}-{step_index}"
    existing = {_meta(r)["name"]: r for r in store.list("analysisruns", ns)[0]}
    run_name = next(n for n in (base if i == 0 else f"{base}.{i}" for i in itertools.count()) if n not in existing)
    previous = latest_run(store, ns, ro, h)
    labels = dict(((ro.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})
    # Argo reads analysisRunMetadata from the analysis block (steps[].analysis); the canary-level one is
    # not an Argo field, still honoured so the bundled scenarios' retried runs keep their label
    labels.update((_canary(ro).get("analysisRunMetadata") or {}).get("labels") or {})
    labels.update(((_steps(ro)[step_index].get("analysis") or {}).get("analysisRunMetadata") or {}).get("labels") or {})
    labels.update({"rollout-type": "Step", HASH_LABEL: h, "step-index": str(step_index)})
    spec = (previous or {}).get("spec") or run_spec(store, ro, canary_rs, step_index)
    run = {"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisRun",
           "metadata": {"name": run_name, "namespace": ns, "uid": str(uuid.uuid4()), "labels": labels,
                        "annotations": {REVISION: str(rev)}, "ownerReferences": [_owner_ref(ro)]},
           "spec": spec,
           "status": {"phase": "Running", "startedAt": now_rfc3339(), "metricResults": [],
                      "runSummary": {"count": len(spec.get("metrics") or [])}, "dryRunSummary": {}}}
    return store.create("analysisruns", ns, run, system=True)


def run_spec(store: Store, ro: Obj, canary_rs: Obj, step_index: int) -> Obj:
    """Merge the step's AnalysisTemplates into one run spec (no previous run to copy from)."""
    ns = _meta(ro)["namespace"]
    step = _steps(ro)[step_index]["analysis"]
    metrics: list[Obj] = []
    for ref in step.get("templates") or []:
        try:
            tmpl = store.get("analysistemplates", ns, ref.get("templateName", ""))
        except StoreError:
            continue
        metrics.extend((tmpl.get("spec") or {}).get("metrics") or [])
    labels = ((canary_rs.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
    args = [{"name": "release-id", "value": labels.get("release-id", "")},
            {"name": "canary-hash", "value": labels.get(HASH_LABEL, "")}, {"name": "namespace", "value": ns}]
    for arg in step.get("args") or []:  # the step's own args, resolved as Argo does, win
        value = arg_value(store, ro, canary_rs, arg)
        args = [a for a in args if a["name"] != arg.get("name")]
        args.append({"name": arg.get("name"), **value})
    return {"args": args, "metrics": metrics}


def arg_value(store: Store, ro: Obj, canary_rs: Obj, arg: Obj) -> Obj:
    """One analysis argument as Argo's BuildArgumentsForRolloutAnalysisRun resolves it."""
    source = arg.get("valueFrom") or {}
    if "fieldRef" in source:
        path = str((source.get("fieldRef") or {}).get("fieldPath") or "")
        value = _field_value(ro, path)
        if value is None:  # Argo cannot create the run ("invalid path ... in rollout"); the sandbox says so
            record_event(store, ro, "Warning", "AnalysisRunError", f"invalid path {path} in rollout")
            return {"value": _rs_release_id(canary_rs) or ""}
        return {"value": value}
    if "podTemplateHashValue" in source:
        return {"value": _meta(canary_rs)["labels"].get(HASH_LABEL, "")}
    if source:
        return {"valueFrom": source}
    return {"value": str(arg.get("value", ""))}


def measure_round(web: WebProvider, ro: Obj, run: Obj, previous: Obj | None) -> tuple[list[Obj], bool]:
    """Metric results of this measurement round; True when an errored web metric should be retried."""
    old = {r["name"]: r for r in (run.get("status") or {}).get("metricResults") or []}
    prev = {r["name"]: r for r in ((previous or {}).get("status") or {}).get("metricResults") or []}
    results, retry = [], False
    for metric in (run.get("spec") or {}).get("metrics") or []:
        provider = metric.get("provider") or {}
        if "web" in provider:
            result = web.web_result(ro, run, metric, old.get(metric["name"]))
            retry = retry or result["phase"] == "Running"
        else:
            result = _copied_result(metric, prev.get(metric["name"]))
        results.append(result)
    return results, retry

