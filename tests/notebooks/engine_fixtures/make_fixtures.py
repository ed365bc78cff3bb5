"""Regenerate the engine's test playbook: `python tests/notebooks/engine_fixtures/make_fixtures.py`.

Six tiny notebooks named like the real steps. Each step N has a parameter `mode_N` that makes it pass,
escalate, raise, sleep, die or display nothing, so one playbook exercises every runner path.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

HERE = Path(__file__).parent / "playbook"
STEPS = ["confirm-rollback-status", "inspect-evidence", "validate-release-identity",
         "remediate-and-retry", "escalate", "verify-closeout"]

BODY = '''import json, os, pathlib, time
from IPython.display import display
prior = json.loads(pathlib.Path(run_dir, "results.json").read_text()) if run_dir else {{"steps": []}}
if mode_{n} == "sleep":
    time.sleep(sleep_{n})
if mode_{n} == "die":
    os._exit(1)
if mode_{n} == "raise":
    raise RuntimeError("planted failure in step {n}")'''

RESULT = '''display({{"application/vnd.rollbook.step-result.v1+json": {{
    "verdict": "escalate" if mode_{n} == "escalate" else "pass",
    "reason": "step {n} ({name}) finished in mode " + mode_{n},
    "facts": {{"seen_steps": [s["step"] for s in prior["steps"]], "namespace": namespace, "note": note}},
    "findings": {findings},
}}}}, raw=True) if mode_{n} != "noresult" else print("no result")'''

FINDINGS = {
    1: '{"phase": phase, "status_message": "RolloutAborted: metric mc-evidence-ok failed", '
       '"trigger": "evidence", "failed_metrics": ["mc-evidence-ok"], "analysis_run": "api-6d4f8b7c9-7-0"}',
    2: '{"mc_reason": "missing required evidence: test-report (junit)", "token_seen": '
       'os.environ.get("ROLLBOOK_MC_TOKEN")}',
    3: '{"release_id": "api-1.42.0", "evidence_release_id": "api-1.42.0", "release_identity_ok": True, '
       '"phase": None}',
    4: '{"retried": False}',
    5: '{"escalate": mode_5 == "escalate"}',
    6: '{"closeout_ok": True}',
}


def notebook(n: int, name: str) -> nbformat.NotebookNode:
    """Step n of the test playbook."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = [
        "incident: str = None  # required: the incident id",
        'namespace: str = "default"  # namespace of the rollout',
        'run_dir: str = ""  # the run folder, for results.json',
        f'mode_{n}: str = "pass"  # pass|escalate|raise|sleep|die|noresult',
        f"sleep_{n}: float = 0.0  # seconds to sleep in mode sleep",
        'note: str = ""  # free text echoed into the facts',
    ]
    if n == 1:
        params.append('phase: str = "Degraded"  # the phase this step reports')
    cells = [
        nbformat.v4.new_markdown_cell(f"# Step {n}: {name}\n\nA test notebook for the runner."),
        nbformat.v4.new_code_cell("\n".join(params)),
        nbformat.v4.new_markdown_cell(f"Step {n} narrative: CANARY-OUTPUT-{n} follows."),
        nbformat.v4.new_code_cell(BODY.format(n=n) + f'\nprint("CANARY-OUTPUT-{n}", note)'),
        nbformat.v4.new_code_cell(RESULT.format(n=n, name=name, findings=FINDINGS[n])),
    ]
    cells[1].metadata["tags"] = ["parameters"]
    nb.cells = cells
    return nb


def main() -> None:
    """Write the six notebooks."""
    HERE.mkdir(exist_ok=True)
    for n, name in enumerate(STEPS, start=1):
        nbformat.write(notebook(n, name), HERE / f"{n:02d}-{name}.ipynb")


if __name__ == "__main__":
    main()
