"""The incident history: every record under `<out>/` indexed in `<out>/history.sqlite`.

The records are the truth and the index is derived: `rebuild()` recreates it from the `record.json`
files on disk, so a lost or broken index costs nothing. The index uses WAL mode (the service's
incident runs index concurrently, readers never block them) and a schema version in
`PRAGMA user_version` with forward-only migrations.

Step 5 asks `recent_aborts()` whether the same rollout aborted on the same metric before, within a
window ("ig-error-rate aborted checkout 3 times in 24 h: INC-…, INC-…").
"""

from __future__ import annotations

import json
import re
import sqlite3
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rollbook.errors import UsageError

FILENAME = "history.sqlite"
BUSY_TIMEOUT_MS = 10_000  # concurrent incident runs index at once; a writer waits this long at most

# Forward-only migrations: MIGRATIONS[i] takes the schema from version i to i + 1.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE records (
        record TEXT PRIMARY KEY,            -- the run folder, relative to <out>
        incident TEXT NOT NULL,
        namespace TEXT NOT NULL,
        rollout TEXT NOT NULL,
        context TEXT,
        stable_revision INTEGER,
        canary_revision INTEGER,
        release_id TEXT,
        evidence_release_id TEXT,
        trigger TEXT,
        analysis_run TEXT,
        failed_metrics TEXT NOT NULL,       -- JSON list
        mc_reason TEXT,
        verdicts TEXT NOT NULL,             -- JSON {step name: verdict}
        approver TEXT,
        ticket TEXT,
        mutations TEXT NOT NULL,            -- JSON list of {action, dry_run, approver}
        started_at TEXT,
        finished_at TEXT,
        aborted_at TEXT,
        duration_seconds REAL,
        exit_code INTEGER,
        partial INTEGER NOT NULL,
        error TEXT
    );
    CREATE TABLE record_metrics (
        record TEXT NOT NULL REFERENCES records(record) ON DELETE CASCADE,
        metric TEXT NOT NULL,
        PRIMARY KEY (record, metric)
    );
    CREATE INDEX records_by_rollout ON records(namespace, rollout, started_at);
    CREATE INDEX metrics_by_name ON record_metrics(metric);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
_COLUMNS = ("record", "incident", "namespace", "rollout", "context", "stable_revision", "canary_revision",
            "release_id", "evidence_release_id", "trigger", "analysis_run", "failed_metrics", "mc_reason",
            "verdicts", "approver", "ticket", "mutations", "started_at", "finished_at", "aborted_at",
            "duration_seconds", "exit_code", "partial", "error")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class Entry:
    """One indexed record (what `rollbook history` lists)."""

    record: str
    incident: str
    namespace: str
    rollout: str
    context: str | None
    stable_revision: int | None
    canary_revision: int | None
    release_id: str | None
    evidence_release_id: str | None
    trigger: str | None
    analysis_run: str | None
    failed_metrics: tuple[str, ...]
    mc_reason: str | None
    verdicts: Mapping[str, str]
    approver: str | None
    ticket: str | None
    mutations: tuple[Mapping[str, Any], ...]
    started_at: str | None
    finished_at: str | None
    aborted_at: str | None
    duration_seconds: float | None
    exit_code: int | None
    partial: bool
    error: str | None

    def to_json(self) -> dict[str, Any]:
        """The `history --json` item (interfaces.md keys first, then the rest)."""
        return {"incident": self.incident, "namespace": self.namespace, "rollout": self.rollout,
                "canary_revision": self.canary_revision, "trigger": self.trigger,
                "failed_metrics": list(self.failed_metrics), "mc_reason": self.mc_reason,
                "verdicts": dict(self.verdicts), "started_at": self.started_at, "record": self.record,
                "stable_revision": self.stable_revision, "release_id": self.release_id,
                "evidence_release_id": self.evidence_release_id, "analysis_run": self.analysis_run,
                "approver": self.approver, "ticket": self.ticket, "mutations": [dict(m) for m in self.mutations],
                "aborted_at": self.aborted_at, "finished_at": self.finished_at,
                "duration_seconds": self.duration_seconds, "exit_code": self.exit_code,
                "partial": self.partial, "error": self.error, "context": self.context}


