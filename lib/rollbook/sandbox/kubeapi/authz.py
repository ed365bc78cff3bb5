"""Authorization: the one place that allows or denies (identity, verb, resource, namespace).

Every request the API server serves and every ``kubectl auth can-i`` question is answered by
:meth:`Authorizer.decide`; nothing else in the sandbox decides access.
"""

from __future__ import annotations

from dataclasses import dataclass

from rollbook.sandbox.apierrors import StoreError
from rollbook.sandbox.resources import RESOURCES

READ_VERBS = frozenset({"get", "list", "watch"})
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
# What each role may do beyond reading. The operator (the kubeconfig's default context) writes
# everything, as a sandbox cluster's default user does, so clients and kubectl can exercise every verb;
# the viewer only reads, which is what the read-only runbook steps run as. "admin" is kept for tests.
ROLE_WRITES: dict[str, frozenset[str]] = {
    "viewer": frozenset(),
    "operator": frozenset({"*"}),
    "admin": frozenset({"*"}),
}
# What a role may not even read: the viewer matches upstream's "view" ClusterRole, which leaves out Secrets
# (reading them would let a viewer act as any service account whose token they hold).
ROLE_READ_DENIED: dict[str, frozenset[str]] = {"viewer": frozenset({"secrets"})}
# Review resources every authenticated user may create (upstream's system:basic-user role).
SELF_REVIEWS = {
    "authorization.k8s.io": frozenset({"selfsubjectaccessreviews", "selfsubjectrulesreviews"}),
    "authentication.k8s.io": frozenset({"selfsubjectreviews"}),
}
# Non-resource URLs an unauthenticated client may GET (upstream's system:public-info-viewer).
PUBLIC_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version"})
ANONYMOUS_ROLE = "anonymous"


@dataclass(frozen=True)
class User:
    """A bearer-token identity: role ``viewer`` (get/list/watch), ``operator`` or ``admin``."""

    name: str
    role: str


ANONYMOUS = User("system:anonymous", ANONYMOUS_ROLE)


@dataclass(frozen=True)
class Attributes:
    """What one request (or one ``can-i`` question) asks to do, as upstream's authorizer attributes.

    A resource request has ``resource`` (a plural or ``*``); a non-resource request has ``path``.
    """

    user: User
    verb: str
    resource: str = ""
    subresource: str = ""
    group: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""

    @property
    def resource_path(self) -> str:
        """``rollouts`` or ``rollouts/status``."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


class Authorizer:
    """The sandbox's RBAC: authenticated users read (but :data:`ROLE_READ_DENIED`); writes per :data:`ROLE_WRITES`."""

    def __init__(self, role_writes: dict[str, frozenset[str]] | None = None,
                 read_denied: dict[str, frozenset[str]] | None = None) -> None:
        self.role_writes = dict(ROLE_WRITES if role_writes is None else role_writes)
        self.read_denied = dict(ROLE_READ_DENIED if read_denied is None else read_denied)

    def decide(self, attrs: Attributes) -> bool:
        """Allow (True) or deny (False): the sandbox's only access decision."""
        user = attrs.user
        if user.role == ANONYMOUS_ROLE:
            return not attrs.resource and attrs.verb == "get" and attrs.path.rstrip("/") in PUBLIC_PATHS
        if not attrs.resource:  # discovery, /version, /openapi: readable by every authenticated user
            return attrs.verb in READ_VERBS
        if attrs.verb == "create" and attrs.resource in SELF_REVIEWS.get(attrs.group, ()):
            return True
        if attrs.resource not in RESOURCES and attrs.resource != "*":
            return False
        if attrs.verb in READ_VERBS:
            denied = self.read_denied.get(user.role, frozenset())
            return attrs.resource not in denied and not (attrs.resource == "*" and denied)
        writes = self.role_writes.get(user.role, frozenset())
        return "*" in writes or (attrs.verb in WRITE_VERBS and attrs.resource_path in writes)

    def authorize(self, attrs: Attributes) -> None:
        """:meth:`decide`, raising the real 403 on a denial."""
        if not self.decide(attrs):
            raise forbidden(attrs)

    def rules(self, user: User, namespace: str = "") -> list[dict[str, list[str]]]:
        """``kubectl auth can-i --list``: the resource rules :meth:`decide` applies to ``user`` (in ``namespace``)."""
        writes = self.role_writes.get(user.role, frozenset())
        verbs = ["*"] if "*" in writes else sorted(READ_VERBS)
        denied = self.read_denied.get(user.role, frozenset())
        readable = sorted(r for r in RESOURCES if r not in denied) if denied else ["*"]
        return [{"verbs": verbs, "apiGroups": ["*"], "resources": readable},
                *({"verbs": ["create"], "apiGroups": [group], "resources": sorted(names)}
                  for group, names in SELF_REVIEWS.items())]


def forbidden(attrs: Attributes) -> StoreError:
    """403 in the real message form."""
    qualified = f"{attrs.resource}.{attrs.group}" if attrs.group else attrs.resource
    subject = f'{qualified} "{attrs.name}"' if attrs.name else qualified
    scope = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    if not attrs.resource:
        msg = f'forbidden: User "{attrs.user.name}" cannot {attrs.verb} path "{attrs.path}"'
        return StoreError(403, "Forbidden", msg)
    msg = (f'{subject} is forbidden: User "{attrs.user.name}" cannot {attrs.verb} resource "{attrs.resource_path}" '
           f'in API group "{attrs.group}" {scope}')
    details = {k: v for k, v in (("name", attrs.name), ("group", attrs.group), ("kind", attrs.resource)) if v}
    return StoreError(403, "Forbidden", msg, details)
