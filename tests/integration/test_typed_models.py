"""Every object the sandbox serves is one the official client's typed models accept (issue 7 item 2).

For every built-in scenario, every folder under tests/scenarios and fixtures/ (discovered, never listed), every
object of every served built-in kind is read over HTTP and deserialized into its typed model
(``ApiClient().deserialize``), and the typed ``list_*`` call an engineer would type must succeed too;
custom resources (no typed model) must be JSON objects with the metadata a real server sets. Checked
on the loaded scenario and again after the controller acted: every aborted rollout retried, and every
rollout undone to its stable ReplicaSet, then the controller settled.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from rollbook.sandbox.loader import BUILTIN_DIR, builtin_scenarios
from rollbook.sandbox.resources import RESOURCES, Resource
from rollbook.sandbox.server import Sandbox

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = [BUILTIN_DIR / n for n in builtin_scenarios()] + sorted(
    p for base in (ROOT / "tests" / "scenarios", ROOT / "fixtures") if base.is_dir()
    for p in base.rglob("*") if p.is_dir() and any(f.suffix in (".yaml", ".yml") for f in p.iterdir()))
ARGO = ("argoproj.io", "v1alpha1")


def _snake(kind: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()


def _api_class(res: Resource) -> type:
    """CoreV1Api, AppsV1Api, RbacAuthorizationV1Api, AutoscalingV2Api... from the resource's group/version."""
    words = res.group.removesuffix(".k8s.io").split(".") if res.group else ["core"]
    group = "".join(w.capitalize() for w in words)  # rbac.authorization.k8s.io -> RbacAuthorization
    return getattr(client, f"{group}{res.version.capitalize()}Api")  # type: ignore[no-any-return]


def _typed_lister(api: client.ApiClient, res: Resource) -> Callable[..., Any]:
    method = f"list_{_snake(res.kind)}_for_all_namespaces" if res.namespaced else f"list_{_snake(res.kind)}"
    return getattr(_api_class(res)(api), method)  # type: ignore[no-any-return]


def _model_name(res: Resource) -> str:
    """V1Pod, V1ReplicaSet, V2HorizontalPodAutoscaler; CoreV1Event where the core kind's name is taken."""
    plain = f"{res.version.capitalize()}{res.kind}"
    return plain if hasattr(client, plain) and res.group != "" or not hasattr(client, f"Core{plain}") else f"Core{plain}"


def _raw_list(api: client.ApiClient, res: Resource) -> list[dict[str, Any]]:
    prefix = f"/apis/{res.group}/{res.version}" if res.group else f"/api/{res.version}"
    resp = api.call_api(*api.param_serialize("GET", f"{prefix}/{res.plural}", auth_settings=["BearerToken"],
                                             header_params={"Accept": "application/json"}))
    resp.read()
    items: list[dict[str, Any]] = json.loads(resp.data)["items"]
    return items


