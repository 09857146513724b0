"""Whether this server can do its work now, and why not: one value, one owner.

The server owns one :class:`Health`. Whoever learns that the server cannot
work (the cluster's membership, while the shared store cannot be used) calls
:meth:`Health.set`; the gateways follow it, each in its own words: the
WebSocket gateway's ``/readyz`` reads it (200, or 503 saying why), the gRPC
gateway subscribes and sets its standard health service (SERVING or
NOT_SERVING). Transport-neutral: it imports nothing of the gateways, so the
layers that set it need not know them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

DRAINING = "draining"

HealthListener = Callable[[bool, str], Awaitable[None]]


class Health:
    """Ready (``reason`` empty) or not ready (``reason`` says why, for people).

    Listeners are subscribed once, when their owner is built, and are awaited
    in order on every :meth:`set`, with the new ``(ready, reason)``.
    """

    def __init__(self) -> None:
        self.ready = True
        self.reason = ""
        self.draining = False
        self._listeners: list[HealthListener] = []

    def subscribe(self, listener: HealthListener) -> None:
        """Calls ``listener(ready, reason)`` on every :meth:`set` from now on."""
        self._listeners.append(listener)

    async def drain(self) -> None:
        """Not ready, reason ``"draining"``, for good: later :meth:`set` calls (the
        membership seeing Redis again) no longer make the server ready."""
        self.draining = True
        await self.set(False, DRAINING)

    async def set(self, ready: bool, reason: str = "") -> None:
        """Records the new state (a ready server has no reason), then tells every
        listener; once draining, the state stays not ready, ``"draining"``."""
        if self.draining:
            ready, reason = False, DRAINING
        self.ready, self.reason = ready, "" if ready else reason
        for listener in self._listeners:
            await listener(self.ready, self.reason)
