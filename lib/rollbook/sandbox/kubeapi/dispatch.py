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
    if ex.method == "GET":
        doc = discovery.document(ex.path, ex.url)
        if doc is not None:
            authorizer.authorize(Attributes(user, "get", path=ex.path))
            if isinstance(doc, bytes):
                ex.send_bytes(200, doc, "text/plain; charset=utf-8")
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
    VERBS[verb](ex, route)
