"""The shared store: jobs and their event logs in Redis, for several Chimera processes.

Keys (``chimera:`` prefix)::

    epoch             a random value made when the data set is new; each process
                      reads it at start and every write checks it, so a flushed or
                      lost data set is noticed instead of being silently refilled
    job:{id}          hash: record (the Job as created, JSON), state, seq (last seq),
                      update, end, node (the process running it), owner (token
                      sub), order, rid, and per team {team}:status, :model,
                      :error, :code, :thoughts (count): what events change
    thoughts:{id}:{team}  list of the team's thoughts (their events' data, JSON), so
                      the latest N are one
                      LRANGE (a stream has no index by team)
    draft:{id}:{team}  list of the team's code deltas while it writes (each batch's
                      as one ``[offset, text]``, JSON), spliced when read: its
                      code so far; deleted once its code came
    events:{id}       stream, entry id ``<seq>-0``, field ``f`` = the WebSocket frame:
                      Redis itself refuses a duplicate or out-of-order seq
    jobs              zset order -> job id (ListJobs, newest first)
    owner:{sub}       the same per token sub (ListJobs for an own-jobs token)
    running           set of running job ids (node-loss watchdog)
    ended             zset end time (ms) -> job id (retention)
    req:{owner}:{request_id}  job id: request-id idempotency, cluster-wide,
                      scoped to the caller (token sub)
    retired           set of job ids retention removed: never used again
    order             counter behind ``jobs``
    node:{node}       a process's lease (PX), renewed while it lives
    retention         the retention sweeper's lock (one sweeper at a time)

Channels: ``chimera:ch:{id}`` carries each event's frame as it is recorded (the
same Lua call records and publishes it); ``chimera:control`` carries cancels.

Every job write is one Lua script (atomic; one round trip), and a batch of
jobs' writes is one pipeline: the group commit. An append writes the events and
the few fields they change (:func:`chimera.job.changes`), never the whole job.
An append is refused unless the epoch still matches, the job still exists,
this process still runs it, and its first seq follows the recorded one;
refused jobs are reported with :class:`chimera.errors.EventsRejected`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from chimera.backoff import Backoff
from chimera.defaults import DEFAULT_REDIS_WRITE_TIMEOUT
from chimera.errors import (
    ChimeraError,
    ConfigError,
    EventsRejected,
    StorageFull,
    StorageUnavailable,
    Unavailable,
)
from chimera.events import (
    Event,
    EventType,
    JobState,
    TeamName,
    TeamStatus,
    check_utf8,
    iso_timestamp,
    parse_timestamp,
    splice,
)
from chimera.job import LATEST_THOUGHTS, Job, changes, thought_of
from chimera.store.base import id_taken, not_utf8

log = logging.getLogger(__name__)

P = "chimera:"
EPOCH = P + "epoch"
JOBS = P + "jobs"
RUNNING = P + "running"
ENDED = P + "ended"
ORDER = P + "order"
RETIRED = P + "retired"
RETENTION_LOCK = P + "retention"
CONTROL_CHANNEL = P + "control"
PASSWORD_ENV = "REDISCLI_AUTH"
WRITE_RETRY = Backoff(first=0.05, cap=1.0)  # before a write is sent again
MAX_CONNECTIONS = 32  # per process (pub/sub takes one more)
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)
# Answers of a Redis that is up but cannot take writes for now (out of memory under
# noeviction, a replica after a failover, busy with a script or loading): a write is
# tried again within the write timeout, as for an unreachable Redis.
CANNOT_WRITE = (OutOfMemoryError, ReadOnlyError)
OUT_OF_MEMORY = "Redis is out of memory"
READ_ONLY = "Redis is read-only (a replica, e.g. after a failover)"
# What a refusal of _APPEND means, in words: these reach subscribers (close reasons)
# and, for a job closed later, its teams' errors; the script's own words never do.
REFUSALS = {
    "epoch": "Redis lost its data",
    "gone": "Redis lost its data",
    "owner": "another node took the job over (this one was cut off from Redis)",
    "seq": "its events are out of order with those Redis holds",
}


def cannot_write(exc: BaseException) -> str | None:
    """Why Redis cannot take writes just now (in words), if ``exc`` says so."""
    if isinstance(exc, OutOfMemoryError):
        return OUT_OF_MEMORY
    if isinstance(exc, ReadOnlyError):
        return READ_ONLY
    if isinstance(exc, ResponseError) and str(exc).startswith(("BUSY", "MASTERDOWN", "LOADING")):
        return f"Redis is busy ({str(exc).split(' ', 1)[0]})"
    return None


def job_key(job_id: str) -> str:
    return f"{P}job:{job_id}"


def stream_key(job_id: str) -> str:
    return f"{P}events:{job_id}"


def owner_key(owner: str) -> str:
    return f"{P}owner:{owner}"


def request_key(owner: str, request_id: str) -> str:
    # JSON: no owner/request-id pair can collide with another.
    return P + "req:" + json.dumps([owner, request_id], ensure_ascii=False)


def password_from_env(url: str) -> dict[str, Any]:
    """``password=`` for a Redis client of ``url``: ``REDISCLI_AUTH`` (as redis-cli
    reads it) when the URL carries none."""
    if urlsplit(url).password is None and os.environ.get(PASSWORD_ENV):
        return {"password": os.environ[PASSWORD_ENV]}
    return {}


def lease_key(node: str) -> str:
    return f"{P}node:{node}"


def thoughts_key(job_id: str, team: TeamName) -> str:
    return f"{P}thoughts:{job_id}:{team.value}"


def draft_key(job_id: str, team: TeamName) -> str:
    return f"{P}draft:{job_id}:{team.value}"


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
  if existing and redis.call('EXISTS', ARGV[7] .. existing) == 1 then
    return {'repeat', existing}
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
if redis.call('SISMEMBER', KEYS[8], ARGV[2]) == 1 then return {'exists'} end
local n = redis.call('INCR', KEYS[6])
redis.call('HSET', KEYS[1], 'record', ARGV[3], 'state', 'running', 'seq', 0,
           'node', ARGV[5], 'owner', ARGV[4], 'order', n, 'rid', ARGV[8])
redis.call('ZADD', KEYS[2], n, ARGV[2])
redis.call('ZADD', KEYS[3], n, ARGV[2])
redis.call('SADD', KEYS[4], ARGV[2])
if ARGV[6] ~= '' then redis.call('SET', KEYS[5], ARGV[2]) end
return {'created'}
"""

