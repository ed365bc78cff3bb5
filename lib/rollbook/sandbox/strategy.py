"""What the real server's registry strategies do on a write: names, namespaces, defaults, generation,
the status subresource, immutable metadata, preconditions."""

from __future__ import annotations

import base64
import copy
import hashlib
import re
import uuid
from datetime import UTC, date, datetime
from typing import Any

from rollbook.sandbox.apierrors import StoreError, bad_request, conflict, invalid
from rollbook.sandbox.resources import Resource

JSON = dict[str, Any]


def now_rfc3339() -> str:
    """The current UTC time as Kubernetes writes timestamps."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def jsonable(value: Any) -> Any:
    """Deep-copy into plain JSON (YAML loaders hand us datetimes for unquoted timestamps)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.isoformat()
    return value


_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAME_RULE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)


def spec_part(obj: JSON) -> JSON:
    """Everything that bumps ``generation`` when it changes (all but metadata and status)."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def comparable(obj: JSON) -> JSON:
    """The object without its resourceVersion, to detect no-op writes."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in ("resourceVersion", "managedFields")}
    return {**obj, "metadata": meta}


INITIAL_STATUS: dict[str, JSON] = {
    "pods": {"phase": "Pending"}, "namespaces": {"phase": "Active"}, "replicasets": {"replicas": 0},
    "deployments": {}, "services": {"loadBalancer": {}},
}


def check_type(res: Resource, obj: JSON) -> None:
    """apiVersion and kind, when given, must be the resource's."""
    if obj.get("apiVersion") not in (None, res.api_version):
        raise bad_request(
            f"the API version in the data ({obj['apiVersion']}) does not match the expected API version "
            f"({res.api_version})"
        )
    if obj.get("kind") not in (None, res.kind):
        raise bad_request(f"the kind in the data ({obj['kind']}) does not match the expected kind ({res.kind})")


def check_name(res: Resource, name: str) -> None:
    """Names are required and must be RFC 1123 subdomains (422 otherwise)."""
    if not name:
        raise invalid(res, "", "metadata.name", "Required value: name or generateName is required",
                      "FieldValueRequired")
    if len(name) > 253 or not _NAME.match(name):
        raise invalid(res, name, "metadata.name", f'Invalid value: "{name}": {_NAME_RULE}')


def check_namespace(res: Resource, url_ns: str | None, body_ns: str | None) -> str | None:
    """The object's namespace: the URL's; a different one in the body is a 400."""
    if not res.namespaced:
        return None
    if body_ns and url_ns and body_ns != url_ns:
        raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
    ns = url_ns or body_ns
    if not ns:
        raise bad_request(f"a namespace is required to create a {res.kind}")
    return ns


def namespace_created_for(name: str) -> JSON:
    """A namespace created because an object was created in it."""
    return {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "uid": str(uuid.uuid4()), "creationTimestamp": now_rfc3339(),
                     "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"},
    }


# Kinds a 1.32 server keeps no metadata.generation for (no spec, or not tracked; pods only from 1.33).
NO_GENERATION = ("events", "namespaces", "nodes", "pods", "configmaps", "secrets", "endpoints", "serviceaccounts",
                  "services")


def defaulted(res: Resource, obj: JSON, old: JSON | None = None) -> JSON:
    """The defaults and conversions the real API server applies on every write of some core kinds."""
    if res.plural == "secrets":
        obj.setdefault("type", "Opaque")
        if old is not None and obj["type"] != old.get("type", "Opaque"):
            raise invalid(res, obj["metadata"]["name"], "type", f'"{obj["type"]}": field is immutable')
        string_data = obj.pop("stringData", None) or {}
        if string_data:  # write-only: merged into data as base64, never stored or returned
            obj["data"] = {**(obj.get("data") or {}),
                           **{k: base64.b64encode(str(v).encode()).decode() for k, v in string_data.items()}}
    elif res.plural == "deployments" and isinstance(obj.get("spec"), dict):
        spec = obj["spec"]
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        strategy = spec.setdefault("strategy", {})
        if isinstance(strategy, dict) and strategy.setdefault("type", "RollingUpdate") == "RollingUpdate":
            strategy.setdefault("rollingUpdate", {"maxSurge": "25%", "maxUnavailable": "25%"})
    elif res.plural == "services":
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec["type"] != "ExternalName":
            kept = ((old or {}).get("spec") or {}).get("clusterIP")
            spec.setdefault("clusterIP", kept or _cluster_ip(obj["metadata"]))
            spec.setdefault("clusterIPs", [spec["clusterIP"]] if spec["clusterIP"] != "None" else ["None"])
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        for port in spec.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port.get("port"))
    return obj


def _cluster_ip(meta: JSON) -> str:
    """A stable ClusterIP in 10.96.0.0/12 derived from the namespace and name (no allocator needed)."""
    digest = hashlib.sha256(f"{meta.get('namespace')}/{meta.get('name')}".encode()).digest()
    return f"10.{96 + digest[0] % 16}.{digest[1]}.{digest[2] % 254 + 1}"


def merge_update(res: Resource, old: JSON, candidate: JSON, subresource: str | None) -> JSON:
    """The stored result of a write: status rules, immutable metadata, generation."""
    if not isinstance(candidate, dict):
        raise invalid(res, old["metadata"]["name"], "", "the object is not a JSON object")
    check_type(res, candidate)
    if subresource == "status":
        new = copy.deepcopy(old)
        new.pop("status", None)
        new.update({"status": candidate["status"]} if candidate.get("status") is not None else {})
        return new
    if subresource:
        raise StoreError(404, "NotFound", "the server could not find the requested resource")
    new = {**candidate, "apiVersion": res.api_version, "kind": res.kind}
    meta = dict(candidate.get("metadata") or {})
    for key in ("name", "namespace", "uid", "creationTimestamp", "generation", "resourceVersion",
                "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
        meta.pop(key, None)
        if key in old["metadata"]:
            meta[key] = old["metadata"][key]
    new["metadata"] = meta
    new = defaulted(res, new, old)
    if res.has_status:
        new.pop("status", None)
        new.update({"status": old["status"]} if "status" in old else {})
    if "generation" in meta and spec_part(new) != spec_part(old):
        meta["generation"] = int(meta["generation"]) + 1
    return new


def check_preconditions(res: Resource, name: str, current: JSON, pre: JSON) -> None:
    """DeleteOptions preconditions (uid, resourceVersion) as the real server checks them."""
    meta = current["metadata"]
    if pre.get("uid") and pre["uid"] != meta.get("uid"):
        raise conflict(res, name, f"Precondition failed: UID in precondition: {pre['uid']}, "
                                  f"UID in object meta: {meta.get('uid')}")
    if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
        raise conflict(res, name, f"Precondition failed: ResourceVersion in precondition: "
                                  f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                  f"{meta.get('resourceVersion')}")

