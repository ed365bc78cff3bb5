"""`Sandbox`: the store, API server, MC stand-in, loader and controller composed; `rollbook sandbox`."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, Self

from rollbook.sandbox.apiserver import ApiServer, User
from rollbook.sandbox.controller import Controller, Timings
from rollbook.sandbox.faults import FaultPlan
from rollbook.sandbox.faults import install as install_faults
from rollbook.sandbox.jobs import JobRunner
from rollbook.sandbox.kubeconfig import write_kubeconfig
from rollbook.sandbox.loader import ScenarioInfo, load_scenario
from rollbook.sandbox.mc import MCServer
from rollbook.sandbox.prometheus import PrometheusServer, load_prometheus_spec, spec_from_runs
from rollbook.sandbox.rbac import RbacAuthorizer
from rollbook.sandbox.rbac import bootstrap as rbac_bootstrap
from rollbook.sandbox.services import ServicesServer
from rollbook.sandbox.store import Store
from rollbook.sandbox.tls import make_server_cert

# Ticket keys the Jira stand-in knows (a real Jira answers 404 for any other).
SANDBOX_TICKETS = ("INC-1234", "INC-42", "DEMO-1", "CHG-7", "CHG-1")


class Sandbox:
    """A local cluster + Argo controller + MC, on 127.0.0.1, described by files in ``state_dir``."""

    def __init__(self, scenario: str | Path = "evidence-gap", state_dir: Path = Path(".sandbox"),
                 port: int = 0, *, admin: bool = False, timings: Timings | None = None,
                 faults: FaultPlan | None = None) -> None:
        self.scenario = scenario
        self.state_dir = Path(state_dir).resolve()
        self.port = port
        self.admin = admin
        self.timings = timings or Timings()
        self.faults = faults  # injected at the HTTP layer of every server (sandbox/faults.py)
        self.operator_token = secrets.token_urlsafe(24)
        self.viewer_token = secrets.token_urlsafe(24)
        self.mc_read_token = secrets.token_urlsafe(24)
        self.mc_write_token = secrets.token_urlsafe(24)
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.env_file = self.state_dir / "env.sh"
        self.mc_token_file = self.state_dir / "mc-token"
        self.mc_write_token_file = self.state_dir / "mc-write-token"
        self.ready_file = self.state_dir / "ready.json"
        self.config_file = self.state_dir / "rollbook.yaml"
        self.sample_report = self.state_dir / "reports" / "junit.xml"  # the README's follow-up attaches it
        self.secrets_dir = self.state_dir / "secrets"
        self.service_secrets = {name: secrets.token_urlsafe(18) for name in
                                ("pagerduty-routing-key", "slack-path", "webhook-token", "jira-token", "grafana-token")}
        self.services: ServicesServer | None = None
        self.services_url = ""
        self.store = Store()
        self.kube_url = ""
        self.mc_url = ""
        self.prometheus_url = ""
        self.prometheus: PrometheusServer | None = None
        self.startup_seconds = 0.0
        self.info: ScenarioInfo | None = None
        self.apiserver: ApiServer | None = None
        self.mc: MCServer | None = None
        self.controller: Controller | None = None
        self.jobs: JobRunner | None = None
        self.rbac: RbacAuthorizer | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Load the scenario, start the servers and controller, write the state files (ready.json last)."""
        began = time.perf_counter()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.ready_file.unlink(missing_ok=True)   # a stale one from a killed run must not look ready
        try:
            self.info = load_scenario(self.store, self.scenario)
            self._start_apiserver()
            self._start_mc(self.info.mc_state or {})
            self._start_prometheus()
            self._start_services()
            self.controller = Controller(self.store, mc_url=self.mc_url, mc_token=self.mc_read_token,
                                         mc_write_token=self.mc_write_token, timings=self.timings)
            self.controller.start()
            self.jobs = JobRunner(self.store, kube_url=self.kube_url, ca_pem=self._ca_pem,
                                  state_dir=self.state_dir, token_for=self.service_account_token,
                                  runbooks=_runbooks())
            if self.faults is not None:
                install_faults(self, self.faults)
            self._write_files()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - began
        return self

    def stop(self) -> None:
        """Stop everything that started (controller first: it talks to MC), withdraw ready.json and turn
        env.sh into a notice: sourcing it says the sandbox is stopped instead of exporting a dead port."""
        self.ready_file.unlink(missing_ok=True)
        if self.jobs is not None:
            self.jobs.stop()
            self.jobs = None
        if self.faults is not None:
            self.faults.stopping.set()  # wakes handlers sleeping in a latency or hang fault
        if self.env_file.is_file() and self.kube_url:
            self._write_stopped_env()
        for part in (self.controller, self.apiserver, self.mc, self.prometheus, self.services):
            if part is not None:
                part.stop()
        self.controller = self.apiserver = self.mc = self.prometheus = self.services = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def rollouts(self) -> list[tuple[str, str]]:
        """(namespace, name) of the scenario's Rollouts."""
        return list(self.info.rollouts) if self.info else []

    # ------------------------------------------------------------------ parts

    def _start_apiserver(self) -> None:
        cert = make_server_cert(self.state_dir / "tls")
        users = {self.operator_token: User("operator", "operator"), self.viewer_token: User("viewer", "viewer")}
        self.apiserver = ApiServer(self.store, users=users, port=self.port, certfile=str(cert.certfile),
                                   keyfile=str(cert.keyfile))
        # RBAC from the store's Role/ClusterRole/...Binding objects; the built-in users are bound like anyone else
        for plural, obj in rbac_bootstrap():
            self.store.create(plural, None, obj)
        self.rbac = self.apiserver.authorizer = RbacAuthorizer(self.store, self.apiserver.users)
        self.kube_url = self.apiserver.start()
        self._ca_pem = cert.ca_pem

    def service_account_token(self, namespace: str, name: str) -> str:
        """A bearer token for an existing ServiceAccount (404 StoreError otherwise), as a pod's mounted token."""
        assert isinstance(self.rbac, RbacAuthorizer)
        return str(self.rbac.issue_token(namespace, name)["token"])

    def _start_mc(self, state: dict[str, Any]) -> None:
        self.mc = MCServer(state, read_token=self.mc_read_token, write_token=self.mc_write_token, admin=self.admin)
        self.mc_url = self.mc.start()

    def _start_prometheus(self) -> None:
        """The Prometheus stand-in: the scenario's prometheus.yaml, else the values its AnalysisRuns measured."""
        spec = load_prometheus_spec(self.info.path) if self.info else None
        if spec is None:
            series: list[Any] = []
            for ns, name in self.rollouts:
                ro = self.store.get("rollouts", ns, name)
                runs = [r for r in self.store.list("analysisruns", ns)[0]
                        if any(o.get("uid") == ro["metadata"]["uid"] for o in r["metadata"].get("ownerReferences") or [])]
                series.extend(spec_from_runs(runs, ro)["series"])
            spec = {"series": series}
        self.prometheus = PrometheusServer(spec)
        self.prometheus_url = self.prometheus.start()

    def _start_services(self) -> None:
        """PagerDuty, Slack, webhook, Jira and Grafana stand-ins, each with its own random secret."""
        sec = self.service_secrets
        self.services = ServicesServer(
            routing_key=sec["pagerduty-routing-key"][:32].ljust(32, "0"),
            slack_path=f"/services/T0SANDBOX/B0SANDBOX/{sec['slack-path']}",
            webhook_token=sec["webhook-token"], jira_user="oncall@example.com", jira_token=sec["jira-token"],
            jira_issues={key: "Canary aborted by its analysis gate" for key in SANDBOX_TICKETS},
            grafana_token=sec["grafana-token"], grafana_dashboards={"rollout-slo": "rollout-slo"})
        self.services_url = self.services.start()

    def _write_config(self) -> None:
        """rollbook.yaml for the sandbox: every service's URL, secrets only as 0600 files beside it."""
        import yaml

        assert self.services is not None
        self.secrets_dir.mkdir(exist_ok=True)
        files = {name: self.secrets_dir / name for name in self.service_secrets}
        _write_secret(files["pagerduty-routing-key"], self.services.routing_key + "\n")
        _write_secret(files["slack-path"], f"{self.services_url}{self.services.slack_path}\n")
        _write_secret(files["webhook-token"], self.service_secrets["webhook-token"] + "\n")
        _write_secret(files["jira-token"], self.service_secrets["jira-token"] + "\n")
        _write_secret(files["grafana-token"], self.service_secrets["grafana-token"] + "\n")
        _write_secret(self.secrets_dir / "jira-user", "oncall@example.com\n")
        ns, name = self.rollouts[0] if self.rollouts else ("default", "")
        config = {
            # no token_file: the session's ROLLBOOK_MC_TOKEN_FILE decides (env.sh: the read-only token)
            "mc": {"url": self.mc_url},
            "kube": {"kubeconfig": str(self.kubeconfig), "read_context": "sandbox-viewer", "action_context": "sandbox"},
            "prometheus": {"url": self.prometheus_url},
            "grafana": {"url": self.services_url, "token_file": str(files["grafana-token"]),
                        "panels": [{"dashboard_uid": "rollout-slo", "slug": "rollout-slo", "panel_id": 2,
                                    "title": "p99 latency and error rate",
                                    "vars": {"namespace": "{namespace}", "rollout": "{rollout}"}}]},
            "escalation": {
                "pagerduty": {"url": self.services_url, "routing_key_file": str(files["pagerduty-routing-key"]),
                              "severity": "critical"},
                "slack": {"webhook_url_file": str(files["slack-path"])},
                "webhook": {"url": f"{self.services_url}/hooks/rollbook", "token_file": str(files["webhook-token"])},
            },
            "ticket": {"jira": {"url": self.services_url, "user_file": str(self.secrets_dir / "jira-user"),
                                "token_file": str(files["jira-token"])}},
        }
        self.config_file.write_text(f"# rollbook.yaml for the sandbox ({ns}/{name}); secrets live in "
                                    f"{self.secrets_dir}\n" + yaml.safe_dump(config, sort_keys=False),
                                    encoding="utf-8")

    def _write_files(self) -> None:
        """kubeconfig, token files (0600), env.sh, then ready.json (atomically: it signals readiness)."""
        namespace = self.rollouts[0][0] if self.rollouts else "default"
        write_kubeconfig(self.kubeconfig, server=self.kube_url, ca_pem=self._ca_pem,
                         operator_token=self.operator_token, viewer_token=self.viewer_token, namespace=namespace)
        _write_secret(self.mc_token_file, self.mc_read_token + "\n")
        _write_secret(self.mc_write_token_file, self.mc_write_token + "\n")
        self.sample_report.parent.mkdir(exist_ok=True)
        self.sample_report.write_text(SAMPLE_JUNIT, encoding="utf-8")
        self._write_config()
        ro_ns, ro_name = self.rollouts[0] if self.rollouts else ("", "")
        self.env_file.write_text(
            f"# rollbook sandbox ({self.info.name if self.info else self.scenario}); use: source {self.env_file}\n"
            f"export KUBECONFIG={shlex.quote(str(self.kubeconfig))}\n"
            f"export ROLLBOOK_MC_URL={shlex.quote(self.mc_url)}\n"
            # MC's read-only token by default, as a real on-call session's first look would have
            f"export ROLLBOOK_MC_TOKEN_FILE={shlex.quote(str(self.mc_token_file))}\n"
            "# attaching evidence (step 4, --param evidence_file=...) needs MC's read-write token; only then:\n"
            f"#   export ROLLBOOK_MC_TOKEN_FILE={shlex.quote(str(self.mc_write_token_file))}\n"
            f"# a passing sample report for that follow-up: {shlex.quote(str(self.sample_report))}\n"
            f"export ROLLBOOK_PROMETHEUS_URL={shlex.quote(self.prometheus_url)}\n"
            f"export ROLLBOOK_CONFIG={shlex.quote(str(self.config_file))}\n"
            f"export ROLLBOOK_NAMESPACE={shlex.quote(ro_ns)}\n"
            f"export ROLLBOOK_ROLLOUT={shlex.quote(ro_name)}\n", encoding="utf-8")
        ready = {"kube_url": self.kube_url, "mc_url": self.mc_url, "kubeconfig": str(self.kubeconfig),
                 "scenario": self.info.name if self.info else str(self.scenario), "pid": os.getpid(),
                 "rollouts": [{"namespace": ns, "name": name} for ns, name in self.rollouts],
                 "env": str(self.env_file), "mc_token_file": str(self.mc_token_file),
                 "prometheus_url": self.prometheus_url, "services_url": self.services_url,
                 "config": str(self.config_file), "skipped": list(self.info.skipped) if self.info else []}
        tmp = self.ready_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(ready, indent=2) + "\n", encoding="utf-8")
        tmp.replace(self.ready_file)

    def _write_stopped_env(self) -> None:
        folder = shlex.quote(str(self.state_dir))
        message = (f"rollbook: the sandbox in {self.state_dir} is stopped (its API {self.kube_url} is gone); "
                   f"start it again with: rollbook sandbox --state-dir {self.state_dir}, then source {self.env_file}")
        self.env_file.write_text(
            f"# rollbook sandbox in {folder}: STOPPED at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}; "
            "nothing is exported.\n"
            f"echo {shlex.quote(message)} >&2\n"
            "return 1 2>/dev/null || exit 1\n", encoding="utf-8")


