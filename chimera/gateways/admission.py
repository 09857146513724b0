"""Who may open a WebSocket, decided before the upgrade (``process_request``).

In this order, after the ``Host`` check and the route (:mod:`chimera.http.routes`):
``Origin`` (403 unless allowed: same host, or an ``--allowed-origin``; the
cross-site WebSocket hijacking guard), the path (400), the token (401), the
token's right to the job (403; 404 for a job that is not the caller's), the
subscriber limits (429). What it decided (:class:`Admitted`) is handed to the
connection's handler (:mod:`chimera.gateways.ws_session`).

Browsers cannot set headers on a WebSocket, so the token may come from three
places (:meth:`Admission.principal`): an ``Authorization: Bearer`` header, the
subprotocol pair ``["chimera.bearer", TOKEN]`` (the server selects
``chimera.bearer``, never echoing the token), or a ``token`` query parameter. The
JSON endpoints (:mod:`chimera.gateways.http_api`) take their token the same way.
"""

from __future__ import annotations

import http
import weakref
from collections.abc import Sequence, Set
from dataclasses import dataclass
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from chimera.actors.jobs import JobManager
from chimera.auth.principal import Principal, Scope
from chimera.auth.tokens import Authenticator, bearer
from chimera.errors import ChimeraError, NotFound, Unauthenticated
from chimera.gateways.limits import SubscriberLimits
from chimera.http.edge import peer_of
from chimera.http.responses import refusal
from chimera.http.routes import Target
from chimera.ids import MAX_EPOCH_LENGTH, is_ascii_number, is_valid_epoch, is_valid_job_id

MAX_SINCE = 2**53
BEARER_PROTOCOL = "chimera.bearer"


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
class Admitted:
    """What the handshake decided, handed to the connection's handler."""

    job_id: str
    since: int
    principal: Principal
    # False: admitted only to create the job (see chimera.gateways.ws_session); no
    # events until it has.
    watching: bool = True
    # The position's epoch ("": none, trusted by seq alone): JobManager.watch checks it.
    epoch: str = ""


class Admission:
    """The handshake's checks, and what they decided for each accepted connection."""

    def __init__(
        self,
        jobs: JobManager,
        authenticator: Authenticator,
        limits: SubscriberLimits,
        allowed_origins: Set[str],
    ) -> None:
        self._jobs = jobs
        self._auth = authenticator
        self._limits = limits
        self._allowed_origins = allowed_origins
        # The handshake's decision, picked up by the connection's handler (weak:
        # a handshake that fails after process_request never reaches a handler).
        self._admitted: weakref.WeakKeyDictionary[ServerConnection, Admitted] = (
            weakref.WeakKeyDictionary()
        )

    def origin_allowed(self, request: Request) -> bool:
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

    async def admit(
        self, connection: ServerConnection, request: Request, target: Target
    ) -> Response | None:
        """Path, token, the right to this job, then the subscriber limits; None accepts."""
        try:
            job_id, since, epoch = parse_subscription(target)
        except ValueError as exc:
            return connection.respond(http.HTTPStatus.BAD_REQUEST, f"{exc}\n")
        try:
            principal = self.principal(request, target)
            watching = True
            try:
                await self._jobs.authorize_watch(job_id, principal=principal)
            except NotFound:
                if since or not {Scope.SUBMIT, Scope.READ} <= principal.scopes:
                    raise
                watching = False  # may create it here, then watch it as its owner
            self._limits.check(job_id, peer_address(connection))
        except ChimeraError as exc:
            return refusal(connection, exc)
        self._admitted[connection] = Admitted(job_id, since, principal, watching, epoch)
        return None

    def take(self, connection: ServerConnection) -> Admitted:
        """What :meth:`admit` decided for ``connection`` (once: it is forgotten here)."""
        return self._admitted.pop(connection)

    def principal(self, request: Request, target: Target) -> Principal:
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


def select_subprotocol(
    connection: ServerConnection, subprotocols: Sequence[Subprotocol]
) -> Subprotocol | None:
    """Selects ``chimera.bearer`` when offered: browsers require the server to
    echo one offered subprotocol, and this one is not the token."""
    return Subprotocol(BEARER_PROTOCOL) if BEARER_PROTOCOL in subprotocols else None


def peer_address(connection: ServerConnection) -> str:
    """The peer's IP address, as the per-address limits count it (the same when the
    connection has closed: :func:`~chimera.http.edge.peer_of`)."""
    peer = peer_of(connection)
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
