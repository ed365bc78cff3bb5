"""`rollbook verify`: a good record (folder or bundle) passes; each kind of tampering is one line."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import nbformat
import pytest
from click.testing import CliRunner

from rollbook import record, verify
from rollbook.cli import main
from rollbook.record import RunInfo, StepResult

PLANTED = "planted-mc-token-1c2b3a4d5e6f"
SLACK = "https://hooks.slack.com/services/T0ABCDEFG/B0HIJKLMN/abcdefghijklmnopqrstuvwx"


def _info(**kw: object) -> RunInfo:
    base: dict[str, object] = dict(
        incident="INC-9", namespace="prod", rollout="api", context="prod-eu", run_id="r1",
        started_at="2026-01-01T00:00:00.000Z", finished_at="2026-01-01T00:00:09.000Z", tool_version="0.1.0",
        parameters={"namespace": "prod", "note": f"pasted {PLANTED}"}, exit_code=0, partial=False)
    base.update(kw)
    return RunInfo(**base)  # type: ignore[arg-type]


def _mutation(approver: str | None = "alice", ticket: str | None = "CHG-7", dry_run: bool = False) -> dict[str, object]:
    return {"action": "retry", "dry_run": dry_run, "namespace": "prod", "rollout": "api", "skipped": False,
            "requests": [{"method": "PATCH", "path": "/apis/argoproj.io/v1alpha1/namespaces/prod/rollouts/api/status"}],
            "approval": {"approver": approver, "ticket": ticket, "at": "2026-01-01T00:00:05.000Z"}}


def _steps(mutation: dict[str, object] | None = None) -> list[StepResult]:
    return [
        StepResult(1, "confirm-rollback-status", "01-confirm-rollback-status.ipynb", "pass", "aborted",
                   findings={"phase": "Degraded"}),
        StepResult(4, "remediate-and-retry", "04-remediate-and-retry.ipynb", "pass", "retried",
                   findings={"retried": True, "mutations": [mutation or _mutation()]}),
    ]


def _seal(run_dir: Path, steps: list[StepResult] | None = None) -> Path:
    for name in ("01-confirm-rollback-status.ipynb", "04-remediate-and-retry.ipynb"):
        if not (run_dir / name).exists():
            nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"token = {PLANTED!r}")]),
                           run_dir / name)
    record.write_snapshot(run_dir, {"rollout": {"metadata": {"name": "api"}}})
    return record.write_record(run_dir, _info(), steps or _steps(), secrets=[PLANTED])


def _reseal(run_dir: Path) -> None:
    """What a forger does: rewrite the bundle and manifest so the hashes match again."""
    record.write_bundle(run_dir)
    record.write_manifest(run_dir)


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return _seal(record.new_run_dir(tmp_path / "out", "INC-9"))


def _problems(path: Path, secrets: list[str] | None = None) -> list[str]:
    return verify.verify(path, secrets if secrets is not None else [PLANTED]).problems


def test_a_good_record_and_its_bundle_pass(good: Path) -> None:
    assert _problems(good) == []
    assert _problems(good / "bundle.zip") == []
    result = CliRunner().invoke(main, ["verify", str(good)])
    assert result.exit_code == 0 and "intact" in result.output and len(result.output.splitlines()) == 1


def test_an_edited_file_and_an_added_file_are_named(good: Path) -> None:
    (good / "summary.md").write_text("# nothing happened\n")
    (good / "snapshot" / "extra.json").write_text("{}")
    problems = _problems(good)
    assert "summary.md: content changed since the record was sealed (sha256 differs)" in problems
    assert "snapshot/extra.json: not in the manifest (added after the record was sealed)" in problems
    assert "bundle.zip:summary.md: differs from summary.md in the folder" in problems


def test_a_deleted_notebook_is_named_even_after_resealing(good: Path) -> None:
    (good / "04-remediate-and-retry.ipynb").unlink()
    assert "04-remediate-and-retry.ipynb: listed in the manifest but missing" in _problems(good)
    _reseal(good)
    assert _problems(good) == ["04-remediate-and-retry.ipynb: missing (record.json lists step 4 with it)"]


def test_a_record_that_breaks_its_schema_is_reported(good: Path) -> None:
    doc = json.loads((good / "record.json").read_text())
    doc["steps"][0]["verdict"] = "probably-fine"
    del doc["namespace"]
    (good / "record.json").write_text(json.dumps(doc))
    _reseal(good)
    problems = _problems(good)
    assert any(p.startswith("record.json: steps/0/verdict: 'probably-fine' is not one of") for p in problems)
    assert "record.json: (top level): 'namespace' is a required property" in problems
    (good / "record.json").write_text('{"schema": 1, "steps": [')
    _reseal(good)
    assert [p.split(" (")[0] for p in _problems(good)] == ["record.json: not valid JSON"]


@pytest.mark.parametrize("approver, ticket, missing", [(None, "CHG-7", "approver"), ("alice", "", "ticket"),
                                                       (None, None, "approver and ticket")])
def test_a_mutation_sent_without_its_approval_is_reported(tmp_path: Path, approver: str | None, ticket: str | None,
                                                          missing: str) -> None:
    run_dir = _seal(record.new_run_dir(tmp_path / "out", "INC-9"), _steps(_mutation(approver, ticket)))
    assert _problems(run_dir) == [f"record.json: findings/mutations/0 (retry of prod/api) was sent without an "
                                  f"approval ({missing} missing)"]


def test_a_dry_run_mutation_needs_no_approval(tmp_path: Path) -> None:
    run_dir = _seal(record.new_run_dir(tmp_path / "out", "INC-9"), _steps(_mutation(None, None, dry_run=True)))
    assert _problems(run_dir) == []


def test_a_planted_secret_is_reported_by_file_never_quoted(good: Path, tmp_path: Path) -> None:
    (good / "report.html").write_text((good / "report.html").read_text() + f"<p>{PLANTED}</p>")
    _reseal(good)
    assert _problems(good) == ["bundle.zip: contains planted secret #1", "report.html: contains planted secret #1"]
    secret_file = tmp_path / "planted.txt"
    secret_file.write_text(f"\n{PLANTED}\n")
    result = CliRunner().invoke(main, ["verify", str(good / "bundle.zip"), "--secret-file", str(secret_file)])
    assert result.exit_code == 1 and PLANTED not in result.output
    assert result.output.splitlines() == [f"{good / 'bundle.zip'}: report.html: contains planted secret #1"]


@pytest.mark.parametrize("leak, what", [
    (SLACK, "a Slack webhook URL"),
    ("Authorization: Bearer sha256~AbCdEfGhIjKlMnOpQrStUvWxYz0123", "a bearer token"),
    ("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJlLWJ5dGVz", "a JSON web token"),
    ("-----BEGIN RSA PRIVATE KEY-----", "a private key"),
    ('{"routing_key": "R0123456789abcdef0123456789abcd"}', "a credential field with a value"),
])
def test_a_known_secret_pattern_is_reported_without_being_planted(good: Path, leak: str, what: str) -> None:
    (good / "summary.md").write_text((good / "summary.md").read_text() + leak + "\n")
    _reseal(good)
    problems = _problems(good, [])
    assert [p for p in problems if p.startswith("summary.md:")][0].startswith(f"summary.md: contains {what}")
    assert any(p.startswith(f"bundle.zip: contains {what}") for p in problems)


def test_masked_and_redacted_values_are_not_secrets(good: Path) -> None:
    (good / "summary.md").write_text('Authorization: Bearer ***\n"token": "[REDACTED]"\n')
    _reseal(good)
    assert _problems(good, []) == []


def test_a_tampered_bundle_is_reported(good: Path, tmp_path: Path) -> None:
    forged = tmp_path / "bundle.zip"
    with zipfile.ZipFile(good / "bundle.zip") as src, zipfile.ZipFile(forged, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, data.replace(b"aborted", b"healthy") if name == "record.json" else data)
        dst.writestr("../escape.txt", "x")
    problems = _problems(forged)
    assert "bundle.zip: entry '../escape.txt' points outside the bundle" in problems
    assert "bundle.zip:record.json: content changed since the record was sealed (sha256 differs)" in problems
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    assert _problems(tmp_path / "junk.zip")[0].startswith("junk.zip: not a readable zip file")


def test_an_interrupted_record_names_what_is_missing(tmp_path: Path) -> None:
    run_dir = record.new_run_dir(tmp_path / "out", "INC-9")
    nbformat.write(nbformat.v4.new_notebook(), run_dir / "01-confirm-rollback-status.ipynb")
    steps = _steps()
    record.write_progress(run_dir, _info(finished_at=""), steps, record.Redactor([PLANTED]))
    problems = _problems(run_dir)
    assert problems[0] == "manifest.json: missing, the record was never sealed (the run did not finish?)"
    assert any("says the run was interrupted" in p for p in problems)
    assert "04-remediate-and-retry.ipynb: missing (record.json lists step 4 with it)" in problems
    assert {"summary.md: missing", "report.html: missing", "bundle.zip: missing"} <= set(problems)
    result = CliRunner().invoke(main, ["verify", str(run_dir)])
    assert result.exit_code == 1 and len(result.output.splitlines()) == len(problems)