def kubelet_gaps(pod: dict[str, Any]) -> list[str]:
    """What a kubelet sets and this pod lacks: IPs of a scheduled/running pod, QoS, IDs of running containers."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    gaps = [f"no {k}" for k in ("qosClass",) if not status.get(k)]
    if spec.get("nodeName"):
        gaps += [f"no {k}" for k in ("hostIP", "hostIPs") if not status.get(k)]
    if status.get("phase") == "Running":
        gaps += [f"no {k}" for k in ("podIP", "podIPs", "startTime") if not status.get(k)]
    for c in status.get("containerStatuses") or []:
        if (c.get("state") or {}).get("running"):
            gaps += [f"container {c.get('name')}: no {k}" for k in ("containerID", "imageID") if not c.get(k)]
            gaps += [f"container {c.get('name')}: started is not true"] if c.get("started") is not True else []
        gaps += [f"container {c.get('name')}: no lastState"] if "lastState" not in c else []
    return gaps


def failures(sb: Sandbox) -> list[str]:
    """Every object that a typed model rejects or that lacks server-set metadata, as readable lines."""
    api = config.new_client_from_config(config_file=str(sb.kubeconfig), context="sandbox")
    found: list[str] = []
    with api:
        for res in RESOURCES.values():
            items = _raw_list(api, res)
            for item in items:
                meta = item.get("metadata") or {}
                where = f"{res.kind} {meta.get('namespace', '')}/{meta.get('name')}"
                if res.plural == "pods":
                    found += [f"{where}: {gap}" for gap in kubelet_gaps(item)]
                if res.builtin:
                    try:
                        api.deserialize(json.dumps(item), _model_name(res), "application/json")
                    except Exception as e:  # noqa: BLE001 - every rejection is reported, then the test fails
                        found.append(f"{where}: {type(e).__name__}: {str(e)[:400]}")
                else:
                    missing = [k for k in ("name", "uid", "resourceVersion", "creationTimestamp")
                               + (("namespace",) if res.namespaced else ()) if not meta.get(k)]
                    if missing or item.get("kind") != res.kind or item.get("apiVersion") != res.api_version:
                        found.append(f"{where}: missing {missing} or wrong kind/apiVersion")
            if res.builtin and items:
                try:
                    _typed_lister(api, res)(_request_timeout=10)
                except Exception as e:  # noqa: BLE001
                    found.append(f"typed list of {res.plural}: {type(e).__name__}: {str(e)[:400]}")
    return found


def act(sb: Sandbox, wait_until: Callable[..., Any]) -> None:
    """Retry every aborted rollout, let the controller finish; then undo every rollout to its stable RS."""
    api = config.new_client_from_config(config_file=str(sb.kubeconfig), context="sandbox")
    custom = client.CustomObjectsApi(api)
    with api:
        for ro in sb.store.list("rollouts")[0]:
            if (ro.get("status") or {}).get("abort"):
                custom.patch_namespaced_custom_object_status(*ARGO, ro["metadata"]["namespace"], "rollouts",
                                                             ro["metadata"]["name"], {"status": {"abort": False}})
        wait_until(sb.controller.idle, timeout=30, what="the controller settled after retries")
        for ro in sb.store.list("rollouts")[0]:
            ns, stable = ro["metadata"]["namespace"], (ro.get("status") or {}).get("stableRS")
            rs = [r for r in sb.store.list("replicasets", ns)[0]
                  if (r["metadata"].get("labels") or {}).get("rollouts-pod-template-hash") == stable]
            if not rs or (ro.get("status") or {}).get("currentPodHash") == stable or "template" not in ro["spec"]:
                continue
            tmpl = copy.deepcopy(rs[0]["spec"]["template"])
            tmpl["metadata"]["labels"].pop("rollouts-pod-template-hash", None)
            api.set_default_header("Content-Type", "application/json-patch+json")
            custom.patch_namespaced_custom_object(*ARGO, ns, "rollouts", ro["metadata"]["name"],
                                                  [{"op": "replace", "path": "/spec/template", "value": tmpl}])
        wait_until(sb.controller.idle, timeout=30, what="the controller settled after undos")


def test_scenarios_are_discovered() -> None:
    names = {p.name for p in SCENARIOS}
    assert {"evidence-gap", "healthy"} <= names and len(SCENARIOS) > len(builtin_scenarios())


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.relative_to(p.parents[1]).as_posix())
def test_every_served_object_deserializes_before_and_after_the_controller_acts(
        scenario: Path, sandbox_factory: Callable[..., Sandbox], wait_until: Callable[..., Any]) -> None:
    sb = sandbox_factory(scenario)
    before = failures(sb)
    act(sb, wait_until)
    after = failures(sb)
    assert not before, f"{len(before)} objects of {scenario.name} rejected as loaded:\n" + "\n".join(before)
    assert not after, f"{len(after)} objects of {scenario.name} rejected after the controller acted:\n" + "\n".join(after)
