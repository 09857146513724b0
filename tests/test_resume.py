"""Resume after disconnects (``since`` / ``after_sequence``), and what cannot be resumed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosedError

from chimera.actors.jobs import ProviderFactory
from chimera.events import TeamName
from chimera.v1 import jobs_pb2 as pb
from tests.conftest import (
    Running,
    StartServer,
    job_events,
    read_until_closed,
    reconnect_randomly,
    run_job,
    until,
    ws_connect,
)
from tests.doubles import ScriptedProvider, factory


async def read_until_refused(ws: ClientConnection) -> list[dict[str, Any]]:
    """Messages until the server closes with an error code (which ends iteration raising)."""
    messages = []
    with contextlib.suppress(ConnectionClosedError):
        async for raw in ws:
            messages.append(json.loads(raw))
    return messages


def fast_job(thoughts: int, pace: float = 0.002) -> ProviderFactory:
    return factory(
        {team: (lambda: ScriptedProvider([f"t{i}" for i in range(thoughts)], pace=pace))
         for team in TeamName}
    )


async def test_200_random_reconnects_during_a_fast_job_lose_and_repeat_nothing(
    start_server: StartServer,
) -> None:
    server = await start_server(fast_job(600))
    async with server.client() as client:
        await client.create("a counter", job_id="flaky")
        received = await reconnect_randomly(
            lambda since: server.ws_url("flaky", f"since={since}"), random.Random(4), 200, 12
        )
        job = await client.get("flaky")
    assert received == list(range(1, job.last_sequence + 1))  # no gap, no duplicate
    assert job.last_sequence > 1200


async def test_grpc_after_sequence_resumes_exactly(start_server: StartServer) -> None:
    server = await start_server(fast_job(200))
    rng = random.Random(5)
    received: list[int] = []
    async with server.client() as client:
        await client.create("a counter", job_id="grpc-flaky")
        done = False
        while not done:
            # events() is an async generator: aclose() cancels the call (a disconnect).
            stream = client.events("grpc-flaky", received[-1] if received else 0)
            take = rng.randint(1, 40)
            async for event in stream:
                received.append(event.sequence)
                take -= 1
                if take == 0:
                    break
            else:
                done = True
            await stream.aclose()
        job = await client.get("grpc-flaky")
    assert received == list(range(1, job.last_sequence + 1))


async def test_resuming_after_the_final_event_closes_at_once(server: Running) -> None:
    job = await run_job(server, "over")
    async with server.client() as client:
        # Nothing after the last seq: the stream ends instead of waiting forever.
        tail = [e async for e in client.events("over", job.last_sequence)]
    assert tail == []
    ws = await ws_connect(server.ws_url("over", f"since={job.last_sequence}"))
    messages = await asyncio.wait_for(read_until_closed(ws), 10)
    assert [m["type"] for m in messages] == ["connected"]
    assert ws.close_code == 1000


async def test_since_past_the_last_seq_is_refused_with_4416(server: Running) -> None:
    job = await run_job(server, "short")
    ws = await ws_connect(server.ws_url("short", f"since={job.last_sequence + 1}"))
    messages = await asyncio.wait_for(read_until_refused(ws), 10)
    assert [m["type"] for m in messages] == ["connected", "error"]
    assert "past the last seq" in messages[1]["data"]["error"]
    assert ws.close_code == 4416


async def test_resuming_an_unknown_job_is_history_gone_not_a_silent_wait(
    server: Running,
) -> None:
    ws = await ws_connect(server.ws_url("never-here", "since=7"))
    messages = await asyncio.wait_for(read_until_refused(ws), 10)
    assert [m["type"] for m in messages] == ["connected", "error"]
    assert messages[1]["data"]["error"].startswith("history gone")
    assert ws.close_code == 4410 and ws.close_reason == "history gone"
    async with server.client() as client:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            [e async for e in client.events("never-here", 7)]
        assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert "history gone" in (info.value.details() or "")


async def test_an_unknown_job_at_since_0_is_waited_for_on_both_planes(server: Running) -> None:
    """One rule (JobManager.watch): a job that does not exist yet is waited for."""
    ws = await ws_connect(server.ws_url("not-yet"))
    async with server.client() as client:
        streamed = asyncio.create_task(_sequences(client.events("not-yet")))
        # Both subscribers are registered (and neither was refused) before the job exists.
        await until(lambda: server.server.broadcaster.subscriber_count("not-yet") == 2)
        assert not streamed.done()
        await client.create("a counter", job_id="not-yet")
        over_grpc = await asyncio.wait_for(streamed, 10)
    over_ws = [m["seq"] for m in job_events(await read_until_closed(ws))]
    assert over_grpc == over_ws == list(range(1, len(over_ws) + 1))
    assert len(over_ws) > 3


async def _sequences(events: AsyncIterator[pb.JobEvent]) -> list[int]:
    return [event.sequence async for event in events]
