"""Job ids: generated as UUID version 7, or chosen by the client within strict limits;
and the one check that client text is UTF-8 (:func:`check_text`)."""

from __future__ import annotations

import os
import re
import threading
import time
import uuid

from chimera.errors import InvalidArgument

MAX_JOB_ID_LENGTH = 64
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


# Random bytes are read from the OS this many at a time (random_bytes).
RANDOM_POOL_BYTES = 4096


class _RandomPool:
    """Bytes of ``os.urandom``, read :data:`RANDOM_POOL_BYTES` at a time.

    Why: ``os.urandom`` releases the GIL, and on a busy server the store's
    thread takes it meanwhile, so the loop waited ~30 µs for it back on every
    new job id (cProfile of CreateJob at concurrency 16: 31.6 µs per call).
    One read per ~400 ids pays that once. The bytes are the kernel's CSPRNG's
    either way; a forked child starts a pool of its own, never its parent's.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # ids are made on the loop, but any thread may
        self._bytes = b""
        self._at = 0

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._at + n > len(self._bytes):
                self._bytes, self._at = os.urandom(max(n, RANDOM_POOL_BYTES)), 0
            taken = self._bytes[self._at:self._at + n]
            self._at += n
            return taken

    def forget(self) -> None:
        """After a fork: the parent's bytes are the parent's (and it may use them)."""
        self._lock = threading.Lock()
        self._bytes, self._at = b"", 0


_POOL = _RandomPool()
os.register_at_fork(after_in_child=_POOL.forget)


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the OS's CSPRNG (``os.urandom``), served from a pool."""
    return _POOL.take(n)


def random_uuid4() -> uuid.UUID:
    """A UUID version 4 (as ``uuid.uuid4()``), its bits from :func:`random_bytes`."""
    return uuid.UUID(bytes=random_bytes(16), version=4)


def new_job_id(now_ms: int | None = None) -> str:
    """A new job id: a UUID version 7 (RFC 9562), 48 bits of the time in milliseconds
    (``now_ms``, the clock's unless given) then 74 random bits.

    Time first, so jobs created one after another have ids that sort together:
    the store's indexes keyed by job id (the jobs, their teams, their events) grow
    at their right edge, where a random UUID4 wrote a random page of each for every
    new job (SQLite thread time per job ~25% less at 3,000 jobs, and growing with
    the store). 74 random bits are as unguessable as a job id needs.
    """
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    rand = int.from_bytes(random_bytes(10))  # 80 bits: 12 + 62 used
    value = (
        (ms & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76  # version
        | (rand >> 68) << 64  # rand_a, 12 bits
        | 0b10 << 62  # variant
        | rand & ((1 << 62) - 1)  # rand_b
    )
    return str(uuid.UUID(int=value))


def is_valid_job_id(job_id: str) -> bool:
    """Short and URL-safe: 1-64 of ``[A-Za-z0-9_-]``."""
    return _JOB_ID.fullmatch(job_id) is not None


def check_job_id(job_id: str) -> str:
    if not is_valid_job_id(job_id):
        shown = job_id if len(job_id) <= MAX_JOB_ID_LENGTH else job_id[:MAX_JOB_ID_LENGTH] + "…"
        raise InvalidArgument(
            f"job_id {shown!r} is malformed: use 1 to {MAX_JOB_ID_LENGTH} characters "
            "from A-Z, a-z, 0-9, '-' and '_'"
        )
    return job_id


def is_ascii_number(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also takes ``²`` (which ``int`` refuses)
    and ``٣`` (which ``int`` reads as 3)."""
    return text.isascii() and text.isdigit()


def check_text(field: str, text: str) -> str:
    """``text``, if it can be encoded as UTF-8; else :class:`InvalidArgument` naming ``field``.

    ``json.loads`` turns an escaped lone surrogate (``"\\ud800"``) into a ``str`` that
    only fails later, at ``.encode("utf-8")``: in the store (failing a whole group
    commit) or when the reply is encoded. Every gateway checks client text with
    this where it enters, so such text never gets further.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(
            f"{field} is not valid UTF-8 text (a lone surrogate, "
            f"{text[exc.start]!r}, at character {exc.start}): send UTF-8"
        ) from None
    return text


# A stream position's epoch (Store.epoch) as a client sends it back: the same
# alphabet as a job id, so it stays URL-safe and bounded; "" means none.
MAX_EPOCH_LENGTH = 64
_EPOCH = re.compile(r"[A-Za-z0-9_-]{0,64}")


def is_valid_epoch(epoch: str) -> bool:
    """``""`` (no epoch) or 1-64 of ``[A-Za-z0-9_-]``."""
    return _EPOCH.fullmatch(epoch) is not None


def check_epoch(epoch: str) -> str:
    if not is_valid_epoch(epoch):
        raise InvalidArgument(
            f"epoch is malformed: use at most {MAX_EPOCH_LENGTH} characters from A-Z, a-z, "
            "0-9, '-' and '_' (the epoch the server gave with the position), or leave it out"
        )
    return epoch
