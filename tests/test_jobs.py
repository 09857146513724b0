"""Job lifecycle through the real server: failures, cancellation, concurrency, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from chimera.events import TeamName
from chimera.v1 import jobs_pb2 as pb
from tests.conftest import (
    StartServer,
    job_events,
    read_until_closed,
    run_job,
    until,
    wait_for_sequence,
    ws_connect,
)
from tests.doubles import ScriptedProvider, factory


async def drain(events: AsyncIterator[pb.JobEvent]) -> None:
    async for _ in events:
        pass


def by_team(messages: list[dict[str, Any]], team: str) -> list[tuple[str, Any]]:
    out = []
    for m in messages:
        if m.get("team") != team:
            continue
        data = m["data"]
        value = data.get("error") or data.get("status") or data.get("text")
        out.append((m["type"], value if m["type"] != "code_generated" else "code"))
    return out


async def test_one_team_failing_never_stops_the_other(start_server: StartServer) -> None:
    server = await start_server(
        factory(
            {
                TeamName.ANTHROPIC: lambda: ScriptedProvider(
                    ["t1"], fail_with="API rate limit exceeded"
                ),
                TeamName.GOOGLE: lambda: ScriptedProvider(["g1", "g2"]),
            }
        )
    )
    ws = await ws_connect(server.ws_url("half"))
    async with server.client() as client:
        await client.create("a login form", job_id="half")
        messages = job_events(await read_until_closed(ws))
        job = await client.get("half")
    assert by_team(messages, "anthropic") == [
        ("status_change", "thinking"),
        ("thought_added", "t1 (a login form)"),
        ("error", "API rate limit exceeded"),
        ("status_change", "error"),
    ]
    error = next(m for m in messages if m["type"] == "error")
    assert error["data"] == {"error": "API rate limit exceeded", "status": "error"}
    assert [t for t, _ in by_team(messages, "google")][-2:] == ["code_generated", "status_change"]
    assert messages[-1]["data"] == {"status": "succeeded"}
    assert job.state == pb.JOB_STATE_SUCCEEDED
    runs = {r.team: r for r in job.teams}
    assert runs[pb.TEAM_ANTHROPIC].status == pb.TEAM_STATUS_ERROR
    assert runs[pb.TEAM_ANTHROPIC].error == "API rate limit exceeded"
    assert [t.text for t in runs[pb.TEAM_ANTHROPIC].thoughts] == ["t1 (a login form)"]  # kept
    assert runs[pb.TEAM_GOOGLE].status == pb.TEAM_STATUS_COMPLETE


async def test_a_crashing_team_is_reported_and_the_other_completes(
    start_server: StartServer,
) -> None:
    server = await start_server(
        factory({TeamName.GOOGLE: lambda: ScriptedProvider(["g"], crash=True)})
    )
    job = await run_job(server, "crash")
    runs = {r.team: r for r in job.teams}
    assert runs[pb.TEAM_GOOGLE].status == pb.TEAM_STATUS_ERROR
    assert runs[pb.TEAM_GOOGLE].error == "internal error in the google team"
    assert runs[pb.TEAM_ANTHROPIC].status == pb.TEAM_STATUS_COMPLETE
    assert job.state == pb.JOB_STATE_SUCCEEDED


async def test_job_fails_when_no_team_produces_code(start_server: StartServer) -> None:
    server = await start_server(sim_fail=frozenset(TeamName))
    job = await run_job(server, "nocode")
    assert job.state == pb.JOB_STATE_FAILED
    assert all(r.status == pb.TEAM_STATUS_ERROR for r in job.teams)
    assert all("simulated failure" in r.error for r in job.teams)


async def test_cancellation_mid_run_stops_teams_promptly(start_server: StartServer) -> None:
    hold = asyncio.Event()  # never set: the teams would wait forever
    made: list[ScriptedProvider] = []

    def held() -> ScriptedProvider:
        made.append(ScriptedProvider(["thinking hard"], hold=hold))
        return made[-1]

    server = await start_server(factory({TeamName.ANTHROPIC: held, TeamName.GOOGLE: held}))
    ws = await ws_connect(server.ws_url("stopme"))
    async with server.client() as client:
        await client.create("a login form", job_id="stopme")
        await wait_for_sequence(client, "stopme", 5)
        cancelled = await asyncio.wait_for(client.cancel("stopme"), 30)
        assert cancelled.state == pb.JOB_STATE_CANCELLED
        assert all(r.status == pb.TEAM_STATUS_CANCELLED for r in cancelled.teams)
        assert cancelled.HasField("end_time")
        # The providers' streams were closed by the cancellation.
        assert all(p.cancelled and p.closed.is_set() for p in made) and len(made) == 2
        again = await client.cancel("stopme")  # idempotent
        assert again.state == pb.JOB_STATE_CANCELLED
        assert again.last_sequence == cancelled.last_sequence
        messages = job_events(await read_until_closed(ws))
    assert messages[-1]["data"] == {"status": "cancelled"}
    assert [m["seq"] for m in messages] == list(range(1, cancelled.last_sequence + 1))
    final_team_statuses = {
        m["team"]: m["data"]["status"] for m in messages
        if m["type"] == "status_change" and "team" in m
    }
    assert final_team_statuses == {"anthropic": "cancelled", "google": "cancelled"}


async def test_two_concurrent_jobs_do_not_mix_events(server: Any) -> None:
    a = await ws_connect(server.ws_url("job-a"))
    b = await ws_connect(server.ws_url("job-b"))
    async with server.client() as client:
        await asyncio.gather(
            client.create("Create a login form", job_id="job-a"),
            client.create("Build a todo list", job_id="job-b"),
        )
        got_a, got_b = await asyncio.gather(read_until_closed(a), read_until_closed(b))
    for got, job_id, name in ((got_a, "job-a", "LoginForm"), (got_b, "job-b", "TodoList")):
        events = job_events(got)
        assert {m["job_id"] for m in events} == {job_id}
        assert [m["seq"] for m in events] == list(range(1, len(events) + 1))
        codes = [m["data"]["code"] for m in events if m["type"] == "code_generated"]
        assert len(codes) == 2 and all(name in c for c in codes)


async def test_deadline_fails_unfinished_teams(start_server: StartServer) -> None:
    hold = asyncio.Event()
    server = await start_server(
        factory({TeamName.GOOGLE: lambda: ScriptedProvider(["slow"], hold=hold)}),
        job_deadline=0.5,
    )
    job = await run_job(server, "late")
    runs = {r.team: r for r in job.teams}
    assert runs[pb.TEAM_GOOGLE].status == pb.TEAM_STATUS_ERROR
    assert "deadline exceeded" in runs[pb.TEAM_GOOGLE].error
    assert runs[pb.TEAM_ANTHROPIC].status == pb.TEAM_STATUS_COMPLETE
    assert job.state == pb.JOB_STATE_SUCCEEDED


async def test_shutdown_interrupts_running_jobs_and_closes_streams(
    start_server: StartServer, tmp_path: Any
) -> None:
    hold = asyncio.Event()
    db = str(tmp_path / "shutdown.db")
    server = await start_server(
        factory({TeamName.ANTHROPIC: lambda: ScriptedProvider(["x"], hold=hold),
                 TeamName.GOOGLE: lambda: ScriptedProvider(["y"], hold=hold)}),
        db=db,
    )
    job_ws = await ws_connect(server.ws_url("inflight"))
    idle_ws = await ws_connect(server.ws_url("never-created"))
    async with server.client() as client:
        await client.create("a counter", job_id="inflight")
        await wait_for_sequence(client, "inflight", 5)
        idle_grpc = asyncio.create_task(drain(client.events("never-created")))
        await until(lambda: server.server.broadcaster.subscriber_count("never-created") == 2)
        await server.stop()
        # The waiting gRPC stream is told why it ends (not cut off at the grace period).
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await idle_grpc
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in (ended.value.details() or ""), ended.value.details()
    messages = job_events(await read_until_closed(job_ws))
    await read_until_closed(idle_ws)
    assert messages[-1]["data"] == {"status": "failed"}
    errors = [m["data"]["error"] for m in messages if m["type"] == "error"]
    assert errors == ["interrupted: server stopped"] * 2
    assert job_ws.close_code == 1000
    assert idle_ws.close_code == 1001
    # Restarted on the same file, the job is there, finished, with its whole history.
    again = await start_server(db=db)
    async with again.client() as client:
        job = await client.get("inflight")
        assert job.state == pb.JOB_STATE_FAILED
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.cancel("inflight")
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    replay = job_events(await read_until_closed(await ws_connect(again.ws_url("inflight"))))
    assert replay == messages


async def test_a_cancelled_server_task_still_closes_its_grpc_port(
    start_server: StartServer,
) -> None:
    """serve() cancelled instead of stopped (a stop that timed out, a cancelled caller):
    the gRPC server is stopped too, not left listening with grpc's threads alive (they
    kept a test process from exiting after such a timeout)."""
    server = await start_server()
    port = server.server.grpc_port
    async with server.client() as client:
        await client.list()  # serving
    server.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await server.task
    with pytest.raises(ConnectionRefusedError):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
