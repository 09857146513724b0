"""Submitting and cancelling from a browser: ``create_job`` / ``cancel_job`` on the job's own
socket, with real websockets clients (and real gRPC for what the server recorded)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin, Subprotocol

from chimera.client import JobsClient
from chimera.events import TeamName
from chimera.v1 import jobs_pb2 as pb
from tests.conftest import (
    Running,
    StartServer,
    job_events,
    read_until_closed,
    ws_connect,
)
from tests.doubles import ScriptedProvider, factory
from tests.security import SECRET, rebound_handshake_status, token

GUIDE_BRIEF = "Create a login form with email and password"


def protocols(value: str) -> list[Subprotocol]:
    return [Subprotocol("chimera.bearer"), Subprotocol(value)]


def create(brief: str = GUIDE_BRIEF, **fields: Any) -> str:
    # ensure_ascii=False: what a browser's JSON.stringify sends.
    return json.dumps({"type": "create_job", "brief": brief, **fields}, ensure_ascii=False)


async def next_message(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
    return message


async def submit(ws: ClientConnection, message: str) -> dict[str, Any]:
    await ws.send(message)
    return await next_message(ws)


async def test_create_job_answers_job_created_then_every_event(server: Running) -> None:
    ws = await ws_connect(server.ws_url("from-page"))
    assert (await next_message(ws))["type"] == "connected"
    created = await submit(ws, create(teams=["anthropic", "google"], request_id="r-1"))
    assert created["type"] == "job_created"
    assert created["job_id"] == "from-page" and created["request_id"] == "r-1"
    rest = await read_until_closed(ws)
    assert ws.close_code == 1000
    events = job_events(rest)
    assert rest == events  # job_created came before every event, and nothing else followed
    assert [m["seq"] for m in events] == list(range(1, len(events) + 1))
    assert events[-1]["data"] == {"status": "succeeded"}
    async with server.client() as client:
        job = await client.get("from-page")  # fewer than 100 thoughts: all of them
    assert job.brief == GUIDE_BRIEF and job.last_sequence == len(events)
    recorded = [t.id for run in job.teams for t in run.thoughts]
    streamed = [m["data"]["id"] for m in events if m["type"] == "thought_added"]
    assert sorted(recorded) == sorted(streamed) and streamed


async def test_refusals_use_the_grpc_codes_and_change_nothing(start_server: StartServer) -> None:
    server = await start_server(max_jobs_per_caller=1)
    ws = await ws_connect(server.ws_url("refused"))
    await next_message(ws)  # connected
    cases = [
        (create("   ", request_id="r-empty"), "INVALID_ARGUMENT", "brief is empty"),
        (create(teams=["openai"]), "INVALID_ARGUMENT", "unknown team"),
        (create(teams="anthropic"), "INVALID_ARGUMENT", "teams must be a list"),
        (create(teams=["google", "google"]), "INVALID_ARGUMENT", "more than once"),
        (create("x" * 10_001), "INVALID_ARGUMENT", "the limit is 10000"),
        (create(request_id="r" * 129), "INVALID_ARGUMENT", "request_id is longer"),
        (create(job_id="other"), "INVALID_ARGUMENT", "socket's"),
        (json.dumps({"type": "create_job"}), "INVALID_ARGUMENT", "needs a brief"),
        (json.dumps({"type": "cancel_job"}), "NOT_FOUND", "does not exist"),
        ('{"type":"launch"}', "INVALID_ARGUMENT", "unknown message"),
    ]
    for message, code, text in cases:
        reply = await submit(ws, message)
        assert reply["type"] == "error", message
        assert reply["data"]["code"] == code, (message, reply)
        assert text in reply["data"]["error"], (message, reply)
    assert (await submit(ws, create(request_id="r-empty2", brief="")))["data"]["request_id"] == (
        "r-empty2"
    )
    async with server.client() as client:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.get("refused")
        assert info.value.code() is grpc.StatusCode.NOT_FOUND  # nothing was created
    # The socket is still usable: the job is created, and its events follow.
    assert (await submit(ws, create()))["type"] == "job_created"
    assert job_events(await read_until_closed(ws))[-1]["data"]["status"] == "succeeded"

    # An id already used is ALREADY_EXISTS; the in-flight limit is RESOURCE_EXHAUSTED.
    hold = asyncio.Event()
    slow = await start_server(
        factory({team: lambda: ScriptedProvider(["t"], hold=hold) for team in TeamName}),
        max_jobs_per_caller=2,
    )
    sockets = [await ws_connect(slow.ws_url(name)) for name in ("first", "second", "third")]
    for ws in sockets:
        await next_message(ws)
    first, second, third = sockets
    assert (await submit(first, create()))["type"] == "job_created"
    again = await ws_connect(slow.ws_url("first"))  # the job runs: its socket stays open
    await next_message(again)
    taken = await _until_type(again, "error", create("another brief"))
    assert taken["data"]["code"] == "ALREADY_EXISTS"
    await again.close()
    assert (await submit(second, create()))["type"] == "job_created"
    over = await submit(third, create())
    assert over["data"]["code"] == "RESOURCE_EXHAUSTED" and "limit is 2" in over["data"]["error"]
    hold.set()
    await read_until_closed(first)
    await read_until_closed(second)
    await third.close()


async def test_a_maximal_brief_fits_in_one_frame_and_a_bigger_frame_is_refused(
    server: Running,
) -> None:
    brief = "😀" * 10_000  # 10,000 characters, 40 KB of UTF-8
    ws = await ws_connect(server.ws_url("big-brief"), max_size=None)
    await next_message(ws)
    assert len(create(brief).encode()) > 40_000
    assert (await submit(ws, create(brief)))["type"] == "job_created"
    await read_until_closed(ws)
    async with server.client() as client:
        assert (await client.get("big-brief")).brief == brief
    # Control characters, which JSON.stringify escapes as 6 bytes each: 60 KB, still fits.
    ws = await ws_connect(server.ws_url("escaped"), max_size=None)
    await next_message(ws)
    assert (await submit(ws, create("a\u0001" * 5_000)))["type"] == "job_created"
    await read_until_closed(ws)
    ws = await ws_connect(server.ws_url("too-big"), max_size=None)
    await next_message(ws)
    await ws.send(create("a" * (64 * 1024)))
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 30)
    assert ws.close_code == 1009


async def test_cancel_job_on_the_socket(start_server: StartServer) -> None:
    hold = asyncio.Event()
    server = await start_server(
        factory({team: lambda: ScriptedProvider(["t"], hold=hold) for team in TeamName}),
        jwt_secret=SECRET,
    )
    ws = await ws_connect(server.ws_url("to-cancel"), subprotocols=protocols(token("alice")))
    await next_message(ws)
    assert (await submit(ws, create()))["type"] == "job_created"
    # A viewer (read only) on the same job cannot cancel it.
    viewer = await ws_connect(
        server.ws_url("to-cancel"), subprotocols=protocols(token("alice", "read"))
    )
    await next_message(viewer)
    refusal = await _until_type(viewer, "error", json.dumps({"type": "cancel_job"}))
    assert refusal["data"]["code"] == "PERMISSION_DENIED"
    await ws.send(json.dumps({"type": "cancel_job"}))
    messages = await read_until_closed(ws)
    assert ws.close_code == 1000
    assert messages[-1]["data"] == {"status": "cancelled"}
    finals = {m["team"]: m["data"]["status"] for m in messages
              if m.get("team") and m["type"] == "status_change"}
    assert finals == {"anthropic": "cancelled", "google": "cancelled"}
    await viewer.close()
    async with JobsClient(server.grpc_target, token=token("alice")) as client:
        assert (await client.get("to-cancel")).state == pb.JOB_STATE_CANCELLED


async def _until_type(ws: ClientConnection, kind: str, send: str) -> dict[str, Any]:
    """Sends ``send``, then skips the job's events up to the first message of type ``kind``."""
    await ws.send(send)
    while True:
        message = await next_message(ws)
        if message["type"] == kind:
            return message


