"""Keeps tokens and API keys out of logs: a filter that blanks anything that looks like one.

Attached to the loggers that see raw requests (the WebSocket server logs the
request line and headers at DEBUG), so ``chimera -v`` never prints a token.
"""

from __future__ import annotations

import logging
import re

REDACTED = "[redacted]"
_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[^\s,;]+"),
    re.compile(r"(?i)([?&]token=)[^&\s#]+"),
    # Any JWT: three base64url parts, the first starting with '{"' encoded.
    re.compile(r"()eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"),
    # Provider API keys: in headers, in a Gemini URL, and their known shapes anywhere.
    re.compile(r"(?i)((?:x-api-key|x-goog-api-key)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;]+"),
    re.compile(r"([?&]key=)[^&\s#]+"),
    re.compile(r"()sk-ant-[A-Za-z0-9_-]+"),
    re.compile(r"()AIza[0-9A-Za-z_-]{20,}"),
]


def redact(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        if record.exc_info and not record.exc_text:
            # Handshake errors may quote a header; format the traceback now, redacted
            # (formatters reuse exc_text when it is set).
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def redacting_logger(name: str) -> logging.Logger:
    """The logger ``name`` with :class:`RedactTokens` attached (once)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, RedactTokens) for f in logger.filters):
        logger.addFilter(RedactTokens())
    return logger
