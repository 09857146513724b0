"""Job events: immutable values, numbered per job, encoded to JSON once.

A team or supervisor produces a :class:`Draft` (no sequence number yet); the
broadcaster numbers it and turns it into an :class:`Event`, whose ``frame`` is
the exact WebSocket text every subscriber receives, as UTF-8 bytes: encoded once,
then stored, published between processes and written to every connection as
they are.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

import orjson

from chimera.ids import random_uuid4


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
    # Added by Chimera (the guide has no such type): the code while it is written.
    CODE_DELTA = "code_delta"


def splice(code: str, offset: int, text: str) -> str:
    """The code so far after one ``code_delta``: ``text`` replaces what ``code`` has
    from ``offset`` on. Offsets count Unicode code points (Python ``str`` indices).

    Mostly ``offset == len(code)`` and this appends, so a team's deltas joined in
    offset order are its code. An ``offset`` below ``len(code)`` means the team
    started its code again there (a provider retry, or a larger code block that
    overtook the one shown): what followed is dropped. Applied in ``seq`` order,
    a team's deltas always end as its ``code_generated.code``, byte for byte.
    """
    if offset == len(code):
        return code + text
    return code[:offset] + text


def common_prefix_length(a: str, b: str) -> int:
    """How many leading characters ``a`` and ``b`` share: where a delta that turns
    one into the other starts (a binary search of slice compares, done in C)."""
    low, high = 0, min(len(a), len(b))
    if a[:high] == b[:high]:
        return high
    while high - low > 1:  # a[:low] == b[:low], a[:high] != b[:high]
        middle = (low + high) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle
    return low


def utc_now() -> datetime:
    """Now, to the millisecond: the stored frame's precision (:func:`iso_timestamp`),
    so an event, a job's times and their replay after a restart are the same."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond - now.microsecond % 1000)


def iso_timestamp(moment: datetime) -> str:
    """ISO 8601 UTC with milliseconds and ``Z``: ``2025-12-01T10:00:01.000Z``."""
    global _last_stamp
    last, text = _last_stamp
    if moment == last:  # an event's times are formatted 2-3 times, mostly alike
        return text
    text = _iso(moment)
    _last_stamp = moment, text
    return text


def _iso(moment: datetime) -> str:
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    # isoformat (C) truncates to milliseconds like the strftime it replaces, at a
    # tenth of its cost; "+00:00" becomes "Z".
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"


# The last moment formatted and its text (aware datetimes compare as instants, so
# equal moments in any zone format alike).
_EPOCH = datetime.min.replace(tzinfo=UTC)
_last_stamp: tuple[datetime, str] = (_EPOCH, _iso(_EPOCH))


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
            "id": str(random_uuid4()),
            "text": text,
            "timestamp": iso_timestamp(now),
            "team": team.value,
        }
        return Draft(job_id, EventType.THOUGHT_ADDED, team, data, now)

    @staticmethod
    def code(
        job_id: str, team: TeamName, code: str, language: str, token_count: int,
        input_tokens: int = 0,
    ) -> Draft:
        """The guide's ``code_generated``, plus ``language`` and ``input_tokens`` (the
        tokens of the request the model read)."""
        data = {
            "code": code, "language": language, "token_count": token_count,
            "input_tokens": input_tokens,
        }
        return Draft(job_id, EventType.CODE_GENERATED, team, data)

    @staticmethod
    def code_delta(job_id: str, team: TeamName, offset: int, text: str) -> Draft:
        """A piece of the code while the team writes it: ``text`` goes at ``offset``
        of the code so far (:func:`splice`)."""
        return Draft(job_id, EventType.CODE_DELTA, team, {"offset": offset, "text": text})

    @staticmethod
    def error(job_id: str, team: TeamName | None, message: str) -> Draft:
        return Draft(job_id, EventType.ERROR, team, {"error": message, "status": "error"})


