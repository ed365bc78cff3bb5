"""`rollbook verify RECORD_DIR|bundle.zip`: is this record intact, complete, approved and free of secrets?

Four checks, one line per problem (never the secret itself): the sha256 of every file against the
manifest (the folder's manifest.json, or the one inside the bundle); record.json against its schema,
with every notebook it lists present; every mutation the record says was sent has its approval; no
planted secret (given as a file of values, or the secrets a rollbook.yaml references) and no known
secret pattern appears in any file.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema

from rollbook import atomic
from rollbook.record import VERDICTS
from rollbook.redact import Redactor

# The files every sealed record has beside record.json and the manifest (interfaces.md, "The incident record").
EXPECTED = ("summary.md", "report.html")

# Known shapes of credentials: what a leak looks like even when nobody planted the value.
PATTERNS: dict[str, re.Pattern[bytes]] = {
    "a Slack webhook URL": re.compile(rb"/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9_-]{12,}"),
    "a Slack token": re.compile(rb"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "a bearer token": re.compile(rb"(?i)\bbearer\s+(?!\*)[A-Za-z0-9._~+/=-]{20,}"),
    "a JSON web token (e.g. a Kubernetes service-account token)":
        re.compile(rb"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    "a private key": re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "an AWS access key id": re.compile(rb"\bAKIA[0-9A-Z]{16}\b"),
    "a GitHub token": re.compile(rb"\bgh[pousr]_[A-Za-z0-9]{36}\b"),
    "a credential field with a value": re.compile(
        rb'(?i)\\?"(token|password|client-key-data|routing_key|api_key)\\?"\s*:\s*\\?"(?!\[REDACTED\])[^"\\\s]{12,}'),
}

_STEP = {
    "type": "object",
    "required": ["step", "name", "notebook", "verdict", "reason"],
    "properties": {
        "step": {"type": "integer", "minimum": 1}, "name": {"type": "string", "minLength": 1},
        "notebook": {"type": "string", "pattern": r"^[0-9]{2}-[a-z0-9-]+\.ipynb$"},
        "verdict": {"enum": list(VERDICTS)}, "reason": {"type": "string"},
        "seconds": {"type": "number", "minimum": 0}, "facts": {"type": "object"}, "findings": {"type": "object"},
    },
}
# record.json, schema 1 (interfaces.md): the keys other tools rely on, with their types.
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["schema", "incident", "namespace", "rollout", "started_at", "finished_at", "tool_version",
                 "parameters", "steps", "findings"],
    "properties": {
        "schema": {"const": 1}, "incident": {"type": "string", "minLength": 1},
        "namespace": {"type": "string", "minLength": 1}, "rollout": {"type": "string", "minLength": 1},
        "context": {"type": ["string", "null"]}, "started_at": {"type": "string"},
        "finished_at": {"type": ["string", "null"]}, "tool_version": {"type": "string"},
        "exit_code": {"type": ["integer", "null"]}, "status": {"enum": ["complete", "interrupted"]},
        "parameters": {"type": "object"}, "steps": {"type": "array", "items": _STEP},
        "findings": {"type": "object", "properties": {"mutations": {"type": ["array", "null"]}}},
    },
}


@dataclass
class Report:
    """What verify found: the problems (one line each) and how many files it looked at."""

    source: str
    files: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No problem found."""
        return not self.problems

    @property
    def exit_code(self) -> int:
        """0 intact, 1 any problem (interfaces.md)."""
        return 0 if self.ok else 1


def verify(path: str | Path, secrets: Iterable[str] = ()) -> Report:
    """Verify a record folder or a bundle.zip; `secrets` are planted values that must appear nowhere."""
    path = Path(path)
    report = Report(str(path))
    if path.is_dir():
        contents = _read_folder(path)
        _check_folder_manifest(path, contents, report)
    else:
        contents = _read_bundle(path, report)
    report.files = len(contents)
    doc = _check_record(contents, report, bundle=not path.is_dir())
    if doc is not None:
        _check_mutations(doc, report)
    _check_secrets(contents, list(secrets), report)
    return report


# --------------------------------------------------------------------------- reading


def _read_folder(run_dir: Path) -> dict[str, bytes]:
    """Every file of the folder (leftover temp files of an interrupted write excluded)."""
    return {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and not atomic.is_temp(p.name)}


def _read_bundle(path: Path, report: Report) -> dict[str, bytes]:
    """The bundle's entries, checked against the manifest.json inside it."""
    try:
        with zipfile.ZipFile(path) as zf:
            contents = {}
            for name in zf.namelist():
                pure = PurePosixPath(name)
                if pure.is_absolute() or ".." in pure.parts or "\x00" in name:
                    report.problems.append(f"{path.name}: entry {name!r} points outside the bundle")
                elif not name.endswith("/"):
                    contents[name] = zf.read(name)
    except (OSError, zipfile.BadZipFile) as e:
        report.problems.append(f"{path.name}: not a readable zip file ({e}); re-download the attachment")
        return {}
    inner = contents.pop("manifest.json", None)
    if inner is None:
        report.problems.append(f"{path.name}: has no manifest.json inside, its files cannot be checked")
    else:
        _compare(_manifest_files(inner, f"{path.name}:manifest.json", report), contents, report, f"{path.name}:")
    return contents


def _manifest_files(data: bytes, where: str, report: Report) -> dict[str, str]:
    """The `files` map of a manifest, or {} with a problem."""
    try:
        files = json.loads(data)["files"]
        if isinstance(files, dict) and all(isinstance(v, str) for v in files.values()):
            return files
    except (ValueError, KeyError, TypeError):
        pass
    report.problems.append(f"{where}: not a manifest (JSON with a files map of sha256 digests)")
    return {}


