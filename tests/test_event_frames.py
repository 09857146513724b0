"""An event's frame is UTF-8 bytes, encoded once: read back from the store it is
parsed only as far as replay needs, and the rest, parsed when asked for, is what a
full parse gives; the SQLite column stays TEXT, as the code before bytes wrote it
and reads it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson

from chimera.events import Draft, Event, JobState, TeamName, TeamStatus, utc_now
from chimera.job import Job, TeamRun
from chimera.store.sqlite import SQLiteStore

JOB = "frames-1"


def drafts() -> list[Draft]:
    a = TeamName.ANTHROPIC
    return [
        Draft.status(JOB, None, JobState.RUNNING.value),
        Draft.status(JOB, a, TeamStatus.THINKING.value, model="m"),
        Draft.thought(JOB, a, "héllo \"quoted\" ,\"seq\":3}"),
        Draft.code(JOB, a, "x = '✓'", "python", 3),
        Draft.error(JOB, a, "boom"),
        Draft.status(JOB, None, JobState.SUCCEEDED.value),
    ]


def same(read: Event, made: Event) -> None:
    assert read == made
    assert (read.type, read.is_final, read.size) == (made.type, made.is_final, made.size)
    assert (read.team, dict(read.data), read.timestamp) == (made.team, dict(made.data),
                                                            made.timestamp)
    assert read.job_state == made.job_state


def test_a_frame_read_back_is_the_event_that_was_made() -> None:
    for seq, draft in enumerate(drafts(), 1):
        made = Event.from_draft(draft, seq)
        assert orjson.loads(made.frame)["seq"] == seq
        same(Event.from_frame(made.frame, JOB, seq), made)  # as the stores read it
        same(Event.from_frame(made.frame, JOB), made)  # as pub/sub reads it
        same(Event.from_frame(made.frame), made)


def test_a_frame_laid_out_otherwise_is_parsed_in_full() -> None:
    made = Event.from_draft(Draft.status(JOB, None, JobState.FAILED.value), 7)
    spaced = orjson.dumps(orjson.loads(made.frame), option=orjson.OPT_INDENT_2)
    read = Event.from_frame(spaced, JOB, 7)
    assert read.is_final and read.seq == 7 and read.job_state is JobState.FAILED
    assert Event.from_frame(spaced, JOB).seq == 7


async def test_sqlite_keeps_frames_as_text_and_replays_them(tmp_path: Path) -> None:
    path = tmp_path / "frames.db"
    store = SQLiteStore(str(path))
    await store.open()
    try:
        now = utc_now()
        await store.create_job(Job(
            job_id=JOB, brief="b", teams={t: TeamRun(t) for t in TeamName},
            create_time=now, update_time=now,
        ))
        made = [Event.from_draft(d, seq) for seq, d in enumerate(drafts(), 1)]
        await store.append(made)
        read = await store.read_events(JOB, 0, 100)
        assert len(read) == len(made)
        for r, m in zip(read, made, strict=True):
            same(r, m)
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT typeof(frame), frame FROM events ORDER BY seq").fetchall()
    conn.close()
    # What the code before bytes reads: text, the same JSON.
    assert [kind for kind, _ in rows] == ["text"] * len(made)
    assert [text.encode() for _, text in rows] == [m.frame for m in made]
