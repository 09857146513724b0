"""A real ``redis-server`` per test, and real ``chimera serve --redis`` processes on it.

The server runs on a free loopback port in the test's temporary directory with
its append-only file on, so a test can stop it and start it again on the same
data (``restart``). Nothing here touches a system-wide Redis.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from chimera.client import JobsClient

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
needs_redis = pytest.mark.skipif(
    not os.path.exists(REDIS_SERVER),
    reason="redis-server is not installed (scripts/setup installs it as root: "
    "apt-get install -y redis-server)",
)
SERVING = re.compile(r"serving gRPC on [\d.]+:(\d+) and WebSocket on [\d.]+:(\d+)")


def read_text(path: Path) -> str:
    """A small log file's text (sync: a few lines)."""
    return path.read_text()


def _mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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
                await asyncio.sleep(0.025)
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


@dataclass
class Node:
    """One real ``chimera serve --redis`` process."""

    name: str
    process: asyncio.subprocess.Process
    log: Path
    grpc_port: int
    ws_port: int

    def ws_url(self, job_id: str, since: int = 0) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/ws/orchestrate/{job_id}?since={since}"

    def client(self) -> JobsClient:
        return JobsClient(f"127.0.0.1:{self.grpc_port}")

    def read_log(self) -> str:
        return self.log.read_text()

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                self.process.kill()
        await self.process.wait()


async def spawn(
    name: str, log: Path, argv: list[str], env: dict[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, int, int]:
    """Starts ``python -m chimera ARGV`` and waits for its "serving" line."""
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "chimera", *argv, stdout=out, stderr=out,
            env={**os.environ, **(env or {})},
        )
    for _ in range(400):
        found = SERVING.search(read_text(log))
        if found:
            return process, int(found[1]), int(found[2])
        if process.returncode is not None:
            break
        await asyncio.sleep(0.05)
    if process.returncode is None:
        process.kill()
    await process.wait()
    raise AssertionError(f"{name} did not start:\n{read_text(log)}")


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