async def test_scopes_are_the_handshake_tokens(start_server: StartServer) -> None:
    server = await start_server(jwt_secret=SECRET)
    await run_job_as(server, "bobs", "bob")
    # submit+read, own jobs only: a socket for a new id is accepted to create it.
    alice = await ws_connect(server.ws_url("alices"), subprotocols=protocols(token("alice")))
    await next_message(alice)
    assert (await submit(alice, create()))["type"] == "job_created"
    assert job_events(await read_until_closed(alice))[-1]["data"]["status"] == "succeeded"
    # ...but creating over someone else's job is refused, and shows none of its events.
    over = await ws_connect(server.ws_url("bobs"), subprotocols=protocols(token("alice")))
    await next_message(over)
    assert (await submit(over, create()))["data"]["code"] == "ALREADY_EXISTS"
    await over.send("ping")
    assert (await next_message(over))["type"] == "pong"  # no event of bob's came first
    await over.close()
    # read only, all jobs: may watch a new id, may not submit.
    reader = await ws_connect(
        server.ws_url("new-one"), subprotocols=protocols(token("ro", "read", all_jobs=True))
    )
    await next_message(reader)
    refused = await submit(reader, create())
    assert refused["data"]["code"] == "PERMISSION_DENIED" and "submit" in refused["data"]["error"]
    await reader.close()
    # read only, own jobs: an unknown id is refused at the handshake, as before.
    with pytest.raises(InvalidStatus) as info:
        await ws_connect(server.ws_url("new-two"), subprotocols=protocols(token("ro", "read")))
    assert info.value.response.status_code == 404
    # no token: 401, nothing created.
    with pytest.raises(InvalidStatus) as info:
        await ws_connect(server.ws_url("new-three"))
    assert info.value.response.status_code == 401


