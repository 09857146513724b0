"""Access lines that say what was asked and by whom; health probes at DEBUG.

``websockets`` logs one INFO line per HTTP answer, ``HTTP response sent (200 OK)``
(``connection rejected (403 Forbidden)`` for a refused WebSocket handshake), then
``connection closed``: neither names the path or the peer, and a balancer probing
``/healthz`` every second filled the log with them. :class:`AccessLines`, a filter
on the listener's logger, keeps websockets' wording and adds the request and the
peer (``HTTP response sent (200 OK): GET /api/jobs/x from 127.0.0.1:51000``,
``connection open: GET /ws/orchestrate/x from …``; JSON lines get the
``peer`` field, the address), logs the ``connection closed``
of a plain HTTP answer (the access line said it all) and every line of a probe
(:data:`PROBE_PATHS`) at DEBUG. The path is redacted like every logged request.
A line about a job's path (``job_of`` finds its id) carries ``job_id`` too.
An answer to a head websockets could not parse (:mod:`~chimera.http.edge`) names
the reason instead of the request (``HTTP response sent (400 Bad Request): invalid
HTTP request line: HELLO from …``); a connection that ends without a request logs
its ``connection closed`` at DEBUG too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from chimera.auth.redact import redact
from chimera.http.edge import peer_of, refusal_of

PROBE_PATHS = frozenset({"/healthz", "/readyz"})
_ANSWERED = ("HTTP response sent (%d %s)", "connection rejected (%d %s)")
_OPEN, _CLOSED = "connection open", "connection closed"


def _peer(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address) if address else "unknown"


class AccessLines(logging.Filter):
    """Rewrites websockets' access lines (see the module's docstring). ``job_of(method,
    path)``: the job a request is about, or ``None``."""

    def __init__(self, job_of: Callable[[str, str], str | None] | None = None) -> None:
        super().__init__()
        self._job_of = job_of

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg not in (*_ANSWERED, _OPEN, _CLOSED):
            return True
        connection = getattr(record, "websocket", None)
        try:
            request = connection.request if connection is not None else None
            response = connection.response if connection is not None else None
            peer = _peer(peer_of(connection)) if connection is not None else "unknown"
        except ReferenceError:  # a weak proxy to a connection already gone
            return True
        if request is None:
            if record.msg == _CLOSED:  # nothing was asked, or its refusal said it all
                quiet = True
            elif (refusal := refusal_of(connection)) is not None and record.msg in _ANSWERED:
                quiet = False
                self._rewrite(record, f"{redact(refusal)} from {peer}", peer)
            else:
                return True
        else:
            path = request.path.partition("?")[0]
            quiet = path in PROBE_PATHS or (
                record.msg == _CLOSED and (response is None or response.status_code != 101)
            )
            self._rewrite(record, f"{request.method} {redact(request.path)} from {peer}", peer)
            if self._job_of is not None and getattr(record, "job_id", None) is None:
                record.job_id = self._job_of(request.method, path)
        if quiet:
            if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
                return False
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True

    @staticmethod
    def _rewrite(record: logging.LogRecord, asked: str, peer: str) -> None:
        record.msg = f"{record.getMessage()}: {asked}"
        record.args = None
        if getattr(record, "peer", None) is None:  # the JSON lines' field: the address
            record.peer = peer.rpartition(":")[0].strip("[]") or peer


def access_logger(
    logger: logging.Logger, job_of: Callable[[str, str], str | None] | None = None
) -> logging.Logger:
    """``logger`` with :class:`AccessLines` attached (once)."""
    if not any(isinstance(f, AccessLines) for f in logger.filters):
        logger.addFilter(AccessLines(job_of))
    return logger