class Event:
    """A numbered job event and its encoded WebSocket frame.

    ``frame`` is the exact WebSocket text every subscriber receives, as UTF-8
    bytes, encoded once (:func:`encode`) and then stored, published and written
    as they are. An event read back (:meth:`from_frame`) parses only what
    numbering and delivery need (its type, and whether it is the job's last):
    ``team``, ``data`` and ``timestamp`` are parsed from the frame the first time
    they are read. Treat an event as immutable: nothing changes after it is made.
    """

    __slots__ = (
        "_data", "_team", "_timestamp", "frame", "is_final", "job_id", "seq", "taken",
        "type",
    )

    def __init__(
        self,
        job_id: str,
        seq: int,
        type: EventType,
        team: TeamName | None,
        data: Mapping[str, Any] | None,
        timestamp: datetime,
        frame: bytes,
        taken: float | None = None,
        *,
        final: bool | None = None,
    ) -> None:
        """``data`` ``None`` (with ``final`` given): ``team``, ``data`` and
        ``timestamp`` are parsed from ``frame`` when first read."""
        self.job_id: Final = job_id
        self.seq: Final = seq
        self.type: Final = type
        self.frame: Final = frame
        self._team = team
        self._data = data
        self._timestamp = timestamp
        # True for the job's last event (a job-level status change to a final state).
        self.is_final: Final[bool] = (
            final if final is not None else
            type is EventType.STATUS_CHANGE and team is None and data is not None
            and data["status"] in JOB_FINAL
        )
        # When the broadcaster numbered it (or the log was read): where delivery
        # latency starts.
        self.taken: Final = time.monotonic() if taken is None else taken

    @staticmethod
    def from_draft(draft: Draft, seq: int) -> Event:
        return Event(
            draft.job_id, seq, draft.type, draft.team, draft.data, draft.timestamp,
            encode(draft, seq),
        )

    @staticmethod
    def from_frame(frame: bytes, job_id: str | None = None, seq: int | None = None) -> Event:
        """Rebuilds an event from its stored frame (the frame is the record).

        With ``job_id`` and ``seq`` (what the store keeps beside the frame; for
        ``seq``, also the end of a frame as :func:`encode` writes it), a frame
        whose header is :func:`encode`'s is not parsed now unless it is a
        job-level status change (which may be the job's last); any other
        frame is parsed in full.
        """
        if job_id is not None:
            if seq is None:
                seq = _tail_seq(frame)
            kind = _header_type(frame)
            if kind is not None and seq is not None:
                return Event(job_id, seq, kind, None, None, _UNPARSED, frame, final=False)
        obj = orjson.loads(frame)
        team = obj.get("team")
        return Event(
            obj["job_id"], obj["seq"], EventType(obj["type"]),
            TeamName(team) if team else None, obj["data"],
            parse_timestamp(obj["timestamp"]), frame,
        )

    def _parse(self) -> None:
        obj = orjson.loads(self.frame)
        team = obj.get("team")
        self._team = TeamName(team) if team else None
        self._timestamp = parse_timestamp(obj["timestamp"])
        self._data = obj["data"]

    @property
    def team(self) -> TeamName | None:
        if self._data is None:
            self._parse()
        return self._team

    @property
    def data(self) -> Mapping[str, Any]:
        if self._data is None:
            self._parse()
            assert self._data is not None
        return self._data

    @property
    def timestamp(self) -> datetime:
        if self._data is None:
            self._parse()
        return self._timestamp

    def __eq__(self, other: object) -> bool:
        """Equal when they are the same job's same event, byte for byte."""
        if not isinstance(other, Event):
            return NotImplemented
        return (self.job_id, self.seq, self.frame) == (other.job_id, other.seq, other.frame)

    def __hash__(self) -> int:
        return hash((self.job_id, self.seq, self.frame))

    def __repr__(self) -> str:
        return f"Event(job_id={self.job_id!r}, seq={self.seq}, frame={self.frame!r})"

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


# Placeholder for the parsed timestamp of an event read back and not parsed yet.
_UNPARSED = datetime.min.replace(tzinfo=UTC)
_TYPE_PREFIX = b'{"type":"'
_TYPES = {t.value.encode(): t for t in EventType}


def _header_type(frame: bytes) -> EventType | None:
    """The type of a frame written by :func:`encode` (``{"type":"…",`` first),
    if reading its header is enough to know it is not the job's last event:
    ``None`` for a job-level status change (no ``team`` after the type), or a
    frame laid out otherwise, which are parsed in full."""
    if not frame.startswith(_TYPE_PREFIX):
        return None
    end = frame.find(b'"', 9)
    kind = _TYPES.get(frame[9:end])
    if kind is None:
        return None
    if kind is EventType.STATUS_CHANGE and not frame.startswith(b',"team":"', end + 1):
        return None
    return kind


def _tail_seq(frame: bytes) -> int | None:
    """The ``seq`` of a frame :func:`encode` wrote (its last member, ``,"seq":N}``),
    or ``None`` if the frame does not end that way."""
    at = frame.rfind(b',"seq":', -32)
    if at < 0 or not frame.endswith(b"}"):
        return None
    digits = frame[at + 7:-1]
    if not digits.isdigit() or len(digits) > 18:
        return None
    return int(digits)


def encode(draft: Draft, seq: int) -> bytes:
    """The guide's message shape plus ``job_id`` and ``seq`` (last); job events
    omit ``team``. UTF-8 JSON, as :func:`dumps` writes it."""
    message: dict[str, Any] = {"type": draft.type.value}
    if draft.team is not None:
        message["team"] = draft.team.value
    message["data"] = dict(draft.data)
    message["timestamp"] = iso_timestamp(draft.timestamp)
    message["job_id"] = draft.job_id
    message["seq"] = seq
    return dumps_bytes(message)


def dumps_bytes(message: Mapping[str, Any]) -> bytes:
    """:func:`dumps`, UTF-8 encoded: orjson's own output, encoded once. Text that
    UTF-8 cannot hold (a lone surrogate, through the standard library) is kept
    as ``surrogatepass`` bytes, which are not valid UTF-8: the store refuses
    such a frame (:func:`check_utf8`), as it refused the text before."""
    try:
        return orjson.dumps(message)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-8", "surrogatepass")


def check_utf8(frame: bytes) -> None:
    """Raises ``UnicodeDecodeError`` unless ``frame`` is valid UTF-8 (cheap for
    ASCII; a frame :func:`dumps_bytes` made through orjson always is)."""
    if not frame.isascii():
        frame.decode()


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
