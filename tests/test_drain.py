"""Graceful drain: real ``chimera serve`` processes sent SIGTERM mid-job.

The first SIGTERM (or SIGINT) drains: not ready, new jobs refused (``UNAVAILABLE``,
"draining"), running jobs run to their end and their subscribers get the final
event, then the process exits 0; ``--drain-timeout`` bounds the wait; a second
signal stops at once. In a cluster, streams of other nodes' jobs are closed 1012
at the start of the drain and resume on another node.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosedError

from chimera.v1 import jobs_pb2 as pb
from tests.conftest import first_events, http_answer, job_events, read_until_closed, ws_connect
from tests.processes import (
    DRAINING,
    Node,
    chimera_serve,
    free_port,
    read_text,
    spawn,
    wait_for_lines,
)
from tests.redis_fixture import RedisServer, needs_redis, start_node

DRAINED = re.compile(r"drained: no job running")
DRAIN_TIMEOUT = re.compile(r"drain timeout \(1 s\): interrupting the jobs still running")
AT_ONCE = re.compile(r"stopping at once: interrupting the jobs still running")
SERVING_LINE = re.compile("serving gRPC on")
FINISHED = re.compile(r"job (\S+) finished: (\w+)")


def readyz(node: Node) -> tuple[int, str]:
    """``GET /readyz``: status and body (sync: run in a thread)."""
    return http_answer(f"http://127.0.0.1:{node.ws_port}/readyz")


async def exit_code(node: Node, within: float = 30.0) -> int:
    return await asyncio.wait_for(node.process.wait(), within)


async def read_until_refused(ws: ClientConnection) -> list[dict[str, Any]]:
    """Every message until the server closes the connection with an error code."""
    messages = []
    try:
        async for raw in ws:
            messages.append(json.loads(raw))
    except ConnectionClosedError:
        pass
    return messages


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [m["seq"] for m in events]


async def test_sigterm_drains_the_running_job_to_its_end_and_exits_0(tmp_path: Path) -> None:
    async with chimera_serve(
        tmp_path / "chimera.db", tmp_path / "serve.log", "--sim-delay", "0.5", "--no-metrics",
    ) as node:
        async with node.client() as client:
            await client.create("Create a login form", job_id="running")
        ws = await ws_connect(node.ws_url("running"))
        assert json.loads(await ws.recv())["type"] == "connected"
        page = await ws_connect(node.ws_url("page"))  # a page that will submit its job
        assert json.loads(await page.recv())["type"] == "connected"
        seen = await first_events(ws, 2)  # the job is under way
        node.drain()
        await wait_for_lines(node.log, DRAINING, node.process)
        # Not ready, saying why, at once.
        assert await asyncio.to_thread(readyz, node) == (503, "not ready: draining\n")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{node.grpc_port}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest()
            )
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
        async with node.client() as client:
            # New jobs are refused, on both planes, with the table's code.
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.create("another brief")
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert refused.value.details() == "server is draining: submit to another server"
            await page.send(json.dumps({"type": "create_job", "brief": "a form"}))
            reply = json.loads(await page.recv())
            assert reply["type"] == "error"
            assert reply["data"]["code"] == "UNAVAILABLE"
            assert "draining" in reply["data"]["error"]
            # Reads and new subscriptions of the running job go on.
            job = await client.get("running")
            assert job.state == pb.JOB_STATE_RUNNING
            listed = await client.list()
            assert [j.job_id for j in listed.jobs] == ["running"]
            streamed = [e.sequence async for e in client.events("running")]
        seen += job_events(await read_until_closed(ws))
        assert ws.close_code == 1000
        assert seqs(seen) == list(range(1, len(seen) + 1))
        assert seen[-1]["data"] == {"status": "succeeded"}
        assert not [m for m in seen if m["type"] == "error"]
        assert streamed == seqs(seen)  # the stream opened during the drain got it all
        assert await exit_code(node) == 0
        log = node.read_log()
    assert DRAINED.search(log)
    assert FINISHED.findall(log) == [("running", "succeeded")]
    assert "Traceback" not in log


async def test_the_drain_timeout_interrupts_the_jobs_still_running(tmp_path: Path) -> None:
    async with chimera_serve(
        tmp_path / "chimera.db", tmp_path / "serve.log",
        "--sim-delay", "5", "--drain-timeout", "1", "--no-metrics",
    ) as node:
        async with node.client() as client:
            await client.create("Create a login form", job_id="long")
        ws = await ws_connect(node.ws_url("long"))
        seen = await first_events(ws, 1)
        node.drain()
        seen += job_events(await read_until_closed(ws))
        assert ws.close_code == 1000
        assert await exit_code(node) == 0  # as a shutdown without a drain
        log = node.read_log()
    assert seqs(seen) == list(range(1, len(seen) + 1))
    assert seen[-1]["data"] == {"status": "failed"}
    errors = [m["data"]["error"] for m in seen if m["type"] == "error"]
    assert errors == ["interrupted: server stopped"] * 2
    assert DRAIN_TIMEOUT.search(log)


async def test_a_second_sigterm_stops_at_once(tmp_path: Path) -> None:
    async with chimera_serve(
        tmp_path / "chimera.db", tmp_path / "serve.log", "--sim-delay", "5", "--no-metrics",
    ) as node:
        async with node.client() as client:
            await client.create("Create a login form", job_id="long")
        ws = await ws_connect(node.ws_url("long"))
        seen = await first_events(ws, 1)
        node.drain()
        await wait_for_lines(node.log, DRAINING, node.process)
        node.drain()  # the second SIGTERM
        # At once: well before the job's end (its 5 s steps: about 40 s) and the
        # 120 s drain timeout.
        seen += job_events(await asyncio.wait_for(read_until_closed(ws), 10))
        assert seen[-1]["data"] == {"status": "failed"}
        errors = [m["data"]["error"] for m in seen if m["type"] == "error"]
        assert errors == ["interrupted: server stopped"] * 2
        assert await exit_code(node, within=10) == 0
        log = node.read_log()
    assert AT_ONCE.search(log)


@needs_redis
async def test_a_draining_node_hands_other_nodes_jobs_subscribers_on_with_1012(
    redis: RedisServer, tmp_path: Path
) -> None:
    a = await start_node(redis, tmp_path, "a", "--sim-delay", "0.3")
    b = await start_node(redis, tmp_path, "b", "--sim-delay", "0.3")
    try:
        async with a.client() as on_a, b.client() as on_b:
            await on_b.create("Create a login form", job_id="on-b")
            await on_a.create("Create a login form", job_id="on-a")
            # Through A: B's job (WebSocket and gRPC), and A's own job.
            watch_b = await ws_connect(a.ws_url("on-b"))
            watch_a = await ws_connect(a.ws_url("on-a"))
            seen_b = await first_events(watch_b, 2)
            seen_a = await first_events(watch_a, 1)
            grpc_b = on_a.events("on-b")
            assert (await anext(grpc_b)).sequence == 1
            a.drain()
            await wait_for_lines(a.log, DRAINING, a.process)
            # B's job's subscribers on A are closed 1012 at once, after what was queued.
            seen_b += job_events(await read_until_refused(watch_b))
            assert watch_b.close_code == 1012
            assert watch_b.close_reason == "server is draining: resume on another server"
            fresh = await ws_connect(a.ws_url("on-b", seen_b[-1]["seq"]))  # new ones too
            assert not job_events(await read_until_refused(fresh))
            assert fresh.close_code == 1012
            with pytest.raises(grpc.aio.AioRpcError) as closed:
                async for _ in grpc_b:
                    pass
            assert closed.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "draining" in (closed.value.details() or "")
            # ... while A's own job still runs, streamed from A.
            assert (await on_b.get("on-a")).state == pb.JOB_STATE_RUNNING
            # They resume on B: the rest, with no gap and no duplicate.
            last = seen_b[-1]["seq"]
            resumed = await ws_connect(b.ws_url("on-b", last))
            seen_b += job_events(await read_until_closed(resumed))
            assert resumed.close_code == 1000
            assert seqs(seen_b) == list(range(1, len(seen_b) + 1))
            assert seen_b[-1]["data"] == {"status": "succeeded"}
            # A's own job's subscriber stays to its end.
            seen_a += job_events(await read_until_closed(watch_a))
            assert watch_a.close_code == 1000
            assert seqs(seen_a) == list(range(1, len(seen_a) + 1))
            assert seen_a[-1]["data"] == {"status": "succeeded"}
        assert await exit_code(a) == 0
    finally:
        await a.stop()
        await b.stop()


@needs_redis
async def test_workers_drain_on_the_parents_sigterm_and_a_second_one_stops_them(
    redis: RedisServer, tmp_path: Path
) -> None:
    grpc_port, ws_port = free_port(), free_port()
    log = tmp_path / "workers.log"
    parent, _, _ = await spawn("workers", log, [
        "serve", "--redis", redis.url, "--workers", "2", "--grpc-port", str(grpc_port),
        "--ws-port", str(ws_port), "--sim-delay", "5", "--no-metrics",
    ])
    try:
        await wait_for_lines(log, SERVING_LINE, parent, 2)  # both workers listen
        workers = Node("w", parent, log, grpc_port, ws_port)
        async with workers.client() as client:
            await client.create("Create a login form", job_id="long")
        parent.send_signal(signal.SIGTERM)
        await wait_for_lines(log, DRAINING, parent, 2)  # sent on: each worker drains
        parent.send_signal(signal.SIGTERM)  # the second: sent on too, they stop at once
        # Well before the job's end (its 5 s steps: about 40 s) and the drain timeout.
        assert await asyncio.wait_for(parent.wait(), 10) == 0
    finally:
        if parent.returncode is None:
            parent.kill()
        await parent.wait()
    text = read_text(log)
    assert "all workers stopped" in text
    # The worker without a job drained at once; the job's stopped at the second signal.
    assert len(DRAINED.findall(text)) == 1 and len(AT_ONCE.findall(text)) == 1
    later = await start_node(redis, tmp_path, "later")
    try:
        async with later.client() as client:
            job = await client.get("long")
        assert job.state == pb.JOB_STATE_FAILED
        assert {t.error for t in job.teams} == {"interrupted: server stopped"}
    finally:
        await later.stop()
