"""The journal: SQLite in the output dir, the source of truth for resume.

A job is written ``submitting`` before its request is sent and gets its task id as
soon as the answer arrives; it becomes ``completed`` only once its file is verified
and in place. Every change is its own committed transaction (WAL, synchronous=FULL),
so a kill -9 or a power loss leaves a state a rerun can continue from.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import OutputDirError

FILENAME = "state.sqlite"
_IDS_PER_QUERY = 500
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,          -- pending | submitting | submitted | completed | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    task_id TEXT,
    submitted_at REAL,            -- epoch seconds of the latest submission
    finished_at REAL,             -- when the latest task was seen final
    completed_at REAL,            -- when the file was verified and in place
    result_url TEXT,
    credits REAL,                 -- credits_reserved of the latest task
    credits_total REAL NOT NULL DEFAULT 0,  -- over every task this job was sent as
    error TEXT,
    error_code TEXT,
    file TEXT, sha256 TEXT, width INTEGER, height INTEGER, bytes INTEGER, media_type TEXT
);
CREATE TABLE IF NOT EXISTS invocations (
    id INTEGER PRIMARY KEY,
    started_at REAL NOT NULL,
    finished_at REAL,
    summary TEXT
);
"""


@dataclass(frozen=True)
class JobRecord:
    """What the journal knows about one job."""

    job_id: str
    state: str
    attempts: int = 0
    task_id: str | None = None
    submitted_at: float | None = None
    finished_at: float | None = None
    completed_at: float | None = None
    result_url: str | None = None
    credits: float | None = None
    credits_total: float = 0.0
    error: str | None = None
    error_code: str | None = None
    file: str | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    media_type: str | None = None


@dataclass(frozen=True)
class FileInfo:
    """A verified image in place in the output dir."""

    path: str  # relative to the output dir
    sha256: str
    bytes: int
    width: int
    height: int
    media_type: str


