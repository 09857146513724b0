"""The team actor: runs one provider on the brief and reports what it does.

Setup: announce ``thinking`` with the model. Run: turn the provider's stream
into events (``thought_added``; ``generating`` when the answer starts;
``code_generated``). Teardown: ``complete``, or an ``error`` event and the
``error`` status when the provider fails. Cancellation propagates at once (the
provider's connection closes with its stream); the supervisor reports the
``cancelled`` status, since a cancelled actor must not wait on anything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from chimera.errors import ProviderError
from chimera.events import TEAM_FINAL, Draft, TeamName, TeamStatus
from chimera.observability import metrics
from chimera.observability.logs import log_context
from chimera.providers.base import AnswerStarted, CodeResult, Provider, Thought
from chimera.providers.simulated import SimulatedProvider

Publish = Callable[[Draft], Awaitable[None]]


class TeamActor:
    def __init__(
        self, job_id: str, team: TeamName, provider: Provider, brief: str, publish: Publish
    ) -> None:
        self.job_id = job_id
        self.team = team
        self.status = TeamStatus.IDLE
        self.produced_code = False
        self._provider = provider
        self._brief = brief
        self._publish = publish

    async def set_status(self, status: TeamStatus) -> None:
        self.status = status
        if status in TEAM_FINAL:
            simulated = isinstance(self._provider, SimulatedProvider)
            metrics.team_run_ended(self.team.value, simulated, status.value)
        extra = {"model": self._provider.model} if status is TeamStatus.THINKING else {}
        await self._publish(Draft.status(self.job_id, self.team, status.value, **extra))

    async def fail(self, message: str) -> None:
        """Reports ``message`` as the team's error and ends it in ``error``."""
        self.status = TeamStatus.ERROR
        await self._publish(Draft.error(self.job_id, self.team, message))
        await self.set_status(TeamStatus.ERROR)

    async def run(self) -> None:
        """Runs the provider to the end; ``ProviderError`` ends the team in ``error``."""
        log_context(team=self.team.value)
        await self.set_status(TeamStatus.THINKING)
        timing = metrics.ProviderRun(self.team.value)
        try:
            async for item in self._provider.stream(self._brief):
                timing.output()
                if isinstance(item, Thought):
                    await self._publish(Draft.thought(self.job_id, self.team, item.text))
                elif isinstance(item, AnswerStarted):
                    await self.set_status(TeamStatus.GENERATING)
                elif isinstance(item, CodeResult):
                    if self.status is not TeamStatus.GENERATING:
                        await self.set_status(TeamStatus.GENERATING)
                    await self._publish(
                        Draft.code(
                            self.job_id, self.team, item.code, item.language, item.token_count
                        )
                    )
                    self.produced_code = True
                    timing.tokens(item.token_count)
        except ProviderError as exc:
            timing.ended()
            await self.fail(str(exc))
            return
        timing.ended()
        if not self.produced_code:
            await self.fail(f"the {self.team.value} provider finished without producing code")
            return
        await self.set_status(TeamStatus.COMPLETE)
