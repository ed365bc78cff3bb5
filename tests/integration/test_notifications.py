"""Argo's notifications, simulated by the sandbox (lib/rollbook/sandbox/notifications.py), end to end:
the shipped ConfigMap applied and a Rollout annotated through the real kubernetes client, a retry whose
analysis fails -> the controller's Events -> the webhooks -> a real `rollbook serve` -> one incident, its
record, `rollbook history`. And the webhook's retries, against a scripted receiver."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster_harness import RECORDS, deploy, jobs_of, needs_kubectl, record, token_context
from kubernetes import client, config
from serve_harness import DEPLOY, EVIDENCE_GAP, ServeProcess, build_scenario, wait_for

from rollbook.httpserver import HTTPServer
from rollbook.sandbox.controller import Timings
from rollbook.sandbox.notifications import CONFIGMAP, CONTROLLER_NAMESPACE, SECRET, Delivery
from rollbook.sandbox.server import Sandbox

TIMINGS = Timings(analysis_seconds=0.1, error_interval_seconds=0.02, scale=0.01, idle_poll_seconds=0.05)
SUBSCRIBE = "notifications.argoproj.io/subscribe.rollbook"
SHIPPED_URL = "http://rollbook.rollbook.svc:8686/v1/argo-rollouts"


@pytest.fixture
def world(tmp_path: Path, sandbox_factory: Callable[..., Sandbox]) -> Sandbox:
    """Two namespaces with the evidence-gap Rollout `api` (aborted at revision 7, its evidence still missing)."""
    return sandbox_factory(build_scenario(tmp_path / "scenario", copies=["prod", "shop"]), timings=TIMINGS)


def _apis(sb: Sandbox) -> tuple[client.CoreV1Api, client.CustomObjectsApi]:
    api = config.new_client_from_config(str(sb.kubeconfig), context="sandbox")
    return client.CoreV1Api(api), client.CustomObjectsApi(api)


def apply_notification_config(sb: Sandbox, url: str, token: str, **service: Any) -> None:
    """What the README has a user do: the shipped ConfigMap (its URL pointed at the receiver, `service` keys
    added), the token into the controller's notification Secret."""
    core, _ = _apis(sb)
    cm = yaml.safe_load(DEPLOY.read_text(encoding="utf-8"))
    options = yaml.safe_load(cm["data"]["service.webhook.rollbook"])
    assert options["url"] == SHIPPED_URL and options["headers"][1]["value"] == "Bearer $rollbook-token"
    cm["data"]["service.webhook.rollbook"] = yaml.safe_dump({**options, "url": url, **service})
    core.create_namespaced_config_map(CONTROLLER_NAMESPACE, cm, _request_timeout=10)
    core.patch_namespaced_secret(SECRET, CONTROLLER_NAMESPACE, {"stringData": {"rollbook-token": token}},
                                 _request_timeout=10)


def subscribe(sb: Sandbox, namespace: str, name: str = "api") -> None:
    _, custom = _apis(sb)
    custom.patch_namespaced_custom_object("argoproj.io", "v1alpha1", namespace, "rollouts", name,
                                          {"metadata": {"annotations": {SUBSCRIBE: ""}}}, _request_timeout=10)


def retry(sb: Sandbox, namespace: str, name: str = "api") -> None:
    """`kubectl argo rollouts retry`: the controller re-runs the analysis, which fails again (no evidence)."""
    _, custom = _apis(sb)
    custom.patch_namespaced_custom_object_status("argoproj.io", "v1alpha1", namespace, "rollouts", name,
                                                 {"status": {"abort": False}}, _request_timeout=10)


def aborted(sb: Sandbox, namespace: str) -> bool:
    """The notification controller has handled the new RolloutAborted Event of namespace/api."""
    assert sb.notifications is not None
    return sb.notifications.idle() and any(h.namespace == namespace and h.trigger == "on-rollout-aborted"
                                           for h in sb.notifications.handled)


def deliveries(sb: Sandbox, namespace: str) -> list[Delivery]:
    assert sb.notifications is not None
    return [d for d in sb.notifications.deliveries if d.namespace == namespace]


@pytest.fixture
def service(world: Sandbox, tmp_path: Path) -> Iterator[ServeProcess]:
    svc = ServeProcess(world, tmp_path / "svc", workers=1, steps="1")
    yield svc.start()
    svc.stop()


