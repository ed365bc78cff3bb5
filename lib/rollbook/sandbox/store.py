"""In-memory object store of the sandbox's Kubernetes API: resourceVersions, selectors, patches, watches.

Pod logs: the text served at ``pods/{name}/log`` is whatever :meth:`Store.set_pod_log` set for the pod;
without it, the pod's annotation ``sandbox.rollbook.dev/log`` (handy in plain scenario YAML); else "".
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import logging
import re
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import jsonpatch

from rollbook.sandbox import fieldmanager

JSON = dict[str, Any]
JSONList = list[JSON]  # aliases: inside Store, ``list`` names the method
Listener = Callable[[str, str, JSON], None]
LOG_ANNOTATION = "sandbox.rollbook.dev/log"  # the scenario format's annotation (loader.py)
DEFAULT_WATCH_SECONDS = 1800.0  # the real server picks 30-60 min; ours is bounded as well
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resource:
    """What the store and the API server know about one served resource."""

    plural: str
    group: str
    version: str
    kind: str
    namespaced: bool = True
    has_status: bool = True
    short_names: tuple[str, ...] = ()
    builtin: bool = True  # strategic merge patch exists only for built-in kinds
    categories: tuple[str, ...] = ()
    has_scale: bool = False  # serves ``{plural}/scale`` (autoscaling/v1 Scale)

    @property
    def api_version(self) -> str:
        """The apiVersion of objects of this resource, e.g. ``argoproj.io/v1alpha1``."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """The group-qualified resource as error messages name it, e.g. ``rollouts.argoproj.io``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """The group-qualified kind as Invalid messages name it, e.g. ``Rollout.argoproj.io``."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def singular(self) -> str:
        """The singular resource name, e.g. ``rollout``."""
        return self.kind.lower()


_ARGO = "argoproj.io"
_RBAC = "rbac.authorization.k8s.io"
RESOURCES: dict[str, Resource] = {
    r.plural: r
    for r in (
        Resource("pods", "", "v1", "Pod", short_names=("po",), categories=("all",)),
        Resource("events", "", "v1", "Event", has_status=False, short_names=("ev",)),
        Resource("namespaces", "", "v1", "Namespace", namespaced=False, short_names=("ns",)),
        Resource("nodes", "", "v1", "Node", namespaced=False, short_names=("no",)),
        Resource("services", "", "v1", "Service", short_names=("svc",), categories=("all",)),
        Resource("endpoints", "", "v1", "Endpoints", has_status=False, short_names=("ep",)),
        Resource("configmaps", "", "v1", "ConfigMap", has_status=False, short_names=("cm",)),
        Resource("secrets", "", "v1", "Secret", has_status=False),
        Resource("serviceaccounts", "", "v1", "ServiceAccount", has_status=False, short_names=("sa",)),
        Resource("replicasets", "apps", "v1", "ReplicaSet", short_names=("rs",), categories=("all",),
                 has_scale=True),
        Resource("deployments", "apps", "v1", "Deployment", short_names=("deploy",), categories=("all",),
                 has_scale=True),
        Resource("statefulsets", "apps", "v1", "StatefulSet", short_names=("sts",), categories=("all",),
                 has_scale=True),
        Resource("daemonsets", "apps", "v1", "DaemonSet", short_names=("ds",), categories=("all",)),
        Resource("jobs", "batch", "v1", "Job", categories=("all",)),
        Resource("cronjobs", "batch", "v1", "CronJob", short_names=("cj",), categories=("all",)),
        Resource("horizontalpodautoscalers", "autoscaling", "v2", "HorizontalPodAutoscaler", short_names=("hpa",),
                 categories=("all",)),
        Resource("poddisruptionbudgets", "policy", "v1", "PodDisruptionBudget", short_names=("pdb",)),
        Resource("ingresses", "networking.k8s.io", "v1", "Ingress", short_names=("ing",)),
        # deploy/ (kubectl apply -k) and the RBAC the sandbox enforces from these objects (sandbox/rbac.py)
        Resource("networkpolicies", "networking.k8s.io", "v1", "NetworkPolicy", has_status=False, short_names=("netpol",)),
        Resource("persistentvolumeclaims", "", "v1", "PersistentVolumeClaim", short_names=("pvc",)),
        Resource("roles", _RBAC, "v1", "Role", has_status=False),
        Resource("clusterroles", _RBAC, "v1", "ClusterRole", namespaced=False, has_status=False),
        Resource("rolebindings", _RBAC, "v1", "RoleBinding", has_status=False),
        Resource("clusterrolebindings", _RBAC, "v1", "ClusterRoleBinding", namespaced=False, has_status=False),
        Resource("rollouts", _ARGO, "v1alpha1", "Rollout", short_names=("ro",), builtin=False, has_scale=True),
        Resource("analysisruns", _ARGO, "v1alpha1", "AnalysisRun", short_names=("ar",), builtin=False),
        Resource(
            "analysistemplates", _ARGO, "v1alpha1", "AnalysisTemplate", has_status=False,
            short_names=("at",), builtin=False,
        ),
        Resource("experiments", _ARGO, "v1alpha1", "Experiment", short_names=("exp",), builtin=False),
        Resource(
            "clusteranalysistemplates", _ARGO, "v1alpha1", "ClusterAnalysisTemplate", namespaced=False,
            has_status=False, short_names=("cat",), builtin=False,
        ),
    )
}


# --------------------------------------------------------------------------- errors


class StoreError(Exception):
    """A refused request; becomes a Kubernetes ``Status`` object on the wire."""

    def __init__(self, code: int, reason: str, message: str, details: JSON | None = None) -> None:
        self.code = code
        self.reason = reason
        self.message = message
        self.details: JSON = details or {}
        super().__init__(message)

    def to_status(self) -> JSON:
        """The ``Status`` object the real API server sends for this error."""
        status: JSON = {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        }
        if self.details:
            status["details"] = self.details
        return status


def _details(res: Resource, name: str) -> JSON:
    """Status details as the real server fills them (kind is the resource plural)."""
    return {k: v for k, v in (("name", name), ("group", res.group), ("kind", res.plural)) if v}


def not_found(res: Resource, name: str) -> StoreError:
    """404 in the real message form: ``rollouts.argoproj.io "api" not found``."""
    return StoreError(404, "NotFound", f'{res.qualified} "{name}" not found', _details(res, name))


def already_exists(res: Resource, name: str) -> StoreError:
    """409 AlreadyExists for a create of an existing name."""
    return StoreError(409, "AlreadyExists", f'{res.qualified} "{name}" already exists', _details(res, name))


def conflict(res: Resource, name: str, why: str = "") -> StoreError:
    """409 Conflict for a stale resourceVersion or failed precondition."""
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    msg = f'Operation cannot be fulfilled on {res.qualified} "{name}": {why}'
    return StoreError(409, "Conflict", msg, _details(res, name))


def bad_request(message: str) -> StoreError:
    """400 BadRequest."""
    return StoreError(400, "BadRequest", message)


def invalid(res: Resource, name: str, field_path: str, why: str, cause: str = "FieldValueInvalid") -> StoreError:
    """422 Invalid in the real form: ``Rollout.argoproj.io "api" is invalid: spec: ...``."""
    details = {
        "name": name, "group": res.group, "kind": res.kind,
        "causes": [{"reason": cause, "message": why, "field": field_path}],
    }
    details = {k: v for k, v in details.items() if v}
    return StoreError(422, "Invalid", f'{res.qualified_kind} "{name}" is invalid: {field_path}: {why}', details)


def expired(message: str) -> StoreError:
    """410 Expired: a watch or continue from a resourceVersion older than the kept history."""
    return StoreError(410, "Expired", message)


def unsupported_patch() -> StoreError:
    """415 for strategic merge on a custom resource, in the real message form."""
    return StoreError(
        415, "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
    )


# --------------------------------------------------------------------------- label selectors

_KEY = r"[A-Za-z0-9](?:[-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"[-A-Za-z0-9_.]*"
_REQUIREMENT = re.compile(
    rf"^\s*(?:!\s*(?P<nkey>{_KEY})|(?P<key>{_KEY})(?:\s*(?P<op>==|=|!=|>|<)\s*(?P<val>{_VALUE})"
    rf"|\s+(?P<setop>in|notin)\s*\((?P<vals>[^()]*)\))?)\s*$"
)
_LABEL_VALUE = re.compile(r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


@dataclass(frozen=True)
class Requirement:
    """One label requirement: ``key op values`` with op in =, !=, in, notin, exists, !, gt, lt."""

    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether a label set satisfies this requirement (Kubernetes semantics)."""
        present = self.key in labels
        value = labels.get(self.key, "")
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        return present and _compare_int(value, self.values[0], self.op)


