"""The kubelet's share of a pod's status: QoS class, image IDs, container IDs, IPs; scenario values kept."""

from __future__ import annotations

from typing import Any

from rollbook.sandbox.kubelet import complete_pod, image_id, qos_class


def containers(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"containers": [{"name": f"c{i}", "image": "app:1", "resources": r} for i, r in enumerate(resources)]}


def test_qos_class_follows_the_upstream_rules() -> None:
    guaranteed = {"limits": {"cpu": "1", "memory": "1Gi"}}
    assert qos_class(containers({})) == "BestEffort"
    assert qos_class(containers({"requests": {"ephemeral-storage": "1Gi"}})) == "BestEffort"
    assert qos_class(containers(guaranteed)) == "Guaranteed"  # requests default to the limits
    assert qos_class(containers(dict(guaranteed, requests={"cpu": "1", "memory": "1Gi"}))) == "Guaranteed"
    assert qos_class(containers(dict(guaranteed, requests={"cpu": "500m", "memory": "1Gi"}))) == "Burstable"
    assert qos_class(containers(guaranteed, {})) == "Burstable"
    assert qos_class(containers({"requests": {"cpu": "100m"}})) == "Burstable"


def test_image_ids_are_qualified_and_pinned() -> None:
    assert image_id("nginx:1.27").startswith("docker.io/library/nginx@sha256:")
    assert image_id("argoproj/rollouts-demo:blue").startswith("docker.io/argoproj/rollouts-demo@sha256:")
    assert image_id("registry.local:5000/team/api:1.42.0").startswith("registry.local:5000/team/api@sha256:")
    pinned = "ghcr.io/acme/api@sha256:" + "a" * 64
    assert image_id(pinned) == pinned
    assert image_id("nginx:1.27") == image_id("nginx:1.27") != image_id("nginx:1.28")


def pod(status: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "api-1", "namespace": "prod", "uid": "u-1"},
            "spec": {"nodeName": "worker-1", "containers": [{"name": "app", "image": "api:1"}], **spec},
            "status": status}


def test_a_running_pod_gets_what_the_kubelet_reports() -> None:
    status = complete_pod(pod({"phase": "Running", "containerStatuses": [
        {"name": "app", "ready": True, "restartCount": 0, "state": {"running": {"startedAt": "x"}}}]}))["status"]
    assert status["hostIP"] and status["hostIPs"] == [{"ip": status["hostIP"]}]
    assert status["podIP"].startswith("10.244.0.") and status["podIPs"] == [{"ip": status["podIP"]}]
    assert status["qosClass"] == "BestEffort"
    c = status["containerStatuses"][0]
    assert c["containerID"].startswith("containerd://") and c["imageID"].startswith("docker.io/library/api@sha256:")
    assert c["started"] is True and c["lastState"] == {} and c["image"] == "api:1"


def test_a_waiting_container_has_no_ids_and_a_pending_pod_no_ip() -> None:
    status = complete_pod(pod({"phase": "Pending", "containerStatuses": [
        {"name": "app", "ready": False, "restartCount": 0,
         "state": {"waiting": {"reason": "ContainerCreating"}}}]}))["status"]
    c = status["containerStatuses"][0]
    assert "containerID" not in c and c["imageID"] == "" and c["started"] is False
    assert "podIP" not in status and status["hostIP"]


def test_what_the_scenario_states_is_kept() -> None:
    given = {"phase": "Running", "podIP": "10.1.2.3", "qosClass": "Guaranteed", "containerStatuses": [
        {"name": "app", "ready": True, "restartCount": 2, "imageID": "x@sha256:1", "containerID": "cri-o://1",
         "state": {"running": {}}, "lastState": {"terminated": {"exitCode": 1}}}]}
    status = complete_pod(pod(given))["status"]
    assert status["podIP"] == "10.1.2.3" and status["qosClass"] == "Guaranteed"
    c = status["containerStatuses"][0]
    assert (c["imageID"], c["containerID"], c["lastState"]) == ("x@sha256:1", "cri-o://1", {"terminated": {"exitCode": 1}})