@dataclass(frozen=True)
class Abort:
    """One earlier abort of a rollout on a metric, as step 5 names it."""

    incident: str
    canary_revision: int | None
    analysis_run: str | None
    at: str
    record: str


# --------------------------------------------------------------------------- the database


def path_of(out: str | Path) -> Path:
    """`<out>/history.sqlite`."""
    return Path(out) / FILENAME


@contextmanager
def connect(out: str | Path) -> Iterator[sqlite3.Connection]:
    """An open, migrated index of `<out>` (created on first use); closed on exit."""
    Path(out).mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path_of(out), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA foreign_keys = ON")
        migrate(db, out)
        yield db
    finally:
        db.close()


def migrate(db: sqlite3.Connection, out: str | Path = "") -> int:
    """Apply the migrations the file lacks, each in its own transaction; the resulting version."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise UsageError(f"{path_of(out)} has schema version {version}, newer than this rollbook knows "
                         f"({SCHEMA_VERSION}).",
                         hint="Upgrade rollbook, or move the file aside and run `rollbook history --rebuild`.")
    for target in range(version, SCHEMA_VERSION):
        db.execute("BEGIN IMMEDIATE")
        try:
            # the version is re-read inside the lock: another process may have migrated meanwhile
            if int(db.execute("PRAGMA user_version").fetchone()[0]) == target:
                for statement in _statements(MIGRATIONS[target]):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {target + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return SCHEMA_VERSION


def _statements(script: str) -> list[str]:
    """The statements of a migration script (executescript would commit our transaction)."""
    # split on `;` once comments are gone: our migrations hold no `;` inside strings or triggers
    text = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    return [s.strip() for s in text.split(";") if s.strip()]


# --------------------------------------------------------------------------- indexing


def row_of(doc: Mapping[str, Any], record: str) -> dict[str, Any]:
    """The index row of one record.json (keys the record lacks are null, never guessed)."""
    f: Mapping[str, Any] = doc.get("findings") or {}
    params: Mapping[str, Any] = doc.get("parameters") or {}
    mutations = [{"action": m.get("action"), "dry_run": m.get("dry_run"),
                  "approver": (m.get("approval") or {}).get("approver")}
                 for m in f.get("mutations") or [] if isinstance(m, Mapping)]
    return {
        "record": record, "incident": str(doc.get("incident") or ""), "namespace": str(doc.get("namespace") or ""),
        "rollout": str(doc.get("rollout") or ""), "context": doc.get("context"),
        "stable_revision": _int(f.get("stable_revision")), "canary_revision": _int(f.get("canary_revision")),
        "release_id": f.get("release_id"), "evidence_release_id": f.get("evidence_release_id"),
        "trigger": f.get("trigger"), "analysis_run": f.get("analysis_run"),
        "failed_metrics": json.dumps([str(m) for m in f.get("failed_metrics") or []]),
        "mc_reason": f.get("mc_reason"),
        "verdicts": json.dumps({str(s.get("name")): s.get("verdict") for s in doc.get("steps") or []}),
        "approver": params.get("approver"), "ticket": params.get("ticket"), "mutations": json.dumps(mutations),
        "started_at": doc.get("started_at"), "finished_at": doc.get("finished_at"),
        "aborted_at": f.get("aborted_at"), "duration_seconds": _duration(doc.get("started_at"), doc.get("finished_at")),
        "exit_code": _int(doc.get("exit_code")), "partial": int(bool(doc.get("partial"))), "error": doc.get("error"),
    }


def _int(value: Any) -> int | None:
    """An integer finding, or None (a revision the step could not establish)."""
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _duration(started: Any, finished: Any) -> float | None:
    """Seconds between two record timestamps."""
    a, b = parse_time(started), parse_time(finished)
    return round((b - a).total_seconds(), 3) if a and b else None


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp as written in records (`...Z`), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _relative(out: Path, run_dir: Path) -> str:
    """The run folder relative to <out> (the key), or absolute when it lies elsewhere."""
    try:
        return Path(run_dir).resolve().relative_to(Path(out).resolve()).as_posix()
    except ValueError:
        return str(Path(run_dir).resolve())


def _upsert(db: sqlite3.Connection, row: Mapping[str, Any]) -> None:
    """Insert or replace one record's row and its metric rows (inside the caller's transaction)."""
    db.execute(f"INSERT OR REPLACE INTO records ({', '.join(_COLUMNS)}) "
               f"VALUES ({', '.join('?' for _ in _COLUMNS)})", [row[c] for c in _COLUMNS])
    db.execute("DELETE FROM record_metrics WHERE record = ?", (row["record"],))
    db.executemany("INSERT OR IGNORE INTO record_metrics (record, metric) VALUES (?, ?)",
                   [(row["record"], m) for m in json.loads(row["failed_metrics"])])


def index_record(run_dir: str | Path, out: str | Path | None = None) -> str:
    """Index (or re-index) one run folder's record.json; its key. `out` defaults to the folder's grandparent."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir.parent.parent
    doc = json.loads((run_dir / "record.json").read_text(encoding="utf-8"))
    row = row_of(doc, _relative(out, run_dir))
    with connect(out) as db:
        db.execute("BEGIN IMMEDIATE")
        try:
            _upsert(db, row)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return str(row["record"])


