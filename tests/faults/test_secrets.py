"""Planted secrets never reach a record: kubeconfig (tokens, client key, exec env), the MC token file and
every secret the config references; searched in every file, the unzipped bundle, the history index and
the terminal (issue 11, part 5). One whole-playbook run with the retry approved, escalation a dry run."""

from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from rollbook import app, verify
from rollbook.sandbox.controller import Timings
from rollbook.sandbox.server import Sandbox

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]
FAST = Timings(analysis_seconds=0.1, error_interval_seconds=0.02, scale=0.01, idle_poll_seconds=0.05)


def _plant_kubeconfig(path: Path) -> dict[str, str]:
    """Add a user with a token, an inline client key and an exec plugin's env; the values planted."""
    planted = {"kube-token": f"plantedKubeToken{secrets.token_hex(12)}",
               "kube-client-key": f"PlantedKeyLine{secrets.token_hex(16)}",
               "kube-exec-env": f"plantedExecEnv{secrets.token_hex(12)}"}
    key = f"-----BEGIN PRIVATE KEY-----\n{planted['kube-client-key']}\n-----END PRIVATE KEY-----\n"
    doc = yaml.safe_load(path.read_text())
    doc["users"].append({"name": "planted", "user": {
        "token": planted["kube-token"], "client-key-data": base64.b64encode(key.encode()).decode(),
        "exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "true",
                 "env": [{"name": "PLANTED_TOKEN", "value": planted["kube-exec-env"]}]}}})
    path.write_text(yaml.safe_dump(doc))
    return planted


def _forms(value: str) -> set[str]:
    """How a secret may appear: raw, JSON-escaped, base64 (alone, or as basic auth with the Jira user)."""
    return {value, json.dumps(value)[1:-1], base64.b64encode(value.encode()).decode(),
            base64.b64encode(f"oncall@example.com:{value}".encode()).decode()}


