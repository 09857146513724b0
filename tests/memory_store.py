"""A real :class:`chimera.store.base.Store`, in memory, for driving the actors without I/O.

Like httpx's ``MockTransport``: not a mock of calls, but a small complete
implementation of the interface (jobs, their event logs, request ids scoped to
their owner, retention, the epoch), so the broadcaster and the job manager run
against it exactly as against SQLite. What a test needs on top are two hooks on
:meth:`MemoryStore.append`, the one write the broadcaster makes per batch:

- ``hold``: an :class:`asyncio.Event` the next appends wait on before recording
  anything (``appending`` is set once one is waiting), so a test can look at the
  world while a write is in flight, then release it; ``hold_recorded`` the same,
  after recording and before returning (SQLite's commit is done in its thread,
  its result not yet back on the loop: readers see the events, the broadcaster
  does not know yet);
- ``fail``: an error each append raises, recording nothing, until it is reset to
  ``None`` (a disk that is full, then has room again); ``failed`` is set at each
  refusal.

Each successful append's sequence numbers are kept in ``commits``, one list per
call, so a test can see how events were batched.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import datetime

from chimera.errors import AlreadyExists, ChimeraError, EventsRejected
from chimera.events import Event
from chimera.job import Job


class MemoryStore:
    """Jobs and their event logs in dictionaries; every method as the protocol says."""

    def __init__(self) -> None:
        self.epoch = ""
        self.hold: asyncio.Event | None = None
        self.hold_recorded: asyncio.Event | None = None
        self.appending = asyncio.Event()  # set while an append waits on a hold
        self.fail: ChimeraError | None = None
        self.failed = asyncio.Event()
        self.commits: list[list[tuple[str, int]]] = []
        self._jobs: dict[str, Job] = {}  # kept as written: thoughts are in the events
        self._order: dict[str, int] = {}  # job id -> insertion number (the list cursor)
        self._events: dict[str, list[bytes]] = {}  # job id -> frames, in seq order
        self._requests: dict[tuple[str, str], str] = {}  # (owner, request_id) -> job id
        self._retired: set[str] = set()
        self._next = 1
        self._closed = False

    async def open(self) -> None:
        self.epoch = uuid.uuid4().hex

    async def close(self) -> None:
        self._closed = True

    records_opening = False  # the actors announce a job's first events themselves

    async def create_job(self, job: Job, opening: Sequence[Event] = ()) -> tuple[Job, bool]:
        assert not opening, "MemoryStore records no opening events"
        self._check_open()
        if job.request_id:
            existing = self._requests.get((job.owner, job.request_id))
            if existing is not None:
                found = await self.get_job(existing, thoughts=20)
                assert found is not None
                return found, False
        if job.job_id in self._jobs or job.job_id in self._retired:
            raise AlreadyExists(f"job {job.job_id!r} already exists")
        self._jobs[job.job_id] = _copy(job)
        self._order[job.job_id] = self._next
        self._next += 1
        self._events[job.job_id] = []
        if job.request_id:
            self._requests[(job.owner, job.request_id)] = job.job_id
        return _copy(job), True

    async def get_job(self, job_id: str, thoughts: int | None = None) -> Job | None:
        self._check_open()
        stored = self._jobs.get(job_id)
        if stored is None:
            return None
        job = _copy(stored)
        for frame in self._events[job_id]:
            job.apply(Event.from_frame(frame))
        if thoughts is not None:
            for run in job.teams.values():
                run.thoughts = run.thoughts[-thoughts:] if thoughts else []
        return job

    async def list_jobs(
        self, limit: int, before: int | None, owner: str | None = None,
        thoughts: int | None = None,
    ) -> tuple[list[Job], int | None]:
        self._check_open()
        ids = sorted(
            (
                job_id for job_id, number in self._order.items()
                if (before is None or number < before)
                and (owner is None or self._jobs[job_id].owner == owner)
            ),
            key=self._order.__getitem__, reverse=True,
        )
        page = ids[:limit]
        jobs = [job for job_id in page if (job := await self.get_job(job_id, thoughts))]
        cursor = self._order[page[-1]] if len(ids) > limit else None
        return jobs, cursor

    async def append(self, events: Sequence[Event]) -> None:
        self._check_open()
        await self._wait(self.hold)
        if self.fail is not None:
            self.failed.set()
            raise self.fail
        unknown = {e.job_id: "no such job" for e in events if e.job_id not in self._jobs}
        for event in events:
            if event.job_id not in unknown:
                self._events[event.job_id].append(event.frame)
        self.commits.append([(e.job_id, e.seq) for e in events if e.job_id not in unknown])
        await self._wait(self.hold_recorded)
        if unknown:
            raise EventsRejected(unknown)

    async def _wait(self, hold: asyncio.Event | None) -> None:
        if hold is not None and not hold.is_set():
            self.appending.set()
            try:
                await hold.wait()
            finally:
                self.appending.clear()

    async def read_events(self, job_id: str, after_seq: int, limit: int) -> list[Event]:
        self._check_open()
        frames = self._events.get(job_id, [])
        events = [Event.from_frame(f, job_id) for f in frames]
        return [e for e in events if e.seq > after_seq][:limit]

    async def unfinished_jobs(self) -> list[Job]:
        jobs = [await self.get_job(job_id, thoughts=0) for job_id in self._order]
        return [job for job in jobs if job is not None and not job.finished]

    async def remove_finished_before(self, cutoff: datetime, limit: int) -> list[str]:
        ended = []
        for job_id in self._order:
            job = await self.get_job(job_id, thoughts=0)
            if job is not None and job.end_time is not None and job.end_time < cutoff:
                ended.append((job.end_time, job_id))
        removed = [job_id for _, job_id in sorted(ended)[:limit]]
        for job_id in removed:
            del self._jobs[job_id], self._order[job_id], self._events[job_id]
            self._retired.add(job_id)
        return removed

    # -- for tests: what was recorded ---------------------------------------------------

    def seqs(self, job_id: str) -> list[int]:
        """The sequence numbers recorded for ``job_id``, in the order they were written."""
        return [Event.from_frame(f).seq for f in self._events.get(job_id, [])]

    def _check_open(self) -> None:
        assert self.epoch, "open() the store first"
        assert not self._closed, "the store is closed"


def _copy(job: Job) -> Job:
    return Job.from_json(job.to_json())
