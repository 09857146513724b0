"""The shared store: jobs and their event logs in Redis, for several Chimera processes.

Keys (``chimera:`` prefix)::

    epoch             a random value made when the data set is new; each process
                      reads it at start and every write checks it, so a flushed or
                      lost data set is noticed instead of being silently refilled
    job:{id}          hash: snapshot (Job JSON), state, seq (last seq), node (the
                      process running it), owner (token sub), order, rid
    events:{id}       stream, entry id ``<seq>-0``, field ``f`` = the WebSocket frame:
                      Redis itself refuses a duplicate or out-of-order seq
    jobs              zset order -> job id (ListJobs, newest first)
    owner:{sub}       the same per token sub (ListJobs for an own-jobs token)
    running           set of running job ids (node-loss watchdog)
    ended             zset end time (ms) -> job id (retention)
    req:{request_id}  job id: request-id idempotency, cluster-wide
    order             counter behind ``jobs``
    node:{node}       a process's lease (PX), renewed while it lives
    retention         the retention sweeper's lock (one sweeper at a time)

Channels: ``chimera:ch:{id}`` carries each event's frame as it is recorded (the
same Lua call records and publishes it); ``chimera:control`` carries cancels.

Every job write is one Lua script (atomic; one round trip), and a batch of
jobs' writes is one pipeline: the group commit. An append is refused unless the
epoch still matches, the job still exists, this process still runs it, and its
first seq follows the recorded one; refused jobs are reported with
:class:`chimera.errors.EventsRejected`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chimera.errors import AlreadyExists, ConfigError, EventsRejected, Unavailable
from chimera.events import Event, JobState
from chimera.job import Job

log = logging.getLogger(__name__)

P = "chimera:"
EPOCH = P + "epoch"
JOBS = P + "jobs"
RUNNING = P + "running"
ENDED = P + "ended"
ORDER = P + "order"
RETENTION_LOCK = P + "retention"
CONTROL_CHANNEL = P + "control"
DEFAULT_WRITE_TIMEOUT = 10.0
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def job_key(job_id: str) -> str:
    return f"{P}job:{job_id}"


def stream_key(job_id: str) -> str:
    return f"{P}events:{job_id}"


def owner_key(owner: str) -> str:
    return f"{P}owner:{owner}"


def request_key(request_id: str) -> str:
    return f"{P}req:{request_id}"


def lease_key(node: str) -> str:
    return f"{P}node:{node}"


def channel(job_id: str) -> str:
    return f"{P}ch:{job_id}"


def safe_url(url: str) -> str:
    """``url`` without its password, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


_CREATE = """
if redis.call('GET', KEYS[7]) ~= ARGV[1] then return {'epoch'} end
if ARGV[6] ~= '' then
  local existing = redis.call('GET', KEYS[5])
  if existing then
    local snap = redis.call('HGET', ARGV[7] .. existing, 'snapshot')
    if snap then return {'repeat', snap} end
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
local n = redis.call('INCR', KEYS[6])
redis.call('HSET', KEYS[1], 'snapshot', ARGV[3], 'state', 'running', 'seq', 0,
           'node', ARGV[5], 'owner', ARGV[4], 'order', n, 'rid', ARGV[6])
redis.call('ZADD', KEYS[2], n, ARGV[2])
redis.call('ZADD', KEYS[3], n, ARGV[2])
redis.call('SADD', KEYS[4], ARGV[2])
if ARGV[6] ~= '' then redis.call('SET', KEYS[5], ARGV[2]) end
return {'created'}
"""

_APPEND = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 'epoch' end
local h = redis.call('HMGET', KEYS[1], 'node', 'seq')
if not h[1] then return 'gone' end
if h[1] ~= ARGV[2] then return 'owner' end
local first = tonumber(ARGV[3])
if tonumber(h[2]) ~= first - 1 then return 'seq' end
for i = 9, #ARGV do
  redis.call('XADD', KEYS[2], (first + i - 9) .. '-0', 'f', ARGV[i])
