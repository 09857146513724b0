"""The WebSocket gateway: live job events for browsers, on a bare ``websockets`` server.

This module is the server and its assembly; each job has a module of its own:

- :mod:`chimera.gateways.ws_session`: one connection's life at
  ``ws://HOST:PORT/ws/orchestrate/{job_id}[?since=N[&epoch=E]]`` (``connected``,
  history, live events, client commands, the close codes);
- :mod:`chimera.gateways.admission`: who may open one (``Origin``, path, token from
  three places, the right to the job, the subscriber limits), before the upgrade;
- :mod:`chimera.gateways.fast_path`: a caught-up subscriber's events written
  straight to its connection by the broadcaster;
- :mod:`chimera.gateways.ws_connection`: the server's connection class, which keeps
  its Sans-I/O protocol and its transport for the fast path, the close metrics and
  :meth:`WebSocketGateway.stop`;
- :mod:`chimera.gateways.http_api`: ``GET /api/jobs/{job_id}`` (the snapshot) and
  ``GET /api/jobs`` (the list), for clients that poll;
- :mod:`chimera.gateways.pages`: the Command Center (``GET /``, ``GET /jobs/{job_id}``,
  ``/static/{name}``) and its Content-Security-Policy;
- :mod:`chimera.http`: the routes table, the ``Host`` allow-list, CORS and the shared
  answers, below this gateway and the ``/metrics`` port.

Plain HTTP on the same port goes through ``process_request``: the endpoints are one
table (:data:`WebSocketGateway._routes`); every request first has its ``Host``
checked (421: the DNS rebinding guard), then its route (404/405), its body (413),
its ``Origin`` where the route asks (403), then its handler. A head websockets cannot
parse is answered before that (400, 414, 431: :mod:`chimera.http.edge`). ``GET
/healthz`` and ``GET /readyz`` are answered here. Errors are answered by the error
table (:mod:`chimera.errors`).
"""

from __future__ import annotations

import asyncio
import http
import logging
import socket
import ssl
from collections.abc import Sequence

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from chimera.auth.redact import redacting_logger
from chimera.defaults import MAX_CLIENT_FRAME
from chimera.errors import ShuttingDown, close_for
from chimera.gateways.admission import Admission, select_subprotocol
from chimera.gateways.http_api import HttpApi
from chimera.gateways.pages import Pages, WebFiles
from chimera.gateways.serving import Serving
from chimera.gateways.ws_connection import WRITE_LIMIT, WsConnection
from chimera.gateways.ws_session import Sessions
from chimera.http.access_log import access_logger
from chimera.http.cors import Cors
from chimera.http.hosts import HostAllowList
from chimera.http.responses import nosniff, nosniff_later
from chimera.http.routes import Reply, Route, Routes, Target

log = logging.getLogger(__name__)

_SHUTDOWN = close_for(ShuttingDown("the server is shutting down"))  # 1001


class WebSocketGateway:
    """Serves subscribers; one task per connection (:class:`Sessions`).

    Lifecycle: :meth:`start` listens; :meth:`stop` closes the listening socket,
    waits for the handlers (each ends once its subscription has ended), and
    closes what is left with 1001.
    """

    def __init__(
        self,
        serving: Serving,
        *,
        allowed_origins: Sequence[str] = (),
        allowed_hosts: HostAllowList | None = None,
        max_frame_bytes: int = MAX_CLIENT_FRAME,
        tls: ssl.SSLContext | None = None,
        web_root: str = "",
    ) -> None:
        """``web_root``: the Command Center's files (default: the package's
        ``chimera/web``). ``/readyz`` reads ``serving.health``; ``count_deliveries``
        also counts the messages and bytes written."""
        jobs, limits = serving.jobs, serving.limits
        origins = frozenset(o.rstrip("/") for o in allowed_origins)
        cors = Cors(origins)
        self._admission = Admission(jobs, serving.authenticator, limits, origins)
        self._sessions = Sessions(jobs, self._admission, limits, serving.deliveries)
        api = HttpApi(jobs, cors, self._admission.principal)
        pages = Pages(WebFiles(web_root), cors)
        self._allowed_hosts = allowed_hosts or HostAllowList("127.0.0.1")
        self._max_frame_bytes = max_frame_bytes
        self._tls = tls
        self._routes = Routes(
            [
                Route("GET", "/healthz", self._healthz, check_origin=False),
                Route("GET", "/readyz", self._readyz, check_origin=False),
                Route("GET", "/api/jobs/{job_id}", api.snapshot),
                Route("OPTIONS", "/api/jobs/{job_id}", api.preflight, check_origin=False),
                Route("GET", "/api/jobs", api.list_jobs),
                Route("OPTIONS", "/api/jobs", api.preflight, check_origin=False),
                # Pages and files anyone may load; what they do is checked where it happens.
                Route("GET", "/", pages.index, check_origin=False),
                Route("GET", "/jobs/{job_id}", pages.job_page, check_origin=False),
                Route("GET", "/static/{name}", pages.static, check_origin=False),
                Route("GET", "/ws/orchestrate/{job_id}", self._admission.admit),
            ]
        )
        self._server: Server | None = None
        self.port = 0
        # Not ready while the server cannot do its work (the shared store is unreachable).
        self._health = serving.health
        self.reuse_port = serving.reuse_port

    async def start(self, host: str, port: int) -> int:
        self._server = await serve(
            self._sessions.handle,
            host,
            port,
            process_request=self._process_request,
            select_subprotocol=select_subprotocol,
            ssl=self._tls,
            # websockets logs request lines and headers at DEBUG: keep tokens out.
            # Its access lines get the request and the peer; health probes go to DEBUG.
            logger=access_logger(redacting_logger(f"{__name__}.connections"), self._job_of),
            max_size=self._max_frame_bytes,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=5,
            compression=None,  # frames are encoded once and sent as they are
            write_limit=WRITE_LIMIT,  # the fast path's bound too
            reuse_port=self.reuse_port,
            # The kernel queues a burst of connects while the loop is busy (every
            # browser reconnecting at once) instead of dropping past asyncio's 100.
            backlog=socket.SOMAXCONN,
            # Keeps the protocol and transport for the fast path, and (EdgeConnection)
            # answers the requests websockets closes on without a word (a body, a
            # malformed head), holding pipelined bytes until the first answer.
            create_connection=WsConnection,
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
            *(ws.close(*_SHUTDOWN) for ws in list(self._sessions.awaiting_create)),
            return_exceptions=True,
        )
        try:
            await asyncio.wait_for(asyncio.shield(server.wait_closed()), grace)
        except TimeoutError:
            # Shed readers given time to read up to their 4008 are not waited for
            # (their close() would): their connections are ended now.
            for c in list(self._sessions.closing_slowly):
                c.asyncio_transport.abort()
            stuck = list(server.connections)  # the open ones
            log.warning("closing %d WebSocket connection(s) still open", len(stuck))
            await asyncio.gather(
                *(c.close(*_SHUTDOWN) for c in stuck), return_exceptions=True
            )
            await server.wait_closed()

    def _process_request(self, connection: ServerConnection, request: Request) -> Reply:
        reply = self._routes.answer(
            connection, request, self._allowed_hosts, self._admission.origin_allowed
        )
        if isinstance(reply, Response):
            return nosniff(reply)
        if reply is None:
            return None
        return nosniff_later(reply)

    def _job_of(self, method: str, path: str) -> str | None:
        """The job a request is about (its route's ``job_id``), for its access line."""
        found = self._routes.match(method, path)
        return found[1].get("job_id") if isinstance(found, tuple) else None

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
