"""The code of an answer read as it streams (CodeStream), and its coalescing into
code_delta events (DeltaCoalescer, the team actor with a clock of the test's own).

No sockets: the reader is fed text, the coalescer and the actor are given the time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from hypothesis import given, settings
from hypothesis import strategies as st

from chimera.actors.code_deltas import DeltaCoalescer
from chimera.actors.team import TeamActor
from chimera.events import Draft, EventType, TeamName, splice
from chimera.providers.base import AnswerStarted, CodeDelta, CodeResult, ProviderEvent
from chimera.providers.codeblock import CodeStream, extract_code, find_code_blocks
from tests import reference_codeblock as reference

# Pieces answers are made of: fences of both kinds and lengths, language tags, line
# ends of every kind, indentation, backticks inside lines, prose, non-ASCII text.
ATOMS = st.sampled_from([
    "```", "~~~", "````", "```tsx", "``` Py extra", "~~~~", "```a`b", "\n", "\r\n", "\r",
    " ", "   ", "    ", "\t", "code", "x = 1;", "`", "~", "Here it is.", "é", "💥", "\n\n",
])
ANSWERS = st.lists(ATOMS, max_size=40).map("".join)


def spliced(deltas: list[CodeDelta]) -> str:
    code = ""
    for delta in deltas:
        code = splice(code, delta.offset, delta.text)
    return code


def streamed(answer: str, cuts: list[int]) -> tuple[CodeStream, list[CodeDelta]]:
    stream = CodeStream()
    deltas: list[CodeDelta] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(answer)]:
        deltas += stream.feed(answer[start:cut])
        start = cut
    deltas += stream.finish()
    return stream, deltas


@settings(max_examples=3000, deadline=None)
@given(ANSWERS, st.lists(st.integers(0, 200), max_size=10))
def test_streamed_code_is_the_whole_answers_code_however_it_is_cut(
    answer: str, cuts: list[int]
) -> None:
    """The blocks found as the answer streams, cut anywhere (in a fence, between
    \\r and \\n, inside a character's text), are the reference's, byte for byte;
    the deltas splice to the largest one (the first on a tie)."""
    cuts = [c for c in cuts if c <= len(answer)]
    expected = reference.find_code_blocks(answer)
    stream, deltas = streamed(answer, cuts)
    assert [(b.code, b.language) for b in stream.blocks] == [
        (b.code, b.language) for b in expected
    ]
    assert find_code_blocks(answer) == stream.blocks
    if expected:
        best = max(expected, key=lambda b: len(b.code))
        assert stream.best is not None and stream.best.code == best.code
        assert spliced(deltas) == best.code


@settings(max_examples=500, deadline=None)
@given(ANSWERS)
def test_one_character_at_a_time_gives_the_same_code(answer: str) -> None:
    _, deltas = streamed(answer, list(range(len(answer))))
    expected = reference.find_code_blocks(answer)
    if expected:
        assert spliced(deltas) == max(expected, key=lambda b: len(b.code)).code


def test_prose_around_one_block_is_not_code_and_the_deltas_only_append() -> None:
    answer = "Sure! Here:\n\n```tsx\nconst a = 1;\n\nconst b = 2;\n```\n\nHope it helps.\n"
    stream, deltas = streamed(answer, list(range(0, len(answer), 3)))
    code = "const a = 1;\n\nconst b = 2;"
    assert spliced(deltas) == code == extract_code(answer, source="t").code
    offset = 0
    for delta in deltas:  # no restart: joined in offset order
        assert delta.offset == offset
        offset += len(delta.text)
    assert stream.best is not None and stream.best.language == "tsx"


def test_a_fence_split_across_chunks_is_never_shown_as_code() -> None:
    stream = CodeStream()
    shown = stream.feed("```js\nlet x;\n`") + stream.feed("`") + stream.feed("`\nafter")
    assert spliced(shown) == "let x;"  # the closing fence never appeared as code
    assert spliced(shown + stream.finish()) == "let x;"


def test_a_larger_later_block_takes_over_and_the_deltas_follow() -> None:
    answer = "```sh\nnpm i\n```\nThen:\n```tsx\nexport function Big() {\n  return 1;\n}\n```\n"
    _, deltas = streamed(answer, list(range(len(answer))))
    assert spliced(deltas) == "export function Big() {\n  return 1;\n}"
    assert deltas[0] == CodeDelta(0, "n")  # the first block was shown while it was all
    assert any(d.offset < len(spliced(deltas[:i])) for i, d in enumerate(deltas))


def test_an_unclosed_block_after_a_closed_one_gives_way_at_the_end() -> None:
    answer = "```\nshort\n```\n```\na much longer block that never closes"
    _, deltas = streamed(answer, list(range(len(answer))))
    assert spliced(deltas) == "short"


# -- coalescing -------------------------------------------------------------------


def test_the_coalescer_sends_at_most_one_delta_per_interval_or_per_max_chars() -> None:
    coalescer = DeltaCoalescer(interval=0.05, max_chars=10)
    assert coalescer.add(CodeDelta(0, "a"), now=0.0) == CodeDelta(0, "a")  # the first at once
    assert coalescer.add(CodeDelta(1, "b"), now=0.01) is None  # too soon: it waits
    assert coalescer.due() == 0.05
    assert coalescer.add(CodeDelta(2, "c"), now=0.02) is None
    assert coalescer.flush(now=0.05) == CodeDelta(1, "bc")  # due: what waited, as one
    assert coalescer.due() is None
    assert coalescer.add(CodeDelta(3, "0123456789"), now=0.06) == CodeDelta(3, "0123456789")
    # A restart (offset back to 0) while one waits replaces it.
    assert coalescer.add(CodeDelta(13, "x"), now=0.07) is None
    assert coalescer.add(CodeDelta(0, "new"), now=0.08) is None
    assert coalescer.flush(now=0.2) == CodeDelta(0, "new")
    assert coalescer.code == "new"
    # finish() makes the code so far the code given, whatever came before.
    assert coalescer.finish("new code", now=0.3) == CodeDelta(3, " code")
    assert coalescer.finish("new code", now=0.4) is None


class Streamer:
    """A provider writing ``code`` one character per event, with nothing between."""

    model = "scripted"

    def __init__(self, code: str) -> None:
        self.code = code

    async def stream(self, brief: str) -> AsyncIterator[ProviderEvent]:
        yield AnswerStarted()
        for i, char in enumerate(self.code):
            yield CodeDelta(i, char)
        yield CodeResult(self.code, "ts", 1)


async def deltas_of_actor(code: str, clock: list[float], step: float) -> list[Draft]:
    drafts: list[Draft] = []

    async def publish(draft: Draft) -> None:
        drafts.append(draft)

    def now() -> float:
        clock[0] += step
        return clock[0]

    actor = TeamActor("j", TeamName.ANTHROPIC, Streamer(code), "b", publish, clock=now)
    async with asyncio.timeout(10):
        await actor.run()
    return [d for d in drafts if d.type is EventType.CODE_DELTA]


async def test_5000_one_character_deltas_coalesce_by_size_when_no_time_passes() -> None:
    code = "x" * 5000
    deltas = await deltas_of_actor(code, [0.0], step=0.0)
    # The first at once, then one per 512 characters, then the rest at the end.
    assert [len(d.data["text"]) for d in deltas] == [1, *[512] * 9, 5000 - 1 - 9 * 512]
    assert "".join(d.data["text"] for d in deltas) == code


async def test_with_time_passing_a_delta_goes_out_each_interval() -> None:
    code = "y" * 1000
    deltas = await deltas_of_actor(code, [0.0], step=0.01)  # 10 ms per character
    # One character every 10 ms, one delta per 50 ms: about 5 characters each.
    assert 150 <= len(deltas) <= 260
    assert all(len(d.data["text"]) <= 6 for d in deltas)
    assert "".join(d.data["text"] for d in deltas) == code