def test_no_planted_secret_reaches_the_record_bundle_history_or_terminal(tmp_path: Path, row) -> None:  # type: ignore[no-untyped-def]
    sb = Sandbox("evidence-gap", tmp_path / "sandbox", 0, admin=True, timings=FAST).start()
    try:
        planted = _plant_kubeconfig(sb.kubeconfig)
        planted |= {"kube-operator-token": sb.operator_token, "kube-viewer-token": sb.viewer_token,
                    "mc-read-token": sb.mc_read_token, "mc-write-token": sb.mc_write_token}
        planted |= {f"config {name}": value for name, value in sb.service_secrets.items()}
        assert sb.services is not None
        planted["pagerduty routing key (as sent)"] = sb.services.routing_key
        planted["slack webhook URL"] = f"{sb.services_url}{sb.services.slack_path}"
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": str(sb.kubeconfig),
               "ROLLBOOK_MC_URL": sb.mc_url, "ROLLBOOK_MC_TOKEN_FILE": str(sb.mc_write_token_file),
               "ROLLBOOK_CONFIG": str(sb.config_file)}
        ns, name = sb.rollouts[0]
        out = tmp_path / "out"
        report = app.demo_report(tmp_path)
        proc = subprocess.run(
            [sys.executable, "-m", "rollbook.cli", "run", "--incident", "INC-1234", "--namespace", ns, "--rollout",
             name, "--out", str(out), "--param", f"evidence_file={report}", "--approve-retry", "--approver",
             "alice", "--ticket", "INC-1234"], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    finally:
        sb.stop()
    found = re.search(r"^Incident record: (\S+)", proc.stdout, re.MULTILINE)
    assert found, proc.stdout[-2000:] + proc.stderr[-2000:]
    run_dir = Path(found[1])
    rec = json.loads((run_dir / "record.json").read_text())
    assert rec["findings"]["retried"] is True  # the whole playbook ran, the retry was sent
    assert len(rec["steps"]) == 6 and (run_dir / "ticket.json").is_file()

    haystacks: dict[str, bytes] = {f"record:{p.relative_to(run_dir)}": p.read_bytes()
                                   for p in run_dir.rglob("*") if p.is_file()}
    with zipfile.ZipFile(run_dir / "bundle.zip") as zf:
        haystacks |= {f"bundle:{n}": zf.read(n) for n in zf.namelist()}
    haystacks |= {f"out:{p.relative_to(out)}": p.read_bytes() for p in out.glob("*.sqlite*")}
    haystacks |= {"terminal:stdout": proc.stdout.encode(), "terminal:stderr": proc.stderr.encode()}
    assert "out:history.sqlite" in haystacks and len(haystacks) > 20

    leaks = sorted(f"{what} in {where}" for what, value in planted.items() for where, data in haystacks.items()
                   if any(form.encode() in data for form in _forms(value)))
    problems = verify.verify(run_dir, planted.values()).problems + \
        verify.verify(run_dir / "bundle.zip", planted.values()).problems
    row("secrets", f"{len(planted)} planted secrets, {len(haystacks)} files/streams searched "
        "(record, unzipped bundle, history index, terminal)", "0 found, `rollbook verify` clean",
        f"{len(leaks)} found, verify: {len(problems)} problem(s)", not leaks and not problems,
        planted=len(planted), searched=len(haystacks), found=len(leaks))
    assert leaks == []
    assert problems == []
    # a control: the same search does find what the record is meant to hold (the MC URL it used)
    assert any(sb.mc_url.encode() in data for where, data in haystacks.items() if where.startswith("bundle:"))


def test_no_planted_secret_reaches_what_rollbook_serve_writes_or_logs(tmp_path: Path, row) -> None:  # type: ignore[no-untyped-def]
    """One notification through a real `rollbook serve` (its own process, first look posted for real): the
    serve token and every other planted secret in none of the records, unzipped bundles, the history index,
    the queue DB, the serve state dir, or the service's log."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
    from serve_harness import ServeProcess, build_scenario, rendered_body

    scenario = build_scenario(tmp_path / "scenario", copies=["prod"])
    sb = Sandbox(scenario, tmp_path / "sandbox", 0, admin=True, timings=FAST).start()
    svc = ServeProcess(sb, tmp_path / "svc", steps="1,2,3", serve_options={"notify": True})
    try:
        planted = _plant_kubeconfig(sb.kubeconfig)
        planted |= {"serve token": svc.token, "kube-operator-token": sb.operator_token,
                    "kube-viewer-token": sb.viewer_token, "mc-read-token": sb.mc_read_token,
                    "mc-write-token": sb.mc_write_token}
        planted |= {f"config {name}": value for name, value in sb.service_secrets.items()}
        assert sb.services is not None
        planted["pagerduty routing key (as sent)"] = sb.services.routing_key
        planted["slack webhook URL"] = f"{sb.services_url}{sb.services.slack_path}"
        svc.start()
        accepted = svc.post(rendered_body(sb, "prod", "api"))
        assert accepted.status_code in (200, 202), accepted.text
        done = svc.wait_status(accepted.json()["incident"], ("done", "failed"), 180)
        posted = len(sb.services.received("slack")) + len(sb.services.received("webhook"))
    finally:
        svc.stop()
        sb.stop()
    out = svc.out
    records = [p.parent for p in out.rglob("record.json")]
    assert records and done["status"] == "done", (done, svc.log()[-2000:])
    assert (out / ".serve" / "queue.sqlite").is_file() and posted >= 1  # the queue DB exists, the first look went out
    haystacks: dict[str, bytes] = {f"out:{p.relative_to(out)}": p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for run_dir in records:
        if (run_dir / "bundle.zip").is_file():
            with zipfile.ZipFile(run_dir / "bundle.zip") as zf:
                haystacks |= {f"bundle:{run_dir.name}/{n}": zf.read(n) for n in zf.namelist()}
    haystacks["serve.log"] = svc.log().encode()
    assert any(k.startswith("out:.serve/queue.sqlite") for k in haystacks) and "out:history.sqlite" in haystacks
    assert any(k.startswith("bundle:") for k in haystacks) and len(svc.log()) > 0

    leaks = sorted(f"{what} in {where}" for what, value in planted.items() for where, data in haystacks.items()
                   if any(form.encode() in data for form in _forms(value)))
    problems = [p for run_dir in records for p in verify.verify(run_dir, planted.values()).problems]
    row("secrets", f"{len(planted)} planted secrets (the serve token too), one notification through `rollbook "
        f"serve`, first look posted; {len(haystacks)} files searched (records, bundles, history, queue DB, "
        ".serve state, the service's log)", "0 found, `rollbook verify` clean",
        f"{len(leaks)} found, verify: {len(problems)} problem(s)", not leaks and not problems,
        planted=len(planted), searched=len(haystacks), found=len(leaks))
    assert leaks == []
    assert problems == []
    # a control: the search finds what is meant to be there (the incident's namespace/rollout in the queue DB)
    assert any(b"quote" in d or b"prod" in d for k, d in haystacks.items() if k.startswith("out:.serve/queue"))
