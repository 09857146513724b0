"""The CLI's output: for people (rich: live team lines, each team's code typed out as
it is written, then each team's code, and tables), and for scripts (``--json``: a job as
the HTTP snapshot shows it, an event as the WebSocket sends it, so every surface names
and types a field alike)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from chimera.events import EventType, iso_timestamp, splice
from chimera.job import Job, TeamRun, Thought
from chimera.v1 import jobs_pb2 as pb
from chimera.wire import STATE_FROM_PB, STATUS_FROM_PB, TEAM_FROM_PB

TEAM_STYLE = {"anthropic": "bold magenta", "google": "bold cyan", "job": "bold"}


def team_label(team: pb.Team.ValueType) -> str:
    name = TEAM_FROM_PB.get(team)
    return name.value if name is not None else "job"


def status_of(change: pb.StatusChange) -> str:
    """The status a change names by its typed field; the string from a server that
    predates those fields."""
    typed = STATUS_FROM_PB.get(change.team_status) or STATE_FROM_PB.get(change.job_state)
    return typed.value if typed is not None else change.status


def render_event(console: Console, event: pb.JobEvent) -> None:
    """One line per event, as it arrives."""
    who = team_label(event.team)
    line = Text(f"{event.sequence:>4} ", style="dim")
    line.append(f"[{who}] ", style=TEAM_STYLE.get(who, ""))
    kind = event.WhichOneof("kind")
    if kind == "status_change":
        status = status_of(event.status_change)
        line.append(status, style="bold green" if status in ("complete", "succeeded") else "bold")
        if event.status_change.model:
            line.append(f" (model: {event.status_change.model})", style="dim")
    elif kind == "thought_added":
        line.append("thinks: ", style="italic")
        line.append(event.thought_added.text)
    elif kind == "code_generated":
        code = event.code_generated
        line.append(
            f"generated {len(code.code.splitlines())} lines of {code.language or 'code'} "
            f"({code.token_count} tokens)",
            style="green",
        )
    elif kind == "error":
        line.append(f"error: {event.error.error}", style="bold red")
    console.print(line)


class LiveView:
    """The live view of ``chimera submit`` (and ``demo``): a line per event, and each
    team's code typed out as its ``code_delta`` events come, a line as soon as it
    is complete, under the team's name (two teams write at once: whole lines keep
    them apart). A delta that starts the code again (a provider retry) says so and
    goes on from there; a team's last partial line comes with its ``code_generated``.
    """

    def __init__(self, console: Console) -> None:
        self._console = console
        self._code: dict[str, str] = {}
        self._typed: dict[str, int] = {}  # characters of the code already printed

    def show(self, event: pb.JobEvent) -> None:
        kind = event.WhichOneof("kind")
        who = team_label(event.team)
        if kind == "code_delta":
            self._type(who, event.code_delta.offset, event.code_delta.text)
            return
        if kind == "code_generated":
            self._type(who, 0, event.code_generated.code, final=True)
        render_event(self._console, event)

    def _type(self, who: str, offset: int, text: str, *, final: bool = False) -> None:
        code = self._code.get(who, "")
        typed = self._typed.get(who, 0)
        if final:
            offset = len(code) if code and text.startswith(code) else 0
            text = text[offset:]
        new = splice(code, offset, text)
        if offset < typed:
            self._console.print(Text(f"     [{who}] writes its code again:", style="dim"))
            typed = new.rfind("\n", 0, offset) + 1
        end = len(new) if final else new.rfind("\n") + 1
        for line in new[typed:end].splitlines():
            row = Text("     ")
            row.append(f"[{who}] │ ", style=TEAM_STYLE.get(who, ""))
            row.append(line)
            self._console.print(row)
        self._code[who] = new
        self._typed[who] = max(typed, end)


def render_code(console: Console, job: pb.Job) -> None:
    for run in job.teams:
        who = team_label(run.team)
        if run.code:
            console.print(
                Panel(
                    Syntax(run.code, run.language or "text", word_wrap=True),
                    title=f"{who} · {run.model} · {run.token_count} tokens",
                    border_style=TEAM_STYLE.get(who, ""),
                )
            )
        elif run.error:
            console.print(Text(f"{who}: {run.error}", style="bold red"))


def render_job(console: Console, job: pb.Job) -> None:
    state = STATE_FROM_PB.get(job.state)
    console.print(Text(f"job {job.job_id}: {state.value if state else 'unknown'}", style="bold"))
    console.print(Text(f"brief: {job.brief}"))
    table = Table("team", "status", "model", "thoughts", "tokens", "error")
    for run in job.teams:
        status = STATUS_FROM_PB.get(run.status)
        table.add_row(
            team_label(run.team),
            status.value if status else "?",
            run.model,
            str(run.thought_count),
            str(run.token_count),
            run.error,
        )
    console.print(table)


def render_jobs(console: Console, jobs: list[pb.Job]) -> None:
    """A table of jobs on a terminal, where ids are never cut (the brief gives
    way); elsewhere (a pipe, a file) tab-separated lines, nothing cut, for
    ``cut``, ``awk`` and ``read``."""
    rows = []
    for job in jobs:
        state = STATE_FROM_PB.get(job.state)
        created = job.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
        rows.append((job.job_id, state.value if state else "?", created, job.brief))
    if not console.is_terminal:
        for row in (("job_id", "state", "created", "brief"), *rows):
            print("\t".join(" ".join(cell.split()) for cell in row), file=console.file)
        return
    table = Table("job_id", "state", "created", "brief")
    widest = max((len(row[0]) for row in rows), default=6)
    for column, width in zip(table.columns, (widest, 9, 19), strict=False):
        column.min_width, column.no_wrap = width, True
    for job_id, state_name, created, brief in rows:
        table.add_row(job_id, state_name, created, brief if len(brief) <= 60 else brief[:59] + "…")
    console.print(table)


def _moment(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def _thought(thought: pb.Thought) -> Thought:
    return Thought(thought.id, thought.text, iso_timestamp(_moment(thought.timestamp)))


def job_from_pb(job: pb.Job) -> Job:
    """The snapshot a gRPC answer carries, as :class:`~chimera.job.Job` (the
    reverse of the gRPC gateway's ``job_to_pb``)."""
    teams = {}
    for run in job.teams:
        team = TEAM_FROM_PB[run.team]
        teams[team] = TeamRun(
            team=team,
            status=STATUS_FROM_PB[run.status],
            model=run.model,
            thoughts=[_thought(t) for t in run.thoughts],
            code=run.code,
            language=run.language,
            token_count=run.token_count,
            error=run.error,
            thought_count=run.thought_count,
            code_so_far=run.code_so_far,
        )
    return Job(
        job_id=job.job_id,
        brief=job.brief,
        teams=teams,
        create_time=_moment(job.create_time),
        update_time=_moment(job.update_time),
        state=STATE_FROM_PB[job.state],
        end_time=_moment(job.end_time) if job.HasField("end_time") else None,
        last_sequence=job.last_sequence,
    )


def job_json(job: pb.Job, *, epoch: bool = True) -> dict[str, Any]:
    """``--json`` of a job: exactly what ``GET /api/jobs/ID`` answers (``job_id``,
    ``state: "succeeded"``, ``token_count`` a number…); ``epoch`` False: as an item
    of ``GET /api/jobs``, which has none."""
    snapshot = job_from_pb(job).to_dict()
    return {**snapshot, "epoch": job.epoch} if epoch else snapshot


def event_json(event: pb.JobEvent) -> dict[str, Any]:
    """``--json`` of an event: the WebSocket message the guide defines, as
    ``chimera watch`` prints it (``type``, ``team`` for a team's, ``data``,
    ``timestamp``, ``job_id``, ``seq``)."""
    kind = event.WhichOneof("kind")
    data: dict[str, Any]
    if kind == "status_change":
        change = event.status_change
        data = {"status": status_of(change), **({"model": change.model} if change.model else {})}
        type_ = EventType.STATUS_CHANGE
    elif kind == "thought_added":
        data = {**_thought(event.thought_added).to_dict(), "team": team_label(event.team)}
        type_ = EventType.THOUGHT_ADDED
    elif kind == "code_generated":
        code = event.code_generated
        data = {
            "code": code.code, "language": code.language, "token_count": code.token_count,
            "input_tokens": code.input_tokens,
        }
        type_ = EventType.CODE_GENERATED
    elif kind == "code_delta":
        data = {"offset": event.code_delta.offset, "text": event.code_delta.text}
        type_ = EventType.CODE_DELTA
    else:
        data = {"error": event.error.error, "status": event.error.status or "error"}
        type_ = EventType.ERROR
    message: dict[str, Any] = {"type": type_.value}
    if event.team in TEAM_FROM_PB:
        message["team"] = TEAM_FROM_PB[event.team].value
    message.update(
        data=data, timestamp=iso_timestamp(_moment(event.time)), job_id=event.job_id,
        seq=event.sequence,
    )
    return message
