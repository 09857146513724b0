"""The Chimera server: the store, the actors and both gateways, started and stopped in order.

:class:`ChimeraServer` builds everything in its constructor, each part given
what it uses (nothing is attached to a part once it is built), in this order:

1. the store (SQLite, or Redis with ``--redis``), and the :class:`chimera.health.Health`
   the server owns (ready until told otherwise);
2. with Redis, the fan-out (:class:`chimera.cluster.fanout.RedisFanout`), from
   the store alone: the broadcaster's remote feed and the job manager's cancel
   relay;
3. the :class:`chimera.actors.jobs.RunningJobs` (the supervisors of the jobs
   running here), which the broadcaster reports unrecordable events to and the
   job manager keeps its supervisors in: it breaks the broadcaster / job
   manager cycle;
4. the broadcaster (the store, the running jobs, the fan-out), then the job
   manager (the store, the broadcaster, the providers, the running jobs, the
   fan-out);
5. the gateways, each reading the Health (the gRPC gateway subscribes to it, once);
6. with Redis, the cluster node: the fan-out's handler (the broadcaster's
   ``receive`` and ``fail_removed_jobs``, the job manager's ``cancel_local``),
   given to the fan-out once, when it starts running (as Centrifuge's
   ``Broker.Run(handler)``), and the membership, which sets the Health;
7. retention and the metrics listener.

:meth:`ChimeraServer.serve` is the top frame of a server; it returns after
:meth:`ChimeraServer.stop` once everything has shut down, in this order:

0. Only after :meth:`ChimeraServer.drain` (the CLI's first SIGTERM or SIGINT):
   the drain. The Health goes not ready, ``"draining"``, for good (``/readyz``
   503, gRPC health NOT_SERVING); the job manager refuses new jobs
   (:class:`chimera.errors.Draining`, ``UNAVAILABLE``); with ``--redis`` the
   broadcaster ends the streams of jobs running on other nodes (close 1012 /
   ``UNAVAILABLE``: they resume elsewhere) and refuses new ones. The jobs
   running here run on, streamed and readable as before, until the last one
   ends, or ``drain_timeout`` seconds pass, or :meth:`ChimeraServer.stop` is
   called (the second signal); then the steps below, as without a drain.
1. gRPC health goes NOT_SERVING, so balancers stop sending calls.
2. Retention stops sweeping. The job manager refuses new jobs and interrupts
   the running ones; each supervisor stops its teams and publishes its final
   event (job ``failed``, teams ``interrupted: server stopped``). Then the
   providers' HTTP clients close.
3. The broadcaster records and delivers everything published so far, then ends
   every subscription (WebSocket close 1001, gRPC UNAVAILABLE).
4. The WebSocket server closes its connections; the gRPC server stops, giving
   in-flight calls ``shutdown_grace`` seconds. Then the metrics listener
   closes, after a last flush of the gateways' counts.
5. The store closes, last, since nothing writes to it any more.

With ``--redis`` (:mod:`chimera.cluster`) the process joins the cluster (takes
its lease) right after the store opens; its fan-out and membership stop after
step 3, and it drops its lease just before step 5.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from chimera import eventloop, gcpace
from chimera.actors.broadcaster import Broadcaster
from chimera.actors.jobs import NODE_LOST, JobManager, ProviderFactory, RunningJobs
from chimera.actors.retention import Retention
from chimera.auth.tokens import Authenticator, TokenVerifier
from chimera.config import ServerConfig
from chimera.errors import ConfigError
from chimera.gateways.grpc_gateway import GrpcGateway
from chimera.gateways.limits import SubscriberLimits
from chimera.gateways.serving import Serving
from chimera.gateways.ws_gateway import WebSocketGateway
from chimera.health import Health
from chimera.http.hosts import HostAllowList
from chimera.observability.listener import MetricsListener
from chimera.providers.registry import Providers
from chimera.store.base import Store
from chimera.store.sqlite import SQLiteStore

# Redis's client and the cluster (~100 ms to import) load only for a Redis store:
# plain ``chimera serve`` on SQLite never needs them (tests/test_startup.py).
if TYPE_CHECKING:
    from chimera.cluster.fanout import RedisFanout
    from chimera.cluster.node import ClusterNode
    from chimera.store.redis import RedisStore

log = logging.getLogger(__name__)


def authenticator(config: ServerConfig) -> Authenticator:
    audience, issuer = config.jwt_audience, config.jwt_issuer
    if config.jwt_secret:
        return Authenticator(
            TokenVerifier.from_secret(config.jwt_secret, audience=audience, issuer=issuer)
        )
    if config.jwt_public_key:
        pem = config.jwt_public_key.encode()
        return Authenticator(
            TokenVerifier.from_public_key(pem, audience=audience, issuer=issuer)
        )
    return Authenticator(None)


def _read_tls(config: ServerConfig) -> tuple[bytes, bytes] | None:
    """``(key, certificate chain)`` PEM bytes, or None without TLS."""
    if not config.tls_cert:
        return None
    try:
        return Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the TLS certificate or key: {exc}") from exc


def _ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    if not config.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate and key: {exc}") from exc
    return context


def _redis_store(store: Store) -> RedisStore | None:
    """``store`` if it is a Redis one; a SQLite store never imports Redis's module."""
    if isinstance(store, SQLiteStore):
        return None
    from chimera.store.redis import RedisStore

    return store if isinstance(store, RedisStore) else None


