"""The runner through real papermill kernels, on the tiny test playbook in engine_fixtures/playbook."""

from __future__ import annotations

import json
import re
import time
import zipfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

from rollbook import record, runner
from rollbook.record import StepResult

PLAYBOOK = Path(__file__).parent / "engine_fixtures" / "playbook"
SECRET = "planted-secret-9d8c7b6a5f"


def _run(tmp_path: Path, lines: list[str] | None = None, **kw: Any) -> runner.RunResult:
    """Run the test playbook into tmp_path/out, collecting progress lines."""
    spec_kw: dict[str, Any] = dict(incident="INC-42", namespace="prod", rollout="api", out=tmp_path / "out",
                                   runbooks_dir=PLAYBOOK, step_timeout=60.0)
    run_kw = {k: kw.pop(k) for k in ("policy", "snapshot", "secrets", "progress") if k in kw}
    spec_kw.update(kw)
    sink = lines if lines is not None else []
    run_kw.setdefault("progress", sink.append)
    return runner.run(runner.RunSpec(**spec_kw), **run_kw)


def _record(result: runner.RunResult) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((result.record_dir / "record.json").read_text())
    return doc


def _interval(s: dict[str, Any]) -> tuple[float, float]:
    start = datetime.fromisoformat(s["started_at"].replace("Z", "+00:00")).timestamp()
    return start, start + s["seconds"]


def test_ok_path_runs_all_steps_in_order_with_parallel_read_only_steps(tmp_path: Path) -> None:
    lines: list[str] = []
    t0 = time.monotonic()
    result = _run(tmp_path, lines, params={"note": "hello", "mode_1": "sleep", "sleep_1": 0.6,
                                           "mode_2": "sleep", "sleep_2": "0.6", "mode_3": "sleep", "sleep_3": 0.6})
    wall = time.monotonic() - t0
    assert result.exit_code == 0 and not result.partial
    doc = _record(result)
    assert [s["verdict"] for s in doc["steps"]] == ["pass"] * 6
    # the read-only steps 1-3 overlapped in time; 4-6 each saw every earlier result via results.json
    spans = [_interval(s) for s in doc["steps"][:3]]
    assert max(a for a, _ in spans) < min(b for _, b in spans)
    assert [s["facts"]["seen_steps"] for s in doc["steps"]] == [[], [], [], [1, 2, 3], [1, 2, 3, 4], [1, 2, 3, 4, 5]]
    assert doc["steps"][0]["facts"] == {"seen_steps": [], "namespace": "prod", "note": "hello"}
    assert doc["findings"]["phase"] == "Degraded" and doc["findings"]["closeout_ok"] is True
    assert doc["parameters"]["note"] == "hello" and doc["parameters"]["sleep_2"] == 0.6
    assert len(lines) == 6 and re.fullmatch(r"\[2/6\] inspect-evidence … pass \(\d+\.\d s\)", lines[1])
    for n in range(1, 7):
        assert next(result.record_dir.glob(f"0{n}-*.ipynb")).exists()
    html = (result.record_dir / "report.html").read_text()
    assert "CANARY-OUTPUT-1 hello" in html and "CANARY-OUTPUT-6 hello" in html
    assert "prior = json.loads" not in html and "mode_1" not in html
    assert record.verify_manifest(result.record_dir) == []
    print(f"six test steps with 3x0.6 s of parallel sleep: {wall:.2f} s wall incl. record")


def test_healthy_rollout_skips_remediation_but_escalation_still_runs(tmp_path: Path) -> None:
    lines: list[str] = []
    result = _run(tmp_path, lines, params={"phase": "Healthy"})
    doc = _record(result)
    verdicts = {s["step"]: s["verdict"] for s in doc["steps"]}
    assert verdicts == {1: "pass", 2: "pass", 3: "pass", 4: "skip", 5: "pass", 6: "pass"}
    assert "Healthy" in doc["steps"][3]["reason"]
    assert not (result.record_dir / "04-remediate-and-retry.ipynb").exists()
    assert lines[3].startswith("[4/6] remediate-and-retry … skip: ")
    assert result.exit_code == 0


def test_a_custom_policy_decides_from_earlier_results(tmp_path: Path) -> None:
    seen: list[tuple[int, list[int]]] = []

    def policy(step: runner.StepDef, done: Sequence[StepResult]) -> str | None:
        seen.append((step.number, [d.step for d in done]))
        return "closeout not needed in this test" if step.number == 3 else None

    result = _run(tmp_path, steps=[1, 2, 3, 4], policy=policy)
    assert [s.verdict for s in result.steps] == ["pass", "pass", "skip", "pass"]
    assert seen == [(1, []), (2, []), (3, []), (4, [1, 2, 3])]  # 1-3 decided together, before they ran