# ARGV: epoch, node, first seq, changed fields (JSON object), counts to add (JSON
# object), thoughts (JSON object team -> list), end score ('' unless it ended),
# channel, job id, thoughts key prefix, drafts (JSON object key -> delta to push,
# or '' to delete the key), then the frames.
_APPEND = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 'epoch' end
local h = redis.call('HMGET', KEYS[1], 'node', 'seq')
if not h[1] then return 'gone' end
if h[1] ~= ARGV[2] then return 'owner' end
local first = tonumber(ARGV[3])
if tonumber(h[2]) ~= first - 1 then
  -- A retry of a write that did reach Redis (the connection dropped before the
  -- answer came back): already recorded, so it succeeded.
  if tonumber(h[2]) == first + #ARGV - 12 then
    local e = redis.call('XRANGE', KEYS[2], first .. '-0', first .. '-0')
    if e[1] and e[1][2][2] == ARGV[12] then return 'ok' end
  end
  return 'seq'
end
for i = 12, #ARGV do
  redis.call('XADD', KEYS[2], (first + i - 12) .. '-0', 'f', ARGV[i])
end
for k, v in pairs(cjson.decode(ARGV[4])) do redis.call('HSET', KEYS[1], k, v) end
for k, v in pairs(cjson.decode(ARGV[5])) do redis.call('HINCRBY', KEYS[1], k, v) end
for team, list in pairs(cjson.decode(ARGV[6])) do
  for _, t in ipairs(list) do redis.call('RPUSH', ARGV[10] .. team, t) end
end
for key, delta in pairs(cjson.decode(ARGV[11])) do
  if delta == '' then redis.call('DEL', key) else redis.call('RPUSH', key, delta) end
end
if ARGV[7] ~= '' then
  redis.call('SREM', KEYS[4], ARGV[9])
  redis.call('ZADD', KEYS[5], ARGV[7], ARGV[9])
