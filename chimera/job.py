"""A job's snapshot: what GetJob, ListJobs and the snapshot endpoint return.

The snapshot is derived from the job's events by :meth:`Job.apply`, so the
event log and the snapshot can never disagree. A store keeps only the small
parts of it (state, team statuses, code, the code so far, counts:
:func:`changes`) and reads the thoughts back from their ``thought_added``
events, so recording an event costs the same whatever the job's length.

A team's ``code_so_far`` is its ``code_delta`` events spliced
(:func:`chimera.events.splice`) while it writes, and its ``code`` once
``code_generated`` came: a poller sees the code grow as a subscriber does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum
from typing import Any

from chimera.events import (
    JOB_FINAL,
    Event,
    EventType,
    JobState,
    TeamName,
    TeamStatus,
    iso_timestamp,
    parse_timestamp,
    splice,
)


@dataclass(frozen=True, slots=True)
class Thought:
    """One thought as the guide shows it: a stable id, its text, and when it came."""

    id: str
    text: str
    timestamp: str  # ISO 8601 UTC with milliseconds and Z, as in the event

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "text": self.text, "timestamp": self.timestamp}

    @staticmethod
    def from_dict(obj: dict[str, str]) -> Thought:
        return Thought(id=obj["id"], text=obj["text"], timestamp=obj["timestamp"])


class JobView(Enum):
    """How much of a job's thoughts a read returns (AIP-157 style)."""

    BASIC = "basic"  # no thoughts, only their count
    DEFAULT = "default"  # the latest LATEST_THOUGHTS of each team
    FULL = "full"  # every thought


# Thoughts are at most ~600 characters (chimera.providers.thoughts), so a
# default read of a job stays well under gRPC's 4 MiB message limit, however
# long the job ran; jobs with fewer thoughts read exactly as in full.
LATEST_THOUGHTS = 100


def thought_limit(view: JobView) -> int | None:
    """Thoughts per team a read in ``view`` returns (``None``: all of them)."""
    if view is JobView.BASIC:
        return 0
    if view is JobView.DEFAULT:
        return LATEST_THOUGHTS
    return None


def thought_of(data: Mapping[str, Any]) -> Thought:
    """The thought a ``thought_added`` event's ``data`` carries, as the snapshot keeps it."""
    return Thought(str(data["id"]), str(data["text"]), str(data["timestamp"]))


@dataclass(slots=True)
class TeamRun:
    team: TeamName
    status: TeamStatus = TeamStatus.IDLE
    model: str = ""
    thoughts: list[Thought] = field(default_factory=list)
    code: str = ""
    language: str = ""
    token_count: int = 0
    error: str = ""
    # Every thought the team had; ``thoughts`` may hold only the latest of them.
    thought_count: int = 0
    # The code as far as it is written (its code_delta events); ``code`` once it came.
    code_so_far: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "team": self.team.value,
            "status": self.status.value,
            "model": self.model,
            "thoughts": [t.to_dict() for t in self.thoughts],
            "code": self.code,
            "language": self.language,
            "token_count": self.token_count,
            "error": self.error,
            "thought_count": self.thought_count,
            "code_so_far": self.code_so_far,
        }

    def copy(self) -> TeamRun:
        """A copy sharing nothing mutable with this one (its own list of thoughts)."""
        return replace(self, thoughts=list(self.thoughts))

    @staticmethod
    def from_dict(obj: dict[str, Any]) -> TeamRun:
        return TeamRun(
            team=TeamName(obj["team"]),
            status=TeamStatus(obj["status"]),
            model=obj["model"],
            # Schema-1 snapshots kept thoughts as bare text; a store reads them from
            # their events instead (which carry their ids), so they are skipped here.
            thoughts=[Thought.from_dict(t) for t in obj["thoughts"] if isinstance(t, dict)],
            code=obj["code"],
            language=obj["language"],
            token_count=obj["token_count"],
            error=obj["error"],
            thought_count=obj.get("thought_count", len(obj["thoughts"])),
            code_so_far=obj.get("code_so_far", obj["code"]),
        )


