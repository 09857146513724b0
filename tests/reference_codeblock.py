"""The reference for :mod:`chimera.providers.codeblock`: how the code was found in a
whole answer before it was read as it streams (main before code_delta), kept
unchanged so the streaming reader can be checked against it (test_code_stream.py).

The prompt (:mod:`chimera.providers.prompt`) asks for one fenced code block.
Models sometimes add a second, smaller block (a usage example, a shell
command), so :func:`extract_code` takes the largest closed block, the first
one on a tie. Fences follow CommonMark: three or more backticks or tildes,
an optional info string whose first word is the language, and a closing
fence of the same character at least as long as the opening one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_LANGUAGE = "text"

_OPENING = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


@dataclass(frozen=True, slots=True)
class CodeBlock:
    """One fenced block: its code (without fences) and its language tag."""

    code: str
    language: str


def find_code_blocks(answer: str) -> list[CodeBlock]:
    """Every closed fenced block in ``answer`` that holds some code, in order.

    A block whose closing fence never comes (an answer cut off mid-block) is
    not returned: its code is incomplete.
    """
    lines = answer.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks: list[CodeBlock] = []
    index = 0
    while index < len(lines):
        opening = _OPENING.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, info = opening["fence"], opening["info"].strip()
        if fence[0] == "`" and "`" in info:
            index += 1  # not a fence: backtick info strings may not contain backticks
            continue
        closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        end = next((j for j in range(index + 1, len(lines)) if closing.match(lines[j])), None)
        if end is None:
            break
        code = "\n".join(lines[index + 1 : end])
        if code.strip():
            language = info.split()[0].lower() if info else DEFAULT_LANGUAGE
            blocks.append(CodeBlock(code=code.strip("\n"), language=language))
        index = end + 1
    return blocks
