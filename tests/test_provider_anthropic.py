"""AnthropicProvider: what only the Anthropic Messages API has, over HTTP to its fake.

The faults both providers handle alike are in ``test_provider_contract.py``.
"""

from __future__ import annotations

import pytest

from chimera.fakes.anthropic_api import error_event, error_reply, sent_api_key, stream_reply
from tests.provider_wires import (
    ANTHROPIC,
    BRIEF,
    KEY,
    Contract,
    collect,
    collect_failure,
    contract_fixture,
)

contract = contract_fixture(ANTHROPIC)


async def test_sends_key_model_stream_flag_thinking_and_prompt(contract: Contract) -> None:
    await collect(contract.provider(model="claude-test-1", thinking_budget=1500, max_tokens=4000))

    [request] = contract.api.requests
    assert sent_api_key(request) == KEY
    assert "anthropic-version" in request.headers
    body = request.json()
    assert body["model"] == "claude-test-1"
    assert body["stream"] is True
    assert body["max_tokens"] == 4000
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1500, "display": "summarized"}
    assert "ONE fenced code block" in body["system"]
    assert body["messages"] == [{"role": "user", "content": f"Brief: {BRIEF}"}]


async def test_should_retry_false_is_honoured(contract: Contract) -> None:
    contract.api.script(error_reply(529, "overloaded_error", should_retry=False))

    _, error = await collect_failure(contract.provider())

    assert error.status == 529
    assert len(contract.api.requests) == 1


@pytest.mark.parametrize(
    ("error_type", "message", "status"),
    [
        ("api_error", "Anthropic API server error (500 api_error)", 500),
        ("unknown_error", "Anthropic API server error (500 unknown_error)", 500),
    ],
    ids=["api_error", "unknown_error"],
)
async def test_error_event_type_gives_the_status_of_the_same_http_error(
    contract: Contract, error_type: str, message: str, status: int
) -> None:
    # An in-stream error arrives on a 200 answer; its type says which status it stands
    # for (rate_limit_error → 429: test_provider_contract.py).
    contract.api.default = stream_reply([error_event(error_type, "slow down")])

    _, error = await collect_failure(contract.provider(max_retries=0))

    assert str(error) == message
    assert error.status == status