def test_an_abort_reaches_rollbook_serve_once_and_the_record_is_in_the_history(
        world: Sandbox, service: ServeProcess) -> None:
    apply_notification_config(world, f"{service.url}/v1/argo-rollouts", service.token)
    subscribe(world, "prod")           # shop/api stays unsubscribed
    retry(world, "prod")
    retry(world, "shop")
    wait_for(lambda: aborted(world, "prod") and aborted(world, "shop"), 30, "both aborts to be handled")

    sent = deliveries(world, "prod")   # the failed analysis and the abort: two triggers, two webhooks
    assert [d.trigger for d in sent] == ["on-analysis-run-failed", "on-rollout-aborted"]
    assert all(d.ok and d.method == "POST" for d in sent), [d.summary() for d in sent]
    assert [d.attempts for d in sent] == [[202], [200]]   # the second is serve's duplicate answer
    assert ("Authorization", "Bearer $rollbook-token") in sent[0].headers   # recorded as configured, no token
    body = json.loads(sent[0].body)
    assert body["analysisRun"] == "api-6d4f8b7c9-7-2.1" and body["revision"] == "7"  # the run that just failed
    assert deliveries(world, "shop") == []
    assert [h.destinations for h in world.notifications.handled  # type: ignore[union-attr]
            if h.namespace == "shop" and h.trigger == "on-rollout-aborted"] == [0]

    listed = service.get("/v1/incidents").json()
    assert [i["incident"] for i in listed["incidents"]] == ["ARGO-prod-api-r7"]
    done = service.wait_status("ARGO-prod-api-r7", ("done", "failed"), 180)
    assert done["status"] == "done" and done["notifications"] == 2, done
    assert sorted(done["triggers"]) == ["on-analysis-run-failed", "on-rollout-aborted"]
    record = json.loads(Path(done["record"], "record.json").read_text(encoding="utf-8"))
    assert record["incident"] == "ARGO-prod-api-r7"
    history = subprocess.run([sys.executable, "-m", "rollbook.cli", "history", "--out", str(service.out), "--json"],
                             capture_output=True, text=True, timeout=60, check=True)
    (row,) = json.loads(history.stdout)
    assert (row["incident"], row["namespace"], row["rollout"], row["canary_revision"]) == ("ARGO-prod-api-r7", "prod",
                                                                                         "api", 7)


class _Receiver(HTTPServer):
    """A webhook receiver that answers from a script (the last answer repeats) and counts the requests."""

    def __init__(self, answers: list[int]) -> None:
        self.answers, self.requests = answers, 0
        self.bodies: list[bytes] = []
        super().__init__(("127.0.0.1", 0), _Answer)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/argo-rollouts"


