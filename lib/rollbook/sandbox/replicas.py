"""A rollout's ReplicaSets, pods and AnalysisRuns in the store, as the simulated controller reads and writes them.

Plain functions over the store: find what a rollout owns, scale a ReplicaSet (its Ready pods created or
deleted), and record a Kubernetes Event the way the rollouts-controller does.
"""

from __future__ import annotations

import secrets

from rollbook.sandbox import kubelet
from rollbook.sandbox.argo_objects import HASH_LABEL, Obj, _meta, _ready_pod, _rv, now_rfc3339
from rollbook.sandbox.store import Store


def owned_rs(store: Store, ns: str, ro: Obj) -> list[Obj]:
    """The ReplicaSets whose owner is this rollout."""
    uid = _meta(ro).get("uid")
    return [rs for rs in store.list("replicasets", ns)[0]
            if any(o.get("uid") == uid for o in _meta(rs).get("ownerReferences") or [])]


def rs_by_hash(store: Store, ns: str, ro: Obj, h: str | None) -> Obj | None:
    """The rollout's ReplicaSet with this pod-template hash, if any."""
    return next((rs for rs in owned_rs(store, ns, ro) if (_meta(rs).get("labels") or {}).get(HASH_LABEL) == h), None) \
        if h else None


def latest_run(store: Store, ns: str, ro: Obj, h: str | None, before: str | None = None) -> Obj | None:
    """The most recent AnalysisRun of this rollout and pod hash (optionally other than ``before``)."""
    uid = _meta(ro).get("uid")
    runs = [r for r in store.list("analysisruns", ns, label_selector=f"{HASH_LABEL}={h}")[0]
            if _meta(r)["name"] != before
            and any(o.get("uid") == uid for o in _meta(r).get("ownerReferences") or [])]
    return max(runs, key=lambda r: (str(_meta(r).get("creationTimestamp", "")), _rv(r)), default=None)


def owned_pods(store: Store, ns: str, rs: Obj, h: str | None) -> list[Obj]:
    """The pods of this ReplicaSet (its hash label and its ownerReference)."""
    return [p for p in store.list("pods", ns, label_selector=f"{HASH_LABEL}={h}")[0]
            if any(o.get("uid") == _meta(rs)["uid"] for o in _meta(p).get("ownerReferences") or [])]


def make_current(store: Store, ro: Obj, target: Obj) -> None:
    """Scale ``target`` to spec.replicas and every other owned ReplicaSet to zero."""
    replicas = int((ro.get("spec") or {}).get("replicas", 1))
    ns = _meta(ro)["namespace"]
    for rs in owned_rs(store, ns, ro):
        if _meta(rs)["uid"] == _meta(target)["uid"]:
            scale(store, rs, replicas)
        elif int((rs.get("spec") or {}).get("replicas", 0)):
            scale(store, rs, 0)


def scale(store: Store, rs: Obj, replicas: int) -> None:
    """Set a ReplicaSet's replicas, create or delete its Ready pods, write its status."""
    ns, name = _meta(rs)["namespace"], _meta(rs)["name"]
    rs = store.patch("replicasets", ns, name, {"spec": {"replicas": replicas}}, "merge")
    h = (_meta(rs).get("labels") or {}).get(HASH_LABEL, "")
    pods = owned_pods(store, ns, rs, h)
    for pod in pods[replicas:]:
        store.delete("pods", ns, _meta(pod)["name"])
    for _ in range(len(pods), replicas):
        store.create("pods", ns, kubelet.complete_pod(_ready_pod(rs), store), system=True)
    store.set_status("replicasets", ns, name, {
        "replicas": replicas, "fullyLabeledReplicas": replicas, "readyReplicas": replicas,
        "availableReplicas": replicas, "observedGeneration": _meta(rs).get("generation", 1)})


def record_event(store: Store, ro_or_obj: Obj, typ: str, reason: str, message: str) -> None:
    """A Kubernetes Event on the object, as the rollouts-controller records it."""
    meta = _meta(ro_or_obj)
    now = now_rfc3339()
    store.create("events", meta["namespace"], {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": ro_or_obj.get("apiVersion", "argoproj.io/v1alpha1"),
                           "kind": ro_or_obj.get("kind", "Rollout"), "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta.get("uid")},
        "reason": reason, "message": message, "type": typ, "count": 1,
        "source": {"component": "rollouts-controller"}, "reportingComponent": "rollouts-controller",
        "reportingInstance": "", "firstTimestamp": now, "lastTimestamp": now}, system=True)
