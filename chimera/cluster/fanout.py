"""Fan-out between processes: Redis pub/sub, one connection per process.

The process subscribes to ``chimera:ch:{job}`` for each job it has local
subscribers for but does not run (at most one subscription per job), and to
``chimera:control`` (cancels, and the jobs retention removed, so every process
ends their readers at once). The Lua script that records an event also
publishes its frame, so a process receives each event once and hands it to its
broadcaster, which encodes it once for all its subscribers.

Pub/sub may lose a message (a dropped connection, a slow consumer killed by
Redis). Nothing is lost for subscribers: the last seq received per job is kept;
a message whose seq jumps makes the gap be read from the job's stream first, and
every (re)subscription confirmation reads whatever was recorded since. So
events reach subscribers in order, without gaps or duplicates.

Lifecycle: built (from the store alone) before the broadcaster and the job
manager, which are given it as their remote feed and cancel relay; then
:meth:`RedisFanout.run` (owned by the server's TaskGroup) is given the
:class:`FanoutHandler` that takes what arrives, once, at start (as Centrifuge's
``Broker.Run(handler)``), and reads messages until cancelled; the connection
re-connects and re-subscribes by itself after an error.

One task does everything on the pub/sub connection: redis-py's ``PubSub`` is not
safe for two tasks at once. Each call re-connects a broken connection by itself,
so a (un)subscription sent from a second task while Redis came back could
re-connect beside the reader, and the two read one stream at once (``RuntimeError:
readuntil() called while another coroutine is already waiting``), which ended the
process.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from chimera.backoff import Backoff
from chimera.errors import ChimeraError, Unavailable
from chimera.events import Event
from chimera.store.redis import CONTROL_CHANNEL, P, RedisStore, channel

log = logging.getLogger(__name__)

CHANNEL_PREFIX = P + "ch:"
RETRY = Backoff(first=0.5, cap=2.0)  # between tries of a failed pub/sub call or read
GAP_PAGE = 512
# How long a read waits for a message before the (un)subscriptions asked for
# meanwhile are sent (the reader sends them: see the module docstring).
READ_WAIT = 0.05
STOP_WAIT = 1.0  # a cancelled reader's time to end before its connection is closed


@dataclass(frozen=True, slots=True)
class FanoutHandler:
    """What the fan-out hands on, given to :meth:`RedisFanout.run` once, at start:
    ``deliver`` gets another process's events (in order, gap-free), ``gone`` the
    jobs whose history is gone (retention removed them, or the stream lost
    events), ``cancel`` the job ids a cancel was relayed for."""

    deliver: Callable[[Sequence[Event]], None]
    gone: Callable[[list[str]], None]
    cancel: Callable[[str], None]


_NOT_RUNNING = FanoutHandler(
    deliver=lambda events: None, gone=lambda job_ids: None, cancel=lambda job_id: None
)


@dataclass(slots=True)
class _Followed:
    last: int | None = None  # the last seq handed on; None until subscribed
    ready: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class RedisFanout:
    """:class:`chimera.actors.broadcaster.RemoteFeed` and
    :class:`chimera.actors.jobs.CancelRelay` over Redis pub/sub."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        # Where what arrives goes: the handler run() is given (nothing arrives before).
        handler = _NOT_RUNNING
        self._deliver, self._gone, self._cancel = handler.deliver, handler.gone, handler.cancel
        self._followed: dict[str, _Followed] = {}
        self._pubsub: PubSub = store.pubsub()
        # (Un)subscriptions asked for, sent by the reader between reads.
        self._commands: deque[tuple[bool, str]] = deque()
        self._stopping = False

    # -- RemoteFeed ----------------------------------------------------------------------

    async def follow(self, job_id: str) -> None:
        followed = self._followed.get(job_id)
        if followed is None:
            followed = self._followed[job_id] = _Followed()
            self._commands.append((True, channel(job_id)))
        await asyncio.shield(followed.ready)

    def unfollow(self, job_id: str) -> None:
        followed = self._followed.pop(job_id, None)
        if followed is not None:
            if not followed.ready.done():
                followed.ready.set_result(None)
            self._commands.append((False, channel(job_id)))

    # -- CancelRelay -----------------------------------------------------------------------

    async def request_cancel(self, job_id: str) -> None:
        try:
            await self._store.client.publish(CONTROL_CHANNEL, f"cancel {job_id}")
        except (RedisError, OSError) as exc:
            raise Unavailable("the store (Redis) cannot relay the cancel: try again") from exc

    # -- the actor -------------------------------------------------------------------------

    async def run(self, handler: FanoutHandler) -> None:
        """Sends (un)subscriptions and reads messages until cancelled, in this one task;
        what arrives goes to ``handler``."""
        self._deliver, self._gone, self._cancel = handler.deliver, handler.gone, handler.cancel
        await self._retrying(self._pubsub.subscribe, CONTROL_CHANNEL)
        await self._read()

    async def _send_commands(self) -> None:
        """Sends the (un)subscriptions asked for since the last read, in order."""
        while self._commands:
            subscribe, name = self._commands.popleft()
            if subscribe:
                await self._retrying(self._pubsub.subscribe, name)
            else:
                await self._retrying(self._pubsub.unsubscribe, name)

    async def _retrying(self, command: Callable[[str], Awaitable[Any]], name: str) -> None:
        delays = RETRY.delays()
        while True:
            try:
                await command(name)
                return
            except (RedisError, OSError) as exc:  # no Redis error ends the process
                log.warning("Redis pub/sub: %s; retrying", exc)
            await asyncio.sleep(next(delays))

    async def stopped(self, reader: asyncio.Task[None]) -> None:
        """Ends ``reader`` (the task of :meth:`run`). Cancelling it is the way; but a
        cancellation that arrives as redis-py's read timeout fires can be lost in it
        (redis/redis-py#2028, #2551: seen once in the cluster tests, a stop waiting
        on a read forever), so the reader also stops at its next turn, and after
        STOP_WAIT its connection is closed under it."""
        self._stopping = True
        reader.cancel()
        done, _ = await asyncio.wait((reader,), timeout=STOP_WAIT)
        if not done:
            log.warning("Redis pub/sub reader did not stop when cancelled: closing it")
            await self._pubsub.aclose()
            reader.cancel()

    async def _read(self) -> None:
        outage: Iterator[float] | None = None  # the pauses of the reads failing now
        while not self._stopping:
            await self._send_commands()
            try:
                message = await self._pubsub.get_message(timeout=READ_WAIT)
            except (RedisError, OSError) as exc:
                log.warning("Redis pub/sub connection lost (%s); reconnecting", exc)
                outage = outage or RETRY.delays()
                await asyncio.sleep(next(outage))
                continue
            outage = None
            if message is None:
                continue
            # Reading the stream (a gap, a catch-up) is retried until Redis answers:
            # nothing after it may be delivered before it, and nothing else can be
            # read meanwhile anyway.
            handling = RETRY.delays()
            while True:
                try:
                    await self._handle(message)
                    break
                except ChimeraError as exc:
                    log.warning("Redis fan-out: %s; retrying", exc)
                    await asyncio.sleep(next(handling))

    async def _handle(self, message: dict[str, Any]) -> None:
        name = message["channel"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        kind = message["type"]
        if name == CONTROL_CHANNEL:
            if kind == "message":
                verb, _, rest = bytes(message["data"]).decode().partition(" ")
                if verb == "cancel":
                    self._cancel(rest)
                elif verb == "removed":  # retention, in whichever process swept
                    self._gone([str(job_id) for job_id in json.loads(rest)])
            return
        if not name.startswith(CHANNEL_PREFIX):
            return
        job_id = name[len(CHANNEL_PREFIX):]
        followed = self._followed.get(job_id)
        if followed is None:
            return
        if kind == "subscribe":
            # Subscribed (again): anything recorded while we were not is read now.
            if followed.last is None:
                followed.last = await self._store.last_seq(job_id)
                if not followed.ready.done():
                    followed.ready.set_result(None)
            else:
                await self._catch_up(job_id, followed, None)
        elif kind == "message" and followed.last is not None:
            # The frame's bytes as recorded; its seq read from its end.
            event = Event.from_frame(bytes(message["data"]), job_id)
            if event.seq <= followed.last:
                return
            if event.seq > followed.last + 1:
                await self._catch_up(job_id, followed, event.seq - 1)
                if event.seq != followed.last + 1:
                    return
            followed.last = event.seq
            self._deliver([event])

    async def _catch_up(self, job_id: str, followed: _Followed, until: int | None) -> None:
        """Reads the job's events after ``followed.last`` from its stream (up to
        ``until``, if given) and hands them on: the pub/sub messages that were lost."""
        assert followed.last is not None
        while until is None or followed.last < until:
            read = await self._store.read_events(job_id, followed.last, GAP_PAGE)
            if self._followed.get(job_id) is not followed:
                return  # unfollowed meanwhile
            page = [e for e in read if until is None or e.seq <= until]
            if (page and page[0].seq != followed.last + 1) or (not page and until is not None):
                # The stream lost them too (Redis lost its data): never a silent gap.
                log.error("job %s: events after seq %d are missing from its stream",
                          job_id, followed.last)
                self._gone([job_id])
                return
            if page:
                log.info("job %s: %d event(s) missed on pub/sub, read from the stream (%d..%d)",
                         job_id, len(page), page[0].seq, page[-1].seq)
                followed.last = page[-1].seq
                self._deliver(page)
            if len(read) < GAP_PAGE:
                return
