"""`--executor kubernetes` end to end against the sandbox: one batch/v1 Job per incident, run by the sandbox's
simulated Job controller + kubelet (rollbook.sandbox.jobs), the record written to the records volume."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_harness import deploy, jobs_of, needs_kubectl, record, run_job, token_context
from serve_harness import EVIDENCE_GAP, ServeProcess, rendered_body

from rollbook import __version__
from rollbook.cluster import jobs
from rollbook.sandbox.server import Sandbox

pytestmark = [pytest.mark.kubectl, needs_kubectl]
VIEWER = "system:serviceaccount:rollbook:rollbook-viewer"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sandbox, Path]]:
    root = tmp_path_factory.mktemp("job-executor")
    with Sandbox(EVIDENCE_GAP, root / "sandbox") as sb:
        deploy(sb, root / "records")
        yield sb, root / "records"


def test_an_incident_runs_as_one_job_under_the_viewer(cluster: tuple[Sandbox, Path]) -> None:
    sb, records = cluster
    done = run_job(sb, records, "--incident", "INC-JOB-1", "--steps", "1,2,3,5,6", "--step-timeout", "120")
    run_dir, rec = record(records, "INC-JOB-1")
    assert done.returncode == rec["exit_code"], done.stderr
    assert [(s["step"], s["verdict"] != "error") for s in rec["steps"]] == [(n, True) for n in (1, 2, 3, 5, 6)]
    assert rec["context"] == "in-cluster" and not rec["partial"]
    assert f"Incident record: {run_dir} (exit {rec['exit_code']}" in done.stdout
    assert "submitted Job rollbook/" in done.stderr and "as rollbook-viewer" in done.stderr
    (job,) = jobs_of(sb, "INC-JOB-1")
    spec = job["spec"]
    assert spec["backoffLimit"] == 0 and spec["ttlSecondsAfterFinished"] == jobs.TTL_AFTER_FINISHED
    assert spec["activeDeadlineSeconds"] == 5 * 120 + jobs.START_MARGIN
    assert job["metadata"]["labels"].items() >= {"rollbook.io/incident": "INC-JOB-1", "rollbook.io/namespace": "prod",
                                                 "rollbook.io/rollout": "api"}.items()
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "rollbook-viewer"
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "rollbook-records"
    (cond,) = job["status"]["conditions"]
    expect = "Complete" if rec["exit_code"] == 0 else "Failed"
    assert cond["type"] == expect and job["status"]["startTime"] <= job["status"].get("completionTime", "~")
    # every API request of the run came with the viewer's service-account token (the pod's mounted token)
    users = {r.user for r in sb.apiserver.requests if r.path.startswith("/apis/argoproj.io/") and "/prod/" in r.path}
    assert VIEWER in users and users <= {VIEWER, "operator"}


def test_an_unknown_image_fails_the_job_with_the_reason(cluster: tuple[Sandbox, Path]) -> None:
    sb, records = cluster
    done = run_job(sb, records, "--incident", "INC-JOB-IMG", "--steps", "1",
                   env_extra={jobs.IMAGE_ENV: "registry.example/other:1.0"})
    assert done.returncode == 1
    assert "SandboxUnknownImage" in done.stderr and "registry.example/other:1.0" in done.stderr
    (job,) = jobs_of(sb, "INC-JOB-IMG")
    (cond,) = job["status"]["conditions"]
    assert (cond["type"], cond["reason"]) == ("Failed", "SandboxUnknownImage")
    assert f"rollbook:{__version__}" in cond["message"]
    assert not (records / "INC-JOB-IMG").exists()


def test_serve_submits_one_job_per_incident(cluster: tuple[Sandbox, Path], tmp_path: Path) -> None:
    sb, records = cluster
    # serve submits as its own service account (deploy/: Role rollbook-submit-jobs in `rollbook` only)
    svc = ServeProcess(sb, tmp_path, steps="1,2,3",
                       extra_args=("--executor", "kubernetes", "--context", token_context(sb, "rollbook-serve")))
    assert sb.jobs is not None
    sb.jobs.claim_dirs[("rollbook", "rollbook-records")] = svc.out  # serve's --out is the records volume
    svc.start()
    try:
        resp = svc.post(rendered_body(sb, "prod", "api"))
        assert resp.status_code == 202, resp.text
        incident = resp.json()["incident"]
        done = svc.wait_status(incident, ("done", "failed"), timeout=600)
    finally:
        svc.stop()
        sb.jobs.claim_dirs[("rollbook", "rollbook-records")] = records
    run_dir, rec = record(svc.out, incident)
    assert done["status"] == "done" and done["exit_code"] == rec["exit_code"]
    assert done["record"] == str(run_dir)
    assert done["verdicts"] == {s["name"]: s["verdict"] for s in rec["steps"]}
    (job,) = jobs_of(sb, incident)
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "rollbook-viewer"
    submits = [r for r in sb.apiserver.requests if r.method == "POST" and r.path == "/apis/batch/v1/namespaces/rollbook/jobs"
               and r.user == "system:serviceaccount:rollbook:rollbook-serve"]
    assert len(submits) == 1
