"""What a client may send on a job's WebSocket, parsed: ``ping``, ``create_job``, ``cancel_job``.

Browsers cannot speak gRPC, and a GET with side effects invites CSRF, so a page
submits on the job's own socket (whose Origin and Host the handshake checked)::

    {"type": "create_job", "brief": "...", "teams": ["anthropic"], "request_id": "..."}
    {"type": "cancel_job"}

The socket's path names the job; ``teams`` (default: every team) and
``request_id`` (an idempotency key) are optional. The server answers
``{"type": "job_created", "job_id": ...}`` or an ``error`` message whose
``data.code`` is the gRPC status name CreateJob/CancelJob would have given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chimera.errors import ChimeraError, InvalidArgument, code_name
from chimera.events import TeamName, control_message
from chimera.ids import check_text

HELP = (
    'send "ping", {"type":"ping"}, {"type":"create_job","brief":"…"} or {"type":"cancel_job"}'
)


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class CreateJob:
    brief: str
    teams: tuple[TeamName, ...]
    request_id: str


@dataclass(frozen=True, slots=True)
class CancelJob:
    pass


Command = Ping | CreateJob | CancelJob


class BadCommand(InvalidArgument):
    """A client message that is not a command; ``request_id`` as far as it was read."""

    def __init__(self, message: str, request_id: str = "") -> None:
        super().__init__(message)
        self.request_id = request_id


def parse_command(message: str | bytes, job_id: str) -> Command:
    """The command ``message`` is; :class:`BadCommand` says what is wrong with it."""
    if not isinstance(message, str):
        raise BadCommand(f"unknown message (binary frames are not understood): {HELP}")
    text = message.strip()
    if text == "ping":
        return Ping()
    try:
        obj = json.loads(text) if text.startswith("{") else None
    except (ValueError, RecursionError):  # RecursionError: deeply nested JSON
        obj = None
    if not isinstance(obj, dict):
        raise BadCommand(f"unknown message: {HELP}")
    kind = obj.get("type")
    if kind == "ping":
        return Ping()
    if kind == "cancel_job":
        return CancelJob()
    if kind == "create_job":
        return _create_job(obj, job_id)
    raise BadCommand(f"unknown message type {str(kind)[:40]!r}: {HELP}")


def _create_job(obj: dict[str, Any], job_id: str) -> CreateJob:
    request_id = obj.get("request_id", "")
    if not isinstance(request_id, str):
        raise BadCommand("request_id must be a string")
    try:
        # Here, not only in JobManager: the error message echoes a request_id,
        # and one that cannot be encoded would fail the reply (close 1011).
        check_text("request_id", request_id)
    except InvalidArgument as exc:
        raise BadCommand(str(exc)) from None
    brief = obj.get("brief")
    if not isinstance(brief, str):
        raise BadCommand("create_job needs a brief (a string): what to build", request_id)
    teams = obj.get("teams", [])
    if not isinstance(teams, list) or not all(isinstance(t, str) for t in teams):
        raise BadCommand('teams must be a list of team names, e.g. ["anthropic"]', request_id)
    known = {t.value: t for t in TeamName}
    unknown = [t for t in teams if t not in known]
    if unknown:
        raise BadCommand(
            f"teams has an unknown team ({unknown[0][:40]!r}): use "
            f"{', '.join(known)}",
            request_id,
        )
    given_id = obj.get("job_id", job_id)
    if given_id != job_id:
        raise BadCommand(
            "job_id differs from the socket's: the job is the one this socket's path names",
            request_id,
        )
    return CreateJob(brief, tuple(known[t] for t in teams), request_id)


def job_created(job_id: str, request_id: str) -> str:
    return control_message("job_created", job_id=job_id, request_id=request_id)


def error_message(job_id: str, error: ChimeraError, request_id: str = "") -> str:
    """An ``error`` message for a refused command, with the gRPC status name as ``code``."""
    data = {"error": str(error), "code": code_name(error)}
    if request_id:
        data["request_id"] = request_id
    return control_message("error", job_id=job_id, data=data)
