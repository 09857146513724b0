"""The job supervisor: one per job, owns the job's team actors.

Setup: announce the job ``running`` (unless it was recorded with the job).
Run: every team in its own task of one
``TaskGroup``; a team failing is reported for that team only and never stops
the others. Teardown decides the job's outcome and announces it as the job's
final event: ``cancelled`` after :meth:`JobSupervisor.cancel`; ``failed`` after
:meth:`JobSupervisor.interrupt` (server shutting down); otherwise
``succeeded`` if at least one team produced code, else ``failed``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from chimera.actors.team import Publish, TeamActor
from chimera.events import TEAM_FINAL, Draft, JobState, TeamName, TeamStatus

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted: server stopped"


class Timer(Protocol):
    """What a deadline needs of a clock: ``call_later(delay, callback)``, giving back
    something to ``cancel()``; the running loop's unless a test gives its own."""

    def call_later(self, delay: float, callback: Callable[[], object]) -> Cancellable: ...


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class JobSupervisor:
    """Runs one job's teams (see the module docstring).

    ``deadline`` (seconds, ``None`` for none) is a timer of ``clock`` (the running
    loop unless given: a test passes a clock of its own, so it can reach the
    deadline without waiting for it).

    One task per team and nothing else: stopping (:meth:`cancel`, :meth:`interrupt`)
    and the deadline cancel the team tasks directly, so a job that waits costs its
    teams' tasks and one timer, not a task per thing it waits for.
    """

    def __init__(
        self,
        job_id: str,
        teams: Sequence[TeamActor],
        publish: Publish,
        *,
        deadline: float | None = None,
        clock: Timer | None = None,
        announced: bool = False,
    ) -> None:
        self.job_id = job_id
        self.state = JobState.RUNNING
        self._teams = list(teams)
        self._publish = publish
        self._deadline = deadline
        self._clock = clock
        self._stopped = False
        self._timed_out = False
        self._tasks: list[asyncio.Task[None]] = []  # the team tasks while they run
        self._outcome: JobState | None = None  # set by cancel() / interrupt()
        self._reason = INTERRUPTED
        self.announced_final = False  # the job's final event has been published
        # ``running`` was recorded with the job (JobManager: the store's opening events).
        self._announced = announced

    def cancel(self) -> None:
        """Stops the teams promptly; the job ends ``cancelled``."""
        if self._outcome is None:
            self._outcome = JobState.CANCELLED
        self._stop_teams()

    def interrupt(self, reason: str = INTERRUPTED) -> None:
        """Stops the teams promptly (the server is stopping, or the job's events cannot
        be recorded); the job ends ``failed``, each unfinished team with ``reason``."""
        if self._outcome is None:
            self._outcome = JobState.FAILED
            self._reason = reason
        self._stop_teams()

    def _expire(self) -> None:
        self._timed_out = True
        self._stop_teams()

    def _stop_teams(self) -> None:
        """Cancelling a team's task closes its provider stream; the group waits for it."""
        self._stopped = True
        for task in self._tasks:
            task.cancel()

    def opening(self) -> list[Draft]:
        """The job's first events, as its setup announces them: ``running``, then each
        team's :meth:`TeamActor.opening`. When they were recorded with the job
        (``announced``), neither the supervisor nor its teams publish them again."""
        return [self._running(), *(team.opening() for team in self._teams)]

    def _running(self) -> Draft:
        return Draft.status(self.job_id, None, JobState.RUNNING.value)

    async def run(self) -> JobState:
        if not self._announced:
            await self._publish(self._running())
        timer: Cancellable | None = None
        if self._deadline is not None and not self._stopped:
            clock = self._clock or asyncio.get_running_loop()
            timer = clock.call_later(self._deadline, self._expire)
        try:
            if not self._stopped:  # stopped before it started: no team runs
                async with asyncio.TaskGroup() as tg:
                    self._tasks = [tg.create_task(self._run_team(team)) for team in self._teams]
        finally:
            self._tasks = []
            if timer is not None:
                timer.cancel()
        for team in self._teams:
            if team.status in TEAM_FINAL:
                continue
            if self._outcome is JobState.CANCELLED:
                await team.set_status(TeamStatus.CANCELLED)
            elif self._outcome is JobState.FAILED:
                await team.fail(self._reason)
            elif self._timed_out:
                await team.fail(f"deadline exceeded: the job may run {self._deadline:g} s")
        if self._outcome is not None:
            self.state = self._outcome
        elif any(team.produced_code for team in self._teams):
            self.state = JobState.SUCCEEDED
        else:
            self.state = JobState.FAILED
        await self._publish(Draft.status(self.job_id, None, self.state.value))
        self.announced_final = True
        return self.state

    def unfinished_teams(self) -> list[TeamName]:
        return [team.team for team in self._teams if team.status not in TEAM_FINAL]

    async def _run_team(self, team: TeamActor) -> None:
        """The supervision boundary for one team.

        A bug in a team (any exception but cancellation) is logged and reported
        as that team's error here, so the TaskGroup never cancels the other team.
        """
        try:
            await team.run()
        except Exception:
            log.exception("team %s of job %s crashed", team.team.value, self.job_id)
            await team.fail(f"internal error in the {team.team.value} team")
