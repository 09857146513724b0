"""AnthropicProvider: the real SDK client over HTTP to a fake Messages API."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from chimera.errors import ProviderError
from chimera.fakes.anthropic_api import (
    DEFAULT_CODE,
    DEFAULT_OUTPUT_TOKENS,
    FakeAnthropicAPI,
    error_event,
    error_reply,
    first,
    message_events,
    sent_api_key,
    stream_reply,
)
from chimera.fakes.server import Pause
from chimera.providers.anthropic import AnthropicConfig, AnthropicProvider
from chimera.providers.base import AnswerStarted, CodeResult, Provider, ProviderEvent, Thought
from chimera.providers.faults import RATE_LIMIT_MESSAGE

KEY = "sk-ant-test-0123456789abcdef"
BRIEF = "Create a login form with email and password"
EXPECTED_THOUGHTS = [
    "The brief asks for a login form with an email and a password field.",
    "I will keep both values in React state.",
    "Validation: the email needs an @ and a dot, the password must not be empty.",
    "Errors show next to each field, and the submit button is disabled while sending.",
]

MakeProvider = Callable[..., AnthropicProvider]


@pytest.fixture
async def api() -> AsyncIterator[FakeAnthropicAPI]:
    async with FakeAnthropicAPI(api_key=KEY) as fake:
        yield fake


@pytest.fixture
async def make_provider(api: FakeAnthropicAPI) -> AsyncIterator[MakeProvider]:
    providers: list[AnthropicProvider] = []

    def make(**settings: Any) -> AnthropicProvider:
        fields: dict[str, Any] = {
            "api_key": KEY,
            "base_url": api.url,
            "backoff_base": 0.001,
            "timeout": 2.0,
            "max_retries": 2,
        }
        fields.update(settings)
        provider = AnthropicProvider(AnthropicConfig(**fields))
        providers.append(provider)
        return provider

    yield make
    for provider in providers:
        await provider.aclose()


async def collect(provider: AnthropicProvider) -> list[ProviderEvent]:
    return [event async for event in provider.stream(BRIEF)]


async def collect_failure(provider: AnthropicProvider) -> tuple[list[ProviderEvent], ProviderError]:
    events: list[ProviderEvent] = []
    with pytest.raises(ProviderError) as caught:
        async for event in provider.stream(BRIEF):
            events.append(event)
    return events, caught.value


def thoughts(events: list[ProviderEvent]) -> list[str]:
    return [event.text for event in events if isinstance(event, Thought)]


def assert_complete(events: list[ProviderEvent]) -> None:
    """Thoughts, one AnswerStarted, then one CodeResult with the fake's code, last."""
    assert sum(isinstance(event, AnswerStarted) for event in events) == 1
    assert events[-1] == CodeResult(
        code=DEFAULT_CODE, language="tsx", token_count=DEFAULT_OUTPUT_TOKENS
    )
    assert all(isinstance(event, Thought) for event in events[: events.index(AnswerStarted())])


# -- the happy path ------------------------------------------------------------


async def test_streams_grouped_thoughts_then_answer_then_code(
    api: FakeAnthropicAPI, make_provider: MakeProvider
) -> None:
    events = await collect(make_provider())

    assert events == [*map(Thought, EXPECTED_THOUGHTS), AnswerStarted(), events[-1]]
    assert_complete(events)


async def test_sends_key_model_stream_flag_thinking_and_prompt(
    api: FakeAnthropicAPI, make_provider: MakeProvider
) -> None:
    await collect(make_provider(model="claude-test-1", thinking_budget=1500, max_tokens=4000))

    [request] = api.requests
    assert sent_api_key(request) == KEY
    assert "anthropic-version" in request.headers
    body = request.json()
    assert body["model"] == "claude-test-1"
    assert body["stream"] is True
    assert body["max_tokens"] == 4000
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1500, "display": "summarized"}
    assert "ONE fenced code block" in body["system"]
    assert body["messages"] == [{"role": "user", "content": f"Brief: {BRIEF}"}]


