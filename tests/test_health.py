"""One :class:`chimera.health.Health` per server: the WebSocket ``/readyz`` and the
gRPC health service both follow it, whoever sets it (in a cluster, the membership,
while Redis cannot be used)."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import Running, StartServer, http_answer, until
from tests.redis_fixture import RedisServer, needs_redis

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICES = ("", "chimera.v1.JobService")


def readyz(node: Running) -> tuple[int, str]:
    """``/readyz``'s status and body."""
    return http_answer(f"http://127.0.0.1:{node.server.ws_port}/readyz")


async def grpc_health(node: Running) -> set[int]:
    """The gRPC health status of the server and of JobService (one value if they agree)."""
    async with grpc.aio.insecure_channel(node.grpc_target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return {
            (await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)).status
            for name in SERVICES
        }


async def both(node: Running) -> tuple[tuple[int, str], set[int]]:
    return await asyncio.to_thread(readyz, node), await grpc_health(node)


async def test_readyz_and_grpc_health_follow_one_health_set(server: Running) -> None:
    health = server.server.health
    assert await both(server) == ((200, "ready\n"), {SERVING})
    await health.set(False, "draining for maintenance")
    assert await both(server) == ((503, "not ready: draining for maintenance\n"), {NOT_SERVING})
    await health.set(True)
    assert await both(server) == ((200, "ready\n"), {SERVING})


@needs_redis
async def test_the_cluster_membership_sets_the_health_both_gateways_read(
    redis: RedisServer, start_server: StartServer
) -> None:
    node = await start_server(redis_url=redis.url)
    assert await both(node) == ((200, "ready\n"), {SERVING})
    await redis.stop()  # the membership's next check fails: not ready, saying why

    async def unready() -> bool:
        (status, _), grpc_status = await both(node)
        return status == 503 and grpc_status == {NOT_SERVING}

    await until(unready, every=0.1)
    status, body = await asyncio.to_thread(readyz, node)
    assert status == 503 and body.startswith("not ready: ") and body.strip() != "not ready:"
    assert node.server.health.reason in body  # the one reason, as the membership set it
    await redis.start()

    async def ready() -> bool:
        return await both(node) == ((200, "ready\n"), {SERVING})

    await until(ready, every=0.1)
    # One Health.set reaches both, here too.
    await node.server.health.set(False, "told directly")
    assert await both(node) == ((503, "not ready: told directly\n"), {NOT_SERVING})
    await node.server.health.set(True)
    assert await both(node) == ((200, "ready\n"), {SERVING})
