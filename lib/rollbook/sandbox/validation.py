"""Strict field validation (``fieldValidation=Strict``, kubectl's default): unknown fields are a 400.

A real server knows every field of every kind (Go structs for built-ins, the CRD's structural schema for
Argo's kinds). The sandbox knows the complete field sets below and checks only those levels: the top
level of every kind, ``metadata``, and for pods (and pod templates) the pod spec and its containers. A
level not listed is accepted as written, so a manifest a real cluster takes is never refused here; a
typo at a checked level is refused the way the real server refuses it.
"""

from __future__ import annotations

from typing import Any

from rollbook.sandbox.apierrors import bad_request
from rollbook.sandbox.resources import Resource

JSON = dict[str, Any]

_OBJECT_META = frozenset({
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences", "finalizers",
    "managedFields",
})
_TYPE_META = frozenset({"apiVersion", "kind"})
_SPEC_STATUS = _TYPE_META | {"metadata", "spec", "status"}
_TOP: dict[str, frozenset[str]] = {
    "configmaps": _TYPE_META | {"metadata", "data", "binaryData", "immutable"},
    "secrets": _TYPE_META | {"metadata", "data", "stringData", "type", "immutable"},
    "serviceaccounts": _TYPE_META | {"metadata", "secrets", "imagePullSecrets", "automountServiceAccountToken"},
    "endpoints": _TYPE_META | {"metadata", "subsets"},
    "roles": _TYPE_META | {"metadata", "rules"},
    "clusterroles": _TYPE_META | {"metadata", "rules", "aggregationRule"},
    "rolebindings": _TYPE_META | {"metadata", "roleRef", "subjects"},
    "clusterrolebindings": _TYPE_META | {"metadata", "roleRef", "subjects"},
    "events": _TYPE_META | {
        "metadata", "involvedObject", "reason", "message", "source", "firstTimestamp", "lastTimestamp", "count",
        "type", "eventTime", "series", "action", "related", "reportingComponent", "reportingInstance"},
}
# k8s.io/api core/v1 PodSpec and Container as of Kubernetes 1.32.
_POD_SPEC = frozenset({
    "volumes", "initContainers", "containers", "ephemeralContainers", "restartPolicy",
    "terminationGracePeriodSeconds", "activeDeadlineSeconds", "dnsPolicy", "nodeSelector", "serviceAccountName",
    "serviceAccount", "automountServiceAccountToken", "nodeName", "hostNetwork", "hostPID", "hostIPC",
    "shareProcessNamespace", "securityContext", "imagePullSecrets", "hostname", "subdomain", "affinity",
    "schedulerName", "tolerations", "hostAliases", "priorityClassName", "priority", "dnsConfig", "readinessGates",
    "runtimeClassName", "enableServiceLinks", "preemptionPolicy", "overhead", "topologySpreadConstraints",
    "setHostnameAsFQDN", "os", "hostUsers", "schedulingGates", "resourceClaims", "resources",
})
_CONTAINER = frozenset({
    "name", "image", "command", "args", "workingDir", "ports", "envFrom", "env", "resources", "resizePolicy",
    "restartPolicy", "volumeMounts", "volumeDevices", "livenessProbe", "readinessProbe", "startupProbe",
    "lifecycle", "terminationMessagePath", "terminationMessagePolicy", "imagePullPolicy", "securityContext",
    "stdin", "stdinOnce", "tty",
})
_TEMPLATE_KINDS = ("replicasets", "deployments", "rollouts")


def unknown_fields(res: Resource, obj: Any) -> list[str]:
    """The dotted paths of fields the real server would not know, in the order they appear."""
    if not isinstance(obj, dict):
        return []
    found = _extra(obj, _TOP.get(res.plural, _SPEC_STATUS), "")
    found += _extra(obj.get("metadata"), _OBJECT_META, "metadata.")
    spec = obj.get("spec")
    if res.plural == "pods":
        found += _pod_spec(spec, "spec.")
    elif res.plural in _TEMPLATE_KINDS and isinstance(spec, dict) and isinstance(spec.get("template"), dict):
        template = spec["template"]
        found += _extra(template.get("metadata"), _OBJECT_META, "spec.template.metadata.")
        found += _pod_spec(template.get("spec"), "spec.template.spec.")
    return found


def check_strict(res: Resource, obj: Any) -> None:
    """Raise the real server's 400 when ``obj`` has fields it would not know."""
    unknown = unknown_fields(res, obj)
    if unknown:
        fields = ", ".join(f'unknown field "{p}"' for p in unknown)
        raise bad_request(f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: '
                          f"strict decoding error: {fields}")


def _pod_spec(spec: Any, prefix: str) -> list[str]:
    """Unknown fields of a pod spec and of its containers."""
    found = _extra(spec, _POD_SPEC, prefix)
    if isinstance(spec, dict):
        for key in ("containers", "initContainers"):
            for i, container in enumerate(spec.get(key) or []):
                found += _extra(container, _CONTAINER, f"{prefix}{key}[{i}].")
    return found


def _extra(obj: Any, known: frozenset[str], prefix: str) -> list[str]:
    """Keys of ``obj`` outside ``known`` (directive keys of strategic merge patches such as ``$patch`` pass)."""
    if not isinstance(obj, dict):
        return []
    return [f"{prefix}{k}" for k in obj if k not in known and not str(k).startswith("$")]
