"""`Sandbox`: the store, API server, MC stand-in, loader and controller composed; `rollbook sandbox`."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, Self

from rollbook.sandbox.apiserver import ApiServer, User
from rollbook.sandbox.controller import Controller, Timings
from rollbook.sandbox.kubeconfig import write_kubeconfig
from rollbook.sandbox.loader import ScenarioInfo, load_scenario
from rollbook.sandbox.mc import MCServer
from rollbook.sandbox.prometheus import PrometheusServer, load_prometheus_spec, spec_from_runs
from rollbook.sandbox.store import Store
from rollbook.sandbox.tls import make_server_cert


class Sandbox:
    """A local cluster + Argo controller + MC, on 127.0.0.1, described by files in ``state_dir``."""

    def __init__(self, scenario: str | Path = "evidence-gap", state_dir: Path = Path(".sandbox"),
                 port: int = 0, *, admin: bool = False, timings: Timings | None = None) -> None:
        self.scenario = scenario
        self.state_dir = Path(state_dir).resolve()
        self.port = port
        self.admin = admin
        self.timings = timings or Timings()
        self.operator_token = secrets.token_urlsafe(24)
        self.viewer_token = secrets.token_urlsafe(24)
        self.mc_read_token = secrets.token_urlsafe(24)
        self.mc_write_token = secrets.token_urlsafe(24)
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.env_file = self.state_dir / "env.sh"
        self.mc_token_file = self.state_dir / "mc-token"
        self.mc_write_token_file = self.state_dir / "mc-write-token"
        self.ready_file = self.state_dir / "ready.json"
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
            self.controller = Controller(self.store, mc_url=self.mc_url, mc_token=self.mc_read_token,
                                         mc_write_token=self.mc_write_token, timings=self.timings)
            self.controller.start()
            self._write_files()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - began
        return self

    def stop(self) -> None:
        """Stop everything that started (controller first: it talks to MC) and withdraw ready.json."""
        self.ready_file.unlink(missing_ok=True)
        for part in (self.controller, self.apiserver, self.mc, self.prometheus):
            if part is not None:
                part.stop()
        self.controller = self.apiserver = self.mc = self.prometheus = None

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
        self.kube_url = self.apiserver.start()
        self._ca_pem = cert.ca_pem

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

    def _write_files(self) -> None:
        """kubeconfig, token files (0600), env.sh, then ready.json (atomically: it signals readiness)."""
        namespace = self.rollouts[0][0] if self.rollouts else "default"
        write_kubeconfig(self.kubeconfig, server=self.kube_url, ca_pem=self._ca_pem,
                         operator_token=self.operator_token, viewer_token=self.viewer_token, namespace=namespace)
        _write_secret(self.mc_token_file, self.mc_read_token + "\n")
        _write_secret(self.mc_write_token_file, self.mc_write_token + "\n")
        self.env_file.write_text(
            f"# rollbook sandbox ({self.info.name if self.info else self.scenario}); use: source {self.env_file}\n"
            f"export KUBECONFIG={shlex.quote(str(self.kubeconfig))}\n"
            f"export ROLLBOOK_MC_URL={shlex.quote(self.mc_url)}\n"
            f"export ROLLBOOK_MC_TOKEN_FILE={shlex.quote(str(self.mc_token_file))}\n"
            f"export ROLLBOOK_PROMETHEUS_URL={shlex.quote(self.prometheus_url)}\n", encoding="utf-8")
        ready = {"kube_url": self.kube_url, "mc_url": self.mc_url, "kubeconfig": str(self.kubeconfig),
                 "scenario": self.info.name if self.info else str(self.scenario), "pid": os.getpid(),
                 "rollouts": [{"namespace": ns, "name": name} for ns, name in self.rollouts],
                 "env": str(self.env_file), "mc_token_file": str(self.mc_token_file),
                 "prometheus_url": self.prometheus_url}
        tmp = self.ready_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(ready, indent=2) + "\n", encoding="utf-8")
        tmp.replace(self.ready_file)


def _write_secret(path: Path, text: str) -> None:
    """Write a token file readable by the owner only (created 0600, never world-readable in between)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    path.chmod(0o600)


def serve(scenario: str | Path = "evidence-gap", state_dir: Path = Path(".sandbox"), port: int = 0,
          *, timings: Timings | None = None) -> None:
    """`rollbook sandbox`: start, print how to use it, run until SIGINT/SIGTERM, stop cleanly."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Sandbox(scenario, state_dir, port, timings=timings) as sb:
            print(f"rollbook sandbox: scenario {sb.info.name if sb.info else scenario} ready in "
                  f"{sb.startup_seconds:.2f}s (API {sb.kube_url}, MC {sb.mc_url}); try: "
                  f"source {shlex.quote(str(sb.env_file))}; kubectl get rollouts -A   (Ctrl-C stops it)",
                  flush=True)
            while not stop.wait(1.0):   # bounded waits; a signal ends the loop within a second at most
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
