"""The one retry loop of the real providers.

Both SDKs are built with their own retries switched off (``max_retries=0``
for anthropic; no ``retry_options`` for google-genai), so every retry goes
through :func:`with_retries`, whatever the failure and whenever it happens:

- before the stream: 429, 408/409, 5xx and 529 answers, time-outs, refused
  connections;
- during the stream: a dropped connection, an ``error`` event, a malformed
  frame, a read time-out, a stream that ends without its final event.

An attempt that fails with :class:`~chimera.providers.faults.RetryableError`
is started again from scratch (a new request) after a back-off, or after the
``retry-after`` the provider asked for. Events an attempt already yielded stay
yielded: thoughts of a failed attempt are not taken back, and the new attempt
may add its own. :class:`~chimera.providers.base.AnswerStarted` is passed on
once at most. When the budget is spent, or the provider asks to wait longer
than ``max_retry_after``, the last failure is raised as a plain
:class:`~chimera.errors.ProviderError` with the same message and status.

Cancellation: the running attempt is closed (``aclose``) before anything
else happens, so its HTTP stream is closed at once; a ``CancelledError``
during a back-off sleep propagates untouched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from functools import partial
from typing import ClassVar, Generic, Protocol, TypeVar

from chimera.backoff import Backoff
from chimera.errors import ProviderError
from chimera.observability.metrics import PROVIDER_RETRIES, retry_reason
from chimera.providers.base import AnswerStarted, ProviderEvent
from chimera.providers.faults import RetryableError

logger = logging.getLogger("chimera.providers")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try.

    ``max_attempts`` counts the first attempt too (1 = never retry). The n-th
    retry waits ``backoff_base * 2**(n-1)`` seconds, at most ``backoff_max``,
    times a random factor in [0.5, 1] (jitter: :class:`~chimera.backoff.Backoff`),
    unless the provider said how long to wait. Tests set ``backoff_base`` near zero.
    """

    max_attempts: int = 4
    backoff_base: float = 1.0
    backoff_max: float = 20.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.backoff_base < 0 or self.backoff_max < 0 or self.max_retry_after < 0:
            raise ValueError("back-off times must not be negative")

    @property
    def backoff(self) -> Backoff:
        """The pauses when the provider does not say how long to wait."""
        return Backoff(first=self.backoff_base, cap=self.backoff_max)

    def delay(self, retry: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number ``retry`` (1-based): the provider's
        ``retry-after`` if it sent one, else :attr:`backoff`'s."""
        if retry_after is not None:
            return retry_after
        return self.backoff.delay(retry)


async def with_retries(
    attempt: Callable[[], AsyncGenerator[ProviderEvent, None]],
    policy: RetryPolicy,
    *,
    provider: str,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncIterator[ProviderEvent]:
    """Run ``attempt()`` until one finishes, retrying as the module says.

    ``attempt`` starts one request and yields its events; it raises
    :class:`RetryableError` for failures worth another go and
    :class:`ProviderError` for the others (which are raised at once).
    ``provider`` names the provider in log lines; ``sleep`` waits out each
    back-off (injected by tests, which record the pauses instead of taking them).
    """
    answer_started = False
    attempt_number = 0
    while True:
        attempt_number += 1
        try:
            async with aclosing(attempt()) as events:
                async for event in events:
                    if isinstance(event, AnswerStarted):
                        if answer_started:
                            continue
                        answer_started = True
                    yield event
            return
        except RetryableError as exc:
            too_long = exc.retry_after is not None and exc.retry_after > policy.max_retry_after
            if attempt_number >= policy.max_attempts or too_long:
                logger.warning(
                    "%s: giving up after %d attempt(s): %s", provider, attempt_number, exc
                )
                raise ProviderError(str(exc), status=exc.status) from exc
            delay = policy.delay(attempt_number, exc.retry_after)
            PROVIDER_RETRIES.labels(provider, retry_reason(exc.status)).inc()
            logger.info(
                "%s: attempt %d failed (%s); retrying in %.2fs",
                provider,
                attempt_number,
                exc,
                delay,
            )
        await sleep(delay)


class ProviderConfig(Protocol):
    """What :class:`RetryingProvider` reads from a provider's config
    (a :class:`~chimera.providers.table.RealConfig`)."""

    @property
    def model(self) -> str: ...

    @property
    def retry_policy(self) -> RetryPolicy: ...


ConfigT = TypeVar("ConfigT", bound=ProviderConfig)


class RetryingProvider(Generic[ConfigT]):
    """Base of the real providers: :meth:`stream` runs :meth:`_attempt` under
    :func:`with_retries`, the one retry loop, with the policy of the config."""

    TEAM: ClassVar[str] = ""  # names the provider in logs and metrics

    def __init__(self, config: ConfigT) -> None:
        self._config = config

    @property
    def model(self) -> str:
        return self._config.model

    async def aclose(self) -> None:
        """Close the SDK client's connections. Streams still open are closed with them."""
        raise NotImplementedError

    def stream(self, brief: str) -> AsyncIterator[ProviderEvent]:
        """Stream thoughts, then the answer's start, then the code for ``brief``.

        Raises :class:`ProviderError` once retries are exhausted or for a
        failure that retrying cannot fix.
        """
        policy = self._config.retry_policy
        return with_retries(partial(self._attempt, brief), policy, provider=self.TEAM)

    def _attempt(self, brief: str) -> AsyncGenerator[ProviderEvent, None]:
        """One request, from sending it to the stream's final event."""
        raise NotImplementedError
