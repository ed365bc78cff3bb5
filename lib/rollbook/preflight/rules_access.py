"""The permission rule: what an identity lacks of :data:`rollbook.permissions.PERMISSIONS`, per namespace.

The runner asks the API (one SelfSubjectAccessReview per row, cluster-wide first, per namespace only for
rows denied cluster-wide); this module turns the answers into findings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rollbook.cluster.gate import Access
from rollbook.permissions import Identity, Permission
from rollbook.preflight import catalogue as c
from rollbook.preflight.model import Finding, Severity, finding


@dataclass(frozen=True)
class Checked:
    """One identity's answers in one namespace ("" for cluster-scoped rows)."""

    context: str
    role: Identity
    namespace: str
    answers: Mapping[Permission, Access]
    acts_by_default: bool = False  # no action_context configured: this read identity would also act


def _role_yaml(p: Permission, namespace: str, context: str) -> str:
    """A Role granting one row (bind it to the identity behind the context)."""
    kind = "ClusterRole" if not namespace else "Role"
    meta = f"{{name: rollbook-{p.identity}}}" if not namespace else f"{{name: rollbook-{p.identity}, namespace: {namespace}}}"
    names = f"\n  resourceNames: [{', '.join(p.resource_names)}]" if p.resource_names else ""
    scope = f" -n {namespace}" if namespace else ""
    return f"""
# kubectl auth can-i {p.verb} {p.resource_path}{scope} --context {context}   -> should say yes
apiVersion: rbac.authorization.k8s.io/v1
kind: {kind}
metadata: {meta}
rules:
- apiGroups: ["{p.api_group}"]
  resources: ["{p.resource_path}"]
  verbs: ["{p.verb}"]{names}
# and a {kind}Binding of it to the user or service account of context {context}
"""


def permission(checked: Checked) -> list[Finding]:
    """One finding per row the identity is denied (or could not be asked about)."""
    out = []
    for p, access in checked.answers.items():
        if access.allowed:
            continue
        where = f'in namespace "{checked.namespace}"' if checked.namespace else "cluster-wide"
        steps = ", ".join(p.steps)
        severity: Severity = p.need
        note = ""
        if access.allowed is None:
            severity, note = "info", f" (could not ask: {access.reason})"
        elif checked.acts_by_default and p.identity == "operator" and severity == "error":
            # no action_context: the read identity would act; a read-only one is a choice (act by hand)
            severity, note = "warn", ("; kube.action_context is not set, so step 4 would act as this read "
                                      "identity (set action_context to an operator identity, or act by hand)")
        out.append(finding(
            c.PERMISSION, checked.namespace, f"Context/{checked.context}", f"{p.verb} {p.resource_path} ({p.group_label})",
            f'Context "{checked.context}" ({checked.role}) may not {p.verb} {p.resource_path} {where}{note}: '
            f"step(s) {steps} need it to {p.why}.",
            _role_yaml(p, checked.namespace, checked.context), severity=severity, step=steps))
    return out
