"""Every limit has a default, a setting, and a clear error; nothing else is disturbed."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chimera.client import JobsClient
from chimera.config import ServerConfig
from chimera.defaults import (
    DEFAULT_MAX_JOBS_PER_CALLER,
    DEFAULT_MAX_SUBSCRIBERS_PER_ADDRESS,
    DEFAULT_MAX_SUBSCRIBERS_PER_JOB,
    MAX_CLIENT_FRAME,
)
from chimera.events import TeamName
from tests.conftest import StartServer, until, ws_connect
from tests.doubles import ScriptedProvider, factory
from tests.security import SECRET, token


def test_defaults() -> None:
    config = ServerConfig()
    assert config.max_brief_chars == 10_000
    assert config.max_request_bytes == 1 << 20
    assert config.max_frame_bytes == MAX_CLIENT_FRAME == 64 * 1024
    assert config.max_subscribers_per_job == DEFAULT_MAX_SUBSCRIBERS_PER_JOB
    assert config.max_subscribers_per_address == DEFAULT_MAX_SUBSCRIBERS_PER_ADDRESS
    assert config.max_jobs_per_caller == DEFAULT_MAX_JOBS_PER_CALLER


async def test_brief_length_and_request_size(start_server: StartServer) -> None:
    server = await start_server(max_brief_chars=50, max_request_bytes=4096)
    async with server.client() as client:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.create("x" * 51)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "limit is 50" in (info.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.create("x" * 5000)  # the request itself is over 4096 bytes
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in (info.value.details() or "")
        job = await client.create("x" * 50)  # at the limits: fine
        assert job.brief == "x" * 50
        assert len((await client.list()).jobs) == 1


async def test_frame_size(start_server: StartServer) -> None:
    server = await start_server(max_frame_bytes=1024)
    async with await ws_connect(server.ws_url("f"), max_size=None) as ws:
        await ws.recv()  # connected
        await ws.send("ping" + " " * 1000)  # within the limit (stripped to "ping")
        assert json.loads(await ws.recv())["type"] == "pong"
        await ws.send("x" * 2048)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 30)
        assert ws.close_code == 1009 and "1024" in (ws.close_reason or "")


async def test_subscribers_per_job(start_server: StartServer) -> None:
    server = await start_server(max_subscribers_per_job=2)
    first = await ws_connect(server.ws_url("popular"))
    second = await ws_connect(server.ws_url("popular"))
    with pytest.raises(InvalidStatus) as info:
        await ws_connect(server.ws_url("popular"))
    assert info.value.response.status_code == 429
    assert b"2 subscribers, the limit" in info.value.response.body
    # gRPC subscribers count too.
    async with server.client() as client:
        await client.create("a counter", job_id="popular")
        with pytest.raises(grpc.aio.AioRpcError) as grpc_info:
            async for _ in client.events("popular"):
                pass
        assert grpc_info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    # Other jobs are unaffected; a place frees up when a subscriber leaves.
    other = await ws_connect(server.ws_url("quiet"))
    assert json.loads(await other.recv())["type"] == "connected"
    await first.close()
    await until(lambda: server.server.broadcaster.subscriber_count("popular") == 1)
    third = await ws_connect(server.ws_url("popular"))
    assert json.loads(await third.recv())["type"] == "connected"
    for ws in (second, third, other):
        await ws.close()


async def test_subscribers_per_address(start_server: StartServer) -> None:
    server = await start_server(max_subscribers_per_address=3)
    open_ = [await ws_connect(server.ws_url(f"j{i}")) for i in range(3)]
    with pytest.raises(InvalidStatus) as info:
        await ws_connect(server.ws_url("j9"))
    assert info.value.response.status_code == 429
    assert b"per client address" in info.value.response.body
    for ws in open_:
        assert json.loads(await ws.recv())["type"] == "connected"  # still served
        await ws.close()


async def test_jobs_in_flight_per_caller(start_server: StartServer) -> None:
    hold = asyncio.Event()  # never set: jobs stay running until cancelled
    held = factory({t: (lambda: ScriptedProvider(["t"], hold=hold)) for t in TeamName})
    server = await start_server(held, jwt_secret=SECRET, max_jobs_per_caller=2)
    target = server.grpc_target
    async with JobsClient(target, token=token("alice")) as alice, JobsClient(
        target, token=token("bob")
    ) as bob:
        await alice.create("one", job_id="a1")
        await alice.create("two", job_id="a2")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await alice.create("three", job_id="a3")
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit is 2 per caller" in (info.value.details() or "")
        assert (await bob.create("bob's", job_id="b1")).job_id == "b1"  # others unaffected
        await alice.cancel("a1")
        assert (await alice.create("three", job_id="a3")).job_id == "a3"
        for job_id in ("a2", "a3"):
            await alice.cancel(job_id)
        await bob.cancel("b1")


async def test_jobs_in_flight_without_auth_count_per_address(start_server: StartServer) -> None:
    hold = asyncio.Event()
    held = factory({t: (lambda: ScriptedProvider(["t"], hold=hold)) for t in TeamName})
    server = await start_server(held, max_jobs_per_caller=1)
    async with server.client() as client:
        await client.create("one", job_id="n1")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.create("two", job_id="n2")
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        hold.set()
        async for _ in client.events("n1"):
            pass
        # Its place is free by the time anyone sees its final event (the supervisor
        # releases it on queueing the event, before the event is recorded).
        assert (await client.create("two", job_id="n2")).job_id == "n2"
