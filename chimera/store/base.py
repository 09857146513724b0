"""The store interface: jobs and their event logs.

The embedded default is :class:`chimera.store.sqlite.SQLiteStore`; anything that
implements :class:`Store` (Redis, later) can take its place.

What a store keeps of a job: its record (id, brief, owner, request_id, times),
the small parts its events change (:func:`chimera.job.changes`: state, last
sequence, each team's status, model, code, error and thought count) and its
event log. Thoughts are kept once, as their ``thought_added`` events; a job read
back gets them from there (as many as asked for). Recording an event therefore
costs the same whatever the job's length.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from chimera.errors import AlreadyExists, InvalidArgument
from chimera.events import Event
from chimera.job import Job


class Store(Protocol):
    #: The id of the store's current lifetime (a stream position is ``{seq, epoch}``,
    #: as Centrifugo's ``StreamPosition{offset, epoch}``): it changes when the data
    #: set is new or was lost (Redis flushed or restarted empty; a new SQLite file),
    #: after which a job id may name a different job. Set by :meth:`open`; a store
    #: whose data can be lost while it runs (Redis) updates it when it notices.
    epoch: str

    async def open(self) -> None:
        """Prepares the store (schema, pragmas). Called once before anything else."""
        ...

    async def close(self) -> None:
        """Flushes and releases the store. Nothing may be called afterwards."""
        ...

    #: Whether :meth:`create_job` records a new job's opening events with it.
    records_opening: bool

    async def create_job(self, job: Job, opening: Sequence[Event] = ()) -> tuple[Job, bool]:
        """Inserts ``job``, durably before returning; returns ``(job, True)``.

        ``opening``: the job's first events (seq 1 on, already folded into ``job``),
        recorded in the same transaction, so a job created alone costs one commit,
        not one for its record and another for its first events. Only a store whose
        :attr:`records_opening` is true is given any; the others record a job with
        no events yet.

        If ``job.request_id`` was already used by the same ``job.owner`` (request ids
        are scoped to their owner), returns ``(existing, False)``, the existing job
        read as ``get_job(id, LATEST_THOUGHTS)`` does.
        Raises :class:`chimera.errors.AlreadyExists` if the job id is taken, or was
        used by a job retention removed (ids are never reused), with the same
        message either way (:func:`id_taken`).
        """
        ...

    async def get_job(self, job_id: str, thoughts: int | None = None) -> Job | None:
        """The job as :meth:`chimera.job.Job.apply` folds its events, with only the
        latest ``thoughts`` thoughts of each team (all when ``None``); each team's
        ``thought_count`` is always the total."""
        ...

    async def list_jobs(
        self, limit: int, before: int | None, owner: str | None = None,
        thoughts: int | None = None,
    ) -> tuple[list[Job], int | None]:
        """Jobs newest first, at most ``limit``, older than cursor ``before``;
        only those ``owner`` created when it is given; ``thoughts`` as in :meth:`get_job`.

        Returns the jobs and the cursor of the next page (``None`` on the last page).
        """
        ...

    async def append(self, events: Sequence[Event]) -> None:
        """Records ``events`` (numbered in order, for jobs already created) and the
        changes they make to their jobs (:func:`chimera.job.changes`) atomically.

        Costs O(size of the events): never the whole job again. Calls do not
        overlap: the broadcaster awaits one before the next.
        """
        ...

    async def read_events(self, job_id: str, after_seq: int, limit: int) -> list[Event]:
        """Events of ``job_id`` with ``seq > after_seq``, in order, at most ``limit``."""
        ...

    async def unfinished_jobs(self) -> list[Job]:
        """Jobs recorded as running (after a crash, these were interrupted), without
        their thoughts (``thought_count`` is set)."""
        ...

    async def remove_finished_before(self, cutoff: datetime, limit: int) -> list[str]:
        """Removes at most ``limit`` finished jobs that ended before ``cutoff``, with
        their events, in one commit; returns their ids (retention)."""
        ...


# What every store says, whichever it is.


def id_taken(job_id: str) -> AlreadyExists:
    """The refusal of a job id that is taken or was used before (retention removed its job)."""
    return AlreadyExists(
        f"job_id {job_id!r} is not available (taken or used before); "
        "choose another or leave it empty"
    )


def not_utf8(exc: UnicodeError) -> InvalidArgument:
    """The refusal of a job's events whose text is not UTF-8."""
    return InvalidArgument(
        f"the job's text cannot be recorded, it is not valid UTF-8 ({exc}): send UTF-8"
    )