def _compare_int(value: str, bound: str, op: str) -> bool:
    """The ``>`` / ``<`` operators compare integers; a non-integer label never matches."""
    try:
        return int(value) > int(bound) if op == ">" else int(value) < int(bound)
    except ValueError:
        return False


def _split_top(text: str) -> list[str]:
    """Split a selector on commas that are not inside ``(...)``."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_label_selector(text: str) -> list[Requirement]:
    """Parse the full label selector grammar; a malformed selector is a 400."""
    if not text.strip():
        return []
    return [_parse_requirement(part, text) for part in _split_top(text)]


def _parse_requirement(part: str, whole: str) -> Requirement:
    """Parse one comma-separated requirement."""
    m = _REQUIREMENT.match(part)
    if not m:
        raise bad_request(f"unable to parse requirement: {part.strip()!r} in label selector {whole!r}")
    if m["nkey"]:
        return Requirement(m["nkey"], "!")
    if m["setop"]:
        values = tuple(v.strip() for v in m["vals"].split(","))
        _check_values(values, whole)
        return Requirement(m["key"], "in" if m["setop"] == "in" else "notin", values)
    if m["op"]:
        op = {"==": "=", ">": "gt", "<": "lt"}.get(m["op"], m["op"])
        if op in ("gt", "lt") and not re.fullmatch(r"-?\d+", m["val"]):
            raise bad_request(f"unable to parse requirement: {m['val']!r} is not an integer in {whole!r}")
        _check_values((m["val"],), whole)
        return Requirement(m["key"], {"gt": ">", "lt": "<"}.get(op, op), (m["val"],))
    return Requirement(m["key"], "exists")


def _check_values(values: tuple[str, ...], whole: str) -> None:
    """Label values must be valid; the real server rejects the selector otherwise."""
    for value in values:
        if len(value) > 63 or not _LABEL_VALUE.match(value):
            raise bad_request(f"unable to parse requirement: invalid label value: {value!r} in {whole!r}")


def labels_match(requirements: list[Requirement], obj: JSON) -> bool:
    """Whether an object's labels satisfy every requirement."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(r.matches(labels) for r in requirements)


