"""One WebSocket connection's life, from ``connected`` to its close.

``ws://HOST:PORT/ws/orchestrate/{job_id}[?since=N[&epoch=E]][&deltas=0]``, admitted by
:mod:`chimera.gateways.admission`: the server sends ``connected`` (its
``data.epoch`` names the store's lifetime the ``seq`` numbers belong to), then every
event after ``since`` (default 0, the whole history), then live events, each
exactly once and in order, and closes with 1000 after the job's final event. A
resume sends back the epoch with its ``since``; one from another lifetime of the
store (its data was lost since, and the id may name another job now) is closed
4410, never spliced onto the new job's events. ``since=0`` for an unknown job is
not an error: it waits for the job to exist. ``deltas=0`` leaves out the
``code_delta`` events (only the guide's types): their seqs are skipped, not
renumbered, so such a subscriber sees gaps in ``seq`` where they were, and
resumes after the last seq it received as any other.

The client may send ``ping`` or ``{"type":"ping"}`` and gets ``pong``;
``create_job`` and ``cancel_job`` (:mod:`chimera.gateways.ws_commands`) submit and
cancel the socket's job through the same JobManager, scopes and limits as
CreateJob/CancelJob, with the token the handshake accepted; anything else gets an
``error`` message and the connection stays.

A socket opened to submit: a token that may only watch its own jobs cannot wait
for an unknown one; if it may submit and read, its socket is accepted for the one
job it may create there: it gets ``connected``, then nothing until its
``create_job`` succeeds (``job_created``), then the job's whole history and live
events.

Close codes and reasons are the error table's (:func:`chimera.errors.close_for`):
1000 job finished; 1001 server shutting down; 1009 client frame too large
(websockets); 1013 try again later (a subscriber limit, or the store cannot be read
or written just now); 4008 the subscriber fell behind (resume with ``since``); 4410
history gone; 4416 ``since`` past the job's last ``seq``; 4401 the token the socket
was opened with expired (at its ``exp`` plus the 30 s clock leeway; other sockets
are untouched). Before a 4410, 4416 or 4401 close the server sends an ``error``
message saying why.

Caught up, a subscriber's events are written by the broadcaster itself
(:mod:`chimera.gateways.fast_path`); behind, by the connection's own task, which
also reads the client's messages: one task per connection.
"""

from __future__ import annotations

import asyncio
import contextlib

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from chimera.actors.broadcaster import Subscription
from chimera.actors.jobs import JobManager, JobRequest
from chimera.errors import (
    CLOSE_FINISHED,
    CLOSE_TOO_SLOW,
    ChimeraError,
    ResourceExhausted,
    TokenExpired,
    Unavailable,
    close_for,
)
from chimera.events import Event, control_message
from chimera.gateways.admission import Admission, Admitted, peer_address
from chimera.gateways.expiry import end_at_expiry, seconds_left
from chimera.gateways.fast_path import DirectWriter
from chimera.gateways.limits import SubscriberLimits
from chimera.gateways.ws_commands import (
    BadCommand,
    CancelJob,
    CreateJob,
    Ping,
    error_message,
    job_created,
    parse_command,
)
from chimera.gateways.ws_connection import WRITE_LIMIT, WsConnection
from chimera.observability.logs import log_context
from chimera.observability.metrics import WS_CONNECTIONS, Deliveries, message_size, ws_closed

SHED_CLOSE_TIMEOUT = 60.0  # seconds a shed (slow) reader has to read up to its 4008


