"""A job whose supervisor crashes still ends, with its final event, like a recovered one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from chimera.actors.supervisor import JobSupervisor
from chimera.actors.team import TeamActor
from chimera.v1 import jobs_pb2 as pb
from tests.conftest import StartServer, read_until_closed, ws_connect


async def test_a_crashed_supervisor_ends_its_job_failed_with_a_final_event(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def crash(self: JobSupervisor, team: TeamActor) -> None:
        raise RuntimeError("a bug in the supervisor")

    monkeypatch.setattr(JobSupervisor, "_run_team", crash)  # the fault, in the real server
    server = await start_server()
    ws = await ws_connect(server.ws_url("crashing"))
    async with server.client() as client:
        await client.create("a counter", job_id="crashing")
        events = await asyncio.wait_for(
            asyncio.gather(
                read_until_closed(ws), _stream(client.events("crashing"))
            ), 20,
        )
        messages, streamed = events
        assert messages[-1]["data"] == {"status": "failed"} and ws.close_code == 1000
        assert streamed[-1].status_change.status == "failed"
        job = await client.get("crashing")
        assert job.state == pb.JOB_STATE_FAILED
        for run in job.teams:
            assert run.status == pb.TEAM_STATUS_ERROR
            assert "supervisor failed (ExceptionGroup)" in run.error, run.error
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.cancel("crashing")
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "already finished as failed" in (refused.value.details() or "")


async def _stream(events: AsyncIterator[pb.JobEvent]) -> list[pb.JobEvent]:
    return [e async for e in events]