class Journal:
    """One output dir's state. Use from one thread (the event loop's)."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        if read_only:  # another dir's journal (merge): look, never write
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        else:
            self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        if not read_only:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        self.invocation: int | None = None

    @classmethod
    def open(cls, out_dir: Path) -> Journal:
        out_dir.mkdir(parents=True, exist_ok=True)
        return cls(out_dir / FILENAME)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- ownership -------------------------------------------------------------------

    def claim(self, name: str, out_dir: str | Path) -> None:
        """Bind this dir to a manifest name; a dir of another manifest is refused."""
        owner = self.get_meta("name")
        if owner is not None and owner != name:
            raise OutputDirError(
                f"{out_dir} holds the results of manifest {owner!r}, not {name!r}; "
                "choose another --out (or set the same name:)"
            )
        if owner is None:
            self.set_meta("name", name)
            self.set_meta("schema", str(SCHEMA_VERSION))
            self.set_meta("created_at", iso(time.time()) or "")

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # -- reading -----------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord | None:
        row = self._db.execute("SELECT * FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        return None if row is None else JobRecord(**dict(row))

    def records_of(self, job_ids: Sequence[str]) -> dict[str, JobRecord]:
        """Records of the given jobs only (a large journal is read a slice at a time)."""
        found: dict[str, JobRecord] = {}
        for start in range(0, len(job_ids), _IDS_PER_QUERY):
            part = job_ids[start : start + _IDS_PER_QUERY]
            marks = ",".join("?" * len(part))
            for row in self._db.execute(f"SELECT * FROM jobs WHERE job_id IN ({marks})", part):
                found[row["job_id"]] = JobRecord(**dict(row))
        return found

    def job_ids(self) -> set[str]:
        return {str(row[0]) for row in self._db.execute("SELECT job_id FROM jobs")}

    def states(self) -> dict[str, str]:
        """Every job's state by its id."""
        return {
            str(job_id): str(state)
            for job_id, state in self._db.execute("SELECT job_id, state FROM jobs")
        }

    def changes(self) -> int:
        """Rows changed through this connection so far (tells whether to upload again)."""
        return self._db.total_changes

    def credits_reserved(self) -> float:
        """Credits reserved by every task this output dir has sent."""
        row = self._db.execute("SELECT COALESCE(SUM(credits_total), 0) FROM jobs").fetchone()
        return float(row[0])

    def completed_files(self, since: float = 0.0) -> list[tuple[str, int, float]]:
        """(file, bytes, completed_at) of the jobs completed at or after ``since``."""
        rows = self._db.execute(
            "SELECT file, bytes, completed_at FROM jobs "
            "WHERE state='completed' AND file IS NOT NULL AND completed_at >= ? "
            "ORDER BY completed_at",
            (since,),
        ).fetchall()
        return [(str(file), int(size or 0), float(done)) for file, size, done in rows]

    def snapshot(self, target: Path) -> None:
        """A consistent copy of the journal in one file (SQLite's online backup)."""
        target.unlink(missing_ok=True)
        copy = sqlite3.connect(target)
        try:
            self._db.backup(copy)
        finally:
            copy.close()

    # -- transitions -----------------------------------------------------------------

    def mark_submitting(self, job_id: str) -> None:
        """Written before the request goes out: a crash now means 'maybe sent'."""
        self._db.execute(
            """INSERT INTO jobs(job_id, state, attempts, submitted_at)
               VALUES (?, 'submitting', 1, ?)
               ON CONFLICT(job_id) DO UPDATE SET state='submitting', attempts=attempts+1,
               task_id=NULL, result_url=NULL, submitted_at=excluded.submitted_at,
               finished_at=NULL, error=NULL, error_code=NULL""",
            (job_id, time.time()),
        )

    def mark_unsent(self, job_id: str) -> None:
        """The API refused before creating a task (429, 401...): the attempt did not happen."""
        self._db.execute(
            "UPDATE jobs SET state='pending', attempts=MAX(attempts-1, 0), submitted_at=NULL "
            "WHERE job_id=? AND state='submitting'",
            (job_id,),
        )

    def mark_submitted(self, job_id: str, task_id: str, credits: float | None) -> None:
        self._db.execute(
            "UPDATE jobs SET state='submitted', task_id=?, credits=?, "
            "credits_total=credits_total+? WHERE job_id=?",
            (task_id, credits, credits or 0.0, job_id),
        )

    def mark_result(self, job_id: str, url: str) -> None:
        """The task completed; its link is valid for a limited time."""
        self._db.execute(
            "UPDATE jobs SET result_url=?, finished_at=? WHERE job_id=?",
            (url, time.time(), job_id),
        )

    def mark_completed(self, job_id: str, info: FileInfo) -> None:
        self._db.execute(
            """UPDATE jobs SET state='completed', completed_at=?, error=NULL, error_code=NULL,
               file=?, sha256=?, width=?, height=?, bytes=?, media_type=? WHERE job_id=?""",
            (
                time.time(),
                info.path,
                info.sha256,
                info.width,
                info.height,
                info.bytes,
                info.media_type,
                job_id,
            ),
        )

    def mark_failed(self, job_id: str, error: str, code: str | int | None = None) -> None:
        self._db.execute(
            """INSERT INTO jobs(job_id, state, error, error_code, finished_at)
               VALUES (?, 'failed', ?, ?, ?)
               ON CONFLICT(job_id) DO UPDATE SET state='failed', error=excluded.error,
               error_code=excluded.error_code,
               finished_at=COALESCE(jobs.finished_at, excluded.finished_at)""",
            (job_id, error, None if code is None else str(code), time.time()),
        )

    def put(self, record: JobRecord) -> None:
        """Write a whole record (``runner merge`` rebuilds a journal from results)."""
        fields = list(JobRecord.__dataclass_fields__)
        self._db.execute(
            f"INSERT OR REPLACE INTO jobs({', '.join(fields)}) "
            f"VALUES ({', '.join('?' for _ in fields)})",
            [getattr(record, name) for name in fields],
        )

    def reset_attempts(self, job_id: str) -> None:
        self._db.execute("UPDATE jobs SET attempts=0 WHERE job_id=?", (job_id,))

    # -- invocations -------------------------------------------------------------------

    def start_invocation(self) -> int:
        cursor = self._db.execute("INSERT INTO invocations(started_at) VALUES (?)", (time.time(),))
        self.invocation = int(cursor.lastrowid or 0)
        return self.invocation

    def finish_invocation(self, summary: dict[str, Any]) -> None:
        if self.invocation is None:
            return
        self._db.execute(
            "UPDATE invocations SET finished_at=?, summary=? WHERE id=?",
            (time.time(), json.dumps(summary), self.invocation),
        )

    def invocations(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT * FROM invocations ORDER BY id").fetchall()
        return [
            {**dict(row), "summary": json.loads(row["summary"]) if row["summary"] else None}
            for row in rows
        ]


def iso(epoch: float | None) -> str | None:
    """ISO 8601 UTC for an epoch time, as every output writes times."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")


def read_states(out_dir: Path) -> dict[str, str] | None:
    """Job states of an output dir, read-only (``plan`` must not write); None if no journal."""
    path = out_dir / FILENAME
    if not path.is_file():
        return None
    try:
        with Journal(path, read_only=True) as journal:
            return journal.states()
    except sqlite3.Error:
        return None