def index_quietly(run_dir: str | Path) -> None:
    """index_record for the record writers: the index is derived, so a failure warns and never fails a run."""
    try:
        index_record(run_dir)
    except (OSError, sqlite3.Error, ValueError, UsageError) as e:
        print(f"rollbook: the record at {run_dir} was not indexed in the history ({type(e).__name__}: {e}); "
              "`rollbook history --rebuild` indexes it later.", file=sys.stderr, flush=True)


def records_on_disk(out: str | Path) -> Iterator[Path]:
    """Every `<out>/<incident>/<run>/record.json`, sorted."""
    yield from sorted(Path(out).glob("*/*/record.json"))


def rebuild(out: str | Path) -> tuple[int, list[str]]:
    """Recreate the index from the records on disk in one transaction: (records indexed, problems)."""
    out = Path(out)
    rows, problems = [], []
    for path in records_on_disk(out):
        try:
            rows.append(row_of(json.loads(path.read_text(encoding="utf-8")), _relative(out, path.parent)))
        except (OSError, ValueError) as e:
            problems.append(f"{path}: {type(e).__name__}: {e}")
    _set_aside_if_broken(out)
    with connect(out) as db:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM record_metrics")
            db.execute("DELETE FROM records")
            for row in rows:
                _upsert(db, row)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return len(rows), problems


def _set_aside_if_broken(out: Path) -> None:
    """Move an unreadable index (not SQLite, corrupt) aside so a rebuild can start afresh."""
    path = path_of(out)
    if not path.exists():
        return
    try:
        db = sqlite3.connect(path)
        try:
            db.execute("PRAGMA schema_version").fetchone()
            ok = db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        finally:
            db.close()
    except sqlite3.DatabaseError:
        ok = False
    if not ok:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        for suffix in ("", "-wal", "-shm"):
            side = Path(str(path) + suffix)
            if side.exists():
                side.replace(Path(f"{path}.broken-{stamp}{suffix}"))


# --------------------------------------------------------------------------- queries


def parse_since(text: str | None) -> timedelta | None:
    """`--since 7d` (s, m, h, d, w) as a timedelta; None for no bound."""
    if not text:
        return None
    m = _DURATION_RE.match(text)
    if not m:
        raise UsageError(f"--since {text!r} is not a duration.", hint="Use a number and a unit: 30m, 24h, 7d, 2w.")
    return timedelta(seconds=float(m[1]) * _UNIT_SECONDS[m[2]])


