"""Independent fidelity check: the sandbox's Kubernetes API against what a real 1.32 API server returns.

About sixty operations an SRE or a tool plausibly runs, through the real ``kubectl`` (the module is
skipped without it) and the official ``kubernetes`` client. Every assertion is the real server's
behaviour (kube-apiserver 1.32 with the Argo Rollouts CRDs installed), not the sandbox's; where the
sandbox differs, the test stays and is marked ``xfail(strict=True)`` with what is wrong, so a fix
turns it into a failure to remove the mark.

Read-only checks share one sandbox per module; anything that writes gets a fresh one (cheap).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client, config, dynamic, watch
from kubernetes.client.exceptions import ApiException

from rollbook.sandbox.controller import Timings
from rollbook.sandbox.server import Sandbox
from rollbook.sandbox.store import StoreError

pytestmark = [
    pytest.mark.kubectl,
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not on PATH"),
]

NS = "prod"
STABLE_POD = "api-7c9f5d6b84-ckmqq"  # evidence-gap: a Running stable pod with a log
QUICK = Timings(analysis_seconds=0.1, error_interval_seconds=0.02, scale=0.01, idle_poll_seconds=0.05)
TIMEOUT = 10.0  # seconds: every request and kubectl run of this module is bounded by it


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One evidence-gap sandbox for the tests that only read."""
    sb = Sandbox("evidence-gap", tmp_path_factory.mktemp("fidelity-shared"), timings=QUICK).start()
    yield sb
    sb.stop()


@pytest.fixture(scope="module")
def kube_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HOME for kubectl (its discovery cache is keyed by host:port, so one per module is enough)."""
    return tmp_path_factory.mktemp("kube-home")


Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def _runner(sb: Sandbox, home: Path) -> Kubectl:
    """A kubectl bound to a sandbox's kubeconfig."""

    def run(*args: str, context: str = "sandbox", stdin: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "KUBECONFIG": str(sb.kubeconfig), "HOME": str(home), **(env or {})}
        return subprocess.run(["kubectl", "--context", context, "--request-timeout=10s", *args], env=full_env,
                              capture_output=True, text=True, input=stdin, timeout=30, check=False)

    return run


@pytest.fixture
def kc(shared: Sandbox, kube_home: Path) -> Kubectl:
    """kubectl against the shared (read-only) sandbox."""
    return _runner(shared, kube_home)


@pytest.fixture
def fresh(sandbox: Sandbox) -> Sandbox:
    """A fresh evidence-gap sandbox for a test that writes."""
    return sandbox


@pytest.fixture
def fkc(fresh: Sandbox, kube_home: Path) -> Kubectl:
    """kubectl against the fresh sandbox."""
    return _runner(fresh, kube_home)


def api(sb: Sandbox, context: str = "sandbox") -> client.ApiClient:
    """An ApiClient of the official client for a kubeconfig context."""
    return config.new_client_from_config(config_file=str(sb.kubeconfig), context=context)


def core(sb: Sandbox, context: str = "sandbox") -> client.CoreV1Api:
    return client.CoreV1Api(api(sb, context))


def apps(sb: Sandbox) -> client.AppsV1Api:
    return client.AppsV1Api(api(sb))


def custom(sb: Sandbox, context: str = "sandbox") -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api(sb, context))


ARGO = ("argoproj.io", "v1alpha1")


def raw(sb: Sandbox, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> httpx.Response:
    """A raw HTTPS request with the sandbox CA and the operator token (for Accept headers the client lacks)."""
    kubeconfig = yaml.safe_load(sb.kubeconfig.read_text())
    ca = base64.b64decode(kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"]).decode()
    headers = {"Authorization": f"Bearer {token or sb.operator_token}", **kwargs.pop("headers", {})}
    with httpx.Client(verify=ssl.create_default_context(cadata=ca), timeout=TIMEOUT) as http:
        return http.request(method, sb.kube_url + path, headers=headers, **kwargs)


def status_of(e: ApiException) -> dict[str, Any]:
    """The Status object of an ApiException."""
    return json.loads(e.body)


def table(text: str) -> list[list[str]]:
    """kubectl's aligned table as cells (split on runs of 2+ spaces, as columns are padded)."""
    return [re.split(r"\s{2,}", line.strip()) for line in text.strip().splitlines()]


def make_pod(name: str, labels: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    """A minimal valid Pod manifest."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, **({"labels": labels} if labels else {}), **meta},
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}}


def make_rollout(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A Rollout the simulated controller has no reason to touch (no abort, no analysis)."""
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": name, **({"labels": labels} if labels else {})},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}},
                     "strategy": {"canary": {"steps": [{"setWeight": 50}]}}}}


def make_deployment(name: str, replicas: int = 2) -> dict[str, Any]:
    """A Deployment manifest with two containers (for keyed strategic merges)."""
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                         {"name": "app", "image": "registry.example/app:1", "env": [{"name": "A", "value": "1"}]},
                         {"name": "sidecar", "image": "registry.example/proxy:1"}]}}}}


def write(tmp_path: Path, name: str, obj: dict[str, Any]) -> str:
    """A manifest file for kubectl -f."""
    path = tmp_path / name
    path.write_text(yaml.safe_dump(obj))
    return str(path)


