"""The Google team's provider: Gemini with thought summaries, streamed.

One :meth:`GoogleProvider.stream` call sends one ``streamGenerateContent``
request (``?alt=sse``) through google-genai's async client
(``genai.Client(...).aio.models.generate_content_stream``) with
``ThinkingConfig(include_thoughts=True)``, and turns its chunks into
:mod:`chimera.providers.base` events:

- text parts with ``thought: true`` → :class:`Thought`, grouped into
  sentences or paragraphs by :class:`~chimera.providers.thoughts.ThoughtGrouper`;
- the first text part without ``thought`` → :class:`AnswerStarted` (the
  thoughts still buffered are flushed first); those parts → :class:`CodeDelta`,
  the code of the answer's fenced block as it streams (not the prose around it:
  :class:`~chimera.providers.codeblock.CodeStream`);
- the chunk with ``finishReason`` → :class:`CodeResult` once the stream
  ends, with ``token_count`` = ``candidatesTokenCount + thoughtsTokenCount``
  of the last ``usageMetadata`` (what the model generated, thinking included;
  the prompt is not counted), like the Anthropic provider, and
  ``input_tokens`` = its ``promptTokenCount``.

Failures are retried by :func:`chimera.providers.retry.with_retries`. The
SDK's own retries stay off (no ``retry_options``) and so does its automatic
stream continuation (``automatic_continuation=False``), so there is one retry
loop. SDK and transport exceptions are translated in
:meth:`GoogleProvider._translate` and nowhere else; messages never contain
the API key.

Lifecycle: the provider owns one ``genai.Client`` (and its connection pool)
from construction until :meth:`GoogleProvider.aclose`. Cancellation:
cancelling the consumer's task, or closing the iterator, cancels the task
that reads the SDK's stream (see :func:`_read_ahead`), which closes the HTTP
response at once. ``CancelledError`` is never caught.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import httpx2
import pydantic
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from chimera.errors import ProviderError
from chimera.providers import env
from chimera.providers.assembler import AnswerAssembler
from chimera.providers.base import ProviderEvent
from chimera.providers.faults import RetryableError, http_failure, parse_retry_after
from chimera.providers.prompt import SYSTEM_PROMPT, user_message
from chimera.providers.retry import RetryingProvider
from chimera.providers.table import (
    GOOGLE_MAX_OUTPUT_TOKENS,
    GOOGLE_MODEL,
    GOOGLE_THINKING_BUDGET,
    RealConfig,
)

API_KEY_ENVS = env.GOOGLE_API_KEY_ENVS  # the SDK's order: GOOGLE_API_KEY wins
BASE_URL_ENV = env.GOOGLE_BASE_URL_ENV  # read by the SDK itself when base_url is None
DEFAULT_MODEL = GOOGLE_MODEL
DEFAULT_API_VERSION = "v1beta"
DEFAULT_THINKING_BUDGET = GOOGLE_THINKING_BUDGET
DEFAULT_MAX_OUTPUT_TOKENS = GOOGLE_MAX_OUTPUT_TOKENS
_SOURCE = "Gemini"
_T = TypeVar("_T")
_RETRY_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


@dataclass(frozen=True, slots=True)
class GoogleConfig(RealConfig):
    """Settings of :class:`GoogleProvider` (and those of every provider:
    :class:`~chimera.providers.table.RealConfig`).

    ``api_version`` is the path prefix (``/v1beta/models/...``).
    ``thinking_budget`` None lets the model choose. The API may say how long
    to wait before a retry with ``Retry-After`` or a ``RetryInfo`` detail.
    """

    SOURCE: ClassVar[str] = _SOURCE
    KEY_ENVS: ClassVar[tuple[str, ...]] = API_KEY_ENVS

    model: str = DEFAULT_MODEL
    thinking_budget: int | None = DEFAULT_THINKING_BUDGET
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS
    api_version: str = DEFAULT_API_VERSION

    def _check(self) -> None:
        if self.thinking_budget is not None and self.thinking_budget < 0:
            raise ValueError("thinking_budget must not be negative")
        if self.max_output_tokens < 1:
            raise ValueError("max_output_tokens must be positive")


class GoogleProvider(RetryingProvider[GoogleConfig]):
    """A :class:`~chimera.providers.base.Provider` backed by the Gemini API."""

    TEAM = "google"

    def __init__(self, config: GoogleConfig) -> None:
        super().__init__(config)
        self._client = genai.Client(
            vertexai=False,
            api_key=config.api_key,
            http_options=genai_types.HttpOptions(
                base_url=config.base_url or None,
                api_version=config.api_version,
                timeout=max(1, round(config.timeout * 1000)),  # milliseconds
            ),
        )
        thinking = genai_types.ThinkingConfig(
            include_thoughts=True, thinking_budget=config.thinking_budget
        )
        self._generation = genai_types.GenerateContentConfig(
            system_instruction=SYSTEM_PROMPT,
            max_output_tokens=config.max_output_tokens,
            thinking_config=thinking,
            automatic_continuation=False,
        )

    async def aclose(self) -> None:
        await self._client.aio.aclose()
        self._client.close()  # the SDK builds a sync pool too

    async def _attempt(self, brief: str) -> AsyncGenerator[ProviderEvent, None]:
        """One request, from sending it to the chunk with ``finishReason``."""
        assembler = AnswerAssembler(_SOURCE, missing_end="without a finishReason")
        usage: genai_types.GenerateContentResponseUsageMetadata | None = None
        finish: genai_types.FinishReason | None = None
        try:
            chunks = await self._client.aio.models.generate_content_stream(
                model=self._config.model,
                contents=user_message(brief),
                config=self._generation,
            )
            async with aclosing(_read_ahead(chunks)) as reader:
                async for chunk in reader:
                    usage = chunk.usage_metadata or usage
                    blocked = chunk.prompt_feedback and chunk.prompt_feedback.block_reason
                    if blocked:
                        raise ProviderError(f"Gemini blocked the brief ({_name(blocked)})")
                    if not chunk.candidates:
                        continue
                    candidate = chunk.candidates[0]
                    parts = candidate.content.parts if candidate.content else None
                    for part in parts or ():
                        if part.text:
                            add = assembler.thinking if part.thought else assembler.answer
                            for item in add(part.text):
                                yield item
                    finish = candidate.finish_reason or finish
        except (
            genai_errors.APIError,
            genai_errors.UnknownApiResponseError,
            httpx2.HTTPError,
            json.JSONDecodeError,
            UnicodeDecodeError,
            pydantic.ValidationError,
        ) as exc:
            raise self._translate(exc) from exc
        for item in assembler.end(complete=finish is not None):
            yield item
        if finish not in (genai_types.FinishReason.STOP, genai_types.FinishReason.MAX_TOKENS):
            raise ProviderError(f"Gemini stopped without finishing the answer ({_name(finish)})")
        stop_reason = "max_tokens" if finish == genai_types.FinishReason.MAX_TOKENS else None
        prompt = (usage.prompt_token_count or 0) if usage is not None else 0
        for item in assembler.result(
            token_count=_tokens(usage), input_tokens=prompt, stop_reason=stop_reason
        ):
            yield item

    def _translate(self, exc: Exception) -> ProviderError:
        """The one place SDK and transport exceptions become Chimera's."""
        if isinstance(exc, genai_errors.APIError):
            headers: Mapping[str, str] = getattr(exc.response, "headers", None) or {}
            retry_after = parse_retry_after(headers)
            if retry_after is None:
                retry_after = _retry_info_delay(exc.details)
            return http_failure(
                _SOURCE,
                exc.code if isinstance(exc.code, int) and exc.code >= 400 else 500,
                exc.status,
                exc.message,
                secrets=(self._config.api_key,),
                retry_after=retry_after,
            )
        if isinstance(exc, httpx2.TimeoutException):
            return RetryableError("Gemini API did not answer in time")
        if isinstance(exc, httpx2.TransportError):
            return RetryableError("Lost the connection to the Gemini API")
        if isinstance(
            exc,
            genai_errors.UnknownApiResponseError
            | json.JSONDecodeError
            | UnicodeDecodeError
            | pydantic.ValidationError,
        ):
            return RetryableError("Gemini API sent a malformed stream chunk")
        return ProviderError(f"Gemini request failed ({type(exc).__name__})")


