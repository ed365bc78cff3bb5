"""The incident record: layout, findings merge, summary, report, redaction, bundle and manifest."""

from __future__ import annotations

import hashlib
import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import nbformat
import pytest

from rollbook import record
from rollbook.errors import ParameterError
from rollbook.record import RunInfo, StepResult

SECRET = "mc-tok-7f3a9c1e5b2d"


def _info(**kw: object) -> RunInfo:
    base: dict[str, object] = dict(
        incident="INC-1234", namespace="prod", rollout="api", context="prod-eu", run_id="r1",
        started_at="2025-01-01T00:00:00.000Z", finished_at="2025-01-01T00:00:05.000Z", tool_version="0.1.0",
        parameters={"namespace": "prod", "mc_url": "http://127.0.0.1:1/mc", "note": f"pasted {SECRET}"},
        exit_code=0, partial=False)
    base.update(kw)
    return RunInfo(**base)  # type: ignore[arg-type]


def _steps() -> list[StepResult]:
    return [
        StepResult(1, "confirm-rollback-status", "01-confirm-rollback-status.ipynb", "pass", "rollout aborted",
                   findings={"phase": "Degraded", "trigger": "evidence", "failed_metrics": ["mc-evidence-ok"],
                             "analysis_run": "api-6d4f8b7c9-7-0", "extra_key": 1}),
        StepResult(2, "inspect-evidence", "02-inspect-evidence.ipynb", "pass", "MC says evidence is missing",
                   findings={"mc_reason": "missing required evidence: test-report (junit)", "phase": None}),
        StepResult(3, "remediate-and-retry", "03-remediate-and-retry.ipynb", "skip", "the rollout is Healthy"),
    ]


