"""The embedded store: one SQLite file (or ``:memory:``), WAL mode.

All SQLite calls run on one dedicated thread, so the event loop never blocks
on disk and the connection is only ever used by the thread that made it.
Cancelling an awaiting caller does not interrupt a statement already running
on that thread; it completes, and its result is dropped.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TypeVar

from chimera.errors import AlreadyExists
from chimera.events import Event, EventType, JobState, upgrade_frame
from chimera.job import Job

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- creation order, the ListJobs cursor
    job_id TEXT NOT NULL UNIQUE,
    request_id TEXT UNIQUE,                 -- NULL when the client gave none
    state TEXT NOT NULL,
    end_time TEXT,
    snapshot TEXT NOT NULL                  -- chimera.job.Job as JSON
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_end_time ON jobs(end_time);  -- retention
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    frame TEXT NOT NULL,                    -- the exact WebSocket text
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
"""


def end_time_key(moment: datetime | None) -> str | None:
    """``jobs.end_time``: UTC, always with microseconds, so text order is time order."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


class SQLiteStore:
    """:class:`chimera.store.base.Store` on SQLite."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chimera-sqlite")
        self._conn: sqlite3.Connection | None = None

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            assert self._conn is not None, "store is not open"
            return fn(self._conn)

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    async def open(self) -> None:
        def connect() -> None:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable in WAL mode against process crashes (SIGKILL);
            # only a power loss can drop the last commits.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(_SCHEMA)
            _add_owner_column(conn)
            _upgrade_thoughts(conn)
            self._conn = conn

        await asyncio.get_running_loop().run_in_executor(self._executor, connect)

    async def close(self) -> None:
        def disconnect() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, disconnect)
        self._executor.shutdown(wait=True)

    async def create_job(self, job: Job) -> tuple[Job, bool]:
        def insert(conn: sqlite3.Connection) -> tuple[Job, bool]:
            if job.request_id:
                row = conn.execute(
                    "SELECT snapshot FROM jobs WHERE request_id = ?", (job.request_id,)
                ).fetchone()
                if row is not None:
                    return Job.from_json(row[0]), False
            try:
                conn.execute(
                    "INSERT INTO jobs (job_id, request_id, state, snapshot, owner)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (job.job_id, job.request_id or None, job.state.value, job.to_json(),
                     job.owner),
                )
            except sqlite3.IntegrityError as exc:
                raise AlreadyExists(
                    f"job_id {job.job_id!r} is already used; choose another or leave it empty"
                ) from exc
            return job, True

        return await self._call(insert)

    async def get_job(self, job_id: str) -> Job | None:
        def select(conn: sqlite3.Connection) -> Job | None:
            row = conn.execute("SELECT snapshot FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            return Job.from_json(row[0]) if row else None

        return await self._call(select)

    async def list_jobs(
        self, limit: int, before: int | None, owner: str | None = None
    ) -> tuple[list[Job], int | None]:
        def select(conn: sqlite3.Connection) -> tuple[list[Job], int | None]:
            cursor_before = before if before is not None else 2**62
            if owner is None:
                rows = conn.execute(
                    "SELECT id, snapshot FROM jobs WHERE id < ? ORDER BY id DESC LIMIT ?",
                    (cursor_before, limit + 1),
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT id, snapshot FROM jobs WHERE owner = ? AND id < ?"
                    " ORDER BY id DESC LIMIT ?",
                    (owner, cursor_before, limit + 1),
                ).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            cursor = rows[-1][0] if more else None
            return [Job.from_json(r[1]) for r in rows], cursor

        return await self._call(select)

    async def append(self, events: Sequence[Event], snapshots: Sequence[Job]) -> None:
        event_rows = [(e.job_id, e.seq, e.frame) for e in events]
        # Serialized here, on the loop, because the jobs keep changing after we return.
        job_rows = [
            (j.state.value, end_time_key(j.end_time), j.to_json(), j.job_id)
            for j in snapshots
        ]

        def write(conn: sqlite3.Connection) -> None:
            with conn:  # one transaction: the group commit
                conn.execute("BEGIN")
                conn.executemany(
                    "INSERT INTO events (job_id, seq, frame) VALUES (?, ?, ?)", event_rows
                )
                conn.executemany(
                    "UPDATE jobs SET state = ?, end_time = ?, snapshot = ? WHERE job_id = ?",
                    job_rows,
                )

        await self._call(write)

    async def read_events(self, job_id: str, after_seq: int, limit: int) -> list[Event]:
        def select(conn: sqlite3.Connection) -> list[Event]:
            rows = conn.execute(
                "SELECT frame FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (job_id, after_seq, limit),
            ).fetchall()
            return [Event.from_frame(r[0]) for r in rows]

        return await self._call(select)

    async def unfinished_jobs(self) -> list[Job]:
        def select(conn: sqlite3.Connection) -> list[Job]:
            rows = conn.execute(
                "SELECT snapshot FROM jobs WHERE state = ? ORDER BY id", (JobState.RUNNING.value,)
            ).fetchall()
            return [Job.from_json(r[0]) for r in rows]

        return await self._call(select)

    async def remove_finished_before(self, cutoff: datetime, limit: int) -> list[str]:
        key = end_time_key(cutoff)

        def delete(conn: sqlite3.Connection) -> list[str]:
            with conn:  # one transaction: a job never loses its events without its row
                conn.execute("BEGIN")
                ids = [
                    row[0]
                    for row in conn.execute(
                        "SELECT job_id FROM jobs WHERE end_time IS NOT NULL AND end_time < ? "
                        "ORDER BY end_time LIMIT ?",
                        (key, limit),
                    )
                ]
                conn.executemany("DELETE FROM events WHERE job_id = ?", [(i,) for i in ids])
                conn.executemany("DELETE FROM jobs WHERE job_id = ?", [(i,) for i in ids])
            return ids

        return await self._call(delete)


def _add_owner_column(conn: sqlite3.Connection) -> None:
    """Adds ``jobs.owner`` (the creating token's ``sub``) to files made before it existed."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    if "owner" not in columns:
        conn.execute("ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
    conn.execute("CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner, id)")


def _upgrade_thoughts(conn: sqlite3.Connection) -> None:
    """Gives thoughts recorded before they had ids (``user_version`` 0) the guide's shape.

    Each old ``thought_added`` frame is rewritten with a deterministic id (from its
    job id and seq, :func:`chimera.events.legacy_thought_id`), and each snapshot's
    thoughts are rebuilt from those events, so GetJob, the snapshot and every
    replay agree on the ids. One transaction; runs once per file.
    """
    if conn.execute("PRAGMA user_version").fetchone()[0] >= 1:
        return
    with conn:
        conn.execute("BEGIN")
        rows = conn.execute(
            "SELECT job_id, seq, frame FROM events WHERE frame LIKE ? ORDER BY job_id, seq",
            (f'{{"type":"{EventType.THOUGHT_ADDED.value}"%',),
        ).fetchall()
        thoughts: dict[tuple[str, str], list[dict[str, str]]] = {}
        updates = []
        for job_id, seq, frame in rows:
            new = upgrade_frame(frame)
            if new != frame:
                updates.append((new, job_id, seq))
            obj = json.loads(new)
            data = obj["data"]
            thoughts.setdefault((job_id, obj.get("team", "")), []).append(
                {"id": data["id"], "text": data["text"], "timestamp": data["timestamp"]}
            )
        conn.executemany("UPDATE events SET frame = ? WHERE job_id = ? AND seq = ?", updates)
        snapshots = []
        for job_id, snapshot in conn.execute("SELECT job_id, snapshot FROM jobs").fetchall():
            job = json.loads(snapshot)
            if all(isinstance(t, dict) for run in job["teams"] for t in run["thoughts"]):
                continue
            for run in job["teams"]:
                run["thoughts"] = thoughts.get((job_id, run["team"]), [])
            snapshots.append(
                (json.dumps(job, ensure_ascii=False, separators=(",", ":")), job_id)
            )
        conn.executemany("UPDATE jobs SET snapshot = ? WHERE job_id = ?", snapshots)
        conn.execute("PRAGMA user_version = 1")