def _iso(when: datetime) -> str:
    """The record timestamp form, comparable as text with started_at."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def query(out: str | Path, *, namespace: str | None = None, rollout: str | None = None, metric: str | None = None,
          since: timedelta | None = None, now: datetime | None = None, limit: int | None = None) -> list[Entry]:
    """Indexed records matching every given filter, newest first."""
    where, args = ["1 = 1"], []
    for column, value in (("namespace", namespace), ("rollout", rollout)):
        if value:
            where.append(f"r.{column} = ?")
            args.append(value)
    if metric:
        where.append("EXISTS (SELECT 1 FROM record_metrics m WHERE m.record = r.record AND m.metric = ?)")
        args.append(metric)
    if since is not None:
        where.append("r.started_at >= ?")
        args.append(_iso((now or datetime.now(UTC)) - since))
    sql = (f"SELECT {', '.join('r.' + c for c in _COLUMNS)} FROM records r WHERE {' AND '.join(where)} "
           "ORDER BY r.started_at DESC, r.record DESC")
    if limit:
        sql += f" LIMIT {int(limit)}"
    if not path_of(out).exists():
        return []
    with connect(out) as db:
        return [_entry(row) for row in db.execute(sql, args).fetchall()]


def _entry(row: Sequence[Any]) -> Entry:
    """An Entry from a row in _COLUMNS order."""
    v = dict(zip(_COLUMNS, row, strict=True))
    return Entry(**{**v, "failed_metrics": tuple(json.loads(v["failed_metrics"])),
                    "verdicts": json.loads(v["verdicts"]), "mutations": tuple(json.loads(v["mutations"])),
                    "partial": bool(v["partial"])})


def recent_aborts(out: str | Path, namespace: str, rollout: str, metric: str, window: timedelta, *,
                  now: datetime | None = None, exclude_incident: str | None = None) -> list[Abort]:
    """Aborts of `rollout` in `namespace` on `metric` within `window` before `now`, newest first.

    One abort per AnalysisRun (or per incident when the run is not known): several records of the same
    incident (a human re-running steps) are one abort, not several. The time is the abort's (findings
    `aborted_at`) when the record has it, else the record's start.
    """
    now = now or datetime.now(UTC)
    seen: dict[tuple[str, str], Abort] = {}
    for e in query(out, namespace=namespace, rollout=rollout, metric=metric):
        at = parse_time(e.aborted_at) or parse_time(e.started_at)
        if at is None or not now - window <= at <= now or e.incident == exclude_incident:
            continue
        key = ("run", e.analysis_run) if e.analysis_run else ("incident", e.incident)
        if key not in seen or _iso(at) < seen[key].at:  # the earliest record of an abort names it
            seen[key] = Abort(e.incident, e.canary_revision, e.analysis_run, _iso(at), e.record)
    return sorted(seen.values(), key=lambda a: a.at, reverse=True)


def describe_repeats(metric: str, rollout: str, aborts: Iterable[Abort], window: timedelta) -> str:
    """`ig-error-rate aborted checkout 3 times in 24 h: INC-1, INC-2, INC-3`."""
    found = list(aborts)
    hours = window.total_seconds() / 3600
    span = f"{hours:g} h" if hours < 48 else f"{hours / 24:g} d"
    names = ", ".join(dict.fromkeys(a.incident for a in found))
    return f"{metric} aborted {rollout} {len(found)} time{'s' if len(found) != 1 else ''} in {span}: {names}"


# --------------------------------------------------------------------------- the table


def print_table(entries: Sequence[Entry], *, out_dir: str | Path, file: Any = None) -> None:
    """`rollbook history` without --json: one row per record, newest first (rich wraps to the terminal)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Incident history ({len(entries)} record{'s' if len(entries) != 1 else ''} in {out_dir})",
                  title_justify="left")
    for name in ("started", "incident", "rollout", "rev", "trigger", "failed metrics", "verdicts", "MC reason",
                 "record"):
        table.add_column(name, overflow="fold")
    for e in entries:
        table.add_row((e.started_at or "")[:16].replace("T", " "), e.incident, f"{e.namespace}/{e.rollout}",
                      "" if e.canary_revision is None else str(e.canary_revision), e.trigger or "",
                      ", ".join(e.failed_metrics), _verdicts_text(e), e.mc_reason or "", e.record)
    console = Console(file=file, soft_wrap=False)
    if not console.is_terminal:
        console.width = 200  # a pipe or file: do not squeeze the table into 80 columns
    console.print(table)


def _verdicts_text(e: Entry) -> str:
    """`all 4 pass`, or the steps that did not pass (`escalate=escalate`), and whether it is partial."""
    odd = [f"{name}={v}" for name, v in e.verdicts.items() if v != "pass"]
    text = ", ".join(odd) if odd else f"all {len(e.verdicts)} pass"
    return text + (" (partial)" if e.partial else "")
