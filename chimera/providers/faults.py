"""What the real providers' error translation shares.

Each provider module translates its SDK's exceptions into Chimera's at one
boundary. A failure that a new attempt may fix becomes a
:class:`RetryableError` (caught by :func:`chimera.providers.retry.with_retries`);
anything else becomes a plain :class:`~chimera.errors.ProviderError`. Messages
are written here, never copied wholesale from the SDK, and go through
:func:`redact` so an API key can never reach a subscriber or a log.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Iterable, Mapping

from chimera.errors import ProviderError

RATE_LIMIT_MESSAGE = "API rate limit exceeded"
"""The message of a rate-limit failure, exactly as the streaming guide shows it."""

_MAX_DETAIL_CHARS = 200
_RETRYABLE_CLIENT_STATUSES = frozenset({408, 409, 429})


class RetryableError(ProviderError):
    """A failure that a new attempt may fix.

    ``retry_after`` is how long the provider asked us to wait (seconds), when
    it said so.
    """

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


def http_failure(
    source: str,
    status: int,
    reason: str | None,
    explanation: object,
    *,
    secrets: Iterable[str | None],
    retry_after: float | None = None,
    retryable: bool | None = None,
) -> ProviderError:
    """The error for a provider's HTTP error answer (or an in-stream error of that kind).

    ``source`` names the provider ("Anthropic", "Gemini"), ``reason`` is the
    provider's short error name (``overloaded_error``, ``UNAVAILABLE``) and
    ``explanation`` its human-readable message, shown (redacted, shortened)
    for client errors only. Unless ``retryable`` says otherwise, 408, 409, 429
    and every 5xx are retryable.
    """
    if retryable is None:
        retryable = status in _RETRYABLE_CLIENT_STATUSES or status >= 500
    label = f"{status} {reason}" if reason else str(status)
    if status == 429:
        message = RATE_LIMIT_MESSAGE
    elif status in (503, 529):
        message = f"{source} API is overloaded ({label})"
    elif status >= 500:
        message = f"{source} API server error ({label})"
    else:
        shown = detail(explanation, secrets) if explanation else ""
        refused = "refused the credentials" if status in (401, 403) else "rejected the request"
        message = f"{source} API {refused} ({label})" + (f": {shown}" if shown else "")
    if retryable:
        return RetryableError(message, status=status, retry_after=retry_after)
    return ProviderError(message, status=status)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait according to ``retry-after-ms`` or ``retry-after``.

    ``retry-after`` may be a number of seconds or an HTTP date. Returns None
    when neither header is present or readable. ``headers`` must look keys up
    case-insensitively or hold them in lower case.
    """
    millis = _header(headers, "retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    raw = _header(headers, "retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
    return value if math.isfinite(value) and value >= 0 else None


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every non-empty secret replaced by ``[redacted]``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def detail(text: object, secrets: Iterable[str | None]) -> str:
    """A provider's own explanation, redacted and cut to a readable length."""
    cleaned = " ".join(redact(str(text), secrets).split())
    if len(cleaned) > _MAX_DETAIL_CHARS:
        cleaned = cleaned[: _MAX_DETAIL_CHARS - 1] + "…"
    return cleaned


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value
