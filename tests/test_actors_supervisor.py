"""The job supervisor and its team actors, driven directly: no sockets, no SQLite.

A :class:`JobSupervisor` is given real :class:`TeamActor` values running
:class:`tests.doubles.ScriptedProvider` and a ``publish`` that records the
drafts; its deadline is waited out on a :class:`tests.doubles.ManualClock`. The
crash tests go one level up, through :class:`JobManager` with the broadcaster
on :class:`tests.memory_store.MemoryStore`. Each test waits for what it is
about, never for time (each is bounded at 5 s so a broken actor fails, not hangs).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from chimera.actors.broadcaster import Broadcaster
from chimera.actors.jobs import JobManager, JobRequest, ProviderFactory, RunningJobs
from chimera.actors.supervisor import JobSupervisor
from chimera.actors.team import TeamActor
from chimera.auth.principal import ANONYMOUS
from chimera.events import ALL_TEAMS, Draft, Event, EventType, JobState, TeamName, TeamStatus
from chimera.providers.base import Provider
from tests.doubles import ManualClock, ScriptedProvider, factory
from tests.memory_store import MemoryStore

ANTHROPIC, GOOGLE = TeamName.ANTHROPIC, TeamName.GOOGLE


class Published:
    """The supervisor's ``publish``: records the drafts, lets a test wait for one."""

    def __init__(self) -> None:
        self.drafts: list[Draft] = []
        self._changed = asyncio.Event()

    async def __call__(self, draft: Draft) -> None:
        self.drafts.append(draft)
        self._changed.set()

    async def until(self, team: TeamName | None, status: str) -> None:
        """Returns once ``team`` (the job itself for ``None``) reported ``status``."""
        while (team, status) not in self.statuses():
            self._changed.clear()
            await self._changed.wait()

    def statuses(self) -> list[tuple[TeamName | None, str]]:
        return [(d.team, d.data["status"]) for d in self.drafts
                if d.type is EventType.STATUS_CHANGE]

    def of(self, team: TeamName | None) -> list[tuple[str, Any]]:
        """What ``team`` reported, in order: (type, status / error / text / "code")."""
        out = []
        for d in self.drafts:
            if d.team is not team:
                continue
            value = "code" if d.type is EventType.CODE_GENERATED else (
                d.data.get("error") or d.data.get("status") or d.data.get("text"))
            out.append((d.type.value, value))
        return out


def supervisor_of(
    providers: dict[TeamName, Provider], published: Published, **kwargs: Any
) -> JobSupervisor:
    teams = [TeamActor("j", team, p, "a brief", published) for team, p in providers.items()]
    return JobSupervisor("j", teams, published, **kwargs)


def completed(thought: str) -> list[tuple[str, Any]]:
    return [
        ("status_change", "thinking"), ("thought_added", f"{thought} (a brief)"),
        # The scripted provider streams no code: its one delta is the whole code.
        ("status_change", "generating"), ("code_delta", "export const x = 1;"),
        ("code_generated", "code"),
        ("status_change", "complete"),
    ]


@pytest.mark.parametrize(
    ("failing", "error"),
    [
        (lambda: ScriptedProvider(["trying"], fail_with="rate limited"), "rate limited"),
        (lambda: ScriptedProvider(["trying"], crash=True), "internal error in the google team"),
    ],
    ids=["provider-error", "provider-bug"],
)
async def test_a_failing_team_leaves_the_other_running_and_the_job_succeeds(
    failing: Callable[[], ScriptedProvider], error: str
) -> None:
    hold = asyncio.Event()
    good = ScriptedProvider(["planning"], hold=hold)
    published = Published()
    supervisor = supervisor_of({ANTHROPIC: good, GOOGLE: failing()}, published)
    async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
        running = tg.create_task(supervisor.run())
        await published.until(GOOGLE, "error")
        # The other team is still at work, and keeps going.
        assert published.of(ANTHROPIC) == completed("planning")[:2]
        assert not good.closed.is_set()
        hold.set()
        state = await running
    assert state is JobState.SUCCEEDED  # one team produced code (supervisor.py)
    assert published.of(GOOGLE) == [
        ("status_change", "thinking"), ("thought_added", "trying (a brief)"),
        ("error", error), ("status_change", "error"),
    ]
    assert published.of(ANTHROPIC) == completed("planning")
    assert published.of(None) == [("status_change", "running"), ("status_change", "succeeded")]
    assert published.drafts[-1].data == {"status": "succeeded"}  # the final event is last
    assert not good.cancelled


