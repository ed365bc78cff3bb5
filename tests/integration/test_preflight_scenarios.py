"""Every scenario gets a preflight verdict, and the findings agree with what its objects show.

Discovered, never listed: the built-in scenarios, every folder under tests/scenarios/, and the upstream
Argo fixtures. Each is loaded into a sandbox and checked through the real client. The expectations are
computed from the loaded objects, independently of the rules:
- what the runbooks could not establish from the cluster must be a finding: an evidence measurement
  without MC's reason (the template's jsonPath), a failed run garbage-collected (the history limit), runs
  without `rollout=<name>` (the label), a run judging another release than the canary's pod-template label
  (the release wiring), a metric in dry-run, a metric that errored into an abort at the default error limit;
- and both ways: a template the Rollout names that does not exist, an evidence jsonPath that is not `{$}`;
- every finding names an object that exists and a field whose list indexes exist; exit 1 iff an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rollbook import config as config_mod
from rollbook.preflight import Finding, Report, run_preflight
from rollbook.sandbox.server import Sandbox

ROOT = Path(__file__).resolve().parents[2]
FIXTURES: Path | None = ROOT / "fixtures" / "argo-rollouts"   # shipped in the project


def _folders() -> list[Path]:
    roots = [ROOT / "lib" / "rollbook" / "sandbox" / "scenarios", ROOT / "tests" / "scenarios"]
    roots += [FIXTURES] if FIXTURES else []
    return sorted(p for root in roots for p in root.iterdir() if p.is_dir() and any(p.glob("*.y*ml")))


SCENARIOS = _folders()
Obj = dict[str, Any]
EVIDENCE = re.compile(r"/releases/\{\{\s*args\.([\w.-]+)\s*\}\}/evidence-status")


def _all(sb: Sandbox, plural: str) -> list[Obj]:
    return sb.store.list(plural, None)[0]


def _owned(objs: list[Obj], rollout: Obj) -> list[Obj]:
    uid = rollout["metadata"]["uid"]
    return [o for o in objs if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])]


def _refs(rollout: Obj) -> list[Obj]:
    strategy = rollout["spec"].get("strategy") or {}
    canary, bg = strategy.get("canary") or {}, strategy.get("blueGreen") or {}
    blocks = [s["analysis"] for s in canary.get("steps") or [] if isinstance(s, dict) and s.get("analysis")]
    blocks += [b for b in (canary.get("analysis"), bg.get("prePromotionAnalysis"), bg.get("postPromotionAnalysis")) if b]
    return [t for b in blocks for t in b.get("templates") or []]


def _template(sb: Sandbox, rollout: Obj, ref: Obj) -> Obj | None:
    plural, ns = (("clusteranalysistemplates", None) if ref.get("clusterScope")
                  else ("analysistemplates", rollout["metadata"]["namespace"]))
    return next((t for t in sb.store.list(plural, ns)[0] if t["metadata"]["name"] == ref["templateName"]), None)


def _evidence_metrics(spec: Obj) -> list[Obj]:
    return [m for m in spec.get("metrics") or [] if "/evidence-status" in str(((m.get("provider") or {}).get("web") or {}).get("url"))]


def _value_has_reason(value: Any) -> bool:
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError):
        return False
    return isinstance(parsed, dict) and "reason" in parsed


def _has(report: Report, rule: str, rollout: Obj | None = None, *, object_: str | None = None,
         severities: tuple[str, ...] = ("error", "warn")) -> list[Finding]:
    ns = rollout["metadata"]["namespace"] if rollout else None
    return [f for f in report.by_id(rule) if f.severity in severities
            and (object_ is None or f.object == object_) and (ns is None or f.namespace in (ns, ""))]


def expected_from_objects(sb: Sandbox, report: Report) -> list[str]:
    """Each expectation the loaded objects imply that the report does not meet (empty: they agree)."""
    missing: list[str] = []
    runs = _all(sb, "analysisruns")
    for ro in _all(sb, "rollouts"):
        name, ns, own = ro["metadata"]["name"], ro["metadata"]["namespace"], _owned(runs, ro)
        rid = f"Rollout/{name}"
        for ref in _refs(ro):
            tpl = _template(sb, ro, ref)
            kind = "ClusterAnalysisTemplate" if ref.get("clusterScope") else "AnalysisTemplate"
            absent = [f for f in _has(report, "template-missing", ro, object_=rid) if f"{ref['templateName']!r}" in f.message]
            if (tpl is None) != bool(absent):
                missing.append(f"{ns}/{name}: template {ref['templateName']} absent={tpl is None}, reported={bool(absent)}")
            if tpl is None:
                continue
            bad_jp = [m for m in _evidence_metrics(tpl["spec"])
                      if str((m["provider"]["web"]).get("jsonPath") or "{$}").replace(" ", "") not in ("{$}", "")]
            lost = [f for f in _has(report, "evidence-jsonpath", object_=f"{kind}/{ref['templateName']}")
                    if f.field.endswith("provider.web.jsonPath")]
            if bool(bad_jp) != bool(lost):
                missing.append(f"{ns}/{name}: evidence jsonPath off={bool(bad_jp)}, reported={bool(lost)}")
        for run in own:
            for m in _evidence_metrics(run.get("spec") or {}):
                result = next((r for r in (run.get("status") or {}).get("metricResults") or [] if r["name"] == m["name"]), {})
                judged = [x for x in result.get("measurements") or [] if x.get("phase") in ("Successful", "Failed")]
                if judged and not any(_value_has_reason(x.get("value")) for x in judged) and not _has(report, "evidence-jsonpath"):
                    missing.append(f"{ns}/{name}: run {run['metadata']['name']} has no MC reason, no jsonpath finding")
            for result in (run.get("status") or {}).get("metricResults") or []:
                spec = next((m for m in run["spec"].get("metrics") or [] if m["name"] == result["name"]), {})
                if result.get("dryRun") and not _has(report, "dry-run", ro):
                    missing.append(f"{ns}/{name}: {result['name']} ran in dry-run, no dry-run finding")
                errored = result.get("phase") == "Error" and int(result.get("consecutiveError") or 0) > 0
                if errored and spec.get("consecutiveErrorLimit") is None and not [
                        f for f in _has(report, "error-limit") if f'Metric "{result["name"]}"' in f.message]:
                    missing.append(f"{ns}/{name}: {result['name']} errored into an abort, no error-limit finding")
            missing += _release_disagreement(sb, report, ro, run)
        aborted_on_analysis = re.search(r"assessed (Failed|Error)", str((ro.get("status") or {}).get("message"))
                                        + " ".join(str(c.get("message")) for c in (ro.get("status") or {}).get("conditions") or []),
                                        re.I)
        failed_kept = [r for r in own if (r.get("status") or {}).get("phase") in ("Failed", "Error")]
        if aborted_on_analysis and not failed_kept and not _has(report, "history-limit", ro, object_=rid):
            missing.append(f"{ns}/{name}: the failed run is gone, no history-limit finding")
        if own and _refs(ro) and not any((r["metadata"].get("labels") or {}).get("rollout") == name for r in own) \
                and not _has(report, "analysisrun-label", ro, object_=rid):
            missing.append(f"{ns}/{name}: no run carries rollout={name}, no analysisrun-label finding")
    return missing


def _release_disagreement(sb: Sandbox, report: Report, ro: Obj, run: Obj) -> list[str]:
    """A run that asked MC about another release than the canary's pod-template label must be a finding."""
    args = {a["name"]: a.get("value") for a in run["spec"].get("args") or []}
    names = [m_.group(1) for m in _evidence_metrics(run["spec"]) if (m_ := EVIDENCE.search(m["provider"]["web"]["url"]))]
    hash_ = (run["metadata"].get("labels") or {}).get("rollouts-pod-template-hash")
    rs = next((r for r in _owned(_all(sb, "replicasets"), ro)
               if (r["metadata"].get("labels") or {}).get("rollouts-pod-template-hash") == hash_), None)
    if not names or rs is None or args.get(names[0]) is None:
        return []
    labels = set(((rs["spec"].get("template") or {}).get("metadata") or {}).get("labels", {}).values())
    if args[names[0]] in labels:
        return []
    release = [f for rule in ("release-id-source", "release-id-path", "release-label-missing")
               for f in _has(report, rule, ro, severities=("error",))]
    return [] if release else [f"{ro['metadata']['name']}: run {run['metadata']['name']} judged {args[names[0]]!r}, "
                               "not a label of its ReplicaSet's pod template, and no release finding"]


