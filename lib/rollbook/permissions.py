"""Which Kubernetes permission each playbook step needs, and why: the one table rollbook's RBAC comes from.

Two identities run the playbook (README, "rollbook.yaml"): the **viewer** reads (steps 1-3, 5, 6 and every
read of step 4) and the **operator** acts (step 4's retry and undo). The operator holds every viewer row
too: step 4 re-reads the Rollout right before it patches it.

Consumers: ``rollbook preflight`` asks the API one SelfSubjectAccessReview per row for each identity;
the in-cluster deployment (deploy/ Roles) and the README's permission table are generated from
:data:`PERMISSIONS`, so a change here is a change to all three. Keep it data.

Where the rows come from (read in argoproj/argo-rollouts):
- reads: what ``rollbook.cluster`` requests (connect.RESOURCES) and Argo's own aggregate view ClusterRole
  (manifests/base/argo-rollouts-aggregate-roles.yaml, ``argo-rollouts-aggregate-to-view``: get/list/watch
  on rollouts, rollouts/scale, experiments, analysistemplates, clusteranalysistemplates, analysisruns);
- retry: pkg/kubectl-argo-rollouts/cmd/retry/retry.go patches ``rollouts/status`` with
  ``{"status":{"abort":false}}`` and, when that answers NotFound, the main resource;
- undo: pkg/kubectl-argo-rollouts/cmd/undo/undo.go lists the ReplicaSets, then JSON-patches the Rollout's
  ``/spec/template`` or, for a ``workloadRef`` Rollout, the referenced Deployment (``undoWorkloadRef``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Identity = Literal["viewer", "operator"]
Need = Literal["error", "warn", "info"]

VIEWER: Identity = "viewer"
OPERATOR: Identity = "operator"
PREFLIGHT = "preflight"  # a row only `rollbook preflight` needs (steps never read it)
WORKLOAD_REF = "workloadRef"  # a row that matters only for Rollouts with spec.workloadRef


@dataclass(frozen=True)
class Permission:
    """One verb on one resource: who needs it, for which steps, what breaks without it."""

    verb: str
    api_group: str  # "" is the core group
    resource: str
    subresource: str
    steps: tuple[str, ...]  # "1".."6", or PREFLIGHT
    identity: Identity
    why: str
    need: Need = "error"  # what a missing row does: error breaks the steps, warn degrades them
    resource_names: tuple[str, ...] = ()  # empty: any object of the resource
    when: str = ""  # "" always; WORKLOAD_REF only for Rollouts with a workloadRef

    @property
    def resource_path(self) -> str:
        """``rollouts/status`` style, as RBAC and ``kubectl auth can-i`` name it."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    @property
    def group_label(self) -> str:
        """The API group as a person reads it (``core`` for the empty group)."""
        return self.api_group or "core"


_ARGO = "argoproj.io"
_STEPS = ("1", "2", "3", "4", "5", "6")

