"""Redis faults under a two-node cluster: what every subscriber on both nodes must see.

Each test starts a real redis-server and two real ``chimera serve --redis`` nodes
(``a``, ``b``), creates two jobs on each (``a-1``, ``a-2``, ``b-1``, ``b-2``) whose
simulated teams pause ``--sim-delay`` s per step (so the jobs span the fault), and
subscribes to every job on both nodes over both planes (4 jobs x 2 nodes x 2 planes =
16 subscribers, :mod:`tests.fault_checker`). Then it injects one fault
(/work/shared/VERIFIED.md lists how each was tried on this Redis) and checks that every
subscriber saw each job's whole history (1..last, once each, in order), ended with its
final event, and that the final state is GetJob's on both nodes and the one final
event of the job's Redis stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import wait_for_sequence, ws_connect
from tests.fault_checker import (
    GRPC_HAS_EPOCH,
    NODE_LOST,
    Checker,
    Expect,
    exited,
    failed,
    gone,
    readyz,
    stream_request,
    succeeded,
)
from tests.processes import Node, free_port
from tests.redis_fixture import RedisServer, chimera_nodes, needs_redis

pytestmark = needs_redis

BRIEF = "a login form"  # the simulated teams: 7 steps each, ~20 events
JOBS = ("a-1", "a-2", "b-1", "b-2")
NODE_LOST_BOUND = 12.0  # lease 3 s + grace 3 s + a 1 s check, with room for load
OOM_TEXT = "out of memory"


@dataclass
class Scenario:
    redis: RedisServer
    a: Node
    b: Node
    checker: Checker

    @property
    def nodes(self) -> list[Node]:
        return [self.a, self.b]


async def create_job(node: Node, job_id: str, brief: str = BRIEF, within: float = 15.0) -> None:
    """CreateJob on ``node``, retried while it answers UNAVAILABLE (Redis not back yet)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    async with node.client() as client:
        while True:
            try:
                await client.create(brief, job_id=job_id)
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or loop.time() > deadline:
                    raise
            await asyncio.sleep(0.1)  # polled: the node's reconnect announces nothing


@contextlib.asynccontextmanager
async def scenario(
    tmp_path: Path, *flags: str, sim_delay: float = 0.5,
    redis_args: tuple[str, ...] = (),
) -> AsyncIterator[Scenario]:
    """Redis, nodes a and b, jobs a-1 a-2 (on a) b-1 b-2 (on b) under way, 16 subscribers."""
    directory = tmp_path / "redis"
    directory.mkdir()
    redis = RedisServer(directory, extra_args=redis_args)
    await redis.start()
    try:
        async with chimera_nodes(
            redis, tmp_path, 2, "--sim-delay", str(sim_delay), *flags
        ) as (a, b):
            try:
                async with Checker(redis, [a, b]) as checker:
                    for job_id in JOBS:
                        await create_job(a if job_id.startswith("a") else b, job_id)
                        checker.subscribe(job_id)
                    await checker.reached(3)  # every job under way, every subscriber reading
                    yield Scenario(redis, a, b, checker)
            finally:
                for node in (a, b):
                    node.thaw()  # a test that failed while a node was stopped
    finally:
        if redis.process is not None and redis.process.returncode is None:
            redis.thaw()
        await redis.stop()


def all_succeed() -> dict[str, Expect]:
    return dict.fromkeys(JOBS, succeeded())


