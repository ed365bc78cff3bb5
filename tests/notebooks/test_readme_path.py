"""The README's own path, as a new user follows it (issue 13): `source .sandbox/env.sh`, then `rollbook run`
with the default `--out` from a folder that is not the project root, then the follow-up the run prints.

Every expectation is computed from the sandbox's objects and MC's state as loaded, never from a
scenario's name. One run per scenario is shared by the tests of this module (each run is ~10 s); the tests of
one run carry one xdist_group, so that `--dist loadgroup` runs them on one worker, in file order (a later
test may continue the incident: the follow-up runs after the tests that read the first run's world).
"""

from __future__ import annotations

import html
import json
import re
import shlex
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from rollbook import app
from rollbook.sandbox.controller import Timings
from rollbook.sandbox.server import Sandbox

pytestmark = pytest.mark.notebooks

FAST_TIMINGS = Timings(analysis_seconds=0.1, error_interval_seconds=0.02, scale=0.01, idle_poll_seconds=0.05)
ROLLBOOK = [sys.executable, "-m", "rollbook.cli"]
REVISION = "rollout.argoproj.io/revision"
HASH = "rollouts-pod-template-hash"


@dataclass
class Cli:
    """One `rollbook run` as the user ran it, and the record it printed."""

    proc: subprocess.CompletedProcess[str]
    record_dir: Path
    rec: dict[str, Any]

    def step(self, name: str) -> dict[str, Any]:
        return next(s for s in self.rec["steps"] if s["name"] == name)

    @property
    def next_line(self) -> str:
        return self.proc.stdout.strip().splitlines()[-1]


@dataclass
class Folder:
    """A user's folder (not the project root) with the sandbox's env.sh sourced."""

    sb: Sandbox
    cwd: Path
    env: dict[str, str]
    loaded: dict[str, Any] = field(default_factory=dict)  # the target Rollout as loaded, before any run

    def run(self, *args: str) -> Cli:
        proc = subprocess.run([*ROLLBOOK, "run", *args], capture_output=True, text=True, timeout=300,
                              cwd=self.cwd, env=self.env)
        found = re.search(r"^Incident record: (\S+)", proc.stdout, re.MULTILINE)
        assert found, proc.stdout[-2000:] + proc.stderr[-3000:]
        record_dir = self.cwd / found[1]  # as the user reads it: relative to where they ran it
        return Cli(proc, record_dir, json.loads((record_dir / "record.json").read_text()))

    def target(self) -> list[str]:
        ns, name = self.sb.rollouts[0]
        return ["--incident", "INC-1", "--namespace", ns, "--rollout", name]


@contextmanager
def _folder(tmp: Path, scenario: str) -> Iterator[Folder]:
    sb = Sandbox(scenario, tmp / "sandbox", 0, admin=True, timings=FAST_TIMINGS).start()
    try:
        sourced = subprocess.run(["bash", "-c", f"source {shlex.quote(str(sb.env_file))} && env -0"],
                                 capture_output=True, check=True, timeout=10).stdout.decode()
        env = dict(line.split("=", 1) for line in sourced.split("\0") if "=" in line)
        # an operator's config holds the MC token that may attach evidence (the sandbox's write token)
        cfg = yaml.safe_load(sb.config_file.read_text())
        cfg["mc"]["token_file"] = str(sb.mc_write_token_file)
        (tmp / "rollbook.yaml").write_text(yaml.safe_dump(cfg))
        env |= {"ROLLBOOK_CONFIG": str(tmp / "rollbook.yaml"), "ROLLBOOK_MC_TOKEN_FILE": str(sb.mc_write_token_file)}
        cwd = tmp / "work"
        cwd.mkdir()
        ns, name = sb.rollouts[0]
        yield Folder(sb, cwd, env, sb.store.get("rollouts", ns, name))
    finally:
        sb.stop()


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Folder, Cli]]:
    """rollback-loop: `rollbook run` with the README's arguments and the default --out."""
    with _folder(tmp_path_factory.mktemp("readme-loop"), "rollback-loop") as folder:
        yield folder, folder.run(*folder.target())