@dataclass(slots=True)
class Job:
    job_id: str
    brief: str
    teams: dict[TeamName, TeamRun]
    create_time: datetime
    update_time: datetime
    state: JobState = JobState.RUNNING
    end_time: datetime | None = None
    last_sequence: int = 0
    request_id: str = ""
    # The ``sub`` of the token that created the job ("" when auth is off); not in
    # the public snapshot (to_dict), only in the stored one (to_json).
    owner: str = ""

    @property
    def finished(self) -> bool:
        return self.state in JOB_FINAL

    def copy(self) -> Job:
        """A copy sharing nothing mutable with this one: its own teams (each with
        its own thoughts); the rest (text, enums, datetimes, thoughts) is immutable."""
        return replace(self, teams={team: run.copy() for team, run in self.teams.items()})

    def advance(self, event: Event) -> None:
        """Folds the job-level part of one event (sequence, times, state), not the teams'."""
        self.last_sequence = event.seq
        self.update_time = event.timestamp
        state = event.job_state
        if state is not None:
            self.state = state
            if state in JOB_FINAL:
                self.end_time = event.timestamp

    def apply(self, event: Event) -> None:
        """Folds one event into the snapshot."""
        self.advance(event)
        if event.team is None:
            return
        run = self.teams.get(event.team)
        if run is None:  # an event for a team the job does not run: ignore, keep the seq
            return
        data = event.data
        if event.type is EventType.STATUS_CHANGE:
            run.status = TeamStatus(data["status"])
            run.model = data.get("model", run.model)
        elif event.type is EventType.THOUGHT_ADDED:
            run.thoughts.append(thought_of(data))
            run.thought_count += 1
        elif event.type is EventType.CODE_DELTA:
            run.code_so_far = splice(run.code_so_far, int(data["offset"]), data["text"])
        elif event.type is EventType.CODE_GENERATED:
            run.code = run.code_so_far = data["code"]
            run.language = data.get("language", "")
            run.token_count = int(data.get("token_count", 0))
        elif event.type is EventType.ERROR:
            run.error = data["error"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "brief": self.brief,
            "state": self.state.value,
            "teams": [run.to_dict() for run in self.teams.values()],
            "create_time": iso_timestamp(self.create_time),
            "update_time": iso_timestamp(self.update_time),
            "end_time": iso_timestamp(self.end_time) if self.end_time else None,
            "last_sequence": self.last_sequence,
        }

    def to_json(self) -> str:
        body = self.to_dict()
        body["request_id"] = self.request_id
        body["owner"] = self.owner
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"))

    @staticmethod
    def from_json(text: str) -> Job:
        obj = json.loads(text)
        teams = [TeamRun.from_dict(t) for t in obj["teams"]]
        end = obj["end_time"]
        return Job(
            job_id=obj["job_id"],
            brief=obj["brief"],
            teams={run.team: run for run in teams},
            create_time=parse_timestamp(obj["create_time"]),
            update_time=parse_timestamp(obj["update_time"]),
            state=JobState(obj["state"]),
            end_time=parse_timestamp(end) if end else None,
            last_sequence=obj["last_sequence"],
            request_id=obj.get("request_id", ""),
            owner=obj.get("owner", ""),
        )


@dataclass(slots=True)
class TeamChange:
    """What a batch of events changes in one team (``None``: unchanged)."""

    status: TeamStatus | None = None
    model: str | None = None
    error: str | None = None
    code: tuple[str, str, int] | None = None  # code, language, token_count
    thoughts_added: int = 0
    # The batch's code deltas as one: ``(offset, text)`` to splice into the code so
    # far (``(0, "")`` empties it: the code came, and ``code`` holds it now).
    draft: tuple[int, str] | None = None


@dataclass(slots=True)
class JobChange:
    """What a batch of events changes in one job: the small parts a store writes."""

    job_id: str
    last_sequence: int
    update_time: datetime
    state: JobState | None = None
    end_time: datetime | None = None
    teams: dict[TeamName, TeamChange] = field(default_factory=dict)


def changes(events: Iterable[Event]) -> list[JobChange]:
    """The changes ``events`` (in order) make to their jobs, one per job: the same
    fold as :meth:`Job.apply`, without the thoughts (they stay in their events)."""
    jobs: dict[str, JobChange] = {}
    for event in events:
        change = jobs.get(event.job_id)
        if change is None:
            change = jobs[event.job_id] = JobChange(event.job_id, event.seq, event.timestamp)
        change.last_sequence = event.seq
        change.update_time = event.timestamp
        if event.team is None:
            state = event.job_state
            if state is not None:
                change.state = state
                change.end_time = event.timestamp if state in JOB_FINAL else None
            continue
        team = change.teams.get(event.team)
        if team is None:
            team = change.teams[event.team] = TeamChange()
        data = event.data
        if event.type is EventType.STATUS_CHANGE:
            team.status = TeamStatus(data["status"])
            if "model" in data:
                team.model = data["model"]
        elif event.type is EventType.THOUGHT_ADDED:
            team.thoughts_added += 1
        elif event.type is EventType.CODE_DELTA:
            team.draft = merge_splices(team.draft, (int(data["offset"]), data["text"]))
        elif event.type is EventType.CODE_GENERATED:
            team.code = (data["code"], data.get("language", ""), int(data.get("token_count", 0)))
            team.draft = (0, "")
        elif event.type is EventType.ERROR:
            team.error = data["error"]
    return list(jobs.values())


def merge_splices(
    first: tuple[int, str] | None, second: tuple[int, str]
) -> tuple[int, str]:
    """One splice (``(offset, text)``, :func:`chimera.events.splice`) that does what
    ``first`` then ``second`` do, whatever the code they are applied to."""
    if first is None or second[0] < first[0]:
        return second
    offset, text = first
    return offset, text[: second[0] - offset] + second[1]
