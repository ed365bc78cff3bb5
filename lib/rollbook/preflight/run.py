"""`run_preflight`: read the gate's configuration and the identities' permissions, apply every rule.

The one call behind `rollbook preflight`, `runbooks/00-preflight.ipynb` and `rollbook serve`'s
``GET /v1/preflight``. Reads go through ``rollbook.cluster`` (the read identity); each identity the
config names is asked about its own permissions with its own credentials.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from rollbook import config as config_mod
from rollbook import permissions as perms
from rollbook.cluster import Cluster, connect, gate
from rollbook.errors import NotFound, UsageError
from rollbook.preflight import catalogue as c
from rollbook.preflight import rules_access, rules_metrics, rules_notify, rules_rollout, rules_template
from rollbook.preflight.model import SEVERITIES, Finding, Report, finding
from rollbook.preflight.rules_notify import CONFIGMAP
from rollbook.preflight.wiring import Gate, RawObject, Use, d, name_of, namespace_of, ref_key, template_refs

DEFAULT_CONTROLLER_NAMESPACE = "argo-rollouts"
ENV_NAMESPACE = "ROLLBOOK_NAMESPACE"
IN_CLUSTER = "in-cluster"  # the context name `rollbook run` uses for the pod's service account
CLUSTER_SCOPED = frozenset({"clusteranalysistemplates"})

GateRule = Callable[[Gate], list[Finding]]
GATE_RULES: tuple[GateRule, ...] = (
    rules_rollout.template_missing, rules_rollout.no_evidence_gate, rules_template.template_arg_unset,
    rules_template.evidence_jsonpath, rules_template.evidence_condition, rules_template.evidence_failure_limit,
    rules_template.error_budget, rules_template.tls_insecure, rules_template.secret_literal,
    rules_rollout.release_id, rules_rollout.analysisrun_label, rules_rollout.history_limit,
    rules_rollout.abort_scaledown, rules_metrics.slo_not_canary, rules_metrics.dry_run,
    rules_metrics.measurement_retention, rules_notify.subscription, rules_notify.webhook,
)


def run_preflight(namespace: str | None = "", all_namespaces: bool = False, rollout: str | None = "",
                  context: str | None = "", config: str | config_mod.Config | None = None,
                  controller_namespace: str = DEFAULT_CONTROLLER_NAMESPACE, *, cluster: Cluster | None = None,
                  check_access: bool = True) -> Report:
    """Check every Rollout in scope (one namespace, ``all_namespaces``, or one ``rollout``) against the playbook.

    Empty strings mean "not given" (notebook parameters): the namespace then comes from
    $ROLLBOOK_NAMESPACE, the context from the config's ``read_context``, else the kubeconfig's current one.
    Pass ``cluster`` to reuse a connection (it is not closed); ``check_access=False`` skips the reviews.
    """
    scope = _scope(namespace or "", all_namespaces)
    cfg = config if isinstance(config, config_mod.Config) else config_mod.load(config or None)
    read = cluster or _connect(context or cfg.read_context, cfg.kubeconfig)
    try:
        rollouts = _rollouts(read, scope, rollout or "")
        gates = build_gates(read, rollouts, controller_namespace or DEFAULT_CONTROLLER_NAMESPACE)
        found = [f for g in gates for rule in GATE_RULES for f in rule(g)]
        namespaces = sorted({namespace_of(r) for r in rollouts} | ({scope} if scope else set()))
        if not rollouts:
            found.append(finding(c.NOTHING_TO_CHECK, scope, "Rollout/" + (rollout or "*"), "",
                                 f"No Rollout in {'any namespace' if not scope else f'namespace {scope!r}'} "
                                 f"(context {read.context!r}): nothing to check.",
                                 "# kubectl get rollouts -A"))
        identities: dict[str, str] = {}
        if check_access:
            found += check_identities(read, cfg, namespaces, rollouts, identities)
    finally:
        if cluster is None:
            read.close()
    return Report(tuple(sort_findings(found)), context=read.context, namespaces=tuple(namespaces),
                  rollouts=tuple(f"{namespace_of(r)}/{name_of(r)}" for r in rollouts), identities=identities)


def _scope(namespace: str, all_namespaces: bool) -> str:
    """The namespace to read ("" for all), or a usage error."""
    if all_namespaces and namespace:
        raise UsageError("--namespace and --all-namespaces exclude each other.", hint="Give one of them.")
    if all_namespaces:
        return ""
    chosen = namespace or os.environ.get(ENV_NAMESPACE, "")
    if not chosen:
        raise UsageError("No namespace given.",
                         hint=f"Pass --namespace NS or --all-namespaces (or set ${ENV_NAMESPACE}).")
    return chosen


def _connect(context: str | None, kubeconfig: str | None) -> Cluster:
    """A kubeconfig context, or the pod's service account for ``in-cluster`` (as `rollbook run` does)."""
    return connect(in_cluster=True) if context == IN_CLUSTER else connect(context or None, kubeconfig)


def _rollouts(cluster: Cluster, scope: str, name: str) -> list[RawObject]:
    """The Rollouts in scope, by namespace and name; a named one that does not exist is a usage error."""
    if name and scope:
        try:
            return [gate.get_rollout_raw(cluster, scope, name)]
        except NotFound as e:
            raise UsageError(e.message, hint=f"List them with: kubectl get rollouts -n {scope}") from e
    found = gate.list_rollouts_raw(cluster, scope)
    if name:
        found = [r for r in found if name_of(r) == name]
        if not found:
            raise UsageError(f"No Rollout named {name!r} in any namespace (context {cluster.context!r}).",
                             hint="List them with: kubectl get rollouts -A")
    return sorted(found, key=lambda r: (namespace_of(r), name_of(r)))