def _resolves(obj: Obj, path: str) -> bool:
    """Every list index on the path exists (fields after the last one may be what the finding says is missing)."""
    cur: Any = obj
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", path.split(" ", 1)[0]):
        if token.startswith("["):
            i = int(token[1:-1])
            if not isinstance(cur, list) or i >= len(cur):
                return False
            cur = cur[i]
        elif isinstance(cur, dict) and token in cur:
            cur = cur[token]
        else:
            return not re.search(r"\[\d+\]", path[path.find(token):])  # missing: fine unless an index follows
    return True


def _object_of(sb: Sandbox, f: Finding) -> Obj | None:
    kind, _, name = f.object.partition("/")
    plural = {"Rollout": "rollouts", "AnalysisTemplate": "analysistemplates", "Deployment": "deployments",
              "ClusterAnalysisTemplate": "clusteranalysistemplates", "ConfigMap": "configmaps"}.get(kind)
    if plural is None:
        return {}  # Context/<name>: an identity, not an object
    items = sb.store.list(plural, f.namespace or None)[0]
    return next((o for o in items if o["metadata"]["name"] == name), None)


@pytest.mark.parametrize("folder", SCENARIOS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_scenario_gets_a_verdict_that_agrees_with_its_objects(
        sandbox_factory: Callable[..., Sandbox], folder: Path) -> None:
    sb = sandbox_factory(folder)
    report = run_preflight(all_namespaces=True, config=config_mod.Config(kubeconfig=str(sb.kubeconfig)))
    assert report.exit_code == (1 if any(f.severity == "error" for f in report.findings) else 0)
    assert sorted(report.rollouts) == sorted(f"{ns}/{n}" for ns, n in sb.rollouts)
    assert expected_from_objects(sb, report) == []
    for f in report.findings:
        if f.id in ("nothing-to-check",) and f.object.endswith("*"):
            continue
        obj = _object_of(sb, f)
        assert obj is not None, f"{f.id} names {f.namespace}/{f.object}, which does not exist"
        assert not f.field or f.object.startswith("Context/") or f.field.startswith(("data[", "metadata.annotations[")) \
            or _resolves(obj, f.field), f"{f.id}: {f.field} does not exist in {f.object}"
