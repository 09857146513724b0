"""The job supervisor: one per job, owns the job's team actors.

Setup: announce the job ``running``. Run: every team in its own task of one
``TaskGroup``; a team failing is reported for that team only and never stops
the others. Teardown decides the job's outcome and announces it as the job's
final event: ``cancelled`` after :meth:`JobSupervisor.cancel`; ``failed`` after
:meth:`JobSupervisor.interrupt` (server shutting down); otherwise
``succeeded`` if at least one team produced code, else ``failed``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from chimera.actors.team import Publish, TeamActor
from chimera.events import TEAM_FINAL, Draft, JobState, TeamName, TeamStatus

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted: server stopped"


class JobSupervisor:
    """Runs one job's teams (see the module docstring).

    ``deadline`` (seconds, ``None`` for none) is waited out with ``sleep``,
    :func:`asyncio.sleep` unless given: a test passes a clock of its own, so it
    can reach the deadline without waiting for it.
    """

    def __init__(
        self,
        job_id: str,
        teams: Sequence[TeamActor],
        publish: Publish,
        *,
        deadline: float | None = None,
        sleep: Callable[[float], Coroutine[Any, Any, object]] = asyncio.sleep,
    ) -> None:
        self.job_id = job_id
        self.state = JobState.RUNNING
        self._teams = list(teams)
        self._publish = publish
        self._deadline = deadline
        self._sleep = sleep
        self._stop = asyncio.Event()
        self._outcome: JobState | None = None  # set by cancel() / interrupt()
        self._reason = INTERRUPTED
        self.announced_final = False  # the job's final event has been published

    def cancel(self) -> None:
        """Stops the teams promptly; the job ends ``cancelled``."""
        if self._outcome is None:
            self._outcome = JobState.CANCELLED
        self._stop.set()

    def interrupt(self, reason: str = INTERRUPTED) -> None:
        """Stops the teams promptly (the server is stopping, or the job's events cannot
        be recorded); the job ends ``failed``, each unfinished team with ``reason``."""
        if self._outcome is None:
            self._outcome = JobState.FAILED
            self._reason = reason
        self._stop.set()

    async def run(self) -> JobState:
        await self._publish(Draft.status(self.job_id, None, JobState.RUNNING.value))
        timed_out = False
        async with asyncio.TaskGroup() as tg:
            teams_done = tg.create_task(self._run_teams())
            stop = tg.create_task(self._stop.wait())
            waits: set[asyncio.Task[Any]] = {teams_done, stop}
            if self._deadline is not None:
                waits.add(tg.create_task(self._sleep(self._deadline)))
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            timed_out = not done & {teams_done, stop}
            # Cancelling the teams' task cancels every team task still running,
            # which closes their provider streams; the group waits for them.
            for task in waits:
                task.cancel()
        for team in self._teams:
            if team.status in TEAM_FINAL:
                continue
            if self._outcome is JobState.CANCELLED:
                await team.set_status(TeamStatus.CANCELLED)
            elif self._outcome is JobState.FAILED:
                await team.fail(self._reason)
            elif timed_out:
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

    async def _run_teams(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for team in self._teams:
                tg.create_task(self._run_team(team))

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