async def run_job_as(server: Running, job_id: str, sub: str) -> None:
    async with JobsClient(server.grpc_target, token=token(sub)) as client:
        await client.create("bob's brief", job_id=job_id)
        async for _ in client.events(job_id):
            pass


async def test_a_foreign_origin_or_host_cannot_submit(start_server: StartServer) -> None:
    """Auth off (the loopback default): the Origin and Host checks are what stop a
    foreign page from spending the server's API keys."""
    server = await start_server(allowed_origins=("http://localhost:3030",))
    port = server.server.ws_port
    for origin in ("http://evil.example", "http://localhost:3031", "null"):
        with pytest.raises(InvalidStatus) as info:
            await ws_connect(server.ws_url("csrf"), origin=Origin(origin))
        assert info.value.response.status_code == 403, origin
    # DNS rebinding: the attacker's name resolves to 127.0.0.1, the page is "same origin".
    assert await rebound_handshake_status(port, f"evil.example:{port}", "csrf") == 421
    async with server.client() as client:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.get("csrf")
        assert err.value.code() is grpc.StatusCode.NOT_FOUND
    # The allowed origin and the server's own page may.
    for job_id, origin in (("ok-1", "http://localhost:3030"), ("ok-2", f"http://127.0.0.1:{port}")):
        ws = await ws_connect(server.ws_url(job_id), origin=Origin(origin))
        await next_message(ws)
        assert (await submit(ws, create()))["type"] == "job_created", origin
        await read_until_closed(ws)


async def test_a_socket_waiting_to_create_is_closed_at_shutdown(start_server: StartServer) -> None:
    """No subscription ends it, so the gateway closes it itself (1001), not after the grace."""
    server = await start_server(jwt_secret=SECRET, shutdown_grace=60.0)
    ws = await ws_connect(server.ws_url("never-made"), subprotocols=protocols(token("alice")))
    assert (await next_message(ws))["type"] == "connected"
    await ws.send("ping")
    assert (await next_message(ws))["type"] == "pong"  # it is waiting for its create_job
    server.server.stop()
    await asyncio.wait_for(server.task, 20)  # well inside the 60 s grace
    with pytest.raises(ConnectionClosed):
        await ws.recv()
    assert ws.close_code == 1001
