"""The sandbox API server through the real ``kubernetes`` client over HTTPS, one fresh server per test."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apiserver_harness import Harness, running_apiserver
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from rollbook.sandbox.apiserver import ApiServer
from rollbook.sandbox.store import Store

ARGO = ("argoproj.io", "v1alpha1")


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with running_apiserver(tmp_path) as harness:
        yield harness


def status_of(exc: pytest.ExceptionInfo[ApiException]) -> dict[str, Any]:
    """The Status object the server sent with an error."""
    body: dict[str, Any] = json.loads(exc.value.body)
    return body


def pod(name: str, labels: dict[str, str] | None = None, containers: tuple[str, ...] = ("app",)) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"containers": [{"name": c, "image": f"registry/{c}:1"} for c in containers]}}


def rollout(name: str, replicas: int = 3, **status: Any) -> dict[str, Any]:
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": name},
            "spec": {"replicas": replicas, "template": {"metadata": {"labels": {"app": name}}}},
            "status": status}


def make_rollout(h: Harness, name: str = "api", ns: str = "prod", **status: Any) -> dict[str, Any]:
    obj = h.store.create("rollouts", ns, rollout(name))
    if status:
        obj = h.store.set_status("rollouts", ns, name, status)
    return obj


# --------------------------------------------------------------------------- start-up and discovery


def test_listens_only_on_loopback(tmp_path: Path) -> None:
    with running_apiserver(tmp_path) as harness:
        assert harness.url.startswith("https://127.0.0.1:")
    with pytest.raises(ValueError, match="loopback"):
        ApiServer(Store(), users={}, host="0.0.0.0", certfile="x", keyfile="y")


def test_discovery_documents(h: Harness) -> None:
    api = h.api_client()
    assert client.CoreApi(api).get_api_versions().versions == ["v1"]
    groups = {g.name: g.preferred_version.group_version for g in client.ApisApi(api).get_api_versions().groups}
    assert groups == {"apps": "apps/v1", "argoproj.io": "argoproj.io/v1alpha1", "batch": "batch/v1",
                      "autoscaling": "autoscaling/v2", "policy": "policy/v1",
                      "networking.k8s.io": "networking.k8s.io/v1",
                      "rbac.authorization.k8s.io": "rbac.authorization.k8s.io/v1",
                      "coordination.k8s.io": "coordination.k8s.io/v1",
                      "authorization.k8s.io": "authorization.k8s.io/v1",
                      "authentication.k8s.io": "authentication.k8s.io/v1"}
    core = {r.name: r for r in client.CoreV1Api(api).get_api_resources().resources}
    assert {"pods", "pods/status", "pods/log", "events", "namespaces", "services", "configmaps", "secrets",
            "serviceaccounts", "endpoints"} <= set(core)
    assert core["pods/log"].verbs == ["get"] and not core["namespaces"].namespaced
    argo = {r.name: r for r in client.CustomObjectsApi(api).get_api_resources(*ARGO).resources}
    assert argo["rollouts"].short_names == ["ro"] and argo["analysisruns"].short_names == ["ar"]
    assert {"rollouts/status", "analysisruns/status", "analysistemplates", "experiments"} <= set(argo)
    assert "replicasets/status" in {r.name for r in client.AppsV1Api(api).get_api_resources().resources}


def raw_get(h: Harness, path: str, accept: str = "application/json") -> Any:
    """GET a path through the client's authenticated REST layer and parse JSON."""
    return json.loads(h.raw("GET", path, accept=accept).data)


def test_openapi_v3_patch_operations_declare_gvk_and_field_validation(h: Harness) -> None:
    index = raw_get(h, "/openapi/v3")
    url = index["paths"]["apis/argoproj.io/v1alpha1"]["serverRelativeURL"]
    doc = raw_get(h, url.split("?")[0])
    op = doc["paths"]["/apis/argoproj.io/v1alpha1/namespaces/{namespace}/rollouts/{name}/status"]["patch"]
    assert op["x-kubernetes-group-version-kind"] == {"group": "argoproj.io", "version": "v1alpha1",
                                                     "kind": "Rollout"}
    assert {"name": "fieldValidation", "in": "query"}.items() <= op["parameters"][2].items()
    assert "application/merge-patch+json" in op["requestBody"]["content"]
    assert raw_get(h, "/version")["major"] == "1"


# --------------------------------------------------------------------------- CRUD and errors


