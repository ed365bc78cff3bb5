"""The whole playbook on scenarios it was not written against (tests/scenarios/): other names, namespaces,
release ids, message forms and failure mixes.

Every expectation is computed from the scenario's own objects (the Rollout, its ReplicaSets and pods,
the AnalysisRun, MC's state) as they were loaded, never from the scenario's name. Where the product is
known to be wrong the test is `xfail(strict=True)` with the reason; the report lists them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rollbook import app, runner
from rollbook.sandbox.server import Sandbox

pytestmark = pytest.mark.notebooks

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
HASH = "rollouts-pod-template-hash"
REVISION = "rollout.argoproj.io/revision"
EVIDENCE_STATUS = "/evidence-status"


# --------------------------------------------------------------------------- what the objects say


@dataclass
class World:
    """The scenario as loaded, read from the sandbox's store before the playbook touched anything."""

    namespace: str
    name: str
    rollout: dict[str, Any]
    replicasets: list[dict[str, Any]]
    pods: list[dict[str, Any]]
    runs: list[dict[str, Any]]

    @classmethod
    def read(cls, sb: Sandbox) -> World:
        """Deep copies of the target Rollout and its namespace's objects."""
        ns, name = sb.rollouts[0]
        return cls(ns, name, sb.store.get("rollouts", ns, name), sb.store.list("replicasets", ns)[0],
                   sb.store.list("pods", ns)[0], sb.store.list("analysisruns", ns)[0])

    def rs(self, pod_hash: str) -> dict[str, Any]:
        """The ReplicaSet of a pod-template hash."""
        return next(rs for rs in self.replicasets if rs["metadata"]["labels"][HASH] == pod_hash)

    @property
    def canary_rs(self) -> dict[str, Any]:
        return self.rs(self.rollout["status"]["currentPodHash"])

    @property
    def stable_rs(self) -> dict[str, Any]:
        return self.rs(self.rollout["status"]["stableRS"])

    def release_of(self, rs: dict[str, Any]) -> str:
        """The release-id label of a ReplicaSet's pod template."""
        return str(rs["spec"]["template"]["metadata"]["labels"]["release-id"])

    def revision_of(self, obj: dict[str, Any]) -> int:
        return int(obj["metadata"]["annotations"][REVISION])

    @property
    def previous_rs(self) -> dict[str, Any]:
        """The ReplicaSet with the highest revision below the canary's (the release before it)."""
        below = self.revision_of(self.canary_rs)
        return max((rs for rs in self.replicasets if self.revision_of(rs) < below), key=self.revision_of)

    def pods_of(self, rs: dict[str, Any]) -> list[dict[str, Any]]:
        uid = rs["metadata"]["uid"]
        return [p for p in self.pods if any(o["uid"] == uid for o in p["metadata"].get("ownerReferences") or [])]

    @property
    def failed_run(self) -> dict[str, Any]:
        """The canary's run that ended Failed or Error."""
        canary = self.rollout["status"]["currentPodHash"]
        return next(r for r in self.runs if r["metadata"]["labels"][HASH] == canary
                    and r["status"]["phase"] in ("Failed", "Error"))

    def metrics_in(self, run: dict[str, Any], *phases: str) -> list[str]:
        """Names of the run's metric results in the given phases, in the run's order."""
        return [m["name"] for m in run["status"]["metricResults"] if m["phase"] in phases]

    def stored_verdict(self, run: dict[str, Any], metric: str) -> dict[str, Any]:
        """MC's verdict as Argo's web provider stored it in the metric's last measurement value."""
        result = next(m for m in run["status"]["metricResults"] if m["name"] == metric)
        return dict(json.loads(result["measurements"][-1]["value"]))


@dataclass
class Played:
    """One headless run of the playbook on a scenario, with the world before it and the sandbox after."""

    sb: Sandbox
    before: World
    result: runner.RunResult
    record: dict[str, Any]
    mc_before: dict[str, Any] = field(default_factory=dict)

    @property
    def findings(self) -> dict[str, Any]:
        return dict(self.record["findings"])

    def step(self, name: str) -> dict[str, Any]:
        return next(s for s in self.record["steps"] if s["name"] == name)

    def verdicts(self) -> dict[str, str]:
        return {s["name"]: s["verdict"] for s in self.record["steps"]}

    def cluster_writes(self) -> list[Any]:
        """Requests to the API server that could change something and were not server-side dry runs."""
        return [r for r in self.sb.apiserver.requests if r.method not in ("GET", "HEAD")
                and r.query.get("dryRun") != "All"]

    def mc_writes(self) -> list[Any]:
        return [r for r in self.sb.mc.requests if r.method not in ("GET", "HEAD")]

    def rollout_now(self) -> dict[str, Any]:
        return self.sb.store.get("rollouts", self.before.namespace, self.before.name)


Hook = Callable[[Sandbox, World], None]


