"""The embedded store: one SQLite file (or ``:memory:``), WAL mode.

All SQLite calls run on one dedicated thread, so the event loop never blocks
on disk and the connection is only ever used by the thread that made it.
Cancelling an awaiting caller does not interrupt a statement already running
on that thread; it completes, and its result is dropped.

One server per file: :meth:`SQLiteStore.open` takes an exclusive ``flock`` on
the database file (independent of SQLite's own POSIX locks) and holds it until
:meth:`SQLiteStore.close`; a second server on the same file refuses to start.
Then ``PRAGMA quick_check``: a damaged file is refused, not served with jobs
missing. Every sqlite error is translated here, at the one boundary
(:func:`storage_error`): a full disk is :class:`StorageFull`, anything else
:class:`StorageUnavailable`; at start-up, a :class:`ConfigError` saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from chimera.errors import (
    AlreadyExists,
    ChimeraError,
    ConfigError,
    EventsRejected,
    ShuttingDown,
    StorageFull,
    StorageUnavailable,
)
from chimera.events import (
    Event,
    EventType,
    JobState,
    TeamName,
    TeamStatus,
    check_utf8,
    iso_timestamp,
    parse_timestamp,
    upgrade_frame,
)
from chimera.job import LATEST_THOUGHTS, Job, TeamRun, changes, thought_of
from chimera.store.base import id_taken, not_utf8

T = TypeVar("T")

# Schema 2 (PRAGMA user_version = 2): a job is its row in ``jobs`` (the small
# parts: state, times, last sequence), one row per team in ``teams`` (status,
# code, counts) and its events; its thoughts are only in its ``thought_added``
# events (``events.thought`` names their team, so the latest ones are one index
# range). Schema 1 kept the whole job as JSON in ``jobs.snapshot``, rewritten
# on every batch: :func:`_migrate` converts such a file when it is opened.
# Schema 3: every ``thought_added`` frame has the guide's ``{id, text, timestamp,
# team}``; older frames (``{"thought": text}``) are rewritten with a derived id.
# Schema 4: ``teams.draft``, a team's code so far while it writes it (its
# ``code_delta`` events spliced; emptied once ``code`` holds the code).
SCHEMA_VERSION = 4
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- creation order, the ListJobs cursor
    job_id TEXT NOT NULL UNIQUE,
    request_id TEXT UNIQUE,                 -- NULL when the client gave none
    state TEXT NOT NULL,
    end_time TEXT,                          -- end_time_key(): microseconds, for retention
    snapshot TEXT NOT NULL DEFAULT '',      -- schema 1 only (the job as JSON); '' since
    owner TEXT NOT NULL DEFAULT '',         -- the creating token's sub
    brief TEXT NOT NULL DEFAULT '',
    create_time TEXT NOT NULL DEFAULT '',   -- iso_timestamp(), as the snapshot shows it
    update_time TEXT NOT NULL DEFAULT '',
    last_sequence INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_end_time ON jobs(end_time);  -- retention
CREATE TABLE IF NOT EXISTS teams (
    job_id TEXT NOT NULL,
    position INTEGER NOT NULL,              -- the order the job lists its teams in
    team TEXT NOT NULL,
    status TEXT NOT NULL,
    model TEXT NOT NULL,
    code TEXT NOT NULL,
    language TEXT NOT NULL,
    token_count INTEGER NOT NULL,
    error TEXT NOT NULL,
    thought_count INTEGER NOT NULL,
    draft TEXT NOT NULL DEFAULT '',         -- the code so far, until `code` holds it
    PRIMARY KEY (job_id, team)
) WITHOUT ROWID;
-- Ids of jobs retention removed: never given again, so a client resuming the
-- old job cannot be streamed a new, different one under the same id.
CREATE TABLE IF NOT EXISTS retired_ids (job_id TEXT PRIMARY KEY) WITHOUT ROWID;
-- One row, key 'epoch': a random id made when the file is new (Store.epoch), so a
-- position {seq, epoch} from another database file is told apart from this one's.
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    frame TEXT NOT NULL,                    -- the exact WebSocket text (bound as UTF-8 bytes)
    thought TEXT,                           -- the team of a thought_added event, else NULL
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
"""
# Columns added since schema 1 to the tables it already had.
_JOB_COLUMNS = {
    "owner": "TEXT NOT NULL DEFAULT ''",
    "brief": "TEXT NOT NULL DEFAULT ''",
    "create_time": "TEXT NOT NULL DEFAULT ''",
    "update_time": "TEXT NOT NULL DEFAULT ''",
    "last_sequence": "INTEGER NOT NULL DEFAULT 0",
}
_JOB_FIELDS = (
    "id, job_id, request_id, state, end_time, owner, brief, create_time, update_time, "
    "last_sequence"
)
_TEAM_FIELDS = "team, status, model, code, language, token_count, error, thought_count"
_TEAM_READ = _TEAM_FIELDS + ", draft"

