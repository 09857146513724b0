#!/usr/bin/env python
"""Where an idle WebSocket subscriber's memory goes: tracemalloc and gc counts per
subscriber, in the benchmark server of ``bench_fanout.py`` (``chimera`` or ``bare``).

    .venv/bin/python scripts/profile_idle.py 2000 chimera
    .venv/bin/python scripts/profile_idle.py 2000 bare

tracemalloc sees what Python allocates, not uvloop's or the kernel's; its own
bookkeeping inflates the RSS it prints (``bench_fanout.py --memory`` is the figure).
"""

from __future__ import annotations

import argparse
import collections
import gc
import multiprocessing as mp
import sys
import tempfile
import threading
import time
import tracemalloc
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_fanout as bf  # this directory: a sibling script

_NOISE = ("runners.py", "uvloop/__init__", "eventloop.py", "profile_idle", "bench_fanout")


def _types() -> collections.Counter[str]:
    return collections.Counter(type(o).__name__ for o in gc.get_objects())


def drive(ours: Connection, n: int, kind: str, top: int) -> None:
    """Connects ``n`` idle clients from another process and prints what they cost."""
    _, port, rss0 = bf._expect(ours, "port")
    gc.collect()
    types0 = _types()
    tracemalloc.start(6)
    before = tracemalloc.take_snapshot()
    ctx = mp.get_context("spawn")
    mine, theirs = ctx.Pipe()
    clients = ctx.Process(target=bf.clients_main, args=(port, bf.path_for(kind), n, 0, theirs))
    clients.start()
    try:
        bf._expect(mine, "ready", 180, clients)
        time.sleep(1.0)  # the last handlers settle
        gc.collect()
        after = tracemalloc.take_snapshot()
        types = _types() - types0
        print(f"{kind}, {n} idle subscribers: RSS {(bf.rss_bytes() - rss0) / n / 1024:.2f} KiB "
              "each (tracemalloc on)")
        stats = after.compare_to(before, "traceback")
        print(f"traced: {sum(s.size_diff for s in stats) / n:.0f} B each; by where allocated:")
        for stat in stats[:top]:
            frames = [f for f in stat.traceback if not any(x in f.filename for x in _NOISE)]
            where = " < ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames[-4:]))
            print(f"  {stat.size_diff / n:6.0f} B {stat.count_diff / n:5.1f} blocks  {where}")
        print(f"gc-tracked objects: {sum(types.values()) / n:.1f} each")
        for name, count in types.most_common(top):
            print(f"  {count / n:6.2f} {name}")
        mine.send(("done",))
    finally:
        clients.join(30)
        if clients.is_alive():
            clients.kill()
        ours.send(("stop",))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=2000)
    parser.add_argument("kind", nargs="?", default="chimera", choices=["chimera", "bare"])
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    ours, theirs = mp.Pipe()
    threading.Thread(target=drive, args=(ours, args.n, args.kind, args.top), daemon=True).start()
    bf.raise_fd_limit()
    with tempfile.TemporaryDirectory() as tmp:
        bf.server_main_unprofiled(args.kind, theirs, f"{tmp}/idle.db")
    return 0


if __name__ == "__main__":
    sys.exit(main())
