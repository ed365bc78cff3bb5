"""The sandbox's simulated Job controller + kubelet (rollbook.sandbox.jobs), without an API server."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rollbook import __version__
from rollbook.sandbox.jobs import JobRunner
from rollbook.sandbox.store import Store

NS = "rollbook"


def wait(predicate: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    end = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Store, JobRunner]]:
    store = Store()
    store.create("namespaces", None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    store.create("serviceaccounts", NS, {"apiVersion": "v1", "kind": "ServiceAccount",
                                         "metadata": {"name": "rollbook-viewer", "namespace": NS}})
    store.create("persistentvolumeclaims", NS, {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                                "metadata": {"name": "records", "namespace": NS}, "spec": {}})
    tokens: list[tuple[str, str]] = []

    def token_for(ns: str, sa: str) -> str:
        store.get("serviceaccounts", ns, sa)
        tokens.append((ns, sa))
        return "tok"

    runner = JobRunner(store, kube_url="https://127.0.0.1:6443", ca_pem=b"CA", state_dir=tmp_path,
                       token_for=token_for, runbooks=tmp_path)
    yield store, runner
    runner.stop()


def job(name: str, command: list[str], *, image: str = f"rollbook:{__version__}", env: list[Any] | None = None,
        claim: str = "records", deadline: int = 120) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": NS},
            "spec": {"backoffLimit": 0, "activeDeadlineSeconds": deadline, "template": {
                "metadata": {"labels": {"app": "t"}},
                "spec": {"serviceAccountName": "rollbook-viewer", "restartPolicy": "Never", "containers": [
                    {"name": "rollbook", "image": image, "command": command, "env": env or [],
                     "volumeMounts": [{"name": "records", "mountPath": "/records"}]}],
                    "volumes": [{"name": "records", "persistentVolumeClaim": {"claimName": claim}}]}}}}


def ended(store: Store, name: str) -> dict[str, Any] | None:
    status = store.get("jobs", NS, name).get("status") or {}
    return status if status.get("conditions") else None


def pod_of(store: Store, name: str) -> dict[str, Any]:
    (pod,) = store.list("pods", NS, label_selector=f"job-name={name}")[0]
    return pod


def test_a_rollbook_command_completes_with_its_log_and_the_job_conditions(world: tuple[Store, JobRunner]) -> None:
    store, runner = world
    store.create("jobs", NS, job("ok", ["rollbook", "--version"]))
    status = wait(lambda: ended(store, "ok"), "the Job to end")
    (cond,) = status["conditions"]
    assert cond["type"] == "Complete" and status["succeeded"] == 1 and status["completionTime"] >= status["startTime"]
    pod = pod_of(store, "ok")
    assert pod["metadata"]["ownerReferences"][0]["name"] == "ok"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert __version__ in store.pod_log(NS, pod["metadata"]["name"])


def test_a_failing_run_fails_the_job_with_its_exit_code_and_paths_are_mapped(world: tuple[Store, JobRunner]) -> None:
    store, runner = world
    store.create("jobs", NS, job("bad", ["rollbook", "history", "--out", "$(OUT)", "--since", "nonsense"],
                                 env=[{"name": "OUT", "value": "/records/x"}]))
    status = wait(lambda: ended(store, "bad"), "the Job to end")
    (cond,) = status["conditions"]
    assert (cond["type"], cond["reason"], status["failed"]) == ("Failed", "BackoffLimitExceeded", 1)
    pod = pod_of(store, "bad")
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 2
    log = store.pod_log(NS, pod["metadata"]["name"])
    assert "nonsense" in log and "/records" not in log.replace(str(runner.volume_dir(NS, "records")), "")


@pytest.mark.parametrize(("kw", "reason"), [
    ({"command": ["sh", "-c", "id"]}, "SandboxNotRollbook"),
    ({"image": "busybox:1.36"}, "SandboxUnknownImage"),
    ({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}, "SandboxUnsupported"),
    ({"claim": "missing"}, "SandboxNoVolume"),
])
def test_what_the_simulation_cannot_run_fails_the_job_with_a_reason(world: tuple[Store, JobRunner],
                                                                  kw: dict[str, Any], reason: str) -> None:
    store, _ = world
    store.create("jobs", NS, job("no", **({"command": ["rollbook", "--version"]} | kw)))
    (cond,) = wait(lambda: ended(store, "no"), "the Job to end")["conditions"]
    assert (cond["type"], cond["reason"]) == ("Failed", reason) and cond["message"]


def test_deleting_the_job_stops_its_pod(world: tuple[Store, JobRunner], tmp_path: Path) -> None:
    store, runner = world
    store.create("jobs", NS, job("long", ["rollbook", "sandbox", "--state-dir", str(tmp_path / "inner")]))
    pod = wait(lambda: store.list("pods", NS, label_selector="job-name=long")[0], "the pod")[0]
    wait(lambda: runner._procs.get(pod["metadata"]["name"]), "the pod's process")
    store.delete("jobs", NS, "long")
    wait(lambda: not runner._procs, "the pod's process to be killed", timeout=30)
    assert not store.list("pods", NS, label_selector="job-name=long")[0]


def test_a_pod_that_outlives_active_deadline_seconds_fails_the_job(world: tuple[Store, JobRunner],
                                                                  tmp_path: Path) -> None:
    store, _ = world  # `rollbook sandbox` runs until stopped: the deadline always comes first
    store.create("jobs", NS, job("slow", ["rollbook", "sandbox", "--state-dir", str(tmp_path / "inner")], deadline=1))
    (cond,) = wait(lambda: ended(store, "slow"), "the Job to end")["conditions"]
    assert (cond["type"], cond["reason"]) == ("Failed", "DeadlineExceeded")
