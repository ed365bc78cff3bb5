"""Live progress of a run on the terminal (stderr): rich on a TTY, plain lines otherwise.

The runner reports events (a phase such as start-up, a step started, a line a step printed, a step
finished); what a person sees is decided here. rich draws the live part (spinners, elapsed seconds,
each running step's latest line); written to a file or a pipe every event is one plain line, and a
step that prints nothing still says it is alive every HEARTBEAT seconds, so no wait is silent.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

HEARTBEAT = 15.0  # seconds between "still running" lines when not on a TTY
MAX_LINE = 160  # a step's printed line is cut to this on the terminal (the notebook keeps it whole)


class Reporter(Protocol):
    """What the runner tells the terminal while a run is under way."""

    def phase(self, text: str) -> None:
        """Something outside the steps began (start-up, the record); it ends at the next event."""

    def note(self, text: str) -> None:
        """Something the person must know about the run itself (e.g. which record it continues)."""

    def started(self, number: int, label: str) -> None:
        """Step `number` runs now; `label` is `[4/6] remediate-and-retry`."""

    def output(self, number: int, line: str) -> None:
        """A line the step printed (a bounded wait's progress, for example)."""

    def finished(self, number: int, line: str) -> None:
        """The step ended; `line` is its one-line result."""

    def close(self) -> None:
        """The run is over: stop drawing."""


@dataclass
class Lines:
    """Only each step's result line, to a callable (the runner's original `progress` sink)."""

    sink: Callable[[str], None]

    def phase(self, text: str) -> None:
        """Ignored: the sink wants result lines only."""

    def note(self, text: str) -> None:
        """Ignored."""

    def started(self, number: int, label: str) -> None:
        """Ignored."""

    def output(self, number: int, line: str) -> None:
        """Ignored."""

    def finished(self, number: int, line: str) -> None:
        """Pass the result line on."""
        self.sink(line)

    def close(self) -> None:
        """Nothing to stop."""


@dataclass
class _Running:
    label: str
    since: float
    last: str = ""
    said: float = 0.0


@dataclass
class Plain:
    """Every event as one line on a stream, plus a heartbeat for steps that stay silent."""

    stream: IO[str] = field(default_factory=lambda: sys.stderr)
    heartbeat: float = HEARTBEAT
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, _Running] = {}
        self._phase: tuple[str, float] | None = None
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="rollbook-heartbeat", daemon=True)
        self._ticker.start()

    def _say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def phase(self, text: str) -> None:
        """Say it now; the heartbeat repeats it while it lasts."""
        with self._lock:
            self._phase = (text, self.clock())
            self._say(f"rollbook: {text} …")

    def note(self, text: str) -> None:
        """`rollbook: <text>` at once."""
        with self._lock:
            self._say(f"rollbook: {text}")

    def started(self, number: int, label: str) -> None:
        """`[4/6] remediate-and-retry … running`."""
        with self._lock:
            self._phase = None
            now = self.clock()
            self._running[number] = _Running(label, now, said=now)
            self._say(f"{label} … running")

    def output(self, number: int, line: str) -> None:
        """`[4/6] remediate-and-retry │ after retry: Degraded; …`."""
        with self._lock:
            step = self._running.get(number)
            if step is not None and line.strip():
                step.last, step.said = _short(line), self.clock()
                self._say(f"{step.label} │ {step.last}")

    def finished(self, number: int, line: str) -> None:
        """The step's result line."""
        with self._lock:
            self._running.pop(number, None)
            self._say(line)

    def close(self) -> None:
        """Stop the heartbeat."""
        self._stop.set()
        self._ticker.join(timeout=2)

    def _tick(self) -> None:
        """Every few seconds: a line for each running step (or phase) that said nothing for `heartbeat` s."""
        while not self._stop.wait(min(1.0, self.heartbeat)):
            with self._lock:
                now = self.clock()
                for step in self._running.values():
                    if now - step.said >= self.heartbeat:
                        step.said = now
                        self._say(f"{step.label} … still running ({now - step.since:.0f} s)")
                if self._phase and now - self._phase[1] >= self.heartbeat:
                    text, began = self._phase
                    self._say(f"rollbook: {text} … ({now - began:.0f} s)")
                    self._phase = (text, now)


class Live:
    """rich's live display on a TTY: a spinner per running step with its elapsed time and latest line."""

    def __init__(self, console: Any) -> None:
        from rich.live import Live as RichLive

        self._console = console
        self._lock = threading.Lock()
        self._running: dict[int, _Running] = {}
        self._phase: tuple[str, float] | None = None
        self._live = RichLive(get_renderable=self._render, console=console, refresh_per_second=8, transient=True)
        self._live.start()

    def _render(self) -> Any:
        from rich.spinner import Spinner
        from rich.table import Table

        grid = Table.grid(padding=(0, 1))
        now = time.monotonic()
        with self._lock:
            rows = [(f"rollbook: {self._phase[0]}", self._phase[1], "")] if self._phase else []
            rows += [(s.label, s.since, s.last) for s in self._running.values()]
        for label, since, last in rows:
            grid.add_row(Spinner("dots", style="cyan"), f"{label} [dim]{now - since:.0f} s[/dim]",
                         f"[dim]{_escape(last)}[/dim]")
        return grid

    def phase(self, text: str) -> None:
        """Show it with a spinner until the next event."""
        with self._lock:
            self._phase = (text, time.monotonic())

    def note(self, text: str) -> None:
        """Print it above the live part."""
        self._console.print(f"[yellow]rollbook:[/yellow] {_escape(text)}", highlight=False)

    def started(self, number: int, label: str) -> None:
        """Add the step's spinner."""
        with self._lock:
            self._phase = None
            self._running[number] = _Running(label, time.monotonic())

    def output(self, number: int, line: str) -> None:
        """Show the line beside the step's spinner."""
        with self._lock:
            if number in self._running and line.strip():
                self._running[number].last = _short(line)

    def finished(self, number: int, line: str) -> None:
        """Print the result line above the live part, coloured by verdict."""
        with self._lock:
            self._running.pop(number, None)
        self._console.print(_coloured(line), highlight=False)

    def close(self) -> None:
        """Stop the live display (it leaves only the printed result lines)."""
        self._live.stop()


_COLOURS = {"pass": "green", "skip": "dim", "needs_human": "yellow", "fail": "red", "escalate": "bold red",
            "error": "bold red"}


def _coloured(line: str) -> str:
    """The result line with its verdict word in the verdict's colour (rich markup)."""
    text = _escape(line)
    for word, colour in _COLOURS.items():
        marker = f"… {word}"
        if marker in text:
            return text.replace(marker, f"… [{colour}]{word}[/{colour}]", 1)
    return text


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _short(line: str) -> str:
    """One line, cut to MAX_LINE characters."""
    line = line.strip().splitlines()[-1] if line.strip() else ""
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"


def for_terminal(stream: IO[str] | None = None) -> Reporter:
    """rich's live display when `stream` (default stderr) is a terminal, else plain lines."""
    stream = stream or sys.stderr
    if stream.isatty():
        from rich.console import Console

        return Live(Console(file=stream, stderr=stream is sys.stderr))
    return Plain(stream)


class LineWriter:
    """A file-like object that turns what a kernel prints into one `output` event per line."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._emit = emit
        self._buffer = ""

    def write(self, text: str) -> int:
        """Buffer `text`; emit each completed line."""
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        """Emit a pending partial line (papermill flushes after each output)."""
        if self._buffer:
            self._emit(self._buffer)
            self._buffer = ""
