"""Fixtures: a real Chimera server on loopback (port 0), and real clients for it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from chimera.actors.jobs import ProviderFactory
from chimera.client import JobsClient
from chimera.config import ServerConfig
from chimera.events import TeamName
from chimera.providers.registry import Mode, ProviderSettings
from chimera.server import ChimeraServer
from chimera.store.base import Store
from chimera.v1 import jobs_pb2 as pb
from tests.redis_fixture import RedisServer, redis_server

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


@dataclass
class Running:
    server: ChimeraServer
    task: asyncio.Task[None]

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"

    def ws_url(self, job_id: str, query: str = "") -> str:
        suffix = f"?{query}" if query else ""
        return f"ws://127.0.0.1:{self.server.ws_port}/ws/orchestrate/{job_id}{suffix}"

    def client(self) -> JobsClient:
        return JobsClient(self.grpc_target)

    async def stop(self) -> None:
        self.server.stop()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), 30)
        except TimeoutError:
            # Seen once in ~20 suite runs, cause not found: say where it waits.
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                if frames := _awaiting(task.get_coro()):
                    print(f"still waiting: {task.get_name()}", *frames, sep="\n  ",
                          file=sys.stderr)
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            raise


def _awaiting(coro: Any) -> list[str]:
    """Where a coroutine waits, outermost first (the chain of awaits, Python frames)."""
    frames = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            frames.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return frames


StartServer = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_server(tmp_path: Path) -> AsyncIterator[StartServer]:
    """Starts real servers on loopback; each is stopped (in order) after the test."""
    running: list[Running] = []

    async def start(
        providers: ProviderFactory | None = None, db: str | None = None,
        store: Store | None = None, **config: Any,
    ) -> Running:
        base = ServerConfig(
            grpc_port=0, ws_port=0, db=db or str(tmp_path / f"chimera-{len(running)}.db"),
            sim_delay=0.01, shutdown_grace=1.0,
            # Simulated even where a developer has API keys set.
            providers=ProviderSettings(modes=dict.fromkeys(TeamName, Mode.SIMULATED)),
        )
        server = ChimeraServer(replace(base, **config), providers=providers, store=store)
        task = asyncio.create_task(server.serve())
        ready = asyncio.create_task(server.ready.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            task.result()  # raises why it did not start
        handle = Running(server, task)
        running.append(handle)
        return handle

    yield start
    failed: list[BaseException] = []
    for handle in reversed(running):
        if not handle.task.done():
            try:
                await handle.stop()
            except Exception as exc:  # the others are stopped all the same
                failed.append(exc)
    if failed:
        raise failed[0]


@pytest.fixture
async def server(start_server: StartServer) -> Running:
    return await start_server()


async def grpcurl(
    target: str, *args: str, data: Any = None, token: str | None = None,
    cacert: str | None = None,
) -> tuple[int, str, str]:
    """Runs the real grpcurl binary against ``target``; returns (exit code, stdout, stderr).

    ``token`` adds ``-H 'authorization: Bearer TOKEN'``; ``cacert`` uses TLS.
    """
    argv = [GRPCURL, "-cacert", cacert] if cacert else [GRPCURL, "-plaintext"]
    argv += ["-max-time", "30"]
    if token is not None:
        argv += ["-H", f"authorization: Bearer {token}"]
    if data is not None:
        argv += ["-d", data if isinstance(data, str) else json.dumps(data)]
    argv += [target, *args]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def wait_for_sequence(client: JobsClient, job_id: str, sequence: int) -> None:
    """Returns once the job has recorded event ``sequence`` (events reach clients stored)."""
    async with contextlib.aclosing(client.events(job_id)) as events:
        async for event in events:
            if event.sequence >= sequence:
                return
    raise AssertionError(f"job {job_id} ended before event {sequence}")


async def until(
    condition: Callable[[], bool | Awaitable[bool]], within: float = 10.0, every: float = 0.01
) -> None:
    """Returns once ``condition()`` (or what it returns, awaited) holds: a state the
    server reports when asked (a count, GetJob, /readyz), checked every ``every`` s
    because nothing announces it; fails after ``within`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        held = condition()
        if held if isinstance(held, bool) else await held:
            return
        if loop.time() > deadline:
            raise AssertionError(f"not reached within {within} s")
        await asyncio.sleep(every)


@contextlib.contextmanager
def logged(logger: str, starts: str) -> Iterator[asyncio.Future[logging.LogRecord]]:
    """A future that gets the first record ``logger`` logs (at INFO or above) whose
    message starts with ``starts``: what a server in this process reports, awaited
    as it happens instead of polled for."""
    loop = asyncio.get_running_loop()
    seen: asyncio.Future[logging.LogRecord] = loop.create_future()

    def settle(record: logging.LogRecord) -> None:
        if not seen.done():
            seen.set_result(record)

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith(starts):
                loop.call_soon_threadsafe(settle, record)

    target, handler = logging.getLogger(logger), Catch(logging.INFO)
    level = target.level
    target.setLevel(min(level or logging.INFO, logging.INFO))
    target.addHandler(handler)
    try:
        yield seen
    finally:
        target.removeHandler(handler)
        target.setLevel(level)


async def reconnect_randomly(
    url: Callable[[int], str], rng: random.Random, cycles: int, most: int
) -> list[int]:
    """A subscriber that keeps leaving: ``cycles`` times it connects to ``url(since)``
    (resuming after the last seq it received), reads up to ``most`` messages, then
    closes (odd cycles) or drops the connection (even ones); then reads the rest to
    the job's end. Returns every seq received, in order."""
    received: list[int] = []
    for cycle in range(cycles):
        since = received[-1] if received else 0
        # max_queue=None: the client keeps reading while it closes, as browsers do
        # (websockets' flow control would otherwise hold our close until timeout).
        ws = await ws_connect(url(since), max_queue=None)
        assert json.loads(await ws.recv())["data"]["since"] == since
        try:
            for _ in range(rng.randint(0, most)):
                message = json.loads(await ws.recv())
                if "seq" in message:
                    received.append(message["seq"])
        except ConnectionClosed:
            assert ws.close_code == 1000  # the job finished meanwhile
        if cycle % 2:
            await ws.close()
        else:
            assert ws.transport is not None
            ws.transport.abort()  # a dropped connection, no closing handshake
    final = await ws_connect(url(received[-1]))
    return received + [m["seq"] for m in job_events(await read_until_closed(final))]


async def read_until_closed(ws: ClientConnection) -> list[dict[str, Any]]:
    """Every message until the server closes the connection."""
    messages = []
    async for raw in ws:
        messages.append(json.loads(raw))
    return messages


async def first_events(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    """The next ``count`` job events on ``ws`` (control messages skipped): the job is
    under way."""
    events: list[dict[str, Any]] = []
    while len(events) < count:
        message = json.loads(await ws.recv())
        if "seq" in message:
            events.append(message)
    return events


def job_events(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if "seq" in m]


async def ws_connect(url: str, **kwargs: Any) -> ClientConnection:
    return await connect(url, open_timeout=10, **kwargs)


async def run_job(server: Running, job_id: str, brief: str = "a counter") -> pb.Job:
    """Creates a job, waits for its final event, and returns the finished job."""
    async with server.client() as client:
        await client.create(brief, job_id=job_id)
        async for _ in client.events(job_id):
            pass
        return await client.get(job_id)


def http_answer(url: str) -> tuple[int, str]:
    """A plain GET's status and body, error statuses included (sync: run in a thread)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A real ``redis-server`` of the test's own (tests that use it are marked
    ``needs_redis``), stopped after the test."""
    async with redis_server(tmp_path / "redis") as server:
        yield server
