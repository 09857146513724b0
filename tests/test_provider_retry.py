"""The retry loop and fault helpers the real providers share."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncGenerator

import pytest

from chimera.errors import ProviderError
from chimera.providers.base import AnswerStarted, CodeResult, ProviderEvent, Thought
from chimera.providers.faults import (
    RATE_LIMIT_MESSAGE,
    RetryableError,
    detail,
    http_failure,
    parse_retry_after,
    redact,
)
from chimera.providers.retry import RetryPolicy, with_retries

FAST = RetryPolicy(max_attempts=3, backoff_base=0.001)
RESULT = CodeResult(code="x", language="ts", token_count=1)


class Attempts:
    """Attempts that fail with ``failures`` in turn, then succeed."""

    def __init__(self, *failures: ProviderError) -> None:
        self.failures = list(failures)
        self.started = 0
        self.closed = 0
        self.failed = asyncio.Event()  # set once an attempt has failed and been closed

    async def __call__(self) -> AsyncGenerator[ProviderEvent, None]:
        self.started += 1
        failing = False
        try:
            yield Thought(f"attempt {self.started}")
            yield AnswerStarted()
            if self.failures:
                failing = True
                raise self.failures.pop(0)
            yield RESULT
        finally:
            self.closed += 1
            if failing:
                self.failed.set()


async def run(
    attempts: Attempts, policy: RetryPolicy = FAST, pauses: list[float] | None = None
) -> list[ProviderEvent]:
    """The events of ``with_retries``; with ``pauses``, the back-off pauses are
    recorded there instead of taken."""

    async def record(seconds: float) -> None:
        assert pauses is not None
        pauses.append(seconds)

    sleep = asyncio.sleep if pauses is None else record
    events = with_retries(attempts, policy, provider="test", sleep=sleep)
    return [event async for event in events]


async def test_retryable_failures_are_retried_keeping_earlier_events() -> None:
    attempts = Attempts(RetryableError("dropped"), RetryableError("dropped"))

    events = await run(attempts)

    assert events == [
        Thought("attempt 1"),
        AnswerStarted(),
        Thought("attempt 2"),
        Thought("attempt 3"),
        RESULT,
    ]
    assert attempts.started == attempts.closed == 3


async def test_budget_exhausted_raises_a_plain_provider_error() -> None:
    attempts = Attempts(*[RetryableError("overloaded", status=529)] * 3)

    with pytest.raises(ProviderError) as caught:
        await run(attempts)

    assert type(caught.value) is ProviderError
    assert (str(caught.value), caught.value.status) == ("overloaded", 529)
    assert isinstance(caught.value.__cause__, RetryableError)
    assert attempts.started == 3


async def test_other_provider_errors_are_not_retried() -> None:
    attempts = Attempts(ProviderError("bad request", status=400))

    with pytest.raises(ProviderError, match="bad request"):
        await run(attempts)

    assert attempts.started == 1


async def test_retry_after_is_honoured_and_a_too_long_one_gives_up() -> None:
    attempts = Attempts(RetryableError("slow down", retry_after=0.2))
    pauses: list[float] = []
    await run(attempts, pauses=pauses)
    assert pauses == [0.2]

    attempts = Attempts(RetryableError("slow down", retry_after=61))
    with pytest.raises(ProviderError, match="slow down"):
        await run(attempts, RetryPolicy(max_attempts=5, max_retry_after=60))
    assert attempts.started == 1


async def test_cancellation_during_backoff_propagates() -> None:
    attempts = Attempts(RetryableError("dropped"))
    task = asyncio.create_task(run(attempts, RetryPolicy(backoff_base=30)))
    await asyncio.wait_for(attempts.failed.wait(), 10)  # the first attempt failed: in backoff now
    assert not task.done()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert attempts.started == attempts.closed == 1


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_max=5.0)
    assert 0.5 <= policy.delay(1, None) <= 1.0
    assert 2.0 <= policy.delay(3, None) <= 4.0
    assert 2.5 <= policy.delay(10, None) <= 5.0
    assert policy.delay(1, 7.5) == 7.5
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"Retry-After": "0.5"}) == 0.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({"retry-after": "-1"}) is None
    assert parse_retry_after({}) is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    seconds = parse_retry_after({"retry-after": later})
    assert seconds is not None and 25 <= seconds <= 31


def test_http_failure_messages_and_retryability() -> None:
    secrets = ["s3cret"]
    rate = http_failure("X", 429, "rate_limit_error", "whatever", secrets=secrets, retry_after=2)
    assert isinstance(rate, RetryableError)
    assert (str(rate), rate.status, rate.retry_after) == (RATE_LIMIT_MESSAGE, 429, 2)

    overloaded = http_failure("X", 529, "overloaded_error", None, secrets=secrets)
    assert isinstance(overloaded, RetryableError)
    assert str(overloaded) == "X API is overloaded (529 overloaded_error)"

    refused = http_failure("X", 401, None, "bad key s3cret", secrets=secrets)
    assert not isinstance(refused, RetryableError)
    assert str(refused) == "X API refused the credentials (401): bad key [redacted]"

    forced = http_failure("X", 500, None, None, secrets=secrets, retryable=False)
    assert not isinstance(forced, RetryableError)


def test_redact_and_detail() -> None:
    assert redact("key=abc and abc", ["abc", None, ""]) == "key=[redacted] and [redacted]"
    long = detail("word " * 100, [])
    assert len(long) == 200 and long.endswith("…")
    assert detail("a\n  b", []) == "a b"
