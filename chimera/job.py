"""A job's snapshot: what GetJob, ListJobs and the snapshot endpoint return.

The snapshot is derived from the job's events by :meth:`Job.apply`, so the
event log and the snapshot can never disagree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
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
        }

    @staticmethod
    def from_dict(obj: dict[str, Any]) -> TeamRun:
        return TeamRun(
            team=TeamName(obj["team"]),
            status=TeamStatus(obj["status"]),
            model=obj["model"],
            thoughts=[Thought.from_dict(t) for t in obj["thoughts"]],
            code=obj["code"],
            language=obj["language"],
            token_count=obj["token_count"],
            error=obj["error"],
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

    def apply(self, event: Event) -> None:
        """Folds one event into the snapshot."""
        self.last_sequence = event.seq
        self.update_time = event.timestamp
        if event.team is None:
            state = event.job_state
            if state is not None:
                self.state = state
                if state in JOB_FINAL:
                    self.end_time = event.timestamp
            return
        run = self.teams.get(event.team)
        if run is None:  # an event for a team the job does not run: ignore, keep the seq
            return
        data = event.data
        if event.type is EventType.STATUS_CHANGE:
            run.status = TeamStatus(data["status"])
            run.model = data.get("model", run.model)
        elif event.type is EventType.THOUGHT_ADDED:
            run.thoughts.append(Thought(data["id"], data["text"], data["timestamp"]))
        elif event.type is EventType.CODE_GENERATED:
            run.code = data["code"]
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