@pytest.mark.parametrize(
    ("crlf", "split", "split_delay"),
    [(True, None, 0.0), (False, 1, 0.0), (True, 3, 0.0), (True, 61, 0.001), (False, 64, 0.0)],
)
async def test_line_endings_and_odd_byte_splits_change_nothing(
    api: FakeAnthropicAPI,
    make_provider: MakeProvider,
    crlf: bool,
    split: int | None,
    split_delay: float,
) -> None:
    api.script(stream_reply(crlf=crlf, split=split, split_delay=split_delay))

    events = await collect(make_provider())

    assert thoughts(events) == EXPECTED_THOUGHTS
    assert_complete(events)


async def test_model_property_and_key_kept_out_of_repr(make_provider: MakeProvider) -> None:
    provider: Provider = make_provider(model="claude-x")
    assert provider.model == "claude-x"
    assert KEY not in repr(AnthropicConfig(api_key=KEY))


# -- HTTP error answers ----------------------------------------------------------


async def test_rate_limit_is_retried_after_retry_after(
    api: FakeAnthropicAPI, make_provider: MakeProvider
) -> None:
    api.script(error_reply(429, "rate_limit_error", retry_after="0.3"))

    events = await collect(make_provider())

    assert_complete(events)
    first_try, second_try = api.requests
    assert second_try.received_at - first_try.received_at >= 0.3


async def test_rate_limit_that_persists_fails_with_the_guide_message(
    api: FakeAnthropicAPI, make_provider: MakeProvider
) -> None:
    api.default = error_reply(429, "rate_limit_error", retry_after="0")

    events, error = await collect_failure(make_provider(max_retries=2))

    assert str(error) == RATE_LIMIT_MESSAGE == "API rate limit exceeded"
    assert error.status == 429
    assert events == []
    assert len(api.requests) == 3


async def test_retry_after_longer_than_the_limit_is_not_waited_for(
    api: FakeAnthropicAPI, make_provider: MakeProvider
) -> None:
    api.script(error_reply(429, "rate_limit_error", retry_after="3600"))

    started = time.monotonic()
    _, error = await collect_failure(make_provider())

    assert str(error) == RATE_LIMIT_MESSAGE
    assert len(api.requests) == 1
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("status", "error_type", "message"),
    [
        (529, "overloaded_error", "Anthropic API is overloaded (529 overloaded_error)"),
        (503, "api_error", "Anthropic API is overloaded (503 api_error)"),
        (500, "api_error", "Anthropic API server error (500 api_error)"),
    ],
)
async def test_server_errors_are_retried_then_reported(
    api: FakeAnthropicAPI, make_provider: MakeProvider, status: int, error_type: str, message: str
) -> None:
    api.script(error_reply(status, error_type))
    assert_complete(await collect(make_provider()))
    assert len(api.requests) == 2

    api.default = error_reply(status, error_type)
    _, error = await collect_failure(make_provider(max_retries=1))
    assert str(error) == message
    assert error.status == status
    assert len(api.requests) == 2 + 2


async def test_should_retry_false_is_honoured(
    api: FakeAnthropicAPI, make_provider: MakeProvider
) -> None:
    api.script(error_reply(529, "overloaded_error", should_retry=False))

    _, error = await collect_failure(make_provider())

    assert error.status == 529
    assert len(api.requests) == 1


async def test_bad_request_is_not_retried_and_says_why(
    api: FakeAnthropicAPI, make_provider: MakeProvider
) -> None:
    api.script(error_reply(400, "invalid_request_error", "max_tokens: must be at most 64000"))

    _, error = await collect_failure(make_provider())

    assert str(error) == (
        "Anthropic API rejected the request (400 invalid_request_error): "
        "max_tokens: must be at most 64000"
    )
    assert error.status == 400
    assert len(api.requests) == 1