async def test_a_job_whose_teams_all_fail_ends_failed() -> None:
    published = Published()
    supervisor = supervisor_of({
        ANTHROPIC: ScriptedProvider([], fail_with="overloaded"),
        GOOGLE: ScriptedProvider([], crash=True),
    }, published)
    async with asyncio.timeout(5):
        assert await supervisor.run() is JobState.FAILED
    assert ("error", "overloaded") in published.of(ANTHROPIC)
    assert ("error", "internal error in the google team") in published.of(GOOGLE)
    assert published.of(None) == [("status_change", "running"), ("status_change", "failed")]


async def test_the_deadline_fails_unfinished_teams_without_waiting_for_it() -> None:
    clock = ManualClock()
    never = asyncio.Event()
    slow = ScriptedProvider(["pondering"], hold=never)
    published = Published()
    supervisor = supervisor_of(
        {ANTHROPIC: ScriptedProvider(["quick"]), GOOGLE: slow}, published,
        deadline=600, clock=clock,
    )
    async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
        running = tg.create_task(supervisor.run())
        await published.until(ANTHROPIC, "complete")
        assert clock.asked == [600]
        assert not running.done() and not slow.closed.is_set()
        clock.expire()  # 600 s later
        state = await running
    assert slow.cancelled and slow.closed.is_set()  # its stream was closed
    assert published.of(GOOGLE)[-2:] == [
        ("error", "deadline exceeded: the job may run 600 s"), ("status_change", "error"),
    ]
    assert published.of(ANTHROPIC) == completed("quick")
    assert state is JobState.SUCCEEDED
    assert published.drafts[-1].data == {"status": "succeeded"}


async def test_no_deadline_asks_the_clock_for_nothing() -> None:
    clock = ManualClock()
    published = Published()
    supervisor = supervisor_of({ANTHROPIC: ScriptedProvider(["quick"])}, published,
                               clock=clock)
    async with asyncio.timeout(5):
        assert await supervisor.run() is JobState.SUCCEEDED
    assert clock.asked == []


# -- through the job manager: a crash still ends the job with its final event ----------


@contextlib.asynccontextmanager
async def managed(providers: ProviderFactory) -> AsyncIterator[tuple[JobManager, MemoryStore]]:
    """A job manager and its broadcaster on a fresh :class:`MemoryStore`, stopped
    in the server's order (jobs, then the broadcaster) when the block ends."""
    store = MemoryStore()
    await store.open()
    running = RunningJobs()
    broadcaster = Broadcaster(store, listener=running)
    manager = JobManager(store, broadcaster, providers, running=running)
    async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
        tg.create_task(broadcaster.run(), name="broadcaster")
        jobs = tg.create_task(manager.run(), name="jobs")
        await asyncio.sleep(0)  # one turn of the loop: both have started
        try:
            yield manager, store
        finally:
            manager.stop()
            await jobs
            await broadcaster.stop()


async def run_job(manager: JobManager, job_id: str) -> list[Event]:
    """Creates the job and returns every event of it, up to its final one."""
    async with await manager.watch(job_id, 0, principal=ANONYMOUS) as subscription:
        await manager.create(JobRequest("a counter", job_id=job_id), principal=ANONYMOUS)
        return [event async for event in subscription]


async def test_a_provider_bug_still_ends_its_job_failed_with_a_final_event() -> None:
    providers = factory({team: lambda: ScriptedProvider(["x"], crash=True) for team in ALL_TEAMS})
    async with managed(providers) as (manager, store):
        events = await run_job(manager, "buggy")
        job = await store.get_job("buggy")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].is_final and events[-1].data == {"status": "failed"}
    assert job is not None and job.state is JobState.FAILED
    for team, run in job.teams.items():
        assert run.status is TeamStatus.ERROR
        assert run.error == f"internal error in the {team.value} team"


async def test_a_crashed_supervisor_still_ends_its_job_failed_with_a_final_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """JobManager._supervise's backstop. No provider can reach it (a team's error
    stops at the supervisor's team boundary: the test above), so the fault is put
    in the supervisor itself, as tests/test_supervisor_crash.py does end to end."""

    async def crash(self: JobSupervisor, team: TeamActor) -> None:
        raise RuntimeError("a bug in the supervisor")

    monkeypatch.setattr(JobSupervisor, "_run_team", crash)
    async with managed(factory({})) as (manager, store):
        events = await run_job(manager, "crashing")
        job = await store.get_job("crashing")
        # The job left the manager: its caller's place is free, a new job runs.
        assert [e.data for e in await run_job(manager, "next")][-1] == {"status": "failed"}
    assert events[-1].is_final and events[-1].data == {"status": "failed"}
    assert job is not None and job.state is JobState.FAILED
    for run in job.teams.values():
        assert run.status is TeamStatus.ERROR
        assert "supervisor failed (ExceptionGroup)" in run.error, run.error
