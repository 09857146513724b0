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
"""

from __future__ import annotations

import gc

PYTHONS_THRESHOLD = 700


def pace(threshold: int) -> None:
    """Freezes what exists now and collects the young generation every
    ``threshold`` allocations (0: never automatically, as :func:`gc.set_threshold`
    takes it); the older generations keep their ratios. Python's own threshold
    leaves the collector untouched (freezing alone measured no gain)."""
    if threshold == PYTHONS_THRESHOLD:
        return
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(threshold, older, oldest)
