"""``chimera serve --workers N``: N server processes sharing the gRPC and WebSocket ports.

The parent serves nothing itself. It starts N children, each ``chimera serve``
with the same flags, ``--workers 1`` and ``--reuse-port``, so the kernel
spreads connections over them (SO_REUSEPORT on both listeners). They share
the Redis store, so any worker serves any job.

Supervision: a child that exits while the parent is not stopping is started
again, after a pause that grows while it keeps dying (:data:`RESTART`, reset
once a child has stayed up :data:`STABLE_AFTER` seconds), so a child that
cannot start does not spin; its jobs are closed by the survivors like any lost
node's. SIGTERM or SIGINT to the parent sends SIGTERM to every child, which
drains (finishes its running jobs, for up to ``--drain-timeout`` seconds) and
shuts down; a second SIGTERM or SIGINT to the parent sends each child a second
SIGTERM, which stops it at once. The parent returns once all have exited.

Each child also gets ``--worker-id I`` (0 … N-1, as the parent's ``worker I
started`` line says, kept when it is started again), which it puts on every
log line.

Every child is owned by the task that started it (all in one ``TaskGroup``):
however that task ends (the parent stopping, or cancelled), the child is sent
SIGTERM, then SIGKILL if it has not exited after :data:`STOP_GRACE` seconds,
and has exited before the task ends; a cancellation propagates after that.
Stopping, the SIGKILL comes :data:`STOP_GRACE` seconds after the drain timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from chimera.backoff import Backoff
from chimera.observability.listener import worker_exited, worker_metrics

log = logging.getLogger(__name__)

RESTART = Backoff(first=0.5, cap=30.0)  # pauses before starting a dying worker again
STABLE_AFTER = 60.0  # seconds up after which a worker's next restart pause is the first again
STOP_GRACE = 30.0  # seconds a worker has to exit after SIGTERM before it is killed
WORKER_ID = "--worker-id"  # the child's flag: its index, on each of its log lines


def worker_argv(argv: Sequence[str]) -> list[str]:
    """The parent's ``serve`` arguments for a child: ``--workers 1`` instead of the
    parent's (the flag beats a ``CHIMERA_WORKERS`` or ``workers`` key the child
    would otherwise read too), plus ``--reuse-port``."""
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
    return [*out, "--workers", "1", "--reuse-port"]


async def supervise(argv: Sequence[str], workers: int, *, drain_timeout: float = 0.0) -> int:
    """Runs ``workers`` children of the parent's ``serve`` arguments until SIGTERM or
    SIGINT, then stops them (:func:`keep_workers`); returns 0 once all have exited.
    A second SIGTERM or SIGINT is sent on to the children (they stop at once)."""
    child_argv = [sys.executable, "-m", "chimera", *worker_argv(argv)]
    stopping = asyncio.Event()
    hurry = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        (hurry if stopping.is_set() else stopping).set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    log.info("starting %d workers", workers)
    try:
        # One PROMETHEUS_MULTIPROC_DIR for the workers: one scrape of the shared port
        # shows all.
        with worker_metrics():
            await keep_workers(child_argv, workers, stopping, hurry=hurry,
                               stop_grace=drain_timeout + STOP_GRACE, id_flag=WORKER_ID)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    log.info("all workers stopped")
    return 0


async def keep_workers(
    argv: Sequence[str],
    workers: int,
    stopping: asyncio.Event,
    *,
    restart: Backoff = RESTART,
    stable_after: float = STABLE_AFTER,
    stop_grace: float = STOP_GRACE,
    hurry: asyncio.Event | None = None,
    id_flag: str | None = None,
) -> None:
    """Keeps ``workers`` processes of ``argv`` running until ``stopping`` is set, then
    stops them all and returns once each has exited; ``hurry`` set meanwhile sends
    each child that has not exited a second SIGTERM. ``id_flag``: worker ``i`` runs
    ``argv`` plus ``id_flag i``.

    Cancelled: each child is stopped the same way (SIGTERM, SIGKILL after
    ``stop_grace``) and has exited before the ``CancelledError`` propagates.
    """
    async with asyncio.TaskGroup() as tg:
        for index in range(workers):
            own = [*argv, id_flag, str(index)] if id_flag else argv
            tg.create_task(
                _keep(index, own, stopping, restart, stable_after, stop_grace, hurry)
            )


async def _keep(
    index: int,
    argv: Sequence[str],
    stopping: asyncio.Event,
    restart: Backoff,
    stable_after: float,
    stop_grace: float,
    hurry: asyncio.Event | None = None,
) -> None:
    """Worker ``index``: started, and started again each time it exits, until ``stopping``."""
    pauses = restart.delays()
    while not stopping.is_set():
        process = await asyncio.create_subprocess_exec(*argv)
        started = time.monotonic()
        log.info("worker %d started (pid %d)", index, process.pid)
        try:
            await _until(process.wait(), stopping)
        finally:  # stopping, or cancelled: a child never outlives its task
            await _stop(process, stop_grace, hurry)
        if stopping.is_set():
            return
        worker_exited(process.pid)
        if time.monotonic() - started >= stable_after:
            pauses = restart.delays()  # it had stayed up: not one of a run of crashes
        pause = next(pauses)
        log.warning("worker %d (pid %d) exited with %s; starting it again in %.2f s",
                    index, process.pid, process.returncode, pause)
        await _until(asyncio.sleep(pause), stopping)


async def _until(waiting: Coroutine[Any, Any, object], stopping: asyncio.Event) -> None:
    """Runs ``waiting`` until it returns or ``stopping`` is set, whichever comes first."""
    async with asyncio.TaskGroup() as tg:
        tasks = {tg.create_task(waiting), tg.create_task(stopping.wait())}
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()


async def _stop(
    process: asyncio.subprocess.Process, grace: float, hurry: asyncio.Event | None = None
) -> None:
    """SIGTERM to ``process`` if it runs (it drains), a second SIGTERM once ``hurry``
    is set (it stops at once), SIGKILL if it has not exited ``grace`` seconds after
    the first; returns once it has exited (reaped). Cancelled meanwhile: it is
    killed at once, and the cancellation propagates."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):  # it has just exited
        process.send_signal(signal.SIGTERM)
    try:
        try:
            async with asyncio.timeout(grace):
                if hurry is not None:
                    await _until(process.wait(), hurry)
                    if process.returncode is None:
                        with contextlib.suppress(ProcessLookupError):
                            process.send_signal(signal.SIGTERM)
                await process.wait()
        except TimeoutError:
            log.warning("worker (pid %d) still running %g s after SIGTERM: killing it",
                        process.pid, grace)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        raise
