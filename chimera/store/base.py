"""The store interface: jobs and their event logs.

The embedded default is :class:`chimera.store.sqlite.SQLiteStore`; anything that
implements :class:`Store` (Redis, later) can take its place.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from chimera.events import Event
from chimera.job import Job


class Store(Protocol):
    async def open(self) -> None:
        """Prepares the store (schema, pragmas). Called once before anything else."""
        ...

    async def close(self) -> None:
        """Flushes and releases the store. Nothing may be called afterwards."""
        ...

    async def create_job(self, job: Job) -> tuple[Job, bool]:
        """Inserts ``job``; returns ``(job, True)``.

        If ``job.request_id`` was already used, returns ``(existing, False)``.
        Raises :class:`chimera.errors.AlreadyExists` if the job id is taken.
        """
        ...

    async def get_job(self, job_id: str) -> Job | None: ...

    async def list_jobs(
        self, limit: int, before: int | None, owner: str | None = None
    ) -> tuple[list[Job], int | None]:
        """Jobs newest first, at most ``limit``, older than cursor ``before``;
        only those ``owner`` created when it is given.

        Returns the jobs and the cursor of the next page (``None`` on the last page).
        """
        ...

    async def append(self, events: Sequence[Event], snapshots: Sequence[Job]) -> None:
        """Records events and the jobs' new snapshots atomically (one commit)."""
        ...

    async def read_events(self, job_id: str, after_seq: int, limit: int) -> list[Event]:
        """Events of ``job_id`` with ``seq > after_seq``, in order, at most ``limit``."""
        ...

    async def unfinished_jobs(self) -> list[Job]:
        """Jobs recorded as running (after a crash, these were interrupted)."""
        ...

    async def remove_finished_before(self, cutoff: datetime, limit: int) -> list[str]:
        """Removes at most ``limit`` finished jobs that ended before ``cutoff``, with
        their events, in one commit; returns their ids (retention)."""
        ...
