"""GoogleProvider: what only the Gemini API has, over HTTP to its fake.

The faults both providers handle alike are in ``test_provider_contract.py``.
"""

from __future__ import annotations

import time
from typing import Any

from chimera.fakes.anthropic_api import DEFAULT_CODE
from chimera.fakes.gemini_api import (
    chunk,
    error_reply,
    request_model,
    response_chunks,
    stream_reply,
    thinking_config,
)
from chimera.providers.base import AnswerStarted, CodeDelta, CodeResult, Thought
from chimera.providers.faults import RATE_LIMIT_MESSAGE
from chimera.providers.google import GoogleConfig
from tests.provider_wires import (
    BRIEF,
    GEMINI,
    KEY,
    Contract,
    assert_complete,
    collect,
    collect_failure,
    contract_fixture,
)

contract = contract_fixture(GEMINI)


async def test_sends_key_model_and_thinking_config_to_the_sse_endpoint(
    contract: Contract,
) -> None:
    provider = contract.provider(
        model="gemini-test-1", thinking_budget=1500, max_output_tokens=4000
    )
    await collect(provider)

    [request] = contract.api.requests
    assert request.headers["x-goog-api-key"] == KEY
    assert request.path == "/v1beta/models/gemini-test-1:streamGenerateContent"
    assert request.query == {"alt": "sse"}
    assert request_model(request) == "gemini-test-1"
    assert thinking_config(request) == {"includeThoughts": True, "thinkingBudget": 1500}
    body = request.json()
    assert body["generationConfig"]["maxOutputTokens"] == 4000
    assert "ONE fenced code block" in body["systemInstruction"]["parts"][0]["text"]
    assert body["contents"] == [{"role": "user", "parts": [{"text": f"Brief: {BRIEF}"}]}]


async def test_thought_and_answer_parts_in_one_chunk(contract: Contract) -> None:
    answer = f"```tsx\n{DEFAULT_CODE}\n```"
    usage = {"promptTokenCount": 5, "candidatesTokenCount": 70, "thoughtsTokenCount": 30}
    parts: list[dict[str, Any]] = [{"text": "Plan: one form.", "thought": True}, {"text": answer}]
    contract.api.script(stream_reply([chunk(parts, finish="STOP", usage=usage)]))

    events = await collect(contract.provider())

    assert events == [
        Thought("Plan: one form."),
        AnswerStarted(),
        CodeDelta(0, DEFAULT_CODE),  # the whole block came in one part
        CodeResult(code=DEFAULT_CODE, language="tsx", token_count=100, input_tokens=5),
    ]


async def test_rate_limit_is_retried_after_the_retry_info_delay(contract: Contract) -> None:
    contract.api.script(error_reply(429, "RESOURCE_EXHAUSTED", retry_delay="0.2s"))

    assert_complete(GEMINI, await collect(contract.provider()))

    first_try, second_try = contract.api.requests
    assert second_try.received_at - first_try.received_at >= 0.2


async def test_retry_delay_longer_than_the_limit_is_not_waited_for(contract: Contract) -> None:
    contract.api.script(error_reply(429, "RESOURCE_EXHAUSTED", retry_delay="3600s"))

    started = time.monotonic()
    _, error = await collect_failure(contract.provider())

    assert str(error) == RATE_LIMIT_MESSAGE
    assert len(contract.api.requests) == 1
    assert time.monotonic() - started < 5


async def test_unknown_model_is_reported(contract: Contract) -> None:
    contract.api.script(error_reply(404, "NOT_FOUND", "models/gemini-nope is not found"))

    _, error = await collect_failure(contract.provider(model="gemini-nope"))

    assert str(error) == (
        "Gemini API rejected the request (404 NOT_FOUND): models/gemini-nope is not found"
    )


async def test_safety_stop_is_an_error_not_retried(contract: Contract) -> None:
    contract.api.script(stream_reply(response_chunks(finish="SAFETY")))

    _, error = await collect_failure(contract.provider())

    assert str(error) == "Gemini stopped without finishing the answer (SAFETY)"
    assert len(contract.api.requests) == 1


async def test_blocked_brief_is_an_error_not_retried(contract: Contract) -> None:
    contract.api.script(stream_reply([{"promptFeedback": {"blockReason": "SAFETY"}}]))

    events, error = await collect_failure(contract.provider())

    assert str(error) == "Gemini blocked the brief (SAFETY)"
    assert events == []
    assert len(contract.api.requests) == 1


def test_from_env_reads_either_key_google_api_key_first() -> None:
    assert GoogleConfig.from_env({"GEMINI_API_KEY": "g"}) == GoogleConfig(api_key="g")
    assert GoogleConfig.from_env({"GOOGLE_API_KEY": "o"}) == GoogleConfig(api_key="o")
    both = GoogleConfig.from_env({"GOOGLE_API_KEY": "o", "GEMINI_API_KEY": "g"})
    assert both is not None and both.api_key == "o"  # the SDK's precedence
