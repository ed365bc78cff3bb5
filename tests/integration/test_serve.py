"""`rollbook serve` through real HTTP against the sandbox: intake rules, dedupe, the record it writes,
the first look, health and metrics. The service runs as its own process, as a user starts it."""

from __future__ import annotations

import base64
import http.client
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from serve_harness import (
    GATE,
    HOLDING,
    ServeProcess,
    build_scenario,
    record_dirs,
    rendered_body,
    step1_is_waiting,
    wait_for,
)

from rollbook import history, record
from rollbook.sandbox.server import Sandbox


@pytest.fixture
def world(tmp_path: Path, sandbox_factory: Callable[..., Sandbox]) -> Sandbox:
    return sandbox_factory(build_scenario(tmp_path / "scenario", copies=["prod"], with_gate=True), timings=HOLDING)


@pytest.fixture
def service(world: Sandbox, tmp_path: Path) -> Iterator[ServeProcess]:
    svc = ServeProcess(world, tmp_path / "svc", workers=1, queue=2, steps="1")
    yield svc.start()
    svc.stop()


@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServeProcess, Sandbox]]:
    """One service (and its sandbox) for the tests that only send what is refused or only read: nothing is
    ever queued on it, so they share it (one xdist_group: one worker starts it once)."""
    root = tmp_path_factory.mktemp("serve-intake")
    with Sandbox(build_scenario(root / "scenario", copies=["prod"], with_gate=True), root / "sandbox", admin=True,
                 timings=HOLDING) as sb:
        svc = ServeProcess(sb, root / "svc", workers=1, queue=2, steps="1").start()
        try:
            yield svc, sb
        finally:
            svc.stop()


def _metric(svc: ServeProcess, name: str, **labels: str) -> float:
    text = svc.get("/metrics", auth=False).text
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.xdist_group("serve-intake")
def test_auth_is_required_and_compared_exactly(intake: tuple[ServeProcess, Sandbox]) -> None:
    service, world = intake
    body = rendered_body(world, "prod", "api")
    unauthorized = _metric(service, "rollbook_serve_notifications_rejected_total", reason="unauthorized")
    for token, headers in ((None, {}), ("wrong-" + service.token, {}), (service.token[:-1], {})):
        resp = service.post(body, token=token or "", headers=headers)
        assert resp.status_code == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert resp.json() == {"error": "missing or wrong bearer token"}
    basic = service.post(body, headers={"Authorization": f"Basic {service.token}"})
    assert basic.status_code == 401
    assert service.get("/v1/incidents", auth=False).status_code == 401
    assert _metric(service, "rollbook_serve_notifications_rejected_total", reason="unauthorized") == unauthorized + 4
    assert service.get("/v1/incidents").json() == {"incidents": [], "count": 0}  # nothing was queued


@pytest.mark.parametrize(("body", "says"), [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "must be a JSON object"),
    ({"rollout": "api", "revision": "7", "trigger": "on-rollout-aborted"}, "'namespace' is required"),
    ({"namespace": "Prod", "rollout": "api", "revision": "7", "trigger": "on-rollout-aborted"}, "RFC 1123 label"),
    ({"namespace": "prod", "rollout": "api_v2", "revision": "7", "trigger": "on-rollout-aborted"}, "'rollout'"),
    ({"namespace": "prod", "rollout": "api", "revision": "7a", "trigger": "on-rollout-aborted"}, "'revision'"),
    ({"namespace": "prod", "rollout": "api", "revision": 0, "trigger": "on-rollout-aborted"}, "positive integer"),
    ({"namespace": "prod", "rollout": "api", "revision": "7", "trigger": "on-rollout-completed"}, "'trigger'"),
    ({"namespace": "prod", "rollout": "api", "revision": "7", "trigger": "on-rollout-aborted", "time": "noon"},
     "'time'"),
    ({"context": {}, "data": "***not base64***"}, "not base64"),
])
@pytest.mark.xdist_group("serve-intake")
def test_a_malformed_body_is_a_one_line_400(intake: tuple[ServeProcess, Sandbox], body: Any, says: str) -> None:
    service, _ = intake
    resp = service.post(body)
    assert resp.status_code == 400
    assert resp.text.count("\n") == 1 and set(resp.json()) == {"error"} and says in resp.json()["error"]
    assert service.get("/v1/incidents").json()["count"] == 0


