"""This process's membership of the cluster: its lease, the node-loss watchdog, health.

Every ``interval`` seconds, while :meth:`Membership.run` runs:

1. (from a thread of its own, :mod:`chimera.cluster.lease`, so that a saturated
   loop does not lose it) the process's lease (``chimera:node:{node}``, expiring
   after ``ttl``) is renewed; a process that dies stops renewing, and its lease
   expires;
2. checks the data set's epoch: if Redis lost its data (FLUSHALL, a restart
   without persistence), the subscribers here of every job from before are told
   history is gone (whoever noticed the loss first: a write, a read, this check);
3. writes the lease from the loop too: the proof that Redis takes writes (out of
   memory and read-only refuse it), then reads which nodes hold running jobs but
   no lease;
4. judges which of those are lost (:mod:`chimera.cluster.liveness`: only after
   this process has been connected for a full lease period, and a lease missing
   for a full period), and runs the job manager's recovery, which takes over
   (atomically, in exactly one survivor) each running job of a lost node and ends
   it ``failed`` with ``interrupted: node lost``, and closes this process's own
   jobs whose events could not be written, saying why.

A check that fails, or takes longer than ``slow`` (Redis paused), counts as this
process being cut off. While Redis cannot be used (unreachable, out of memory,
read-only) the process reports itself not ready (it sets the server's
:class:`chimera.health.Health`, which the gateways follow: gRPC health
NOT_SERVING, ``/readyz`` 503, saying why) and keeps trying; no Redis error ends
the process.

Lifecycle: :meth:`join` once before serving (so no job is created without a
lease), :meth:`run` until :meth:`stop`, :meth:`leave` at the end of shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from chimera.cluster.lease import LeaseKeeper
from chimera.cluster.liveness import Liveness
from chimera.errors import ChimeraError
from chimera.health import Health
from chimera.store.redis import RedisStore

log = logging.getLogger(__name__)

LEASE_TTL = 3.0
INTERVAL = 1.0
# A check slower than this was held up (Redis paused, DEBUG SLEEP, this loop
# starved): what it saw is no ground to judge others on. A hold-up shorter than it
# cannot make a live node look lost anyway: a lease must be missing for a full ttl.
SLOW_CHECK = 2.0


class Membership:
    def __init__(
        self,
        store: RedisStore,
        *,
        recover: Callable[[], Awaitable[object]],
        health: Health,
        data_lost: Callable[[], None],
        ttl: float = LEASE_TTL,
        interval: float = INTERVAL,
        slow: float = SLOW_CHECK,
    ) -> None:
        self._store = store
        self._recover = recover
        self._health = health
        self._data_lost = data_lost
        self._ttl = ttl
        self._interval = interval
        self._slow = slow
        self._liveness = Liveness(ttl)
        self._stop = asyncio.Event()
        self.lease = LeaseKeeper(store.url, store.node, ttl=ttl, interval=interval)
        self.ready = True
        self._unready = ""  # why not, while not ready (what /readyz says)

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
        started = time.monotonic()
        try:
            await self._store.refresh_epoch()
            if self._store.take_data_lost():
                self._data_lost()
            await self._store.renew_lease(self._ttl)
            lapsed = await self._store.lapsed_nodes()
            now = time.monotonic()
            if now - started > self._slow:
                log.warning("Redis answered this check after %.1f s: judging no node "
                            "until it has answered promptly for %g s", now - started,
                            self._ttl)
                self._liveness.cut_off()
                lost = frozenset[str]()
            else:
                lost = self._liveness.judge(now, lapsed)
            self._store.judge_lost(lost)
            await self._recover()
        except ChimeraError as exc:  # the store translates every Redis error
            self._liveness.cut_off()
            self._store.judge_lost(frozenset())
            if self.ready or str(exc) != self._unready:  # e.g. unreachable, then full
                log.error("Redis cannot be used: not ready until it can (%s)", exc)
                self.ready, self._unready = False, str(exc)
                await self._health.set(False, self._unready)
            return
        if not self.ready:
            log.info("Redis usable again: ready")
            self.ready, self._unready = True, ""
            await self._health.set(True)
