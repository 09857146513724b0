"""The real providers as the provider tests drive them: one :class:`Wire` per wire format.

A :class:`Wire` is the per-provider adapter of the contract suite
(``test_provider_contract.py``): how to script each fault in that provider's
fake API, and the provider's own words for it. Its repr is its id
(``anthropic-messages-sse``, ``gemini-streamGenerateContent-sse``), which the
tests pass as the message of their assertions so a failure names the wire
format. :func:`open_contract` starts a wire's fake and makes providers
pointed at it (the real SDK over HTTP), closing them afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Unpack

import pytest

from chimera.errors import ProviderError
from chimera.events import TeamName, splice
from chimera.fakes import anthropic_api, gemini_api
from chimera.fakes.server import Delivery, FakeHTTPServer, RecordedRequest, Reply
from chimera.providers.anthropic import AnthropicConfig, AnthropicProvider
from chimera.providers.base import AnswerStarted, CodeDelta, CodeResult, ProviderEvent, Thought
from chimera.providers.google import GoogleConfig, GoogleProvider
from chimera.providers.retry import RetryingProvider
from chimera.providers.table import SPECS, ProviderSpec, RealConfig

KEY = "contract-test-key-0123456789"
BRIEF = "Create a login form with email and password"
EXPECTED_THOUGHTS = [
    "The brief asks for a login form with an email and a password field.",
    "I will keep both values in React state.",
    "Validation: the email needs an @ and a dot, the password must not be empty.",
    "Errors show next to each field, and the submit button is disabled while sending.",
]
DEFAULT_ANSWER = anthropic_api.DEFAULT_ANSWER  # both fakes answer it
CUT_OFF_ANSWER = "```tsx\nexport default function LoginForm() {\n  return (\n"
TIMEOUT = 2.0  # the providers' read time-out: a loaded machine never stalls a stream this long

ErrorCase = tuple[int, str, str]  # HTTP status, the API's reason, the provider's message


class Wire:
    """One provider's wire format, as the contract needs it (see the module docstring)."""

    id: ClassVar[str]
    team: ClassVar[TeamName]
    config_type: ClassVar[type[RealConfig]]
    provider_type: ClassVar[type[RetryingProvider[Any]]]
    source: ClassVar[str]  # the API's name in the provider's messages
    token_count: ClassVar[int]  # what the fake's default stream costs
    input_tokens: ClassVar[int]  # the prompt's tokens, as the fake's stream says
    cut_message: ClassVar[str]  # the stream ended without its final event
    malformed_message: ClassVar[str]
    overload: ClassVar[ErrorCase]  # what error_event() says, as the provider reports it
    server_errors: ClassVar[Sequence[ErrorCase]]
    bad_request: ClassVar[tuple[str, str]]  # reason and explanation of a 400
    refusal: ClassVar[tuple[int, str]]  # a refused key: status and reason
    wrong_key_message: ClassVar[str]  # what the fake's own refusal of a wrong key becomes
    bad_settings: ClassVar[Sequence[dict[str, Any]]]  # besides those every provider refuses

    def __repr__(self) -> str:
        return self.id

    @property
    def spec(self) -> ProviderSpec:
        return SPECS[self.team]

    def fake(self, *, api_key: str | None = None) -> FakeHTTPServer:
        """The fake API; with ``api_key``, it refuses any other key as the API does."""
        raise NotImplementedError

    def items(
        self, *, answer: str = anthropic_api.DEFAULT_ANSWER, max_tokens: bool = False
    ) -> list[Any]:
        """A complete stream answering ``answer``; ``max_tokens``: stopped at the token limit."""
        raise NotImplementedError

    def reply(
        self, items: Sequence[Any] | None = None, *, crlf: bool | None = None,
        **delivery: Unpack[Delivery],
    ) -> Reply:
        """A 200 stream of ``items`` (default: a whole answer); ``crlf`` None: the API's own."""
        raise NotImplementedError

    def cut(self, items: Sequence[Any]) -> list[Any]:
        """``items`` without the final event."""
        raise NotImplementedError

    def malformed(self) -> Any:
        raise NotImplementedError

    def error_event(self) -> Any:
        """An overload error inside a 200 stream."""
        raise NotImplementedError

    def rate_limit_event(self) -> Any:
        """A rate-limit error inside a 200 stream."""
        raise NotImplementedError

    def answer_start(self, items: Sequence[Any]) -> int:
        """The index of the first answer item."""
        raise NotImplementedError

    def thoughts_out(self, items: Sequence[Any]) -> int:
        """How many items it takes for every thought to be out: Anthropic's are
        flushed when the thinking block stops, Gemini's when the answer starts."""
        raise NotImplementedError

    def error(self, status: int, reason: str, message: str = "error from the fake") -> Reply:
        raise NotImplementedError

    def rate_limited(self, retry_after: str) -> Reply:
        """A 429 with a ``Retry-After`` header."""
        raise NotImplementedError

    def sent_key(self, request: RecordedRequest) -> str | None:
        raise NotImplementedError


