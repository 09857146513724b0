"""The text handling the real providers share: thought grouping, code extraction, prompt."""

from __future__ import annotations

import pytest

from chimera.errors import ProviderError
from chimera.providers.codeblock import CodeBlock, extract_code, find_code_blocks
from chimera.providers.prompt import SYSTEM_PROMPT, user_message
from chimera.providers.thoughts import ThoughtGrouper


def group(deltas: list[str], **limits: int) -> list[str]:
    grouper = ThoughtGrouper(**limits)
    thoughts = [thought for delta in deltas for thought in grouper.feed(delta)]
    return thoughts + grouper.flush()


def tokens(text: str, size: int = 3) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


# -- thoughts ---------------------------------------------------------------------


def test_token_deltas_become_sentences_not_tokens() -> None:
    text = (
        "First I need to decide which fields the form has and how they validate. "
        "Then the layout. Then error messages that appear next to each field."
    )
    thoughts = group(tokens(text))

    assert thoughts == [
        "First I need to decide which fields the form has and how they validate.",
        "Then the layout. Then error messages that appear next to each field.",
    ]


def test_short_sentences_are_kept_together_until_the_paragraph_ends() -> None:
    assert group(tokens("Okay. Email. Password.\n\nNext paragraph here.")) == [
        "Okay. Email. Password.",
        "Next paragraph here.",
    ]


def test_a_paragraph_is_released_as_soon_as_it_ends() -> None:
    grouper = ThoughtGrouper()
    assert grouper.feed("**Planning the form**") == []
    assert grouper.feed("\n\nI'm now") == ["**Planning the form**"]
    assert grouper.feed(" weighing the options") == []
    assert grouper.flush() == ["I'm now weighing the options"]
    assert grouper.flush() == []


def test_decimal_points_and_abbreviations_inside_a_token_do_not_end_a_sentence() -> None:
    grouper = ThoughtGrouper(min_chars=10)
    assert grouper.feed("Version 3.") == []
    assert grouper.feed("14 is what we target here") == []
    assert grouper.flush() == ["Version 3.14 is what we target here"]


def test_crlf_and_blank_lines_are_tidied() -> None:
    assert group(["  Line one\r\n  line two  \r\n\r\n\r\n", "  \n", "Last."]) == [
        "Line one\nline two",
        "Last.",
    ]


def test_a_run_without_sentence_end_is_cut_at_a_space() -> None:
    words = ["word "] * 50  # 250 characters, no punctuation
    thoughts = group(words, min_chars=10, max_chars=100)

    assert all(len(thought) <= 100 for thought in thoughts)
    assert " ".join(thoughts).split() == ["word"] * 50
    assert len(thoughts) == 3


def test_whitespace_only_thinking_gives_no_thought() -> None:
    assert group([" ", "\n\n", "  "]) == []


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        ThoughtGrouper(min_chars=0)
    with pytest.raises(ValueError):
        ThoughtGrouper(min_chars=50, max_chars=10)


# -- code blocks --------------------------------------------------------------------


def test_the_code_of_a_single_block_and_its_language() -> None:
    answer = "Here it is:\n\n```TSX\nexport default function A() {}\n```\nEnjoy."
    assert extract_code(answer, source="X") == CodeBlock("export default function A() {}", "tsx")


def test_the_largest_block_wins_and_ties_go_to_the_first() -> None:
    answer = (
        "```bash\nnpm i\n```\n"
        "```tsx\nexport function Big() {\n  return null;\n}\n```\n"
        "```css\n.a { color: red }\n```\n"
    )
    assert extract_code(answer, source="X").language == "tsx"
    tie = "```js\nconst a = 1;\n```\n```ts\nconst b = 2;\n```"
    assert extract_code(tie, source="X") == CodeBlock("const a = 1;", "js")


def test_fences_of_tildes_longer_fences_and_crlf() -> None:
    answer = "~~~~python\r\nprint('```')\r\n~~~~\r\n"
    assert extract_code(answer, source="X") == CodeBlock("print('```')", "python")
    nested = "````md\n```tsx\ninner\n```\n````"
    assert extract_code(nested, source="X") == CodeBlock("```tsx\ninner\n```", "md")


def test_a_block_without_language_is_text() -> None:
    assert extract_code("```\nplain\n```", source="X") == CodeBlock("plain", "text")


def test_empty_and_unclosed_blocks_are_not_code() -> None:
    assert find_code_blocks("```tsx\n\n```\n```tsx\nunfinished") == []


def test_no_block_is_a_clear_provider_error() -> None:
    with pytest.raises(ProviderError, match=r"^Gemini answer contained no fenced code block$"):
        extract_code("Sorry, I cannot help.", source="Gemini")
    with pytest.raises(ProviderError, match=r"^Anthropic answer was empty"):
        extract_code("  ", source="Anthropic")
    with pytest.raises(ProviderError, match="cut off at the token limit"):
        extract_code("```tsx\nexport", source="Anthropic", stop_reason="max_tokens")


# -- prompt ---------------------------------------------------------------------------


def test_prompt_asks_for_one_component_in_one_tagged_block() -> None:
    assert "ONE component" in SYSTEM_PROMPT
    assert "ONE fenced code block" in SYSTEM_PROMPT
    assert "language tag" in SYSTEM_PROMPT
    assert user_message("  A counter  ") == "Brief: A counter"
