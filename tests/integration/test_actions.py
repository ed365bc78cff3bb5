"""retry / abort / undo against the sandbox: the exact requests received, dry run, preconditions, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apiserver_harness import Harness, running_apiserver

from rollbook.cluster import (
    NoRevision,
    StaleRollout,
    abort,
    connect,
    read_rollout,
    retry,
    undo,
    wait_for_rollout,
)
from rollbook.cluster.connect import Cluster, Response, Target
from rollbook.errors import Forbidden, NotFound
from rollbook.sandbox.controller import Timings
from rollbook.sandbox.loader import load_scenario
from rollbook.sandbox.server import Sandbox

RO_PATH = "/apis/argoproj.io/v1alpha1/namespaces/prod/rollouts/api"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
FAST = Timings(analysis_seconds=0.2, error_interval_seconds=0.2, scale=0.01, idle_poll_seconds=0.05)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    """API server without a controller: objects change only through our requests."""
    with running_apiserver(tmp_path) as h:
        load_scenario(h.store, "evidence-gap")
        yield h


@pytest.fixture
def cluster(harness: Harness) -> Iterator[Cluster]:
    with connect("sandbox", harness.kubeconfig, timeout=5.0) as c:
        yield c


def patches(h: Harness) -> list[Any]:
    return [r for r in h.server.requests if r.method == "PATCH"]


def stored(h: Harness) -> dict[str, Any]:
    return h.store.get("rollouts", "prod", "api")


# --------------------------------------------------------------------------- exact requests


@pytest.mark.parametrize(("action", "value"), [(retry, False), (abort, True)])
def test_retry_and_abort_send_the_plugins_status_patch(harness: Harness, cluster: Cluster, action: Any,
                                                      value: bool) -> None:
    result = action(cluster, "prod", "api")
    (received,) = patches(harness)
    assert (received.method, received.path, received.query) == ("PATCH", f"{RO_PATH}/status", {})
    assert received.content_type == MERGE
    assert received.json() == {"status": {"abort": value}}
    assert received.body == result.request.body  # the record is the bytes the server got
    assert (result.request.path, result.request.content_type) == (f"{RO_PATH}/status", MERGE)
    assert len(result.requests) == 1 and not result.dry_run
    assert stored(harness)["status"]["abort"] is value
    assert result.resource_version == stored(harness)["metadata"]["resourceVersion"]


def test_undo_sends_the_previous_template_without_the_hash_label(harness: Harness, cluster: Cluster) -> None:
    rss = sorted(harness.store.list("replicasets", "prod")[0],
                 key=lambda rs: int(rs["metadata"]["annotations"]["rollout.argoproj.io/revision"]), reverse=True)
    target = rss[1]  # the second-highest revision
    result = undo(cluster, "prod", "api")
    (received,) = patches(harness)
    assert (received.path, received.query, received.content_type) == (RO_PATH, {}, JSON_PATCH)
    body = received.json()
    assert [(op["op"], op["path"]) for op in body] == [("replace", "/spec/template")]
    expected = json.loads(json.dumps(target["spec"]["template"]))
    del expected["metadata"]["labels"]["rollouts-pod-template-hash"]
    assert body[0]["value"] == expected
    assert result.target_revision == int(target["metadata"]["annotations"]["rollout.argoproj.io/revision"])
    assert stored(harness)["spec"]["template"] == expected
    assert result.resource_version == stored(harness)["metadata"]["resourceVersion"]
    assert received.body == result.request.body


def test_undo_to_a_given_revision_and_unknown_revision(harness: Harness, cluster: Cluster) -> None:
    revisions = sorted(int(rs["metadata"]["annotations"]["rollout.argoproj.io/revision"])
                       for rs in harness.store.list("replicasets", "prod")[0])
    with pytest.raises(NoRevision) as caught:
        undo(cluster, "prod", "api", to_revision=999)
    assert "999" in str(caught.value) and str(revisions[0]) in str(caught.value)
    assert patches(harness) == []
    # the newest revision's template is already in the spec: the plugin skips and so do we
    result = undo(cluster, "prod", "api", to_revision=revisions[-1])
    assert result.skipped and result.requests == () and patches(harness) == []


# --------------------------------------------------------------------------- dry run


@pytest.mark.parametrize("action", [retry, abort, undo])
def test_dry_run_changes_nothing(harness: Harness, cluster: Cluster, action: Any) -> None:
    before = stored(harness)
    result = action(cluster, "prod", "api", dry_run=True)
    (received,) = patches(harness)
    assert received.query == {"dryRun": "All"}
    assert result.dry_run and result.request.path.endswith("?dryRun=All")
    after = stored(harness)
    assert after == before  # same resourceVersion, spec and status


# --------------------------------------------------------------------------- preconditions and errors


def test_expected_resource_version_guards_the_action(harness: Harness, cluster: Cluster) -> None:
    current = stored(harness)["metadata"]["resourceVersion"]
    with pytest.raises(StaleRollout) as caught:
        retry(cluster, "prod", "api", expected_resource_version=str(int(current) - 1))
    assert current in str(caught.value) and patches(harness) == []
    result = retry(cluster, "prod", "api", expected_resource_version=current)
    assert result.previous_resource_version == current and len(patches(harness)) == 1


def test_viewer_is_forbidden_with_a_readable_error(harness: Harness) -> None:
    with connect("sandbox-viewer", harness.kubeconfig, timeout=5.0) as viewer, pytest.raises(Forbidden) as caught:
        retry(viewer, "prod", "api")
    e = caught.value
    assert (e.status, e.kind, e.name, e.namespace, e.context) == (403, "Rollout", "api", "prod", "sandbox-viewer")
    assert "rollouts/status" in str(e)  # the Kubernetes Status message is kept
    assert "kubectl auth can-i patch rollouts -n prod" in str(e)
    assert stored(harness)["status"]["abort"] is True


def test_missing_rollout_is_not_found_after_the_fallback(harness: Harness, cluster: Cluster) -> None:
    with pytest.raises(NotFound):
        abort(cluster, "prod", "nope")
    paths = [r.path for r in patches(harness)]
    assert paths == [f"{RO_PATH[:-3]}nope/status", f"{RO_PATH[:-3]}nope"]  # status first, then the main resource


class NoStatusSubresource(Cluster):
    """A cluster whose Rollout CRD has no status subresource: /status answers 404, as on old installs."""

    def request(self, method: str, path: str, target: Target, **kwargs: Any) -> Response:
        if method == "PATCH" and path.endswith("/status"):
            raise NotFound("no status subresource", kind="Rollout", name=target.name, namespace=target.namespace)
        return super().request(method, path, target, **kwargs)


def test_status_404_falls_back_to_the_main_resource(harness: Harness, cluster: Cluster) -> None:
    fallback = NoStatusSubresource(cluster.api_client, context="sandbox", timeout=5.0)
    result = retry(fallback, "prod", "api")
    assert [(r.path, r.status) for r in result.requests] == [(f"{RO_PATH}/status", 404), (RO_PATH, 200)]
    (received,) = patches(harness)
    assert (received.path, received.content_type, received.json()) == (RO_PATH, MERGE, {"status": {"abort": False}})


# --------------------------------------------------------------------------- with the simulated controller


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    sb = Sandbox("evidence-gap", state_dir=tmp_path / "sb", timings=FAST).start()
    try:
        yield sb
    finally:
        sb.stop()


def test_undo_then_wait_until_healthy(sandbox: Sandbox) -> None:
    with connect("sandbox", sandbox.kubeconfig, timeout=5.0) as c:
        before = read_rollout(c, "prod", "api")
        assert before.phase == "Degraded" and before.stable_rs is not None
        stable_name, top = before.stable_rs.name, max(before.revisions)
        seen: list[str] = []
        result = undo(c, "prod", "api")
        assert result.target_revision == before.stable_rs.revision
        after = wait_for_rollout(c, "prod", "api", lambda v: v.phase == "Healthy", timeout=10, interval=0.1,
                                 what="the rollback", progress=lambda v, left: seen.append(v.phase))
    assert after.stable_rs is not None and after.stable_rs.name == stable_name
    assert after.stable_rs.revision == top + 1  # Argo raises the old revision to max+1
    assert after.canary_hash == after.stable_hash and after.stable_is_previous is None
    assert all(p != "Healthy" for p in seen)


def test_retry_creates_a_new_run_and_aborts_again_while_evidence_is_missing(sandbox: Sandbox) -> None:
    with connect("sandbox", sandbox.kubeconfig, timeout=5.0) as c:
        before = read_rollout(c, "prod", "api")
        old_runs = {r.name for r in before.canary_runs}
        retry(c, "prod", "api")
        after = wait_for_rollout(
            c, "prod", "api",
            lambda v: v.phase == "Degraded" and any(r.name not in old_runs and r.phase == "Failed" for r in v.canary_runs),
            timeout=10, interval=0.1, what="the retried analysis")
    (new,) = [r for r in after.canary_runs if r.name not in old_runs]
    assert new.name.rsplit(".", 1)[0] in old_runs and new.name.endswith(".1")  # Argo's collision suffix
    assert after.canary_runs[0].name == new.name  # newest first
    assert before.abort is not None and after.abort is not None
    assert (after.abort.metric, after.abort.form) == (before.abort.metric, before.abort.form)
    gate = new.metric("mc-evidence-ok")
    assert gate is not None and gate.last is not None and gate.last.verdict is not None
    assert gate.last.verdict.ok is False