class AnthropicWire(Wire):
    id = "anthropic-messages-sse"
    team = TeamName.ANTHROPIC
    config_type = AnthropicConfig
    provider_type = AnthropicProvider
    source = "Anthropic"
    token_count = anthropic_api.DEFAULT_OUTPUT_TOKENS
    input_tokens = anthropic_api.DEFAULT_INPUT_TOKENS
    cut_message = "Anthropic stream ended before message_stop"
    malformed_message = "Anthropic API sent a malformed stream event"
    overload = (529, "overloaded_error", "Anthropic API is overloaded (529 overloaded_error)")
    server_errors = (
        overload,
        (503, "api_error", "Anthropic API is overloaded (503 api_error)"),
        (500, "api_error", "Anthropic API server error (500 api_error)"),
    )
    bad_request = ("invalid_request_error", "max_tokens: must be at most 64000")
    refusal = (401, "authentication_error")
    wrong_key_message = (
        "Anthropic API refused the credentials (401 authentication_error): invalid x-api-key"
    )
    bad_settings = ({"thinking_budget": 512}, {"max_tokens": 2048})

    def fake(self, *, api_key: str | None = None) -> FakeHTTPServer:
        return anthropic_api.FakeAnthropicAPI(api_key=api_key)

    def items(self, *, answer: str = DEFAULT_ANSWER, max_tokens: bool = False) -> list[Any]:
        stop = "max_tokens" if max_tokens else "end_turn"
        return anthropic_api.message_events(answer=answer, stop_reason=stop)

    def reply(
        self, items: Sequence[Any] | None = None, *, crlf: bool | None = None,
        **delivery: Unpack[Delivery],
    ) -> Reply:
        return anthropic_api.stream_reply(items, crlf=bool(crlf), **delivery)

    def cut(self, items: Sequence[Any]) -> list[Any]:
        return anthropic_api.without_stop(items)

    def malformed(self) -> Any:
        return anthropic_api.malformed_event()

    def error_event(self) -> Any:
        return anthropic_api.error_event("overloaded_error", "Overloaded")

    def rate_limit_event(self) -> Any:
        return anthropic_api.error_event("rate_limit_error", "slow down")

    def answer_start(self, items: Sequence[Any]) -> int:
        return self.thoughts_out(items)  # the text block starts as the thinking block stops

    def thoughts_out(self, items: Sequence[Any]) -> int:
        return anthropic_api.first(items, "content_block_stop") + 1

    def error(self, status: int, reason: str, message: str = "error from the fake") -> Reply:
        return anthropic_api.error_reply(status, reason, message)

    def rate_limited(self, retry_after: str) -> Reply:
        return anthropic_api.error_reply(429, "rate_limit_error", retry_after=retry_after)

    def sent_key(self, request: RecordedRequest) -> str | None:
        return anthropic_api.sent_api_key(request)


class GeminiWire(Wire):
    id = "gemini-streamGenerateContent-sse"
    team = TeamName.GOOGLE
    config_type = GoogleConfig
    provider_type = GoogleProvider
    source = "Gemini"
    token_count = gemini_api.DEFAULT_CANDIDATES_TOKENS + gemini_api.DEFAULT_THOUGHTS_TOKENS
    input_tokens = gemini_api.DEFAULT_PROMPT_TOKENS
    cut_message = "Gemini stream ended without a finishReason"
    malformed_message = "Gemini API sent a malformed stream chunk"
    overload = (503, "UNAVAILABLE", "Gemini API is overloaded (503 UNAVAILABLE)")
    server_errors = (
        overload,
        (500, "INTERNAL", "Gemini API server error (500 INTERNAL)"),
        (504, "DEADLINE_EXCEEDED", "Gemini API server error (504 DEADLINE_EXCEEDED)"),
    )
    bad_request = ("INVALID_ARGUMENT", "thinking_budget is out of range")
    refusal = (403, "PERMISSION_DENIED")
    wrong_key_message = (
        "Gemini API rejected the request (400 INVALID_ARGUMENT): "
        "API key not valid. Please pass a valid API key."
    )
    bad_settings = ({"thinking_budget": -1}, {"max_output_tokens": 0})

    def fake(self, *, api_key: str | None = None) -> FakeHTTPServer:
        return gemini_api.FakeGeminiAPI(api_key=api_key)

    def items(self, *, answer: str = DEFAULT_ANSWER, max_tokens: bool = False) -> list[Any]:
        finish = "MAX_TOKENS" if max_tokens else "STOP"
        return gemini_api.response_chunks(answer=answer, finish=finish)

    def reply(
        self, items: Sequence[Any] | None = None, *, crlf: bool | None = None,
        **delivery: Unpack[Delivery],
    ) -> Reply:
        return gemini_api.stream_reply(items, crlf=crlf is not False, **delivery)

    def cut(self, items: Sequence[Any]) -> list[Any]:
        return gemini_api.without_finish(items)

    def malformed(self) -> Any:
        return gemini_api.malformed_chunk()

    def error_event(self) -> Any:
        return gemini_api.error_chunk(503, "UNAVAILABLE")

    def rate_limit_event(self) -> Any:
        return gemini_api.error_chunk(429, "RESOURCE_EXHAUSTED", "slow down")

    def answer_start(self, items: Sequence[Any]) -> int:
        return next(
            i
            for i, item in enumerate(items)
            if isinstance(item, dict)
            and not item["candidates"][0]["content"]["parts"][0].get("thought")
        )

    def thoughts_out(self, items: Sequence[Any]) -> int:
        return self.answer_start(items) + 1

    def error(self, status: int, reason: str, message: str = "error from the fake") -> Reply:
        return gemini_api.error_reply(status, reason, message)

    def rate_limited(self, retry_after: str) -> Reply:
        return gemini_api.error_reply(429, "RESOURCE_EXHAUSTED", retry_after=retry_after)

    def sent_key(self, request: RecordedRequest) -> str | None:
        return request.headers.get("x-goog-api-key")