end
redis.call('HSET', KEYS[1], 'snapshot', ARGV[4], 'state', ARGV[5], 'seq', first + #ARGV - 9)
if ARGV[6] ~= '' then
  redis.call('SREM', KEYS[4], ARGV[8])
  redis.call('ZADD', KEYS[5], ARGV[6], ARGV[8])
end
for i = 9, #ARGV do redis.call('PUBLISH', ARGV[7], ARGV[i]) end
return 'ok'
"""

# Takes over a running job whose process's lease has expired: exactly one
# survivor gets its snapshot back (the others see the job already taken).
_CLAIM = """
local h = redis.call('HMGET', KEYS[1], 'node', 'state', 'snapshot')
if not h[1] or h[2] ~= 'running' then
  redis.call('SREM', KEYS[2], ARGV[3])
  return false
end
if h[1] == ARGV[2] then return false end
if redis.call('EXISTS', ARGV[1] .. h[1]) == 1 then return false end
redis.call('HSET', KEYS[1], 'node', ARGV[2])
return h[3]
"""

_REMOVE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do
  local h = redis.call('HMGET', ARGV[3] .. 'job:' .. id, 'owner', 'rid')
  redis.call('DEL', ARGV[3] .. 'job:' .. id, ARGV[3] .. 'events:' .. id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  if h[1] then redis.call('ZREM', ARGV[3] .. 'owner:' .. h[1], id) end
  if h[2] and h[2] ~= '' then redis.call('DEL', ARGV[3] .. 'req:' .. h[2]) end
end
return ids
"""


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisStore:
    """:class:`chimera.store.base.Store` on Redis, shared by every process of a cluster.

    ``node`` names this process: the jobs it creates are recorded as running
    here, and it may append only to those (and to jobs it takes over).
    """

    def __init__(
        self, url: str, *, node: str | None = None, write_timeout: float = DEFAULT_WRITE_TIMEOUT
    ) -> None:
        self.url = url
        self.node = node or secrets.token_hex(6)
        self.write_timeout = write_timeout
        try:
            self.client: aioredis.Redis = aioredis.Redis.from_url(
                url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=10
            )
        except ValueError as exc:
            raise ConfigError(f"--redis {safe_url(url)!r} is not a Redis URL: {exc}") from exc
        self.epoch = ""
        self._create = self.client.register_script(_CREATE)
        self._append = self.client.register_script(_APPEND)
        self._claim = self.client.register_script(_CLAIM)
        self._remove = self.client.register_script(_REMOVE)

    async def open(self) -> None:
        try:
            await self.client.ping()
            await self.refresh_epoch()
        except UNREACHABLE as exc:
            raise ConfigError(
                f"cannot reach Redis at {safe_url(self.url)}: {exc}. Start it, or fix "
                "--redis / CHIMERA_REDIS_URL"
            ) from exc
        except RedisError as exc:  # e.g. a wrong password
            raise ConfigError(f"Redis at {safe_url(self.url)} refused us: {exc}") from exc

    async def refresh_epoch(self) -> str:
        """Reads the data set's epoch, making one if the data set is new (or was lost)."""
        await self.client.set(EPOCH, secrets.token_hex(8), nx=True)
        self.epoch = _text(await self.client.get(EPOCH))
        return self.epoch

    async def close(self) -> None:
        await self.client.aclose()

    # -- jobs -----------------------------------------------------------------------------

    async def create_job(self, job: Job) -> tuple[Job, bool]:
        for _ in range(2):
            keys = [
                job_key(job.job_id), JOBS, owner_key(job.owner), RUNNING,
                request_key(job.request_id) if job.request_id else P + "req:",
                ORDER, EPOCH,
            ]
            args = [self.epoch, job.job_id, job.to_json(), job.owner, self.node,
                    job.request_id, P + "job:"]
            async with _translated():
                result = await self._create(keys=keys, args=args)
            verdict = _text(result[0])
            if verdict == "epoch":  # the data set was lost: new jobs start a new epoch
                log.error("Redis lost its data (epoch changed); starting a new epoch")
                await self.refresh_epoch()
                continue
            if verdict == "repeat":
                return Job.from_json(_text(result[1])), False
            if verdict == "exists":
                raise AlreadyExists(
                    f"job_id {job.job_id!r} is already used; choose another or leave it empty"
                )
            return job, True
        raise Unavailable("Redis keeps changing its epoch: try again")

    async def get_job(self, job_id: str) -> Job | None:
        async with _translated():
            snapshot = await self.client.hget(job_key(job_id), "snapshot")
        return Job.from_json(_text(snapshot)) if snapshot is not None else None

    async def list_jobs(
        self, limit: int, before: int | None, owner: str | None = None
    ) -> tuple[list[Job], int | None]:
        key = JOBS if owner is None else owner_key(owner)
        top = f"({before}" if before is not None else "+inf"
        async with _translated():
            rows: list[tuple[bytes, float]] = await self.client.zrevrangebyscore(
                key, top, "-inf", start=0, num=limit + 1, withscores=True
            )  # type: ignore[assignment]
            more = len(rows) > limit
            rows = rows[:limit]
            async with self.client.pipeline(transaction=False) as pipe:
                for job_id, _ in rows:
                    pipe.hget(job_key(_text(job_id)), "snapshot")
                snapshots = await pipe.execute()
        jobs = [Job.from_json(_text(s)) for s in snapshots if s is not None]
        cursor = int(rows[-1][1]) if more and rows else None
        return jobs, cursor

    async def append(self, events: Sequence[Event], snapshots: Sequence[Job]) -> None:
        by_job: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            by_job[event.job_id].append(event)
        calls = []
        for job in snapshots:
            batch = by_job.get(job.job_id)
            if not batch:
                continue
            end = _ms(job.end_time) if job.end_time is not None and job.finished else ""
            calls.append((job.job_id, [
                job_key(job.job_id), stream_key(job.job_id), EPOCH, RUNNING, ENDED,
            ], [
                self.epoch, self.node, batch[0].seq, job.to_json(), job.state.value, end,
                channel(job.job_id), job.job_id, *(e.frame for e in batch),
            ]))
        if not calls:
            return
        results = await self._write(calls)
        refused = {job_id: _text(r) for (job_id, _, _), r in zip(calls, results, strict=True)
                   if _text(r) != "ok"}
        if refused:
            if "epoch" in refused.values():
                log.error("Redis lost its data (epoch changed): running jobs cannot go on")
                await self.refresh_epoch()
            raise EventsRejected(refused)

    async def _write(self, calls: list[tuple[str, list[str], list[Any]]]) -> list[Any]:
        """One pipeline of append scripts; retried while Redis is unreachable, for at
        most ``write_timeout`` seconds (then every job in it is refused)."""
        deadline = time.monotonic() + self.write_timeout
        delay = 0.05
        while True:
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    for _, keys, args in calls:
                        await self._append(keys=keys, args=args, client=pipe)
                    return list(await pipe.execute(raise_on_error=False))
            except UNREACHABLE as exc:
                if time.monotonic() + delay > deadline:
                    reason = (f"events could not be recorded: Redis unreachable for "
                              f"{self.write_timeout:g} s ({exc})")
                    raise EventsRejected({job_id: reason for job_id, _, _ in calls}) from exc
                log.warning("Redis unreachable while recording events; retrying: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def read_events(self, job_id: str, after_seq: int, limit: int) -> list[Event]:
        async with _translated():
            rows: list[tuple[bytes, dict[bytes, bytes]]] = await self.client.xrange(
                stream_key(job_id), f"{after_seq + 1}-0", "+", limit
            )  # type: ignore[assignment]
        return [Event.from_frame(_text(fields[b"f"])) for _, fields in rows]

    async def last_seq(self, job_id: str) -> int:
        """The job's last recorded seq (0 for none, or no such job)."""
        async with _translated():
            seq = await self.client.hget(job_key(job_id), "seq")
        return int(seq) if seq is not None else 0

    async def unfinished_jobs(self) -> list[Job]:
        """Running jobs whose process is gone (its lease expired), each taken over
        by this process: exactly one process gets each such job."""
        async with _translated():
            running = [_text(j) for j in await self.client.smembers(RUNNING)]
            claimed = []
            for job_id in running:
                snapshot = await self._claim(
                    keys=[job_key(job_id), RUNNING], args=[P + "node:", self.node, job_id]
                )
                if snapshot:
                    claimed.append(Job.from_json(_text(snapshot)))
        return claimed

    async def remove_finished_before(self, cutoff: datetime, limit: int) -> list[str]:
        """Removes old finished jobs, if this process holds the retention lock (one
        sweeper in the cluster at a time; the lock lapses if its holder dies)."""
        async with _translated():
            if (
                not await self.client.set(RETENTION_LOCK, self.node, nx=True, px=30_000)
                and _text(await self.client.get(RETENTION_LOCK)) != self.node
            ):
                return []
            ids = await self._remove(keys=[ENDED, JOBS], args=[_ms(cutoff), limit, P])
        return [_text(i) for i in ids]

    # -- the cluster's bookkeeping --------------------------------------------------------

    async def renew_lease(self, ttl: float) -> None:
        async with _translated():
            await self.client.set(lease_key(self.node), "1", px=int(ttl * 1000))

    async def drop_lease(self) -> None:
        async with _translated():
            await self.client.delete(lease_key(self.node))

    async def running_state(self, job_id: str) -> JobState | None:
        async with _translated():
            state = await self.client.hget(job_key(job_id), "state")
        return JobState(_text(state)) if state is not None else None


class _translated:
    """Redis being unreachable reaches callers as :class:`Unavailable`."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: object) -> None:
        if exc is not None and isinstance(exc, UNREACHABLE):
            raise Unavailable("the store (Redis) is unreachable: try again shortly") from exc
        if exc is not None and isinstance(exc, RedisError):
            raise Unavailable(f"the store (Redis) failed: {exc}") from exc