class Sessions:
    """Runs each accepted connection (:meth:`handle`, the server's handler) in
    the handler's own task, which both reads and (when behind) writes."""

    def __init__(
        self,
        jobs: JobManager,
        admission: Admission,
        limits: SubscriberLimits,
        deliveries: Deliveries | None,
    ) -> None:
        """``deliveries``: count messages, bytes and delivery latencies (None: not)."""
        self._jobs = jobs
        self._admission = admission
        self._limits = limits
        self._deliveries = deliveries
        # Create-only sockets still waiting for their create_job: no subscription
        # ends them at shutdown, so the gateway's stop() closes them.
        self.awaiting_create: set[ServerConnection] = set()
        # Shed readers' connections, closing with SHED_CLOSE_TIMEOUT to read up to
        # their 4008: the gateway's stop() ends them after its grace (the server's
        # own list, Server.connections, has only the open ones).
        self.closing_slowly: set[WsConnection] = set()

    async def handle(self, ws: ServerConnection) -> None:
        """One connection, from ``connected`` to close, in this one task.

        Written as one coroutine with plain acquire/release (no helper
        coroutines, child tasks or context-manager generators that would stay
        suspended for the connection's life): an idle subscriber must stay
        small. It sends the history, then loops: what is queued goes out;
        with nothing queued it has caught up, and waits for its client's next
        message while the broadcaster writes live events straight to the
        connection (:class:`DirectWriter`), until the subscription wakes it
        (an event queued, or the subscription ended).
        """
        assert isinstance(ws, WsConnection)  # the gateway's serve(create_connection=...)
        admitted = self._admission.take(ws)
        subscription = await self._open(ws, admitted)
        if subscription is None:
            return
        # Ends the subscription when the token expires: the session then says
        # so and closes with 4401.
        expiry = end_at_expiry(subscription, admitted.principal)
        direct = DirectWriter(ws, WRITE_LIMIT, self._deliveries)
        subscription.listener = direct
        try:
            await self._send_history(ws, direct, subscription)
            while not subscription.done:
                # Behind: what is queued goes out in batches that fill the
                # transport's buffer to its high-water mark, one write each.
                queued = subscription.take_nowait(direct.room())  # raises why it ended
                if queued:
                    await self._send_queued(ws, direct, queued)
                    continue
                try:
                    async with asyncio.timeout(None) as direct.interrupt:
                        direct.caught_up = True
                        message = await ws.recv()
                except TimeoutError:
                    if direct.interrupt is not None:
                        raise  # not the wake's
                    continue
                finally:
                    direct.caught_up = False
                    direct.interrupt = None
                reply, _ = await self._reply(admitted, peer_address(ws), message)
                if reply is not None:
                    await self._send(ws, direct, self._counted(reply))
            ended: ChimeraError | None = None
        except ChimeraError as exc:
            ended = exc
        except ConnectionClosed:
            return  # the client left (or websockets closed it: 1009, a keepalive's 1011)
        finally:
            # Before the close: a shed reader's may take a while (SHED_CLOSE_TIMEOUT),
            # and its resume must not count against the limits meanwhile.
            subscription.close()
            if expiry is not None:
                expiry.cancel()
            self._limits.release(admitted.job_id, peer_address(ws))
        if isinstance(ended, TokenExpired):
            await self._refuse(ws, subscription.job_id, ended)
        elif ended is not None:
            await self._close(ws, *close_for(ended))
        else:
            await self._close(ws, CLOSE_FINISHED, "job finished")

    async def _reply(
        self, admitted: Admitted, address: str, message: str | bytes
    ) -> tuple[str | None, bool]:
        """Carries out a client message; returns the answer to send, if any, and
        whether it created the job.

        ``job_created`` is sent before any of the job's events: nothing awaits
        between the job being opened in the broadcaster and this return, and
        the caller writes it at once. A cancel has no answer of its own: the
        job's ``cancelled`` events and the close after them are the answer.
        """
        job_id, request_id = admitted.job_id, ""
        try:
            command = parse_command(message, job_id)
            if isinstance(command, Ping):
                return control_message("pong"), False
            if isinstance(command, CreateJob):
                request_id = command.request_id
                await self._jobs.create(
                    JobRequest(command.brief, command.teams, job_id, request_id),
                    principal=admitted.principal,
                    caller=address,
                )
                return job_created(job_id, request_id), True
            assert isinstance(command, CancelJob)
            await self._jobs.cancel(job_id, principal=admitted.principal)
            return None, False
        except BadCommand as exc:
            return error_message(job_id, exc, exc.request_id), False
        except ChimeraError as exc:
            return error_message(job_id, exc, request_id), False

    async def _until_created(
        self, ws: ServerConnection, admitted: Admitted, address: str
    ) -> bool:
        """Answers a create-only socket's messages until its job is created (True),
        or the client leaves or the server stops (False)."""
        self.awaiting_create.add(ws)
        try:
            while True:
                try:
                    # Only the wait for a message: a create under way is not interrupted.
                    async with asyncio.timeout(seconds_left(admitted.principal)):
                        message = await ws.recv()
                except ConnectionClosed:
                    return False
                except TimeoutError:
                    await self._refuse(ws, admitted.job_id, TokenExpired())
                    return False
                reply, created = await self._reply(admitted, address, message)
                if reply is not None:
                    await ws.send(self._counted(reply))
                if created:
                    return True
        finally:
            self.awaiting_create.discard(ws)

    def _counted(self, message: str) -> str:
        """``message``, counted as sent (a control message, not an event)."""
        if self._deliveries is not None:
            self._deliveries.sent(message_size(message))
        return message

    async def _open(self, ws: WsConnection, admitted: Admitted) -> Subscription | None:
        """The connection's set-up: counts it against the limits, subscribes by
        :meth:`JobManager.watch`'s rule and sends ``connected``; or closes the
        connection saying why and returns ``None``.

        A plain coroutine that has returned before the connection idles, so it
        costs an idle subscriber nothing. On success the caller releases the
        limits.
        """
        job_id, since, address = admitted.job_id, admitted.since, peer_address(ws)
        _count_connection(ws)
        log_context(job_id=job_id, peer=address)
        try:
            # Checked again here, counted for good: others may have connected
            # since this one passed the handshake.
            self._limits.acquire(job_id, address)
        except ResourceExhausted as exc:
            await ws.close(*close_for(exc))
            return None

        def connected(epoch: str) -> str:
            # ``epoch``: the store lifetime the events that follow belong to. A client
            # resumes with it (and since); watch refuses another lifetime's (4410).
            return self._counted(control_message(
                "connected",
                job_id=job_id,
                data={"message": f"Connected to job {job_id}", "since": since, "epoch": epoch},
            ))

        try:
            if not admitted.watching:
                await ws.send(connected(self._jobs.epoch))
                if not await self._until_created(ws, admitted, address):
                    self._limits.release(job_id, address)
                    return None
            subscription = await self._jobs.watch(
                job_id, since, principal=admitted.principal, epoch=admitted.epoch,
                deltas=admitted.deltas,
            )
        except ConnectionClosed:
            self._limits.release(job_id, address)
            return None
        except Unavailable as exc:
            self._limits.release(job_id, address)
            await ws.close(*close_for(exc))
            return None
        except ChimeraError as exc:
            self._limits.release(job_id, address)
            # Accepted, then refused.
            with contextlib.suppress(ConnectionClosed):
                if admitted.watching:
                    await ws.send(connected(self._jobs.epoch))
            await self._refuse(ws, job_id, exc)
            return None
        try:
            if admitted.watching:
                await ws.send(connected(subscription.epoch))
        except BaseException:
            subscription.close()
            self._limits.release(job_id, address)
            raise
        return subscription

    async def _refuse(self, ws: ServerConnection, job_id: str, error: ChimeraError) -> None:
        """Says why in an ``error`` message, then in the close (4410, 4416, 4401, …)."""
        with contextlib.suppress(ConnectionClosed):
            message = control_message("error", job_id=job_id, data={"error": str(error)})
            await ws.send(self._counted(message))
            await ws.close(*close_for(error))

    async def _close(self, ws: WsConnection, code: int, reason: str) -> None:
        if code != CLOSE_TOO_SLOW:
            await ws.close(code, reason)
            return
        # The close frame waits behind what the kernel already holds for this slow
        # reader: give it time to read up to it and learn why (4008, not a bare 1006).
        # Not documented API: serve()'s close_timeout is every connection's, and no
        # documented call changes one connection's; this attribute is what close()
        # reads when it starts (Chimera's one such use: see pyproject.toml's pin).
        ws.close_timeout = SHED_CLOSE_TIMEOUT
        self.closing_slowly.add(ws)
        try:
            await ws.close(code, reason)
        finally:
            self.closing_slowly.discard(ws)

    async def _send_history(
        self, ws: ServerConnection, direct: DirectWriter, subscription: Subscription
    ) -> None:
        """Sends the stored events (a coroutine of its own, so that nothing of the
        history, its iterator or its last event, stays with an idle connection)."""
        async with contextlib.aclosing(subscription.history()) as history:
            async for event in history:
                await self._send_queued(ws, direct, [event])

    def _delivered(self, events: list[Event]) -> None:
        if self._deliveries is not None:
            for event in events:
                self._deliveries.ws_delivered(event, len(event.frame))

    async def _send_queued(
        self, ws: ServerConnection, direct: DirectWriter, events: list[Event]
    ) -> None:
        """Writes ``events``: all but the last in one transport write
        (:meth:`DirectWriter.write`; a ``send`` per queued event cost ten times
        the bare server's catch-up), then the last with ``ws.send``, which waits,
        as every ``send`` does, for the buffer to drain below its high-water
        mark, and raises ConnectionClosed (once the closing handshake is over)
        if the connection is not open."""
        if direct.write(events[:-1]):
            # Counted when written: send() writes the last one in this same step
            # (an open connection), before it waits.
            self._delivered(events)
        await self._send(ws, direct, events[-1].frame)

    @staticmethod
    async def _send(ws: ServerConnection, direct: DirectWriter, frame: str | bytes) -> None:
        """``ws.send(frame)``, whose wait for the buffer to drain is given up if the
        subscription ends at once meanwhile (shed: its reader stopped reading; the
        frame is written by then). The caller then finds why it ended, and closes
        the connection: what websockets' documentation says a cancelled send
        amounts to."""
        try:
            async with asyncio.timeout(None) as direct.interrupt:
                await ws.send(frame, text=True)
        except TimeoutError:
            if direct.interrupt is not None:
                raise  # not the wake's
        finally:
            direct.interrupt = None


def _count_connection(ws: WsConnection) -> None:
    """Counts ``ws`` as open until its TCP connection is gone, then counts why it ended."""
    WS_CONNECTIONS.inc()
    ws.on_close = _closed


def _closed(closed: ConnectionClosed) -> None:
    # The close frame the server sent (its own, or websockets': 1009, a keepalive's
    # 1011), and whether the client's came first.
    ws_closed(closed.sent.code if closed.sent else None, bool(closed.rcvd_then_sent))