def _runbooks() -> Path:
    """The step notebooks a simulated pod runs (the image's /opt/rollbook/runbooks), found as rollbook.app
    finds them (not imported: rollbook.app imports the sandbox for `rollbook demo`)."""
    env = os.environ.get("ROLLBOOK_RUNBOOKS")
    beside = Path(__file__).resolve().parents[3] / "runbooks"
    return Path(env) if env else beside if beside.is_dir() else Path("runbooks").resolve()


# A passing junit report (what CI uploads as the test-report evidence), for the README's follow-up.
SAMPLE_JUNIT = ('<?xml version="1.0" encoding="UTF-8"?>\n'
                '<testsuites tests="412" failures="0" errors="0" skipped="3">\n'
                '  <testsuite name="api" tests="412" failures="0" errors="0" skipped="3" time="81.4"/>\n'
                "</testsuites>\n")


def _write_secret(path: Path, text: str) -> None:
    """Write a token file readable by the owner only (created 0600, never world-readable in between)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    path.chmod(0o600)


def serve(scenario: str | Path = "evidence-gap", state_dir: Path = Path(".sandbox"), port: int = 0,
          *, timings: Timings | None = None, faults: FaultPlan | None = None) -> None:
    """`rollbook sandbox`: start, print how to use it, run until SIGINT/SIGTERM, stop cleanly."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Sandbox(scenario, state_dir, port, timings=timings, faults=faults) as sb:
            print(f"rollbook sandbox: scenario {sb.info.name if sb.info else scenario} ready in "
                  f"{sb.startup_seconds:.2f}s (API {sb.kube_url}, MC {sb.mc_url}); try: "
                  f"source {shlex.quote(str(sb.env_file))}; kubectl get rollouts -A   (Ctrl-C stops it)",
                  flush=True)
            for why in sb.info.skipped if sb.info else []:
                print(f"rollbook sandbox: not loaded: {why}", file=sys.stderr, flush=True)
            while not stop.wait(1.0):   # bounded waits; a signal ends the loop within a second at most
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
