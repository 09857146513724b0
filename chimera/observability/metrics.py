"""Every Prometheus metric Chimera exports, defined once, and the cheap way to count deliveries.

The metric objects are process-wide, as prometheus-client's are. When
``PROMETHEUS_MULTIPROC_DIR`` is set before Chimera starts (``--workers``, or a
process manager running several servers), prometheus-client keeps every value
in a memory-mapped file there, and a scrape of any process adds up all of them
(see :mod:`chimera.observability.listener`); the gauges are ``livesum`` so a
stopped process's connections and jobs stop counting.

Hot path: a delivery to N subscribers must not cost N lock-taking increments.
:class:`Deliveries` counts WebSocket messages, bytes and delivery latencies in
plain ints and a bucket array on the event loop; :meth:`Deliveries.flush` adds
them to the metrics in bulk (before every scrape, and every second). The
delivery histogram is therefore not a :class:`prometheus_client.Histogram`
(whose only public way in is one ``observe`` per value) but
:class:`DeliveryHistogram`, a custom collector that reports the flushed totals
as a ``HistogramMetricFamily``: the same name, buckets and exposition.
prometheus-client's multiprocess mode does not take custom collectors in (its
``MultiProcessCollector`` reads only its own files), so in that mode each
process also writes its totals to a file of its own in the same directory, and
the collector reports the sum of every process's file.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import time
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from chimera.errors import CLOSE_LABELS
from chimera.events import Event, EventType, JobState, TeamName, TeamStatus

# No ``*_created`` series: they would double a scrape for nothing.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Read by prometheus-client when it is imported: its values then live in files there.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Latency buckets in seconds, from a fast local write to a badly backed-up subscriber.
DELIVERY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
)
PROVIDER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
COMMIT_SECONDS_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)
COMMIT_EVENTS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

# Why a WebSocket subscriber's connection ended, by the close code the server sent
# (the labels are the error table's: chimera.errors).
WS_CLOSE_REASONS = CLOSE_LABELS
WS_CLIENT = "client"  # the client closed first, or the connection dropped
WS_ERROR = "error"

# Why a provider request was retried (closed set, so every series exists from the start).
RETRY_REASONS = ("rate_limited", "timeout", "server_error", "http_error", "transport")

WS_CONNECTIONS = Gauge(
    "chimera_ws_connections", "Open WebSocket subscriber connections.",
    multiprocess_mode="livesum",
)
WS_MESSAGES_SENT = Counter(
    "chimera_ws_messages_sent", "WebSocket messages sent to subscribers (events and control)."
)
WS_BYTES_SENT = Counter(
    "chimera_ws_bytes_sent", "Bytes of WebSocket message payloads sent to subscribers (UTF-8)."
)
WS_DISCONNECTS = Counter(
    "chimera_ws_disconnects", "WebSocket subscriber connections ended, by why.", ["reason"]
)
EVENTS = Counter("chimera_events", "Job events recorded, by type.", ["type"])
JOBS_CREATED = Counter("chimera_jobs_created", "Jobs created.")
JOBS_FINISHED = Counter("chimera_jobs_finished", "Jobs finished, by final state.", ["state"])
JOBS_RUNNING = Gauge("chimera_jobs_running", "Jobs running.", multiprocess_mode="livesum")
TEAM_RUNS = Counter(
    "chimera_team_runs", "Team runs ended, by team, provider kind and final status.",
    ["team", "provider", "status"],
)
PROVIDER_REQUEST = Histogram(
    "chimera_provider_request_seconds",
    "From a team starting its provider to the provider's stream ending (retries included).",
    ["team"], buckets=PROVIDER_BUCKETS,
)
PROVIDER_FIRST_TOKEN = Histogram(
    "chimera_provider_first_token_seconds",
    "From a team starting its provider to the provider's first output.",
    ["team"], buckets=PROVIDER_BUCKETS,
)
PROVIDER_TOKENS = Counter(
    "chimera_provider_tokens", "Tokens the providers generated (as they report).", ["team"]
)
PROVIDER_RETRIES = Counter(
    "chimera_provider_retries", "Provider requests retried, by reason.", ["team", "reason"]
)
STORE_COMMIT_SECONDS = Histogram(
    "chimera_store_commit_seconds", "Time to commit one batch of events to the store.",
    buckets=COMMIT_SECONDS_BUCKETS,
)
STORE_COMMIT_EVENTS = Histogram(
    "chimera_store_commit_events",
    "Events in one commit of the broadcaster's (a job's opening events go with its record).",
    buckets=COMMIT_EVENTS_BUCKETS,
)
# The go-grpc-prometheus names and labels, so existing gRPC dashboards work.
GRPC_STARTED = Counter(
    "grpc_server_started", "RPCs started on the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
)
GRPC_HANDLED = Counter(
    "grpc_server_handled", "RPCs completed on the server, regardless of success or failure.",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
)
GRPC_HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Response latency (seconds) of gRPC calls that had been handled by the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
)


class DeliveryHistogram(Collector):
    """``chimera_event_delivery_seconds``: a histogram reported from plain totals.

    :meth:`add` takes a batch of observations (counts per bucket, and their sum)
    on the event loop; :meth:`collect` reports the totals to a scrape, from any
    thread (the totals are one tuple, replaced whole, never changed in place).

    With ``directory`` (``PROMETHEUS_MULTIPROC_DIR``), every :meth:`add` also
    writes this process's totals to its own file there (replaced atomically), and
    :meth:`collect` reports the sum of every process's file: what a stopped or
    crashed process counted stays, as with prometheus-client's own counters. A
    process whose pid was used before in the directory carries on from that
    file, as prometheus-client's values do.
    """

    name = "chimera_event_delivery_seconds"
    documentation = (
        "From the broadcaster taking an event (or reading it from the log, for history) "
        "to its frame being written to a subscriber, per delivery (WebSocket and gRPC)."
    )
    bounds = (*DELIVERY_BUCKETS, float("inf"))
    _file_glob = "chimera_delivery_seconds_*.json"

    def __init__(self, directory: str | None = None) -> None:
        self._directory = directory
        self._path: str | None = None  # this process's file, found at the first add
        self._totals: tuple[tuple[int, ...], float] = ((0,) * len(self.bounds), 0.0)

    def add(self, counts: Sequence[int], total: float) -> None:
        """Adds ``counts[i]`` observations to bucket ``i`` (:attr:`bounds`, not
        cumulative) and ``total`` to the sum."""
        if self._directory is not None and self._path is None:
            self._path = os.path.join(
                self._directory, self._file_glob.replace("*", str(os.getpid()))
            )
            self._totals = _read_totals(self._path) or self._totals
        buckets, seconds = self._totals
        self._totals = (
            tuple(a + b for a, b in zip(buckets, counts, strict=True)), seconds + total
        )
        if self._path is not None:
            _write_totals(self._path, self._totals)

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        if self._directory is None:
            buckets, seconds = self._totals
        else:
            buckets, seconds = (0,) * len(self.bounds), 0.0
            for path in glob.glob(os.path.join(self._directory, self._file_glob)):
                totals = _read_totals(path)
                if totals is None or len(totals[0]) != len(buckets):
                    continue  # not one of ours after all
                buckets = tuple(a + b for a, b in zip(buckets, totals[0], strict=True))
                seconds += totals[1]
        cumulative = 0
        points = []
        for bound, count in zip(self.bounds, buckets, strict=True):
            cumulative += count
            points.append((_le(bound), float(cumulative)))
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=points, sum_value=seconds
        )


def _le(bound: float) -> str:
    """A bucket's ``le`` label as prometheus-client writes it (Go's float format)."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


