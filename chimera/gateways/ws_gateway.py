"""The WebSocket gateway: live job events for browsers, on a bare ``websockets`` server.

``ws://HOST:PORT/ws/orchestrate/{job_id}[?since=N[&epoch=E]]``: the server sends
``connected`` (its ``data.epoch`` names the store's lifetime the ``seq`` numbers
belong to), then every event after ``since`` (default 0, the whole history),
then live events, each exactly once and in order, and closes with 1000 after
the job's final event. A resume sends back the epoch with its ``since``; one
from another lifetime of the store (its data was lost since, and the id may
name another job now) is closed 4410, never spliced onto the new job's events.
The client may send ``ping`` or ``{"type":"ping"}`` and gets ``pong``;
``create_job`` and ``cancel_job`` (:mod:`chimera.gateways.ws_commands`) submit
and cancel the socket's job through the same JobManager, scopes and limits as
CreateJob/CancelJob, with the token the handshake accepted; anything else gets
an ``error`` message and the connection stays.

A socket opened to submit: a well-formed id of a job that does not exist yet is
accepted and waits for it. A token that may only watch its own jobs cannot wait
for an unknown one; if it may submit and read, its socket is accepted for the
one job it may create there: it gets ``connected``, then nothing until its
``create_job`` succeeds (``job_created``), then the job's whole history and
live events.

Plain HTTP on the same port (through ``process_request``): ``GET /healthz`` and
``GET /api/jobs/{job_id}[?view=basic|full]`` (the job's JSON snapshot, for clients
that poll, with the ``epoch`` its ``last_sequence`` belongs to; the latest 100
thoughts of each team unless ``view`` says otherwise). The
endpoints are one table (:mod:`chimera.gateways.routes`): an unknown path is 404,
a known path with another method 405 (with ``Allow``). ``GET /api/jobs`` lists jobs
like ListJobs (``page_size``, ``page_token``, ``view``; basic by default). The
Command Center: ``GET /``, ``GET /jobs/{job_id}`` and ``/static/{name}``, a fixed
set of files (:mod:`chimera.gateways.web`). The snapshot, the list and the static
files answer CORS for ``--allowed-origin`` origins (:mod:`chimera.gateways.cors`).

Every request first has its ``Host`` checked (421 unless the server answers to
that name: :mod:`chimera.gateways.hosts`, the DNS rebinding guard). Every request
but ``/healthz`` is then checked before the upgrade, in this order: route (404/405),
``Origin`` (403 unless allowed: same host, or an ``--allowed-origin``), path (400),
token (401), the token's right to the job (403; 404 for a job that is not the
caller's), subscriber limits (429). Browsers cannot set headers on a WebSocket,
so the token may come as the subprotocol pair ``["chimera.bearer", TOKEN]``
(the server selects ``chimera.bearer``, never echoing the token), as a
``token`` query parameter, or as an ``Authorization: Bearer`` header.

Close codes: 1000 job finished; 1001 server shutting down; 1009 client frame
too large; 1013 try again later (a subscriber limit was reached, or the store
cannot be read or written just now);
:data:`CLOSE_TOO_SLOW` (4008) the subscriber fell behind (resume with
``since``); :data:`CLOSE_HISTORY_GONE` (4410) resuming (``since`` > 0) a job this
server does not keep (retention removed it, or it never existed here), an
``epoch`` other than the store's current one, or the job being removed while
read; :data:`CLOSE_SINCE_TOO_LARGE` (4416) ``since`` is past the job's last
``seq``; :data:`CLOSE_TOKEN_EXPIRED` (4401) the token the socket was opened
with expired (at its ``exp`` plus the 30 s clock leeway; other sockets are
untouched). Before a 4410, 4416 or 4401 close the server sends an
``error`` message saying why. ``since=0`` for an unknown job is not an error: it
waits for the job to exist.

Fast path: a caught-up subscriber's events are written straight to its
connection by the broadcaster (like ``websockets.broadcast()``) while the
transport's buffer is under its high-water mark; otherwise they are queued and
sent by the connection's writer task, several frames per write, waiting for the
buffer to drain between writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http
import json
import logging
import ssl
import weakref
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from functools import partial
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Protocol, State
from websockets.typing import Subprotocol

from chimera.actors.broadcaster import Broadcaster, Subscription
from chimera.actors.jobs import JobManager, JobRequest
from chimera.auth.principal import Principal, Scope
from chimera.auth.redact import redacting_logger
from chimera.auth.tokens import Authenticator, bearer
from chimera.defaults import MAX_CLIENT_FRAME
from chimera.errors import (
    ChimeraError,
    HistoryGone,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    ShuttingDown,
    SinceTooLarge,
    StorageFull,
    SubscriberTooSlow,
    TokenExpired,
    Unauthenticated,
    Unavailable,
)
from chimera.events import Event, control_message
from chimera.gateways.cors import Cors
from chimera.gateways.expiry import end_at_expiry, seconds_left
from chimera.gateways.hosts import HostAllowList
from chimera.gateways.limits import SubscriberLimits
from chimera.gateways.routes import Reply, Route, Routes, Target, not_found
from chimera.gateways.web import (
    INDEX,
    JOB_PAGE,
    PAGE_TYPE,
    STATIC,
    WebFiles,
    content_security_policy,
)
from chimera.gateways.ws_commands import (
    BadCommand,
    CancelJob,
    CreateJob,
    Ping,
    error_message,
    job_created,
    parse_command,
)
from chimera.health import Health
from chimera.ids import MAX_EPOCH_LENGTH, is_ascii_number, is_valid_epoch, is_valid_job_id
from chimera.job import JobView
from chimera.observability.logs import log_context
from chimera.observability.metrics import (
    DELIVERIES,
    WS_CONNECTIONS,
    Deliveries,
    message_size,
    ws_closed,
)
from chimera.wire import decode_page_token, encode_page_token

log = logging.getLogger(__name__)

MAX_SINCE = 2**53
CLOSE_TOO_SLOW = 4008
SHED_CLOSE_TIMEOUT = 60.0  # seconds a shed (slow) reader has to read up to its 4008
CLOSE_TRY_LATER = 1013
BEARER_PROTOCOL = "chimera.bearer"
CLOSE_HISTORY_GONE = 4410
CLOSE_SINCE_TOO_LARGE = 4416
CLOSE_TOKEN_EXPIRED = 4401
# GET /api/jobs/{id}?view=…: the thoughts the snapshot carries (as GetJob's JobView).
SNAPSHOT_VIEWS = {"default": JobView.DEFAULT, "basic": JobView.BASIC, "full": JobView.FULL}


def parse_subscription(target: Target) -> tuple[str, int, str]:
    """``(job_id, since, epoch)`` of a subscription request (``epoch`` ``""`` when
    not given); ``ValueError`` says what is wrong."""
    job_id = target.params["job_id"]
    if not is_valid_job_id(job_id):
        raise ValueError("malformed job id: use 1 to 64 characters from A-Z, a-z, 0-9, '-', '_'")
    since_values = target.query.get("since", ["0"])
    since_text = since_values[0]
    if len(since_values) != 1 or not is_ascii_number(since_text) or len(since_text) > 16:
        raise ValueError("since must be one whole number, 0 or more (the last seq you saw)")
    since = int(since_text)
    if since > MAX_SINCE:
        raise ValueError("since is too large")
    epochs = target.query.get("epoch", [""])
    if len(epochs) != 1 or not is_valid_epoch(epochs[0]):
        raise ValueError(
            f"epoch must be one value of at most {MAX_EPOCH_LENGTH} characters from A-Z, "
            "a-z, 0-9, '-', '_' (the epoch of the connected message you resume from)"
        )
    return job_id, since, epochs[0]


@dataclass(frozen=True, slots=True)
class _Admitted:
    """What the handshake decided, handed to the connection's handler."""

    job_id: str
    since: int
    principal: Principal
    # False: admitted only to create the job (see the module docstring); no
    # events until it has.
    watching: bool = True
    # The position's epoch ("": none, trusted by seq alone): JobManager.watch checks it.
    epoch: str = ""


