"""The promises under the serving paths (issue 21): a real ``chimera serve`` on
uvloop (its default), many fast jobs at once so each commit carries events of
many jobs: ordering per job under 200 concurrent jobs, gap-free resume, and
durable before seen across a SIGKILL. (Shedding with 4008 on uvloop:
``test_shed_served.py``.)"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from chimera.client import JobsClient
from chimera.v1 import jobs_pb2 as pb
from tests.conftest import job_events, read_until_closed, reconnect_randomly, ws_connect
from tests.metrics_scrape import Samples, scrape, value
from tests.processes import Node, chimera_serve, free_port

MANY = ("--max-jobs-per-caller", "1000", "--max-subscribers-per-address", "2000")


def events_per_commit(samples: Samples) -> float:
    count = value(samples, "chimera_store_commit_events_count")
    return value(samples, "chimera_store_commit_events_sum") / max(count, 1)


@dataclass
class Seen:
    """One subscriber's whole history: its seqs, its last event, how it closed."""

    plane: str
    job_id: str
    seqs: list[int] = field(default_factory=list)
    last: dict[str, Any] | None = None
    close_code: int | None = None


async def watch_ws(node: Node, job_id: str, connected: asyncio.Event | None = None) -> Seen:
    seen = Seen("ws", job_id)
    ws = await ws_connect(node.ws_url(job_id), max_queue=None)
    assert json.loads(await ws.recv())["type"] == "connected"
    if connected is not None:
        connected.set()
    for message in job_events(await read_until_closed(ws)):
        seen.seqs.append(message["seq"])
        seen.last = message
    seen.close_code = ws.close_code
    return seen


async def watch_grpc(client: JobsClient, job_id: str) -> Seen:
    seen = Seen("grpc", job_id)
    async for event in client.events(job_id):
        seen.seqs.append(event.sequence)
        seen.last = {"seq": event.sequence, "kind": event.WhichOneof("kind"),
                     "team": event.team, "job_state": event.status_change.job_state}
    return seen


async def test_200_concurrent_jobs_each_subscriber_sees_its_job_in_order(
    tmp_path: Path,
) -> None:
    metrics = free_port()
    async with chimera_serve(
        tmp_path / "c.db", tmp_path / "serve.log", "--sim-delay", "0.01",
        "--metrics-port", str(metrics), *MANY,
    ) as node:
        assert "(event loop: uvloop" in node.read_log()
        ids = [f"many-{i}" for i in range(200)]
        async with node.client() as client:
            # Every job has a WebSocket subscriber before it exists (live fan-out from
            # its first event), a quarter a second one over gRPC.
            connected = [asyncio.Event() for _ in ids]
            ws_watch = [asyncio.create_task(watch_ws(node, j, c))
                        for j, c in zip(ids, connected, strict=True)]
            await asyncio.wait_for(asyncio.gather(*(c.wait() for c in connected)), 20)
            grpc_watch = [asyncio.create_task(watch_grpc(client, j)) for j in ids[::4]]
            await asyncio.gather(*(client.create("a counter", job_id=j) for j in ids))
            seen = await asyncio.wait_for(asyncio.gather(*ws_watch, *grpc_watch), 60)
            jobs = {j: await client.get(j) for j in ids}
        samples = await scrape(metrics)
    for one in seen:
        job = jobs[one.job_id]
        assert job.state == pb.JOB_STATE_SUCCEEDED, one
        # 1..last, no gap, no duplicate, in order; ending with the job's final event.
        assert one.seqs == list(range(1, job.last_sequence + 1)), one
        assert one.last is not None
        if one.plane == "ws":
            assert one.close_code == 1000, one
            assert one.last["data"] == {"status": "succeeded"}, one
        else:  # the job's own status change (no team): succeeded
            assert one.last["kind"] == "status_change" and not one.last["team"], one
            assert one.last["job_state"] == pb.JOB_STATE_SUCCEEDED, one
    assert len(seen) == 250
    # The load this is about: commits carried the events of many jobs at once.
    assert events_per_commit(samples) > 4, events_per_commit(samples)


async def test_reconnecting_subscribers_of_many_jobs_lose_and_repeat_nothing(
    tmp_path: Path,
) -> None:
    metrics = free_port()
    async with chimera_serve(
        tmp_path / "c.db", tmp_path / "serve.log", "--sim-delay", "0.01",
        "--metrics-port", str(metrics), *MANY,
    ) as node:
        ids = [f"flaky-{i}" for i in range(24)]
        async with node.client() as client:
            # Steady subscribers keep the other jobs busy (commits span jobs) while
            # each job's flaky ones leave and resume with since / after_sequence.
            steady = [asyncio.create_task(watch_ws(node, j)) for j in ids]
            await asyncio.gather(*(client.create("a counter", job_id=j) for j in ids))
            flaky_ws = [
                reconnect_randomly(functools.partial(node.ws_url, j), random.Random(i), 6, 4)
                for i, j in enumerate(ids)
            ]
            flaky_grpc = [grpc_reconnecting(client, j, random.Random(100 + i))
                          for i, j in enumerate(ids)]
            received = await asyncio.wait_for(asyncio.gather(*flaky_ws, *flaky_grpc), 30)
            await asyncio.wait_for(asyncio.gather(*steady), 30)
            jobs = [await client.get(j) for j in ids]
        samples = await scrape(metrics)
    for seqs, job in zip(received, jobs + jobs, strict=True):
        assert seqs == list(range(1, job.last_sequence + 1)), (job.job_id, seqs)
    assert events_per_commit(samples) > 2, events_per_commit(samples)


