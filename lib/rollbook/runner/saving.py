"""How a step notebook reaches the disk while it runs: atomically, and only when its outputs changed.

papermill keeps the output notebook on disk as the step runs, so that a runner killed mid-step leaves the
cells it completed in the record. It saves at every cell's start and at every cell's end, markdown cells
included (two saves per cell, ~200 per six-step run), and each save deep-copies, validates and serialises
the whole notebook: measured with py-spy over three in-process runs, 8 ms of CPU per save, 1.5 CPU-s per
run, the runner's largest cost. The engine here (papermill's own nbclient engine, registered as
"rollbook") saves when the notebook on disk would change in content: once when the parameters are in
(papermill's `notebook_start`), after each code cell ran (its outputs), and at the end (also after a
kernel death or a timeout: papermill's `notebook_complete` runs in a `finally`). A cell's start is no
longer written on its own: after a SIGKILL of the runner, the cell that was running shows as pending,
with the outputs of every cell before it. The intermediate saves are compact JSON from the C encoder
without nbformat's deep copy, indentation and validation (which only logs); the final one is nbformat's
own form, validated, as papermill writes it.

Every write goes through a temp file and os.replace (`atomic`), never papermill's plain open('w'): a
runner killed mid-save would leave half a notebook in the record. Without fsync: `execution._execute`
makes the step's last version durable (atomic.sync).
"""

from __future__ import annotations

import json
from typing import Any

import nbformat
import papermill.engines
import papermill.iorw
from papermill.engines import NBClientEngine, NotebookExecutionManager

from rollbook import atomic

ENGINE = "rollbook"


class _AtomicLocalHandler(papermill.iorw.LocalHandler):  # type: ignore[misc]
    """papermill's writes for absolute paths (the runner's are always absolute), through a temp file."""

    def write(self, buf: str, path: str) -> None:
        atomic.write_text(path, buf, durable=False)


class _Manager(NotebookExecutionManager):  # type: ignore[misc]
    """papermill's bookkeeping of a running notebook, saving only when its content changed (see above)."""

    _quiet = False

    def save(self, **kwargs: Any) -> None:
        if self._quiet or not self.output_path:
            return
        final = kwargs.pop("final", False)
        # in between: compact JSON, C-encoded, no copy, no validation (nbformat's indented form goes through
        # json's pure-Python encoder, after a deep copy: most of a save's cost); any reader reads both
        text = nbformat.writes(self.nb) if final else json.dumps(self.nb, ensure_ascii=False)
        papermill.iorw.papermill_io.write(text, self.output_path)
        self.last_save_time = self.now()

    def cell_start(self, cell: Any, cell_index: int | None = None, **kwargs: Any) -> None:
        self._unsaved(super().cell_start, cell, cell_index, **kwargs)

    def cell_complete(self, cell: Any, cell_index: int | None = None, **kwargs: Any) -> None:
        if cell.get("cell_type") == "code":
            super().cell_complete(cell, cell_index, **kwargs)
        else:  # its metadata changes (times, status) and is saved with the next code cell
            self._unsaved(super().cell_complete, cell, cell_index, **kwargs)

    def notebook_complete(self, **kwargs: Any) -> None:
        self._unsaved(super().notebook_complete, **kwargs)
        self.save(final=True)

    def _unsaved(self, call: Any, *args: Any, **kwargs: Any) -> None:
        self._quiet = True
        try:
            call(*args, **kwargs)
        finally:
            self._quiet = False


class _Engine(NBClientEngine):  # type: ignore[misc]
    """papermill's nbclient engine with the manager above (papermill's `Engine.execute_notebook`, whose
    only change is the manager's class: papermill has no hook for it)."""

    @classmethod
    def execute_notebook(cls, nb: Any, kernel_name: str, output_path: str | None = None, progress_bar: bool = True,
                         log_output: bool = False, autosave_cell_every: int = 30, **kwargs: Any) -> Any:
        nb_man = _Manager(nb, output_path=output_path, progress_bar=progress_bar, log_output=log_output,
                          autosave_cell_every=autosave_cell_every)
        nb_man.notebook_start()
        try:
            cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
        finally:
            nb_man.cleanup_pbar()
            nb_man.notebook_complete()
        return nb_man.nb


papermill.iorw.papermill_io.register("/", _AtomicLocalHandler())
papermill.engines.papermill_engines.register(ENGINE, _Engine)
