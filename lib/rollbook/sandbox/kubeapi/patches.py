"""PATCH by Content-Type (merge, JSON, strategic), server-side apply, and writes of a Scale."""

from __future__ import annotations

from typing import Any

from rollbook.sandbox.apierrors import StoreError, bad_request, invalid
from rollbook.sandbox.kubeapi.exchange import Exchange
from rollbook.sandbox.kubeapi.reads import scale_of
from rollbook.sandbox.kubeapi.routing import Route
from rollbook.sandbox.patching import apply_patch

JSON = dict[str, Any]
PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/json-patch+json": "json",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}


def patch(ex: Exchange, route: Route) -> None:
    """PATCH by Content-Type; server-side apply goes through the field manager."""
    assert route.name is not None
    ctype = ex.headers.get("Content-Type", "").split(";")[0].strip()
    patch_type = PATCH_TYPES.get(ctype)
    if patch_type is None:
        raise StoreError(415, "UnsupportedMediaType",
                         f'the body of the request was in an unknown format - accepted media types include: '
                         f'{", ".join(PATCH_TYPES)}')
    body = ex.object_body()
    store, res = ex.store, route.res
    if patch_type != "json":
        ex.validate_fields(route, body)
    if patch_type == "apply":
        if not ex.query.get("fieldManager"):
            raise StoreError(422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                             "is required for apply patch",
                             {"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [{
                                 "reason": "FieldValueRequired", "field": "fieldManager",
                                 "message": "Required value: is required for apply patch"}]})
        _apply(ex, route, body)
        return
    if route.sub == "scale":
        current = scale_of(res, store.get(res.plural, route.namespace, route.name))
        write_scale(ex, route, apply_patch(res, route.name, current, body, patch_type))
        return
    obj = store.patch(res.plural, route.namespace, route.name, body, patch_type,
                      subresource=route.sub, dry_run=ex.dry_run, manager=ex.manager)
    ex.send_json(200, obj)


def _apply(ex: Exchange, route: Route, body: Any) -> None:
    """Server-side apply with field ownership (fieldmanager); on a subresource, a merge of the fields."""
    assert route.name is not None
    store, res = ex.store, route.res
    if not isinstance(body, dict):
        raise bad_request("an apply patch must be an object")
    if not route.sub:
        obj, created = store.apply(res.plural, route.namespace, route.name, body, manager=ex.manager,
                                   force=ex.query.get("force") == "true", dry_run=ex.dry_run)
        ex.send_json(201 if created else 200, obj)
        return
    try:
        store.get(res.plural, route.namespace, route.name)
    except StoreError as e:
        if e.code != 404 or route.sub:
            raise
        ex.send_json(201, store.create(res.plural, route.namespace, body, dry_run=ex.dry_run,
                                       implicit_namespace=False))
        return
    kind = "strategic" if res.builtin else "merge"
    obj = store.patch(res.plural, route.namespace, route.name, body, kind, subresource=route.sub,
                      dry_run=ex.dry_run)
    ex.send_json(200, obj)


def write_scale(ex: Exchange, route: Route, scale: JSON) -> None:
    """Write ``spec.replicas`` of a Scale back to its object (a given resourceVersion is checked)."""
    assert route.name is not None
    replicas = (scale.get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or replicas < 0:
        raise invalid(route.res, route.name, "spec.replicas",
                      f"Invalid value: {replicas!r}: must be greater than or equal to 0")
    rv = (scale.get("metadata") or {}).get("resourceVersion")
    body: JSON = {"spec": {"replicas": replicas}, **({"metadata": {"resourceVersion": rv}} if rv else {})}
    obj = ex.store.patch(route.res.plural, route.namespace, route.name, body, "merge", dry_run=ex.dry_run)
    ex.send_json(200, scale_of(route.res, obj))