def _event_rows(events: Sequence[Event]) -> list[tuple[Any, ...]]:
    """The ``events`` table's rows for ``events``."""
    return [
        (e.job_id, e.seq, e.frame,
         e.team.value if e.team is not None and e.type is EventType.THOUGHT_ADDED else None)
        for e in events
    ]


def _insert_events(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Adds :func:`_event_rows` to the ``events`` table, inside the caller's transaction.

    A frame is UTF-8 bytes, bound as they are and stored as TEXT (``CAST``: no
    decoding, the same column as ever); SQLite does not check UTF-8, so this
    does (:func:`check_utf8`: a frame that is not is its job's record error)."""
    for row in rows:
        check_utf8(row[2])
    conn.executemany(
        "INSERT INTO events (job_id, seq, frame, thought) VALUES (?, ?, CAST(? AS TEXT), ?)",
        rows,
    )


@dataclass(frozen=True, slots=True)
class _AppendRows:
    """The rows :meth:`SQLiteStore.append` writes for some events: plain values,
    O(size of the events), never the whole job again."""

    events: list[tuple[Any, ...]]
    jobs: list[tuple[Any, ...]]
    teams: list[tuple[Any, ...]]
    code: list[tuple[Any, ...]]
    drafts: list[tuple[Any, ...]]

    @classmethod
    def of(cls, events: Sequence[Event]) -> _AppendRows:
        rows = cls(_event_rows(events), [], [], [], [])
        for change in changes(events):
            rows.jobs.append((
                change.last_sequence, iso_timestamp(change.update_time),
                change.state.value if change.state else None, end_time_key(change.end_time),
                change.job_id,
            ))
            for team, t in change.teams.items():
                rows.teams.append((
                    t.status.value if t.status else None, t.model, t.error, t.thoughts_added,
                    change.job_id, team.value,
                ))
                if t.code is not None:
                    rows.code.append((*t.code, change.job_id, team.value))
                if t.draft is not None:
                    rows.drafts.append((*t.draft, change.job_id, team.value))
        return rows

    def write(self, conn: sqlite3.Connection) -> None:
        """Inside the caller's transaction."""
        _insert_events(conn, self.events)
        conn.executemany(
            "UPDATE jobs SET last_sequence = ?, update_time = ?,"
            " state = COALESCE(?, state), end_time = COALESCE(?, end_time)"
            " WHERE job_id = ?",
            self.jobs,
        )
        conn.executemany(
            "UPDATE teams SET status = COALESCE(?, status), model = COALESCE(?, model),"
            " error = COALESCE(?, error), thought_count = thought_count + ?"
            " WHERE job_id = ? AND team = ?",
            self.teams,
        )
        conn.executemany(
            "UPDATE teams SET code = ?, language = ?, token_count = ?"
            " WHERE job_id = ? AND team = ?",
            self.code,
        )
        # splice() in SQL: substr counts characters (code points), as offsets do.
        conn.executemany(
            "UPDATE teams SET draft = substr(draft, 1, ?) || ? WHERE job_id = ? AND team = ?",
            self.drafts,
        )


def end_time_key(moment: datetime | None) -> str | None:
    """``jobs.end_time``: UTC, always with microseconds, so text order is time order."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


class SQLiteStore:
    """:class:`chimera.store.base.Store` on SQLite.

    Writes are group commits: :meth:`append` gets a batch from the broadcaster;
    concurrent :meth:`create_job` calls queue up while one transaction is being
    written and go together in the next. A record that cannot be written (text
    that is not UTF-8, say) fails only its own caller (or job); the rest of its
    group is recorded.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chimera-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._closed = False
        # create_job calls waiting for the next group commit, and whether one is running.
        self._creates: list[
            tuple[Job, Sequence[Event], asyncio.Future[tuple[Job, bool]]]
        ] = []
        self._creating = False
        # The file's epoch (Store.epoch), read by open(): the same for as long as the
        # file lives, a new one for a new file (or an in-memory database).
        self.epoch = ""

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Runs ``fn`` on the store's thread (called there); sqlite errors translated."""
        assert self._conn is not None, "store is not open"
        try:
            return fn(self._conn)
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:  # a call racing the shutdown
            raise ShuttingDown("the server is shutting down")
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._run, fn
        )

    async def open(self) -> None:
        """Locks the file, connects, checks it and makes the schema.

        Raises :class:`ConfigError` with one clear sentence when it cannot.
        """
        def connect() -> None:
            try:
                self._lock_fd = _lock(self._path)
                conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
                try:
                    conn.execute("PRAGMA busy_timeout=5000")
                    _check_integrity(conn, self._path)
                    conn.execute("PRAGMA journal_mode=WAL")
                    # NORMAL is durable in WAL mode against process crashes (SIGKILL);
                    # only a power loss can drop the last commits.
                    conn.execute("PRAGMA synchronous=NORMAL")
                    conn.execute("PRAGMA foreign_keys=ON")
                    conn.executescript(_SCHEMA)
                    _migrate(conn)
                    epoch = _epoch(conn)
                except BaseException:
                    conn.close()
                    raise
            except (OSError, sqlite3.Error) as exc:
                self._unlock()
                raise ConfigError(f"cannot open the database {self._path!r}: {exc}") from exc
            except BaseException:
                self._unlock()
                raise
            self._conn = conn
            self.epoch = epoch

        await asyncio.get_running_loop().run_in_executor(self._executor, connect)

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    async def close(self) -> None:
        self._closed = True

        def disconnect() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._unlock()

        await asyncio.get_running_loop().run_in_executor(self._executor, disconnect)
        self._executor.shutdown(wait=True)

    records_opening = True

    async def create_job(self, job: Job, opening: Sequence[Event] = ()) -> tuple[Job, bool]:
        if self._closed:  # a call racing the shutdown
            raise ShuttingDown("the server is shutting down")
        created: asyncio.Future[tuple[Job, bool]] = asyncio.get_running_loop().create_future()
        self._creates.append((job, opening, created))
        if not self._creating:
            self._commit_creates()
        return await created

    def _commit_creates(self) -> None:
        """Writes every queued creation in one transaction; when it is done, the
        creations queued meanwhile go in the next (no task: a callback chain)."""
        batch, self._creates = self._creates, []
        self._creating = True
        jobs = [(job, opening) for job, opening, _ in batch]
        done = asyncio.get_running_loop().run_in_executor(
            self._executor, self._run, lambda conn: _insert_jobs(conn, jobs)
        )

        def resolve(done: asyncio.Future[list[tuple[Job, bool] | ChimeraError]]) -> None:
            self._creating = False
            error = done.exception() if not done.cancelled() else asyncio.CancelledError()
            for i, (_, _, created) in enumerate(batch):
                if created.done():  # the caller was cancelled: its job is recorded anyway
                    continue
                if error is not None:
                    created.set_exception(error)
                    continue
                result = done.result()[i]
                if isinstance(result, ChimeraError):
                    created.set_exception(result)
                else:
                    created.set_result(result)
            if self._creates:
                self._commit_creates()

        done.add_done_callback(resolve)

    async def get_job(self, job_id: str, thoughts: int | None = None) -> Job | None:
        def select(conn: sqlite3.Connection) -> Job | None:
            row = conn.execute(
                f"SELECT {_JOB_FIELDS} FROM jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
            return _read_job(conn, row, thoughts) if row else None

        return await self._call(select)

    async def list_jobs(
        self, limit: int, before: int | None, owner: str | None = None,
        thoughts: int | None = None,
    ) -> tuple[list[Job], int | None]:
        def select(conn: sqlite3.Connection) -> tuple[list[Job], int | None]:
            cursor_before = before if before is not None else 2**62
            if owner is None:
                rows = conn.execute(
                    f"SELECT {_JOB_FIELDS} FROM jobs WHERE id < ? ORDER BY id DESC LIMIT ?",
                    (cursor_before, limit + 1),
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_JOB_FIELDS} FROM jobs WHERE owner = ? AND id < ?"
                    " ORDER BY id DESC LIMIT ?",
                    (owner, cursor_before, limit + 1),
                ).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            cursor = rows[-1][0] if more else None
            return [_read_job(conn, r, thoughts) for r in rows], cursor

        return await self._call(select)

    async def append(self, events: Sequence[Event]) -> None:
        """One transaction for the batch (the group commit). If one job's records
        cannot be written (:func:`_is_record_error`), the batch is written again
        job by job, and only that job's events are refused
        (:class:`EventsRejected`): the other jobs' are recorded."""
        rows = _AppendRows.of(events)

        def write(conn: sqlite3.Connection) -> None:
            try:
                with conn:
                    conn.execute("BEGIN")
                    rows.write(conn)
                return
            except Exception as exc:
                if not _is_record_error(exc):
                    raise
            by_job: dict[str, list[Event]] = {}
            for event in events:
                by_job.setdefault(event.job_id, []).append(event)
            refused: dict[str, str] = {}
            with conn:
                conn.execute("BEGIN")
                for job_id, its in by_job.items():
                    conn.execute("SAVEPOINT one_job")
                    try:
                        _AppendRows.of(its).write(conn)
                    except Exception as exc:
                        if not _is_record_error(exc):
                            raise
                        conn.execute("ROLLBACK TO one_job")
                        refused[job_id] = str(record_error(exc))
                    conn.execute("RELEASE one_job")
            if refused:
                raise EventsRejected(refused)

        await self._call(write)

    async def read_events(self, job_id: str, after_seq: int, limit: int) -> list[Event]:
        def select(conn: sqlite3.Connection) -> list[Event]:
            # The frame's UTF-8 bytes as stored (no decoding), parsed only as far
            # as replay needs (Event.from_frame).
            rows = conn.execute(
                "SELECT seq, CAST(frame AS BLOB) FROM events"
                " WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (job_id, after_seq, limit),
            ).fetchall()
            return [Event.from_frame(frame, job_id, seq) for seq, frame in rows]

        return await self._call(select)

    async def unfinished_jobs(self) -> list[Job]:
        def select(conn: sqlite3.Connection) -> list[Job]:
            rows = conn.execute(
                f"SELECT {_JOB_FIELDS} FROM jobs WHERE state = ? ORDER BY id",
                (JobState.RUNNING.value,),
            ).fetchall()
            return [_read_job(conn, r, 0) for r in rows]

        return await self._call(select)

    async def remove_finished_before(self, cutoff: datetime, limit: int) -> list[str]:
        key = end_time_key(cutoff)

        def delete(conn: sqlite3.Connection) -> list[str]:
            with conn:  # one transaction: a job never loses its events without its row
                conn.execute("BEGIN")
                ids = [
                    (row[0],)
                    for row in conn.execute(
                        "SELECT job_id FROM jobs WHERE end_time IS NOT NULL AND end_time < ? "
                        "ORDER BY end_time LIMIT ?",
                        (key, limit),
                    )
                ]
                conn.executemany("DELETE FROM events WHERE job_id = ?", ids)
                conn.executemany("DELETE FROM teams WHERE job_id = ?", ids)
                conn.executemany("DELETE FROM jobs WHERE job_id = ?", ids)
                conn.executemany("INSERT OR IGNORE INTO retired_ids (job_id) VALUES (?)", ids)
            return [i for (i,) in ids]

        return await self._call(delete)


def request_key(owner: str, request_id: str) -> str:
    """``jobs.request_id``: the client's request id scoped to its caller, so one
    caller's id never answers (or reveals anything to) another."""
    return json.dumps([owner, request_id], ensure_ascii=False, separators=(",", ":"))


def request_id_of(key: str | None) -> str:
    """The client's request id from :func:`request_key` (or a bare one from before)."""
    if not key:
        return ""
    if key.startswith("["):
        with contextlib.suppress(ValueError):
            value = json.loads(key)
            if isinstance(value, list) and len(value) == 2:
                return str(value[1])
    return key


def _insert_jobs(
    conn: sqlite3.Connection, jobs: list[tuple[Job, Sequence[Event]]]
) -> list[tuple[Job, bool] | ChimeraError]:
    """Records ``jobs`` (each with its opening events) in one transaction; per job,
    what ``create_job`` answers.

    Each job is written under a savepoint of its own: one that cannot be recorded
    (:func:`_is_record_error`, e.g. text that is not UTF-8) is undone alone and
    gets its own error, and the others of the group commit go on. A failure of
    the store itself (disk full, I/O) still fails the whole transaction.
    """
    results: list[tuple[Job, bool] | ChimeraError] = []
    with conn:
        conn.execute("BEGIN")
        for job, opening in jobs:
            conn.execute("SAVEPOINT one_job")
            try:
                results.append(_insert_job(conn, job, opening))
            except Exception as exc:
                if not _is_record_error(exc):
                    raise  # the whole transaction is rolled back (its savepoint with it)
                conn.execute("ROLLBACK TO one_job")
                results.append(record_error(exc))
            conn.execute("RELEASE one_job")
    return results


def _insert_job(
    conn: sqlite3.Connection, job: Job, opening: Sequence[Event] = ()
) -> tuple[Job, bool] | AlreadyExists:
    """One job of :func:`_insert_jobs`: ``(job, True)``, the job an earlier request
    with its ``request_id`` made, or :class:`AlreadyExists`. A new job's row holds
    what its ``opening`` events did already; only their own rows are added."""
    if job.request_id:
        # Scoped to its caller (stored as request_key()); files from before
        # that hold the bare id, matched with the owner.
        row = conn.execute(
            f"SELECT {_JOB_FIELDS} FROM jobs WHERE request_id = ?"
            " OR (request_id = ? AND owner = ?)",
            (request_key(job.owner, job.request_id), job.request_id, job.owner),
        ).fetchone()
        if row is not None:
            return _read_job(conn, row, LATEST_THOUGHTS), False
    taken = id_taken(job.job_id)
    if conn.execute("SELECT 1 FROM retired_ids WHERE job_id = ?", (job.job_id,)).fetchone():
        return taken
    try:
        # A failed INSERT undoes only itself, not the others in the transaction.
        conn.execute(
            "INSERT INTO jobs (job_id, request_id, state, end_time, snapshot, owner,"
            " brief, create_time, update_time, last_sequence)"
            " VALUES (?, ?, ?, ?, '', ?, ?, ?, ?, ?)",
            (job.job_id,
             request_key(job.owner, job.request_id) if job.request_id else None,
             job.state.value,
             end_time_key(job.end_time), job.owner, job.brief,
             iso_timestamp(job.create_time), iso_timestamp(job.update_time),
             job.last_sequence),
        )
    except sqlite3.IntegrityError as exc:
        # The same answer whoever holds the id, and for a retired one: a
        # caller learns only that this id is not available.
        taken.__cause__ = exc
        return taken
    _insert_teams(conn, job)
    if opening:
        _insert_events(conn, _event_rows(opening))
    return job, True


def _is_record_error(exc: Exception) -> bool:
    """Whether ``exc`` is about one record (its values cannot be bound or
    stored), not about the store: text that is not UTF-8 (``UnicodeEncodeError``
    when sqlite3 binds it), a number out of range, a value of a type it cannot
    store, a constraint. Anything else sqlite raises (disk full, I/O, a locked or
    damaged file) concerns every record of the transaction."""
    if isinstance(exc, sqlite3.Error):
        return isinstance(
            exc, (sqlite3.InterfaceError, sqlite3.DataError, sqlite3.IntegrityError,
                  sqlite3.ProgrammingError)
        )
    return True


def record_error(exc: Exception) -> ChimeraError:
    """The Chimera error for a record the store could not write (its caller's alone)."""
    if isinstance(exc, UnicodeError):
        return not_utf8(exc)
    if isinstance(exc, sqlite3.Error):
        return storage_error(exc)
    return StorageUnavailable(
        f"the server's storage could not record this ({type(exc).__name__}: {exc})"
    )


def _insert_teams(conn: sqlite3.Connection, job: Job) -> None:
    conn.executemany(
        f"INSERT INTO teams (job_id, position, {_TEAM_FIELDS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (job.job_id, i, run.team.value, run.status.value, run.model, run.code,
             run.language, run.token_count, run.error, run.thought_count)
            for i, run in enumerate(job.teams.values())
        ],
    )