# --------------------------------------------------------------------------- field selectors

_COMMON_FIELDS = ("metadata.name", "metadata.namespace")
_EXTRA_FIELDS: dict[str, tuple[str, ...]] = {
    "pods": (
        "status.phase", "spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
        "spec.serviceAccountName", "spec.hostNetwork", "status.podIP", "status.nominatedNodeName",
    ),
    "events": (
        "involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
        "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
        "reason", "reportingComponent", "source", "type",
    ),
    "namespaces": ("status.phase",),
    "replicasets": ("status.replicas",),
}


@dataclass(frozen=True)
class FieldRequirement:
    """One field requirement: ``path=value`` or ``path!=value``."""

    path: str
    equal: bool
    value: str

    def matches(self, obj: JSON) -> bool:
        """Whether the object's field (as the server renders it to a string) satisfies this requirement."""
        return (_field_value(obj, self.path) == self.value) == self.equal


def _field_value(obj: JSON, path: str) -> str:
    """A field's value as the real field-label functions render it (missing is "")."""
    if path == "source":
        path = "source.component"
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return "" if cur is None else str(cur)


def parse_field_selector(text: str, res: Resource) -> list[FieldRequirement]:
    """Parse ``a=b,c!=d``; unsupported fields are a 400, as on the real server."""
    reqs = []
    for part in (p for p in text.split(",") if p.strip()):
        m = re.fullmatch(r"\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*", part)
        if not m:
            raise bad_request(f'invalid selector: {text!r}; can\'t understand "{part}"')
        path, op, value = m.groups()
        if path not in _COMMON_FIELDS + _EXTRA_FIELDS.get(res.plural, ()):
            raise _unsupported_field(res, path)
        reqs.append(FieldRequirement(path, op != "!=", value))
    return reqs


def _unsupported_field(res: Resource, path: str) -> StoreError:
    """The 400 for a field the resource cannot be selected by, in the real message forms."""
    if res.builtin:
        return bad_request(f"field label not supported: {path}")
    return bad_request(f'"{path}" is not a known field selector: only "metadata.name", "metadata.namespace"')


# --------------------------------------------------------------------------- patches


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (``null`` deletes).

    Hand-written: it is ten lines, and the PyPI packages for it are unmaintained.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# Merge keys of the built-in list fields that strategic merge patches by key (from the Go struct tags).
_MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "env": "name",
    "volumes": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath", "ports": "containerPort",
    "imagePullSecrets": "name", "conditions": "type", "ownerReferences": "uid", "hostAliases": "ip",
    "containerStatuses": "name", "initContainerStatuses": "name", "topologySpreadConstraints": "topologyKey",
}
_DELETE = object()


def strategic_merge(target: Any, patch: Any) -> Any:
    """A strategic merge patch good enough for built-in kinds: keyed lists, ``$patch`` directives.

    Hand-written: no maintained Python implementation exists; it covers what kubectl sends
    (keyed lists such as containers, ``$patch: replace|delete``, ``$setElementOrder``,
    ``$deleteFromPrimitiveList``); other lists are replaced, as for atomic lists.
    """
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return _strip_directives(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip_directives(patch)
    if directive == "delete":
        return _DELETE
    result = copy.deepcopy(target)
    for key, value in patch.items():
        _smp_key(result, key, value)
    return result


def _smp_key(result: JSON, key: str, value: Any) -> None:
    """Apply one key of a strategic merge patch to ``result`` in place."""
    if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
        return
    if key.startswith("$deleteFromPrimitiveList/"):
        name = key.split("/", 1)[1]
        result[name] = [v for v in result.get(name) or [] if v not in (value or [])]
        return
    if value is None:
        result.pop(key, None)
    elif isinstance(value, list) and key in _MERGE_KEYS and isinstance(result.get(key), list):
        result[key] = _merge_keyed_list(result[key], value, _MERGE_KEYS[key])
    else:
        merged = strategic_merge(result.get(key), value)
        if merged is _DELETE:
            result.pop(key, None)
        else:
            result[key] = merged


def _merge_keyed_list(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    """Merge a list of objects by their merge key, honouring ``$patch`` on items and on the list."""
    if any(isinstance(i, dict) and i.get("$patch") == "replace" and len(i) == 1 for i in patch):
        return [_strip_directives(i) for i in patch if not (isinstance(i, dict) and i.get("$patch"))]
    result = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            result.append(_strip_directives(item))
            continue
        idx = next((i for i, c in enumerate(result) if isinstance(c, dict) and c.get(key) == item[key]), None)
        merged = strategic_merge(result[idx] if idx is not None else {}, item)
        if idx is None and merged is not _DELETE:
            result.append(merged)
        elif idx is not None and merged is _DELETE:
            del result[idx]
        elif idx is not None:
            result[idx] = merged
    return result


def _strip_directives(value: Any) -> Any:
    """A copy of a patch value without ``$``-directives, for values that replace outright."""
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def apply_patch(res: Resource, name: str, current: JSON, body: Any, patch_type: str) -> JSON:
    """Apply a merge, json or strategic patch to a copy of ``current``."""
    if patch_type == "strategic" and not res.builtin:
        raise unsupported_patch()
    if patch_type == "json":
        result = _json_patch(res, name, current, body)
    elif patch_type in ("merge", "strategic"):
        if not isinstance(body, dict):
            raise bad_request(f"the patch body for {res.qualified} \"{name}\" must be a JSON object")
        fn = merge_patch if patch_type == "merge" else strategic_merge
        result = fn(current, body)
    else:
        raise unsupported_patch()
    if not isinstance(result, dict):
        raise invalid(res, name, "", "the patched object is not a JSON object")
    return result


def _json_patch(res: Resource, name: str, current: JSON, body: Any) -> Any:
    """RFC 6902 through the ``jsonpatch`` library; a failing operation is a 422 as upstream."""
    if not isinstance(body, list):
        raise bad_request(f'the JSON patch for {res.qualified} "{name}" must be a list of operations')
    try:
        return jsonpatch.apply_patch(current, body)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as e:
        raise StoreError(422, "Invalid", f"the server rejected our request due to an error in our request: {e}") from e


# --------------------------------------------------------------------------- helpers


def now_rfc3339() -> str:
    """The current UTC time as Kubernetes writes timestamps."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _jsonable(value: Any) -> Any:
    """Deep-copy into plain JSON (YAML loaders hand us datetimes for unquoted timestamps)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
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


def _spec_part(obj: JSON) -> JSON:
    """Everything that bumps ``generation`` when it changes (all but metadata and status)."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _comparable(obj: JSON) -> JSON:
    """The object without its resourceVersion, to detect no-op writes."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in ("resourceVersion", "managedFields")}
    return {**obj, "metadata": meta}


SANDBOX_NODE = "worker-1.cluster.internal"  # where the simulated controller schedules the pods it creates


def sandbox_node(name: str, created: str, index: int = 1) -> JSON:
    """A Ready worker Node as the kubelet reports it (the sandbox has no kubelets, so nodes never change)."""
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "creationTimestamp": created, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "node-role.kubernetes.io/worker": ""}},
        "spec": {"podCIDR": f"10.244.{index}.0/24"},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "kubelet is posting ready status", "lastHeartbeatTime": created,
                            "lastTransitionTime": created}],
            "addresses": [{"type": "InternalIP", "address": f"10.0.0.{10 + index}"},
                          {"type": "Hostname", "address": name}],
            "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Debian GNU/Linux 12 (bookworm)",
                         "kernelVersion": "6.1.0-26-amd64", "containerRuntimeVersion": "containerd://1.7.22",
                         "operatingSystem": "linux", "architecture": "amd64"},
            "allocatable": {"cpu": "4", "memory": "16Gi", "pods": "110"},
            "capacity": {"cpu": "4", "memory": "16Gi", "pods": "110"},
        },
    }