def test_pod_crud_round_trip(h: Harness) -> None:
    core = h.core()
    created = core.create_namespaced_pod("prod", pod("p1", {"app": "api"}))
    assert created.metadata.uid and created.metadata.creation_timestamp and created.status.phase == "Pending"
    got = core.read_namespaced_pod("p1", "prod")
    got.metadata.labels["tier"] = "web"
    replaced = core.replace_namespaced_pod("p1", "prod", got)
    assert replaced.metadata.labels == {"app": "api", "tier": "web"}
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    core.delete_namespaced_pod("p1", "prod")
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_pod("p1", "prod")
    assert exc.value.status == 404
    assert status_of(exc) == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                              "message": 'pods "p1" not found', "reason": "NotFound",
                              "details": {"name": "p1", "kind": "pods"}, "code": 404}


def test_custom_object_not_found_message_and_details(h: Harness) -> None:
    with pytest.raises(ApiException) as exc:
        h.custom().get_namespaced_custom_object(*ARGO, "prod", "rollouts", "api")
    body = status_of(exc)
    assert body["message"] == 'rollouts.argoproj.io "api" not found'
    assert body["details"] == {"name": "api", "group": "argoproj.io", "kind": "rollouts"}


def test_create_existing_name_is_409_already_exists(h: Harness) -> None:
    custom = h.custom()
    custom.create_namespaced_custom_object(*ARGO, "prod", "rollouts", rollout("api"))
    with pytest.raises(ApiException) as exc:
        custom.create_namespaced_custom_object(*ARGO, "prod", "rollouts", rollout("api"))
    assert exc.value.status == 409
    assert (status_of(exc)["reason"], status_of(exc)["message"]) == (
        "AlreadyExists", 'rollouts.argoproj.io "api" already exists')


def test_create_needs_the_namespace_and_rejects_bad_names(h: Harness) -> None:
    core = h.core()
    with pytest.raises(ApiException) as missing:
        core.create_namespaced_pod("fresh", pod("p"))
    assert missing.value.status == 404 and status_of(missing)["message"] == 'namespaces "fresh" not found'
    core.create_namespace({"metadata": {"name": "fresh"}})
    core.create_namespaced_pod("fresh", pod("p"))
    assert core.read_namespace("fresh").status.phase == "Active"
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_pod("fresh", pod("Bad_Name"))
    assert exc.value.status == 422 and status_of(exc)["reason"] == "Invalid"
    assert status_of(exc)["message"].startswith('Pod "Bad_Name" is invalid: metadata.name: Invalid value')


def test_generate_name(h: Harness) -> None:
    body = pod("")
    body["metadata"] = {"generateName": "api-"}
    name = h.core().create_namespaced_pod("prod", body).metadata.name
    assert name.startswith("api-") and len(name) == len("api-") + 5


def test_delete_namespace_deletes_its_objects(h: Harness) -> None:
    core = h.core()
    core.create_namespace({"metadata": {"name": "gone"}})
    core.create_namespaced_pod("gone", pod("p"))
    make_rollout(h, ns="gone")
    make_rollout(h, ns="kept")
    core.delete_namespace("gone")
    assert core.list_pod_for_all_namespaces().items == []
    items = h.custom().list_cluster_custom_object(*ARGO, "rollouts")["items"]
    assert [i["metadata"]["namespace"] for i in items] == ["kept"]


# --------------------------------------------------------------------------- selectors and pagination

LABELS = {
    "a": {"app": "api", "tier": "web", "rank": "3"},
    "b": {"app": "api", "tier": "db", "rank": "7"},
    "c": {"app": "mc"},
    "d": {},
}


@pytest.mark.parametrize(("selector", "expected"), [
    ("app=api", {"a", "b"}),
    ("app==api", {"a", "b"}),
    ("app!=api", {"c", "d"}),
    ("tier in (web, cache)", {"a"}),
    ("tier notin (web)", {"b", "c", "d"}),
    ("tier", {"a", "b"}),
    ("!tier", {"c", "d"}),
    ("app=api,tier!=db", {"a"}),
    ("app in (api,mc),!tier", {"c"}),
    ("rank>5", {"b"}),
    ("rank<5", {"a"}),
])
def test_label_selector_grammar(h: Harness, selector: str, expected: set[str]) -> None:
    core = h.core()
    for name, labels in LABELS.items():
        core.create_namespaced_pod("prod", pod(name, labels))
    found = {p.metadata.name for p in core.list_namespaced_pod("prod", label_selector=selector).items}
    assert found == expected


