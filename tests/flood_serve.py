"""``python -m tests.flood_serve DB LOOP``: the server ``chimera serve`` runs, on
the event loop LOOP, with providers that flood (every team thinks 600 thoughts
of 2,000 characters at once: megabytes per job) and the smallest subscriber
backlog allowed, for shedding tests on the serving loop. Logs the serving line."""

from __future__ import annotations

import logging
import sys

from chimera import eventloop
from chimera.config import ServerConfig
from chimera.defaults import MIN_SUBSCRIBER_MAX_BYTES
from chimera.events import TeamName
from chimera.providers.registry import Mode, ProviderSettings
from chimera.server import ChimeraServer
from tests.doubles import flood


def main(db: str, loop: str) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    config = ServerConfig(
        grpc_port=0, ws_port=0, db=db, sim_delay=0.01, shutdown_grace=1.0,
        subscriber_max_bytes=MIN_SUBSCRIBER_MAX_BYTES, max_jobs_per_caller=1000,
        providers=ProviderSettings(modes=dict.fromkeys(TeamName, Mode.SIMULATED)),
    )
    eventloop.run(serve(config), loop)


async def serve(config: ServerConfig) -> None:
    # Made on the running loop: grpc.aio binds its server to the loop it is made on.
    await ChimeraServer(config, providers=flood(600)).serve()


if __name__ == "__main__":
    main(*sys.argv[1:])
