"""Grouping streamed thinking into readable thoughts.

Providers stream their reasoning as small deltas (a few tokens each).
:class:`ThoughtGrouper` buffers them and hands back whole pieces: a paragraph
as soon as it ends, or the complete sentences seen so far once there is
enough of them to read on their own. Whatever is left when the thinking ends
comes out of :meth:`ThoughtGrouper.flush`.

It is a plain value with no I/O; providers own one per thinking phase.
"""

from __future__ import annotations

import re

DEFAULT_MIN_CHARS = 60
DEFAULT_MAX_CHARS = 600

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
# A sentence ends at ., ! or ? (optionally followed by closing quotes or
# brackets) and then whitespace. The whitespace must have arrived, or "3." of
# "3.14" would count as the end of a sentence.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s")


class ThoughtGrouper:
    """Turns thinking deltas into thoughts of a sentence or a paragraph.

    ``feed`` returns the thoughts a delta completes (often none); ``flush``
    returns the rest. A paragraph (text up to a blank line) is always a
    thought of its own. Inside a paragraph, complete sentences are released
    together once they add up to ``min_chars``, so short sentences are not
    sent one by one. A run of more than ``max_chars`` with no sentence end is
    cut at its last space so a thought never waits forever.
    """

    def __init__(
        self, *, min_chars: int = DEFAULT_MIN_CHARS, max_chars: int = DEFAULT_MAX_CHARS
    ) -> None:
        if min_chars < 1 or max_chars < min_chars:
            raise ValueError("need 1 <= min_chars <= max_chars")
        self._min_chars = min_chars
        self._max_chars = max_chars
        self._buffer = ""

    def feed(self, delta: str) -> list[str]:
        """Add ``delta``; return the thoughts it completes, in order."""
        self._buffer += delta.replace("\r\n", "\n")
        thoughts: list[str] = []
        while True:
            cut = self._next_cut()
            if cut is None:
                return thoughts
            piece, self._buffer = self._buffer[:cut], self._buffer[cut:]
            if text := _tidy(piece):
                thoughts.append(text)

    def flush(self) -> list[str]:
        """Return what is left (at most one thought) and empty the buffer."""
        rest, self._buffer = self._buffer, ""
        text = _tidy(rest)
        return [text] if text else []

    def _next_cut(self) -> int | None:
        """Where the next thought ends in the buffer, or None to wait."""
        buffer = self._buffer
        paragraph = _PARAGRAPH_BREAK.search(buffer)
        if paragraph is not None:
            return paragraph.end()
        last_sentence_end = None
        for match in _SENTENCE_END.finditer(buffer):
            last_sentence_end = match.end()
        if last_sentence_end is not None and len(buffer[:last_sentence_end].strip()) >= (
            self._min_chars
        ):
            return last_sentence_end
        if len(buffer) > self._max_chars:
            space = buffer.rfind(" ", 0, self._max_chars)
            return space + 1 if space > 0 else self._max_chars
        return None


def _tidy(text: str) -> str:
    """Strip a thought and each of its lines, dropping empty lines."""
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())