async def test_api_key_never_appears_in_errors_or_logs(
    api: FakeAnthropicAPI, make_provider: MakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api.script(
        error_reply(529, "overloaded_error", f"overloaded for key {KEY}"),
        error_reply(401, "authentication_error", f"invalid x-api-key: {KEY}"),
    )

    _, error = await collect_failure(make_provider())

    assert str(error) == (
        "Anthropic API refused the credentials (401 authentication_error): "
        "invalid x-api-key: [redacted]"
    )
    assert KEY not in str(error)
    assert KEY not in repr(error)
    assert caplog.records, "expected the retry to be logged"
    assert KEY not in caplog.text


# -- faults inside the stream ------------------------------------------------------
# (A stream cut before its final event and a malformed frame: test_provider_contract.py,
# run against both wire formats.)


async def test_connection_dropped_mid_stream_is_retried_keeping_earlier_thoughts(
    api: FakeAnthropicAPI, make_provider: MakeProvider
) -> None:
    events = message_events()
    api.script(stream_reply(events[: first(events, "content_block_stop") + 1], ending="drop"))

    result = await collect(make_provider())

    # The first attempt's thoughts stay; the second attempt thinks again.
    assert thoughts(result) == EXPECTED_THOUGHTS + EXPECTED_THOUGHTS
    assert_complete(result)
    assert len(api.requests) == 2


async def test_drop_during_the_answer_gives_one_answer_started(
    api: FakeAnthropicAPI, make_provider: MakeProvider
) -> None:
    events = message_events()
    api.script(stream_reply(events[: first(events, "message_delta")], ending="drop", split=5))

    result = await collect(make_provider())

    assert_complete(result)
    assert len(api.requests) == 2


async def test_dropped_connection_that_persists_is_reported(
    api: FakeAnthropicAPI, make_provider: MakeProvider
) -> None:
    api.default = stream_reply(message_events()[:3], ending="drop")

    _, error = await collect_failure(make_provider(max_retries=1))

    assert str(error) == "Lost the connection to the Anthropic API"
    assert error.status is None
    assert len(api.requests) == 2


async def test_error_event_mid_stream_is_retried(
    api: FakeAnthropicAPI, make_provider: MakeProvider
) -> None:
    events = message_events()
    cut = first(events, "content_block_stop")
    api.script(stream_reply([*events[:cut], error_event("overloaded_error", "Overloaded")]))

    result = await collect(make_provider())

    assert_complete(result)
    assert len(api.requests) == 2


async def test_error_event_that_persists_is_reported_with_its_status(
    api: FakeAnthropicAPI, make_provider: MakeProvider
) -> None:
    api.default = stream_reply([*message_events()[:4], error_event("overloaded_error")])

    _, error = await collect_failure(make_provider(max_retries=1))

    assert str(error) == "Anthropic API is overloaded (529 overloaded_error)"
    assert error.status == 529


async def test_rate_limit_error_event_gives_the_guide_message(
    api: FakeAnthropicAPI, make_provider: MakeProvider
) -> None:
    api.default = stream_reply([error_event("rate_limit_error", "slow down")])

    _, error = await collect_failure(make_provider(max_retries=0))

    assert str(error) == RATE_LIMIT_MESSAGE
    assert error.status == 429


async def test_slow_response_times_out_and_is_retried(
    api: FakeAnthropicAPI, make_provider: MakeProvider
) -> None:
    api.script(stream_reply(header_delay=1.0))

    result = await collect(make_provider(timeout=0.2))

    assert_complete(result)
    assert len(api.requests) == 2


async def test_stall_mid_stream_times_out_then_is_reported(
    api: FakeAnthropicAPI, make_provider: MakeProvider
) -> None:
    events = message_events()
    api.default = stream_reply([*events[:5], Pause(2.0), *events[5:]])

    _, error = await collect_failure(make_provider(timeout=0.5, max_retries=1))

    assert str(error) == "Anthropic API did not answer in time"
    assert len(api.requests) == 2


async def test_unreachable_api_is_reported_as_connection_loss(
    make_provider: MakeProvider,
) -> None:
    async with FakeAnthropicAPI() as gone:
        url = gone.url
    _, error = await collect_failure(make_provider(base_url=url, max_retries=1))

    assert str(error) == "Lost the connection to the Anthropic API"


# -- answers without code ------------------------------------------------------------


async def test_answer_without_code_block_is_an_error_not_retried(
    api: FakeAnthropicAPI, make_provider: MakeProvider
) -> None:
    api.script(stream_reply(message_events(answer="I would rather not write code today.")))

    events, error = await collect_failure(make_provider())

    assert str(error) == "Anthropic answer contained no fenced code block"
    assert AnswerStarted() in events
    assert len(api.requests) == 1


async def test_answer_cut_off_at_max_tokens_says_so(
    api: FakeAnthropicAPI, make_provider: MakeProvider
) -> None:
    answer = "```tsx\nexport default function LoginForm() {\n  return (\n"
    api.script(stream_reply(message_events(answer=answer, stop_reason="max_tokens")))

    _, error = await collect_failure(make_provider())

    assert "cut off at the token limit" in str(error)


# -- cancellation ------------------------------------------------------------------


async def test_cancelling_the_consumer_closes_the_connection_at_once(
    api: FakeAnthropicAPI, make_provider: MakeProvider
) -> None:
    events = message_events()
    api.script(stream_reply(events[: first(events, "content_block_stop") + 1], ending="hang"))
    provider = make_provider()
    seen: list[ProviderEvent] = []
    got_thought = asyncio.Event()

    async def consume() -> None:
        async for event in provider.stream(BRIEF):
            seen.append(event)
            got_thought.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_thought.wait(), 5)
    [request] = api.requests
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    closed_at = await api.wait_closed(request, within=2.0)
    assert closed_at - cancelled_at < 0.5
    assert seen and all(isinstance(event, Thought) for event in seen)
    assert len(api.requests) == 1  # no retry after a cancellation


