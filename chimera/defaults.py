"""Default limits and settings, in one place below every layer.

``config.py`` and the settings table (``chimera/settings.py``: the flags, the
environment, the ``--config`` file, ``--help`` and the README's table) read them
to fill :class:`~chimera.config.ServerConfig`; the modules that enforce them
(JobManager, the broadcaster, the gateways, the store, the simulated teams, the
metrics listener) take them as their own defaults. Both sides import this module,
so neither reaches into the other, and no default is written twice.
"""

from __future__ import annotations

from dataclasses import dataclass

# Where the server listens, and where the CLI's client commands look for it.
LOOPBACK = "127.0.0.1"
DEFAULT_GRPC_PORT = 50051
DEFAULT_WS_PORT = 8888

# The SQLite file of the embedded default (one process).
DEFAULT_DB = "chimera.db"

# Seconds a job may run before it is stopped (its unfinished teams fail).
DEFAULT_JOB_DEADLINE = 600.0

# Seconds between two sweeps of finished jobs past their retention.
DEFAULT_RETENTION_INTERVAL = 60.0

# Seconds the Redis store keeps retrying a write Redis does not take before it
# gives up on the job (closed as failed once Redis answers again).
DEFAULT_REDIS_WRITE_TIMEOUT = 10.0

# Briefs and callers (JobManager).
MAX_BRIEF_CHARS = 10_000
DEFAULT_MAX_JOBS_PER_CALLER = 16  # running jobs one caller may have at once

# A subscriber whose outgoing queue passes this many bytes is shed (the broadcaster);
# less than one code event's worth would shed every subscriber, so less is refused.
DEFAULT_SUBSCRIBER_MAX_BYTES = 1 << 20
MIN_SUBSCRIBER_MAX_BYTES = 64 * 1024

# Subscribers (WebSocket connections and gRPC streams) per job and per client address.
DEFAULT_MAX_SUBSCRIBERS_PER_JOB = 1000
DEFAULT_MAX_SUBSCRIBERS_PER_ADDRESS = 100

# Bytes in one gRPC request.
MAX_MESSAGE_BYTES = 1 << 20

# A create_job message carries a brief of up to 10,000 characters: 40 KB of UTF-8,
# and JSON.stringify escapes control characters as 6 bytes each (60 KB), plus the
# other fields. Anything larger is refused with close code 1009.
MAX_CLIENT_FRAME = 64 * 1024

# Seconds between a simulated team's steps.
DEFAULT_SIM_DELAY = 0.4

# A team's code_delta events: at most one per DELTA_INTERVAL seconds, or sooner once
# DELTA_MAX_CHARS characters wait (chimera.actors.code_deltas). 50 ms is faster than
# anyone reads and slower than a model's tokens (often 5-20 ms apart), so a fast model
# costs subscribers ~20 events a second per team, however small its chunks.
DELTA_INTERVAL = 0.05
DELTA_MAX_CHARS = 512

# Seconds a draining server (SIGTERM) waits for its running jobs to end before it
# interrupts those left and stops.
DEFAULT_DRAIN_TIMEOUT = 120.0

# The Prometheus listener's port (the CLI's default; ServerConfig's is no listener).
DEFAULT_METRICS_PORT = 9464


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """gRPC connections, in seconds: to finish the handshake; between keepalive pings
    (while calls are open); to answer one; a connection with no call open is closed
    after ``idle``."""

    handshake: float = 10.0
    keepalive: float = 30.0
    keepalive_timeout: float = 10.0
    idle: float = 300.0

# The cyclic collector's young-generation threshold while serving (chimera/gcpace.py):
# Python's own unless set (full collections are spaced out whatever it is).
DEFAULT_GC_THRESHOLD = 700
