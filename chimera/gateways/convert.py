"""Translation between Chimera's values and the chimera.v1 protobuf messages (the gRPC
gateway's; the enum maps the client side needs too are in ``chimera/wire.py``)."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from chimera.errors import InvalidArgument
from chimera.events import Event, EventType, TeamName, parse_timestamp
from chimera.job import Job, JobView, Thought, thought_of
from chimera.v1 import jobs_pb2 as pb
from chimera.wire import STATE_TO_PB, STATUS_TO_PB, TEAM_FROM_PB, TEAM_TO_PB

VIEW_FROM_PB = {
    pb.JOB_VIEW_UNSPECIFIED: JobView.DEFAULT,
    pb.JOB_VIEW_BASIC: JobView.BASIC,
    pb.JOB_VIEW_FULL: JobView.FULL,
}


def view_from_pb(value: pb.JobView.ValueType) -> JobView:
    view = VIEW_FROM_PB.get(value)
    if view is None:
        raise InvalidArgument(
            f"view has an unknown value ({value}): use JOB_VIEW_BASIC, JOB_VIEW_FULL or "
            "leave it unset"
        )
    return view


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(moment: datetime | None) -> Timestamp | None:
    """``moment`` as a protobuf ``Timestamp`` (a naive one read as UTC), as
    ``Timestamp.FromDatetime`` makes it, in a quarter of its time: every reply
    carries two or three (tests/test_convert.py checks they are the same)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    since = moment - _EPOCH
    return Timestamp(seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1000)


def thought_to_pb(thought: Thought) -> pb.Thought:
    return pb.Thought(
        id=thought.id, text=thought.text, timestamp=timestamp(parse_timestamp(thought.timestamp))
    )


def teams_from_pb(values: list[pb.Team.ValueType]) -> list[TeamName]:
    teams = []
    for value in values:
        team = TEAM_FROM_PB.get(value)
        if team is None:
            raise InvalidArgument(
                f"teams has an unknown team ({value}): use TEAM_ANTHROPIC or TEAM_GOOGLE"
            )
        teams.append(team)
    return teams


def job_to_pb(job: Job, epoch: str) -> pb.Job:
    """``job`` as gRPC answers it; ``epoch`` is the store lifetime its sequence
    numbers belong to (``JobManager.epoch``, read before the job was)."""
    return pb.Job(
        job_id=job.job_id,
        brief=job.brief,
        state=STATE_TO_PB[job.state],
        teams=[
            pb.TeamRun(
                team=TEAM_TO_PB[run.team],
                status=STATUS_TO_PB[run.status],
                model=run.model,
                thoughts=[thought_to_pb(t) for t in run.thoughts],
                code=run.code,
                token_count=run.token_count,
                error=run.error,
                language=run.language,
                thought_count=run.thought_count,
                code_so_far=run.code_so_far,
            )
            for run in job.teams.values()
        ],
        create_time=timestamp(job.create_time),
        update_time=timestamp(job.update_time),
        end_time=timestamp(job.end_time),
        last_sequence=job.last_sequence,
        epoch=epoch,
    )


def event_to_pb(event: Event) -> pb.JobEvent:
    message = pb.JobEvent(
        sequence=event.seq,
        job_id=event.job_id,
        time=timestamp(event.timestamp),
        team=TEAM_TO_PB[event.team] if event.team else pb.TEAM_UNSPECIFIED,
    )
    data = event.data
    if event.type is EventType.STATUS_CHANGE:
        change = message.status_change
        change.status = data["status"]
        change.model = data.get("model", "")
        if event.team:
            change.team_status = STATUS_TO_PB.get(data["status"], pb.TEAM_STATUS_UNSPECIFIED)
        else:
            change.job_state = STATE_TO_PB.get(data["status"], pb.JOB_STATE_UNSPECIFIED)
    elif event.type is EventType.THOUGHT_ADDED:
        message.thought_added.CopyFrom(thought_to_pb(thought_of(data)))
    elif event.type is EventType.CODE_GENERATED:
        message.code_generated.code = data["code"]
        message.code_generated.language = data.get("language", "")
        message.code_generated.token_count = int(data.get("token_count", 0))
        message.code_generated.input_tokens = int(data.get("input_tokens", 0))
    elif event.type is EventType.CODE_DELTA:
        message.code_delta.offset = int(data["offset"])
        message.code_delta.text = data["text"]
    elif event.type is EventType.ERROR:
        message.error.error = data["error"]
        message.error.status = data.get("status", "error")
    return message
