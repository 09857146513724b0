"""GoogleProvider: the real google-genai client over HTTP to a fake Gemini API."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from chimera.errors import ProviderError
from chimera.fakes.anthropic_api import DEFAULT_CODE
from chimera.fakes.gemini_api import (
    DEFAULT_CANDIDATES_TOKENS,
    DEFAULT_THOUGHTS_TOKENS,
    FakeGeminiAPI,
    chunk,
    error_chunk,
    error_reply,
    request_model,
    response_chunks,
    stream_reply,
    thinking_config,
)
from chimera.fakes.server import Pause
from chimera.providers.base import AnswerStarted, CodeResult, Provider, ProviderEvent, Thought
from chimera.providers.faults import RATE_LIMIT_MESSAGE
from chimera.providers.google import GoogleConfig, GoogleProvider

KEY = "AIzaSy-test-0123456789abcdef"
BRIEF = "Create a login form with email and password"
EXPECTED_THOUGHTS = [
    "The brief asks for a login form with an email and a password field.",
    "I will keep both values in React state.",
    "Validation: the email needs an @ and a dot, the password must not be empty.",
    "Errors show next to each field, and the submit button is disabled while sending.",
]
EXPECTED_RESULT = CodeResult(
    code=DEFAULT_CODE,
    language="tsx",
    token_count=DEFAULT_CANDIDATES_TOKENS + DEFAULT_THOUGHTS_TOKENS,
)

MakeProvider = Callable[..., GoogleProvider]


@pytest.fixture
async def api() -> AsyncIterator[FakeGeminiAPI]:
    async with FakeGeminiAPI(api_key=KEY) as fake:
        yield fake


@pytest.fixture
async def make_provider(api: FakeGeminiAPI) -> AsyncIterator[MakeProvider]:
    providers: list[GoogleProvider] = []

    def make(**settings: Any) -> GoogleProvider:
        fields: dict[str, Any] = {
            "api_key": KEY,
            "base_url": api.url,
            "backoff_base": 0.001,
            "timeout": 2.0,
            "max_retries": 2,
        }
        fields.update(settings)
        provider = GoogleProvider(GoogleConfig(**fields))
        providers.append(provider)
        return provider

    yield make
    for provider in providers:
        await provider.aclose()


async def collect(provider: GoogleProvider) -> list[ProviderEvent]:
    return [event async for event in provider.stream(BRIEF)]


async def collect_failure(provider: GoogleProvider) -> tuple[list[ProviderEvent], ProviderError]:
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
    assert events[-1] == EXPECTED_RESULT
    assert all(isinstance(event, Thought) for event in events[: events.index(AnswerStarted())])


# -- the happy path ------------------------------------------------------------


async def test_streams_grouped_thoughts_then_answer_then_code(
    make_provider: MakeProvider,
) -> None:
    events = await collect(make_provider())

    assert events == [*map(Thought, EXPECTED_THOUGHTS), AnswerStarted(), EXPECTED_RESULT]


async def test_sends_key_model_and_thinking_config_to_the_sse_endpoint(
    api: FakeGeminiAPI, make_provider: MakeProvider
) -> None:
    await collect(
        make_provider(model="gemini-test-1", thinking_budget=1500, max_output_tokens=4000)
    )

    [request] = api.requests
    assert request.headers["x-goog-api-key"] == KEY
    assert request.path == "/v1beta/models/gemini-test-1:streamGenerateContent"
    assert request.query == {"alt": "sse"}
    assert request_model(request) == "gemini-test-1"
    assert thinking_config(request) == {"includeThoughts": True, "thinkingBudget": 1500}
    body = request.json()
    assert body["generationConfig"]["maxOutputTokens"] == 4000
    assert "ONE fenced code block" in body["systemInstruction"]["parts"][0]["text"]
    assert body["contents"] == [{"role": "user", "parts": [{"text": f"Brief: {BRIEF}"}]}]


@pytest.mark.parametrize(
    ("crlf", "split", "split_delay"),
    [(True, None, 0.0), (False, 1, 0.0), (True, 3, 0.0), (True, 61, 0.001), (False, 64, 0.0)],
)
async def test_line_endings_and_odd_byte_splits_change_nothing(
    api: FakeGeminiAPI,
    make_provider: MakeProvider,
    crlf: bool,
    split: int | None,
    split_delay: float,
) -> None:
    api.script(stream_reply(crlf=crlf, split=split, split_delay=split_delay))

    events = await collect(make_provider())

    assert thoughts(events) == EXPECTED_THOUGHTS
    assert_complete(events)


async def test_thought_and_answer_parts_in_one_chunk(
    api: FakeGeminiAPI, make_provider: MakeProvider
) -> None:
    answer = f"```tsx\n{DEFAULT_CODE}\n```"
    usage = {"promptTokenCount": 5, "candidatesTokenCount": 70, "thoughtsTokenCount": 30}
    api.script(
        stream_reply(
            [
                chunk(
                    [{"text": "Plan: one form.", "thought": True}, {"text": answer}],
                    finish="STOP",
                    usage=usage,
                )
            ]
        )
    )

    events = await collect(make_provider())

    assert events == [
        Thought("Plan: one form."),
        AnswerStarted(),
        CodeResult(code=DEFAULT_CODE, language="tsx", token_count=100),
    ]


async def test_model_property_and_key_kept_out_of_repr(make_provider: MakeProvider) -> None:
    provider: Provider = make_provider(model="gemini-x")
    assert provider.model == "gemini-x"
    assert KEY not in repr(GoogleConfig(api_key=KEY))


# -- HTTP error answers ----------------------------------------------------------


async def test_rate_limit_is_retried_after_the_retry_info_delay(
    api: FakeGeminiAPI, make_provider: MakeProvider
) -> None:
    api.script(error_reply(429, "RESOURCE_EXHAUSTED", retry_delay="0.3s"))

    assert_complete(await collect(make_provider()))

    first_try, second_try = api.requests
    assert second_try.received_at - first_try.received_at >= 0.3


async def test_rate_limit_is_retried_after_retry_after(
    api: FakeGeminiAPI, make_provider: MakeProvider
) -> None:
    api.script(error_reply(429, "RESOURCE_EXHAUSTED", retry_after="0.3"))

    assert_complete(await collect(make_provider()))

    first_try, second_try = api.requests
    assert second_try.received_at - first_try.received_at >= 0.3


async def test_rate_limit_that_persists_fails_with_the_guide_message(
    api: FakeGeminiAPI, make_provider: MakeProvider
) -> None:
    api.default = error_reply(429, "RESOURCE_EXHAUSTED", retry_delay="0s")

    events, error = await collect_failure(make_provider(max_retries=2))

    assert str(error) == RATE_LIMIT_MESSAGE == "API rate limit exceeded"
    assert error.status == 429
    assert events == []
    assert len(api.requests) == 3


async def test_retry_delay_longer_than_the_limit_is_not_waited_for(
    api: FakeGeminiAPI, make_provider: MakeProvider
) -> None:
    api.script(error_reply(429, "RESOURCE_EXHAUSTED", retry_delay="3600s"))

    started = time.monotonic()
    _, error = await collect_failure(make_provider())

    assert str(error) == RATE_LIMIT_MESSAGE
    assert len(api.requests) == 1
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("status", "grpc_status", "message"),
    [
        (503, "UNAVAILABLE", "Gemini API is overloaded (503 UNAVAILABLE)"),
        (500, "INTERNAL", "Gemini API server error (500 INTERNAL)"),
        (504, "DEADLINE_EXCEEDED", "Gemini API server error (504 DEADLINE_EXCEEDED)"),
    ],
)
async def test_server_errors_are_retried_then_reported(
    api: FakeGeminiAPI, make_provider: MakeProvider, status: int, grpc_status: str, message: str
) -> None:
    api.script(error_reply(status, grpc_status))
    assert_complete(await collect(make_provider()))
    assert len(api.requests) == 2

    api.default = error_reply(status, grpc_status)
    _, error = await collect_failure(make_provider(max_retries=1))
    assert str(error) == message
    assert error.status == status
    assert len(api.requests) == 2 + 2


async def test_bad_request_is_not_retried_and_says_why(
    api: FakeGeminiAPI, make_provider: MakeProvider
) -> None:
    api.script(error_reply(400, "INVALID_ARGUMENT", "thinking_budget is out of range"))

    _, error = await collect_failure(make_provider())

    assert str(error) == (
        "Gemini API rejected the request (400 INVALID_ARGUMENT): thinking_budget is out of range"
    )
    assert error.status == 400
    assert len(api.requests) == 1


async def test_wrong_key_is_refused_and_not_retried(
    api: FakeGeminiAPI, make_provider: MakeProvider
) -> None:
    _, error = await collect_failure(make_provider(api_key="AIza-wrong"))

    assert str(error) == (
        "Gemini API rejected the request (400 INVALID_ARGUMENT): "
        "API key not valid. Please pass a valid API key."
    )
    assert len(api.requests) == 1


async def test_unknown_model_is_reported(api: FakeGeminiAPI, make_provider: MakeProvider) -> None:
    api.script(error_reply(404, "NOT_FOUND", "models/gemini-nope is not found"))

    _, error = await collect_failure(make_provider(model="gemini-nope"))

    assert str(error) == (
        "Gemini API rejected the request (404 NOT_FOUND): models/gemini-nope is not found"
    )


async def test_api_key_never_appears_in_errors_or_logs(
    api: FakeGeminiAPI, make_provider: MakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api.script(
        error_reply(503, "UNAVAILABLE", f"overloaded for key {KEY}"),
        error_reply(403, "PERMISSION_DENIED", f"key {KEY} may not use this model"),
    )

    _, error = await collect_failure(make_provider())

    assert str(error) == (
        "Gemini API refused the credentials (403 PERMISSION_DENIED): "
        "key [redacted] may not use this model"
    )
    assert KEY not in str(error)
    assert KEY not in repr(error)
    assert caplog.records, "expected the retry to be logged"
    assert KEY not in caplog.text


# -- faults inside the stream ------------------------------------------------------
# (A stream cut before its final event and a malformed frame: test_provider_contract.py,
# run against both wire formats.)


def _thinking_chunks() -> int:
    items = response_chunks()
    return sum(
        1
        for item in items
        if isinstance(item, dict) and item["candidates"][0]["content"]["parts"][0].get("thought")
    )


async def test_connection_dropped_mid_stream_is_retried_keeping_earlier_thoughts(
    api: FakeGeminiAPI, make_provider: MakeProvider
) -> None:
    items = response_chunks()
    api.script(stream_reply(items[: _thinking_chunks() + 1], ending="drop"))

    result = await collect(make_provider())

    # The first attempt's thoughts stay; the second attempt thinks again.
    assert thoughts(result) == EXPECTED_THOUGHTS + EXPECTED_THOUGHTS
    assert_complete(result)
    assert len(api.requests) == 2


async def test_drop_during_the_answer_gives_one_answer_started(
    api: FakeGeminiAPI, make_provider: MakeProvider
) -> None:
    api.script(stream_reply(response_chunks()[:-2], ending="drop", split=5))

    result = await collect(make_provider())

    assert_complete(result)
    assert len(api.requests) == 2


async def test_dropped_connection_that_persists_is_reported(
    api: FakeGeminiAPI, make_provider: MakeProvider
) -> None:
    api.default = stream_reply(response_chunks()[:3], ending="drop")

    _, error = await collect_failure(make_provider(max_retries=1))

    assert str(error) == "Lost the connection to the Gemini API"
    assert error.status is None
    assert len(api.requests) == 2


async def test_error_chunk_mid_stream_is_retried_then_reported(
    api: FakeGeminiAPI, make_provider: MakeProvider
) -> None:
    items = response_chunks()
    api.script(stream_reply([*items[:3], error_chunk(503, "UNAVAILABLE")]))
    assert_complete(await collect(make_provider()))
    assert len(api.requests) == 2

    api.default = stream_reply([*items[:3], error_chunk(503, "UNAVAILABLE")])
    _, error = await collect_failure(make_provider(max_retries=1))
    assert str(error) == "Gemini API is overloaded (503 UNAVAILABLE)"
    assert error.status == 503


async def test_slow_response_times_out_and_is_retried(
    api: FakeGeminiAPI, make_provider: MakeProvider
) -> None:
    api.script(stream_reply(header_delay=1.5))

    assert_complete(await collect(make_provider(timeout=0.3)))
    assert len(api.requests) == 2


async def test_stall_mid_stream_times_out_then_is_reported(
    api: FakeGeminiAPI, make_provider: MakeProvider
) -> None:
    items = response_chunks()
    api.default = stream_reply([*items[:3], Pause(1.5), *items[3:]])

    _, error = await collect_failure(make_provider(timeout=0.3, max_retries=1))

    assert str(error) == "Gemini API did not answer in time"
    assert len(api.requests) == 2


async def test_unreachable_api_is_reported_as_connection_loss(
    make_provider: MakeProvider,
) -> None:
    async with FakeGeminiAPI() as gone:
        url = gone.url
    _, error = await collect_failure(make_provider(base_url=url, max_retries=1))

    assert str(error) == "Lost the connection to the Gemini API"


# -- answers that are not code -------------------------------------------------------


async def test_safety_stop_is_an_error_not_retried(
    api: FakeGeminiAPI, make_provider: MakeProvider
) -> None:
    api.script(stream_reply(response_chunks(finish="SAFETY")))

    _, error = await collect_failure(make_provider())

    assert str(error) == "Gemini stopped without finishing the answer (SAFETY)"
    assert len(api.requests) == 1


async def test_blocked_brief_is_an_error_not_retried(
    api: FakeGeminiAPI, make_provider: MakeProvider
) -> None:
    api.script(stream_reply([{"promptFeedback": {"blockReason": "SAFETY"}}]))

    events, error = await collect_failure(make_provider())

    assert str(error) == "Gemini blocked the brief (SAFETY)"
    assert events == []
    assert len(api.requests) == 1


async def test_answer_without_code_block_is_an_error_not_retried(
    api: FakeGeminiAPI, make_provider: MakeProvider
) -> None:
    api.script(stream_reply(response_chunks(answer="No code today, sorry.")))

    events, error = await collect_failure(make_provider())

    assert str(error) == "Gemini answer contained no fenced code block"
    assert AnswerStarted() in events
    assert len(api.requests) == 1


async def test_answer_cut_off_at_max_tokens_says_so(
    api: FakeGeminiAPI, make_provider: MakeProvider
) -> None:
    answer = "```tsx\nexport default function LoginForm() {\n  return (\n"
    api.script(stream_reply(response_chunks(answer=answer, finish="MAX_TOKENS")))

    _, error = await collect_failure(make_provider())

    assert "cut off at the token limit" in str(error)


# -- cancellation ------------------------------------------------------------------


async def test_cancelling_the_consumer_closes_the_connection_at_once(
    api: FakeGeminiAPI, make_provider: MakeProvider
) -> None:
    api.script(stream_reply(response_chunks()[: _thinking_chunks()], ending="hang"))
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
    api: FakeGeminiAPI, make_provider: MakeProvider
) -> None:
    api.script(stream_reply(response_chunks()[: _thinking_chunks()], ending="hang"))
    stream = make_provider().stream(BRIEF)

    event = await anext(stream)
    assert isinstance(event, Thought)
    closing_at = time.monotonic()
    await stream.aclose()  # type: ignore[attr-defined]

    closed_at = await api.wait_closed(api.requests[0], within=2.0)
    assert closed_at - closing_at < 0.5


# -- configuration ---------------------------------------------------------------------


async def test_base_url_comes_from_the_environment_when_not_given(
    api: FakeGeminiAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", api.url)
    config = GoogleConfig.from_env({"GEMINI_API_KEY": KEY}, base_url=None, backoff_base=0.001)
    assert config is not None and config.base_url is None
    provider = GoogleProvider(config)
    try:
        assert_complete(await collect(provider))
    finally:
        await provider.aclose()
    assert api.requests[0].headers["x-goog-api-key"] == KEY


async def test_explicit_base_url_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, make_provider: MakeProvider
) -> None:
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", "http://127.0.0.1:9")
    assert_complete(await collect(make_provider()))


def test_from_env_reads_either_key_and_ignores_unset_settings() -> None:
    assert GoogleConfig.from_env({}) is None
    assert GoogleConfig.from_env({"GEMINI_API_KEY": " "}) is None
    assert GoogleConfig.from_env({"GEMINI_API_KEY": "g"}) == GoogleConfig(api_key="g")
    assert GoogleConfig.from_env({"GOOGLE_API_KEY": "o"}) == GoogleConfig(api_key="o")
    both = GoogleConfig.from_env({"GOOGLE_API_KEY": "o", "GEMINI_API_KEY": "g"})
    assert both is not None and both.api_key == "o"  # the SDK's precedence
    config = GoogleConfig.from_env({"GEMINI_API_KEY": "g"}, model="gemini-2.5-pro", timeout=None)
    assert config == GoogleConfig(api_key="g", model="gemini-2.5-pro")


@pytest.mark.parametrize(
    "settings",
    [{"api_key": ""}, {"thinking_budget": -1}, {"max_output_tokens": 0}, {"timeout": 0}],
)
def test_bad_settings_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        GoogleConfig(**{"api_key": KEY, **settings})
