"""Static rules for the committed runbooks: clean, one typed parameters cell, narrative, no logic."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from rollbook import app, runner

NOTEBOOKS = sorted(app.default_runbooks().glob("[0-9][0-9]-*.ipynb"))  # the steps and 00-preflight
RUNBOOKS = [s.notebook for s in runner.discover(app.default_runbooks())]  # the playbook's steps (01-99)
NAMES = ["01-confirm-rollback-status", "02-inspect-evidence", "03-validate-release-identity",
         "04-remediate-and-retry", "05-escalate", "06-verify-closeout"]
MAX_CELL_LINES = 15
FORBIDDEN = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Try, ast.For, ast.While, ast.With,
             ast.Lambda, ast.Import)


def test_the_six_playbook_steps_in_order() -> None:
    assert [p.stem for p in RUNBOOKS] == NAMES
    assert [p.stem for p in NOTEBOOKS] == ["00-preflight", *NAMES], "00-preflight is a notebook, not a step"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_clean(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_structure_and_no_logic(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    cells = nb.cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# "), "H1 title first"
    assert "**Playbook:**" in cells[0].source, "the playbook step is quoted"
    params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1
    for i, cell in enumerate(cells):
        if cell.cell_type != "code":
            continue
        assert cells[i - 1].cell_type == "markdown", f"cell {i} of {path.name} has no markdown before it"
        lines = [ln for ln in cell.source.splitlines() if ln.strip()]
        assert len(lines) <= MAX_CELL_LINES, f"cell {i} of {path.name} has {len(lines)} lines"
        tree = ast.parse(cell.source)
        bad = [type(n).__name__ for n in ast.walk(tree) if isinstance(n, FORBIDDEN)]
        assert not bad, f"logic in cell {i} of {path.name}: {bad}"
    last = "preflight.show(report)" if path.stem == "00-preflight" else "outcome.show()"
    assert cells[-1].cell_type == "code" and cells[-1].source.strip() == last


@pytest.mark.parametrize("path", RUNBOOKS, ids=lambda p: p.stem)
def test_parameters_typed_with_help_and_safe_defaults(path: Path) -> None:
    declared = runner.notebook_params(path)
    assert {"namespace", "rollout", "context", "mc_url", "run_dir"} <= set(declared)
    nb = nbformat.read(path, as_version=4)
    source = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])).source
    for line in source.splitlines():
        assert ":" in line.split("=")[0] and "#" in line, f"untyped or undocumented parameter: {line}"
    for name, p in declared.items():
        if name.startswith("approve_"):
            assert p.default in ("False", False), f"{name} must default to off"
        assert not any(w in name for w in ("token", "password", "secret")), "no secret parameters"