_INITIAL_STATUS: dict[str, JSON] = {
    "pods": {"phase": "Pending"}, "namespaces": {"phase": "Active"}, "replicasets": {"replicas": 0},
    "deployments": {}, "services": {"loadBalancer": {}},
}


@dataclass
class _Event:
    """One entry of the bounded watch history."""

    rv: int
    type: str
    plural: str
    obj: JSON
    old: JSON | None


_EventList = list[_Event]


@dataclass
class _Query:
    """A parsed list/watch filter."""

    res: Resource
    namespace: str | None
    labels: list[Requirement] = field(default_factory=list)
    fields: list[FieldRequirement] = field(default_factory=list)

    def matches(self, plural: str, obj: JSON) -> bool:
        """Whether an object of ``plural`` passes namespace, label and field filters."""
        if plural != self.res.plural:
            return False
        if self.namespace and (obj.get("metadata") or {}).get("namespace") != self.namespace:
            return False
        return labels_match(self.labels, obj) and all(f.matches(obj) for f in self.fields)


def resource(plural: str) -> Resource:
    """The served resource named by its plural; unknown is a 404 like the real server's."""
    try:
        return RESOURCES[plural]
    except KeyError:
        raise StoreError(404, "NotFound", "the server could not find the requested resource") from None


# --------------------------------------------------------------------------- the store


