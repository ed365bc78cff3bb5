"""RBAC of the sandbox from Role/ClusterRole/RoleBinding/ClusterRoleBinding objects (rbac.authorization.k8s.io/v1).

:class:`RbacAuthorizer` plugs into the API server's one authorization seam (kubeapi/authz.py): every request
and every ``kubectl auth can-i`` is decided from the RBAC objects in the store, as upstream's RBAC
authorizer does (plugin/pkg/auth/authorizer/rbac): a RoleBinding grants its role's rules in its own
namespace only; a ClusterRoleBinding everywhere, cluster-scoped resources included; rules match on verbs,
apiGroups, resources (``*``, ``res/sub``, ``*/sub``) and resourceNames; no rule, no access (403).
Aggregation is not implemented (not needed: rollbook's roles list their rules).

ServiceAccounts authenticate with tokens from the TokenRequest API (``POST
/api/v1/namespaces/NS/serviceaccounts/NAME/token``, what ``kubectl create token`` sends) or minted for a
pod by the simulated kubelet (sandbox/jobs.py), as ``system:serviceaccount:NS:NAME`` in the groups
``system:serviceaccounts`` and ``system:serviceaccounts:NS``.

The sandbox's own users (kubeconfig contexts ``sandbox`` and ``sandbox-viewer``) are bound like anyone else
by :func:`bootstrap` objects loaded into the store at start: ClusterRoles ``sandbox-operator`` (everything)
and ``sandbox-viewer`` (upstream's ``view``: get/list/watch on everything but Secrets), and their
ClusterRoleBindings.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from rollbook.sandbox.apierrors import StoreError
from rollbook.sandbox.kubeapi.authz import (
    ANONYMOUS_ROLE,
    PUBLIC_PATHS,
    READ_VERBS,
    SELF_REVIEWS,
    Attributes,
    Authorizer,
    User,
)
from rollbook.sandbox.resources import RESOURCES
from rollbook.sandbox.store import Store

# Left out of the viewer's role, as upstream's view role leaves them out.
VIEW_EXCLUDED = frozenset({"secrets"})

JSON = dict[str, Any]
SA_PREFIX = "system:serviceaccount:"
SA_ROLE = "serviceaccount"
RBAC = "rbac.authorization.k8s.io"
DEFAULT_TOKEN_SECONDS = 3600


def groups_of(user: User) -> set[str]:
    """The groups a user is in (upstream: what the authenticator adds)."""
    groups = {"system:authenticated"}
    if user.name.startswith(SA_PREFIX):
        ns = user.name[len(SA_PREFIX):].split(":", 1)[0]
        groups |= {"system:serviceaccounts", f"system:serviceaccounts:{ns}"}
    else:
        groups.add(f"sandbox:{user.role}s")
    return groups


def subject_matches(subject: JSON, user: User, binding_namespace: str) -> bool:
    """Whether a binding's subject is this user (User, Group or ServiceAccount)."""
    kind = subject.get("kind")
    if kind == "User":
        return bool(subject.get("name") == user.name)
    if kind == "Group":
        return subject.get("name") in groups_of(user)
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_namespace
        return user.name == f"{SA_PREFIX}{ns}:{subject.get('name')}"
    return False


def rule_matches(rule: JSON, attrs: Attributes) -> bool:
    """Upstream's RuleAllows for a resource request."""
    verbs = rule.get("verbs") or []
    if "*" not in verbs and attrs.verb not in verbs:
        return False
    groups = rule.get("apiGroups") or []
    if "*" not in groups and attrs.group not in groups:
        return False
    wanted = attrs.resource_path
    resources = rule.get("resources") or []
    if not any(r == "*" or r == wanted or (attrs.subresource and r == f"*/{attrs.subresource}") for r in resources):
        return False
    names = rule.get("resourceNames") or []
    return not names or (bool(attrs.name) and attrs.name in names)


