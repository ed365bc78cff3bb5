"""`Sandbox` and `rollbook sandbox`: state files, readiness, real clients, clean shutdown on signals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from rollbook.sandbox.server import Sandbox

# Argo's upstream test data, shipped in the project (fixtures/argo-rollouts/README.md says from where)
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "argo-rollouts"
READY_KEYS = {"kube_url", "mc_url", "kubeconfig", "scenario", "pid", "rollouts"}


def env_exports(env_sh: Path) -> dict[str, str]:
    """The variables env.sh exports, as a shell would see them."""
    out = subprocess.run(["bash", "-c", f"source {env_sh} && env -0"], capture_output=True, check=True, timeout=10)
    return dict(line.split("=", 1) for line in out.stdout.decode().split("\0") if "=" in line)


# --------------------------------------------------------------------------- in process


def test_start_writes_the_state_files_and_reports_its_start_up_time(tmp_path: Path) -> None:
    # How fast it starts is measured by `make bench` (bench/read_model.py), not asserted here.
    began = time.perf_counter()
    with Sandbox("evidence-gap", tmp_path / "state") as sb:
        elapsed = time.perf_counter() - began
        assert 0 < sb.startup_seconds <= elapsed
        ready = json.loads(sb.ready_file.read_text())
        assert READY_KEYS <= set(ready) and ready["pid"] == os.getpid() and ready["scenario"] == "evidence-gap"
        assert ready["rollouts"] == [{"namespace": "prod", "name": "api"}]
        assert ready["kube_url"] == sb.kube_url and sb.kube_url.startswith("https://127.0.0.1:")
        assert ready["mc_url"] == sb.mc_url and sb.mc_url.startswith("http://127.0.0.1:")
        env = env_exports(sb.env_file)
        assert env["KUBECONFIG"] == str(sb.kubeconfig) and Path(env["KUBECONFIG"]).is_absolute()
        assert env["ROLLBOOK_MC_URL"] == sb.mc_url
        token_file = Path(env["ROLLBOOK_MC_TOKEN_FILE"])
        # a first look needs only MC's read-only token; the read-write one is opt-in (attaching evidence, demo)
        assert token_file.is_absolute() and token_file.read_text().strip() == sb.mc_read_token
        assert sb.mc_write_token not in json.dumps(env)
        assert env["ROLLBOOK_NAMESPACE"] == "prod" and env["ROLLBOOK_ROLLOUT"] == "api"
        config = yaml.safe_load(Path(env["ROLLBOOK_CONFIG"]).read_text())
        assert config["kube"] == {"kubeconfig": str(sb.kubeconfig), "read_context": "sandbox-viewer",
                                  "action_context": "sandbox"}
        assert sb.mc_write_token not in Path(env["ROLLBOOK_CONFIG"]).read_text()  # secrets by file only
        for secret in (token_file, sb.mc_token_file, sb.kubeconfig, *sb.secrets_dir.iterdir()):
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        kc = yaml.safe_load(sb.kubeconfig.read_text())
        assert kc["current-context"] == "sandbox"
        assert {c["name"] for c in kc["contexts"]} >= {"sandbox", "sandbox-viewer"}
        ready_file = sb.ready_file
    assert not ready_file.exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{ready['mc_url']}/health", timeout=2)


def test_operator_and_viewer_contexts_through_the_real_client(sandbox: Sandbox) -> None:
    viewer = client.CustomObjectsApi(config.new_client_from_config(str(sandbox.kubeconfig), context="sandbox-viewer"))
    items = viewer.list_cluster_custom_object("argoproj.io", "v1alpha1", "rollouts", _request_timeout=5)["items"]
    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in items] == [("prod", "api")]
    with pytest.raises(ApiException) as e:
        viewer.patch_namespaced_custom_object_status("argoproj.io", "v1alpha1", "prod", "rollouts", "api",
                                                     {"status": {"abort": False}}, _request_timeout=5)
    assert e.value.status == 403
    operator = client.CoreV1Api(config.new_client_from_config(str(sandbox.kubeconfig)))   # default context
    pods = operator.list_namespaced_pod("prod", _request_timeout=5).items
    assert len(pods) == 4


def test_mc_token_file_reads_the_verdict(sandbox: Sandbox) -> None:
    env = env_exports(sandbox.env_file)
    token = Path(env["ROLLBOOK_MC_TOKEN_FILE"]).read_text().strip()
    r = httpx.get(f"{env['ROLLBOOK_MC_URL']}/api/v1/releases/api-1.42.0/evidence-status",
                  params={"environment": "production"}, headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert r.status_code == 200 and r.json()["reason"] == "missing required evidence: test-report (junit)"


def test_a_folder_without_mc_yaml_starts(sandbox_factory: Callable[..., Sandbox]) -> None:
    sb = sandbox_factory(FIXTURES / "rollout-aborted")
    ready = json.loads(sb.ready_file.read_text())
    assert ready["scenario"] == "rollout-aborted"
    assert ready["rollouts"] == [{"namespace": "default", "name": "rollout-background-analysis"}]
    assert httpx.get(f"{sb.mc_url}/health", timeout=5).json() == {"status": "ok"}


def test_each_builtin_starts_and_says_which_scenario_it_serves(sandbox_factory: Callable[..., Sandbox]) -> None:
    # Start-up time is a benchmark number (`make bench`), not a test assertion: these machines are shared.
    for name in ("evidence-gap", "slo-regression", "rollback-loop", "release-mismatch", "evidence-lost",
                 "mc-errors", "healthy"):
        sb = sandbox_factory(name)
        ready = json.loads(sb.ready_file.read_text())
        assert ready["scenario"] == name and ready["rollouts"], ready
        assert httpx.get(f"{sb.mc_url}/health", timeout=5).json() == {"status": "ok"}
        sb.stop()


# --------------------------------------------------------------------------- `rollbook sandbox` as a process


@pytest.fixture
def run_cli(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start `rollbook sandbox ...` processes; any still running at teardown is killed (by its own pid)."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-m", "rollbook.cli", "sandbox", *args], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def wait_ready(state: Path, proc: subprocess.Popen[str], timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (state / "ready.json").exists():
            return dict(json.loads((state / "ready.json").read_text()))
        if proc.poll() is not None:
            pytest.fail(f"rollbook sandbox exited early ({proc.returncode}): {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)
    pytest.fail(f"no ready.json in {state} after {timeout}s")


def test_rollbook_sandbox_serves_until_sigterm(tmp_path: Path, run_cli: Callable[..., subprocess.Popen[str]]) -> None:
    state = tmp_path / "state"
    proc = run_cli("--scenario", "slo-regression", "--state-dir", str(state))
    ready = wait_ready(state, proc)
    assert ready["pid"] == proc.pid and ready["scenario"] == "slo-regression"
    line = proc.stdout.readline() if proc.stdout else ""
    assert f"source {state.resolve() / 'env.sh'}" in line and "kubectl get rollouts -A" in line
    api = client.CustomObjectsApi(config.new_client_from_config(ready["kubeconfig"], context="sandbox"))
    ro = api.get_namespaced_custom_object("argoproj.io", "v1alpha1", "payments", "rollouts", "payments-api",
                                          _request_timeout=5)
    assert ro["status"]["phase"] == "Degraded"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert not (state / "ready.json").exists()


@pytest.mark.kubectl
@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_works_with_env_sh_and_sigint_stops(tmp_path: Path,
                                                    run_cli: Callable[..., subprocess.Popen[str]]) -> None:
    state = tmp_path / "state"
    proc = run_cli("--state-dir", str(state))
    wait_ready(state, proc)
    env = {**os.environ, **env_exports(state / "env.sh")}
    out = subprocess.run(["kubectl", "get", "rollouts", "-A", "--request-timeout=10s"], check=False, env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "prod" in out.stdout and "api" in out.stdout
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0
    assert not (state / "ready.json").exists()


def test_unknown_scenario_exits_2_listing_builtins(tmp_path: Path,
                                                   run_cli: Callable[..., subprocess.Popen[str]]) -> None:
    proc = run_cli("--scenario", "nope", "--state-dir", str(tmp_path / "state"))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "nope" in err and "evidence-gap" in err and "healthy" in err
    assert not (tmp_path / "state" / "ready.json").exists()


@pytest.mark.scenario("evidence-gap")  # no prometheus.yaml: the stand-in serves what the runs measured
def test_prometheus_stand_in_serves_what_the_runs_measured(sandbox: Sandbox) -> None:
    env = env_exports(sandbox.env_file)
    run = sandbox.store.list("analysisruns", "prod")[0][0]
    err = next(r for r in run["status"]["metricResults"] if r["name"] == "ig-error-rate")
    query = err["metadata"]["ResolvedPrometheusQuery"]
    body = httpx.get(f"{env['ROLLBOOK_PROMETHEUS_URL']}/api/v1/query", params={"query": query}, timeout=5).json()
    assert [s["value"][1] for s in body["data"]["result"]] == [err["measurements"][-1]["value"].strip("[]")]
    assert json.loads(sandbox.ready_file.read_text())["prometheus_url"] == sandbox.prometheus_url


@pytest.mark.scenario("slo-regression")
def test_prometheus_stand_in_serves_the_scenarios_series_for_canary_and_stable(sandbox: Sandbox) -> None:
    env = env_exports(sandbox.env_file)
    run = sandbox.store.list("analysisruns", "payments")[0][0]
    err = next(r for r in run["status"]["metricResults"] if r["name"] == "ig-error-rate")
    query = err["metadata"]["ResolvedPrometheusQuery"]
    stable = sandbox.store.get("rollouts", "payments", "payments-api")["status"]["stableRS"]
    canary = run["metadata"]["labels"]["rollouts-pod-template-hash"]
    url = f"{env['ROLLBOOK_PROMETHEUS_URL']}/api/v1/query"
    for hash_, breaches in ((canary, True), (stable, False)):
        body = httpx.get(url, params={"query": query.replace(canary, hash_)}, timeout=5).json()
        (value,) = [float(s["value"][1]) for s in body["data"]["result"]]
        assert (value > 0.01) is breaches


# --------------------------------------------------------------------------- issue 13 item 9

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_viewer_cannot_read_secrets_like_a_real_view_role(sandbox: Sandbox) -> None:
    sandbox.store.create("secrets", "prod", {"metadata": {"name": "db"}, "stringData": {"password": "hunter2"}})
    viewer = client.CoreV1Api(config.new_client_from_config(str(sandbox.kubeconfig), context="sandbox-viewer"))
    for call in (lambda: viewer.list_namespaced_secret("prod", _request_timeout=5),
                 lambda: viewer.read_namespaced_secret("db", "prod", _request_timeout=5),
                 lambda: viewer.list_secret_for_all_namespaces(_request_timeout=5)):
        with pytest.raises(ApiException) as e:
            call()
        assert e.value.status == 403 and 'cannot' in json.loads(e.value.body)["message"]
    assert len(viewer.list_namespaced_pod("prod", _request_timeout=5).items) == 4   # everything else still reads
    operator = client.CoreV1Api(config.new_client_from_config(str(sandbox.kubeconfig)))
    assert operator.read_namespaced_secret("db", "prod", _request_timeout=5).data["password"]
    auth = client.AuthorizationV1Api(config.new_client_from_config(str(sandbox.kubeconfig), context="sandbox-viewer"))
    review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
        resource_attributes=client.V1ResourceAttributes(verb="get", resource="secrets", namespace="prod")))
    assert auth.create_self_subject_access_review(review, _request_timeout=5).status.allowed is False
    rules = auth.create_self_subject_rules_review(client.V1SelfSubjectRulesReview(
        spec=client.V1SelfSubjectRulesReviewSpec(namespace="prod")), _request_timeout=5).status.resource_rules
    assert "secrets" not in rules[0].resources and "pods" in rules[0].resources


def test_env_sh_hands_out_only_mcs_read_token(sandbox: Sandbox) -> None:
    env = env_exports(sandbox.env_file)
    token = Path(env["ROLLBOOK_MC_TOKEN_FILE"]).read_text().strip()
    attach = httpx.post(f"{sandbox.mc_url}/api/v1/releases/api-1.42.0/evidence", params={"environment": "production"},
                        headers={"Authorization": f"Bearer {token}"}, timeout=5,
                        json={"name": "test-report", "type": "junit", "summary": {"total": 1, "failures": 0}})
    assert attach.status_code == 403                      # the default session cannot change MC
    assert "token_file" not in yaml.safe_load(sandbox.config_file.read_text())["mc"]  # env decides, not the file


def test_the_sandbox_ships_the_sample_report_the_readme_follow_up_attaches(sandbox: Sandbox) -> None:
    import xml.etree.ElementTree as ET

    assert "--param evidence_file=.sandbox/reports/junit.xml" in README
    assert sandbox.sample_report == sandbox.state_dir / "reports" / "junit.xml"
    suites = ET.fromstring(sandbox.sample_report.read_text())
    assert int(suites.get("tests", "0")) > 0 and suites.get("failures") == "0" and suites.get("errors") == "0"
    assert "ROLLBOOK_MC_TOKEN_FILE=$PWD/.sandbox/mc-write-token" in README


def test_stopping_the_sandbox_turns_env_sh_into_a_notice(tmp_path: Path) -> None:
    with Sandbox("healthy", tmp_path / "state") as sb:
        url = sb.kube_url
        assert env_exports(sb.env_file)["KUBECONFIG"] == str(sb.kubeconfig)
    proc = subprocess.run(["bash", "-c", f"source {sb.env_file}; echo rc=$?; echo KUBECONFIG=${{KUBECONFIG:-}}"],
                          capture_output=True, text=True, timeout=10, env={"PATH": os.environ["PATH"]})
    assert "rc=1" in proc.stdout and "KUBECONFIG=\n" in proc.stdout + "\n"
    assert "is stopped" in proc.stderr and url in proc.stderr and f"--state-dir {sb.state_dir}" in proc.stderr


def test_the_upstream_fixtures_the_readme_names_ship_in_the_project() -> None:
    named = [line.split("--scenario ", 1)[1].split("`")[0] for line in README.splitlines()
             if "--scenario fixtures/" in line]
    assert named, "the README names a fixture folder"
    for folder in named:
        assert (ROOT / folder).is_dir() and list((ROOT / folder).glob("*.yaml"))
    assert "../shared" not in README
    assert "Apache" in (ROOT / "fixtures" / "argo-rollouts" / "README.md").read_text()


def test_the_readme_says_the_argo_kubectl_plugin_is_not_installed() -> None:
    assert "`kubectl argo rollouts` (the Argo plugin the playbook quotes) is **not installed here**" in README


def test_sandbox_faults_file_reaches_the_real_client_and_a_bad_one_is_refused(
        tmp_path: Path, run_cli: Callable[..., subprocess.Popen[str]]) -> None:
    rules = tmp_path / "faults.yaml"
    rules.write_text("faults:\n  - {service: kube, method: GET, path: '*/rollouts/payments-api', fault: status,\n"
                     "     status: 403, count: 1}\n  - {service: mc, fault: html_login, count: null}\n")
    state = tmp_path / "state"
    proc = run_cli("--scenario", "slo-regression", "--state-dir", str(state), "--faults", str(rules))
    ready = wait_ready(state, proc)
    api = client.CustomObjectsApi(config.new_client_from_config(ready["kubeconfig"], context="sandbox"))
    with pytest.raises(client.ApiException) as denied:
        api.get_namespaced_custom_object("argoproj.io", "v1alpha1", "payments", "rollouts", "payments-api",
                                         _request_timeout=5)
    assert denied.value.status == 403 and "injected fault" in str(denied.value.body)
    ro = api.get_namespaced_custom_object("argoproj.io", "v1alpha1", "payments", "rollouts", "payments-api",
                                          _request_timeout=5)  # count 1: the next one is served
    assert ro["metadata"]["name"] == "payments-api"
    import httpx

    page = httpx.get(f"{ready['mc_url']}/health", timeout=5)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0

    bad = tmp_path / "bad.yaml"
    bad.write_text("faults:\n  - {service: kube, fault: explode}\n")
    refused = subprocess.run([sys.executable, "-m", "rollbook.cli", "sandbox", "--state-dir", str(tmp_path / "s2"),
                              "--faults", str(bad)], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "fault 'explode' is not one of" in refused.stderr
    assert "Traceback" not in refused.stderr
