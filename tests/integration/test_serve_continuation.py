"""A human continues an incident `rollbook serve` recorded (issue 8, part 1): `rollbook run --incident ID
--steps 4,6` reuses the snapshot serve took at the abort, not a new one, so step 4's preconditions
compare against the state Argo was in then. Real service process, real CLI, real kernels, the sandbox."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from serve_harness import HOLDING, ServeProcess, build_scenario, record_dirs, rendered_body

from rollbook.sandbox.server import Sandbox


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_run_steps_4_6_continues_the_serve_record_with_its_snapshot(
        tmp_path: Path, sandbox_factory: Callable[..., Sandbox]) -> None:
    sb = sandbox_factory(build_scenario(tmp_path / "scenario", copies=["prod"]), timings=HOLDING)
    svc = ServeProcess(sb, tmp_path / "svc", workers=1, steps="1,2,3").start()
    try:
        incident = svc.post(rendered_body(sb, "prod", "api")).json()["incident"]
        row = svc.wait_status(incident, ("done", "failed"), 180)
    finally:
        svc.stop()
    assert row["status"] == "done", row
    (served,) = record_dirs(svc.out, incident)
    at_abort = _files(served / "snapshot")
    generation = json.loads((served / "snapshot" / "rollout.json").read_text())["metadata"]["generation"]

    # after the abort someone edits the Rollout's spec: a new snapshot would see the edit as the baseline
    sb.store.patch("rollouts", "prod", "api", {"spec": {"template": {"metadata": {"annotations": {
        "edited-after-the-abort": "yes"}}}}}, "merge")
    live = sb.store.get("rollouts", "prod", "api")["metadata"]["generation"]
    assert live == generation + 1

    done = subprocess.run(
        [sys.executable, "-m", "rollbook.cli", "run", "--incident", incident, "-n", "prod", "--rollout", "api",
         "--steps", "4,6", "--out", str(svc.out), "--config", str(svc.config())],
        env=svc.env(), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode not in (1, 2, 3), done.stderr[-3000:]
    later = [d for d in record_dirs(svc.out, incident) if d != served]
    assert len(later) == 1, later
    rec = json.loads((later[0] / "record.json").read_text())
    assert rec["continued_from"]["record"] == str(served)
    assert rec["continued_from"]["snapshot"] is True
    assert rec["continued_from"]["steps"] == [1, 2, 3]
    assert rec.get("snapshot_error") is None
    assert _files(later[0] / "snapshot") == at_abort  # byte for byte serve's, taken at the abort

    step4 = next(s for s in rec["steps"] if s["step"] == 4)
    # the preconditions saw the edit, which only a snapshot from before it can show
    assert f"the Rollout spec changed since the snapshot (generation {generation} → {live})" in json.dumps(
        step4, ensure_ascii=False), step4
    assert step4["verdict"] != "pass"