async def until_ready(nodes: list[Node], status: int, within: float = 10.0) -> None:
    """Every node's /readyz answers ``status`` (polled: readiness announces nothing)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        seen = [await readyz(node) for node in nodes]
        if all(s == status for s in seen):
            return
        if loop.time() > deadline:
            dead = [line for node in nodes for line in exited(node)]
            raise AssertionError(f"/readyz {seen} (0: no answer), not all {status} within "
                                 f"{within} s\n" + "\n".join(dead))
        await asyncio.sleep(0.1)


# 1. CLIENT PAUSE (what a managed failover does): a stall shorter than the write bound.


@pytest.mark.parametrize("mode", ["ALL", "WRITE"])
async def test_client_pause_shorter_than_the_write_timeout_fails_no_job(
    tmp_path: Path, mode: str
) -> None:
    async with scenario(tmp_path) as s:
        s.checker.mark_fault()
        await s.redis.pause(5000, mode)
        await s.checker.wait_done(25)
        await s.checker.verify(all_succeed())


# 7 (held). Redis stalled outright: DEBUG SLEEP, SIGSTOP of redis-server.


async def test_debug_sleep_fails_no_job(tmp_path: Path) -> None:
    async with scenario(tmp_path, redis_args=("--enable-debug-command", "yes")) as s:
        s.checker.mark_fault()
        await s.redis.command("DEBUG", "SLEEP", "5", lasts=5)  # the fault: 5 s
        await s.checker.wait_done(25)
        await s.checker.verify(all_succeed())


async def test_redis_stopped_for_5_s_fails_no_job(tmp_path: Path) -> None:
    async with scenario(tmp_path) as s:
        s.checker.mark_fault()
        s.redis.freeze()
        try:
            await asyncio.sleep(5)  # the fault's duration
        finally:
            s.redis.thaw()
        await s.checker.wait_done(25)
        await s.checker.verify(all_succeed())


# 7 (held). A node lost: its running jobs fail "node lost" once, seen everywhere else.


async def test_a_killed_node_s_jobs_fail_node_lost_once_on_the_survivor(tmp_path: Path) -> None:
    async with scenario(tmp_path) as s:
        s.checker.mark_fault()
        s.a.kill()
        await s.a.process.wait()
        await s.checker.wait_done(NODE_LOST_BOUND + 10, skip_nodes=["a"])
        await s.checker.verify(
            {"a-1": failed("interrupted: node lost", NODE_LOST_BOUND),
             "a-2": failed("interrupted: node lost", NODE_LOST_BOUND),
             "b-1": succeeded(), "b-2": succeeded()},
            skip_nodes=["a"],
        )


async def test_a_node_stopped_past_its_lease_is_taken_over_once_and_ends_cleanly(
    tmp_path: Path,
) -> None:
    async with scenario(tmp_path) as s:
        s.checker.mark_fault()
        s.a.freeze()
        try:
            await asyncio.sleep(9)  # the fault's duration: past lease 3 s + grace 3 s + tick
        finally:
            s.a.thaw()
        # Its own subscribers (on a) end with the survivor's final event, after a
        # resume if a closed them (1013): no second ending.
        await s.checker.wait_done(30)
        await s.checker.verify(
            {"a-1": failed("interrupted: node lost", NODE_LOST_BOUND),
             "a-2": failed("interrupted: node lost", NODE_LOST_BOUND),
             "b-1": succeeded(), "b-2": succeeded()},
        )


# 2. Redis SIGKILLed, started again from its append-only file.


async def test_redis_killed_and_restarted_from_its_aof_fails_no_job(tmp_path: Path) -> None:
    # appendfsync always: SIGKILL loses nothing that write() gave the kernel, but with
    # everysec Redis may postpone a write() behind a slow fsync; "always" makes the
    # AOF hold every acknowledged write, so a lost event is the nodes' doing.
    async with scenario(tmp_path, redis_args=("--appendfsync", "always")) as s:
        s.checker.mark_fault()
        s.redis.kill()
        await s.redis.wait_killed()
        await asyncio.sleep(4.5)  # the fault's duration: Redis is down
        await s.redis.start()
        await create_job(s.b, "after")  # retried while UNAVAILABLE
        s.checker.subscribe("after")
        await s.checker.wait_done(25)
        await s.checker.verify({**all_succeed(), "after": succeeded()})


# 3. Redis out of memory: every write refused with OOM.


async def ws_create(node: Node, job_id: str) -> dict[str, Any]:
    """``create_job`` on the job's own socket; the server's first answer to it."""
    ws = await ws_connect(node.ws_url(job_id))
    try:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "connected"
        await ws.send(json.dumps({"type": "create_job", "brief": BRIEF}))
        reply: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
        return reply
    finally:
        await ws.close()


async def assert_creates_refused_out_of_memory(nodes: list[Node]) -> None:
    for node in nodes:
        async with node.client() as client:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await client.create(BRIEF, job_id=f"oom-grpc-{node.name}")
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (
            node.name, caught.value.code(), caught.value.details())
        assert OOM_TEXT in (caught.value.details() or ""), caught.value.details()
        reply = await ws_create(node, f"oom-ws-{node.name}")
        assert reply["type"] == "error", reply
        assert reply["data"]["code"] == "RESOURCE_EXHAUSTED", reply
        assert OOM_TEXT in reply["data"]["error"], reply


async def test_redis_out_of_memory_briefly_refuses_creates_then_every_job_succeeds(
    tmp_path: Path,
) -> None:
    async with scenario(tmp_path) as s:
        s.checker.mark_fault()
        started = time.monotonic()
        await s.redis.set_maxmemory(1)
        try:
            await until_ready(s.nodes, 503)
            await assert_creates_refused_out_of_memory(s.nodes)
            # The fault's duration: ~3 s of OOM, well within the 10 s write bound.
            await asyncio.sleep(max(0.0, 3.0 - (time.monotonic() - started)))
            assert [await readyz(node) for node in s.nodes] == [503, 503]  # while it lasts
        finally:
            await s.redis.set_maxmemory(0)
        await until_ready(s.nodes, 200)
        await s.checker.wait_done(25)
        for node in s.nodes:  # works again, no restart
            await create_job(node, f"after-{node.name}", within=5)
        s.checker.subscribe("after-a")
        s.checker.subscribe("after-b")
        await s.checker.wait_done(30)
        await s.checker.verify({**all_succeed(), "after-a": succeeded(), "after-b": succeeded()})


async def test_redis_out_of_memory_past_the_write_timeout_fails_every_job_once(
    tmp_path: Path,
) -> None:
    async with scenario(tmp_path, "--redis-write-timeout", "2") as s:
        s.checker.mark_fault()
        await s.redis.set_maxmemory(1)
        try:
            await asyncio.sleep(5)  # the fault's duration: OOM well past the 2 s bound
        finally:
            await s.redis.set_maxmemory(0)
        await s.checker.wait_done(25)
        await s.checker.verify(
            dict.fromkeys(JOBS, failed("events could not be recorded: Redis is out of memory"))
        )


# 3b. Redis read-only: a client left on the old primary after a failover.


async def test_redis_read_only_for_a_while_fails_no_job(tmp_path: Path) -> None:
    async with scenario(tmp_path) as s:
        s.checker.mark_fault()
        # A replica of a primary that never answers: it keeps its data and serves
        # reads, and refuses every write with READONLY.
        await s.redis.command("REPLICAOF", "127.0.0.1", str(free_port()))
        try:
            await until_ready(s.nodes, 503)
            await asyncio.sleep(3)  # the fault's duration, well within the 10 s bound
        finally:
            await s.redis.command("REPLICAOF", "NO", "ONE")
        await until_ready(s.nodes, 200)
        await s.checker.wait_done(25)
        await s.checker.verify(all_succeed())


# 4, 5. Redis lost its data: FLUSHALL, or started again empty.


async def _history_gone_then_new_jobs_stream(s: Scenario) -> None:
    for node in s.nodes:
        await create_job(node, f"new-{node.name}")
        s.checker.subscribe(f"new-{node.name}")
    await s.checker.wait_done(15)  # the new jobs take ~4 s; the old ones' bound is 5 s
    # The pre-loss jobs are NOT_FOUND on both nodes (one way everywhere); their
    # subscribers are told 4410 / OUT_OF_RANGE within 5 s, not left hanging.
    await s.checker.verify(
        {**dict.fromkeys(JOBS, gone(5.0)), "new-a": succeeded(), "new-b": succeeded()}
    )


async def test_flushall_tells_every_subscriber_history_gone_and_new_jobs_stream(
    tmp_path: Path,
) -> None:
    async with scenario(tmp_path) as s:
        s.checker.mark_fault()
        await s.redis.flushall()
        await _history_gone_then_new_jobs_stream(s)


async def test_redis_restarted_empty_tells_every_subscriber_history_gone(
    tmp_path: Path,
) -> None:
    async with scenario(tmp_path) as s:
        await s.redis.stop()
        await s.redis.start_empty()
        s.checker.mark_fault()  # measured from Redis being back
        await _history_gone_then_new_jobs_stream(s)


# 6. A job id used again after the data was lost: a resume must not cross over.


async def test_a_job_id_reused_after_flushall_is_never_resumed_across(tmp_path: Path) -> None:
    directory = tmp_path / "redis"
    directory.mkdir()
    redis = RedisServer(directory)
    await redis.start()
    problems: list[str] = []
    try:
        async with chimera_nodes(redis, tmp_path, 2, "--sim-delay", "0.2") as (a, b):
            await create_job(a, "reused", "a login form")
            ws = await ws_connect(a.ws_url("reused"))
            connected = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert connected["type"] == "connected"
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if message.get("seq", 0) >= 5:
                    break
            await ws.close()
            epoch = connected["data"].get("epoch")
            if epoch is None:  # resumed all the same, without it: what does it cross into?
                problems.append(f"no epoch in connected: {connected}")

            await redis.flushall()
            await create_job(b, "reused", "a todo list")
            async with b.client() as client:
                try:
                    await wait_for_sequence(client, "reused", 8)  # past 5: a resume could cross
                except grpc.aio.AioRpcError as exc:
                    problems.append(f"the todo list on b did not run: {exc.code().name} "
                                    f"{exc.details()!r}")
            for node in (a, b):
                url = node.ws_url("reused", 5) + ("" if epoch is None else f"&epoch={epoch}")
                resumed = await ws_connect(url)
                seen: list[dict[str, Any]] = []
                with contextlib.suppress(ConnectionClosed, TimeoutError):
                    async with asyncio.timeout(10):
                        async for raw in resumed:
                            seen.append(json.loads(raw))
                events = [m for m in seen if "seq" in m]
                if events:
                    problems.append(f"WS on {node.name}: {len(events)} events after the flush "
                                    f"(seqs {[m['seq'] for m in events]}; types "
                                    f"{[m['type'] for m in events]})")
                if resumed.close_code != 4410:
                    problems.append(f"WS on {node.name}: closed {resumed.close_code} "
                                    f"{resumed.close_reason!r}, not 4410")

                if not GRPC_HAS_EPOCH:
                    problems.append("StreamJobEventsRequest has no epoch field")
                async with node.client() as client:
                    call = client._stub.StreamJobEvents(stream_request("reused", 5, epoch))
                    sequences: list[int] = []
                    code = "OK"
                    try:
                        async with asyncio.timeout(10):
                            async for response in call:
                                sequences.append(response.event.sequence)
                    except grpc.aio.AioRpcError as exc:
                        code = exc.code().name
                    except TimeoutError:
                        code = "no end within 10 s"
                    if sequences:
                        problems.append(f"gRPC on {node.name}: events after the flush "
                                        f"(seqs {sequences})")
                    if code != "OUT_OF_RANGE":
                        problems.append(f"gRPC on {node.name}: {code}, not OUT_OF_RANGE")
    finally:
        await redis.stop()
    assert not problems, "\n".join(dict.fromkeys(problems))


def test_node_lost_is_the_servers_word() -> None:
    from chimera.actors.jobs import NODE_LOST as SERVER_NODE_LOST

    assert NODE_LOST in SERVER_NODE_LOST
