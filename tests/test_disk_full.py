"""A full disk (a real, small tmpfs) must not take the server down."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from chimera.events import TeamName
from chimera.providers.base import Provider
from chimera.providers.simulated import SimulatedProvider
from chimera.v1 import jobs_pb2 as pb
from tests.conftest import StartServer, logged, read_until_closed, run_job, until, ws_connect
from tests.doubles import ScriptedProvider
from tests.filesystems import remount, tmpfs

STORAGE_CODES = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)


async def test_disk_full_refuses_new_jobs_fails_the_writer_keeps_reads_and_recovers(
    start_server: StartServer, tmp_path: Path
) -> None:
    floods = 0

    def providers(team: TeamName) -> Provider:
        nonlocal floods
        if floods:  # this job's teams write 8 KB thoughts until the disk is full
            floods -= 1
            return ScriptedProvider(["x" * 8000] * 100_000)
        return SimulatedProvider(team.value, delay=0)

    with tmpfs(tmp_path / "small", "3m") as small:
        server = await start_server(providers, db=str(small / "chimera.db"))
        done = await run_job(server, "done")
        async with server.client() as client:
            floods = 2
            with logged("chimera.actors.broadcaster", "cannot record events") as full:
                await client.create("fill the disk", job_id="victim")
                # The broadcaster reports the first write that fails (and from then
                # on refuses new jobs) ...
                await asyncio.wait_for(full, 60)
            # ... so CreateJob says so.
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.create("a probe", request_id="probe")
            refused = info.value
            assert refused.code() in STORAGE_CODES, refused
            assert "storage" in (refused.details() or ""), refused.details()
            # Reads keep working: snapshots, history on both planes.
            assert await client.get("done") == done
            assert (await client.get("victim")).state == pb.JOB_STATE_RUNNING
            history = [e.sequence async for e in client.events("done")]
            assert history == list(range(1, done.last_sequence + 1))
            ws = await ws_connect(server.ws_url("done"))
            assert (await read_until_closed(ws))[-1]["seq"] == done.last_sequence
            assert not server.task.done()

            remount(small, "size=64m")  # space is back: the server recovers by itself

            async def victim_ended() -> bool:  # GetJob: a stream from 0 would be shed
                return (await client.get("victim")).state != pb.JOB_STATE_RUNNING

            await until(victim_ended, 30, every=0.05)
            victim = await client.get("victim")
            assert victim.state == pb.JOB_STATE_FAILED
            for run in victim.teams:
                assert "could not be recorded" in run.error and "full" in run.error, run.error
            after = await client.create("after the disk was full", job_id="after")
            async for _ in client.events(after.job_id):
                pass
            assert (await client.get("after")).state == pb.JOB_STATE_SUCCEEDED
        await server.stop()