def test_malformed_label_selector_is_400(h: Harness) -> None:
    with pytest.raises(ApiException) as exc:
        h.core().list_namespaced_pod("prod", label_selector="app in (api")
    assert exc.value.status == 400 and status_of(exc)["reason"] == "BadRequest"


def test_field_selectors(h: Harness) -> None:
    core = h.core()
    core.create_namespace({"metadata": {"name": "dev"}})
    for ns, name in (("prod", "p1"), ("prod", "p2"), ("dev", "p1")):
        core.create_namespaced_pod(ns, pod(name))
    h.store.set_status("pods", "prod", "p2", {"phase": "Running"})

    def names(**kw: Any) -> list[tuple[str, str]]:
        items = core.list_pod_for_all_namespaces(**kw).items
        return [(p.metadata.namespace, p.metadata.name) for p in items]

    assert names(field_selector="metadata.name=p1") == [("dev", "p1"), ("prod", "p1")]
    assert names(field_selector="metadata.namespace=prod,metadata.name!=p1") == [("prod", "p2")]
    assert names(field_selector="status.phase=Running") == [("prod", "p2")]
    assert names(field_selector="status.phase!=Running") == [("dev", "p1"), ("prod", "p1")]


def test_unsupported_field_selector_is_400_with_real_messages(h: Harness) -> None:
    with pytest.raises(ApiException) as exc:
        h.core().list_namespaced_pod("prod", field_selector="spec.image=x")
    assert exc.value.status == 400 and status_of(exc)["message"] == "field label not supported: spec.image"
    with pytest.raises(ApiException) as exc:
        h.custom().list_namespaced_custom_object(*ARGO, "prod", "rollouts", field_selector="status.phase=Degraded")
    assert status_of(exc)["message"] == (
        '"status.phase" is not a known field selector: only "metadata.name", "metadata.namespace"')


def test_events_by_involved_object(h: Harness) -> None:
    ro = make_rollout(h)
    core = h.core()
    for i, (kind, name, uid) in enumerate([("Rollout", "api", ro["metadata"]["uid"]), ("Pod", "api", "u2"),
                                           ("Rollout", "web", "u3")]):
        core.create_namespaced_event("prod", {
            "metadata": {"name": f"e{i}"}, "reason": "RolloutAborted", "message": "m", "type": "Warning",
            "involvedObject": {"kind": kind, "name": name, "namespace": "prod", "uid": uid}})
    selector = f"involvedObject.name=api,involvedObject.kind=Rollout,involvedObject.uid={ro['metadata']['uid']}"
    assert [e.metadata.name for e in core.list_namespaced_event("prod", field_selector=selector).items] == ["e0"]
    by_ns = core.list_event_for_all_namespaces(field_selector="involvedObject.namespace=prod,involvedObject.kind=Pod")
    assert [e.metadata.name for e in by_ns.items] == ["e1"]


def test_pagination_with_limit_and_continue(h: Harness) -> None:
    core = h.core()
    for i in range(5):
        core.create_namespaced_pod("prod", pod(f"p{i}"))
    first = core.list_namespaced_pod("prod", limit=2)
    assert [p.metadata.name for p in first.items] == ["p0", "p1"]
    assert first.metadata.remaining_item_count == 3 and first.metadata._continue
    core.create_namespaced_pod("prod", pod("p9"))
    second = core.list_namespaced_pod("prod", limit=2, _continue=first.metadata._continue)
    assert [p.metadata.name for p in second.items] == ["p2", "p3"]
    assert second.metadata.resource_version == first.metadata.resource_version
    third = core.list_namespaced_pod("prod", limit=2, _continue=second.metadata._continue)
    # every page is read at the first page's resourceVersion: p9, created later, is not in this list
    assert [p.metadata.name for p in third.items] == ["p4"] and not third.metadata._continue
    assert "p9" in [p.metadata.name for p in core.list_namespaced_pod("prod").items]
    with pytest.raises(ApiException) as exc:
        core.list_namespaced_pod("prod", limit=2, _continue="not-a-token")
    assert exc.value.status == 400


def test_cluster_wide_lists_and_list_envelope(h: Harness) -> None:
    make_rollout(h, "a", "prod")
    make_rollout(h, "b", "dev")
    listing = h.custom().list_cluster_custom_object(*ARGO, "rollouts")
    assert listing["kind"] == "RolloutList" and listing["apiVersion"] == "argoproj.io/v1alpha1"
    assert listing["metadata"]["resourceVersion"] == h.store.resource_version
    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in listing["items"]] == [
        ("dev", "b"), ("prod", "a")]


# --------------------------------------------------------------------------- versions, generation, status


