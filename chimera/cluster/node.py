"""One process's part in a cluster: fan-out and membership, wired to the server's actors.

Lifecycle (driven by :class:`chimera.server.ChimeraServer`): :meth:`ClusterNode.join`
after the store opens and before anything is served (the lease exists before
the first job); :meth:`run` in the server's TaskGroup; :meth:`stop` once the
broadcaster has ended every subscription; :meth:`leave` (drops the lease) just
before the store closes.
"""

from __future__ import annotations

import asyncio

from chimera.actors.broadcaster import Broadcaster
from chimera.actors.jobs import NODE_LOST, JobManager
from chimera.cluster.fanout import RedisFanout
from chimera.cluster.membership import Membership
from chimera.gateways.grpc_gateway import GrpcGateway
from chimera.gateways.ws_gateway import WebSocketGateway
from chimera.store.redis import RedisStore


class ClusterNode:
    def __init__(
        self,
        store: RedisStore,
        broadcaster: Broadcaster,
        jobs: JobManager,
        grpc: GrpcGateway,
        ws: WebSocketGateway,
    ) -> None:
        self.store = store
        self.fanout = RedisFanout(
            store, broadcaster.receive, broadcaster.fail_removed_jobs, jobs.cancel_local
        )
        broadcaster.remote = self.fanout
        jobs.relay = self.fanout

        async def set_ready(ready: bool, reason: str) -> None:
            ws.ready = ready
            ws.unready_reason = reason
            await grpc.set_serving(ready)

        async def recover() -> None:
            await jobs.recover(NODE_LOST)

        self.membership = Membership(
            store, recover=recover, set_ready=set_ready, data_lost=broadcaster.data_lost
        )
        self._stop = asyncio.Event()

    async def join(self) -> None:
        await self.membership.join()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            fanout = tg.create_task(self.fanout.run(), name="fanout")
            membership = tg.create_task(self.membership.run(), name="membership")
            await self._stop.wait()
            self.membership.stop()
            await membership
            fanout.cancel()

    def stop(self) -> None:
        self._stop.set()

    async def leave(self) -> None:
        await self.membership.leave()
