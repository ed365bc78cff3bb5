"""Issue 4 end to end: SLO evidence and undo, escalation that pages once, the ticket update, dry runs, and
the safety of mutations — through real kernels, the real clients and the sandbox's stand-ins."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from rollbook import app, runner
from rollbook.sandbox.server import Sandbox

pytestmark = pytest.mark.notebooks


@pytest.fixture
def world(sandbox_factory: Callable[..., Sandbox], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Start a scenario with its generated rollbook.yaml (optionally edited); run the playbook on it."""
    class World:
        sb: Sandbox
        config: Path

        def start(self, scenario: str, **edits: Any) -> World:
            self.sb = sandbox_factory(scenario)
            cfg = yaml.safe_load(self.sb.config_file.read_text())
            for dotted, value in edits.items():
                section, key = dotted.split("__")
                cfg.setdefault(section, {})[key] = value
            self.config = tmp_path / f"rollbook-{scenario}.yaml"
            self.config.write_text(yaml.safe_dump(cfg))
            for k, v in {"KUBECONFIG": str(self.sb.kubeconfig), "ROLLBOOK_MC_URL": self.sb.mc_url,
                         "ROLLBOOK_MC_TOKEN_FILE": str(self.sb.mc_write_token_file)}.items():
                monkeypatch.setenv(k, v)
            monkeypatch.delenv("ROLLBOOK_CONFIG", raising=False)
            return self

        @property
        def target(self) -> tuple[str, str]:
            return self.sb.rollouts[0]

        def run(self, *, apply_closeout: bool = False, snapshot: Any = None, **kw: Any) -> tuple[Any, dict]:
            params = {"config": str(self.config), **kw.pop("params", {})}
            ns, name = self.target
            spec = runner.RunSpec(incident="INC-42", namespace=ns, rollout=name, out=tmp_path / "out",
                                  runbooks_dir=app.default_runbooks(), step_timeout=120, params=params, **kw)
            if snapshot is None:
                result = app.run(spec, config=str(self.config), apply_closeout=apply_closeout)
            else:  # the test's own snapshot hook, to change the world between snapshot and action
                result = runner.run(runner.validate(spec), snapshot=snapshot)
            return result, json.loads((result.record_dir / "record.json").read_text())

        def step(self, rec: dict, name: str) -> dict:
            return next(s for s in rec["steps"] if s["name"] == name)

    return World()


def test_slo_regression_shows_series_against_thresholds_and_undoes_with_approval(world: Any) -> None:
    w = world.start("slo-regression")
    result, rec = w.run(params={"approve_undo": True}, approver="bob", ticket="CHG-1")
    f = rec["findings"]
    slo = f["slo"]
    assert f["trigger"] == "slo"
    failed = f["failed_metrics"][0]
    assert slo[failed]["breached"] is True and slo[failed]["threshold"]
    # the stable pods, queried the same way in the Prometheus stand-in, stayed within the threshold
    assert slo[failed]["stable_breached"] is False and f["slo_canary_only"] is True
    assert all(v > 0.01 for v in slo[failed]["canary_values"]) or slo[failed]["threshold"] != "<= 0.01"
    html = (result.record_dir / "report.html").read_text()
    assert html.count("data:image/png;base64") >= 2, "the SLO plots are embedded in the report"
    step4 = w.step(rec, "remediate-and-retry")
    assert step4["verdict"] == "pass" and "undo" in step4["reason"]
    mutation = step4["findings"]["mutations"][0]
    assert mutation["action"] == "undo" and mutation["dry_run"] is False
    assert mutation["approval"] == {"approver": "bob", "ticket": "CHG-1", "at": mutation["approval"]["at"]}
    assert json.loads(mutation["requests"][0]["body"])[0]["path"] == "/spec/template"
    ns, name = w.target
    patches = [r for r in w.sb.apiserver.requests if r.method == "PATCH" and "dryRun" not in r.query]
    assert [(r.user, r.content_type) for r in patches] == [("operator", "application/json-patch+json")]
    # the controller fast-tracks the undo: the stable release is back in the spec
    ro = w.sb.store.get("rollouts", ns, name)
    assert ro["spec"]["template"]["metadata"]["labels"]["release-id"] == \
        [rs for rs in w.sb.store.list("replicasets", ns)[0]
         if rs["metadata"]["labels"]["rollouts-pod-template-hash"] == json.loads(
             (result.record_dir / "snapshot" / "rollout.json").read_text())["status"]["stableRS"]][0][
            "spec"]["template"]["metadata"]["labels"]["release-id"]


def test_rollback_loop_pages_once_with_reason_and_picture(world: Any) -> None:
    w = world.start("rollback-loop", record__link_base="https://records.example.internal/incidents")
    first, rec1 = w.run(params={"notify": True})
    second, rec2 = w.run(params={"notify": True})
    assert first.exit_code == 4 and second.exit_code == 4
    svc = w.sb.services
    assert len(svc.incidents) == 1, "the dedup key holds across re-runs"
    (key, incident), = svc.incidents.items()
    ns, name = w.target
    assert key == f"rollbook/{ns}/{name}/rev-{rec1['findings']['canary_revision']}"
    assert incident["alerts"] == 2
    sent = [json.loads(r.body) for r in svc.requests if r.path == "/v2/enqueue"]
    assert len(sent) == 2
    event = sent[0]
    assert event["event_action"] == "trigger" and event["dedup_key"] == key
    assert event["routing_key"] == w.sb.services.routing_key
    assert rec1["findings"]["mc_reason"] in event["payload"]["summary"] + json.dumps(event["payload"])
    assert event["payload"]["severity"] == "critical" and name in event["payload"]["source"]
    assert event.get("images") and event["images"][0]["src"].startswith("https://records.example.internal/")
    pictures = list(first.record_dir.glob("pictures/*.png"))
    assert pictures and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pictures)
    step5 = w.step(rec1, "escalate")
    assert step5["findings"]["escalation_sent"] is True
    assert routing_key_absent(first.record_dir, w.sb.services.routing_key)


