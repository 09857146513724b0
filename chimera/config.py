"""Server configuration: one value, built by the CLI (or by tests) and read everywhere else."""

from __future__ import annotations

from dataclasses import dataclass, field

from chimera.actors.broadcaster import DEFAULT_SUBSCRIBER_MAX_BYTES
from chimera.actors.jobs import MAX_BRIEF_CHARS
from chimera.events import TeamName
from chimera.providers.simulated import DEFAULT_DELAY

DEFAULT_GRPC_PORT = 50051
DEFAULT_WS_PORT = 8888
DEFAULT_DB = "chimera.db"
DEFAULT_RETENTION_INTERVAL = 60.0


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    grpc_port: int = DEFAULT_GRPC_PORT
    ws_port: int = DEFAULT_WS_PORT
    db: str = DEFAULT_DB
    # The simulated teams: seconds between steps, and teams made to fail (for trying clients).
    sim_delay: float = DEFAULT_DELAY
    sim_fail: frozenset[TeamName] = field(default_factory=frozenset)
    # A job still running after this many seconds is stopped; its unfinished teams fail.
    job_deadline: float = 600.0
    max_brief_chars: int = MAX_BRIEF_CHARS
    # A subscriber whose outgoing queue passes this many bytes is shed (close 4008).
    subscriber_max_bytes: int = DEFAULT_SUBSCRIBER_MAX_BYTES
    # Finished jobs are removed, with their events, this many seconds after they
    # end; None keeps everything. Checked every retention_interval seconds.
    retention: float | None = None
    retention_interval: float = DEFAULT_RETENTION_INTERVAL
    # Seconds in-flight gRPC calls get to finish at shutdown.
    shutdown_grace: float = 5.0
