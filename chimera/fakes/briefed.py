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
from chimera.fakes.sse import SSE
from chimera.providers.simulated import plan

FAKE_KEY = "fake-key-for-local-apis"


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
    return f"Here is the component.\n\n```tsx\n{code}```\n"


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
            if isinstance(event, SSE) and event.event == "content_block_stop":
                paced.append(Pause(delay))
        return anthropic_api.stream_reply(paced)

    return reply


def gemini_reply(delay: float) -> Script:
    def reply(request: RecordedRequest) -> Reply:
        body = request.json()
        thoughts, code = _plan(body["contents"][-1]["parts"], "google")
        items = gemini_api.response_chunks(
            thinking=[t + "\n\n" for t in thoughts], answer=_answer(code),
            words_per_chunk=1000,  # one chunk per thought, so the pauses fall between them
            candidates_tokens=len(code) // 4,
        )
        paced: list[gemini_api.Item] = []
        for item in items:
            paced.append(item)
            paced.append(Pause(delay))
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
