"""Raw reads of an analysis gate's configuration, and what an identity may do (for `rollbook preflight`).

Rollouts, AnalysisTemplates, ClusterAnalysisTemplates, Argo's notification ConfigMap, a workloadRef's
Deployment, and SelfSubjectAccessReviews. Objects come back as the API sent them (the preflight rules
are pure functions over raw objects). A read that is refused or absent is a :class:`Fetched` with the
reason, not an exception: preflight reports what it could not check instead of stopping.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from rollbook.cluster.connect import Cluster, Target
from rollbook.errors import ClusterError, ClusterUnavailable, Forbidden, NotFound

RawObject = dict[str, Any]
ACCESS_REVIEW_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
# plural -> URL prefix for the kinds connect.RESOURCES does not carry (kept here: only preflight reads them)
_EXTRA_PREFIX = {"configmaps": "/api/v1", "deployments": "/apis/apps/v1"}


@dataclass(frozen=True)
class Fetched:
    """One object, or why there is none: ``absent`` (404) or ``problem`` (403 or another refusal)."""

    obj: RawObject | None
    absent: bool = False
    problem: str | None = None

    @property
    def readable(self) -> bool:
        """The read was answered: the object, or a plain 404."""
        return self.problem is None


@dataclass(frozen=True)
class Access:
    """A SelfSubjectAccessReview's answer: allowed, denied, or unknown (the review itself failed)."""

    allowed: bool | None
    reason: str = ""


def list_rollouts_raw(cluster: Cluster, namespace: str) -> list[RawObject]:
    """Every Rollout of a namespace (``""``: of every namespace), as the API sent them."""
    return cluster.list("rollouts", namespace)


def get_rollout_raw(cluster: Cluster, namespace: str, name: str) -> RawObject:
    """One Rollout as the API sent it (NotFound names the namespace and context)."""
    return cluster.get("rollouts", namespace, name)


def templates(cluster: Cluster, refs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Fetched]:
    """The AnalysisTemplates named by ``(namespace, name)`` refs; namespace ``""`` = ClusterAnalysisTemplate.

    One LIST per namespace (templates are few); when a LIST is forbidden, one GET per name (the viewer
    role may grant only get).
    """
    wanted = sorted(set(refs))
    found: dict[tuple[str, str], Fetched] = {}
    for namespace in sorted({ns for ns, _ in wanted}):
        names = [n for ns, n in wanted if ns == namespace]
        plural = "analysistemplates" if namespace else "clusteranalysistemplates"
        try:
            listed = {str((o.get("metadata") or {}).get("name")): o for o in cluster.list(plural, namespace)}
        except (Forbidden, NotFound):
            found.update({(namespace, n): _get(cluster, plural, namespace, n) for n in names})
            continue
        found.update({(namespace, n): Fetched(listed[n]) if n in listed else Fetched(None, absent=True)
                      for n in names})
    return found


def configmap(cluster: Cluster, namespace: str, name: str) -> Fetched:
    """A ConfigMap, or why it could not be read (Argo's notification config lives in its own namespace)."""
    return _get_path(cluster, "configmaps", namespace, name)


def deployment(cluster: Cluster, namespace: str, name: str) -> Fetched:
    """A Deployment (the pod template of a workloadRef Rollout), or why it could not be read."""
    return _get_path(cluster, "deployments", namespace, name)


def can_i(cluster: Cluster, verb: str, group: str, resource: str, *, subresource: str = "", namespace: str = "",
          name: str = "") -> Access:
    """One SelfSubjectAccessReview for the cluster's own identity (namespace ``""``: cluster-wide)."""
    attrs = {"verb": verb, "group": group, "resource": resource}
    attrs |= {k: v for k, v in (("subresource", subresource), ("namespace", namespace), ("name", name)) if v}
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attrs}}
    target = Target("selfsubjectaccessreviews", namespace or None, verb="create")
    try:
        data = cluster.request("POST", ACCESS_REVIEW_PATH, target, body=body,
                               content_type="application/json").data or {}
    except ClusterUnavailable:
        raise  # the cluster is down: preflight as a whole cannot answer, say so once
    except ClusterError as e:
        return Access(None, f"the access review was refused: {e.message}")
    status = data.get("status") or {}
    reason = str(status.get("reason") or status.get("evaluationError") or "")
    return Access(bool(status.get("allowed")), reason)


# --------------------------------------------------------------------------- helpers


def _get(cluster: Cluster, plural: str, namespace: str, name: str) -> Fetched:
    """GET through the connection's resource table, with refusals as values."""
    try:
        return Fetched(cluster.get(plural, namespace, name))
    except NotFound:
        return Fetched(None, absent=True)
    except ClusterUnavailable:
        raise
    except ClusterError as e:
        return Fetched(None, problem=e.message)


def _get_path(cluster: Cluster, plural: str, namespace: str, name: str) -> Fetched:
    """GET a kind outside connect.RESOURCES by its URL."""
    path = f"{_EXTRA_PREFIX[plural]}/namespaces/{quote(namespace, safe='')}/{plural}/{quote(name, safe='')}"
    try:
        data = cluster.request("GET", path, Target(plural, namespace, name)).data
    except NotFound:
        return Fetched(None, absent=True)
    except ClusterUnavailable:
        raise
    except ClusterError as e:
        return Fetched(None, problem=e.message)
    return Fetched(data if isinstance(data, dict) else {})
