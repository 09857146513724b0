"""A token's expiry ends the streams it opened: WebSocket 4401, gRPC UNAUTHENTICATED.

A token is accepted until its ``exp`` plus the clock leeway, so a token "expiring
in 2 s" is minted as if issued LEEWAY_SECONDS ago.
"""

from __future__ import annotations

import asyncio
import json
import time

import grpc

from chimera.auth.tokens import LEEWAY_SECONDS
from chimera.client import JobsClient
from chimera.events import TeamName
from chimera.providers.base import Provider
from chimera.v1 import jobs_pb2 as pb
from tests.conftest import Running, StartServer, read_until_closed, ws_connect
from tests.doubles import ScriptedProvider, factory
from tests.metrics_scrape import delta, scrape, scrape_until
from tests.security import SECRET, token
from tests.test_resume import read_until_refused

EXPIRED = "token expired: reconnect with a new token"


def expiring_token(seconds: int = 3) -> str:
    """A token this server stops accepting in ``seconds`` (at most; int exp: 1 s less)."""
    return token("alice", now=time.time() - LEEWAY_SECONDS, ttl=seconds)


async def stream_all(
    server: Running, bearer: str, job_id: str
) -> tuple[list[pb.JobEvent], grpc.aio.AioRpcError | None]:
    """The events of a StreamJobEvents call, and the error that ended it (None: OK)."""
    events: list[pb.JobEvent] = []
    async with JobsClient(server.grpc_target, token=bearer) as client:
        try:
            async for event in client.events(job_id):
                events.append(event)
        except grpc.aio.AioRpcError as exc:
            return events, exc
    return events, None


async def test_expiry_ends_the_tokens_streams_and_no_other(start_server: StartServer) -> None:
    hold = asyncio.Event()  # the job runs until the test lets it finish
    held = factory({team: (lambda: ScriptedProvider(["t"], hold=hold)) for team in TeamName})
    server = await start_server(held, jwt_secret=SECRET, metrics_port=0)
    assert server.server.metrics is not None
    port = server.server.metrics.port
    before = await scrape(port)
    lasting = token("alice")  # the default ttl: an hour
    async with JobsClient(server.grpc_target, token=lasting) as client:
        await client.create("a counter", job_id="held")
    # Minted now: its 2-3 s cover only opening its two streams, not the create.
    short = expiring_token()
    doomed = await ws_connect(server.ws_url("held", f"token={short}"))
    kept = await ws_connect(server.ws_url("held", f"token={lasting}"))
    async with asyncio.TaskGroup() as tg:
        doomed_stream = tg.create_task(stream_all(server, short, "held"))
        kept_stream = tg.create_task(stream_all(server, lasting, "held"))

        messages = await asyncio.wait_for(read_until_refused(doomed), 20)
        assert doomed.close_code == 4401 and doomed.close_reason == "token expired"
        error = messages[-1]
        assert (error["type"], error["job_id"], error["data"]) == (
            "error", "held", {"error": EXPIRED}
        )
        assert [m["type"] for m in messages[:-1]].count("error") == 0
        _, ended = await asyncio.wait_for(doomed_stream, 20)
        assert ended is not None and ended.code() is grpc.StatusCode.UNAUTHENTICATED
        assert ended.details() == EXPIRED

        # The other subscribers are untouched: still answered, then get the job to its end.
        await kept.send("ping")
        seen: list[dict[str, object]] = []
        while not seen or seen[-1]["type"] != "pong":
            seen.append(json.loads(await asyncio.wait_for(kept.recv(), 10)))
        assert not kept_stream.done()
        hold.set()
        rest = await asyncio.wait_for(read_until_closed(kept), 20)
        assert kept.close_code == 1000 and rest[-1]["data"] == {"status": "succeeded"}
        kept_events, kept_error = await asyncio.wait_for(kept_stream, 20)
        assert kept_error is None and kept_events[-1].sequence == rest[-1]["seq"]

    after = await scrape_until(
        port, lambda s: delta(s, before, "chimera_ws_disconnects_total", reason="finished") == 1
    )
    assert delta(after, before, "chimera_ws_disconnects_total", reason="token_expired") == 1


async def test_a_create_only_socket_closes_at_expiry(start_server: StartServer) -> None:
    """A socket opened to submit, waiting for its create_job, ends at expiry too."""
    server = await start_server(jwt_secret=SECRET)
    ws = await ws_connect(server.ws_url("not-yet", f"token={expiring_token()}"))
    messages = await asyncio.wait_for(read_until_refused(ws), 20)
    assert [m["type"] for m in messages] == ["connected", "error"]
    assert messages[-1]["data"] == {"error": EXPIRED}
    assert ws.close_code == 4401


async def test_a_job_ending_before_expiry_closes_1000(start_server: StartServer) -> None:
    def fast(team: TeamName) -> Provider:
        return ScriptedProvider(["t"])

    server = await start_server(fast, jwt_secret=SECRET)
    # Past its exp already, but accepted for the leeway: a server ending streams at
    # exp rather than when it stops accepting the token would close these 4401 at once.
    short = expiring_token(5)
    async with JobsClient(server.grpc_target, token=short) as client:
        await client.create("a counter", job_id="quick")
    ws = await ws_connect(server.ws_url("quick", f"token={short}"))
    streamed, error = await asyncio.wait_for(stream_all(server, short, "quick"), 20)
    messages = await asyncio.wait_for(read_until_closed(ws), 20)
    assert ws.close_code == 1000 and messages[-1]["data"] == {"status": "succeeded"}
    assert "error" not in [m["type"] for m in messages]
    assert error is None and streamed[-1].sequence == messages[-1]["seq"]