@pytest.fixture
def play(sandbox_factory: Callable[..., Sandbox], monkeypatch: pytest.MonkeyPatch,
         tmp_path: Path) -> Iterator[Callable[..., Played]]:
    """Start a scenario folder, run all six steps through `app.run` with the sandbox's own config."""
    threads: list[threading.Thread] = []

    def go(scenario: str, *, during: Hook | None = None, **kw: Any) -> Played:
        sb = sandbox_factory(SCENARIOS / scenario)
        for key, value in {"KUBECONFIG": str(sb.kubeconfig), "ROLLBOOK_MC_URL": sb.mc_url,
                           "ROLLBOOK_MC_TOKEN_FILE": str(sb.mc_write_token_file)}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("ROLLBOOK_MC_TOKEN", raising=False)
        monkeypatch.delenv("ROLLBOOK_CONFIG", raising=False)
        before = World.read(sb)
        mc_before = sb.mc.state
        if during is not None:  # the cluster moving on while the playbook runs (e.g. Argo finishing a rollback)
            t = threading.Thread(target=during, args=(sb, before), daemon=True, name=f"during-{scenario}")
            threads.append(t)
            t.start()
        params = {"config": str(sb.config_file), **kw.pop("params", {})}
        spec = runner.RunSpec(incident="INC-7731", namespace=before.namespace, rollout=before.name,
                              out=tmp_path / "out", runbooks_dir=app.default_runbooks(), step_timeout=120,
                              params=params, **kw)
        result = app.run(spec, config=str(sb.config_file))
        record = json.loads((result.record_dir / "record.json").read_text())
        return Played(sb, before, result, record, mc_before)

    yield go
    for t in threads:
        t.join(timeout=10)


def mc_verdict(p: Played, release: str) -> dict[str, Any]:
    """What MC's stand-in answers for a release now."""
    return dict(p.sb.mc.verdict(release, "production"))


def mc_current(p: Played, service: str) -> str:
    """The release MC shows as current production for a service."""
    return str(p.sb.mc.current("production", service)["current"]["release_id"])


def assert_nothing_mutated(p: Played) -> None:
    """No unapproved write reached the cluster; the Rollout is still as loaded (spec, abort, template)."""
    assert p.cluster_writes() == [], [(r.method, r.path) for r in p.cluster_writes()]
    now, then = p.rollout_now(), p.before.rollout
    assert now["metadata"]["generation"] == then["metadata"]["generation"]
    assert now["spec"]["template"] == then["spec"]["template"]
    assert bool(now["status"].get("abort")) == bool(then["status"].get("abort"))


# --------------------------------------------------------------------------- 1. both gates failed


def _clean_scan(tmp_path: Path) -> Path:
    report = tmp_path / "rescan.json"
    report.write_text(json.dumps({"scanner": "trivy 0.56", "summary": {"critical": 0, "high": 3, "medium": 12}}))
    return report


def test_both_gates_failed_is_evidence_plus_slo_and_never_retried(play: Callable[..., Played],
                                                                   tmp_path: Path) -> None:
    p = play("both-gates-failed", approve_retry=True, approver="dana", ticket="CHG-5512",
             params={"evidence_file": str(_clean_scan(tmp_path)), "evidence_name": "security-scan",
                     "evidence_type": "security-scan"})
    w, f = p.before, p.findings
    run = w.failed_run
    canary = w.release_of(w.canary_rs)
    stored = w.stored_verdict(run, "mc-evidence-ok")
    assert f["phase"] == "Degraded" and f["status_message"] == w.rollout["status"]["message"]
    assert f["trigger"] == "evidence+slo"
    assert set(f["failed_metrics"]) == set(w.metrics_in(run, "Failed")) == {"mc-evidence-ok", "ig-latency-p99"}
    assert f["analysis_run"] == run["metadata"]["name"]
    assert f["mc_reason"] == stored["reason"] and "security-scan" in f["mc_reason"]
    assert f["release_id"] == canary == f["evidence_release_id"] == stored["release_id"]
    assert f["release_identity_ok"] is True
    assert f["stable_is_previous_release"] is (w.stable_rs["metadata"]["uid"] == w.previous_rs["metadata"]["uid"])
    assert f["stable_revision"] == w.revision_of(w.stable_rs) and f["canary_revision"] == w.revision_of(w.canary_rs)
    # the clean scan was attached and MC passes the release now, yet the SLO failure forbids a retry
    step4 = p.step("remediate-and-retry")
    assert step4["facts"]["verdict_after"]["ok"] is True and mc_verdict(p, canary)["ok"] is True
    assert step4["verdict"] == "needs_human" and "SLO" in step4["reason"]
    assert f["retried"] is False and step4["findings"]["mutations"] == []
    assert_nothing_mutated(p)
    assert [r.path for r in p.mc_writes()] == [f"/api/v1/releases/{canary}/evidence"]
    assert f["escalate"] is False and p.verdicts()["escalate"] == "pass"
    assert f["closeout_ok"] is (mc_current(p, canary.rsplit("-", 1)[0]) == w.release_of(w.stable_rs))
    assert p.result.exit_code == 0