async def grpc_reconnecting(client: JobsClient, job_id: str, rng: random.Random) -> list[int]:
    """A gRPC subscriber that cancels its stream after a few events and resumes with
    after_sequence, until a stream ends by itself (after the job's final event)."""
    received: list[int] = []
    while True:
        stream = client.events(job_id, received[-1] if received else 0)
        take = rng.randint(1, 5)
        async for event in stream:
            received.append(event.sequence)
            take -= 1
            if take == 0:
                break
        else:
            return received
        await stream.aclose()


@dataclass
class KillWhenUnderWay:
    """SIGKILLs ``node`` the moment an event arrives once every job has been seen
    streaming (``needed`` events each) and ``armed`` is set: right after a fan-out,
    while the commits around it are in progress (a kill at a random moment would
    mostly land between commits)."""

    node: Node
    seen: dict[str, list[dict[str, Any]]]
    needed: int = 4
    armed: bool = False
    under_way: asyncio.Event = field(default_factory=asyncio.Event)

    def saw(self) -> None:
        if min(len(s) for s in self.seen.values()) >= self.needed:
            self.under_way.set()
            if self.armed:
                self.node.kill()


async def read_until_dropped(
    ws: ClientConnection, seen: list[dict[str, Any]], kill: KillWhenUnderWay
) -> None:
    """Every job event until the connection drops."""
    try:
        async for raw in ws:
            message = json.loads(raw)
            if "seq" in message:
                seen.append(message)
                kill.saw()
    except ConnectionClosed:
        pass


ROUNDS = 4  # a kill lands inside a commit's window about half the time: 4 tries


async def test_sigkill_while_many_jobs_stream_loses_nothing_any_subscriber_saw(
    tmp_path: Path,
) -> None:
    """ROUNDS times: 40 jobs stream to their subscribers, the server is SIGKILLed
    and started again on the same file, and every event any subscriber saw is
    there, the same, in its place."""
    db = tmp_path / "c.db"
    seen: dict[str, list[dict[str, Any]]] = {}
    for round_ in range(ROUNDS + 1):
        metrics = free_port()
        async with chimera_serve(
            db, tmp_path / f"serve-{round_}.log", "--sim-delay", "0.05",
            "--metrics-port", str(metrics), *MANY,
        ) as node:
            await check_stored(node, seen)
            if round_ == ROUNDS:
                break
            seen = {f"killed-{round_}-{i}": [] for i in range(40)}
            await stream_then_kill(node, metrics, seen)


async def stream_then_kill(node: Node, metrics: int, seen: dict[str, list[dict[str, Any]]]) -> None:
    kill = KillWhenUnderWay(node, seen)
    sockets = {j: await ws_connect(node.ws_url(j), max_queue=None) for j in seen}
    for ws in sockets.values():
        assert json.loads(await ws.recv())["type"] == "connected"
    readers = [asyncio.create_task(read_until_dropped(ws, seen[j], kill))
               for j, ws in sockets.items()]
    async with node.client() as client:
        await asyncio.gather(*(client.create("a counter", job_id=j) for j in seen))
    # Once every job streams, not right after the creates: until then most commits
    # are the creates' own (a loaded machine gets there slowly).
    await asyncio.wait_for(kill.under_way.wait(), 20)
    batched = events_per_commit(await scrape(metrics))
    kill.armed = True  # every job is past its first events: the next one to arrive kills
    await asyncio.wait_for(node.process.wait(), 20)
    assert node.process.returncode == -signal.SIGKILL
    # Whatever was already on its way is still read; then each connection drops.
    await asyncio.wait_for(asyncio.gather(*readers), 30)
    assert batched > 2, batched  # the commits carried several jobs' events
    assert any(s[-1]["data"].get("status") is None for s in seen.values())  # killed mid-way


async def check_stored(node: Node, seen: dict[str, list[dict[str, Any]]]) -> None:
    async with node.client() as client:
        for j, saw in seen.items():
            everything = job_events(await read_until_closed(await ws_connect(node.ws_url(j))))
            # Every event a subscriber saw is stored, the same, in its place.
            assert everything[: len(saw)] == saw, j
            job = await client.get(j)
            assert job.last_sequence == everything[-1]["seq"] >= len(saw)
