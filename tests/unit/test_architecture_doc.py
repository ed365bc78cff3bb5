"""docs/architecture.md has one line for every module of the sandbox tree (issue 7: the doc is the map)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_sandbox_module_has_its_line() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    tree = doc[doc.index("  sandbox/"):doc.index("    scenarios/")]
    listed = set(re.findall(r"\b([a-z_0-9]+\.py)\b", tree))
    sandbox = ROOT / "lib" / "rollbook" / "sandbox"
    modules = {p.name for p in sandbox.rglob("*.py") if p.name != "__init__.py"}
    assert modules - listed == set(), "modules missing from docs/architecture.md"
    assert listed - modules == set(), "docs/architecture.md lists modules that do not exist"