def test_resource_version_is_global_and_not_bumped_by_noop(h: Harness) -> None:
    custom = h.custom()
    h.core().create_namespace({"metadata": {"name": "dev"}})
    a = custom.create_namespaced_custom_object(*ARGO, "prod", "rollouts", rollout("a"))
    b = custom.create_namespaced_custom_object(*ARGO, "dev", "rollouts", rollout("b"))
    assert int(b["metadata"]["resourceVersion"]) > int(a["metadata"]["resourceVersion"])
    before = h.store.resource_version
    same = custom.patch_namespaced_custom_object(*ARGO, "dev", "rollouts", "b", {"spec": {"replicas": 3}})
    assert same["metadata"]["resourceVersion"] == b["metadata"]["resourceVersion"]
    assert h.store.resource_version == before


def test_stale_resource_version_is_409_conflict(h: Harness) -> None:
    custom = h.custom()
    first = custom.create_namespaced_custom_object(*ARGO, "prod", "rollouts", rollout("api"))
    custom.patch_namespaced_custom_object(*ARGO, "prod", "rollouts", "api", {"spec": {"replicas": 5}})
    first["spec"]["replicas"] = 1
    with pytest.raises(ApiException) as exc:
        custom.replace_namespaced_custom_object(*ARGO, "prod", "rollouts", "api", first)
    assert exc.value.status == 409 and status_of(exc)["reason"] == "Conflict"
    assert status_of(exc)["message"] == (
        'Operation cannot be fulfilled on rollouts.argoproj.io "api": the object has been modified; '
        "please apply your changes to the latest version and try again")
    with pytest.raises(ApiException) as exc:
        custom.patch_namespaced_custom_object(*ARGO, "prod", "rollouts", "api",
                                              {"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 2}})
    assert exc.value.status == 409


def test_custom_resource_put_requires_resource_version(h: Harness) -> None:
    custom = h.custom()
    obj = custom.create_namespaced_custom_object(*ARGO, "prod", "rollouts", rollout("api"))
    del obj["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as exc:
        custom.replace_namespaced_custom_object(*ARGO, "prod", "rollouts", "api", obj)
    assert exc.value.status == 422 and "must be specified for an update" in status_of(exc)["message"]


def test_generation_bumps_on_spec_change_only(h: Harness) -> None:
    custom = h.custom()
    obj = custom.create_namespaced_custom_object(*ARGO, "prod", "rollouts", rollout("api"))
    assert obj["metadata"]["generation"] == 1
    obj = custom.patch_namespaced_custom_object(*ARGO, "prod", "rollouts", "api", {"metadata": {"labels": {"x": "1"}}})
    assert obj["metadata"]["generation"] == 1
    obj = custom.patch_namespaced_custom_object_status(*ARGO, "prod", "rollouts", "api", {"status": {"abort": True}})
    assert obj["metadata"]["generation"] == 1
    obj = custom.patch_namespaced_custom_object(*ARGO, "prod", "rollouts", "api", {"spec": {"paused": True}})
    assert obj["metadata"]["generation"] == 2


def test_status_subresource_rules(h: Harness) -> None:
    custom = h.custom()
    created = custom.create_namespaced_custom_object(*ARGO, "prod", "rollouts", rollout("api", phase="Healthy"))
    assert "status" not in created
    main = custom.patch_namespaced_custom_object(*ARGO, "prod", "rollouts", "api",
                                                 {"spec": {"replicas": 4}, "status": {"abort": True}})
    assert main["spec"]["replicas"] == 4 and "status" not in main
    sub = custom.patch_namespaced_custom_object_status(*ARGO, "prod", "rollouts", "api",
                                                       {"spec": {"replicas": 9}, "status": {"abort": True}})
    assert sub["spec"]["replicas"] == 4 and sub["status"] == {"abort": True}
    sub["status"]["phase"] = "Degraded"
    sub["spec"]["replicas"] = 7
    put = custom.replace_namespaced_custom_object_status(*ARGO, "prod", "rollouts", "api", sub)
    assert put["status"] == {"abort": True, "phase": "Degraded"} and put["spec"]["replicas"] == 4
    assert custom.get_namespaced_custom_object_status(*ARGO, "prod", "rollouts", "api")["status"]["phase"] == "Degraded"


def test_system_create_keeps_uid_timestamp_generation_status(h: Harness) -> None:
    obj = rollout("api", phase="Degraded")
    obj["metadata"].update(uid="fixed-uid", creationTimestamp="2019-10-25T16:08:40Z", generation=15)
    stored = h.store.create("rollouts", "prod", obj, system=True)
    got = h.custom().get_namespaced_custom_object(*ARGO, "prod", "rollouts", "api")
    assert got == stored
    assert (got["metadata"]["uid"], got["metadata"]["creationTimestamp"], got["metadata"]["generation"],
            got["status"]) == ("fixed-uid", "2019-10-25T16:08:40Z", 15, {"phase": "Degraded"})


# --------------------------------------------------------------------------- patches and dry run


def test_merge_patch_null_deletes(h: Harness) -> None:
    core = h.core()
    core.create_namespaced_pod("prod", pod("p", {"a": "1", "b": "2"}))
    patched = core.patch_namespaced_pod("p", "prod", {"metadata": {"labels": {"a": None, "c": "3"}}},
                                        _content_type="application/merge-patch+json")
    assert patched.metadata.labels == {"b": "2", "c": "3"}
    assert h.last("PATCH").content_type == "application/merge-patch+json"


def test_json_patch_as_undo_sends_it(h: Harness) -> None:
    make_rollout(h)
    template = {"metadata": {"labels": {"app": "api", "release-id": "api-1.41.3"}}}
    body = [{"op": "replace", "path": "/spec/template", "value": template}]
    patched = json.loads(h.raw("PATCH", "/apis/argoproj.io/v1alpha1/namespaces/prod/rollouts/api", body=body,
                               content_type="application/json-patch+json").data)
    assert patched["spec"]["template"] == template and patched["metadata"]["generation"] == 2
    assert json.loads(h.last("PATCH").body) == body


def test_failing_json_patch_is_422(h: Harness) -> None:
    core = h.core()
    core.create_namespaced_pod("prod", pod("p"))
    with pytest.raises(ApiException) as exc:
        core.patch_namespaced_pod("p", "prod", [{"op": "test", "path": "/metadata/name", "value": "q"}])
    assert exc.value.status == 422 and h.last("PATCH").content_type == "application/json-patch+json"


def test_strategic_merge_patch_merges_containers_by_name(h: Harness) -> None:
    core = h.core()
    core.create_namespaced_pod("prod", pod("p", containers=("app", "sidecar")))
    patch = {"spec": {"containers": [{"name": "sidecar", "image": "registry/sidecar:2"}]}}
    patched = core.patch_namespaced_pod("p", "prod", patch)
    assert h.last("PATCH").content_type == "application/strategic-merge-patch+json"
    assert [(c.name, c.image) for c in patched.spec.containers] == [
        ("app", "registry/app:1"), ("sidecar", "registry/sidecar:2")]
    removed = core.patch_namespaced_pod("p", "prod", {"spec": {"containers": [{"name": "app", "$patch": "delete"}]}})
    assert [c.name for c in removed.spec.containers] == ["sidecar"]


def test_strategic_merge_on_custom_resource_is_415(h: Harness) -> None:
    make_rollout(h)
    with pytest.raises(ApiException) as exc:
        h.raw("PATCH", "/apis/argoproj.io/v1alpha1/namespaces/prod/rollouts/api", body={"spec": {"paused": True}},
              content_type="application/strategic-merge-patch+json")
    assert exc.value.status == 415 and status_of(exc)["reason"] == "UnsupportedMediaType"
    assert status_of(exc)["message"].startswith("the body of the request was in an unknown format")


def test_dry_run_stores_nothing(h: Harness) -> None:
    custom, core = h.custom(), h.core()
    make_rollout(h)
    before = h.store.resource_version
    created = core.create_namespaced_pod("prod", pod("p"), dry_run="All")
    assert created.metadata.name == "p"
    patched = custom.patch_namespaced_custom_object_status(*ARGO, "prod", "rollouts", "api",
                                                           {"status": {"abort": False}}, dry_run="All")
    assert patched["status"] == {"abort": False}
    custom.delete_namespaced_custom_object(*ARGO, "prod", "rollouts", "api", dry_run="All")
    assert h.store.resource_version == before and core.list_namespaced_pod("prod").items == []
    assert "status" not in custom.get_namespaced_custom_object(*ARGO, "prod", "rollouts", "api")
    assert h.last("DELETE").query["dryRun"] == "All"


# --------------------------------------------------------------------------- authentication and RBAC


def test_unknown_token_is_401(h: Harness) -> None:
    api = h.api_client()
    api.configuration.refresh_api_key_hook = None  # the kubeconfig loader would restore the real token
    api.configuration.api_key = {"BearerToken": "Bearer nope"}
    with pytest.raises(ApiException) as exc:
        client.CoreV1Api(api).list_namespaced_pod("prod")
    assert exc.value.status == 401
    assert (status_of(exc)["reason"], status_of(exc)["message"]) == ("Unauthorized", "Unauthorized")
    assert h.last().user is None


def test_viewer_reads_but_cannot_patch_rollout_status(h: Harness) -> None:
    make_rollout(h)
    viewer = h.custom("sandbox-viewer")
    assert viewer.get_namespaced_custom_object(*ARGO, "prod", "rollouts", "api")["metadata"]["name"] == "api"
    with pytest.raises(ApiException) as exc:
        viewer.patch_namespaced_custom_object_status(*ARGO, "prod", "rollouts", "api", {"status": {"abort": False}})
    assert exc.value.status == 403
    assert status_of(exc)["message"] == (
        'rollouts.argoproj.io "api" is forbidden: User "viewer" cannot patch resource "rollouts/status" '
        'in API group "argoproj.io" in the namespace "prod"')
    assert status_of(exc)["details"] == {"name": "api", "group": "argoproj.io", "kind": "rollouts"}
    assert h.last().user == "viewer"


def test_operator_writes_and_the_viewer_is_refused(h: Harness) -> None:
    make_rollout(h)
    operator = h.custom("sandbox")
    done = operator.patch_namespaced_custom_object_status(*ARGO, "prod", "rollouts", "api", {"status": {"abort": False}})
    assert done["status"] == {"abort": False}
    assert h.core("sandbox").create_namespaced_pod("prod", pod("p")).metadata.name == "p"
    with pytest.raises(ApiException) as exc:
        h.core("sandbox-viewer").create_namespaced_pod("prod", pod("q"))
    assert status_of(exc)["message"] == (
        'pods is forbidden: User "viewer" cannot create resource "pods" in API group "" in the namespace "prod"')


# --------------------------------------------------------------------------- watch


def test_watch_from_resource_version_sees_changes(h: Harness) -> None:
    core = h.core()
    rv = core.list_namespaced_pod("prod").metadata.resource_version

    def writer() -> None:
        time.sleep(0.2)
        core.create_namespaced_pod("prod", pod("p", {"app": "api"}))
        h.store.set_status("pods", "prod", "p", {"phase": "Running"})
        core.delete_namespaced_pod("p", "prod")

    threading.Thread(target=writer).start()
    seen = []
    for event in watch.Watch().stream(core.list_namespaced_pod, "prod", resource_version=rv, timeout_seconds=3):
        seen.append((event["type"], event["object"].status.phase))
        if event["type"] == "DELETED":
            break
    assert seen == [("ADDED", "Pending"), ("MODIFIED", "Running"), ("DELETED", "Running")]


def test_watch_with_selector_turns_leaving_into_deleted(h: Harness) -> None:
    core = h.core()
    core.create_namespaced_pod("prod", pod("p", {"app": "api"}))
    rv = h.store.resource_version
    core.patch_namespaced_pod("p", "prod", {"metadata": {"labels": {"app": "other"}}})
    events = list(watch.Watch().stream(core.list_namespaced_pod, "prod", label_selector="app=api",
                                       resource_version=rv, timeout_seconds=1))
    # the watch cache sends the object as it last matched (app=api), at the version of the change
    assert [(e["type"], e["object"].metadata.labels["app"]) for e in events] == [("DELETED", "api")]
    assert events[0]["object"].metadata.resource_version == h.store.get("pods", "prod", "p")["metadata"][
        "resourceVersion"]


def test_watch_without_version_starts_with_added_and_honours_timeout(h: Harness) -> None:
    make_rollout(h, "a")
    make_rollout(h, "b")
    started = time.monotonic()
    stream = watch.Watch().stream(h.custom().list_namespaced_custom_object, *ARGO, "prod", "rollouts",
                                  timeout_seconds=1)
    names = [(e["type"], e["object"]["metadata"]["name"]) for e in stream]
    assert names == [("ADDED", "a"), ("ADDED", "b")]
    assert 0.9 < time.monotonic() - started < 10   # the 1 s timeout ends it; the upper bound only catches a hang
    assert h.last().query["watch"] == "true"


def test_watch_from_too_old_version_is_410(tmp_path: Path) -> None:
    with running_apiserver(tmp_path, history=3) as small:
        core = small.core()
        old = small.store.resource_version
        for i in range(5):
            core.create_namespaced_pod("prod", pod(f"p{i}"))
        with pytest.raises(ApiException) as exc:
            for _ in watch.Watch().stream(core.list_namespaced_pod, "prod", resource_version=old, timeout_seconds=1):
                pass
        assert exc.value.status == 410 and "too old resource version" in str(exc.value.reason)


def test_watch_stream_is_chunked_json_lines(h: Harness) -> None:
    make_rollout(h)
    resp = h.raw("GET", "/apis/argoproj.io/v1alpha1/namespaces/prod/rollouts",
                 query=[("watch", "true"), ("timeoutSeconds", "1")])
    assert resp.getheader("Content-Type") == "application/json"
    assert resp.getheader("Transfer-Encoding") == "chunked"
    lines = resp.data.decode().splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["ADDED"]


# --------------------------------------------------------------------------- logs, tables, recording


def test_pod_logs(h: Harness) -> None:
    core = h.core()
    core.create_namespaced_pod("prod", pod("one"))
    h.store.set_pod_log("prod", "one", "a\nb\nc\n")
    assert core.read_namespaced_pod_log("one", "prod") == "a\nb\nc\n"
    assert core.read_namespaced_pod_log("one", "prod", tail_lines=1) == "c\n"
    annotated = pod("two", containers=("app", "sidecar"))
    annotated["metadata"]["annotations"] = {"sandbox.rollbook.dev/log": "from annotation\n"}
    core.create_namespaced_pod("prod", annotated)
    assert core.read_namespaced_pod_log("two", "prod", container="sidecar") == "from annotation\n"
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_pod_log("two", "prod")
    assert status_of(exc)["message"] == "a container name must be specified for pod two, choose one of: [app sidecar]"
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_pod_log("nope", "prod")
    assert exc.value.status == 404


def test_table_output_for_pods_and_rollouts(h: Harness) -> None:
    h.core().create_namespaced_pod("prod", pod("p"))
    h.store.set_status("pods", "prod", "p", {"phase": "Running", "containerStatuses": [
        {"name": "app", "ready": False, "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]})
    make_rollout(h, updatedReplicas=1, availableReplicas=3)
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    pods = raw_get(h, "/api/v1/namespaces/prod/pods", accept)
    assert [c["name"] for c in pods["columnDefinitions"] if c["priority"] == 0] == [
        "Name", "Ready", "Status", "Restarts", "Age"]
    assert pods["rows"][0]["cells"][:4] == ["p", "0/1", "CrashLoopBackOff", "2"]  # printPod's restarts string
    assert pods["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    ros = raw_get(h, "/apis/argoproj.io/v1alpha1/namespaces/prod/rollouts/api", accept)
    assert [c["name"] for c in ros["columnDefinitions"]] == ["Name", "Desired", "Current", "Up-to-date",
                                                             "Available", "Age"]
    assert ros["rows"][0]["cells"][:5] == ["api", 3, None, 1, 3]


def test_requests_are_recorded_exactly(h: Harness) -> None:
    make_rollout(h)
    h.custom("sandbox").patch_namespaced_custom_object_status(*ARGO, "prod", "rollouts", "api",
                                                              {"status": {"abort": False}})
    req = h.last("PATCH")
    assert (req.path, req.content_type, req.user) == (
        "/apis/argoproj.io/v1alpha1/namespaces/prod/rollouts/api/status", "application/merge-patch+json", "operator")
    assert req.json() == {"status": {"abort": False}}


def test_listeners_hear_real_writes_only(h: Harness) -> None:
    heard: list[tuple[str, str, str]] = []
    h.store.add_listener(lambda kind, plural, obj: heard.append((kind, plural, obj["metadata"]["name"])))
    make_rollout(h)
    h.custom().patch_namespaced_custom_object(*ARGO, "prod", "rollouts", "api", {"spec": {"replicas": 3}})
    h.custom().patch_namespaced_custom_object(*ARGO, "prod", "rollouts", "api", {"spec": {"replicas": 1}},
                                              dry_run="All")
    h.custom().delete_namespaced_custom_object(*ARGO, "prod", "rollouts", "api")
    assert heard == [("ADDED", "rollouts", "api"), ("DELETED", "rollouts", "api")]


def test_scale_subresource_reads_and_writes_replicas(h: Harness) -> None:
    make_rollout(h, HPAReplicas=3, selector="app=api")
    custom = h.custom()
    scale = custom.get_namespaced_custom_object_scale(*ARGO, "prod", "rollouts", "api")
    assert (scale["kind"], scale["spec"], scale["status"]) == ("Scale", {"replicas": 3},
                                                               {"replicas": 3, "selector": "app=api"})
    custom.patch_namespaced_custom_object_scale(*ARGO, "prod", "rollouts", "api", {"spec": {"replicas": 1}})
    stored = h.store.get("rollouts", "prod", "api")
    assert stored["spec"]["replicas"] == 1 and stored["metadata"]["generation"] == 2
    with pytest.raises(ApiException) as exc:
        h.custom("sandbox-viewer").patch_namespaced_custom_object_scale(*ARGO, "prod", "rollouts", "api",
                                                                        {"spec": {"replicas": 2}})
    assert exc.value.status == 403


@pytest.mark.parametrize(("context", "verb", "resource", "subresource", "expected"), [
    ("sandbox", "patch", "rollouts", "status", True),
    ("sandbox-viewer", "patch", "rollouts", "status", False),
    ("sandbox-viewer", "list", "analysisruns", "", True),
    ("sandbox", "delete", "pods", "", True),
    ("sandbox-viewer", "delete", "pods", "", False),
])
def test_self_subject_access_review(h: Harness, context: str, verb: str, resource: str, subresource: str,
                                    expected: bool) -> None:
    attrs = client.V1ResourceAttributes(namespace="prod", verb=verb, group="argoproj.io", resource=resource,
                                        subresource=subresource)
    review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attrs))
    answer = client.AuthorizationV1Api(h.api_client(context)).create_self_subject_access_review(review)
    assert answer.status.allowed is expected


def test_deleting_an_owner_collects_its_dependents(h: Harness) -> None:
    owner = make_rollout(h)
    ref = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "api", "uid": owner["metadata"]["uid"],
           "controller": True}
    rs = h.store.create("replicasets", "prod", {"metadata": {"name": "api-abc", "ownerReferences": [ref]},
                                                "spec": {"replicas": 1}})
    rs_ref = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-abc", "uid": rs["metadata"]["uid"]}
    h.store.create("pods", "prod", {**pod("api-abc-1"), "metadata": {"name": "api-abc-1", "ownerReferences": [rs_ref]}})
    h.store.create("pods", "prod", pod("unowned"))
    h.custom().delete_namespaced_custom_object(*ARGO, "prod", "rollouts", "api")
    assert h.apps().list_namespaced_replica_set("prod").items == []
    assert [p.metadata.name for p in h.core().list_namespaced_pod("prod").items] == ["unowned"]


def test_stop_closes_kept_alive_connections(tmp_path: Path) -> None:
    with running_apiserver(tmp_path) as harness:
        core = harness.core()
        core.list_namespaced_pod("prod")
    with pytest.raises(Exception) as exc:  # urllib3 wraps the refused/closed connection in several ways
        core.list_namespaced_pod("prod", _request_timeout=2)
    assert not isinstance(exc.value, ApiException)


def test_writes_need_a_namespace_and_unknown_paths_are_404(h: Harness) -> None:
    with pytest.raises(ApiException) as exc:
        h.raw("POST", "/api/v1/pods", body=pod("p"), content_type="application/json")
    assert exc.value.status == 405 and status_of(exc)["reason"] == "MethodNotAllowed"
    with pytest.raises(ApiException) as exc:
        h.raw("GET", "/apis/argoproj.io/v1alpha1/namespaces/prod/widgets")
    assert exc.value.status == 404
    with pytest.raises(ApiException) as exc:
        h.raw("GET", "/apis/argoproj.io/v1alpha1/namespaces/prod/analysistemplates/t/status")
    assert exc.value.status == 404


def test_openapi_v2_is_a_swagger_2_document_of_the_custom_kinds(h: Harness) -> None:
    doc = raw_get(h, "/openapi/v2")
    assert doc["swagger"] == "2.0" and doc["info"]["title"] and doc["paths"]
    kinds = {d["x-kubernetes-group-version-kind"][0]["kind"] for d in doc["definitions"].values()}
    assert {"Rollout", "AnalysisRun", "AnalysisTemplate"} <= kinds
    refs = json.dumps(doc).count('"$ref": "#/components/')
    assert refs == 0, "v2 references #/definitions/, never v3's #/components/"
    op = doc["paths"]["/apis/argoproj.io/v1alpha1/namespaces/{namespace}/rollouts/{name}/status"]["patch"]
    assert op["x-kubernetes-group-version-kind"]["kind"] == "Rollout"
    assert {p["name"] for p in op["parameters"]} >= {"fieldValidation", "dryRun"}
