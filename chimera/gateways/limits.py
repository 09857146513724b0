"""Subscriber limits shared by both gateways: per job and per client address.

A subscriber is a WebSocket connection or a gRPC ``StreamJobEvents`` call.
:meth:`SubscriberLimits.check` refuses early (at the WebSocket handshake);
:meth:`SubscriberLimits.hold` checks and counts in one step with no await in
between, so concurrent subscribers cannot pass a limit together.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from chimera.defaults import DEFAULT_MAX_SUBSCRIBERS_PER_ADDRESS, DEFAULT_MAX_SUBSCRIBERS_PER_JOB
from chimera.errors import ResourceExhausted


class SubscriberLimits:
    def __init__(
        self,
        per_job: int = DEFAULT_MAX_SUBSCRIBERS_PER_JOB,
        per_address: int = DEFAULT_MAX_SUBSCRIBERS_PER_ADDRESS,
    ) -> None:
        self.per_job = per_job
        self.per_address = per_address
        self._jobs: dict[str, int] = {}
        self._addresses: dict[str, int] = {}

    def check(self, job_id: str, address: str) -> None:
        """Raises :class:`ResourceExhausted` if one more subscriber would pass a limit."""
        if self._addresses.get(address, 0) >= self.per_address:
            raise ResourceExhausted(
                f"too many subscribers from {address}: the limit is {self.per_address} "
                "per client address; close some first"
            )
        if self._jobs.get(job_id, 0) >= self.per_job:
            raise ResourceExhausted(
                f"job {job_id!r} has {self.per_job} subscribers, the limit: try again later"
            )

    def subscribers(self, job_id: str) -> int:
        """How many subscribers of ``job_id`` are counted now (past every check)."""
        return self._jobs.get(job_id, 0)

    def acquire(self, job_id: str, address: str) -> None:
        """Checks, then counts one subscriber; each acquire needs one :meth:`release`."""
        self.check(job_id, address)
        self._jobs[job_id] = self._jobs.get(job_id, 0) + 1
        self._addresses[address] = self._addresses.get(address, 0) + 1

    def release(self, job_id: str, address: str) -> None:
        _decrement(self._jobs, job_id)
        _decrement(self._addresses, address)

    @contextmanager
    def hold(self, job_id: str, address: str) -> Iterator[None]:
        """Counts one subscriber while the block runs."""
        self.acquire(job_id, address)
        try:
            yield
        finally:
            self.release(job_id, address)


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]


def peer_host(peer: str) -> str:
    """The host of a grpc peer string: ``ipv4:127.0.0.1:5000`` → ``127.0.0.1``,
    ``ipv6:[::1]:5000`` → ``::1``; anything else is returned as it is."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        host = rest.rpartition(":")[0] or rest
        return host.strip("[]")
    return peer
