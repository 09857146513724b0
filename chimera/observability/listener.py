"""``GET /metrics`` on a listener of its own (``--metrics-host``, ``--metrics-port``).

Served with the ``websockets`` HTTP side the gateway already uses, on the
server's event loop rather than prometheus-client's threaded HTTP server:
:data:`chimera.observability.metrics.DELIVERIES` is counted on the loop
without a lock, so it must be flushed from the loop, and here every scrape
flushes first and so sees every delivery made before it. The exposition is
prometheus-client's (``choose_encoder``: text, or OpenMetrics when asked for),
produced in a worker thread so a scrape does not hold up the loop.

With ``PROMETHEUS_MULTIPROC_DIR`` set, a scrape reads every process's files
(``MultiProcessCollector``, and the delivery histogram's own files) and the
port is bound with ``SO_REUSEPORT``, so the workers of one server share it
and any of them answers for all. Values are then flushed every second, so a
scrape sees other processes' deliveries at most a second late.

Lifecycle: :meth:`MetricsListener.start` binds; :meth:`MetricsListener.run`
flushes every second until :meth:`MetricsListener.stop`, then closes the
listener and flushes a last time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, multiprocess
from prometheus_client.exposition import choose_encoder
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from chimera.http.edge import EdgeConnection
from chimera.http.hosts import HostAllowList
from chimera.http.routes import Reply, Route, Routes, Target
from chimera.observability.metrics import DELIVERIES, EVENT_DELIVERY
from chimera.observability.metrics import MULTIPROC_ENV as MULTIPROC_ENV  # workers set it

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 1.0


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


@contextlib.contextmanager
def worker_metrics() -> Iterator[None]:
    """For a process that starts the server's worker processes: while open, the
    processes it starts share one ``PROMETHEUS_MULTIPROC_DIR`` (the operator's, or
    a fresh temporary one, removed at the end), so one scrape shows them all.

    The variable must be set before a worker imports prometheus-client, which
    is why the parent sets it rather than the workers.
    """
    if multiprocess_mode():
        yield
        return
    with tempfile.TemporaryDirectory(prefix="chimera-metrics-") as path:
        os.environ[MULTIPROC_ENV] = path
        try:
            yield
        finally:
            del os.environ[MULTIPROC_ENV]


def worker_exited(pid: int) -> None:
    """A worker process ended without stopping (crashed, killed): its live gauges
    (connections, running jobs) stop counting. Its counters stay in the sums."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def _registry() -> CollectorRegistry:
    if not multiprocess_mode():
        return REGISTRY  # ours, and the client's process_* and python_* collectors
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(EVENT_DELIVERY)  # not in prometheus-client's files: it reads its own
    return registry


class MetricsListener:
    def __init__(self, allowed_hosts: HostAllowList) -> None:
        # Same DNS rebinding guard as the main port: a rebound page must not read
        # the server's figures either.
        self._allowed_hosts = allowed_hosts
        self._registry = _registry()
        self._routes = Routes([Route("GET", "/metrics", self._metrics, check_origin=False)])
        self._server: Server | None = None
        self._stop = asyncio.Event()
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        """Binds ``host:port`` (0: any free port); raises ``OSError`` if it cannot."""
        quiet = logging.getLogger(f"{__name__}.http")
        quiet.setLevel(logging.WARNING)  # websockets logs every plain-HTTP answer at INFO
        self._server = await serve(
            _never_upgraded, host, port, process_request=self._answer,
            reuse_port=multiprocess_mode(), logger=quiet,
            close_timeout=1,  # a scraper holding its connection open does not delay shutdown
            create_connection=EdgeConnection,  # a malformed request gets an answer
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        try:
            while not self._stop.is_set():
                DELIVERIES.flush()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), FLUSH_INTERVAL)
        finally:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
            DELIVERIES.flush()
            if multiprocess_mode():
                # This process's live gauges (connections, running jobs) stop counting.
                multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    def _answer(self, connection: ServerConnection, request: Request) -> Reply:
        return self._routes.answer(connection, request, self._allowed_hosts, _any_origin)

    async def _metrics(
        self, connection: ServerConnection, request: Request, target: Target
    ) -> Response:
        DELIVERIES.flush()
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = await asyncio.to_thread(encoder, self._registry)
        headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return Response(200, "OK", headers, body)


def _any_origin(request: Request) -> bool:
    return True  # no route here checks it: scrapers are not browsers


async def _never_upgraded(connection: ServerConnection) -> None:
    """Every request is answered over plain HTTP by ``_answer``; no WebSocket is accepted."""