ANTHROPIC = AnthropicWire()
GEMINI = GeminiWire()
WIRES: tuple[Wire, ...] = (ANTHROPIC, GEMINI)


@dataclass
class Contract:
    wire: Wire
    api: FakeHTTPServer
    providers: list[RetryingProvider[Any]]

    def provider(self, **settings: Any) -> RetryingProvider[Any]:
        fields: dict[str, Any] = {
            "api_key": KEY, "base_url": self.api.url, "backoff_base": 0.001,
            "timeout": TIMEOUT, "max_retries": 2, **settings,
        }
        return self.adopt(self.wire.config_type(**fields))

    def adopt(self, config: RealConfig) -> RetryingProvider[Any]:
        """The provider for ``config``, closed after the test."""
        provider = self.wire.provider_type(config)
        self.providers.append(provider)
        return provider


async def collect(provider: RetryingProvider[Any]) -> list[ProviderEvent]:
    return [event async for event in provider.stream(BRIEF)]


async def collect_failure(
    provider: RetryingProvider[Any],
) -> tuple[list[ProviderEvent], ProviderError]:
    events: list[ProviderEvent] = []
    with pytest.raises(ProviderError) as caught:
        async for event in provider.stream(BRIEF):
            events.append(event)
    return events, caught.value


def thoughts(events: list[ProviderEvent]) -> list[str]:
    return [event.text for event in events if isinstance(event, Thought)]


def spliced(events: list[ProviderEvent]) -> str:
    """The code the events' deltas make, spliced in order (chimera.events.splice)."""
    code = ""
    for event in events:
        if isinstance(event, CodeDelta):
            code = splice(code, event.offset, event.text)
    return code


def assert_complete(wire: Wire, events: list[ProviderEvent]) -> None:
    """Thoughts, one AnswerStarted, code deltas, then one CodeResult with the fake's
    code, last; the deltas (of every attempt, in order) make exactly that code."""
    assert sum(isinstance(event, AnswerStarted) for event in events) == 1, wire
    expected = CodeResult(
        code=anthropic_api.DEFAULT_CODE, language="tsx", token_count=wire.token_count,
        input_tokens=wire.input_tokens,
    )
    assert events[-1] == expected, wire
    before_answer = events[: events.index(AnswerStarted())]
    assert all(isinstance(event, Thought) for event in before_answer), wire
    assert spliced(events) == expected.code, wire


# -- the happy path ------------------------------------------------------------

@contextlib.asynccontextmanager
async def open_contract(wire: Wire) -> AsyncIterator[Contract]:
    """``wire``'s fake API (refusing any key but :data:`KEY`) for the life of the block."""
    async with wire.fake(api_key=KEY) as api:
        contract = Contract(wire, api, [])
        try:
            yield contract
        finally:
            for provider in contract.providers:
                await provider.aclose()


def contract_fixture(*wires: Wire) -> Any:
    """A ``contract`` fixture: each test that takes it runs once per wire of ``wires``
    (the test id names it), against that wire's fake (:func:`open_contract`)."""

    @pytest.fixture(params=wires, ids=repr, name="contract")
    async def fixture(request: pytest.FixtureRequest) -> AsyncIterator[Contract]:
        async with open_contract(request.param) as contract:
            yield contract

    return fixture