def rfc3339(delta: timedelta) -> str:
    """now + delta as Kubernetes writes timestamps."""
    return (datetime.now(UTC) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


# =========================================================================== kubectl: reading


def test_get_rollouts_table_has_argo_printer_columns(kc: Kubectl) -> None:
    out = kc("get", "rollouts", "-n", NS)
    assert out.returncode == 0, out.stderr
    rows = table(out.stdout)
    assert rows[0] == ["NAME", "DESIRED", "CURRENT", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert rows[1][:5] == ["api", "4", "4", "0", "4"]


def test_get_all_namespaces_adds_namespace_column(kc: Kubectl) -> None:
    rows = table(kc("get", "ro", "-A").stdout)
    assert rows[0][:2] == ["NAMESPACE", "NAME"] and rows[1][:2] == [NS, "api"]


def test_get_by_every_resource_spelling(kc: Kubectl) -> None:
    for spelling in ("rollout", "rollouts", "ro", "Rollout", "rollouts.argoproj.io", "rollouts.v1alpha1.argoproj.io"):
        out = kc("get", spelling, "api", "-n", NS, "-o", "name")
        assert (out.returncode, out.stdout.strip()) == (0, "rollout.argoproj.io/api"), (spelling, out.stderr)


def test_output_jsonpath_with_filter_and_custom_columns(kc: Kubectl) -> None:
    jp = '{.status.phase}/{.status.conditions[?(@.type=="Progressing")].reason}'
    assert kc("get", "ro", "api", "-n", NS, "-o", f"jsonpath={jp}").stdout == "Degraded/RolloutAborted"
    columns = "custom-columns=NAME:.metadata.name,PHASE:.status.phase,STABLE:.status.stableRS"
    out = kc("get", "ro", "-n", NS, "-o", columns)
    assert table(out.stdout) == [["NAME", "PHASE", "STABLE"], ["api", "Degraded", "7c9f5d6b84"]]


def test_output_yaml_is_the_stored_object(kc: Kubectl, shared: Sandbox) -> None:
    obj = yaml.safe_load(kc("get", "ro", "api", "-n", NS, "-o", "yaml").stdout)
    stored = shared.store.get("rollouts", NS, "api")
    assert (obj["apiVersion"], obj["kind"]) == ("argoproj.io/v1alpha1", "Rollout")
    assert obj["metadata"]["uid"] == stored["metadata"]["uid"]
    assert obj["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]


def test_get_pods_wide_columns_and_cells(kc: Kubectl) -> None:
    rows = table(kc("get", "pods", "-n", NS, "-o", "wide").stdout)
    assert rows[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE", "READINESS GATES"]
    first = next(r for r in rows if r[0] == STABLE_POD)
    assert first[1:4] == ["1/1", "Running", "0"] and first[6] == "worker-1.cluster.internal"


def test_label_selectors_full_grammar(kc: Kubectl) -> None:
    def names(selector: str) -> list[str]:
        out = kc("get", "pods", "-n", NS, "-l", selector, "-o", "name")
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    stable = names("rollouts-pod-template-hash=7c9f5d6b84")
    assert len(stable) == 4
    assert names("app in (api,web),!nonexistent") == stable
    assert names("release-id notin (api-1.41.3)") == []
    none = kc("get", "pods", "-n", NS, "-l", "app=nothing")
    assert none.stdout == "" and none.stderr.strip() == f"No resources found in {NS} namespace."


def test_field_selectors_supported_and_unsupported(kc: Kubectl) -> None:
    out = kc("get", "pods", "-n", NS, "-o", "name",
             "--field-selector", "status.phase=Running,spec.nodeName=worker-1.cluster.internal")
    assert f"pod/{STABLE_POD}" in out.stdout.split()
    assert kc("get", "pods", "-n", NS, "--field-selector", "status.phase!=Running", "-o", "name").stdout == ""
    bad = kc("get", "pods", "-n", NS, "--field-selector", "spec.foo=bar")
    assert bad.returncode == 1 and "field label not supported: spec.foo" in bad.stderr


def test_not_found_and_unknown_resource_type_messages(kc: Kubectl) -> None:
    missing = kc("get", "ro", "nope", "-n", NS)
    assert (missing.returncode, missing.stderr.strip()) == (
        1, 'Error from server (NotFound): rollouts.argoproj.io "nope" not found')
    unknown = kc("get", "widgets")
    assert (unknown.returncode, unknown.stderr.strip()) == (
        1, 'error: the server doesn\'t have a resource type "widgets"')
    empty_ns = kc("get", "ro", "-n", "no-such-namespace")
    assert (empty_ns.returncode, empty_ns.stderr.strip()) == (0, "No resources found in no-such-namespace namespace.")


def test_get_replicasets_wide_and_analysisruns(kc: Kubectl) -> None:
    rs = table(kc("get", "rs", "-n", NS, "-o", "wide").stdout)
    assert rs[0] == ["NAME", "DESIRED", "CURRENT", "READY", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    assert ["api-7c9f5d6b84", "4", "4", "4"] == rs[2][:4]
    ar = table(kc("get", "ar", "-n", NS).stdout)
    assert ar[0] == ["NAME", "STATUS", "AGE"] and ar[1][:2] == ["api-6d4f8b7c9-7-2", "Failed"]


def test_events_by_involved_object_sorted(kc: Kubectl, shared: Sandbox) -> None:
    out = kc("get", "events", "-n", NS, "--field-selector", "involvedObject.kind=Rollout,involvedObject.name=api",
             "--sort-by=.lastTimestamp", "-o", "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}")
    reasons = out.stdout.split()
    expected = [e for e in shared.store.list("events", NS)[0] if e["involvedObject"]["kind"] == "Rollout"]
    assert sorted(reasons) == sorted(e["reason"] for e in expected) and "RolloutAborted" in reasons


def test_get_events_wide_columns(kc: Kubectl) -> None:
    rows = table(kc("get", "events", "-n", NS, "-o", "wide").stdout)
    assert rows[0] == ["LAST SEEN", "TYPE", "REASON", "OBJECT", "SUBOBJECT", "SOURCE", "MESSAGE", "FIRST SEEN",
                       "COUNT", "NAME"]


def test_kubectl_events_for_rollout_warning_only(kc: Kubectl) -> None:
    out = kc("events", "-n", NS, "--for", "rollout/api", "--types=Warning")
    rows = table(out.stdout)
    assert rows[0] == ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert rows[1:] and all(r[1] == "Warning" and r[3] == "Rollout/api" for r in rows[1:])
    assert "RolloutAborted" in {r[2] for r in rows[1:]}


def test_describe_rollout_and_pod(kc: Kubectl) -> None:
    ro = kc("describe", "rollout", "api", "-n", NS)
    assert ro.returncode == 0, ro.stderr
    assert re.search(r"^Name:\s+api$", ro.stdout, re.M) and re.search(r"^Kind:\s+Rollout$", ro.stdout, re.M)
    assert re.search(r"^Events:", ro.stdout, re.M) and "RolloutAborted" in ro.stdout
    pod = kc("describe", "pod", STABLE_POD, "-n", NS)
    assert re.search(r"^Status:\s+Running$", pod.stdout, re.M)
    assert re.search(r"^Controlled By:\s+ReplicaSet/api-7c9f5d6b84$", pod.stdout, re.M)


def test_logs_tail_container_and_owner(kc: Kubectl, shared: Sandbox) -> None:
    full = shared.store.pod_log(NS, STABLE_POD).splitlines()
    assert len(full) >= 2
    assert kc("logs", STABLE_POD, "-n", NS, "-c", "api", "--tail=1").stdout.splitlines() == full[-1:]
    assert kc("logs", STABLE_POD, "-n", NS, "--tail=2").stdout.splitlines() == full[-2:]
    bad = kc("logs", STABLE_POD, "-n", NS, "-c", "nope")
    assert bad.returncode == 1 and f"container nope is not valid for pod {STABLE_POD}" in bad.stderr
    via_rs = kc("logs", "rs/api-7c9f5d6b84", "-n", NS, "--tail=1")
    assert via_rs.returncode == 0 and len(via_rs.stdout.splitlines()) == 1


def test_logs_timestamps(kc: Kubectl) -> None:
    lines = kc("logs", STABLE_POD, "-n", NS, "--timestamps", "--tail=2").stdout.splitlines()
    assert lines and all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z ", line) for line in lines)


def test_logs_previous_of_a_container_that_never_restarted(kc: Kubectl) -> None:
    out = kc("logs", STABLE_POD, "-n", NS, "--previous")
    assert out.returncode == 1
    assert f'previous terminated container "api" in pod "{STABLE_POD}" not found' in out.stderr


def test_auth_can_i_operator_and_viewer(kc: Kubectl) -> None:
    assert kc("auth", "can-i", "patch", "rollouts/status", "-n", NS).stdout.strip() == "yes"
    denied = kc("auth", "can-i", "patch", "rollouts", "-n", NS, context="sandbox-viewer")
    assert (denied.returncode, denied.stdout.strip()) == (1, "no")
    logs = kc("auth", "can-i", "get", "pods", "--subresource=log", "-n", NS, context="sandbox-viewer")
    assert logs.stdout.strip() == "yes"


def test_auth_can_i_list(kc: Kubectl) -> None:
    out = kc("auth", "can-i", "--list", "-n", NS, context="sandbox-viewer")
    assert out.returncode == 0, out.stderr
    assert table(out.stdout)[0] == ["Resources", "Non-Resource URLs", "Resource Names", "Verbs"]


def test_auth_whoami(kc: Kubectl) -> None:
    out = kc("auth", "whoami")
    assert out.returncode == 0, out.stderr
    assert re.search(r"^Username\s+operator$", out.stdout, re.M)


def test_explain_rollout_spec(kc: Kubectl) -> None:
    out = kc("explain", "rollout.spec")
    assert out.returncode == 0, out.stderr
    assert "KIND:       Rollout" in out.stdout and "FIELD: spec <Object>" in out.stdout


def test_explain_pod_containers(kc: Kubectl) -> None:
    out = kc("explain", "pods.spec.containers")
    assert out.returncode == 0, out.stderr
    assert "FIELD: containers <[]Container>" in out.stdout


def test_api_resources_and_versions(kc: Kubectl) -> None:
    rows = table(kc("api-resources", "--api-group=argoproj.io").stdout)
    assert ["rollouts", "ro", "argoproj.io/v1alpha1", "true", "Rollout"] in rows
    assert ["analysisruns", "ar", "argoproj.io/v1alpha1", "true", "AnalysisRun"] in rows
    names = kc("api-resources", "--namespaced=false", "-o", "name").stdout.split()
    assert "namespaces" in names and "pods" not in names
    versions = kc("api-versions").stdout.split()
    assert {"v1", "apps/v1", "argoproj.io/v1alpha1", "authorization.k8s.io/v1"} <= set(versions)


def test_get_raw_discovery_and_paged_list(kc: Kubectl) -> None:
    doc = json.loads(kc("get", "--raw", "/apis/argoproj.io/v1alpha1").stdout)
    names = {r["name"]: r for r in doc["resources"]}
    assert {"rollouts", "rollouts/status", "rollouts/scale", "analysisruns"} <= set(names)
    assert (names["rollouts/scale"]["group"], names["rollouts/scale"]["kind"]) == ("autoscaling", "Scale")
    page = json.loads(kc("get", "--raw", f"/api/v1/namespaces/{NS}/pods?limit=1").stdout)
    assert page["kind"] == "PodList" and len(page["items"]) == 1
    assert page["metadata"]["continue"] and page["metadata"]["remainingItemCount"] == 3
    assert kc("get", "--raw", "/healthz").stdout == "ok"


def test_chunked_get_follows_continue(kc: Kubectl, shared: Sandbox) -> None:
    before = len(shared.apiserver.requests) if shared.apiserver else 0
    out = kc("get", "pods", "-n", NS, "--chunk-size=1", "-o", "name")
    assert len(out.stdout.split()) == 4
    assert shared.apiserver is not None
    pages = [r for r in shared.apiserver.requests[before:] if r.path == f"/api/v1/namespaces/{NS}/pods"]
    assert len(pages) == 4 and all(r.query.get("limit") == "1" for r in pages)
    assert sum(1 for r in pages if r.query.get("continue")) == 3


def test_wait_for_jsonpath_condition_and_timeout(kc: Kubectl) -> None:
    ok = kc("wait", "ro/api", "-n", NS, "--for=jsonpath={.status.phase}=Degraded", "--timeout=5s")
    assert (ok.returncode, ok.stdout.strip()) == (0, "rollout.argoproj.io/api condition met")
    cond = kc("wait", "ro/api", "-n", NS, "--for=condition=Progressing=False", "--timeout=5s")
    assert cond.stdout.strip() == "rollout.argoproj.io/api condition met"
    late = kc("wait", f"pod/{STABLE_POD}", "-n", NS, "--for=delete", "--timeout=1s")
    assert late.returncode == 1 and f"timed out waiting for the condition on pods/{STABLE_POD}" in late.stderr


def test_unauthorized_and_forbidden_messages(kc: Kubectl) -> None:
    bad = kc("--token=not-a-token", "get", "ro", "-n", NS)
    assert bad.returncode == 1 and "error: You must be logged in to the server (Unauthorized)" in bad.stderr
    denied = kc("annotate", "ro", "api", "-n", NS, "x=y", context="sandbox-viewer")
    assert denied.returncode == 1
    assert denied.stderr.strip() == (
        'Error from server (Forbidden): rollouts.argoproj.io "api" is forbidden: User "viewer" cannot patch '
        f'resource "rollouts" in API group "argoproj.io" in the namespace "{NS}"')


def test_get_status_subresource(kc: Kubectl) -> None:
    out = kc("get", "ro", "api", "-n", NS, "--subresource=status", "-o", "jsonpath={.status.stableRS}")
    assert (out.returncode, out.stdout) == (0, "7c9f5d6b84")


def test_get_nodes(kc: Kubectl) -> None:
    out = kc("get", "nodes")
    assert out.returncode == 0 and "worker-1.cluster.internal" in out.stdout


def test_cluster_info(kc: Kubectl, shared: Sandbox) -> None:
    out = kc("cluster-info")
    assert out.returncode == 0 and f"Kubernetes control plane is running at {shared.kube_url}" in out.stdout


# =========================================================================== kubectl: writing


def test_create_then_duplicate_is_already_exists(fkc: Kubectl, tmp_path: Path) -> None:
    path = write(tmp_path, "pod.yaml", make_pod("web-1"))
    assert fkc("create", "-n", NS, "-f", path).stdout.strip() == "pod/web-1 created"
    again = fkc("create", "-n", NS, "-f", path)
    assert again.returncode == 1
    assert again.stderr.strip() == (
        f'Error from server (AlreadyExists): error when creating "{path}": pods "web-1" already exists')


def test_create_with_generate_name(fkc: Kubectl, tmp_path: Path) -> None:
    pod = make_pod("")
    pod["metadata"] = {"generateName": "job-"}
    out = fkc("create", "-n", NS, "-f", write(tmp_path, "gen.yaml", pod))
    assert re.fullmatch(r"pod/job-[bcdfghjklmnpqrstvwxz2456789]{5} created", out.stdout.strip()), out


def test_create_invalid_name_is_422(fkc: Kubectl, tmp_path: Path) -> None:
    out = fkc("create", "-n", NS, "-f", write(tmp_path, "bad.yaml", make_pod("Bad_Name")))
    assert out.returncode == 1
    assert out.stderr.startswith('The Pod "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": '
                                 "a lowercase RFC 1123 subdomain must consist of")


def test_create_with_unknown_field_is_rejected_strictly(fkc: Kubectl, fresh: Sandbox, tmp_path: Path) -> None:
    pod = make_pod("typo")
    pod["spec"]["containerz"] = pod["spec"].pop("containers")
    out = fkc("create", "-n", NS, "-f", write(tmp_path, "typo.yaml", pod))
    assert out.returncode == 1 and 'unknown field "spec.containerz"' in out.stderr
    with pytest.raises(StoreError):
        fresh.store.get("pods", NS, "typo")


def test_create_in_missing_namespace_is_not_found(fkc: Kubectl, fresh: Sandbox, tmp_path: Path) -> None:
    out = fkc("create", "-n", "typo-ns", "-f", write(tmp_path, "pod.yaml", make_pod("web-1")))
    assert out.returncode == 1 and 'namespaces "typo-ns" not found' in out.stderr
    # no namespace made on the fly: only the scenario's and Argo's own (its install, sandbox/notifications.py)
    assert [n["metadata"]["name"] for n in fresh.store.list("namespaces")[0]] == ["argo-rollouts", NS]


def test_apply_create_unchanged_configured_and_prune_field(fkc: Kubectl, fresh: Sandbox, tmp_path: Path) -> None:
    ro = make_rollout("web", labels={"team": "shop", "tier": "front"})
    path = write(tmp_path, "ro.yaml", ro)
    assert fkc("apply", "-n", NS, "-f", path).stdout.strip() == "rollout.argoproj.io/web created"
    rv = fresh.store.get("rollouts", NS, "web")["metadata"]["resourceVersion"]
    assert fkc("apply", "-n", NS, "-f", path).stdout.strip() == "rollout.argoproj.io/web unchanged"
    assert fresh.store.get("rollouts", NS, "web")["metadata"]["resourceVersion"] == rv
    del ro["metadata"]["labels"]["tier"]
    ro["spec"]["replicas"] = 3
    changed = fkc("apply", "-n", NS, "-f", write(tmp_path, "ro.yaml", ro))
    assert changed.stdout.strip() == "rollout.argoproj.io/web configured"
    live = fresh.store.get("rollouts", NS, "web")
    assert live["metadata"]["labels"] == {"team": "shop"} and live["spec"]["replicas"] == 3
    assert live["metadata"]["generation"] == 2


def test_apply_server_dry_run_and_diff_change_nothing(fkc: Kubectl, fresh: Sandbox, tmp_path: Path) -> None:
    ro = make_rollout("web")
    path = write(tmp_path, "ro.yaml", ro)
    fkc("apply", "-n", NS, "-f", path)
    before = fresh.store.get("rollouts", NS, "web")
    ro["spec"]["replicas"] = 5
    path = write(tmp_path, "ro.yaml", ro)
    dry = fkc("apply", "-n", NS, "-f", path, "--dry-run=server")
    assert dry.stdout.strip() == "rollout.argoproj.io/web configured (server dry run)"
    diff = fkc("diff", "-n", NS, "-f", path)
    assert diff.returncode == 1 and "-  replicas: 1" in diff.stdout and "+  replicas: 5" in diff.stdout
    assert fresh.store.get("rollouts", NS, "web") == before


def test_server_side_apply_removes_fields_the_manager_dropped(fkc: Kubectl, fresh: Sandbox, tmp_path: Path) -> None:
    ro = make_rollout("web", labels={"a": "1", "b": "2"})
    assert fkc("apply", "--server-side", "-n", NS, "-f", write(tmp_path, "ro.yaml", ro)).stdout.strip() == \
        "rollout.argoproj.io/web serverside-applied"
    del ro["metadata"]["labels"]["b"]
    fkc("apply", "--server-side", "-n", NS, "-f", write(tmp_path, "ro.yaml", ro))
    live = fresh.store.get("rollouts", NS, "web")
    assert live["metadata"]["labels"] == {"a": "1"}
    assert ("kubectl", "Apply") in {(m["manager"], m["operation"]) for m in live["metadata"]["managedFields"]}


def test_server_side_apply_conflict_with_another_manager(fkc: Kubectl, tmp_path: Path) -> None:
    ro = make_rollout("web")
    path = write(tmp_path, "ro.yaml", ro)
    fkc("apply", "--server-side", "-n", NS, "-f", path)
    fkc("patch", "ro", "web", "-n", NS, "--type=merge", "-p", '{"spec":{"replicas":3}}')  # kubectl-patch owns it now
    ro["spec"]["replicas"] = 7
    out = fkc("apply", "--server-side", "-n", NS, "-f", write(tmp_path, "ro.yaml", ro))
    assert out.returncode == 1 and "Apply failed with 1 conflict" in out.stderr and ".spec.replicas" in out.stderr


def test_patch_status_subresource_like_the_argo_plugin(fkc: Kubectl, fresh: Sandbox) -> None:
    fresh.store.create("rollouts", NS, make_rollout("web"))
    before = fresh.store.get("rollouts", NS, "web")
    out = fkc("patch", "ro", "web", "-n", NS, "--subresource=status", "--type=merge",
              "-p", '{"status":{"pauseConditions":null,"abort":false}}')
    assert out.stdout.strip() == "rollout.argoproj.io/web patched"
    after = fresh.store.get("rollouts", NS, "web")
    assert after["status"]["abort"] is False and after["metadata"]["generation"] == before["metadata"]["generation"]
    assert int(after["metadata"]["resourceVersion"]) > int(before["metadata"]["resourceVersion"])


def test_patch_default_strategic_on_custom_resource_is_refused(fkc: Kubectl) -> None:
    out = fkc("patch", "ro", "api", "-n", NS, "-p", '{"spec":{"replicas":2}}')
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "error: application/strategic-merge-patch+json is not supported by argoproj.io/v1alpha1, Kind=Rollout: "
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml")


def test_patch_json_and_failing_test_operation(fkc: Kubectl, fresh: Sandbox) -> None:
    fresh.store.create("rollouts", NS, make_rollout("web"))
    guarded = '[{"op":"test","path":"/spec/replicas","value":1},{"op":"replace","path":"/spec/replicas","value":%d}]'
    ok = fkc("patch", "ro", "web", "-n", NS, "--type=json", "-p", guarded % 2)
    assert ok.stdout.strip() == "rollout.argoproj.io/web patched"
    failed = fkc("patch", "ro", "web", "-n", NS, "--type=json", "-p", guarded % 9)
    assert failed.returncode == 1 and "the server rejected our request due to an error in our request" in failed.stderr
    assert fresh.store.get("rollouts", NS, "web")["spec"]["replicas"] == 2


def test_label_annotate_remove_and_stale_resource_version(fkc: Kubectl, fresh: Sandbox) -> None:
    fresh.store.create("rollouts", NS, make_rollout("web", labels={"team": "shop"}))
    assert fkc("label", "ro", "web", "-n", NS, "oncall=ack").stdout.strip() == "rollout.argoproj.io/web labeled"
    assert fkc("annotate", "ro", "web", "-n", NS, "note=hi").stdout.strip() == "rollout.argoproj.io/web annotated"
    fkc("label", "ro", "web", "-n", NS, "team-")
    live = fresh.store.get("rollouts", NS, "web")
    assert live["metadata"]["labels"] == {"oncall": "ack"} and live["metadata"]["annotations"]["note"] == "hi"
    stale = fkc("label", "ro", "web", "-n", NS, "x=y", "--resource-version=2")
    assert stale.returncode == 1 and stale.stderr.strip() == (
        'Error from server (Conflict): Operation cannot be fulfilled on rollouts.argoproj.io "web": the object has '
        "been modified; please apply your changes to the latest version and try again")


def test_scale_rollout_through_scale_subresource(fkc: Kubectl, fresh: Sandbox) -> None:
    out = fkc("scale", "ro/api", "-n", NS, "--replicas=6")
    assert out.stdout.strip() == "rollout.argoproj.io/api scaled"
    assert fresh.store.get("rollouts", NS, "api")["spec"]["replicas"] == 6
    assert fresh.apiserver is not None
    assert any(r.path.endswith("/rollouts/api/scale") and r.method == "PATCH" for r in fresh.apiserver.requests)


def test_delete_messages_dry_run_ignore_not_found_and_selector(fkc: Kubectl, fresh: Sandbox) -> None:
    for name in ("a", "b", "c"):
        fresh.store.create("pods", NS, make_pod(name, labels={"batch": "x" if name != "c" else "y"}))
    dry = fkc("delete", "pod", "a", "-n", NS, "--dry-run=server")
    assert dry.stdout.strip() == 'pod "a" deleted (server dry run)'
    assert fresh.store.get("pods", NS, "a")
    assert fkc("delete", "pod", "a", "-n", NS).stdout.strip() == 'pod "a" deleted'
    gone = fkc("delete", "pod", "a", "-n", NS)
    assert (gone.returncode, gone.stderr.strip()) == (1, 'Error from server (NotFound): pods "a" not found')
    assert fkc("delete", "pod", "a", "-n", NS, "--ignore-not-found").returncode == 0
    assert fkc("delete", "pods", "-n", NS, "-l", "batch=x").stdout.strip() == 'pod "b" deleted'
    assert fresh.store.get("pods", NS, "c")


def test_finalizer_keeps_a_deleted_object_terminating(fkc: Kubectl, fresh: Sandbox) -> None:
    fresh.store.create("pods", NS, make_pod("held", finalizers=["example.com/hold"]))
    assert fkc("delete", "pod", "held", "-n", NS, "--wait=false").stdout.strip() == 'pod "held" deleted'
    rows = table(fkc("get", "pod", "held", "-n", NS).stdout)
    assert rows[1][2] == "Terminating"
    assert fresh.store.get("pods", NS, "held")["metadata"]["deletionTimestamp"]
    fkc("patch", "pod", "held", "-n", NS, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    assert fkc("get", "pod", "held", "-n", NS).returncode == 1


def test_delete_owner_cascades_in_background(fkc: Kubectl, fresh: Sandbox) -> None:
    assert fresh.store.list("replicasets", NS)[0]
    assert fkc("delete", "ro", "api", "-n", NS).stdout.strip() == 'rollout.argoproj.io "api" deleted'
    deadline = time.monotonic() + 5  # the real garbage collector is asynchronous
    while (fresh.store.list("replicasets", NS)[0] or fresh.store.list("pods", NS)[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fresh.store.list("replicasets", NS)[0] == [] and fresh.store.list("pods", NS)[0] == []


def test_delete_orphan_strips_owner_references(fkc: Kubectl, fresh: Sandbox) -> None:
    fkc("delete", "ro", "api", "-n", NS, "--cascade=orphan")
    rs = fresh.store.list("replicasets", NS)[0]
    assert rs and all(not r["metadata"].get("ownerReferences") for r in rs)


def test_replace_with_stale_resource_version_conflicts(fkc: Kubectl, fresh: Sandbox, tmp_path: Path) -> None:
    fresh.store.create("rollouts", NS, make_rollout("web"))
    live = fresh.store.get("rollouts", NS, "web")
    fresh.store.patch("rollouts", NS, "web", {"metadata": {"labels": {"moved": "on"}}}, "merge")
    live["spec"]["replicas"] = 4
    out = fkc("replace", "-f", write(tmp_path, "ro.yaml", live))
    assert out.returncode == 1 and 'Operation cannot be fulfilled on rollouts.argoproj.io "web"' in out.stderr
    live["metadata"]["resourceVersion"] = fresh.store.get("rollouts", NS, "web")["metadata"]["resourceVersion"]
    assert fkc("replace", "-f", write(tmp_path, "ro.yaml", live)).stdout.strip() == "rollout.argoproj.io/web replaced"


def test_edit_with_an_editor_command(fkc: Kubectl, fresh: Sandbox, tmp_path: Path) -> None:
    fresh.store.create("rollouts", NS, make_rollout("web"))
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/replicas: 1/replicas: 2/' \"$1\"\n")
    editor.chmod(0o755)
    out = fkc("edit", "ro", "web", "-n", NS, env={"KUBE_EDITOR": str(editor)})
    assert out.stdout.strip() == "rollout.argoproj.io/web edited", out.stderr
    assert fresh.store.get("rollouts", NS, "web")["spec"]["replicas"] == 2


def _rolled_out(sb: Sandbox, name: str, updated: int) -> None:
    """Write a Deployment status as the deployment controller would."""
    d = sb.store.get("deployments", NS, name)
    sb.store.set_status("deployments", NS, name, {
        "observedGeneration": d["metadata"]["generation"], "replicas": d["spec"]["replicas"],
        "updatedReplicas": updated, "readyReplicas": updated, "availableReplicas": updated,
        "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]})


def test_deployment_rollout_status_done_and_waiting(fkc: Kubectl, fresh: Sandbox, tmp_path: Path) -> None:
    assert fkc("apply", "-n", NS, "-f", write(tmp_path, "d.yaml", make_deployment("web"))).stdout.strip() == \
        "deployment.apps/web created"
    _rolled_out(fresh, "web", updated=2)
    done = fkc("rollout", "status", "deploy/web", "-n", NS, "--timeout=5s")
    assert (done.returncode, done.stdout.strip()) == (0, 'deployment "web" successfully rolled out')
    _rolled_out(fresh, "web", updated=1)
    waiting = fkc("rollout", "status", "deploy/web", "-n", NS, "--timeout=1s")
    assert waiting.returncode == 1
    assert ('Waiting for deployment "web" rollout to finish: 1 out of 2 new replicas have been updated...'
            in waiting.stdout)


def test_deployment_set_image_restart_pause_keep_keyed_containers(fkc: Kubectl, fresh: Sandbox, tmp_path: Path) -> None:
    fkc("apply", "-n", NS, "-f", write(tmp_path, "d.yaml", make_deployment("web")))
    assert fkc("set", "image", "deploy/web", "-n", NS, "app=registry.example/app:2").stdout.strip() == \
        "deployment.apps/web image updated"
    assert fkc("rollout", "restart", "deploy/web", "-n", NS).stdout.strip() == "deployment.apps/web restarted"
    assert fkc("rollout", "pause", "deploy/web", "-n", NS).stdout.strip() == "deployment.apps/web paused"
    d = fresh.store.get("deployments", NS, "web")
    containers = d["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("app", "registry.example/app:2"),
                                                              ("sidecar", "registry.example/proxy:1")]
    assert containers[0]["env"] == [{"name": "A", "value": "1"}]
    assert "kubectl.kubernetes.io/restartedAt" in d["spec"]["template"]["metadata"]["annotations"]
    assert d["spec"]["paused"] is True and d["metadata"]["generation"] == 4


def test_scale_deployment(fkc: Kubectl, fresh: Sandbox, tmp_path: Path) -> None:
    fkc("apply", "-n", NS, "-f", write(tmp_path, "d.yaml", make_deployment("web")))
    assert fkc("scale", "deploy/web", "-n", NS, "--replicas=5").stdout.strip() == "deployment.apps/web scaled"
    assert fresh.store.get("deployments", NS, "web")["spec"]["replicas"] == 5


def test_get_deployments_wide(fkc: Kubectl, tmp_path: Path) -> None:
    fkc("apply", "-n", NS, "-f", write(tmp_path, "d.yaml", make_deployment("web")))
    rows = table(fkc("get", "deploy", "-n", NS, "-o", "wide").stdout)
    assert rows[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    assert rows[1][5:] == ["app,sidecar", "registry.example/app:1,registry.example/proxy:1", "app=web"]


def test_kubectl_create_deployment_generator(fkc: Kubectl, fresh: Sandbox) -> None:
    out = fkc("create", "deployment", "web", "-n", NS, "--image=registry.example/app:1")
    assert out.stdout.strip() == "deployment.apps/web created", out.stderr
    assert fresh.store.get("deployments", NS, "web")


def test_kubectl_create_namespace(fkc: Kubectl) -> None:
    out = fkc("create", "namespace", "staging")
    assert out.stdout.strip() == "namespace/staging created", out.stderr


def _crashlooping_pod(sb: Sandbox) -> None:
    """A pod whose only container restarted 3 times, last exiting 10 minutes ago, now in back-off."""
    sb.store.create("pods", NS, make_pod("crashy"))
    sb.store.set_status("pods", NS, "crashy", {"phase": "Running", "containerStatuses": [{
        "name": "app", "ready": False, "restartCount": 3, "image": "registry.example/app:1",
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                     "finishedAt": rfc3339(timedelta(minutes=-10))}}}]})


def test_pod_table_crashloop_status(fkc: Kubectl, fresh: Sandbox) -> None:
    _crashlooping_pod(fresh)
    row = table(fkc("get", "pod", "crashy", "-n", NS).stdout)[1]
    assert row[1:3] == ["0/1", "CrashLoopBackOff"] and row[3].split()[0] == "3"


def test_pod_table_restarts_show_last_restart_age(fkc: Kubectl, fresh: Sandbox) -> None:
    _crashlooping_pod(fresh)
    row = table(fkc("get", "pod", "crashy", "-n", NS).stdout)[1]
    assert row[3] == "3 (10m ago)"


def test_logs_of_a_container_waiting_to_start(fkc: Kubectl, fresh: Sandbox) -> None:
    fresh.store.create("pods", NS, {**make_pod("starting"), "spec": {**make_pod("x")["spec"], "nodeName": "worker-1"}})
    fresh.store.set_status("pods", NS, "starting", {"phase": "Pending", "containerStatuses": [{
        "name": "app", "ready": False, "restartCount": 0, "image": "registry.example/app:1",
        "state": {"waiting": {"reason": "ContainerCreating"}}}]})
    out = fkc("logs", "starting", "-n", NS)
    assert out.returncode == 1
    assert 'container "app" in pod "starting" is waiting to start: ContainerCreating' in out.stderr


# =========================================================================== the official Python client


def test_status_object_of_not_found(shared: Sandbox) -> None:
    with pytest.raises(ApiException) as e:
        custom(shared).get_namespaced_custom_object(*ARGO, NS, "rollouts", "nope")
    assert e.value.status == 404
    assert status_of(e.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'rollouts.argoproj.io "nope" not found', "reason": "NotFound",
        "details": {"name": "nope", "group": "argoproj.io", "kind": "rollouts"}, "code": 404}


def test_unknown_resource_and_group_are_404(shared: Sandbox) -> None:
    for path in (f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/widgets", "/apis/nope.example/v1", "/api/v2"):
        resp = raw(shared, "GET", path)
        assert resp.status_code == 404, path
        body = resp.json()
        assert (body["kind"], body["reason"]) == ("Status", "NotFound"), path


def test_python_pagination_limit_continue(shared: Sandbox) -> None:
    pods = core(shared)
    first = pods.list_namespaced_pod(NS, limit=3)
    assert len(first.items) == 3 and first.metadata.remaining_item_count == 1
    rest = pods.list_namespaced_pod(NS, limit=3, _continue=first.metadata._continue)
    assert len(rest.items) == 1 and not rest.metadata._continue
    everything = sorted(p.metadata.name for p in pods.list_namespaced_pod(NS).items)
    assert [p.metadata.name for p in first.items + rest.items] == everything
    with pytest.raises(ApiException) as e:
        pods.list_namespaced_pod(NS, limit=1, _continue="garbage!")
    assert (e.value.status, status_of(e.value)["reason"]) == (400, "BadRequest")


def test_pagination_is_a_consistent_snapshot(fresh: Sandbox) -> None:
    pods = core(fresh)
    first = pods.list_namespaced_pod(NS, limit=2)
    pods.create_namespaced_pod(NS, make_pod("zzz-late"))
    rest = pods.list_namespaced_pod(NS, limit=10, _continue=first.metadata._continue)
    assert "zzz-late" not in [p.metadata.name for p in rest.items]
    assert rest.metadata.resource_version == first.metadata.resource_version


def test_python_selectors_and_events_field_selector(shared: Sandbox) -> None:
    pods = core(shared)
    assert len(pods.list_namespaced_pod(NS, label_selector="app=api,release-id in (api-1.41.3)").items) == 4
    assert pods.list_pod_for_all_namespaces(field_selector=f"metadata.namespace={NS},status.phase=Pending").items == []
    events = pods.list_event_for_all_namespaces(field_selector="involvedObject.kind=AnalysisRun,type=Warning").items
    assert events and all(e.involved_object.kind == "AnalysisRun" and e.type == "Warning" for e in events)
    with pytest.raises(ApiException) as e:
        pods.list_namespaced_pod(NS, label_selector="app in (api")
    assert e.value.status == 400
    with pytest.raises(ApiException) as e:
        custom(shared).list_namespaced_custom_object(*ARGO, NS, "rollouts", field_selector="status.phase=Degraded")
    assert e.value.status == 400


def test_python_logs_tail_and_limit_bytes(shared: Sandbox) -> None:
    text = shared.store.pod_log(NS, STABLE_POD)
    pods = core(shared)
    assert pods.read_namespaced_pod_log(STABLE_POD, NS, container="api", tail_lines=1) == text.splitlines(True)[-1]
    assert pods.read_namespaced_pod_log(STABLE_POD, NS, limit_bytes=10) == text[:10]


def test_python_create_conflicts_and_invalid(fresh: Sandbox) -> None:
    ro = custom(fresh)
    created = ro.create_namespaced_custom_object(*ARGO, NS, "rollouts", make_rollout("web"))
    assert created["metadata"]["generation"] == 1 and created["metadata"]["uid"]
    with pytest.raises(ApiException) as e:
        ro.create_namespaced_custom_object(*ARGO, NS, "rollouts", make_rollout("web"))
    assert (e.value.status, status_of(e.value)["reason"]) == (409, "AlreadyExists")
    assert status_of(e.value)["message"] == 'rollouts.argoproj.io "web" already exists'
    with pytest.raises(ApiException) as e:
        ro.create_namespaced_custom_object(*ARGO, NS, "rollouts", make_rollout("Bad_Name"))
    body = status_of(e.value)
    assert (e.value.status, body["reason"], body["details"]["kind"]) == (422, "Invalid", "Rollout")
    assert body["details"]["causes"][0]["field"] == "metadata.name"


def test_invalid_name_message_is_complete(fresh: Sandbox) -> None:
    with pytest.raises(ApiException) as e:
        core(fresh).create_namespaced_pod(NS, make_pod("Bad_Name"))
    assert status_of(e.value)["message"].endswith(
        "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")


def test_pod_without_containers_is_invalid(fkc: Kubectl, fresh: Sandbox, tmp_path: Path) -> None:
    # kubectl (not the Python client, whose models refuse this before sending) lets the server judge it
    pod = make_pod("empty")
    pod["spec"] = {}
    out = fkc("create", "--validate=false", "-n", NS, "-f", write(tmp_path, "empty.yaml", pod))
    assert out.returncode == 1 and 'Pod "empty" is invalid: spec.containers: Required value' in out.stderr


def test_create_with_resource_version_is_refused(fresh: Sandbox) -> None:
    with pytest.raises(ApiException) as e:
        core(fresh).create_namespaced_pod(NS, make_pod("copied", resourceVersion="5"))
    assert "resourceVersion should not be set on objects to be created" in e.value.body


def test_generation_and_resource_version_semantics(fresh: Sandbox) -> None:
    ro = custom(fresh)
    made = ro.create_namespaced_custom_object(*ARGO, NS, "rollouts", make_rollout("web"))
    rv0 = int(made["metadata"]["resourceVersion"])
    labelled = ro.patch_namespaced_custom_object(*ARGO, NS, "rollouts", "web", {"metadata": {"labels": {"x": "1"}}})
    assert labelled["metadata"]["generation"] == 1 and int(labelled["metadata"]["resourceVersion"]) > rv0
    same = ro.patch_namespaced_custom_object(*ARGO, NS, "rollouts", "web", {"metadata": {"labels": {"x": "1"}}})
    assert same["metadata"]["resourceVersion"] == labelled["metadata"]["resourceVersion"]  # a no-op writes nothing
    status = ro.patch_namespaced_custom_object_status(*ARGO, NS, "rollouts", "web", {"status": {"phase": "Paused"}})
    assert status["metadata"]["generation"] == 1 and status["status"]["phase"] == "Paused"
    spec = ro.patch_namespaced_custom_object(*ARGO, NS, "rollouts", "web", [
        {"op": "replace", "path": "/spec/replicas", "value": 3}], _content_type="application/json-patch+json")
    assert spec["metadata"]["generation"] == 2
    listed = ro.list_namespaced_custom_object(*ARGO, NS, "rollouts")
    assert int(listed["metadata"]["resourceVersion"]) >= int(spec["metadata"]["resourceVersion"])


def test_status_subresource_rules(fresh: Sandbox) -> None:
    ro = custom(fresh)
    body = make_rollout("web")
    body["status"] = {"phase": "Healthy"}
    created = ro.create_namespaced_custom_object(*ARGO, NS, "rollouts", body)
    assert "phase" not in (created.get("status") or {})  # status sent on create is dropped
    created["status"] = {"phase": "Degraded"}
    created["spec"]["replicas"] = 2
    replaced = ro.replace_namespaced_custom_object(*ARGO, NS, "rollouts", "web", created)
    assert replaced["spec"]["replicas"] == 2 and "phase" not in (replaced.get("status") or {})
    replaced["spec"]["replicas"] = 9
    replaced["status"] = {"phase": "Degraded"}
    on_status = ro.replace_namespaced_custom_object_status(*ARGO, NS, "rollouts", "web", replaced)
    assert on_status["spec"]["replicas"] == 2 and on_status["status"]["phase"] == "Degraded"


def test_update_conflict_and_custom_resource_update_needs_resource_version(fresh: Sandbox) -> None:
    ro = custom(fresh)
    obj = ro.create_namespaced_custom_object(*ARGO, NS, "rollouts", make_rollout("web"))
    ro.patch_namespaced_custom_object(*ARGO, NS, "rollouts", "web", {"spec": {"replicas": 2}})
    with pytest.raises(ApiException) as e:
        ro.replace_namespaced_custom_object(*ARGO, NS, "rollouts", "web", obj)
    body = status_of(e.value)
    assert (e.value.status, body["reason"], body["details"]) == (
        409, "Conflict", {"name": "web", "group": "argoproj.io", "kind": "rollouts"})
    del obj["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as e:
        ro.replace_namespaced_custom_object(*ARGO, NS, "rollouts", "web", obj)
    assert e.value.status == 422
    assert "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update" in e.value.body


def test_patch_types_merge_null_json_and_strategic(fresh: Sandbox) -> None:
    ro = custom(fresh)
    ro.create_namespaced_custom_object(*ARGO, NS, "rollouts", make_rollout("web", labels={"a": "1", "b": "2"}))
    merged = ro.patch_namespaced_custom_object(*ARGO, NS, "rollouts", "web", {"metadata": {"labels": {"a": None}}})
    assert merged["metadata"]["labels"] == {"b": "2"}
    with pytest.raises(ApiException) as e:
        ro.patch_namespaced_custom_object(*ARGO, NS, "rollouts", "web", [{"op": "remove", "path": "/spec/nope"}],
                                          _content_type="application/json-patch+json")
    assert (e.value.status, status_of(e.value)["reason"]) == (422, "Invalid")
    deploys = apps(fresh)
    deploys.create_namespaced_deployment(NS, make_deployment("web"))
    patched = deploys.patch_namespaced_deployment("web", NS, {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "registry.example/app:2"}]}}}})  # strategic: containers merge by name
    assert [(c.name, c.image) for c in patched.spec.template.spec.containers] == [
        ("app", "registry.example/app:2"), ("sidecar", "registry.example/proxy:1")]
    assert patched.spec.template.spec.containers[0].env[0].name == "A"


def test_dry_run_create_patch_delete(fresh: Sandbox) -> None:
    pods = core(fresh)
    rv = fresh.store.resource_version
    made = pods.create_namespaced_pod(NS, make_pod("dry"), dry_run="All")
    assert made.metadata.uid and made.metadata.creation_timestamp and not made.metadata.resource_version
    patched = pods.patch_namespaced_pod(STABLE_POD, NS, {"metadata": {"labels": {"dry": "run"}}}, dry_run="All")
    assert patched.metadata.labels["dry"] == "run"
    pods.delete_namespaced_pod(STABLE_POD, NS, dry_run="All")
    assert fresh.store.resource_version == rv
    assert "dry" not in fresh.store.get("pods", NS, STABLE_POD)["metadata"]["labels"]
    with pytest.raises(ApiException) as e:
        pods.create_namespaced_pod(NS, make_pod("dry"), dry_run="Yes")
    assert e.value.status == 400


def test_delete_responses_and_preconditions(fresh: Sandbox) -> None:
    pods = core(fresh)
    pods.create_namespaced_pod(NS, make_pod("doomed"))
    with pytest.raises(ApiException) as e:
        pods.delete_namespaced_pod("doomed", NS, body=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(resource_version="1")))
    assert e.value.status == 409 and "Precondition failed" in status_of(e.value)["message"]
    resp = raw(fresh, "DELETE", f"/api/v1/namespaces/{NS}/pods/doomed")
    assert resp.status_code == 200 and resp.json()["kind"] == "Pod"  # pods answer with the object
    apps(fresh).create_namespaced_deployment(NS, make_deployment("web"))
    uid = fresh.store.get("deployments", NS, "web")["metadata"]["uid"]
    gone = raw(fresh, "DELETE", f"/apis/apps/v1/namespaces/{NS}/deployments/web").json()
    assert (gone["kind"], gone["status"], gone["details"]) == (
        "Status", "Success", {"name": "web", "group": "apps", "kind": "deployments", "uid": uid})


def test_generate_name_through_the_client(fresh: Sandbox) -> None:
    pod = make_pod("")
    pod["metadata"] = {"generateName": "probe-"}
    made = core(fresh).create_namespaced_pod(NS, pod)
    assert re.fullmatch(r"probe-[bcdfghjklmnpqrstvwxz2456789]{5}", made.metadata.name)


def test_watch_from_list_resource_version(fresh: Sandbox) -> None:
    ro = custom(fresh)
    rv = ro.list_namespaced_custom_object(*ARGO, NS, "rollouts")["metadata"]["resourceVersion"]
    ro.create_namespaced_custom_object(*ARGO, NS, "rollouts", make_rollout("web"))
    ro.patch_namespaced_custom_object(*ARGO, NS, "rollouts", "web", {"spec": {"replicas": 2}})
    ro.delete_namespaced_custom_object(*ARGO, NS, "rollouts", "web")
    events = []
    began = time.monotonic()
    for ev in watch.Watch().stream(ro.list_namespaced_custom_object, *ARGO, NS, "rollouts", resource_version=rv,
                                   field_selector="metadata.name=web", timeout_seconds=1):
        events.append((ev["type"], ev["object"]["metadata"]["name"], ev["object"]["spec"]["replicas"]))
    assert events == [("ADDED", "web", 1), ("MODIFIED", "web", 2), ("DELETED", "web", 2)]
    assert time.monotonic() - began < 5


def test_watch_label_selector_leaving_and_entering(fresh: Sandbox) -> None:
    pods = core(fresh)
    pods.create_namespaced_pod(NS, make_pod("w", labels={"track": "canary"}))
    rv = pods.list_namespaced_pod(NS).metadata.resource_version
    pods.patch_namespaced_pod("w", NS, {"metadata": {"labels": {"track": "stable"}}})
    pods.patch_namespaced_pod("w", NS, {"metadata": {"labels": {"track": "canary"}}})
    seen = [(e["type"], e["object"].metadata.labels["track"]) for e in watch.Watch().stream(
        pods.list_namespaced_pod, NS, label_selector="track=canary", resource_version=rv, timeout_seconds=1)]
    assert [t for t, _ in seen] == ["DELETED", "ADDED"]
    assert seen[1] == ("ADDED", "canary")


def test_watch_selector_leaving_event_carries_previous_content(fresh: Sandbox) -> None:
    pods = core(fresh)
    pods.create_namespaced_pod(NS, make_pod("w", labels={"track": "canary"}))
    rv = pods.list_namespaced_pod(NS).metadata.resource_version
    moved = pods.patch_namespaced_pod("w", NS, {"metadata": {"labels": {"track": "stable"}}})
    (event,) = list(watch.Watch().stream(pods.list_namespaced_pod, NS, label_selector="track=canary",
                                         resource_version=rv, timeout_seconds=1))
    assert event["type"] == "DELETED" and event["object"].metadata.labels["track"] == "canary"
    assert event["object"].metadata.resource_version == moved.metadata.resource_version


def test_watch_too_old_resource_version_is_410(fresh: Sandbox) -> None:
    for i in range(1100):  # push the first events out of the server's bounded history
        fresh.store.set_status("rollouts", NS, "api", {"phase": "Degraded", "observedGeneration": str(i)})
    with pytest.raises(ApiException) as e:
        for _ in watch.Watch().stream(custom(fresh).list_namespaced_custom_object, *ARGO, NS, "rollouts",
                                      resource_version="2", timeout_seconds=1):
            pass
    assert e.value.status == 410


def test_table_through_the_client(shared: Sandbox) -> None:
    resp = raw(shared, "GET", f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/rollouts",
               headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"})
    doc = resp.json()
    assert (doc["kind"], doc["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    assert [c["name"] for c in doc["columnDefinitions"]] == [
        "Name", "Desired", "Current", "Up-to-date", "Available", "Age"]
    assert doc["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


def test_partial_object_metadata_list(shared: Sandbox) -> None:
    resp = raw(shared, "GET", f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/rollouts",
               headers={"Accept": "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"})
    doc = resp.json()
    assert (doc["kind"], doc["apiVersion"]) == ("PartialObjectMetadataList", "meta.k8s.io/v1")
    assert set(doc["items"][0]) == {"kind", "apiVersion", "metadata"}


def test_forbidden_and_unauthorized_through_the_client(shared: Sandbox) -> None:
    with pytest.raises(ApiException) as e:
        custom(shared, "sandbox-viewer").patch_namespaced_custom_object_status(
            *ARGO, NS, "rollouts", "api", {"status": {"abort": False}})
    assert e.value.status == 403 and status_of(e.value)["message"] == (
        'rollouts.argoproj.io "api" is forbidden: User "viewer" cannot patch resource "rollouts/status" in API group '
        f'"argoproj.io" in the namespace "{NS}"')
    resp = raw(shared, "GET", "/api/v1/namespaces", token="wrong")
    assert resp.status_code == 401 and resp.json()["reason"] == "Unauthorized"


def test_access_review_discovery_and_dynamic_client(shared: Sandbox) -> None:
    review = client.AuthorizationV1Api(api(shared, "sandbox-viewer")).create_self_subject_access_review(
        client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(namespace=NS, verb="list", group="argoproj.io",
                                                            resource="analysisruns"))))
    assert review.status.allowed is True
    assert client.VersionApi(api(shared)).get_code().major == "1"
    names = {r.name for r in core(shared).get_api_resources().resources}
    assert {"pods", "pods/log", "pods/status", "events", "namespaces"} <= names
    rollouts = dynamic.DynamicClient(api(shared)).resources.get(api_version="argoproj.io/v1alpha1", kind="Rollout")
    assert [r.metadata.name for r in rollouts.get(namespace=NS).items] == ["api"]


def test_apply_patch_requires_field_manager(fresh: Sandbox) -> None:
    resp = raw(fresh, "PATCH", f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/rollouts/web",
               content=yaml.safe_dump(make_rollout("web")), headers={"Content-Type": "application/apply-patch+yaml"})
    assert resp.status_code == 422 and "fieldManager: Required value" in resp.json()["message"]


def test_apply_patch_creates_then_updates(fresh: Sandbox) -> None:
    ro = custom(fresh)
    body = make_rollout("web")
    made = raw(fresh, "PATCH", f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/rollouts/web",
               params={"fieldManager": "fidelity"}, content=yaml.safe_dump(body),
               headers={"Content-Type": "application/apply-patch+yaml"})
    assert made.status_code == 201
    body["spec"]["replicas"] = 4
    again = raw(fresh, "PATCH", f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/rollouts/web",
                params={"fieldManager": "fidelity"}, content=json.dumps(body),
                headers={"Content-Type": "application/apply-patch+yaml"})
    assert again.status_code == 200
    assert ro.get_namespaced_custom_object(*ARGO, NS, "rollouts", "web")["spec"]["replicas"] == 4
