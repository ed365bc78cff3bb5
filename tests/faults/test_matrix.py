"""The fault matrix at the playbook level (issue 11, part 2): fault x step, the whole `rollbook run`
through real kernels, real kubernetes client and httpx against the sandbox with faults injected.

Expected outcomes: a fault a bounded retry absorbs leaves every verdict as on a clean run; a fault
that lasts makes the step say what it could not establish (never exit 3, never a guess); a broken
kernel or a step past --step-timeout exits 3 with a partial record; an unusable --out is refused
before anything runs or is changed. The sandbox cases (one playbook run each, ~20 s) are marked `slow`:
`make test` leaves them out, `make reliability` runs them; the runner's own failures run always."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from rollbook import verify
from rollbook.sandbox.controller import Timings
from rollbook.sandbox.faults import FaultPlan
from rollbook.sandbox.server import Sandbox

pytestmark = pytest.mark.notebooks
FAST = Timings(analysis_seconds=0.1, error_interval_seconds=0.02, scale=0.01, idle_poll_seconds=0.05)
PLAYBOOK = Path(__file__).parents[1] / "notebooks" / "engine_fixtures" / "playbook"
STEPS = "1,2,3"  # the read-only first look: cause, evidence, release identity
BOUND = 120.0  # seconds any case may take


class Env:
    """A sandbox with a fault plan, and `rollbook run` against it in a subprocess."""

    def __init__(self, sb: Sandbox, tmp: Path) -> None:
        self.sb, self.tmp, self.runs = sb, tmp, 0
        self.env = {**os.environ, "KUBECONFIG": str(sb.kubeconfig), "ROLLBOOK_MC_URL": sb.mc_url,
                    "ROLLBOOK_MC_TOKEN_FILE": str(sb.mc_write_token_file), "ROLLBOOK_CONFIG": str(sb.config_file)}

    @property
    def plan(self) -> FaultPlan:
        assert self.sb.faults is not None
        return self.sb.faults

    def run(self, *extra: str) -> tuple[int, dict[str, Any], str]:
        self.runs += 1
        ns, name = self.sb.rollouts[0]
        out = self.tmp / f"out-{self.runs}"
        proc = subprocess.run([sys.executable, "-m", "rollbook.cli", "run", "--incident", "INC-F", "--namespace", ns,
                               "--rollout", name, "--out", str(out), "--steps", STEPS, *extra],
                              capture_output=True, text=True, timeout=BOUND, env=self.env, cwd=self.tmp)
        found = re.search(r"^Incident record: (\S+)", proc.stdout, re.MULTILINE)
        assert found, proc.stdout[-1500:] + proc.stderr[-1500:]
        return proc.returncode, json.loads((Path(found[1]) / "record.json").read_text()), proc.stderr


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("matrix")
    with Sandbox("evidence-gap", tmp / "sb", admin=True, timings=FAST, faults=FaultPlan()) as sb:
        yield Env(sb, tmp)


@pytest.fixture(scope="module")
def clean(env: Env) -> tuple[int, dict[str, Any], str]:
    """The same run without any fault: what a recovered run must match."""
    return env.run()


def _verdicts(rec: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["verdict"] for s in rec["steps"]}


RECOVERED = [
    ("kube GET rollout 503 x2", dict(service="kube", method="GET", path="*/rollouts/*", status=503, after=1, count=2)),
    ("kube GET analysisruns 429 Retry-After 1", dict(service="kube", method="GET", path="*/analysisruns*", status=429,
                                                     retry_after=1, count=1)),
    ("kube GET replicasets reset mid-body", dict(service="kube", method="GET", path="*/replicasets*", fault="reset",
                                                 count=1)),
    ("MC 503 x2 then recovers", dict(service="mc", status=503, count=2)),
    ("MC hang once past the client timeout", dict(service="mc", fault="hang", delay=8.0, count=1)),
]


@pytest.mark.slow
@pytest.mark.parametrize("case, rule", RECOVERED, ids=[c[0] for c in RECOVERED])
def test_a_fault_the_retries_absorb_leaves_every_verdict_as_on_a_clean_run(env: Env, clean, case: str,  # type: ignore[no-untyped-def]
                                                                          rule: dict[str, Any], row) -> None:
    env.plan.clear()
    before = len(env.plan.injected)
    env.plan.add(**rule)
    try:
        code, rec, _ = env.run()
    finally:
        env.plan.clear()
    fired = len(env.plan.injected) - before
    expected = f"retried and recovered: exit {clean[0]}, verdicts {_verdicts(clean[1])}"
    observed = f"{fired} injected; exit {code}, verdicts {_verdicts(rec)}"
    ok = fired >= 1 and code == clean[0] and _verdicts(rec) == _verdicts(clean[1]) \
        and rec["findings"]["mc_reason"] == clean[1]["findings"]["mc_reason"]
    row("matrix", f"{case} (steps {STEPS})", expected, observed, ok)
    assert fired >= 1 and code == clean[0], observed
    assert _verdicts(rec) == _verdicts(clean[1])
    assert rec["findings"]["mc_reason"] == clean[1]["findings"]["mc_reason"]


LASTING = [
    ("MC 401 on every request", dict(service="mc", status=401, count=None), r"401|refused|token|scope"),
    ("MC 200 HTML login page on every request", dict(service="mc", fault="html_login", count=None),
     r"text/html|not JSON|instead of JSON|login"),
]


@pytest.mark.slow
@pytest.mark.parametrize("case, rule, says", LASTING, ids=[c[0] for c in LASTING])
def test_a_lasting_fault_makes_a_step_say_what_it_could_not_establish(env: Env, case: str, rule: dict[str, Any],  # type: ignore[no-untyped-def]
                                                                      says: str, row) -> None:
    env.plan.clear()
    before = len(env.plan.injected)
    env.plan.add(**rule)
    try:
        code, rec, _ = env.run()
    finally:
        env.plan.clear()
    fired = len(env.plan.injected) - before
    # what the AnalysisRun stored (Argo measured MC then: the reason, the release id it asked about) stays
    # known; the step that needed MC live says why it could not ask, instead of passing
    telling = [s for s in rec["steps"] if re.search(says, s["reason"])]
    ok = fired >= 1 and code != 3 and bool(telling) and all(s["verdict"] not in ("error", "pass") for s in telling)
    first = telling[0] if telling else {"step": "?", "name": "?", "verdict": "-", "reason": "no step says it"}
    row("matrix", f"{case} (steps {STEPS})", f"exit != 3; a step (not pass) says /{says}/",
        f"{fired} injected; exit {code}; step {first['step']} {first['name']} {first['verdict']}: "
        f"{first['reason'][:140]}", ok)
    assert fired >= 1 and code != 3, code
    assert telling, [(s["name"], s["verdict"], s["reason"][:200]) for s in rec["steps"]]
    assert all(s["verdict"] not in ("error", "pass") for s in telling), telling


def test_an_unusable_out_is_refused_before_any_mutation(env: Env, row) -> None:  # type: ignore[no-untyped-def]
    assert env.sb.apiserver is not None
    (env.tmp / "a-file").write_text("x")
    seen = len(env.sb.apiserver.requests)
    ns, name = env.sb.rollouts[0]
    proc = subprocess.run([sys.executable, "-m", "rollbook.cli", "run", "--incident", "INC-F", "--namespace", ns,
                           "--rollout", name, "--out", str(env.tmp / "a-file" / "out"), "--approve-retry",
                           "--approver", "alice", "--ticket", "CHG-1"],
                          capture_output=True, text=True, timeout=BOUND, env=env.env, cwd=env.tmp)
    writes = [r for r in env.sb.apiserver.requests[seen:] if r.method not in ("GET",)]
    ok = proc.returncode == 2 and not writes and "a-file" in proc.stderr and "Traceback" not in proc.stderr
    row("matrix", "--out unusable (under a file), retry approved", "exit 2 before any request that changes anything",
        f"exit {proc.returncode}, {len(writes)} write(s): {proc.stderr.strip()[:120]}", ok)
    assert ok, proc.stderr


# --------------------------------------------------------------------------- the runner's own failures

SCRIPT = """
import sys
from pathlib import Path
from rollbook import runner
spec = runner.RunSpec(incident="INC-K", namespace="prod", rollout="api", out=Path(sys.argv[1]),
                      runbooks_dir=Path(sys.argv[2]), step_timeout=float(sys.argv[3]), steps=[4],
                      params={"mode_4": "sleep", "sleep_4": 100.0})
