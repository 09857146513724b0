#!/usr/bin/env python
"""The cold-start anchor: grpc.aio and websockets in one process, nothing else.

    python scripts/coldstart_anchor.py GRPC_PORT WS_PORT

Serves the standard gRPC health service (SERVING) and a WebSocket server that
greets each connection with one message and echoes what it is sent: the least
a process answering both protocols must import and start
(``scripts/bench_coldstart.py`` times it against ``chimera serve``).
"""

from __future__ import annotations

import asyncio
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # not in grpc-stubs
from websockets.asyncio.server import ServerConnection, serve


async def _echo(connection: ServerConnection) -> None:
    await connection.send('{"type":"connected"}')
    async for message in connection:
        await connection.send(message)


async def main(grpc_port: int, ws_port: int) -> None:
    server = grpc.aio.server()
    servicer = health_aio.HealthServicer()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()
    async with serve(_echo, "127.0.0.1", ws_port):
        await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
