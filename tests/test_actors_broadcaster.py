"""The broadcaster and its subscriptions, driven directly: no sockets, no SQLite.

In the manner of python-websockets' Sans-I/O tests (``tests/test_protocol.py``):
drafts go in through :meth:`Broadcaster.publish`, events come out of a
:class:`Subscription` (its queue, or a :class:`Listener` the test gives it), and
the store is :class:`tests.memory_store.MemoryStore`, a real in-memory store
whose writes a test can hold or fail. Nothing waits for time: each test waits
for the event it is about, and the whole file runs in well under a second
(``running`` bounds each test at 5 s so a broken broadcaster fails, not hangs).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from chimera.actors import broadcaster as broadcaster_module
from chimera.actors.broadcaster import MAX_BATCH, MAX_COMMIT, Broadcaster, Subscription
from chimera.errors import StorageFull, SubscriberTooSlow
from chimera.events import ALL_TEAMS, Draft, Event, JobState, TeamName, utc_now
from chimera.job import Job, TeamRun
from tests.doubles import RecordingListener
from tests.memory_store import MemoryStore

# More events per job than one batch (and than the inbox) holds: numbering,
# order and delivery are checked across batches and commits.
MANY = 3 * MAX_BATCH


@contextlib.asynccontextmanager
async def running(broadcaster: Broadcaster | None = None) -> AsyncIterator[Broadcaster]:
    """A broadcaster on a fresh :class:`MemoryStore`, run until the block ends."""
    if broadcaster is None:
        store = MemoryStore()
        await store.open()
        broadcaster = Broadcaster(store)
    async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
        tg.create_task(broadcaster.run(), name="broadcaster")
        try:
            yield broadcaster
        finally:
            await broadcaster.stop()


def store_of(broadcaster: Broadcaster) -> MemoryStore:
    store = broadcaster.store
    assert isinstance(store, MemoryStore)
    return store


async def open_jobs(broadcaster: Broadcaster, *job_ids: str) -> None:
    """Records the jobs (as the job manager does) and starts numbering their events."""
    for job_id in job_ids:
        now = utc_now()
        teams = {team: TeamRun(team) for team in ALL_TEAMS}
        job, _ = await broadcaster.store.create_job(Job(job_id, "a brief", teams, now, now))
        broadcaster.open_job(job)


def queued_and_direct(
    broadcaster: Broadcaster, job_id: str
) -> tuple[Subscription, RecordingListener]:
    """Two subscribers of ``job_id``: one read from its queue, and one whose events the
    broadcaster offers straight to its listener (the fast path's)."""
    queued = broadcaster.subscribe(job_id)
    direct = broadcaster.subscribe(job_id)
    direct.listener = listener = RecordingListener()
    return queued, listener


def thought(job_id: str, n: int) -> Draft:
    return Draft.thought(job_id, TeamName.ANTHROPIC, f"t{n:04}")


def final(job_id: str) -> Draft:
    return Draft.status(job_id, None, JobState.SUCCEEDED.value)


async def next_event(sub: Subscription) -> Event:
    """The next live event from the subscription's queue, waiting for it."""
    while (event := sub.next_nowait()) is None:
        await sub.wait()
    return event


async def collect(sub: Subscription) -> list[Event]:
    return [event async for event in sub]


async def drain(sub: Subscription, log: list[Event], max_bytes: int = 2000) -> None:
    """A consumer of the queue: takes what is queued a few events at a time into
    ``log`` until the final event (as a gateway's writer does)."""
    while not sub.done:
        batch = sub.take_nowait(max_bytes)
        if batch:
            log.extend(batch)
        else:
            await sub.wait()


def texts(events: list[Event]) -> list[str]:
    return [event.data["text"] for event in events if "text" in event.data]


async def test_each_job_is_numbered_1_2_3_without_gaps_when_jobs_interleave() -> None:
    async with running() as broadcaster:
        await open_jobs(broadcaster, "a", "b")
        subs = [broadcaster.subscribe("a"), broadcaster.subscribe("b")]
        readers = [asyncio.create_task(collect(sub)) for sub in subs]
        for n in range(MANY):
            await broadcaster.publish(thought("a", n))
            await broadcaster.publish(thought("b", n))
        await broadcaster.publish(final("a"))
        await broadcaster.publish(final("b"))
        got_a, got_b = [await reader for reader in readers]
    store = store_of(broadcaster)
    expected = list(range(1, MANY + 2))
    for job_id, got in (("a", got_a), ("b", got_b)):
        assert [e.job_id for e in got] == [job_id] * len(expected)
        assert [e.seq for e in got] == expected, job_id
        assert store.seqs(job_id) == expected, job_id
        assert got[-1].is_final
    # Not vacuous: the two jobs really shared batches (one commit holds both).
    assert any({job for job, _ in commit} == {"a", "b"} for commit in store.commits)
    assert len(store.commits) > 1


async def test_no_subscriber_or_listener_sees_an_event_before_the_store_recorded_it() -> None:
    store = MemoryStore()
    await store.open()
    store.hold = asyncio.Event()
    async with running(Broadcaster(store)) as broadcaster:
        await open_jobs(broadcaster, "j")
        queued, listener = queued_and_direct(broadcaster, "j")
        await broadcaster.publish(thought("j", 1))
        await store.appending.wait()  # the write is in flight, held
        assert store.seqs("j") == []
        assert queued.next_nowait() is None
        assert listener.offered == []
        store.hold.set()
        event = await next_event(queued)
        assert event.seq == 1 and store.seqs("j") == [1]
        assert listener.offered == [1]
        await broadcaster.publish(final("j"))
        assert (await next_event(queued)).is_final


async def test_an_event_whose_write_failed_is_seen_once_a_retry_recorded_it() -> None:
    store = MemoryStore()
    await store.open()
    store.fail = StorageFull("disk full")
    async with running(Broadcaster(store)) as broadcaster:
        await open_jobs(broadcaster, "j")
        queued, listener = queued_and_direct(broadcaster, "j")
        await broadcaster.publish(thought("j", 1))
        await store.failed.wait()
        assert broadcaster.storage_error is not None
        assert queued.next_nowait() is None and listener.offered == []
        store.fail = None  # room again: the broadcaster's retry records it
        event = await next_event(queued)
        assert event.seq == 1 and store.seqs("j") == [1] and listener.offered == [1]
        assert broadcaster.storage_error is None
        await broadcaster.publish(final("j"))
        assert (await next_event(queued)).is_final


async def test_events_of_a_job_arrive_in_publish_order_across_listener_and_queue() -> None:
    """The listener refuses every 7th event: that one and whatever follows it
    while it waits go through the queue, then the listener takes over again."""
    async with running() as broadcaster:
        await open_jobs(broadcaster, "a", "b")
        seen: dict[str, list[Event]] = {"a": [], "b": []}
        listeners = {}
        consumers = []
        for job_id in ("a", "b"):
            sub = broadcaster.subscribe(job_id)
            sub.listener = listeners[job_id] = RecordingListener(
                refuse=lambda seq: seq % 7 == 0, log=seen[job_id]
            )
            consumers.append(asyncio.create_task(drain(sub, seen[job_id])))
        for n in range(MANY):
            await broadcaster.publish(thought("a", n))
            await broadcaster.publish(thought("b", n))
        await broadcaster.publish(final("a"))
        await broadcaster.publish(final("b"))
        for consumer in consumers:
            await consumer
    published = [f"t{n:04}" for n in range(MANY)]
    for job_id, events in seen.items():
        assert [e.seq for e in events] == list(range(1, MANY + 2)), job_id
        assert texts(events) == published, job_id
        # Not vacuous: both paths carried events, and the queue carried more than
        # the refused ones (those that came in behind a refusal).
        direct = {e.seq for e in listeners[job_id].taken}
        via_queue = {e.seq for e in events} - direct
        refused = {seq for seq in via_queue if seq % 7 == 0}
        assert direct and via_queue - refused - {MANY + 1}, job_id


async def test_history_and_live_overlap_deliver_each_seq_once() -> None:
    """Registered before reading, a subscriber finds its first events both in the
    store and in its queue: each reaches it once."""
    async with running() as broadcaster:
        await open_jobs(broadcaster, "j")
        sub = broadcaster.subscribe("j")
        witness = broadcaster.subscribe("j")
        witness.listener = everything = RecordingListener()
        for n in range(5):
            await broadcaster.publish(thought("j", n))
        await everything.offered_up_to(5)  # 1..5 recorded and queued for ``sub``
        reader = asyncio.create_task(collect(sub))
        for n in range(5, MANY):
            await broadcaster.publish(thought("j", n))
        await broadcaster.publish(final("j"))
        got = await reader
    assert [e.seq for e in got] == list(range(1, MANY + 2))
    assert texts(got) == [f"t{n:04}" for n in range(MANY)]


async def test_listener_and_queue_deliver_each_seq_once_around_history() -> None:
    """As a gateway does it: the listener is set before the history is read and
    refuses until the consumer has caught up. Event 4 is recorded (so the history
    read returns it) but not yet handed out when the consumer catches up; when it
    is, the listener must not be offered it again."""
    store = MemoryStore()
    await store.open()
    log: list[Event] = []
    caught_up = asyncio.Event()
    listener = RecordingListener(accepting=False, refuse=lambda seq: seq == 8, log=log)

    async def consume(sub: Subscription) -> None:
        async for event in sub.history():
            log.append(event)
        while not sub.done:
            batch = sub.take_nowait(2000)
            if batch:
                log.extend(batch)
                continue
            listener.accepting = True  # caught up: the fast path may take events
            caught_up.set()
            await sub.wait()

    async with running(Broadcaster(store)) as broadcaster:
        await open_jobs(broadcaster, "j")
        sub = broadcaster.subscribe("j")
        sub.listener = listener
        witness = broadcaster.subscribe("j")
        witness.listener = everything = RecordingListener()
        for n in range(3):
            await broadcaster.publish(thought("j", n))
        await everything.offered_up_to(3)
        assert listener.offered == [1]  # refused (not caught up): 2 and 3 queue behind it
        store.hold_recorded = asyncio.Event()
        await broadcaster.publish(thought("j", 3))
        await store.appending.wait()
        assert store.seqs("j") == [1, 2, 3, 4]  # recorded, not yet handed out
        consumer = asyncio.create_task(consume(sub))
        await caught_up.wait()  # history 1..4 read, the queue's 1..3 dropped as seen
        caught_up.clear()
        store.hold_recorded.set()
        await everything.offered_up_to(4)
        assert listener.offered == [1], "offered an event the consumer already has"
        await caught_up.wait()
        for n in range(4, 7):
            await broadcaster.publish(thought("j", n))
        await listener.offered_up_to(7)
        for n in range(7, 11):
            await broadcaster.publish(thought("j", n))
        await broadcaster.publish(final("j"))
        await consumer
    assert [e.seq for e in log] == list(range(1, 13))
    assert texts(log) == [f"t{n:04}" for n in range(11)]
    taken = {e.seq for e in listener.taken}
    assert {5, 6, 7} <= taken and 8 not in taken  # not vacuous: both paths carried events


async def test_a_subscriber_past_its_byte_bound_is_shed_and_the_others_go_on() -> None:
    store = MemoryStore()
    await store.open()
    size = Event.from_draft(thought("j", 0), 10).size
    async with running(Broadcaster(store)) as broadcaster:
        await open_jobs(broadcaster, "j")
        slow = broadcaster.subscribe("j", max_bytes=size * 7 // 2)  # room for 3 events
        # Refusing every offer, as a connection that fell behind does: each event is
        # queued, and its listener woken after the queue; when shed, at once.
        slow.listener = slow_listener = RecordingListener(accepting=False)
        fine = broadcaster.subscribe("j")
        fine_reader = asyncio.create_task(collect(fine))
        other = broadcaster.subscribe("j")
        other.listener = direct = RecordingListener()
        await broadcaster.publish(thought("j", 0))
        await broadcaster.publish(thought("j", 1))
        assert [(await next_event(slow)).seq for _ in range(2)] == [1, 2]
        for n in range(2, 30):  # the slow one stops reading
            await broadcaster.publish(thought("j", n))
        await broadcaster.publish(final("j"))
        got = await fine_reader
        assert slow.failed().done(), "the slow subscriber was not shed"
        shed = slow.failed().result()
        assert isinstance(shed, SubscriberTooSlow) and shed.last_seq == 2
        with pytest.raises(SubscriberTooSlow) as raised:
            slow.next_nowait()
        assert raised.value.last_seq == 2
        assert broadcaster.subscriber_count("j") == 2  # the shed one left at once
        *queued, last = slow_listener.wakes
        assert queued and not any(queued) and last is True
    assert [e.seq for e in got] == list(range(1, 32))
    assert direct.offered == list(range(1, 31))  # every one but the final


async def test_a_commit_after_a_quiet_spell_goes_at_once_and_under_load_commits_gather(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Longer than the test may run: an event that waited for it would time the test out.
    monkeypatch.setattr(broadcaster_module, "COMMIT_INTERVAL", 10.0)
    async with running() as broadcaster:
        await open_jobs(broadcaster, "j")
        sub = broadcaster.subscribe("j")
        await broadcaster.publish(thought("j", 0))
        assert (await next_event(sub)).seq == 1  # the first since a quiet spell: at once
        for n in range(1, MAX_COMMIT + 1):
            await broadcaster.publish(thought("j", n))
            await asyncio.sleep(0)  # a producer that yields between events
        for seq in range(2, MAX_COMMIT + 2):  # gathered into one commit, then seen
            assert (await next_event(sub)).seq == seq
    assert [len(commit) for commit in store_of(broadcaster).commits] == [1, MAX_COMMIT]


async def test_a_job_with_many_watchers_has_only_its_window_of_events_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The time an event waits inside the server is bounded: its job's publishers wait
    while FANOUT_BUDGET deliveries (events x subscribers) are queued or numbered and not
    yet handed out, so under saturation an event is at most a window behind, not the
    pipeline's hundreds."""
    monkeypatch.setattr(broadcaster_module, "FANOUT_BUDGET", 8)
    async with running() as broadcaster:
        await open_jobs(broadcaster, "j", "k")
        subs = [broadcaster.subscribe("j") for _ in range(4)]  # window: 8 // 4 = 2
        subs[0].listener = watched = RecordingListener()
        alone = broadcaster.subscribe("k")  # window 8: other jobs keep theirs
        alone.listener = its = RecordingListener()
        ahead: list[int] = []
        ahead_k: list[int] = []
        for n in range(MANY):  # a producer that never yields but to publish
            await broadcaster.publish(thought("j", n))
            ahead.append(n + 1 - len(watched.offered))
        await broadcaster.publish(final("j"))
        for n in range(MANY):
            await broadcaster.publish(thought("k", n))
            ahead_k.append(n + 1 - len(its.offered))
        await broadcaster.publish(final("k"))
        for sub in subs[1:]:
            assert [e.seq for e in sub.take_nowait(1 << 30)] == list(range(1, MANY + 2))
    assert max(ahead) == 2  # published and not yet handed to the subscribers
    assert max(ahead_k) == 8
    assert watched.offered == its.offered == list(range(1, MANY + 1))