class Store:
    """Thread-safe in-memory objects with one global resourceVersion and a bounded watch history."""

    def __init__(self, *, history: int = 1000) -> None:
        self._lock = threading.Condition(threading.RLock())
        self._objects: dict[tuple[str, str, str], JSON] = {}
        self._logs: dict[tuple[str, str], str] = {}
        self._rv = 1
        self._history: deque[_Event] = deque(maxlen=history)
        self._compacted = 1  # events at or below this resourceVersion are gone from the history
        self._listeners: list[Listener] = []

    # ------------------------------------------------------------------ reads

    @property
    def resource_version(self) -> str:
        """The current global resourceVersion."""
        with self._lock:
            return str(self._rv)

    def get(self, plural: str, namespace: str | None, name: str) -> JSON:
        """One object, or a 404 StoreError."""
        res = resource(plural)
        with self._lock:
            return copy.deepcopy(self._require(res, namespace, name))

    def list(
        self, plural: str, namespace: str | None = None, *, label_selector: str = "",
        field_selector: str = "", limit: int = 0, continue_token: str = "",
    ) -> tuple[list[JSON], str, str]:
        """Matching objects sorted by namespace/name, the list resourceVersion and a continue token."""
        query = self._query(plural, namespace, label_selector, field_selector)
        start, list_rv = _decode_continue(continue_token) if continue_token else ("", 0)
        with self._lock:
            objects = self._objects_at(list_rv) if list_rv else self._objects
            keys = sorted(k for k, o in objects.items() if k > (plural, "", "") and query.matches(k[0], o))
            keys = [k for k in keys if f"{k[1]}/{k[2]}" > start] if start else keys
            page = keys[:limit] if limit > 0 else keys
            items = [copy.deepcopy(objects[k]) for k in page]
            rv = list_rv or self._rv
        more = limit > 0 and len(keys) > limit
        token = _encode_continue(f"{page[-1][1]}/{page[-1][2]}", rv) if more else ""
        return items, str(rv), token

    def _objects_at(self, rv: int) -> dict[tuple[str, str, str], JSON]:
        """The objects as they were at ``rv`` (lock held): later pages of a list are a consistent snapshot.

        Rebuilt by undoing the history after ``rv``; older than the history is the real server's 410.
        """
        if rv >= self._rv:
            return self._objects
        if rv < self._compacted:
            raise expired("The provided continue parameter is too old to display a consistent list result. You "
                          "can start a new list without the continue parameter.")
        state = dict(self._objects)
        for event in reversed([e for e in self._history if e.rv > rv]):
            key = self._key(RESOURCES[event.plural], event.obj)
            if event.type == "ADDED" or event.old is None:
                state.pop(key, None)
            else:
                state[key] = event.old
        return state

    def remaining(self, plural: str, namespace: str | None, label_selector: str, field_selector: str,
                  continue_token: str) -> int:
        """How many matching objects come after a continue token (``remainingItemCount``)."""
        items, _, _ = self.list(plural, namespace, label_selector=label_selector,
                                field_selector=field_selector, continue_token=continue_token)
        return len(items)

    def pod_log(self, namespace: str, name: str) -> str:
        """The log text of a pod (404 if the pod does not exist)."""
        pod = self.get("pods", namespace, name)
        with self._lock:
            text = self._logs.get((namespace, name))
        if text is None:
            text = ((pod.get("metadata") or {}).get("annotations") or {}).get(LOG_ANNOTATION, "")
        return str(text)

    # ------------------------------------------------------------------ writes

    def set_pod_log(self, namespace: str, name: str, text: str) -> None:
        """Set the text served at ``pods/{name}/log`` (the pod may be created before or after)."""
        with self._lock:
            self._logs[(namespace, name)] = text

    def create(
        self, plural: str, namespace: str | None, obj: JSON, *, dry_run: bool = False, system: bool = False,
        implicit_namespace: bool = True, manager: str | None = None, managed_fields: JSONList | None = None,
    ) -> JSON:
        """Create an object; ``system=True`` (loader only) keeps the given uid, timestamp, generation, status.

        A missing namespace is created on the fly for in-process callers (scenario loading, tests); the API
        server passes ``implicit_namespace=False`` and gets the real server's 404 instead.
        """
        res = resource(plural)
        new = self._prepare_create(res, namespace, _jsonable(obj), system)
        if managed_fields is not None:
            new["metadata"]["managedFields"] = managed_fields
        elif manager:
            new["metadata"]["managedFields"] = fieldmanager.record_update(None, new, manager, res.api_version)
        name, ns = new["metadata"]["name"], new["metadata"].get("namespace")
        events: list[_Event] = []
        with self._lock:
            if (plural, ns or "", name) in self._objects:
                raise already_exists(res, name)
            if ns and ("namespaces", "", ns) not in self._objects and not implicit_namespace:
                raise not_found(RESOURCES["namespaces"], ns)
            if dry_run:
                return copy.deepcopy(new)
            if ns and ("namespaces", "", ns) not in self._objects:
                events.append(self._store("namespaces", _implicit_namespace(ns), None, "ADDED"))
            events.append(self._store(plural, new, None, "ADDED"))
        self._notify(events)
        return copy.deepcopy(events[-1].obj)

    def replace(
        self, plural: str, namespace: str | None, name: str, obj: JSON, *,
        subresource: str | None = None, dry_run: bool = False, manager: str | None = None,
    ) -> JSON:
        """PUT: a stale ``metadata.resourceVersion`` is a 409; status rules as the real server."""
        res = resource(plural)
        body = _jsonable(obj)
        meta = body.get("metadata") or {}
        if meta.get("name") not in (None, "", name):
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        rv = str(meta.get("resourceVersion") or "")
        if not rv and not res.builtin:
            raise invalid(res, name, "metadata.resourceVersion", "Invalid value: 0x0: must be specified for an update")
        return self._update(res, namespace, name, lambda _old: body, subresource, dry_run, rv, manager=manager)

    def patch(
        self, plural: str, namespace: str | None, name: str, body: Any, patch_type: str, *,
        subresource: str | None = None, dry_run: bool = False, manager: str | None = None,
    ) -> JSON:
        """PATCH with ``merge`` | ``json`` | ``strategic`` (415 for strategic on custom resources)."""
        res = resource(plural)
        if patch_type == "strategic" and not res.builtin:
            raise unsupported_patch()
        return self._update(
            res, namespace, name, lambda old: apply_patch(res, name, old, _jsonable(body), patch_type),
            subresource, dry_run, None, manager=manager,
        )

    def apply(
        self, plural: str, namespace: str | None, name: str, body: JSON, *, manager: str, force: bool = False,
        dry_run: bool = False,
    ) -> tuple[JSON, bool]:
        """Server-side apply by ``manager``: (the object, whether it was created). Conflicts are a 409."""
        res = resource(plural)
        applied = _jsonable(body)
        with self._lock:
            exists = self._key_of(res, namespace, name) in self._objects
        if not exists:
            merged = fieldmanager.apply(None, applied, manager, force=force, api_version=res.api_version)
            fields = merged["metadata"].pop("managedFields", [])
            return self.create(plural, namespace, merged, dry_run=dry_run, implicit_namespace=False,
                               managed_fields=fields), True
        outcome: dict[str, JSON] = {}

        def make(current: JSON) -> JSON:
            outcome["applied"] = fieldmanager.apply(current, applied, manager, force=force,
                                                    api_version=res.api_version)
            return outcome["applied"]

        obj = self._update(res, namespace, name, make, None, dry_run, None,
                           fields=lambda _old, _new: outcome["applied"]["metadata"]["managedFields"])
        return obj, False

    def _key_of(self, res: Resource, namespace: str | None, name: str) -> tuple[str, str, str]:
        """The store key of a name."""
        return (res.plural, (namespace or "") if res.namespaced else "", name)

    def set_status(self, plural: str, namespace: str | None, name: str, status: JSON) -> JSON:
        """Replace an object's status (for the loader and the controller), unconditionally."""
        res = resource(plural)
        return self._update(res, namespace, name, lambda old: {**old, "status": _jsonable(status)},
                            "status", False, None)

    def delete(
        self, plural: str, namespace: str | None, name: str, *, dry_run: bool = False,
        preconditions: JSON | None = None, propagation: str = "Background",
    ) -> JSON:
        """Delete an object and return it; namespaces take their objects, owners their dependents.

        An object with ``metadata.finalizers`` is only marked (``deletionTimestamp``) and goes when an update
        removes the last finalizer. ``Orphan`` keeps the dependents and strips the owner from them.
        """
        res = resource(plural)
        events: list[_Event] = []
        with self._lock:
            current = self._require(res, namespace, name)
            _check_preconditions(res, name, current, preconditions or {})
            if dry_run:
                return copy.deepcopy(current)
            if current["metadata"].get("finalizers"):
                if current["metadata"].get("deletionTimestamp"):
                    return copy.deepcopy(current)
                marked = copy.deepcopy(current)
                marked["metadata"].update(deletionTimestamp=now_rfc3339(), deletionGracePeriodSeconds=0)
                main = self._store(plural, marked, current, "MODIFIED")
                events.append(main)
            else:
                if plural == "namespaces":
                    for key in [k for k in self._objects if k[1] == name]:
                        events.append(self._remove(key))
                main = self._remove(self._key(res, current))
                events.append(main)
                if propagation == "Orphan":
                    events.extend(self._orphan(current))
                else:
                    events.extend(self._collect_garbage(current))
        self._notify(events)
        return copy.deepcopy(main.obj)

    def _key(self, res: Resource, obj: JSON) -> tuple[str, str, str]:
        """The store key of an object."""
        return self._key_of(res, obj["metadata"].get("namespace"), obj["metadata"]["name"])

    def _orphan(self, owner: JSON) -> _EventList:
        """Remove a deleted owner from its dependents' ownerReferences, as the garbage collector does (lock held)."""
        uid, events = owner["metadata"].get("uid"), []
        for key, obj in list(self._objects.items()):
            refs = obj["metadata"].get("ownerReferences") or []
            if uid and any(r.get("uid") == uid for r in refs):
                freed = copy.deepcopy(obj)
                kept = [r for r in refs if r.get("uid") != uid]
                if kept:
                    freed["metadata"]["ownerReferences"] = kept
                else:
                    freed["metadata"].pop("ownerReferences", None)
                events.append(self._store(key[0], freed, obj, "MODIFIED"))
        return events

    def add_listener(self, fn: Listener) -> None:
        """Call ``fn(event_type, plural, obj)`` after every real write, outside the store lock."""
        with self._lock:
            self._listeners.append(fn)

    # ------------------------------------------------------------------ watch

    def watch(
        self, plural: str, namespace: str | None = None, *, resource_version: str = "",
        label_selector: str = "", field_selector: str = "", timeout: float | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[tuple[str, JSON]]:
        """Events after ``resource_version`` (or ADDED for all current objects first, when it is ""/"0").

        Selectors and a too-old version are checked now (StoreError 410), before iteration starts.
        """
        query = self._query(plural, namespace, label_selector, field_selector)
        start = _parse_rv(resource_version)
        with self._lock:
            if start and start < self._compacted:
                raise expired(f"too old resource version: {start} ({self._compacted})")
            initial = [] if start else [copy.deepcopy(o) for k, o in sorted(self._objects.items())
                                        if query.matches(k[0], o)]
            cursor = start or self._rv
        deadline = time.monotonic() + (DEFAULT_WATCH_SECONDS if timeout is None else timeout)
        return self._watch_events(query, initial, cursor, deadline, stop or threading.Event())

    def _watch_events(
        self, query: _Query, initial: JSONList, cursor: int, deadline: float, stop: threading.Event,
    ) -> Iterator[tuple[str, JSON]]:
        """The watch generator: initial objects, then history after ``cursor`` until the deadline."""
        for obj in initial:
            yield "ADDED", obj
        while not stop.is_set():
            with self._lock:
                if cursor < self._compacted:  # the consumer fell behind the bounded history
                    yield "ERROR", expired(f"too old resource version: {cursor} ({self._compacted})").to_status()
                    return
                pending = [e for e in self._history if e.rv > cursor]
                if not pending:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    self._lock.wait(min(remaining, 0.25))
                    continue
            for event in pending:
                cursor = event.rv
                translated = _translate(query, event)
                if translated:
                    yield translated

    # ------------------------------------------------------------------ internals

    def _query(self, plural: str, namespace: str | None, labels: str, fields: str) -> _Query:
        """Parse the filters of a list or watch (400 on a bad selector)."""
        res = resource(plural)
        return _Query(res, namespace if res.namespaced else None,
                      parse_label_selector(labels), parse_field_selector(fields, res))

    def _require(self, res: Resource, namespace: str | None, name: str) -> JSON:
        """The stored object (not a copy), or a 404."""
        obj = self._objects.get((res.plural, namespace or "" if res.namespaced else "", name))
        if obj is None:
            raise not_found(res, name)
        return obj

    def _prepare_create(self, res: Resource, namespace: str | None, obj: JSON, system: bool) -> JSON:
        """Validate and default a new object: name, namespace, uid, timestamp, generation, status."""
        if not isinstance(obj, dict):
            raise bad_request(f"the body of a {res.kind} must be a JSON object")
        _check_type(res, obj)
        meta = dict(obj.get("metadata") or {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
        _check_name(res, meta.get("name") or "")
        ns = _check_namespace(res, namespace, meta.get("namespace"))
        meta.update({"namespace": ns} if ns else {})
        if meta.pop("resourceVersion", None) and not system:
            raise bad_request("resourceVersion should not be set on objects to be created")
        if res.plural == "pods" and not system and not (obj.get("spec") or {}).get("containers"):
            raise invalid(res, meta["name"], "spec.containers", "Required value", "FieldValueRequired")
        if not system or not meta.get("uid"):
            meta["uid"] = str(uuid.uuid4())
        if not system or not meta.get("creationTimestamp"):
            meta["creationTimestamp"] = now_rfc3339()
        if res.plural not in _NO_GENERATION and not (system and meta.get("generation")):
            meta["generation"] = 1
        new = _defaulted(res, {"apiVersion": res.api_version, "kind": res.kind, **obj, "metadata": meta})
        if res.has_status and not (system and "status" in obj):
            new.pop("status", None)
            if res.plural in _INITIAL_STATUS:
                new["status"] = copy.deepcopy(_INITIAL_STATUS[res.plural])
        return new

    def _update(
        self, res: Resource, namespace: str | None, name: str, make: Callable[[JSON], JSON],
        subresource: str | None, dry_run: bool, expect_rv: str | None, *, manager: str | None = None,
        fields: Callable[[JSON, JSON], JSONList] | None = None,
    ) -> JSON:
        """Read-modify-write under the lock; no resourceVersion bump when nothing changed.

        ``manager`` records the write in managedFields (API writes); ``fields`` sets them outright (apply).
        """
        with self._lock:
            old = self._require(res, namespace, name)
            candidate = make(copy.deepcopy(old))
            want_rv = expect_rv or str((candidate.get("metadata") or {}).get("resourceVersion") or "")
            if want_rv and want_rv != old["metadata"]["resourceVersion"]:
                raise conflict(res, name)
            new = _merge_update(res, old, candidate, subresource)
            if fields is not None:
                new["metadata"]["managedFields"] = fields(old, new)
            elif manager and not subresource:
                new["metadata"]["managedFields"] = fieldmanager.record_update(old, new, manager, res.api_version)
            if not new["metadata"].get("managedFields"):
                new["metadata"].pop("managedFields", None)
            if _comparable(new) == _comparable(old) or dry_run:
                return copy.deepcopy(new)
            event = self._store(res.plural, new, old, "MODIFIED")
            events = [event]
            if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
                # the last finalizer is gone: the deletion that was waiting for it completes now
                events.append(self._remove(self._key(res, new)))
                events.extend(self._collect_garbage(new))
        self._notify(events)
        return copy.deepcopy(event.obj)

    def _store(self, plural: str, obj: JSON, old: JSON | None, kind: str) -> _Event:
        """Bump the global resourceVersion, store the object and append to the history (lock held)."""
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        meta = obj["metadata"]
        self._objects[(plural, meta.get("namespace") or "", meta["name"])] = obj
        return self._record(_Event(self._rv, kind, plural, copy.deepcopy(obj), old))

    def _remove(self, key: tuple[str, str, str]) -> _Event:
        """Remove an object; the DELETED event carries a fresh resourceVersion (lock held)."""
        obj = self._objects.pop(key)
        self._rv += 1
        final = copy.deepcopy(obj)
        final["metadata"]["resourceVersion"] = str(self._rv)
        if key[0] == "pods":
            self._logs.pop((key[1], key[2]), None)
        return self._record(_Event(self._rv, "DELETED", key[0], final, obj))

    def _collect_garbage(self, owner: JSON) -> _EventList:
        """The garbage collector, done at once: delete dependents none of whose owners exist (lock held).

        Owners are matched by uid, as upstream; a uid still carried by another object (the upstream
        fixtures share one) keeps its dependents. Bounded: every round removes an object.
        """
        events: _EventList = []
        pending = [owner]
        while pending:
            gone = pending.pop()["metadata"]
            if not gone.get("uid") or self._uid_alive(gone["uid"]):
                continue
            for key, obj in list(self._objects.items()):
                refs = obj["metadata"].get("ownerReferences") or []
                if (key in self._objects and key[1] == (gone.get("namespace") or key[1])
                        and any(r.get("uid") == gone["uid"] for r in refs)
                        and not any(self._uid_alive(str(r.get("uid"))) for r in refs)):
                    events.append(self._remove(key))
                    pending.append(obj)
        return events

    def _uid_alive(self, uid: str) -> bool:
        """Whether any stored object has this uid (lock held)."""
        return any(o["metadata"].get("uid") == uid for o in self._objects.values())

    def _record(self, event: _Event) -> _Event:
        """Append to the bounded history, remembering what fell off, and wake watchers (lock held)."""
        if len(self._history) == self._history.maxlen:
            self._compacted = self._history[0].rv
        self._history.append(event)
        self._lock.notify_all()
        return event

    def _notify(self, events: _EventList) -> None:
        """Tell listeners about real writes, outside the lock; a failing listener must not fail the write."""
        with self._lock:
            listeners = list(self._listeners)
        for event in events:
            for fn in listeners:
                try:
                    fn(event.type, event.plural, copy.deepcopy(event.obj))
                except Exception:  # noqa: BLE001 - the write already happened; log loudly instead of failing the caller
                    _log.exception("store listener %r failed on %s %s", fn, event.type, event.plural)


# --------------------------------------------------------------------------- module helpers


def _check_type(res: Resource, obj: JSON) -> None:
    """apiVersion and kind, when given, must be the resource's."""
    if obj.get("apiVersion") not in (None, res.api_version):
        raise bad_request(
            f"the API version in the data ({obj['apiVersion']}) does not match the expected API version "
            f"({res.api_version})"
        )
    if obj.get("kind") not in (None, res.kind):
        raise bad_request(f"the kind in the data ({obj['kind']}) does not match the expected kind ({res.kind})")


def _check_name(res: Resource, name: str) -> None:
    """Names are required and must be RFC 1123 subdomains (422 otherwise)."""
    if not name:
        raise invalid(res, "", "metadata.name", "Required value: name or generateName is required",
                      "FieldValueRequired")
    if len(name) > 253 or not _NAME.match(name):
        raise invalid(res, name, "metadata.name", f'Invalid value: "{name}": {_NAME_RULE}')


def _check_namespace(res: Resource, url_ns: str | None, body_ns: str | None) -> str | None:
    """The object's namespace: the URL's; a different one in the body is a 400."""
    if not res.namespaced:
        return None
    if body_ns and url_ns and body_ns != url_ns:
        raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
    ns = url_ns or body_ns
    if not ns:
        raise bad_request(f"a namespace is required to create a {res.kind}")
    return ns


def _implicit_namespace(name: str) -> JSON:
    """A namespace created because an object was created in it."""
    return {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "uid": str(uuid.uuid4()), "creationTimestamp": now_rfc3339(),
                     "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"},
    }


# Kinds a 1.32 server keeps no metadata.generation for (no spec, or not tracked; pods only from 1.33).
_NO_GENERATION = ("events", "namespaces", "nodes", "pods", "configmaps", "secrets", "endpoints", "serviceaccounts",
                  "services")


def _defaulted(res: Resource, obj: JSON, old: JSON | None = None) -> JSON:
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


def _merge_update(res: Resource, old: JSON, candidate: JSON, subresource: str | None) -> JSON:
    """The stored result of a write: status rules, immutable metadata, generation."""
    if not isinstance(candidate, dict):
        raise invalid(res, old["metadata"]["name"], "", "the object is not a JSON object")
    _check_type(res, candidate)
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
    new = _defaulted(res, new, old)
    if res.has_status:
        new.pop("status", None)
        new.update({"status": old["status"]} if "status" in old else {})
    if "generation" in meta and _spec_part(new) != _spec_part(old):
        meta["generation"] = int(meta["generation"]) + 1
    return new


def _check_preconditions(res: Resource, name: str, current: JSON, pre: JSON) -> None:
    """DeleteOptions preconditions (uid, resourceVersion) as the real server checks them."""
    meta = current["metadata"]
    if pre.get("uid") and pre["uid"] != meta.get("uid"):
        raise conflict(res, name, f"Precondition failed: UID in precondition: {pre['uid']}, "
                                  f"UID in object meta: {meta.get('uid')}")
    if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
        raise conflict(res, name, f"Precondition failed: ResourceVersion in precondition: "
                                  f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                  f"{meta.get('resourceVersion')}")


def _translate(query: _Query, event: _Event) -> tuple[str, JSON] | None:
    """What a filtered watch sees: objects entering or leaving the selection become ADDED/DELETED."""
    now = event.type != "DELETED" and query.matches(event.plural, event.obj)
    before = event.old is not None and query.matches(event.plural, event.old)
    if event.type == "DELETED":
        return ("DELETED", copy.deepcopy(event.obj)) if before else None
    if now:
        return ("MODIFIED" if before and event.type == "MODIFIED" else "ADDED"), copy.deepcopy(event.obj)
    if not before or event.old is None:
        return None
    # Leaving the selection: the watch cache sends the object as it was (it matched then), at the event's version.
    gone = copy.deepcopy(event.old)
    gone["metadata"]["resourceVersion"] = event.obj["metadata"]["resourceVersion"]
    return "DELETED", gone


def _parse_rv(text: str) -> int:
    """A resourceVersion parameter as an integer ("" and "0" mean "any": 0)."""
    try:
        return int(text or 0)
    except ValueError:
        raise bad_request(f'invalid resource version "{text}"') from None


def _encode_continue(start: str, rv: int) -> str:
    """An opaque continue token in the shape the real server uses."""
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[str, int]:
    """Read a continue token back; anything else is a 400 as on the real server."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return str(data["start"]), int(data["rv"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise bad_request(f"continue key is not valid: {token!r}") from None
