"""One process's part in a cluster: fan-out and membership, wired to the server's actors.

The server builds the :class:`chimera.cluster.fanout.RedisFanout` first (the
broadcaster and the job manager are given it as their remote feed and cancel
relay), then this node with them and the server's
:class:`chimera.health.Health`, which the membership sets. It knows no gateway.

Lifecycle (driven by :class:`chimera.server.ChimeraServer`): :meth:`ClusterNode.join`
after the store opens and before anything is served (the lease exists before
the first job); :meth:`run` in the server's TaskGroup (it starts the fan-out
with its handler: the broadcaster and the job manager); :meth:`stop` once the
broadcaster has ended every subscription; :meth:`leave` (drops the lease) just
before the store closes.
"""

from __future__ import annotations

import asyncio

from chimera.actors.broadcaster import Broadcaster
from chimera.actors.jobs import NODE_LOST, JobManager
from chimera.cluster.fanout import FanoutHandler, RedisFanout
from chimera.cluster.membership import Membership
from chimera.health import Health
from chimera.store.redis import RedisStore


class ClusterNode:
    def __init__(
        self,
        store: RedisStore,
        fanout: RedisFanout,
        broadcaster: Broadcaster,
        jobs: JobManager,
        health: Health,
    ) -> None:
        self.store = store
        self.fanout = fanout
        self._handler = FanoutHandler(
            deliver=broadcaster.receive, gone=broadcaster.fail_removed_jobs,
            cancel=jobs.cancel_local,
        )

        async def recover() -> None:
            await jobs.recover(NODE_LOST)

        self.membership = Membership(
            store, recover=recover, health=health, data_lost=broadcaster.data_lost
        )
        self._stop = asyncio.Event()

    async def join(self) -> None:
        await self.membership.join()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            fanout = tg.create_task(self.fanout.run(self._handler), name="fanout")
            membership = tg.create_task(self.membership.run(), name="membership")
            await self._stop.wait()
            self.membership.stop()
            await membership
            await self.fanout.stopped(fanout)

    def stop(self) -> None:
        self._stop.set()

    async def leave(self) -> None:
        await self.membership.leave()
