"""After the request seam's layers: authenticate (401), name the request, authorize it, serve it."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import unquote

from rollbook.sandbox.apierrors import StoreError
from rollbook.sandbox.kubeapi import discovery, patches, reads, reviews, watch, writes
from rollbook.sandbox.kubeapi.authz import ANONYMOUS, PUBLIC_PATHS, Attributes, Authorizer
from rollbook.sandbox.kubeapi.exchange import Exchange
from rollbook.sandbox.kubeapi.routing import Route, parse_route, verb_of

VERBS: dict[str, Callable[[Exchange, Route], None]] = {
    "get": reads.get, "list": reads.list_, "watch": watch.watch, "create": writes.create,
    "update": writes.update, "patch": patches.patch, "delete": writes.delete,
    "deletecollection": writes.deletecollection,
}


def serve(ex: Exchange, authorizer: Authorizer) -> None:
    """Serve discovery, a self-subject review or a resource route, each authorized first."""
    user = ex.user
    if user is None:
        if ex.path not in PUBLIC_PATHS:
            raise StoreError(401, "Unauthorized", "Unauthorized")
        user = ANONYMOUS
    as_user = ex.headers.get("Impersonate-User")
    impersonate = getattr(authorizer, "impersonate", None)  # kubectl --as: only an RBAC authorizer knows how
    if as_user and impersonate is not None:
        user = ex.user = impersonate(user, as_user)
    if ex.method == "GET":
        doc = discovery.document(ex.path, ex.url, ex.accept)
        if doc is not None:
            authorizer.authorize(Attributes(user, "get", path=ex.path))
            if isinstance(doc, tuple):
                ex.send_bytes(200, *doc)
            else:
                ex.send_json(200, doc)
            return
    review = reviews.REVIEWS.get(ex.path.rstrip("/")) if ex.method == "POST" else None
    if review is not None:
        authorizer.authorize(Attributes(user, "create", resource=review[1], group=review[0]))
        reviews.serve(ex, authorizer)
        return
    route = parse_route([unquote(s) for s in ex.path.strip("/").split("/") if s])
    verb = verb_of(ex.method, route, ex.query)
    authorizer.authorize(Attributes(user, verb, resource=route.res.plural, subresource=route.sub or "",
                                    group=route.res.group, namespace=route.namespace or "", name=route.name or ""))
    if route.sub == "token":  # TokenRequest: `kubectl create token` (sandbox/rbac.py issues it)
        issue = getattr(authorizer, "token_request", None)
        if issue is None:
            raise StoreError(404, "NotFound", "the server could not find the requested resource")
        ex.send_json(201, issue(route.namespace, route.name, ex.object_body()))
        return
    VERBS[verb](ex, route)
