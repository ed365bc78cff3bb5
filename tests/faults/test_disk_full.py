"""A disk that fills mid-run (issue 11, part 2): a real ENOSPC from a real filesystem, never a mocked write.

`rollbook run` (the real CLI, steps 1-4 with the retry approved) runs in a private user + mount namespace
(`unshare -rm`, no privilege needed) whose --out is a 48 MiB tmpfs: only that process tree sees it. The one
thing added to the runner is a hook right after record.json is written listing step 1: it fills the tmpfs
to the last block. Every write of the runner and of its kernels after that meets ENOSPC from the kernel,
exactly as on a full disk. Afterwards the namespace's shell copies what the tmpfs holds out (the tmpfs
ends with the namespace) and the test reads it.

Expected: exit 1 or 3 with one line naming the write that failed (no traceback); the record.json on disk
parses, says `interrupted` and lists step 1; `rollbook verify` names what is missing; and no mutation
reached the cluster or MC (step 4 never sent a retry the record could not hold)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rollbook import app, verify
from rollbook.sandbox.controller import Timings
from rollbook.sandbox.server import Sandbox

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]
FAST = Timings(analysis_seconds=0.1, error_interval_seconds=0.02, scale=0.01, idle_poll_seconds=0.05)
BOUND = 120.0
TMPFS = "48m"  # above the 32 MiB app.check_out_dir wants free before a run starts

HOOK = """
import errno, sys
from pathlib import Path
from rollbook import cli, record

OUT = Path(sys.argv[1])
original = record.write_progress

def fill() -> None:
    with open(OUT / ".filler", "wb", buffering=0) as fh:
        for size in (1 << 20, 4096, 1):  # then the last partial blocks
            try:
                while True:
                    fh.write(b"\\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e

def hooked(run_dir, info, steps, redactor):
    path = original(run_dir, info, steps, redactor)
    if steps and not (OUT / ".filler").exists():
        fill()  # record.json lists step 1: from now on the disk is full
    return path

record.write_progress = hooked
sys.argv = ["rollbook", "run", "--out", str(OUT), *sys.argv[2:]]
cli.main()
"""
SHELL = ('out=$1; copy=$2; py=$3; hook=$4; shift 4; mount -t tmpfs -o size={size} tmpfs "$out" || exit 97; '
         '"$py" -c "$hook" "$out" "$@"; code=$?; rm -f "$out/.filler"; cp -a "$out/." "$copy/"; exit $code')


def _unshare_works() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt && echo ok"],
                           capture_output=True, text=True, timeout=10)
    return probe.stdout.strip() == "ok"


@pytest.mark.skipif(not _unshare_works(), reason="unprivileged user+mount namespaces are not available here")
def test_a_disk_that_fills_after_step_1_ends_the_run_clearly_before_any_mutation(tmp_path: Path, row) -> None:  # type: ignore[no-untyped-def]
    out, copy = tmp_path / "out", tmp_path / "copy"
    out.mkdir()
    copy.mkdir()
    with Sandbox("evidence-gap", tmp_path / "sb", admin=True, timings=FAST) as sb:
        assert sb.apiserver is not None and sb.mc is not None
        env = {**os.environ, "KUBECONFIG": str(sb.kubeconfig), "ROLLBOOK_MC_URL": sb.mc_url,
               "ROLLBOOK_MC_TOKEN_FILE": str(sb.mc_write_token_file), "ROLLBOOK_CONFIG": str(sb.config_file)}
        ns, name = sb.rollouts[0]
        report = app.demo_report(tmp_path)
        args = ["--incident", "INC-FULL", "--namespace", ns, "--rollout", name, "--steps", "1,2,3,4",
                "--param", f"evidence_file={report}", "--approve-retry", "--approver", "alice", "--ticket", "CHG-1"]
        kube_before, mc_before = len(sb.apiserver.requests), len(sb.mc.requests)
        proc = subprocess.run(["unshare", "-rm", "sh", "-c", SHELL.format(size=TMPFS), "sh", str(out), str(copy),
                               sys.executable, HOOK, *args],
                              capture_output=True, text=True, timeout=2 * BOUND, env=env, cwd=tmp_path)
        kube_writes = [f"{r.method} {r.path}" for r in sb.apiserver.requests[kube_before:] if r.method != "GET"]
        mc_writes = [f"{r.method} {r.path}" for r in sb.mc.requests[mc_before:]
                     if r.method not in ("GET", "HEAD")]
    assert proc.returncode != 97, proc.stderr
    assert not any(out.iterdir()), "the tmpfs leaked: --out outside the namespace got files"
    (rec_path,) = list(copy.glob("INC-FULL/*/record.json"))
    run_dir = rec_path.parent
    doc = json.loads(rec_path.read_text())  # the last complete version: atomic writes
    problems = verify.verify(run_dir).problems
    last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    names = f"cannot write {out}/INC-FULL/" in last  # the file that could not be written, not "a file"
    ok = proc.returncode in (1, 3) and "No space left on device" in last and names and "Traceback" not in proc.stderr \
        and doc["status"] == "interrupted" and [s["step"] for s in doc["steps"]][:1] == [1] \
        and any("interrupted" in p for p in problems) and not kube_writes and not mc_writes
    row("matrix", "disk full (real ENOSPC, a tmpfs filled) right after step 1 is recorded; steps 1-4, retry "
        "approved", "exit 1/3, one line naming the failed write; record.json parses, `interrupted`, lists step 1; "
        "verify names what is missing; no mutation sent",
        f"exit {proc.returncode}: {last[:110]}; record.json {doc['status']}, steps "
        f"{[s['step'] for s in doc['steps']]}; verify {len(problems)} problem(s); writes: kube {len(kube_writes)}, "
        f"MC {len(mc_writes)}", ok)
    assert proc.returncode in (1, 3), proc.stderr[-2000:]
    assert "No space left on device" in last and names and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert doc["status"] == "interrupted" and doc["steps"][0]["step"] == 1, doc
    assert any("interrupted" in p for p in problems), problems
    assert not kube_writes and not mc_writes, (kube_writes, mc_writes)