def _read_job(conn: sqlite3.Connection, row: Sequence[Any], thoughts: int | None) -> Job:
    """The job of a ``jobs`` row (``_JOB_FIELDS``), with its teams and at most
    ``thoughts`` of each team's latest thoughts (all when ``None``)."""
    _, job_id, key, state, end_time, owner, brief, created, updated, last_seq = row
    request_id = request_id_of(key)
    teams = {}
    for team, status, model, code, language, tokens, error, count, draft in conn.execute(
        f"SELECT {_TEAM_READ} FROM teams WHERE job_id = ? ORDER BY position", (job_id,)
    ):
        name = TeamName(team)
        teams[name] = TeamRun(
            name, TeamStatus(status), model, [], code, language, tokens, error, count,
            code or draft,
        )
    if thoughts is None:
        for team, frame in conn.execute(
            "SELECT thought, frame FROM events WHERE job_id = ? AND thought IS NOT NULL"
            " ORDER BY seq",
            (job_id,),
        ):
            run = teams.get(TeamName(team))
            if run is not None:
                run.thoughts.append(thought_of(json.loads(frame)["data"]))
    elif thoughts > 0:
        for name, run in teams.items():
            frames = conn.execute(
                "SELECT frame FROM events WHERE job_id = ? AND thought = ?"
                " ORDER BY seq DESC LIMIT ?",
                (job_id, name.value, thoughts),
            ).fetchall()
            run.thoughts = [thought_of(json.loads(f)["data"]) for (f,) in reversed(frames)]
    return Job(
        job_id=job_id,
        brief=brief,
        teams=teams,
        create_time=parse_timestamp(created),
        update_time=parse_timestamp(updated),
        state=JobState(state),
        # The column keeps microseconds (for retention); the snapshot shows milliseconds.
        end_time=parse_timestamp(iso_timestamp(parse_timestamp(end_time))) if end_time else None,
        last_sequence=last_seq,
        request_id=request_id or "",
        owner=owner,
    )


