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
    #: more ``redis-server`` arguments, e.g. ``("--appendfsync", "always")``
    extra_args: tuple[str, ...] = ()

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
            *self.extra_args, stdout=log, stderr=log,
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

    # Faults (see /work/shared/VERIFIED.md: each was tried on redis-server 7.0).

    async def command(self, *args: str | int, lasts: float = 0.0) -> object:
        """One command on a connection of its own (closed after); ``lasts``: how long
        it may take (``DEBUG SLEEP``) beyond redis-py's 5 s default read timeout."""
        async with aioredis.Redis.from_url(self.url, socket_timeout=5 + lasts) as client:
            return await client.execute_command(*args)  # type: ignore[no-untyped-call]

    async def pause(self, ms: int, mode: str = "ALL") -> None:
        """``CLIENT PAUSE ms [WRITE|ALL]``: returns at once, Redis holds the others' commands."""
        await self.command("CLIENT", "PAUSE", ms, mode)

    async def set_maxmemory(self, limit: str | int, policy: str = "noeviction") -> None:
        """``maxmemory limit`` (1 refuses every write with OOM; 0 lifts the limit)."""
        await self.command("CONFIG", "SET", "maxmemory-policy", policy)
        await self.command("CONFIG", "SET", "maxmemory", limit)

    async def flushall(self) -> None:
        await self.command("FLUSHALL")

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye (``wait_killed`` reaps it)."""
        assert self.process is not None and self.process.returncode is None
        self.process.kill()

    async def wait_killed(self) -> None:
        if self.process is not None:
            await self.process.wait()
        self.process = None

    def freeze(self) -> None:
        """SIGSTOP: the process holds every connection and answers nothing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    async def restart_empty(self) -> None:
        """Stopped, its data (append-only files) deleted, started again on the same
        port: a Redis that lost everything (no persistence, or a new machine)."""
        await self.stop()
        await self.start_empty()

    async def start_empty(self) -> None:
        for entry in self.directory.iterdir():
            if entry.name == "redis.log":
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
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