@pytest.mark.xdist_group("serve-intake")
def test_a_body_over_1_mib_is_413_unread(intake: tuple[ServeProcess, Sandbox]) -> None:
    service, _ = intake
    too_large = _metric(service, "rollbook_serve_notifications_rejected_total", reason="too_large")
    host, port = service.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/v1/argo-rollouts")
    conn.putheader("Authorization", f"Bearer {service.token}")
    conn.putheader("Content-Length", str((1 << 20) + 1))
    conn.endheaders()  # the body is never sent: the answer must not wait for it
    resp = conn.getresponse()
    assert resp.status == 413 and "at most 1048576" in json.loads(resp.read())["error"]
    conn.close()
    exactly = service.post(b" " * (1 << 20))  # 1 MiB itself is read (and is not JSON)
    assert exactly.status_code == 400
    assert _metric(service, "rollbook_serve_notifications_rejected_total", reason="too_large") == too_large + 1


def _argo_events_forms(body: bytes) -> list[bytes]:
    """The same body as a Sensor forwards it: the webhook event data, and the whole event (data base64)."""
    data = {"header": {"Authorization": ["*** Masked Auth Secret ***"], "Content-Type": ["application/json"]},
            "body": json.loads(body), "metadata": {}}
    event = {"context": {"id": "1", "source": "argo-rollouts", "specversion": "1.0", "type": "webhook",
                         "datacontenttype": "application/json", "subject": "rollbook", "time": "2026-11-30T09:00:00Z"},
             "data": base64.b64encode(json.dumps(data).encode()).decode()}
    return [json.dumps(data).encode(), json.dumps(event).encode()]


def test_one_incident_per_abort_whatever_the_trigger_or_envelope(service: ServeProcess, world: Sandbox) -> None:
    first = service.post(rendered_body(world, "prod", "api"))
    assert first.status_code == 202
    incident = first.json()["incident"]
    ro = world.store.get("rollouts", "prod", "api")
    assert first.json() == {"incident": f"ARGO-prod-api-r{ro['metadata']['annotations']['rollout.argoproj.io/revision']}",
                            "status": "queued"}
    again = [service.post(rendered_body(world, "prod", "api", t)) for t in
             ("on-rollout-aborted", "on-analysis-run-failed", "on-analysis-run-error")]
    again += [service.post(b) for b in _argo_events_forms(rendered_body(world, "prod", "api"))]
    for resp in again:
        assert resp.status_code == 200 and resp.json()["incident"] == incident and resp.json()["duplicate"] is True
    done = service.wait_status(incident, ("done", "failed"), 120)
    assert done["status"] == "done" and done["exit_code"] == 0 and done["attempt"] == 1
    assert done["notifications"] == 6 and set(done["triggers"]) == {"on-rollout-aborted", "on-analysis-run-failed",
                                                                     "on-analysis-run-error"}
    assert done["verdicts"] == {"confirm-rollback-status": "pass"}
    assert [a["outcome"] for a in done["attempts"]] == ["completed"]
    [run_dir] = record_dirs(service.out, incident)  # started once, never again
    assert done["record"] == str(run_dir)
    rec = json.loads((run_dir / "record.json").read_text(encoding="utf-8"))
    assert (rec["namespace"], rec["rollout"], rec["exit_code"], rec["partial"]) == ("prod", "api", 0, False)
    assert rec["findings"]["canary_revision"] == int(ro["metadata"]["annotations"]["rollout.argoproj.io/revision"])
    serve_doc = json.loads((run_dir / "serve.json").read_text(encoding="utf-8"))
    assert serve_doc["state"] == "completed" and serve_doc["attempt"] == 1 and serve_doc["resumed"] is False
    run = world.store.get("analysisruns", "prod", serve_doc["notification"]["analysisRun"])
    assert run["metadata"]["labels"]["rollouts-pod-template-hash"] == ro["status"]["currentPodHash"]
    assert record.verify_manifest(run_dir) == []  # serve.json and first-look.json are sealed in
    assert [e.incident for e in history.query(service.out)] == [incident]  # indexed by the record hook
    assert _metric(service, "rollbook_serve_notifications_accepted_total", trigger="on-rollout-aborted") == 1
    assert sum(_metric(service, "rollbook_serve_notifications_deduplicated_total", trigger=t) for t in
               ("on-rollout-aborted", "on-analysis-run-failed", "on-analysis-run-error")) == 5


