"""Live progress on the terminal (issue 13 item 6): plain lines off a TTY, rich's live display on one."""

from __future__ import annotations

import io
import threading
import time

from rollbook import terminal


def _wait_for(predicate: object, bound: float = 10.0) -> None:
    """Poll (bounded) until the heartbeat thread wrote what the test waits for."""
    deadline = time.monotonic() + bound
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the heartbeat never came"
        time.sleep(0.01)


def test_off_a_tty_every_event_is_one_line() -> None:
    out = io.StringIO()
    rep = terminal.for_terminal(out)
    assert isinstance(rep, terminal.Plain)
    rep.phase("starting 3 kernel(s)")
    rep.started(4, "[4/6] remediate-and-retry")
    rep.output(4, "after retry: Progressing; 118s left\n")
    rep.output(4, "   ")
    rep.finished(4, "[4/6] remediate-and-retry … pass (6.7 s)")
    rep.note("continuing record /x")
    rep.close()
    assert out.getvalue().splitlines() == [
        "rollbook: starting 3 kernel(s) …", "[4/6] remediate-and-retry … running",
        "[4/6] remediate-and-retry │ after retry: Progressing; 118s left",
        "[4/6] remediate-and-retry … pass (6.7 s)", "rollbook: continuing record /x"]


def test_a_silent_step_still_says_it_is_alive() -> None:
    now = [100.0]
    out = io.StringIO()
    rep = terminal.Plain(out, heartbeat=0.05, clock=lambda: now[0])
    rep.started(5, "[5/6] escalate")
    now[0] += 31  # simulated time: the step printed nothing for 31 s
    _wait_for(lambda: "still running" in out.getvalue())
    rep.close()
    assert "[5/6] escalate … still running (31 s)" in out.getvalue().splitlines()


def test_lines_passes_only_the_result_lines_to_a_callable() -> None:
    seen: list[str] = []
    rep = terminal.Lines(seen.append)
    rep.phase("x")
    rep.started(1, "[1/1] a")
    rep.output(1, "y")
    rep.finished(1, "[1/1] a … pass (0.1 s)")
    assert seen == ["[1/1] a … pass (0.1 s)"]


def test_line_writer_emits_whole_lines_and_flushes_the_rest() -> None:
    got: list[str] = []
    w = terminal.LineWriter(got.append)
    w.write("one\ntw")
    w.write("o\nthr")
    assert got == ["one", "two"]
    w.flush()
    assert got == ["one", "two", "thr"]


def test_on_a_tty_rich_draws_the_running_steps_and_prints_coloured_results() -> None:
    from rich.console import Console

    out = io.StringIO()
    rep = terminal.Live(Console(file=out, force_terminal=True, width=120, color_system="standard"))
    rep.started(2, "[2/6] inspect-evidence")
    rep.output(2, "asking MC")
    rendered = Console(file=io.StringIO(), width=120, record=True)
    rendered.print(rep._render())
    drawn = rendered.export_text()
    assert "[2/6] inspect-evidence" in drawn and "asking MC" in drawn
    rep.finished(2, "[2/6] inspect-evidence … needs_human (1.0 s)")
    rep.close()
    text = out.getvalue()
    assert "needs_human" in text and "\x1b[" in text, "the verdict is coloured"
    assert threading.active_count() >= 1
