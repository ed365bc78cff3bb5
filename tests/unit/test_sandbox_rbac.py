"""The sandbox's RBAC authorizer decides like upstream RBAC, from the objects in the store."""

from __future__ import annotations

import pytest

from rollbook.sandbox.apierrors import StoreError
from rollbook.sandbox.kubeapi.authz import Attributes, User
from rollbook.sandbox.rbac import RBAC, RbacAuthorizer, bootstrap
from rollbook.sandbox.store import Store

SA = User("system:serviceaccount:tools:bot", "serviceaccount")
ALICE = User("alice", "impersonated")


def _store() -> Store:
    store = Store()
    for ns in ("tools", "prod", "dev"):
        store.create("namespaces", None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    store.create("serviceaccounts", "tools", {"apiVersion": "v1", "kind": "ServiceAccount",
                                              "metadata": {"name": "bot", "namespace": "tools"}})
    return store


def _role(store: Store, kind: str, name: str, rules: list[dict[str, list[str]]], ns: str | None = None) -> None:
    meta = {"name": name, **({"namespace": ns} if ns else {})}
    store.create("roles" if kind == "Role" else "clusterroles", ns,
                 {"apiVersion": f"{RBAC}/v1", "kind": kind, "metadata": meta, "rules": rules})


def _bind(store: Store, kind: str, name: str, role_kind: str, subjects: list[dict[str, str]],
          ns: str | None = None) -> None:
    meta = {"name": name, **({"namespace": ns} if ns else {})}
    store.create("rolebindings" if kind == "RoleBinding" else "clusterrolebindings", ns,
                 {"apiVersion": f"{RBAC}/v1", "kind": kind, "metadata": meta, "subjects": subjects,
                  "roleRef": {"apiGroup": RBAC, "kind": role_kind, "name": name}})


def ask(authz: RbacAuthorizer, user: User, verb: str, resource: str, ns: str = "", group: str = "argoproj.io",
        sub: str = "", name: str = "") -> bool:
    return authz.decide(Attributes(user, verb, resource=resource, subresource=sub, group=group, namespace=ns,
                                   name=name))


def test_a_rolebinding_grants_its_clusterrole_in_its_namespace_only() -> None:
    store = _store()
    _role(store, "ClusterRole", "reader", [{"apiGroups": ["argoproj.io"], "resources": ["rollouts"],
                                            "verbs": ["get", "list"]}])
    _bind(store, "RoleBinding", "reader", "ClusterRole", [{"kind": "ServiceAccount", "name": "bot",
                                                          "namespace": "tools"}], ns="prod")
    authz = RbacAuthorizer(store, {})
    assert ask(authz, SA, "get", "rollouts", "prod") and ask(authz, SA, "list", "rollouts", "prod")
    assert not ask(authz, SA, "watch", "rollouts", "prod")  # verb not listed
    assert not ask(authz, SA, "get", "rollouts", "dev")  # other namespace
    assert not ask(authz, SA, "list", "rollouts")  # cluster scope
    assert not ask(authz, SA, "get", "rollouts", "prod", group="apps")  # other group
    assert not ask(authz, SA, "get", "rollouts", "prod", sub="status")  # a subresource is its own resource
    with pytest.raises(StoreError) as e:
        authz.authorize(Attributes(SA, "patch", resource="rollouts", group="argoproj.io", namespace="prod",
                                   name="api"))
    assert e.value.code == 403 and 'cannot patch resource "rollouts"' in e.value.message


def test_subresources_wildcards_and_resource_names() -> None:
    store = _store()
    _role(store, "Role", "r", [{"apiGroups": ["argoproj.io"], "resources": ["rollouts/status"], "verbs": ["patch"]},
                               {"apiGroups": [""], "resources": ["*/log"], "verbs": ["get"]},
                               {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"],
                                "resourceNames": ["cm-a"]},
                               {"apiGroups": ["*"], "resources": ["events"], "verbs": ["*"]}], ns="prod")
    _bind(store, "RoleBinding", "r", "Role", [{"kind": "User", "name": "alice"}], ns="prod")
    authz = RbacAuthorizer(store, {})
    assert ask(authz, ALICE, "patch", "rollouts", "prod", sub="status")
    assert not ask(authz, ALICE, "patch", "rollouts", "prod")
    assert ask(authz, ALICE, "get", "pods", "prod", group="", sub="log")
    assert ask(authz, ALICE, "get", "configmaps", "prod", group="", name="cm-a")
    assert not ask(authz, ALICE, "get", "configmaps", "prod", group="", name="cm-b")
    assert not ask(authz, ALICE, "list", "configmaps", "prod", group="")  # a list names no object
    assert ask(authz, ALICE, "delete", "events", "prod", group="events.k8s.io")
    assert not ask(authz, SA, "delete", "events", "prod", group="")  # not a subject


def test_groups_missing_roles_and_the_builtin_users() -> None:
    store = _store()
    for plural, obj in bootstrap():
        store.create(plural, None, obj)
    _bind(store, "ClusterRoleBinding", "gone", "ClusterRole", [{"kind": "Group", "name": "system:serviceaccounts"}])
    authz = RbacAuthorizer(store, {})
    assert not ask(authz, SA, "get", "rollouts", "prod")  # bound to a ClusterRole that does not exist
    _role(store, "ClusterRole", "gone", [{"apiGroups": ["argoproj.io"], "resources": ["*"], "verbs": ["get"]}])
    assert ask(authz, SA, "get", "rollouts", "prod") and ask(authz, SA, "get", "rollouts")
    operator, viewer = User("operator", "operator"), User("viewer", "viewer")
    assert ask(authz, operator, "delete", "rollouts", "prod") and ask(authz, operator, "create", "namespaces", group="")
    assert ask(authz, viewer, "watch", "pods", "dev", group="") and not ask(authz, viewer, "patch", "rollouts", "prod")


def test_tokens_and_impersonation() -> None:
    store = _store()
    for plural, obj in bootstrap():
        store.create(plural, None, obj)
    users: dict[str, User] = {}
    authz = RbacAuthorizer(store, users)
    answer = authz.token_request("tools", "bot", {"spec": {"expirationSeconds": 600}})
    assert answer["kind"] == "TokenRequest" and answer["spec"]["expirationSeconds"] == 600
    assert users[answer["status"]["token"]] == SA
    with pytest.raises(StoreError) as e:
        authz.issue_token("tools", "nobody")
    assert e.value.code == 404
    assert authz.impersonate(User("operator", "operator"), SA.name).name == SA.name
    with pytest.raises(StoreError) as e:
        authz.impersonate(User("viewer", "viewer"), SA.name)
    assert e.value.code == 403 and 'cannot impersonate resource "serviceaccounts"' in e.value.message
