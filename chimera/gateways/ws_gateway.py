"""The WebSocket gateway: live job events for browsers, on a bare ``websockets`` server.

``ws://HOST:PORT/ws/orchestrate/{job_id}[?since=N]``: the server sends
``connected``, then every event after ``since`` (default 0, the whole history),
then live events, each exactly once and in order, and closes with 1000 after
the job's final event. The client may send ``ping`` or ``{"type":"ping"}`` and
gets ``pong``; anything else gets an ``error`` message and the connection stays.

Plain HTTP on the same port (through ``process_request``): ``GET /healthz`` and
``GET /api/jobs/{job_id}`` (the job's JSON snapshot, for clients that poll).

Close codes: 1000 job finished; 1001 server shutting down; 1009 client frame
too large; :data:`CLOSE_TOO_SLOW` (4008) the subscriber fell behind (resume with
``since``); :data:`CLOSE_HISTORY_GONE` (4410) resuming (``since`` > 0) a job this
server does not keep (retention removed it, or it never existed here), or the
job being removed while read; :data:`CLOSE_SINCE_TOO_LARGE` (4416) ``since`` is
past the job's last ``seq``. Before a 4410 or 4416 close the server sends an
``error`` message saying why. ``since=0`` for an unknown job is not an error: it
waits for the job to exist.

Fast path: a caught-up subscriber's events are written straight to its
connection by the broadcaster (like ``websockets.broadcast()``) while the
transport's buffer is under its high-water mark; otherwise they are queued and
sent by the connection's writer task, which waits for the buffer to drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
from collections.abc import Awaitable
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

from chimera.actors.broadcaster import Broadcaster, Sink, Subscription
from chimera.actors.jobs import JobManager
from chimera.errors import (
    ChimeraError,
    HistoryGone,
    InvalidArgument,
    NotFound,
    SubscriberTooSlow,
    Unavailable,
)
from chimera.events import Event, control_message
from chimera.ids import is_valid_job_id

log = logging.getLogger(__name__)

PATH_PREFIX = "/ws/orchestrate/"
SNAPSHOT_PREFIX = "/api/jobs/"
MAX_CLIENT_FRAME = 16 * 1024
MAX_SINCE = 2**53
CLOSE_TOO_SLOW = 4008
CLOSE_HISTORY_GONE = 4410
CLOSE_SINCE_TOO_LARGE = 4416
PING_HELP = 'send "ping" or {"type":"ping"}'


def parse_subscription(path: str) -> tuple[str, int]:
    """``(job_id, since)`` from a request path; ``ValueError`` says what is wrong."""
    parts = urlsplit(path)
    if not parts.path.startswith(PATH_PREFIX):
        raise LookupError(f"no such endpoint {parts.path!r}: use {PATH_PREFIX}{{job_id}}")
    job_id = parts.path[len(PATH_PREFIX):]
    if not is_valid_job_id(job_id):
        raise ValueError("malformed job id: use 1 to 64 characters from A-Z, a-z, 0-9, '-', '_'")
    query = parse_qs(parts.query, keep_blank_values=True)
    since_values = query.get("since", ["0"])
    if len(since_values) != 1 or not since_values[0].isdigit() or len(since_values[0]) > 16:
        raise ValueError("since must be one whole number, 0 or more (the last seq you saw)")
    since = int(since_values[0])
    if since > MAX_SINCE:
        raise ValueError("since is too large")
    return job_id, since


class WebSocketGateway:
    """Serves subscribers; one reader and one writer task per connection.

    Lifecycle: :meth:`start` listens; :meth:`stop` closes the listening socket,
    waits for the handlers (each ends once its subscription has ended), and
    closes what is left with 1001.
    """

    def __init__(self, jobs: JobManager, broadcaster: Broadcaster) -> None:
        self._jobs = jobs
        self._broadcaster = broadcaster
        self._frames = _FrameCache()
        self._server: Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        self._server = await serve(
            self._handle,
            host,
            port,
            process_request=self._process_request,
            max_size=MAX_CLIENT_FRAME,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=5,
            compression=None,  # frames are encoded once and sent as they are
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self, grace: float) -> None:
        """Stops listening, lets handlers send what their subscriptions still hold
        for up to ``grace`` seconds, then closes the rest with 1001."""
        if self._server is None:
            return
        server = self._server
        server.close(close_connections=False)
        try:
            await asyncio.wait_for(asyncio.shield(server.wait_closed()), grace)
        except TimeoutError:
            stuck = [c for c in server.connections]
            log.warning("closing %d WebSocket connection(s) still open", len(stuck))
            await asyncio.gather(
                *(c.close(1001, "server shutting down") for c in stuck), return_exceptions=True
            )
            await server.wait_closed()

    # -- HTTP ---------------------------------------------------------------------------

    def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Awaitable[Response | None] | Response | None:
        path = urlsplit(request.path).path
        if path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        if path.startswith(SNAPSHOT_PREFIX):
            return self._snapshot(connection, path[len(SNAPSHOT_PREFIX):])
        try:
            parse_subscription(request.path)
        except LookupError as exc:
            return connection.respond(http.HTTPStatus.NOT_FOUND, f"{exc}\n")
        except ValueError as exc:
            return connection.respond(http.HTTPStatus.BAD_REQUEST, f"{exc}\n")
        return None

    async def _snapshot(self, connection: ServerConnection, job_id: str) -> Response:
        if not is_valid_job_id(job_id):
            return _json(connection, http.HTTPStatus.BAD_REQUEST, {"error": "malformed job id"})
        try:
            job = await self._jobs.get(job_id)
        except NotFound as exc:
            return _json(connection, http.HTTPStatus.NOT_FOUND, {"error": str(exc)})
        return _json(connection, http.HTTPStatus.OK, job.to_dict())

    # -- WebSocket ----------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        job_id, since = parse_subscription(ws.request.path if ws.request else "")
        try:
            subscription = self._broadcaster.subscribe(job_id, since)
        except Unavailable:
            await ws.close(1001, "server shutting down")
            return
        async with subscription:
            await ws.send(
                control_message(
                    "connected",
                    job_id=job_id,
                    data={"message": f"Connected to job {job_id}", "since": since},
                )
            )
            refused = await self._check_since(job_id, since)
            if refused is not None:
                await ws.send(control_message("error", job_id=job_id, data={"error": str(refused)}))
                await ws.close(*_close_for(refused))
                return
            subscription.attach(_sink(ws, self._frames))
            await self._serve(ws, subscription)

    async def _check_since(self, job_id: str, since: int) -> ChimeraError | None:
        """Why resuming ``job_id`` after ``since`` cannot work, or ``None`` if it can.

        Called after subscribing, so a job removed in between is still caught
        (then by the subscription, with :class:`HistoryGone`).
        """
        if since == 0:
            return None  # a new subscriber; an unknown job is waited for
        try:
            job = await self._jobs.get(job_id)
        except NotFound:
            return HistoryGone(job_id, since)
        if since > job.last_sequence:
            return InvalidArgument(
                f"since={since} is past the last seq of job {job_id!r} "
                f"({job.last_sequence}): resume from the last seq you received"
            )
        return None

    async def _serve(self, ws: ServerConnection, subscription: Subscription) -> None:
        """Reads in this (the handler's) task, writes in a child task, until the
        connection closes.

        Whoever ends first closes the connection, which ends the other: the
        writer closes it when the subscription ends (1000 after the final event,
        1001 at shutdown); the reader returns when the client leaves, and the
        writer is cancelled. A shed subscription closes it with 4008 from a task
        started then, since the writer may be stuck sending to a client that
        stopped reading. (One child task per connection, not three: idle
        subscribers are most of them, and each task costs memory.)
        """
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(self._write(ws, subscription))

            def on_shed(failed: asyncio.Future[ChimeraError]) -> None:
                # A writer that is not stuck ends by itself, and closes with 4008.
                if not writer.done():
                    tg.create_task(ws.close(*_close_for(failed.result())))

            shed = subscription.failed()
            shed.add_done_callback(on_shed)
            try:
                await self._read(ws)
            finally:
                shed.remove_done_callback(on_shed)
                writer.cancel()

    async def _write(self, ws: ServerConnection, subscription: Subscription) -> None:
        """Sends the subscription's events, then closes the connection with why it ended."""
        try:
            async for event in subscription:
                await ws.send(event.frame)
            code, reason = 1000, "job finished"
        except ChimeraError as exc:
            code, reason = _close_for(exc)
        except ConnectionClosed:
            return
        await ws.close(code, reason)

    async def _read(self, ws: ServerConnection) -> None:
        """Answers pings; tells the client about anything else. Ends when the client leaves."""
        with contextlib.suppress(ConnectionClosed):
            while True:
                message = await ws.recv()
                if _is_ping(message):
                    await ws.send(control_message("pong"))
                else:
                    await ws.send(
                        control_message(
                            "error", data={"error": f"unknown message: {PING_HELP}"}
                        )
                    )


def _is_ping(message: str | bytes) -> bool:
    if not isinstance(message, str):
        return False
    text = message.strip()
    if text == "ping":
        return True
    if not text.startswith("{"):
        return False
    try:
        obj = json.loads(text)
    except ValueError:
        return False
    return isinstance(obj, dict) and obj.get("type") == "ping"


class _FrameCache:
    """The last event's WebSocket frame, shared by every connection's sink.

    A server's frames are not masked and we use no extension, so one event's
    frame is the same bytes on every connection: the broadcaster hands an event
    to all its subscribers in a row, and only the first sink serializes it.
    """

    __slots__ = ("event", "frame")

    def __init__(self) -> None:
        self.event: Event | None = None
        self.frame = b""

    def frame_for(self, event: Event, payload: bytes) -> bytes:
        if self.event is not event:
            self.frame = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
            self.event = event
        return self.frame


def _sink(ws: ServerConnection, frames: _FrameCache) -> Sink:
    """The fast path's write to ``ws``: what ``websockets.broadcast()`` does for one
    connection, with the frame serialized once for all of them, and refusing (so
    the event is queued) rather than buffering past the high-water mark.

    Writing a whole frame to the transport is what ``protocol.send_text`` plus
    ``send_data`` do; it is only ever called between whole frames (the loop is
    single-threaded and every other write is a whole frame too).
    """
    protocol = ws.protocol
    transport = ws.transport
    limit = ws.write_limit_high

    def write(event: Event, payload: bytes) -> bool:
        if protocol.state is not State.OPEN or transport.get_write_buffer_size() > limit:
            return False
        transport.write(frames.frame_for(event, payload))
        return True

    return write


def _close_for(error: ChimeraError) -> tuple[int, str]:
    if isinstance(error, SubscriberTooSlow):
        return CLOSE_TOO_SLOW, _reason(str(error))
    if isinstance(error, HistoryGone):
        return CLOSE_HISTORY_GONE, "history gone"
    if isinstance(error, InvalidArgument):
        return CLOSE_SINCE_TOO_LARGE, _reason(str(error))
    if isinstance(error, Unavailable):
        return 1001, "server shutting down"
    return 1011, _reason(str(error))


def _reason(text: str) -> str:
    """A close reason must fit in 123 bytes."""
    encoded = text.encode()[:123]
    return encoded.decode(errors="ignore")


def _json(connection: ServerConnection, status: http.HTTPStatus, body: object) -> Response:
    response = connection.respond(status, json.dumps(body, ensure_ascii=False) + "\n")
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json; charset=utf-8"
    return response