def _migrate(conn: sqlite3.Connection) -> None:
    """Brings a file written by an older Chimera to :data:`SCHEMA_VERSION`, in one
    transaction: adds the columns it lacks, splits each schema-1 snapshot into the
    job's row and its teams' rows (its thoughts are already its events), marks
    the thought events and gives old thoughts their ids (schema 3)."""
    with conn:
        conn.execute("BEGIN")
        for table, added in (
            ("jobs", _JOB_COLUMNS), ("events", {"thought": "TEXT"}),
            ("teams", {"draft": "TEXT NOT NULL DEFAULT ''"}),
        ):
            have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            for column, kind in added.items():
                if column not in have:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version < 2:
            for job_id, snapshot in conn.execute(
                "SELECT job_id, snapshot FROM jobs WHERE snapshot != ''"
            ).fetchall():
                job = Job.from_json(snapshot)
                conn.execute(
                    "UPDATE jobs SET brief = ?, create_time = ?, update_time = ?,"
                    " last_sequence = ?, snapshot = '' WHERE job_id = ?",
                    (job.brief, iso_timestamp(job.create_time), iso_timestamp(job.update_time),
                     job.last_sequence, job_id),
                )
                conn.execute("DELETE FROM teams WHERE job_id = ?", (job_id,))
                _insert_teams(conn, job)
            conn.execute(
                "UPDATE events SET thought = json_extract(frame, '$.team')"
                " WHERE thought IS NULL AND json_extract(frame, '$.type') = 'thought_added'"
            )
        if version < 3:
            # Thoughts from before they had ids get one derived from their job id
            # and seq: the same on every read, in every replay and snapshot.
            conn.create_function("chimera_upgrade_frame", 1, upgrade_frame, deterministic=True)
            conn.execute(
                "UPDATE events SET frame = chimera_upgrade_frame(frame)"
                " WHERE thought IS NOT NULL AND json_extract(frame, '$.data.id') IS NULL"
            )
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner, id)")
        # The latest thoughts of a team: one range of this index.
        conn.execute(
            "CREATE INDEX IF NOT EXISTS events_thoughts ON events(job_id, thought, seq)"
            " WHERE thought IS NOT NULL"
        )


