"""OpenAPI v3 schemas of the served kinds, enough for ``kubectl explain`` and field-aware clients.

Not the full upstream schemas (the Argo CRDs alone are ~1 MB of YAML): each kind gets its top-level
fields, and the Argo kinds the fields an on-call engineer asks about (strategy, steps, analysis, status,
abort, conditions). Everything below a documented field is open (``x-kubernetes-preserve-unknown-fields``)
so a schema never rejects what a real cluster accepts. Descriptions are ours, written from Argo's docs.
"""

from __future__ import annotations

from typing import Any

from rollbook.sandbox.resources import Resource

JSON = dict[str, Any]

# A field is (type, description) or (type, description, {sub-fields}); "[]" types are arrays of objects;
# "[]ref" and "ref" point at a named component schema (kubectl explain prints its name, e.g. []Container).
Field = tuple[Any, ...]

_META = ("object", "Standard object's metadata: name, namespace, labels, annotations, ownerReferences, "
         "resourceVersion, uid.", {
             "name": ("string", "Name, unique within a namespace."),
             "namespace": ("string", "Namespace the object lives in."),
             "labels": ("map", "Labels for selecting and grouping objects."),
             "annotations": ("map", "Unstructured key/value data kept with the object."),
             "ownerReferences": ("[]", "Objects this one depends on; garbage collection follows them."),
             "resourceVersion": ("string", "Opaque version for optimistic concurrency and watches."),
             "uid": ("string", "Unique id of this incarnation of the object."),
             "generation": ("integer", "Sequence number of spec changes."),
             "creationTimestamp": ("string", "When the object was created (RFC 3339)."),
         })
_CONDITIONS = ("[]", "Latest observations of the object's state: type, status, reason, message, times.")

