"""The simulated provider writes code that fits the brief, at the pace asked for."""

from __future__ import annotations

import time

import pytest

from chimera.errors import ProviderError
from chimera.providers.base import AnswerStarted, CodeDelta, CodeResult, Thought
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
    result = items[-1]
    assert isinstance(result, CodeResult)
    assert result.language == "tsx" and result.token_count > 0 and result.input_tokens > 0
    for text in expected:
        assert text in result.code
    # Then the code, a few lines at a time: its pieces, end to end, are the code.
    answer = items.index(AnswerStarted())
    deltas = items[answer + 1 : -1]
    assert len(deltas) > 1 and all(isinstance(d, CodeDelta) for d in deltas)
    offset = 0
    for delta in deltas:
        assert isinstance(delta, CodeDelta) and delta.offset == offset
        offset += len(delta.text)
    assert "".join(d.text for d in deltas if isinstance(d, CodeDelta)) == result.code


BRIEFS = [
    "Create a login form with email and password", "Sign up page with username",
    "Build a todo list", "a counter with reset", "a search box that filters fruit",
    "A pricing card",
]


@pytest.mark.parametrize("brief", BRIEFS)
async def test_the_two_teams_write_different_code_each_time_the_same(brief: str) -> None:
    """The Anthropic team keeps each value in its own useState, the Google team
    uses a reducer (or, for a search box or a plain component, another way):
    different thoughts and code, the same component name, the same every run."""
    runs = {
        team: [await collect(SimulatedProvider(team, delay=0), brief) for _ in range(2)]
        for team in ("anthropic", "google")
    }
    for first, again in runs.values():
        assert first == again  # deterministic per brief
    anthropic, google = runs["anthropic"][0], runs["google"][0]
    a_code, g_code = anthropic[-1], google[-1]
    assert isinstance(a_code, CodeResult) and isinstance(g_code, CodeResult)
    assert a_code.code != g_code.code
    a_thoughts = [t.text for t in anthropic if isinstance(t, Thought)]
    g_thoughts = [t.text for t in google if isinstance(t, Thought)]
    assert not set(a_thoughts) & set(g_thoughts)
    name = a_code.code.split("export function ")[1].split("(")[0]
    assert f"export function {name}(" in g_code.code
    if "form" in brief or "todo" in brief or "counter" in brief:
        assert "useReducer" in g_code.code and "useReducer" not in a_code.code


async def test_delay_paces_the_stream() -> None:
    start = time.monotonic()
    items = await collect(SimulatedProvider("google", delay=0.05), "a counter")
    # One pause before each thought, before the answer, and before each piece of code.
    assert time.monotonic() - start >= 0.05 * (len(items) - 1)


async def test_fail_with_raises_after_thinking() -> None:
    provider = SimulatedProvider("google", delay=0, fail_with="boom")
    seen = []
    with pytest.raises(ProviderError, match="boom"):
        async for item in provider.stream("a counter"):
            seen.append(item)
    assert seen and all(isinstance(i, Thought) for i in seen)