def routing_key_absent(record_dir: Path, secret: str) -> bool:
    return all(secret.encode() not in p.read_bytes() for p in record_dir.rglob("*") if p.is_file())


def test_dry_run_sends_nothing_and_records_the_payloads(world: Any) -> None:
    w = world.start("rollback-loop")
    result, rec = w.run(ticket="INC-1234")
    svc = w.sb.services
    assert svc.incidents == {} and svc.comments == {} and svc.attachments == {}
    assert [r for r in svc.requests if r.method == "POST"] == []
    deliveries = w.step(rec, "escalate")["findings"]["escalation_deliveries"]
    assert {d["service"] for d in deliveries} >= {"pagerduty", "slack"} and not any(d["sent"] for d in deliveries)
    ticket = json.loads((result.record_dir / "ticket.json").read_text())
    assert ticket["applied"] is False and ticket["deliveries"] and not any(d["sent"] for d in ticket["deliveries"])
    assert w.sb.mc.current("production", "checkout")["current"]["release_id"] == "checkout-3.3.2"


def test_evidence_gap_updates_the_ticket_with_summary_and_bundle(world: Any, tmp_path: Path) -> None:
    w = world.start("evidence-gap")
    report = app.demo_report(tmp_path)
    result, rec = w.run(apply_closeout=True, params={"evidence_file": str(report)}, approve_retry=True,
                        approver="alice", ticket="CHG-7")
    assert result.exit_code == 0, [(s["name"], s["verdict"], s["reason"]) for s in rec["steps"]]
    svc = w.sb.services
    comment = svc.comments["CHG-7"][0]
    body = json.dumps(comment)
    assert "remediate-and-retry" in body or "Remediation" in body or "retried" in body.lower()
    attachment = svc.attachments["CHG-7"][0]
    bundle = (result.record_dir / "bundle.zip").read_bytes()
    assert attachment.get("size") == len(bundle) or attachment.get("content") == bundle or \
        attachment.get("sha256")
    posted = [r for r in svc.requests if r.path.endswith("/attachments")]
    assert posted and posted[0].headers.get("X-Atlassian-Token") == "no-check"
    assert bundle in posted[0].body
    ticket = json.loads((result.record_dir / "ticket.json").read_text())
    assert ticket["applied"] is True and all(d["sent"] for d in ticket["deliveries"])
    manifest = json.loads((result.record_dir / "manifest.json").read_text())
    assert "ticket.json" in manifest["files"]


def test_refuses_when_the_rollout_changed_between_snapshot_and_action(world: Any, tmp_path: Path) -> None:
    w = world.start("mc-errors")  # MC passes now: the only thing between us and a retry is the change
    ns, name = w.target

    def snapshot_then_change() -> dict[str, Any]:
        from rollbook.config import load
        from rollbook.steps import snapshot
        from rollbook.steps.core import Incident
        objects = snapshot.capture(Incident(ns, name, None, None, None, "INC-42", load(str(w.config))))
        w.sb.store.patch("rollouts", ns, name, {"spec": {"replicas": 7}}, "merge")  # someone edits the spec
        return objects

    result, rec = w.run(snapshot=snapshot_then_change, approve_retry=True, approver="alice", ticket="CHG-7")
    step4 = w.step(rec, "remediate-and-retry")
    assert step4["verdict"] == "needs_human", [(s["name"], s["verdict"], s["reason"]) for s in rec["steps"]]
    assert "changed since the snapshot" in step4["reason"]
    assert w.sb.store.get("rollouts", ns, name)["status"]["abort"] is True
    assert [r for r in w.sb.apiserver.requests if r.method == "PATCH" and "dryRun" not in r.query] == []


def test_viewer_identity_is_refused_the_patch(world: Any) -> None:
    w = world.start("mc-errors", kube__action_context="sandbox-viewer")
    ns, name = w.target
    result, rec = w.run(approve_retry=True, approver="alice", ticket="CHG-7")
    step4 = w.step(rec, "remediate-and-retry")
    assert step4["verdict"] == "fail" and "forbidden" in step4["reason"].lower()
    assert w.sb.store.get("rollouts", ns, name)["status"]["abort"] is True


def test_without_approval_only_a_server_side_dry_run_is_sent(world: Any) -> None:
    w = world.start("mc-errors")
    ns, name = w.target
    result, rec = w.run()
    step4 = w.step(rec, "remediate-and-retry")
    assert step4["verdict"] == "needs_human" and "--approve-retry" in step4["reason"]
    patches = [r for r in w.sb.apiserver.requests if r.method == "PATCH"]
    assert patches and all(r.query.get("dryRun") == "All" for r in patches)
    assert w.sb.store.get("rollouts", ns, name)["status"]["abort"] is True