def test_first_look_is_recorded_as_a_dry_run_with_the_real_wire_formats(service: ServeProcess, world: Sandbox) -> None:
    incident = service.post(rendered_body(world, "prod", "api")).json()["incident"]
    done = service.wait_status(incident, ("done", "failed"), 120)
    look = json.loads((Path(done["record"]) / "first-look.json").read_text(encoding="utf-8"))
    assert look["notify"] is False and look["sent"] == []
    by = {d["service"]: d for d in look["deliveries"]}
    assert set(by) == {"slack", "webhook"} and not any(d["sent"] for d in by.values())
    slack = by["slack"]["request"]
    assert slack["url"].endswith("/***")  # the webhook URL is the secret: never recorded
    assert [b["type"] for b in slack["body"]["blocks"]][:2] == ["header", "section"]
    assert "revision" in slack["body"]["blocks"][0]["text"]["text"] and "MC" not in slack["body"]["text"][:11]
    hook = by["webhook"]["request"]
    assert hook["body"]["type"] == "rollbook.first-look" and hook["headers"]["Authorization"] == "Bearer ***"
    assert hook["body"]["message"]["record_link"] == done["record"]
    assert done["first_look"]["targets"] == ["slack", "webhook"] and done["first_look"]["sent"] == []
    assert world.services is not None and world.services.received("slack") == []  # a dry run sends nothing


def test_no_secret_reaches_the_records_or_the_queue(service: ServeProcess, world: Sandbox) -> None:
    incident = service.post(rendered_body(world, "prod", "api")).json()["incident"]
    service.wait_status(incident, ("done", "failed"), 120)
    service.stop()
    planted = [service.token, world.mc_read_token, world.mc_write_token, world.operator_token, world.viewer_token,
               *world.service_secrets.values()]
    for path in service.out.rglob("*"):
        if path.is_file() and path.suffix != ".zip":
            data = path.read_bytes()
            assert not [s for s in planted if s.encode() in data], path


@pytest.mark.xdist_group("serve-intake")
def test_health_and_metrics(intake: tuple[ServeProcess, Sandbox]) -> None:
    service, world = intake
    health = service.get("/healthz", auth=False)
    assert health.status_code == 200
    detail = health.json()
    assert detail["cluster"]["ok"] is True and detail["cluster"]["server"] == world.kube_url
    assert detail["queue"] == {"ok": True, "depth": {"queued": 0, "running": 0, "done": 0, "failed": 0},
                               "bound": 2, "full": False}
    text = service.get("/metrics", auth=False).text
    for name in ("rollbook_serve_notifications_accepted", "rollbook_serve_notifications_deduplicated",
                 "rollbook_serve_notifications_rejected_total", "rollbook_serve_queue_depth",
                 "rollbook_serve_run_seconds", "rollbook_serve_failures_total"):
        assert f"# TYPE {name}" in text or name in text
    assert service.get("/nope", auth=False).status_code == 404
    assert service.get("/v1/incidents/ARGO-none-r1").status_code == 404


def test_healthz_is_503_when_the_cluster_is_unreachable(world: Sandbox, tmp_path: Path) -> None:
    svc = ServeProcess(world, tmp_path / "svc", steps="1")
    svc.start()
    try:
        assert world.apiserver is not None
        world.apiserver.stop()
        resp = svc.get("/healthz", auth=False)
        assert resp.status_code == 503 and resp.json()["cluster"]["ok"] is False
        assert "could not be reached" in resp.json()["cluster"]["error"]
    finally:
        svc.stop()


def test_queue_full_is_429_with_retry_after_and_duplicates_still_200(world: Sandbox, tmp_path: Path) -> None:
    svc = ServeProcess(world, tmp_path / "svc", workers=1, queue=1, steps="1")
    svc.start()
    try:
        held = svc.post(rendered_body(world, *GATE)).json()["incident"]  # runs, held in step 1 by the gate
        wait_for(lambda: step1_is_waiting(world), 180, "step 1 of the held incident to wait for the rollback")
        assert svc.incident(held)["status"] == "running"
        queued = svc.post(rendered_body(world, "prod", "api"))
        assert queued.status_code == 202
        full = svc.post({"namespace": "prod", "rollout": "api", "revision": "8", "trigger": "on-rollout-aborted"})
        assert full.status_code == 429 and full.headers["Retry-After"] == "2" and "queue holds 1" in full.json()["error"]
        dup = svc.post(rendered_body(world, "prod", "api", "on-analysis-run-failed"))
        assert dup.status_code == 200 and dup.json()["incident"] == queued.json()["incident"]
        assert _metric(svc, "rollbook_serve_notifications_rejected_total", reason="queue_full") == 1
        assert _metric(svc, "rollbook_serve_queue_depth", status="queued") == 1
        assert svc.get("/healthz", auth=False).json()["queue"]["full"] is True
    finally:
        svc.stop()


