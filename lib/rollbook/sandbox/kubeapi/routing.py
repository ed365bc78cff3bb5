"""What a request URL names: a resource route and its RBAC verb."""

from __future__ import annotations

from dataclasses import dataclass

from rollbook.sandbox.apierrors import StoreError
from rollbook.sandbox.resources import RESOURCES, Resource

NOT_FOUND = StoreError(404, "NotFound", "the server could not find the requested resource")


@dataclass(frozen=True)
class Route:
    """What a resource URL names."""

    res: Resource
    namespace: str | None
    name: str | None
    sub: str | None


def parse_route(segments: list[str]) -> Route:
    """Map ``api/v1/...`` or ``apis/g/v/...`` path segments to a resource route (404 otherwise)."""
    if segments[:1] == ["api"] and len(segments) >= 3:
        group, version, rest = "", segments[1], segments[2:]
    elif segments[:1] == ["apis"] and len(segments) >= 4:
        group, version, rest = segments[1], segments[2], segments[3:]
    else:
        raise NOT_FOUND
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] in RESOURCES:
        namespace, rest = rest[1], rest[2:]
    res = RESOURCES.get(rest[0])
    if res is None or (res.group, res.version) != (group, version) or len(rest) > 3:
        raise NOT_FOUND
    if namespace and not res.namespaced:
        raise NOT_FOUND
    if res.namespaced and not namespace and len(rest) > 1:
        raise NOT_FOUND
    name, sub = (rest[1:] + [None, None])[:2]
    served = {"status": res.has_status, "log": res.plural == "pods", "scale": res.has_scale,
              "token": res.plural == "serviceaccounts"}  # TokenRequest (sandbox/rbac.py)
    if sub and not served.get(sub):
        raise NOT_FOUND
    return Route(res, namespace, name, sub)


def verb_of(method: str, route: Route, query: dict[str, str]) -> str:
    """The RBAC verb of a request (405 for a method the URL does not take)."""
    watching = query.get("watch") in ("true", "1")
    if route.name is None and route.res.namespaced and route.namespace is None:
        verbs = {"GET": "watch" if watching else "list"}  # writes need a namespace in the URL
    elif route.name is None:
        verbs = {"GET": "watch" if watching else "list", "POST": "create", "DELETE": "deletecollection"}
    elif route.sub == "log":
        verbs = {"GET": "get"}
    elif route.sub == "token":
        verbs = {"POST": "create"}
    elif route.sub:
        verbs = {"GET": "get", "PUT": "update", "PATCH": "patch"}
    else:
        verbs = {"GET": "watch" if watching else "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
    if method not in verbs:
        raise StoreError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
    return verbs[method]