end
for i = 12, #ARGV do redis.call('PUBLISH', ARGV[8], ARGV[i]) end
return 'ok'
"""

# Takes over a running job of a node judged lost (ARGV[4]), in one atomic step: only
# under the current epoch, only while the job is still running, still that node's,
# and that node's lease still absent. Exactly one survivor gets 1; a finished job is
# never re-opened, a job never taken twice.
_CLAIM = """
if redis.call('GET', KEYS[3]) ~= ARGV[5] then return 0 end
local h = redis.call('HMGET', KEYS[1], 'node', 'state')
if not h[1] or h[2] ~= 'running' then
  redis.call('SREM', KEYS[2], ARGV[3])
  return 0
end
if h[1] ~= ARGV[4] or h[1] == ARGV[2] then return 0 end
if redis.call('EXISTS', ARGV[1] .. h[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'node', ARGV[2])
return 1
"""

# A page of a job's events and the data set's epoch, atomically. Flagged no-writes:
# it runs while writes cannot (out of memory, CLIENT PAUSE WRITE, a replica), where a
# MULTI of the same two reads is refused under out of memory.
_READ = """#!lua flags=no-writes
return {redis.call('GET', KEYS[2]), redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])}
"""

# The nodes that run running jobs and hold no lease: candidates for the judgement
# (chimera.cluster.liveness); reading them changes nothing.
_LAPSED = """
local nodes = {}
local seen = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local node = redis.call('HGET', ARGV[1] .. 'job:' .. id, 'node')
  if node and not seen[node] then
    seen[node] = true
    if redis.call('EXISTS', ARGV[1] .. 'node:' .. node) == 0 then
      table.insert(nodes, node)
    end
  end
