#!/usr/bin/env python
"""What a waiting job costs in process, by how many are created together: jobs left
waiting (the simulated provider, 1,000 s between steps, one team) through
``JobManager.create``, ``--group`` at a time, with the CPU of the loop thread and of
the whole process per job.

    taskset -c 0 .venv/bin/python scripts/profile_create.py --group 16
    taskset -c 0 .venv/bin/python scripts/profile_create.py --group 1
    taskset -c 0 .venv/bin/python scripts/profile_create.py --group 1 --no-start

``--group 1`` is what CreateJob over gRPC sees: calls arrive one at a time, so each
job's record and its first events go in commits of their own. ``--no-start``: jobs
are recorded but their supervisors do nothing (no team task, no events).
``--tree DIR``: that checkout's chimera package instead of this one's.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path


async def _measure(jobs: int, group: int, start: bool) -> tuple[float, float, float]:
    from chimera import gcpace
    from chimera.actors.jobs import JobRequest
    from chimera.actors.supervisor import JobSupervisor
    from chimera.auth.principal import ANONYMOUS
    from chimera.config import ServerConfig
    from chimera.events import TeamName
    from chimera.server import ChimeraServer

    if not start:
        async def idle(self: JobSupervisor) -> None:
            # Waits until stopped: interrupting a supervisor cancels its tasks.
            task = asyncio.current_task()
            assert task is not None
            self._tasks = [task]
            await asyncio.get_running_loop().create_future()

        JobSupervisor.run = idle  # type: ignore[assignment,method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        config = ServerConfig(
            grpc_port=0, ws_port=0, db=f"{tmp}/chimera.db", sim_delay=1000.0,
            shutdown_grace=1.0, max_jobs_per_caller=1_000_000,
        )
        server = ChimeraServer(config)
        async with asyncio.TaskGroup() as tg:
            serving = tg.create_task(server.serve())
            await server.ready.wait()
            gcpace.pace(700)  # as `chimera serve` paces the collector

            async def create(k: int) -> None:
                async with asyncio.TaskGroup() as creating:
                    for _ in range(k):
                        creating.create_task(server.jobs.create(
                            JobRequest(brief="bench", teams=[TeamName.ANTHROPIC]),
                            principal=ANONYMOUS,
                        ))

            for _ in range(20):  # warm up
                await create(group)
            wall, process, loop = time.perf_counter(), time.process_time(), time.thread_time()
            for _ in range(jobs // group):
                await create(group)
            await asyncio.sleep(0.05)  # the last jobs' first events are written
            wall = time.perf_counter() - wall
            process, loop = time.process_time() - process, time.thread_time() - loop
            server.stop()
            await serving
    made = jobs // group * group
    return made / wall, process / made * 1e6, loop / made * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3200)
    parser.add_argument("--group", type=int, default=16, help="jobs created together")
    parser.add_argument("--no-start", action="store_true", help="supervisors do nothing")
    parser.add_argument("--tree", default="", help="a checkout whose chimera to run")
    args = parser.parse_args()
    if args.tree:
        sys.path.insert(0, str(Path(args.tree).resolve()))
    from chimera import eventloop

    rate, process, loop = eventloop.run(
        _measure(args.jobs, args.group, not args.no_start), "auto"
    )
    print(f"groups of {args.group}{', not started' if args.no_start else ''}: "
          f"{rate:,.0f} jobs/s, {process:.0f} us of process CPU per job, {loop:.0f} on the loop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
