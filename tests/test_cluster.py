"""Scale-out: real ``chimera serve --redis`` processes sharing one real redis-server.

Each test starts its own redis-server (free port, temporary directory, append-only
file on) and its own nodes; nothing is mocked. Jobs are the simulated teams with
short pauses, so each test takes a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis as sync_redis

from chimera.actors.jobs import NODE_LOST
from chimera.cluster import fanout as fanout_module
from chimera.cluster.fanout import FanoutHandler, RedisFanout
from chimera.cluster.membership import LEASE_TTL
from chimera.errors import HistoryGone
from chimera.events import TeamName
from chimera.providers.base import Provider
from chimera.store.redis import RedisStore
from chimera.v1 import jobs_pb2 as pb
from chimera.v1.jobs_pb2_grpc import JobServiceStub
from tests.conftest import (
    StartServer,
    first_events,
    job_events,
    logged,
    read_until_closed,
    reconnect_randomly,
    run_job,
    until,
    wait_for_sequence,
    ws_connect,
)
from tests.doubles import ScriptedProvider, flood
from tests.fault_checker import http_status
from tests.metrics_scrape import scrape, value
from tests.processes import Node, free_port, read_text, spawn, wait_for_lines
from tests.redis_fixture import (
    RedisServer,
    chimera_nodes,
    needs_redis,
    start_node,
)
from tests.test_resume import fast_job, read_until_refused
from tests.test_shedding_retention import open_stuck_subscriber, read_frame, read_frames

pytestmark = needs_redis

NODE_LOST_BOUND = 12.0  # seconds, as docs/cluster.md promises (about 7 s; 8 at worst, idle)


async def watch_ws(node: Node, job_id: str, since: int = 0) -> list[dict[str, Any]]:
    ws = await ws_connect(node.ws_url(job_id, since))
    return job_events(await asyncio.wait_for(read_until_closed(ws), 30))


async def watch_grpc(node: Node, job_id: str, after: int = 0) -> list[int]:
    async with node.client() as client:
        return [e.sequence async for e in client.events(job_id, after)]


async def answers(url: str, status: int) -> bool:
    return await asyncio.to_thread(http_status, url) == status


async def test_a_job_on_a_is_watched_read_listed_and_resumed_on_b_and_c(
    redis: RedisServer, tmp_path: Path
) -> None:
    async with chimera_nodes(redis, tmp_path, 3) as (a, b, c):
        # Subscribers on B and C are connected (waiting) before A creates the job.
        ws_b = await ws_connect(b.ws_url("shared"))
        ws_c = await ws_connect(c.ws_url("shared"))
        for ws in (ws_b, ws_c):
            assert json.loads(await ws.recv())["type"] == "connected"
        async with a.client() as client:
            await client.create("a login form", job_id="shared", request_id="r-1")
        on_c_grpc = asyncio.create_task(watch_grpc(c, "shared"))
        seen_b, seen_c, seen_c_grpc = await asyncio.gather(
            read_until_closed(ws_b), read_until_closed(ws_c), on_c_grpc
        )
        seen_b, seen_c = job_events(seen_b), job_events(seen_c)
        seqs = [m["seq"] for m in seen_b]
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > 5  # gap-free
        assert seen_b == seen_c  # identical frames
        assert seen_c_grpc == seqs
        assert seen_b[-1]["data"]["status"] == "succeeded"

        jobs = {}
        for node in (a, b, c):
            async with node.client() as client:
                jobs[node.name] = await client.get("shared")
                listed = await client.list()
                assert [j.job_id for j in listed.jobs] == ["shared"]
        assert jobs["a"] == jobs["b"] == jobs["c"]
        assert jobs["c"].state == pb.JOB_STATE_SUCCEEDED
        assert jobs["c"].last_sequence == len(seqs)
        # The stored job is the fold of its events: thoughts (ids, texts) and code.
        for team in jobs["c"].teams:
            name = pb.Team.Name(team.team).removeprefix("TEAM_").lower()
            mine = [m for m in seen_b if m.get("team") == name]
            thoughts = [m["data"] for m in mine if m["type"] == "thought_added"]
            assert [(t.id, t.text) for t in team.thoughts] == [
                (d["id"], d["text"]) for d in thoughts
            ]
            assert team.thought_count == len(thoughts) > 0
            assert team.code == next(m["data"]["code"] for m in mine
                                     if m["type"] == "code_generated")

        # ?since=k on another node gives exactly the rest.
        k = len(seqs) // 2
        rest = await watch_ws(c, "shared", since=k)
        assert rest == seen_b[k:]

        # The same request_id on another node is the same job, not a new one.
        async with b.client() as client:
            again = await client.create("a login form", request_id="r-1")
            assert again.job_id == "shared"
            assert len((await client.list()).jobs) == 1


async def test_cancel_on_c_cancels_the_job_running_on_a(
    redis: RedisServer, tmp_path: Path
) -> None:
    async with chimera_nodes(redis, tmp_path, 3, "--sim-delay", "0.5") as (a, b, c):
        async with a.client() as client:
            await client.create("a counter", job_id="long")
        watcher = asyncio.create_task(watch_ws(b, "long"))
        async with c.client() as client:
            async with contextlib.aclosing(client.events("long")) as events:
                async for event in events:
                    if event.sequence >= 2:
                        break  # running on A
            cancelled = await asyncio.wait_for(client.cancel("long"), 10)
        assert cancelled.state == pb.JOB_STATE_CANCELLED
        seen = await watcher
        assert seen[-1]["data"]["status"] == "cancelled"
        assert [m["seq"] for m in seen] == list(range(1, len(seen) + 1))
        assert "job long finished: cancelled" in a.read_log()  # it ran, and ended, on A


async def test_owner_killed_mid_job_is_failed_node_lost_once_and_b_sees_the_end(
    redis: RedisServer, tmp_path: Path
) -> None:
    async with chimera_nodes(redis, tmp_path, 2) as (b, c):
        a = await start_node(redis, tmp_path, "owner", "--sim-delay", "0.5")
        try:
            async with a.client() as client:
                await client.create("a counter", job_id="orphan")
            ws = await ws_connect(b.ws_url("orphan"))
            seen = await first_events(ws, 3)  # the job is under way on A
            a.kill()
            killed = time.monotonic()
            seen += job_events(await asyncio.wait_for(read_until_closed(ws), NODE_LOST_BOUND))
            elapsed = time.monotonic() - killed
        finally:
            a.kill()
            await a.process.wait()
        assert elapsed < NODE_LOST_BOUND
        seqs = [m["seq"] for m in seen]
        assert seqs == list(range(1, len(seqs) + 1))
        assert seen[-1]["type"] == "status_change" and seen[-1]["data"]["status"] == "failed"
        errors = [m["data"]["error"] for m in seen if m["type"] == "error"]
        assert errors and set(errors) == {"interrupted: node lost"}
        async with c.client() as client:
            job = await client.get("orphan")
        assert job.state == pb.JOB_STATE_FAILED
        assert all(t.error == "interrupted: node lost" for t in job.teams if t.status ==
                   pb.TEAM_STATUS_ERROR)
        # Exactly once, though B and C both watch for lost nodes: one final event.
        async with redis.client() as r:
            rows: list[Any] = await r.xrange("chimera:events:orphan")  # type: ignore[assignment]
            frames = [json.loads(f[b"f"]) for _, f in rows]
        finals = [f for f in frames if f["type"] == "status_change" and "team" not in f
                  and f["data"]["status"] != "running"]
        assert len(finals) == 1
        assert [f["seq"] for f in frames] == seqs


async def test_redis_restarted_keeps_history_and_flushed_reports_history_gone(
    redis: RedisServer, tmp_path: Path
) -> None:
    async with chimera_nodes(redis, tmp_path, 2) as (a, b):
        async with a.client() as client:
            await client.create("a counter", job_id="kept")
        before = await watch_ws(b, "kept")
        await redis.restart()  # SIGTERM, then the same --dir: the append-only file replays
        # At once: a pooled connection from before the restart is retried on a new one
        # (it failed this read in 1 of 8 runs before the store did so).
        after = await watch_ws(b, "kept")
        assert after == before  # history intact
        # The nodes recover: a new job runs and is watched across nodes again.
        # (Retried while B answers UNAVAILABLE, the state it reports until its own
        # reconnect to Redis, which announces nothing a client can await.)
        for _ in range(100):
            try:
                async with b.client() as client:
                    await client.create("a counter", job_id="after-restart")
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE
                await asyncio.sleep(0.1)
        seen = await watch_ws(a, "after-restart")
        assert seen[-1]["data"]["status"] == "succeeded"

        async with redis.client() as r:
            await r.flushall()
        ws = await ws_connect(a.ws_url("kept", since=3))
        messages = await asyncio.wait_for(read_until_refused(ws), 10)
        assert ws.close_code == 4410
        assert "history gone" in messages[-1]["data"]["error"]
        async with b.client() as client:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                [e async for e in client.events("kept", 3)]
        assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE


async def test_the_first_reads_after_a_redis_restart_are_answered(redis: RedisServer) -> None:
    # Each pooled connection from before the restart fails its next command: the store
    # sends it again on a new connection instead of answering UNAVAILABLE.
    store = RedisStore(redis.url)
    await store.open()
    try:
        # Three connections in the pool: three commands at once.
        await asyncio.gather(*(store.client.blpop(["nothing"], timeout=0.1) for _ in range(3)))
        await redis.restart()
        for _ in range(3):
            assert await store.read_events("any", 0, 10) == []
    finally:
        await store.close()


async def test_a_pubsub_reader_that_loses_its_cancellation_still_stops(
    redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # redis-py can lose a cancellation that arrives as its read timeout fires
    # (redis/redis-py#2028, #2551); the reader then blocks on its next read. Seen once
    # in this file: a node's stop waited on its fan-out forever. The stop closes the
    # connection under such a reader and cancels it again.
    monkeypatch.setattr(fanout_module, "STOP_WAIT", 0.1)
    store = RedisStore(redis.url)
    await store.open()
    fanout = RedisFanout(store)
    entered = asyncio.Event()
    swallowed: list[bool] = []

    async def read_losing_a_cancellation(**options: object) -> None:
        entered.set()
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            swallowed.append(True)  # redis-py's bug, played here...
        await asyncio.get_running_loop().create_future()  # ...and the read that follows

    monkeypatch.setattr(fanout._pubsub, "get_message", read_losing_a_cancellation)
    handler = FanoutHandler(deliver=lambda events: None, gone=lambda job_ids: None,
                            cancel=lambda job_id: None)
    try:
        async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
            reader = tg.create_task(fanout.run(handler))
            await entered.wait()
            await fanout.stopped(reader)
        assert reader.cancelled() and swallowed == [True]
    finally:
        await store.close()


async def test_flushall_while_watching_tells_the_connected_subscribers_history_is_gone(
    redis: RedisServer, start_server: StartServer
) -> None:
    # Two running jobs, both held after their first thoughts: "quiet" stays held,
    # "written" is released right after FLUSHALL, so its next write is the first to
    # find the data set lost (before the node's once-a-second check, nearly always).
    holds = {"quiet": asyncio.Event(), "written": asyncio.Event()}
    current = ["quiet"]

    def providers(team: TeamName) -> Provider:
        return ScriptedProvider(["one"], hold=holds[current[0]])

    node = await start_server(providers, redis_url=redis.url)
    watchers = {}
    async with node.client() as client:
        for job_id in holds:
            current[0] = job_id
            await client.create("a counter", job_id=job_id)
            ws = await ws_connect(node.ws_url(job_id))
            seen: list[dict[str, Any]] = []
            while sum(m["type"] == "thought_added" for m in seen) < 2:  # both teams held
                seen.append(json.loads(await ws.recv()))
            stream = client.events(job_id)
            assert (await anext(stream)).sequence == 1
            watchers[job_id] = (ws, seen, stream)
        async with redis.client() as r:
            await r.flushall()
        holds["written"].set()
        # Every subscriber of both jobs, on both planes, is told history is gone: the
        # written job's by its refused write, the quiet one's by the node's check.
        for job_id, (ws, seen, stream) in watchers.items():
            seen += await asyncio.wait_for(read_until_refused(ws), 10)
            assert (ws.close_code, ws.close_reason) == (4410, "history gone"), job_id
            events = job_events(seen)
            assert [m["seq"] for m in events] == list(range(1, len(events) + 1))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async with asyncio.timeout(10):
                    async for _ in stream:
                        pass
            assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE, job_id
    holds["quiet"].set()


async def test_a_job_refused_for_good_leaves_no_reason_behind_after_recovery(
    redis: RedisServer, start_server: StartServer
) -> None:
    # Its data set flushed, the job's next write is refused and the job stopped; no
    # recovery ever gets it back, so the reason kept for one must not stay for the
    # life of the process (one string per such job, without bound).
    def providers(team: TeamName) -> Provider:
        return ScriptedProvider(["thinking"] * 600, pace=0.1)  # ends only if stopped

    node = await start_server(providers, redis_url=redis.url)
    with logged("chimera.actors.jobs", "job refused finished") as finished:
        async with node.client() as client:
            await client.create("a counter", job_id="refused")
            await wait_for_sequence(client, "refused", 3)
        async with redis.client() as r:
            await r.flushall()
        # Only a refusal stops it, and the job manager keeps the reason as it does.
        await asyncio.wait_for(finished, 10)
    jobs = node.server.jobs
    await jobs.recover(NODE_LOST)
    assert "refused" not in jobs._rejected_reasons
    # Nor does the broadcaster keep anything of it (it neither runs it nor has
    # subscribers for it).
    assert "refused" not in node.server.broadcaster.job_ids()
    assert "refused" not in node.server.broadcaster._rejected


async def test_a_lost_pubsub_message_is_filled_from_the_stream(
    redis: RedisServer, tmp_path: Path
) -> None:
    async with chimera_nodes(redis, tmp_path, 1) as (b,):
        a = await start_node(redis, tmp_path, "owner", "--sim-delay", "0.1")
        try:
            async with a.client() as client:
                await client.create("a counter", job_id="lossy")
            ws = await ws_connect(b.ws_url("lossy"))
            seen = await first_events(ws, 2)
            # A real fault: Redis drops every pub/sub connection; what A publishes
            # until B has reconnected never reaches B over pub/sub.
            async with redis.client() as r:
                killed = await r.client_kill_filter(_type="pubsub")
            assert killed >= 1
            seen += job_events(await asyncio.wait_for(read_until_closed(ws), 30))
        finally:
            await a.stop()
        seqs = [m["seq"] for m in seen]
        assert seqs == list(range(1, len(seqs) + 1))
        assert seen[-1]["data"]["status"] == "succeeded"
        # The fault did cost B pub/sub messages, and B read them from the stream.
        assert "missed on pub/sub, read from the stream" in b.read_log()


async def test_redis_down_means_not_ready_and_unavailable_then_catch_up(
    redis: RedisServer, tmp_path: Path
) -> None:
    async with chimera_nodes(redis, tmp_path, 1) as (b,):
        a = await start_node(redis, tmp_path, "owner", "--sim-delay", "0.3")
        try:
            ready = f"http://127.0.0.1:{b.ws_port}/readyz"
            assert await asyncio.to_thread(http_status, ready) == 200
            async with a.client() as client:
                await client.create("a counter", job_id="through")
            ws = await ws_connect(b.ws_url("through"))
            first = json.loads(await ws.recv())
            assert first["type"] == "connected"
            # B is delivering (its history read is done) before Redis goes: a history
            # read that finds Redis down ends the subscription, which is another test.
            seen = await first_events(ws, 1)
            await redis.stop()
            await until(lambda: answers(ready, 503), every=0.1)  # B's next lease renewal
            async with b.client() as client:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await client.create("a counter")
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            await redis.start()
            # The subscriber stayed connected and gets everything, in order, to the end.
            seen += job_events(await asyncio.wait_for(read_until_closed(ws), 30))
            await until(lambda: answers(ready, 200), every=0.1)
        finally:
            await a.stop()
        seqs = [m["seq"] for m in seen]
        assert seqs == list(range(1, len(seqs) + 1))
        assert seen[-1]["data"]["status"] == "succeeded"


async def test_one_task_uses_the_pubsub_connection_through_reconnects(
    redis: RedisServer, start_server: StartServer
) -> None:
    # redis-py's PubSub re-connects a broken connection from whichever call finds it
    # broken: a (un)subscription sent from a second task while Redis came back
    # re-connected beside the reader, the two read one stream at once (RuntimeError)
    # and the process ended (its /readyz polls were reset, then refused). The task
    # of every call on the connection is noted: one task, through re-connects.
    node = await start_server(redis_url=redis.url)
    assert node.server.cluster is not None
    pubsub = node.server.cluster.fanout._pubsub
    calls = dict.fromkeys(("get_message", "subscribe", "unsubscribe"), 0)
    tasks: set[asyncio.Task[Any] | None] = set()

    def noted(name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(pubsub, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            tasks.add(asyncio.current_task())
            return await method(*args, **kwargs)

        return call

    async def subscribed() -> bool:
        async with redis.client() as r:
            return any("P" in c["flags"] for c in await r.client_list())

    for name in calls:
        setattr(pubsub, name, noted(name))
    for i in range(5):
        ws = await ws_connect(node.ws_url(f"elsewhere-{i}"))  # followed: it runs nowhere
        assert json.loads(await ws.recv())["type"] == "connected"  # once subscribed
        await until(subscribed)  # (re-connected after the previous kill)
        async with redis.client() as r:
            assert await r.client_kill_filter(_type="pubsub") == 1  # the reader re-connects
        await ws.close()  # then unsubscribed
    await until(lambda: calls["unsubscribe"] >= 5)
    assert calls["get_message"] > 0
    assert len(tasks) == 1, calls
    assert not node.task.done()


async def test_unreachable_redis_refuses_to_start_without_showing_the_password(
    tmp_path: Path,
) -> None:
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    with pytest.raises(AssertionError) as caught:
        await spawn("x", tmp_path / "x.log", ["serve", "--redis", url, "--grpc-port", "0",
                                              "--ws-port", "0", "--no-metrics"])
    text = str(caught.value)
    assert "cannot reach Redis at redis://:***@127.0.0.1" in text
    assert "hunter2" not in text


async def test_workers_share_the_ports_and_a_killed_worker_is_replaced(
    redis: RedisServer, tmp_path: Path
) -> None:
    grpc_port, ws_port, metrics_port = free_port(), free_port(), free_port()
    log = tmp_path / "workers.log"
    parent, _, _ = await spawn("workers", log, [
        "serve", "--redis", redis.url, "--workers", "2", "--grpc-port", str(grpc_port),
        "--ws-port", str(ws_port), "--sim-delay", "0", "--metrics-port", str(metrics_port),
    ])
    try:
        node = Node("w", parent, log, grpc_port, ws_port)
        await wait_for_lines(log, SERVING_LINE, parent, 2)  # both workers listen
        owners = await _job_owners(node, redis, "first", 30)
        assert len(owners) == 2  # both workers accepted jobs on the one port
        pids = [int(p) for p in _worker_pids(read_text(log))]
        assert len(pids) == 2
        os.kill(pids[0], signal.SIGKILL)
        await wait_for_lines(log, WORKER_STARTED, parent, 3)  # started again
        assert "exited with -9; starting it again" in read_text(log)
        await wait_for_lines(log, SERVING_LINE, parent, 3)  # the new worker listens too
        owners = await _job_owners(node, redis, "second", 30)
        assert len(owners) == 2
        # One scrape shows every worker, the killed one's jobs included.
        for _ in range(4):
            samples = await scrape(metrics_port)
            assert value(samples, "chimera_jobs_created_total") == 60
    finally:
        parent.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(parent.wait(), 30) == 0
    assert "all workers stopped" in read_text(log)


SERVING_LINE = re.compile("serving gRPC on")
WORKER_STARTED = re.compile(r"worker \d started \(pid (\d+)\)")


def _worker_pids(text: str) -> list[str]:
    return WORKER_STARTED.findall(text)


async def _job_owners(node: Node, redis: RedisServer, prefix: str, count: int) -> set[str]:
    """Creates ``count`` jobs, each on a new connection (the kernel spreads those
    over the workers); returns the set of processes that ran them."""
    for i in range(count):
        # A private subchannel pool: otherwise grpc may hand a new channel the previous
        # one's connection (same target, same options), hence the same worker.
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{node.grpc_port}", options=[("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            await JobServiceStub(channel).CreateJob(
                pb.CreateJobRequest(brief="a counter", job_id=f"{prefix}-{i}")
            )
    async with redis.client() as r:
        return {str(await r.hget(f"chimera:job:{prefix}-{i}", "node")) for i in range(count)}


async def test_200_random_reconnects_to_random_nodes_lose_and_repeat_nothing(
    redis: RedisServer, start_server: StartServer
) -> None:
    # Three servers in this process, sharing nothing but the real Redis (each its own
    # store connection, fan-out subscription and lease): a long scripted job on the first.
    nodes = [await start_server(fast_job(400), redis_url=redis.url) for _ in range(3)]
    async with nodes[0].client() as client:
        await client.create("a counter", job_id="hopping")
    rng = random.Random(12)
    received = await reconnect_randomly(
        lambda since: rng.choice(nodes).ws_url("hopping", f"since={since}"), rng, 200, 8
    )
    async with nodes[2].client() as client:
        job = await client.get("hopping")
    assert received == list(range(1, job.last_sequence + 1))  # no gap, no duplicate
    assert job.last_sequence > 400


async def test_a_process_whose_loop_is_stalled_past_its_lease_keeps_it(
    redis: RedisServer, start_server: StartServer
) -> None:
    # A saturated process is alive: other nodes must not take its jobs over. The lease
    # is renewed from a thread of its own, so a loop that does nothing for longer than
    # the lease's ttl does not let it expire.
    node = await start_server(redis_url=redis.url)
    cluster = node.server.cluster
    assert cluster is not None
    await until(lambda: cluster.membership.lease.renewals > 0)
    key = f"chimera:node:{cluster.store.node}"
    seen: list[bool] = []
    stop = threading.Event()

    def watch() -> None:
        with sync_redis.Redis.from_url(redis.url) as watcher:
            while not stop.is_set():
                seen.append(bool(watcher.exists(key)))
                stop.wait(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        time.sleep(LEASE_TTL + 1.5)  # noqa: ASYNC251 - the fault under test: the loop stalls
    finally:
        stop.set()
        watcher.join()
    assert len(seen) > 20 and all(seen)


async def test_retention_on_redis_removes_old_jobs_and_resuming_them_is_history_gone(
    redis: RedisServer, start_server: StartServer
) -> None:
    keeper = await start_server(redis_url=redis.url, retention=0.5, retention_interval=0.2)
    other = await start_server(redis_url=redis.url)
    with logged("chimera.actors.retention", "retention removed") as swept:
        await run_job(other, "old")
        # The keeper's first sweep 0.5 s after the job ended removes it.
        assert (await asyncio.wait_for(swept, 10)).args == (1,)
    async with redis.client() as r:
        assert not await r.exists("chimera:job:old", "chimera:events:old")
        assert await r.zcard("chimera:jobs") == 0
    for node in (keeper, other):
        ws = await ws_connect(node.ws_url("old", "since=2"))
        await read_until_refused(ws)
        assert ws.close_code == 4410


async def test_retention_on_one_node_ends_the_reads_of_that_job_on_another(
    redis: RedisServer, start_server: StartServer
) -> None:
    sweeper = await start_server(redis_url=redis.url, retention=1e-6, retention_interval=3600.0)
    reading = await start_server(flood(3000), redis_url=redis.url)
    async with reading.client() as client:
        await client.create("a counter", job_id="big-history")

        async def finished() -> bool:
            return (await client.get("big-history")).state == pb.JOB_STATE_SUCCEEDED

        await until(finished, within=60, every=0.1)  # too fast a flood to stream it here
    # A reader of the job on this node that stops after its first event: the node's
    # writer is then reading the history, and soon waits on the socket mid-history
    # (12 MB of it; the reader's receive buffer is fixed at 64 KiB and the kernel's
    # send buffer holds a few MB, so the writer cannot reach the last page).
    reader, writer = await open_stuck_subscriber(
        reading.server.ws_port, "big-history", receive_buffer=64 * 1024
    )
    frames = [await asyncio.wait_for(read_frame(reader), 10) for _ in range(2)]
    assert [opcode for opcode, _ in frames] == [1, 1]
    connected, first = (json.loads(payload) for _, payload in frames)
    assert connected["type"] == "connected" and first["seq"] == 1
    # Swept on the other node only now: "connected" is sent before the history is
    # read, and a job removed before its first read is, to a since=0 reader, a job
    # not created yet, which it waits for (the old test swept then and hung).
    assert sweeper.server.retention is not None
    assert await sweeper.server.retention.sweep() == ["big-history"]
    # Told history is gone, not left waiting for events of a job that is no more.
    messages, code, reason = await asyncio.wait_for(read_frames(reader), 30)
    writer.close()
    seen = [1, *(m["seq"] for m in job_events(messages))]
    assert (code, reason) == (4410, "history gone")
    assert seen == list(range(1, len(seen) + 1))  # no silent gap before it
    assert len(seen) < 6000  # cut short mid-history (the job has 6,000+ events)


async def test_a_job_whose_events_cannot_be_written_past_the_bound_fails_clearly(
    redis: RedisServer, tmp_path: Path
) -> None:
    async with chimera_nodes(redis, tmp_path, 1) as (b,):
        a = await start_node(
            redis, tmp_path, "owner", "--sim-delay", "0.2", "--redis-write-timeout", "1"
        )
        try:
            async with a.client() as client:
                await client.create("a counter", job_id="stranded")
            ws = await ws_connect(a.ws_url("stranded"))
            seen = [json.loads(await ws.recv()) for _ in range(3)]
            await redis.stop()
            # A's subscriber is told, not left waiting: its job's events are not recorded.
            seen += job_events(await asyncio.wait_for(read_until_refused(ws), 30))
            # 1013 try again later, saying why (not 1001: the server is not going away).
            assert ws.close_code == 1013 and "events not recorded" in (ws.close_reason or "")
            assert "events not recorded" in a.read_log()
            await redis.start()
            # Once Redis answers again the job is closed as failed, with its final event.
            # (GetJob polled: B answers UNAVAILABLE until it has reconnected, and a
            # stream would have to be retried the same way.)
            async with b.client() as client:
                job = pb.Job()
                for _ in range(200):
                    try:
                        job = await client.get("stranded")
                    except grpc.aio.AioRpcError as exc:
                        # B may not have reconnected to the restarted Redis yet.
                        if exc.code() != grpc.StatusCode.UNAVAILABLE:
                            raise
                    else:
                        if job.state != pb.JOB_STATE_RUNNING:
                            break
                    await asyncio.sleep(0.05)
            assert job.state == pb.JOB_STATE_FAILED
            tail = await watch_ws(b, "stranded")
        finally:
            await a.stop()
        assert [m["seq"] for m in tail] == list(range(1, len(tail) + 1))
        assert tail[-1]["data"]["status"] == "failed"
        # Its teams say why, not "node lost": this process was alive, Redis was not.
        errors = {m["data"]["error"] for m in tail if m["type"] == "error"}
        assert errors == {"events could not be recorded: Redis unreachable for 1 s"}


async def test_a_job_that_ended_before_its_events_were_refused_fails_saying_why(
    redis: RedisServer, start_server: StartServer
) -> None:
    # The teams finish while Redis is down: the job's last events, the final one
    # included, wait in the write retries and are refused at the bound, after its
    # supervisor has ended. Once Redis answers the job is still closed saying why
    # (it said "interrupted: node lost": the reason was kept only for a supervisor
    # still running; seen under load in the test above).
    hold = asyncio.Event()

    def providers(team: TeamName) -> Provider:
        return ScriptedProvider(["one"], hold=hold)

    node = await start_server(providers, redis_url=redis.url, redis_write_timeout=2.0)
    async with node.client() as client:
        await client.create("a counter", job_id="late")
    ws = await ws_connect(node.ws_url("late"))
    seen: list[dict[str, Any]] = []
    while sum(m["type"] == "thought_added" for m in seen) < 2:  # both teams held
        seen.append(json.loads(await ws.recv()))
    with (
        logged("chimera.actors.jobs", "job late finished") as finished,
        logged("chimera.actors.broadcaster", "job late: events not recorded") as refused,
        logged("chimera.actors.jobs", "marked 1 interrupted") as recovered,
    ):
        await redis.stop()
        hold.set()
        ended, refusal = await asyncio.wait_for(asyncio.gather(finished, refused), 30)
        assert ended.created <= refusal.created  # the case under test: ended, then refused
        await redis.start()
        await asyncio.wait_for(recovered, 30)
    await ws.close()

    jobs: list[pb.Job] = []

    async def failed() -> bool:
        try:
            jobs.append(await client.get("late"))
        except grpc.aio.AioRpcError as exc:
            # A pooled Redis connection from before the restart fails its first use.
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            return False
        return jobs[-1].state == pb.JOB_STATE_FAILED

    async with node.client() as client:
        await until(failed, within=30, every=0.05)  # the recovery's events recorded
    assert {t.error for t in jobs[-1].teams} == {
        "events could not be recorded: Redis unreachable for 2 s"
    }


async def test_after_a_takeover_the_survivors_subscribers_get_what_pubsub_had_missed(
    redis: RedisServer, start_server: StartServer, tmp_path: Path
) -> None:
    # The owner records events B's fan-out never hands on (pub/sub lost them, and
    # nothing came after to show the gap: the owner died), then dies. B takes the job
    # over and closes it: its subscribers must get the missing events from the stream
    # before B's own, not a jump from the last one pub/sub brought.
    b = await start_server(redis_url=redis.url)
    assert b.server.cluster is not None
    fanout = b.server.cluster.fanout
    a = await start_node(redis, tmp_path, "owner", "--sim-delay", "0.3")
    try:
        async with a.client() as client:
            await client.create("a counter", job_id="adopted")
        ws = await ws_connect(b.ws_url("adopted"))
        seen = await first_events(ws, 2)
        deliver = fanout._deliver
        fanout._deliver = lambda events: None  # the fault: these messages are lost

        async def recorded_more() -> bool:
            async with redis.client() as r:
                seq = int(await r.hget("chimera:job:adopted", "seq") or 0)
            return seq >= int(seen[-1]["seq"]) + 3

        await until(recorded_more, every=0.05)
        a.kill()
        fanout._deliver = deliver
        seen += job_events(await asyncio.wait_for(read_until_closed(ws), 30))
    finally:
        a.kill()
        await a.process.wait()
    seqs = [m["seq"] for m in seen]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert seen[-1]["data"]["status"] == "failed"
    assert {m["data"]["error"] for m in seen if m["type"] == "error"} == {NODE_LOST}


async def test_retention_on_one_node_tells_the_readers_on_every_node_at_once(
    redis: RedisServer, start_server: StartServer
) -> None:
    # A reader on another node that is not reading just now (its client is slow, its
    # next history page far off) is told at the sweep, over the control channel, not
    # only when its next read happens to find the job gone.
    sweeper = await start_server(redis_url=redis.url, retention=1e-6, retention_interval=3600.0)
    reading = await start_server(redis_url=redis.url)
    await run_job(reading, "swept")
    subscription = reading.server.broadcaster.subscribe("swept", 3)
    try:
        assert sweeper.server.retention is not None
        assert await sweeper.server.retention.sweep() == ["swept"]
        error = await asyncio.wait_for(subscription.failed(), 5)
    finally:
        subscription.close()
    assert isinstance(error, HistoryGone) and error.after_seq == 3
