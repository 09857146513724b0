"""The WebSocket fast path: a caught-up subscriber's live events written straight to
its connection by the broadcaster (like ``websockets.broadcast()``), with each
event's frame built once for every connection (:func:`ws_frame`).

While the transport's buffer is under its high-water mark, :class:`DirectWriter`
(the subscription's :class:`~chimera.actors.broadcaster.Listener`) writes the
frame; otherwise it refuses, the event is queued, and the connection's writer
task (:mod:`chimera.gateways.ws_session`) sends the queue, several frames per
write (:meth:`DirectWriter.write`), waiting for the buffer to drain between writes.
"""

from __future__ import annotations

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from chimera.events import Event
from chimera.observability.metrics import Deliveries


def ws_frame(event: Event) -> bytes:
    """``event``'s WebSocket frame, serialized by the first writer that needs it
    and kept on the event (:attr:`Event.wire`) for every other connection, live,
    queued and catching up alike.

    A server's frames are not masked and we use no extension, so one event's
    frame is the same bytes on every connection.
    """
    wire = event.wire
    if wire is None:
        wire = event.wire = Frame(Opcode.TEXT, event.frame).serialize(mask=False, extensions=[])
    return wire


class DirectWriter:
    """The fast path of one connection, as the broadcaster's :class:`Listener`:
    writes a live event straight to the connection while its writer task has
    caught up (history sent, waiting for live events: ``caught_up``, kept by
    the session's writer) and the transport is under its high-water mark;
    otherwise refuses, and the event is queued for the writer task.

    What ``websockets.broadcast()`` does for one connection, with the frame
    serialized once for all of them (:func:`ws_frame`), and refusing rather than buffering past
    the high-water mark. Writing a whole frame to the transport is what
    ``protocol.send_text`` plus ``send_data`` do; it only happens between whole
    frames (the loop is single-threaded and every other write is a whole frame
    too). ``protocol.state``, ``transport`` and ``write_limit_high`` are not all
    documented API, hence websockets is pinned to the major version tested (17).
    """

    __slots__ = ("_limit", "_live", "_protocol", "_transport", "caught_up")

    def __init__(self, ws: ServerConnection, deliveries: Deliveries | None) -> None:
        self.caught_up = False
        self._protocol = ws.protocol
        self._transport = ws.transport
        self._limit = ws.write_limit_high
        self._live = deliveries.live if deliveries is not None else None

    def offer(self, event: Event) -> bool:
        if (
            not self.caught_up
            or self._protocol.state is not State.OPEN
            or self._transport.get_write_buffer_size() > self._limit
        ):
            return False
        self._transport.write(ws_frame(event))
        if self._live is not None:
            self._live(event, len(event.frame))
        return True

    def room(self) -> int:
        """Bytes the transport's buffer takes before its high-water mark (at least 1)."""
        return max(self._limit - self._transport.get_write_buffer_size(), 1)

    def write(self, events: list[Event]) -> bool:
        """Writes the queued ``events`` in one transport write (the writer task's
        batch: whole frames, as :meth:`offer` writes them); ``False``, having
        written nothing, if the connection is not open."""
        if self._protocol.state is not State.OPEN:
            return False
        self._transport.write(b"".join([ws_frame(e) for e in events]))
        return True
