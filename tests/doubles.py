"""Test providers: real implementations of the Provider interface, scripted per test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping

from chimera.errors import ProviderError
from chimera.events import Event, TeamName
from chimera.providers.base import AnswerStarted, CodeResult, Provider, ProviderEvent, Thought
from chimera.providers.simulated import SimulatedProvider


class ScriptedProvider:
    """Yields ``thoughts``, then either fails with ``fail_with`` or answers with ``code``.

    ``pace`` spaces the thoughts out; ``hold`` (if given) is awaited before the
    answer, so a test can catch the
    team mid-run; ``closed`` is set when the stream ends for any reason
    (including cancellation), like a real provider closing its connection.
    """

    def __init__(
        self,
        thoughts: list[str],
        *,
        code: str = "export const x = 1;",
        fail_with: str | None = None,
        hold: asyncio.Event | None = None,
        model: str = "scripted",
        crash: bool = False,
        pace: float = 0,
    ) -> None:
        self.thoughts = thoughts
        self.code = code
        self.fail_with = fail_with
        self.hold = hold
        self.crash = crash
        self.pace = pace  # seconds between thoughts
        self.closed = asyncio.Event()
        self.cancelled = False
        self._model = model

    @property
    def model(self) -> str:
        return self._model

    async def stream(self, brief: str) -> AsyncIterator[ProviderEvent]:
        try:
            for text in self.thoughts:
                await asyncio.sleep(self.pace)  # the fake's pace: behaviour, not a wait
                yield Thought(f"{text} ({brief[:20]})")
            if self.hold is not None:
                await self.hold.wait()
            if self.crash:
                raise RuntimeError("a bug in the provider")
            if self.fail_with is not None:
                raise ProviderError(self.fail_with, status=429)
            yield AnswerStarted()
            yield CodeResult(self.code, "tsx", 42)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            self.closed.set()


def flood(thoughts: int, size: int = 2000) -> Callable[[TeamName], Provider]:
    """Both teams think ``thoughts`` thoughts of ``size`` characters at once, then answer:
    more than socket buffers hold, for slow-subscriber tests."""
    text = "x" * size
    return factory({team: (lambda: ScriptedProvider([text] * thoughts)) for team in TeamName})


def factory(
    providers: Mapping[TeamName, Callable[[], Provider]],
) -> Callable[[TeamName], Provider]:
    """A provider factory from per-team constructors; unlisted teams are simulated, fast."""

    def make(team: TeamName) -> Provider:
        if team in providers:
            return providers[team]()
        return SimulatedProvider(team.value, delay=0)

    return make


class RecordingListener:
    """A :class:`chimera.actors.broadcaster.Listener` that records every offer.

    It takes an offered event when ``accepting`` is true and ``refuse`` (if given)
    does not name its seq; ``offered`` is every seq it was offered, ``taken`` the
    events it took, and ``log`` (if given, shared with the test's consumer) gets
    each taken event appended, so one list shows the order a user would see.
    """

    def __init__(
        self,
        *,
        accepting: bool = True,
        refuse: Callable[[int], bool] | None = None,
        log: list[Event] | None = None,
    ) -> None:
        self.accepting = accepting
        self.refuse = refuse
        self.log = log
        self.offered: list[int] = []
        self.taken: list[Event] = []
        self.wakes: list[bool] = []  # each woken() call's at_once
        self._changed = asyncio.Event()

    def offer(self, event: Event) -> bool:
        self.offered.append(event.seq)
        self._changed.set()
        if not self.accepting or (self.refuse is not None and self.refuse(event.seq)):
            return False
        self.taken.append(event)
        if self.log is not None:
            self.log.append(event)
        return True

    def woken(self, at_once: bool) -> None:
        self.wakes.append(at_once)

    async def offered_up_to(self, seq: int) -> None:
        """Returns once an event with ``seq`` or later was offered."""
        while not self.offered or self.offered[-1] < seq:
            self._changed.clear()
            await self._changed.wait()


class ManualClock:
    """A clock for code that takes one (:class:`JobSupervisor`'s deadline): every
    timer fires when the test calls :meth:`expire`, whatever its length; ``asked``
    is the lengths asked for. No test waits real seconds."""

    def __init__(self) -> None:
        self.asked: list[float] = []
        self._timers: list[_ManualTimer] = []
        self._expired = False

    def call_later(self, delay: float, callback: Callable[[], object]) -> _ManualTimer:
        self.asked.append(delay)
        timer = _ManualTimer(callback)
        self._timers.append(timer)
        if self._expired:
            asyncio.get_running_loop().call_soon(timer.fire)
        return timer

    def expire(self) -> None:
        """Fires every timer, now and later (the time has passed)."""
        self._expired = True
        for timer in self._timers:
            timer.fire()


class _ManualTimer:
    def __init__(self, callback: Callable[[], object]) -> None:
        self._callback: Callable[[], object] | None = callback

    def fire(self) -> None:
        if self._callback is not None:
            callback, self._callback = self._callback, None
            callback()

    def cancel(self) -> None:
        self._callback = None
