"""`rollbook run` as a user calls it: strict parameter errors (exit 2, nothing run), and nbmake smoke."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from rollbook import app
from rollbook.sandbox.server import Sandbox

ROLLBOOK = [sys.executable, "-m", "rollbook.cli"]


def _run(args: list[str], out: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = ["run", "--incident", "INC-1", "--namespace", "prod", "--rollout", "api", "--out", str(out)]
    return subprocess.run([*ROLLBOOK, *base, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize(("args", "words"), [
    (["--param", "wait_secs=10"], ["wait_secs", "not declared", "wait_seconds"]),
    (["--param", "wait_seconds=soon"], ["wait_seconds", "bound on waiting"]),
    (["--param", "approve_retry=maybe"], ["approve_retry"]),
    (["--param", "mc_token=abc"], ["mc_token"]),
    (["--approve-retry"], ["--approver", "--ticket"]),
    (["--steps", "1,9"], ["9"]),
])
def test_bad_parameters_exit_2_before_any_kernel(tmp_path: Path, args: list[str], words: list[str]) -> None:
    proc = _run(args, tmp_path / "out")
    assert proc.returncode == 2, proc.stderr
    for word in words:
        assert word.lower() in proc.stderr.lower(), proc.stderr
    assert not (tmp_path / "out").exists(), "nothing may be run or written on bad usage"


def test_unknown_context_and_missing_mc_exit_2_before_any_kernel(
        sandbox_factory: Callable[..., Sandbox], tmp_path: Path) -> None:
    sb = sandbox_factory("evidence-gap")
    env = {"KUBECONFIG": str(sb.kubeconfig), "ROLLBOOK_MC_URL": sb.mc_url,
           "ROLLBOOK_MC_TOKEN_FILE": str(sb.mc_write_token_file), "ROLLBOOK_CONFIG": ""}
    proc = _run(["--context", "prod-eu-typo"], tmp_path / "a", env)
    assert proc.returncode == 2 and "prod-eu-typo" in proc.stderr and "get-contexts" in proc.stderr
    proc = _run([], tmp_path / "b", {**env, "ROLLBOOK_MC_TOKEN_FILE": str(tmp_path / "missing-token")})
    assert proc.returncode == 2 and "ROLLBOOK_MC_TOKEN" in proc.stderr, proc.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_nbmake_runs_every_runbook_with_defaults(sandbox_factory: Callable[..., Sandbox], tmp_path: Path) -> None:
    sb = sandbox_factory("rollback-loop")  # escalation due: step 5 composes (and dry-runs) the page
    ns, name = sb.rollouts[0]
    # exactly what a user gets from `source .sandbox/env.sh` before `jupyter lab runbooks/`
    sourced = subprocess.run(["bash", "-c", f"source {sb.env_file} && env -0"], capture_output=True,
                             check=True, timeout=10).stdout.decode()
    env = dict(line.split("=", 1) for line in sourced.split("\0") if "=" in line)
    runbooks = app.default_runbooks()
    before = {p: p.read_bytes() for p in runbooks.glob("*.ipynb")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "--nbmake", "-q", "-p", "no:cacheprovider",
                           "-p", "no:xdist", "--rootdir", str(tmp_path), str(runbooks)],
                          capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "7 passed" in proc.stdout  # the six steps and 00-preflight
    assert {p: p.read_bytes() for p in runbooks.glob("*.ipynb")} == before, "nbmake must not write outputs back"
    assert sb.store.get("rollouts", ns, name)["status"]["abort"] is True, "defaults must change nothing"
    assert sb.services is not None and sb.services.incidents == {}, "defaults send nothing"
    reads = {r.user for r in sb.apiserver.requests if r.method == "GET"}
    assert reads == {"viewer"}, "the read-only steps run as the viewer (env.sh's rollbook.yaml)"


def _sandbox_env(sb: Sandbox) -> dict[str, str]:
    return {"KUBECONFIG": str(sb.kubeconfig), "ROLLBOOK_MC_URL": sb.mc_url,
            "ROLLBOOK_MC_TOKEN_FILE": str(sb.mc_write_token_file), "ROLLBOOK_CONFIG": str(sb.config_file)}


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    return lines[0]


def test_a_typo_exits_2_before_any_kernel_with_one_line_naming_what_exists(
        sandbox_factory: Callable[..., Sandbox], tmp_path: Path) -> None:
    sb = sandbox_factory("evidence-gap")
    ns, name = sb.rollouts[0]
    context = next(c["name"] for c in yaml.safe_load(sb.kubeconfig.read_text())["contexts"]
                   if c["name"] == yaml.safe_load(sb.config_file.read_text())["kube"]["read_context"])
    existing = sorted(r["metadata"]["name"] for r in sb.store.list("rollouts", ns)[0])
    base = ["run", "--incident", "INC-1", "--out", str(tmp_path / "out")]
    wrong_rollout = subprocess.run([*ROLLBOOK, *base, "--namespace", ns, "--rollout", name + "x"],
                                   capture_output=True, text=True, timeout=120, env={**os.environ, **_sandbox_env(sb)})
    line = _one_line(wrong_rollout)
    assert f"'{name}x'" in line and f"'{ns}'" in line and f"'{context}'" in line
    assert f"Rollouts there: {', '.join(existing)}" in line
    wrong_ns = subprocess.run([*ROLLBOOK, *base, "--namespace", ns + "x", "--rollout", name],
                              capture_output=True, text=True, timeout=120, env={**os.environ, **_sandbox_env(sb)})
    line = _one_line(wrong_ns)
    assert f"'{ns}x'" in line and f"'{context}'" in line and f"{ns}/{name}" in line
    missing_file = subprocess.run([*ROLLBOOK, *base, "--namespace", ns, "--rollout", name, "--param",
                                   "evidence_file=reports/junit.xml"], capture_output=True, text=True, timeout=120,
                                  env={**os.environ, **_sandbox_env(sb)}, cwd=tmp_path)
    assert str(tmp_path / "reports" / "junit.xml") in _one_line(missing_file)
    assert not (tmp_path / "out").exists(), "a typo leaves no record"


def test_a_stale_env_sh_after_the_sandbox_stopped_is_one_clear_line(
        sandbox_factory: Callable[..., Sandbox], tmp_path: Path) -> None:
    sb = sandbox_factory("evidence-gap")
    ns, name = sb.rollouts[0]
    env = _sandbox_env(sb)
    sb.stop()
    proc = _run_in(["--namespace", ns, "--rollout", name], tmp_path / "out", env)
    line = _one_line(proc)
    assert "does not answer" in line and "not running" in line and str(sb.state_dir) in line
    assert not (tmp_path / "out").exists()


def test_a_follow_up_retry_without_the_evidence_mc_asks_for_exits_2(
        sandbox_factory: Callable[..., Sandbox], tmp_path: Path) -> None:
    sb = sandbox_factory("evidence-gap")
    ns, name = sb.rollouts[0]
    canary = sb.store.get("rollouts", ns, name)["spec"]["template"]["metadata"]["labels"]["release-id"]
    missing = sb.mc.verdict(canary, "production")["missing"]
    proc = _run_in(["--namespace", ns, "--rollout", name, "--steps", "4,5,6", "--approve-retry", "--approver", "a",
                    "--ticket", "T"], tmp_path / "out", _sandbox_env(sb))
    line = _one_line(proc)
    assert "--param evidence_file" in line and canary in line and all(m in line for m in missing)
    assert not (tmp_path / "out").exists()


def _run_in(args: list[str], out: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ROLLBOOK, "run", "--incident", "INC-1", "--out", str(out), *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **env})
