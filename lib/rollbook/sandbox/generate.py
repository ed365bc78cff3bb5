"""Fill a store with many realistic Argo objects in one namespace, for benchmarks (direct store calls)."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime
from typing import Any

from rollbook.sandbox.loader import rfc3339
from rollbook.sandbox.store import Store

Obj = dict[str, Any]
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"   # what Kubernetes uses for generated names and hashes


def generate_namespace(store: Store, namespace: str, *, rollouts: int = 50, replicasets: int = 300,
                       pods: int = 5000, analysisruns: int = 1000, seed: int = 0) -> dict[str, int]:
    """Create ``rollouts`` canary Rollouts with their ReplicaSets, Ready pods and AnalysisRuns; return counts."""
    rng = random.Random(seed)
    store.create("namespaces", None, {"metadata": {"name": namespace}}, system=True)
    ros = [_rollout(rng, namespace, i) for i in range(rollouts)]
    for ro in ros:
        store.create("rollouts", namespace, ro, system=True)
    rss = [_replicaset(rng, ros[i % len(ros)], i // len(ros) + 1) for i in range(replicasets)] if ros else []
    for rs in rss:
        store.create("replicasets", namespace, rs, system=True)
    for i in range(pods if rss else 0):
        store.create("pods", namespace, _pod(rng, rss[i % len(rss)]), system=True)
    for i in range(analysisruns if rss else 0):
        store.create("analysisruns", namespace, _run(rng, rss[i % len(rss)], i // len(rss)), system=True)
    return {"rollouts": len(ros), "replicasets": len(rss), "pods": pods if rss else 0,
            "analysisruns": analysisruns if rss else 0}


def _hash(rng: random.Random, n: int = 10) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(n))


def _uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _owner(obj: Obj) -> list[Obj]:
    return [{"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
             "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]


def _template(name: str, version: str, h: str | None = None) -> Obj:
    labels = {"app": name, "release-id": f"{name}-{version}", **({"rollouts-pod-template-hash": h} if h else {})}
    return {"metadata": {"labels": labels},
            "spec": {"containers": [{"name": name, "image": f"registry.example/{name}:{version}",
                                     "ports": [{"name": "http", "containerPort": 8080}],
                                     "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}}}]}}


def _rollout(rng: random.Random, ns: str, i: int) -> Obj:
    name = f"svc-{i:03d}"
    stable, canary = _hash(rng), _hash(rng)
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": name, "namespace": ns, "uid": _uid(rng), "generation": 3,
                         "annotations": {"rollout.argoproj.io/revision": "7"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": name}}, "template": _template(name, "1.0.7"),
                     "strategy": {"canary": {"steps": [{"setWeight": 20}, {"analysis": {"templates": [
                         {"templateName": "mc-evidence-ok"}]}}]}}},
            "status": {"phase": "Healthy", "message": "", "observedGeneration": "3", "stableRS": stable,
                       "currentPodHash": canary if i % 5 == 0 else stable, "abort": i % 5 == 0,
                       "replicas": 3, "readyReplicas": 3, "availableReplicas": 3}}


def _replicaset(rng: random.Random, ro: Obj, revision: int) -> Obj:
    name, h = ro["metadata"]["name"], _hash(rng)
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": f"{name}-{h}", "namespace": ro["metadata"]["namespace"], "uid": _uid(rng),
                         "labels": {"app": name, "rollouts-pod-template-hash": h},
                         "annotations": {"rollout.argoproj.io/revision": str(revision)}, "ownerReferences": _owner(ro)},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": name, "rollouts-pod-template-hash": h}},
                     "template": _template(name, f"1.0.{revision}", h)},
            "status": {"replicas": 3, "readyReplicas": 3, "availableReplicas": 3}}


def _pod(rng: random.Random, rs: Obj) -> Obj:
    tmpl = rs["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{rs['metadata']['name']}-{_hash(rng, 5)}", "namespace": rs["metadata"]["namespace"],
                         "uid": _uid(rng), "labels": dict(tmpl["metadata"]["labels"]), "ownerReferences": _owner(rs)},
            "spec": tmpl["spec"],
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": c["name"], "image": c["image"], "ready": True, "restartCount": 0}
                                             for c in tmpl["spec"]["containers"]]}}


def _run(rng: random.Random, rs: Obj, n: int) -> Obj:
    ro_ref = rs["metadata"]["ownerReferences"][0]
    h = rs["metadata"]["labels"]["rollouts-pod-template-hash"]
    rev = rs["metadata"]["annotations"]["rollout.argoproj.io/revision"]
    ok = rng.random() < 0.7
    verdict = {"ok": ok, "reason": "all required evidence is valid" if ok else "missing required evidence: test-report (junit)",
               "release_id": rs["spec"]["template"]["metadata"]["labels"]["release-id"]}
    now = rfc3339(datetime.now(UTC))
    phase = "Successful" if ok else "Failed"
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisRun",
            "metadata": {"name": f"{ro_ref['name']}-{h}-{rev}-1" + (f".{n}" if n else ""),
                         "namespace": rs["metadata"]["namespace"], "uid": _uid(rng),
                         "labels": {"rollouts-pod-template-hash": h, "rollout-type": "Step", "step-index": "1"},
                         "annotations": {"rollout.argoproj.io/revision": rev}, "ownerReferences": [ro_ref]},
            "spec": {"metrics": [{"name": "mc-evidence-ok", "successCondition": "result.ok == true",
                                  "provider": {"web": {"url": "https://mc.example/", "jsonPath": "{$}"}}}]},
            "status": {"phase": phase, "startedAt": now, "metricResults": [
                {"name": "mc-evidence-ok", "phase": phase, "count": 1, ("successful" if ok else "failed"): 1,
                 "measurements": [{"phase": phase, "startedAt": now, "finishedAt": now,
                                   "value": json.dumps(verdict, sort_keys=True, separators=(",", ":"))}]}]}}