def build_gates(cluster: Cluster, rollouts: list[RawObject], controller_namespace: str) -> list[Gate]:
    """Read what each Rollout's gate is made of: templates, the pod template, Argo's notification ConfigMap."""
    refs = [ref_key(r, ref) for r in rollouts for _, _, _, ref in template_refs(r)]
    fetched = gate.templates(cluster, refs)
    configmaps: dict[str, gate.Fetched] = {}

    def notification(ns: str) -> tuple[tuple[str, gate.Fetched], ...]:
        for where in dict.fromkeys((controller_namespace, ns)):
            if where not in configmaps:
                configmaps[where] = gate.configmap(cluster, where, CONFIGMAP)
        return tuple((w, configmaps[w]) for w in dict.fromkeys((controller_namespace, ns)))

    gates = []
    for ro in rollouts:
        uses = tuple(Use(ro, path, block, i, ref, fetched[ref_key(ro, ref)]) for path, block, i, ref in template_refs(ro))
        labels, where = _pod_labels(cluster, ro)
        gates.append(Gate(ro, uses, labels, where, notification(namespace_of(ro)), controller_namespace))
    return gates


def _pod_labels(cluster: Cluster, rollout: RawObject) -> tuple[dict[str, str] | None, str]:
    """The pod template's labels and the object holding them (a workloadRef's Deployment when there is one)."""
    ref = d(rollout, "spec", "workloadRef")
    if not ref:
        return {str(k): str(v) for k, v in d(rollout, "spec", "template", "metadata", "labels").items()}, ""
    if ref.get("kind") != "Deployment" or not ref.get("name"):
        return None, ""
    read = gate.deployment(cluster, namespace_of(rollout), str(ref["name"]))
    if read.obj is None:
        return None, f"Deployment/{ref['name']}"
    return ({str(k): str(v) for k, v in d(read.obj, "spec", "template", "metadata", "labels").items()},
            f"Deployment/{ref['name']}")


def check_identities(read: Cluster, cfg: config_mod.Config, namespaces: list[str], rollouts: list[RawObject],
                     identities: dict[str, str]) -> list[Finding]:
    """Ask the API what the read identity and the config's action identity may do (SelfSubjectAccessReview)."""
    workload_ns = {namespace_of(r) for r in rollouts if d(r, "spec", "workloadRef")}
    # cluster-scoped templates need a ClusterRole: ask only when a Rollout in scope references one
    wide = any(ref.get("clusterScope") for r in rollouts for _, _, _, ref in template_refs(r))
    read_name = read.context or "(current)"
    action = cfg.action_context
    out: list[Finding] = []
    if action and action != read.context:
        identities[read_name] = perms.VIEWER
        out += _check(read, read_name, perms.VIEWER, namespaces, workload_ns, wide, acts_by_default=False)
        identities[action] = perms.OPERATOR
        acting = _connect(action, cfg.kubeconfig)
        try:
            out += _check(acting, action, perms.OPERATOR, namespaces, workload_ns, wide, acts_by_default=False)
        finally:
            acting.close()
    else:
        identities[read_name] = perms.OPERATOR
        out += _check(read, read_name, perms.OPERATOR, namespaces, workload_ns, wide, acts_by_default=not action)
    return out


def _check(cluster: Cluster, name: str, role: perms.Identity, namespaces: list[str], workload_ns: set[str],
           cluster_templates: bool, *, acts_by_default: bool) -> list[Finding]:
    """Cluster-wide reviews first; rows denied cluster-wide are asked again per namespace (Roles)."""
    rows = [p for p in perms.rows_for(role, workload_ref=bool(workload_ns))
            if cluster_templates or p.resource not in CLUSTER_SCOPED]
    wide = {p: _ask(cluster, p, "") for p in rows}
    out = rules_access.permission(rules_access.Checked(
        name, role, "", {p: a for p, a in wide.items() if p.resource in CLUSTER_SCOPED}, acts_by_default))
    for ns in namespaces:
        answers = {p: (a if a.allowed or a.allowed is None else _ask(cluster, p, ns)) for p, a in wide.items()
                   if p.resource not in CLUSTER_SCOPED and (p.when != perms.WORKLOAD_REF or ns in workload_ns)}
        out += rules_access.permission(rules_access.Checked(name, role, ns, answers, acts_by_default))
    return out


def _ask(cluster: Cluster, p: perms.Permission, namespace: str) -> gate.Access:
    """One review of one row."""
    name = p.resource_names[0] if p.resource_names else ""
    return gate.can_i(cluster, p.verb, p.api_group, p.resource, subresource=p.subresource, namespace=namespace,
                      name=name)


def sort_findings(found: Iterable[Finding]) -> list[Finding]:
    """Errors first, then by namespace, object, rule and field; one finding per (rule, object, field)."""
    unique: dict[Any, Finding] = {}
    for f in found:
        unique.setdefault(f.key, f)
    order = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(unique.values(), key=lambda f: (order[f.severity], f.namespace, f.object, f.id, f.field))
