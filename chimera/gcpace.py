"""How often the cyclic garbage collector runs in a serving process.

Python's default (a young collection every 700 net allocations) suits short
scripts; a server with thousands of live jobs (each a few tasks, futures and
dicts) spent ~35% of its CPU per CreateJob in the collector at that pace
(scripts/bench.py, ``--lever BENCH_GC=700/10/10``). :func:`pace` freezes what
start-up made (imported modules, the settings, the schema: alive for the
process's whole life, so never worth scanning again) and collects the young
generation every ``threshold`` allocations instead. Garbage without cycles is
freed at once whatever the pace; only cyclic garbage waits a little longer.
"""

from __future__ import annotations

import gc


def pace(threshold: int) -> None:
    """Freezes what exists now and collects the young generation every
    ``threshold`` allocations (0: never automatically, as :func:`gc.set_threshold`
    takes it); the older generations keep their ratios."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(threshold, older, oldest)