PERMISSIONS: tuple[Permission, ...] = (
    # ------------------------------------------------------------------ viewer: every read
    Permission("get", _ARGO, "rollouts", "", _STEPS, VIEWER,
               "read the Rollout: phase and abort message (1), the analysis wiring (2, 3), the preconditions "
               "re-checked right before a retry or undo (4), the deadline (5), close-out (6)"),
    Permission("list", _ARGO, "rollouts", "", ("1",), VIEWER,
               "find the Rollout's siblings and say which rollouts exist when the name is wrong", need="warn"),
    Permission("watch", _ARGO, "rollouts", "", ("1", "4"), VIEWER,
               "`kubectl argo rollouts get rollout --watch`, which rollbook prints for a human following a "
               "rollback or the new analysis (Argo's aggregate view role grants it)", need="warn"),
    Permission("get", _ARGO, "analysisruns", "", ("2", "4"), VIEWER,
               "read the failed AnalysisRun and the run a retry creates"),
    Permission("list", _ARGO, "analysisruns", "", ("2", "4", "5"), VIEWER,
               "find the Rollout's runs by pod-template hash / owner (2), the new run after a retry (4), the "
               "`.1`, `.2` runs of a rollback loop (5)"),
    Permission("watch", _ARGO, "analysisruns", "", ("4",), VIEWER,
               "`kubectl get analysisrun -w` that rollbook prints while the new analysis runs", need="warn"),
    Permission("get", _ARGO, "analysistemplates", "", ("2", "4"), VIEWER,
               "the provider of a metric whose run was garbage-collected (2, 4)"),
    Permission("list", _ARGO, "analysistemplates", "", (PREFLIGHT,), VIEWER,
               "preflight checks every template of the namespace's Rollouts", need="warn"),
    Permission("get", _ARGO, "clusteranalysistemplates", "", ("2", "4"), VIEWER,
               "templates referenced with `clusterScope: true`"),
    Permission("list", _ARGO, "clusteranalysistemplates", "", (PREFLIGHT,), VIEWER,
               "preflight checks cluster-scoped templates", need="warn"),
    Permission("get", _ARGO, "experiments", "", ("2",), VIEWER,
               "an experiment step's analyses (their runs belong to the Experiment); Argo's aggregate view "
               "role grants it", need="warn"),
    Permission("list", _ARGO, "experiments", "", ("2",), VIEWER,
               "the Rollout's experiments, as `kubectl argo rollouts get rollout` lists them", need="warn"),
    Permission("list", "apps", "replicasets", "", ("1", "3", "4", "6"), VIEWER,
               "stable and canary ReplicaSets: revisions (1), the canary's pod-template release label (3), "
               "the undo target's template (4), close-out (6)"),
    Permission("get", "apps", "replicasets", "", ("1",), VIEWER,
               "one ReplicaSet by name, as `kubectl get rs NAME` in the printed commands", need="warn"),
    Permission("list", "", "pods", "", ("1", "3", "5", "6"), VIEWER,
               "stable pods Ready and on the stable image (1, 6), live canary pods' release label (3), "
               "restarts of a degraded service (5)"),
    Permission("get", "", "pods", "", ("6",), VIEWER,
               "one pod by name, as in the printed `kubectl get pod` commands", need="warn"),
    Permission("get", "", "pods", "log", ("2",), VIEWER,
               "canary and stable pod logs are evidence too (`kubectl logs`)", need="warn"),
    Permission("list", "", "events", "", ("1", "2", "5"), VIEWER,
               "RolloutAborted and AnalysisRunFailed events: the abort's first time and count, the run's name "
               "after it was garbage-collected; the run's snapshot lists them first, so without it every step "
               "errors (tests/integration/test_rbac_proof.py)"),
    Permission("get", "apps", "deployments", "", (PREFLIGHT,), VIEWER,
               "the pod template of a workloadRef Rollout (its release label)", need="info", when=WORKLOAD_REF),
    Permission("get", "", "configmaps", "", (PREFLIGHT,), VIEWER,
               "Argo's notification ConfigMap: rollbook's subscription, webhook and retries", need="info",
               resource_names=("argo-rollouts-notification-configmap",)),
    # ------------------------------------------------------------------ operator: step 4's actions
    Permission("patch", _ARGO, "rollouts", "status", ("4",), OPERATOR,
               "retry (and abort) send `{\"status\":{\"abort\":false}}` to the status subresource, as the "
               "plugin's cmd/retry/retry.go does"),
    Permission("patch", _ARGO, "rollouts", "", ("4",), OPERATOR,
               "undo JSON-patches `/spec/template` (plugin cmd/undo/undo.go); retry falls back to the main "
               "resource when the status subresource answers NotFound"),
    Permission("create", "coordination.k8s.io", "leases", "", ("4",), OPERATOR,
               "the Lease `rollbook-<rollout>` held around a retry or undo, so two runners never both mutate"),
    Permission("get", "coordination.k8s.io", "leases", "", ("4",), OPERATOR,
               "who holds the Lease (named in the refusal), and whether it expired"),
    Permission("update", "coordination.k8s.io", "leases", "", ("4",), OPERATOR,
               "take over a Lease whose holder died (expired)"),
    Permission("delete", "coordination.k8s.io", "leases", "", ("4",), OPERATOR,
               "release the Lease after the mutation (else it expires after 60 s)", need="warn"),
    Permission("patch", "apps", "deployments", "", ("4",), OPERATOR,
               "the undo of a workloadRef Rollout reverts the referenced Deployment's template (plugin "
               "cmd/undo/undo.go undoWorkloadRef); rollbook names it, whoever acts needs this",
               need="warn", when=WORKLOAD_REF),
)


def rows_for(identity: Identity, *, workload_ref: bool = False, steps_only: bool = True) -> tuple[Permission, ...]:
    """The rows an identity must hold: the operator holds the viewer's too (step 4 reads before it acts)."""
    wanted = {VIEWER, OPERATOR} if identity == OPERATOR else {VIEWER}
    return tuple(p for p in PERMISSIONS
                 if p.identity in wanted and (workload_ref or p.when != WORKLOAD_REF)
                 and (not steps_only or p.steps != (PREFLIGHT,)))


def markdown_table() -> str:
    """The README's permission table, generated from :data:`PERMISSIONS` (README: `python -m rollbook.permissions`)."""
    lines = ["| identity | verb | API group | resource | steps | without it | deploy/ role | why |",
             "|---|---|---|---|---|---|---|---|"]
    for p in PERMISSIONS:
        names = f" (`{', '.join(p.resource_names)}`)" if p.resource_names else ""
        when = " (workloadRef only)" if p.when == WORKLOAD_REF else ""
        lines.append(f"| {p.identity} | {p.verb} | {p.group_label} | `{p.resource_path}`{names}{when} | "
                     f"{', '.join(p.steps)} | {p.need} | `{role_of(p)}` | {p.why} |")
    return "\n".join(lines)


CLUSTER_SCOPED = frozenset({"clusteranalysistemplates"})  # a RoleBinding cannot grant these


def role_of(p: Permission) -> str:
    """The ClusterRole of deploy/rbac.yaml that holds a row (tests/unit/test_deploy.py checks the YAML)."""
    if p.steps == (PREFLIGHT,):
        return "rollbook-preflight"
    if p.identity == OPERATOR:
        return "rollbook-operator-workloadref" if p.when == WORKLOAD_REF else "rollbook-operator"
    return "rollbook-viewer-cluster" if p.resource in CLUSTER_SCOPED else "rollbook-viewer"


if __name__ == "__main__":  # pragma: no cover - regenerates the README's table
    print(markdown_table())
