"""Fake APIs that answer the brief they are sent, for ``chimera demo --fake-apis``.

Each request's brief is read from the body the real SDK sent; the answer's
thoughts and code come from the simulator's :func:`~chimera.providers.simulated.plan`,
streamed in the provider's real wire format with a pause after each thought,
so the real SDKs and providers run end to end with no key and no network.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from chimera.fakes import anthropic_api, gemini_api
from chimera.fakes.server import Pause, RecordedRequest, Reply, Script
from chimera.providers.simulated import plan

FAKE_KEY = "fake-key-for-local-apis"
# The answer streams this many times faster than the thoughts (a pause of
# delay / ANSWER_PACE after each of its deltas), so its code visibly grows.
ANSWER_PACE = 20


def _brief(text: str) -> str:
    return text.strip().removeprefix("Brief:").strip() or "a component"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(part.get("text", "") for part in content if isinstance(part, dict))


def _plan(content: Any, team: str) -> tuple[list[str], str]:
    """The simulator's thoughts and code for the brief in a request's last message."""
    thoughts, code, _ = plan(_brief(_text_of(content)), team)
    return thoughts, code


def _answer(code: str) -> str:
    """The code in one fenced block, with prose before and after it."""
    return f"Here is the component.\n\n```tsx\n{code}```\n\nIt needs nothing beyond React.\n"


def anthropic_reply(delay: float) -> Script:
    def reply(request: RecordedRequest) -> Reply:
        body = request.json()
        thoughts, code = _plan(body["messages"][-1]["content"], "anthropic")
        events = anthropic_api.message_events(
            thinking=thoughts, answer=_answer(code), model=body.get("model", "fake"),
            output_tokens=len(code) // 4 + sum(len(t) for t in thoughts) // 4,
        )
        paced: list[anthropic_api.Item] = []
        for event in events:
            paced.append(event)
            if isinstance(event, anthropic_api.SSE) and event.event == "content_block_stop":
                paced.append(Pause(delay))
            elif isinstance(event, anthropic_api.SSE) and '"text_delta"' in event.data:
                paced.append(Pause(delay / ANSWER_PACE))
        return anthropic_api.stream_reply(paced)

    return reply


def gemini_reply(delay: float) -> Script:
    def reply(request: RecordedRequest) -> Reply:
        body = request.json()
        thoughts, code = _plan(body["contents"][-1]["parts"], "google")
        # One chunk per thought, so the pauses fall between them; the answer a few
        # words a chunk, so its code streams.
        items = [
            *(gemini_api.chunk([{"text": t + "\n\n", "thought": True}]) for t in thoughts),
            *gemini_api.response_chunks(
                thinking=[], answer=_answer(code), candidates_tokens=len(code) // 4,
            ),
        ]
        paced: list[gemini_api.Item] = []
        for i, item in enumerate(items):
            paced.append(item)
            paced.append(Pause(delay if i < len(thoughts) else delay / ANSWER_PACE))
        return gemini_api.stream_reply(paced)

    return reply


@dataclass(frozen=True, slots=True)
class FakeAPIs:
    anthropic_url: str
    gemini_url: str
    key: str = FAKE_KEY


@contextlib.asynccontextmanager
async def fake_apis(delay: float) -> AsyncIterator[FakeAPIs]:
    """Both fake APIs on loopback, answering every brief, for the life of the block."""
    async with (
        anthropic_api.FakeAnthropicAPI(anthropic_reply(delay), api_key=FAKE_KEY) as anthropic,
        gemini_api.FakeGeminiAPI(gemini_reply(delay), api_key=FAKE_KEY) as gemini,
    ):
        yield FakeAPIs(anthropic.url, gemini.url)
