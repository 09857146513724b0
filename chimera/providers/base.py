"""The small interface every team's provider implements.

A provider turns a brief into an async stream of :data:`ProviderEvent` values:
any number of :class:`Thought`, then :class:`AnswerStarted` once the answer
(not the thinking) begins, then any number of :class:`CodeDelta` while the
code is written, then exactly one :class:`CodeResult`. It raises
:class:`chimera.errors.ProviderError` when it fails for good (after its own
retries). Cancelling the consumer's task must close the provider's connection
at once: providers use ``async with``/``try``-``finally`` around their streams
and never swallow ``CancelledError``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Thought:
    """One readable piece of reasoning (a sentence or a paragraph, not a token)."""

    text: str


@dataclass(frozen=True, slots=True)
class AnswerStarted:
    """The provider stopped thinking and started writing its answer."""


@dataclass(frozen=True, slots=True)
class CodeDelta:
    """Code as it is written: ``text`` replaces the code so far from ``offset`` on
    (:func:`chimera.events.splice`; mostly an append). A provider's deltas end as
    its :class:`CodeResult`'s code; the team actor makes sure they do."""

    offset: int
    text: str


@dataclass(frozen=True, slots=True)
class CodeResult:
    """The finished answer's code and what it cost: ``token_count`` the tokens the
    model generated (thinking included), ``input_tokens`` those of the request it
    read (instructions and brief; 0 if the API did not say)."""

    code: str
    language: str
    token_count: int
    input_tokens: int = 0


ProviderEvent = Thought | AnswerStarted | CodeDelta | CodeResult


class Provider(Protocol):
    """What a team actor needs from a provider."""

    @property
    def model(self) -> str:
        """The model name shown to subscribers (``"simulated"`` for the built-in one)."""
        ...

    def stream(self, brief: str) -> AsyncIterator[ProviderEvent]:
        """Work on ``brief``, yielding events as they happen."""
        ...
