"""Finding the code in a model's answer, as it streams in.

The prompt (:mod:`chimera.providers.prompt`) asks for one fenced code block.
Models sometimes add a second, smaller block (a usage example, a shell
command), so the code is the largest closed block, the first one on a tie.
Fences follow CommonMark: three or more backticks or tildes, an optional info
string whose first word is the language, and a closing fence of the same
character at least as long as the opening one. A block's code is its lines
without the fences, with leading and trailing newlines stripped; a block of
whitespace only, or one whose closing fence never comes, holds no code.

:class:`CodeStream` reads the answer piece by piece and says, as it goes,
what the code is so far (:class:`~chimera.providers.base.CodeDelta` values:
prose around the block is never code); :func:`extract_code` is the same
reading done on a whole answer, so the code a stream ends with and the code
of the whole answer are the same, byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from chimera.errors import ProviderError
from chimera.events import common_prefix_length
from chimera.providers.base import CodeDelta

DEFAULT_LANGUAGE = "text"

_OPENING = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


@dataclass(frozen=True, slots=True)
class CodeBlock:
    """One fenced block: its code (without fences) and its language tag."""

    code: str
    language: str


class _OpenBlock:
    """The block being read: its fence, and its code so far.

    The code so far is the block's text up to what is known for sure to be
    in it (``K``), with leading and trailing newlines stripped: ``lead`` holds
    ``K`` while it is only whitespace (it may stay a block of whitespace, which
    is no block), ``tail`` the newlines at its end (stripped if the block ends
    there), ``pieces`` the rest.
    """

    __slots__ = (
        "closing", "could_close", "language", "lead", "length", "line_known", "lines",
        "pieces", "separated", "tail",
    )

    def __init__(self, fence: str, language: str) -> None:
        char = re.escape(fence[0])
        self.closing = re.compile(rf"^ {{0,3}}{char}{{{len(fence)},}}\s*$")
        # What a line that may still become the closing fence looks like so far
        # (a little wider than that: such a line is only held back a little longer).
        self.could_close = re.compile(rf" {{0,3}}{char}*\s*")
        self.language = language
        self.lead: str | None = ""
        self.tail = ""
        self.pieces: list[str] = []
        self.length = 0
        self.lines = 0  # body lines ended so far
        self.line_known = 0  # characters of the current line already in K
        self.separated = False  # the newline before the current line is in K

    def code(self) -> str:
        return "".join(self.pieces)


class CodeStream:
    """The code of an answer, read as it streams (no I/O; one per answer).

    :meth:`feed` takes the next piece of the answer and returns the deltas it
    adds to the code shown so far; :meth:`finish` ends the answer and returns
    the deltas that make the code shown the answer's code (none, unless a
    block shown was never closed, or a larger block overtook it);
    :attr:`best` is then that code's block. Shown is the block being written
    while it is larger than every closed one, else the largest closed one.
    """

    __slots__ = (
        "_blank",
        "_carry",
        "_line",
        "_open",
        "_out",
        "_showing_open",
        "_shown",
        "best",
        "blocks",
    )

    def __init__(self) -> None:
        self.blocks: list[CodeBlock] = []  # closed blocks that hold code, in order
        self.best: CodeBlock | None = None  # the largest of them, the first on a tie
        self._carry = ""  # a "\r" that ended the last piece: "\r\n" is one line end
        self._line = ""  # the current line, not ended yet
        self._open: _OpenBlock | None = None
        self._out: list[CodeDelta] = []
        self._shown = 0  # length of the code shown (the deltas spliced so far)
        self._showing_open = False  # shown is the open block's (else best's, or nothing)
        self._blank = True  # nothing but whitespace so far

    def feed(self, text: str) -> list[CodeDelta]:
        """Reads the next piece of the answer; returns what it adds to the code shown."""
        text = self._carry + text
        self._carry = "\r" if text.endswith("\r") else ""
        if self._carry:
            text = text[:-1]
        if self._blank and text.strip():
            self._blank = False
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        if len(lines) == 1:
            self._line += lines[0]
        else:
            self._end_line(self._line + lines[0])
            for line in lines[1:-1]:
                self._end_line(line)
            self._line = lines[-1]
        block = self._open
        if block is not None and self._line and (
            block.line_known or not block.could_close.fullmatch(self._line)
        ):
            self._body(block, self._line)  # this line cannot be the closing fence
        return self._take()

    def finish(self) -> list[CodeDelta]:
        """Ends the answer: the deltas that make the code shown :attr:`best`'s code."""
        if self._carry:
            self._carry = ""
            self._end_line(self._line)
            self._line = ""
        self._end_line(self._line)
        self._line = ""
        shown = self._shown_text()
        self._open = None  # never closed: holds no code
        self._showing_open = False
        if self.best is not None:
            self._show(shown, self.best.code)
        return self._take()

    def block(self, *, source: str, stop_reason: str | None = None) -> CodeBlock:
        """After :meth:`finish`: the code's block, or :class:`ProviderError` saying
        why there is none (see :func:`extract_code`)."""
        if self.best is not None:
            return self.best
        if stop_reason is not None and stop_reason.lower() in {"max_tokens", "length"}:
            raise ProviderError(
                f"{source} answer was cut off at the token limit before its code block was "
                "complete"
            )
        if self._blank:
            raise ProviderError(f"{source} answer was empty; expected a fenced code block")
        raise ProviderError(f"{source} answer contained no fenced code block")

    def _take(self) -> list[CodeDelta]:
        """The deltas of one call, each run of them that follow on merged into one."""
        out, self._out = self._out, []
        if len(out) < 2:
            return out
        merged = [out[0]]
        for delta in out[1:]:
            last = merged[-1]
            if delta.offset == last.offset + len(last.text):
                merged[-1] = CodeDelta(last.offset, last.text + delta.text)
            else:
                merged.append(delta)
        return merged

    def _end_line(self, line: str) -> None:
        block = self._open
        if block is None:
            opening = _OPENING.match(line)
            if opening is None:
                return
            fence, info = opening["fence"], opening["info"].strip()
            if fence[0] == "`" and "`" in info:
                return  # not a fence: backtick info strings may not contain backticks
            language = info.split()[0].lower() if info else DEFAULT_LANGUAGE
            self._open = _OpenBlock(fence, language)
        elif not block.line_known and block.closing.match(line):
            self._close(block)
        else:
            self._body(block, line)
            block.lines += 1
            block.line_known = 0
            block.separated = False

    def _body(self, block: _OpenBlock, line: str) -> None:
        """Adds what is new of the block's current ``line`` (known to be code) to K."""
        new = line[block.line_known:]
        if not block.separated:
            block.separated = True
            if block.lines:
                new = "\n" + new
        block.line_known = len(line)
        if not new:
            return
        if block.lead is not None:  # only whitespace so far
            if not new.strip():
                block.lead += new
                return
            new, block.lead = (block.lead + new).lstrip("\n"), None
        new = block.tail + new
        grown = new.rstrip("\n")
        block.tail = new[len(grown):]
        if grown:
            block.pieces.append(grown)
            block.length += len(grown)
            self._grew(block, grown)

    def _grew(self, block: _OpenBlock, grown: str) -> None:
        if self._showing_open:
            self._out.append(CodeDelta(self._shown, grown))
            self._shown += len(grown)
        elif block.length > (len(self.best.code) if self.best is not None else 0):
            self._show(self._shown_text(), block.code())
            self._showing_open = True

    def _close(self, block: _OpenBlock) -> None:
        self._open = None
        if block.lead is not None:
            return  # whitespace only: no code
        code = block.code()
        found = CodeBlock(code, block.language)
        self.blocks.append(found)
        if self.best is None or len(code) > len(self.best.code):
            self.best = found
        self._showing_open = False  # shown (if it was this block's) is now best's

    def _shown_text(self) -> str:
        if self._showing_open and self._open is not None:
            return self._open.code()
        return self.best.code if self.best is not None else ""

    def _show(self, shown: str, code: str) -> None:
        """Replaces the code shown (``shown``) with ``code`` from where they differ."""
        if shown == code:
            return
        same = common_prefix_length(shown, code)
        self._out.append(CodeDelta(same, code[same:]))
        self._shown = len(code)


def find_code_blocks(answer: str) -> list[CodeBlock]:
    """Every closed fenced block in ``answer`` that holds some code, in order.

    A block whose closing fence never comes (an answer cut off mid-block) is
    not returned: its code is incomplete.
    """
    stream = CodeStream()
    stream.feed(answer)
    stream.finish()
    return stream.blocks


def extract_code(answer: str, *, source: str, stop_reason: str | None = None) -> CodeBlock:
    """The largest fenced block of ``answer``.

    Raises :class:`ProviderError` when there is none; the message names
    ``source`` (e.g. ``"Anthropic"``) and, when the answer was cut off
    (``stop_reason`` says the token limit was hit), says so.
    """
    stream = CodeStream()
    stream.feed(answer)
    stream.finish()
    return stream.block(source=source, stop_reason=stop_reason)
