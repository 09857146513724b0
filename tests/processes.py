"""Real ``python -m chimera`` processes: started with their output in a log file,
ready once they log their "serving" line."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from chimera.client import JobsClient

SERVING = re.compile(r"serving gRPC on [\d.]+:(\d+) and WebSocket on [\d.]+:(\d+)")
DRAINING = re.compile(r"draining: no new jobs")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def read_text(path: Path) -> str:
    """A small log file's text (sync: a few lines)."""
    return path.read_text()


async def wait_for_lines(
    log: Path, pattern: re.Pattern[str], process: asyncio.subprocess.Process,
    count: int = 1, within: float = 30.0,
) -> list[re.Match[str]]:
    """The first ``count`` matches of ``pattern`` in ``log``, once the process has
    logged them; fails if it exits first, or after ``within`` s.

    Polled: the process writes to a file, which announces nothing (what it logs
    is the state it reports).
    """
    async with asyncio.timeout(within):
        while True:
            text = read_text(log)
            found = list(pattern.finditer(text))
            if len(found) >= count:
                return found[:count]
            if process.returncode is not None:
                raise AssertionError(f"exited with {process.returncode}:\n{text}")
            await asyncio.sleep(0.05)


@dataclass
class Node:
    """One real ``chimera serve`` process."""

    name: str
    process: asyncio.subprocess.Process
    log: Path
    grpc_port: int
    ws_port: int

    def ws_url(self, job_id: str, since: int = 0) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/ws/orchestrate/{job_id}?since={since}"

    def client(self) -> JobsClient:
        return JobsClient(f"127.0.0.1:{self.grpc_port}")

    def read_log(self) -> str:
        return read_text(self.log)

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()

    def freeze(self) -> None:
        """SIGSTOP: alive, holding its connections, doing nothing (a VM paused, a long GC)."""
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGCONT)

    def drain(self) -> None:
        """One SIGTERM: the server drains (its running jobs finish), then exits."""
        self.process.send_signal(signal.SIGTERM)

    async def stop(self) -> None:
        """Stops at once, interrupting the jobs running here: SIGTERM, and once the
        drain it starts is logged, a second SIGTERM."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await wait_for_lines(self.log, DRAINING, self.process, within=20)
            except (AssertionError, TimeoutError):
                pass  # it exited (or never drained): the wait below says how
            else:
                if self.process.returncode is None:
                    self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                self.process.kill()
        await self.process.wait()


async def spawn(
    name: str, log: Path, argv: list[str], env: dict[str, str] | None = None,
    module: str = "chimera",
) -> tuple[asyncio.subprocess.Process, int, int]:
    """Starts ``python -m MODULE ARGV`` and waits for its "serving" line; returns
    the process and the gRPC and WebSocket ports it logged."""
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, *argv, stdout=out, stderr=out,
            env={**os.environ, **(env or {})},
        )
    try:
        (found,) = await wait_for_lines(log, SERVING, process)
    except (AssertionError, TimeoutError) as exc:
        if process.returncode is None:
            process.kill()
        await process.wait()
        raise AssertionError(f"{name} did not start:\n{read_text(log)}") from exc
    return process, int(found[1]), int(found[2])


@asynccontextmanager
async def chimera_serve(db: Path, log: Path, *flags: str) -> AsyncIterator[Node]:
    """A real ``chimera serve`` on ports 0 and the SQLite file ``db``; killed after."""
    argv = ["serve", "--grpc-port", "0", "--ws-port", "0", "--db", str(db), *flags]
    process, grpc_port, ws_port = await spawn("chimera serve", log, argv)
    node = Node("serve", process, log, grpc_port, ws_port)
    try:
        yield node
    finally:
        node.kill()
        await process.wait()
