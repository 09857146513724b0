"""Chimera's exceptions, in one place, each with how every gateway reports it.

Hierarchy, and the one error table (:data:`TABLE`, which sets each class's
``grpc_code``, ``http_status``, ``ws_close`` and ``ws_reason``), blank where inherited;
the metric label is the close code's (:data:`CLOSE_LABELS`)::

                               gRPC code           HTTP close close words          metric label
    ChimeraError               INTERNAL            500  1011  (the message)        error
    ├── InvalidArgument        INVALID_ARGUMENT    400
    │   └── SinceTooLarge                               4416                       since_too_large
    ├── NotFound               NOT_FOUND           404
    ├── AlreadyExists          ALREADY_EXISTS      409
    ├── FailedPrecondition     FAILED_PRECONDITION 409
    ├── Unavailable            UNAVAILABLE         503  1013                       try_later
    │   ├── ShuttingDown                                1001  server shutting down shutdown
    │   ├── Draining                                    1012  (the message)        draining
    │   └── StorageUnavailable
    ├── Unauthenticated        UNAUTHENTICATED     401
    │   └── TokenExpired                                4401  token expired        token_expired
    ├── PermissionDenied       PERMISSION_DENIED   403
    ├── ResourceExhausted      RESOURCE_EXHAUSTED  429  1013                       try_later
    │   └── StorageFull                            507
    ├── ConfigError
    ├── ProviderError                              502
    ├── EventsRejected         UNAVAILABLE         503  1013                       try_later
    └── SubscriptionError
        ├── SubscriberTooSlow  RESOURCE_EXHAUSTED  429  4008                       too_slow
        └── HistoryGone        OUT_OF_RANGE        410  4410  history gone         history_gone

What each one means:

- InvalidArgument: bad input from a client; nothing was changed. SinceTooLarge:
  resuming after a seq the job has not reached.
- NotFound: no such job. AlreadyExists: the job id (or the request id, for another
  request) is taken. FailedPrecondition: the job is in a state where this is not
  allowed (HTTP 409 Conflict: the request conflicts with the job's current state).
- Unavailable: try again later; ShuttingDown: the server is stopping;
  Draining: the server is draining (SIGTERM: it finishes its running jobs, then
  exits): submit, or resume a stream of another server's job, elsewhere (close
  1012, service restart, RFC 6455);
  StorageUnavailable: the store cannot read or write (I/O error, read-only).
- Unauthenticated: no token, or a token that is malformed, expired or badly signed;
  TokenExpired: a stream's token expired while it was open.
- PermissionDenied: a valid token that does not allow this operation on this job.
- ResourceExhausted: a limit (subscribers, jobs in flight) is reached; try later.
  StorageFull: the store's disk is full (HTTP 507 Insufficient Storage).
- ConfigError: the server's configuration is unsafe or inconsistent.
- ProviderError: a team's provider failed, after its own retries (HTTP 502: the
  upstream failed).
- EventsRejected: the store refused a job's events (another process runs it now,
  the store lost its data, or stayed unreachable); the broadcaster turns it into
  Unavailable or HistoryGone for the job's subscribers.
- SubscriptionError: a subscription ended abnormally. SubscriberTooSlow: the
  subscriber fell too far behind and was shed. HistoryGone: the events to resume
  from are no longer kept (HTTP 410 Gone).

Foreign exceptions (SDK, sqlite, grpc) are translated into these at the one
boundary that meets them (``raise ProviderError(...) from exc``). The gateways
translate these through the table above and nothing else: the gRPC status
(:func:`code_name`, also the ``code`` of a WebSocket ``error`` message), the HTTP
status of a refused request (:func:`http_status`), and a WebSocket's close code and
reason (:func:`close_for`; the reason is the error's message, cut to the 123 bytes a
close frame holds, unless the class fixes its words). The metrics count closes by
the label (:data:`CLOSE_LABELS`). This module is the bottom layer: codes are plain
names and numbers, never ``grpc`` or ``websockets`` objects.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

# WebSocket close codes the server sends (RFC 6455 §7.4.1, and 4000-4999 Chimera's own).
CLOSE_FINISHED = 1000  # not an error: the job's final event was sent
CLOSE_SHUTTING_DOWN = 1001
CLOSE_FRAME_TOO_LARGE = 1009  # not an error of ours: websockets closes it itself
CLOSE_INTERNAL_ERROR = 1011
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_LATER = 1013
CLOSE_TOO_SLOW = 4008
CLOSE_TOKEN_EXPIRED = 4401
CLOSE_HISTORY_GONE = 4410
CLOSE_SINCE_TOO_LARGE = 4416
MAX_CLOSE_REASON_BYTES = 123
# chimera_ws_disconnects' ``reason`` label, by the close code the server sent: one
# label per code, the two that are not errors included.
CLOSE_LABELS: dict[int, str] = {
    CLOSE_FINISHED: "finished",
    CLOSE_SHUTTING_DOWN: "shutdown",
    CLOSE_FRAME_TOO_LARGE: "frame_too_large",
    CLOSE_INTERNAL_ERROR: "error",
    CLOSE_SERVICE_RESTART: "draining",
    CLOSE_TRY_LATER: "try_later",
    CLOSE_TOO_SLOW: "too_slow",
    CLOSE_TOKEN_EXPIRED: "token_expired",
    CLOSE_HISTORY_GONE: "history_gone",
    CLOSE_SINCE_TOO_LARGE: "since_too_large",
}


class ChimeraError(Exception):
    """Base class of every error Chimera raises on purpose.

    The class attributes are its row in the error table (:data:`TABLE`).
    """

    grpc_code: ClassVar[str]  # a grpc.StatusCode name
    http_status: ClassVar[int]
    ws_close: ClassVar[int]
    ws_reason: ClassVar[str | None] = None  # fixed close words; None: the message


class InvalidArgument(ChimeraError):
    """The client sent something malformed; the message says what to fix."""


class SinceTooLarge(InvalidArgument):
    """A subscriber asked to resume after a ``seq`` past the job's last one."""

    def __init__(self, job_id: str, since: int, last_seq: int) -> None:
        super().__init__(
            f"resuming after seq {since} is past the last seq of job {job_id!r} "
            f"({last_seq}): resume from the last seq you received"
        )
        self.job_id = job_id
        self.since = since
        self.last_seq = last_seq


