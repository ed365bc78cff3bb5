"""The incident history index: what it stores from real record.json documents, filters, rebuild, migrations."""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rollbook import history, record
from rollbook.cli import main
from rollbook.errors import UsageError

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_record(out: Path, incident: str, *, namespace: str = "prod", rollout: str = "api", revision: int = 7,
                 metrics: tuple[str, ...] = ("mc-evidence-ok",), started: datetime = NOW, run: str | None = None,
                 verdicts: tuple[str, ...] = ("pass", "pass", "pass", "escalate"), approver: str | None = None,
                 mutations: list[dict[str, Any]] | None = None, aborted: datetime | None = None) -> Path:
    """A record.json exactly as the record writer lays it out (record.record_document), in a fresh run folder."""
    names = ("confirm-rollback-status", "inspect-evidence", "validate-release-identity", "escalate")
    steps = [record.StepResult(i + 1, n, f"0{i + 1}-{n}.ipynb", v, f"{n} said {v}", _iso(started), 1.0,  # type: ignore[arg-type]
                               findings={"canary_revision": revision, "stable_revision": revision - 1,
                                         "failed_metrics": list(metrics), "trigger": "evidence",
                                         "analysis_run": run or f"{rollout}-6d4f8b7c9-{revision}-0",
                                         "mc_reason": "missing required evidence: test-report (junit)",
                                         "aborted_at": _iso(aborted or started - timedelta(minutes=5)),
                                         "mutations": mutations or []} if i == 0 else {})
             for i, (n, v) in enumerate(zip(names, verdicts, strict=True))]
    run_dir = record.new_run_dir(out, incident, now=started)
    info = record.RunInfo(incident=incident, namespace=namespace, rollout=rollout, context="sandbox-viewer",
                          run_id=run_dir.name, started_at=_iso(started), finished_at=_iso(started + timedelta(seconds=4.5)),
                          tool_version="0.1.0", parameters={"approver": approver, "ticket": "CHG-1" if approver else None},
                          exit_code=4 if "escalate" in verdicts else 0, partial=False)
    (run_dir / "record.json").write_text(json.dumps(record.record_document(info, steps)), encoding="utf-8")
    return run_dir


def test_a_record_is_indexed_with_the_columns_the_issue_lists(tmp_path: Path) -> None:
    mutation = {"action": "retry", "dry_run": False, "approval": {"approver": "alice", "ticket": "CHG-1"}}
    run_dir = write_record(tmp_path, "INC-1", approver="alice", mutations=[mutation])
    key = history.index_record(run_dir)
    [e] = history.query(tmp_path)
    assert key == e.record == f"INC-1/{run_dir.name}"
    assert (e.incident, e.namespace, e.rollout, e.stable_revision, e.canary_revision) == ("INC-1", "prod", "api", 6, 7)
    assert e.failed_metrics == ("mc-evidence-ok",) and e.trigger == "evidence"
    assert e.mc_reason == "missing required evidence: test-report (junit)"
    assert e.verdicts == {"confirm-rollback-status": "pass", "inspect-evidence": "pass",
                          "validate-release-identity": "pass", "escalate": "escalate"}
    assert e.approver == "alice" and e.mutations == ({"action": "retry", "dry_run": False, "approver": "alice"},)
    assert e.duration_seconds == 4.5 and e.exit_code == 4 and not e.partial
    item = e.to_json()
    assert list(item)[:10] == ["incident", "namespace", "rollout", "canary_revision", "trigger", "failed_metrics",
                               "mc_reason", "verdicts", "started_at", "record"]
    # indexing the same folder again replaces its row, never duplicates it
    history.index_record(run_dir)
    assert len(history.query(tmp_path)) == 1


def test_filters_namespace_rollout_metric_and_since(tmp_path: Path) -> None:
    write_record(tmp_path, "INC-1", started=NOW - timedelta(hours=1))
    write_record(tmp_path, "INC-2", rollout="checkout", metrics=("ig-error-rate",), started=NOW - timedelta(days=2))
    write_record(tmp_path, "INC-3", namespace="staging", started=NOW - timedelta(days=10))
    history.rebuild(tmp_path)
    names = lambda **kw: [e.incident for e in history.query(tmp_path, now=NOW, **kw)]  # noqa: E731
    assert names() == ["INC-1", "INC-2", "INC-3"]  # newest first
    assert names(namespace="prod") == ["INC-1", "INC-2"]
    assert names(rollout="checkout") == ["INC-2"]
    assert names(metric="ig-error-rate") == ["INC-2"]
    assert names(since=history.parse_since("7d")) == ["INC-1", "INC-2"]
    assert names(since=history.parse_since("90m")) == ["INC-1"]
    with pytest.raises(UsageError, match="not a duration"):
        history.parse_since("7 days")


def test_rebuild_recreates_the_index_from_the_records_on_disk(tmp_path: Path) -> None:
    dirs = [write_record(tmp_path, f"INC-{i}", started=NOW - timedelta(minutes=i)) for i in range(3)]
    for d in dirs:
        history.index_record(d)
    before = [e.to_json() for e in history.query(tmp_path)]
    history.path_of(tmp_path).unlink()
    for side in tmp_path.glob("history.sqlite-*"):
        side.unlink()
    assert history.query(tmp_path) == []
    count, problems = history.rebuild(tmp_path)
    assert (count, problems) == (3, [])
    assert [e.to_json() for e in history.query(tmp_path)] == before
    # a record removed from disk leaves the index on the next rebuild: the records are the truth
    (dirs[0] / "record.json").unlink()
    assert history.rebuild(tmp_path)[0] == 2


