"""Server configuration: one value, built from the settings table
(:mod:`chimera.settings`: flags, environment, ``--config`` file) or by tests, and
read everywhere else. Its defaults come from :mod:`chimera.defaults`."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from chimera.auth.tokens import DEFAULT_AUDIENCE, DEFAULT_ISSUER
from chimera.defaults import (
    DEFAULT_DB,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_GRPC_PORT,
    DEFAULT_JOB_DEADLINE,
    DEFAULT_MAX_JOBS_PER_CALLER,
    DEFAULT_MAX_SUBSCRIBERS_PER_ADDRESS,
    DEFAULT_MAX_SUBSCRIBERS_PER_JOB,
    DEFAULT_REDIS_WRITE_TIMEOUT,
    DEFAULT_RETENTION_INTERVAL,
    DEFAULT_SIM_DELAY,
    DEFAULT_SUBSCRIBER_MAX_BYTES,
    DEFAULT_WS_PORT,
    LOOPBACK,
    MAX_BRIEF_CHARS,
    MAX_CLIENT_FRAME,
    MAX_MESSAGE_BYTES,
    ConnectionLimits,
)
from chimera.errors import ConfigError
from chimera.events import TeamName
from chimera.providers.registry import ProviderSettings


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = LOOPBACK
    grpc_port: int = DEFAULT_GRPC_PORT
    ws_port: int = DEFAULT_WS_PORT
    db: str = DEFAULT_DB
    # Scale-out: a redis:// or rediss:// URL shared by every process ("" = SQLite, one
    # process). It may hold a password, so it stays out of repr.
    redis_url: str = field(default="", repr=False)
    # A job whose events Redis does not take for this long is stopped (and closed
    # as failed once Redis answers again) rather than held or dropped silently.
    redis_write_timeout: float = DEFAULT_REDIS_WRITE_TIMEOUT
    # SO_REUSEPORT on both listeners: set in the worker processes of --workers.
    reuse_port: bool = False
    # The simulated teams: seconds between steps, and teams made to fail (for trying clients).
    sim_delay: float = DEFAULT_SIM_DELAY
    sim_fail: frozenset[TeamName] = field(default_factory=frozenset)
    # The real teams (models, base URLs, real/simulated per team).
    providers: ProviderSettings = field(default_factory=ProviderSettings)
    # A job still running after this many seconds is stopped; its unfinished teams
    # fail. None: no deadline.
    job_deadline: float | None = DEFAULT_JOB_DEADLINE
    max_brief_chars: int = MAX_BRIEF_CHARS
    # A subscriber whose outgoing queue passes this many bytes is shed (close 4008).
    subscriber_max_bytes: int = DEFAULT_SUBSCRIBER_MAX_BYTES
    # Finished jobs are removed, with their events, this many seconds after they
    # end; None keeps everything. Checked every retention_interval seconds.
    retention: float | None = None
    retention_interval: float = DEFAULT_RETENTION_INTERVAL
    # A draining server (SIGTERM) waits this long for its running jobs to end; those
    # still running then are interrupted, as at shutdown.
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    # Seconds in-flight gRPC calls get to finish at shutdown.
    shutdown_grace: float = 5.0
    # Auth: an HS256 secret, or an RS256/ES256 public key (PEM text); neither = auth off,
    # which is only allowed on loopback unless ``insecure``. Secrets stay out of repr.
    jwt_secret: str = field(default="", repr=False)
    jwt_public_key: str = ""
    jwt_audience: str = DEFAULT_AUDIENCE
    jwt_issuer: str = DEFAULT_ISSUER
    insecure: bool = False
    # Browser origins allowed on the WebSocket besides the server's own ("*" = any).
    allowed_origins: tuple[str, ...] = ()
    # The Command Center's files (page.html, command-center.html, static/…); "" = the
    # package's chimera/web.
    web_root: str = ""
    # Host header names the HTTP/WebSocket port answers to besides the bound
    # address (and the loopback names on loopback); "*" = any. DNS rebinding guard.
    allowed_hosts: tuple[str, ...] = ()
    # TLS for both planes: paths to the PEM certificate chain and private key.
    tls_cert: str = ""
    tls_key: str = ""
    # Limits.
    max_request_bytes: int = MAX_MESSAGE_BYTES
    # gRPC handshake and keepalive limits (half-open connections are closed).
    grpc_connection_limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    max_frame_bytes: int = MAX_CLIENT_FRAME
    max_subscribers_per_job: int = DEFAULT_MAX_SUBSCRIBERS_PER_JOB
    max_subscribers_per_address: int = DEFAULT_MAX_SUBSCRIBERS_PER_ADDRESS
    max_jobs_per_caller: int = DEFAULT_MAX_JOBS_PER_CALLER
    # Prometheus ``GET /metrics`` listener; None = no listener and no per-delivery
    # counting (the settings' default is DEFAULT_METRICS_PORT). ``metrics_port_default``:
    # the port was not asked for, so if it is taken the server runs without metrics.
    metrics_port: int | None = None
    metrics_host: str = LOOPBACK
    metrics_port_default: bool = False

    @property
    def auth_enabled(self) -> bool:
        return bool(self.jwt_secret or self.jwt_public_key)

    def check(self) -> None:
        """Raises :class:`ConfigError` for a configuration the server must not run with."""
        if self.jwt_secret and self.jwt_public_key:
            raise ConfigError("give --jwt-secret or --jwt-public-key, not both")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("TLS needs both --tls-cert and --tls-key")
        if not self.auth_enabled and not self.insecure and not is_loopback(self.host):
            raise ConfigError(
                f"refusing to serve on {self.host!r} without authentication: anyone who "
                "can reach it could submit, read and cancel jobs. Set --jwt-secret (or "
                "CHIMERA_JWT_SECRET) or --jwt-public-key, bind to 127.0.0.1, or pass "
                "--insecure if this network is trusted"
            )
        for name in (
            "max_brief_chars", "max_request_bytes", "max_frame_bytes",
            "max_subscribers_per_job", "max_subscribers_per_address", "max_jobs_per_caller",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be 1 or more")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything
