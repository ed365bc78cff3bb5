"""One batch/v1 Job per incident: its manifest, and submitting and watching it with the official client.

The Job runs `rollbook run` in the rollbook image, in namespace `rollbook`, under the identity the steps
need (deploy/serviceaccounts.yaml): `rollbook-viewer`, unless step 4 runs with an approved retry or undo,
then `rollbook-operator`. It never retries (`backoffLimit: 0`: a second run of a step 4 could act twice),
is bounded by `activeDeadlineSeconds` (every step's timeout plus the pod's start), is garbage-collected by
the cluster `ttlSecondsAfterFinished` after it ends, and writes its record onto the records PVC.

Submitting and watching use BatchV1Api/CoreV1Api (kubernetes), over the Cluster's ApiClient: the watch is
bounded (`timeout_seconds` per watch call, an overall deadline) and re-listed from the last
resourceVersion when a watch ends early.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client as k8s_client
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from rollbook import __version__
from rollbook.cluster.connect import Cluster, Target, translate
from rollbook.errors import ClusterError

NAMESPACE = "rollbook"
VIEWER_SA = "rollbook-viewer"
OPERATOR_SA = "rollbook-operator"
RECORDS_CLAIM = "rollbook-records"
RECORDS_MOUNT = "/records"
CONFIG_MAP = "rollbook-config"
CONFIG_MOUNT = "/etc/rollbook"
MC_SECRET = "rollbook-mc-token"
MC_MOUNT = "/var/run/secrets/rollbook-mc"
IMAGE_ENV = "ROLLBOOK_JOB_IMAGE"
DEFAULT_IMAGE = f"rollbook:{__version__}"
START_MARGIN = 300  # seconds a pod may take to be scheduled, pull the image and start its first kernel
TTL_AFTER_FINISHED = 86400  # a day: the record is on the PVC; the Job object is kept for `kubectl describe`
LABEL = "rollbook.io"
COMPONENT = "incident"
WATCH_CHUNK = 30  # seconds per watch call; the overall bound is the Job's own deadline plus a margin


@dataclass(frozen=True)
class JobRequest:
    """What one incident Job runs."""

    incident: str
    namespace: str  # of the Rollout
    rollout: str
    args: tuple[str, ...]  # `rollbook run` arguments after the incident/namespace/rollout/context/out ones
    steps: tuple[int, ...]
    step_timeout: float
    mutating: bool  # step 4 with an approved retry or undo
    image: str = DEFAULT_IMAGE
    env: Mapping[str, str] = field(default_factory=dict)
    job_namespace: str = NAMESPACE


def service_account(req: JobRequest) -> str:
    """The identity the steps need: the operator only for an approved step 4 (a mutation may be sent)."""
    return OPERATOR_SA if req.mutating and 4 in req.steps else VIEWER_SA


def deadline(req: JobRequest) -> int:
    """activeDeadlineSeconds: every step's wall-clock bound plus the pod's start."""
    return int(req.step_timeout * max(len(req.steps), 1)) + START_MARGIN


def label_value(text: str) -> str:
    """A valid label value (63 chars of [A-Za-z0-9._-], alphanumeric at both ends); long ones keep a hash."""
    clean = re.sub(r"[^A-Za-z0-9._-]", "-", text).strip("-._")
    if len(clean) > 63:
        clean = clean[:54].rstrip("-._") + "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return clean


def job_name(incident: str, attempt: str) -> str:
    """`rollbook-<incident>-<attempt>`, a DNS-1123 name of at most 63 characters."""
    base = re.sub(r"[^a-z0-9-]", "-", incident.lower()).strip("-")
    suffix = f"-{attempt}"
    base = base[: 63 - len("rollbook-") - len(suffix)].rstrip("-")
    return f"rollbook-{base}{suffix}"


def labels(req: JobRequest) -> dict[str, str]:
    """The Job's and its pod's labels: who it is for, selectable with `kubectl get jobs -l`."""
    return {"app.kubernetes.io/name": "rollbook", "app.kubernetes.io/component": COMPONENT,
            "app.kubernetes.io/part-of": "rollbook", f"{LABEL}/incident": label_value(req.incident),
            f"{LABEL}/namespace": label_value(req.namespace), f"{LABEL}/rollout": label_value(req.rollout)}


def manifest(req: JobRequest, name: str) -> dict[str, Any]:
    """The batch/v1 Job of one incident."""
    command = ["rollbook", "run", "--incident", req.incident, "--namespace", req.namespace,
               "--rollout", req.rollout, "--context", "in-cluster", "--out", RECORDS_MOUNT,
               "--steps", ",".join(map(str, req.steps)), "--step-timeout", f"{req.step_timeout:g}", *req.args]
    env = [{"name": "HOME", "value": "/tmp"}, {"name": "ROLLBOOK_CONFIG", "value": f"{CONFIG_MOUNT}/rollbook.yaml"},
           {"name": "ROLLBOOK_MC_TOKEN_FILE", "value": f"{MC_MOUNT}/token"},
           *({"name": k, "value": v} for k, v in sorted(req.env.items()))]
    meta_labels = labels(req)
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": req.job_namespace, "labels": meta_labels,
                     "annotations": {f"{LABEL}/incident": req.incident}},
        "spec": {
            "backoffLimit": 0,  # never a second attempt: step 4 must not act twice
            "activeDeadlineSeconds": deadline(req),
            "ttlSecondsAfterFinished": TTL_AFTER_FINISHED,
            "template": {
                "metadata": {"labels": meta_labels},
                "spec": {
                    "serviceAccountName": service_account(req),
                    "restartPolicy": "Never",
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                        "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "rollbook", "image": req.image, "command": command, "env": env,
                        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}},
                        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"},
                                      "limits": {"cpu": "2", "memory": "2Gi"}},
                        "volumeMounts": [{"name": "records", "mountPath": RECORDS_MOUNT},
                                         {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
                                         {"name": "mc-token", "mountPath": MC_MOUNT, "readOnly": True},
                                         {"name": "tmp", "mountPath": "/tmp"}],
                    }],
                    "volumes": [{"name": "records", "persistentVolumeClaim": {"claimName": RECORDS_CLAIM}},
                                {"name": "config", "configMap": {"name": CONFIG_MAP, "optional": True}},
                                {"name": "mc-token", "secret": {"secretName": MC_SECRET, "optional": True}},
                                {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
                },
            },
        },
    }


@dataclass(frozen=True)
class JobEnd:
    """How a Job ended: its condition, the pod's exit code, and the pod's log."""

    name: str
    condition: str  # Complete | Failed
    reason: str
    message: str
    exit_code: int | None
    log: str
    pod: str | None


class JobClient:
    """Create one Job and follow it to its end."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        # Any: the client's models are typed loosely (Optional everywhere); the checks are in _check/_end
        self.batch: Any = k8s_client.BatchV1Api(cluster.api_client)
        self.core: Any = k8s_client.CoreV1Api(cluster.api_client)

    def _error(self, e: ApiException, verb: str, namespace: str, name: str | None, plural: str = "jobs") -> ClusterError:
        body = e.body if isinstance(e.body, bytes) else str(e.body or e.reason or "").encode()
        if not e.status:
            return ClusterError(f"The API server {self.cluster.host} could not be reached while {verb}ing "
                                f"{plural} in namespace \"{namespace}\" (context \"{self.cluster.context}\"): {e.reason}",
                                kind="Job", name=name, namespace=namespace, context=self.cluster.context,
                                hint="Check the connection and retry.")
        return translate(e.status, body, Target(plural, namespace, name, verb), context=self.cluster.context)

    def create(self, job: dict[str, Any]) -> dict[str, Any]:
        """POST the Job; a 403 names the missing permission (create jobs in the rollbook namespace)."""
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        try:
            created: dict[str, Any] = self.batch.api_client.sanitize_for_serialization(
                self.batch.create_namespaced_job(ns, job, _request_timeout=self.cluster.timeout))
            return created
        except ApiException as e:
            raise self._error(e, "create", ns, name) from e

    def delete(self, namespace: str, name: str) -> None:
        """Delete the Job and its pod (foreground), e.g. when the service interrupts it."""
        try:
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background",
                                             _request_timeout=self.cluster.timeout)
        except ApiException as e:
            if e.status != 404:
                raise self._error(e, "delete", namespace, name) from e

    def wait(self, namespace: str, name: str, *, timeout: float,
             progress: Callable[[str], None] | None = None) -> JobEnd | None:
        """Watch the Job until it has a Complete or Failed condition; None when `timeout` passes first."""
        end = time.monotonic() + timeout
        said: set[str] = set()
        resource_version = ""
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return None
            try:
                if not resource_version:  # (re)list: the current state, and where the watch starts
                    listed = self.batch.list_namespaced_job(namespace, field_selector=f"metadata.name={name}",
                                                            _request_timeout=self.cluster.timeout)
                    resource_version = listed.metadata.resource_version
                    for item in listed.items:
                        done = self._check(item, said, progress)
                        if done:
                            return self._end(namespace, done)
                    if not listed.items:
                        raise ClusterError(f"Job \"{name}\" is gone from namespace \"{namespace}\" (context "
                                           f"\"{self.cluster.context}\") before it ended.", kind="Job", name=name,
                                           namespace=namespace, context=self.cluster.context,
                                           hint="Someone deleted it; its record may be partial: rollbook history.")
                w: Any = k8s_watch.Watch()  # type: ignore[no-untyped-call]
                for event in w.stream(self.batch.list_namespaced_job, namespace,
                                      field_selector=f"metadata.name={name}", resource_version=resource_version,
                                      timeout_seconds=max(1, int(min(WATCH_CHUNK, left))),
                                      _request_timeout=min(WATCH_CHUNK, left) + self.cluster.timeout):
                    obj = event["object"]
                    resource_version = obj.metadata.resource_version
                    done = self._check(obj, said, progress)
                    if done:
                        w.stop()
                        return self._end(namespace, done)
            except ApiException as e:
                if e.status == 410:  # the watch's resourceVersion is too old: list again
                    resource_version = ""
                    continue
                raise self._error(e, "watch", namespace, name) from e

    @staticmethod
    def _check(job: Any, said: set[str], progress: Callable[[str], None] | None) -> Any:
        status = job.status
        if progress and status is not None:
            if status.start_time and "started" not in said:
                said.add("started")
                progress(f"Job {job.metadata.name} started at {status.start_time.isoformat()}")
            if status.active and "active" not in said:
                said.add("active")
                progress(f"Job {job.metadata.name}: its pod is running")
        for cond in (status.conditions if status else None) or []:
            if cond.type in ("Complete", "Failed") and cond.status == "True":
                return job
        return None

    def _end(self, namespace: str, job: Any) -> JobEnd:
        cond = next(c for c in job.status.conditions if c.type in ("Complete", "Failed") and c.status == "True")
        name = job.metadata.name
        pod, code, log = None, None, ""
        try:
            pods = self.core.list_namespaced_pod(namespace, label_selector=f"job-name={name}",
                                                 _request_timeout=self.cluster.timeout).items
            if pods:
                newest = max(pods, key=lambda p: p.metadata.creation_timestamp or 0)
                pod = str(newest.metadata.name)
                for cs in (newest.status.container_statuses if newest.status else None) or []:
                    if cs.state and cs.state.terminated:
                        code = cs.state.terminated.exit_code
                log = self.core.read_namespaced_pod_log(pod, namespace, _request_timeout=self.cluster.timeout)
        except ApiException as e:
            log = f"(the Job's pod or its log could not be read: {self._error(e, 'get', namespace, pod, 'pods')})"
        return JobEnd(name, cond.type, cond.reason or "", cond.message or "", code, log or "", pod)
