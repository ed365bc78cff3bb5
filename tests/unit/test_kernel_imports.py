"""What a step kernel holds: the notebooks' import and a table display must not pull in pandas or matplotlib.

Each step runs in its own kernel (six per run); pandas cost each ≈ 45 MiB and matplotlib ≈ 26 MiB more
(issue 7 item 4). matplotlib is imported only by a step that draws a plot (rollbook.slo)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CODE = """
import json, sys
from rollbook import steps
html = steps.table([{"a": 1, "b": None}, {"a": "<x>", "c": {"k": [1, 2]}}])._repr_html_()
html += steps.table({"field": True})._repr_html_()
print(json.dumps({"heavy": sorted(m for m in ("pandas", "numpy", "matplotlib", "PIL") if m in sys.modules),
                  "html": html}))
"""


def test_the_notebook_import_and_a_table_load_neither_pandas_nor_matplotlib() -> None:
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["heavy"] == []
    html = got["html"]
    assert "&lt;x&gt;" in html and "<x>" not in html  # every cell escaped
    assert html.count("<th ") == 3 + 2 and "k: 1, 2" in html and "yes" in html
    assert html.count("—") == 3  # a None cell and two keys a row does not have


def test_no_step_kernel_is_warmed_with_what_its_step_does_not_use() -> None:
    # the runner runs each notebook's `rollbook.warmup` in its kernel while it waits: pandas is used by no step,
    # matplotlib is warmed only where a plot is drawn on every incident with SLO metrics (step 2); steps 4 and 5
    # plot only on the SLO path or with pictures for a page, and import it then
    runbooks = Path(__file__).resolve().parents[2] / "runbooks"
    warmups = {nb.name: json.loads(nb.read_text())["metadata"]["rollbook"]["warmup"]
               for nb in sorted(runbooks.glob("0[1-6]-*.ipynb"))}
    assert len(warmups) == 6 and all(w.startswith("import rollbook.steps") for w in warmups.values())
    assert not [n for n, w in warmups.items() if "pandas" in w]
    assert [n for n, w in warmups.items() if "matplotlib" in w] == ["02-inspect-evidence.ipynb"]
