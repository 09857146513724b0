"""Retention: removes finished jobs, with their events, once they are old enough.

Lifecycle: :meth:`Retention.run` sweeps at once, then every ``interval``
seconds, until :meth:`Retention.stop`; it is owned by the server's TaskGroup
and returns between sweeps, never in the middle of one (a sweep is one store
call per batch, so stopping waits for at most one batch). Cancelling ``run``
propagates at once; a batch already on the store's thread still completes,
atomically.

Only jobs that ended (``succeeded``, ``failed``, ``cancelled``) more than
``max_age`` seconds ago are removed; running jobs never are. Subscribers still
reading a removed job are ended with :class:`chimera.errors.HistoryGone`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from chimera.actors.broadcaster import Broadcaster
from chimera.errors import ChimeraError
from chimera.store.base import Store

log = logging.getLogger(__name__)

BATCH = 200  # jobs per commit, so a large sweep never holds the store's thread for long


class Retention:
    def __init__(
        self, store: Store, broadcaster: Broadcaster, *, max_age: float, interval: float
    ) -> None:
        if max_age <= 0 or interval <= 0:
            raise ValueError("retention max_age and interval must be positive")
        self._store = store
        self._broadcaster = broadcaster
        self._max_age = timedelta(seconds=max_age)
        self._interval = interval
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Asks :meth:`run` to return after the current sweep. Idempotent."""
        self._stop.set()

    async def sweep(self) -> list[str]:
        """Removes every job that ended before now - ``max_age``; returns their ids."""
        # Not utc_now(): a cutoff is compared, not recorded, so it keeps full precision.
        cutoff = datetime.now(UTC) - self._max_age
        removed: list[str] = []
        while True:
            batch = await self._store.remove_finished_before(cutoff, BATCH)
            self._broadcaster.fail_removed_jobs(batch)
            removed += batch
            if len(batch) < BATCH:
                break
        if removed:
            log.info("retention removed %d finished job(s) with their events", len(removed))
        return removed

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.sweep()
            except ChimeraError as exc:  # e.g. the disk is full: try again next time
                log.warning("retention sweep failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval)