def _read_totals(path: str) -> tuple[tuple[int, ...], float] | None:
    """A process's delivery totals, or None if its file is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
        return tuple(int(n) for n in data["buckets"]), float(data["sum"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_totals(path: str, totals: tuple[tuple[int, ...], float]) -> None:
    """Replaces ``path`` whole (a scrape never reads half a file)."""
    buckets, seconds = totals
    partial = f"{path}.partial"
    with open(partial, "w", encoding="utf-8") as file:
        json.dump({"buckets": buckets, "sum": seconds}, file)
    os.replace(partial, path)


EVENT_DELIVERY = DeliveryHistogram(os.environ.get(MULTIPROC_ENV) or None)
REGISTRY.register(EVENT_DELIVERY)


# The events counter's series by type, labelled once: events_recorded runs on every
# commit, and a labels() lookup takes longer than the inc it leads to.
_EVENTS_OF: dict[EventType, Counter] = {}


def _initialize() -> None:
    """Creates the series whose label values are known, at 0, so they exist before use."""
    for reason in (*WS_CLOSE_REASONS.values(), WS_CLIENT):
        WS_DISCONNECTS.labels(reason)
    for event_type in EventType:
        _EVENTS_OF[event_type] = EVENTS.labels(event_type.value)
    for state in JobState:
        if state is not JobState.RUNNING:
            JOBS_FINISHED.labels(state.value)
    for team in TeamName:
        for kind in ("real", "simulated"):
            for status in (TeamStatus.COMPLETE, TeamStatus.ERROR, TeamStatus.CANCELLED):
                TEAM_RUNS.labels(team.value, kind, status.value)
        PROVIDER_REQUEST.labels(team.value)
        PROVIDER_FIRST_TOKEN.labels(team.value)
        PROVIDER_TOKENS.labels(team.value)
        for reason in RETRY_REASONS:
            PROVIDER_RETRIES.labels(team.value, reason)


_initialize()


def message_size(text: str) -> int:
    """Bytes of ``text`` on the wire (``isascii`` is O(1) for a ``str``)."""
    return len(text) if text.isascii() else len(text.encode())


class Deliveries:
    """WebSocket messages and event deliveries, counted on the event loop in plain
    numbers and added to the metrics by :meth:`flush`.

    Only ever used from the event loop's thread (so no lock), and flushed from it.
    The broadcaster's fast path writes one event to its N caught-up subscribers in a
    row; :meth:`live` counts those writes as runs of the same event and reads the
    clock once per run (at most :data:`RUN` writes, and at the end of the loop
    step), so a delivery costs an increment, not a clock read and a bucket search.
    Each write of a run is timed as the run's last, which is at most ``RUN - 1``
    writes (well under the smallest bucket) late.
    """

    __slots__ = ("_settle", "buckets", "bytes", "live", "messages", "seconds")
    _bounds = DeliveryHistogram.bounds
    RUN = 32

    def __init__(self) -> None:
        self.buckets = [0] * len(self._bounds)
        self.seconds = 0.0
        self.messages = 0
        self.bytes = 0
        self.live, self._settle = self._live_counter()

    def _live_counter(self) -> tuple[Callable[[Event, int], None], Callable[[], None]]:
        current: Event | None = None
        size = 0
        run = 0
        scheduled = False

        def settle() -> None:
            nonlocal run
            if run and current is not None:
                self._observe(current.taken, run)
                self.messages += run
                self.bytes += run * size
                run = 0

        def settle_soon() -> None:
            nonlocal scheduled
            scheduled = False
            settle()

        def live(event: Event, payload_size: int) -> None:
            """``event`` (``payload_size`` bytes) written to a WebSocket now."""
            nonlocal current, size, run, scheduled
            if event is not current:
                settle()
                current, size = event, payload_size
                if not scheduled:  # the end of this loop step closes the last run
                    scheduled = True
                    asyncio.get_running_loop().call_soon(settle_soon)
            run += 1
            if run >= Deliveries.RUN:
                settle()

        return live, settle

    def _observe(self, taken: float, count: int) -> None:
        """``count`` deliveries of an event the broadcaster took at ``taken``, now."""
        elapsed = time.monotonic() - taken
        self.buckets[bisect_left(self._bounds, elapsed)] += count
        self.seconds += elapsed * count

    def sent(self, size: int) -> None:
        """A WebSocket message of ``size`` bytes that is not an event (``connected``, …)."""
        self.messages += 1
        self.bytes += size

    def delivered(self, event: Event) -> None:
        """``event`` handed to a subscriber's connection now (gRPC)."""
        self._observe(event.taken, 1)

    def ws_delivered(self, event: Event, size: int) -> None:
        """``event`` (``size`` payload bytes) written to a WebSocket now by its writer."""
        self._observe(event.taken, 1)
        self.sent(size)

    def flush(self) -> None:
        """Adds what was counted since the last flush to the metrics."""
        self._settle()
        if self.messages:
            WS_MESSAGES_SENT.inc(self.messages)
            WS_BYTES_SENT.inc(self.bytes)
            self.messages = self.bytes = 0
        if any(self.buckets):
            EVENT_DELIVERY.add(self.buckets, self.seconds)
            self.buckets = [0] * len(self._bounds)
            self.seconds = 0.0