class NotFound(ChimeraError):
    """The job does not exist."""


class AlreadyExists(ChimeraError):
    """The job id, or the request id for a different request, is already used."""


class FailedPrecondition(ChimeraError):
    """The job's state does not allow the operation."""


class Unavailable(ChimeraError):
    """The server is shutting down, or its store is unreachable; try again later."""


class ShuttingDown(Unavailable):
    """The server is shutting down: it takes no new work and ends its streams."""


class Draining(Unavailable):
    """The server is draining: it takes no new jobs, and in a cluster ends its streams of
    jobs that run on other servers (close 1012, service restart), so their clients
    resume elsewhere; its own running jobs run to their end."""


class Unauthenticated(ChimeraError):
    """The caller proved no identity; the message says what to fix, never echoes the token."""


class TokenExpired(Unauthenticated):
    """The token a stream was opened with has expired: the stream ends."""

    def __init__(self) -> None:
        super().__init__("token expired: reconnect with a new token")


class PermissionDenied(ChimeraError):
    """The caller's token is valid but does not allow this (scope, or another job)."""


class ResourceExhausted(ChimeraError):
    """A per-job, per-address or per-caller limit is reached; the message names it."""


class StorageUnavailable(Unavailable):
    """The store failed to read or write (I/O error, read-only file system, locked)."""


class StorageFull(ResourceExhausted):
    """The store cannot write because its disk (or file system) is full."""


class ConfigError(ChimeraError):
    """The server refuses to start with this configuration; the message says why."""


class ProviderError(ChimeraError):
    """A provider failed for good; ``str(exc)`` is safe to show to subscribers.

    ``status`` is the HTTP status the provider answered with, when there was one.
    The message must never contain a secret.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class EventsRejected(ChimeraError):
    """The store recorded none of these jobs' events; ``reasons`` maps job id to why.

    The other jobs of the same write were recorded.
    """

    def __init__(self, reasons: dict[str, str], history_gone: frozenset[str] = frozenset()) -> None:
        super().__init__(f"events of {len(reasons)} job(s) not recorded: {reasons}")
        self.reasons = reasons
        # Jobs whose recorded events are gone too (the store lost its data): their
        # subscribers cannot resume anywhere, so they are told history is gone.
        self.history_gone = history_gone


class SubscriptionError(ChimeraError):
    """A subscription ended for a reason other than the job finishing."""


class SubscriberTooSlow(SubscriptionError):
    """The subscriber's outgoing queue passed its byte limit; it may resume."""

    def __init__(self, last_seq: int) -> None:
        super().__init__(
            f"subscriber fell behind; reconnect with since={last_seq} to resume"
        )
        self.last_seq = last_seq


