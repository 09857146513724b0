"""The pause between tries, for every retry loop: exponential back-off with jitter and a cap.

One policy, passed in, not a loop written again at every call site (as redis-py's
``Retry(ExponentialWithJitterBackoff(...))``). A retry loop holds one
:meth:`Backoff.delays` iterator per outage, sleeps ``next(delays)`` after each
failure, and starts a new iterator once the thing works again::

    delays = RETRY.delays()
    while True:
        try:
            return await write()
        except Unavailable:
            await asyncio.sleep(next(delays))

Used by the broadcaster (store writes), the Redis store (pipelined writes), the
Redis fan-out (pub/sub), ``--workers`` (restarting a worker) and the providers
(where a ``retry-after`` the API sends wins over it). Below every layer: it
imports nothing of Chimera.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Pause number ``n`` (1-based) is ``first * factor**(n-1)`` seconds, at most
    ``cap``, times a random factor in ``[1 - jitter, 1]`` (so processes that failed
    together do not all try again at the same instant). ``factor=1`` is a fixed
    pause; ``jitter=0`` no randomness.
    """

    first: float
    cap: float
    factor: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.first < 0 or self.cap < 0:
            raise ValueError("back-off times must not be negative")
        if self.factor < 1:
            raise ValueError("the back-off factor must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("the back-off jitter must be between 0 and 1")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        try:
            nominal = min(self.cap, self.first * self.factor ** max(retry - 1, 0))
        except OverflowError:  # the thousandth retry of an endless loop
            nominal = self.cap
        if not self.jitter:
            return nominal
        return nominal * random.uniform(1.0 - self.jitter, 1.0)

    def delays(self) -> Iterator[float]:
        """The pauses of one outage, endless: :meth:`delay` of 1, 2, 3, …"""
        retry = 0
        while True:
            retry += 1
            yield self.delay(retry)
