"""Stream positions are ``{seq, epoch}``: a resume never splices two jobs.

The epoch names the store's lifetime (a SQLite file; a Redis data set). After the
data is lost, a job id can be given again: a subscriber resuming the old job with
its old epoch is told history is gone (4410 / ``OUT_OF_RANGE``) instead of being
streamed the new job's events as if they followed its own.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from websockets.exceptions import InvalidStatus

from tests.conftest import (
    Running,
    StartServer,
    grpcurl,
    job_events,
    read_until_closed,
    reconnect_randomly,
    run_job,
    ws_connect,
)
from tests.redis_fixture import RedisServer, needs_redis, redis_server
from tests.test_grpc_api import SERVICE, streamed_events
from tests.test_resume import fast_job, read_until_refused

EPOCH = re.compile(r"[0-9a-f]{16}")
OTHER = "0123456789abcdef"  # well-formed, and not any store's epoch


async def snapshot(server: Running, job_id: str) -> dict[str, Any]:
    """GET /api/jobs/{job_id} (in a thread: the server runs on this loop)."""
    url = f"http://127.0.0.1:{server.server.ws_port}/api/jobs/{job_id}"

    def fetch() -> dict[str, Any]:
        with urllib.request.urlopen(url, timeout=10) as response:
            body: dict[str, Any] = json.loads(response.read())
        return body

    return await asyncio.to_thread(fetch)


async def connected_epoch(server: Running, job_id: str) -> str:
    ws = await ws_connect(server.ws_url(job_id))
    connected = json.loads(await ws.recv())
    await ws.close()
    assert connected["type"] == "connected"
    epoch: str = connected["data"]["epoch"]
    return epoch


async def refused_ws(server: Running, job_id: str, query: str) -> list[dict[str, Any]]:
    ws = await ws_connect(server.ws_url(job_id, query))
    messages = await asyncio.wait_for(read_until_refused(ws), 10)
    assert [m["type"] for m in messages] == ["connected", "error"], messages
    assert ws.close_code == 4410 and ws.close_reason == "history gone"
    return messages


# -- WebSocket ---------------------------------------------------------------------------------

async def test_connected_the_snapshot_and_every_job_answer_carry_the_same_epoch(
    server: Running,
) -> None:
    async with server.client() as client:
        created = await client.create("a counter", job_id="epoch-1")
        async for _ in client.events("epoch-1"):
            pass
        got = await client.get("epoch-1")
        listed = (await client.list()).jobs
    assert EPOCH.fullmatch(got.epoch)
    assert created.epoch == got.epoch == listed[0].epoch
    ws = await ws_connect(server.ws_url("epoch-1", "since=2"))
    connected = json.loads(await ws.recv())
    await ws.close()
    # Additive: the guide's fields and the earlier additions are all still there.
    assert connected["data"] == {
        "message": "Connected to job epoch-1", "since": 2, "epoch": got.epoch
    }
    assert (await snapshot(server, "epoch-1"))["epoch"] == got.epoch
    # Frames are encoded once and stored: events do not carry it.
    events = job_events(await read_until_closed(await ws_connect(server.ws_url("epoch-1"))))
    assert events and all("epoch" not in e and "epoch" not in e["data"] for e in events)


async def test_resuming_with_the_right_epoch_is_exactly_resuming_without(
    start_server: StartServer,
) -> None:
    server = await start_server(fast_job(300))
    async with server.client() as client:
        epoch = (await client.create("a counter", job_id="epoch-flaky")).epoch
        received = await reconnect_randomly(
            lambda since: server.ws_url("epoch-flaky", f"since={since}&epoch={epoch}"),
            random.Random(7), 40, 12,
        )
        job = await client.get("epoch-flaky")
    assert received == list(range(1, job.last_sequence + 1))  # no gap, no duplicate
    with_epoch = await read_until_closed(
        await ws_connect(server.ws_url("epoch-flaky", f"since=5&epoch={epoch}"))
    )
    without = await read_until_closed(await ws_connect(server.ws_url("epoch-flaky", "since=5")))
    assert job_events(with_epoch) == job_events(without)
    assert [e["seq"] for e in job_events(without)] == list(range(6, job.last_sequence + 1))


async def test_a_position_from_another_epoch_is_history_gone_4410(server: Running) -> None:
    await run_job(server, "epoch-2")
    for query in (f"since=5&epoch={OTHER}", f"since=0&epoch={OTHER}"):
        messages = await refused_ws(server, "epoch-2", query)
        error = messages[1]["data"]["error"]
        assert error.startswith("history gone") and "another lifetime of the store" in error
        assert "start over from since=0" in error


@pytest.mark.parametrize(
    "query",
    [
        "since=5&epoch=a%20b",  # a space
        "since=5&epoch=abc.def",
        "since=5&epoch=%C3%A9t%C3%A9",  # not ASCII
        "since=5&epoch=" + "a" * 65,  # too long
        f"since=5&epoch={OTHER}&epoch={OTHER}",  # twice
    ],
)
async def test_a_malformed_epoch_is_refused_at_the_handshake(server: Running, query: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        await ws_connect(server.ws_url("epoch-3", query))
    assert info.value.response.status_code == 400
    assert b"epoch must be one value" in info.value.response.body


# -- gRPC ----------------------------------------------------------------------------------------

async def test_grpc_resumes_with_the_right_epoch_and_refuses_another(server: Running) -> None:
    job = await run_job(server, "epoch-4")
    async with server.client() as client:
        tail = [e.sequence async for e in client.events("epoch-4", 5, job.epoch)]
        assert tail == list(range(6, job.last_sequence + 1))
        for after in (5, 0):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                [e async for e in client.events("epoch-4", after, OTHER)]
            assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
            assert "history gone" in (info.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            [e async for e in client.events("epoch-4", 5, "a b")]
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "epoch is malformed" in (info.value.details() or "")


async def test_grpcurl_shows_the_epoch_and_resumes_with_it(server: Running) -> None:
    job = await run_job(server, "epoch-5")
    method = f"{SERVICE}/StreamJobEvents"
    code, out, err = await grpcurl(server.grpc_target, f"{SERVICE}/GetJob",
                                   data={"job_id": "epoch-5"})
    assert code == 0, err
    assert json.loads(out)["job"]["epoch"] == job.epoch
    code, out, err = await grpcurl(
        server.grpc_target, method,
        data={"job_id": "epoch-5", "after_sequence": 5, "epoch": job.epoch},
    )
    assert code == 0, err
    sequences = [int(e["sequence"]) for e in streamed_events(out)]
    assert sequences == list(range(6, job.last_sequence + 1))
    code, out, err = await grpcurl(
        server.grpc_target, method,
        data={"job_id": "epoch-5", "after_sequence": 5, "epoch": OTHER},
    )
    assert code != 0 and "OutOfRange" in err and "history gone" in err


# -- SQLite: the file is the lifetime ----------------------------------------------------------

async def test_the_epoch_persists_with_its_database_file_and_a_new_file_gets_another(
    start_server: StartServer, tmp_path: Path
) -> None:
    db = str(tmp_path / "kept.db")
    first = await start_server(db=db)
    job = await run_job(first, "kept")
    await first.stop()
    again = await start_server(db=db)
    assert await connected_epoch(again, "kept") == job.epoch
    async with again.client() as client:
        assert (await client.get("kept")).epoch == job.epoch
        # A position from before the restart resumes as it did.
        tail = [e.sequence async for e in client.events("kept", 5, job.epoch)]
    assert tail == list(range(6, job.last_sequence + 1))
    fresh = await start_server(db=str(tmp_path / "fresh.db"))
    assert EPOCH.fullmatch(fresh_epoch := await connected_epoch(fresh, "anything"))
    assert fresh_epoch != job.epoch


async def test_a_job_id_given_again_on_a_new_database_is_never_spliced_onto_the_old_one(
    start_server: StartServer, tmp_path: Path
) -> None:
    """The single-node version of the Redis FLUSHALL report: "reused" was a login
    form; the server came back on an empty database and "reused" is now a todo list."""
    first = await start_server(db=str(tmp_path / "before.db"))
    old = await run_job(first, "reused", "a login form")
    old_events = job_events(await read_until_closed(await ws_connect(first.ws_url("reused"))))
    assert "LoginForm" in json.dumps(old_events)
    await first.stop()

    second = await start_server(db=str(tmp_path / "after.db"))
    new = await run_job(second, "reused", "a todo list")
    assert new.epoch != old.epoch and new.last_sequence > 5
    # The subscriber of the login form saw seq 5 of it, and resumes.
    messages = await refused_ws(second, "reused", f"since=5&epoch={old.epoch}")
    assert not job_events(messages)  # none of the todo list's events
    async with second.client() as client:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            [e async for e in client.events("reused", 5, old.epoch)]
        assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert "history gone" in (info.value.details() or "")
    # What a client that sends no epoch gets: positions are trusted by seq alone, so
    # it is streamed the todo list's events 6... as if they were the login form's.
    spliced = await read_until_closed(await ws_connect(second.ws_url("reused", "since=5")))
    assert job_events(spliced)[0]["seq"] == 6 and "TodoList" in json.dumps(spliced)


# -- Redis: the report itself --------------------------------------------------------------------

@needs_redis
async def test_after_flushall_a_job_id_given_again_is_never_spliced_onto_the_old_one(
    start_server: StartServer, tmp_path: Path
) -> None:
    """The report: in cluster mode, Redis lost its data (FLUSHALL) and "reused" was
    created again; the login form's subscriber resuming with since=5 got events 6-18
    of the todo list. With its epoch it is told history is gone."""
    async with redis_server(tmp_path / "redis") as redis:
        node = await start_server(redis_url=redis.url)
        try:
            await splice_after_flushall(node, redis)
        finally:
            await node.stop()  # before its Redis


async def splice_after_flushall(node: Running, redis: RedisServer) -> None:
    """The login form's position, FLUSHALL, the todo list under the same id, the resume."""
    old = await run_job(node, "reused", "a login form")
    assert EPOCH.fullmatch(old.epoch) and old.last_sequence > 5
    async with redis.client() as r:
        await r.flushall()
    new = await run_job(node, "reused", "a todo list")  # a new epoch, made by the create
    assert new.epoch != old.epoch and new.last_sequence > 5
    assert await connected_epoch(node, "reused") == new.epoch
    messages = await refused_ws(node, "reused", f"since=5&epoch={old.epoch}")
    assert not job_events(messages) and "another lifetime" in messages[1]["data"]["error"]
    async with node.client() as client:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            [e async for e in client.events("reused", 5, old.epoch)]
        assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
        # The new job's own positions resume as usual.
        tail = [e.sequence async for e in client.events("reused", 5, new.epoch)]
    assert tail == list(range(6, new.last_sequence + 1))
