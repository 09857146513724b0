"""Limits: a stuck subscriber is shed (and resumes), retention, the snapshot endpoint, flags."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any, NamedTuple

import grpc
import pytest
from google.protobuf.json_format import MessageToDict
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosedError

from chimera.events import TeamName, parse_timestamp
from chimera.v1 import jobs_pb2 as pb
from tests.conftest import (
    Running,
    StartServer,
    job_events,
    logged,
    read_until_closed,
    until,
    ws_connect,
)
from tests.doubles import ScriptedProvider, factory, flood

QUEUE_LIMIT = 64 * 1024


async def open_stuck_subscriber(
    port: int, job_id: str, *, receive_buffer: int | None = None, segment: int | None = None
) -> tuple[asyncio.StreamReader, Any]:
    """A WebSocket client that completes the handshake, then never reads.

    ``receive_buffer`` fixes its socket's receive buffer (the kernel then never
    grows it: ``tcp_rmem`` may allow tens of MB), bounding what a server can
    write to it before its writer waits on the socket; ``segment`` sets its MSS
    (1460, Ethernet's, with a small buffer: the server's kernel holds ~150 KB)."""
    sock = socket.socket()
    if segment is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, segment)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    writer.write(
        f"GET /ws/orchestrate/{job_id} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 101 " in head
    return reader, writer


class Flooded(NamedTuple):
    server: Running
    stuck_reader: asyncio.StreamReader
    stuck_writer: Any
    fast: ClientConnection


async def flooded(start_server: StartServer, **options: Any) -> Flooded:
    """A server (with ``options``) whose job ``flood``, once created, sends about 8 MB
    (more than the kernel's socket buffers plus the queue bound), to two subscribers
    already there: one that never reads, one that reads without bound."""
    server = await start_server(flood(2000), subscriber_max_bytes=QUEUE_LIMIT, **options)
    stuck_reader, stuck_writer = await open_stuck_subscriber(server.server.ws_port, "flood")
    fast = await ws_connect(server.ws_url("flood"), max_queue=None)
    return Flooded(server, stuck_reader, stuck_writer, fast)


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One frame's opcode and payload (server frames are unmasked)."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    return first & 0x0F, await reader.readexactly(length)


async def read_frames(reader: asyncio.StreamReader) -> tuple[list[dict[str, Any]], int, str]:
    """Every text message, then the close frame's code and reason."""
    messages = []
    while True:
        opcode, payload = await read_frame(reader)
        if opcode == 1:
            messages.append(json.loads(payload))
        elif opcode == 8:
            return messages, int.from_bytes(payload[:2], "big"), payload[2:].decode()


async def test_a_subscriber_that_never_reads_is_shed_and_the_others_do_not_wait(
    start_server: StartServer,
) -> None:
    server, stuck_reader, stuck_writer, fast = await flooded(start_server)
    async with server.client() as client:
        reading = asyncio.create_task(read_until_closed(fast))
        await client.create("a counter", job_id="flood")
        # The stuck one, which has not read a byte, is shed: it leaves the job's
        # subscribers while the reading one is still reading.
        await until(lambda: server.server.broadcaster.subscriber_count("flood") == 1, 60)
        assert not reading.done()
        # Reading now (the server gives up on a close handshake after 5 s), it
        # finds what was already on the wire, then close 4008 with the seq to
        # resume from, which is the last one it received.
        messages, code, reason = await asyncio.wait_for(read_frames(stuck_reader), 30)
        stuck_writer.close()
        # The reading subscriber gets everything, to the final event: the stuck
        # one never held it up.
        got = job_events(await asyncio.wait_for(reading, 60))
    last = got[-1]["seq"]
    assert [m["seq"] for m in got] == list(range(1, last + 1))
    assert fast.close_code == 1000 and got[-1]["data"] == {"status": "succeeded"}
    await until(lambda: server.server.broadcaster.subscriber_count("flood") == 0)
    seen = [m["seq"] for m in job_events(messages)]
    assert code == 4008
    assert f"since={seen[-1]}" in reason
    assert seen == list(range(1, seen[-1] + 1))
    assert seen[-1] < last
    resumed = await ws_connect(server.ws_url("flood", f"since={seen[-1]}"), max_queue=None)
    rest = [m["seq"] for m in job_events(await read_until_closed(resumed))]
    assert seen + rest == list(range(1, last + 1))


async def test_retention_removes_finished_jobs_with_their_events(
    start_server: StartServer,
) -> None:
    hold = asyncio.Event()
    server = await start_server(
        factory({TeamName.GOOGLE: lambda: ScriptedProvider(["slow"], hold=hold)}),
        retention=0.3, retention_interval=0.05,
    )
    async with server.client() as client:
        with logged("chimera.actors.retention", "retention removed") as swept:
            # Older than "old": a running job is never removed, however old.
            await client.create("a counter", job_id="still-running")
            await client.create("a counter", job_id="old", teams=[pb.TEAM_ANTHROPIC])
            async for _ in client.events("old"):
                pass
            # Sweeps every 0.05 s; the first one 0.3 s after "old" ended removes it.
            record = await asyncio.wait_for(swept, 10)
        assert record.args == (1,)  # "old" only
        listed = [j.job_id for j in (await client.list()).jobs]
        assert listed == ["still-running"]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.get("old")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        # Its events are gone too: resuming it says so.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            [e async for e in client.events("old", 2)]
        assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
        hold.set()
        async for _ in client.events("still-running"):
            pass
    ws = await ws_connect(server.ws_url("old", "since=2"))
    with pytest.raises(ConnectionClosedError):
        await asyncio.wait_for(read_until_closed(ws), 10)
    assert ws.close_code == 4410


async def test_a_job_removed_while_being_read_ends_with_history_gone(
    start_server: StartServer,
) -> None:
    # Retention on, but sweeping only when the test says (the first sweep is at start).
    # Any finished job is old enough: with 0.01 s, a sweep made within 10 ms of the
    # job's end (a fast machine) found nothing to remove.
    server = await start_server(flood(3000), retention=1e-6, retention_interval=3600.0)
    watcher = await ws_connect(server.ws_url("big-history"), max_queue=None)
    async with server.client() as client:
        await client.create("a counter", job_id="big-history")
    last = job_events(await asyncio.wait_for(read_until_closed(watcher), 60))[-1]["seq"]
    # A reader that takes its time: its writer waits on the socket mid-history
    # (12 MB of it, more than the socket buffers hold). Its "connected" says it
    # is subscribed (the watcher's subscription may still be leaving, so the
    # subscriber count would not say whose it is).
    reader, writer = await open_stuck_subscriber(server.server.ws_port, "big-history")
    opcode, payload = await asyncio.wait_for(read_frame(reader), 10)
    assert opcode == 1 and json.loads(payload)["type"] == "connected"
    retention = server.server.retention
    assert retention is not None
    assert await retention.sweep() == ["big-history"]
    messages, code, reason = await asyncio.wait_for(read_frames(reader), 30)
    writer.close()
    seen = [m["seq"] for m in job_events(messages)]
    assert code == 4410 and reason == "history gone"
    assert seen == list(range(1, len(seen) + 1))  # no silent gap before it
    assert len(seen) < last  # cut short


def fetch(url: str) -> tuple[int, dict[str, Any], int]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read()
            return response.status, json.loads(body), len(body)
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, json.loads(body), len(body)


def instants(thoughts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Thoughts with their timestamps as instants: protobuf's JSON drops a zero fraction
    ("…:50Z"), the snapshot keeps milliseconds ("…:50.000Z"), the same time."""
    return [{**t, "timestamp": parse_timestamp(t["timestamp"])} for t in thoughts]


async def test_snapshot_endpoint_is_getjob_as_json(start_server: StartServer) -> None:
    hold = asyncio.Event()
    # Both teams held before their answers, so the job stands still mid-run while the two
    # reads are compared (a simulated team kept going between them: 13 != 9 under load).
    server = await start_server(
        factory({team: lambda: ScriptedProvider(["t1", "t2"], hold=hold) for team in TeamName})
    )
    url = f"http://127.0.0.1:{server.server.ws_port}/api/jobs/poll"
    async with server.client() as client:
        await client.create("a login form", job_id="poll")
        for finished in (False, True):
            if finished:
                hold.set()
                async for _ in client.events("poll"):
                    pass
            else:
                await until(lambda: said_all("poll", server))  # mid-run, standing still
            job = MessageToDict(await client.get("poll"), preserving_proto_field_name=True)
            status, snapshot, size = await asyncio.to_thread(fetch, url)
            assert status == 200
            assert snapshot["state"] == job["state"].removeprefix("JOB_STATE_").lower()
            assert snapshot["last_sequence"] == int(job["last_sequence"])
            assert snapshot["brief"] == job["brief"]
            for ours, theirs in zip(snapshot["teams"], job["teams"], strict=True):
                assert ours["status"] == theirs["status"].removeprefix("TEAM_STATUS_").lower()
                assert instants(ours["thoughts"]) == instants(theirs.get("thoughts", []))
                assert ours["code"] == theirs.get("code", "")
                assert ours["error"] == theirs.get("error", "")
            assert size < 16 * 1024  # the snapshot, not the event history
        assert snapshot["state"] == "succeeded"
    status, body, _ = await asyncio.to_thread(fetch, url.replace("poll", "nope"))
    assert status == 404 and "nope" in body["error"]


async def said_all(job_id: str, server: Running) -> bool:
    """Both teams have said both thoughts (all they say before the hold)."""
    async with server.client() as client:
        teams = (await client.get(job_id)).teams
    return [len(team.thoughts) for team in teams] == [2, 2]


async def test_snapshot_of_an_unknown_job_is_404_and_creates_nothing(server: Running) -> None:
    status, _, _ = await asyncio.to_thread(
        fetch, f"http://127.0.0.1:{server.server.ws_port}/api/jobs/ghost"
    )
    assert status == 404
    async with server.client() as client:
        assert [j.job_id for j in (await client.list()).jobs] == []


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--subscriber-max-bytes", "1000"], "must be at least 65536"),
        (["--subscriber-max-bytes", "lots"], "invalid"),
        (["--retention", "-1"], "must be 0 or more"),
    ],
)
def test_serve_flags_are_checked(flags: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chimera", "serve", *flags],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr
