"""Issue 12: five misreadings found on incidents the runbooks had never seen, each a class of situation.

One playbook run per scenario (module-scoped), several assertions per run. Every expectation is computed
from the scenario's own objects as loaded (the aborted Rollout and what it owns by UID, MC's state),
never from the scenario's name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_unseen_scenarios import FAST_TIMINGS, SCENARIOS, Played, pod_ready, point_at, run_playbook
from test_unseen_scenarios_2 import Owned, assert_nothing_mutated

from rollbook.sandbox.server import Sandbox

pytestmark = pytest.mark.notebooks

# the two fieldRef forms teams write; Argo resolves only the dot form (extractValueFromRollout)
LABEL_PATH = re.compile(r"(?:spec\.template\.)?metadata\.labels(?:\['([^']+)'\]|\.([^.\[\]]+))")


@dataclass
class Target(Owned):
    """The aborted Rollout and its objects, reading the release label from whichever fieldRef form it uses."""

    def release_label_key(self) -> str:
        arg = next(a for a in self.analysis_step()["args"] if a["name"] == "release-id")
        found = LABEL_PATH.fullmatch(arg["valueFrom"]["fieldRef"]["fieldPath"])
        assert found, arg
        return str(found.group(1) or found.group(2))

    def canary_step_analysis_metadata(self) -> dict[str, Any]:
        return dict(self.analysis_step().get("analysisRunMetadata") or {})

    def template(self, sb: Sandbox, name: str) -> dict[str, Any]:
        return sb.store.get("analysistemplates", self.namespace, name)


@pytest.fixture
def played(shared_runs: Any) -> Callable[..., Played]:
    """Run the whole playbook once per (scenario, setup, options); later tests of the same run reuse it.

    Through conftest `SharedRuns` (keyed by everything the run depends on; tests of one run carry one
    xdist_group so that `--dist loadgroup` keeps them on one worker)."""

    def get(scenario: str, setup: Callable[[Sandbox], None] | None = None, **kw: Any) -> Played:
        def make(folder: Path, start: Callable[..., Sandbox]) -> Played:
            sb = start(SCENARIOS / scenario, timings=FAST_TIMINGS)
            with pytest.MonkeyPatch.context() as mp:
                point_at(mp, sb)
                before = Target.of_target(sb)
                mc_before = sb.mc.state
                if setup is not None:
                    setup(sb)
                return run_playbook(sb, before, mc_before, "INC-1212", folder / "out", **kw)

        return shared_runs.get(shared_runs.key(scenario, setup=setup, **kw), make)

    return get


def target(p: Played) -> Target:
    assert isinstance(p.before, Target)
    return p.before


def summary(p: Played) -> str:
    return (p.result.record_dir / "summary.md").read_text()


def reasons(p: Played) -> str:
    """Every step reason and note of the record, as one text."""
    return "\n".join([s["reason"] for s in p.record["steps"]] + [n for s in p.record["steps"] for n in s.get("notes") or []])


def stored_gate_verdict(run: dict[str, Any]) -> dict[str, Any] | None:
    """MC's verdict as Argo stored it in mc-evidence-ok's last measurement value (None when none was stored)."""
    gate = next(m for m in run["status"]["metricResults"] if m["name"] == "mc-evidence-ok")
    value = (gate.get("measurements") or [{}])[-1].get("value")
    return dict(json.loads(value)) if value else None


SOURCE = r"\((?:stored in AnalysisRun [^)]*|MC live, asked [^)]*)\)"


def labelled(text: str, at: int, length: int) -> bool:
    """A quoted MC reason is followed by its source label, or sits right after a label and a colon."""
    after = text[at + length: at + length + 160].lstrip('"')
    before = text[max(0, at - 200): at]
    return bool(re.match(r"\s*" + SOURCE, after) or re.search(SOURCE + r":\s*$", before))


# --------------------------------------------------------------------------- 1. a canary kept on purpose

KEPT = "canary-kept-abort-delay-zero"


@pytest.mark.xdist_group("misreadings-kept-canary")
def test_kept_canary_is_a_complete_rollback_without_escalation(played: Callable[..., Played]) -> None:
    p = played(KEPT, params={"wait_seconds": 20})
    w, f = target(p), p.findings
    canary_spec = w.rollout["spec"]["strategy"]["canary"]
    assert canary_spec["abortScaleDownDelaySeconds"] == 0 and canary_spec.get("trafficRouting")
    kept_pods = [pod for pod in w.pods_of(w.canary_rs) if pod_ready(pod)]
    assert kept_pods and w.rollout["status"]["canary"]["weights"]["canary"]["weight"] == 0
    # the sandbox's controller keeps it, as Argo does: the canary ReplicaSet was never scaled down
    now_rs = p.sb.store.get("replicasets", w.namespace, w.canary_rs["metadata"]["name"])
    assert now_rs["spec"]["replicas"] == w.canary_rs["spec"]["replicas"] == len(kept_pods)
    step1 = p.step("confirm-rollback-status")
    assert step1["verdict"] == "pass", step1["reason"]
    assert step1["facts"]["rollback_complete"] is True and not step1["facts"]["waited_seconds"]
    assert step1["facts"]["actual_weight"] == 0
    kept = step1["facts"]["kept_canary"]
    assert kept["replicaset"] == w.canary_rs["metadata"]["name"] and kept["available"] == len(kept_pods)
    assert "abortScaleDownDelaySeconds: 0" in step1["reason"] and w.canary_rs["metadata"]["name"] in step1["reason"]
    assert "raise the timeout" not in reasons(p) and "did not complete" not in step1["reason"]
    assert f["escalate"] is False and p.verdicts()["escalate"] == "pass"
    assert p.result.exit_code != 4


@pytest.mark.xdist_group("misreadings-kept-canary")
def test_kept_canary_closeout_passes_and_names_what_undo_removes(played: Callable[..., Played]) -> None:
    p = played(KEPT, params={"wait_seconds": 20})
    w = target(p)
    step6 = p.step("verify-closeout")
    traffic = next(k for k in step6["facts"]["checks"] if k.startswith("traffic"))
    assert step6["facts"]["checks"][traffic] is True
    assert step6["verdict"] == "pass" and p.findings["closeout_ok"] is True, step6["reason"]
    assert "undo" in step6["reason"] and w.canary_rs["metadata"]["name"] in step6["reason"]
    assert_nothing_mutated(p)


@pytest.mark.xdist_group("misreadings-kept-canary")
def test_dot_form_field_ref_and_step_level_run_metadata_are_read(played: Callable[..., Played]) -> None:
    p = played(KEPT, params={"wait_seconds": 20})
    w, f = target(p), p.findings
    path = next(a for a in w.analysis_step()["args"] if a["name"] == "release-id")["valueFrom"]["fieldRef"]["fieldPath"]
    assert "[" not in path and "analysisRunMetadata" not in w.rollout["spec"]["strategy"]["canary"]
    assert w.canary_step_analysis_metadata()["labels"]["rollout"] == w.name
    canary = w.release_of(w.canary_rs)
    assert f["release_id"] == canary == stored_gate_verdict(w.failed_run)["release_id"]  # type: ignore[index]
    assert f["release_identity_ok"] is True
    assert p.step("inspect-evidence")["facts"]["playbook_selector_works"] is True


# --------------------------------------------------------------------------- 2 and 5. close-out sentences, labelled reasons

CURRENT = "mc-current-is-canary-reason-changed"


@pytest.mark.xdist_group("misreadings-mc-current")
def test_failed_closeout_check_says_what_was_found_against_what_was_expected(played: Callable[..., Played]) -> None:
    p = played(CURRENT)
    w = target(p)
    canary, stable = w.release_of(w.canary_rs), w.release_of(w.stable_rs)
    service = next(r["service"] for r in p.mc_before["releases"] if r["release_id"] == canary)
    assert p.mc_before["current"]["production"][service]["release_id"] == canary  # as loaded
    step6 = p.step("verify-closeout")
    failed = [k for k, ok in step6["facts"]["checks"].items() if not ok]
    assert step6["verdict"] == "fail" and len(failed) == 1 and p.findings["closeout_ok"] is False
    reason = step6["reason"]
    assert failed[0] not in reason  # the finding, not the check's label
    assert f"current production bundle is {canary} (the aborted canary); expected {stable} (stable)" in reason
    assert "MC shows the expected release" not in summary(p)


@pytest.mark.xdist_group("misreadings-mc-current")
def test_every_quoted_mc_reason_carries_its_source_and_time(played: Callable[..., Played]) -> None:
    p = played(CURRENT)
    w, f = target(p), p.findings
    run = w.failed_run
    stored = stored_gate_verdict(run)
    assert stored is not None
    canary = w.release_of(w.canary_rs)
    live = p.sb.mc.verdict(canary, "production")
    assert stored["reason"] != live["reason"] and not live["ok"]  # the two sources really differ
    measured = next(m for m in run["status"]["metricResults"] if m["name"] == "mc-evidence-ok")["measurements"][-1]
    stored_tag = f"stored in AnalysisRun {run['metadata']['name']}, measured {measured['finishedAt']}"
    assert f["mc_reason"] == stored["reason"] and f["mc_reason_from"] == stored_tag
    texts = {"step 2": p.step("inspect-evidence")["reason"], "step 4": p.step("remediate-and-retry")["reason"],
             "summary.md": summary(p), "ticket": p.step("verify-closeout")["facts"]["ticket_text"],
             "escalation": p.step("escalate")["facts"]["message"]}
    for where, text in texts.items():
        for said in (stored["reason"], live["reason"]):
            for at in [m.start() for m in re.finditer(re.escape(said), text)]:
                assert labelled(text, at, len(said)), (where, said, text[max(0, at - 120): at + len(said) + 120])
    assert f'"{live["reason"]}" (MC live, asked ' in texts["step 4"]
    assert stored_tag in texts["summary.md"] and stored_tag in texts["ticket"] and stored_tag in texts["escalation"]


# --------------------------------------------------------------------------- 3. the gate errored: nothing stored

ERRORED = "evidence-gate-errored-mc-502"


@pytest.mark.xdist_group("misreadings-errored-gate")
def test_errored_gate_keeps_what_the_run_recorded_apart_from_mc_now(played: Callable[..., Played]) -> None:
    p = played(ERRORED)
    w, f = target(p), p.findings
    run = w.failed_run
    gate = next(m for m in run["status"]["metricResults"] if m["name"] == "mc-evidence-ok")
    assert run["status"]["phase"] == "Error" and gate["phase"] == "Error"
    assert gate["measurements"] and all(m["phase"] == "Error" and "value" not in m for m in gate["measurements"])
    errors = {m["message"] for m in gate["measurements"]}
    canary = w.release_of(w.canary_rs)
    live = p.sb.mc.verdict(canary, "production")
    assert f["trigger"] == "error" and f["failed_metrics"] == w.counted_failures(run)
    assert f["mc_recorded"] and all(e in f["mc_recorded"] for e in errors) and str(len(gate["measurements"])) in f["mc_recorded"]
    text = summary(p)
    cause = text[text.index("## Cause"): text.index("## Evidence")]
    recorded_line = next(line for line in cause.splitlines() if "recorded by the AnalysisRun" in line)
    assert "none" in recorded_line and live["reason"] not in recorded_line
    now_line = next(line for line in cause.splitlines() if line.startswith("- MC now"))
    assert live["reason"] in now_line and "MC live, asked" in now_line
    step2 = p.step("inspect-evidence")["reason"]
    assert step2.index("recorded no MC verdict") < step2.index(live["reason"]) and "MC live, asked" in step2


@pytest.mark.xdist_group("misreadings-errored-gate")
def test_errored_gate_identity_is_not_established_never_matches(played: Callable[..., Played]) -> None:
    p = played(ERRORED)
    w, f = target(p), p.findings
    assert stored_gate_verdict(w.failed_run) is None
    step3 = p.step("validate-release-identity")
    assert f["release_identity_ok"] is None and f["evidence_release_id"] is None
    assert step3["verdict"] == "needs_human" and "not established" in step3["reason"]
    assert "matches" not in step3["reason"] and w.release_of(w.canary_rs) in step3["reason"]
    assert "identity matches: not established" in summary(p)
    assert p.findings["retried"] is False
    assert_nothing_mutated(p)


# --------------------------------------------------------------------------- 4. the mismatch is on the template's wire

PINNED = "template-url-pins-rc-release"


def test_mismatch_from_the_template_url_names_the_template_not_the_argument(played: Callable[..., Played]) -> None:
    p = played(PINNED)
    w, f = target(p), p.findings
    run = w.failed_run
    canary = w.release_of(w.canary_rs)
    arg = next(a["value"] for a in run["spec"]["args"] if a["name"] == "release-id")
    url = next(m for m in run["spec"]["metrics"] if m["name"] == "mc-evidence-ok")["provider"]["web"]["url"]
    payload = stored_gate_verdict(run)
    assert payload is not None and arg == canary != payload["release_id"] and "{{args." not in url.split("?")[0]
    assert f["release_identity_ok"] is False and f["evidence_release_id"] == payload["release_id"]
    step3 = p.step("validate-release-identity")
    assert step3["verdict"] == "fail" and step3["facts"]["wire_to_fix"] == "template-url"
    assert f"`{url}`" in step3["reason"] and "AnalysisTemplate" in step3["reason"]
    # MC's stored reason is about the pinned release: its label says so, wherever it is quoted
    assert f["mc_reason"] == payload["reason"] and f"about release {payload['release_id']}" in f["mc_reason_from"]
    assert f"about release {payload['release_id']}, not the canary" in summary(p)
    assert "fieldRef" not in step3["reason"] and "release-id argument)" not in step3["reason"]
    assert p.findings["retried"] is False
    assert_nothing_mutated(p)


ARG_WRONG = "analysis-arg-reads-rollout-label"


def test_mismatch_from_the_argument_names_the_rollouts_args_not_the_template(played: Callable[..., Played]) -> None:
    p = played(ARG_WRONG)
    w, f = target(p), p.findings
    run = w.failed_run
    canary = w.release_of(w.canary_rs)
    arg = next(a["value"] for a in run["spec"]["args"] if a["name"] == "release-id")
    path = next(a for a in w.analysis_step()["args"] if a["name"] == "release-id")["valueFrom"]["fieldRef"]["fieldPath"]
    payload = stored_gate_verdict(run)
    assert payload is not None and arg != canary and payload["release_id"] == arg
    assert w.rollout["metadata"]["labels"]["release-id"] == arg  # the argument read the Rollout's own label
    assert f["release_identity_ok"] is False
    step3 = p.step("validate-release-identity")
    assert step3["verdict"] == "fail" and step3["facts"]["wire_to_fix"] == "rollout-args"
    assert f"fieldPath: {path}" in step3["reason"] and "Rollout's analysis args" in step3["reason"]
    assert "AnalysisTemplate" not in step3["reason"] and "URL" not in step3["reason"]
    assert p.findings["retried"] is False
    assert_nothing_mutated(p)
