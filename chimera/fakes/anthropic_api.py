"""A fake Anthropic Messages API speaking the real SSE wire format.

``POST /v1/messages`` answers with the event stream of a streamed message
with extended thinking::

    event: message_start / content_block_start (thinking) /
    content_block_delta (thinking_delta ... signature_delta) / content_block_stop /
    content_block_start (text) / content_block_delta (text_delta ...) /
    content_block_stop / message_delta (stop_reason, usage) / message_stop

with ``ping`` events in between. Builders return plain lists of
:class:`SSE` (and :class:`~chimera.fakes.server.Pause`) so a test can cut,
insert or corrupt events before turning them into a :class:`Reply` with
:func:`stream_reply`. Error answers come from :func:`error_reply` (HTTP
status + JSON body, as the API sends them) and :func:`error_event` (an
``event: error`` inside a 200 stream).

Example::

    async with FakeAnthropicAPI() as api:
        api.script(
            error_reply(529, "overloaded_error", retry_after="0"),
            stream_reply(without_stop(message_events())),
            stream_reply(crlf=True, split=7, split_delay=0.001),
        )
        provider = AnthropicProvider(AnthropicConfig(api_key="k", base_url=api.url))
        ...
        assert api.requests[0].headers["x-api-key"] == "k"
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Unpack

from chimera.fakes.server import (
    Delivery,
    FakeHTTPServer,
    Pause,
    RecordedRequest,
    Reply,
    json_reply,
)
from chimera.fakes.sse import SSE, sse_reply

MESSAGES_PATH = "/v1/messages"

DEFAULT_THINKING: tuple[str, ...] = (
    "The brief asks for a login form with an email and a password field. "
    "I will keep both values in React state.\n\n"
    "Validation: the email needs an @ and a dot, the password must not be empty. "
    "Errors show next to each field, and the submit button is disabled while sending.",
)
DEFAULT_CODE = """\
import { useState } from "react";

export default function LoginForm() {
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  return (
    <form>
      <input type="email" value={email} onChange={(e) => setEmail(e.target.value)} />
      <input type="password" value={password} onChange={(e) => setPassword(e.target.value)} />
      <button type="submit">Log in</button>
    </form>
  );
}"""
DEFAULT_ANSWER = f"Here is the component.\n\n```tsx\n{DEFAULT_CODE}\n```\n"
DEFAULT_INPUT_TOKENS = 57
DEFAULT_OUTPUT_TOKENS = 912
STREAM_HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "request-id": "req_fake01",
}

Item = SSE | Pause


def sse(event: str, payload: object) -> SSE:
    return SSE(event, json.dumps(payload))


def deltas(text: str) -> list[str]:
    """``text`` cut into word-sized deltas, the way the API streams it."""
    return re.findall(r"\S*\s*", text)[:-1] or [text]


def message_events(
    *,
    thinking: Sequence[str] = DEFAULT_THINKING,
    answer: str = DEFAULT_ANSWER,
    model: str = "claude-sonnet-4-6",
    input_tokens: int = DEFAULT_INPUT_TOKENS,
    output_tokens: int = DEFAULT_OUTPUT_TOKENS,
    stop_reason: str = "end_turn",
    ping: bool = True,
) -> list[Item]:
    """The events of one successful streamed message.

    Each string of ``thinking`` becomes one thinking block (streamed word by
    word, then its signature); ``answer`` is one text block.
    """
    events: list[Item] = [
        sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_fake01",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": input_tokens, "output_tokens": 1},
                },
            },
        )
    ]
    if ping:
        events.append(sse("ping", {"type": "ping"}))
    index = 0
    for block in thinking:
        events.append(
            sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                },
            )
        )
        events += [
            _delta(index, {"type": "thinking_delta", "thinking": piece}) for piece in deltas(block)
        ]
        events.append(_delta(index, {"type": "signature_delta", "signature": "EqQBCkYIARgC"}))
        events.append(_stop(index))
        index += 1
    events.append(
        sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "text", "text": ""},
            },
        )
    )
    events += [_delta(index, {"type": "text_delta", "text": piece}) for piece in deltas(answer)]
    events.append(_stop(index))
    events.append(
        sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
        )
    )
    events.append(sse("message_stop", {"type": "message_stop"}))
    return events


def error_event(error_type: str = "overloaded_error", message: str = "Overloaded") -> SSE:
    """An in-stream ``event: error``."""
    return sse("error", {"type": "error", "error": {"type": error_type, "message": message}})


def malformed_event() -> SSE:
    """A ``content_block_delta`` whose JSON is cut off."""
    return SSE("content_block_delta", '{"type": "content_block_delta", "index": 0, "delta": {"ty')


def without_stop(events: Sequence[Item]) -> list[Item]:
    """``events`` without their ``message_stop`` (a stream that just ends)."""
    return [item for item in events if not (isinstance(item, SSE) and item.event == "message_stop")]


def first(events: Sequence[Item], name: str) -> int:
    """The index of the first event called ``name``."""
    return next(i for i, item in enumerate(events) if isinstance(item, SSE) and item.event == name)


def stream_reply(
    events: Sequence[Item] | None = None,
    *,
    crlf: bool = False,
    **delivery: Unpack[Delivery],
) -> Reply:
    """A 200 ``text/event-stream`` reply carrying ``events`` (default: a whole message)."""
    events = message_events() if events is None else events
    return sse_reply(events, STREAM_HEADERS, crlf=crlf, **delivery)


def error_reply(
    status: int,
    error_type: str,
    message: str = "error from the fake Anthropic API",
    *,
    retry_after: str | None = None,
    should_retry: bool | None = None,
) -> Reply:
    """An HTTP error answer with the API's JSON error body."""
    headers = {"request-id": "req_fake_error"}
    if retry_after is not None:
        headers["retry-after"] = retry_after
    if should_retry is not None:
        headers["x-should-retry"] = "true" if should_retry else "false"
    body = {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": "req_fake_error",
    }
    return json_reply(status, body, headers)


def sent_api_key(request: RecordedRequest) -> str | None:
    """The API key a request carried: ``x-api-key``, or ``Authorization: Bearer``
    (which recent SDK versions send instead)."""
    if "x-api-key" in request.headers:
        return request.headers["x-api-key"]
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" and token else None


class FakeAnthropicAPI(FakeHTTPServer):
    """The fake API; by default every request gets :func:`stream_reply` ``()``.

    With ``api_key`` set, requests carrying another key (or none) get the
    API's 401 ``authentication_error``, before any scripted reply is used.
    """

    def standard_reply(self) -> Reply:
        return stream_reply()

    def route(self, request: RecordedRequest) -> Reply | None:
        if request.method != "POST" or request.path != MESSAGES_PATH:
            return error_reply(404, "not_found_error", f"no route for {request.path}")
        if self.api_key is not None and sent_api_key(request) != self.api_key:
            return error_reply(401, "authentication_error", "invalid x-api-key")
        return None


def _delta(index: int, delta: dict[str, str]) -> SSE:
    return sse(
        "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
    )


def _stop(index: int) -> SSE:
    return sse("content_block_stop", {"type": "content_block_stop", "index": index})