@pytest.fixture(scope="module")
def loop_follow_up(loop: tuple[Folder, Cli]) -> Cli:
    """The loop's follow-up with a passing report and an approved retry (promotes the release)."""
    folder, _ = loop
    report = app.demo_report(folder.cwd)
    return folder.run(*folder.target(), "--steps", "4,5,6", "--param", f"evidence_file={report.name}",
                      "--approve-retry", "--approver", "alice", "--ticket", "CHG-1")


@pytest.fixture(scope="module")
def gap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Folder, Cli]]:
    """evidence-gap: the README's first run."""
    with _folder(tmp_path_factory.mktemp("readme-gap"), "evidence-gap") as folder:
        yield folder, folder.run(*folder.target())


def _mc_reason(folder: Folder, release: str) -> str:
    return str(folder.sb.mc.verdict(release, "production")["reason"])


def _stable_pods(folder: Folder) -> list[str]:
    ns, _ = folder.sb.rollouts[0]
    stable = folder.loaded["status"]["stableRS"]
    return [p["metadata"]["name"] for p in folder.sb.store.list("pods", ns)[0]
            if p["metadata"]["labels"].get(HASH) == stable]


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --------------------------------------------------------------------------- 1. relative --out


@pytest.mark.xdist_group("readme-loop")
def test_default_out_from_another_folder_gives_right_page_ticket_and_pictures(loop: tuple[Folder, Cli]) -> None:
    folder, cli = loop
    assert cli.proc.returncode == 4, cli.proc.stderr[-3000:]
    assert cli.record_dir.is_relative_to(folder.cwd / "outputs" / "INC-1")
    f = cli.rec["findings"]
    assert f["mc_reason"] == _mc_reason(folder, f["release_id"]) and f["trigger"] and f["analysis_run"]
    # step 6's ticket text reads the earlier steps' findings (it read nothing with a relative run_dir)
    ticket = cli.step("verify-closeout")["facts"]["ticket_text"]
    assert f"trigger {f['trigger']}" in ticket and f["analysis_run"] in ticket and f["mc_reason"] in ticket
    assert "None" not in ticket and "no longer in the cluster" not in ticket
    # the page carries MC's reason to every target
    step5 = cli.step("escalate")
    deliveries = step5["findings"]["escalation_deliveries"]
    assert {d["service"] for d in deliveries} == {"pagerduty", "slack", "webhook"}
    assert all(f["mc_reason"] in json.dumps(d["request"]) for d in deliveries)
    assert "not established" not in step5["facts"]["message"]
    # the pictures the page points at are in the record and in the bundle
    webhook = next(d for d in deliveries if d["service"] == "webhook")
    paths = [i["path"] for i in webhook["request"]["body"]["message"]["images"]]
    assert paths and paths == step5["facts"]["pictures"]
    with zipfile.ZipFile(cli.record_dir / "bundle.zip") as zf:
        names = set(zf.namelist())
    for p in paths:
        assert Path(p).is_file() and Path(p).parent == cli.record_dir / "pictures"
        assert Path(p).relative_to(cli.record_dir).as_posix() in names
    # the restart baseline came from the snapshot (it was silently skipped before)
    assert step5["facts"]["restart_baseline"] == f"snapshot: {len(_stable_pods(folder))} stable pods"


# --------------------------------------------------------------------------- 2. escalation text