async def _read_ahead(source: AsyncIterator[_T]) -> AsyncGenerator[_T, None]:
    """Iterate ``source`` from a task of its own, reading ahead without limit.

    google-genai's stream is a chain of nested async generators whose inner
    ones (holding the HTTP response) are not closed when the outer one is
    closed; they wait for the garbage collector. Reading in a task keeps the
    SDK always inside a network read (or finished), so closing this generator
    (or cancelling its consumer) cancels that task mid-read: the
    ``CancelledError`` unwinds every SDK generator and closes the response at
    once. The task is owned here and always awaited; its failure is raised
    to the consumer once the chunks before it were delivered. The read-ahead
    is bounded by the size of one answer.
    """
    queue: asyncio.Queue[tuple[_T] | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for item in source:
                queue.put_nowait((item,))
        finally:
            queue.put_nowait(None)

    task = asyncio.create_task(pump())
    try:
        while (entry := await queue.get()) is not None:
            yield entry[0]
        await task  # raises what ended the stream, if it was not its end
    finally:
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved: raised above, or moot when closed early


def _tokens(usage: genai_types.GenerateContentResponseUsageMetadata | None) -> int:
    """Generated tokens (answer + thinking) according to ``usage``; 0 if unknown."""
    if usage is None:
        return 0
    generated = (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)
    if generated == 0 and usage.total_token_count is not None:
        generated = usage.total_token_count - (usage.prompt_token_count or 0)
    return max(0, generated)


def _retry_info_delay(details: object) -> float | None:
    """The ``retryDelay`` of a ``google.rpc.RetryInfo`` error detail, in seconds."""
    error = details.get("error", details) if isinstance(details, dict) else None
    entries = error.get("details") if isinstance(error, dict) else None
    for entry in entries if isinstance(entries, list) else ():
        if isinstance(entry, dict) and str(entry.get("@type", "")).endswith("RetryInfo"):
            match = _RETRY_DELAY.match(str(entry.get("retryDelay", "")))
            if match:
                return float(match[1])
    return None


def _name(value: object) -> str:
    """An enum member's API name (``SAFETY``), or the value as text."""
    return str(getattr(value, "value", value))


# What chimera.providers.table loads for this team.
Config = GoogleConfig
Provider = GoogleProvider
