"""Two `rollbook run` processes for ONE incident at once (issue 11, part 6, first half): two complete,
distinct records, both indexed in <out>/history.sqlite, neither touching the other's files.

"At once" is made certain, not left to the scheduler: run A (context `sandbox`, user operator) starts first;
the sandbox API server holds A's reads of the Rollout once A's record folder exists, until run B (context
`sandbox-viewer`) has made its own record folder. So B's whole run starts while A is inside a step; both
then finish side by side, writing into the same incident folder and the same history database."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rollbook import verify
from rollbook.sandbox.controller import Timings
from rollbook.sandbox.server import Sandbox

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]
FAST = Timings(analysis_seconds=0.1, error_interval_seconds=0.02, scale=0.01, idle_poll_seconds=0.05)
STEPS = "1,2"
BOUND = 120.0
INCIDENT = "INC-TWICE"


def _run_dirs(out: Path, context: str) -> list[Path]:
    """The record folders under the incident whose record.json (already written) names `context`."""
    found = []
    for path in (out / INCIDENT).glob("*/record.json"):
        if json.loads(path.read_text()).get("context") == context:  # atomic writes: never half a file
            found.append(path.parent)
    return found


def _hold_a_until_b_started(out: Path) -> tuple[Callable[[Any, Callable[[Any], None]], None], dict[str, int]]:
    """An API server layer: operator's Rollout reads wait (bounded) while A is running and B is not yet."""
    seen = {"held": 0}
    b_started = threading.Event()

    def layer(ex: Any, next_: Callable[[Any], None]) -> None:
        if ex.user is not None and ex.user.name == "operator" and "/rollouts" in ex.path \
                and _run_dirs(out, "sandbox") and not b_started.is_set():
            seen["held"] += 1
            waited = 0.0
            while waited < BOUND and not _run_dirs(out, "sandbox-viewer"):
                threading.Event().wait(0.1)
                waited += 0.1
            b_started.set()
        next_(ex)
    return layer, seen


def test_two_runs_of_one_incident_at_once_make_two_complete_records(tmp_path: Path, row) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    with Sandbox("evidence-gap", tmp_path / "sb", admin=True, timings=FAST) as sb:
        assert sb.apiserver is not None
        layer, seen = _hold_a_until_b_started(out)
        sb.apiserver.layers.insert(0, layer)
        env = {**os.environ, "KUBECONFIG": str(sb.kubeconfig), "ROLLBOOK_MC_URL": sb.mc_url,
               "ROLLBOOK_MC_TOKEN_FILE": str(sb.mc_write_token_file), "ROLLBOOK_CONFIG": str(sb.config_file)}
        ns, name = sb.rollouts[0]

        def start(context: str) -> subprocess.Popen[str]:
            return subprocess.Popen([sys.executable, "-m", "rollbook.cli", "run", "--incident", INCIDENT,
                                     "--namespace", ns, "--rollout", name, "--context", context, "--out", str(out),
                                     "--steps", STEPS], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=env, cwd=tmp_path)
        procs = {"sandbox": start("sandbox")}
        procs["sandbox-viewer"] = start("sandbox-viewer")
        try:
            results = {ctx: (p.wait(timeout=2 * BOUND), *p.communicate(timeout=10)) for ctx, p in procs.items()}
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=10)

    dirs = {ctx: _run_dirs(out, ctx) for ctx in procs}
    assert all(len(d) == 1 for d in dirs.values()), (dirs, {c: r[2][-800:] for c, r in results.items()})
    (a,), (b,) = dirs["sandbox"], dirs["sandbox-viewer"]
    docs = {ctx: json.loads((d[0] / "record.json").read_text()) for ctx, d in dirs.items()}
    problems = {ctx: verify.verify(d[0]).problems for ctx, d in dirs.items()}  # manifest hashes: nothing overwritten
    with sqlite3.connect(out / "history.sqlite") as db:
        indexed = dict(db.execute("SELECT record, context FROM records WHERE incident = ?", (INCIDENT,)).fetchall())
    complete = {ctx: doc["status"] == "complete" and doc["run_id"] == dirs[ctx][0].name
                and [s["step"] for s in doc["steps"]] == [1, 2] for ctx, doc in docs.items()}
    codes = {ctx: r[0] for ctx, r in results.items()}
    ok = a != b and all(complete.values()) and not any(problems.values()) and seen["held"] >= 1 \
        and sorted(indexed.values()) == ["sandbox", "sandbox-viewer"] and len(indexed) == 2 \
        and codes["sandbox"] == codes["sandbox-viewer"] and codes["sandbox"] in (0, 4, 5)
    row("matrix", f"two `rollbook run` of one incident at once (steps {STEPS}, same --out; B started while A "
        "was held inside a step)", "two distinct complete records, both sealed and verified, both in history.sqlite",
        f"exits {codes}; {len({a, b})} folders, complete {complete}, verify problems "
        f"{sum(len(p) for p in problems.values())}, indexed {len(indexed)}, A held {seen['held']}x", ok)
    assert seen["held"] >= 1, "A was never held inside a step: the runs were not shown to overlap"
    assert a != b and all(complete.values()), (docs, complete)
    assert not any(problems.values()), problems
    assert sorted(indexed.values()) == ["sandbox", "sandbox-viewer"], indexed
    assert codes["sandbox"] == codes["sandbox-viewer"], results
