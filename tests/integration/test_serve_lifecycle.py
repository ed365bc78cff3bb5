"""`rollbook serve` across SIGTERM, kill -9 and restarts, and under a burst: nothing accepted is lost,
nothing runs twice, an interrupted run leaves a partial record that says so.

A running incident is held in step 1 by the gate (serve_harness: a rollback still under way), so every
"while it runs" below is an observed state, never a race against a timer.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest
from serve_harness import (
    GATE,
    HOLDING,
    ServeProcess,
    build_scenario,
    finish_rollback,
    record_dirs,
    rendered_body,
    rollout_gets,
    step1_is_waiting,
    wait_for,
)

from rollbook import history, record
from rollbook.sandbox.server import Sandbox

RUN_BOUND = 180.0  # seconds any one incident may take on a loaded 2-core machine (a bound, not a goal)


def _children(svc: ServeProcess) -> list[psutil.Process]:
    assert svc.proc is not None
    return psutil.Process(svc.proc.pid).children(recursive=True)


def test_sigterm_mid_run_leaves_a_partial_record_and_a_restart_runs_what_was_left(
        tmp_path: Path, sandbox_factory: Callable[..., Sandbox]) -> None:
    sb = sandbox_factory(build_scenario(tmp_path / "scenario", copies=["team-a"], with_gate=True), timings=HOLDING)
    svc = ServeProcess(sb, tmp_path / "svc", workers=1, steps="1", grace=0).start()
    held = svc.post(rendered_body(sb, *GATE)).json()["incident"]
    waiting = svc.post(rendered_body(sb, "team-a", "api")).json()["incident"]
    wait_for(lambda: step1_is_waiting(sb), RUN_BOUND, "step 1 of the held incident to wait for the rollback")
    assert svc.incident(waiting)["status"] == "queued"

    svc.signal(signal.SIGTERM)
    assert svc.wait_exit(120) == 0
    with pytest.raises(httpx.ConnectError):  # it stopped accepting
        svc.post(rendered_body(sb, "team-a", "api"))

    [partial] = record_dirs(svc.out, held)
    rec = json.loads((partial / "record.json").read_text(encoding="utf-8"))
    assert rec["partial"] is True and rec["exit_code"] == 3 and "interrupted by SIGTERM" in rec["error"]
    assert rec["steps"][0]["verdict"] == "error"
    state = json.loads((partial / "serve.json").read_text(encoding="utf-8"))
    assert state["state"] == "interrupted" and state["attempt"] == 1 and "SIGTERM" in state["reason"]
    assert not (partial / "first-look.json").exists()  # no first look from an interrupted attempt
    assert record.verify_manifest(partial) == []
    assert record_dirs(svc.out, waiting) == []

    restarted = ServeProcess(sb, svc.root, workers=1, steps="1", grace=0, token=svc.token).start()
    try:
        row = restarted.incident(held)
        assert row["status"] in ("queued", "running") and row["resumed"] is True
        assert [a["outcome"] for a in row["attempts"]][:1] == ["interrupted"]
        wait_for(lambda: restarted.incident(held)["status"] == "running", RUN_BOUND, "the resumed attempt to start")
        finish_rollback(sb)  # Argo finishes the rollback: step 1 confirms it
        done = restarted.wait_status(held, ("done", "failed"), RUN_BOUND)
        assert done["status"] == "done" and done["attempt"] == 2 and done["exit_code"] == 0
        first, second = record_dirs(restarted.out, held)
        assert first == partial and done["record"] == str(second)
        resumed = json.loads((second / "serve.json").read_text(encoding="utf-8"))
        assert resumed["resumed"] is True and resumed["resumed_from"] == str(partial) and resumed["attempt"] == 2
        other = restarted.wait_status(waiting, ("done", "failed"), RUN_BOUND)
        assert other["status"] == "done" and other["attempt"] == 1 and len(record_dirs(restarted.out, waiting)) == 1
    finally:
        restarted.stop()


def test_sigterm_lets_a_running_incident_finish_within_the_grace_period(
        tmp_path: Path, sandbox_factory: Callable[..., Sandbox]) -> None:
    sb = sandbox_factory(build_scenario(tmp_path / "scenario", with_gate=True), timings=HOLDING)
    svc = ServeProcess(sb, tmp_path / "svc", workers=1, steps="1", grace=300).start()
    held = svc.post(rendered_body(sb, *GATE)).json()["incident"]
    wait_for(lambda: step1_is_waiting(sb), RUN_BOUND, "step 1 to wait for the rollback")
    svc.signal(signal.SIGTERM)
    wait_for(lambda: "stopping" in svc.log(), 30, "the service to start stopping")
    polls = rollout_gets(sb)
    wait_for(lambda: rollout_gets(sb) > polls, 30, "step 1 to keep polling during the grace period")
    finish_rollback(sb)
    assert svc.wait_exit(RUN_BOUND) == 0
    [run_dir] = record_dirs(svc.out, held)
    rec = json.loads((run_dir / "record.json").read_text(encoding="utf-8"))
    assert rec["partial"] is False and rec["exit_code"] == 0 and rec["steps"][0]["verdict"] == "pass"
    assert json.loads((run_dir / "serve.json").read_text(encoding="utf-8"))["state"] == "completed"


def test_kill_9_with_five_queued_then_restart_runs_each_once(
        tmp_path: Path, sandbox_factory: Callable[..., Sandbox]) -> None:
    teams = [f"team-{i}" for i in range(5)]
    sb = sandbox_factory(build_scenario(tmp_path / "scenario", copies=teams, with_gate=True), timings=HOLDING)
    svc = ServeProcess(sb, tmp_path / "svc", workers=1, steps="1", grace=0).start()
    held = svc.post(rendered_body(sb, *GATE)).json()["incident"]
    queued = [svc.post(rendered_body(sb, ns, "api")).json()["incident"] for ns in teams]
    wait_for(lambda: step1_is_waiting(sb), RUN_BOUND, "step 1 of the held incident to wait")
    assert [svc.incident(i)["status"] for i in queued] == ["queued"] * 5
    children = _children(svc)
    assert children  # the attempt's process and its kernel

    svc.signal(signal.SIGKILL)
    svc.wait_exit(30)
    gone = psutil.wait_procs(children, timeout=60)[1]
    assert gone == []  # the attempt died with the service: nothing can run beside the re-run

    restarted = ServeProcess(sb, svc.root, workers=1, steps="1", grace=0, token=svc.token).start()
    try:
        assert restarted.incident(held)["resumed"] is True
        wait_for(lambda: restarted.incident(held)["status"] == "running", RUN_BOUND, "the resumed attempt")
        finish_rollback(sb)
        for incident in [held, *queued]:
            assert restarted.wait_status(incident, ("done", "failed"), RUN_BOUND)["status"] == "done"
        for incident, ns in zip(queued, teams, strict=True):
            row = restarted.incident(incident)
            assert row["attempt"] == 1 and [a["outcome"] for a in row["attempts"]] == ["completed"]
            [run_dir] = record_dirs(restarted.out, incident)  # none twice
            assert json.loads((run_dir / "record.json").read_text(encoding="utf-8"))["namespace"] == ns
        row = restarted.incident(held)
        assert row["attempt"] == 2 and [a["outcome"] for a in row["attempts"]][-1] == "completed"
        assert row["attempts"][0]["outcome"] in ("interrupted", "error")  # cut short by the kill
        assert len(record_dirs(restarted.out, held)) in (1, 2)  # a partial record if the attempt got that far
    finally:
        restarted.stop()


def test_a_burst_of_20_aborts_for_20_rollouts(tmp_path: Path, sandbox_factory: Callable[..., Sandbox]) -> None:
    teams = [f"team-{i:02d}" for i in range(20)]
    sb = sandbox_factory(build_scenario(tmp_path / "scenario", copies=teams))
    svc = ServeProcess(sb, tmp_path / "svc", workers=2, queue=50, steps="1").start()
    bodies = {ns: rendered_body(sb, ns, "api") for ns in teams}
    answers: dict[str, list[httpx.Response]] = {ns: [] for ns in teams}

    def send(ns: str) -> None:  # each rollout: its abort and its failed analysis, as Argo sends both
        answers[ns].append(svc.post(bodies[ns]))
        answers[ns].append(svc.post(rendered_body(sb, ns, "api", "on-analysis-run-failed")))

    threads = [threading.Thread(target=send, args=(ns,)) for ns in teams]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        for ns in teams:
            assert sorted(r.status_code for r in answers[ns]) == [200, 202], ns
        incidents = {ns: answers[ns][0].json()["incident"] for ns in teams}
        assert len(set(incidents.values())) == 20
        for ns, incident in incidents.items():
            row = svc.wait_status(incident, ("done", "failed"), RUN_BOUND * 2)
            assert row["status"] == "done" and row["attempt"] == 1 and row["notifications"] == 2
            [run_dir] = record_dirs(svc.out, incident)
            rec = json.loads((run_dir / "record.json").read_text(encoding="utf-8"))
            ro = sb.store.get("rollouts", ns, "api")
            assert (rec["namespace"], rec["rollout"]) == (ns, "api")
            assert rec["findings"]["canary_revision"] == int(ro["metadata"]["annotations"]["rollout.argoproj.io/revision"])
            assert rec["findings"]["phase"] == "Degraded" and rec["steps"][0]["verdict"] == "pass"
        assert len(history.query(svc.out)) == 20
        assert svc.get("/v1/incidents?status=done&limit=50").json()["count"] == 20
    finally:
        svc.stop()