end
return nodes
"""

_REMOVE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do
  local h = redis.call('HMGET', ARGV[3] .. 'job:' .. id, 'owner', 'rid')
  redis.call('SADD', ARGV[3] .. 'retired', id)
  redis.call('DEL', ARGV[3] .. 'job:' .. id, ARGV[3] .. 'events:' .. id)
  for i = 4, #ARGV do
    redis.call('DEL', ARGV[3] .. 'thoughts:' .. id .. ':' .. ARGV[i],
               ARGV[3] .. 'draft:' .. id .. ':' .. ARGV[i])
  end
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  if h[1] then redis.call('ZREM', ARGV[3] .. 'owner:' .. h[1], id) end
  if h[2] and h[2] ~= '' then redis.call('DEL', h[2]) end
end
-- Every process's readers of these jobs are told at once (chimera.cluster.fanout).
if #ids > 0 then redis.call('PUBLISH', ARGV[3] .. 'control', 'removed ' .. cjson.encode(ids)) end
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
        self,
        url: str,
        *,
        node: str | None = None,
        write_timeout: float = DEFAULT_REDIS_WRITE_TIMEOUT,
    ) -> None:
        self.url = url
        self.node = node or secrets.token_hex(6)
        self.write_timeout = write_timeout
        settings: dict[str, Any] = {
            "socket_connect_timeout": 2, "socket_timeout": 5, "health_check_interval": 10,
            **password_from_env(url),
        }
        try:
            # Blocking: a burst of reads (1,000 subscribers reading history at once)
            # waits for a free connection instead of failing with "Too many connections".
            pool = aioredis.BlockingConnectionPool.from_url(
                url, max_connections=MAX_CONNECTIONS, timeout=None,
                # A pooled connection Redis dropped (it restarted) fails its next
                # command: that command is sent once more on a new connection rather
                # than failing a caller while Redis is up. A resent write that had
                # reached Redis answers as a caller's own retry would: _APPEND
                # recognises it; _CREATE returns the job for its request_id, or
                # AlreadyExists without one.
                retry=Retry(
                    ExponentialWithJitterBackoff(cap=WRITE_RETRY.cap, base=WRITE_RETRY.first), 1
                ),
                retry_on_error=[RedisConnectionError],
                **settings,
            )
            self.client: aioredis.Redis = aioredis.Redis(connection_pool=pool)
            # Pub/sub has a connection of its own, without that resend: RedisFanout
            # re-connects it itself, then reads what it missed meanwhile from the streams.
            self._listening = aioredis.Redis.from_url(url, **settings)
        except ValueError as exc:
            raise ConfigError(f"--redis {safe_url(url)!r} is not a Redis URL: {exc}") from exc
        self.epoch = ""
        # Set when a write found the data set lost (and refreshed the epoch itself);
        # cleared by the membership check that tells every subscriber.
        self.data_lost = False
        # Jobs of this process whose events could not be written (Redis unreachable
        # past write_timeout): closed as failed once Redis answers again.
        self._stranded: set[str] = set()
        # Nodes judged lost by this process (see judge_lost); none until judged.
        self.lost_nodes: frozenset[str] = frozenset()
        self._create = self.client.register_script(_CREATE)
        self._append = self.client.register_script(_APPEND)
        self._claim = self.client.register_script(_CLAIM)
        self._lapsed = self.client.register_script(_LAPSED)
        self._read = self.client.register_script(_READ)
        self._remove = self.client.register_script(_REMOVE)

    async def open(self) -> None:
        """Pings Redis and reads the epoch; :class:`ConfigError` saying why it cannot.

        A password problem is told apart from an unreachable Redis (redis-py 8
        raises ``AuthenticationError``, a ``ConnectionError``, for both a missing
        and a wrong password: "HELLO must be called with the client already
        authenticated …", "invalid username-password pair …"); older servers and
        clients answer a missing one ``NOAUTH Authentication required``). The
        password itself is never shown.
        """
        try:
            await self.client.ping()
            await self.refresh_epoch()
        except (
            aioredis.AuthenticationError, aioredis.AuthenticationWrongNumberOfArgsError,
            aioredis.ResponseError,
        ) as exc:
            noauth = str(exc).startswith("NOAUTH") or "Authentication required" in str(exc)
            if isinstance(exc, aioredis.ResponseError) and not noauth:
                raise ConfigError(f"Redis at {safe_url(self.url)} refused us: {exc}") from exc
            if urlsplit(self.url).password is None and not password_from_env(self.url):
                raise ConfigError(
                    "Redis requires a password: put it in the URL or REDISCLI_AUTH "
                    f"(redis://:PASSWORD@HOST:PORT/DB; given: {safe_url(self.url)})"
                ) from exc
            raise ConfigError(
                f"Redis refused the password for {safe_url(self.url)} ({exc}): check the "
                "password in the URL or REDISCLI_AUTH"
            ) from exc
        except UNREACHABLE as exc:
            raise ConfigError(
                f"cannot reach Redis at {safe_url(self.url)}: {exc}. Start it, or fix "
                "--redis / CHIMERA_REDIS_URL"
            ) from exc
        except RedisError as exc:  # e.g. a wrong password
            raise ConfigError(f"Redis at {safe_url(self.url)} refused us: {exc}") from exc

    async def refresh_epoch(self) -> str:
        """Reads the data set's epoch, making one if the data set is new (or was lost).

        Read first and made only when missing: a Redis out of memory refuses the
        ``SET`` even when it would change nothing, and that must not look like an
        outage of the whole check. A change from the epoch known so far is noted
        (:meth:`take_data_lost`)."""
        async with _translated():
            epoch = await self.client.get(EPOCH)
            if epoch is None:
                await self.client.set(EPOCH, secrets.token_hex(8), nx=True)
                epoch = await self.client.get(EPOCH)
        self._note_epoch(_text(epoch))
        return self.epoch

    def _note_epoch(self, epoch: str) -> None:
        """``epoch`` is the data set's now; a change means Redis lost its data."""
        if self.epoch and epoch != self.epoch:
            log.error("Redis lost its data (epoch %s, now %s): history before now is gone",
                      self.epoch, epoch)
            self.data_lost = True
        self.epoch = epoch

    def take_data_lost(self) -> bool:
        """Whether Redis lost its data since the last call (whoever noticed it)."""
        lost, self.data_lost = self.data_lost, False
        return lost

    def pubsub(self) -> PubSub:
        """A pub/sub connection (for :class:`chimera.cluster.fanout.RedisFanout`)."""
        return self._listening.pubsub()

    async def close(self) -> None:
        await self.client.aclose()
        await self._listening.aclose()

    # -- jobs -----------------------------------------------------------------------------

    # A job's opening events go through append, as every other event: the create
    # script does not write events.
    records_opening = False

    async def create_job(self, job: Job, opening: Sequence[Event] = ()) -> tuple[Job, bool]:
        if opening:
            raise ValueError("RedisStore records no opening events (records_opening)")
        for _ in range(2):
            keys = [
                job_key(job.job_id), JOBS, owner_key(job.owner), RUNNING,
                request_key(job.owner, job.request_id) if job.request_id else P + "req:",
                ORDER, EPOCH, RETIRED,
            ]
            args = [self.epoch, job.job_id, job.to_json(), job.owner, self.node,
                    job.request_id, P + "job:",
                    request_key(job.owner, job.request_id) if job.request_id else ""]
            async with _translated():
                result = await self._create(keys=keys, args=args)
            verdict = _text(result[0])
            if verdict == "epoch":  # the data set was lost: new jobs start a new epoch
                await self.refresh_epoch()
                continue
            if verdict == "repeat":
                existing = await self.get_job(_text(result[1]), LATEST_THOUGHTS)
                if existing is None:  # removed in between: try again, as new
                    continue
                return existing, False
            if verdict == "exists":
                raise id_taken(job.job_id)
            return job, True
        raise Unavailable("Redis keeps changing its epoch: try again")

    async def get_job(self, job_id: str, thoughts: int | None = None) -> Job | None:
        async with _translated():
            fields: dict[bytes, bytes] = await self.client.hgetall(
                job_key(job_id)
            )  # type: ignore[assignment]
            if not fields:
                return None
            return await self._job(job_id, fields, thoughts)

    async def _job(
        self, job_id: str, fields: dict[bytes, bytes], thoughts: int | None
    ) -> Job | None:
        """The job from its hash (``fields``), with the latest ``thoughts`` thoughts of
        each team (all when ``None``)."""
        if b"record" not in fields:
            return None
        job = Job.from_json(_text(fields[b"record"]))
        job.state = JobState(_text(fields[b"state"]))
        job.last_sequence = int(fields[b"seq"])
        if b"update" in fields:
            job.update_time = parse_timestamp(_text(fields[b"update"]))
        if fields.get(b"end"):
            job.end_time = parse_timestamp(_text(fields[b"end"]))
        for name, run in job.teams.items():
            get = fields.get
            team = name.value
            if (status := get(f"{team}:status".encode())) is not None:
                run.status = TeamStatus(_text(status))
            if (model := get(f"{team}:model".encode())) is not None:
                run.model = _text(model)
            if (error := get(f"{team}:error".encode())) is not None:
                run.error = _text(error)
            if (code := get(f"{team}:code".encode())) is not None:
                run.code, run.language, run.token_count = json.loads(code)
                run.code_so_far = run.code
            else:
                for delta in await self.client.lrange(draft_key(job_id, name), 0, -1):
                    offset, text = json.loads(delta)
                    run.code_so_far = splice(run.code_so_far, offset, text)
            run.thought_count = int(get(f"{team}:thoughts".encode(), 0))
            if thoughts != 0:
                start = 0 if thoughts is None else -thoughts
                texts = await self.client.lrange(thoughts_key(job_id, name), start, -1)
                run.thoughts = [thought_of(json.loads(t)) for t in texts]
        return job

    async def list_jobs(
        self, limit: int, before: int | None, owner: str | None = None,
        thoughts: int | None = None,
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
                    pipe.hgetall(job_key(_text(job_id)))
                hashes = await pipe.execute()
            jobs = []
            for (job_id, _), fields in zip(rows, hashes, strict=True):
                job = await self._job(_text(job_id), fields, thoughts) if fields else None
                if job is not None:
                    jobs.append(job)
        cursor = int(rows[-1][1]) if more and rows else None
        return jobs, cursor

    async def append(self, events: Sequence[Event]) -> None:
        by_job: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            by_job[event.job_id].append(event)
        calls = []
        # Frames are UTF-8 bytes, sent as they are; Redis does not check them, so
        # this does: a job whose frame is not UTF-8 is refused alone.
        refused: dict[str, str] = {}
        for change in changes(events):
            batch = by_job[change.job_id]
            try:
                for event in batch:
                    check_utf8(event.frame)
            except UnicodeError as exc:
                refused[change.job_id] = str(not_utf8(exc))
                continue
            fields: dict[str, str | int] = {
                "seq": change.last_sequence, "update": iso_timestamp(change.update_time),
            }
            counts: dict[str, int] = {}
            drafts: dict[str, str] = {}
            end = ""
            if change.state is not None:
                fields["state"] = change.state.value
                if change.end_time is not None:
                    fields["end"] = iso_timestamp(change.end_time)
                    end = str(_ms(change.end_time))
            for name, team in change.teams.items():
                if team.status is not None:
                    fields[f"{name.value}:status"] = team.status.value
                if team.model is not None:
                    fields[f"{name.value}:model"] = team.model
                if team.error is not None:
                    fields[f"{name.value}:error"] = team.error
                if team.code is not None:
                    fields[f"{name.value}:code"] = json.dumps(list(team.code))
                if team.thoughts_added:
                    counts[f"{name.value}:thoughts"] = team.thoughts_added
                if team.code is not None:
                    drafts[draft_key(change.job_id, name)] = ""  # the code holds it now
                elif team.draft is not None:
                    drafts[draft_key(change.job_id, name)] = json.dumps(list(team.draft))
            thoughts: dict[str, list[str]] = defaultdict(list)
            for event in batch:
                if event.type is EventType.THOUGHT_ADDED and event.team is not None:
                    thoughts[event.team.value].append(json.dumps(dict(event.data)))
            calls.append((change.job_id, [
                job_key(change.job_id), stream_key(change.job_id), EPOCH, RUNNING, ENDED,
            ], [
                self.epoch, self.node, batch[0].seq, json.dumps(fields), json.dumps(counts),
                json.dumps(thoughts), end, channel(change.job_id), change.job_id,
                f"{P}thoughts:{change.job_id}:", json.dumps(drafts), *(e.frame for e in batch),
            ]))
        results = await self._write(calls) if calls else []
        # A call's own error (the pipeline goes on past it) refuses only its job, which
        # is still this process's: closed as failed, saying why, by the next recovery.
        for (job_id, _, _), r in zip(calls, results, strict=True):
            if isinstance(r, BaseException):
                refused[job_id] = f"events could not be recorded: Redis refused them ({r})"
                self._stranded.add(job_id)
            elif _text(r) != "ok":
                refused[job_id] = _text(r)
        if refused:
            if "epoch" in refused.values():
                # Noted as lost by the refresh: every node's check tells its subscribers.
                with contextlib.suppress(Unavailable):
                    await self.refresh_epoch()
            # "epoch" and "gone" (the job's keys are missing while it runs): the data
            # set lost them, history included.
            lost = frozenset(j for j, r in refused.items() if r in ("epoch", "gone"))
            raise EventsRejected(
                {j: REFUSALS.get(r, r) for j, r in refused.items()}, lost
            )

    async def _write(self, calls: list[tuple[str, list[str], list[Any]]]) -> list[Any]:
        """One pipeline of append scripts, each call's answer in order.

        While Redis cannot take them (unreachable, paused past the socket timeout,
        out of memory, a read-only replica) the calls not yet answered are sent
        again, with a growing pause, for at most ``write_timeout`` seconds; then
        each of them is refused, saying why in words, and its job is stranded
        (closed as failed, with that reason, once Redis takes writes again). A call
        sent again that had reached Redis is recognised by the script ("ok").
        """
        deadline = time.monotonic() + self.write_timeout
        delays = WRITE_RETRY.delays()
        retries = 0
        results: list[Any] = [None] * len(calls)
        waiting = list(range(len(calls)))
        while True:
            why = ""
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    for i in waiting:
                        _, keys, args = calls[i]
                        await self._append(keys=keys, args=args, client=pipe)
                    answers = await pipe.execute(raise_on_error=False)
            except UNREACHABLE as exc:
                why = f"Redis unreachable for {self.write_timeout:g} s"
                error: BaseException = exc
            except RedisError as exc:  # the whole pipeline refused (e.g. out of memory)
                if (why := cannot_write(exc) or "") == "":
                    raise Unavailable(f"the store (Redis) failed: {exc}") from exc
                error = exc
            else:
                left = []
                for i, answer in zip(waiting, answers, strict=True):
                    if isinstance(answer, BaseException) and (reason := cannot_write(answer)):
                        why, error = reason, answer
                        left.append(i)
                    else:
                        results[i] = answer
                waiting = left
                if not waiting:
                    return results
            delay, retries = next(delays), retries + 1
            if time.monotonic() + delay > deadline:
                # Shown to clients: the exception's text (addresses) stays in the log.
                reason = f"events could not be recorded: {why}"
                log.error("%s: %s", reason, error)
                stranded = [calls[i][0] for i in waiting]
                self._stranded.update(stranded)
                for i in waiting:
                    results[i] = reason
                return results
            if retries == 1:  # once per outage of this write, not per try
                log.warning("Redis cannot take events just now (%s); retrying for up to "
                            "%g s: %s", why, self.write_timeout, error)
            await asyncio.sleep(delay)

    async def read_events(self, job_id: str, after_seq: int, limit: int) -> list[Event]:
        """The events, read together with the data set's epoch (one script): a read
        that finds the epoch changed notes the loss before returning, so the events
        returned always belong to :attr:`epoch`."""
        async with _translated():
            epoch, rows = await self._read(
                keys=[stream_key(job_id), EPOCH], args=[f"{after_seq + 1}-0", limit]
            )
        if epoch is not None:
            self._note_epoch(_text(epoch))
        # Entry id ``<seq>-0``; the frame's bytes as recorded, parsed only as far
        # as replay needs (Event.from_frame).
        return [
            Event.from_frame(bytes(fields[1]), job_id, int(bytes(entry).partition(b"-")[0]))
            for entry, fields in rows
        ]

    async def last_seq(self, job_id: str) -> int:
        """The job's last recorded seq (0 for none, or no such job)."""
        async with _translated():
            seq = await self.client.hget(job_key(job_id), "seq")
        return int(seq) if seq is not None else 0

    async def unfinished_jobs(self) -> list[Job]:
        """This process's own jobs whose events it could not write (they were
        stopped), and the running jobs of the nodes judged lost
        (:meth:`judge_lost`), each taken over by this process: exactly one process
        gets each such job, and only while it is still running and still the lost
        node's under the current epoch."""
        async with _translated():
            claimed = []
            for job_id in list(self._stranded):
                node = await self.client.hget(job_key(job_id), "node")
                job = await self.get_job(job_id, 0)
                self._stranded.discard(job_id)
                if node is not None and _text(node) == self.node and job and not job.finished:
                    claimed.append(job)
            if not self.lost_nodes:
                return claimed
            running = [_text(j) for j in await self.client.smembers(RUNNING)]
            for job_id in running:
                node = await self.client.hget(job_key(job_id), "node")
                lost = _text(node) if node is not None else ""
                if lost not in self.lost_nodes:
                    continue
                if await self._claim(
                    keys=[job_key(job_id), RUNNING, EPOCH],
                    args=[P + "node:", self.node, job_id, lost, self.epoch],
                ):
                    log.warning("took over job %s of node %s (lost)", job_id, lost)
                    job = await self.get_job(job_id, 0)
                    if job is not None:
                        claimed.append(job)
        return claimed

    def judge_lost(self, nodes: frozenset[str]) -> None:
        """The nodes this process has judged lost (chimera.cluster.liveness): only
        their running jobs are taken over by :meth:`unfinished_jobs`."""
        self.lost_nodes = nodes

    async def lapsed_nodes(self) -> set[str]:
        """Nodes that run jobs recorded as running and hold no lease just now."""
        async with _translated():
            nodes = await self._lapsed(keys=[RUNNING], args=[P])
        return {_text(n) for n in nodes} - {self.node}

    async def remove_finished_before(self, cutoff: datetime, limit: int) -> list[str]:
        """Removes old finished jobs, if this process holds the retention lock (one
        sweeper in the cluster at a time; the lock lapses if its holder dies)."""
        async with _translated():
            if (
                not await self.client.set(RETENTION_LOCK, self.node, nx=True, px=30_000)
                and _text(await self.client.get(RETENTION_LOCK)) != self.node
            ):
                return []
            ids = await self._remove(
                keys=[ENDED, JOBS], args=[_ms(cutoff), limit, P, *(t.value for t in TeamName)]
            )
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
    """Redis errors reach callers as Chimera's: unreachable (or paused past the
    socket timeout) and read-only are :class:`Unavailable`, out of memory is
    :class:`StorageFull` (RESOURCE_EXHAUSTED: no room for now), anything else
    :class:`Unavailable` saying what Redis answered."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: object) -> None:
        if exc is None or isinstance(exc, ChimeraError):
            return
        if isinstance(exc, UNREACHABLE):
            raise Unavailable("the store (Redis) is unreachable: try again shortly") from exc
        if isinstance(exc, OutOfMemoryError):
            raise StorageFull(f"{OUT_OF_MEMORY}: try again once it has room") from exc
        if isinstance(exc, RedisError):
            why = cannot_write(exc)
            if why is not None:
                raise StorageUnavailable(f"{why}: try again shortly") from exc
            raise Unavailable(f"the store (Redis) failed: {exc}") from exc
