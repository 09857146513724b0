"""What both gateways serve with: :class:`Serving`.

The gRPC and the WebSocket gateway serve the same jobs to callers checked the same
way: one job manager and broadcaster, one authenticator, one set of subscriber
limits and one :class:`~chimera.health.Health` (the server builds them once, in
``chimera.server``, and hands this to each gateway), and they listen alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chimera.actors.broadcaster import Broadcaster
from chimera.actors.jobs import JobManager
from chimera.auth.tokens import Authenticator
from chimera.gateways.limits import SubscriberLimits
from chimera.health import Health
from chimera.observability.metrics import DELIVERIES, Deliveries


@dataclass(frozen=True, slots=True)
class Serving:
    """The jobs, how callers are authenticated and limited, the server's health, and
    two listening options. ``count_deliveries``: observe each streamed event's
    delivery (the hot path; connections and calls are always counted).
    ``reuse_port``: SO_REUSEPORT, so several worker processes share the ports."""

    jobs: JobManager
    broadcaster: Broadcaster
    authenticator: Authenticator = field(default_factory=lambda: Authenticator(None))
    limits: SubscriberLimits = field(default_factory=SubscriberLimits)
    health: Health = field(default_factory=Health)
    count_deliveries: bool = False
    reuse_port: bool = False

    @property
    def deliveries(self) -> Deliveries | None:
        """Where delivered events are counted, if they are."""
        return DELIVERIES if self.count_deliveries else None