_CANARY_STEP = {
    "setWeight": ("integer", "Percentage of traffic (or replicas) sent to the canary."),
    "pause": ("object", "Pause the rollout, for a duration or until promoted.",
              {"duration": ("string", "How long to pause, e.g. 10m; absent means until promoted.")}),
    "analysis": ("object", "Run an AnalysisRun inline; the rollout waits for it and aborts when it fails.",
                 {"templates": ("[]", "AnalysisTemplates to run (templateName, clusterScope)."),
                  "args": ("[]", "Arguments passed to the templates.")}),
    "experiment": ("object", "Run an Experiment before going on."),
    "setCanaryScale": ("object", "Scale the canary independently of its traffic weight."),
}
_ROLLOUT = {
    "spec": ("object", "The desired state of the Rollout.", {
        "replicas": ("integer", "Number of desired pods (default 1)."),
        "selector": ("object", "Label selector for the pods; must match the template's labels."),
        "template": ("object", "The pod template of the new release."),
        "workloadRef": ("object", "A Deployment whose pod template this Rollout uses instead of its own."),
        "revisionHistoryLimit": ("integer", "Old ReplicaSets kept for rollback (default 10)."),
        "paused": ("boolean", "Pauses the rollout at its current step."),
        "progressDeadlineSeconds": ("integer", "Seconds before a stuck update is reported (default 600)."),
        "strategy": ("object", "How a new release replaces the stable one: canary or blueGreen.", {
            "canary": ("object", "Shift traffic to the new ReplicaSet step by step, with analysis gates.", {
                "steps": ("[]", "The canary steps, in order.", _CANARY_STEP),
                "analysis": ("object", "Background analysis that runs during the whole update."),
                "canaryService": ("string", "Service that selects the canary pods."),
                "stableService": ("string", "Service that selects the stable pods."),
                "trafficRouting": ("object", "Service mesh or ingress that splits traffic by weight."),
                "maxSurge": ("string", "Pods above the desired count during the update."),
                "maxUnavailable": ("string", "Pods that may be unavailable during the update."),
                "scaleDownDelaySeconds": ("integer", "Delay before the old ReplicaSet is scaled down."),
                "abortScaleDownDelaySeconds": ("integer", "Delay before the canary is scaled down after an "
                                                          "abort (default 30 with traffic routing)."),
            }),
            "blueGreen": ("object", "Bring up the new release beside the old and switch the active service."),
        }),
    }),
    "status": ("object", "The observed state, written by the Argo Rollouts controller.", {
        "phase": ("string", "Healthy, Progressing, Paused or Degraded (from v1.0)."),
        "message": ("string", "Why the rollout is in its phase, e.g. the abort reason."),
        "abort": ("boolean", "The update was aborted; traffic and replicas go back to stable."),
        "abortedAt": ("string", "When the update was aborted."),
        "stableRS": ("string", "Pod-template hash of the stable ReplicaSet."),
        "currentPodHash": ("string", "Pod-template hash of the current (canary) ReplicaSet."),
        "currentStepIndex": ("integer", "Index of the current canary step."),
        "observedGeneration": ("string", "The spec generation the controller has seen."),
        "replicas": ("integer", "Total pods of the rollout."),
        "updatedReplicas": ("integer", "Pods of the current revision."),
        "availableReplicas": ("integer", "Available pods."),
        "canary": ("object", "Canary state: currentStepAnalysisRunStatus, currentBackgroundAnalysisRunStatus, "
                             "weights."),
        "conditions": _CONDITIONS,
    }),
}
_ANALYSIS_RUN = {
    "spec": ("object", "The metrics to measure and their arguments.", {
        "metrics": ("[]", "Metrics: name, provider (web, prometheus, job...), successCondition, "
                          "failureCondition, failureLimit, interval, count."),
        "args": ("[]", "Arguments resolved into the metrics (name, value or valueFrom)."),
        "terminate": ("boolean", "Stop the run early."),
    }),
    "status": ("object", "The outcome, written by the controller.", {
        "phase": ("string", "Pending, Running, Successful, Failed, Error or Inconclusive."),
        "message": ("string", "Why the run ended as it did."),
        "metricResults": ("[]", "Per metric: phase, count, successful, failed, error, measurements with their "
                                "value (a web metric keeps the response body there)."),
        "startedAt": ("string", "When the run started."),
    }),
}
_ANALYSIS_TEMPLATE = {
    "spec": ("object", "Metrics and arguments an AnalysisRun is made from.", {
        "metrics": ("[]", "The metrics to measure."),
        "args": ("[]", "Arguments the template expects."),
    }),
}
_CONTAINER = "io.k8s.api.core.v1.Container"
_POD_SPEC: dict[str, Field] = {
    "containers": ("[]ref", "The containers of the pod; at least one.", _CONTAINER),
    "initContainers": ("[]ref", "Containers run to completion, in order, before the others start.", _CONTAINER),
    "nodeName": ("string", "The node the pod is scheduled on."),
    "serviceAccountName": ("string", "The ServiceAccount the pod runs as."),
    "restartPolicy": ("string", "Always, OnFailure or Never."),
    "volumes": ("[]", "Volumes the containers can mount."),
    "readinessGates": ("[]", "Extra conditions for the pod to count as ready."),
}
_POD = {
    "spec": ("object", "The pod's desired behaviour.", _POD_SPEC),
    "status": ("object", "The pod's observed state, reported by the kubelet.", {
        "phase": ("string", "Pending, Running, Succeeded, Failed or Unknown."),
        "conditions": _CONDITIONS,
        "containerStatuses": ("[]", "Per container: ready, restartCount, state, lastState, image, imageID."),
        "podIP": ("string", "The pod's IP address."),
        "startTime": ("string", "When the kubelet acknowledged the pod."),
    }),
}
_TEMPLATE = ("object", "The pod template of the pods it makes.",
             {"metadata": _META, "spec": ("object", "The pod spec.", _POD_SPEC)})
