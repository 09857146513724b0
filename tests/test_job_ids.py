"""Job ids and request ids: never reused, scoped to their caller, no existence oracle."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import pytest
from websockets.exceptions import ConnectionClosedError

from chimera.client import JobsClient
from chimera.ids import new_job_id
from chimera.v1 import jobs_pb2 as pb
from tests.conftest import Running, StartServer, run_job, ws_connect
from tests.security import SECRET, token


async def refusal(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


async def sweep_until_removed(server: Running, job_id: str) -> None:
    """Retention (max age 0.01 s, swept only here) removes the finished ``job_id``."""
    retention = server.server.retention
    assert retention is not None
    for _ in range(100):
        if job_id in await retention.sweep():
            return
        await asyncio.sleep(0.02)  # its end time is not yet 0.01 s in the past
    raise AssertionError(f"retention never removed {job_id}")


async def test_a_request_id_reused_with_another_job_id_is_failed_precondition(
    start_server: StartServer,
) -> None:
    server = await start_server()
    async with server.client() as client:
        first = await client.create("a counter", job_id="one", request_id="r")
        again = await client.create("a counter", job_id="one", request_id="r")
        assert again.job_id == first.job_id == "one"
        other = await refusal(client.create("a counter", job_id="two", request_id="r"))
        assert other.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "request_id 'r' was already used" in (other.details() or "")
        missing = await refusal(client.get("two"))
        assert missing.code() == grpc.StatusCode.NOT_FOUND  # nothing was created


async def test_an_id_removed_by_retention_is_never_reused(start_server: StartServer) -> None:
    server = await start_server(retention=0.01, retention_interval=3600.0)
    await run_job(server, "reused")
    await sweep_until_removed(server, "reused")
    async with server.client() as client:
        taken = await refusal(client.create("a different job", job_id="reused"))
        assert taken.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "not available" in (taken.details() or "")
        # Resuming the old job is history gone, never events of another job.
        gone = await refusal(anext(client.events("reused", 5)))
        assert gone.code() == grpc.StatusCode.OUT_OF_RANGE
    ws = await ws_connect(server.ws_url("reused", "since=5"))
    with pytest.raises(ConnectionClosedError) as closed:
        while True:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4410


async def test_request_ids_are_per_caller_and_a_taken_id_reveals_nothing_more(
    start_server: StartServer,
) -> None:
    server = await start_server(
        jwt_secret=SECRET, retention=0.01, retention_interval=3600.0
    )
    alice = JobsClient(server.grpc_target, token=token("alice"))
    bob = JobsClient(server.grpc_target, token=token("bob"))
    async with alice, bob:
        await bob.create("a counter", job_id="bobs-old")
        async for _ in bob.events("bobs-old"):
            pass
        await sweep_until_removed(server, "bobs-old")
        await alice.create("a counter", job_id="alices", request_id="shared")
        # Bob's request id is his own: a new job of his, not Alice's, no refusal.
        mine = await bob.create("a counter", request_id="shared")
        assert mine.job_id != "alices"
        assert (await bob.create("a counter", request_id="shared")).job_id == mine.job_id
        assert (await bob.get(mine.job_id)).job_id == mine.job_id
        # Alice's id, Bob's own retired id and Bob's running id: one answer.
        answers = set()
        for job_id in ("alices", "bobs-old", mine.job_id):
            refused = await refusal(bob.create("anything", job_id=job_id))
            assert refused.code() == grpc.StatusCode.ALREADY_EXISTS
            answers.add((refused.details() or "").replace(job_id, "ID"))
        assert len(answers) == 1, answers
        # And Alice's job reads like a missing one for Bob.
        assert (await refusal(bob.get("alices"))).code() == grpc.StatusCode.NOT_FOUND
        assert (await alice.get("alices")).state in (pb.JOB_STATE_RUNNING, pb.JOB_STATE_SUCCEEDED)


async def test_a_generated_job_id_is_a_uuid7_that_sorts_by_creation(
    start_server: StartServer,
) -> None:
    """Ids the server makes are UUID version 7: time first, so jobs created one after
    another sort together and the store's indexes grow at their right edge."""
    before_ms = time.time_ns() // 1_000_000
    server = await start_server()
    async with server.client() as client:
        made = [(await client.create(f"a counter {i}")).job_id for i in range(3)]
    for job_id in made:
        parsed = uuid.UUID(job_id)
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
        assert str(parsed) == job_id  # the canonical lowercase form
        assert before_ms <= parsed.int >> 80 <= time.time_ns() // 1_000_000
    assert len(set(made)) == 3
    # Milliseconds apart, in creation order whatever the random bits say.
    ids = [new_job_id(now_ms) for now_ms in (1_000, 1_001, 1_002, 2**48 - 1)]
    assert ids == sorted(ids)
    assert [uuid.UUID(i).int >> 80 for i in ids] == [1_000, 1_001, 1_002, 2**48 - 1]
