"""A running step notebook is saved when its content changed, not at every cell's start and end
(rollbook.runner.saving): after the parameters, after each code cell with its outputs, and at the end;
each save atomic. Real papermill, a real kernel."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import papermill
import papermill.iorw
import pytest

from rollbook.runner.kernels import _Kernel, _kernel_env
from rollbook.runner.saving import ENGINE, _AtomicLocalHandler


class _Spy(_AtomicLocalHandler):
    """The runner's handler, remembering what each write of `path` held."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path, self.writes = str(path), []  # type: ignore[var-annotated]

    def write(self, buf: str, path: str) -> None:
        if path == self.path:
            self.writes.append(json.loads(buf))
        super().write(buf, path)


def _notebook(path: Path) -> Path:
    cells = [nbformat.v4.new_markdown_cell("# a step"),
             nbformat.v4.new_code_cell("mark = 'x'", metadata={"tags": ["parameters"]}),
             nbformat.v4.new_markdown_cell("first"),
             nbformat.v4.new_code_cell("print('OUT-1', mark)"),
             nbformat.v4.new_markdown_cell("second"),
             nbformat.v4.new_markdown_cell("third"),
             nbformat.v4.new_code_cell("print('OUT-2')")]
    nb = nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "language": "python",
                                                                         "display_name": "Python 3"}})
    nbformat.write(nb, path)
    return path


def _printed(nb: dict) -> str:  # type: ignore[type-arg]
    return "".join(o.get("text", "") if isinstance(o.get("text"), str) else "".join(o.get("text", []))
                   for c in nb["cells"] for o in c.get("outputs", []))


@pytest.fixture
def kernel(tmp_path: Path):  # type: ignore[no-untyped-def]
    k = _Kernel(tmp_path, _kernel_env(tmp_path), imports="")
    yield k
    k.stop()


def test_saved_after_the_parameters_after_each_code_cell_and_at_the_end(tmp_path: Path, kernel: _Kernel,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.ipynb"
    spy = _Spy(out)
    # papermill's handlers are a LIFO list: the spy goes first, and is taken off afterwards
    monkeypatch.setattr(papermill.iorw.papermill_io, "_handlers", [("/", spy), *papermill.iorw.papermill_io._handlers])
    papermill.execute_notebook(str(_notebook(tmp_path / "in.ipynb")), str(out), parameters={"mark": "given"},
                               kernel_name="python3", engine_name=ENGINE, km=kernel.km, progress_bar=False)
    code = [c for c in spy.writes[-1]["cells"] if c["cell_type"] == "code"]
    assert len(code) == 4  # the notebook's three and papermill's injected parameters
    # start, one per code cell, the engine's end, papermill's own last write: not 2 per cell (7 cells + 1)
    assert len(spy.writes) == 1 + len(code) + 2
    printed = [_printed(w) for w in spy.writes]
    assert printed[0] == "" and "injected-parameters" in json.dumps(spy.writes[0])
    first = next(i for i, p in enumerate(printed) if "OUT-1" in p)
    assert printed[first] == "OUT-1 given\n"  # the cell's output is on disk once it ran, before the next cell
    assert printed[-1] == "OUT-1 given\nOUT-2\n"
    final = nbformat.read(out, as_version=4)
    assert [c.metadata.papermill["status"] for c in final.cells] == ["completed"] * len(final.cells)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temp file left behind
