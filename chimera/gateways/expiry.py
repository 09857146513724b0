"""A stream ends when the token that opened it expires (WebSocket 4401, gRPC UNAUTHENTICATED).

The token is checked when a stream opens; without this a stream opened a minute
before its token expired would run for as long as its job does.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from chimera.actors.broadcaster import Subscription
from chimera.auth.principal import Principal
from chimera.errors import TokenExpired


def seconds_left(principal: Principal) -> float | None:
    """Seconds until ``principal``'s token expires (0 or less: it has); None: never."""
    if principal.expires_at is None:
        return None
    return (principal.expires_at - datetime.now(UTC)).total_seconds()


def end_at_expiry(subscription: Subscription, principal: Principal) -> asyncio.TimerHandle | None:
    """Ends ``subscription`` with :class:`TokenExpired` when the token expires.

    A timer, not a task (idle subscribers are most of them): cancel it when the
    stream ends for another reason.
    """
    delay = seconds_left(principal)
    if delay is None:
        return None
    return asyncio.get_running_loop().call_later(delay, _expire, subscription)


def _expire(subscription: Subscription) -> None:
    subscription.end_now(TokenExpired())