class WebSocketGateway:
    """Serves subscribers; one reader and one writer task per connection.

    Lifecycle: :meth:`start` listens; :meth:`stop` closes the listening socket,
    waits for the handlers (each ends once its subscription has ended), and
    closes what is left with 1001.
    """

    def __init__(
        self,
        jobs: JobManager,
        broadcaster: Broadcaster,
        *,
        authenticator: Authenticator | None = None,
        limits: SubscriberLimits | None = None,
        allowed_origins: Sequence[str] = (),
        allowed_hosts: HostAllowList | None = None,
        max_frame_bytes: int = MAX_CLIENT_FRAME,
        tls: ssl.SSLContext | None = None,
        count_deliveries: bool = False,
        web_root: str = "",
        health: Health | None = None,
        reuse_port: bool = False,
    ) -> None:
        """``count_deliveries``: count messages, bytes and delivery latencies for the
        metrics (the hot path; connections are always counted). ``web_root``: the
        Command Center's files (default: the package's ``chimera/web``). ``health``:
        the server's, which ``/readyz`` reads. ``reuse_port``: SO_REUSEPORT, so
        several worker processes share the port."""
        self._jobs = jobs
        self._broadcaster = broadcaster
        self._auth = authenticator or Authenticator(None)
        self._limits = limits or SubscriberLimits()
        self._allowed_origins = frozenset(o.rstrip("/") for o in allowed_origins)
        self._cors = Cors(self._allowed_origins)
        self._web = WebFiles(web_root)
        self._allowed_hosts = allowed_hosts or HostAllowList("127.0.0.1")
        self._max_frame_bytes = max_frame_bytes
        self._tls = tls
        self._frames = _FrameCache()
        self._deliveries = DELIVERIES if count_deliveries else None
        self._routes = Routes(
            [
                Route("GET", "/healthz", self._healthz, check_origin=False),
                Route("GET", "/readyz", self._readyz, check_origin=False),
                Route("GET", "/api/jobs/{job_id}", self._snapshot),
                Route("OPTIONS", "/api/jobs/{job_id}", self._preflight, check_origin=False),
                Route("GET", "/api/jobs", self._list_jobs),
                Route("OPTIONS", "/api/jobs", self._preflight, check_origin=False),
                # Pages and files anyone may load; what they do is checked where it happens.
                Route("GET", "/", self._index, check_origin=False),
                Route("GET", "/jobs/{job_id}", self._job_page, check_origin=False),
                Route("GET", "/static/{name}", self._static, check_origin=False),
                Route("GET", "/ws/orchestrate/{job_id}", self._admit),
            ]
        )
        # The handshake's decision, picked up by the connection's handler (weak:
        # a handshake that fails after process_request never reaches a handler).
        self._admitted: weakref.WeakKeyDictionary[ServerConnection, _Admitted] = (
            weakref.WeakKeyDictionary()
        )
        self._server: Server | None = None
        # Create-only sockets still waiting for their create_job: no subscription
        # ends them at shutdown, so stop() closes them.
        self._awaiting_create: set[ServerConnection] = set()
        self.port = 0
        # Not ready while the server cannot do its work (the shared store is unreachable).
        self._health = health or Health()
        self.reuse_port = reuse_port

    async def start(self, host: str, port: int) -> int:
        self._server = await serve(
            self._handle,
            host,
            port,
            process_request=self._process_request,
            select_subprotocol=_select_subprotocol,
            ssl=self._tls,
            # websockets logs request lines and headers at DEBUG: keep tokens out.
            logger=redacting_logger(f"{__name__}.connections"),
            max_size=self._max_frame_bytes,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=5,
            compression=None,  # frames are encoded once and sent as they are
            reuse_port=self.reuse_port,
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
        await asyncio.gather(
            *(ws.close(1001, "server shutting down") for ws in list(self._awaiting_create)),
            return_exceptions=True,
        )
        try:
            await asyncio.wait_for(asyncio.shield(server.wait_closed()), grace)
        except TimeoutError:
            stuck = [c for c in server.connections]
            log.warning("closing %d WebSocket connection(s) still open", len(stuck))
            for c in stuck:
                if c.state is State.CLOSING:  # e.g. a shed reader given time to read its 4008
                    c.transport.abort()
            await asyncio.gather(
                *(c.close(1001, "server shutting down") for c in stuck), return_exceptions=True
            )
            await server.wait_closed()

    # -- HTTP ---------------------------------------------------------------------------

    def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Reply:
        reply = self._route(connection, request)
        if isinstance(reply, Response):
            return _nosniff(reply)
        if reply is None:
            return None
        return _nosniff_later(reply)

    def _route(self, connection: ServerConnection, request: Request) -> Reply:
        return self._routes.answer(
            connection, request, self._allowed_hosts, self._origin_allowed
        )

    def _healthz(
        self, connection: ServerConnection, request: Request, target: Target
    ) -> Response:
        return connection.respond(http.HTTPStatus.OK, "ok\n")

    def _readyz(
        self, connection: ServerConnection, request: Request, target: Target
    ) -> Response:
        if self._health.ready:
            return connection.respond(http.HTTPStatus.OK, "ready\n")
        reason = self._health.reason or "the store (Redis) is unreachable"
        return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, f"not ready: {reason}\n")

    def _origin_allowed(self, request: Request) -> bool:
        """Cross-site WebSocket hijacking guard: a browser always sends ``Origin``."""
        origins = request.headers.get_all("Origin")
        if not origins:
            return True  # not a browser: nothing to guard against
        if len(origins) > 1:
            return False
        origin = origins[0].rstrip("/")
        if origin in self._allowed_origins or "*" in self._allowed_origins:
            return True
        hosts = request.headers.get_all("Host")
        # Same origin: a page served from this very host and port.
        try:
            netloc = urlsplit(origin).netloc
        except ValueError:  # e.g. "http://[" : not an origin at all
            return False
        return len(hosts) == 1 and netloc.lower() == hosts[0].lower()

    async def _admit(
        self, connection: ServerConnection, request: Request, target: Target
    ) -> Response | None:
        """Path, token, the right to this job, then the subscriber limits; None accepts."""
        try:
            job_id, since, epoch = parse_subscription(target)
        except ValueError as exc:
            return connection.respond(http.HTTPStatus.BAD_REQUEST, f"{exc}\n")
        try:
            principal = self._principal(request, target)
            watching = True
            try:
                await self._jobs.authorize_watch(job_id, principal=principal)
            except NotFound:
                if since or not {Scope.SUBMIT, Scope.READ} <= principal.scopes:
                    raise
                watching = False  # may create it here, then watch it as its owner
            self._limits.check(job_id, _address(connection))
        except ChimeraError as exc:
            return _refusal(connection, exc)
        self._admitted[connection] = _Admitted(job_id, since, principal, watching, epoch)
        return None

    def _principal(self, request: Request, target: Target) -> Principal:
        """The caller named by the token in the ``Authorization`` header, the
        ``chimera.bearer`` subprotocol pair, or the ``token`` query parameter."""
        if not self._auth.enabled:
            return self._auth.principal(None)
        headers = request.headers.get_all("Authorization")
        if len(headers) > 1:
            raise Unauthenticated("send one Authorization header, not several")
        if headers:
            return self._auth.principal(bearer(headers[0]))
        offered = [
            p.strip()
            for value in request.headers.get_all("Sec-WebSocket-Protocol")
            for p in value.split(",")
        ]
        if BEARER_PROTOCOL in offered:
            others = [p for p in offered if p != BEARER_PROTOCOL]
            if len(others) != 1:
                raise Unauthenticated(
                    f"offer exactly two subprotocols: {BEARER_PROTOCOL!r} and the token"
                )
            return self._auth.principal(others[0])
        tokens = target.query.get("token")
        if tokens is not None:
            if len(tokens) != 1:
                raise Unauthenticated("give one token query parameter, not several")
            return self._auth.principal(tokens[0])
        return self._auth.principal(None)

    async def _snapshot(
        self, connection: ServerConnection, request: Request, target: Target
    ) -> Response:
        job_id = target.params["job_id"]
        if not is_valid_job_id(job_id):
            return _json(connection, http.HTTPStatus.BAD_REQUEST, {"error": "malformed job id"})
        views = target.query.get("view", ["default"])
        view = SNAPSHOT_VIEWS.get(views[0]) if len(views) == 1 else None
        if view is None:
            return _json(
                connection, http.HTTPStatus.BAD_REQUEST,
                {"error": "view must be basic (no thoughts) or full (every thought); "
                          "leave it out for the latest 100 of each team"},
            )
        # Read before the job (see JobManager.epoch): the lifetime its last_sequence is of.
        epoch = self._jobs.epoch
        try:
            job = await self._jobs.get(
                job_id, principal=self._principal(request, target), view=view
            )
        except ChimeraError as exc:
            return self._cors.apply(request, _refusal(connection, exc, as_json=True))
        body = {**job.to_dict(), "epoch": epoch}
        return self._cors.apply(request, _json(connection, http.HTTPStatus.OK, body))

    async def _list_jobs(
        self, connection: ServerConnection, request: Request, target: Target
    ) -> Response:
        """``GET /api/jobs[?page_size=N&page_token=T&view=basic|default|full]``:
        ``{"jobs": [...], "next_page_token": "..."}``, newest first, the jobs the
        caller may read (as ListJobs); thoughts left out unless ``view`` asks."""
        try:
            # Authenticated and authorised before anything else is parsed (as ListJobs).
            principal = self._principal(request, target)
            self._jobs.authorize_list(principal=principal)
            page_size = _one_number(target, "page_size")
            page_tokens = target.query.get("page_token", [""])
            views = target.query.get("view", ["basic"])
            view = SNAPSHOT_VIEWS.get(views[0]) if len(views) == 1 else None
            if len(page_tokens) != 1:
                raise InvalidArgument("give one page_token, not several")
            if view is None:
                raise InvalidArgument("view must be basic, default or full")
            jobs, cursor = await self._jobs.list(
                page_size, decode_page_token(page_tokens[0]), principal=principal, view=view
            )
        except ChimeraError as exc:
            return self._cors.apply(request, _refusal(connection, exc, as_json=True))
        body = {
            "jobs": [job.to_dict() for job in jobs], "next_page_token": encode_page_token(cursor)
        }
        return self._cors.apply(request, _json(connection, http.HTTPStatus.OK, body))

    def _preflight(
        self, connection: ServerConnection, request: Request, target: Target
    ) -> Response:
        return self._cors.preflight(connection, request)

    def _index(self, connection: ServerConnection, request: Request, target: Target) -> Response:
        return self._page(connection, request, INDEX)

    def _job_page(
        self, connection: ServerConnection, request: Request, target: Target
    ) -> Response:
        job_id = target.params["job_id"]
        if not is_valid_job_id(job_id):
            return not_found(connection, target.path)
        return self._page(connection, request, JOB_PAGE)

    def _page(self, connection: ServerConnection, request: Request, name: str) -> Response:
        response = self._file(connection, name, PAGE_TYPE)
        response.headers["Content-Security-Policy"] = content_security_policy(
            request.headers.get("Host", "")
        )
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    def _static(
        self, connection: ServerConnection, request: Request, target: Target
    ) -> Response:
        name = target.params["name"]
        content_type = STATIC.get(name)
        if content_type is None:
            return not_found(connection, target.path)
        return self._cors.apply(request, self._file(connection, name, content_type))

    def _file(self, connection: ServerConnection, name: str, content_type: str) -> Response:
        body = self._web.read(name)
        if body is None:
            return connection.respond(
                http.HTTPStatus.NOT_FOUND,
                f"{name} is not installed: the Command Center's files are missing from "
                "this installation (chimera/web)\n",
            )
        response = dataclasses.replace(connection.respond(http.HTTPStatus.OK, ""), body=body)
        # Headers is a multi-dict: setting adds a second Content-Length (browsers refuse
        # the response: ERR_RESPONSE_HEADERS_MULTIPLE_CONTENT_LENGTH).
        del response.headers["Content-Length"]
        response.headers["Content-Length"] = str(len(body))
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = content_type
        # Revalidate each time: a new version of Chimera brings new files.
        response.headers["Cache-Control"] = "no-cache"
        return response

    # -- WebSocket ----------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        """One connection, from ``connected`` to close.

        Written as one coroutine with plain acquire/release (no helper
        coroutines or context-manager generators that would stay suspended for
        the connection's life): an idle subscriber must stay small.
        """
        admitted = self._admitted.pop(ws)
        subscription = await self._open(ws, admitted)
        if subscription is None:
            return
        # Ends the subscription when the token expires; the writer then says so
        # and closes with 4401.
        expiry = end_at_expiry(subscription, admitted.principal)
        try:
            # Reading happens here, in the handler's own task; writing in
            # one child task. (Not three tasks, nor helper coroutines that
            # stay suspended: idle subscribers are most of them, and each
            # frame costs memory.) Whoever ends first closes the connection,
            # which ends the other: the writer closes it when the
            # subscription ends (1000 after the final event, 1001 at
            # shutdown); the reader stops when the client leaves, and the
            # writer is cancelled. A shed subscription closes it with 4008
            # from a task started then, since the writer may be stuck
            # sending to a client that stopped reading.
            async with subscription, asyncio.TaskGroup() as tg:
                writer = tg.create_task(self._write(ws, subscription))

                def on_shed(failed: asyncio.Future[ChimeraError]) -> None:
                    # A writer that is not stuck ends by itself, and closes with 4008.
                    # An expired token: the writer sends nothing more (the queue is
                    # dropped), then sends the one error message and closes 4401.
                    if not writer.done() and not isinstance(failed.result(), TokenExpired):
                        tg.create_task(_close_shed(ws, subscription, failed.result()))

                shed = subscription.failed()
                shed.add_done_callback(on_shed)
                try:
                    with contextlib.suppress(ConnectionClosed):
                        while True:
                            reply, _ = await self._reply(
                                admitted, _address(ws), await ws.recv()
                            )
                            if reply is not None:
                                await ws.send(self._counted(reply))
                finally:
                    shed.remove_done_callback(on_shed)
                    writer.cancel()
        finally:
            if expiry is not None:
                expiry.cancel()
            self._limits.release(admitted.job_id, _address(ws))

    async def _reply(
        self, admitted: _Admitted, address: str, message: str | bytes
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
        self, ws: ServerConnection, admitted: _Admitted, address: str
    ) -> bool:
        """Answers a create-only socket's messages until its job is created (True),
        or the client leaves or the server stops (False)."""
        self._awaiting_create.add(ws)
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
            self._awaiting_create.discard(ws)

    def _counted(self, message: str) -> str:
        """``message``, counted as sent (a control message, not an event)."""
        if self._deliveries is not None:
            self._deliveries.sent(message_size(message))
        return message

    async def _open(self, ws: ServerConnection, admitted: _Admitted) -> Subscription | None:
        """The connection's set-up: counts it against the limits, subscribes by
        :meth:`JobManager.watch`'s rule and sends ``connected``; or closes the
        connection saying why and returns ``None``.

        A plain coroutine that has returned before the connection idles, so it
        costs an idle subscriber nothing. On success the caller releases the
        limits.
        """
        job_id, since, address = admitted.job_id, admitted.since, _address(ws)
        _count_connection(ws)
        log_context(job_id=job_id, peer=address)
        try:
            # Checked again here, counted for good: others may have connected
            # since this one passed the handshake.
            self._limits.acquire(job_id, address)
        except ResourceExhausted as exc:
            await ws.close(CLOSE_TRY_LATER, _reason(str(exc)))
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
                job_id, since, principal=admitted.principal, epoch=admitted.epoch
            )
        except ConnectionClosed:
            self._limits.release(job_id, address)
            return None
        except Unavailable as exc:
            self._limits.release(job_id, address)
            await ws.close(*_close_for(exc))
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

    async def _write(self, ws: ServerConnection, subscription: Subscription) -> None:
        """Sends the subscription's events, then closes the connection with why it ended.

        While it waits for live events with nothing queued, the connection has
        caught up, and the broadcaster may write to it directly (:class:`_DirectWriter`).
        """
        direct = _DirectWriter(ws, self._frames, self._deliveries)
        subscription.listener = direct
        try:
            async for event in subscription.history():
                await self._send_event(ws, event)
            while not subscription.done:
                # Behind: what is queued goes out in batches that fill the
                # transport's buffer to its high-water mark, one write each.
                queued = subscription.take_nowait(direct.room())
                if not queued:
                    direct.caught_up = True
                    try:
                        await subscription.wait()
                    finally:
                        direct.caught_up = False
                else:
                    await self._send_queued(ws, direct, queued)
            code, reason = 1000, "job finished"
        except TokenExpired as exc:
            await self._refuse(ws, subscription.job_id, exc)
            return
        except ChimeraError as exc:
            code, reason = _close_for(exc)
        except ConnectionClosed:
            return
        await _close(ws, code, reason)

    async def _refuse(self, ws: ServerConnection, job_id: str, error: ChimeraError) -> None:
        """Says why in an ``error`` message, then in the close (4410, 4416, 4401, …)."""
        with contextlib.suppress(ConnectionClosed):
            message = control_message("error", job_id=job_id, data={"error": str(error)})
            await ws.send(self._counted(message))
            await ws.close(*_close_for(error))

    async def _send_event(self, ws: ServerConnection, event: Event) -> None:
        await ws.send(event.frame)
        self._delivered([event])

    def _delivered(self, events: list[Event]) -> None:
        if self._deliveries is not None:
            for event in events:
                self._deliveries.ws_delivered(event, message_size(event.frame))

    async def _send_queued(
        self, ws: ServerConnection, direct: _DirectWriter, events: list[Event]
    ) -> None:
        """Writes ``events`` in one transport write, then waits as ``ws.send`` does
        for the buffer to drain below its high-water mark (a ``send`` per queued
        event cost ten times the bare server's catch-up)."""
        if not direct.write(events):
            # Not open: websockets waits for the closing handshake, then raises
            # ConnectionClosed.
            for event in events:
                await self._send_event(ws, event)
            return
        self._delivered(events)
        await ws.drain()


async def _close_shed(
    ws: ServerConnection, subscription: Subscription, error: ChimeraError
) -> None:
    """Closes a shed subscriber's connection, naming the last event written to it
    (read now, when the close frame follows it, not when it was shed)."""
    if isinstance(error, SubscriberTooSlow):
        error = SubscriberTooSlow(subscription.last_seq)
    await _close(ws, *_close_for(error))


async def _close(ws: ServerConnection, code: int, reason: str) -> None:
    if code == CLOSE_TOO_SLOW:
        # The close frame waits behind what the kernel already holds for this slow
        # reader: give it time to read up to it and learn why (4008, not a bare 1006).
        ws.close_timeout = SHED_CLOSE_TIMEOUT
    await ws.close(code, reason)


def _select_subprotocol(
    connection: ServerConnection, subprotocols: Sequence[Subprotocol]
) -> Subprotocol | None:
    """Selects ``chimera.bearer`` when offered: browsers require the server to
    echo one offered subprotocol, and this one is not the token."""
    return Subprotocol(BEARER_PROTOCOL) if BEARER_PROTOCOL in subprotocols else None


def _address(connection: ServerConnection) -> str:
    peer = connection.remote_address
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)


_HTTP_STATUS: list[tuple[type[ChimeraError], http.HTTPStatus]] = [
    (Unauthenticated, http.HTTPStatus.UNAUTHORIZED),
    (PermissionDenied, http.HTTPStatus.FORBIDDEN),
    (NotFound, http.HTTPStatus.NOT_FOUND),
    (InvalidArgument, http.HTTPStatus.BAD_REQUEST),
    (ResourceExhausted, http.HTTPStatus.TOO_MANY_REQUESTS),
    (Unavailable, http.HTTPStatus.SERVICE_UNAVAILABLE),
]


def _refusal(
    connection: ServerConnection, error: ChimeraError, *, as_json: bool = False
) -> Response:
    """The HTTP answer to a refused request, with the reason in the body."""
    status = next(
        (code for kind, code in _HTTP_STATUS if isinstance(error, kind)),
        http.HTTPStatus.INTERNAL_SERVER_ERROR,
    )
    if as_json:
        response = _json(connection, status, {"error": str(error)})
    else:
        response = connection.respond(status, f"{error}\n")
    if status == http.HTTPStatus.UNAUTHORIZED:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


class _FrameCache:
    """The last event's WebSocket frame, shared by every connection's direct writer.

    A server's frames are not masked and we use no extension, so one event's
    frame is the same bytes on every connection: the broadcaster hands an event
    to all its subscribers in a row, and only the first writer serializes it.
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


class _DirectWriter:
    """The fast path of one connection, as the broadcaster's :class:`Listener`:
    writes a live event straight to the connection while its writer task has
    caught up (history sent, waiting for live events: ``caught_up``, kept by
    :meth:`WebSocketGateway._write`) and the transport is under its high-water
    mark; otherwise refuses, and the event is queued for the writer task.

    What ``websockets.broadcast()`` does for one connection, with the frame
    serialized once for all of them, and refusing rather than buffering past
    the high-water mark. Writing a whole frame to the transport is what
    ``protocol.send_text`` plus ``send_data`` do; it only happens between whole
    frames (the loop is single-threaded and every other write is a whole frame
    too). ``protocol.state``, ``transport`` and ``write_limit_high`` are not all
    documented API, hence websockets is pinned to the major version tested (17).
    """

    __slots__ = ("_frames", "_limit", "_live", "_protocol", "_transport", "caught_up")

    def __init__(
        self, ws: ServerConnection, frames: _FrameCache, deliveries: Deliveries | None
    ) -> None:
        self.caught_up = False
        self._protocol = ws.protocol
        self._transport = ws.transport
        self._limit = ws.write_limit_high
        self._frames = frames
        self._live = deliveries.live if deliveries is not None else None

    def offer(self, event: Event, payload: bytes) -> bool:
        if (
            not self.caught_up
            or self._protocol.state is not State.OPEN
            or self._transport.get_write_buffer_size() > self._limit
        ):
            return False
        self._transport.write(self._frames.frame_for(event, payload))
        if self._live is not None:
            self._live(event, len(payload))
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
        frame_for = self._frames.frame_for
        self._transport.write(b"".join([frame_for(e, e.frame.encode()) for e in events]))
        return True


def _count_connection(ws: ServerConnection) -> None:
    """Counts ``ws`` as open until its TCP connection is gone, then counts why it ended."""
    WS_CONNECTIONS.inc()
    ws.connection_lost_waiter.add_done_callback(partial(_connection_lost, ws.protocol))


def _connection_lost(protocol: Protocol, _: object) -> None:
    close = protocol.close_sent
    ws_closed(close.code if close else None, bool(protocol.close_rcvd_then_sent))


def _close_for(error: ChimeraError) -> tuple[int, str]:
    if isinstance(error, TokenExpired):
        return CLOSE_TOKEN_EXPIRED, "token expired"
    if isinstance(error, SubscriberTooSlow):
        return CLOSE_TOO_SLOW, _reason(str(error))
    if isinstance(error, HistoryGone):
        return CLOSE_HISTORY_GONE, "history gone"
    if isinstance(error, SinceTooLarge):
        return CLOSE_SINCE_TOO_LARGE, _reason(str(error))
    if isinstance(error, ShuttingDown):
        return 1001, "server shutting down"
    if isinstance(error, Unavailable | StorageFull):  # e.g. Redis unreachable, or out of
        return CLOSE_TRY_LATER, _reason(str(error))  # memory: the server stays
    return 1011, _reason(str(error))


def _reason(text: str) -> str:
    """A close reason must fit in 123 bytes."""
    encoded = text.encode()[:123]
    return encoded.decode(errors="ignore")


def _one_number(target: Target, name: str) -> int:
    """A query parameter that is one whole number (0 when absent)."""
    values = target.query.get(name, ["0"])
    if len(values) != 1 or not is_ascii_number(values[0]) or len(values[0]) > 9:
        raise InvalidArgument(f"{name} must be one whole number")
    return int(values[0])


def _nosniff(response: Response) -> Response:
    """Every answer's type is the one it says (no MIME sniffing a JSON error into a script)."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


async def _nosniff_later(reply: Awaitable[Response | None]) -> Response | None:
    response = await reply
    return _nosniff(response) if response is not None else None


def _json(connection: ServerConnection, status: http.HTTPStatus, body: object) -> Response:
    response = connection.respond(status, json.dumps(body, ensure_ascii=False) + "\n")
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json; charset=utf-8"
    return response