class _Answer(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        srv = self.server
        srv.bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        code = srv.answers[min(srv.requests, len(srv.answers) - 1)]
        srv.requests += 1
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[_Receiver]:
    srv = _Receiver(request.param)
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize(("receiver", "attempts", "ok", "says"), [
    ([503, 503, 202], [503, 503, 202], True, ""),
    ([503], [503, 503, 503], False, "giving up after 3 attempt(s): unexpected HTTP status 503"),
    ([500, 429, 502, 204], [500, 429, 502], False, "giving up after 3 attempt(s): unexpected HTTP status 502"),
    ([501], [501], False, "has failed with error code 501"),       # go-retryablehttp: 501 is final
    ([401], [401], False, "has failed with error code 401"),
], indirect=["receiver"])
def test_the_webhook_is_retried_on_5xx_and_429_at_most_retry_max_times(
        world: Sandbox, receiver: _Receiver, attempts: list[int], ok: bool, says: str) -> None:
    assert world.notifications is not None
    world.notifications.wait_scale = 0.001   # 1 s, 2 s -> milliseconds; the count is what Argo's would be
    apply_notification_config(world, receiver.url, "t" * 32, retryMax=2)
    subscribe(world, "prod")
    world.store.patch("configmaps", CONTROLLER_NAMESPACE, CONFIGMAP, {"data": {  # one trigger, one webhook
        "defaultTriggers.rollbook": "- on-rollout-aborted\n"}}, "merge")
    retry(world, "prod")
    wait_for(lambda: aborted(world, "prod"), 30, "the abort to be handled")
    (sent,) = deliveries(world, "prod")
    assert sent.attempts == attempts and receiver.requests == len(attempts) and sent.ok is ok
    assert says in sent.error and (ok or "POST " + receiver.url in sent.error)
    assert len(set(receiver.bodies)) == 1    # every retry sends the same rendered body


def test_a_refused_connection_is_retried_then_given_up(world: Sandbox) -> None:
    assert world.notifications is not None
    world.notifications.wait_scale = 0.001
    apply_notification_config(world, "http://127.0.0.1:9/v1/argo-rollouts", "t" * 32, retryMax=1)
    subscribe(world, "prod")
    retry(world, "prod")
    wait_for(lambda: aborted(world, "prod"), 30, "the abort to be handled")
    for sent in deliveries(world, "prod"):
        assert sent.attempts == ["ConnectError", "ConnectError"] and not sent.ok
        assert "giving up after 2 attempt(s)" in sent.error


def test_what_the_simulation_does_not_do_fails_loudly(world: Sandbox) -> None:
    """A `when` condition (expr-lang) and a non-webhook service are not simulated: a failed delivery says so."""
    apply_notification_config(world, "http://127.0.0.1:9/v1/argo-rollouts", "t" * 32)
    world.store.patch("configmaps", CONTROLLER_NAMESPACE, CONFIGMAP, {"data": {
        "trigger.on-rollout-aborted": "- when: rollout.status.phase == 'Degraded'\n  send: [rollbook-abort]\n",
        "service.slack": "token: $slack-token\n",
        "trigger.on-analysis-run-failed": "- send: [rollbook-analysis-run-failed]\n"}}, "merge")
    _, custom = _apis(world)
    custom.patch_namespaced_custom_object("argoproj.io", "v1alpha1", "prod", "rollouts", "api", {"metadata": {
        "annotations": {"notifications.argoproj.io/subscribe.on-rollout-aborted.rollbook": "",
                        "notifications.argoproj.io/subscribe.on-analysis-run-failed.slack": "#oncall"}}},
        _request_timeout=10)
    retry(world, "prod")
    wait_for(lambda: aborted(world, "prod"), 30, "the abort to be handled")
    by_trigger = {d.trigger: d for d in deliveries(world, "prod")}
    assert set(by_trigger) == {"on-rollout-aborted", "on-analysis-run-failed"}
    assert "expr-lang condition, not simulated" in by_trigger["on-rollout-aborted"].error
    slack = by_trigger["on-analysis-run-failed"]
    assert slack.recipient == "#oncall" and "'slack'" in slack.error and "not simulated" in slack.error
    assert not any(d.attempts for d in by_trigger.values())


@pytest.mark.parametrize("receiver", [[202]], indirect=True)
def test_a_user_abort_during_the_analysis_sends_on_rollout_aborted_alone(
        tmp_path: Path, sandbox_factory: Callable[..., Sandbox], receiver: _Receiver) -> None:
    held = Timings(analysis_seconds=0.1, error_interval_seconds=0.02, scale=0.01, idle_poll_seconds=0.05, held=True)
    sb = sandbox_factory(build_scenario(tmp_path / "scenario", copies=["prod"]), timings=held)
    apply_notification_config(sb, receiver.url, "t" * 32)
    subscribe(sb, "prod")
    retry(sb, "prod")                  # the new run stays Running: the controller's clock is held
    wait_for(lambda: sb.store.list("analysisruns", "prod", field_selector="metadata.name=api-6d4f8b7c9-7-2.1")[0],
             30, "the retried run")
    _, custom = _apis(sb)
    custom.patch_namespaced_custom_object_status("argoproj.io", "v1alpha1", "prod", "rollouts", "api",
                                                 {"status": {"abort": True}}, _request_timeout=10)
    wait_for(lambda: aborted(sb, "prod"), 30, "the abort to be handled")
    (sent,) = deliveries(sb, "prod")
    assert (sent.trigger, sent.ok, sent.attempts) == ("on-rollout-aborted", True, [202])
    body = json.loads(receiver.bodies[0])
    assert body["trigger"] == "on-rollout-aborted" and body["analysisRun"] == "api-6d4f8b7c9-7-2.1"
    assert body["message"] == "RolloutAborted: Rollout aborted update to revision 7"


@pytest.mark.kubectl
@needs_kubectl
def test_in_the_cluster_an_abort_runs_one_job_whose_record_is_in_the_history(
        tmp_path: Path, sandbox_factory: Callable[..., Sandbox]) -> None:
    """The README's "In the cluster" on the sandbox: deploy/ applied, serve submitting Jobs as rollbook-serve,
    Argo's notification at the abort -> one Job under rollbook-viewer -> the record on the volume -> history."""
    sb = sandbox_factory(EVIDENCE_GAP, timings=TIMINGS)
    deploy(sb, tmp_path / "unused-records")
    svc = ServeProcess(sb, tmp_path / "svc", steps="1",
                       extra_args=("--executor", "kubernetes", "--context", token_context(sb, "rollbook-serve")))
    assert sb.jobs is not None
    sb.jobs.claim_dirs[RECORDS] = svc.out       # serve's --out is the records volume
    svc.start()
    try:
        apply_notification_config(sb, f"{svc.url}/v1/argo-rollouts", svc.token)
        subscribe(sb, "prod")
        retry(sb, "prod")
        wait_for(lambda: aborted(sb, "prod"), 30, "the abort to be handled")
        assert [d.attempts for d in deliveries(sb, "prod")] == [[202], [200]]
        done = svc.wait_status("ARGO-prod-api-r7", ("done", "failed"), 600)
    finally:
        svc.stop()
    assert done["status"] == "done" and done["exit_code"] == 0, done
    (job,) = jobs_of(sb, "ARGO-prod-api-r7")
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "rollbook-viewer"
    assert [c["type"] for c in job["status"]["conditions"]] == ["Complete"]
    run_dir, rec = record(svc.out, "ARGO-prod-api-r7")
    assert rec["context"] == "in-cluster" and [s["step"] for s in rec["steps"]] == [1]
    history = subprocess.run([sys.executable, "-m", "rollbook.cli", "history", "--out", str(svc.out), "--json"],
                             capture_output=True, text=True, timeout=60, check=True)
    assert [(r["incident"], Path(r["record"]).name) for r in json.loads(history.stdout)] == [
        ("ARGO-prod-api-r7", run_dir.name)]


@pytest.mark.kubectl
@needs_kubectl
@pytest.mark.parametrize("receiver", [[202]], indirect=True)
def test_the_readme_commands_on_rollbook_sandbox_print_the_delivery(tmp_path: Path, receiver: _Receiver) -> None:
    """"Start it from Argo" as typed: `rollbook sandbox`, env.sh, kubectl apply/patch/annotate; the sandbox's
    terminal says what Argo's controller log would (here the receiver stands in for serve)."""
    state, log = tmp_path / "state", tmp_path / "sandbox.log"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "rollbook.cli", "sandbox", "--state-dir", str(state)],
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err, text=True)
    try:
        wait_for(lambda: (state / "ready.json").exists() or proc.poll() is not None, 60, "rollbook sandbox")
        assert proc.poll() is None, log.read_text()
        env = dict(line.split("=", 1) for line in subprocess.run(
            ["bash", "-c", f"source {state / 'env.sh'} && env -0"], capture_output=True, check=True,
            timeout=10).stdout.decode().split("\0") if "=" in line)
        configmap = DEPLOY.read_text(encoding="utf-8").replace(SHIPPED_URL, receiver.url)
        for args, stdin in (
                (["-n", "argo-rollouts", "apply", "-f", "-"], configmap),
                (["-n", "argo-rollouts", "patch", "secret", SECRET, "--type", "merge",
                  "-p", json.dumps({"stringData": {"rollbook-token": "t" * 64}})], None),
                (["-n", "prod", "annotate", "rollout", "api", f"{SUBSCRIBE}="], None),
                (["-n", "prod", "patch", "rollout", "api", "--subresource", "status", "--type", "merge",
                  "-p", '{"status":{"abort":false}}'], None)):
            done = subprocess.run(["kubectl", *args], input=stdin, env=env, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
        said = wait_for(lambda: "on-rollout-aborted" in (t := log.read_text()) and t, 60, "the delivery line")
        assert (f"rollbook sandbox: notification on-analysis-run-failed of rollout prod/api -> rollbook: "
                f"POST {receiver.url} [202] sent") in said
        assert receiver.requests == 2
    finally:
        proc.terminate()
        proc.wait(timeout=20)