def _epoch(conn: sqlite3.Connection) -> str:
    """The file's epoch, made on its first open (a new file; or one written before
    epochs existed, whose positions had none) and the same on every later open."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
    if row is None:
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', ?)", (secrets.token_hex(8),)
        )
        row = conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
    return str(row[0])


def storage_error(exc: sqlite3.Error) -> ChimeraError:
    """The Chimera error for a failed sqlite call (what clients and jobs are told)."""
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return StorageFull(
            "the server's storage is full (database or disk is full): nothing new can be "
            "recorded until space is freed; reads still work, try again later"
        )
    return StorageUnavailable(f"the server's storage failed ({exc}): try again later")


def _lock(path: str) -> int | None:
    """An exclusive lock on the database file for this process's life (None for
    an in-memory or temporary database); refuses if another server holds it."""
    if path in ("", ":memory:") or path.startswith("file:"):
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(
            f"the database {path!r} is in use by another Chimera server: stop that one, "
            "or give this one its own --db"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_integrity(conn: sqlite3.Connection, path: str) -> None:
    """``PRAGMA quick_check``: refuses a damaged file rather than serve it with jobs missing."""
    try:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
    except sqlite3.DatabaseError as exc:
        if exc.sqlite_errorcode not in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            raise
        problems = [str(exc)]
    if problems != ["ok"]:
        raise ConfigError(
            f"the database {path!r} is damaged (quick_check: {'; '.join(problems)[:300]}): "
            "restore it from a backup, or try `sqlite3 FILE .recover`"
        )
