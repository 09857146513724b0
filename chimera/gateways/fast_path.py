"""The WebSocket fast path: a caught-up subscriber's live events written straight to
its connection by the broadcaster, as ``websockets.broadcast()`` writes them.

While the transport's buffer is under its high-water mark, :class:`DirectWriter`
(the subscription's :class:`~chimera.actors.broadcaster.Listener`) writes the
event; otherwise it refuses, the event is queued, and the connection's session
(:mod:`chimera.gateways.ws_session`) sends the queue, several frames per
write (:meth:`DirectWriter.write`), waiting for the buffer to drain between writes.
"""

from __future__ import annotations

import asyncio

from websockets.protocol import State

from chimera.events import Event
from chimera.gateways.ws_connection import WsConnection
from chimera.observability.metrics import Deliveries


class DirectWriter:
    """The fast path of one connection, as the broadcaster's :class:`Listener`:
    writes a live event straight to the connection while its session has
    caught up (history sent, nothing queued, waiting: ``caught_up``, kept by
    the session) and the transport is under its high-water mark; otherwise
    refuses, and the event is queued for the session.

    What ``websockets.broadcast()`` does for one connection (skip it unless it
    is open, ``protocol.send_text(bytes)``, write the protocol's output), with
    two differences: it also skips a connection whose session has a write
    of its own under way (``caught_up`` is false then, so the two never
    interleave), and it refuses rather than buffer past the high-water mark
    (``broadcast()`` has no backpressure, so a slow subscriber would never
    reach its queue and its 4008). Only documented API: the Sans-I/O
    protocol's ``state``, ``send_text()`` and ``data_to_send()``, the asyncio
    transport's ``write()`` and ``get_write_buffer_size()``, reached as
    :class:`~chimera.gateways.ws_connection.WsConnection` says, and the
    high-water mark the gateway gave ``serve()`` (``write_limit``).

    It is also how the subscription wakes the session (:meth:`woken`): the
    session's one task waits for its client's messages while caught up, and
    for the buffer to drain while it writes, inside ``interrupt``, a timeout
    without a deadline that a wake moves to now. Caught up, any wake ends the
    wait (an event was queued, or the subscription ended); writing, only an
    end at once does (shed: the client stopped reading, so the write would
    wait for as long as it does).
    """

    __slots__ = ("_limit", "_live", "_protocol", "_transport", "caught_up", "interrupt")

    def __init__(self, ws: WsConnection, write_limit: int, deliveries: Deliveries | None) -> None:
        """``write_limit``: the high-water mark given to ``serve()``."""
        self.caught_up = False
        # Entered by the session around each wait; None between them.
        self.interrupt: asyncio.Timeout | None = None
        self._protocol = ws.sansio
        self._transport = ws.asyncio_transport
        self._limit = write_limit
        self._live = deliveries.live if deliveries is not None else None

    def offer(self, event: Event) -> bool:
        if (
            not self.caught_up
            or self._protocol.state is not State.OPEN
            or self._transport.get_write_buffer_size() > self._limit
        ):
            return False
        self._protocol.send_text(event.frame)
        self._flush()
        if self._live is not None:
            self._live(event, len(event.frame))
        return True

    def woken(self, at_once: bool) -> None:
        interrupt = self.interrupt
        if interrupt is not None and (self.caught_up or at_once):
            self.interrupt = None  # a timeout is moved once: it has fired
            interrupt.reschedule(0.0)  # a deadline already past: at the loop's next turn

    def room(self) -> int:
        """Bytes the transport's buffer takes before its high-water mark (at least 1)."""
        return max(self._limit - self._transport.get_write_buffer_size(), 1)

    def write(self, events: list[Event]) -> bool:
        """Writes ``events`` in one transport write (a session's queued batch, framed
        as :meth:`offer` frames them); ``False``, having written nothing, if the
        connection is not open."""
        if self._protocol.state is not State.OPEN:
            return False
        if events:
            for event in events:
                self._protocol.send_text(event.frame)
            self._flush()
        return True

    def _flush(self) -> None:
        """Writes what the protocol has to send, in one transport write, as the
        Sans-I/O contract asks right after ``send_text()``. An open connection's
        output is whole frames only: websockets writes its own (pongs, closes)
        in the step that makes them, and the end-of-stream marker follows a
        close, which an open connection has not sent."""
        self._transport.write(b"".join(self._protocol.data_to_send()))
