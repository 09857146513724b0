"""The team actor: runs one provider on the brief and reports what it does.

Setup: announce ``thinking`` with the model (unless it was recorded with the
job). Run: turn the provider's stream
into events (``thought_added``; ``generating`` when the answer starts;
``code_delta`` while the code is written, coalesced by
:class:`~chimera.actors.code_deltas.DeltaCoalescer`; ``code_generated``).
Teardown: ``complete``, or an ``error`` event and the ``error`` status when
the provider fails. Cancellation propagates at once (the provider's
connection closes with its stream); the supervisor reports the ``cancelled``
status, since a cancelled actor must not wait on anything.

The actor reads its provider's stream itself, in its own task. Only while a
delta held back by the coalescer waits does it read the next item in a task of
its own (:meth:`TeamActor._next`), so the delta goes out when it is due even
while the provider is silent; a team thinking or waiting costs one task.
A team's ``code_delta`` events, spliced in ``seq`` order
(:func:`chimera.events.splice`), always end as its ``code_generated`` code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
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
        announced: bool = False,
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
        self._reading: asyncio.Task[ProviderEvent | _Ended] | None = None
        # ``thinking`` was recorded with the job (JobManager: the store's opening events).
        self._announced = announced

    def opening(self) -> Draft:
        """The event the team opens with: ``thinking``, with its model."""
        return Draft.status(
            self.job_id, self.team, TeamStatus.THINKING.value, model=self._provider.model
        )

    async def set_status(self, status: TeamStatus) -> None:
        self.status = status
        if status in TEAM_FINAL:
            simulated = isinstance(self._provider, SimulatedProvider)
            metrics.team_run_ended(self.team.value, simulated, status.value)
        await self._publish(Draft.status(self.job_id, self.team, status.value))

    async def fail(self, message: str) -> None:
        """Reports ``message`` as the team's error and ends it in ``error``."""
        self.status = TeamStatus.ERROR
        await self._publish(Draft.error(self.job_id, self.team, message))
        await self.set_status(TeamStatus.ERROR)

    async def run(self) -> None:
        """Runs the provider to the end; ``ProviderError`` ends the team in ``error``."""
        log_context(team=self.team.value)
        self.status = TeamStatus.THINKING
        if not self._announced:
            await self._publish(self.opening())
        timing = metrics.ProviderRun(self.team.value)
        stream = aiter(self._provider.stream(self._brief))
        try:
            async with asyncio.TaskGroup() as tg:
                error = await self._follow(stream, tg, timing)
        finally:
            # A stream left before its end (a bug, or the job stopping) is closed now,
            # not whenever the collector finds it: its connection closes with it.
            if isinstance(stream, AsyncGenerator):
                await stream.aclose()
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

    async def _next(
        self, stream: AsyncIterator[ProviderEvent], tg: asyncio.TaskGroup, now: float
    ) -> ProviderEvent | _Ended | None:
        """The provider's next event (``_Ended`` once its stream ended, with its failure:
        handed over, not raised, so it is not wrapped in the group), or ``None`` when a
        waiting delta fell due first (``now``: the clock's time). A read that a due
        delta interrupted goes on in its task (:attr:`_reading`) and is waited for by
        the next call."""
        due = self._deltas.due()
        if due is not None and due <= now:
            return None
        reading = self._reading
        if due is None:
            self._reading = None
            return await (reading if reading is not None else _read_one(stream))
        if reading is None:
            reading = self._reading = tg.create_task(_read_one(stream))
        done, _ = await asyncio.wait((reading,), timeout=due - now)
        if not done:
            return None
        self._reading = None
        return reading.result()

    async def _follow(
        self, stream: AsyncIterator[ProviderEvent], tg: asyncio.TaskGroup,
        timing: metrics.ProviderRun,
    ) -> Exception | None:
        """Publishes the provider's events until its stream ends; returns its failure."""
        now = self._clock()
        while True:
            item = await self._next(stream, tg, now)
            now = self._clock()
            if item is None:
                await self._send(self._deltas.flush(now))
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
                await self._send(self._deltas.add(item, now))
            elif isinstance(item, CodeResult):
                if self.status is not TeamStatus.GENERATING:
                    await self.set_status(TeamStatus.GENERATING)
                await self._send(self._deltas.finish(item.code, now))
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


async def _read_one(stream: AsyncIterator[ProviderEvent]) -> ProviderEvent | _Ended:
    """The stream's next event, or how it ended (see :meth:`TeamActor._next`)."""
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return _Ended()
    except Exception as exc:
        return _Ended(exc)
