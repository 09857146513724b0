"""Coalescing a team's code deltas: what its ``code_delta`` events carry.

A provider reports its code as it comes (:class:`~chimera.providers.base.CodeDelta`,
as small as one token). :class:`DeltaCoalescer` merges them so that a team
sends at most one ``code_delta`` per ``interval`` seconds (:data:`DELTA_INTERVAL`,
50 ms), or sooner once ``max_chars`` characters wait (:data:`DELTA_MAX_CHARS`,
512): a model streaming one character at a time costs subscribers ~20 events a
second, not thousands. It also keeps the code so far, so that the team's last
delta can make its deltas end exactly as its ``code_generated`` code.

No I/O and no clock of its own: the caller passes the time (``now``, in
seconds, any monotonic clock), as the Sans-I/O actor tests do.
"""

from __future__ import annotations

import math

from chimera.defaults import DELTA_INTERVAL, DELTA_MAX_CHARS
from chimera.events import common_prefix_length
from chimera.providers.base import CodeDelta


class DeltaCoalescer:
    """One team's deltas, merged (see the module docstring).

    :meth:`add` takes a provider's delta and returns the delta to send now, if
    any; :meth:`due` says when the one waiting must be sent (:meth:`flush`)
    even if nothing more comes; :meth:`finish` returns the last one, made to
    end the code as the given code.
    """

    __slots__ = ("_code", "_code_length", "_interval", "_max_chars", "_offset", "_pending",
                 "_pending_chars", "_sent_at")

    def __init__(
        self, *, interval: float = DELTA_INTERVAL, max_chars: int = DELTA_MAX_CHARS
    ) -> None:
        if interval < 0 or max_chars < 1:
            raise ValueError("need interval >= 0 and max_chars >= 1")
        self._interval = interval
        self._max_chars = max_chars
        self._sent_at = -math.inf
        # The delta waiting to be sent: text replacing the code from _offset on.
        self._offset = 0
        self._pending: list[str] | None = None
        self._pending_chars = 0
        # The code so far, waiting delta included (pieces: appends cost their size).
        self._code: list[str] = []
        self._code_length = 0

    @property
    def code(self) -> str:
        """The code so far: every delta added, spliced in order."""
        return "".join(self._code)

    def add(self, delta: CodeDelta, now: float) -> CodeDelta | None:
        """Merges ``delta`` into the one waiting; returns what to send now, if anything."""
        self._merge(delta.offset, delta.text)
        if self._pending_chars >= self._max_chars or now - self._sent_at >= self._interval:
            return self.flush(now)
        return None

    def due(self) -> float | None:
        """When the waiting delta must be sent (on ``now``'s clock); ``None`` if none waits."""
        if self._pending is None:
            return None
        return self._sent_at + self._interval

    def flush(self, now: float) -> CodeDelta | None:
        """The waiting delta, to send now (``None`` if none waits)."""
        if self._pending is None:
            return None
        delta = CodeDelta(self._offset, "".join(self._pending))
        self._pending = None
        self._pending_chars = 0
        self._sent_at = now
        return delta

    def finish(self, code: str, now: float) -> CodeDelta | None:
        """The last delta: the one waiting, and whatever else makes the code so far
        ``code`` (a provider whose deltas did not end as its code, or sent none)."""
        so_far = self.code
        if so_far != code:
            same = common_prefix_length(so_far, code)
            self._merge(same, code[same:])
        return self.flush(now)

    def _merge(self, offset: int, text: str) -> None:
        # The code so far.
        if offset < self._code_length:
            kept = "".join(self._code)[:offset]
            self._code = [kept] if kept else []
            self._code_length = len(kept)
        if text:
            self._code.append(text)
            self._code_length += len(text)
        # The waiting delta: (o1, t1) then (o2, t2) is (o1, t1[:o2 - o1] + t2), or
        # (o2, t2) when the second starts before the first.
        if self._pending is None or offset < self._offset:
            self._offset, self._pending, self._pending_chars = offset, [text], len(text)
            return
        keep = offset - self._offset
        if keep < self._pending_chars:
            head = "".join(self._pending)[:keep]
            self._pending, self._pending_chars = [head], len(head)
        self._pending.append(text)
        self._pending_chars += len(text)