def test_a_step_that_raises_gives_a_partial_record_and_exit_3(tmp_path: Path) -> None:
    lines: list[str] = []
    result = _run(tmp_path, lines, params={"mode_2": "raise"})
    assert result.exit_code == 3 and result.partial
    doc = _record(result)
    assert doc["partial"] is True and doc["exit_code"] == 3
    v = {s["step"]: (s["verdict"], s["reason"]) for s in doc["steps"]}
    assert v[2][0] == "error" and "RuntimeError: planted failure in step 2" in v[2][1]
    assert v[1][0] == v[3][0] == "pass"  # its parallel neighbours finished
    assert all(v[n][0] == "skip" and v[n][1].startswith("not run: step 2") for n in (4, 6))
    assert v[5][0] == "pass", "escalation is never skipped, not even after a failed step"
    nb = nbformat.read(result.record_dir / "02-inspect-evidence.ipynb", as_version=4)
    assert any(o.get("ename") == "RuntimeError" for c in nb.cells for o in c.get("outputs", []))
    assert "error" in lines[1] and "planted failure" in lines[1]
    assert "PARTIAL" in (result.record_dir / "summary.md").read_text()
    assert record.verify_manifest(result.record_dir) == []


def test_a_cell_timeout_is_marked_in_record_and_notebook(tmp_path: Path) -> None:
    t0 = time.monotonic()
    result = _run(tmp_path, steps=[4], cell_timeout=1.0, params={"mode_4": "sleep", "sleep_4": 300})
    assert time.monotonic() - t0 < 90   # the step sleeps 300 s: only the timeout can end it this soon
    step = _record(result)["steps"][0]
    assert step["verdict"] == "error" and step["timed_out"] is True and "cell timeout of 1 s" in step["reason"]
    assert result.exit_code == 3
    nb = nbformat.read(result.record_dir / "04-remediate-and-retry.ipynb", as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert [e["ename"] for e in errors] == ["CellTimeoutError"]


def test_the_wall_clock_bound_stops_a_slow_step(tmp_path: Path) -> None:
    t0 = time.monotonic()
    result = _run(tmp_path, steps=[4, 6], step_timeout=1.5, cell_timeout=30,
                  params={"mode_4": "sleep", "sleep_4": 300})
    assert time.monotonic() - t0 < 90   # the step sleeps 300 s: only the timeout can end it this soon
    doc = _record(result)
    assert doc["steps"][0]["timed_out"] is True and "wall-clock bound of 1.5 s" in doc["steps"][0]["reason"]
    assert doc["steps"][1]["verdict"] == "skip" and result.exit_code == 3


def test_kernel_death_and_a_missing_result_are_errors(tmp_path: Path) -> None:
    result = _run(tmp_path, steps=[5, 6], params={"mode_5": "noresult", "mode_6": "die"})
    assert result.steps[0].verdict == "error" and "displayed no" in result.steps[0].reason
    died = _run(tmp_path, steps=[6], params={"mode_6": "die"})
    assert died.steps[0].verdict == "error" and "DeadKernelError" in died.steps[0].reason
    assert died.exit_code == 3 and (died.record_dir / "record.json").exists()


def test_escalate_verdict_exits_4_after_the_run_completes(tmp_path: Path) -> None:
    result = _run(tmp_path, steps=[4, 5, 6], params={"mode_5": "escalate"})
    assert [s.verdict for s in result.steps] == ["pass", "escalate", "pass"]
    assert result.exit_code == 4
    assert _record(result)["findings"]["escalate"] is True


def test_planted_secret_reaches_no_output_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLBOOK_MC_TOKEN", SECRET)  # the kernel of step 2 reads and reports it
    file_secret = "file-secret-0a1b2c3d4e"
    (tmp_path / "token").write_text(file_secret + "\n")
    monkeypatch.setenv("ROLLBOOK_MC_TOKEN_FILE", str(tmp_path / "token"))
    result = _run(tmp_path, steps=[1, 2], params={"note": f"{SECRET} {file_secret}"},
                  snapshot=lambda: {"rollout": {"token": SECRET}})
    files = [p for p in result.record_dir.rglob("*") if p.is_file()]
    assert {"02-inspect-evidence.ipynb", "report.html", "summary.md", "record.json"} <= {p.name for p in files}
    for p in files:
        data = p.read_bytes()
        assert SECRET.encode() not in data and file_secret.encode() not in data, p
    with zipfile.ZipFile(result.record_dir / "bundle.zip") as zf:
        assert all(SECRET.encode() not in zf.read(n) for n in zf.namelist())
    doc = _record(result)
    assert doc["findings"]["token_seen"] == record.REDACTED  # the kernel did see it; the record does not
    assert "CANARY-OUTPUT-1 [REDACTED] [REDACTED]" in (result.record_dir / "report.html").read_text()


def test_snapshot_failure_is_recorded_and_the_steps_still_run(tmp_path: Path) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("apiserver unreachable")

    result = _run(tmp_path, steps=[6], snapshot=broken)
    assert result.exit_code == 0 and "apiserver unreachable" in _record(result)["snapshot_error"]


def test_runs_without_a_python3_kernelspec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(self: KernelSpecManager, name: str) -> Any:
        raise NoSuchKernel(name)

    monkeypatch.setattr(KernelSpecManager, "get_kernel_spec", missing)
    result = _run(tmp_path, steps=[6])
    assert result.steps[0].verdict == "pass"


class Events:
    """A terminal reporter that keeps every event (what the live display would show)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any, str]] = []

    def phase(self, text: str) -> None:
        self.seen.append(("phase", None, text))

    def note(self, text: str) -> None:
        self.seen.append(("note", None, text))

    def started(self, number: int, label: str) -> None:
        self.seen.append(("started", number, label))

    def output(self, number: int, line: str) -> None:
        self.seen.append(("output", number, line))

    def finished(self, number: int, line: str) -> None:
        self.seen.append(("finished", number, line))

    def close(self) -> None:
        self.seen.append(("close", None, ""))


def test_progress_reports_start_up_every_step_and_what_it_prints_while_it_runs(tmp_path: Path) -> None:
    events = Events()
    _run(tmp_path, progress=events, steps=[1, 4], params={"note": "live"}, snapshot=lambda: {"rollout": {}})
    kinds = [(k, n) for k, n, _ in events.seen]
    assert events.seen[0][0] == "phase" and kinds[-1] == ("close", None)
    assert any(k == "phase" and "snapshot" in t for k, _, t in events.seen)
    for n in (1, 4):
        start, end = kinds.index(("started", n)), kinds.index(("finished", n))
        printed = [i for i, (k, m, t) in enumerate(events.seen) if (k, m) == ("output", n) and
                   t == f"CANARY-OUTPUT-{n} live"]
        assert printed and start < printed[0] < end, "the step's output arrives while it runs"


def test_a_later_run_continues_a_record_a_service_wrote_earlier(tmp_path: Path) -> None:
    # the earlier record as a service writes it: the same runner, the same --out, no CLI
    service = _run(tmp_path, steps=[1, 2, 3], params={"note": "service"}, snapshot=lambda: {"rollout": {"by": "svc"}})
    lines: list[str] = []
    follow_up = _run(tmp_path, lines, steps=[4, 5, 6], snapshot=lambda: {"rollout": {"by": "follow-up"}})
    doc = _record(follow_up)
    assert doc["continued_from"]["record"] == str(service.record_dir) and doc["continued_from"]["steps"] == [1, 2, 3]
    assert [s["step"] for s in doc["steps"]] == [1, 2, 3, 4, 5, 6]
    assert [s.get("from_record") for s in doc["steps"]] == [service.record_dir.name] * 3 + [None] * 3
    # steps 4-6 saw the carried results and the earlier snapshot (the baseline), not a new one
    assert [s["facts"]["seen_steps"] for s in doc["steps"][3:]] == [[1, 2, 3], [1, 2, 3, 4], [1, 2, 3, 4, 5]]
    assert json.loads((follow_up.record_dir / "snapshot" / "rollout.json").read_text()) == {"by": "svc"}
    assert (follow_up.record_dir / "01-confirm-rollback-status.ipynb").is_file()
    assert [s.step for s in follow_up.steps] == [4, 5, 6] and len(lines) == 3
    assert f"Continues record `{service.record_dir}`" in (follow_up.record_dir / "summary.md").read_text()
    assert record.verify_manifest(follow_up.record_dir) == []


def test_without_an_earlier_record_a_follow_up_says_what_is_missing(tmp_path: Path) -> None:
    result = _run(tmp_path, steps=[4])
    doc = _record(result)
    assert doc["continued_from"] is None and "No earlier record of INC-42" in doc["notes"][0]
    assert "No earlier record of INC-42" in (result.record_dir / "summary.md").read_text()


def test_kernels_run_in_the_callers_folder_and_get_an_absolute_run_dir(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.run(runner.RunSpec(incident="INC-42", namespace="prod", rollout="api", out=Path("rel-out"),
                                       runbooks_dir=PLAYBOOK, steps=[4, 5], step_timeout=60), progress=lambda _: None)
    assert result.record_dir == tmp_path / "rel-out" / "INC-42" / result.record_dir.name
    assert [s.facts["seen_steps"] for s in result.steps] == [[], [4]], "step 5 found results.json via run_dir"