def _serve(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rollbook.cli", "serve", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd, env=env)


def test_refuses_to_start_without_a_token_or_with_a_mutating_step(world: Sandbox, tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLBOOK_")}
    bare = tmp_path / "rollbook.yaml"
    bare.write_text(world.config_file.read_text(encoding="utf-8"), encoding="utf-8")
    res = _serve(["--config", str(bare), "--out", str(tmp_path / "o")], tmp_path, env)
    assert res.returncode == 2 and "needs a bearer token" in res.stderr and "serve.token_file" in res.stderr
    weak = tmp_path / "weak.yaml"
    cfg = yaml.safe_load(bare.read_text(encoding="utf-8")) | {"serve": {"token_env": "WEAK"}}
    weak.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    res = _serve(["--config", str(weak)], tmp_path, env | {"WEAK": "short"})
    assert res.returncode == 2 and "at least 16" in res.stderr
    literal = tmp_path / "literal.yaml"
    literal.write_text(yaml.safe_dump(cfg | {"serve": {"token": "x" * 32}}), encoding="utf-8")
    res = _serve(["--config", str(literal)], tmp_path, env)
    assert res.returncode == 2 and "literal secret" in res.stderr
    token_env = env | {"ROLLBOOK_SERVE_TOKEN": "t" * 32}
    res = _serve(["--config", str(bare), "--steps", "1,4"], tmp_path, token_env)
    assert res.returncode == 2 and "never mutates" in res.stderr
    res = _serve(["--config", str(bare), "--executor", "kubernetes", "--context", "no-such-context"], tmp_path,
                 token_env)
    assert res.returncode == 2 and "cannot submit Jobs" in res.stderr and "no-such-context" in res.stderr
    assert not (tmp_path / "o").exists()


def test_with_notify_the_first_look_reaches_slack_and_the_webhook(world: Sandbox, tmp_path: Path) -> None:
    svc = ServeProcess(world, tmp_path / "svc", steps="1", serve_options={"notify": True}).start()
    try:
        incident = svc.post(rendered_body(world, "prod", "api")).json()["incident"]
        done = svc.wait_status(incident, ("done", "failed"), 180)
        assert done["status"] == "done" and sorted(done["first_look"]["sent"]) == ["slack", "webhook"]
        assert world.services is not None
        [slack] = world.services.received("slack")
        message = json.loads(slack.body)
        assert message["blocks"][0]["type"] == "header" and "prod/api revision" in message["blocks"][0]["text"]["text"]
        [hook] = world.services.received("webhook")
        body = json.loads(hook.body)
        assert body["type"] == "rollbook.first-look" and body["message"]["incident"] == incident
        assert body["message"]["facts"]["1 confirm-rollback-status"] == "pass"
        assert hook.headers.get("Idempotency-Key", hook.headers.get("idempotency-key", "")).endswith("/first-look")
    finally:
        svc.stop()


def test_relative_config_and_out_as_a_user_types_them(world: Sandbox, tmp_path: Path) -> None:
    svc = ServeProcess(world, tmp_path / "svc", steps="1", relative=True).start()
    try:
        incident = svc.post(rendered_body(world, "prod", "api")).json()["incident"]
        done = svc.wait_status(incident, ("done", "failed"), 180)
        assert done["status"] == "done" and done["verdicts"] == {"confirm-rollback-status": "pass"}, done
        assert Path(done["record"]).is_absolute() and Path(done["record"]).is_relative_to(svc.out)
    finally:
        svc.stop()


def test_preflight_runs_at_start_and_on_request(service: ServeProcess, world: Sandbox) -> None:
    # issue 10: the team sees what will break the playbook before the first abort, from the service itself
    from rollbook.preflight.run import run_preflight

    assert service.get("/v1/preflight", auth=False).status_code == 401
    served = wait_for(lambda: (r := service.get("/v1/preflight").json())["status"] in ("done", "failed") and r,
                      60, "the start-up preflight to finish", interval=0.2)
    assert served["status"] == "done" and served["findings"], served
    direct = run_preflight(all_namespaces=True, config=str(service.config()))
    assert sorted((f["id"], f["object"], f["field"]) for f in served["findings"]) == \
        sorted((f.id, f.object, f.field) for f in direct.findings)
    assert served["summary"] == direct.counts and served["exit_code"] == direct.exit_code
    for severity, count in direct.counts.items():
        assert _metric(service, "rollbook_preflight_findings", severity=severity) == count
    first = served["checked_at"]
    assert service.get("/v1/preflight?refresh=1").json()["checked_at"] == first  # bounded: one check per 30 s