class RbacAuthorizer(Authorizer):
    """Decides from the RBAC objects in the store; issues ServiceAccount tokens into ``users``."""

    def __init__(self, store: Store, users: dict[str, User]) -> None:
        super().__init__()
        self.store, self.users = store, users

    # ------------------------------------------------------------------ decisions

    def decide(self, attrs: Attributes) -> bool:
        user = attrs.user
        if user.role == ANONYMOUS_ROLE:
            return not attrs.resource and attrs.verb == "get" and attrs.path.rstrip("/") in PUBLIC_PATHS
        if not attrs.resource:  # discovery, /version, /openapi (upstream's system:discovery, basic-user)
            return attrs.verb in READ_VERBS
        if attrs.verb == "create" and attrs.resource in SELF_REVIEWS.get(attrs.group, ()):
            return True
        return any(rule_matches(rule, attrs) for rule in self._rules_in(user, attrs.namespace))

    def _rules_in(self, user: User, namespace: str) -> Iterator[JSON]:
        """Every rule granted to ``user`` in ``namespace`` ("" : cluster-wide only)."""
        for binding in self.store.list("clusterrolebindings")[0]:
            if any(subject_matches(s, user, "") for s in binding.get("subjects") or []):
                yield from self._role_rules(binding.get("roleRef") or {}, "")
        if namespace:
            for binding in self.store.list("rolebindings", namespace)[0]:
                if any(subject_matches(s, user, namespace) for s in binding.get("subjects") or []):
                    yield from self._role_rules(binding.get("roleRef") or {}, namespace)

    def _role_rules(self, ref: JSON, namespace: str) -> list[JSON]:
        kind, name = ref.get("kind"), str(ref.get("name", ""))
        try:
            if kind == "ClusterRole":
                role = self.store.get("clusterroles", None, name)
            elif kind == "Role" and namespace:
                role = self.store.get("roles", namespace, name)
            else:
                return []
        except StoreError:  # a binding to a missing role grants nothing (upstream too)
            return []
        return list(role.get("rules") or [])

    def rules(self, user: User, namespace: str = "") -> list[dict[str, list[str]]]:
        """``kubectl auth can-i --list``: the user's rules in a namespace, then the self reviews."""
        found = [{k: list(v) for k, v in rule.items() if k in ("verbs", "apiGroups", "resources", "resourceNames")}
                 for rule in self._rules_in(user, namespace)]
        return [*found, *({"verbs": ["create"], "apiGroups": [group], "resources": sorted(names)}
                          for group, names in SELF_REVIEWS.items())]

    # ------------------------------------------------------------------ tokens

    def issue_token(self, namespace: str, name: str, seconds: int = DEFAULT_TOKEN_SECONDS) -> JSON:
        """A TokenRequest's status for an existing ServiceAccount (404 otherwise)."""
        self.store.get("serviceaccounts", namespace, name)
        token = "sbsa." + secrets.token_urlsafe(32)
        self.users[token] = User(f"{SA_PREFIX}{namespace}:{name}", SA_ROLE)
        expires = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=seconds)
        return {"token": token, "expirationTimestamp": expires.isoformat().replace("+00:00", "Z")}

    def token_request(self, namespace: str, name: str, body: Any) -> JSON:
        """The TokenRequest answer (authentication.k8s.io/v1) for ``serviceaccounts/NAME/token``."""
        spec = (body.get("spec") or {}) if isinstance(body, dict) else {}
        seconds = int(spec.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS)
        return {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
                "spec": {"audiences": spec.get("audiences") or ["https://kubernetes.default.svc"],
                         "expirationSeconds": seconds, "boundObjectRef": spec.get("boundObjectRef")},
                "status": self.issue_token(namespace, name, seconds)}

    def impersonate(self, user: User, name: str) -> User:
        """The identity of ``Impersonate-User: name`` (kubectl --as), if ``user`` may impersonate it (403)."""
        if name.startswith(SA_PREFIX):
            ns, _, sa = name[len(SA_PREFIX):].partition(":")
            attrs = Attributes(user, "impersonate", resource="serviceaccounts", namespace=ns, name=sa)
        else:
            attrs = Attributes(user, "impersonate", resource="users", name=name)
        self.authorize(attrs)
        return User(name, SA_ROLE if name.startswith(SA_PREFIX) else "impersonated")


def bootstrap() -> list[tuple[str, JSON]]:
    """The sandbox's built-in users as RBAC objects: (plural, object) to create at start."""
    def role(name: str, verbs: list[str]) -> tuple[str, JSON]:
        return "clusterroles", {"apiVersion": f"{RBAC}/v1", "kind": "ClusterRole", "metadata": {"name": name},
                                "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": verbs}]}

    def binding(name: str, users: list[str]) -> tuple[str, JSON]:
        return "clusterrolebindings", {
            "apiVersion": f"{RBAC}/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": name},
            "subjects": [{"apiGroup": RBAC, "kind": "User", "name": u} for u in users]}

    viewer = {"apiVersion": f"{RBAC}/v1", "kind": "ClusterRole", "metadata": {"name": "sandbox-viewer"},
              "rules": view_rules()}
    return [role("sandbox-operator", ["*"]), binding("sandbox-operator", ["operator", "admin"]),
            ("clusterroles", viewer), binding("sandbox-viewer", ["viewer"])]


def view_rules() -> list[JSON]:
    """Upstream's ``view`` ClusterRole over what the sandbox serves: read every resource and its read-only
    subresources, except Secrets (their tokens would let a viewer act as any service account)."""
    by_group: dict[str, list[str]] = {}
    for res in RESOURCES.values():
        if res.plural in VIEW_EXCLUDED:
            continue
        names = by_group.setdefault(res.group, [])
        names += [res.plural] + [f"{res.plural}/{sub}" for sub, served in
                                 (("status", res.has_status), ("scale", res.has_scale), ("log", res.plural == "pods"))
                                 if served]
    return [{"apiGroups": [group], "resources": sorted(names), "verbs": sorted(READ_VERBS)}
            for group, names in sorted(by_group.items())]