def _executed_notebook(path: Path, text: str) -> None:
    """A notebook as papermill leaves it: parameters, a code cell with output, a step result."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('namespace = "prod"  # PARAMS-INPUT')
    params.metadata["tags"] = ["injected-parameters"]
    code = nbformat.v4.new_code_cell("print('CODE-INPUT-MARKER')")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
    res = nbformat.v4.new_code_cell("display(result)")
    res.outputs = [nbformat.v4.new_output("display_data", data={record.STEP_RESULT_MIME: {"verdict": "pass"}})]
    nb.cells = [nbformat.v4.new_markdown_cell("# Narrative heading"), params, code, res]
    nbformat.write(nb, path)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    d = record.new_run_dir(tmp_path / "out", "INC-1234", now=datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC))
    _executed_notebook(d / "01-confirm-rollback-status.ipynb", f"STEP1-OUTPUT token={SECRET}\n")
    _executed_notebook(d / "02-inspect-evidence.ipynb", "STEP2-OUTPUT\n")
    record.write_snapshot(d, {"rollout": {"metadata": {"name": "api"}, "token": SECRET},
                              "analysisruns/list": {"items": []}})
    record.write_results(d, _steps())
    return d


def test_run_dir_layout_and_never_overwritten(tmp_path: Path) -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    a = record.new_run_dir(tmp_path, "INC-1", now=now)
    b = record.new_run_dir(tmp_path, "INC-1", now=now)
    assert a != b and a.parent == b.parent == tmp_path / "INC-1"
    assert a.name.startswith("20250101T120000Z-") and len(a.name.split("-")[1]) == 6
    with pytest.raises(ParameterError):
        record.new_run_dir(tmp_path, "../escape")


def test_findings_merge_keeps_established_values_and_nulls_the_rest() -> None:
    f = record.merge_findings(_steps())
    assert set(record.FINDINGS_KEYS) <= set(f)
    assert f["phase"] == "Degraded"  # step 2's null does not erase step 1's value
    assert f["mc_reason"].startswith("missing required evidence")
    assert f["closeout_ok"] is None and f["release_identity_ok"] is None
    assert f["extra_key"] == 1


def test_record_files_and_record_json(run_dir: Path) -> None:
    record.write_record(run_dir, _info(), _steps(), secrets=[SECRET])
    names = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()}
    assert {"record.json", "summary.md", "report.html", "bundle.zip", "manifest.json", "results.json",
            "01-confirm-rollback-status.ipynb", "snapshot/rollout.json", "snapshot/analysisruns_list.json"} <= names
    doc = json.loads((run_dir / "record.json").read_text())
    for key in ("schema", "incident", "namespace", "rollout", "context", "started_at", "finished_at",
                "tool_version", "parameters", "steps", "findings"):
        assert key in doc
    assert doc["schema"] == 1 and doc["incident"] == "INC-1234" and doc["context"] == "prod-eu"
    assert [s["verdict"] for s in doc["steps"]] == ["pass", "pass", "skip"]
    assert set(doc["steps"][0]) >= {"step", "name", "notebook", "verdict", "reason", "started_at", "seconds", "facts"}
    assert doc["findings"]["failed_metrics"] == ["mc-evidence-ok"]


def test_manifest_hashes_every_file_and_detects_tampering(run_dir: Path) -> None:
    record.write_record(run_dir, _info(), _steps())
    manifest = json.loads((run_dir / "manifest.json").read_text())["files"]
    on_disk = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest) == on_disk
    for name, digest in manifest.items():
        assert hashlib.sha256((run_dir / name).read_bytes()).hexdigest() == digest
    assert record.verify_manifest(run_dir) == []
    (run_dir / "summary.md").write_text("edited")
    (run_dir / "snapshot" / "new.json").write_text("{}")
    assert record.verify_manifest(run_dir) == ["snapshot/new.json", "summary.md"]


def test_bundle_holds_everything_but_itself_and_its_own_manifest_of_those_files(run_dir: Path) -> None:
    record.write_record(run_dir, _info(), _steps())
    with zipfile.ZipFile(run_dir / "bundle.zip") as zf:
        inside = set(zf.namelist())
        assert zf.read("record.json") == (run_dir / "record.json").read_bytes()
        inner = json.loads(zf.read("manifest.json"))["files"]
        assert {n: hashlib.sha256(zf.read(n)).hexdigest() for n in inside - {"manifest.json"}} == inner
    on_disk = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()}
    assert inside - {"manifest.json"} == on_disk - {"bundle.zip", "manifest.json"}
    assert zipfile.ZipFile(run_dir / "bundle.zip").read("manifest.json") != (run_dir / "manifest.json").read_bytes()


def test_planted_secret_is_in_no_output_file(run_dir: Path) -> None:
    record.write_record(run_dir, _info(), _steps(), secrets=[SECRET, "  ", "abc"])
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert len(files) >= 10
    for p in files:
        assert SECRET.encode() not in p.read_bytes(), p
    with zipfile.ZipFile(run_dir / "bundle.zip") as zf:
        for name in zf.namelist():
            assert SECRET.encode() not in zf.read(name), name
    assert record.REDACTED in (run_dir / "snapshot" / "rollout.json").read_text()
    assert json.loads((run_dir / "record.json").read_text())["parameters"]["note"] == f"pasted {record.REDACTED}"


def test_redactor_catches_escaped_forms_and_ignores_short_strings() -> None:
    r = record.Redactor(['tok"<en>\\1234', "abc"])
    assert r.scrub(json.dumps({"a": 'tok"<en>\\1234'})) == json.dumps({"a": record.REDACTED})
    assert r.scrub("x tok&quot;&lt;en&gt;\\1234 y") == f"x {record.REDACTED} y"
    assert r.scrub("abc") == "abc"  # too short to scrub without mangling every file


def test_summary_reads_like_a_ticket(run_dir: Path) -> None:
    text = record.render_summary(_info(partial=True, exit_code=3), _steps())
    for section in ("## Cause", "## Evidence", "## Actions taken", "## State at close", "## Links"):
        assert section in text
    assert "missing required evidence: test-report (junit)" in text
    assert "kubectl get analysisrun api-6d4f8b7c9-7-0 -n prod" in text
    assert "Step 3 (remediate-and-retry) skipped: the rollout is Healthy" in text
    assert "Close-out checks passed: not established" in text
    assert "PARTIAL" in text
    assert "http://127.0.0.1:1/mc" in text


def test_report_has_outputs_and_narrative_but_no_code_input(run_dir: Path) -> None:
    html = record.render_report(_info(), _steps(), run_dir)
    assert "STEP1-OUTPUT" in html and "STEP2-OUTPUT" in html
    assert "Narrative heading" in html and "Step 3: remediate-and-retry" in html
    assert "CODE-INPUT-MARKER" not in html and "PARAMS-INPUT" not in html
    assert record.STEP_RESULT_MIME not in html


def test_read_results_before_and_after(tmp_path: Path) -> None:
    assert record.read_results(tmp_path)["steps"] == []
    record.write_results(tmp_path, _steps()[:1])
    doc = record.read_results(tmp_path)
    assert [s["step"] for s in doc["steps"]] == [1] and doc["findings"]["phase"] == "Degraded"