sys.exit(runner.run(spec, progress=lambda line: None).exit_code)
"""


def _runner(tmp: Path, step_timeout: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp / "out"), str(PLAYBOOK), str(step_timeout)],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _is_kernel(p: psutil.Process) -> bool:
    """A live kernel (spawned or forked); not one that exited and waits to be reaped."""
    try:
        return "ipykernel_launcher" in " ".join(p.cmdline())
    except psutil.Error:  # a zombie, or gone meanwhile
        return False


def _record(tmp: Path) -> tuple[Path, dict[str, Any]]:
    (path,) = list((tmp / "out").glob("INC-K/*/record.json"))
    return path.parent, json.loads(path.read_text())


def test_the_kernel_killed_by_its_pid_mid_step_exits_3_with_a_partial_record(tmp_path: Path, row) -> None:  # type: ignore[no-untyped-def]
    proc = _runner(tmp_path, 100.0)
    try:
        deadline = time.monotonic() + BOUND
        kernels: list[psutil.Process] = []
        while not (kernels and list((tmp_path / "out").glob("INC-K/*/04-*.ipynb"))):  # step 4 is executing
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
            kernels = [p for p in psutil.Process(proc.pid).children(recursive=True) if _is_kernel(p)]
        (kernel,) = kernels
        os.kill(kernel.pid, signal.SIGKILL)
        code = proc.wait(timeout=BOUND)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    run_dir, rec = _record(tmp_path)
    (step,) = rec["steps"]
    problems = verify.verify(run_dir).problems
    ok = code == 3 and rec["partial"] and step["verdict"] == "error" and rec["status"] == "complete" \
        and (run_dir / "manifest.json").is_file()
    row("matrix", "kernel SIGKILLed by its pid mid-step (step 4)", "exit 3, partial record, the step an error",
        f"exit {code}, partial {rec['partial']}, {step['verdict']}: {step['reason'][:100]}", ok)
    assert ok, (code, step)
    assert not [p for p in problems if "manifest" in p or "missing" in p], problems


def test_a_step_past_step_timeout_is_stopped_and_exits_3(tmp_path: Path, row) -> None:  # type: ignore[no-untyped-def]
    proc = _runner(tmp_path, 3.0)
    try:
        code = proc.wait(timeout=BOUND)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    _, rec = _record(tmp_path)
    (step,) = rec["steps"]
    ok = code == 3 and step["timed_out"] is True and step["verdict"] == "error" and "3 s" in step["reason"]
    row("matrix", "step 4 sleeps past --step-timeout 3", "exit 3, the step timed_out, its kernel stopped",
        f"exit {code}, timed_out {step['timed_out']}: {step['reason'][:100]}", ok)
    assert ok, step
