"""Every StatusChange carries its status twice: the string (the guide's word, as the
WebSocket shows it) and the typed enum (``team_status`` on a team's change,
``job_state`` on the job's). Over real gRPC, live and replayed, through the Python
stub and through grpcurl."""

from __future__ import annotations

import asyncio
import io

from rich.console import Console

from chimera.client import JobsClient
from chimera.console import render_event
from chimera.events import TeamName
from chimera.v1 import jobs_pb2 as pb
from tests.conftest import StartServer, grpcurl
from tests.doubles import ScriptedProvider, factory
from tests.test_grpc_api import streamed_events

# Every status either kind of change can take in these three jobs (team, status).
EXPECTED = {
    ("job", "running"), ("job", "cancelled"), ("job", "succeeded"), ("job", "failed"),
    ("team", "thinking"), ("team", "generating"), ("team", "complete"),
    ("team", "error"), ("team", "cancelled"),
}


def typed(event: pb.JobEvent) -> tuple[str, str]:
    """Asserts the status change's enum names its string; returns (kind, status)."""
    change = event.status_change
    if event.team == pb.TEAM_UNSPECIFIED:
        assert pb.JobState.Name(change.job_state) == f"JOB_STATE_{change.status.upper()}", event
        assert change.team_status == pb.TEAM_STATUS_UNSPECIFIED, event
        return "job", change.status
    assert pb.TeamStatus.Name(change.team_status) == f"TEAM_STATUS_{change.status.upper()}", event
    assert change.job_state == pb.JOB_STATE_UNSPECIFIED, event
    return "team", change.status


def changes(events: list[pb.JobEvent]) -> list[tuple[str, str]]:
    return [typed(e) for e in events if e.WhichOneof("kind") == "status_change"]


async def replay(client: JobsClient, job_id: str) -> list[pb.JobEvent]:
    return [event async for event in client.events(job_id)]


async def test_status_changes_carry_their_enum_live_and_replayed(
    start_server: StartServer,
) -> None:
    hold = asyncio.Event()
    server = await start_server(providers=factory({
        TeamName.ANTHROPIC: lambda: ScriptedProvider(["a"], hold=hold),
        TeamName.GOOGLE: lambda: ScriptedProvider(["g"], fail_with="quota"),
    }))
    live: dict[str, list[pb.JobEvent]] = {"held": []}
    async with server.client() as client:
        # Live: google fails while anthropic is held, then the job is cancelled, so
        # anthropic's "cancelled" and the job's reach this stream as they happen.
        await client.create("held, then cancelled", job_id="held")
        async for event in client.events("held"):
            live["held"].append(event)
            if event.team == pb.TEAM_GOOGLE and event.status_change.status == "error":
                await client.cancel("held")
        hold.set()  # anthropic answers (generating, complete): the job succeeds
        await client.create("one answers, one fails", job_id="mixed")
        live["mixed"] = [event async for event in client.events("mixed")]
        await client.create("google alone fails", [pb.TEAM_GOOGLE], job_id="failed")
        live["failed"] = [event async for event in client.events("failed")]

        seen = {change for events in live.values() for change in changes(events)}
        assert seen == EXPECTED
        for job_id, events in live.items():
            replayed = await replay(client, job_id)
            assert [e.sequence for e in replayed] == [e.sequence for e in events]
            assert changes(replayed) == changes(events)

    # grpcurl (JSON, enum names; a field at its default is left out).
    for job_id, events in live.items():
        code, out, err = await grpcurl(
            server.grpc_target, "chimera.v1.JobService/StreamJobEvents", data={"job_id": job_id}
        )
        assert code == 0, err
        shown = [e for e in streamed_events(out) if "status_change" in e]
        assert len(shown) == len(changes(events))
        for e in shown:
            change = e["status_change"]
            if "team" in e:
                assert change["team_status"] == f"TEAM_STATUS_{change['status'].upper()}", e
                assert "job_state" not in change, e
            else:
                assert change["job_state"] == f"JOB_STATE_{change['status'].upper()}", e
                assert "team_status" not in change, e


def test_the_console_reads_the_typed_status() -> None:
    out = io.StringIO()
    console = Console(file=out, width=200, no_color=True)
    render_event(console, pb.JobEvent(
        sequence=2, team=pb.TEAM_ANTHROPIC,
        status_change=pb.StatusChange(team_status=pb.TEAM_STATUS_THINKING, model="m"),
    ))
    render_event(console, pb.JobEvent(
        sequence=9, status_change=pb.StatusChange(job_state=pb.JOB_STATE_SUCCEEDED),
    ))
    # A server that predates the typed fields sends only the string.
    render_event(console, pb.JobEvent(
        sequence=8, team=pb.TEAM_GOOGLE, status_change=pb.StatusChange(status="complete"),
    ))
    assert out.getvalue().splitlines() == [
        "   2 [anthropic] thinking (model: m)", "   9 [job] succeeded", "   8 [google] complete",
    ]
