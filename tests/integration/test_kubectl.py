"""The sandbox API server through the real ``kubectl`` binary (skipped when it is not installed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apiserver_harness import Harness, running_apiserver

pytestmark = [
    pytest.mark.kubectl,
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not on PATH"),
]


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with running_apiserver(tmp_path) as harness:
        yield harness


def kubectl(h: Harness, *args: str, context: str = "sandbox", check: bool = True,
            stdin: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run kubectl against the harness (its own HOME, so the discovery cache is per test)."""
    env = {**os.environ, "KUBECONFIG": str(h.kubeconfig), "HOME": str(h.directory)}
    proc = subprocess.run(["kubectl", "--context", context, *args], env=env, capture_output=True, text=True,
                          input=stdin, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
    return proc


def seed(h: Harness) -> dict[str, Any]:
    """A rollout, an analysis run, a running pod with a log, and an event on the rollout."""
    s = h.store
    ro = s.create("rollouts", "prod", {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
                                       "metadata": {"name": "api"}, "spec": {"replicas": 3}})
    s.set_status("rollouts", "prod", "api", {"replicas": 4, "updatedReplicas": 1, "availableReplicas": 3,
                                             "phase": "Degraded", "abort": True})
    s.create("analysisruns", "prod", {"metadata": {"name": "api-6d4f8b7c9-7-0"}, "spec": {"metrics": []}})
    s.set_status("analysisruns", "prod", "api-6d4f8b7c9-7-0", {"phase": "Failed"})
    for name, labels in (("api-1", {"app": "api", "tier": "web"}), ("api-2", {"app": "api", "tier": "db"}),
                         ("mc-1", {"app": "mc"})):
        s.create("pods", "prod", {"metadata": {"name": name, "labels": labels},
                                  "spec": {"containers": [{"name": "app", "image": "registry/api:1.42.0"}]}})
        s.set_status("pods", "prod", name, {"phase": "Running", "containerStatuses": [
            {"name": "app", "ready": True, "restartCount": 0, "image": "registry/api:1.42.0",
             "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]})
    s.set_pod_log("prod", "api-1", "GET /healthz 200\nGET /api 500\n")
    s.create("events", "prod", {
        "metadata": {"name": "api.abort"}, "type": "Warning", "reason": "RolloutAborted", "count": 1,
        "message": "Rollout aborted update to revision 7", "source": {"component": "rollouts-controller"},
        "involvedObject": {"kind": "Rollout", "name": "api", "namespace": "prod", "uid": ro["metadata"]["uid"],
                           "apiVersion": "argoproj.io/v1alpha1"}})
    return ro


def rows(output: str) -> list[list[str]]:
    """A kubectl table as lists of cells."""
    return [line.split() for line in output.strip().splitlines()]


def test_get_pods_table_and_json(h: Harness) -> None:
    seed(h)
    table = rows(kubectl(h, "get", "pods", "-n", "prod").stdout)
    assert table[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert [r[:4] for r in table[1:]] == [["api-1", "1/1", "Running", "0"], ["api-2", "1/1", "Running", "0"],
                                          ["mc-1", "1/1", "Running", "0"]]
    assert "as=Table" in h.last("GET").accept
    listing = json.loads(kubectl(h, "get", "pods", "-n", "prod", "-o", "json").stdout)
    assert [p["metadata"]["name"] for p in listing["items"]] == ["api-1", "api-2", "mc-1"]


def test_get_ro_and_ar_use_short_names_and_printer_columns(h: Harness) -> None:
    seed(h)
    before = seconds_old(h)
    table = rows(kubectl(h, "get", "ro", "-n", "prod").stdout)
    after = seconds_old(h)
    assert table[0] == ["NAME", "DESIRED", "CURRENT", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert table[1][:5] == ["api", "3", "4", "1", "3"]
    # AGE is computed by the server at the moment of the request, so it lies between the ages before and after.
    assert table[1][5] in {f"{n}s" for n in range(before, after + 1)}
    table = rows(kubectl(h, "get", "ar", "-n", "prod").stdout)
    assert table[0] == ["NAME", "STATUS", "AGE"] and table[1][:2] == ["api-6d4f8b7c9-7-0", "Failed"]
    one = json.loads(kubectl(h, "get", "rollout", "api", "-n", "prod", "-o", "json").stdout)
    assert one["status"]["phase"] == "Degraded" and one["kind"] == "Rollout"


def seconds_old(h: Harness) -> int:
    """How many whole seconds ago the seeded Rollout was created (kubectl's AGE for something this young)."""
    from datetime import UTC, datetime

    stamp = h.store.get("rollouts", "prod", "api")["metadata"]["creationTimestamp"]
    created = datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return max(0, int((datetime.now(UTC) - created).total_seconds()))


@pytest.mark.parametrize(("selector", "expected"), [
    ("app=api", ["api-1", "api-2"]),
    ("app in (api),tier!=db", ["api-1"]),
    ("!tier", ["mc-1"]),
])
def test_get_with_label_selector(h: Harness, selector: str, expected: list[str]) -> None:
    seed(h)
    out = kubectl(h, "get", "pods", "-n", "prod", "-l", selector, "-o", "name").stdout
    assert out.split() == [f"pod/{n}" for n in expected]
    assert h.last("GET").query["labelSelector"] == selector


def test_describe_pod_rollout_and_analysisrun(h: Harness) -> None:
    ro = seed(h)
    described = kubectl(h, "describe", "rollout", "api", "-n", "prod").stdout
    assert "Name:" in described and "api" in described
    assert "RolloutAborted" in described and "Rollout aborted update to revision 7" in described
    event_query = [r for r in h.server.requests if r.path == "/api/v1/namespaces/prod/events"][-1].query
    assert f"involvedObject.uid={ro['metadata']['uid']}" in event_query["fieldSelector"]
    pod_text = kubectl(h, "describe", "pod", "api-1", "-n", "prod").stdout
    assert "registry/api:1.42.0" in pod_text and "Running" in pod_text
    run_text = kubectl(h, "describe", "analysisrun", "api-6d4f8b7c9-7-0", "-n", "prod").stdout
    assert "Failed" in run_text and "AnalysisRun" in run_text


def test_patch_status_subresource_with_merge(h: Harness) -> None:
    seed(h)
    out = kubectl(h, "patch", "rollout", "api", "-n", "prod", "--subresource=status", "--type=merge",
                  "-p", '{"status":{"abort":false}}')
    assert "patched" in out.stdout
    req = h.last("PATCH")
    assert (req.path, req.content_type, req.json()) == (
        "/apis/argoproj.io/v1alpha1/namespaces/prod/rollouts/api/status", "application/merge-patch+json",
        {"status": {"abort": False}})
    assert h.store.get("rollouts", "prod", "api")["status"]["abort"] is False


def test_viewer_patch_is_forbidden(h: Harness) -> None:
    seed(h)
    proc = kubectl(h, "patch", "rollout", "api", "-n", "prod", "--subresource=status", "--type=merge",
                   "-p", '{"status":{"abort":false}}', context="sandbox-viewer", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        'Error from server (Forbidden): rollouts.argoproj.io "api" is forbidden: User "viewer" cannot patch '
        'resource "rollouts/status" in API group "argoproj.io" in the namespace "prod"')
    assert h.store.get("rollouts", "prod", "api")["status"]["abort"] is True


ROLLOUT_YAML = """
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: web
  namespace: prod
  labels: {app: web}
spec:
  replicas: REPLICAS
  selector: {matchLabels: {app: web}}
"""


def test_apply_creates_then_updates_custom_resource(h: Harness) -> None:
    missing = kubectl(h, "apply", "-n", "nowhere", "-f", "-", check=False,
                      stdin=ROLLOUT_YAML.replace("REPLICAS", "2").replace("namespace: prod", "namespace: nowhere"))
    assert missing.returncode == 1 and 'namespaces "nowhere" not found' in missing.stderr  # as on a real cluster
    created = kubectl(h, "apply", "-f", "-", stdin=ROLLOUT_YAML.replace("REPLICAS", "2"))
    assert created.stdout.strip() == "rollout.argoproj.io/web created"
    updated = kubectl(h, "apply", "-f", "-", stdin=ROLLOUT_YAML.replace("REPLICAS", "5"))
    assert updated.stdout.strip() == "rollout.argoproj.io/web configured"
    req = h.last("PATCH")
    assert req.content_type == "application/merge-patch+json" and req.query["fieldValidation"] == "Strict"
    obj = h.store.get("rollouts", "prod", "web")
    assert obj["spec"]["replicas"] == 5 and obj["metadata"]["generation"] == 2
    assert "kubectl.kubernetes.io/last-applied-configuration" in obj["metadata"]["annotations"]
    again = kubectl(h, "apply", "-f", "-", stdin=ROLLOUT_YAML.replace("REPLICAS", "5"))
    assert again.stdout.strip() == "rollout.argoproj.io/web unchanged"


POD_YAML = """
apiVersion: v1
kind: Pod
metadata: {name: tool, namespace: prod}
spec:
  containers:
  - {name: main, image: IMAGE}
  - {name: sidecar, image: registry/sidecar:1}
"""


def test_apply_built_in_kind_uses_strategic_merge(h: Harness) -> None:
    kubectl(h, "apply", "-f", "-", stdin=POD_YAML.replace("IMAGE", "registry/tool:1"), context="sandbox-admin")
    kubectl(h, "apply", "-f", "-", stdin=POD_YAML.replace("IMAGE", "registry/tool:2"), context="sandbox-admin")
    assert h.last("PATCH").content_type == "application/strategic-merge-patch+json"
    containers = h.store.get("pods", "prod", "tool")["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("main", "registry/tool:2"),
                                                              ("sidecar", "registry/sidecar:1")]


def test_get_watch_shows_changes_and_ends_at_request_timeout(h: Harness) -> None:
    seed(h)

    def change() -> None:
        time.sleep(1.0)
        h.store.set_status("analysisruns", "prod", "api-6d4f8b7c9-7-0", {"phase": "Successful"})

    threading.Thread(target=change).start()
    started = time.monotonic()
    proc = kubectl(h, "get", "ar", "-n", "prod", "-w", "--request-timeout=3s", check=False, timeout=20)
    assert time.monotonic() - started < 10
    table = rows(proc.stdout)
    assert table[0] == ["NAME", "STATUS", "AGE"]
    assert [r[:2] for r in table[1:]] == [["api-6d4f8b7c9-7-0", "Failed"], ["api-6d4f8b7c9-7-0", "Successful"]]
    assert h.last("GET").query["watch"] == "true"


def test_logs_and_delete(h: Harness) -> None:
    seed(h)
    assert kubectl(h, "logs", "api-1", "-n", "prod").stdout == "GET /healthz 200\nGET /api 500\n"
    assert kubectl(h, "logs", "api-1", "-n", "prod", "--tail=1").stdout == "GET /api 500\n"
    out = kubectl(h, "delete", "rollout", "api", "-n", "prod").stdout
    assert out.strip() == 'rollout.argoproj.io "api" deleted'
    missing = kubectl(h, "get", "rollout", "api", "-n", "prod", check=False)
    assert missing.stderr.strip() == 'Error from server (NotFound): rollouts.argoproj.io "api" not found'


@pytest.mark.parametrize(("context", "args", "answer"), [
    ("sandbox", ("patch", "rollouts", "--subresource=status"), "yes"),
    ("sandbox-viewer", ("patch", "rollouts", "--subresource=status"), "no"),
    ("sandbox-viewer", ("list", "analysisruns"), "yes"),
])
def test_auth_can_i(h: Harness, context: str, args: tuple[str, ...], answer: str) -> None:
    proc = kubectl(h, "auth", "can-i", *args, "-n", "prod", context=context, check=False)
    assert proc.stdout.strip() == answer and proc.returncode == (0 if answer == "yes" else 1)


def test_scale_rollout(h: Harness) -> None:
    seed(h)
    out = kubectl(h, "scale", "rollout", "api", "-n", "prod", "--replicas=1", context="sandbox-admin")
    assert out.stdout.strip() == "rollout.argoproj.io/api scaled"
    assert h.store.get("rollouts", "prod", "api")["spec"]["replicas"] == 1


def test_get_pages_with_chunk_size(h: Harness) -> None:
    seed(h)
    table = rows(kubectl(h, "get", "pods", "-n", "prod", "--chunk-size=1").stdout)
    assert [r[0] for r in table] == ["NAME", "api-1", "api-2", "mc-1"]
    pages = [r for r in h.server.requests if r.path == "/api/v1/namespaces/prod/pods"]
    assert [r.query["limit"] for r in pages] == ["1", "1", "1"]
    assert all("continue" in r.query for r in pages[1:])


# --------------------------------------------------------------------------- kubectl's typed (protobuf) creates


def test_create_namespace_configmap_secret_and_service_account_sent_as_protobuf(h: Harness) -> None:
    assert kubectl(h, "create", "namespace", "scratch").stdout.strip() == "namespace/scratch created"
    assert "protobuf" in h.last("POST").content_type  # kubectl's typed clients do not send JSON here
    kubectl(h, "create", "configmap", "settings", "-n", "scratch", "--from-literal=mode=fast",
            "--from-literal=level=3")
    kubectl(h, "create", "secret", "generic", "creds", "-n", "scratch", "--from-literal=password=s3cr3t")
    kubectl(h, "create", "serviceaccount", "bot", "-n", "scratch")
    cm = h.store.get("configmaps", "scratch", "settings")
    assert cm["data"] == {"mode": "fast", "level": "3"} and cm["metadata"]["namespace"] == "scratch"
    secret = h.store.get("secrets", "scratch", "creds")
    assert secret["type"] == "Opaque" and secret["data"] == {"password": "czNjcjN0"}  # base64 of s3cr3t
    table = [r[:-1] for r in rows(kubectl(h, "get", "cm,secret,sa", "-n", "scratch").stdout) if r]  # AGE aside
    assert table == [["NAME", "DATA"], ["configmap/settings", "2"],
                     ["NAME", "TYPE", "DATA"], ["secret/creds", "Opaque", "1"],
                     ["NAME", "SECRETS"], ["serviceaccount/bot", "0"]]
    decoded = kubectl(h, "get", "secret", "creds", "-n", "scratch", "-o", "jsonpath={.data.password}").stdout
    assert decoded == "czNjcjN0"


def test_create_service_and_deployment_sent_as_protobuf_get_the_server_defaults(h: Harness) -> None:
    kubectl(h, "create", "service", "clusterip", "web", "--tcp=80:8080", "-n", "prod")
    svc = h.store.get("services", "prod", "web")
    assert svc["spec"]["ports"] == [{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}]
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["clusterIP"].startswith("10.")
    assert svc["spec"]["selector"] == {"app": "web"}
    table = rows(kubectl(h, "get", "svc", "-n", "prod", "-o", "wide").stdout)
    assert table[0] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "SELECTOR"]
    assert table[1][:5] == ["web", "ClusterIP", svc["spec"]["clusterIP"], "<none>", "80/TCP"]
    assert table[1][6] == "app=web"
    kubectl(h, "create", "deployment", "web", "--image=registry/web:1.2", "--replicas=0", "-n", "prod")
    spec = h.store.get("deployments", "prod", "web")["spec"]
    assert spec["replicas"] == 0  # a pointer field: an explicit zero survives the protobuf decoding
    assert spec["template"]["spec"]["containers"] == [{"name": "web", "image": "registry/web:1.2", "resources": {}}]
    assert spec["strategy"]["type"] == "RollingUpdate" and spec["revisionHistoryLimit"] == 10


def test_create_in_a_missing_namespace_is_not_found(h: Harness) -> None:
    proc = kubectl(h, "create", "configmap", "x", "-n", "nowhere", "--from-literal=a=b", check=False)
    assert proc.returncode == 1 and 'namespaces "nowhere" not found' in proc.stderr
    assert not h.store.list("configmaps", "nowhere")[0]


def test_auth_whoami_names_the_token_user(h: Harness) -> None:
    for context, user in (("sandbox", "operator"), ("sandbox-viewer", "viewer")):
        review = json.loads(kubectl(h, "auth", "whoami", "-o", "json", context=context).stdout)
        assert review["kind"] == "SelfSubjectReview" and review["status"]["userInfo"]["username"] == user


def test_explain_walks_the_rollout_schema(h: Harness) -> None:
    out = kubectl(h, "explain", "rollout.spec.strategy.canary.steps").stdout
    assert "KIND:       Rollout" in out and "setWeight\t<integer>" in out and "analysis\t<Object>" in out
    abort = kubectl(h, "explain", "ro.status.abort").stdout
    assert "FIELD: abort <boolean>" in abort
    missing = kubectl(h, "explain", "rollout.spec.nosuchfield", check=False)
    assert missing.returncode == 1 and "nosuchfield" in missing.stderr


def test_kubectl_explain_falls_back_to_openapi_v2_as_protobuf(h: Harness) -> None:
    """``--output=plaintext-openapiv2`` reads /openapi/v2 only, as gnostic protobuf: fields and descriptions."""
    out = kubectl(h, "explain", "rollouts.spec", "--output=plaintext-openapiv2").stdout
    assert "KIND:     Rollout" in out and "VERSION:  argoproj.io/v1alpha1" in out
    assert "replicas\t<integer>" in out and "Number of desired pods" in out
    status = kubectl(h, "explain", "analysisruns.status", "--output=plaintext-openapiv2").stdout
    assert "phase" in status
    fetched = [r for r in h.server.requests if r.path == "/openapi/v2"]
    assert fetched and all("protobuf" in r.accept for r in fetched)
