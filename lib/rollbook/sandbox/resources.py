"""The resources the sandbox serves, named by their plural (group, version, kind, scope, subresources)."""

from __future__ import annotations

from dataclasses import dataclass

from rollbook.sandbox.apierrors import StoreError


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
        # held by rollbook's step 4 around a mutation, so two runners never both change one Rollout
        Resource("leases", "coordination.k8s.io", "v1", "Lease", has_status=False),
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



def resource(plural: str) -> Resource:
    """The served resource named by its plural; unknown is a 404 like the real server's."""
    try:
        return RESOURCES[plural]
    except KeyError:
        raise StoreError(404, "NotFound", "the server could not find the requested resource") from None
