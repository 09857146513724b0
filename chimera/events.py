"""Job events: immutable values, numbered per job, encoded to JSON once.

A team or supervisor produces a :class:`Draft` (no sequence number yet); the
broadcaster numbers it and turns it into an :class:`Event`, whose ``frame`` is
the exact WebSocket text every subscriber receives.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson


class TeamName(StrEnum):
    ANTHROPIC = "anthropic"
    GOOGLE = "google"


ALL_TEAMS: tuple[TeamName, ...] = (TeamName.ANTHROPIC, TeamName.GOOGLE)


class TeamStatus(StrEnum):
    IDLE = "idle"
    THINKING = "thinking"
    GENERATING = "generating"
    COMPLETE = "complete"
    ERROR = "error"
    CANCELLED = "cancelled"


TEAM_FINAL = frozenset({TeamStatus.COMPLETE, TeamStatus.ERROR, TeamStatus.CANCELLED})


class JobState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


JOB_FINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class EventType(StrEnum):
    STATUS_CHANGE = "status_change"
    THOUGHT_ADDED = "thought_added"
    CODE_GENERATED = "code_generated"
    ERROR = "error"


def utc_now() -> datetime:
    """Now, to the millisecond: the stored frame's precision (:func:`iso_timestamp`),
    so an event, a job's times and their replay after a restart are the same."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond - now.microsecond % 1000)


def iso_timestamp(moment: datetime) -> str:
    """ISO 8601 UTC with milliseconds and ``Z``: ``2025-12-01T10:00:01.000Z``."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    # isoformat (C) truncates to milliseconds like the strftime it replaces, at a
    # tenth of its cost; "+00:00" becomes "Z".
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class Draft:
    """An event before the broadcaster numbers it."""

    job_id: str
    type: EventType
    team: TeamName | None
    data: Mapping[str, Any]
    timestamp: datetime = field(default_factory=utc_now)

    @staticmethod
    def status(job_id: str, team: TeamName | None, status: str, **extra: Any) -> Draft:
        return Draft(job_id, EventType.STATUS_CHANGE, team, {"status": status, **extra})

    @staticmethod
    def thought(job_id: str, team: TeamName, text: str) -> Draft:
        """The guide's ``thought_added``: the id is made here, once, and stored with
        the event, so every replay, snapshot and restart shows the same id."""
        now = utc_now()
        data = {
            "id": str(uuid.uuid4()),
            "text": text,
            "timestamp": iso_timestamp(now),
            "team": team.value,
        }
        return Draft(job_id, EventType.THOUGHT_ADDED, team, data, now)

    @staticmethod
    def code(job_id: str, team: TeamName, code: str, language: str, token_count: int) -> Draft:
        data = {"code": code, "language": language, "token_count": token_count}
        return Draft(job_id, EventType.CODE_GENERATED, team, data)

    @staticmethod
    def error(job_id: str, team: TeamName | None, message: str) -> Draft:
        return Draft(job_id, EventType.ERROR, team, {"error": message, "status": "error"})


@dataclass(frozen=True, slots=True)
class Event:
    """A numbered job event and its encoded WebSocket frame."""

    job_id: str
    seq: int
    type: EventType
    team: TeamName | None
    data: Mapping[str, Any]
    timestamp: datetime
    frame: str
    # When the broadcaster numbered it (or the log was read): where delivery latency starts.
    taken: float = field(default_factory=time.monotonic, compare=False, repr=False)

    @staticmethod
    def from_draft(draft: Draft, seq: int) -> Event:
        return Event(
            draft.job_id, seq, draft.type, draft.team, draft.data, draft.timestamp,
            encode(draft, seq),
        )

    @staticmethod
    def from_frame(frame: str) -> Event:
        """Rebuilds an event from its stored frame (the frame is the record)."""
        obj = orjson.loads(frame)
        team = obj.get("team")
        return Event(
            job_id=obj["job_id"],
            seq=obj["seq"],
            type=EventType(obj["type"]),
            team=TeamName(team) if team else None,
            data=obj["data"],
            timestamp=parse_timestamp(obj["timestamp"]),
            frame=frame,
        )

    @property
    def size(self) -> int:
        """Bytes this event takes on the wire (and, roughly, in a queue)."""
        return len(self.frame)

    @property
    def job_state(self) -> JobState | None:
        """The job's new state, if this is a job-level status change."""
        if self.type is EventType.STATUS_CHANGE and self.team is None:
            return JobState(self.data["status"])
        return None

    @property
    def is_final(self) -> bool:
        """True for the job's last event (a job-level status change to a final state)."""
        return self.job_state in JOB_FINAL


def encode(draft: Draft, seq: int) -> str:
    """The guide's message shape plus ``job_id`` and ``seq``; job events omit ``team``."""
    message: dict[str, Any] = {"type": draft.type.value}
    if draft.team is not None:
        message["team"] = draft.team.value
    message["data"] = dict(draft.data)
    message["timestamp"] = iso_timestamp(draft.timestamp)
    message["job_id"] = draft.job_id
    message["seq"] = seq
    return dumps(message)


def dumps(message: Mapping[str, Any]) -> str:
    """Compact JSON, UTF-8 kept as is: what ``json.dumps(message, ensure_ascii=False,
    separators=(",", ":"))`` writes, through orjson (a frame is encoded once per
    event, so this is most of the per-event work that does not depend on
    subscribers). What orjson refuses (a lone surrogate, an int past 64 bits)
    goes through the standard library."""
    try:
        return orjson.dumps(message).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


# Thoughts recorded before they had ids (``{"thought": text}``) get one derived from
# where they are in the log, so an old database serves the same id every time.
_LEGACY_THOUGHT_NAMESPACE = uuid.UUID("5d6f1f0e-8f3c-4c1e-9a59-6a1f3c9b7e21")


def legacy_thought_id(job_id: str, seq: int) -> str:
    return str(uuid.uuid5(_LEGACY_THOUGHT_NAMESPACE, f"{job_id}/{seq}"))


def upgrade_frame(frame: str) -> str:
    """A stored frame in today's shape: an old ``thought_added`` (``{"thought": text}``)
    becomes ``{"id", "text", "timestamp", "team"}``; anything else is returned as it is."""
    obj = json.loads(frame)
    data = obj.get("data")
    if obj.get("type") != EventType.THOUGHT_ADDED.value or "id" in data:
        return frame
    obj["data"] = {
        "id": legacy_thought_id(obj["job_id"], obj["seq"]),
        "text": data.get("thought", ""),
        "timestamp": obj["timestamp"],
        "team": obj.get("team", ""),
    }
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def control_message(type_: str, **fields: Any) -> str:
    """A message that is not a job event (``connected``, ``pong``, client ``error``)."""
    return dumps({"type": type_, **fields, "timestamp": iso_timestamp(utc_now())})
