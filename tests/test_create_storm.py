"""CreateJob storms: 1,500 at once on one channel all answered; a shutdown in the
middle of one leaves no refused job behind and every job that exists ended."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import grpc

from chimera.events import TeamName
from tests.conftest import StartServer
from tests.doubles import ScriptedProvider, factory


async def test_shutdown_during_a_create_storm_leaves_no_job_unfinished(
    start_server: StartServer, tmp_path: Path
) -> None:
    db = tmp_path / "storm.db"
    server = await start_server(db=str(db), max_jobs_per_caller=1000, sim_delay=0.05)
    answers: dict[str, grpc.StatusCode] = {}
    async with server.client() as client:

        async def create(job_id: str) -> None:
            try:
                await client.create("a counter", job_id=job_id)
                answers[job_id] = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                answers[job_id] = exc.code()

        calls = [asyncio.ensure_future(create(f"storm-{i}")) for i in range(300)]
        # Stop once some are created and many are still on their way.
        while len(answers) < 20:
            await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED, timeout=5)
        server.server.stop()
        await asyncio.wait_for(asyncio.gather(*calls), 60)
        await asyncio.wait_for(server.task, 60)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        stored = dict(conn.execute("SELECT job_id, state FROM jobs").fetchall())
        last = dict(conn.execute("SELECT job_id, max(seq) FROM events GROUP BY job_id"))
    refused = {j for j, code in answers.items() if code == grpc.StatusCode.UNAVAILABLE}
    created = {j for j, code in answers.items() if code == grpc.StatusCode.OK}
    assert created, answers  # (and usually some UNAVAILABLE, most CANCELLED by the stop)
    assert not refused & set(stored), "a job the client was refused exists"
    assert created <= set(stored)
    unfinished = {j: s for j, s in stored.items() if s == "running" or j not in last}
    assert not unfinished, unfinished  # every stored job ended, with its final event


async def test_1500_concurrent_creates_on_one_channel_all_succeed(
    start_server: StartServer,
) -> None:
    # grpc's core cancelled calls waiting beyond its default 1,000 pending (CANCELLED,
    # no reason, no job); the server now allows MAX_PENDING_CALLS.
    instant = factory({team: (lambda: ScriptedProvider([])) for team in TeamName})
    server = await start_server(instant, max_jobs_per_caller=5000)
    async with server.client() as client:
        results = await asyncio.gather(
            *(client.create("a counter") for _ in range(1500)), return_exceptions=True
        )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures[:3]
