"""This process's membership of the cluster: its lease, the node-loss watchdog, health.

Every ``interval`` seconds, while :meth:`Membership.run` runs:

1. (from a thread of its own, :mod:`chimera.cluster.lease`, so that a saturated
   loop does not lose it) the process's lease (``chimera:node:{node}``, expiring
   after ``ttl``) is renewed; a process that dies stops renewing, and its lease
   expires;
2. checks the data set's epoch: if Redis lost its data (FLUSHALL, a restart
   without persistence), every subscriber here is told history is gone;
3. runs the job manager's recovery, which takes over (atomically, in exactly
   one survivor) each running job whose process's lease has expired and ends it
   ``failed`` with ``interrupted: node lost``.

So a lost process's jobs are closed within ``ttl + interval`` seconds (plus a
round trip). While Redis cannot be reached the process reports itself not
ready (gRPC health NOT_SERVING, ``/readyz`` 503) and keeps trying.

Lifecycle: :meth:`join` once before serving (so no job is created without a
lease), :meth:`run` until :meth:`stop`, :meth:`leave` at the end of shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from chimera.cluster.lease import LeaseKeeper
from chimera.errors import ChimeraError
from chimera.store.redis import UNREACHABLE, RedisStore

log = logging.getLogger(__name__)

LEASE_TTL = 3.0
INTERVAL = 1.0


class Membership:
    def __init__(
        self,
        store: RedisStore,
        *,
        recover: Callable[[], Awaitable[object]],
        set_ready: Callable[[bool], Awaitable[None]],
        data_lost: Callable[[], None],
        ttl: float = LEASE_TTL,
        interval: float = INTERVAL,
    ) -> None:
        self._store = store
        self._recover = recover
        self._set_ready = set_ready
        self._data_lost = data_lost
        self._ttl = ttl
        self._interval = interval
        self._stop = asyncio.Event()
        self.lease = LeaseKeeper(store.url, store.node, ttl=ttl, interval=interval)
        self.ready = True

    async def join(self) -> None:
        await self._store.renew_lease(self._ttl)
        log.info("cluster node %s joined (lease %g s)", self._store.node, self._ttl)

    def stop(self) -> None:
        self._stop.set()

    async def leave(self) -> None:
        with contextlib.suppress(ChimeraError):
            await self._store.drop_lease()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.lease.run(), name="lease")
            try:
                while not self._stop.is_set():
                    await self.tick()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), self._interval)
            finally:
                # The lease thread ends before leave() drops the lease: no renewal after.
                self.lease.stop()

    async def tick(self) -> None:
        try:
            epoch = self._store.epoch
            if await self._store.refresh_epoch() != epoch or self._store.data_lost:
                self._store.data_lost = False
                log.error("Redis lost its data (epoch changed): history before now is gone")
                self._data_lost()
            await self._recover()
        except (ChimeraError, *UNREACHABLE) as exc:
            if self.ready:
                log.error("Redis unreachable: not ready until it is back (%s)", exc)
                self.ready = False
                await self._set_ready(False)
            return
        if not self.ready:
            log.info("Redis reachable again: ready")
            self.ready = True
            await self._set_ready(True)
