"""Wire formats both sides of a connection share: the chimera.v1 enum values of
Chimera's names, and the ``page_token`` of ``ListJobs`` and ``GET /api/jobs``.

The gateways (server side) and the CLI's client and console (client side) import
this module; neither reaches into the other for it. Translation of whole messages
stays with the gRPC gateway (``gateways/convert.py``).
"""

from __future__ import annotations

import base64
import binascii
from enum import StrEnum
from typing import Protocol, TypeVar

from chimera.errors import InvalidArgument
from chimera.events import JobState, TeamName, TeamStatus
from chimera.ids import is_ascii_number
from chimera.v1 import jobs_pb2 as pb

_E = TypeVar("_E", bound=StrEnum)
_V = TypeVar("_V", covariant=True)


class _ProtoEnum(Protocol[_V]):
    """A generated protobuf enum (``pb.JobState``, …): its values by name."""

    def Value(self, name: str) -> _V: ...


def _to_pb(names: type[_E], values: _ProtoEnum[_V], prefix: str) -> dict[_E, _V]:
    """Each of ``names`` to the proto value ``PREFIX_NAME`` (``JobState.RUNNING`` →
    ``JOB_STATE_RUNNING``: the proto prefixes its values with the enum's name); raises
    ``ValueError`` at import if the proto lacks one."""
    return {name: values.Value(prefix + name.name) for name in names}


TEAM_TO_PB = _to_pb(TeamName, pb.Team, "TEAM_")
TEAM_FROM_PB = {v: k for k, v in TEAM_TO_PB.items()}
STATE_TO_PB = _to_pb(JobState, pb.JobState, "JOB_STATE_")
STATE_FROM_PB = {v: k for k, v in STATE_TO_PB.items()}
STATUS_TO_PB = _to_pb(TeamStatus, pb.TeamStatus, "TEAM_STATUS_")
STATUS_FROM_PB = {v: k for k, v in STATUS_TO_PB.items()}


def encode_page_token(cursor: int | None) -> str:
    """The opaque ``next_page_token`` for a store cursor: base64url of ``v1:N``,
    unpadded; empty when there is no next page (``cursor`` None)."""
    if cursor is None:
        return ""
    return base64.urlsafe_b64encode(f"v1:{cursor}".encode()).decode().rstrip("=")


def decode_page_token(token: str) -> int | None:
    """The store cursor a ``page_token`` carries; None for the empty token (the first
    page). Raises :class:`InvalidArgument` for a token this server did not issue."""
    if not token:
        return None
    bad = InvalidArgument(
        "page_token is not one this server issued: pass next_page_token from the "
        "previous ListJobs response unchanged, or leave it empty"
    )
    if len(token) > 64:
        raise bad
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise bad from exc
    prefix, _, number = text.partition(":")
    if prefix != "v1" or not is_ascii_number(number) or len(number) > 18:
        raise bad
    return int(number)

