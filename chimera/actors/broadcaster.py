"""The broadcaster: numbers, records and fans out every job event.

One actor for the whole server. Teams and supervisors :meth:`Broadcaster.publish`
drafts into its bounded inbox; :meth:`Broadcaster.run` takes them in batches,
numbers them per job (``seq`` 1, 2, 3 … with no gaps) and encodes each to JSON
once, writes them to the store in one commit (the events, and the few job
fields they change) so an event is durable before anyone sees it, then hands
each event to every subscriber of its job. Numbering the next batch overlaps
the write of the current one (a two-stage pipeline).

Subscribers never block the broadcaster: each :class:`Subscription` has its own
queue, bounded in bytes; one that falls behind past the bound is shed with
:class:`chimera.errors.SubscriberTooSlow` and can resume from its last ``seq``.

Listeners: a consumer may give its subscription a :class:`Listener`, which is
offered each live event that would otherwise wait in the queue with nothing
ahead of it; if the listener takes it (e.g. a gateway writing it straight to a
connection that has caught up and has room), no task is woken for it. What
"caught up" means and how to write is the listener's business; the
subscription only keeps order and exactly-once: an event is offered only when
nothing is queued before it, never twice, and never the final event (which
ends the consumer's iteration). The listener is also told when an event is
queued and when the subscription ends (:meth:`Listener.woken`), so a consumer
can wait for its events and something else in one task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from chimera.backoff import Backoff
from chimera.defaults import DEFAULT_SUBSCRIBER_MAX_BYTES
from chimera.errors import (
    ChimeraError,
    Draining,
    EventsRejected,
    HistoryGone,
    ShuttingDown,
    SubscriberTooSlow,
    Unavailable,
)
from chimera.events import Draft, Event, EventType
from chimera.job import Job
from chimera.observability.metrics import events_counted, events_recorded
from chimera.store.base import Store

log = logging.getLogger(__name__)

INBOX_SIZE = 64
MAX_BATCH = 64
# Batches numbered ahead of the one being written (at most PIPELINE_DEPTH x
# MAX_BATCH events); the next commit takes up to MAX_COMMIT events of them at once,
# so under load a commit grows instead of the queue.
PIPELINE_DEPTH = 2
MAX_COMMIT = 256
# Commits start at most this often (seconds); see Broadcaster._commit. 1 ms: ~17-25%
# less server CPU per delivered event under load (docs/benchmarks.md), at most 1 ms more
# latency for an event that follows another within 1 ms.
COMMIT_INTERVAL = 0.001
COMMIT_POLL = 0.0005
# Deliveries (events x local subscribers) a job may have numbered but not yet handed
# to its subscribers; its publishers wait beyond that. What bounds the time an event
# waits inside the server under saturation: a job with 1,000 watchers has 4 events in
# flight, not the pipeline's hundreds (each then waited for every one ahead of it to
# reach 1,000 sockets: seconds). With one or two watchers the pipeline's bounds come first.
FANOUT_BUDGET = 4096
HISTORY_PAGE = 512
RETRY = Backoff(first=0.05, cap=1.0)  # between tries of a failed write

class Listener(Protocol):
    """Takes live events without blocking; transport-neutral (see the module docstring)."""

    def offer(self, event: Event) -> bool:
        """``event`` if it can be delivered now (its ``frame`` is the same bytes
        for every subscriber); ``False``, having done nothing, to have it queued
        for the consumer instead."""
        ...

    def woken(self, at_once: bool) -> None:
        """An event was queued for the consumer, or the subscription ended: after
        what is queued, or ``at_once`` (shed, expired: the queue dropped, so a
        write under way for it may be given up). Lets a consumer that waits for
        something else meanwhile (its client's messages) be woken without a
        task or a future of its own."""
        ...


class RemoteFeed(Protocol):
    """Events of jobs that run in other processes (scale-out; none in one process).

    The feed hands them to :meth:`Broadcaster.receive`, in order and gap-free.
    """

    async def follow(self, job_id: str) -> None:
        """Starts receiving ``job_id``'s events; returns once every event recorded
        from then on will be received. Idempotent."""
        ...

    def unfollow(self, job_id: str) -> None:
        """Stops receiving ``job_id``'s events (no local subscriber is left)."""
        ...


class RecordingListener(Protocol):
    """Told which jobs' events cannot be recorded (the job manager's running jobs:
    :class:`chimera.actors.jobs.RunningJobs`), so it stops them."""

    def storage_failed(self, job_ids: list[str], error: ChimeraError) -> None:
        """Writes fail (disk full): these jobs' events wait, unrecorded."""
        ...

    def rejected(self, job_id: str, reason: str) -> None:
        """The store refused ``job_id``'s events: none of them will be recorded here."""
        ...


RESUME_ELSEWHERE = "server is draining: resume on another server"


def _ignore(job_ids: list[str], error: ChimeraError) -> None:
    pass


@dataclass(slots=True)
class _Channel:
    """A job's subscribers, and its snapshot while it runs here (``None`` otherwise),
    with the store's epoch it was opened under; the last of its seqs that left the
    pipeline (handed to its subscribers, or dropped), and a publisher waiting for its
    events in flight to fall within its window (:meth:`Broadcaster.publish`)."""

    job: Job | None = None
    subscribers: set[Subscription] = field(default_factory=set)
    epoch: str = ""
    settled: int = 0
    queued: int = 0  # its drafts in the inbox, not numbered yet
    room: asyncio.Future[None] | None = None

    def window(self) -> int:
        """Events this job may have in the pipeline, queued or numbered and not yet
        handed out (at least 1)."""
        return max(FANOUT_BUDGET // max(len(self.subscribers), 1), 1)

    def in_flight(self) -> bool:
        """Whether the job has its window's worth of events in the pipeline."""
        job = self.job
        return (job is not None
                and job.last_sequence - self.settled + self.queued >= self.window())

    def settle(self, seq: int) -> None:
        """Events up to ``seq`` left the pipeline; a waiting publisher goes on if it may."""
        self.settled = max(self.settled, seq)
        if self.room is not None and not self.in_flight():
            self.wake()

    def wake(self) -> None:
        if self.room is not None:
            if not self.room.done():
                self.room.set_result(None)
            self.room = None


class Subscription:
    """One subscriber's view of one job: its history after ``after_seq``, then live events.

    Iterate it to receive events in order, each once (without ``code_delta``
    events if ``deltas`` is false: their seqs are skipped, so the seqs received
    have gaps there; ``last_seq`` still moves past them). Iteration ends after the
    job's final event (at once if ``after_seq`` is already the final event's);
    it raises :class:`SubscriberTooSlow` if the subscriber fell behind,
    :class:`chimera.errors.HistoryGone` if retention removed the job meanwhile,
    or :class:`chimera.errors.Unavailable` when the server shuts down. Use it as
    a context manager so it is always unregistered. Cancelling the iterating
    task propagates at once; nothing is lost, the subscriber resumes from
    ``last_seq``.
    """

    # Idle subscribers are the common case (10,000 of them must fit in 200 MB with
    # their connections), so the queue and the futures are made only when needed.
    __slots__ = (
        "_broadcaster", "_error", "_failed", "_max_bytes", "_pending",
        "_pending_bytes", "_skip_deltas", "_waiter", "done", "epoch", "job_id", "last_seq",
        "listener",
    )

    def __init__(
        self, broadcaster: Broadcaster, job_id: str, after_seq: int, max_bytes: int,
        *, deltas: bool = True,
    ) -> None:
        self.job_id = job_id
        self.last_seq = after_seq
        # The store's epoch (its lifetime) this subscriber's events belong to: what it
        # was last read under. Redis losing its data ends the ones from before.
        self.epoch = broadcaster.store.epoch
        self._broadcaster = broadcaster
        self._max_bytes = max_bytes
        self._pending: deque[Event] | None = None
        self._pending_bytes = 0
        self._waiter: asyncio.Future[None] | None = None  # the consumer waiting for events
        self._failed: asyncio.Future[ChimeraError] | None = None
        self._error: ChimeraError | None = None
        self.listener: Listener | None = None
        self._skip_deltas = not deltas
        # True once the job's final event was delivered (or resuming found
        # nothing left to wait for): nothing more will come.
        self.done = False

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Unregisters this subscriber (what leaving the ``async with`` does)."""
        self._broadcaster._unsubscribe(self)

    def _wake(self, at_once: bool = False) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        if self.listener is not None:
            self.listener.woken(at_once)

    def _push(self, event: Event, final: bool) -> None:
        """Called by the broadcaster, never blocks. ``final`` is ``event.is_final``."""
        if self._error is not None:
            return
        if self._skip_deltas and event.type is EventType.CODE_DELTA:
            return  # not queued, so a filtered subscriber is never shed for deltas
        listener = self.listener
        if (
            listener is not None
            and not final
            and not self._pending
            and event.seq > self.last_seq
            and listener.offer(event)
        ):
            self.last_seq = event.seq
            return
        if self._pending_bytes + event.size > self._max_bytes:
            self._fail(SubscriberTooSlow(self.last_seq))
            return
        if self._pending is None:
            self._pending = deque()
        self._pending.append(event)
        self._pending_bytes += event.size
        self._wake()

    def _end(self, error: ChimeraError) -> None:
        """Ends the subscription after what is already queued (server shutdown)."""
        if self._error is None:
            self._error = error
            self._wake()

    def _fail(self, error: ChimeraError) -> None:
        """Ends the subscription at once, dropping what is queued (subscriber shed).

        It leaves its job's channel now (no more events are offered to it),
        not when its consumer gets round to closing it.
        """
        self._broadcaster._ended.append(self)
        self._error = error
        self._pending = None
        self._pending_bytes = 0
        self._wake(at_once=True)
        failed = self.failed()
        if not failed.done():
            failed.set_result(error)

    def end_now(self, error: ChimeraError) -> None:
        """Ends the subscription at once with ``error``, dropping what is queued
        (e.g. the caller's token expired). Not for use during fan-out."""
        if self._error is None:
            self._fail(error)

    def failed(self) -> asyncio.Future[ChimeraError]:
        """A future that gets the error once the subscription is shed.

        Lets a gateway whose writer is stuck on a slow client react at once
        (a plain future, not a task: it costs nothing per idle subscriber).
        Nobody needs to await it; it is never given an exception.
        """
        if self._failed is None:
            self._failed = asyncio.get_running_loop().create_future()
        return self._failed

    async def history(self) -> AsyncGenerator[Event, None]:
        """The stored events after ``last_seq``; then :meth:`next_nowait` and
        :meth:`wait` give the live ones (or iterate the subscription for both).

        We registered before reading, and events reach the store before
        subscribers, so every event is in the store or queued (or both:
        duplicates are dropped by seq).
        """
        store = self._broadcaster.store
        # A job running in another process: its live events come from the feed,
        # which must be listening before the history is read (no event between).
        await self._broadcaster._follow(self.job_id)
        while True:
            page = await store.read_events(self.job_id, self.last_seq, HISTORY_PAGE)
            self.epoch = store.epoch  # read together with the page
            for event in page:
                self.last_seq = event.seq
                if self._skip_deltas and event.type is EventType.CODE_DELTA:
                    continue
                self.done = event.is_final
                yield event
                if self.done:
                    return
                if self._failed is not None and self._failed.done():
                    raise self._current_error()  # shed while replaying history
            if len(page) < HISTORY_PAGE:
                break
        # A subscriber resuming after a finished job's last event has nothing to
        # wait for; without this it would wait forever.
        job = await store.get_job(self.job_id, thoughts=0)
        if job is None and self.last_seq > 0:
            # Removed while we read it (retention, here or in another process of a
            # cluster): nothing more will come, so say so rather than wait.
            raise HistoryGone(self.job_id, self.last_seq)
        if job is not None and job.finished and job.last_sequence <= self.last_seq:
            self.done = True

    def next_nowait(self) -> Event | None:
        """The next queued live event, ``None`` if there is none yet; raises why
        the subscription ended once nothing is left to take."""
        events = self.take_nowait(1)
        return events[0] if events else None

    def take_nowait(self, max_bytes: int) -> list[Event]:
        """The queued live events, in order, up to the final one and until they
        reach ``max_bytes`` (at least one: a subscriber that is behind takes its
        backlog in batches); ``[]`` if none is queued yet; raises why the
        subscription ended once nothing is left to take. Each is taken once:
        ``last_seq`` is the last one returned."""
        events: list[Event] = []
        size = 0
        pending = self._pending
        while pending and size < max_bytes and not self.done:
            event = pending.popleft()
            self._pending_bytes -= event.size
            if event.seq <= self.last_seq:
                continue
            self.last_seq = event.seq
            self.done = event.is_final
            events.append(event)
            size += event.size
        if not events and self._error is not None:
            raise self._current_error()
        return events

    async def wait(self) -> None:
        """Returns once an event is queued or the subscription ended."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _current_error(self) -> ChimeraError:
        """Why the subscription ended; a shed one names the last event this consumer
        was actually given (it may have been given more since it was shed)."""
        assert self._error is not None
        if isinstance(self._error, SubscriberTooSlow):
            return SubscriberTooSlow(self.last_seq)
        return self._error

    async def __aiter__(self) -> AsyncIterator[Event]:
        async for event in self.history():
            yield event
        while not self.done:
            live = self.next_nowait()
            if live is None:
                await self.wait()
            else:
                yield live


class Broadcaster:
    """The actor that owns sequence numbers, the event log writes and fan-out.

    Lifecycle: :meth:`run` until :meth:`stop`; ``run`` then drains what was
    already published, records it, fans it out, ends every subscription with
    :class:`Unavailable`, and returns.

    Wiring, given here and never changed: ``listener`` is told which jobs' events
    cannot be recorded; ``remote`` brings the events of jobs that run in other
    processes (scale-out; ``None`` in one process).
    """

    def __init__(
        self,
        store: Store,
        *,
        listener: RecordingListener | None = None,
        remote: RemoteFeed | None = None,
        subscriber_max_bytes: int = DEFAULT_SUBSCRIBER_MAX_BYTES,
    ) -> None:
        self.store = store
        self.subscriber_max_bytes = subscriber_max_bytes
        self._inbox: asyncio.Queue[Draft | None] = asyncio.Queue(INBOX_SIZE)
        self._channels: dict[str, _Channel] = {}
        # Subscriptions failed while their channel was being iterated; unregistered after.
        self._ended: list[Subscription] = []
        self._stopped = False
        # Storage failures (disk full): the error while writes fail, None otherwise;
        # who is told which jobs' events could not be recorded; whether to keep
        # retrying; jobs whose events were dropped (at shutdown: no gap after them).
        self.storage_error: ChimeraError | None = None
        self.on_storage_failure: Callable[[list[str], ChimeraError], None] = (
            listener.storage_failed if listener is not None else _ignore
        )
        self._retrying = True
        self._dropped: set[str] = set()
        # Given when several processes share the store (see chimera.cluster).
        self.remote = remote
        # Called with (job_id, reason) when the store refuses a job's events.
        self.on_rejected: Callable[[str, str], None] = (
            listener.rejected if listener is not None else lambda job_id, reason: None
        )
        self._rejected: set[str] = set()
        # Draining in a cluster: only the jobs running here are streamed from here.
        self._draining = False

    # -- called by the job manager and the actors ---------------------------------

    def open_job(self, job: Job, recorded: Sequence[Event] = ()) -> None:
        """Starts numbering ``job``'s events after ``job.last_sequence``; ``recorded``:
        its first events, already durable (written with the job), delivered now."""
        self._rejected.discard(job.job_id)
        channel = self._channels.setdefault(job.job_id, _Channel())
        if channel.job is None and channel.subscribers and self.remote is not None:
            # Followed while it ran elsewhere (or before it existed): from now on
            # its events are recorded here and reach subscribers from here.
            self.remote.unfollow(job.job_id)
        channel.job = job
        channel.epoch = self.store.epoch
        channel.settled = job.last_sequence
        if recorded:
            events_counted(recorded)
            self._fan_out(list(recorded))

    async def adopt(self, job: Job) -> None:
        """:meth:`open_job` for a job this process takes over (or gets back) after
        it ran elsewhere. Its subscribers here followed it through the remote
        feed, which may not have delivered every event up to ``job.last_sequence``
        yet (a pub/sub message lost with the node): those are read from the store
        first, so the events recorded here follow them with no gap."""
        channel = self._channels.get(job.job_id)
        if channel is not None and channel.job is None and channel.subscribers:
            after = min(sub.last_seq for sub in channel.subscribers)
            while after < job.last_sequence:
                page = [e for e in await self.store.read_events(job.job_id, after, HISTORY_PAGE)
                        if e.seq <= job.last_sequence]
                if not page:
                    break
                self.receive(page)
                after = page[-1].seq
        self.open_job(job)

    async def publish(self, draft: Draft) -> None:
        """Queues ``draft``; waits while the inbox is full, or while its job has its
        window of events in flight (:data:`FANOUT_BUDGET`): backpressure."""
        channel = self._channels.get(draft.job_id)
        while channel is not None and channel.in_flight() and not self._stopped:
            if channel.room is None:
                channel.room = asyncio.get_running_loop().create_future()
            await channel.room
            channel = self._channels.get(draft.job_id)
        await self._inbox.put(draft)
        # After the put, in the same step (_number cannot run between): a put
        # cancelled while the inbox was full counts nothing.
        channel = self._channels.get(draft.job_id)
        if channel is not None:
            channel.queued += 1

    async def stop(self) -> None:
        """Asks :meth:`run` to finish once everything published so far is out."""
        await self._inbox.put(None)

    def stop_retrying(self) -> None:
        """At shutdown: events the store cannot write are dropped instead of retried
        (their jobs stay ``running`` in the store; the next start-up closes them)."""
        self._retrying = False

    # -- called by the gateways ----------------------------------------------------

    def subscribe(
        self, job_id: str, after_seq: int = 0, max_bytes: int | None = None,
        *, deltas: bool = True,
    ) -> Subscription:
        """Registers a subscriber for ``job_id`` (which may not exist yet); without
        ``code_delta`` events if ``deltas`` is false."""
        if self._stopped:
            raise ShuttingDown("the server is shutting down")
        if self._draining:
            channel = self._channels.get(job_id)
            if channel is None or channel.job is None:
                raise Draining(RESUME_ELSEWHERE)
        sub = Subscription(
            self, job_id, after_seq, max_bytes or self.subscriber_max_bytes, deltas=deltas
        )
        self._channels.setdefault(job_id, _Channel()).subscribers.add(sub)
        return sub

    def drain(self) -> None:
        """The server drains. In a cluster (with a ``remote`` feed), the subscriptions
        of jobs that do not run here end with :class:`Draining` (close 1012) after
        the events already queued for them, so they resume on another server with
        no gap; new ones are refused the same way. Those of the jobs running here
        go on to their final event. In one process, nothing changes here."""
        if self.remote is None:
            return
        self._draining = True
        for channel in self._channels.values():
            if channel.job is None:
                for sub in channel.subscribers:
                    sub._end(Draining(RESUME_ELSEWHERE))

    def fail_removed_jobs(self, job_ids: list[str]) -> None:
        """Ends the subscriptions of jobs retention removed (:class:`HistoryGone`):
        their history is gone, so waiting on would be a silent gap."""
        for job_id in job_ids:
            channel = self._channels.get(job_id)
            if channel is None:
                continue
            for sub in channel.subscribers:
                sub._fail(HistoryGone(job_id, sub.last_seq))
            self._unsubscribe_ended()

    def data_lost(self) -> None:
        """The store lost its data (its epoch changed; Redis flushed or restarted
        empty): every subscriber of a job from before is told history is gone,
        at once, quiet jobs' too; the jobs from before that run here are stopped
        (their events can no longer be recorded). Subscribers whose events were
        read under the new epoch (jobs created since) go on untouched, and one
        still waiting for a job that did not exist waits on."""
        epoch = self.store.epoch
        stale = [job_id for job_id, channel in self._channels.items()
                 if channel.job is not None and channel.epoch != epoch]
        if stale:
            lost = "Redis lost its data"
            self._reject(dict.fromkeys(stale, lost), frozenset(stale))
        for job_id, channel in list(self._channels.items()):
            for sub in list(channel.subscribers):
                if sub.epoch == epoch:
                    continue
                if sub.last_seq == 0 and channel.job is None:
                    sub.epoch = epoch
                    continue
                sub._fail(HistoryGone(job_id, sub.last_seq))
            self._unsubscribe_ended()

    def _unsubscribe_ended(self) -> None:
        for sub in self._ended:
            self._unsubscribe(sub)
        self._ended.clear()

    def receive(self, events: Sequence[Event]) -> None:
        """Hands events recorded by another process (in order, gap-free) to this
        process's subscribers, as they were encoded there. Subscribers drop any they
        already have, by seq."""
        for event in events:
            channel = self._channels.get(event.job_id)
            if channel is None or not channel.subscribers:
                continue
            final = event.is_final
            for sub in list(channel.subscribers):
                sub._push(event, final)
        if self._ended:
            self._unsubscribe_ended()

    def job_ids(self) -> list[str]:
        """Jobs this process has subscribers for or runs."""
        return list(self._channels)

    async def _follow(self, job_id: str) -> None:
        channel = self._channels.get(job_id)
        if self.remote is not None and channel is not None and channel.job is None:
            await self.remote.follow(job_id)

    def _drop_channel(self, job_id: str) -> None:
        self._channels.pop(job_id).wake()
        if self.remote is not None:
            self.remote.unfollow(job_id)

    def subscriber_count(self, job_id: str) -> int:
        channel = self._channels.get(job_id)
        return len(channel.subscribers) if channel else 0

    def _unsubscribe(self, sub: Subscription) -> None:
        channel = self._channels.get(sub.job_id)
        if channel is None:
            return
        channel.subscribers.discard(sub)
        if not channel.subscribers and (channel.job is None or channel.job.finished):
            self._drop_channel(sub.job_id)

    # -- the actor -------------------------------------------------------------------

    async def run(self) -> None:
        """Numbers batches and commits them, pipelined: while batch k is being
        written to the store, batch k+1 is taken from the inbox and numbered
        (its frames encoded). Batch k is fanned out only once its write is done,
        so an event is durable before any subscriber sees it."""
        try:
            async with asyncio.TaskGroup() as tg:
                prepared: asyncio.Queue[list[Event] | None] = asyncio.Queue(PIPELINE_DEPTH)
                tg.create_task(self._commit(prepared), name="broadcaster-commit")
                await self._prepare(prepared)
        finally:
            self._stopped = True
            for channel in self._channels.values():
                channel.wake()
                for sub in channel.subscribers:
                    sub._end(ShuttingDown("the server is shutting down"))

    async def _prepare(self, prepared: asyncio.Queue[list[Event] | None]) -> None:
        """Takes drafts from the inbox in batches and numbers them, until :meth:`stop`."""
        stopping = False
        while not stopping:
            first = await self._inbox.get()
            batch: list[Draft] = []
            if first is None:
                stopping = True
            else:
                batch.append(first)
            while len(batch) < MAX_BATCH and not self._inbox.empty():
                item = self._inbox.get_nowait()
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
            events = self._number(batch)
            if events:
                await prepared.put(events)
        await prepared.put(None)

    def _number(self, batch: list[Draft]) -> list[Event]:
        events: list[Event] = []
        for draft in batch:
            channel = self._channels.get(draft.job_id)
            if channel is not None and channel.queued > 0:
                channel.queued -= 1
            if channel is None or channel.job is None:
                if draft.job_id not in self._rejected:
                    log.error("dropping an event for job %s, which was never opened",
                              draft.job_id)
                continue
            job = channel.job
            event = Event.from_draft(draft, job.last_sequence + 1)
            # Only what numbering needs (sequence, state): the store keeps the rest.
            job.advance(event)
            events.append(event)
        return events

    async def _commit(self, prepared: asyncio.Queue[list[Event] | None]) -> None:
        """Writes each prepared batch (with any others ready by then: one commit),
        then fans it out; ends after the last one.

        A commit starts at most every COMMIT_INTERVAL: one that would follow the
        last one sooner gathers what is prepared meanwhile (polling every
        COMMIT_POLL), so under load each commit carries more events instead of
        paying SQLite's fixed cost per commit more often. After a quiet spell
        the next event is written at once; none waits longer than the interval."""
        loop = asyncio.get_running_loop()
        previous = -COMMIT_INTERVAL
        while True:
            events = await prepared.get()
            if events is None:
                return
            last = False
            deadline = previous + COMMIT_INTERVAL
            while True:
                while not prepared.empty() and len(events) < MAX_COMMIT:
                    more = prepared.get_nowait()
                    if more is None:
                        last = True
                        break
                    events += more
                wait = deadline - loop.time()
                if last or len(events) >= MAX_COMMIT or wait <= 0:
                    break
                await asyncio.sleep(min(wait, COMMIT_POLL))
            previous = loop.time()
            started = time.perf_counter()
            recorded = await self._record(events)
            events_recorded(recorded, time.perf_counter() - started)
            self._fan_out(recorded)
            self._settle(events)  # recorded or dropped: out of the pipeline either way
            if last:
                return

    async def _record(self, events: list[Event]) -> list[Event]:
        """Writes the events, retrying while the store fails (disk full): an event
        is never shown before it is durable, and none is lost while the server runs.

        On the first failure the jobs in the batch are reported to
        :attr:`on_storage_failure` (the job manager stops them: they fail, saying
        why, once their events can be written), and :attr:`storage_error` is set
        until a write succeeds. Returns the events written: at shutdown those that
        cannot be are dropped, with every later event of their jobs (no gap).
        """
        delays = RETRY.delays()
        while True:
            if self._dropped or self._rejected:
                events = [e for e in events
                          if e.job_id not in self._dropped and e.job_id not in self._rejected]
                if not events:
                    return events
            try:
                await self.store.append(events)
            except EventsRejected as exc:  # the others were recorded
                self._reject(exc.reasons, exc.history_gone)
                return [e for e in events if e.job_id not in exc.reasons]
            except ChimeraError as exc:
                job_ids = list(dict.fromkeys(e.job_id for e in events))
                if self.storage_error is None:
                    log.error("cannot record events, retrying until it works: %s", exc)
                    self.storage_error = exc
                    self.on_storage_failure(job_ids, exc)
                if not self._retrying:
                    log.error(
                        "dropped %d event(s) of %d job(s) that could not be recorded; "
                        "start-up will close those jobs as failed", len(events), len(job_ids),
                    )
                    self._dropped.update(job_ids)
                    return []
                await asyncio.sleep(next(delays))
                continue
            if self.storage_error is not None:
                log.warning("events are recorded again")
                self.storage_error = None
            return events

    def _settle(self, events: list[Event]) -> None:
        for event in events:
            channel = self._channels.get(event.job_id)
            if channel is not None:
                channel.settle(event.seq)

    def _fan_out(self, events: list[Event]) -> None:
        finished: list[str] = []
        for event in events:
            final = event.is_final
            if final:
                finished.append(event.job_id)
            channel = self._channels.get(event.job_id)
            if channel is None or not channel.subscribers:
                continue
            # The same event (its frame encoded once) for every subscriber.
            for sub in channel.subscribers:
                sub._push(event, final)
            if self._ended:
                self._unsubscribe_ended()
        for job_id in finished:
            channel = self._channels.get(job_id)
            if channel is not None and not channel.subscribers:
                self._drop_channel(job_id)

    def _reject(self, reasons: dict[str, str], history_gone: frozenset[str]) -> None:
        """The store refused these jobs' events (another process took the job over,
        the store lost its data, or stayed unreachable): nothing more of them is
        recorded here; their subscribers here are ended (they may resume anywhere),
        and the job manager is told, so it stops the job."""
        for job_id, reason in reasons.items():
            log.error("job %s: events not recorded (%s); stopping it here", job_id, reason)
            self._rejected.add(job_id)
            channel = self._channels.get(job_id)
            if channel is not None:
                channel.job = None
                channel.wake()  # nothing of it is numbered any more: no window to wait for
                for sub in list(channel.subscribers):
                    sub._fail(
                        HistoryGone(job_id, sub.last_seq) if job_id in history_gone
                        else Unavailable(f"job {job_id!r}: events not recorded ({reason})")
                    )
                if not channel.subscribers:  # else the last one to leave drops it
                    self._drop_channel(job_id)
            self.on_rejected(job_id, reason)

    def forget_rejected(self, job_id: str) -> None:
        """``job_id``'s events were refused and it will not be opened here again
        (the job manager's recovery did not get it back): nothing to filter."""
        self._rejected.discard(job_id)
