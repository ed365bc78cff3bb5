"""The read verbs: get (an object, its scale or a pod's log) and list (envelope, Table or metadata)."""

from __future__ import annotations

import json
from typing import Any

from rollbook.sandbox.apierrors import bad_request
from rollbook.sandbox.kubeapi.exchange import Exchange
from rollbook.sandbox.kubeapi.routing import Route
from rollbook.sandbox.resources import Resource

JSON = dict[str, Any]


def get(ex: Exchange, route: Route) -> None:
    """GET one object, or a pod's log as text/plain."""
    assert route.name is not None
    if route.sub == "log":
        log(ex, route)
        return
    obj = ex.store.get(route.res.plural, route.namespace, route.name)
    if route.sub == "scale":
        ex.send_json(200, scale_of(route.res, obj))
        return
    if "as=PartialObjectMetadata" in ex.accept and not ex.wants_table:
        ex.send_json(200, partial(obj))
        return
    ex.send_json(200, ex.table_or(route, [obj]) if ex.wants_table else obj)


def log(ex: Exchange, route: Route) -> None:
    """``pods/{name}/log``: container checks, tailLines and limitBytes as upstream."""
    assert route.name is not None and route.namespace is not None
    pod = ex.store.get("pods", route.namespace, route.name)
    names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
    names += [c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or []]
    container = ex.query.get("container", "")
    if container and container not in names:
        raise bad_request(f"container {container} is not valid for pod {route.name}")
    if not container and len(names) > 1:
        choices = " ".join(str(n) for n in names)
        raise bad_request(f"a container name must be specified for pod {route.name}, choose one of: [{choices}]")
    _check_log_available(pod, container or str(names[0] if names else ""), ex.query.get("previous") == "true")
    text = ex.store.pod_log(route.namespace, route.name)
    if ex.query.get("timestamps") == "true":
        text = _with_timestamps(pod, text)
    if ex.query.get("tailLines"):
        lines = text.splitlines(keepends=True)
        text = "".join(lines[-int(ex.query["tailLines"]):]) if int(ex.query["tailLines"]) else ""
    data = text.encode()
    if ex.query.get("limitBytes"):
        data = data[: int(ex.query["limitBytes"])]
    ex.send_bytes(200, data, "text/plain")


def list_(ex: Exchange, route: Route) -> None:
    """A list envelope (or Table) with resourceVersion and continue."""
    labels, fields = ex.filters()
    limit = ex.int_param("limit")
    items, rv, token = ex.store.list(
        route.res.plural, route.namespace, label_selector=labels, field_selector=fields,
        limit=limit, continue_token=ex.query.get("continue", ""))
    meta: JSON = {"resourceVersion": rv}
    if token:
        meta["continue"] = token
        meta["remainingItemCount"] = ex.store.remaining(route.res.plural, route.namespace, labels, fields, token)
    if ex.wants_table:
        ex.send_json(200, ex.table_or(route, items, meta))
        return
    if "as=PartialObjectMetadataList" in ex.accept:  # metadata-only informers and clients
        ex.send_json(200, {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                           "metadata": meta, "items": [partial(i) for i in items]})
        return
    if route.res.builtin:  # typed lists of built-in kinds carry no kind/apiVersion per item
        items = [{k: v for k, v in i.items() if k not in ("kind", "apiVersion")} for i in items]
    res = route.res
    ex.send_json(200, {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": meta, "items": items})


def partial(obj: JSON) -> JSON:
    """An object reduced to a ``meta.k8s.io/v1`` PartialObjectMetadata."""
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata", {})}


def scale_of(res: Resource, obj: JSON) -> JSON:
    """The autoscaling/v1 Scale of an object (Argo's paths for rollouts: .status.HPAReplicas, .status.selector)."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    if res.plural == "rollouts":
        current, selector = status.get("HPAReplicas", 0), status.get("selector", "")
    else:
        labels = (spec.get("selector") or {}).get("matchLabels") or {}
        current, selector = status.get("replicas", 0), ",".join(f"{k}={v}" for k, v in labels.items())
    keep = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
    return {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {k: meta[k] for k in keep if k in meta},
            "spec": {"replicas": spec.get("replicas", 0)}, "status": {"replicas": current, "selector": selector}}


def _check_log_available(pod: JSON, container: str, previous: bool) -> None:
    """The kubelet's 400s: no previous instance of a container that never restarted, or one not started."""
    status = pod.get("status") or {}
    statuses = (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
    found = next((c for c in statuses if c.get("name") == container), None)
    name, pod_name = container, (pod.get("metadata") or {}).get("name")
    if previous:
        if not (found and (found.get("lastState") or {}).get("terminated")):
            raise bad_request(f'previous terminated container "{name}" in pod "{pod_name}" not found')
        return
    waiting = ((found or {}).get("state") or {}).get("waiting")
    if waiting is not None and not (found or {}).get("restartCount"):
        reason = waiting.get("reason") or "ContainerCreating"
        raise bad_request(f'container "{name}" in pod "{pod_name}" is waiting to start: {reason}')


def _with_timestamps(pod: JSON, text: str) -> str:
    """``timestamps=true``: each line prefixed with its RFC 3339 nano time, as the kubelet does.

    The sandbox keeps text, not timed entries: a JSON line's own ``ts`` is used when it has one, else the
    pod's start time.
    """
    fallback = str((pod.get("status") or {}).get("startTime") or (pod.get("metadata") or {}).get("creationTimestamp")
                   or "1970-01-01T00:00:00Z")
    out = []
    for line in text.splitlines(keepends=True):
        try:
            stamp = str(json.loads(line).get("ts") or fallback)
        except (ValueError, AttributeError):
            stamp = fallback
        out.append(f"{stamp[:19]}.000000000Z {line}")
    return "".join(out)
