"""How often the cyclic garbage collector runs in a serving process.

Python's default (a young collection every 700 net allocations) is what
``chimera serve`` keeps unless ``--gc-threshold`` says otherwise. A server that
holds thousands of waiting jobs (each a few tasks, futures and dicts) spends
less per CreateJob at a slower pace (10,000: -5 to -8% CPU per call), but the
per-event path of a streaming job spends more (+27% per delivery, one job to
one subscriber): scripts/bench.py, docs/benchmarks.md. :func:`pace` freezes what
start-up made (imported modules, the settings, the schema: alive for the
process's whole life, so never worth scanning again) and collects the young
generation every ``threshold`` allocations instead. Garbage without cycles is
freed at once whatever the pace; only cyclic garbage waits a little longer.

Whatever the young pace, a full collection (the oldest generation) follows every
:data:`FULL_EVERY` collections of the middle one, not Python's 10. A full
collection scans every live object: a waiting job holds 65-100 of them (its
tasks, coroutines, contexts, futures), so with 5,000 jobs each one stops the
loop for 150-250 ms. Python's pace ran several a second while a store of waiting
jobs grew (six in the first 5 s after 5,000 jobs, in process), enough slow calls
to raise a 5 s window's CreateJob p99 from ~25 ms to ~240 ms; at 1,000 the
middle generation's survivors wait ~7 million allocations for a full collection
(Python still runs one only once they are a quarter of what it holds).
"""

from __future__ import annotations

import gc

PYTHONS_THRESHOLD = 700
FULL_EVERY = 1000  # middle-generation collections per full one (Python's: 10)


def pace(threshold: int) -> None:
    """Collects the young generation every ``threshold`` allocations (0: never
    automatically, as :func:`gc.set_threshold` takes it), freezing what exists now
    unless that is Python's own threshold (freezing alone measured no gain); the
    middle generation keeps its ratio, and a full collection follows every
    :data:`FULL_EVERY` of its collections."""
    if threshold != PYTHONS_THRESHOLD:
        gc.collect()
        gc.freeze()
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(threshold, middle, FULL_EVERY)


def thresholds() -> str:
    """The collector's thresholds as the serving line shows them: ``700/10/1000``."""
    return "/".join(str(n) for n in gc.get_threshold())
