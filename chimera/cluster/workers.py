"""``chimera serve --workers N``: N server processes sharing the gRPC and WebSocket ports.

The parent serves nothing itself. It starts N children, each ``chimera serve``
with the same flags (minus ``--workers``) plus ``--reuse-port``, so the kernel
spreads connections over them (SO_REUSEPORT on both listeners). They share
the Redis store, so any worker serves any job.

Supervision: a child that exits while the parent is not stopping is started
again (after a short pause, so a child that cannot start does not spin); its
jobs are closed by the survivors like any lost node's. SIGTERM or SIGINT to the
parent sends SIGTERM to every child, which shuts down gracefully; the parent
returns once all have exited.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from chimera.observability.listener import worker_exited, worker_metrics

log = logging.getLogger(__name__)

RESTART_PAUSE = 0.5


def worker_argv(argv: Sequence[str]) -> list[str]:
    """The parent's ``serve`` arguments for a child: no ``--workers``, plus ``--reuse-port``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        out.append(arg)
    return [*out, "--reuse-port"]


async def supervise(argv: Sequence[str], workers: int) -> int:
    child_argv = [sys.executable, "-m", "chimera", *worker_argv(argv)]
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    log.info("starting %d workers", workers)

    async def keep(index: int) -> None:
        while True:
            process = await asyncio.create_subprocess_exec(*child_argv)
            log.info("worker %d started (pid %d)", index, process.pid)
            exited = asyncio.ensure_future(process.wait())
            stop = asyncio.ensure_future(stopping.wait())
            await asyncio.wait({exited, stop}, return_when=asyncio.FIRST_COMPLETED)
            if stopping.is_set():
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                await exited
                stop.cancel()
                return
            stop.cancel()
            log.warning("worker %d (pid %d) exited with %s; starting it again",
                        index, process.pid, process.returncode)
            worker_exited(process.pid)
            await asyncio.sleep(RESTART_PAUSE)

    # One PROMETHEUS_MULTIPROC_DIR for the workers: one scrape of the shared port shows all.
    with worker_metrics():
        async with asyncio.TaskGroup() as tg:
            for index in range(workers):
                tg.create_task(keep(index))
    log.info("all workers stopped")
    return 0