DELIVERIES = Deliveries()


# -- one-line hooks ------------------------------------------------------------------------


def ws_closed(close_sent_code: int | None, client_first: bool) -> None:
    """A WebSocket subscriber's connection ended: the server's close code, if it
    sent one, and whether the client closed (or dropped) it first."""
    if client_first or close_sent_code is None:
        reason = WS_CLIENT
    else:
        reason = WS_CLOSE_REASONS.get(close_sent_code, WS_ERROR)
    WS_CONNECTIONS.dec()
    WS_DISCONNECTS.labels(reason).inc()


def events_recorded(events: Sequence[Event], seconds: float) -> None:
    """A batch of events committed to the store in ``seconds``."""
    STORE_COMMIT_SECONDS.observe(seconds)
    STORE_COMMIT_EVENTS.observe(len(events))
    events_counted(events)


def events_counted(events: Sequence[Event]) -> None:
    """Recorded events, by type (also those a job's creation recorded with it)."""
    for event_type, n in Tally(event.type for event in events).items():
        _EVENTS_OF[event_type].inc(n)


def job_started() -> None:
    JOBS_CREATED.inc()
    JOBS_RUNNING.inc()


def job_finished(state: JobState) -> None:
    JOBS_RUNNING.dec()
    JOBS_FINISHED.labels(state.value).inc()


