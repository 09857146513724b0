"""The Anthropic team's provider: Claude with extended thinking, streamed.

One :meth:`AnthropicProvider.stream` call sends one Messages API request
(``stream=True``, ``thinking={"type": "enabled", ...}``) through
``anthropic.AsyncAnthropic`` and turns its server-sent events into
:mod:`chimera.providers.base` events:

- ``thinking_delta`` → :class:`Thought`, grouped into sentences or
  paragraphs by :class:`~chimera.providers.thoughts.ThoughtGrouper`, the rest
  flushed when the thinking block stops;
- the first ``text`` content block start → :class:`AnswerStarted`;
- ``text_delta`` (the answer after the thinking) → :class:`CodeDelta`, the
  code of its fenced block as it streams (the prose around it is not code:
  :class:`~chimera.providers.codeblock.CodeStream`);
- ``message_stop`` → :class:`CodeResult` with the code of the answer's
  fenced block, ``token_count`` = the message's ``output_tokens`` (what
  the model generated, thinking included; the prompt is not counted) and
  ``input_tokens`` = its ``input_tokens`` (the prompt).

Failures are retried by :func:`chimera.providers.retry.with_retries` (the
SDK's own retries are off, ``max_retries=0``); see that module for the list.
SDK and transport exceptions are translated into
:class:`~chimera.errors.ProviderError` in :meth:`AnthropicProvider._translate`
and nowhere else. Error messages never contain the API key.

Lifecycle: the provider owns one ``AsyncAnthropic`` client (and its
connection pool) from construction until :meth:`AnthropicProvider.aclose`.
Cancellation: the response stream is entered with ``async with``, so
cancelling the consumer's task, or closing the iterator, closes the HTTP
response at once; ``CancelledError`` is never caught.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import anthropic
import httpx2
from anthropic.types import (
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
    TextBlock,
    TextDelta,
    ThinkingConfigEnabledParam,
    ThinkingDelta,
)

from chimera.errors import ProviderError
from chimera.providers import env
from chimera.providers.assembler import AnswerAssembler
from chimera.providers.base import ProviderEvent
from chimera.providers.faults import RetryableError, http_failure, parse_retry_after
from chimera.providers.prompt import SYSTEM_PROMPT, user_message
from chimera.providers.retry import RetryingProvider
from chimera.providers.table import (
    ANTHROPIC_MAX_TOKENS,
    ANTHROPIC_MODEL,
    ANTHROPIC_THINKING_BUDGET,
    RealConfig,
)

API_KEY_ENV = env.ANTHROPIC_API_KEY_ENV
BASE_URL_ENV = env.ANTHROPIC_BASE_URL_ENV  # read by the SDK itself when base_url is None
DEFAULT_MODEL = ANTHROPIC_MODEL
DEFAULT_THINKING_BUDGET = ANTHROPIC_THINKING_BUDGET
DEFAULT_MAX_TOKENS = ANTHROPIC_MAX_TOKENS
_SOURCE = "Anthropic"

# In-stream ``error`` events arrive on a 200 response; their ``error.type``
# says which HTTP status the same failure has outside a stream.
_ERROR_TYPE_STATUS: Mapping[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


@dataclass(frozen=True, slots=True)
class AnthropicConfig(RealConfig):
    """Settings of :class:`AnthropicProvider` (and those of every provider:
    :class:`~chimera.providers.table.RealConfig`).

    ``thinking_display`` is sent as ``thinking.display`` ("summarized" makes
    models that hide their thinking by default show it); None leaves it out.
    """

    SOURCE: ClassVar[str] = _SOURCE
    KEY_ENVS: ClassVar[tuple[str, ...]] = (API_KEY_ENV,)

    model: str = DEFAULT_MODEL
    thinking_budget: int = DEFAULT_THINKING_BUDGET
    max_tokens: int = DEFAULT_MAX_TOKENS
    thinking_display: Literal["summarized", "omitted"] | None = "summarized"

    def _check(self) -> None:
        if self.thinking_budget < 1024:
            raise ValueError("thinking_budget must be at least 1024 tokens")
        if self.max_tokens <= self.thinking_budget:
            raise ValueError("max_tokens must be greater than thinking_budget")


class AnthropicProvider(RetryingProvider[AnthropicConfig]):
    """A :class:`~chimera.providers.base.Provider` backed by the Anthropic Messages API."""

    TEAM = "anthropic"

    def __init__(self, config: AnthropicConfig) -> None:
        super().__init__(config)
        self._client = anthropic.AsyncAnthropic(
            api_key=config.api_key,
            base_url=config.base_url or None,
            timeout=config.timeout,
            max_retries=0,  # with_retries is the one retry loop
        )

    @property
    def base_url(self) -> str:
        """Where requests go (after ``ANTHROPIC_BASE_URL`` was applied)."""
        return str(self._client.base_url)

    async def aclose(self) -> None:
        await self._client.close()

    async def _attempt(self, brief: str) -> AsyncGenerator[ProviderEvent, None]:
        """One request, from sending it to ``message_stop``."""
        config = self._config
        thinking: ThinkingConfigEnabledParam = {
            "type": "enabled",
            "budget_tokens": config.thinking_budget,
        }
        if config.thinking_display is not None:
            thinking["display"] = config.thinking_display
        assembler = AnswerAssembler(_SOURCE, missing_end="before message_stop")
        output_tokens = input_tokens = 0
        stop_reason: str | None = None
        stopped = False
        try:
            stream = await self._client.messages.create(
                model=config.model,
                max_tokens=config.max_tokens,
                system=SYSTEM_PROMPT,
                messages=[{"role": "user", "content": user_message(brief)}],
                thinking=thinking,
                stream=True,
            )
            async with stream:
                async for event in stream:
                    events: list[ProviderEvent] = []
                    if isinstance(event, RawMessageStartEvent):
                        output_tokens = event.message.usage.output_tokens or 0
                        input_tokens = event.message.usage.input_tokens or 0
                    elif isinstance(event, RawContentBlockStartEvent):
                        if isinstance(event.content_block, TextBlock):
                            events = assembler.answer(event.content_block.text or "")
                    elif isinstance(event, RawContentBlockDeltaEvent):
                        delta = event.delta
                        if isinstance(delta, ThinkingDelta):
                            events = assembler.thinking(delta.thinking)
                        elif isinstance(delta, TextDelta):
                            events = assembler.answer(delta.text)
                    elif isinstance(event, RawContentBlockStopEvent):
                        events = assembler.thinking_ended()
                    elif isinstance(event, RawMessageDeltaEvent):
                        output_tokens = event.usage.output_tokens or output_tokens
                        input_tokens = event.usage.input_tokens or input_tokens
                        stop_reason = event.delta.stop_reason or stop_reason
                    elif isinstance(event, RawMessageStopEvent):
                        stopped = True
                    for item in events:
                        yield item
        except (
            anthropic.APIError,
            httpx2.HTTPError,
            json.JSONDecodeError,
            UnicodeDecodeError,
        ) as exc:
            raise self._translate(exc) from exc
        for item in assembler.end(complete=stopped):
            yield item
        if stop_reason == "refusal":
            raise ProviderError("Anthropic model declined the brief (stop_reason refusal)")
        for item in assembler.result(
            token_count=output_tokens, input_tokens=input_tokens, stop_reason=stop_reason
        ):
            yield item

    def _translate(self, exc: Exception) -> ProviderError:
        """The one place SDK and transport exceptions become Chimera's."""
        secrets = (self._config.api_key,)
        if isinstance(exc, anthropic.APIStatusError):
            status = exc.status_code
            if status < 400:  # an ``error`` event inside a 200 stream
                status = _ERROR_TYPE_STATUS.get(exc.type or "", 500)
            headers = exc.response.headers
            should_retry = headers.get("x-should-retry")
            return http_failure(
                _SOURCE,
                status,
                exc.type,
                exc.api_message,
                secrets=secrets,
                retry_after=parse_retry_after(headers),
                retryable=None if should_retry is None else should_retry == "true",
            )
        if isinstance(exc, anthropic.APITimeoutError | httpx2.TimeoutException):
            return RetryableError("Anthropic API did not answer in time")
        if isinstance(exc, anthropic.APIConnectionError | httpx2.TransportError):
            return RetryableError("Lost the connection to the Anthropic API")
        if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
            return RetryableError("Anthropic API sent a malformed stream event")
        return ProviderError(f"Anthropic request failed ({type(exc).__name__})")


# What chimera.providers.table loads for this team.
Config = AnthropicConfig
Provider = AnthropicProvider
