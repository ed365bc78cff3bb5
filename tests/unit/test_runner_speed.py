"""The runner's speed-ups keep behaviour: kernel launch order and the reused report exporter."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rollbook import record, runner
from rollbook.record import RunInfo, StepResult


class _Pool:
    """Records submitted workers instead of starting kernels."""

    def __init__(self) -> None:
        self.submitted: list[int] = []

    def submit(self, fn: Any, step: runner.StepDef, *args: Any) -> None:
        self.submitted.append(step.number)


def _launcher(n: int, calls: list[str]) -> tuple[runner._Launcher, _Pool]:
    steps = [runner.StepDef(i, f"s{i}", Path(f"0{i}-s{i}.ipynb"), parallel=i <= 3) for i in range(1, n + 1)]
    batches = runner._batches(steps, 3)
    pool = _Pool()
    ctx = runner._Context(Path("."), Path("."), {}, 1.0, 1.0, 1.0)
    launcher = runner._Launcher(pool, batches, ctx, 10.0,  # type: ignore[arg-type]
                                on_last_warm=lambda: calls.append("warm-report"))
    return launcher, pool


def test_later_kernels_start_when_the_batch_before_runs_or_has_a_warm_kernel() -> None:
    calls: list[str] = []
    launcher, pool = _launcher(6, calls)  # batches [1,2,3] [4] [5] [6]
    assert [s.number for s, _ in launcher.opened(0)] == [1, 2, 3]
    assert pool.submitted == [1, 2, 3, 4]  # the next batch boots while the first runs
    launcher.warmed(0)
    assert pool.submitted == [1, 2, 3, 4]  # already launched: nothing twice
    launcher.warmed(1)  # step 4's kernel is warm: step 5's may boot, within two batches ahead
    assert pool.submitted == [1, 2, 3, 4, 5]
    launcher.warmed(2)  # step 6 would be three batches ahead of the running one: not yet
    assert pool.submitted == [1, 2, 3, 4, 5]
    assert [s.number for s, _ in launcher.opened(1)] == [4]
    assert pool.submitted == [1, 2, 3, 4, 5, 6]
    assert calls == []
    launcher.warmed(3)
    launcher.warmed(3)
    assert calls == ["warm-report"]  # once, when the last batch's first kernel is warm
    assert [s.number for s, _ in launcher.opened(3)] == [6]
    assert pool.submitted == [1, 2, 3, 4, 5, 6]


def test_a_single_batch_launches_once_and_warms_the_report() -> None:
    calls: list[str] = []
    launcher, pool = _launcher(3, calls)
    launcher.opened(0)
    launcher.warmed(0)
    assert pool.submitted == [1, 2, 3] and calls == ["warm-report"]


def _run_dir(tmp_path: Path) -> tuple[RunInfo, list[StepResult]]:
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Step one\n\nNarrative with `code` and a [link](https://example.invalid)."),
        nbformat.v4.new_code_cell("x = 1", outputs=[nbformat.v4.new_output(
            "display_data", data={"text/html": "<table><tr><td>CANARY-CELL</td></tr></table>", "text/plain": "t"})]),
    ])
    nbformat.write(nb, tmp_path / "01-one.ipynb")
    info = RunInfo("INC-1", "prod", "api", None, "run-1", "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", "0",
                   {}, 0, False)
    return info, [StepResult(1, "one", "01-one.ipynb", "pass", "fine", "2026-01-01T00:00:00Z", 0.5)]


def _without_cell_ids(html: str) -> str:
    return re.sub(r'id="cell-id=[0-9a-f-]+"', 'id="cell-id=X"', html)  # new cells get random ids


def test_the_reused_exporter_renders_what_a_fresh_one_does(tmp_path: Path) -> None:
    info, steps = _run_dir(tmp_path)
    record.warm_report().join(timeout=120)
    assert record._EXPORTERS, "the warm-up created the shared exporter"
    reused = [record.render_report(info, steps, tmp_path) for _ in range(2)]
    fresh, _ = record._new_exporter().from_notebook_node(
        record._report_notebook(info, steps, tmp_path),
        resources={"metadata": {"name": f"{info.incident} {info.run_id}"}})
    assert "CANARY-CELL" in reused[0] and "x = 1" not in reused[0]
    assert _without_cell_ids(reused[0]) == _without_cell_ids(reused[1]) == _without_cell_ids(fresh)


def test_render_report_does_not_wait_forever_for_a_stuck_warm_up(tmp_path: Path, monkeypatch: Any) -> None:
    info, steps = _run_dir(tmp_path)
    monkeypatch.setattr(record, "REPORT_LOCK_BOUND", 0.05)
    with record._EXPORTER_LOCK:  # a warm-up that never finishes
        html = record.render_report(info, steps, tmp_path)
    assert "CANARY-CELL" in html