_WORKLOAD = {
    "spec": ("object", "The desired state.", {
        "replicas": ("integer", "Number of desired pods."),
        "selector": ("object", "Label selector for the pods."),
        "template": _TEMPLATE,
    }),
    "status": ("object", "The observed state.", {
        "replicas": ("integer", "Pods counted."), "readyReplicas": ("integer", "Ready pods."),
        "availableReplicas": ("integer", "Available pods."),
    }),
}
COMPONENTS: dict[str, tuple[str, dict[str, Field]]] = {
    _CONTAINER: ("A single application container in a pod.", {
        "name": ("string", "Name of the container, unique in the pod."),
        "image": ("string", "Container image name."),
        "command": ("[]string", "Entrypoint array; the image's ENTRYPOINT when absent."),
        "args": ("[]string", "Arguments to the entrypoint."),
        "env": ("[]", "Environment variables (name, value or valueFrom)."),
        "ports": ("[]", "Ports the container exposes (name, containerPort, protocol)."),
        "resources": ("object", "Compute resources: requests and limits."),
        "readinessProbe": ("object", "When the container is ready for traffic."),
        "livenessProbe": ("object", "When the container is restarted."),
        "startupProbe": ("object", "When the container has started."),
        "imagePullPolicy": ("string", "Always, Never or IfNotPresent."),
    }),
}
_SPEC_STATUS = {
    "spec": ("object", "The desired state."),
    "status": ("object", "The observed state, written by the system."),
}
_BY_KIND: dict[str, tuple[str, dict[str, Field]]] = {
    "Rollout": ("A Rollout replaces a Deployment with canary or blue-green updates (Argo Rollouts).", _ROLLOUT),
    "AnalysisRun": ("One execution of analysis metrics; its phase gates a rollout step.", _ANALYSIS_RUN),
    "AnalysisTemplate": ("Reusable analysis metrics, instantiated as AnalysisRuns.", _ANALYSIS_TEMPLATE),
    "Pod": ("A collection of containers that run on a host.", _POD),
    "ReplicaSet": ("Keeps a stable set of pod replicas running.", _WORKLOAD),
    "Deployment": ("Declarative updates for Pods and ReplicaSets.", _WORKLOAD),
    "ConfigMap": ("Configuration data as key/value pairs.", {"data": ("map", "String values."),
                                                              "binaryData": ("map", "Base64 values.")}),
    "Secret": ("Confidential data as key/value pairs.", {"data": ("map", "Base64 values."),
                                                          "type": ("string", "How the data is used.")}),
}


def _schema(field: Field) -> JSON:
    """The OpenAPI schema of one field."""
    kind, description, *rest = field
    if kind in ("ref", "[]ref"):
        ref = {"$ref": f"#/components/schemas/{rest[0]}"}
        return {"type": "array", "description": description, "items": ref} if kind == "[]ref" else {
            "description": description, "allOf": [ref]}
    if kind == "[]string":
        return {"type": "array", "description": description, "items": {"type": "string"}}
    subs: dict[str, Field] = rest[0] if rest else {}
    props = {name: _schema(f) for name, f in subs.items()}
    if kind == "[]":
        item: JSON = {"type": "object", "properties": props} if props else _open()
        return {"type": "array", "description": description, "items": item}
    if kind == "map":
        return {"type": "object", "description": description, "additionalProperties": {"type": "string"}}
    if kind != "object":
        return {"type": kind, "description": description}
    if not props:
        return {**_open(), "description": description}
    return {"type": "object", "description": description, "properties": props,
            "x-kubernetes-preserve-unknown-fields": True}  # only some fields are described: keep the rest


def _open() -> JSON:
    """An object whose fields are not described here (kept, never rejected)."""
    return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def components(group: str) -> JSON:
    """The named component schemas a group's kinds refer to."""
    if group not in ("", "apps"):
        return {}
    return {name: {"type": "object", "description": description, "x-kubernetes-preserve-unknown-fields": True,
                   "properties": {k: _schema(f) for k, f in fields.items()}}
            for name, (description, fields) in COMPONENTS.items()}


def schema_name(res: Resource) -> str:
    """The components/schemas key, in the upstream naming style."""
    if res.builtin:
        return f"io.k8s.api.{res.group.split('.')[0] or 'core'}.{res.version}.{res.kind}"
    return f"io.argoproj.{res.version}.{res.kind}"


def kind_schema(res: Resource) -> JSON:
    """The schema of one kind, tagged with its group/version/kind for kubectl."""
    description, fields = _BY_KIND.get(res.kind, (f"A {res.kind}.", _SPEC_STATUS if res.has_status else {}))
    top: dict[str, Field] = {
        "apiVersion": ("string", "The versioned schema of this representation of an object."),
        "kind": ("string", "The REST resource this object represents."),
        "metadata": _META,
        **fields,
    }
    return {
        "type": "object", "description": description,
        "properties": {name: _schema(f) for name, f in top.items()},
        "x-kubernetes-preserve-unknown-fields": True,
        "x-kubernetes-group-version-kind": [{"group": res.group, "version": res.version, "kind": res.kind}],
    }
