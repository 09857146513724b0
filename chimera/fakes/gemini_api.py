"""A fake Gemini API speaking the real ``streamGenerateContent?alt=sse`` format.

``POST /{version}/models/{model}:streamGenerateContent?alt=sse`` answers with
``data: {GenerateContentResponse JSON}`` events separated by blank lines
(CRLF line endings by default, as the API sends them). Thought-summary parts
carry ``"thought": true``; the last chunk carries ``finishReason`` and every
chunk a running ``usageMetadata``.

Builders return plain lists of chunk dicts, :class:`Raw` text and
:class:`~chimera.fakes.server.Pause` values so a test can cut, insert or
corrupt chunks before turning them into a :class:`Reply` with
:func:`stream_reply`. Error answers come from :func:`error_reply` (HTTP
status with the API's ``{"error": {...}}`` body) and :func:`error_chunk`
(the same object sent as a chunk inside a 200 stream).

Example::

    async with FakeGeminiAPI() as api:
        api.script(
            error_reply(429, "RESOURCE_EXHAUSTED", retry_delay="0s"),
            stream_reply(without_finish(response_chunks())),
            stream_reply(split=5, split_delay=0.001),
        )
        provider = GoogleProvider(GoogleConfig(api_key="k", base_url=api.url))
        ...
        assert api.requests[0].headers["x-goog-api-key"] == "k"
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Unpack

from chimera.fakes.anthropic_api import DEFAULT_ANSWER, DEFAULT_THINKING, deltas
from chimera.fakes.server import (
    Delivery,
    FakeHTTPServer,
    Pause,
    RecordedRequest,
    Reply,
    json_reply,
)
from chimera.fakes.sse import SSE, sse_reply

STREAM_PATH = re.compile(r"^/(?P<version>v[^/]+)/models/(?P<model>[^/:]+):streamGenerateContent$")

DEFAULT_PROMPT_TOKENS = 61
DEFAULT_THOUGHTS_TOKENS = 388
DEFAULT_CANDIDATES_TOKENS = 517
STREAM_HEADERS = {"content-type": "text/event-stream", "x-content-type-options": "nosniff"}

__all__ = ["DEFAULT_ANSWER", "DEFAULT_THINKING"]


@dataclass(frozen=True, slots=True)
class Raw:
    """Text sent as one ``data:`` event as is (it may be broken JSON)."""

    text: str


Item = dict[str, Any] | Raw | Pause


def chunk(
    parts: Sequence[dict[str, Any]],
    *,
    finish: str | None = None,
    usage: dict[str, int] | None = None,
    model: str = "gemini-2.5-flash",
) -> dict[str, Any]:
    """One ``GenerateContentResponse`` chunk."""
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    body: dict[str, Any] = {
        "candidates": [candidate],
        "modelVersion": model,
        "responseId": "fake01",
    }
    if usage is not None:
        body["usageMetadata"] = usage
    return body


def response_chunks(
    *,
    thinking: Sequence[str] = DEFAULT_THINKING,
    answer: str = DEFAULT_ANSWER,
    finish: str = "STOP",
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
    thoughts_tokens: int = DEFAULT_THOUGHTS_TOKENS,
    candidates_tokens: int = DEFAULT_CANDIDATES_TOKENS,
    words_per_chunk: int = 6,
) -> list[Item]:
    """The chunks of one successful streamed answer: thoughts, then the answer."""
    usage = {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens}
    items: list[Item] = []
    for block in thinking:
        words = deltas(block)
        for start in range(0, len(words), words_per_chunk):
            text = "".join(words[start : start + words_per_chunk])
            items.append(chunk([{"text": text, "thought": True}], usage=usage))
    words = deltas(answer)
    for start in range(0, len(words), words_per_chunk):
        items.append(
            chunk([{"text": "".join(words[start : start + words_per_chunk])}], usage=usage)
        )
    final_usage = {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": candidates_tokens,
        "thoughtsTokenCount": thoughts_tokens,
        "totalTokenCount": prompt_tokens + candidates_tokens + thoughts_tokens,
    }
    items.append(chunk([{"text": ""}], finish=finish, usage=final_usage))
    return items


def error_body(
    code: int, status: str, message: str, retry_delay: str | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if retry_delay is not None:
        error["details"] = [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
        ]
    return {"error": error}


def error_chunk(
    code: int = 503, status: str = "UNAVAILABLE", message: str = "The model is overloaded."
) -> dict[str, Any]:
    """An error object sent as a chunk inside a 200 stream."""
    return error_body(code, status, message)


def malformed_chunk() -> Raw:
    return Raw('{"candidates": [{"content": {"parts": [{"text": "cut off')


def without_finish(items: Sequence[Item]) -> list[Item]:
    """``items`` without the chunk carrying ``finishReason`` (a stream that just ends)."""
    return [item for item in items if not (isinstance(item, dict) and _finishes(item))]


def as_sse(item: Item) -> SSE | Pause:
    """A chunk as the event that carries it (``data:`` only); pauses pass through."""
    if isinstance(item, Pause):
        return item
    return SSE(None, item.text if isinstance(item, Raw) else json.dumps(item))


def stream_reply(
    items: Sequence[Item] | None = None,
    *,
    crlf: bool = True,
    **delivery: Unpack[Delivery],
) -> Reply:
    """A 200 ``text/event-stream`` reply carrying ``items`` (default: a whole answer)."""
    items = response_chunks() if items is None else items
    return sse_reply(map(as_sse, items), STREAM_HEADERS, crlf=crlf, **delivery)


def error_reply(
    status: int,
    grpc_status: str,
    message: str = "error from the fake Gemini API",
    *,
    retry_after: str | None = None,
    retry_delay: str | None = None,
) -> Reply:
    """An HTTP error answer with the API's JSON error body (and RetryInfo if asked)."""
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    return json_reply(status, error_body(status, grpc_status, message, retry_delay), headers)


class FakeGeminiAPI(FakeHTTPServer):
    """The fake API; by default every request gets :func:`stream_reply` ``()``.

    With ``api_key`` set, requests whose ``x-goog-api-key`` differs get the
    API's answer to a bad key (400 ``INVALID_ARGUMENT``), before any
    scripted reply is used.
    """

    def standard_reply(self) -> Reply:
        return stream_reply()

    def route(self, request: RecordedRequest) -> Reply | None:
        if request.method != "POST" or not STREAM_PATH.match(request.path):
            return error_reply(404, "NOT_FOUND", f"no route for {request.path}")
        if request.query.get("alt") != "sse":
            return error_reply(400, "INVALID_ARGUMENT", "this fake only streams with alt=sse")
        if self.api_key is not None and request.headers.get("x-goog-api-key") != self.api_key:
            return error_reply(
                400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."
            )
        return None


def thinking_config(request: RecordedRequest) -> dict[str, Any]:
    """``generationConfig.thinkingConfig`` of a request, keys in camelCase.

    The API accepts both camelCase and the proto's snake_case field names,
    and google-genai sends snake_case here.
    """
    config = request.json().get("generationConfig", {}).get("thinkingConfig", {})
    return {_camel(key): value for key, value in config.items()}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


def request_model(request: RecordedRequest) -> str:
    """The model named in a stream request's path."""
    match = STREAM_PATH.match(request.path)
    assert match is not None, request.path
    return match["model"]


def _finishes(item: dict[str, Any]) -> bool:
    return any("finishReason" in candidate for candidate in item.get("candidates", ()))
