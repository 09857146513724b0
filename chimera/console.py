"""Terminal output for the CLI (rich): live team lines, each team's code typed out
as it is written, then each team's code."""

from __future__ import annotations

from rich.console import Console
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from chimera.events import splice
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
            str(len(run.thoughts)),
            str(run.token_count),
            run.error,
        )
    console.print(table)


def render_jobs(console: Console, jobs: list[pb.Job]) -> None:
    table = Table("job_id", "state", "created", "brief")
    for job in jobs:
        state = STATE_FROM_PB.get(job.state)
        table.add_row(
            job.job_id,
            state.value if state else "?",
            job.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
            job.brief if len(job.brief) <= 60 else job.brief[:59] + "…",
        )
    console.print(table)
