"""Helpers for the `rollbook serve` tests: scenarios with many rollouts, the service as a real process,
notification bodies rendered from the shipped template, and the gate that holds step 1.

The gate: in `tests/scenarios/rollback-in-progress` the rollback is still under way, so step 1 waits
(bounded by its `wait_seconds`) until the test plays Argo's part and finishes the rollback. While it
waits, the incident is observably running (step 1 polls the Rollout), for as long as the test wants.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from go_template import render, time_vars

from rollbook.sandbox.controller import Timings
from rollbook.sandbox.server import Sandbox

ROOT = Path(__file__).resolve().parents[2]
EVIDENCE_GAP = ROOT / "lib" / "rollbook" / "sandbox" / "scenarios" / "evidence-gap"
ROLLBACK_IN_PROGRESS = ROOT / "tests" / "scenarios" / "rollback-in-progress"
DEPLOY = ROOT / "deploy" / "argo-notifications.yaml"
TEMPLATES = {"on-rollout-aborted": "rollbook-abort", "on-analysis-run-failed": "rollbook-analysis-run-failed",
             "on-analysis-run-error": "rollbook-analysis-run-error"}
REVISION = "rollout.argoproj.io/revision"
HASH = "rollouts-pod-template-hash"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll until truthy (bounded); AssertionError naming what did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------- scenarios


def _merge_mc(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict):
            into.setdefault(key, {})
            for k, v in value.items():
                if isinstance(v, dict) and isinstance(into[key].get(k), dict):
                    into[key][k].update(v)
                else:
                    into[key].setdefault(k, v)
        elif isinstance(value, list):
            into.setdefault(key, [])
            into[key].extend(v for v in value if v not in into[key])


def build_scenario(folder: Path, *, copies: Iterable[str] = (), with_gate: bool = False) -> Path:
    """One scenario folder: evidence-gap once per namespace in `copies` (objects and uids renamed), plus the
    rollback-in-progress rollout (pricing/quote-engine) when `with_gate`."""
    folder.mkdir(parents=True, exist_ok=True)
    mc: dict[str, Any] = {}
    for ns in copies:
        for src in sorted(EVIDENCE_GAP.glob("*.yaml")):
            if src.stem == "mc":
                continue
            text = re.sub(r"\bprod\b", ns, src.read_text(encoding="utf-8"))
            for uid in set(re.findall(r"uid: ([0-9a-f-]{36})", text)):
                text = text.replace(uid, str(uuid.uuid5(uuid.NAMESPACE_URL, f"{ns}/{uid}")))
            (folder / f"{ns}-{src.name}").write_text(text, encoding="utf-8")
        _merge_mc(mc, yaml.safe_load((EVIDENCE_GAP / "mc.yaml").read_text(encoding="utf-8")))
    if with_gate:
        for src in sorted(ROLLBACK_IN_PROGRESS.glob("*.yaml")):
            if src.stem != "mc":
                (folder / f"gate-{src.name}").write_text(src.read_text(encoding="utf-8"), encoding="utf-8")
        _merge_mc(mc, yaml.safe_load((ROLLBACK_IN_PROGRESS / "mc.yaml").read_text(encoding="utf-8")))
    (folder / "mc.yaml").write_text(yaml.safe_dump(mc, sort_keys=False), encoding="utf-8")
    return folder


GATE = ("pricing", "quote-engine")
# the simulated controller would finish that rollback itself (abortScaleDownDelaySeconds x scale): with
# this scale it owes it in hours, so only the test finishes it (finish_rollback)
HOLDING = Timings(analysis_seconds=600.0, error_interval_seconds=0.02, scale=100.0, idle_poll_seconds=0.05)


def step1_is_waiting(sb: Sandbox, namespace: str = GATE[0], name: str = GATE[1], *, since: int = 0) -> bool:
    """Step 1 is polling the Rollout (the snapshot reads it once, step 1 once, then it polls)."""
    return rollout_gets(sb, namespace, name) >= since + 3


def rollout_gets(sb: Sandbox, namespace: str = GATE[0], name: str = GATE[1]) -> int:
    path = f"/apis/argoproj.io/v1alpha1/namespaces/{namespace}/rollouts/{name}"
    assert sb.apiserver is not None
    return sum(1 for r in sb.apiserver.requests if r.method == "GET" and r.path == path)


def finish_rollback(sb: Sandbox, namespace: str = GATE[0], name: str = GATE[1]) -> None:
    """Argo's part: the canary scaled to 0 and its pods gone, the stable pods Ready, the counts updated."""
    st = sb.store
    ro = st.get("rollouts", namespace, name)
    canary_hash, stable_hash = ro["status"]["currentPodHash"], ro["status"]["stableRS"]
    rss = {rs["metadata"]["labels"][HASH]: rs for rs in st.list("replicasets", namespace)[0]}
    canary, stable = rss[canary_hash], rss[stable_hash]
    for pod in st.list("pods", namespace, label_selector=f"{HASH}={canary_hash}")[0]:
        st.delete("pods", namespace, pod["metadata"]["name"])
    st.patch("replicasets", namespace, canary["metadata"]["name"], {"spec": {"replicas": 0}}, "merge")
    st.set_status("replicasets", namespace, canary["metadata"]["name"], {"replicas": 0, "observedGeneration": 3})
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for pod in st.list("pods", namespace, label_selector=f"{HASH}={stable_hash}")[0]:
        status = dict(pod.get("status") or {}, phase="Running")
        status["conditions"] = [{"type": t, "status": "True", "lastTransitionTime": now}
                                for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")]
        status["containerStatuses"] = [dict(cs, ready=True, started=True, state={"running": {"startedAt": now}})
                                       for cs in status.get("containerStatuses") or []]
        st.set_status("pods", namespace, pod["metadata"]["name"], status)
    n = int(stable["spec"]["replicas"])
    st.set_status("replicasets", namespace, stable["metadata"]["name"], dict(
        stable["status"], replicas=n, fullyLabeledReplicas=n, readyReplicas=n, availableReplicas=n))
    ro = st.get("rollouts", namespace, name)
    st.set_status("rollouts", namespace, name, dict(ro["status"], replicas=n, updatedReplicas=0, readyReplicas=n,
                                                    availableReplicas=n, HPAReplicas=n))


# --------------------------------------------------------------------------- notification bodies


def rendered_body(sb: Sandbox, namespace: str, name: str, trigger: str = "on-rollout-aborted") -> bytes:
    """The body Argo would send for this Rollout, rendered from the shipped template (engine variables)."""
    ro = sb.store.get("rollouts", namespace, name)
    runs = [r for r in sb.store.list("analysisruns", namespace, label_selector=f"{HASH}={ro['status']['currentPodHash']}")[0]
            if (r["metadata"].get("annotations") or {}).get(REVISION) == ro["metadata"]["annotations"][REVISION]]
    runs.sort(key=lambda r: r["metadata"]["creationTimestamp"], reverse=True)
    data = yaml.safe_load(DEPLOY.read_text(encoding="utf-8"))["data"]
    body = yaml.safe_load(data[f"template.{TEMPLATES[trigger]}"])["webhook"]["rollbook"]["body"]
    return render(body, {"rollout": ro, "analysisRuns": runs or None, "time": time_vars(), "secrets": {},
                         "serviceType": "rollbook", "recipient": ""}).encode()


# --------------------------------------------------------------------------- the service as a process


@dataclass
class ServeProcess:
    """`rollbook serve` started as a user would, against a sandbox, in its own process."""

    sb: Sandbox
    root: Path
    workers: int = 1
    queue: int = 100
    steps: str = "1"
    grace: float = 0.0
    serve_options: dict[str, Any] = field(default_factory=dict)
    token: str = field(default_factory=lambda: uuid.uuid4().hex + uuid.uuid4().hex)
    relative: bool = False  # --config and --out as a user types them, relative to the working directory
    extra_args: tuple[str, ...] = ()  # e.g. ("--executor", "kubernetes", "--context", "sandbox")
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""

    @property
    def out(self) -> Path:
        return self.root / "outputs"

    def config(self) -> Path:
        """The sandbox's rollbook.yaml plus a serve section (the token as a 0600 file)."""
        token_file = self.root / "serve-token"
        token_file.write_text(self.token + "\n", encoding="utf-8")
        token_file.chmod(0o600)
        cfg = yaml.safe_load(self.sb.config_file.read_text(encoding="utf-8"))
        cfg["serve"] = {"token_file": str(token_file), **self.serve_options}
        path = self.root / "rollbook.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        return path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLBOOK_")}
        env.update(KUBECONFIG=str(self.sb.kubeconfig), ROLLBOOK_MC_URL=self.sb.mc_url,
                   ROLLBOOK_MC_TOKEN_FILE=str(self.sb.mc_token_file), PYTHONUNBUFFERED="1")
        return env

    def start(self, timeout: float = 60.0) -> ServeProcess:
        self.root.mkdir(parents=True, exist_ok=True)
        ready = self.out / ".serve" / "ready.json"
        ready.unlink(missing_ok=True)
        log = (self.root / "serve.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rollbook.cli", "serve", "--listen", "127.0.0.1:0", "--config",
             self.config().name if self.relative else str(self.config()),
             "--out", self.out.name if self.relative else str(self.out), "--workers", str(self.workers), "--queue", str(self.queue), "--steps", self.steps,
             "--grace", str(self.grace), *self.extra_args], env=self.env(), stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        wait_for(lambda: ready.exists() or self.proc.poll() is not None, timeout, "rollbook serve to listen")  # type: ignore[union-attr]
        if not ready.exists():
            raise AssertionError(f"rollbook serve exited {self.proc.returncode}: {self.log()[-2000:]}")
        self.url = json.loads(ready.read_text(encoding="utf-8"))["url"]
        return self

    def log(self) -> str:
        path = self.root / "serve.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def post(self, body: bytes | dict[str, Any], *, token: str | None = None, headers: dict[str, str] | None = None
             ) -> httpx.Response:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        chosen = self.token if token is None else token
        hdrs = {**({"Authorization": f"Bearer {chosen}"} if chosen else {}), **(headers or {})}
        return httpx.post(f"{self.url}/v1/argo-rollouts", content=raw, headers=hdrs, timeout=10)

    def get(self, path: str, *, auth: bool = True) -> httpx.Response:
        hdrs = {"Authorization": f"Bearer {self.token}"} if auth else {}
        return httpx.get(f"{self.url}{path}", headers=hdrs, timeout=10)

    def incident(self, incident: str) -> dict[str, Any]:
        resp = self.get(f"/v1/incidents/{incident}")
        assert resp.status_code == 200, resp.text
        data: dict[str, Any] = resp.json()
        return data

    def wait_status(self, incident: str, statuses: tuple[str, ...], timeout: float) -> dict[str, Any]:
        return wait_for(lambda: (i := self.incident(incident))["status"] in statuses and i, timeout,  # type: ignore[no-any-return]
                        f"{incident} to be {'/'.join(statuses)} (log: {self.log()[-1500:]})", interval=0.2)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def record_dirs(out: Path, incident: str) -> list[Path]:
    """The run folders of an incident, oldest first."""
    return sorted(p for p in (out / incident).glob("*") if p.is_dir()) if (out / incident).is_dir() else []
