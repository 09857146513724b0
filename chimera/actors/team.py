"""The team actor: runs one provider on the brief and reports what it does.

Setup: announce ``thinking`` with the model. Run: turn the provider's stream
into events (``thought_added``; ``generating`` when the answer starts;
``code_delta`` while the code is written, coalesced by
:class:`~chimera.actors.code_deltas.DeltaCoalescer`; ``code_generated``).
Teardown: ``complete``, or an ``error`` event and the ``error`` status when
the provider fails. Cancellation propagates at once (the provider's
connection closes with its stream); the supervisor reports the ``cancelled``
status, since a cancelled actor must not wait on anything.

The provider is read by a task of the actor's own (:meth:`TeamActor._read`),
so a delta held back by the coalescer goes out when it is due even while the
provider is silent; its events reach the actor through a small queue, in order.
A team's ``code_delta`` events, spliced in ``seq`` order
(:func:`chimera.events.splice`), always end as its ``code_generated`` code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from chimera.actors.code_deltas import DeltaCoalescer
from chimera.errors import ProviderError
from chimera.events import TEAM_FINAL, Draft, TeamName, TeamStatus
from chimera.observability import metrics
from chimera.observability.logs import log_context
from chimera.providers.base import (
    AnswerStarted,
    CodeDelta,
    CodeResult,
    Provider,
    ProviderEvent,
    Thought,
)
from chimera.providers.simulated import SimulatedProvider

Publish = Callable[[Draft], Awaitable[None]]

# Provider events read ahead of the actor: a little slack, and backpressure beyond it.
READ_AHEAD = 64


@dataclass(frozen=True, slots=True)
class _Ended:
    """The provider's stream ended: normally, or with ``error`` (raised by the actor)."""

    error: Exception | None = None


class TeamActor:
    """One team of one job (see the module docstring).

    ``clock`` (seconds, :func:`time.monotonic` unless given) times the
    coalescing of code deltas; a test passes one of its own.
    """

    def __init__(
        self,
        job_id: str,
        team: TeamName,
        provider: Provider,
        brief: str,
        publish: Publish,
        *,
        clock: Callable[[], float] = time.monotonic,
        coalescer: DeltaCoalescer | None = None,
    ) -> None:
        self.job_id = job_id
        self.team = team
        self.status = TeamStatus.IDLE
        self.produced_code = False
        self._provider = provider
        self._brief = brief
        self._publish = publish
        self._clock = clock
        self._deltas = coalescer or DeltaCoalescer()

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
        items: asyncio.Queue[ProviderEvent | _Ended] = asyncio.Queue(READ_AHEAD)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._read(items))
            error = await self._follow(items, timing)
        timing.ended()
        if isinstance(error, ProviderError):
            await self._send(self._deltas.flush(self._clock()))  # what was written of it
            await self.fail(str(error))
            return
        if error is not None:
            raise error  # a bug: the supervisor reports it as the team's error
        if not self.produced_code:
            await self.fail(f"the {self.team.value} provider finished without producing code")
            return
        await self.set_status(TeamStatus.COMPLETE)

    async def _read(self, items: asyncio.Queue[ProviderEvent | _Ended]) -> None:
        """The provider's stream into ``items``, then how it ended. Its failure is
        handed over, not swallowed: the actor raises it (or reports a
        ``ProviderError``) outside the task group, so it is not wrapped in a group."""
        try:
            async for item in self._provider.stream(self._brief):
                await items.put(item)
        except Exception as exc:
            await items.put(_Ended(exc))
            return
        await items.put(_Ended())

    async def _next(
        self, items: asyncio.Queue[ProviderEvent | _Ended]
    ) -> ProviderEvent | _Ended | None:
        """The next provider event, or ``None`` when a waiting delta fell due first."""
        if not items.empty():
            return items.get_nowait()
        due = self._deltas.due()
        if due is None:
            return await items.get()
        try:
            async with asyncio.timeout(max(0.0, due - self._clock())):
                return await items.get()
        except TimeoutError:
            return None

    async def _follow(
        self, items: asyncio.Queue[ProviderEvent | _Ended], timing: metrics.ProviderRun
    ) -> Exception | None:
        """Publishes the provider's events until its stream ends; returns its failure."""
        while True:
            item = await self._next(items)
            if item is None:
                await self._send(self._deltas.flush(self._clock()))
                continue
            if isinstance(item, _Ended):
                return item.error
            timing.output()
            if isinstance(item, Thought):
                await self._publish(Draft.thought(self.job_id, self.team, item.text))
            elif isinstance(item, AnswerStarted):
                await self.set_status(TeamStatus.GENERATING)
            elif isinstance(item, CodeDelta):
                if self.status is not TeamStatus.GENERATING:
                    await self.set_status(TeamStatus.GENERATING)
                await self._send(self._deltas.add(item, self._clock()))
            elif isinstance(item, CodeResult):
                if self.status is not TeamStatus.GENERATING:
                    await self.set_status(TeamStatus.GENERATING)
                await self._send(self._deltas.finish(item.code, self._clock()))
                await self._publish(
                    Draft.code(
                        self.job_id, self.team, item.code, item.language, item.token_count,
                        item.input_tokens,
                    )
                )
                self.produced_code = True
                timing.tokens(item.token_count)

    async def _send(self, delta: CodeDelta | None) -> None:
        if delta is not None:
            await self._publish(Draft.code_delta(self.job_id, self.team, delta.offset, delta.text))
