"""The runner process SIGKILLed mid-run: the record dir keeps every notebook executed so far, a
record.json that parses and says `interrupted`, and `rollbook verify` names what is missing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PLAYBOOK = Path(__file__).parents[1] / "notebooks" / "engine_fixtures" / "playbook"
BOUND = 90.0  # seconds: three tiny steps on a busy machine take ~10

SCRIPT = """
import sys
from pathlib import Path
from rollbook import runner
spec = runner.RunSpec(incident="INC-KILL", namespace="prod", rollout="api", out=Path(sys.argv[1]),
                      runbooks_dir=Path(sys.argv[2]), step_timeout=100.0,
                      params={"mode_4": "sleep", "sleep_4": 100.0})
runner.run(spec, progress=lambda line: None)
"""


def _steps_recorded(out: Path) -> tuple[Path | None, list[int]]:
    """The run folder and the steps its record.json lists so far (it may not exist yet)."""
    for path in out.glob("INC-KILL/*/record.json"):
        doc = json.loads(path.read_text())  # atomic writes: never half a file, so this never fails
        return path.parent, [s["step"] for s in doc["steps"]]
    return None, []


def kill_runner_after_steps(out: Path, n: int) -> Path:
    """Start a runner whose step 4 sleeps; SIGKILL it once record.json lists `n` steps; its run folder."""
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), str(PLAYBOOK)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + BOUND
        run_dir, steps = _steps_recorded(out)
        while len(steps) < n:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "runner exited"
            assert time.monotonic() < deadline, f"record.json listed {steps} after {BOUND} s"
            time.sleep(0.2)
            run_dir, steps = _steps_recorded(out)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        # the runner is dead; its kernels (our grandchildren, same session) are ended by their group id
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
    assert run_dir is not None
    return run_dir


def test_sigkill_mid_run_leaves_an_interrupted_record_with_the_notebooks_so_far(tmp_path: Path) -> None:
    run_dir = kill_runner_after_steps(tmp_path / "out", 3)
    doc = json.loads((run_dir / "record.json").read_text())
    assert doc["status"] == "interrupted" and doc["partial"] is True and doc["finished_at"] is None
    assert [s["step"] for s in doc["steps"]] == [1, 2, 3]
    for s in doc["steps"]:
        assert s["verdict"] == "pass"
        nb = json.loads((run_dir / s["notebook"]).read_text())  # a complete notebook, not half of one
        assert nb["cells"]
    assert not (run_dir / "manifest.json").exists() and not (run_dir / "summary.md").exists()


def test_verify_names_what_a_killed_run_is_missing(tmp_path: Path, row) -> None:  # type: ignore[no-untyped-def]
    from rollbook import verify

    run_dir = kill_runner_after_steps(tmp_path / "out", 3)
    problems = verify.verify(run_dir).problems
    wanted = {"manifest.json: missing, the record was never sealed (the run did not finish?)",
              "summary.md: missing", "report.html: missing", "bundle.zip: missing"}
    interrupted = any("says the run was interrupted" in p for p in problems)
    ok = wanted <= set(problems) and interrupted and not any(".ipynb: missing" in p for p in problems)
    row("matrix", "runner SIGKILLed after step 3 of 6", "record.json parses, says interrupted, lists steps 1-3 "
        "with their notebooks; verify names the missing files", "; ".join(problems)[:200], ok)
    assert ok, problems
