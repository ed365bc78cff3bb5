"""The incident Job (rollbook.cluster.jobs) and how its end becomes the run's exit code (rollbook.jobrun)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rollbook import jobrun
from rollbook.cluster import jobs
from rollbook.runner import RunSpec
from tests.deploy_render import by_kind, render_python

DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def spec(**kw: object) -> RunSpec:
    base: dict[str, object] = {"incident": "INC-1", "namespace": "prod", "rollout": "api", "out": Path("/tmp/o")}
    return RunSpec(**(base | kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(("kw", "account"), [
    ({}, "rollbook-viewer"),
    ({"steps": (1, 2, 3, 5, 6)}, "rollbook-viewer"),
    ({"steps": (4,), "approve_retry": True, "approver": "a", "ticket": "T"}, "rollbook-operator"),
    ({"steps": (4,), "params": {"approve_undo": True}, "approver": "a", "ticket": "T"}, "rollbook-operator"),
    ({"steps": (1, 2, 3), "approve_retry": True, "approver": "a", "ticket": "T"}, "rollbook-viewer"),  # no step 4
    ({"steps": (4,)}, "rollbook-viewer"),  # step 4 without approval only reads
])
def test_the_operator_only_for_an_approved_step_4(kw: dict[str, object], account: str) -> None:
    assert jobs.service_account(jobrun.request(spec(**kw))) == account


def test_the_job_is_bounded_labelled_and_runs_rollbook_in_cluster() -> None:
    req = jobrun.request(spec(steps=(1, 2, 3), step_timeout=100, mc_url="https://mc", release_id="r1",
                              params={"config": "/home/me/rollbook.yaml", "notify": True, "wait_seconds": 5}))
    job = jobs.manifest(req, jobs.job_name(req.incident, "abc123"))
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 300 + jobs.START_MARGIN
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (c,) = pod["containers"]
    cmd = c["command"]
    assert cmd[:2] == ["rollbook", "run"] and cmd[cmd.index("--context") + 1] == "in-cluster"
    assert cmd[cmd.index("--out") + 1] == jobs.RECORDS_MOUNT and cmd[cmd.index("--steps") + 1] == "1,2,3"
    assert "--notify" in cmd and "wait_seconds=5" in cmd and "--mc-url" in cmd and "--release-id" in cmd
    assert not any("/home/me" in a for a in cmd)  # the submitter's config path means nothing in the pod
    assert job["spec"]["template"]["metadata"]["labels"] == job["metadata"]["labels"]


def test_names_and_labels_stay_valid_for_any_incident_id() -> None:
    for incident in ("INC-1", "ARGO-prod-api-r7", "x" * 200, "Ünïcode/slash_and.dots-", "ARGO-" + "very-long-" * 10):
        name = jobs.job_name(incident, "a1b2c3")
        assert len(name) <= 63 and DNS_1123.match(name), name
        value = jobs.label_value(incident)
        assert len(value) <= 63 and LABEL.match(value), value
    assert jobs.label_value("x" * 100) != jobs.label_value("x" * 99 + "y")  # a long id keeps a hash


def test_the_job_fits_deploy() -> None:
    objs = render_python()
    req = jobrun.request(spec())
    job = jobs.manifest(req, "rollbook-inc-1-abc")
    pod = job["spec"]["template"]["spec"]
    assert job["metadata"]["namespace"] == jobs.NAMESPACE in by_kind(objs, "Namespace")
    assert {jobs.VIEWER_SA, jobs.OPERATOR_SA} <= set(by_kind(objs, "ServiceAccount"))
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["records"]["persistentVolumeClaim"]["claimName"] in by_kind(objs, "PersistentVolumeClaim")
    assert volumes["config"]["configMap"]["name"] in by_kind(objs, "ConfigMap")
    serve = by_kind(objs, "Deployment")["rollbook"]["spec"]["template"]["spec"]
    assert pod["securityContext"] == serve["securityContext"]
    (c,), (s,) = pod["containers"], serve["containers"]
    assert c["securityContext"] == s["securityContext"] and set(c["resources"]) == {"requests", "limits"}
    policy = by_kind(objs, "NetworkPolicy")["rollbook-incidents"]["spec"]["podSelector"]["matchLabels"]
    assert policy.items() <= job["spec"]["template"]["metadata"]["labels"].items()
    assert c["image"] == dict((e["name"], e.get("value")) for e in s["env"])[jobs.IMAGE_ENV]


def _end(condition: str, reason: str = "", code: int | None = None, log: str = "") -> jobs.JobEnd:
    return jobs.JobEnd("rollbook-inc-1-abc", condition, reason, "m", code, log, "pod")


def test_how_a_job_end_becomes_the_exit_code(tmp_path: Path) -> None:
    run = tmp_path / "INC-1" / "20260101T000000Z-abc"
    run.mkdir(parents=True)
    (run / "record.json").write_text("{}", encoding="utf-8")
    log = f"...\nIncident record: /records/INC-1/{run.name} (exit 4: escalation is due)\n"
    assert jobrun.outcome(_end("Complete", log=log.replace("exit 4", "exit 0")), tmp_path, "INC-1").exit_code == 0
    failed = jobrun.outcome(_end("Failed", "BackoffLimitExceeded", 4, log), tmp_path, "INC-1")
    assert (failed.exit_code, failed.record_dir, failed.record_on_volume) == (4, run, f"/records/INC-1/{run.name}")
    assert jobrun.outcome(_end("Failed", "DeadlineExceeded", None), tmp_path, "INC-1").exit_code == 3
    never = jobrun.outcome(_end("Failed", "SandboxUnknownImage", None), tmp_path, "INC-1")
    assert never.exit_code == 1 and "SandboxUnknownImage" in never.message and never.record_dir is None
    elsewhere = jobrun.outcome(_end("Failed", "BackoffLimitExceeded", 3, log), tmp_path / "other", "INC-1")
    assert elsewhere.record_dir is None and elsewhere.record_on_volume == f"/records/INC-1/{run.name}"
