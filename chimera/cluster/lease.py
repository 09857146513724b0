"""This process's lease, renewed from a thread of its own.

The lease (``chimera:node:{node}``, expiring after ``ttl``) says "this process is
alive"; when it expires, another process takes over this one's running jobs as
``interrupted: node lost``. Renewed from the event loop, a loop saturated for
longer than ``ttl`` (seen in the fan-out benchmark: 1,000 subscribers on one
process) lost its lease while alive and had its jobs taken from it. A thread with
its own blocking Redis connection keeps renewing whatever the loop is doing; only
a process that is gone (or cannot reach Redis) stops.

Lifecycle: :meth:`LeaseKeeper.run` (awaits the thread) until :meth:`stop`; the
lease is dropped afterwards (:meth:`chimera.cluster.membership.Membership.leave`),
once no renewal can follow.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import redis

from chimera.store.redis import lease_key, password_from_env

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self, url: str, node: str, *, ttl: float, interval: float) -> None:
        # Timeouts well under the ttl: a renewal that hangs must not outlive the lease.
        self._client = redis.Redis.from_url(
            url, socket_connect_timeout=min(2.0, ttl / 2), socket_timeout=min(2.0, ttl / 2),
            **password_from_env(url),
        )
        self._key = lease_key(node)
        self._ttl_ms = int(ttl * 1000)
        self._interval = interval
        self._stopped = threading.Event()
        self.renewals = 0  # written by the thread only; tests wait on it

    def stop(self) -> None:
        self._stopped.set()

    async def run(self) -> None:
        try:
            await asyncio.to_thread(self._renew_until_stopped)
        finally:
            self._stopped.set()  # if cancelled: the thread ends at its next wake-up

    def _renew_until_stopped(self) -> None:
        try:
            self._renew_every_interval()
        finally:
            self._client.close()

    def _renew_every_interval(self) -> None:
        failing = False
        while not self._stopped.is_set():
            try:
                try:
                    self._client.set(self._key, "1", px=self._ttl_ms)
                except redis.exceptions.OutOfMemoryError:
                    # A full Redis refuses SET, not PEXPIRE (it takes no memory): the
                    # lease is kept, so no node judges this one lost meanwhile.
                    if not self._client.pexpire(self._key, self._ttl_ms):
                        raise
            except redis.RedisError as exc:
                # Readiness is reported by the membership tick on the loop; here only
                # keep trying, and say it once.
                if not failing:
                    log.warning("could not renew this process's lease: %s", exc)
                failing = True
            else:
                failing = False
                self.renewals += 1
            self._stopped.wait(self._interval)
