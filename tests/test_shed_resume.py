"""A shed subscriber is told to resume from the last event it actually received,
on both planes and in every phase, and a slow reader learns why it was closed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from chimera.client import JobsClient
from chimera.events import TeamName
from chimera.v1 import jobs_pb2 as pb
from tests.conftest import (
    Running,
    StartServer,
    job_events,
    read_until_closed,
    until,
    ws_connect,
)
from tests.doubles import ScriptedProvider, factory, flood
from tests.test_shedding_retention import (
    QUEUE_LIMIT,
    flooded,
    open_stuck_subscriber,
    read_frames,
)


async def poll_job(client: JobsClient, done: Callable[[pb.Job], bool]) -> None:
    """Waits for the flood job to reach a state GetJob reports (a stream that waited
    for it would itself be shed by the flood this file is about)."""

    async def reached() -> bool:
        return done(await client.get("flood"))

    await until(reached, 60, every=0.05)


async def shed(server: Running) -> None:
    """Returns once the flood job's one subscriber has been shed (it leaves the channel)."""
    await until(lambda: server.server.broadcaster.subscriber_count("flood") == 0, 30)


@pytest.mark.parametrize("plane", ["grpc", "ws"])
async def test_shed_during_history_replay_names_the_last_event_received(
    start_server: StartServer, plane: str
) -> None:
    # Still flooding while the history (8 MB: more than socket buffers) is replayed.
    server = await start_server(flood(20_000), subscriber_max_bytes=QUEUE_LIMIT)
    received: list[int] = []
    async with server.client() as client:
        await client.create("a flood", job_id="flood")
        await poll_job(client, lambda job: job.last_sequence >= 4000)
        # A reader that stops reading early in the history, live events piling up,
        # until it is shed; then it reads what reached it.
        if plane == "grpc":
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                async for event in client.events("flood"):
                    received.append(event.sequence)
                    if len(received) == 10:
                        await shed(server)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            told = refused.value.details() or ""
        else:
            ws = await ws_connect(server.ws_url("flood"), max_queue=1)
            with pytest.raises(ConnectionClosedError) as closed:
                async for raw in ws:
                    message = json.loads(raw)
                    if "seq" in message:
                        received.append(message["seq"])
                    if len(received) == 10:
                        await shed(server)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4008
            told = closed.value.rcvd.reason
        # Under load the reader may be shed before its first event reached it: then the
        # last event it received is 0, and that is what it must be told.
        last = received[-1] if received else 0
        assert received == list(range(1, last + 1))
        assert last < 4000  # shed during the history
        assert "since=" in told, told
        since = int(re.findall(r"since=(\d+)", told)[0])
        assert since == last, (since, last)
        # Resuming there re-delivers nothing and skips nothing.
        async with contextlib.aclosing(client.events("flood", since)) as resumed:
            assert (await anext(resumed)).sequence == since + 1


async def flood_past_a_stuck_reader(
    start_server: StartServer,
) -> tuple[Running, asyncio.StreamReader, Any]:
    """A server whose flood job ran to its end for a reader that kept up, past one
    that never read (shed: what it holds, then its close, wait behind what it has
    not read); the server and the stuck reader's streams."""
    server, stuck_reader, stuck_writer, fast = await flooded(start_server)
    async with server.client() as client:
        await client.create("a flood", job_id="flood")
        await asyncio.wait_for(read_until_closed(fast), 60)
    return server, stuck_reader, stuck_writer


async def test_a_reader_slower_than_the_close_handshake_still_gets_4008(
    start_server: StartServer,
) -> None:
    _, stuck_reader, stuck_writer = await flood_past_a_stuck_reader(start_server)
    # Slow for longer than a close handshake may take (5 s): the close frame sits
    # behind what the kernel holds, and must still arrive with its reason. (The
    # pause is the behaviour under test, not a wait for the server.)
    await asyncio.sleep(6)
    messages, code, reason = await asyncio.wait_for(read_frames(stuck_reader), 30)
    stuck_writer.close()
    seen = [m["seq"] for m in job_events(messages)]
    assert code == 4008, (code, reason)
    assert f"since={seen[-1]}" in reason


async def test_a_shed_reader_that_never_reads_frees_its_place_at_once(
    start_server: StartServer,
) -> None:
    """Shed while its connection waits to send on a full socket, a reader leaves the
    job's subscriber limit then, not once it reads (it has 60 s to): another is let
    in (the limit is 1) while it still has read nothing, and it then gets its 4008.

    The thoughts are paced (one commit each), so the connection has taken an event
    from its queue and waits in its send when the queue passes its bound."""
    paced = factory({TeamName.ANTHROPIC: lambda: ScriptedProvider(["x" * 16_000] * 150, pace=0.01)})
    server = await start_server(paced, subscriber_max_bytes=QUEUE_LIMIT, max_subscribers_per_job=1)
    stuck_reader, stuck_writer = await open_stuck_subscriber(
        server.server.ws_port, "paced", receive_buffer=4096, segment=1460
    )
    await until(lambda: server.server.broadcaster.subscriber_count("paced") == 1)
    let_in: list[ClientConnection] = []

    async def let_in_now() -> bool:
        try:
            let_in.append(await ws_connect(server.ws_url("paced"), max_queue=None))
        except InvalidStatus as refused:
            assert refused.response.status_code == 429
            return False
        return True

    async with server.client() as client:
        await client.create("a paced flood", job_id="paced")
        await until(lambda: server.server.broadcaster.subscriber_count("paced") == 0, 30)
        await until(let_in_now, 10)
        seqs = [m["seq"] for m in job_events(await read_until_closed(let_in[0]))]
        job = await client.get("paced")
    assert seqs == list(range(1, job.last_sequence + 1)) and let_in[0].close_code == 1000
    messages, code, reason = await asyncio.wait_for(read_frames(stuck_reader), 30)
    stuck_writer.close()
    assert code == 4008 and f"since={job_events(messages)[-1]['seq']}" in reason, reason


async def test_stopping_does_not_wait_out_a_shed_reader_that_never_reads(
    start_server: StartServer,
) -> None:
    """A shed reader is given 60 s to read up to its 4008; a server stopping gives it
    its grace (1 s here) and then ends its connection."""
    server, stuck_reader, stuck_writer = await flood_past_a_stuck_reader(start_server)
    await shed(server)
    await asyncio.wait_for(server.stop(), 20)
    # Its connection was ended (aborted: no closing handshake): what was sent, then the end.
    with pytest.raises((asyncio.IncompleteReadError, ConnectionResetError)):
        await asyncio.wait_for(read_frames(stuck_reader), 30)
    stuck_writer.close()