class HistoryGone(SubscriptionError):
    """The job's events the subscriber asked to resume from are not kept here.

    Raised when a subscriber resumes (``since``/``after_sequence`` > 0) from a
    job this server has no record of, usually because retention removed it,
    and when retention removes a job while a subscriber is still reading it;
    also (:meth:`other_epoch`) when the position's epoch names another lifetime
    of the store (its data was lost since), whatever the job id now holds.
    Resuming cannot succeed; the client should stop or start over.
    """

    def __init__(self, job_id: str, after_seq: int, why: str = "") -> None:
        super().__init__(
            f"history gone: job {job_id!r} has no events kept after seq {after_seq} "
            f"({why or 'removed by retention, or never recorded on this server'})"
        )
        self.job_id = job_id
        self.after_seq = after_seq

    @classmethod
    def other_epoch(cls, job_id: str, after_seq: int, epoch: str, current: str) -> HistoryGone:
        """The position ``{after_seq, epoch}`` is from a store lifetime that ended:
        ``job_id`` may now name another job, whose events must not be spliced on."""
        return cls(
            job_id, after_seq,
            f"the position is from another lifetime of the store: epoch {epoch!r}, now "
            f"{current!r}; start over from since=0 (after_sequence 0), without the old epoch",
        )


# -- the table -----------------------------------------------------------------------


class Row(NamedTuple):
    """A class's row: its codes on each plane (``None``: as the class it derives from)."""

    grpc_code: str | None = None
    http_status: int | None = None
    ws_close: int | None = None
    ws_reason: str | None = None


# The one error table (the module docstring draws it): what a row leaves out, the class
# inherits.
TABLE: dict[type[ChimeraError], Row] = {
    ChimeraError: Row("INTERNAL", 500, CLOSE_INTERNAL_ERROR),
    InvalidArgument: Row("INVALID_ARGUMENT", 400),
    SinceTooLarge: Row(ws_close=CLOSE_SINCE_TOO_LARGE),
    NotFound: Row("NOT_FOUND", 404),
    AlreadyExists: Row("ALREADY_EXISTS", 409),
    FailedPrecondition: Row("FAILED_PRECONDITION", 409),
    Unavailable: Row("UNAVAILABLE", 503, CLOSE_TRY_LATER),
    ShuttingDown: Row(ws_close=CLOSE_SHUTTING_DOWN, ws_reason="server shutting down"),
    Draining: Row(ws_close=CLOSE_SERVICE_RESTART),
    StorageUnavailable: Row(),
    Unauthenticated: Row("UNAUTHENTICATED", 401),
    TokenExpired: Row(ws_close=CLOSE_TOKEN_EXPIRED, ws_reason="token expired"),
    PermissionDenied: Row("PERMISSION_DENIED", 403),
    ResourceExhausted: Row("RESOURCE_EXHAUSTED", 429, CLOSE_TRY_LATER),
    StorageFull: Row(http_status=507),
    ConfigError: Row(),
    ProviderError: Row(http_status=502),
    EventsRejected: Row("UNAVAILABLE", 503, CLOSE_TRY_LATER),
    SubscriptionError: Row(),
    SubscriberTooSlow: Row("RESOURCE_EXHAUSTED", 429, CLOSE_TOO_SLOW),
    HistoryGone: Row("OUT_OF_RANGE", 410, CLOSE_HISTORY_GONE, "history gone"),
}


def _set_attributes(table: dict[type[ChimeraError], Row]) -> None:
    """Each class's attributes from its row: what the row gives (Python's inheritance
    does the rest)."""
    for kind, row in table.items():
        for name, value in row._asdict().items():
            if value is not None:
                setattr(kind, name, value)


_set_attributes(TABLE)


# -- reading the table ---------------------------------------------------------------


def code_name(error: ChimeraError) -> str:
    """The gRPC status code's name (``"INVALID_ARGUMENT"``, …) on every plane: gRPC
    statuses, and the ``code`` of a WebSocket ``error`` message."""
    return error.grpc_code


def http_status(error: ChimeraError) -> int:
    """The HTTP status of a request refused with ``error`` (the body says why)."""
    return error.http_status


def close_reason(text: str) -> str:
    """``text`` cut to what a close frame holds (123 bytes of UTF-8, whole characters)."""
    return text.encode()[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore")


def close_for(error: ChimeraError) -> tuple[int, str]:
    """The WebSocket close code and reason of a stream that ends with ``error``."""
    reason = error.ws_reason if error.ws_reason is not None else str(error)
    return error.ws_close, close_reason(reason)


def _classes(root: type[ChimeraError] = ChimeraError) -> list[type[ChimeraError]]:
    found = [root]
    for sub in root.__subclasses__():
        found.extend(_classes(sub))
    return found


ERROR_CLASSES: tuple[type[ChimeraError], ...] = tuple(_classes())
