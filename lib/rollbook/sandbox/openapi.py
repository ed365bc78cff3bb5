"""Discovery and OpenAPI v3 documents of the sandbox API, shaped the way kubectl and the client read them."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from rollbook.sandbox import schemas
from rollbook.sandbox.resources import RESOURCES, Resource

JSON = dict[str, Any]
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def version_info() -> JSON:
    """``GET /version``: a 1.32 server (the kubectl on these machines is 1.32)."""
    return {
        "major": "1", "minor": "32", "gitVersion": "v1.32.0-rollbook-sandbox",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23.0", "compiler": "gc",
        "platform": "linux/amd64",
    }


# Served without being stored: kubectl auth can-i and permission checks post these.
ACCESS_REVIEW = {
    "name": "selfsubjectaccessreviews", "singularName": "selfsubjectaccessreview", "namespaced": False,
    "kind": "SelfSubjectAccessReview", "verbs": ["create"],
}
SELF_REVIEW = {
    "name": "selfsubjectreviews", "singularName": "selfsubjectreview", "namespaced": False,
    "kind": "SelfSubjectReview", "verbs": ["create"],
}
RULES_REVIEW = {
    "name": "selfsubjectrulesreviews", "singularName": "selfsubjectrulesreview", "namespaced": False,
    "kind": "SelfSubjectRulesReview", "verbs": ["create"],
}
EXTRA_RESOURCES: dict[tuple[str, str], list[JSON]] = {("authorization.k8s.io", "v1"): [ACCESS_REVIEW, RULES_REVIEW],
                                                      ("authentication.k8s.io", "v1"): [SELF_REVIEW]}


def group_versions(*, with_extra: bool = True) -> list[tuple[str, str]]:
    """The (group, version) pairs served, core first."""
    seen: list[tuple[str, str]] = []
    for res in RESOURCES.values():
        if (res.group, res.version) not in seen:
            seen.append((res.group, res.version))
    return seen + (list(EXTRA_RESOURCES) if with_extra else [])


def api_versions(server_address: str) -> JSON:
    """``GET /api``."""
    return {
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group(group: str) -> JSON:
    """One APIGroup entry with its preferred version."""
    versions = [{"groupVersion": f"{g}/{v}", "version": v} for g, v in group_versions() if g == group]
    return {"name": group, "versions": versions, "preferredVersion": versions[0]}


def api_group_list() -> JSON:
    """``GET /apis``."""
    groups = [_group(g) for g in dict.fromkeys(g for g, _ in group_versions() if g)]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(group: str) -> JSON | None:
    """``GET /apis/{group}``, or None when the group is not served."""
    if group not in {g for g, _ in group_versions() if g}:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(group)}


def _api_resource(res: Resource) -> JSON:
    """The APIResource entry of a collection."""
    entry: JSON = {
        "name": res.plural, "singularName": res.singular, "namespaced": res.namespaced,
        "kind": res.kind, "verbs": VERBS, "storageVersionHash": _hash(res.qualified)[:12],
    }
    if res.short_names:
        entry["shortNames"] = list(res.short_names)
    if res.categories:
        entry["categories"] = list(res.categories)
    return entry


def _subresources(res: Resource) -> list[JSON]:
    """APIResource entries of a resource's subresources (status, pods/log)."""
    subs = []
    base = {"singularName": "", "namespaced": res.namespaced, "kind": res.kind}
    if res.has_status:
        subs.append({"name": f"{res.plural}/status", **base, "verbs": ["get", "patch", "update"]})
    if res.plural == "pods":
        subs.append({"name": "pods/log", **base, "verbs": ["get"]})
    if res.has_scale:
        subs.append({"name": f"{res.plural}/scale", **base, "kind": "Scale", "group": "autoscaling",
                     "version": "v1", "verbs": ["get", "patch", "update"]})
    return subs


def resource_list(group: str, version: str) -> JSON | None:
    """``GET /api/v1`` or ``/apis/{group}/{version}``, or None when not served."""
    members = [r for r in RESOURCES.values() if (r.group, r.version) == (group, version)]
    resources = [e for r in members for e in (_api_resource(r), *_subresources(r))]
    resources += EXTRA_RESOURCES.get((group, version), [])
    if not resources:
        return None
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


# --------------------------------------------------------------------------- OpenAPI v3


def _gv_path(group: str, version: str) -> str:
    """The OpenAPI v3 document path of a group version: ``api/v1`` or ``apis/{group}/{version}``."""
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _hash(text: str) -> str:
    """A stable content hash for cache-busting URLs."""
    return hashlib.sha256(text.encode()).hexdigest().upper()


def openapi_index() -> JSON:
    """``GET /openapi/v3``: one document per group version."""
    paths = {}
    for g, v in group_versions(with_extra=False):
        path = _gv_path(g, v)
        digest = _hash(json.dumps(openapi_document(path), sort_keys=True))[:64]
        paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    return {"paths": paths}


_QUERY_PARAMS = ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")
# No strategic-merge content type on purpose: kubectl then builds strategic patches for built-in kinds
# from its compiled-in types and JSON merge patches for custom resources, which needs no schemas.
_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml")


def _patch_operation(res: Resource, sub: str) -> JSON:
    """A PATCH operation with the GVK extension and the query parameters kubectl looks for."""
    schema: JSON = {"type": "object"}
    return {
        "operationId": f"patch{res.kind}{sub.capitalize()}",
        "parameters": [{"name": p, "in": "query", "schema": {"type": "string"}, "uniqueItems": True}
                       for p in _QUERY_PARAMS],
        "requestBody": {"content": {t: {"schema": schema} for t in _PATCH_TYPES}, "required": True},
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}},
        "x-kubernetes-action": "patch",
        "x-kubernetes-group-version-kind": {"group": res.group, "version": res.version, "kind": res.kind},
    }


def _item_paths(res: Resource) -> dict[str, JSON]:
    """The item and status paths of one resource."""
    prefix = "/" + _gv_path(res.group, res.version)
    base = f"{prefix}/namespaces/{{namespace}}/{res.plural}" if res.namespaced else f"{prefix}/{res.plural}"
    paths = {f"{base}/{{name}}": {"patch": _patch_operation(res, "")}}
    if res.has_status:
        paths[f"{base}/{{name}}/status"] = {"patch": _patch_operation(res, "status")}
    return paths


def openapi_document(path: str) -> JSON | None:
    """``GET /openapi/v3/{path}`` (paths kubectl inspects, schemas for explain), or None when the group version is not served."""
    for g, v in group_versions(with_extra=False):
        if _gv_path(g, v) == path.strip("/"):
            paths: JSON = {}
            kinds: JSON = schemas.components(g)
            for res in (r for r in RESOURCES.values() if (r.group, r.version) == (g, v)):
                paths.update(_item_paths(res))
                kinds[schemas.schema_name(res)] = schemas.kind_schema(res)
            info = {"title": "Kubernetes (rollbook sandbox)", "version": "v1.32.0"}
            return {"openapi": "3.0.0", "info": info, "paths": paths, "components": {"schemas": kinds}}
    return None