class ChimeraServer:
    def __init__(
        self,
        config: ServerConfig,
        *,
        providers: ProviderFactory | None = None,
        store: Store | None = None,
        auth: Authenticator | None = None,
    ) -> None:
        """Raises :class:`ConfigError` for a configuration it must not run with
        (e.g. no authentication on a non-loopback address). ``auth``: who callers
        are (default: the config's JWT settings)."""
        config.check()
        self.config = config
        auth = auth or authenticator(config)
        self.limits = limits = SubscriberLimits(
            config.max_subscribers_per_job, config.max_subscribers_per_address
        )
        # Providers built here are owned (and closed) here; a factory passed in is the caller's.
        self.owned_providers: Providers | None = None
        if providers is None:
            self.owned_providers = providers = Providers(
                config.providers, sim_delay=config.sim_delay, sim_fail=config.sim_fail
            )
        if store is None and config.redis_url:
            from chimera.store.redis import RedisStore

            store = RedisStore(config.redis_url, write_timeout=config.redis_write_timeout)
        elif store is None:
            store = SQLiteStore(config.db)
        self.store: Store = store
        # Built in the order the module docstring gives.
        self.health = Health()
        redis_store = _redis_store(store)
        if redis_store is not None:
            from chimera.cluster.fanout import RedisFanout

            fanout: RedisFanout | None = RedisFanout(redis_store)
        else:
            fanout = None
        running = RunningJobs()
        self.broadcaster = Broadcaster(
            self.store, listener=running, remote=fanout,
            subscriber_max_bytes=config.subscriber_max_bytes,
        )
        self.jobs = JobManager(
            self.store,
            self.broadcaster,
            providers,
            running=running,
            relay=fanout,
            max_brief_chars=config.max_brief_chars,
            job_deadline=config.job_deadline,
            max_jobs_per_caller=config.max_jobs_per_caller,
        )
        serving = Serving(
            self.jobs,
            self.broadcaster,
            auth,
            limits,
            self.health,
            count_deliveries=config.metrics_port is not None,
            reuse_port=config.reuse_port,
        )
        self.grpc = GrpcGateway(
            serving,
            max_request_bytes=config.max_request_bytes,
            tls=_read_tls(config),
            connection_limits=config.grpc_connection_limits,
        )
        self.ws = WebSocketGateway(
            serving,
            allowed_origins=config.allowed_origins,
            web_root=config.web_root,
            allowed_hosts=HostAllowList(config.host, config.allowed_hosts),
            max_frame_bytes=config.max_frame_bytes,
            tls=_ssl_context(config),
        )
        self.cluster: ClusterNode | None = None
        if redis_store is not None and fanout is not None:
            from chimera.cluster.node import ClusterNode

            self.cluster = ClusterNode(
                redis_store, fanout, self.broadcaster, self.jobs, self.health
            )
        self.retention = (
            Retention(
                self.store, self.broadcaster,
                max_age=config.retention, interval=config.retention_interval,
            )
            if config.retention is not None
            else None
        )
        self.metrics = (
            MetricsListener(HostAllowList(config.metrics_host, config.allowed_hosts))
            if config.metrics_port is not None
            else None
        )
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._drain = asyncio.Event()
        self._woken = asyncio.Event()  # drain() or stop() was called

    @property
    def grpc_port(self) -> int:
        return self.grpc.port

    @property
    def ws_port(self) -> int:
        return self.ws.port

    @property
    def command_center_url(self) -> str:
        """The page to open: this server's WebSocket port, by a name it answers to."""
        host = self.config.host
        if host in ("", "0.0.0.0", "::"):  # every interface: loopback is one of them
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host.strip('[]')}]"
        scheme = "https" if self.config.tls_cert else "http"
        return f"{scheme}://{host}:{self.ws_port}/"

    def stop(self) -> None:
        """Starts the shutdown (ends a drain at once); :meth:`serve` returns when it
        is complete. Idempotent."""
        self._stop.set()
        self._woken.set()

    def drain(self) -> None:
        """Starts a drain (step 0 of the module docstring), then the shutdown. Idempotent."""
        self._drain.set()
        self._woken.set()

    async def _drained(self) -> None:
        """Step 0: returns once no job runs here, after ``drain_timeout`` seconds, or
        at :meth:`stop`, whichever comes first."""
        log.info("draining: no new jobs; waiting up to %g s for the running ones to end "
                 "(a second SIGTERM or SIGINT stops at once)", self.config.drain_timeout)
        await self.health.drain()
        self.jobs.drain()
        self.broadcaster.drain()
        try:
            async with asyncio.timeout(self.config.drain_timeout), asyncio.TaskGroup() as tg:
                waits = {tg.create_task(self.jobs.drained()), tg.create_task(self._stop.wait())}
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for task in waits:
                    task.cancel()
        except TimeoutError:
            log.warning("drain timeout (%g s): interrupting the jobs still running",
                        self.config.drain_timeout)
            return
        if self._stop.is_set():
            log.info("stopping at once: interrupting the jobs still running")
        else:
            log.info("drained: no job running")

    async def _start_metrics(self) -> None:
        """Binds the metrics listener, if any; a taken port is a :class:`ConfigError`,
        unless it is only the default one (then the server runs without metrics)."""
        if self.metrics is None or self.config.metrics_port is None:
            return
        host, port = self.config.metrics_host, self.config.metrics_port
        try:
            port = await self.metrics.start(host, port)
        except OSError as exc:
            if not self.config.metrics_port_default:
                raise ConfigError(
                    f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
                ) from exc
            log.warning(
                "no metrics: cannot listen on %s:%d (%s); choose a port with --metrics-port",
                host, port, exc.strerror or exc,
            )
            self.metrics = None
            return
        log.info("serving metrics on http://%s:%d/metrics", host, port)

    async def serve(self) -> None:
        """Runs the server until :meth:`stop` (see the module docstring for the order)."""
        await self.store.open()
        try:
            await self._start_metrics()
            async with asyncio.TaskGroup() as tg:
                if self.metrics is not None:
                    tg.create_task(self.metrics.run(), name="metrics")
                broadcaster = tg.create_task(self.broadcaster.run(), name="broadcaster")
                cluster = None
                if self.cluster is not None:
                    await self.cluster.join()
                    cluster = tg.create_task(self.cluster.run(), name="cluster")
                    await self.jobs.recover(NODE_LOST)
                else:
                    await self.jobs.recover()
                jobs = tg.create_task(self.jobs.run(), name="jobs")
                if self.retention is not None:
                    tg.create_task(self.retention.run(), name="retention")
                await self._listen()
                log.info(
                    "serving gRPC on %s:%d and WebSocket on %s:%d (event loop: %s, "
                    "gc thresholds: %s)",
                    self.config.host, self.grpc_port, self.config.host, self.ws_port,
                    eventloop.running_loop(), gcpace.thresholds(),
                )
                log.info("Command Center: %s", self.command_center_url)
                if self.owned_providers is not None:
                    for team, text in self.owned_providers.descriptions.items():
                        log.info("team %s: %s", team.value, text)
                self.ready.set()
                await self._woken.wait()
                if self._drain.is_set() and not self._stop.is_set():
                    await self._drained()  # 0
                log.info("shutting down")
                await self.grpc.enter_shutdown()  # 1
                if self.retention is not None:
                    self.retention.stop()  # 2
                self.broadcaster.stop_retrying()  # a full disk must not hold the shutdown
                self.jobs.stop()
                await jobs
                if self.owned_providers is not None:
                    await self.owned_providers.aclose()
                await self.broadcaster.stop()  # 3
                await broadcaster
                if self.cluster is not None and cluster is not None:
                    self.cluster.stop()
                    await cluster
                await self.ws.stop(self.config.shutdown_grace)  # 4
                await self.grpc.stop(self.config.shutdown_grace)
                if self.metrics is not None:
                    self.metrics.stop()
        except BaseExceptionGroup as group:
            # A start-up failure (a port in use) is raised in the TaskGroup's body,
            # which wraps it: raise it alone, so the CLI prints its one line.
            refusals = [e for e in group.exceptions if isinstance(e, ConfigError)]
            if refusals:
                raise refusals[0] from None
            raise
        finally:
            # Cancelled rather than stopped (or failed): the gRPC server is stopped here
            # all the same (a no-op after 4), or its port and threads outlive us.
            await self.grpc.stop(0)
            if self.cluster is not None:
                await self.cluster.leave()
            await self.store.close()  # 5

    async def _listen(self) -> None:
        """Starts both gateways; a port in use (or any bind failure) is a ConfigError."""
        host = self.config.host
        for plane, start, port in (
            ("gRPC", self.grpc.start, self.config.grpc_port),
            ("WebSocket", self.ws.start, self.config.ws_port),
        ):
            try:
                await start(host, port)
            except OSError as exc:
                await self.grpc.stop(0)  # if it started; a grpc server left running warns
                raise ConfigError(
                    f"cannot listen for {plane} on {host}:{port}: {exc.strerror or exc}"
                ) from exc