async def test_closing_the_stream_early_closes_the_connection(
    api: FakeAnthropicAPI, make_provider: MakeProvider
) -> None:
    events = message_events()
    api.script(stream_reply(events[: first(events, "content_block_stop") + 1], ending="hang"))
    stream = make_provider().stream(BRIEF)

    event = await anext(stream)
    assert isinstance(event, Thought)
    closing_at = time.monotonic()
    await stream.aclose()  # type: ignore[attr-defined]

    closed_at = await api.wait_closed(api.requests[0], within=2.0)
    assert closed_at - closing_at < 0.5


# -- configuration ---------------------------------------------------------------------


async def test_base_url_comes_from_the_environment_when_not_given(
    api: FakeAnthropicAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
    config = AnthropicConfig.from_env({"ANTHROPIC_API_KEY": KEY}, base_url=None, backoff_base=0.001)
    assert config is not None and config.base_url is None
    provider = AnthropicProvider(config)
    try:
        assert_complete(await collect(provider))
    finally:
        await provider.aclose()
    assert sent_api_key(api.requests[0]) == KEY


async def test_wrong_key_is_refused_by_the_fake_and_not_retried(
    api: FakeAnthropicAPI, make_provider: MakeProvider
) -> None:
    _, error = await collect_failure(make_provider(api_key="sk-ant-wrong"))

    assert str(error) == (
        "Anthropic API refused the credentials (401 authentication_error): invalid x-api-key"
    )
    assert len(api.requests) == 1


async def test_explicit_base_url_wins_over_the_environment(
    api: FakeAnthropicAPI, monkeypatch: pytest.MonkeyPatch, make_provider: MakeProvider
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    assert_complete(await collect(make_provider(base_url=api.url)))


def test_from_env_needs_a_key_and_ignores_unset_settings() -> None:
    assert AnthropicConfig.from_env({}) is None
    assert AnthropicConfig.from_env({"ANTHROPIC_API_KEY": "  "}) is None
    config = AnthropicConfig.from_env(
        {"ANTHROPIC_API_KEY": KEY}, model="claude-opus-4-1", base_url=None, timeout=None
    )
    assert config == AnthropicConfig(api_key=KEY, model="claude-opus-4-1")
    assert config.retry_policy.max_attempts == config.max_retries + 1


@pytest.mark.parametrize(
    "settings",
    [{"api_key": ""}, {"thinking_budget": 512}, {"max_tokens": 2048}, {"timeout": 0}],
)
def test_bad_settings_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        AnthropicConfig(**{"api_key": KEY, **settings})
