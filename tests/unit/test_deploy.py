"""deploy/: the kustomize base renders, its RBAC equals lib/rollbook/permissions.py, its pods are locked down."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from rollbook import permissions as perms
from tests.deploy_render import DEPLOY, KUBECTL, by_kind, grants, render_kubectl, render_python

RENDERERS: list[Any] = [
    pytest.param(render_python, id="python"),
    pytest.param(render_kubectl, id="kubectl",
                 marks=[pytest.mark.kubectl, pytest.mark.skipif(KUBECTL is None, reason="kubectl not on PATH")]),
]
Objs = list[dict[str, Any]]


def table_grants(role: str) -> set[tuple[str, str, str, tuple[str, ...]]]:
    return {(p.verb, p.api_group, p.resource_path, tuple(sorted(p.resource_names)))
            for p in perms.PERMISSIONS if perms.role_of(p) == role}


@pytest.fixture(params=RENDERERS)
def objs(request: pytest.FixtureRequest) -> Objs:
    render: Callable[[], Objs] = request.param
    return render()


@pytest.mark.kubectl
@pytest.mark.skipif(KUBECTL is None, reason="kubectl not on PATH")
@pytest.mark.parametrize("folder", [DEPLOY, DEPLOY / "namespace-access"], ids=["base", "namespace-access"])
def test_kubectl_renders_what_the_python_reading_sees(folder: Any) -> None:
    def key(o: dict[str, Any]) -> tuple[str, str, str]:
        return o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]
    assert sorted(render_kubectl(folder), key=key) == sorted(render_python(folder), key=key)


def test_the_base_has_the_namespace_and_the_identities(objs: Objs) -> None:
    assert set(by_kind(objs, "Namespace")) == {"rollbook"}
    sas = by_kind(objs, "ServiceAccount")
    assert set(sas) == {"rollbook-viewer", "rollbook-operator", "rollbook-serve"}
    assert {o["metadata"]["namespace"] for o in sas.values()} == {"rollbook"}
    namespaced = [o for o in objs if o["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding")]
    assert {o["metadata"]["namespace"] for o in namespaced} == {"rollbook"}


def test_every_cluster_role_equals_its_rows_of_the_permission_table(objs: Objs) -> None:
    roles = by_kind(objs, "ClusterRole")
    assert set(roles) == {perms.role_of(p) for p in perms.PERMISSIONS}
    for name, role in roles.items():
        assert grants(role["rules"]) == table_grants(name), name
    everything = set().union(*(grants(r["rules"]) for r in roles.values()))
    assert len(everything) == len(perms.PERMISSIONS)  # each row in exactly one role, none twice


def test_the_viewer_reads_only_and_only_what_the_issue_lists(objs: Objs) -> None:
    viewer = grants(by_kind(objs, "ClusterRole")["rollbook-viewer"]["rules"]) | grants(
        by_kind(objs, "ClusterRole")["rollbook-viewer-cluster"]["rules"])
    assert {verb for verb, *_ in viewer} <= {"get", "list", "watch"}
    assert {res for _, _, res, _ in viewer} == {"rollouts", "analysisruns", "analysistemplates",
                                                 "clusteranalysistemplates", "experiments", "replicasets", "pods",
                                                 "pods/log", "events"}
    # the viewer's grants are exactly the steps' viewer rows (rows_for is what preflight checks)
    assert viewer == {(p.verb, p.api_group, p.resource_path, ()) for p in perms.rows_for(perms.VIEWER)}
    operator = grants(by_kind(objs, "ClusterRole")["rollbook-operator"]["rules"])
    # what the plugin's retry/undo send on the Rollout, and the Lease held around them; nothing else
    assert {g for g in operator if g[1] == "argoproj.io"} == {("patch", "argoproj.io", "rollouts/status", ()),
                                                            ("patch", "argoproj.io", "rollouts", ())}
    assert {g for g in operator if g[1] != "argoproj.io"} == {
        (verb, "coordination.k8s.io", "leases", ()) for verb in ("create", "get", "update", "delete")}


def test_the_cluster_scoped_reads_are_bound_to_both_identities(objs: Objs) -> None:
    binding = by_kind(objs, "ClusterRoleBinding")["rollbook-viewer-cluster"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "rollbook-viewer-cluster"}
    assert {(s["kind"], s["namespace"], s["name"]) for s in binding["subjects"]} == {
        ("ServiceAccount", "rollbook", "rollbook-viewer"), ("ServiceAccount", "rollbook", "rollbook-operator")}
    assert set(by_kind(objs, "ClusterRoleBinding")) == {"rollbook-viewer-cluster"}  # nothing else cluster-wide


def test_the_namespace_roles_equal_the_cluster_roles() -> None:
    objs = render_python(DEPLOY / "namespace-access")
    roles = by_kind(objs, "Role")
    assert set(roles) == {"rollbook-viewer", "rollbook-operator"}
    for name, role in roles.items():
        assert grants(role["rules"]) == table_grants(name)
    bindings = {name: {s["name"] for s in b["subjects"] if s["namespace"] == "rollbook"}
                for name, b in by_kind(objs, "RoleBinding").items()}
    assert bindings == {"rollbook-viewer": {"rollbook-viewer", "rollbook-operator"},
                        "rollbook-operator": {"rollbook-operator"}}


@pytest.mark.parametrize("path", ["rbac.yaml", "namespace-access/roles.yaml"])
def test_every_rule_says_why_it_is_there(path: str) -> None:
    lines = (DEPLOY / path).read_text(encoding="utf-8").splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith("- apiGroups:")]
    assert rules
    for i in rules:
        assert lines[i - 1].startswith("# "), f"{path}:{i + 1}: a rule without a comment above it"


def _serve_pod(objs: Objs) -> dict[str, Any]:
    return by_kind(objs, "Deployment")["rollbook"]["spec"]["template"]["spec"]


def test_the_serve_pod_is_locked_down(objs: Objs) -> None:
    pod = _serve_pod(objs)
    assert pod["serviceAccountName"] == "rollbook-serve"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert set(c["resources"][kind]) == {"cpu", "memory"}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["path"] == "/healthz"
        assert c[probe]["httpGet"]["port"] in ("http", 8686)
    assert c["args"][0] == "serve" and c["args"][c["args"].index("--executor") + 1] == "kubernetes"
    # the only writable paths are volumes: the records PVC and an emptyDir for /tmp
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = [m for m in c["volumeMounts"] if not m.get("readOnly")]
    assert {m["mountPath"] for m in writable} == {"/records", "/tmp"}
    assert volumes["records"]["persistentVolumeClaim"]["claimName"] in by_kind(objs, "PersistentVolumeClaim")
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["ROLLBOOK_JOB_IMAGE"] == c["image"]  # the Jobs run the same image as the service


def test_the_image_is_the_package_version(objs: Objs) -> None:
    from rollbook import __version__

    (c,) = _serve_pod(objs)["containers"]
    assert c["image"] == f"rollbook:{__version__}"


def test_the_service_is_where_argo_posts(objs: Objs) -> None:
    svc = by_kind(objs, "Service")["rollbook"]
    deployment = by_kind(objs, "Deployment")["rollbook"]
    assert svc["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    notif = yaml.safe_load((DEPLOY / "argo-notifications.yaml").read_text(encoding="utf-8"))
    url = yaml.safe_load(notif["data"]["service.webhook.rollbook"])["url"]
    m = re.fullmatch(r"http://([^.]+)\.([^.]+)\.svc:(\d+)(/.*)", url)
    assert m, url
    assert (m[1], m[2], int(m[3])) == (svc["metadata"]["name"], svc["metadata"]["namespace"],
                                       svc["spec"]["ports"][0]["port"])
    assert m[4] == "/v1/argo-rollouts"
    (c,) = _serve_pod(objs)["containers"]
    listen = c["args"][c["args"].index("--listen") + 1]
    assert listen.endswith(f":{c['ports'][0]['containerPort']}")


def test_network_policy_admits_only_the_argo_controller_namespace(objs: Objs) -> None:
    policies = by_kind(objs, "NetworkPolicy")
    deployment = by_kind(objs, "Deployment")["rollbook"]
    policy = policies["rollbook-serve"]
    assert policy["spec"]["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "argo-rollouts"}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8686}]
    assert policies["rollbook-incidents"]["spec"]["ingress"] == []


def test_the_records_claim_exists(objs: Objs) -> None:
    pvc = by_kind(objs, "PersistentVolumeClaim")["rollbook-records"]
    assert pvc["spec"]["resources"]["requests"]["storage"]
    assert pvc["spec"]["accessModes"]
