"""``--workers``' keeper, in this process with trivial children: a child never outlives
the task that owns it (stopped, or cancelled), and a child that keeps dying is started
again after growing pauses."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
from pathlib import Path

import pytest

from chimera.backoff import Backoff
from chimera.cluster.workers import keep_workers
from tests.conftest import until

# A child that says it is up (a file named after its pid), notes a SIGTERM (pid.term),
# then exits, or not if "stubborn"; "crash" exits at once, "crash-later" after 0.3 s.
CHILD = """
import os, signal, sys, time
here, how = sys.argv[1], sys.argv[2]
def term(*_):
    open(os.path.join(here, f"{os.getpid()}.term"), "w").close()
    if how != "stubborn":
        sys.exit(0)
signal.signal(signal.SIGTERM, term)
open(os.path.join(here, f"{os.getpid()}.up"), "w").close()
if how == "crash":
    sys.exit(3)
time.sleep(0.3 if how == "crash-later" else 600)
sys.exit(3)
"""
FAST = Backoff(first=0.05, cap=0.2, jitter=0)


def child(tmp: Path, how: str) -> list[str]:
    return [sys.executable, "-c", CHILD, str(tmp), how]


def pids(tmp: Path, suffix: str) -> set[int]:
    return {int(p.name.split(".")[0]) for p in tmp.glob(f"*.{suffix}")}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def started(tmp: Path, count: int) -> set[int]:
    """The pids of the children started so far, once there are ``count``."""
    await until(lambda: len(pids(tmp, "up")) >= count, within=30)
    return pids(tmp, "up")


@pytest.mark.parametrize("how", ["polite", "stubborn"])
async def test_cancelling_the_keeper_ends_every_child_first(tmp_path: Path, how: str) -> None:
    stopping = asyncio.Event()
    keeper = asyncio.create_task(
        keep_workers(child(tmp_path, how), 2, stopping, restart=FAST, stop_grace=0.5)
    )
    children = await started(tmp_path, 2)
    keeper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await keeper
    # Gone (exited and reaped) by the time the cancellation reaches the caller; each
    # was asked first (SIGTERM), the stubborn ones then killed.
    assert [pid for pid in children if alive(pid)] == []
    assert pids(tmp_path, "term") == children
    assert not stopping.is_set()


async def test_stopping_the_keeper_ends_every_child(tmp_path: Path) -> None:
    stopping = asyncio.Event()
    keeper = asyncio.create_task(keep_workers(child(tmp_path, "polite"), 2, stopping))
    children = await started(tmp_path, 2)
    stopping.set()
    await asyncio.wait_for(keeper, 30)
    assert [pid for pid in children if alive(pid)] == []
    assert pids(tmp_path, "term") == children


def restart_pauses(caplog: pytest.LogCaptureFixture) -> list[float]:
    return [float(m) for m in re.findall(r"starting it again in ([\d.]+) s", caplog.text)]


async def stop_after(tmp: Path, starts: int, keeper: asyncio.Task[None],
                     stopping: asyncio.Event) -> None:
    await started(tmp, starts)
    stopping.set()
    await asyncio.wait_for(keeper, 30)


async def test_a_child_that_keeps_dying_is_started_again_after_growing_pauses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "chimera.cluster.workers")
    stopping = asyncio.Event()
    keeper = asyncio.create_task(
        keep_workers(child(tmp_path, "crash"), 1, stopping, restart=FAST)
    )
    await stop_after(tmp_path, 6, keeper, stopping)
    assert restart_pauses(caplog)[:5] == [0.05, 0.1, 0.2, 0.2, 0.2]


async def test_a_child_that_stayed_up_a_while_starts_the_pauses_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "chimera.cluster.workers")
    stopping = asyncio.Event()
    keeper = asyncio.create_task(
        keep_workers(child(tmp_path, "crash-later"), 1, stopping, restart=FAST,
                     stable_after=0.2)
    )
    await stop_after(tmp_path, 4, keeper, stopping)
    assert restart_pauses(caplog)[:3] == [0.05, 0.05, 0.05]
