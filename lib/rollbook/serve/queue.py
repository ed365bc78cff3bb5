"""The service's persistent queue: one row per incident in `<out>/.serve/queue.sqlite` (WAL).

State machine: queued -> running -> done | failed; running -> queued again only when an attempt was cut
short (SIGTERM past the grace period, or a crash), as a new attempt marked resumed. A notification is
committed (synchronous=FULL) before the service answers 202, so an accepted one survives kill -9; a row
is claimed by one worker in one UPDATE, so it never runs twice at once. Duplicates are absorbed by the
UNIQUE (namespace, rollout, revision) key.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollbook.record import utc_now
from rollbook.serve.notification import Notification

STATUSES = ("queued", "running", "done", "failed")
MIGRATIONS: tuple[tuple[str, ...], ...] = ((
    """CREATE TABLE incidents (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        incident TEXT NOT NULL UNIQUE,
        namespace TEXT NOT NULL, rollout TEXT NOT NULL, revision INTEGER NOT NULL,
        trigger TEXT NOT NULL, triggers TEXT NOT NULL, analysis_run TEXT, message TEXT, event_time TEXT,
        envelope TEXT, notifications INTEGER NOT NULL DEFAULT 1,
        status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
        attempt INTEGER NOT NULL DEFAULT 0, resumed INTEGER NOT NULL DEFAULT 0,
        exit_code INTEGER, record TEXT, verdicts TEXT, failure TEXT, error TEXT, first_look TEXT,
        received_at TEXT NOT NULL, started_at TEXT, finished_at TEXT, pid INTEGER, pid_started REAL,
        UNIQUE (namespace, rollout, revision))""",
    """CREATE TABLE attempts (
        incident TEXT NOT NULL, attempt INTEGER NOT NULL, started_at TEXT NOT NULL, finished_at TEXT,
        outcome TEXT, exit_code INTEGER, record TEXT, note TEXT, cpu_seconds REAL, wall_seconds REAL,
        PRIMARY KEY (incident, attempt))""",
    "CREATE INDEX incidents_by_status ON incidents (status, id)",
),)
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class Job:
    """A claimed incident: what the worker runs, and which attempt this is."""

    incident: str
    namespace: str
    rollout: str
    revision: int
    trigger: str
    attempt: int
    resumed: bool
    notification: Mapping[str, Any]


@dataclass(frozen=True)
class Accepted:
    """What enqueue did: a new row, or the existing incident for a duplicate."""

    incident: str
    status: str
    duplicate: bool


class QueueFull(Exception):
    """The bounded queue holds `bound` queued incidents already."""


class Queue:
    """The incidents table behind one lock (SQLite serialises writers anyway; one connection is simplest)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.row_factory = sqlite3.Row
        for pragma in ("journal_mode = WAL", "synchronous = FULL", "busy_timeout = 10000"):
            self._db.execute(f"PRAGMA {pragma}")
        self._migrate()

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path} has schema version {version}; this rollbook knows {SCHEMA_VERSION}. "
                               "Upgrade rollbook (the queue holds accepted notifications: do not delete it).")
        for target in range(version, SCHEMA_VERSION):
            with self._tx() as db:
                for statement in MIGRATIONS[target]:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {target + 1}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction under the lock."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed)."""
        with self._lock:
            self._db.close()

    def check(self) -> None:
        """Raise if the database does not answer (for /healthz)."""
        with self._lock:
            self._db.execute("SELECT count(*) FROM incidents").fetchone()

    # ------------------------------------------------------------------ intake

    def enqueue(self, n: Notification, incident: str, *, bound: int) -> Accepted:
        """Store a new incident as queued, or count a duplicate; QueueFull when `bound` are queued."""
        now = utc_now()
        with self._tx() as db:
            row = db.execute("SELECT incident, status, triggers FROM incidents WHERE namespace = ? AND rollout = ? "
                             "AND revision = ?", (n.namespace, n.rollout, n.revision)).fetchone()
            if row is not None:
                seen = json.loads(row["triggers"])
                db.execute("UPDATE incidents SET notifications = notifications + 1, triggers = ? WHERE incident = ?",
                           (json.dumps(sorted({*seen, n.trigger})), row["incident"]))
                return Accepted(row["incident"], row["status"], True)
            if db.execute("SELECT count(*) FROM incidents WHERE status = 'queued'").fetchone()[0] >= bound:
                raise QueueFull()
            db.execute("INSERT INTO incidents (incident, namespace, rollout, revision, trigger, triggers, analysis_run,"
                       " message, event_time, envelope, status, received_at) VALUES (?,?,?,?,?,?,?,?,?,?,'queued',?)",
                       (incident, n.namespace, n.rollout, n.revision, n.trigger, json.dumps([n.trigger]),
                        n.analysis_run, n.message, n.time, n.envelope, now))
        return Accepted(incident, "queued", False)

    # ------------------------------------------------------------------ workers

    def claim(self) -> Job | None:
        """The oldest queued incident, now running as its next attempt; None when nothing is queued."""
        with self._tx() as db:
            row = db.execute("UPDATE incidents SET status = 'running', attempt = attempt + 1, started_at = ?, "
                             "pid = NULL, pid_started = NULL WHERE id = (SELECT id FROM incidents WHERE "
                             "status = 'queued' ORDER BY id LIMIT 1) RETURNING *", (utc_now(),)).fetchone()
            if row is None:
                return None
            db.execute("INSERT OR REPLACE INTO attempts (incident, attempt, started_at) VALUES (?, ?, ?)",
                       (row["incident"], row["attempt"], row["started_at"]))
        return _job(row)

    def set_pid(self, incident: str, pid: int, started: float) -> None:
        """Remember the child running the incident (recovery checks it is gone before re-running)."""
        with self._tx() as db:
            db.execute("UPDATE incidents SET pid = ?, pid_started = ? WHERE incident = ?", (pid, started, incident))

    def finish(self, job: Job, *, status: str, exit_code: int | None, record: str | None,
               verdicts: Mapping[str, str] | None, failure: str | None, error: str | None, outcome: str,
               cpu: float | None = None, wall: float | None = None, note: str | None = None) -> None:
        """End an attempt: done/failed for good, or queued again (resumed) when it was cut short."""
        assert status in STATUSES
        now = utc_now()
        with self._tx() as db:
            db.execute("UPDATE incidents SET status = ?, exit_code = ?, record = COALESCE(?, record), verdicts = ?, "
                       "failure = ?, error = ?, finished_at = ?, pid = NULL, resumed = resumed OR ? "
                       "WHERE incident = ? AND attempt = ?",
                       (status, exit_code, record, json.dumps(dict(verdicts)) if verdicts is not None else None,
                        failure, error, now if status in ("done", "failed") else None, status == "queued",
                        job.incident, job.attempt))
            db.execute("UPDATE attempts SET finished_at = ?, outcome = ?, exit_code = ?, record = ?, note = ?, "
                       "cpu_seconds = ?, wall_seconds = ? WHERE incident = ? AND attempt = ?",
                       (now, outcome, exit_code, record, note, cpu, wall, job.incident, job.attempt))

    def set_first_look(self, incident: str, summary: Mapping[str, Any]) -> None:
        """What the first-look post did (sent or dry run, per target)."""
        with self._tx() as db:
            db.execute("UPDATE incidents SET first_look = ? WHERE incident = ?", (json.dumps(summary), incident))

    def running(self) -> list[Job]:
        """Rows left `running` (at start-up: by a previous process that died)."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM incidents WHERE status = 'running' ORDER BY id").fetchall()
        return [_job(r) for r in rows]

    def pid_of(self, incident: str) -> tuple[int | None, float | None]:
        """The child recorded for a running incident."""
        with self._lock:
            row = self._db.execute("SELECT pid, pid_started FROM incidents WHERE incident = ?", (incident,)).fetchone()
        return (row["pid"], row["pid_started"]) if row else (None, None)

    # ------------------------------------------------------------------ reading

    def depth(self) -> dict[str, int]:
        """How many incidents are in each state."""
        with self._lock:
            rows = self._db.execute("SELECT status, count(*) FROM incidents GROUP BY status").fetchall()
        counts = dict.fromkeys(STATUSES, 0)
        counts.update({r[0]: r[1] for r in rows})
        return counts

    def get(self, incident: str) -> dict[str, Any] | None:
        """One incident as the API shows it, with its attempts."""
        with self._lock:
            row = self._db.execute("SELECT * FROM incidents WHERE incident = ?", (incident,)).fetchone()
            attempts = self._db.execute("SELECT * FROM attempts WHERE incident = ? ORDER BY attempt",
                                        (incident,)).fetchall()
        if row is None:
            return None
        return {**_view(row), "attempts": [dict(a) for a in attempts]}

    def list(self, *, status: str | None = None, namespace: str | None = None, rollout: str | None = None,
             limit: int = 100) -> list[dict[str, Any]]:
        """Incidents, newest first, filtered."""
        where, args = ["1 = 1"], []
        for column, value in (("status", status), ("namespace", namespace), ("rollout", rollout)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM incidents WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
                                    [*args, limit]).fetchall()
        return [_view(r) for r in rows]


def _job(row: sqlite3.Row) -> Job:
    n = {"namespace": row["namespace"], "rollout": row["rollout"], "revision": row["revision"],
         "trigger": row["trigger"], "analysisRun": row["analysis_run"], "message": row["message"],
         "time": row["event_time"], "envelope": row["envelope"], "triggers": json.loads(row["triggers"]),
         "received_at": row["received_at"]}
    return Job(row["incident"], row["namespace"], row["rollout"], row["revision"], row["trigger"],
               row["attempt"], bool(row["resumed"]), n)


def _view(row: sqlite3.Row) -> dict[str, Any]:
    """The API's incident object (interfaces.md keys first)."""
    return {"incident": row["incident"], "namespace": row["namespace"], "rollout": row["rollout"],
            "revision": row["revision"], "status": row["status"], "exit_code": row["exit_code"],
            "record": row["record"], "verdicts": json.loads(row["verdicts"]) if row["verdicts"] else {},
            "trigger": row["trigger"], "triggers": json.loads(row["triggers"]), "analysis_run": row["analysis_run"],
            "notifications": row["notifications"], "attempt": row["attempt"], "resumed": bool(row["resumed"]),
            "failure": row["failure"], "error": row["error"],
            "first_look": json.loads(row["first_look"]) if row["first_look"] else None,
            "received_at": row["received_at"], "started_at": row["started_at"], "finished_at": row["finished_at"]}