@pytest.mark.xdist_group("readme-loop")
def test_escalation_text_names_the_first_abort_and_a_readable_deadline(loop: tuple[Folder, Cli]) -> None:
    folder, cli = loop
    step5 = cli.step("escalate")
    text = step5["facts"]["message"]
    assert "None" not in text and ": -" not in text
    assert f"Status now: Degraded — {cli.rec['findings']['status_message']}" in text
    first = re.search(r"First aborted at (\S+) \((\d+) min ago", text)
    deadline = re.search(r"escalation deadline (\S+), 15 min after the first abort \(passed (\d+) min ago\)", text)
    assert first and deadline, text
    # the deadline is 15 minutes after the first abort, never printed before the abort it counts from
    assert _time(deadline[1]) == _time(first[1]) + timedelta(minutes=15)
    assert _time(first[1]) <= _time(folder.loaded["status"]["abortedAt"])
    ran_at = _time(step5["started_at"])
    assert abs(int(deadline[2]) - (ran_at - _time(deadline[1])).total_seconds() / 60) <= 1.5
    slack = next(d for d in step5["findings"]["escalation_deliveries"] if d["service"] == "slack")
    body = slack["request"]["body"]
    fields = {f["text"].split("\n", 1)[0].strip("*"): f["text"].split("\n", 1)[1] for f in body["blocks"][1]["fields"]}
    assert fields["Aborted"].startswith(first[1])
    assert fields["Why escalate"].startswith("rollback loop") and fields["Deadline"].startswith(deadline[1])
    assert not any(bad in v for v in fields.values() for bad in ("['", "None", "{'"))
    summary = (cli.record_dir / "summary.md").read_text()
    assert re.search(rf"Escalation due: YES — deadline {re.escape(deadline[1])} \(passed \d+ min before this run ended\)",
                     summary), summary


@pytest.mark.xdist_group("readme-loop")
def test_a_loop_past_its_deadline_escalates_though_the_approved_retry_promoted(
        loop: tuple[Folder, Cli], loop_follow_up: Cli) -> None:
    folder, first = loop
    cli = loop_follow_up
    ns, name = folder.sb.rollouts[0]
    ro = folder.sb.store.get("rollouts", ns, name)
    assert ro["status"]["stableRS"] == ro["status"]["currentPodHash"], "the retry promoted the release"
    assert cli.step("remediate-and-retry")["verdict"] == "pass"
    step5 = cli.step("escalate")
    assert step5["verdict"] == "escalate" and "rollback loop" in step5["reason"], step5["reason"]
    assert cli.proc.returncode == 4
    assert "Escalation due: YES" in (cli.record_dir / "summary.md").read_text()


# --------------------------------------------------------------------------- 3. the SLO path's ticket


def test_slo_ticket_names_the_aborted_canary_not_the_undos_revision(tmp_path: Path) -> None:
    with _folder(tmp_path, "slo-regression") as folder:
        canary = int(folder.loaded["metadata"]["annotations"][REVISION])
        cli = folder.run(*folder.target(), "--approve-undo", "--approver", "bob", "--ticket", "CHG-1")
        ns, name = folder.sb.rollouts[0]
        after = int(folder.sb.store.get("rollouts", ns, name)["metadata"]["annotations"][REVISION])
        assert after != canary, "the undo made a new revision: the test must tell them apart"
        ticket = cli.step("verify-closeout")["facts"]["ticket_text"]
        assert ticket.startswith(f"Rollout {ns}/{name}, revision {canary}: canary aborted"), ticket
        assert f"revision {after}:" not in ticket


# --------------------------------------------------------------------------- 4 + 6 + 7: the follow-up


@pytest.mark.xdist_group("readme-gap")
def test_the_first_run_needs_a_human_exits_5_and_prints_the_exact_follow_up(gap: tuple[Folder, Cli]) -> None:
    folder, cli = gap
    assert cli.proc.returncode == 5, cli.proc.stderr[-2000:]
    assert cli.step("remediate-and-retry")["verdict"] == "needs_human"
    assert "exit 5: a step needs a human decision" in cli.proc.stdout
    ns, name = folder.sb.rollouts[0]
    missing = folder.sb.mc.verdict(cli.rec["findings"]["release_id"], "production")["missing"]
    assert cli.next_line == (
        f"NEXT: attach the missing evidence and approve the retry: rollbook run --incident INC-1 --namespace {ns} "
        f"--rollout {name} --steps 4,5,6 --param evidence_file=PATH/TO/{missing[0]}-REPORT --approve-retry "
        "--approver YOUR-NAME --ticket CHANGE-TICKET")
    assert cli.rec["next_step"] == cli.next_line.removeprefix("NEXT: ")