def test_rebuild_sets_a_broken_index_aside_and_reports_a_broken_record(tmp_path: Path) -> None:
    write_record(tmp_path, "INC-1")
    bad = write_record(tmp_path, "INC-2")
    (bad / "record.json").write_text("{not json", encoding="utf-8")
    history.path_of(tmp_path).write_bytes(b"this is not an SQLite file at all" * 100)
    count, problems = history.rebuild(tmp_path)
    assert count == 1 and len(problems) == 1 and "INC-2" in problems[0]
    assert [e.incident for e in history.query(tmp_path)] == ["INC-1"]
    assert list(tmp_path.glob("history.sqlite.broken-*"))


def test_schema_version_wal_and_a_newer_file_refused(tmp_path: Path) -> None:
    with history.connect(tmp_path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == history.SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.execute(f"PRAGMA user_version = {history.SCHEMA_VERSION + 1}")
    with pytest.raises(UsageError, match="newer than this rollbook knows"), history.connect(tmp_path):
        pass


def test_a_version_0_file_is_migrated_in_place(tmp_path: Path) -> None:
    sqlite3.connect(history.path_of(tmp_path)).close()  # an empty file: user_version 0, no tables
    history.index_record(write_record(tmp_path, "INC-1"))
    assert [e.incident for e in history.query(tmp_path)] == ["INC-1"]


def test_concurrent_writers_all_land(tmp_path: Path) -> None:
    dirs = [write_record(tmp_path, f"INC-{i}", namespace=f"team-{i}") for i in range(16)]
    errors: list[BaseException] = []

    def index(d: Path) -> None:
        try:
            history.index_record(d)
        except BaseException as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=index, args=(d,)) for d in dirs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and len(history.query(tmp_path)) == 16


def test_recent_aborts_counts_each_abort_once_within_the_window(tmp_path: Path) -> None:
    ago = lambda h: NOW - timedelta(hours=h)  # noqa: E731
    write_record(tmp_path, "INC-1", rollout="checkout", metrics=("ig-error-rate",), started=ago(20), run="co-1")
    write_record(tmp_path, "INC-1", rollout="checkout", metrics=("ig-error-rate",), started=ago(19), run="co-1",
                 aborted=ago(20) - timedelta(minutes=5))  # a human re-ran steps of the same abort
    write_record(tmp_path, "INC-2", rollout="checkout", metrics=("ig-error-rate", "ig-latency-p99"),
                 started=ago(5), run="co-2")
    write_record(tmp_path, "INC-3", rollout="checkout", metrics=("ig-error-rate",), started=ago(1), run="co-3")
    write_record(tmp_path, "INC-0", rollout="checkout", metrics=("ig-error-rate",), started=ago(30), run="co-0")
    write_record(tmp_path, "INC-9", rollout="checkout", metrics=("mc-evidence-ok",), started=ago(2), run="co-9")
    write_record(tmp_path, "INC-8", rollout="api", metrics=("ig-error-rate",), started=ago(2), run="api-8")
    history.rebuild(tmp_path)
    found = history.recent_aborts(tmp_path, "prod", "checkout", "ig-error-rate", timedelta(hours=24), now=NOW)
    assert [a.incident for a in found] == ["INC-3", "INC-2", "INC-1"]
    assert found[-1].at == _iso(ago(20) - timedelta(minutes=5))  # the earliest record of the abort names it
    assert history.describe_repeats("ig-error-rate", "checkout", found, timedelta(hours=24)) == \
        "ig-error-rate aborted checkout 3 times in 24 h: INC-3, INC-2, INC-1"
    assert [a.incident for a in history.recent_aborts(tmp_path, "prod", "checkout", "ig-error-rate",
                                                      timedelta(hours=24), now=NOW, exclude_incident="INC-3")] == \
        ["INC-2", "INC-1"]


def test_index_quietly_warns_instead_of_failing_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    history.index_quietly(tmp_path / "INC-1" / "missing-run")
    assert "was not indexed in the history" in capsys.readouterr().err


def test_cli_lists_json_and_table_and_refuses_a_bad_since(tmp_path: Path) -> None:
    write_record(tmp_path, "INC-1", started=datetime.now(UTC) - timedelta(minutes=3))
    runner = CliRunner()
    res = runner.invoke(main, ["history", "--out", str(tmp_path), "--rebuild", "--json", "--since", "1h"])
    assert res.exit_code == 0, res.output
    items = json.loads(res.stdout)
    assert [i["incident"] for i in items] == ["INC-1"] and items[0]["failed_metrics"] == ["mc-evidence-ok"]
    table = runner.invoke(main, ["history", "--out", str(tmp_path), "--metric", "mc-evidence-ok"])
    assert table.exit_code == 0 and "INC-1" in table.stdout and "prod/api" in table.stdout
    bad = runner.invoke(main, ["history", "--out", str(tmp_path), "--since", "yesterday"])
    assert bad.exit_code == 2 and "not a duration" in bad.output
