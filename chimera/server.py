"""The Chimera server: the store, the actors and both gateways, started and stopped in order.

:meth:`ChimeraServer.serve` is the top frame of a server; it returns after
:meth:`ChimeraServer.stop` once everything has shut down, in this order:

1. gRPC health goes NOT_SERVING, so balancers stop sending calls.
2. Retention stops sweeping. The job manager refuses new jobs and interrupts
   the running ones; each supervisor stops its teams and publishes its final
   event (job ``failed``, teams ``interrupted: server stopped``).
3. The broadcaster records and delivers everything published so far, then ends
   every subscription (WebSocket close 1001, gRPC UNAVAILABLE).
4. The WebSocket server closes its connections; the gRPC server stops, giving
   in-flight calls ``shutdown_grace`` seconds.
5. The store closes, last, since nothing writes to it any more.
"""

from __future__ import annotations

import asyncio
import logging

from chimera.actors.broadcaster import Broadcaster
from chimera.actors.jobs import JobManager, ProviderFactory
from chimera.actors.retention import Retention
from chimera.config import ServerConfig
from chimera.events import TeamName
from chimera.gateways.grpc_gateway import GrpcGateway
from chimera.gateways.ws_gateway import WebSocketGateway
from chimera.providers.base import Provider
from chimera.providers.simulated import SimulatedProvider
from chimera.store.base import Store
from chimera.store.sqlite import SQLiteStore

log = logging.getLogger(__name__)


def simulated_providers(config: ServerConfig) -> ProviderFactory:
    def make(team: TeamName) -> Provider:
        fail = f"simulated failure of the {team.value} team" if team in config.sim_fail else None
        return SimulatedProvider(team.value, delay=config.sim_delay, fail_with=fail)

    return make


class ChimeraServer:
    def __init__(
        self,
        config: ServerConfig,
        *,
        providers: ProviderFactory | None = None,
        store: Store | None = None,
    ) -> None:
        self.config = config
        self.store: Store = store if store is not None else SQLiteStore(config.db)
        self.broadcaster = Broadcaster(
            self.store, subscriber_max_bytes=config.subscriber_max_bytes
        )
        self.jobs = JobManager(
            self.store,
            self.broadcaster,
            providers or simulated_providers(config),
            max_brief_chars=config.max_brief_chars,
            job_deadline=config.job_deadline,
        )
        self.retention = (
            Retention(
                self.store, self.broadcaster,
                max_age=config.retention, interval=config.retention_interval,
            )
            if config.retention is not None
            else None
        )
        self.grpc = GrpcGateway(self.jobs, self.broadcaster)
        self.ws = WebSocketGateway(self.jobs, self.broadcaster)
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()

    @property
    def grpc_port(self) -> int:
        return self.grpc.port

    @property
    def ws_port(self) -> int:
        return self.ws.port

    def stop(self) -> None:
        """Starts the shutdown; :meth:`serve` returns when it is complete. Idempotent."""
        self._stop.set()

    async def serve(self) -> None:
        """Runs the server until :meth:`stop` (see the module docstring for the order)."""
        await self.store.open()
        try:
            async with asyncio.TaskGroup() as tg:
                broadcaster = tg.create_task(self.broadcaster.run(), name="broadcaster")
                await self.jobs.recover()
                jobs = tg.create_task(self.jobs.run(), name="jobs")
                if self.retention is not None:
                    tg.create_task(self.retention.run(), name="retention")
                await self.grpc.start(self.config.host, self.config.grpc_port)
                await self.ws.start(self.config.host, self.config.ws_port)
                log.info(
                    "serving gRPC on %s:%d and WebSocket on %s:%d",
                    self.config.host, self.grpc_port, self.config.host, self.ws_port,
                )
                self.ready.set()
                await self._stop.wait()
                log.info("shutting down")
                await self.grpc.enter_shutdown()  # 1
                if self.retention is not None:
                    self.retention.stop()  # 2
                self.jobs.stop()
                await jobs
                await self.broadcaster.stop()  # 3
                await broadcaster
                await self.ws.stop(self.config.shutdown_grace)  # 4
                await self.grpc.stop(self.config.shutdown_grace)
        finally:
            await self.store.close()  # 5