def _compare(listed: Mapping[str, str], contents: Mapping[str, bytes], report: Report, prefix: str) -> None:
    """Each listed file present with its digest; each present file listed."""
    import hashlib

    for name, digest in sorted(listed.items()):
        if name not in contents:
            report.problems.append(f"{prefix}{name}: listed in the manifest but missing")
        elif hashlib.sha256(contents[name]).hexdigest() != digest:
            report.problems.append(f"{prefix}{name}: content changed since the record was sealed (sha256 differs)")
    for name in sorted(set(contents) - set(listed)):
        report.problems.append(f"{prefix}{name}: not in the manifest (added after the record was sealed)")


def _check_folder_manifest(run_dir: Path, contents: Mapping[str, bytes], report: Report) -> None:
    """The folder's manifest.json against every file; a missing one is named."""
    data = contents.get("manifest.json")
    if data is None:
        report.problems.append("manifest.json: missing, the record was never sealed (the run did not finish?)")
        return
    others = {k: v for k, v in contents.items() if k != "manifest.json"}
    _compare(_manifest_files(data, "manifest.json", report), others, report, "")
    if "bundle.zip" in contents:
        bundle = _read_bundle(run_dir / "bundle.zip", report)
        for name in sorted(set(bundle) & set(others)):
            if bundle[name] != others[name]:
                report.problems.append(f"bundle.zip:{name}: differs from {name} in the folder")


# --------------------------------------------------------------------------- record.json


def _check_record(contents: Mapping[str, bytes], report: Report, *, bundle: bool) -> dict[str, Any] | None:
    """record.json parses, matches its schema, is not interrupted, and every file it implies is there."""
    data = contents.get("record.json")
    if data is None:
        report.problems.append("record.json: missing")
        return None
    try:
        doc = json.loads(data)
    except ValueError as e:
        report.problems.append(f"record.json: not valid JSON ({e})")
        return None
    for error in sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(doc), key=lambda e: list(e.path)):
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        report.problems.append(f"record.json: {where}: {error.message[:200]}")
    if not isinstance(doc, dict):
        return None
    if doc.get("status") == "interrupted":
        report.problems.append("record.json: says the run was interrupted (status `interrupted`): it stopped "
                               "before the record was sealed; rerun the steps not listed")
    for s in doc.get("steps") or []:
        name = s.get("notebook") if isinstance(s, dict) else None
        if isinstance(name, str) and name not in contents and s.get("verdict") != "skip":
            report.problems.append(f"{name}: missing (record.json lists step {s.get('step')} with it)")
    for name in [*EXPECTED, *([] if bundle else ["bundle.zip"])]:
        if name not in contents:
            report.problems.append(f"{name}: missing")
    return doc


def _check_mutations(doc: Mapping[str, Any], report: Report) -> None:
    """Every mutation sent (not a dry run, not skipped) names its approver and ticket."""
    findings = doc.get("findings") if isinstance(doc.get("findings"), dict) else {}
    for i, m in enumerate((findings or {}).get("mutations") or []):
        if not isinstance(m, dict):
            report.problems.append(f"record.json: findings/mutations/{i}: not an object")
            continue
        if m.get("dry_run") is not False or m.get("skipped"):
            continue
        approval = m.get("approval") if isinstance(m.get("approval"), dict) else {}
        missing = [k for k in ("approver", "ticket") if not str((approval or {}).get(k) or "").strip()]
        if missing:
            report.problems.append(f"record.json: findings/mutations/{i} ({m.get('action')} of "
                                   f"{m.get('namespace')}/{m.get('rollout')}) was sent without an approval "
                                   f"({' and '.join(missing)} missing)")


# --------------------------------------------------------------------------- secrets


def _check_secrets(contents: Mapping[str, bytes], planted: list[str], report: Report) -> None:
    """No planted value (raw, JSON- or HTML-escaped) and no known credential pattern, in any file."""
    redactors = [(i, Redactor([s])) for i, s in enumerate(planted, 1) if Redactor([s]).forms]
    for name, data in sorted(contents.items()):
        texts = [data, *_unzipped(data)] if name.endswith(".zip") else [data]
        for i, r in redactors:
            if any(r.found_in(t) for t in texts):
                report.problems.append(f"{name}: contains planted secret #{i}")
        for what, rx in PATTERNS.items():
            if any(rx.search(t) for t in texts):
                report.problems.append(f"{name}: contains {what}")


def _unzipped(data: bytes) -> list[bytes]:
    """The entries of a zip held in memory (a bundle's contents are searched too)."""
    import io

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return [zf.read(n) for n in zf.namelist() if not n.endswith("/")]
    except zipfile.BadZipFile:
        return []


def secrets_from(files: Iterable[Path], config: str | None = None) -> list[str]:
    """Planted values: one per line of each file, plus every secret `config` (rollbook.yaml) references."""
    found = [line.strip() for f in files for line in Path(f).read_text(encoding="utf-8").splitlines() if line.strip()]
    if config:
        from rollbook import app, runner

        found += app.config_secrets(config) + runner.secrets_from_env()
    return found


def text(report: Report) -> str:
    """One line per problem, or one line saying the record is intact."""
    if report.ok:
        return f"rollbook verify: {report.source}: intact ({report.files} files checked)\n"
    return "".join(f"{report.source}: {p}\n" for p in report.problems)
