"""A run's inputs and outcome (issue 13 items 1, 4, 6, 7): paths resolved once, missing record inputs are
errors, exit codes, the NEXT line, and continuing an earlier record of the same incident."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from rollbook import app, continuation, record, runner
from rollbook.errors import UsageError
from rollbook.record import RunInfo, StepResult
from rollbook.steps import notify
from rollbook.steps.core import Incident, MissingInputError, open_incident

README = Path(__file__).resolve().parents[2] / "README.md"
PLAYBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "engine_fixtures" / "playbook"


# --------------------------------------------------------------------------- 1. paths


def test_runspec_resolves_out_runbooks_and_path_parameters_against_the_callers_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = runner.RunSpec("INC-1", "prod", "api", params={"evidence_file": "reports/junit.xml", "note": "x/y",
                                                          "config": "~/rollbook.yaml", "evidence_name": ""})
    assert spec.out == tmp_path / "outputs" and spec.runbooks_dir == tmp_path / "runbooks"
    assert spec.params["evidence_file"] == str(tmp_path / "reports" / "junit.xml")
    assert spec.params["config"] == str(Path.home() / "rollbook.yaml")
    assert spec.params["note"] == "x/y" and spec.params["evidence_name"] == ""  # not paths, or not given


def test_inside_a_run_a_missing_snapshot_or_results_file_is_an_error_not_a_skip(tmp_path: Path) -> None:
    inc = Incident("prod", "api", run_dir=tmp_path)
    with pytest.raises(MissingInputError, match="snapshot.*rollout.json"):
        inc.snapshot_object("rollout")
    with pytest.raises(MissingInputError, match="results"):
        inc.earlier()
    record.write_results(tmp_path, [])
    record.write_snapshot(tmp_path, {"rollout": {"kind": "Rollout"}})
    assert inc.earlier()["steps"] == [] and inc.snapshot_object("rollout") == {"kind": "Rollout"}
    outside = Incident("prod", "api")  # JupyterLab, no run: nothing to compare against, said as None
    assert outside.snapshot_object("rollout") is None and outside.earlier()["steps"] == []


def test_a_relative_run_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not an absolute path"):
        open_incident("prod", "api", run_dir="outputs/INC-1/run")


def test_a_page_never_points_at_a_picture_missing_from_the_record(tmp_path: Path) -> None:
    inc = Incident("prod", "api", run_dir=tmp_path)
    (tmp_path / "pictures").mkdir()
    (tmp_path / "pictures" / "p99.png").write_bytes(b"\x89PNG")
    notify.check_pictures(inc, [("p99", tmp_path / "pictures" / "p99.png")])
    with pytest.raises(MissingInputError, match="lost.png"):
        notify.check_pictures(inc, [("lost", tmp_path / "pictures" / "lost.png")])
    with pytest.raises(MissingInputError, match="elsewhere"):
        (tmp_path / "elsewhere.png").write_bytes(b"\x89PNG")
        notify.check_pictures(inc, [("elsewhere", tmp_path / "elsewhere.png")])


# --------------------------------------------------------------------------- 4. exit codes


def _r(step: int, verdict: str, **kw: Any) -> StepResult:
    return StepResult(step, f"step-{step}", f"0{step}-step-{step}.ipynb", verdict, "why", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("verdicts", "code"), [
    (["pass", "pass", "skip"], 0),
    (["pass", "needs_human", "pass"], 5),
    (["pass", "needs_human", "fail"], 6),
    (["fail", "escalate", "needs_human"], 4),
    (["escalate", "error"], 3),
])
def test_exit_code_gives_needs_human_and_fail_their_own_codes(verdicts: list[str], code: int) -> None:
    assert runner.exit_code([_r(i, v) for i, v in enumerate(verdicts, 1)]) == code


def test_carried_steps_do_not_change_the_exit_code() -> None:
    assert runner.exit_code([_r(1, "needs_human", from_record="r0"), _r(4, "pass")]) == 0


def test_the_readme_documents_every_exit_code_and_verdict_word() -> None:
    text = README.read_text()
    table = dict(re.findall(r"^\| (\d) \| (.+) \|$", text, re.MULTILINE))
    assert set(map(int, table)) == set(record.EXIT_MEANING) == {0, 1, 2, 3, 4, 5, 6}
    for verdict in record.VERDICTS:
        assert re.search(rf"^\| `{verdict}` \| .+ \|$", text, re.MULTILINE), verdict


def test_missing_evidence_file_is_refused_before_a_follow_up_retry(tmp_path: Path) -> None:
    spec = runner.RunSpec("INC-1", "prod", "api", params={"evidence_file": str(tmp_path / "nope.xml")},
                          runbooks_dir=PLAYBOOK)
    with pytest.raises(UsageError, match="nope.xml: no such file"):
        app.check_input_files(spec)


# --------------------------------------------------------------------------- 6. the NEXT line


def _vr(**kw: Any) -> runner.ValidatedRun:
    spec = runner.RunSpec("INC-1", "prod", "api", runbooks_dir=PLAYBOOK, **kw)
    steps = tuple(runner.discover(PLAYBOOK))
    return runner.ValidatedRun(spec, steps, {s.number: {} for s in steps}, frozenset(), {})


def _named(name: str, verdict: str, **kw: Any) -> StepResult:
    return StepResult(4, name, "x.ipynb", verdict, "why", **kw)  # type: ignore[arg-type]


def test_next_line_for_missing_evidence_is_the_follow_up_with_evidence_and_approval() -> None:
    rem = _named("remediate-and-retry", "needs_human", facts={
        "path": "evidence", "verdict_after": {"missing": ["test-report"], "invalid": []},
        "blockers": ["MC still says ok=false for release api-1.42.0 (…)"]})
    assert app.follow_up(_vr(), [rem]) == (
        "attach the missing evidence and approve the retry: rollbook run --incident INC-1 --namespace prod "
        "--rollout api --steps 4,5,6 --param evidence_file=PATH/TO/test-report-REPORT --approve-retry "
        "--approver YOUR-NAME --ticket CHANGE-TICKET")


def test_next_line_pages_first_when_escalation_was_only_a_dry_run(tmp_path: Path) -> None:
    esc = _named("escalate", "escalate", findings={"escalation_sent": False})
    out = app.follow_up(_vr(out=tmp_path / "records", context="prod-eu"), [esc])
    assert out.endswith(f"rollbook run --incident INC-1 --namespace prod --rollout api --context prod-eu "
                        f"--out {tmp_path / 'records'} --steps 5 --notify")


def test_next_line_for_an_slo_regression_is_the_approved_undo() -> None:
    rem = _named("remediate-and-retry", "needs_human", facts={"path": "slo", "blockers": ["an SLO regression"]})
    assert app.follow_up(_vr(approver="bob"), [rem]).endswith("--steps 4,5,6 --approve-undo --approver bob "
                                                             "--ticket CHANGE-TICKET")


# --------------------------------------------------------------------------- 7. continuing a record


def _record(out: Path, run_id: str, started: str, *, rollout: str = "api", finished: bool = True) -> Path:
    d = out / "INC-1" / run_id
    (d / "snapshot").mkdir(parents=True)
    (d / "snapshot" / "rollout.json").write_text(json.dumps({"run": run_id}))
    (d / "01-step-1.ipynb").write_text("{}")
    if finished:
        doc = record.record_document(RunInfo("INC-1", "prod", rollout, None, run_id, started, started, "0", {}, 5,
                                             False), [_r(1, "pass", findings={"trigger": "evidence"}), _r(4, "pass")])
        (d / "record.json").write_text(json.dumps(doc))
    return d


def test_the_newest_finished_record_of_the_same_rollout_is_continued(tmp_path: Path) -> None:
    _record(tmp_path, "20260101T000000Z-aaaaaa", "2026-01-01T00:00:00.000Z")
    newest = _record(tmp_path, "20260101T010000Z-bbbbbb", "2026-01-01T01:00:00.000Z")
    _record(tmp_path, "20260101T020000Z-cccccc", "2026-01-01T02:00:00.000Z", rollout="web")  # another rollout
    _record(tmp_path, "20260101T030000Z-dddddd", "", finished=False)  # a service still writing it
    earlier = continuation.find_earlier(tmp_path, "INC-1", "prod", "api")
    assert earlier is not None and earlier.path == newest
    carried = earlier.steps([1, 2, 3])
    assert [(s.step, s.from_record, s.findings) for s in carried] == [(1, newest.name, {"trigger": "evidence"})]
    run_dir = tmp_path / "new"
    run_dir.mkdir()
    assert continuation.carry(earlier, run_dir, carried)
    assert json.loads((run_dir / "snapshot" / "rollout.json").read_text()) == {"run": newest.name}
    assert (run_dir / "01-step-1.ipynb").is_file()
    assert earlier.describe(carried) == {"record": str(newest), "run_id": newest.name,
                                         "started_at": "2026-01-01T01:00:00.000Z", "steps": [1], "snapshot": True}
    assert continuation.find_earlier(tmp_path, "INC-2", "prod", "api") is None
