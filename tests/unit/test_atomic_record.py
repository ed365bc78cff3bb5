"""Records are written atomically, and record.json says `interrupted` until the run has finished."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from rollbook import atomic, continuation, record
from rollbook.record import RunInfo, StepResult

SECRET = "planted-progress-secret-5e4d3c"


def _info(**kw: object) -> RunInfo:
    base: dict[str, object] = dict(incident="INC-7", namespace="prod", rollout="api", context=None,
                                   run_id="20260101T000000Z-abcdef", started_at="2026-01-01T00:00:00.000Z",
                                   finished_at="", tool_version="0", parameters={}, exit_code=3, partial=True)
    base.update(kw)
    return RunInfo(**base)  # type: ignore[arg-type]


def test_a_failed_atomic_write_leaves_the_old_content_and_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    atomic.write_text(path, "old\n")
    with pytest.raises(RuntimeError), atomic.open_atomic(path) as fh:
        fh.write(b"half a new")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]
    atomic.write_text(path, "new\n")
    assert path.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_progress_record_parses_says_interrupted_and_is_scrubbed(tmp_path: Path) -> None:
    run_dir = tmp_path / "out" / "INC-7" / "run"
    run_dir.mkdir(parents=True)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"token = {SECRET!r}")]),
                   run_dir / "01-confirm-rollback-status.ipynb")
    step = StepResult(1, "confirm-rollback-status", "01-confirm-rollback-status.ipynb", "pass",
                      f"the reason quotes {SECRET}", findings={"phase": "Degraded"})
    record.write_progress(run_dir, _info(), [step], record.Redactor([SECRET]))
    doc = json.loads((run_dir / "record.json").read_text())
    assert doc["status"] == "interrupted" and doc["finished_at"] is None and doc["partial"] is True
    assert [s["step"] for s in doc["steps"]] == [1] and doc["findings"]["phase"] == "Degraded"
    assert SECRET not in (run_dir / "record.json").read_text()
    assert SECRET not in (run_dir / "01-confirm-rollback-status.ipynb").read_text()
    # a follow-up run never continues a record that is still being written (or was killed)
    assert continuation.find_earlier(tmp_path / "out", "INC-7", "prod", "api") is None
    record.write_record(run_dir, _info(finished_at="2026-01-01T00:01:00.000Z", exit_code=0, partial=False), [step])
    assert json.loads((run_dir / "record.json").read_text())["status"] == "complete"
    found = continuation.find_earlier(tmp_path / "out", "INC-7", "prod", "api")
    assert found is not None and found.path == run_dir
    assert not [p for p in run_dir.rglob("*") if atomic.is_temp(p.name)]
