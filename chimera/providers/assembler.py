"""What every real provider does with a model's stream, without the I/O.

A provider's ``_attempt`` reads its SDK's stream and tells an
:class:`AnswerAssembler` what it saw: thinking text, answer text, the end of
a thinking block, and finally whether the stream's last event arrived. The
assembler returns the :mod:`chimera.providers.base` events to yield: thoughts
grouped by :class:`~chimera.providers.thoughts.ThoughtGrouper`, the thoughts
still buffered flushed before :class:`AnswerStarted`, the code as it is
written (:class:`CodeDelta`, from :class:`~chimera.providers.codeblock.CodeStream`:
the answer's prose is not code), a retryable error when the final event is
missing (the stream was cut), and the :class:`CodeResult` with the answer's
fenced code, which the deltas join to. Like ``ThoughtGrouper``, it is a plain
value; providers make one per attempt (a retried attempt's deltas start again
at offset 0).
"""

from __future__ import annotations

from chimera.providers.base import AnswerStarted, CodeResult, ProviderEvent, Thought
from chimera.providers.codeblock import CodeStream
from chimera.providers.faults import RetryableError
from chimera.providers.thoughts import ThoughtGrouper


class AnswerAssembler:
    """One attempt's events. ``source`` names the API in errors (``"Anthropic"``);
    ``missing_end`` says what a cut stream lacks (``"before message_stop"``)."""

    __slots__ = ("_answering", "_code", "_grouper", "_missing_end", "_source")

    def __init__(self, source: str, *, missing_end: str) -> None:
        self._source = source
        self._missing_end = missing_end
        self._grouper = ThoughtGrouper()
        self._code = CodeStream()
        self._answering = False

    def thinking(self, text: str) -> list[ProviderEvent]:
        """A thinking delta: the thoughts it completes."""
        return [Thought(t) for t in self._grouper.feed(text)]

    def thinking_ended(self) -> list[ProviderEvent]:
        """A thinking block ended: what was left of it."""
        return [Thought(t) for t in self._grouper.flush()]

    def answer(self, text: str) -> list[ProviderEvent]:
        """Answer text: the code it adds; the first time, the buffered thoughts and
        :class:`AnswerStarted` before it."""
        events: list[ProviderEvent] = []
        if not self._answering:
            self._answering = True
            events = [*self.thinking_ended(), AnswerStarted()]
        events += self._code.feed(text)
        return events

    def end(self, *, complete: bool) -> list[ProviderEvent]:
        """The stream ended: the thoughts still buffered. Raises a retryable
        error when ``complete`` is false (the final event never came), so the
        attempt is retried rather than half an answer taken as a whole one."""
        if not complete:
            raise RetryableError(f"{self._source} stream ended {self._missing_end}")
        return self.thinking_ended()

    def result(
        self, *, token_count: int, input_tokens: int = 0, stop_reason: str | None = None
    ) -> list[ProviderEvent]:
        """The last deltas (if the code shown was not the answer's code yet), then the
        :class:`CodeResult` of the answer's largest fenced block; ``stop_reason``
        explains a block cut off at the token limit."""
        events: list[ProviderEvent] = [*self._code.finish()]
        block = self._code.block(source=self._source, stop_reason=stop_reason)
        events.append(
            CodeResult(
                code=block.code, language=block.language, token_count=token_count,
                input_tokens=input_tokens,
            )
        )
        return events
