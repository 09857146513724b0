"""Server-sent events, the ``text/event-stream`` bodies both fake APIs stream.

An :class:`SSE` is one event: an optional ``event:`` line (Anthropic names its
events; Gemini sends ``data:`` lines only) and its ``data:``. :func:`sse_reply`
is the 200 :class:`~chimera.fakes.server.Reply` carrying them, each event one
body piece (so one HTTP chunk), :class:`~chimera.fakes.server.Pause` values
passed through, with LF or CRLF line endings and the
:class:`~chimera.fakes.server.Delivery` options of the reply.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Unpack

from chimera.fakes.server import Delivery, Pause, Reply


@dataclass(frozen=True, slots=True)
class SSE:
    """One server-sent event; ``data`` is sent as is (it may be broken JSON).
    ``event`` None: no ``event:`` line."""

    event: str | None
    data: str

    def encode(self, newline: str) -> bytes:
        """The event's wire bytes, ended by a blank line."""
        name = "" if self.event is None else f"event: {self.event}{newline}"
        return f"{name}data: {self.data}{newline}{newline}".encode()


def sse_reply(
    events: Iterable[SSE | Pause],
    headers: Mapping[str, str],
    *,
    crlf: bool,
    **delivery: Unpack[Delivery],
) -> Reply:
    """A 200 reply with ``headers`` streaming ``events``, lines ended by CRLF if
    ``crlf``, else LF."""
    newline = "\r\n" if crlf else "\n"
    body = [item if isinstance(item, Pause) else item.encode(newline) for item in events]
    return Reply(status=200, headers=headers, body=body, **delivery)
