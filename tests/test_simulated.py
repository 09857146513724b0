"""The simulated provider writes code that fits the brief, at the pace asked for."""

from __future__ import annotations

import time

import pytest

from chimera.errors import ProviderError
from chimera.providers.base import AnswerStarted, CodeResult, Thought
from chimera.providers.simulated import SimulatedProvider


async def collect(provider: SimulatedProvider, brief: str) -> list[object]:
    return [item async for item in provider.stream(brief)]


@pytest.mark.parametrize(
    ("brief", "expected"),
    [
        ("Create a login form with email and password", ["LoginForm", 'type="password"']),
        ("Sign up page with username", ["SignupForm", "username"]),
        ("Build a todo list", ["TodoList", "checkbox"]),
        ("a counter with reset", ["Counter", "Reset"]),
        ("a search box that filters fruit", ["SearchBar", "toLowerCase"]),
        ("A pricing card", ["PricingCard"]),
    ],
)
async def test_code_fits_the_brief(brief: str, expected: list[str]) -> None:
    items = await collect(SimulatedProvider("anthropic", delay=0), brief)
    thoughts = [i for i in items if isinstance(i, Thought)]
    assert len(thoughts) >= 3
    assert brief[:40] in thoughts[0].text
    assert isinstance(items[-2], AnswerStarted)
    result = items[-1]
    assert isinstance(result, CodeResult)
    assert result.language == "tsx" and result.token_count > 0
    for text in expected:
        assert text in result.code


async def test_delay_paces_the_stream() -> None:
    start = time.monotonic()
    items = await collect(SimulatedProvider("google", delay=0.05), "a counter")
    # One pause before each thought, before the answer, and before the code.
    assert time.monotonic() - start >= 0.05 * (len(items))


async def test_fail_with_raises_after_thinking() -> None:
    provider = SimulatedProvider("google", delay=0, fail_with="boom")
    seen = []
    with pytest.raises(ProviderError, match="boom"):
        async for item in provider.stream("a counter"):
            seen.append(item)
    assert seen and all(isinstance(i, Thought) for i in seen)