@pytest.mark.xdist_group("readme-gap")
def test_progress_is_live_on_stderr_for_start_up_and_every_step(gap: tuple[Folder, Cli]) -> None:
    _, cli = gap
    lines = cli.proc.stderr.splitlines()
    assert lines[0].startswith("rollbook: "), "start-up is announced before any step"
    for i, s in enumerate(cli.rec["steps"], 1):
        running = lines.index(f"[{i}/6] {s['name']} … running")
        done = next(n for n, line in enumerate(lines) if line.startswith(f"[{i}/6] {s['name']} … {s['verdict']}"))
        assert running < done
    step5 = next(n for n, line in enumerate(lines) if line.startswith("[5/6] escalate │ Status now: "))
    assert lines.index("[5/6] escalate … running") < step5, "what a step prints reaches the terminal"


@pytest.mark.xdist_group("readme-gap")
def test_following_the_next_line_continues_the_record_and_promotes(gap: tuple[Folder, Cli]) -> None:
    folder, first = gap
    command = shlex.split(first.next_line.removeprefix("NEXT: ").split(": ", 1)[1])
    assert command[:2] == ["rollbook", "run"]
    report = app.demo_report(folder.cwd)
    filled = [{"YOUR-NAME": "alice", "CHANGE-TICKET": "CHG-7"}.get(a, a) for a in command[2:]]
    filled = [f"evidence_file={report.name}" if a.startswith("evidence_file=") else a for a in filled]
    cli = folder.run(*filled)
    assert cli.proc.returncode == 0, cli.proc.stdout[-3000:]
    # it continued the first record: its steps 1-3 and snapshot, said in record.json, summary.md and the terminal
    cont = cli.rec["continued_from"]
    assert cont["record"] == str(first.record_dir) and cont["steps"] == [1, 2, 3] and cont["snapshot"] is True
    assert [s["step"] for s in cli.rec["steps"]] == [1, 2, 3, 4, 5, 6]
    assert all(s["from_record"] == first.record_dir.name for s in cli.rec["steps"][:3])
    assert f"Continues record `{first.record_dir}`" in (cli.record_dir / "summary.md").read_text()
    assert f"Continued record: {first.record_dir}" in cli.proc.stdout
    assert f"continuing record {first.record_dir}" in cli.proc.stderr
    assert (cli.record_dir / "snapshot" / "rollout.json").read_bytes() == \
        (first.record_dir / "snapshot" / "rollout.json").read_bytes()
    f = cli.rec["findings"]
    assert f["mc_reason"] == first.rec["findings"]["mc_reason"] and f["trigger"] == first.rec["findings"]["trigger"]
    assert "not established" not in (cli.record_dir / "summary.md").read_text().split("## Actions taken")[0]
    assert f["retried"] is True and f["closeout_ok"] is True
    lines = cli.proc.stderr.splitlines()
    watch = [n for n, line in enumerate(lines) if line.startswith("[1/3] remediate-and-retry │ after retry:")]
    assert watch and lines.index("[1/3] remediate-and-retry … running") < watch[0], "step 4's watch is live"


# --------------------------------------------------------------------------- 8. the report


@pytest.mark.xdist_group("readme-loop")
def test_report_top_answers_the_30_second_question(loop: tuple[Folder, Cli]) -> None:
    _, cli = loop
    page = (cli.record_dir / "report.html").read_text()
    top = page[page.index('<div class="rb-answer'):page.index('<table class="rb-steps"')]
    f = cli.rec["findings"]
    assert top.startswith('<div class="rb-answer bad">') and "Escalate now" in top
    for label in ("Cause", "MC's reason", "Action taken", "State now", "Next step"):
        assert f"<th>{label}</th>" in html.unescape(top)
    assert f["analysis_run"] in top and html.escape(f["mc_reason"], quote=False) in top and "--steps 5 --notify" in top
    assert page.count("<details") == len(cli.rec["steps"]) == page.count("</details>")
    assert "Parameters</h2>" not in page and "Verdict</h2>" not in page and "Set by `rollbook run`" not in page
    assert "Open the incident" not in page
    cells = re.findall(r"<td[^>]*>(.*?)</td>", page, re.S)
    assert not [c for c in cells if re.search(r"\{'|\['|\('", c.replace("&#x27;", "'"))]
