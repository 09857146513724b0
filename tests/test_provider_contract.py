"""The fault contract both real providers keep, run against both local fakes.

Each case runs once per wire format (the test id names it: ``anthropic-messages-sse``,
``gemini-streamGenerateContent-sse``), with the real SDK client over HTTP.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from chimera.errors import ProviderError
from chimera.events import TeamName
from chimera.fakes import anthropic_api, gemini_api
from chimera.fakes.server import FakeHTTPServer
from chimera.providers.base import AnswerStarted, CodeResult, ProviderEvent
from chimera.providers.retry import RetryingProvider
from chimera.providers.table import SPECS, RealConfig

KEY = "contract-test-key-0123456789"
BRIEF = "Create a login form with email and password"


@dataclass(frozen=True)
class Wire:
    """One provider's wire format, as the contract needs it."""

    team: str
    fake: Callable[..., FakeHTTPServer]
    items: Callable[[], Sequence[Any]]  # a complete stream
    reply: Callable[[Sequence[Any]], Any]  # a script answering with those items
    cut: Callable[[Sequence[Any]], Sequence[Any]]  # the stream without its final event
    malformed: Callable[[], Any]
    cut_message: str
    malformed_message: str


WIRES = [
    pytest.param(
        Wire(
            "anthropic", anthropic_api.FakeAnthropicAPI, anthropic_api.message_events,
            anthropic_api.stream_reply, anthropic_api.without_stop,
            anthropic_api.malformed_event,
            "Anthropic stream ended before message_stop",
            "Anthropic API sent a malformed stream event",
        ),
        id="anthropic-messages-sse",
    ),
    pytest.param(
        Wire(
            "google", gemini_api.FakeGeminiAPI, gemini_api.response_chunks,
            gemini_api.stream_reply, gemini_api.without_finish, gemini_api.malformed_chunk,
            "Gemini stream ended without a finishReason",
            "Gemini API sent a malformed stream chunk",
        ),
        id="gemini-streamGenerateContent-sse",
    ),
]


@dataclass
class Contract:
    wire: Wire
    api: FakeHTTPServer
    providers: list[RetryingProvider]

    def provider(self, **settings: Any) -> RetryingProvider:
        module = importlib.import_module(SPECS[TeamName(self.wire.team)].module)
        fields: dict[str, Any] = {
            "api_key": KEY, "base_url": self.api.url, "backoff_base": 0.001,
            "timeout": 2.0, "max_retries": 2, **settings,
        }
        config: RealConfig = module.Config(**fields)
        provider: RetryingProvider = module.Provider(config)
        self.providers.append(provider)
        return provider


@pytest.fixture(params=WIRES)
async def contract(request: pytest.FixtureRequest) -> AsyncIterator[Contract]:
    wire: Wire = request.param
    async with wire.fake(api_key=KEY) as api:
        contract = Contract(wire, api, [])
        yield contract
        for provider in contract.providers:
            await provider.aclose()  # type: ignore[attr-defined]


async def collect(provider: RetryingProvider) -> list[ProviderEvent]:
    return [event async for event in provider.stream(BRIEF)]


async def collect_failure(provider: RetryingProvider) -> tuple[list[ProviderEvent], ProviderError]:
    events: list[ProviderEvent] = []
    with pytest.raises(ProviderError) as caught:
        async for event in provider.stream(BRIEF):
            events.append(event)
    return events, caught.value


def assert_complete(events: list[ProviderEvent]) -> None:
    """One AnswerStarted, then the fake's code, last."""
    assert sum(isinstance(event, AnswerStarted) for event in events) == 1
    assert isinstance(events[-1], CodeResult)
    assert events[-1].code == anthropic_api.DEFAULT_CODE


async def test_a_stream_without_its_final_event_is_retried_then_reported(
    contract: Contract,
) -> None:
    wire = contract.wire
    contract.api.script(wire.reply(wire.cut(wire.items())))
    assert_complete(await collect(contract.provider()))
    assert len(contract.api.requests) == 2

    contract.api.default = wire.reply(wire.cut(wire.items()))
    events, error = await collect_failure(contract.provider(max_retries=1))
    assert str(error) == wire.cut_message
    assert not any(isinstance(event, CodeResult) for event in events)


async def test_a_malformed_frame_is_retried_then_reported(contract: Contract) -> None:
    wire = contract.wire
    items = list(wire.items())
    contract.api.script(wire.reply([*items[:3], wire.malformed(), *items[3:]]))
    assert_complete(await collect(contract.provider()))
    assert len(contract.api.requests) == 2

    contract.api.default = wire.reply([*items[:3], wire.malformed()])
    _, error = await collect_failure(contract.provider(max_retries=1))
    assert str(error) == wire.malformed_message
