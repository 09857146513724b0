"""JobManager's task group: no task is created on it once its body has ended, however
``run`` ended (stopped, or cancelled with the server's group)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chimera.actors.broadcaster import Broadcaster
from chimera.actors.jobs import JobManager, JobRequest, RunningJobs
from chimera.auth.principal import ANONYMOUS
from chimera.errors import ShuttingDown
from chimera.store.sqlite import SQLiteStore
from tests.doubles import factory


@pytest.mark.parametrize("ended", ["stopped", "cancelled"])
async def test_a_job_created_after_run_has_ended_is_refused(tmp_path: Path, ended: str) -> None:
    store = SQLiteStore(str(tmp_path / "jobs.db"))
    await store.open()
    supervisors = RunningJobs()
    broadcaster = Broadcaster(store, listener=supervisors)
    jobs = JobManager(store, broadcaster, factory({}), running=supervisors)
    try:
        async with asyncio.TaskGroup() as tg:
            recording = tg.create_task(broadcaster.run())
            running = tg.create_task(jobs.run())
            await asyncio.sleep(0)  # run() has opened its group
            job = await jobs.create(JobRequest("a counter"), principal=ANONYMOUS)
            assert job.job_id
            if ended == "stopped":
                jobs.stop()
                await running
            else:
                running.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await running
            with pytest.raises(ShuttingDown, match="shutting down"):
                await jobs.create(JobRequest("a counter"), principal=ANONYMOUS)
            await broadcaster.stop()
            await recording
    finally:
        await store.close()
