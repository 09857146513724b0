"""A real ``redis-server`` per test, and real ``chimera serve --redis`` processes on it.

The server runs on a free loopback port in the test's temporary directory with
its append-only file on, so a test can stop it and start it again on the same
data (``restart``). Nothing here touches a system-wide Redis.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.processes import Node, free_port, spawn

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
needs_redis = pytest.mark.skipif(
    not os.path.exists(REDIS_SERVER),
    reason="redis-server is not installed (scripts/setup installs it as root: "
    "apt-get install -y redis-server)",
)


def _mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


@dataclass
class RedisServer:
    directory: Path
    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(self.url)

    async def start(self) -> None:
        log = (self.directory / "redis.log").open("ab")
        self.process = await asyncio.create_subprocess_exec(
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.directory), "--appendonly", "yes", "--save", "",
            stdout=log, stderr=log,
        )
        log.close()
        async with self.client() as client:
            for _ in range(200):
                try:
                    # Up, and done replaying its append-only file (PING answers earlier).
                    if (await client.info("persistence"))["loading"] == 0:
                        return
                except (aioredis.ConnectionError, OSError):
                    assert self.process.returncode is None, "redis-server exited"
                await asyncio.sleep(0.025)  # polled: redis-server announces nothing
        raise AssertionError("redis-server did not start")

    async def stop(self) -> None:
        """SIGTERM (Redis flushes its append-only file), then waits."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            await self.process.wait()
        self.process = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()


@asynccontextmanager
async def redis_server(directory: Path) -> AsyncIterator[RedisServer]:
    _mkdir(directory)
    server = RedisServer(directory)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def chimera_nodes(
    redis: RedisServer, directory: Path, count: int, *flags: str
) -> AsyncIterator[list[Node]]:
    """``count`` ``chimera serve --redis URL`` processes on free ports, stopped after."""
    async with AsyncExitStack() as stack:
        nodes = []
        for i in range(count):
            nodes.append(await start_node(redis, directory, chr(ord("a") + i), *flags))
            stack.push_async_callback(nodes[-1].stop)
        yield nodes


async def start_node(redis: RedisServer, directory: Path, name: str, *flags: str) -> Node:
    log = directory / f"node-{name}.log"
    argv = [
        "serve", "--redis", redis.url, "--grpc-port", "0", "--ws-port", "0",
        "--sim-delay", "0.02", "--teams", "anthropic=simulated,google=simulated", "--no-metrics",
        *flags,
    ]
    process, grpc_port, ws_port = await spawn(name, log, argv)
    return Node(name, process, log, grpc_port, ws_port)