def job_recovered() -> None:
    """A job a crashed (or lost) process left running, closed ``failed`` here. It
    was counted running by that process, whose gauge died with it, so only the
    finish is counted."""
    JOBS_FINISHED.labels(JobState.FAILED.value).inc()


def retry_reason(status: int | None) -> str:
    """The ``reason`` label of a retry after a failure with HTTP ``status`` (None: no answer)."""
    if status is None:
        return "transport"
    if status == 429:
        return "rate_limited"
    if status == 408:
        return "timeout"
    return "server_error" if status >= 500 else "http_error"


def team_run_ended(team: str, simulated: bool, status: str) -> None:
    TEAM_RUNS.labels(team, "simulated" if simulated else "real", status).inc()


class ProviderRun:
    """Times one team's provider stream: first output, then the end."""

    __slots__ = ("_first", "_started", "_team")

    def __init__(self, team: str) -> None:
        self._team = team
        self._started = time.monotonic()
        self._first = True

    def output(self) -> None:
        if self._first:
            self._first = False
            PROVIDER_FIRST_TOKEN.labels(self._team).observe(time.monotonic() - self._started)

    def tokens(self, count: int) -> None:
        PROVIDER_TOKENS.labels(self._team).inc(count)

    def ended(self) -> None:
        PROVIDER_REQUEST.labels(self._team).observe(time.monotonic() - self._started)
