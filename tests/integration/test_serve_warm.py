"""`rollbook serve`'s warm kernel pool as a user runs it: the pool fills, each incident's steps run on
kernels booted before the notification (one per step, none reused), and a kill -9 of the service leaves
no kernel behind (they die with it: ipykernel's parent poller)."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Callable
from pathlib import Path

import psutil
from serve_harness import HOLDING, ServeProcess, build_scenario, record_dirs, rendered_body, wait_for

from rollbook.sandbox.server import Sandbox


def _pool(svc: ServeProcess) -> dict[str, float]:
    text = svc.get("/metrics", auth=False).text
    return {k: float(v) for k, v in re.findall(r'^rollbook_serve_pool_kernels\{state="(\w+)"\} (\S+)$', text, re.M)}


def _kernels(svc: ServeProcess) -> set[int]:
    assert svc.proc is not None
    found = set()
    for p in psutil.Process(svc.proc.pid).children(recursive=True):
        try:
            if "ipykernel_launcher" in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                found.add(p.pid)
        except psutil.Error:  # gone meanwhile
            pass
    return found


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_steps_run_on_kernels_booted_before_the_notification_and_die_with_the_service(
        tmp_path: Path, sandbox_factory: Callable[..., Sandbox]) -> None:
    sb = sandbox_factory(build_scenario(tmp_path / "scenario", copies=["prod", "shop"]), timings=HOLDING)
    svc = ServeProcess(sb, tmp_path / "svc", workers=1, steps="1,2,3").start()
    try:
        wait_for(lambda: _pool(svc).get("idle") == 3, 120, "a full pool of 3 warm kernels", interval=0.2)
        warm = _kernels(svc)
        assert len(warm) == 3
        first = svc.post(rendered_body(sb, "prod", "api")).json()["incident"]
        assert svc.wait_status(first, ("done", "failed"), 180)["status"] == "done"
        assert all(_gone(pid) for pid in warm)  # each ran one step and was shut down
        wait_for(lambda: _pool(svc).get("idle") == 3, 120, "the 3 replacements", interval=0.2)
        replacements = _kernels(svc)
        assert replacements.isdisjoint(warm)
        (run_dir,) = record_dirs(svc.out, first)
        serve_json = json.loads((run_dir / "serve.json").read_text())
        assert serve_json["executor"] == "warm"
        verdicts = {s["name"]: s["verdict"] for s in json.loads((run_dir / "record.json").read_text())["steps"]}
        assert verdicts == {"confirm-rollback-status": "pass", "inspect-evidence": "pass",
                            "validate-release-identity": "pass"}

        svc.signal(signal.SIGKILL)
        svc.wait_exit(30)
        wait_for(lambda: all(_gone(pid) for pid in replacements), 60, "the idle kernels to die with the service",
                 interval=0.2)
    finally:
        svc.stop()
