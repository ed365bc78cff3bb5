"""The write verbs that carry a whole object: create, update (PUT), delete and deletecollection."""

from __future__ import annotations

from typing import Any

from rollbook.sandbox.apierrors import StoreError, bad_request
from rollbook.sandbox.kubeapi.exchange import Exchange
from rollbook.sandbox.kubeapi.patches import write_scale
from rollbook.sandbox.kubeapi.routing import Route

JSON = dict[str, Any]


def create(ex: Exchange, route: Route) -> None:
    """POST: 201 with the stored (or dry-run) object."""
    body = ex.object_body()
    if not isinstance(body, dict):
        raise bad_request("the body of a create must be a JSON object")
    ex.validate_fields(route, body)
    obj = ex.store.create(route.res.plural, route.namespace, body, dry_run=ex.dry_run,
                          implicit_namespace=False, manager=ex.manager)
    ex.send_json(201, obj)


def update(ex: Exchange, route: Route) -> None:
    """PUT on an object or its status."""
    assert route.name is not None
    body = ex.object_body()
    if not isinstance(body, dict):
        raise bad_request("the body of an update must be a JSON object")
    if route.sub == "scale":
        write_scale(ex, route, body)
        return
    ex.validate_fields(route, body)
    obj = ex.store.replace(route.res.plural, route.namespace, route.name, body,
                           subresource=route.sub, dry_run=ex.dry_run, manager=ex.manager)
    ex.send_json(200, obj)


def delete(ex: Exchange, route: Route) -> None:
    """DELETE: the object for pods and custom resources, a Success Status for the rest (as upstream)."""
    assert route.name is not None
    options = ex.object_body() if ex.body.strip() else {}
    options = options if isinstance(options, dict) else {}
    dry = ex.dry_run or "All" in (options.get("dryRun") or [])
    propagation = ex.query.get("propagationPolicy") or options.get("propagationPolicy") or "Background"
    obj = ex.store.delete(route.res.plural, route.namespace, route.name, dry_run=dry,
                          preconditions=options.get("preconditions"), propagation=str(propagation))
    if route.res.plural in ("pods", "namespaces") or not route.res.builtin:
        ex.send_json(200, obj)
        return
    details = {"name": route.name, "group": route.res.group, "kind": route.res.plural,
               "uid": obj["metadata"].get("uid")}
    ex.send_json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                       "details": {k: v for k, v in details.items() if v}})


def deletecollection(ex: Exchange, route: Route) -> None:
    """DELETE on a collection: delete every matching object, answer with the list of them."""
    labels, fields = ex.filters()
    store, res = ex.store, route.res
    items, _rv, _ = store.list(res.plural, route.namespace, label_selector=labels, field_selector=fields)
    deleted = []
    for item in items:
        meta = item["metadata"]
        try:
            deleted.append(store.delete(res.plural, meta.get("namespace"), meta["name"], dry_run=ex.dry_run))
        except StoreError as e:
            if e.code != 404:  # deleted concurrently: fine
                raise
    ex.send_json(200, {"kind": f"{res.kind}List", "apiVersion": res.api_version,
                       "metadata": {"resourceVersion": store.resource_version}, "items": deleted})
