"""Chimera's exceptions, in one place.

Hierarchy::

    ChimeraError
    ├── InvalidArgument        bad input from a client; nothing was changed
    │   └── SinceTooLarge      resuming after a seq the job has not reached
    ├── NotFound               no such job
    ├── AlreadyExists          job id (or request id for another request) taken
    ├── FailedPrecondition     the job is in a state where this is not allowed
    ├── Unavailable            the server is shutting down
    │   └── StorageUnavailable the store cannot read or write (I/O error, read-only)
    ├── Unauthenticated        no token, or a token that is malformed, expired or badly signed
    │   └── TokenExpired       a stream's token expired while it was open (WebSocket 4401)
    ├── PermissionDenied       a valid token that does not allow this operation on this job
    ├── ResourceExhausted      a limit (subscribers, jobs in flight) is reached; try later
    │   └── StorageFull        the store's disk is full; try later
    ├── ConfigError            the server's configuration is unsafe or inconsistent
    ├── ProviderError          a team's provider failed (after its own retries)
    ├── EventsRejected         the store refused a job's events (another process runs
    │                          it now, the store lost its data, or stayed unreachable)
    └── SubscriptionError      a subscription ended abnormally
        ├── SubscriberTooSlow  the subscriber fell too far behind and was shed
        └── HistoryGone        the events to resume from are no longer kept

Foreign exceptions (SDK, sqlite, grpc) are translated into these at the one
boundary that meets them (``raise ProviderError(...) from exc``); the gateways
translate these into gRPC status codes and WebSocket close codes.
"""

from __future__ import annotations


class ChimeraError(Exception):
    """Base class of every error Chimera raises on purpose."""


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


# The gRPC status code (by name) each error is reported with, on every plane: gRPC
# statuses, and the ``code`` of a WebSocket ``error`` message. First match wins.
_CODE_NAMES: list[tuple[type[ChimeraError], str]] = [
    (InvalidArgument, "INVALID_ARGUMENT"),
    (NotFound, "NOT_FOUND"),
    (AlreadyExists, "ALREADY_EXISTS"),
    (FailedPrecondition, "FAILED_PRECONDITION"),
    (Unavailable, "UNAVAILABLE"),
    (SubscriberTooSlow, "RESOURCE_EXHAUSTED"),
    (ResourceExhausted, "RESOURCE_EXHAUSTED"),
    (Unauthenticated, "UNAUTHENTICATED"),
    (PermissionDenied, "PERMISSION_DENIED"),
    (HistoryGone, "OUT_OF_RANGE"),
]


def code_name(error: ChimeraError) -> str:
    """``"INVALID_ARGUMENT"``, ``"NOT_FOUND"``, …; ``"INTERNAL"`` for anything else."""
    for kind, name in _CODE_NAMES:
        if isinstance(error, kind):
            return name
    return "INTERNAL"
